//! Cluster mode against real Redis (a private `redis-server` per test, `appendonly yes`) and
//! real PostgreSQL (a database of its own per test): processes in roles, the streams between
//! them, and what survives when they die.

mod common;
mod ws_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::pg::{column, PgDb};
use common::redis::PrivateRedis;
use common::*;
use serde_json::Value;
use ws_support::Ws;

const LONG: Duration = Duration::from_secs(30);

/// A node's config: shared storage and Redis, its own port and roles.
fn node_config(port: u16, db: &PgDb, redis: &PrivateRedis, roles: &str, services: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:{port}\n  shards: 2\n  pin: false\n  shutdown_grace: 3s\n\
storage:\n  kind: postgres\n  url: \"{}\"\n  flush_interval: 50ms\n\
cluster:\n  redis: {}\n  roles: [{roles}]\n  node: n{port}\n  lease_ttl: 1s\n  claim_idle: 2s\n  batch: 64\n\
log:\n  level: info\n  format: text\n{services}",
        db.url,
        redis.url()
    )
}

fn services(t: &Target, flapping: usize, steady: usize, interval: &str) -> String {
    let mut s = String::from("services:\n");
    for i in 0..flapping {
        s.push_str(&format!(
            "  - {{name: flap{i}, url: '{}', interval: {interval}, timeout: 200ms, tags: [flap]}}\n",
            t.url("/switch")
        ));
    }
    for i in 0..steady {
        s.push_str(&format!(
            "  - {{name: ok{i}, url: '{}', interval: {interval}, timeout: 200ms}}\n",
            t.url("/ok")
        ));
    }
    s
}

/// Transitions as a client saw them: seq -> (service, to).
fn watch(ws: &mut Ws, d: Duration, seen: &mut Vec<(u64, String, String)>) {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        let Some(m) = ws.next_json(Duration::from_millis(100)) else {
            continue;
        };
        if m["type"] == "transition" {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            seen.push((m["seq"].as_u64().expect("seq"), s("service"), s("to")));
        }
    }
}

/// Stored transitions: seq -> (service, from, to).
fn stored(db: &PgDb) -> BTreeMap<u64, (String, String, String)> {
    let seqs = column(&db.url, "SELECT seq FROM transitions ORDER BY seq");
    let mut out = BTreeMap::new();
    for seq in seqs {
        let row = common::pg::text_row(
            &db.url,
            &format!("SELECT service, from_status, to_status FROM transitions WHERE seq = {seq}"),
        );
        out.insert(seq as u64, (row[0].clone(), row[1].clone(), row[2].clone()));
    }
    out
}

/// Every service's stored transitions alternate (each change decided once) and seq is
/// gap-free from 1.
fn assert_consistent(store: &BTreeMap<u64, (String, String, String)>) {
    let seqs: Vec<u64> = store.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seq has gaps"
    );
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for (seq, (svc, from, to)) in store {
        if let Some(prev) = last.get(svc.as_str()) {
            assert_eq!(
                prev, from,
                "seq {seq}: {svc} went {from}->{to} after {prev}"
            );
        }
        assert_ne!(from, to, "seq {seq}: no change");
        last.insert(svc, to);
    }
}

#[test]
fn one_node_in_every_role_streams_stores_and_serves() {
    let target = Target::start();
    let redis = PrivateRedis::start();
    let db = PgDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = node_config(port, &db, &redis, "all", &services(&target, 2, 2, "300ms"));
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    assert!(
        eventually(LONG, || rw.metric("ringwatch_services{status=\"up\"}")
            == 4.0),
        "services did not come up through the cluster:\n{}",
        rw.stderr_text()
    );
    let mut ws = Ws::connect(rw.addr);
    ws.subscribe(r#"{"op":"subscribe","filter":{"tags":["flap"]},"since":0}"#);
    let mut seen = Vec::new();
    watch(&mut ws, Duration::from_millis(300), &mut seen);
    target.status.store(500, Ordering::Relaxed);
    watch(&mut ws, Duration::from_secs(3), &mut seen);
    target.status.store(200, Ordering::Relaxed);
    watch(&mut ws, Duration::from_secs(3), &mut seen);
    let store = stored(&db);
    assert_consistent(&store);
    // The client saw every flap transition, replayed then live, once each, in seq order.
    let flaps: Vec<u64> = store
        .iter()
        .filter(|(_, (s, _, _))| s.starts_with("flap"))
        .map(|(q, _)| *q)
        .collect();
    let got: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(got, flaps, "client saw {seen:?}");
    assert_eq!(
        flaps.len(),
        6,
        "up, down, up for each flapping service: {store:?}"
    );
    // The REST API on the node reads status and history from the cluster.
    let (code, body) = rw.get("/api/v1/services/flap0");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "up");
    assert!(rw.metric("ringwatch_cluster_lease_held") == 1.0);
    assert!(rw.metric("ringwatch_cluster_redis_up") == 1.0);
    assert!(rw.terminate().success());
    let _ = Path::new(".");
}
