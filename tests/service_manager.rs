//! sd_notify end to end: the real binary started with `NOTIFY_SOCKET` pointing at a datagram
//! socket of the test, the way systemd starts a `Type=notify` unit.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Receives one notification datagram and splits it into its `KEY=value` lines.
fn recv(sock: &UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(str::to_string)
        .collect()
}

fn has(msg: &[String], line: &str) -> bool {
    msg.iter().any(|l| l == line)
}

fn value<'a>(msg: &'a [String], key: &str) -> Option<&'a str> {
    msg.iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// Kills the child if the test fails before it exits.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ready_reloading_ready_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let port = free_port();
    let config = dir.path().join("ringwatch.yaml");
    let base = base_config(port, &dir.path().join("rw.db"), 2, "");
    std::fs::write(&config, &base).expect("write config");
    let mut child = Kill(
        Command::new(bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &sock_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringwatch"),
    );
    let pid = child.0.id() as i32;
    let signal = |sig| {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let msg = recv(&sock);
    assert!(has(&msg, "READY=1"), "{msg:?}");
    let status = value(&msg, "STATUS").unwrap_or_default();
    assert!(status.contains(&format!("127.0.0.1:{port}")), "{msg:?}");
    // READY=1 means ready: every shard listens already.
    assert_eq!(http_get(addr, "/readyz").expect("GET /readyz").0, 200);

    // A reload that takes a new config: RELOADING=1 with the monotonic time, then READY=1.
    let services = "services:\n  - name: one\n    url: http://127.0.0.1:9/\n";
    std::fs::write(&config, format!("{base}{services}")).expect("write config");
    signal(libc::SIGHUP);
    let msg = recv(&sock);
    assert!(has(&msg, "RELOADING=1"), "{msg:?}");
    let usec: u64 = value(&msg, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("MONOTONIC_USEC in {msg:?}"));
    assert!(usec > 0);
    let msg = recv(&sock);
    assert!(has(&msg, "READY=1"), "{msg:?}");
    assert!(
        value(&msg, "STATUS").is_some_and(|s| s.contains("reloaded")),
        "{msg:?}"
    );

    // A refused reload still ends in READY=1: the previous config keeps running.
    std::fs::write(&config, "services: 5\n").expect("write config");
    signal(libc::SIGHUP);
    assert!(has(&recv(&sock), "RELOADING=1"));
    let msg = recv(&sock);
    assert!(has(&msg, "READY=1"), "{msg:?}");
    assert!(
        value(&msg, "STATUS").is_some_and(|s| s.contains("reload refused")),
        "{msg:?}"
    );

    signal(libc::SIGTERM);
    let msg = recv(&sock);
    assert!(has(&msg, "STOPPING=1"), "{msg:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
