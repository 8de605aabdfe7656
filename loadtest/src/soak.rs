//! The `soak` scenario: probe load and WebSocket fan-out at once, for a bounded time, checking
//! that nothing is lost: every transition the fleet caused arrives exactly once at every
//! subscribed client and is in the store.
//!
//! Shape of a run:
//! 1. The stack of `probe` (fleet in-process, ringwatch child), with `--flap-percent` of the
//!    services probing `/flap/PERIOD` and the rest `/ok`, thresholds 1/1 and an interval at
//!    most half the period, so every flip of a flapping target is exactly one transition and
//!    the steady services make none once they are UP.
//! 2. Once no service is `unknown` (`GET /api/v1/services?status=unknown`), the newest seq
//!    `X` is read (`GET /api/v1/transitions?limit=1`, field `seq`).
//! 3. The swarm connects; every client subscribes with `"since": X`, so ringwatch owes each of
//!    them every transition after `X`, gap-free and without duplicates (replay, then live),
//!    and records every transition seq it receives ([`SeqLog`]).
//! 4. After the window, the newest seq `Y` is read; the clients stay connected for `--drain`
//!    seconds so everything up to `Y` can arrive; then they stop.
//! 5. ringwatch gets SIGTERM (it drains its store writer before exiting), and the SQLite file
//!    is read: every transition with seq > X.
//! 6. [`evaluate`] compares: every client has exactly the store's seqs in `(X, Y]`, once each
//!    and with the same service and status; the store has every seq any client saw and no gap
//!    in `(X, Y]` (seqs come from one counter, so each one in that range is a transition
//!    that was pushed to the store); and the per-service counts match the flap schedule, where
//!    a probe that got no response at all (a timeout on a starved host) may add a down and its
//!    recovery: the fleet did not cause those, but ringwatch reported them correctly.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::genconfig;
use crate::report::{self, Check, Latency, Metric, Report};
use crate::scenario::{self, ProbeScenario};
use crate::swarm::{SeqLog, SeqRecording, Swarm, SwarmConfig};

/// Most transitions read back from the store (a 600 s run of 200k services flapping every
/// second would be 120M; nothing near that fits the 2-core machine anyway).
pub const MAX_STORE_ROWS: usize = 20_000_000;
/// Longest graceful stop accepted before ringwatch is killed (and the check fails).
const STOP_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait for every service to have a status before measuring.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

/// Settings of one `soak` run.
#[derive(Debug, Clone)]
pub struct SoakScenario {
    /// Stack, window (`duration_s`) and output settings. `path` is the steady services'
    /// path and `flap` the flapping share; `url` is refused (the store check needs to stop
    /// ringwatch and read its file).
    pub base: ProbeScenario,
    /// Flap period of the flapping targets, ms.
    pub flap_ms: u64,
    /// WebSocket clients.
    pub clients: usize,
    /// First client source address (127.0.0.0/8).
    pub source: Ipv4Addr,
    /// Consecutive source addresses.
    pub sources: usize,
    /// Swarm threads.
    pub threads: usize,
    /// Seconds between connecting and the latency window.
    pub warmup_s: f64,
    /// Seconds the clients keep reading after `Y` was taken.
    pub drain_s: f64,
    /// Most seqs one client records (bits per client, grown on demand).
    pub seq_cap: u64,
}

/// How a soak run ended.
#[derive(Debug, Clone)]
pub struct SoakOutcome {
    /// Report directory.
    pub dir: PathBuf,
    /// Names of the checks that failed (empty: all passed).
    pub failed: Vec<String>,
}

/// One transition as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransition {
    /// Global seq.
    pub seq: u64,
    /// Service name.
    pub service: String,
    /// Status it changed to (`up`, `down`).
    pub to: String,
    /// HTTP status of the deciding probe; `None` when the probe got no response (timeout,
    /// refused, reset): then the fleet's schedule did not cause it, the host did.
    pub status_code: Option<u16>,
}

/// What the flap schedule implies for the range `(X, Y]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlapSchedule {
    /// Services probing `/flap/PERIOD`.
    pub flapping: Vec<String>,
    /// Services probing a steady target (`/ok`).
    pub steady: Vec<String>,
    /// Flap period, ms.
    pub period_ms: u64,
    /// Unix ms when `X` was read.
    pub from_ms: u64,
    /// Unix ms when `Y` was read.
    pub to_ms: u64,
}

impl FlapSchedule {
    /// Phase boundaries (flips) in `(from_ms, to_ms]`: the transitions each flapping service
    /// should have in `(X, Y]`, give or take one.
    pub fn flips(&self) -> u64 {
        let p = self.period_ms.max(1);
        (self.to_ms / p).saturating_sub(self.from_ms / p)
    }
}

/// Everything [`evaluate`] compares.
#[derive(Debug, Clone, Copy)]
pub struct SoakInput<'a> {
    /// `X`: the clients subscribed with `since: X`.
    pub base: u64,
    /// `Y`: the newest seq when the window closed.
    pub end: u64,
    /// Stored transitions with seq > X (any order).
    pub store: &'a [StoredTransition],
    /// One log per connected client.
    pub clients: &'a [SeqLog],
    /// Clients the run asked for.
    pub clients_expected: usize,
    /// Clients whose connection ended early.
    pub disconnected: u64,
    /// The flap schedule, when the run has one (`None` skips that check).
    pub schedule: Option<&'a FlapSchedule>,
}

/// The counts behind the checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoakCounts {
    /// Clients whose logs were compared.
    pub clients_checked: u64,
    /// `Y - X`: transitions issued in the measured range.
    pub issued: u64,
    /// Stored transitions in `(X, Y]`.
    pub stored_in_range: u64,
    /// Seqs in `(X, Y]` missing from the store.
    pub store_gaps: u64,
    /// Distinct seqs some client received that the store does not have.
    pub not_in_store: u64,
    /// Deliveries owed: stored transitions in range times clients checked.
    pub deliveries_expected: u64,
    /// Deliveries of in-range stored transitions that arrived (once).
    pub deliveries_seen: u64,
    /// Transitions received again by the same client, over all clients.
    pub duplicates: u64,
    /// Clients with at least one duplicate.
    pub clients_with_duplicates: u64,
    /// Stored transitions in range a client did not receive, over all clients.
    pub missing: u64,
    /// Clients with at least one missing transition.
    pub clients_with_missing: u64,
    /// Clients whose received transitions differ in service or status from the store's.
    pub content_mismatches: u64,
    /// Transitions clients received but could not record (seq <= X, unreadable, past the
    /// cap).
    pub unrecorded: u64,
    /// `{"type":"error"}` messages the clients received.
    pub server_errors: u64,
    /// Transitions the flap schedule implies in range (flips x flapping services).
    pub schedule_expected: u64,
    /// Transitions of flapping services in range.
    pub schedule_seen: u64,
    /// Services whose count is outside the tolerance (flapping or steady).
    pub services_off_schedule: u64,
    /// Transitions of steady services in range (0 unless a probe failed without a response).
    pub steady_transitions: u64,
    /// Transitions to `down` in range whose probe got no HTTP response (timeouts on a starved
    /// host): each may add a down and its recovery beyond the schedule.
    pub failures_without_response: u64,
}

/// Up to `n` items of `it`, comma-separated, with `...` when there were more.
fn examples<T: std::fmt::Display>(it: impl IntoIterator<Item = T>, n: usize) -> String {
    let mut v: Vec<String> = it.into_iter().take(n + 1).map(|x| x.to_string()).collect();
    if v.len() > n {
        v.truncate(n);
        v.push("...".into());
    }
    v.join(", ")
}

/// Compares what the clients received with the store and the flap schedule; the checks are
/// in report order, with the counts they were decided on.
pub fn evaluate(input: &SoakInput) -> (Vec<Check>, SoakCounts) {
    let (x, y) = (input.base, input.end.max(input.base));
    let mut c = SoakCounts {
        clients_checked: input.clients.len() as u64,
        issued: y - x,
        ..SoakCounts::default()
    };
    let stored: HashMap<u64, &StoredTransition> = input
        .store
        .iter()
        .filter(|t| t.seq > x)
        .map(|t| (t.seq, t))
        .collect();
    let mut in_range: Vec<&StoredTransition> =
        stored.values().copied().filter(|t| t.seq <= y).collect();
    in_range.sort_unstable_by_key(|t| t.seq);
    c.stored_in_range = in_range.len() as u64;
    let gaps: Vec<u64> = {
        let have: HashSet<u64> = in_range.iter().map(|t| t.seq).collect();
        (x + 1..=y)
            .filter(|s| !have.contains(s))
            .take(1_000_000)
            .collect()
    };
    c.store_gaps = c.issued - c.stored_in_range;
    c.deliveries_expected = c.stored_in_range * c.clients_checked;

    let mut not_in_store: BTreeSet<u64> = BTreeSet::new();
    let (mut first_missing, mut first_dup) = (None, None);
    let mut first_error = None;
    for (i, log) in input.clients.iter().enumerate() {
        c.duplicates += log.duplicates;
        c.clients_with_duplicates += u64::from(log.duplicates > 0);
        if log.duplicates > 0 && first_dup.is_none() {
            first_dup = Some((i, examples(&log.duplicate_examples, 4)));
        }
        c.unrecorded += log.below_base + log.beyond_cap + log.unparsed;
        c.server_errors += log.server_errors;
        if first_error.is_none() {
            first_error = log.first_error.clone();
        }
        let mut missing = 0u64;
        let mut missing_examples = Vec::new();
        for t in &in_range {
            if log.contains(t.seq) {
                c.deliveries_seen += 1;
            } else {
                missing += 1;
                if missing_examples.len() < 4 {
                    missing_examples.push(t.seq);
                }
            }
        }
        c.missing += missing;
        c.clients_with_missing += u64::from(missing > 0);
        if missing > 0 && first_missing.is_none() {
            first_missing = Some((i, examples(&missing_examples, 4)));
        }
        let mut own_not_stored = 0u64;
        let mut expected_sum = 0u64;
        for seq in log.seqs() {
            match stored.get(&seq) {
                Some(t) => {
                    expected_sum = expected_sum.wrapping_add(crate::swarm::fingerprint(
                        seq,
                        t.service.as_bytes(),
                        t.to.as_bytes(),
                    ))
                }
                None => {
                    own_not_stored += 1;
                    not_in_store.insert(seq);
                }
            }
        }
        // A seq the store lacks already fails the store check; only compare contents of
        // clients whose every seq is stored.
        if own_not_stored == 0 && expected_sum != log.fingerprint_sum {
            c.content_mismatches += 1;
        }
    }
    c.not_in_store = not_in_store.len() as u64;

    let mut checks = Vec::new();
    let connected = c.clients_checked == input.clients_expected as u64;
    checks.push(Check {
        name: "clients connected and stayed connected".into(),
        pass: connected && input.disconnected == 0 && c.server_errors == 0,
        detail: format!(
            "{} of {} connected, {} disconnected early, {} server error messages{}",
            c.clients_checked,
            input.clients_expected,
            input.disconnected,
            c.server_errors,
            first_error.map_or(String::new(), |e| format!(" (first: {e})"))
        ),
    });
    let mut detail = format!(
        "{} clients x {} stored transitions in ({x}, {y}]: {} of {} deliveries; {} duplicates \
         in {} clients, {} missing in {} clients, {} content mismatches, {} unrecorded",
        c.clients_checked,
        c.stored_in_range,
        c.deliveries_seen,
        c.deliveries_expected,
        c.duplicates,
        c.clients_with_duplicates,
        c.missing,
        c.clients_with_missing,
        c.content_mismatches,
        c.unrecorded
    );
    if let Some((i, ex)) = &first_dup {
        detail.push_str(&format!("; client {i} got again: {ex}"));
    }
    if let Some((i, ex)) = &first_missing {
        detail.push_str(&format!("; client {i} lacks: {ex}"));
    }
    checks.push(Check {
        name: "exactly once at every client".into(),
        pass: c.clients_checked > 0
            && c.duplicates == 0
            && c.missing == 0
            && c.content_mismatches == 0
            && c.unrecorded == 0,
        detail,
    });
    checks.push(Check {
        name: "every delivered transition is in the store".into(),
        pass: c.not_in_store == 0,
        detail: if c.not_in_store == 0 {
            "0 seqs seen by clients are missing from the store".into()
        } else {
            format!(
                "{} seqs seen by clients are not in the store: {}",
                c.not_in_store,
                examples(&not_in_store, 8)
            )
        },
    });
    checks.push(Check {
        name: "store has every seq in the range".into(),
        pass: c.store_gaps == 0 && c.issued > 0,
        detail: format!(
            "{} issued in ({x}, {y}], {} stored, {} gaps{}",
            c.issued,
            c.stored_in_range,
            c.store_gaps,
            if gaps.is_empty() {
                String::new()
            } else {
                format!(": {}", examples(&gaps, 8))
            }
        ),
    });
    if let Some(s) = input.schedule {
        let flips = s.flips();
        // Per service: transitions in range, downs without an HTTP response, and whether the
        // first one is a recovery (`up`) from something before X.
        let mut per: HashMap<&str, (u64, u64, bool)> = HashMap::new();
        for t in &in_range {
            let e = per
                .entry(t.service.as_str())
                .or_insert((0, 0, t.to == "up"));
            e.0 += 1;
            if t.to == "down" && t.status_code.is_none() {
                e.1 += 1;
            }
        }
        let get = |name: &str| per.get(name).copied().unwrap_or((0, 0, false));
        let mut off = Vec::new();
        for name in &s.flapping {
            let (n, k, _) = get(name);
            c.schedule_seen += n;
            c.failures_without_response += k;
            if n.abs_diff(flips) > 1 + 2 * k {
                off.push(format!("{name}={n}"));
            }
        }
        let mut steady_off = Vec::new();
        for name in &s.steady {
            let (n, k, first_up) = get(name);
            c.steady_transitions += n;
            c.failures_without_response += k;
            if n > 2 * k + u64::from(first_up) {
                steady_off.push(format!("{name}={n}"));
            }
        }
        c.schedule_expected = flips * s.flapping.len() as u64;
        c.services_off_schedule = (off.len() + steady_off.len()) as u64;
        let mut detail = format!(
            "{flips} flips of {} ms in {:.1} s: expected {flips} +-1 per flapping service \
             ({} in all), seen {}; {} transitions of {} steady services (expected 0); {} \
             downs without an HTTP response (probe timeouts: the host, not the schedule) \
             allow 2 more each; outside the tolerance: {} of {} flapping, {} of {} steady",
            s.period_ms,
            s.to_ms.saturating_sub(s.from_ms) as f64 / 1000.0,
            c.schedule_expected,
            c.schedule_seen,
            c.steady_transitions,
            s.steady.len(),
            c.failures_without_response,
            off.len(),
            s.flapping.len(),
            steady_off.len(),
            s.steady.len()
        );
        if !off.is_empty() {
            detail.push_str(&format!("; flapping off: {}", examples(&off, 6)));
        }
        if !steady_off.is_empty() {
            detail.push_str(&format!("; steady off: {}", examples(&steady_off, 6)));
        }
        checks.push(Check {
            name: "transition count matches the flap schedule".into(),
            pass: c.services_off_schedule == 0,
            detail,
        });
    }
    (checks, c)
}

/// Reads every stored transition with seq > `after` from ringwatch's SQLite file (read-only,
/// after ringwatch exited).
pub fn read_store(db: &Path, after: u64) -> Result<Vec<StoredTransition>, String> {
    let ctx = |e: rusqlite::Error| format!("reading transitions from {}: {e}", db.display());
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(ctx)?;
    let after = i64::try_from(after).map_err(|_| format!("seq {after} out of range"))?;
    let mut stmt = conn
        .prepare(
            "SELECT seq, service, to_status, status_code FROM transitions WHERE seq > ?1 \
             ORDER BY seq",
        )
        .map_err(ctx)?;
    let mut rows = stmt.query([after]).map_err(ctx)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(ctx)? {
        if out.len() >= MAX_STORE_ROWS {
            return Err(format!("more than {MAX_STORE_ROWS} transitions stored"));
        }
        let seq: i64 = r.get(0).map_err(ctx)?;
        out.push(StoredTransition {
            seq: u64::try_from(seq).map_err(|_| format!("negative seq {seq} in the store"))?,
            service: r.get(1).map_err(ctx)?,
            to: r.get(2).map_err(ctx)?,
            status_code: r
                .get::<_, Option<i64>>(3)
                .map_err(ctx)?
                .and_then(|v| u16::try_from(v).ok()),
        });
    }
    Ok(out)
}

/// Milliseconds of a config duration (`250ms`, `2s`, `1m`, ...).
pub fn duration_ms(s: &str) -> Option<u64> {
    let at = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..at].parse().ok()?;
    let unit = match &s[at..] {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    match scenario::http_get(addr, path, Duration::from_secs(5)) {
        Ok((200, body)) => {
            serde_json::from_str(&body).map_err(|e| format!("GET {path}: bad JSON: {e}"))
        }
        Ok((code, body)) => Err(format!(
            "GET {path}: status {code}: {}",
            body.chars().take(200).collect::<String>()
        )),
        Err(e) => Err(format!("GET {path}: {e}")),
    }
}

/// The newest transition seq ringwatch has issued.
pub fn latest_seq(addr: SocketAddr) -> Result<u64, String> {
    get_json(addr, "/api/v1/transitions?limit=1")?["seq"]
        .as_u64()
        .ok_or_else(|| "GET /api/v1/transitions: no numeric \"seq\"".to_string())
}

/// Waits (bounded) until no service is `unknown`: from then on a steady service makes no
/// transition, and every flapping one one per flip.
fn wait_all_known(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let v = get_json(addr, "/api/v1/services?status=unknown&limit=1")?;
        if v["items"].as_array().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("services still unknown after {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn validate(s: &SoakScenario) -> Result<(u64, u32), String> {
    let cfg = &s.base;
    if cfg.url.is_some() {
        return Err(
            "soak starts its own ringwatch (it stops it to read the store): --url is \
                    not supported"
                .into(),
        );
    }
    if !cfg.peers.is_empty() {
        return Err("soak measures no peers (use probe --peers or fanout --peer)".into());
    }
    if !(1..=scenario::MAX_CLIENTS).contains(&s.clients) {
        return Err(format!("--clients must be 1..={}", scenario::MAX_CLIENTS));
    }
    if !s.source.is_loopback() {
        return Err("--source must be in 127.0.0.0/8".into());
    }
    let percent = cfg.flap.as_ref().map_or(0, |f| f.percent);
    if !(1..=100).contains(&percent) {
        return Err("--flap-percent must be 1..=100".into());
    }
    let interval =
        duration_ms(&cfg.interval).ok_or_else(|| format!("bad --interval {:?}", cfg.interval))?;
    // At most half a period: with 10% jitter and some schedule lag every phase still gets
    // a probe, so every flip is exactly one transition.
    if interval == 0 || interval * 2 > s.flap_ms {
        return Err(format!(
            "--interval {} must be at most half of --flap-ms {} so every flap phase is probed",
            cfg.interval, s.flap_ms
        ));
    }
    if !(0.0..=60.0).contains(&s.drain_s) || !(0.0..=60.0).contains(&s.warmup_s) {
        return Err("--warmup and --drain must be 0..=60 seconds".into());
    }
    if s.seq_cap == 0 || s.seq_cap > 1 << 32 {
        return Err("--seq-cap must be 1..=2^32".into());
    }
    Ok((interval, percent))
}

/// Runs the soak scenario, writes the report and returns which checks failed.
pub fn run_soak(s: &SoakScenario) -> Result<SoakOutcome, String> {
    let (_, percent) = validate(s)?;
    let cfg = &s.base;
    scenario::check_common(cfg)?;
    let mut stack = scenario::start_stack(cfg, "soak")?;
    let db = stack
        .db
        .clone()
        .ok_or_else(|| "soak: no database path".to_string())?;
    let (flapping, steady): (Vec<String>, Vec<String>) = {
        let mut f = Vec::new();
        let mut st = Vec::new();
        for i in 1..=cfg.services {
            let name = format!("svc-{i:06}");
            if genconfig::flaps(i, percent) {
                f.push(name);
            } else {
                st.push(name);
            }
        }
        (f, st)
    };
    wait_all_known(stack.addr, SETTLE_WITHIN)?;
    let first = scenario::scrape(stack.addr)?;
    let base = latest_seq(stack.addr)?;
    let from_ms = unix_ms();
    eprintln!(
        "soak: {} services ({} flapping every {} ms, {} steady), all known; since seq {base}",
        cfg.services,
        flapping.len(),
        s.flap_ms,
        steady.len()
    );
    let t0 = Instant::now();
    let cpu0 = scenario::cpu_s(stack.pid);
    let mut swarm = Swarm::start(SwarmConfig {
        server: stack.addr,
        path: "/ws".into(),
        clients: s.clients,
        source: s.source,
        sources: s.sources.max(1),
        subscribe: format!(r#"{{"op":"subscribe","since":{base}}}"#),
        threads: s.threads.max(1),
        cpus: Vec::new(),
        warmup: s.warmup_s,
        duration: cfg.duration_s as f64,
        uring: false,
        seqs: Some(SeqRecording {
            base,
            cap: s.seq_cap,
        }),
    })?;
    eprintln!(
        "soak: {} clients connected, {} failed in {:.1} s; warmup {} s, window {} s, drain {} s",
        swarm.connected(),
        swarm.failed(),
        swarm.connect_seconds(),
        s.warmup_s,
        cfg.duration_s,
        s.drain_s
    );
    let (open, close) = swarm.open_window(s.warmup_s, cfg.duration_s as f64);
    let mut mon = Monitor {
        t0,
        first: first.clone(),
        prev: (0.0, first.clone()),
        last: first,
        series: Vec::new(),
        rss_max: f64::NAN,
        tick: 0,
    };
    let window_cpu = scenario::timed_window(&cfg.stop, open, close, stack.pid, || {
        mon.tick(stack.addr, stack.pid, "window", swarm.disconnected());
    });
    let end = latest_seq(stack.addr)?;
    let to_ms = unix_ms();
    eprintln!(
        "soak: window closed at seq {end} ({} transitions since {base}); draining {} s",
        end.saturating_sub(base),
        s.drain_s
    );
    let drain_until = Instant::now() + Duration::from_secs_f64(s.drain_s);
    // At most drain_s (<= 60) one-second steps.
    while !cfg.stop.load(Ordering::Relaxed) {
        let left = drain_until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_secs(1)));
        mon.tick(stack.addr, stack.pid, "drain", swarm.disconnected());
    }
    let rep = swarm.finish()?;
    let last = scenario::scrape(stack.addr).unwrap_or_else(|_| mon.last.clone());
    let cpu = match (cpu0, scenario::cpu_s(stack.pid)) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let wall = t0.elapsed().as_secs_f64();
    eprintln!("soak: stopping ringwatch (SIGTERM) and reading the store");
    let stopped = stack.terminate(STOP_WITHIN);
    let store = read_store(&db, base);
    let schedule = FlapSchedule {
        flapping,
        steady,
        period_ms: s.flap_ms,
        from_ms,
        to_ms,
    };
    let empty = Vec::new();
    let input = SoakInput {
        base,
        end,
        store: store.as_ref().unwrap_or(&empty),
        clients: &rep.seq_logs,
        clients_expected: s.clients,
        disconnected: rep.disconnected,
        schedule: Some(&schedule),
    };
    let (mut checks, counts) = evaluate(&input);
    checks.insert(
        0,
        Check {
            name: "graceful stop and store read".into(),
            pass: stopped.is_ok() && store.is_ok(),
            detail: format!(
                "{}; {}",
                match &stopped {
                    Ok(d) => format!("ringwatch exited {:.2} s after SIGTERM", d.as_secs_f64()),
                    Err(e) => e.clone(),
                },
                match &store {
                    Ok(rows) => format!("{} transitions after seq {base} in the store", rows.len()),
                    Err(e) => e.clone(),
                }
            ),
        },
    );
    let probes = last.probes_total - mon.first.probes_total;
    let n = |v: u64| v as f64;
    let summary = vec![
        Metric::new("services", cfg.services as f64, "count"),
        Metric::new("flapping_services", schedule.flapping.len() as f64, "count"),
        Metric::new("flap_period", s.flap_ms as f64, "ms"),
        Metric::new("clients", s.clients as f64, "count"),
        Metric::new("connected", rep.connected as f64, "count"),
        Metric::new("failed", rep.failed as f64, "count"),
        Metric::new("disconnected", rep.disconnected as f64, "count"),
        Metric::new("connect_time", rep.connect_seconds, "s"),
        Metric::new("window", rep.window, "s"),
        Metric::new("drain", s.drain_s, "s"),
        Metric::new("seq_since", n(base), "seq"),
        Metric::new("seq_end", n(end), "seq"),
        Metric::new("transitions_issued", n(counts.issued), "count"),
        Metric::new(
            "transitions_stored_in_range",
            n(counts.stored_in_range),
            "count",
        ),
        Metric::new(
            "transitions_expected_by_schedule",
            n(counts.schedule_expected),
            "count",
        ),
        Metric::new(
            "transitions_of_flapping_services",
            n(counts.schedule_seen),
            "count",
        ),
        Metric::new(
            "transitions_of_steady_services",
            n(counts.steady_transitions),
            "count",
        ),
        Metric::new(
            "downs_without_response",
            n(counts.failures_without_response),
            "count",
        ),
        Metric::new(
            "deliveries_expected",
            n(counts.deliveries_expected),
            "count",
        ),
        Metric::new("deliveries_seen", n(counts.deliveries_seen), "count"),
        Metric::new("duplicates", n(counts.duplicates), "count"),
        Metric::new("missing", n(counts.missing), "count"),
        Metric::new("not_in_store", n(counts.not_in_store), "count"),
        Metric::new("store_gaps", n(counts.store_gaps), "count"),
        Metric::new("content_mismatches", n(counts.content_mismatches), "count"),
        Metric::new("messages_received_in_window", rep.events as f64, "count"),
        Metric::new(
            "delivered_per_s",
            rep.events as f64 / rep.window.max(1e-3),
            "1/s",
        ),
        Metric::new("probes", probes, "count"),
        Metric::new("probes_per_s", probes / wall.max(1e-3), "1/s"),
        Metric::new(
            "probes_failed",
            probes - (last.probes_ok - mon.first.probes_ok),
            "count",
        ),
        Metric::new("ringwatch_cpu_seconds", cpu, "s"),
        Metric::new("ringwatch_cpu_util", cpu / wall.max(1e-3), "cores"),
        Metric::new("ringwatch_window_cpu_seconds", window_cpu, "s"),
        Metric::new("ringwatch_rss_peak", mon.rss_max, "KiB"),
    ];
    let notes = vec![format!(
        "Clients subscribed with since={base}; checked range ({base}, {end}]. The schedule \
         check allows +-1 per flapping service: a flip just before X or just before Y can \
         turn into a transition on either side of the boundary (the probe that sees it runs \
         up to one interval later). A probe that got no HTTP response (timeout, reset) is a \
         real failure the host caused, not the schedule: each such down allows its service \
         2 more transitions (the down and the recovery), and a steady service may start the \
         range with a recovery."
    )];
    let r = Report {
        scenario: "soak",
        summary: &summary,
        latency: Latency::Hdr(&rep.latency),
        latency_label: "status change -> receipt",
        throughput: &mon.series,
        throughput_label: "messages sent/s",
        peers: &[],
        checks: &checks,
        notes: &notes,
    };
    report::write(&cfg.out, &r).map_err(|e| format!("{}: {e}", cfg.out.display()))?;
    for c in &checks {
        eprintln!(
            "soak: {} {}: {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    eprintln!("soak: report in {}", cfg.out.display());
    Ok(SoakOutcome {
        dir: cfg.out.clone(),
        failed: checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.name.clone())
            .collect(),
    })
}

/// The per-second progress line and throughput series of a soak run.
struct Monitor {
    t0: Instant,
    first: scenario::MetricsSample,
    prev: (f64, scenario::MetricsSample),
    last: scenario::MetricsSample,
    series: Vec<(f64, f64)>,
    rss_max: f64,
    tick: u32,
}

impl Monitor {
    fn tick(&mut self, addr: SocketAddr, pid: Option<u32>, phase: &str, disconnected: u64) {
        self.tick += 1;
        let tick = self.tick;
        let m = match scenario::scrape(addr) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("soak: [{tick:>3}s] scrape failed: {e}");
                return;
            }
        };
        let t = self.t0.elapsed().as_secs_f64();
        let dt = (t - self.prev.0).max(1e-3);
        let msgs = (m.ws_messages_sent - self.prev.1.ws_messages_sent) / dt;
        let probes = (m.probes_total - self.prev.1.probes_total) / dt;
        self.series.push((t, msgs));
        let rss = pid
            .and_then(|p| crate::procstat::sample(p).ok())
            .map_or(f64::NAN, |s| s.rss_kib as f64);
        if rss > self.rss_max || self.rss_max.is_nan() {
            self.rss_max = rss;
        }
        eprintln!(
            "soak: [{tick:>3}s {phase:<6}] {probes:>7.0} probes/s {msgs:>9.0} messages/s  transitions {:>6.0}  disconnected {disconnected}  rss {rss:>7.0} KiB",
            m.transitions - self.first.transitions,
        );
        self.prev = (t, m.clone());
        self.last = m;
    }
}
