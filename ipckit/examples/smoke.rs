use ipckit::{MessageReceiver, MessageSender};
use std::time::Duration;
fn main() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().display().to_string();
    for url in [
        format!("fifo://{p}/f"),
        format!("unix://{p}/s"),
        format!("unix+dgram://{p}/d"),
        format!("unix+seqpacket://{p}/q"),
        "tcp://127.0.0.1:0".to_string(),
        "udp://127.0.0.1:0".to_string(),
    ] {
        let mut l = ipckit::bind(&url).unwrap();
        let ep = l.endpoint().clone();
        let t = std::thread::spawn(move || {
            let mut c = ipckit::connect_timeout(&ep, Duration::from_secs(2)).unwrap();
            for n in [0usize, 1, 64, 4096, 200_000] {
                let m: Vec<u8> = (0..n).map(|i| i as u8).collect();
                if ep.scheme() == ipckit::Scheme::Udp && n > 65507 { continue; }
                c.send_timeout(&m, Duration::from_secs(2)).unwrap();
                if ep.scheme() != ipckit::Scheme::Fifo {
                    let r = c.recv_timeout(Duration::from_secs(2)).unwrap();
                    assert_eq!(r, m);
                }
            }
        });
        let mut s = l.accept_timeout(Duration::from_secs(2)).unwrap();
        let mut buf = Vec::new();
        for n in [0usize, 1, 64, 4096, 200_000] {
            if url.starts_with("udp") && n > 65507 { continue; }
            s.recv_into_timeout(&mut buf, Duration::from_secs(2)).unwrap();
            assert_eq!(buf.len(), n, "{url}");
            if !url.starts_with("fifo") { s.send(&buf).unwrap(); }
        }
        t.join().unwrap();
        if !url.starts_with("udp") && !url.starts_with("unix+dgram") {
            let e = s.recv_timeout(Duration::from_secs(2));
            println!("{url}: after close: {e:?}");
        } else {
            let e = s.recv_timeout(Duration::from_millis(100));
            println!("{url}: after close: {e:?}");
        }
    }
    println!("ok");
}
