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
fn node_config(
    port: u16,
    db_url: &str,
    redis: &PrivateRedis,
    roles: &str,
    services: &str,
) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:{port}\n  shards: 2\n  pin: false\n  shutdown_grace: 3s\n\
storage:\n  kind: postgres\n  url: \"{}\"\n  flush_interval: 50ms\n\
cluster:\n  redis: {}\n  roles: [{roles}]\n  node: n{port}\n  lease_ttl: 1s\n  claim_idle: 2s\n  batch: 64\n\
log:\n  level: info\n  format: text\n{services}",
        db_url,
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
fn watch(ws: &mut Ws, d: Duration, seen: &mut Seen) {
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
    let cfg = node_config(
        port,
        &db.url,
        &redis,
        "all",
        &services(&target, 2, 2, "300ms"),
    );
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
    // The ingest thread counts into the node's counters (they read 0 when it kept its own).
    assert!(rw.metric("ringwatch_cluster_results_ingested_total") > 0.0);
    assert!(
        rw.metric("ringwatch_cluster_transitions_committed_total") >= store.len() as f64,
        "every stored transition was committed by this node's ingest"
    );
    assert!(rw.metric("ringwatch_cluster_events_published_total") > 0.0);
    assert!(rw.terminate().success());
    let _ = Path::new(".");
}

/// A transition as a client saw it: (seq, service, to).
type Seen = Vec<(u64, String, String)>;

/// A client: its socket, whether it asked only for the flapping services, what it saw.
type Client = (Ws, bool, Seen);

/// A cluster process of the fault test.
struct Node {
    rw: Ringwatch,
    _dir: tempfile::TempDir,
}

fn node(db: &PgDb, redis: &PrivateRedis, role: &str, svc: &str) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = node_config(port, &db.url, redis, role, svc).replace("shards: 2", "shards: 1");
    Node {
        rw: Ringwatch::start_in(dir.path(), port, &cfg),
        _dir: dir,
    }
}

/// `metric` summed over the live nodes (0 where a node does not have it).
fn total(nodes: &[&Node], series: &str) -> f64 {
    nodes
        .iter()
        .map(|n| {
            let (_, body) = n.rw.get("/metrics");
            metric_value(&body, series).unwrap_or(0.0)
        })
        .sum()
}

#[test]
fn a_cluster_loses_nothing_when_processes_die_and_redis_restarts() {
    const SERVICES: usize = 200;
    const FLAPPING: usize = 20;
    let target = Target::start();
    let mut redis = PrivateRedis::start();
    let db = PgDb::create();
    let svc = services(&target, FLAPPING, SERVICES - FLAPPING, "1s");
    // Ingest first (it creates the results group), then the rest.
    let mut ingest = vec![
        node(&db, &redis, "ingest", &svc),
        node(&db, &redis, "ingest", &svc),
    ];
    let mut workers: Vec<Node> = (0..3).map(|_| node(&db, &redis, "worker", &svc)).collect();
    let gateways: Vec<Node> = (0..2).map(|_| node(&db, &redis, "gateway", &svc)).collect();
    let mut schedulers = vec![
        node(&db, &redis, "scheduler", &svc),
        node(&db, &redis, "scheduler", &svc),
    ];
    // Two clients per gateway: everything, and only the flapping services.
    let mut clients: Vec<Client> = Vec::new();
    for g in &gateways {
        for flap_only in [false, true] {
            let mut ws = Ws::connect(g.rw.addr);
            let filter = if flap_only {
                r#","filter":{"tags":["flap"]}"#
            } else {
                ""
            };
            ws.subscribe(&format!(r#"{{"op":"subscribe","since":0{filter}}}"#));
            clients.push((ws, flap_only, Vec::new()));
        }
    }
    let pump = |clients: &mut Vec<Client>, d: Duration| {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            for (ws, _, seen) in clients.iter_mut() {
                watch(ws, Duration::from_millis(50), seen);
            }
        }
    };
    // Warm-up: every service has a stored status.
    assert!(
        eventually(LONG, || gateways[0]
            .rw
            .metric("ringwatch_services{status=\"up\"}")
            == SERVICES as f64),
        "cluster did not warm up:\n{}",
        ingest[0].rw.stderr_text()
    );
    let t0 = ringwatch::model::UnixMillis::now().0 + 1000;
    let flip = |target: &Target| {
        let s = target.status.load(Ordering::Relaxed);
        target
            .status
            .store(if s == 200 { 500 } else { 200 }, Ordering::Relaxed);
    };
    let steps: [&str; 5] = ["worker", "scheduler", "ingest", "redis", "none"];
    for step in steps {
        flip(&target);
        pump(&mut clients, Duration::from_millis(1500));
        match step {
            "worker" => drop(workers.remove(0)),
            "scheduler" => {
                let active = schedulers
                    .iter()
                    .position(|n| n.rw.metric("ringwatch_cluster_lease_held") == 1.0)
                    .expect("an active scheduler");
                drop(schedulers.remove(active));
            }
            "ingest" => drop(ingest.remove(0)),
            "redis" => {
                redis.down();
                pump(&mut clients, Duration::from_millis(1000));
                redis.up();
            }
            _ => {}
        }
        pump(&mut clients, Duration::from_millis(1500));
    }
    let t1 = ringwatch::model::UnixMillis::now().0 - 3000;
    // Quiescence: every stored transition reached every client that wants it.
    let settled = eventually(LONG, || {
        pump(&mut clients, Duration::from_millis(200));
        let max =
            common::pg::scalar(&db.url, "SELECT COALESCE(MAX(seq), 0) FROM transitions") as u64;
        clients
            .iter()
            .all(|(_, flap_only, seen)| *flap_only || seen.last().is_some_and(|l| l.0 == max))
    });
    let live: Vec<&Node> = ingest
        .iter()
        .chain(&workers)
        .chain(&gateways)
        .chain(&schedulers)
        .collect();
    let expired = total(
        &live,
        "ringwatch_cluster_jobs_expired_total{stage=\"dispatch\"}",
    ) + total(
        &live,
        "ringwatch_cluster_jobs_expired_total{stage=\"worker\"}",
    );
    assert!(settled, "clients did not catch up");
    let store = stored(&db);
    assert_consistent(&store);
    assert!(
        store.len() >= FLAPPING * 4,
        "too few transitions: {}",
        store.len()
    );
    for (_, flap_only, seen) in &clients {
        let want: Vec<u64> = store
            .iter()
            .filter(|(_, (s, _, _))| !flap_only || s.starts_with("flap"))
            .map(|(q, _)| *q)
            .collect();
        let got: Vec<u64> = seen.iter().map(|s| s.0).collect();
        assert_eq!(
            got, want,
            "a client missed, repeated or reordered transitions"
        );
    }
    // Every planned slot in [t0, t1] has exactly one stored result, or is counted expired.
    let interval = Duration::from_secs(1);
    let mut planned = 0i64;
    for i in 0..SERVICES {
        let name = if i < FLAPPING {
            format!("flap{i}")
        } else {
            format!("ok{}", i - FLAPPING)
        };
        let id = ringwatch::model::ServiceId::from_name(&name);
        let phase = ringwatch::pipeline::sched::phase(id, interval);
        let first = ringwatch::pipeline::sched::slot_after(
            ringwatch::model::UnixMillis(t0 - 1),
            phase,
            interval,
        )
        .0;
        let slots = if first <= t1 {
            (t1 - first) / 1000 + 1
        } else {
            0
        };
        planned += slots;
        let off_grid = common::pg::scalar(
            &db.url,
            &format!(
                "SELECT COUNT(*) FROM results WHERE service_id = {} AND (scheduled_at - {phase}) % 1000 <> 0",
                id.get()
            ),
        );
        assert_eq!(off_grid, 0, "{name} has results off its grid of slots");
    }
    let stored_slots = common::pg::scalar(
        &db.url,
        &format!(
            "SELECT COUNT(*) FROM results WHERE scheduled_at >= {t0} AND scheduled_at <= {t1}"
        ),
    );
    let missing = planned - stored_slots;
    eprintln!(
        "slots planned {planned}, stored {stored_slots}, missing {missing}, counted expired {expired}; transitions {}",
        store.len()
    );
    assert!(
        missing >= 0,
        "more results than slots: {stored_slots} of {planned}"
    );
    assert!(
        (missing as f64) <= expired,
        "{missing} of {planned} slots have no result but only {expired} jobs were counted expired"
    );
    assert!(
        missing * 5 < planned,
        "too many slots lost: {missing} of {planned}"
    );
    for n in live {
        let _ = n.rw.get("/readyz");
    }
}

#[test]
fn a_node_keeps_retrying_while_redis_is_away_and_says_so() {
    let target = Target::start();
    let mut redis = PrivateRedis::start();
    redis.down();
    let db = PgDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = node_config(
        port,
        &db.url,
        &redis,
        "all",
        &services(&target, 0, 2, "500ms"),
    );
    let rw = Ringwatch::spawn_in(dir.path(), port, &cfg);
    assert!(
        eventually(LONG, || http_get(rw.addr, "/readyz").is_ok_and(
            |(code, body)| code == 503 && body.contains("redis unavailable")
        )),
        "readyz did not report redis:\n{}",
        rw.stderr_text()
    );
    assert_eq!(rw.metric("ringwatch_cluster_redis_up"), 0.0);
    std::thread::sleep(Duration::from_secs(2));
    outlasts_then_serves(rw, "cannot reach redis", || redis.up());
}

/// The node waiting on something that is away is still running and says so in its log; once
/// `bring_back` has run it becomes ready and probes its two services, then stops cleanly.
fn outlasts_then_serves(mut rw: Ringwatch, logged: &str, bring_back: impl FnOnce()) {
    assert!(
        rw.child.try_wait().expect("wait").is_none(),
        "the node exited:\n{}",
        rw.stderr_text()
    );
    assert!(rw.stderr_text().contains(logged), "{}", rw.stderr_text());
    bring_back();
    assert!(
        eventually(LONG, || http_get(rw.addr, "/readyz")
            .is_ok_and(|(c, _)| c == 200)),
        "the node did not recover:\n{}",
        rw.stderr_text()
    );
    assert!(eventually(LONG, || rw
        .metric("ringwatch_services{status=\"up\"}")
        == 2.0));
    assert!(rw.terminate().success());
}

#[test]
fn a_node_started_while_postgres_is_down_waits_for_it_and_says_so() {
    let target = Target::start();
    let redis = PrivateRedis::start();
    let pg = common::pg::PrivatePg::start();
    common::pg::exec(&pg.url("postgres"), "CREATE DATABASE rw").expect("create database");
    pg.down();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = node_config(
        port,
        &pg.url("rw"),
        &redis,
        "all",
        &services(&target, 0, 2, "500ms"),
    )
    .replace(
        "flush_interval: 50ms",
        "flush_interval: 50ms\n  connect_timeout: 1s",
    );
    let rw = Ringwatch::spawn_in(dir.path(), port, &cfg);
    // While the database is away the port answers, and says what it waits for.
    assert!(
        eventually(LONG, || http_get(rw.addr, "/readyz").is_ok_and(
            |(code, body)| code == 503 && body.contains("waiting for the store")
        )),
        "readyz did not report the store:\n{}",
        rw.stderr_text()
    );
    assert_eq!(
        http_get(rw.addr, "/healthz").map(|(c, _)| c).ok(),
        Some(200)
    );
    assert_eq!(rw.metric("ringwatch_store_up"), 0.0);
    assert!(eventually(LONG, || rw
        .metric("ringwatch_store_start_failures_total")
        >= 2.0));
    outlasts_then_serves(rw, "store unreachable at start; retrying", || pg.up());
}

#[test]
fn a_service_registered_on_any_node_is_probed_within_an_interval() {
    let target = Target::start();
    let redis = PrivateRedis::start();
    let db = PgDb::create();
    let core = node(&db, &redis, "scheduler,worker,ingest", "");
    let edge = node(&db, &redis, "gateway", "");
    let body = format!(
        r#"{{"name":"late","url":"{}","interval":"1s","timeout":"500ms"}}"#,
        target.url("/ok")
    );
    let (code, text) = http_request(
        edge.rw.addr,
        &format!(
            "POST /api/v1/services HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .expect("post");
    assert_eq!(code, 201, "{text}");
    let created = Instant::now();
    // The scheduler on the other node picks it up, a worker probes it, ingest judges it, and
    // the node it was registered on shows the status it did not decide itself.
    assert!(
        eventually(LONG, || {
            let (_, b) = edge.rw.get("/api/v1/services/late");
            serde_json::from_str::<Value>(&b).is_ok_and(|v| v["status"] == "up")
        }),
        "not picked up:\n{}",
        core.rw.stderr_text()
    );
    let results = common::pg::scalar(&db.url, "SELECT COUNT(*) FROM results");
    assert!(results >= 1);
    eprintln!(
        "registered to up through the cluster in {:?}",
        created.elapsed()
    );
    assert!(created.elapsed() < Duration::from_secs(10));
}
