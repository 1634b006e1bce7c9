//! Helper of the RPC tests: a server (`serve URL`) whose handlers report on stdout when
//! they are cancelled, and a client that floods a server with calls (`flood URL N`) and is
//! meant to be killed mid-call.

#[path = "../../tests/common/calc.rs"]
mod calc;
// The EINTR test signals this process too: its handler makes every blocking call fail with
// EINTR instead of killing the peer.
#[path = "../../tests/common/storm.rs"]
#[allow(dead_code)]
mod storm;

use std::io::Write;
use std::time::Duration;

use calc::{Req, Resp};

/// The peer exits on its own after this, whatever happens.
const LIFETIME: Duration = Duration::from_secs(60);

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints `dropped TAG` if dropped before `done` is set (the handler was aborted).
struct Report {
    tag: u64,
    done: bool,
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.done {
            say(&format!("dropped {}", self.tag));
        }
    }
}

async fn handle(req: Req) -> Resp {
    match req {
        Req::Add(a, b) => Resp::Num(a.wrapping_add(b)),
        Req::Sleep { ms, tag } => {
            let mut report = Report { tag, done: false };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            report.done = true;
            Resp::Tag(tag)
        }
        Req::Echo(b) => Resp::Bytes(b),
        Req::Panic => panic!("asked to panic"),
    }
}

fn main() {
    std::thread::spawn(|| {
        std::thread::sleep(LIFETIME);
        std::process::exit(9);
    });
    storm::install_handler();
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let r: ipckit::Result<()> = rt.block_on(async {
        match arg(1) {
            "serve" => {
                let server = ipckit::rpc::Server::<Req, Resp>::bind(arg(2))?;
                say("ready");
                server.serve(handle).await
            }
            "flood" => {
                let n: u64 = arg(3).parse().unwrap_or(100);
                let client =
                    ipckit::rpc::Client::<Req, Resp>::connect_timeout(arg(2), LIFETIME).await?;
                let mut calls = Vec::new();
                for tag in 0..n {
                    let c = client.clone();
                    calls.push(tokio::spawn(async move {
                        c.call(&Req::Sleep { ms: 30_000, tag }).await
                    }));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                say("ready");
                for c in calls {
                    let _ = c.await;
                }
                Ok(())
            }
            "promise-fulfil" => {
                let h = ipckit::promise::PromiseHandle::<u64>::from_url(arg(2));
                h.open()?.fulfil(&arg(3).parse().unwrap_or(0))
            }
            "promise-drop" => {
                let h = ipckit::promise::PromiseHandle::<u64>::from_url(arg(2));
                let p = h.open()?;
                say("opened");
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(p);
                Ok(())
            }
            "promise-hang" => {
                let h = ipckit::promise::PromiseHandle::<u64>::from_url(arg(2));
                let _p = h.open()?;
                say("opened");
                tokio::time::sleep(LIFETIME).await;
                Ok(())
            }
            other => {
                eprintln!("ipckit-rpc-peer: unknown mode {other:?}");
                std::process::exit(2);
            }
        }
    });
    if let Err(e) = r {
        eprintln!("ipckit-rpc-peer: {e}");
        std::process::exit(3);
    }
}
