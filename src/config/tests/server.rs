//! `server`: listen address, shards, driver, limits, probe, resolver, ws, tls.

use super::*;

#[test]
fn unknown_key_in_server() {
    fails(
        "server:\n  listen: 127.0.0.1:1\n  shard: 3\n",
        "server",
        "unknown key \"shard\"",
    );
    fails(
        "server:\n  limits:\n    max_conns: 3\n",
        "server.limits",
        "unknown key \"max_conns\"",
    );
}

#[test]
fn bad_listen_address() {
    fails(
        "server: {listen: 'localhost:8080'}\n",
        "server.listen",
        "invalid address \"localhost:8080\"",
    );
    fails(
        "server: {listen: '127.0.0.1'}\n",
        "server.listen",
        "IP:port",
    );
    let c = parse("server: {listen: '[::1]:9090'}\n").unwrap();
    assert_eq!(c.server.listen.port(), 9090);
}

#[test]
fn bad_server_values() {
    fails("server: {shards: 2000}\n", "server.shards", "at most 1024");
    fails(
        "server: {driver: kqueue}\n",
        "server.driver",
        "auto, io_uring or epoll",
    );
    fails(
        "server: {resolver: {threads: 0}}\n",
        "server.resolver.threads",
        "at least 1",
    );
    fails(
        "server: {limits: {idle_timeout: 0s}}\n",
        "server.limits.idle_timeout",
        "too short",
    );
    let c = parse("server: {driver: epoll, shards: 4, pin: false}\n").unwrap();
    assert_eq!(c.server.driver, DriverChoice::Epoll);
    assert_eq!(c.server.shards, 4);
    assert!(!c.server.pin);
}

#[test]
fn server_tls_needs_readable_matching_pem_files() {
    fails(
        "server:\n  tls: {key: k.pem}\n",
        "server.tls.cert",
        "required",
    );
    fails(
        "server:\n  tls: {cert: c.pem}\n",
        "server.tls.key",
        "required",
    );
    // Unreadable files are named with the OS reason.
    let e = fails(
        "server:\n  tls: {cert: /nonexistent/c.pem, key: /nonexistent/k.pem}\n",
        "server.tls.cert",
        "",
    );
    assert_eq!(
        e.message,
        "cannot read certificate file /nonexistent/c.pem: No such file or directory (os error 2)"
    );
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("c.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("k.pem"), cert.key_pair.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let yaml = |c: &str, k: &str| format!("server:\n  tls: {{cert: {c}, key: {k}}}\n");
    let ok = Config::parse(&yaml("c.pem", "k.pem"), dir.path()).unwrap();
    let tls = ok.server.tls.expect("tls");
    assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
    assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let e = Config::parse(&yaml("c.pem", "nokey.pem"), dir.path()).unwrap_err();
    assert_eq!(e.key, "server.tls.key");
    let want = format!(
        "cannot read private key file {}: No such file or directory (os error 2)",
        dir.path().join("nokey.pem").display()
    );
    assert_eq!(e.message, want);
    let e = Config::parse(&yaml("empty.pem", "k.pem"), dir.path()).unwrap_err();
    assert_eq!(e.key, "server.tls.cert");
    let e = Config::parse(&yaml("c.pem", "empty.pem"), dir.path()).unwrap_err();
    assert_eq!(e.key, "server.tls.key");
}
