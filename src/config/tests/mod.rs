//! Config tests, one file per section; each validation error must name the right key. The
//! whole-file ones (YAML shape, defaults of an empty file, the shipped examples) are here.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::model::{Method, Scheme};

mod auth;
mod server;
mod service;
mod storage;

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
fn load_reports_missing_file_with_the_os_reason() {
    let e = Config::load(Path::new("/nonexistent/ringwatch.yaml")).unwrap_err();
    assert!(e.config_error().is_none());
    assert_eq!(
        e.to_string(),
        "cannot read config file /nonexistent/ringwatch.yaml: No such file or directory (os error 2)"
    );
}

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
fn example_configs_parse() {
    for name in ["ringwatch.yaml", "minimal.yaml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        // A service probing the example's own port would go DOWN as soon as a user changed
        // `server.listen`: the example must not hard-code one.
        let listen = c.server.listen.to_string();
        assert!(
            c.services.iter().all(|s| !s.url.contains(&listen)),
            "{name} probes its own listen address {listen}"
        );
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
