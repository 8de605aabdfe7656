//! Whole-file tests: each validation error must name the right key.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::model::{Method, Scheme};

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::parse(yaml, Path::new("/etc/ringwatch"))
}

/// Parses and expects a failure whose key is `key` and whose message contains `needle`.
fn fails(yaml: &str, key: &str, needle: &str) -> ConfigError {
    let e = match parse(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e,
    };
    assert_eq!(e.key, key, "wrong key in {e}");
    assert!(e.message.contains(needle), "message {e:?} lacks {needle:?}");
    e
}

/// A one-service file with `extra` appended to the service's mapping.
fn svc(extra: &str) -> String {
    format!("services:\n  - name: api\n    url: http://127.0.0.1:9000/healthz\n{extra}")
}

#[test]
fn empty_file_gets_every_default() {
    for text in ["", "# only a comment\n", "services: []\n", "services:\n"] {
        let c = parse(text).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.server.shards, 0);
        assert!(c.server.pin);
        assert_eq!(c.server.driver, DriverChoice::Auto);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.server.limits, HttpLimits::default());
        assert_eq!(c.server.probe.max_idle_total, 4096);
        assert_eq!(c.server.resolver.threads, 2);
        assert_eq!(
            c.storage.kind,
            StorageKind::Sqlite {
                path: "/etc/ringwatch/ringwatch.db".into()
            }
        );
        assert_eq!(c.storage.queue_capacity, 65_536);
        assert_eq!(c.storage.batch_size, 65_536);
        assert_eq!(c.storage.flush_interval, Duration::from_secs(1));
        assert_eq!(c.storage.retention, None);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(c.services.is_empty());
    }
}

#[test]
fn service_defaults_applied() {
    let c = parse(&svc("")).unwrap();
    let s = &c.services[0];
    assert_eq!(s.name, "api");
    assert_eq!(s.id, crate::model::ServiceId::from_name("api"));
    assert_eq!(s.source, crate::model::Source::Config);
    assert_eq!(s.target.scheme, Scheme::Http);
    assert_eq!(s.target.port, 9000);
    assert_eq!(s.target.path, "/healthz");
    assert_eq!(s.method, Method::Get);
    assert_eq!(s.interval, Duration::from_secs(30));
    assert_eq!(s.timeout, Duration::from_secs(5));
    assert_eq!(s.phase_timeouts.connect, Duration::from_secs(5));
    assert_eq!(s.phase_timeouts.head, Duration::from_secs(5));
    assert!((s.jitter - 0.1).abs() < 1e-9);
    assert_eq!(s.failure_threshold.get(), 1);
    assert_eq!(s.success_threshold.get(), 1);
    assert_eq!(s.max_body_bytes, 65_536);
    assert_eq!(s.expect.status.to_string(), "200-299");
    assert!(!s.paused);
    assert!(s.tls.is_none());
}

#[test]
fn defaults_section_is_inherited_and_overridable() {
    let c = parse(
        "defaults:\n  interval: 1m\n  timeout: 2s\n  jitter: 0.2\n  failure_threshold: 3\n  \
         method: HEAD\n  timeouts: {connect: 500ms, head: 10s}\n\
         services:\n  - {name: a, url: 'http://h/'}\n  \
         - {name: b, url: 'http://h/', interval: 10s, timeout: 1s, jitter: 5%, method: get, \
         timeouts: {tls: 300ms}}\n",
    )
    .unwrap();
    let (a, b) = (&c.services[0], &c.services[1]);
    assert_eq!(a.interval, Duration::from_secs(60));
    assert_eq!(a.timeout, Duration::from_secs(2));
    assert!((a.jitter - 0.2).abs() < 1e-9);
    assert_eq!(a.failure_threshold.get(), 3);
    assert_eq!(a.method, Method::Head);
    assert_eq!(a.phase_timeouts.connect, Duration::from_millis(500));
    // head: 10s is clamped to the 2s whole-probe timeout.
    assert_eq!(a.phase_timeouts.head, Duration::from_secs(2));
    assert_eq!(a.phase_timeouts.tls, Duration::from_secs(2));
    assert_eq!(b.interval, Duration::from_secs(10));
    assert!((b.jitter - 0.05).abs() < 1e-9);
    assert_eq!(b.method, Method::Get);
    assert_eq!(b.phase_timeouts.tls, Duration::from_millis(300));
    assert_eq!(b.phase_timeouts.connect, Duration::from_millis(500));
    assert_eq!(b.phase_timeouts.head, Duration::from_secs(1));
}

#[test]
fn full_service_parses() {
    let c = parse(&svc(
        "    method: POST\n    headers: {X-Token: abc, Accept: '*/*'}\n    body: '{}'\n    \
         tags: [prod, eu]\n    expect: {status: '200-299,304', body_contains: ok, max_latency: 500ms}\n    \
         failure_threshold: 3\n    success_threshold: 2\n    paused: true\n    max_body_bytes: 1024\n",
    ))
    .unwrap();
    let s = &c.services[0];
    assert_eq!(s.method, Method::Post);
    assert_eq!(
        s.headers,
        vec![
            ("X-Token".to_string(), "abc".to_string()),
            ("Accept".to_string(), "*/*".to_string())
        ]
    );
    assert_eq!(s.body.as_deref(), Some(&b"{}"[..]));
    assert_eq!(s.tags, vec!["prod", "eu"]);
    assert_eq!(s.expect.status.to_string(), "200-299,304");
    assert_eq!(s.expect.body_contains.as_deref(), Some("ok"));
    assert_eq!(s.expect.max_latency, Some(Duration::from_millis(500)));
    assert_eq!(s.failure_threshold.get(), 3);
    assert_eq!(s.success_threshold.get(), 2);
    assert!(s.paused);
    assert_eq!(s.max_body_bytes, 1024);
}

#[test]
fn https_gets_tls_settings() {
    let c = parse("services:\n  - {name: x, url: 'https://example.com'}\n").unwrap();
    assert_eq!(
        c.services[0].tls,
        Some(crate::model::TlsSettings::default())
    );
    assert_eq!(c.services[0].target.port, 443);
    let c = parse(
        "services:\n  - {name: x, url: 'https://[::1]:8443/', tls: {insecure_skip_verify: true}}\n",
    )
    .unwrap();
    assert!(c.services[0]
        .tls
        .as_ref()
        .is_some_and(|t| t.insecure_skip_verify));
}

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let c = parse("storage: {path: data/rw.db}\n").unwrap();
    assert_eq!(
        c.storage.kind,
        StorageKind::Sqlite {
            path: "/etc/ringwatch/data/rw.db".into()
        }
    );
    let c = parse("storage: {path: /var/lib/rw.db}\n").unwrap();
    assert_eq!(
        c.storage.kind,
        StorageKind::Sqlite {
            path: "/var/lib/rw.db".into()
        }
    );
    // A missing CA file is reported with its resolved path, on the ca_file key.
    let e = fails(
        "services:\n  - {name: x, url: 'https://h/', tls: {ca_file: certs/ca.pem}}\n",
        "services[0].tls.ca_file",
        "/etc/ringwatch/certs/ca.pem",
    );
    assert!(e.message.contains("cannot read"), "{e}");
}

#[test]
fn ca_file_is_loaded_relative_to_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/ca.pem"), cert.cert.pem()).unwrap();
    let yaml =
        "services:\n  - {name: x, url: 'https://localhost/', tls: {ca_file: certs/ca.pem}}\n";
    let file = dir.path().join("rw.yaml");
    std::fs::write(&file, yaml).unwrap();
    let c = Config::load(&file).unwrap();
    assert!(c.services[0].tls.is_some());
    std::fs::write(dir.path().join("certs/ca.pem"), "not a pem").unwrap();
    let e = Config::load(&file).unwrap_err();
    assert_eq!(e.key, "services[0].tls.ca_file");
}

#[test]
fn load_reports_missing_file() {
    let e = Config::load(Path::new("/nonexistent/ringwatch.yaml")).unwrap_err();
    assert_eq!(e.key, "");
    assert!(e
        .to_string()
        .starts_with("cannot read config file /nonexistent/ringwatch.yaml"));
}

#[test]
fn postgres_storage() {
    let c =
        parse("storage: {kind: postgres, url: 'postgres://u:p@db/rw', retention: 30d}\n").unwrap();
    let StorageKind::Postgres(pg) = &c.storage.kind else {
        panic!("{:?}", c.storage.kind)
    };
    assert_eq!(pg.redacted_url(), "postgres://u@db:5432/rw");
    assert_eq!(c.storage.retention, Some(Duration::from_secs(30 * 86_400)));
    fails("storage: {kind: postgres}\n", "storage.url", "required");
    fails(
        "storage: {kind: postgres, url: 'mysql://x'}\n",
        "storage.url",
        "postgres://",
    );
    fails(
        "storage: {url: 'postgres://x'}\n",
        "storage.url",
        "only used with kind: postgres",
    );
    fails(
        "storage: {retention: 5m}\n",
        "storage.retention",
        "minimum 1h",
    );
}

// ---- errors name the right key ----

#[test]
fn unknown_key_at_top_level() {
    let e = fails("server: {}\nservice: []\n", "", "unknown key \"service\"");
    assert!(
        e.message
            .contains("expected one of server, storage, log, defaults, services"),
        "{e}"
    );
    assert!(e.message.contains("line 2, column 1"), "{e}");
}

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
fn unknown_key_in_a_service() {
    let yaml = format!(
        "{}  - name: b\n    url: http://h/\n    intervall: 5s\n",
        svc("")
    );
    let e = fails(
        &yaml,
        "services[1]",
        "unknown key \"intervall\" (expected one of name, url,",
    );
    assert!(e.message.contains("line 6"), "{e}");
}

#[test]
fn unknown_key_in_expect() {
    fails(
        &svc("    expect:\n      status: '200'\n      body: ok\n"),
        "services[0].expect",
        "unknown key \"body\"",
    );
    let e = fails(
        &svc("    expect: {status: '200', max_latency: 1s, bogus: 1}\n"),
        "services[0].expect",
        "unknown key \"bogus\"",
    );
    assert!(e.message.contains("line 4, column 46"), "{e}");
    fails(
        &svc("    expect: {stauts: '200'}\n"),
        "services[0].expect",
        "unknown key \"stauts\"",
    );
}

#[test]
fn missing_required_keys() {
    fails("services:\n  - name: a\n", "services[0].url", "required");
    fails(
        "services:\n  - {name: a, url: 'http://h/'}\n  - url: 'http://h/'\n",
        "services[1].name",
        "required",
    );
}

#[test]
fn wrong_types_name_the_key() {
    fails("server:\n  shards: abc\n", "server.shards", "whole number");
    fails("server:\n  shards: -1\n", "server.shards", "whole number");
    fails("server: {pin: maybe}\n", "server.pin", "true or false");
    fails(&svc("    tags: prod\n"), "services[0].tags", "list");
    fails("services: {name: a}\n", "services", "list");
    fails(
        &svc("    body: [1]\n"),
        "services[0].body",
        "expected a single value",
    );
    fails(
        &svc("    expect: [1]\n"),
        "services[0].expect",
        "expected a mapping",
    );
    fails(
        &svc("    headers: [a]\n"),
        "services[0].headers",
        "expected a mapping",
    );
    fails(
        &svc("    tls: true\n"),
        "services[0].tls",
        "expected a mapping",
    );
    fails(
        &svc("    failure_threshold: [1]\n"),
        "services[0].failure_threshold",
        "single value",
    );
}

#[test]
fn yaml_syntax_errors_have_line_and_column() {
    let e = parse("server:\n  listen: [1\n").unwrap_err();
    assert_eq!(e.key, "");
    assert!(e.message.starts_with("YAML syntax error"), "{e}");
    assert!(e.message.contains("line "), "{e}");
}

#[test]
fn duplicate_yaml_keys() {
    fails(
        &svc("    url: http://other/\n"),
        "services[0]",
        "duplicate key \"url\"",
    );
}

#[test]
fn bad_duration() {
    let e = fails(
        &svc("    interval: 5x\n"),
        "services[0].interval",
        "unknown unit \"x\"",
    );
    assert_eq!(
        e.to_string(),
        "services[0].interval: invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h, d)"
    );
    fails(
        &svc("    timeout: 5\n"),
        "services[0].timeout",
        "missing unit",
    );
    fails(
        "defaults: {interval: -1s}\n",
        "defaults.interval",
        "negative",
    );
    fails(
        "server: {shutdown_grace: 1y}\n",
        "server.shutdown_grace",
        "unknown unit",
    );
    fails(
        "storage: {flush_interval: 0ms}\n",
        "storage.flush_interval",
        "too short",
    );
}

#[test]
fn interval_and_timeout_ranges() {
    fails(
        &svc("    interval: 50ms\n    timeout: 10ms\n"),
        "services[0].interval",
        "minimum 100ms",
    );
    fails(
        &svc("    interval: 2d\n"),
        "services[0].interval",
        "maximum 1d",
    );
    fails(
        &svc("    timeout: 5ms\n"),
        "services[0].timeout",
        "minimum 10ms",
    );
}

#[test]
fn timeout_must_be_shorter_than_interval() {
    let e = fails(
        &svc("    interval: 30s\n    timeout: 30s\n"),
        "services[0].timeout",
        "must be shorter than interval",
    );
    assert_eq!(
        e.to_string(),
        "services[0].timeout: 30s must be shorter than interval 30s"
    );
    fails(
        &svc("    interval: 1s\n"),
        "services[0].interval",
        "5s must be shorter than interval 1s",
    );
    fails(
        &format!("defaults: {{interval: 1s, timeout: 2s}}\n{}", svc("")),
        "defaults.timeout",
        "shorter",
    );
}

#[test]
fn bad_url() {
    fails(
        &svc("").replace("http://127.0.0.1:9000/healthz", "ftp://h/"),
        "services[0].url",
        "ftp",
    );
    fails(
        &svc("").replace("http://127.0.0.1:9000/healthz", "http://h:99999/"),
        "services[0].url",
        "1..=65535",
    );
    fails(
        &svc("").replace("http://127.0.0.1:9000/healthz", "http://u@h/"),
        "services[0].url",
        "credentials",
    );
}

#[test]
fn threshold_zero() {
    let yaml = format!(
        "{}{}",
        svc(""),
        "  - {name: b, url: 'http://h/', failure_threshold: 0}\n"
    );
    fails(&yaml, "services[1].failure_threshold", "must be at least 1");
    fails(
        &svc("    success_threshold: 1001\n"),
        "services[0].success_threshold",
        "at most 1000",
    );
    fails(
        "defaults: {failure_threshold: 0}\n",
        "defaults.failure_threshold",
        "at least 1",
    );
}

#[test]
fn duplicate_names() {
    let yaml = format!(
        "{}  - {{name: web, url: 'http://h/'}}\n  - {{name: api, url: 'http://h/'}}\n",
        svc("")
    );
    let e = fails(&yaml, "services[2].name", "duplicate name \"api\"");
    assert_eq!(
        e.to_string(),
        "services[2].name: duplicate name \"api\" (also services[0])"
    );
}

#[test]
fn bad_names() {
    fails(
        "services:\n  - {name: 'a b', url: 'http://h/'}\n",
        "services[0].name",
        "' '",
    );
    fails(
        "services:\n  - {name: '', url: 'http://h/'}\n",
        "services[0].name",
        "1 to 128",
    );
    let long = "x".repeat(129);
    fails(
        &format!("services:\n  - {{name: {long}, url: 'http://h/'}}\n"),
        "services[0].name",
        "1 to 128",
    );
}

#[test]
fn body_without_post() {
    fails(
        &svc("    body: hello\n"),
        "services[0].body",
        "needs method: POST (method is GET)",
    );
    fails(
        &svc("    method: PUT\n"),
        "services[0].method",
        "GET, HEAD or POST",
    );
}

#[test]
fn bad_jitter() {
    fails(
        &svc("    jitter: 60%\n"),
        "services[0].jitter",
        "out of range",
    );
    fails(
        &svc("    jitter: 0.9\n"),
        "services[0].jitter",
        "out of range",
    );
    fails(
        &svc("    jitter: lots\n"),
        "services[0].jitter",
        "invalid jitter",
    );
    fails(
        "defaults: {jitter: -5%}\n",
        "defaults.jitter",
        "out of range",
    );
    let c = parse(&svc("    jitter: 50%\n")).unwrap();
    assert!((c.services[0].jitter - 0.5).abs() < 1e-9);
    let c = parse(&svc("    jitter: 0\n")).unwrap();
    assert_eq!(c.services[0].jitter, 0.0);
}

#[test]
fn bad_status_ranges() {
    fails(
        &svc("    expect: {status: '600-700'}\n"),
        "services[0].expect.status",
        "100..=599",
    );
    fails(
        &svc("    expect: {status: '299-200'}\n"),
        "services[0].expect.status",
        "reversed",
    );
    fails(
        &svc("    expect: {status: '200,'}\n"),
        "services[0].expect.status",
        "empty entry",
    );
    fails(
        &svc("    expect: {status: 'ok'}\n"),
        "services[0].expect.status",
        "invalid status",
    );
    let c = parse(&svc("    expect: {status: 204}\n")).unwrap();
    assert_eq!(c.services[0].expect.status.to_string(), "204");
}

#[test]
fn bad_headers() {
    fails(
        &svc("    headers: {'X Token': a}\n"),
        "services[0].headers.X Token",
        "not a valid header name",
    );
    fails(
        &svc("    headers: {'X-A': \"a\\r\\nEvil: 1\"}\n"),
        "services[0].headers.X-A",
        "CR, LF",
    );
    fails(
        &svc("    headers: {Content-Length: '5'}\n"),
        "services[0].headers.Content-Length",
        "set by the prober",
    );
}

#[test]
fn expect_and_tls_cross_checks() {
    fails(
        &svc("    expect: {max_latency: 10s}\n"),
        "services[0].expect.max_latency",
        "longer than timeout 5s",
    );
    fails(
        &svc("    method: HEAD\n    expect: {body_contains: ok}\n"),
        "services[0].expect.body_contains",
        "HEAD",
    );
    fails(
        &svc("    tls: {insecure_skip_verify: true}\n"),
        "services[0].tls",
        "https",
    );
    fails(
        &svc("    tags: ['a b']\n"),
        "services[0].tags[0]",
        "invalid tag",
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
fn bad_storage_kind() {
    fails(
        "storage: {kind: mysql}\n",
        "storage.kind",
        "expected sqlite or postgres",
    );
    fails(
        "storage: {batch_size: 10, queue_capacity: 5}\n",
        "storage.batch_size",
        "larger",
    );
}

#[test]
fn bad_log_section() {
    fails("log: {format: xml}\n", "log.format", "text or json");
    fails(
        "log: {level: 'ringwatch=[bad'}\n",
        "log.level",
        "invalid filter",
    );
    let c = parse("log: {level: 'ringwatch=debug,warn', format: json}\n").unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn example_configs_parse() {
    for name in ["ringwatch.yaml", "minimal.yaml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name == "ringwatch.yaml" {
            assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
            assert_eq!(c.server.shards, 0);
            assert!(c.services.len() >= 3);
            assert_eq!(
                c.storage.kind,
                StorageKind::Sqlite {
                    path: path.parent().unwrap().join("ringwatch.db")
                }
            );
        }
    }
}

#[test]
fn odd_documents_still_name_a_key() {
    fails("hello", "", "expected a mapping");
    fails("[1, 2]", "", "expected a mapping");
    fails(
        "server:\n  limits: 5\n",
        "server.limits",
        "expected a mapping",
    );
    fails(
        &svc("    tags:\n      a: 1\n"),
        "services[0].tags",
        "expected a list",
    );
    fails(
        "services:\n  - {name: a, url: [x]}\n",
        "services[0].url",
        "expected a single value",
    );
    fails(
        &svc("    interval: 1.5s\n"),
        "services[0].interval",
        "fractions",
    );
    let e = fails("---\na: 1\n---\nb: 2\n", "", "unknown key \"a\"");
    assert!(!e.message.contains("syntax"), "{e}");
}

#[test]
fn scalars_are_coerced_where_text_is_expected() {
    let c = parse(
        "services:\n  - {name: 12, url: 'http://h/', headers: {X-Num: 5}, tags: [1, 2], paused: yes}\n",
    )
    .unwrap();
    let s = &c.services[0];
    assert_eq!(s.name, "12");
    assert_eq!(s.headers, vec![("X-Num".to_string(), "5".to_string())]);
    assert_eq!(s.tags, vec!["1", "2"]);
    assert!(s.paused);
}

#[test]
fn auth_section_is_validated_with_its_keys() {
    let c = parse("auth:\n  tokens:\n    - {token: abcdefghijklmnop, scope: write}\n").unwrap();
    assert!(c.auth.enabled());
    assert_eq!(c.auth.tokens[0].scope, crate::auth::Scope::Write);
    assert!(
        !format!("{:?}", c.auth).contains("abcdefghijklmnop"),
        "Debug hides tokens"
    );
    fails(
        "auth:\n  tokens:\n    - {token: short}\n",
        "auth.tokens[0].token",
        "16",
    );
    fails(
        "auth:\n  tokens:\n    - {token: abcdefghijklmnop, scope: admin}\n",
        "auth.tokens[0].scope",
        "read or write",
    );
    fails(
        "auth:\n  tokens:\n    - {token_env: RINGWATCH_TEST_SURELY_UNSET}\n",
        "auth.tokens[0].token_env",
        "RINGWATCH_TEST_SURELY_UNSET",
    );
    fails(
        "auth:\n  tokens:\n    - {scope: read}\n",
        "auth.tokens[0].token",
        "required",
    );
    fails("auth:\n  jwt: {}\n", "auth.jwt.secret_env", "required");
    fails("auth:\n  bogus: 1\n", "auth", "bogus");
    // Non-loopback without auth: refused unless explicitly allowed.
    fails(
        "server:\n  listen: 0.0.0.0:8080\n",
        "auth",
        "allow_unauthenticated",
    );
    fails("server:\n  listen: \"[::]:8080\"\n", "auth", "loopback");
    assert!(
        parse("server:\n  listen: 0.0.0.0:8080\nauth:\n  allow_unauthenticated: true\n").is_ok()
    );
    assert!(parse("server:\n  listen: \"[::1]:8080\"\n").is_ok());
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
    fails(
        "server:\n  tls: {cert: /nonexistent/c.pem, key: /nonexistent/k.pem}\n",
        "server.tls.cert",
        "cannot read",
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
    let e = Config::parse(&yaml("empty.pem", "k.pem"), dir.path()).unwrap_err();
    assert_eq!(e.key, "server.tls.cert");
    let e = Config::parse(&yaml("c.pem", "empty.pem"), dir.path()).unwrap_err();
    assert_eq!(e.key, "server.tls.key");
}

#[test]
fn api_service_json_uses_the_same_rules_and_defaults() {
    let c = parse("defaults:\n  interval: 10s\n  timeout: 2s\n").unwrap();
    let v = serde_json::json!({"name": "a", "url": "http://127.0.0.1:1/"});
    let spec = api_service(&v, &c.defaults).unwrap();
    assert_eq!(spec.interval, Duration::from_secs(10));
    assert_eq!(spec.source, crate::model::Source::Api);
    let bad = serde_json::json!({"name": "a", "url": "http://127.0.0.1:1/", "interval": "1s"});
    let e = api_service(&bad, &c.defaults).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        ("invalid_value", Some("interval"))
    );
}

#[test]
fn large_fleets_fit_the_parser_budget() {
    // The YAML library's default budget stops near 25,000 services; a host may run 100,000+.
    let mut text = String::from("services:\n");
    for i in 0..30_000 {
        text.push_str(&format!(
            "  - {{name: s{i}, url: \"http://127.0.0.1:9/{i}\", interval: 60s}}\n"
        ));
    }
    let cfg = Config::parse(&text, Path::new(".")).expect("30k services parse");
    assert_eq!(cfg.services.len(), 30_000);
}
