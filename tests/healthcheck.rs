//! `ringwatch healthcheck` against a real running ringwatch (plain and TLS), against nothing,
//! and against a server that answers 503 or never answers.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn healthcheck(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("healthcheck")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ringwatch healthcheck")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn exits_0_when_ready_and_1_when_nothing_listens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let rw = Ringwatch::start_in(
        dir.path(),
        port,
        &base_config(port, &dir.path().join("rw.db"), 1, ""),
    );
    let config = rw.config.to_str().expect("utf-8 path").to_string();

    let out = healthcheck(&["--config", &config]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("http://127.0.0.1:{port}/readyz: ready")
    );
    let url = format!("http://127.0.0.1:{port}");
    let out = healthcheck(&["--url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    assert!(rw.terminate().success());
    let out = healthcheck(&["--config", &config]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("connect"), "{err}");
}

#[test]
fn exits_1_on_503_and_on_a_silent_server() {
    // A server that answers every request like a ringwatch that is shutting down.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 14\r\n\r\nshutting down\n",
            );
        }
    });
    let out = healthcheck(&["--url", &format!("http://{addr}/readyz")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not ready: HTTP 503 shutting down"),
        "{}",
        text(&out)
    );

    // Accepts (the kernel does) but never answers: the timeout ends the check.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let started = Instant::now();
    let out = healthcheck(&[
        "--url",
        &format!("http://{}", silent.local_addr().expect("addr")),
        "--timeout",
        "300ms",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out"),
        "{}",
        text(&out)
    );
}

#[test]
fn exits_2_on_a_bad_config_or_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "server:\n  listen: nowhere\n").expect("write");
    let out = healthcheck(&["--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
    let out = healthcheck(&["--url", "ftp://127.0.0.1/"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// Kills the child on drop.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_self_signed(dir: &Path) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
}

#[test]
fn with_server_tls_it_speaks_https_without_verifying() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_self_signed(dir.path());
    let port = free_port();
    let path = dir.path().join("ringwatch.yaml");
    let cfg = base_config(
        port,
        &dir.path().join("rw.db"),
        1,
        "  tls:\n    cert: cert.pem\n    key: key.pem\n",
    );
    std::fs::write(&path, cfg).expect("write config");
    let _rw = Kill(
        Command::new(bin())
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let config = path.to_str().expect("utf-8");
    let ready = eventually(Duration::from_secs(20), || {
        healthcheck(&["--config", config]).status.success()
    });
    assert!(ready, "{}", text(&healthcheck(&["--config", config])));
    let out = healthcheck(&["--config", config]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("https://127.0.0.1:{port}/readyz")),
        "{}",
        text(&out)
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let out = healthcheck(&["--url", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
