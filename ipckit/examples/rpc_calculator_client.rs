//! The RPC calculator's client: `rpc_calculator_client URL A OP B` with OP one of + - * /.
//! See `rpc_calculator_server.rs`. Shows the async client, several calls in flight at
//! once, a per-call timeout, and the blocking client for code without a runtime.

use std::time::Duration;

#[path = "calc/types.rs"]
mod types;
use types::{Answer, Calc};

fn parse(a: &str, op: &str, b: &str) -> Result<Calc, String> {
    let num = |s: &str| s.parse::<f64>().map_err(|e| format!("{s:?}: {e}"));
    let (a, b) = (num(a)?, num(b)?);
    Ok(match op {
        "+" => Calc::Add(a, b),
        "-" => Calc::Sub(a, b),
        "*" | "x" => Calc::Mul(a, b),
        "/" => Calc::Div(a, b),
        _ => return Err(format!("unknown operator {op:?} (use + - * /)")),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, a, op, b] = args.as_slice() else {
        return Err("usage: rpc_calculator_client URL A OP B".into());
    };
    let calc = parse(a, op, b)?;

    // Async: the call returns a future; several may be in flight on one connection.
    let client: ipckit::rpc::Client<Calc, Answer> =
        ipckit::rpc::Client::connect_timeout(url.as_str(), Duration::from_secs(5)).await?;
    let (answer, check) = tokio::join!(
        client.call_timeout(&calc, Duration::from_secs(5)),
        client.call(&Calc::Add(1.0, 1.0)),
    );
    assert_eq!(check?, Ok(2.0));
    match answer? {
        Ok(x) => println!("{a} {op} {b} = {x}"),
        Err(e) => println!("{a} {op} {b}: {e}"),
    }

    // Blocking: the same server, no runtime needed (run here on the blocking pool).
    let url = url.clone();
    let sum = tokio::task::spawn_blocking(move || {
        let mut c = ipckit::rpc::BlockingClient::<Calc, Answer>::connect(url.as_str())?;
        c.call_timeout(&Calc::Mul(6.0, 7.0), Duration::from_secs(5))
    })
    .await??;
    println!("(blocking client: 6 * 7 = {})", sum.unwrap_or(f64::NAN));
    Ok(())
}
