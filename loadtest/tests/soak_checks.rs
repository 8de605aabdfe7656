//! The soak scenario's comparison logic on synthetic inputs: each kind of loss or excess is
//! detected by the check meant for it, and nothing else fails.

use ringwatch_loadtest::soak::{evaluate, FlapSchedule, SoakCounts, SoakInput, StoredTransition};
use ringwatch_loadtest::swarm::{fingerprint, SeqLog};

const BASE: u64 = 100;
const END: u64 = 110;

/// Seqs 101..=110 alternate over two flapping services; 111..=112 came after the window.
fn store() -> Vec<StoredTransition> {
    (BASE + 1..=END + 2)
        .map(|seq| StoredTransition {
            seq,
            service: if seq % 2 == 0 { "svc-a" } else { "svc-b" }.into(),
            to: if (seq / 2) % 2 == 0 { "up" } else { "down" }.into(),
            status_code: Some(if (seq / 2) % 2 == 0 { 200 } else { 500 }),
        })
        .collect()
}

/// A client that received exactly `seqs`, with the store's content.
fn client(store: &[StoredTransition], seqs: impl IntoIterator<Item = u64>) -> SeqLog {
    let mut l = SeqLog::new(BASE, 1_000);
    for seq in seqs {
        let (service, to) = store
            .iter()
            .find(|t| t.seq == seq)
            .map_or(("svc-x", "up"), |t| (t.service.as_str(), t.to.as_str()));
        l.record(seq, fingerprint(seq, service.as_bytes(), to.as_bytes()));
    }
    l
}

fn schedule(flapping_count_ok: bool) -> FlapSchedule {
    FlapSchedule {
        flapping: vec!["svc-a".into(), "svc-b".into()],
        steady: vec!["svc-ok".into()],
        period_ms: 1000,
        // 5 flips (at 1000, 2000, ... 5000) or 7.
        from_ms: 500,
        to_ms: if flapping_count_ok { 5_500 } else { 7_500 },
    }
}

fn run(
    store: &[StoredTransition],
    clients: &[SeqLog],
    expected: usize,
    disconnected: u64,
    sched: &FlapSchedule,
) -> (Vec<(String, bool)>, SoakCounts) {
    let (checks, counts) = evaluate(&SoakInput {
        base: BASE,
        end: END,
        store,
        clients,
        clients_expected: expected,
        disconnected,
        schedule: Some(sched),
    });
    (
        checks.into_iter().map(|c| (c.name, c.pass)).collect(),
        counts,
    )
}

fn failed(checks: &[(String, bool)]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| !c.1)
        .map(|c| c.0.as_str())
        .collect()
}

#[test]
fn a_clean_run_passes_every_check() {
    let s = store();
    // Clients may also hold seqs after END (they arrived during the drain).
    let clients = [client(&s, BASE + 1..=END), client(&s, BASE + 1..=END + 2)];
    let (checks, c) = run(&s, &clients, 2, 0, &schedule(true));
    assert_eq!(checks.len(), 5);
    assert!(failed(&checks).is_empty(), "{checks:?}");
    assert_eq!(c.issued, 10);
    assert_eq!(c.stored_in_range, 10);
    assert_eq!(c.deliveries_expected, 20);
    assert_eq!(c.deliveries_seen, 20);
    assert_eq!(c.schedule_expected, 10);
    assert_eq!(c.schedule_seen, 10);
}

#[test]
fn a_duplicate_is_detected() {
    let s = store();
    let mut dup = client(&s, BASE + 1..=END);
    dup.record(105, fingerprint(105, b"svc-b", b"up"));
    let clients = [client(&s, BASE + 1..=END), dup];
    let (checks, c) = run(&s, &clients, 2, 0, &schedule(true));
    assert_eq!(failed(&checks), ["exactly once at every client"]);
    assert_eq!((c.duplicates, c.clients_with_duplicates), (1, 1));
    assert_eq!(c.missing, 0);
}

#[test]
fn a_missing_transition_is_detected() {
    let s = store();
    let clients = [
        client(&s, BASE + 1..=END),
        client(&s, (BASE + 1..=END).filter(|&q| q != 107)),
    ];
    let (checks, c) = run(&s, &clients, 2, 0, &schedule(true));
    assert_eq!(failed(&checks), ["exactly once at every client"]);
    assert_eq!((c.missing, c.clients_with_missing), (1, 1));
    assert_eq!(c.deliveries_seen, 19);
}

#[test]
fn a_delivered_transition_missing_from_the_store_is_detected() {
    let mut s = store();
    s.retain(|t| t.seq != 104);
    let full = store();
    let clients = [client(&full, BASE + 1..=END), client(&full, BASE + 1..=END)];
    let (checks, c) = run(&s, &clients, 2, 0, &schedule(true));
    let f = failed(&checks);
    assert!(
        f.contains(&"every delivered transition is in the store"),
        "{f:?}"
    );
    assert!(f.contains(&"store has every seq in the range"), "{f:?}");
    assert!(!f.contains(&"exactly once at every client"), "{f:?}");
    assert_eq!(c.not_in_store, 1);
    assert_eq!(c.store_gaps, 1);
}

#[test]
fn a_store_gap_nobody_saw_is_still_a_gap() {
    let mut s = store();
    s.retain(|t| t.seq != 108);
    let clients = [client(&s, (BASE + 1..=END).filter(|&q| q != 108))];
    let (checks, c) = run(&s, &clients, 1, 0, &schedule(true));
    let f = failed(&checks);
    assert!(f.contains(&"store has every seq in the range"), "{f:?}");
    assert_eq!(c.store_gaps, 1);
    assert_eq!(c.not_in_store, 0);
}

#[test]
fn wrong_content_is_detected() {
    let s = store();
    let mut wrong = SeqLog::new(BASE, 1_000);
    for seq in BASE + 1..=END {
        // Same seqs, but 103 claims the wrong status.
        let t = &s[(seq - BASE - 1) as usize];
        let to = if seq == 103 {
            "sideways"
        } else {
            t.to.as_str()
        };
        wrong.record(seq, fingerprint(seq, t.service.as_bytes(), to.as_bytes()));
    }
    let (checks, c) = run(&s, &[wrong], 1, 0, &schedule(true));
    assert_eq!(failed(&checks), ["exactly once at every client"]);
    assert_eq!(c.content_mismatches, 1);
}

#[test]
fn lost_or_disconnected_clients_fail_the_connection_check() {
    let s = store();
    let clients = [client(&s, BASE + 1..=END)];
    let (checks, _) = run(&s, &clients, 2, 0, &schedule(true));
    assert_eq!(failed(&checks), ["clients connected and stayed connected"]);
    let (checks, _) = run(&s, &clients, 1, 1, &schedule(true));
    assert_eq!(failed(&checks), ["clients connected and stayed connected"]);
    let mut err = client(&s, BASE + 1..=END);
    err.observe(br#"{"type":"error","code":"events_lost","message":"resubscribe"}"#);
    let (checks, c) = run(&s, &[err], 1, 0, &schedule(true));
    assert_eq!(failed(&checks), ["clients connected and stayed connected"]);
    assert_eq!(c.server_errors, 1);
}

#[test]
fn unrecorded_seqs_fail_rather_than_pass_silently() {
    let s = store();
    let mut capped = SeqLog::new(BASE, 5);
    for t in s.iter().filter(|t| t.seq <= END) {
        capped.record(
            t.seq,
            fingerprint(t.seq, t.service.as_bytes(), t.to.as_bytes()),
        );
    }
    let (checks, c) = run(&s, &[capped], 1, 0, &schedule(true));
    assert_eq!(failed(&checks), ["exactly once at every client"]);
    assert_eq!(c.unrecorded, 5);
    assert_eq!(c.missing, 5);
}

#[test]
fn the_flap_schedule_allows_one_either_way() {
    let s = store();
    let clients = [client(&s, BASE + 1..=END)];
    // 5 transitions each in (X, Y]: 4, 5 and 6 flips are within tolerance, 7 is not.
    for (to_ms, ok) in [(4_500, true), (5_500, true), (6_500, true), (7_500, false)] {
        let mut sched = schedule(true);
        sched.to_ms = to_ms;
        let (checks, c) = run(&s, &clients, 1, 0, &sched);
        assert_eq!(
            failed(&checks).is_empty(),
            ok,
            "to_ms {to_ms}: {checks:?} {c:?}"
        );
    }
    let (checks, c) = run(&s, &clients, 1, 0, &schedule(false));
    assert_eq!(
        failed(&checks),
        ["transition count matches the flap schedule"]
    );
    assert_eq!(c.services_off_schedule, 2);
}

#[test]
fn a_steady_service_that_changes_fails_the_schedule() {
    let mut s = store();
    // A down that the fleet answered (status 500 on an /ok target): not the host's doing.
    s[2].service = "svc-ok".into();
    assert_eq!((s[2].to.as_str(), s[2].status_code), ("down", Some(500)));
    let clients = [client(&s, BASE + 1..=END)];
    let mut sched = schedule(true);
    sched.to_ms = 4_500;
    let (checks, c) = run(&s, &clients, 1, 0, &sched);
    assert_eq!(
        failed(&checks),
        ["transition count matches the flap schedule"]
    );
    assert_eq!(c.steady_transitions, 1);
    assert_eq!(c.services_off_schedule, 1);
}

/// Seqs 113 and 114: `service` went down without a response (a timeout), then recovered.
fn with_timeout_pair(service: &str) -> Vec<StoredTransition> {
    let mut s = store();
    for (seq, to, code) in [(END + 3, "down", None), (END + 4, "up", Some(200))] {
        s.push(StoredTransition {
            seq,
            service: service.into(),
            to: to.into(),
            status_code: code,
        });
    }
    s
}

fn evaluate_to(
    store: &[StoredTransition],
    clients: &[SeqLog],
    end: u64,
) -> (Vec<(String, bool)>, SoakCounts) {
    let sched = schedule(true);
    let (checks, counts) = evaluate(&SoakInput {
        base: BASE,
        end,
        store,
        clients,
        clients_expected: clients.len(),
        disconnected: 0,
        schedule: Some(&sched),
    });
    (
        checks.into_iter().map(|c| (c.name, c.pass)).collect(),
        counts,
    )
}

#[test]
fn timeouts_on_a_starved_host_are_not_schedule_errors() {
    for service in ["svc-ok", "svc-a"] {
        let s = with_timeout_pair(service);
        let clients = [client(&s, BASE + 1..=END + 4)];
        let (checks, c) = evaluate_to(&s, &clients, END + 4);
        assert!(failed(&checks).is_empty(), "{service}: {checks:?}");
        assert_eq!(c.failures_without_response, 1);
    }
    // The same pair with a status code on the down is the fleet answering, so it counts.
    let mut s = with_timeout_pair("svc-ok");
    let down = s.len() - 2;
    s[down].status_code = Some(200);
    let clients = [client(&s, BASE + 1..=END + 4)];
    let (checks, c) = evaluate_to(&s, &clients, END + 4);
    assert_eq!(
        failed(&checks),
        ["transition count matches the flap schedule"]
    );
    assert_eq!(c.failures_without_response, 0);
}
