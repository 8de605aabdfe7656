//! PostgreSQL store tests against a real server: each test creates its own database
//! (`rw_unit_<pid>_<n>`) on the server named by `RINGWATCH_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`, what `scripts/test.sh` starts) and drops it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::conn::Conn;
use super::partitions::{self, day_of, DAY_MS};
use super::{PgReader, PgWriter};
use crate::config::{Config, PgConfig, StorageKind};
use crate::model::{ServiceId, Source, Status, UnixMillis};
use crate::store::tests::{result, spec, transition};
use crate::store::{Record, StoreCounters, StoreReader, StoreWriter};

/// The server tests run against.
fn admin() -> PgConfig {
    let url = std::env::var("RINGWATCH_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let yaml = format!("storage: {{kind: postgres, url: '{url}', connect_timeout: 5s}}\n");
    match Config::parse(&yaml, Path::new(".")).map(|c| c.storage.kind) {
        Ok(StorageKind::Postgres(p)) => p,
        other => panic!("RINGWATCH_TEST_PG is not a postgres URL: {other:?}"),
    }
}

/// A database of its own for one test, dropped at the end.
struct TestDb {
    cfg: PgConfig,
    admin: Conn,
}

impl TestDb {
    fn new() -> TestDb {
        static N: AtomicU64 = AtomicU64::new(0);
        let admin_cfg = admin();
        let name = format!(
            "rw_unit_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = Conn::new(&admin_cfg).expect("runtime");
        // Two statements: several in one simple query would share a transaction block, which
        // neither allows.
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let create = format!("CREATE DATABASE {name}");
        let (drop, create) = (&drop, &create);
        admin
            .run("create test database", |c| async move {
                c.batch_execute(drop).await?;
                c.batch_execute(create).await
            })
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is needed for these tests (scripts/test.sh starts it): {e}")
            });
        let cfg = PgConfig {
            dbname: name,
            ..admin_cfg
        };
        TestDb { cfg, admin }
    }

    fn writer(&self) -> PgWriter {
        let mut w = PgWriter::open(&self.cfg).expect("open writer");
        w.open_info().expect("open info");
        w
    }

    fn reader(&self) -> PgReader {
        PgReader::open(&self.cfg).expect("open reader")
    }

    /// One number from a query on the test database.
    fn scalar(&self, sql: &str) -> i64 {
        let mut c = Conn::new(&self.cfg).expect("conn");
        c.run("scalar", |c| async move {
            c.query_one(sql, &[]).await?.try_get(0)
        })
        .expect(sql)
    }

    /// Terminates every other session on this database; returns how many.
    fn kill_other_sessions(&self) -> i64 {
        self.scalar(&format!(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            self.cfg.dbname
        ))
    }

    /// Day numbers of the `results` partitions.
    fn partition_days(&self) -> Vec<i64> {
        let mut c = Conn::new(&self.cfg).expect("conn");
        c.run("list", |c| async move { partitions::list(&c).await })
            .expect("list")
            .into_iter()
            .map(|(d, _)| d)
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.cfg.dbname);
        let _ = self.admin.run("drop test database", |c| {
            let sql = sql.clone();
            async move { c.batch_execute(&sql).await }
        });
    }
}

#[test]
fn migrations_apply_once_when_processes_start_together() {
    let db = TestDb::new();
    let cfg = Arc::new(db.cfg.clone());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let cfg = cfg.clone();
            std::thread::spawn(move || PgWriter::open(&cfg).map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().expect("thread").expect("open raced");
    }
    assert_eq!(db.scalar("SELECT COUNT(*) FROM refinery_schema_history"), 1);
    let again = super::migrate(&db.cfg).expect("migrate");
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.version, super::latest_version());
    for table in [
        "services",
        "results",
        "transitions",
        "service_state",
        "seq_counter",
    ] {
        let n = db.scalar(&format!(
            "SELECT COUNT(*) FROM pg_class WHERE relname = '{table}'"
        ));
        assert_eq!(n, 1, "{table}");
    }
    assert_eq!(db.scalar("SELECT COUNT(*) FROM seq_counter"), 1);
}

#[test]
fn the_same_batch_twice_stores_each_row_once() {
    let db = TestDb::new();
    let mut w = db.writer();
    let r = db.reader();
    let a = ServiceId::from_name("a");
    let b = ServiceId::from_name("b");
    let now = UnixMillis::now().0;
    let yesterday = now - DAY_MS;
    let mut dup = result(a, now);
    dup.status_code = Some(500);
    let batch = vec![
        Record::Result(result(a, now)),
        Record::Result(result(b, yesterday)),
        Record::Transition(transition(7, a, now)),
        Record::Result(dup),
        Record::Result(result(a, now - 1000)),
        Record::Transition(transition(8, b, now)),
    ];
    w.append(&batch).expect("append");
    w.append(&batch).expect("append again");
    assert_eq!(r.count_results(a).expect("count"), 2);
    assert_eq!(r.count_results(b).expect("count"), 1);
    assert_eq!(r.count_transitions().expect("count"), 2);
    // The first write of a key wins, within a batch and across retries.
    let page = r.results_for(a, 10).expect("read");
    assert_eq!(page[0].status_code, Some(200));
    assert_eq!(
        format!("{:?}", page[0]),
        format!("{:?}", result(a, now)),
        "every column round-trips"
    );
    assert_eq!(db.scalar("SELECT last_seq FROM seq_counter"), 8);
    // Yesterday's partition was made for the batch.
    assert!(db.partition_days().contains(&day_of(yesterday)));
    // Transitions read back in seq order and per service, newest first.
    let since = r.transitions_since(0, 10).expect("since");
    assert_eq!(since.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![7, 8]);
    assert_eq!(
        format!("{:?}", since[0]),
        format!("{:?}", transition(7, a, now))
    );
    assert_eq!(r.transitions_for(b, None, 10).expect("for")[0].seq, 8);
    assert!(r.transitions_for(b, Some(8), 10).expect("for").is_empty());
}

#[test]
fn seq_and_history_survive_reopen_and_pages_are_keyset_pages() {
    let db = TestDb::new();
    let a = ServiceId::from_name("hist");
    let base = UnixMillis::now().0 - 3 * DAY_MS;
    {
        let mut w = db.writer();
        let batch: Vec<Record> = (0..100)
            .map(|k| Record::Result(result(a, base + k * 3_600_000)))
            .chain((1..=5).map(|s| Record::Transition(transition(s, a, base + s as i64))))
            .collect();
        w.append(&batch).expect("append");
    }
    let mut w = db.writer();
    assert_eq!(w.open_info().expect("info").max_seq, 5);
    let r = db.reader();
    // Walk pages of 7 across partitions: strictly older, nothing skipped.
    let mut seen = Vec::new();
    let mut to = None;
    loop {
        let page = r.results_range(a, None, to, 7).expect("page");
        if page.is_empty() {
            break;
        }
        to = page.last().map(|p| p.scheduled_at);
        seen.extend(page.iter().map(|p| p.scheduled_at.0));
    }
    let want: Vec<i64> = (0..100).rev().map(|k| base + k * 3_600_000).collect();
    assert_eq!(seen, want);
    let window = r
        .results_range(
            a,
            Some(UnixMillis(base + 10 * 3_600_000)),
            Some(UnixMillis(base + 20 * 3_600_000)),
            100,
        )
        .expect("window");
    assert_eq!(window.len(), 10);
    let last = r.last_states().expect("last");
    assert_eq!(last.len(), 1);
    assert_eq!((last[0].seq, last[0].status), (5, Status::Down));
}

#[test]
fn partitions_exist_ahead_and_retention_drops_whole_days() {
    let db = TestDb::new();
    let mut w = db.writer();
    let today = day_of(UnixMillis::now().0);
    let days = db.partition_days();
    for d in today..=today + partitions::AHEAD_DAYS {
        assert!(days.contains(&d), "partition of day {d} missing: {days:?}");
    }
    let (a, b) = (ServiceId::from_name("a"), ServiceId::from_name("b"));
    let now = UnixMillis::now().0;
    let old = |days: i64| now - days * DAY_MS;
    let batch: Vec<Record> = (0..50)
        .flat_map(|k| {
            [
                Record::Result(result(a, old(5) + k)),
                Record::Result(result(a, old(4) + k)),
                Record::Result(result(a, now - k)),
            ]
        })
        .chain([
            // a: three old transitions; only its latest (seq 3) must stay.
            Record::Transition(transition(1, a, old(6))),
            Record::Transition(transition(2, a, old(5))),
            Record::Transition(transition(3, a, old(4))),
            // b: one old transition, its latest: kept.
            Record::Transition(transition(4, b, old(6))),
        ])
        .collect();
    w.append(&batch).expect("append");
    let cutoff = UnixMillis(old(2));
    let mut dropped = 0;
    for _ in 0..10 {
        let p = w.prune(cutoff, 1000).expect("prune");
        dropped += 1;
        if p.done {
            break;
        }
    }
    assert!(dropped <= 4, "two partitions and one transitions chunk");
    let days = db.partition_days();
    assert!(
        !days.contains(&day_of(old(5))) && !days.contains(&day_of(old(4))),
        "{days:?}"
    );
    let r = db.reader();
    assert_eq!(r.count_results(a).expect("count"), 50, "today's rows stay");
    let seqs: Vec<u64> = r
        .transitions_since(0, 10)
        .expect("t")
        .iter()
        .map(|t| t.seq)
        .collect();
    assert_eq!(seqs, vec![3, 4]);
    let mut last: Vec<u64> = r
        .last_states()
        .expect("last")
        .iter()
        .map(|l| l.seq)
        .collect();
    last.sort();
    assert_eq!(last, vec![3, 4]);
    // Writing into a dropped day again recreates its partition.
    w.append(&[Record::Result(result(b, old(5)))])
        .expect("late result");
    assert_eq!(r.count_results(b).expect("count"), 1);
}

#[test]
fn registry_follows_the_sqlite_semantics() {
    let db = TestDb::new();
    let mut w = db.writer();
    let r = db.reader();
    let a = spec("alpha", Source::Config);
    let b = spec("beta", Source::Config);
    let c = spec("gamma", Source::Api);
    w.sync_services(&[a.clone(), b.clone(), c.clone()])
        .expect("sync");
    let created = r.service(a.id).expect("read").expect("row");
    w.sync_services(std::slice::from_ref(&a)).expect("sync");
    let beta = r.service(b.id).expect("read").expect("row");
    assert!(
        beta.deleted_at.is_some(),
        "removed config service not deleted"
    );
    assert!(r
        .service(c.id)
        .expect("read")
        .expect("row")
        .deleted_at
        .is_none());
    let live: Vec<String> = r
        .services(false)
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(live, vec!["alpha", "gamma"]);
    assert_eq!(r.services(true).expect("list").len(), 3);
    let row = r.service(a.id).expect("read").expect("row");
    assert_eq!(
        row.updated_at, created.updated_at,
        "unchanged definition keeps updated_at"
    );
    assert_eq!(
        (row.source.as_str(), row.url.as_str()),
        ("config", a.url.as_str())
    );
    let json: serde_json::Value = serde_json::from_str(&row.spec).expect("json");
    assert_eq!(json["interval"], "30s");
    w.sync_services(&[a.clone(), b.clone()]).expect("sync");
    assert!(
        r.service(b.id)
            .expect("read")
            .expect("row")
            .deleted_at
            .is_none(),
        "revived"
    );

    // API rows: upsert, refused over a live config row, delete keeps the row.
    let api = spec("delta", Source::Api);
    w.upsert_api_service(&api).expect("upsert");
    assert_eq!(r.service(api.id).expect("read").expect("row").source, "api");
    let err = w
        .upsert_api_service(&spec("alpha", Source::Api))
        .expect_err("config row");
    assert!(err.to_string().contains("config file"), "{err}");
    w.delete_api_service(api.id).expect("delete");
    assert!(r
        .service(api.id)
        .expect("read")
        .expect("row")
        .deleted_at
        .is_some());
    w.upsert_api_service(&api).expect("revive");
    assert!(r
        .service(api.id)
        .expect("read")
        .expect("row")
        .deleted_at
        .is_none());
}

#[test]
fn writer_and_reader_reconnect_after_their_backends_are_killed() {
    let db = TestDb::new();
    let mut w = db.writer();
    let counters = Arc::new(StoreCounters::default());
    w.attach(counters.clone());
    let r = db.reader();
    let a = ServiceId::from_name("a");
    let now = UnixMillis::now().0;
    w.append(&[Record::Result(result(a, now))]).expect("append");
    assert_eq!(r.count_results(a).expect("count"), 1);
    let killed = db.kill_other_sessions();
    assert!(killed >= 2, "killed {killed}");
    // Both notice on their next statement, reconnect and run it once more.
    w.append(&[Record::Result(result(a, now + 1))])
        .expect("append after kill");
    assert_eq!(r.count_results(a).expect("count after kill"), 2);
    assert_eq!(counters.reconnects.load(Ordering::Relaxed), 1);
}

#[test]
fn a_statement_past_the_query_timeout_drops_the_connection() {
    let db = TestDb::new();
    let cfg = PgConfig {
        query_timeout: Duration::from_millis(300),
        ..db.cfg.clone()
    };
    let mut c = Conn::new(&cfg).expect("conn");
    let err = c
        .run("sleep", |c| async move {
            c.batch_execute("SELECT pg_sleep(5)").await
        })
        .expect_err("timeout");
    assert!(err.to_string().contains("storage.query_timeout"), "{err}");
    let one: i32 = c
        .run("after", |c| async move {
            c.query_one("SELECT 1", &[]).await?.try_get(0)
        })
        .expect("reconnects");
    assert_eq!(one, 1);
}

fn ingested(sid: ServiceId, at: i64, ok: bool) -> crate::store::Ingested {
    let mut r = result(sid, at);
    if !ok {
        r.status_code = Some(503);
        r.error_kind = Some(crate::model::ErrorKind::Status);
        r.error = Some("status 503".into());
    }
    crate::store::Ingested {
        result: r,
        service: format!("svc-{}", sid.get() % 100),
        failure_threshold: std::num::NonZeroU32::MIN,
        success_threshold: std::num::NonZeroU32::MIN,
    }
}

#[test]
fn ingest_judges_new_rows_once_in_order_and_numbers_from_the_counter() {
    use crate::store::IngestStore;
    let db = TestDb::new();
    db.writer();
    let mut ing = super::PgIngest::open(&db.cfg).expect("ingest");
    let a = ServiceId::from_name("a");
    let t0 = UnixMillis::now().0;
    let out = ing
        .ingest(&[ingested(a, t0, true), ingested(a, t0 + 1000, false)])
        .expect("ingest");
    assert_eq!(out.new_rows, 2);
    let got: Vec<(u64, Status, Status)> = out
        .transitions
        .iter()
        .map(|t| (t.seq, t.from, t.to))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Status::Unknown, Status::Up),
            (2, Status::Up, Status::Down)
        ]
    );
    // Redelivered: stored already, decides nothing.
    let again = ing
        .ingest(&[ingested(a, t0, true), ingested(a, t0 + 1000, false)])
        .expect("again");
    assert_eq!((again.new_rows, again.transitions.len()), (0, 0));
    // Older than the last applied: stored, state untouched.
    let old = ing.ingest(&[ingested(a, t0 - 5000, true)]).expect("old");
    assert_eq!((old.new_rows, old.transitions.len()), (1, 0));
    let next = ing.ingest(&[ingested(a, t0 + 2000, true)]).expect("next");
    assert_eq!(next.transitions[0].seq, 3);
    assert_eq!(next.transitions[0].to, Status::Up);
    let r = db.reader();
    assert_eq!(r.max_seq().expect("max"), 3);
    assert_eq!(r.count_results(a).expect("count"), 4);
}

#[test]
fn ingest_prepares_its_statements_again_on_a_new_connection() {
    use crate::store::IngestStore;
    let db = TestDb::new();
    db.writer();
    let mut ing = super::PgIngest::open(&db.cfg).expect("ingest");
    let a = ServiceId::from_name("a");
    let t0 = UnixMillis::now().0;
    let first = ing.ingest(&[ingested(a, t0, true)]).expect("ingest");
    assert_eq!(first.transitions.len(), 1);
    let killed = db.kill_other_sessions();
    assert!(killed >= 1, "killed {killed}");
    // The batch that meets the dead connection fails (the role keeps it and retries); the
    // retry connects again, prepares afresh and stores the batch once.
    let batch = [ingested(a, t0 + 1000, false)];
    let out = match ing.ingest(&batch) {
        Ok(o) => o,
        Err(_) => ing.ingest(&batch).expect("retry on a new connection"),
    };
    assert_eq!((out.new_rows, out.transitions.len()), (1, 1));
    assert_eq!(out.transitions[0].seq, 2);
    assert_eq!(db.reader().count_results(a).expect("count"), 2);
}

#[test]
fn the_services_fingerprint_moves_with_every_registry_change_and_only_then() {
    let db = TestDb::new();
    let mut w = db.writer();
    let r = db.reader();
    let fp = || {
        r.services_fingerprint()
            .expect("fp")
            .expect("postgres has one")
    };
    let empty = fp();
    let api = spec("delta", Source::Api);
    w.upsert_api_service(&api).expect("upsert");
    let added = fp();
    assert_ne!(added, empty, "insert");
    assert_eq!(fp(), added, "nothing changed");
    let mut changed = api.clone();
    changed.url = "http://127.0.0.1:9/other".into();
    w.upsert_api_service(&changed).expect("update");
    let updated = fp();
    assert_ne!(updated, added, "update");
    w.delete_api_service(api.id).expect("delete");
    assert_ne!(fp(), updated, "delete");
}

#[test]
fn two_ingests_racing_on_the_same_services_decide_each_change_once() {
    use crate::store::IngestStore;
    let db = TestDb::new();
    db.writer();
    let t0 = UnixMillis::now().0;
    let sids: Vec<ServiceId> = (0..20)
        .map(|i| ServiceId::from_name(&format!("s{i}")))
        .collect();
    // The same 40 flapping results per service, offered to both in different orders.
    let batch: Vec<_> = sids
        .iter()
        .flat_map(|s| (0..40).map(move |k| ingested(*s, t0 + k * 1000, k % 2 == 0)))
        .collect();
    let threads: Vec<_> = (0..2)
        .map(|n| {
            let cfg = db.cfg.clone();
            let mut mine = batch.clone();
            if n == 1 {
                mine.reverse();
            }
            std::thread::spawn(move || {
                let mut ing = super::PgIngest::open(&cfg).expect("ingest");
                let mut seqs = Vec::new();
                for chunk in mine.chunks(37) {
                    loop {
                        match ing.ingest(chunk) {
                            Ok(o) => {
                                seqs.extend(o.transitions.iter().map(|t| t.seq));
                                break;
                            }
                            // A serialization hiccup is retried, as the ingest role does.
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                }
                seqs
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    all.sort_unstable();
    let n = all.len() as u64;
    assert_eq!(
        all,
        (1..=n).collect::<Vec<_>>(),
        "seq is gap-free and each used once"
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM results"), 800);
    // Every service's stored transitions alternate: no change decided twice.
    let stored = db.reader().transitions_since(0, 10_000).expect("read");
    for s in &sids {
        let mine: Vec<_> = stored.iter().filter(|t| t.service_id == *s).collect();
        for w in mine.windows(2) {
            assert_eq!(w[0].to, w[1].from, "{s:?}: {:?}", mine);
        }
    }
}
