//! End-to-end tests of the REST API, auth and TLS against the real binary.

mod common;
mod ws_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A response: status, raw head, body.
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// `(code, field)` of an error body.
    fn error(&self) -> (String, Option<String>) {
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].is_string(), "no message: {v}");
        (
            e["code"].as_str().unwrap_or("").to_string(),
            e["field"].as_str().map(str::to_string),
        )
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

fn parse(raw: &str) -> Resp {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    Resp {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// One request on a fresh connection (`Connection: close`).
fn req(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(raw.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    parse(&out)
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

fn post(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    req(addr, "POST", path, &[JSON], &body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    req(addr, "GET", path, &[], "")
}

fn start(dir: &std::path::Path, shards: usize, server_extra: &str, rest: &str) -> Ringwatch {
    start_on(&Backend::Sqlite, dir, shards, server_extra, rest)
}

/// `start` on a given storage backend.
fn start_on(
    backend: &Backend,
    dir: &std::path::Path,
    shards: usize,
    server_extra: &str,
    rest: &str,
) -> Ringwatch {
    let port = free_port();
    let cfg = backend_config(port, backend, dir, shards, server_extra) + rest;
    Ringwatch::start_in(dir, port, &cfg)
}

backend_matrix! {
fn services_lifecycle_conflicts_pause_delete_and_restart(backend: Backend) {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config_services = format!(
        "services:\n  - {{name: cfg-svc, url: \"{}\", interval: 1s, timeout: 500ms, tags: [core]}}\n",
        target.url("/cfg")
    );
    let rw = start_on(&backend, dir.path(), 2, "", &config_services);
    let a = rw.addr;

    // Create: probed within one interval (+10% jitter; the first run lands inside it).
    let body = json!({"name": "api-svc", "url": target.url("/api"), "interval": "500ms",
        "timeout": "200ms", "tags": ["web", "core"], "expect": {"status": "200-299"}});
    let r = post(a, "/api/v1/services", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["source"], "api");
    assert_eq!(created["paused"], false);
    assert_eq!(created["interval"], "500ms");
    assert_eq!(created["status"], "unknown");
    assert!(r.header("Location").unwrap_or_default().ends_with(&id));
    assert!(
        eventually(Duration::from_millis(1500), || target.served("/api") > 0),
        "not probed within one interval"
    );

    // Names are unique across API and config services, whichever shard gets the request.
    for _ in 0..4 {
        let r = post(a, "/api/v1/services", &body);
        assert_eq!(r.status, 409, "{}", r.body);
        assert_eq!(r.error(), ("conflict".into(), Some("name".into())));
    }
    let r = post(
        a,
        "/api/v1/services",
        &json!({"name": "cfg-svc", "url": target.url("/x")}),
    );
    assert_eq!(r.status, 409, "{}", r.body);

    // Read by id and by name.
    assert_eq!(
        get(a, &format!("/api/v1/services/{id}")).json()["name"],
        "api-svc"
    );
    assert_eq!(get(a, "/api/v1/services/api-svc").json()["id"], id.as_str());
    assert_eq!(get(a, "/api/v1/services/nope").status, 404);

    // List: filters, limit and cursor.
    for i in 0..5 {
        let r = post(
            a,
            "/api/v1/services",
            &json!({"name": format!("bulk-{i}"),
            "url": target.url("/bulk"), "interval": "1m", "paused": true}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let all = get(a, "/api/v1/services?limit=1000").json();
    assert_eq!(all["items"].as_array().map(Vec::len), Some(7));
    assert!(all["next_cursor"].is_null());
    let core = get(a, "/api/v1/services?tag=core").json();
    let names: Vec<&str> = core["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let unknown = get(a, "/api/v1/services?status=unknown").json();
    let unknown = unknown["items"].as_array().unwrap();
    assert!(unknown.iter().all(|i| i["status"] == "unknown"));
    let bulk = unknown
        .iter()
        .filter(|i| i["name"].as_str().unwrap().starts_with("bulk-"))
        .count();
    assert_eq!(bulk, 5, "paused bulk-* stay unknown");
    let up = get(a, "/api/v1/services?status=up").json();
    assert!(up["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["status"] == "up"));
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get(a, &format!("/api/v1/services?limit=3&cursor={cursor}")).json();
        let items = page["items"].as_array().unwrap().clone();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 7);
    assert_eq!(sorted, seen, "pages are sorted by id, without duplicates");

    // Patch: a config service cannot be changed over the API; an API one can.
    let r = req(
        a,
        "PATCH",
        "/api/v1/services/cfg-svc",
        &[JSON],
        r#"{"interval":"2s"}"#,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let r = req(
        a,
        "PATCH",
        &format!("/api/v1/services/{id}"),
        &[JSON],
        &json!({"url": target.url("/api2"), "tags": null}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["tags"], json!([]));
    assert!(eventually(Duration::from_secs(3), || target
        .served("/api2")
        > 0));

    // Pause: no probe after one interval; resume: probed again within one interval.
    let r = req(a, "POST", &format!("/api/v1/services/{id}/pause"), &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["paused"], true);
    std::thread::sleep(Duration::from_millis(700));
    let before = target.served("/api2");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(target.served("/api2"), before, "paused service was probed");
    let r = req(a, "POST", &format!("/api/v1/services/{id}/resume"), &[], "");
    assert_eq!(r.json()["paused"], false);
    assert!(eventually(Duration::from_secs(3), || target
        .served("/api2")
        > before));

    // Restart: API services come back from the store.
    assert_eq!(rw.terminate().code(), Some(0));
    let rw = start_on(&backend, dir.path(), 2, "", &config_services);
    let a = rw.addr;
    let r = get(a, &format!("/api/v1/services/{id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["source"], "api");
    assert_eq!(r.json()["url"], target.url("/api2"));
    assert_eq!(get(a, "/api/v1/services/bulk-0").json()["paused"], true);
    let after_restart = target.served("/api2");
    assert!(eventually(Duration::from_secs(3), || target
        .served("/api2")
        > after_restart));

    // Delete: probes stop, the results stay readable.
    let r = req(a, "DELETE", &format!("/api/v1/services/{id}"), &[], "");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(get(a, &format!("/api/v1/services/{id}")).status, 404);
    std::thread::sleep(Duration::from_millis(600));
    let stopped = target.served("/api2");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        target.served("/api2"),
        stopped,
        "deleted service still probed"
    );
    let r = get(a, &format!("/api/v1/services/{id}/results?limit=1000"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.json()["items"].as_array().unwrap().is_empty(),
        "results kept"
    );
    let r = req(a, "DELETE", "/api/v1/services/cfg-svc", &[], "");
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(rw.terminate().code(), Some(0));
}
}

backend_matrix! {
/// A service deleted while its probe runs frees its slot in the shard's table, and the next
/// service created takes it over; the late result of the old probe must not move the new
/// service's state (the shard checks the service id, not only the slot).
fn a_probe_finishing_after_its_service_was_replaced_leaves_the_newcomer_alone(backend: Backend) {
    let target = Target::start();
    target
        .status
        .store(500, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile::tempdir().expect("tempdir");
    // One shard, so both services live in the same table.
    let rw = start_on(&backend, dir.path(), 1, "", "");
    let a = rw.addr;
    let old = json!({"name": "old", "url": target.url("/slow"), "interval": "2s",
        "timeout": "1900ms", "success_threshold": 1, "failure_threshold": 1});
    assert_eq!(post(a, "/api/v1/services", &old).status, 201);
    assert!(
        eventually(Duration::from_secs(4), || target.received("/slow") > 0),
        "old service never probed"
    );
    // Its probe is now waiting on the slow answer: replace the service meanwhile.
    assert_eq!(
        req(a, "DELETE", "/api/v1/services/old", &[], "").status,
        204
    );
    let new = json!({"name": "new", "url": target.url("/switch"), "interval": "1s",
        "timeout": "500ms", "success_threshold": 1, "failure_threshold": 1});
    assert_eq!(post(a, "/api/v1/services", &new).status, 201);
    assert!(
        eventually(Duration::from_secs(5), || target.served("/slow") > 0),
        "the slow answer never completed"
    );
    // The old probe's 200 has been applied (or ignored) by now; the newcomer only ever saw 500s.
    assert!(
        eventually(Duration::from_secs(4), || {
            let t = get(a, "/api/v1/services/new/transitions").json();
            t["items"].as_array().is_some_and(|i| !i.is_empty())
        }),
        "the new service never changed state"
    );
    std::thread::sleep(Duration::from_millis(1500));
    // Neither service may ever have been up: the old one's only result arrived after it was
    // deleted, the new one only ever got 500s. So every transition, of either, is the new
    // one's single unknown -> down.
    let t = get(a, "/api/v1/transitions").json();
    let seen: Vec<(String, String, String)> = t["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let f = |k: &str| i[k].as_str().unwrap_or("").to_string();
            (f("service"), f("from"), f("to"))
        })
        .collect();
    assert_eq!(
        seen,
        vec![("new".to_string(), "unknown".to_string(), "down".to_string())],
        "transitions"
    );
    assert_eq!(get(a, "/api/v1/services/new").json()["status"], "down");
    assert_eq!(rw.terminate().code(), Some(0));
}
}

backend_matrix! {
fn history_pages_stay_correct_while_results_are_appended(backend: Backend) {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rw = start_on(
        &backend,
        dir.path(),
        1,
        "",
        &format!(
        "services:\n  - {{name: hist, url: \"{}\", interval: 100ms, timeout: 50ms, jitter: 0%}}\n",
        target.url("/switch")
    ),
    );
    let a = rw.addr;
    let count = || {
        get(a, "/api/v1/services/hist/results?limit=1000").json()["items"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(
        eventually(Duration::from_secs(5), || count() >= 12),
        "results stored"
    );
    // Walk pages of 4 while new results keep arriving: strictly older, no duplicates, no gaps.
    let first = get(a, "/api/v1/services/hist/results?limit=4").json();
    let mut all: Vec<String> = Vec::new();
    let mut page = first;
    loop {
        for it in page["items"].as_array().unwrap() {
            all.push(it["scheduled_at"].as_str().unwrap().to_string());
            assert!(it["latency_ms"].is_number());
        }
        let Some(c) = page["next_cursor"].as_str().map(str::to_string) else {
            break;
        };
        std::thread::sleep(Duration::from_millis(150));
        page = get(
            a,
            &format!("/api/v1/services/hist/results?limit=4&cursor={c}"),
        )
        .json();
    }
    assert!(all.len() >= 12, "{}", all.len());
    for w in all.windows(2) {
        assert!(w[0] > w[1], "not strictly older: {w:?}");
    }
    // The whole set at the end contains exactly what was walked, plus newer ones on top.
    let full = get(a, "/api/v1/services/hist/results?limit=1000").json();
    let full: Vec<String> = full["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["scheduled_at"].as_str().unwrap().to_string())
        .collect();
    let tail: Vec<String> = full.iter().filter(|s| **s <= all[0]).cloned().collect();
    assert_eq!(tail, all, "a page skipped or repeated a result");

    // from/to bound the window.
    let r = get(
        a,
        &format!("/api/v1/services/hist/results?to={}&limit=1000", all[3]),
    );
    let got = r.json()["items"].as_array().unwrap().len();
    assert_eq!(got, all.len() - 4, "{}", r.body);

    // Transitions: wait for UP (a slow host may see a timeout first), then DOWN after the
    // target flips; pages of one follow the seq order with no gap.
    assert!(eventually(Duration::from_secs(10), || {
        get(a, "/api/v1/services/hist").json()["status"] == "up"
    }));
    target
        .status
        .store(500, std::sync::atomic::Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(10), || {
        get(a, "/api/v1/services/hist").json()["status"] == "down"
    }));
    // The history is the store's: give the writer its flush interval to catch up.
    let mut every = Vec::new();
    assert!(eventually(Duration::from_secs(10), || {
        every = get(a, "/api/v1/transitions?since=0&limit=1000").json()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        every.last().is_some_and(|t| t["to"] == "down")
    }));
    assert!(every.len() >= 2, "{every:?}");
    assert_eq!(every[every.len() - 1]["to"], "down");
    assert_eq!(every[every.len() - 2]["to"], "up");
    let t = get(a, "/api/v1/transitions?since=0&limit=1").json();
    assert_eq!(t["items"][0]["seq"], every[0]["seq"]);
    let next = t["next_cursor"].as_str().expect("more").to_string();
    let t2 = get(a, &format!("/api/v1/transitions?since={next}")).json();
    assert_eq!(t2["items"][0]["seq"], every[1]["seq"]);
    let st = get(a, "/api/v1/services/hist/transitions").json();
    assert_eq!(st["items"][0]["to"], "down", "newest first");
    assert_eq!(get(a, "/api/v1/services/ghost/results").status, 404);
}
}

#[test]
fn patch_takes_the_merge_patch_media_type_and_post_does_not() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rw = start(dir.path(), 1, "", "");
    let a = rw.addr;
    let body = json!({"name": "mp", "url": target.url("/mp"), "interval": "1m"});
    assert_eq!(post(a, "/api/v1/services", &body).status, 201);
    // RFC 7396's type, with and without parameters, in any case.
    for ct in [
        "application/merge-patch+json",
        "Application/Merge-Patch+JSON; charset=utf-8",
    ] {
        let r = req(
            a,
            "PATCH",
            "/api/v1/services/mp",
            &[("Content-Type", ct)],
            r#"{"tags":["t"]}"#,
        );
        assert_eq!(r.status, 200, "{ct}: {}", r.body);
        assert_eq!(r.json()["tags"], json!(["t"]));
    }
    let r = req(a, "PATCH", "/api/v1/services/mp", &[JSON], r#"{"tags":[]}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    // A merge patch is not a service object: POST refuses the type, and says what it takes.
    let r = req(
        a,
        "POST",
        "/api/v1/services",
        &[("Content-Type", "application/merge-patch+json")],
        &json!({"name": "mp2", "url": target.url("/mp")}).to_string(),
    );
    assert_eq!(r.status, 415, "{}", r.body);
    let r = req(
        a,
        "PATCH",
        "/api/v1/services/mp",
        &[("Content-Type", "application/json-patch+json")],
        "[]",
    );
    assert_eq!(r.status, 415, "{}", r.body);
    assert!(
        r.body.contains("application/merge-patch+json"),
        "{}",
        r.body
    );
}

#[test]
fn follow_redirects_round_trips_through_the_api_and_a_restart() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let defaults = "defaults:\n  follow_redirects: 2\n";
    let rw = start(dir.path(), 1, "", defaults);
    let a = rw.addr;
    let u = target.url("/fr");
    // Absent: the config's defaults; given: kept as given.
    let r = post(
        a,
        "/api/v1/services",
        &json!({"name": "fr-default", "url": u}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["follow_redirects"], 2);
    let body = json!({"name": "fr", "url": u, "follow_redirects": 5});
    let r = post(a, "/api/v1/services", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["follow_redirects"], 5);
    assert_eq!(get(a, "/api/v1/services/fr").json()["follow_redirects"], 5);
    // Out of range or not a count: refused, naming the field.
    for (value, code) in [
        (json!(11), "invalid_value"),
        (json!(true), "wrong_type"),
        (json!(-1), "wrong_type"),
    ] {
        let r = req(
            a,
            "PATCH",
            "/api/v1/services/fr",
            &[JSON],
            &json!({"follow_redirects": value}).to_string(),
        );
        assert_eq!(r.status, 400, "{value}: {}", r.body);
        assert_eq!(r.error(), (code.into(), Some("follow_redirects".into())));
    }
    let patch = |v: Value| {
        req(
            a,
            "PATCH",
            "/api/v1/services/fr",
            &[JSON],
            &json!({"follow_redirects": v}).to_string(),
        )
    };
    let r = patch(json!(0));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["follow_redirects"], 0);
    let r = patch(json!(7));
    assert_eq!(r.json()["follow_redirects"], 7);
    // Stored with the value resolved, so it survives a restart.
    assert_eq!(rw.terminate().code(), Some(0));
    let rw = start(dir.path(), 1, "", defaults);
    let a = rw.addr;
    assert_eq!(get(a, "/api/v1/services/fr").json()["follow_redirects"], 7);
    assert_eq!(
        get(a, "/api/v1/services/fr-default").json()["follow_redirects"],
        2
    );
    // `null` resets it to the default.
    let r = req(
        a,
        "PATCH",
        "/api/v1/services/fr",
        &[JSON],
        r#"{"follow_redirects":null}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["follow_redirects"], 2);
    assert_eq!(rw.terminate().code(), Some(0));
}

#[test]
fn validation_errors_name_their_field() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rw = start(dir.path(), 2, "  limits:\n    max_body_bytes: 2048\n", "");
    let a = rw.addr;
    let u = target.url("/v");
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"name": "x", "url": "ftp://example.com/"}),
            "invalid_value",
            "url",
        ),
        (
            json!({"name": "x", "url": "not a url"}),
            "invalid_value",
            "url",
        ),
        (
            json!({"name": "x", "url": u, "interval": "10ms"}),
            "invalid_value",
            "interval",
        ),
        (
            json!({"name": "x", "url": u, "interval": "2d"}),
            "invalid_value",
            "interval",
        ),
        (
            json!({"name": "x", "url": u, "timeout": "1ms"}),
            "invalid_value",
            "timeout",
        ),
        (
            json!({"name": "x", "url": u, "interval": "2s", "timeout": "5s"}),
            "invalid_value",
            "timeout",
        ),
        (
            json!({"name": "x", "url": u, "interval": "2s", "timeout": "2s"}),
            "invalid_value",
            "timeout",
        ),
        (
            json!({"name": "x", "url": u, "foo": 1}),
            "unknown_field",
            "foo",
        ),
        (
            json!({"name": "x", "url": u, "expect": {"stat": "200"}}),
            "unknown_field",
            "expect.stat",
        ),
        (
            json!({"name": "x", "url": u, "interval": 30}),
            "wrong_type",
            "interval",
        ),
        (
            json!({"name": "x", "url": u, "tags": "a"}),
            "wrong_type",
            "tags",
        ),
        (
            json!({"name": "x", "url": u, "tags": ["a", 1]}),
            "wrong_type",
            "tags[1]",
        ),
        (
            json!({"name": "x", "url": u, "failure_threshold": -1}),
            "wrong_type",
            "failure_threshold",
        ),
        (
            json!({"name": "x", "url": u, "failure_threshold": 0}),
            "invalid_value",
            "failure_threshold",
        ),
        (
            json!({"name": "x", "url": u, "paused": "yes"}),
            "wrong_type",
            "paused",
        ),
        (
            json!({"name": "x", "url": u, "method": "PUT"}),
            "invalid_value",
            "method",
        ),
        (
            json!({"name": "x", "url": u, "body": "b"}),
            "invalid_value",
            "body",
        ),
        (
            json!({"name": "x", "url": u, "headers": {"X": 1}}),
            "wrong_type",
            "headers.X",
        ),
        (
            json!({"name": "x", "url": u, "headers": {"Content-Length": "1"}}),
            "invalid_value",
            "headers.Content-Length",
        ),
        (
            json!({"name": "x", "url": u, "expect": {"status": "700"}}),
            "invalid_value",
            "expect.status",
        ),
        (
            json!({"name": "bad name", "url": u}),
            "invalid_value",
            "name",
        ),
        (json!({"url": u}), "missing_field", "name"),
    ];
    for (body, code, field) in cases {
        let r = post(a, "/api/v1/services", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(
            r.error(),
            (code.to_string(), Some(field.to_string())),
            "{body}"
        );
    }
    // Invalid JSON, with its position.
    let r = req(
        a,
        "POST",
        "/api/v1/services",
        &[JSON],
        "{\n  \"name\": \"x\",\n  oops\n}",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.error().0, "invalid_json");
    // The position is given once, not once by us and again by the parser.
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert_eq!(message.matches("line 3 column 3").count(), 1, "{message}");
    assert!(message.starts_with("invalid JSON: "), "{message}");
    let r = req(a, "POST", "/api/v1/services", &[JSON], "[1,2]");
    assert_eq!((r.status, r.error().0.as_str()), (400, "wrong_type"));
    // Body over the limit: 413 before the body is read.
    let big = format!(
        "{{\"name\":\"x\",\"url\":\"{u}\",\"body\":\"{}\"}}",
        "a".repeat(4096)
    );
    let r = req(a, "POST", "/api/v1/services", &[JSON], &big);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.error().0, "body_too_large");
    // Wrong content type.
    let r = req(
        a,
        "POST",
        "/api/v1/services",
        &[("Content-Type", "text/plain")],
        "{}",
    );
    assert_eq!(r.status, 415, "{}", r.body);
    let r = req(a, "POST", "/api/v1/services", &[], "{}");
    assert_eq!(r.status, 415, "{}", r.body);
    // Unknown route, wrong method.
    let r = get(a, "/api/v1/nothing");
    assert_eq!((r.status, r.error().0.as_str()), (404, "not_found"));
    let r = req(a, "PUT", "/api/v1/services", &[JSON], "{}");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow").as_deref(), Some("GET, HEAD, POST"));
    let r = req(a, "DELETE", "/api/v1/transitions", &[], "");
    assert_eq!(
        (r.status, r.header("Allow").as_deref()),
        (405, Some("GET, HEAD"))
    );
    // Query parameters are checked too.
    let r = get(a, "/api/v1/services?limit=0");
    assert_eq!(r.error(), ("invalid_value".into(), Some("limit".into())));
    let r = get(a, "/api/v1/services?status=sideways");
    assert_eq!(r.error(), ("invalid_value".into(), Some("status".into())));
    let r = get(a, "/api/v1/services?colour=red");
    assert_eq!(
        r.error(),
        ("unknown_parameter".into(), Some("colour".into()))
    );
    let r = get(a, "/api/v1/services?cursor=garbage");
    assert_eq!(r.error(), ("invalid_value".into(), Some("cursor".into())));
    let r = get(a, "/api/v1/transitions?since=-4");
    assert_eq!(r.error(), ("invalid_value".into(), Some("since".into())));
    // PATCH validates the merged object; the name is fixed.
    assert_eq!(
        post(a, "/api/v1/services", &json!({"name": "ok", "url": u})).status,
        201
    );
    let r = req(
        a,
        "PATCH",
        "/api/v1/services/ok",
        &[JSON],
        r#"{"timeout":"1h"}"#,
    );
    assert_eq!(r.error(), ("invalid_value".into(), Some("timeout".into())));
    let r = req(
        a,
        "PATCH",
        "/api/v1/services/ok",
        &[JSON],
        r#"{"name":"other"}"#,
    );
    assert_eq!(r.error(), ("invalid_value".into(), Some("name".into())));
    // Nothing above crashed the server.
    assert_eq!(get(a, "/healthz").status, 200);
    assert!(rw.metric("ringwatch_api_responses_total{class=\"4xx\"}") >= 30.0);
    assert!(rw.metric("ringwatch_api_responses_total{class=\"2xx\"}") >= 1.0);
}

#[test]
fn not_found_names_the_service_the_way_the_user_asked_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rw = start(dir.path(), 2, "", "");
    let a = rw.addr;
    let message = |r: Resp| -> String {
        assert_eq!(
            (r.status, r.error().0.as_str()),
            (404, "not_found"),
            "{}",
            r.body
        );
        r.json()["error"]["message"].as_str().unwrap().to_string()
    };
    // By name: every route that takes `{id}` speaks of the name, never its hash.
    let by_name = "no service named nosuch";
    assert_eq!(message(get(a, "/api/v1/services/nosuch")), by_name);
    assert_eq!(message(get(a, "/api/v1/services/nosuch/results")), by_name);
    assert_eq!(
        message(get(a, "/api/v1/services/nosuch/transitions")),
        by_name
    );
    assert_eq!(
        message(req(a, "DELETE", "/api/v1/services/nosuch", &[], "")),
        by_name
    );
    assert_eq!(
        message(req(a, "POST", "/api/v1/services/nosuch/pause", &[], "")),
        by_name
    );
    let patch = req(a, "PATCH", "/api/v1/services/nosuch", &[JSON], "{}");
    assert_eq!(message(patch), by_name);
    // By id: the id, as the user wrote it.
    assert_eq!(
        message(get(a, "/api/v1/services/00000000000000ab")),
        "no service with id 00000000000000ab"
    );
    // Both forms still find a service that exists.
    let u = "http://127.0.0.1:9/";
    let created = post(a, "/api/v1/services", &json!({"name": "shop", "url": u}));
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(get(a, "/api/v1/services/shop").status, 200);
    assert_eq!(get(a, &format!("/api/v1/services/{id}")).status, 200);
}

const READ: &str = "read-token-aaaaaaaaaaaa";
const WRITE: &str = "write-token-bbbbbbbbbbbb";
const SECRET: &str = "jwt-secret-0123456789abcdef0123456789";

fn auth_section() -> String {
    format!(
        "auth:\n  tokens:\n    - {{token: {READ}, scope: read}}\n    - {{token_env: RW_TEST_WRITE_TOKEN, scope: write}}\n  jwt:\n    secret_env: RW_TEST_JWT_SECRET\n    issuer: tests\n    audience: ringwatch\n"
    )
}

#[test]
fn auth_scopes_tokens_and_jwt() {
    // nextest runs each test in its own process, so the variables reach only this child.
    std::env::set_var("RW_TEST_WRITE_TOKEN", WRITE);
    std::env::set_var("RW_TEST_JWT_SECRET", SECRET);
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rw = start(dir.path(), 2, "", &auth_section());
    let a = rw.addr;
    let bearer = |t: &str| format!("Bearer {t}");
    let svc = json!({"name": "authed", "url": target.url("/a"), "interval": "1m"}).to_string();

    let r = get(a, "/api/v1/services");
    assert_eq!(r.status, 401);
    assert!(r.header("WWW-Authenticate").is_some());
    assert_eq!(r.error().0, "unauthorized");
    let r = req(
        a,
        "GET",
        "/api/v1/services",
        &[("Authorization", &bearer("wrong-token-cccccccccccc"))],
        "",
    );
    assert_eq!(r.status, 401);
    let r = req(
        a,
        "GET",
        "/api/v1/services",
        &[("Authorization", &bearer(READ))],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = req(
        a,
        "POST",
        "/api/v1/services",
        &[JSON, ("Authorization", &bearer(READ))],
        &svc,
    );
    assert_eq!((r.status, r.error().0.as_str()), (403, "forbidden"));
    let r = req(
        a,
        "POST",
        "/api/v1/services",
        &[JSON, ("Authorization", &bearer(WRITE))],
        &svc,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // ?token= (the WebSocket's way) works the same.
    assert_eq!(
        get(a, &format!("/api/v1/services?token={READ}")).status,
        200
    );

    // JWT HS256.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let jwt = |c: Value| ringwatch::auth::sign_jwt(SECRET.as_bytes(), &c);
    let good = jwt(json!({"iss": "tests", "aud": "ringwatch", "exp": now + 60, "scope": "write"}));
    let r = req(
        a,
        "DELETE",
        "/api/v1/services/authed",
        &[("Authorization", &bearer(&good))],
        "",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let reader = jwt(json!({"iss": "tests", "aud": "ringwatch", "exp": now + 60}));
    let r = req(
        a,
        "POST",
        "/api/v1/services/x/pause",
        &[("Authorization", &bearer(&reader))],
        "",
    );
    assert_eq!(r.status, 403, "default JWT scope is read: {}", r.body);
    for bad in [
        jwt(json!({"iss": "tests", "aud": "ringwatch", "exp": now - 3600})),
        jwt(json!({"iss": "tests", "aud": "ringwatch", "exp": now + 60, "nbf": now + 3600})),
        jwt(json!({"iss": "other", "aud": "ringwatch", "exp": now + 60})),
        jwt(json!({"iss": "tests", "aud": "else", "exp": now + 60})),
        ringwatch::auth::sign_jwt(
            b"not-the-secret-not-the-secret-xx",
            &json!({"iss": "tests", "aud": "ringwatch", "exp": now + 60}),
        ),
    ] {
        let r = req(
            a,
            "GET",
            "/api/v1/services",
            &[("Authorization", &bearer(&bad))],
            "",
        );
        assert_eq!(r.status, 401, "{}", r.body);
    }

    // Health stays open; /metrics needs a read token.
    assert_eq!(get(a, "/healthz").status, 200);
    assert_eq!(get(a, "/readyz").status, 200);
    assert_eq!(get(a, "/metrics").status, 401);
    assert_eq!(
        req(
            a,
            "GET",
            "/metrics",
            &[("Authorization", &bearer(READ))],
            ""
        )
        .status,
        200
    );
    // Tokens never reach the log.
    let log = rw.stderr_text();
    for secret in [READ, WRITE, SECRET, good.as_str()] {
        assert!(!log.contains(secret), "a token was logged");
    }
}

#[test]
fn non_loopback_without_auth_is_refused_at_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |extra: &str| {
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, format!("server:\n  listen: 0.0.0.0:0\n{extra}")).unwrap();
        std::process::Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check")
    };
    let out = check("");
    assert!(!out.status.success());
    let msg =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        msg.contains("auth") && msg.contains("allow_unauthenticated"),
        "{msg}"
    );
    assert!(check("auth:\n  allow_unauthenticated: true\n")
        .status
        .success());
    assert!(
        check("auth:\n  tokens: [{token: a-long-enough-token-123, scope: write}]\n")
            .status
            .success()
    );
    let out = check("auth:\n  tokens: [{token: short}]\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.tokens[0].token"));
}

#[test]
fn tls_serves_https_with_a_test_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
    std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();
    let port = free_port();
    let cfg = base_config(
        port,
        &dir.path().join("rw.db"),
        2,
        "  tls:\n    cert: cert.pem\n    key: key.pem\n    handshake_timeout: 1s\n",
    );
    // Ringwatch::start_in polls /readyz over plain HTTP; with TLS on, spawn it by hand.
    let path = dir.path().join("ringwatch.yaml");
    std::fs::write(&path, cfg).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(
        std::process::Command::new(bin())
            .args(["run", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let https = |path: &str| -> Option<Resp> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
        let conn = rustls::ClientConnection::new(client.clone(), name).ok()?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        Some(parse(&String::from_utf8_lossy(&out)))
    };
    assert!(
        eventually(Duration::from_secs(20), || https("/readyz")
            .is_some_and(|r| r.status == 200)),
        "https never became ready"
    );
    let r = https("/api/v1/services").expect("https");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["items"], json!([]));
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/healthz");
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP served on the TLS port"
    );
    // A client that never finishes the handshake is dropped after handshake_timeout.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = std::time::Instant::now();
    let mut b = [0u8; 16];
    let n = stalled.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "stalled handshake held for {:?}",
        t.elapsed()
    );

    // wss: the WebSocket session runs over the same TLS port.
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let mut wss = rustls::StreamOwned::new(conn, tcp);
    wss.write_all(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        wss.read_exact(&mut byte).expect("101 head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let read_text = |wss: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        let mut h = [0u8; 2];
        wss.read_exact(&mut h).expect("frame header");
        assert_eq!(h[0], 0x81, "unfragmented text frame");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                wss.read_exact(&mut l).expect("len");
                u16::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        wss.read_exact(&mut payload).expect("payload");
        serde_json::from_slice::<serde_json::Value>(&payload).expect("json")
    };
    assert_eq!(read_text(&mut wss)["type"], "hello");
    // A masked client frame: subscribe to everything.
    let msg = br#"{"op":"subscribe"}"#;
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | msg.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(msg.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    wss.write_all(&frame).unwrap();
    assert_eq!(read_text(&mut wss)["type"], "subscribed");
    assert_eq!(read_text(&mut wss)["type"], "snapshot");
}

#[test]
fn a_service_id_has_one_shape_everywhere_and_every_route_takes_it() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let services = format!(
        "services:\n  - {{name: shop, url: \"{}\", interval: 200ms, timeout: 150ms}}\n",
        target.url("/ok")
    );
    let rw = start(dir.path(), 2, "", &services);
    let a = rw.addr;
    let svc = get(a, "/api/v1/services/shop").json();
    let id = svc["id"].as_str().expect("id is a string").to_string();
    // Transitions are committed at once, results with the next batch: wait for both.
    let results_path = format!("/api/v1/services/{id}/results?limit=1");
    assert!(eventually(Duration::from_secs(10), || {
        let stored = |p: &str| {
            get(a, p).json()["items"]
                .as_array()
                .is_some_and(|i| !i.is_empty())
        };
        stored("/api/v1/transitions?since=0") && stored(&results_path)
    }));
    let transitions = get(a, "/api/v1/transitions?since=0").json();
    let results = get(a, &results_path).json();
    let per_service = get(a, &format!("/api/v1/services/{id}/transitions")).json();
    // The same string in every response, never a JSON number (2^53 would round it).
    for shown in [
        &transitions["items"][0]["service_id"],
        &results["items"][0]["service_id"],
        &per_service["items"][0]["service_id"],
    ] {
        assert_eq!(shown.as_str(), Some(id.as_str()), "{shown}");
    }
    // And every route takes it.
    for path in [
        format!("/api/v1/services/{id}"),
        format!("/api/v1/services/{id}/results"),
        format!("/api/v1/services/{id}/transitions"),
    ] {
        assert_eq!(get(a, &path).status, 200, "{path}");
    }
    let mut ws = ws_support::Ws::connect(a);
    ws.subscribe(r#"{"op":"subscribe","since":0}"#);
    let (t, _) = ws.until_type("transition", Duration::from_secs(10));
    assert_eq!(t["service_id"].as_str(), Some(id.as_str()));
}
