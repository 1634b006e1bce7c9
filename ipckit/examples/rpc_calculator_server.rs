//! An RPC calculator server. Run it, then the client, in two terminals:
//!
//! ```text
//! cargo run -p ipckit --features tokio --example rpc_calculator_server -- unix:///tmp/calc.sock
//! cargo run -p ipckit --features tokio --example rpc_calculator_client -- unix:///tmp/calc.sock 6 '*' 7
//! ```
//! Any duplex URL works: `tcp://127.0.0.1:7000`, `shm://calc`, … Stop it with Ctrl-C.

#[path = "calc/types.rs"]
mod types;
use types::{Answer, Calc};

async fn calculate(c: Calc) -> Answer {
    match c {
        Calc::Add(a, b) => Ok(a + b),
        Calc::Sub(a, b) => Ok(a - b),
        Calc::Mul(a, b) => Ok(a * b),
        Calc::Div(_, 0.0) => Err("division by zero".into()),
        Calc::Div(a, b) => Ok(a / b),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "unix:///tmp/ipckit-calc.sock".into());
    let server = ipckit::rpc::Server::<Calc, Answer>::bind(url.as_str())?;
    let shutdown = ipckit::signal::ShutdownToken::on_signals()?;
    println!("calculator serving on {}", server.endpoint());
    tokio::select! {
        r = server.serve(calculate) => r?,
        () = shutdown.cancelled() => println!("shutting down"),
    }
    Ok(())
}
