//! One service (`services[i]`, or an API body) and the `defaults` it inherits.

use super::*;

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
    let key = e.config_error().map(|c| c.key.as_str());
    assert_eq!(key, Some("services[0].tls.ca_file"), "{e}");
    // The file is named once, before the key.
    assert!(
        e.to_string()
            .starts_with(&format!("{}: services[0]", file.display())),
        "{e}"
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
        &format!("defaults: {{interval: 1s, timeout: 2s}}\n{}", svc("")),
        "defaults.timeout",
        "shorter",
    );
}

#[test]
fn a_clash_with_an_inherited_value_names_the_default_and_the_key_to_set() {
    // Only `interval` written: the 5s is the default timeout, and `timeout` is what to add.
    let e = fails(&svc("    interval: 2s\n"), "services[0].timeout", "");
    assert_eq!(
        e.to_string(),
        "services[0].timeout: timeout (default 5s) must be shorter than interval 2s"
    );
    let e = fails(
        &format!("defaults: {{timeout: 3s}}\n{}", svc("    interval: 3s\n")),
        "services[0].timeout",
        "",
    );
    assert_eq!(
        e.message,
        "timeout (default 3s) must be shorter than interval 3s"
    );
    // Only `timeout` written: the interval is the inherited one.
    let e = fails(&svc("    timeout: 40s\n"), "services[0].timeout", "");
    assert_eq!(e.message, "40s must be shorter than interval (default 30s)");
    // The same over the API: the field is `timeout`, not `interval`.
    let v = serde_json::json!({"name": "a", "url": "http://127.0.0.1:1/", "interval": "2s"});
    let e = api_service(&v, &ServiceDefaults::default()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("timeout"));
    assert_eq!(
        e.message,
        "timeout (default 5s) must be shorter than interval 2s"
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
        ("invalid_value", Some("timeout"))
    );
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
