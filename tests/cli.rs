//! The command line as an operator sees it: `check` output, error lines, and log files.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `ringwatch ARGS`; returns the exit code, stdout and stderr.
fn ringwatch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ringwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn service(name: &str) -> String {
    format!("  - {{name: {name}, url: 'http://127.0.0.1:9/'}}\n")
}

#[test]
fn check_counts_services_and_shards_in_good_english() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rw.yaml");
    let path = file.to_str().expect("utf-8 path");
    std::fs::write(
        &file,
        format!("server: {{shards: 1}}\nservices:\n{}", service("a")),
    )
    .expect("write");
    let (code, out, err) = ringwatch(&["check", "--config", path]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{path}: ok (1 service, 1 shard)\n"));
    std::fs::write(
        &file,
        format!(
            "server: {{shards: 2}}\nservices:\n{}{}",
            service("a"),
            service("b")
        ),
    )
    .expect("write");
    let (_, out, _) = ringwatch(&["check", "--config", path]);
    assert_eq!(out, format!("{path}: ok (2 services, 2 shards)\n"));
}

#[test]
fn a_missing_config_file_is_named_once_with_the_os_reason() {
    for cmd in ["check", "run", "migrate"] {
        let (code, out, err) = ringwatch(&[cmd, "--config", "/nonexistent/rw.yaml"]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert_eq!(out, "");
        assert_eq!(
            err,
            "error: cannot read config file /nonexistent/rw.yaml: No such file or directory \
             (os error 2)\n",
            "{cmd}"
        );
    }
    // A key error names the file, then the key.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rw.yaml");
    std::fs::write(
        &file,
        "services:\n  - {name: a, url: 'http://h/', interval: 2s}\n",
    )
    .expect("write");
    let (code, _, err) = ringwatch(&["check", "--config", file.to_str().expect("utf-8")]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        format!(
            "error: {}: services[0].timeout: timeout (default 5s) must be shorter than \
             interval 2s\n",
            file.display()
        )
    );
}

#[test]
fn logs_written_to_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("rw.yaml");
    std::fs::write(&config, base_config(port, &dir.path().join("rw.db"), 1, "")).expect("write");
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ready = eventually(Duration::from_secs(20), || {
        matches!(http_get(addr, "/readyz"), Ok((200, _)))
    });
    // SAFETY: kill(2) on the pid of the child this test spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringwatch did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).expect("read log");
    assert!(ready, "not ready:\n{text}");
    assert!(text.contains("shard started"), "{text}");
    assert!(
        !text.contains("\x1b["),
        "colour codes in a log file:\n{text:?}"
    );
}

#[test]
fn run_listen_overrides_the_file_under_the_same_auth_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rw.yaml");
    let path = file.to_str().expect("utf-8 path");
    std::fs::write(
        &file,
        format!("server: {{shards: 1}}\nservices:\n{}", service("a")),
    )
    .expect("write");
    // Loopback in the file, all interfaces on the command line, no auth: refused up front.
    let (code, out, err) = ringwatch(&["run", "--config", path, "--listen", "0.0.0.0:9"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(out, "");
    assert!(
        err.starts_with("error: --listen: auth: server.listen 0.0.0.0:9 is not a loopback"),
        "{err}"
    );
    let (code, _, err) = ringwatch(&["run", "--config", path, "--listen", "localhost:9"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn run_listen_serves_there_and_a_reload_does_not_call_it_a_changed_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rw.yaml");
    let db = dir.path().join("rw.db");
    std::fs::write(
        &file,
        format!(
            "server: {{listen: 127.0.0.1:9, shards: 1}}\nstorage: {{kind: sqlite, path: '{}'}}\nservices:\n{}",
            db.display(),
            service("a")
        ),
    )
    .expect("write");
    let port = free_port();
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&file)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ready = eventually(Duration::from_secs(20), || {
        http_get(addr, "/readyz").is_ok_and(|(c, _)| c == 200)
    });
    let pipe = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains("config reloaded"))
    {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    lines.extend(rx.iter());
    let err = lines.join("\n");
    assert!(ready, "not ready on --listen:\n{err}");
    assert!(err.contains("config reloaded"), "{err}");
    assert!(!err.contains("server settings changed"), "{err}");
}
