//! End-to-end tests of the WebSocket stream at `/ws`: real process, real sockets.

mod common;
mod ws_support;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use ws_support::{frame_bytes, Ws};

const LONG: Duration = Duration::from_secs(20);

/// Three services: alpha (tag prod) and beta (tag dev) follow the target's switch; gamma
/// (tag prod) stays up.
fn config(t: &Target, port: u16, db: &std::path::Path, shards: usize, ws: &str) -> String {
    let dir = db.parent().expect("db in a directory");
    config_on(t, port, &Backend::Sqlite, dir, shards, ws)
}

/// `config` on a given storage backend (SQLite files go into `dir`).
fn config_on(
    t: &Target,
    port: u16,
    backend: &Backend,
    dir: &std::path::Path,
    shards: usize,
    ws: &str,
) -> String {
    let extra = if ws.is_empty() {
        String::new()
    } else {
        format!("  ws:\n{ws}")
    };
    backend_config(port, backend, dir, shards, &extra)
        + &format!(
            "services:\n{}{}{}",
            svc("alpha", &t.url("/switch"), "prod"),
            svc("beta", &t.url("/switch"), "dev"),
            svc("gamma", &t.url("/ok"), "prod"),
        )
}

fn svc(name: &str, url: &str, tag: &str) -> String {
    format!(
        "  - name: {name}\n    url: {url}\n    interval: 100ms\n    timeout: 80ms\n    tags: [{tag}]\n"
    )
}

fn start(shards: usize, ws: &str) -> (Target, tempfile::TempDir, Ringwatch) {
    start_on(&Backend::Sqlite, shards, ws)
}

/// `start` on a given storage backend.
fn start_on(backend: &Backend, shards: usize, ws: &str) -> (Target, tempfile::TempDir, Ringwatch) {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = config_on(&target, port, backend, dir.path(), shards, ws);
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    // Every service has reported once (UNKNOWN -> UP) before the tests start flipping.
    assert!(
        eventually(LONG, || rw.metric("ringwatch_services{status=\"up\"}")
            == 3.0),
        "services did not come up"
    );
    (target, dir, rw)
}

fn transitions(msgs: &[Value]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|m| m["type"] == "transition")
        .map(|m| {
            (
                m["service"].as_str().unwrap_or("").to_string(),
                m["to"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Collects JSON messages until `done(msgs)` holds (or the timeout passes).
fn collect(ws: &mut Ws, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        if let Some(v) = ws.next_json(Duration::from_millis(200)) {
            out.push(v);
        }
    }
    out
}

/// Everything a client received until the server confirmed an unsubscribe.
fn drain_until_unsubscribed(ws: &mut Ws) -> Vec<Value> {
    ws.send_text(r#"{"op":"unsubscribe"}"#);
    ws.until_type("unsubscribed", LONG).1
}

#[test]
fn handshake_checks_and_plain_http_on_the_same_port() {
    let (_t, _d, rw) = start(1, "");
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let cases = [
        ("GET", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Key"),
        ("GET", &format!("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {key}\r\n"), "Version"),
        ("POST", &format!("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nContent-Length: 0\r\n"), "GET"),
        ("GET", &format!("Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"), "Upgrade"),
        ("GET", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bad\r\n", "base64"),
    ];
    for (method, headers, reason) in cases {
        let raw = format!("{method} /ws HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n");
        let (code, body) = http_request(rw.addr, &raw).expect("request");
        assert_eq!(code, 400, "{method} {headers}");
        assert!(body.contains(reason), "{body} should mention {reason}");
    }
    // Plain HTTP keeps working, and a good upgrade gets 101 and a hello with the latest seq.
    assert_eq!(rw.get("/healthz").0, 200);
    let mut ws = Ws::connect(rw.addr);
    let hello = ws.next_json(LONG).expect("hello");
    assert_eq!(hello["type"], "hello");
    assert!(hello["version"].is_string());
    assert_eq!(
        hello["seq"].as_u64(),
        Some(rw.metric("ringwatch_transition_seq") as u64)
    );
    assert_eq!(rw.get("/healthz").0, 200);
    assert_eq!(rw.metric("ringwatch_ws_clients"), 1.0);
}

#[test]
fn filters_deliver_exactly_the_matching_events() {
    let (target, _d, rw) = start(2, "");
    let subs = [
        ("all", r#"{"op":"subscribe"}"#),
        (
            "alpha",
            r#"{"op":"subscribe","filter":{"services":["alpha"]}}"#,
        ),
        ("dev", r#"{"op":"subscribe","filter":{"tags":["dev"]}}"#),
        (
            "gamma-results",
            r#"{"op":"subscribe","filter":{"services":["gamma"],"events":["result"]}}"#,
        ),
        (
            "prod-both",
            r#"{"op":"subscribe","filter":{"tags":["prod"],"events":["transition","result"]}}"#,
        ),
    ];
    let mut clients: Vec<(&str, Ws, Value)> = subs
        .iter()
        .map(|(name, msg)| {
            let mut ws = Ws::connect(rw.addr);
            let snap = ws.subscribe(msg);
            (*name, ws, snap)
        })
        .collect();
    let names = |snap: &Value| -> Vec<String> {
        snap["services"]
            .as_array()
            .expect("services")
            .iter()
            .map(|s| s["service"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(names(&clients[0].2), ["alpha", "beta", "gamma"]);
    assert_eq!(names(&clients[1].2), ["alpha"]);
    assert_eq!(names(&clients[2].2), ["beta"]);
    assert_eq!(names(&clients[3].2), ["gamma"]);
    assert_eq!(names(&clients[4].2), ["alpha", "gamma"]);
    assert!(clients[0].2["services"]
        .as_array()
        .expect("arr")
        .iter()
        .all(|s| s["status"] == "up" && s["since"].is_string() && s["latency_ms"].is_number()));

    // Down, then up again: four transitions in all (alpha and beta, twice).
    target.status.store(500, Ordering::Relaxed);
    let seen = collect(&mut clients[0].1, LONG, |m| transitions(m).len() >= 2);
    target.status.store(200, Ordering::Relaxed);
    let mut all = seen;
    all.extend(collect(&mut clients[0].1, LONG, |m| {
        transitions(m).len() >= 2
    }));
    let mut got = transitions(&all);
    got.sort();
    assert_eq!(
        got,
        [
            ("alpha".to_string(), "down".to_string()),
            ("alpha".into(), "up".into()),
            ("beta".into(), "down".into()),
            ("beta".into(), "up".into())
        ]
    );
    // Give every shard time to deliver, then take what each client got.
    std::thread::sleep(Duration::from_millis(500));
    for (name, ws, _) in clients.iter_mut().skip(1) {
        let msgs = drain_until_unsubscribed(ws);
        let mut tr = transitions(&msgs);
        tr.sort();
        let results: HashSet<String> = msgs
            .iter()
            .filter(|m| m["type"] == "result")
            .map(|m| m["service"].as_str().unwrap_or("").to_string())
            .collect();
        let (want_tr, want_res): (Vec<(&str, &str)>, Vec<&str>) = match *name {
            "alpha" => (vec![("alpha", "down"), ("alpha", "up")], vec![]),
            "dev" => (vec![("beta", "down"), ("beta", "up")], vec![]),
            "gamma-results" => (vec![], vec!["gamma"]),
            _ => (
                vec![("alpha", "down"), ("alpha", "up")],
                vec!["alpha", "gamma"],
            ),
        };
        let want_tr: Vec<(String, String)> = want_tr
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(tr, want_tr, "{name}");
        let want_res: HashSet<String> = want_res.iter().map(|s| s.to_string()).collect();
        assert_eq!(results, want_res, "{name}");
        for m in &msgs {
            assert!(
                m["type"] == "transition" || m["type"] == "result",
                "{name}: unexpected {m}"
            );
            if m["type"] == "result" {
                for k in ["service_id", "at", "status", "latency_ms"] {
                    assert!(!m[k].is_null(), "{name}: result without {k}: {m}");
                }
            }
        }
    }
    let t = &all.iter().find(|m| m["type"] == "transition").expect("one");
    for k in ["seq", "service_id", "from", "to", "at", "latency_ms"] {
        assert!(!t[k].is_null(), "transition without {k}: {t}");
    }
    assert!(t["at"].as_str().expect("at").ends_with('Z'));
}

#[test]
fn bad_client_messages_get_errors_and_the_connection_stays() {
    let (_t, _d, rw) = start(1, "");
    let mut ws = Ws::connect(rw.addr);
    ws.next_json(LONG).expect("hello");
    for (msg, code) in [
        ("not json", "invalid_json"),
        (r#"{"op":"dance"}"#, "unknown_op"),
        (r#"{"op":"subscribe","since":"yesterday"}"#, "invalid_type"),
        (
            r#"{"op":"subscribe","filter":{"services":"alpha"}}"#,
            "invalid_type",
        ),
        (
            r#"{"op":"subscribe","filter":{"events":["everything"]}}"#,
            "invalid_value",
        ),
        (r#"[1,2]"#, "invalid_type"),
    ] {
        ws.send_text(msg);
        let e = ws.next_json(LONG).expect("error reply");
        assert_eq!(e["type"], "error", "{msg}: {e}");
        assert_eq!(e["code"], code, "{msg}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send_frame(0x82, b"\x01\x02", true);
    assert_eq!(ws.next_json(LONG).expect("reply")["code"], "unsupported");
    let snap = ws.subscribe(r#"{"op":"subscribe"}"#);
    assert_eq!(snap["services"].as_array().map(|a| a.len()), Some(3));
    assert!(rw.metric("ringwatch_ws_client_errors_total") >= 7.0);
}

#[test]
fn a_subscription_naming_an_unknown_service_is_kept_with_a_warning() {
    let (t, _d, rw) = start(2, "");
    let mut ws = Ws::connect(rw.addr);
    ws.next_json(LONG).expect("hello");
    let snap = ws.subscribe(r#"{"op":"subscribe","filter":{"services":["gamma","later"]}}"#);
    assert_eq!(
        snap["services"].as_array().map(|a| a.len()),
        Some(1),
        "{snap}"
    );
    // Right after the snapshot: one warning for the name that matches nothing.
    let w = ws.next_json(LONG).expect("warning");
    assert_eq!(
        w,
        serde_json::json!({"type": "warning", "code": "unknown_service", "service": "later",
            "message": "no service named later (yet)"})
    );
    // The subscription stands: a service created under that name afterwards is streamed.
    let body = format!(
        r#"{{"name":"later","url":"{}","interval":"100ms","timeout":"80ms"}}"#,
        t.url("/ok")
    );
    let raw = format!(
        "POST /api/v1/services HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (code, resp) = http_request(rw.addr, &raw).expect("POST");
    assert_eq!(code, 201, "{resp}");
    let msgs = collect(&mut ws, LONG, |m| {
        transitions(m).contains(&("later".into(), "up".into()))
    });
    assert!(
        transitions(&msgs).contains(&("later".into(), "up".into())),
        "{msgs:?}"
    );
}

#[test]
fn frames_cut_across_reads_are_reassembled() {
    let (_t, _d, rw) = start(1, "");
    let mut ws = Ws::connect(rw.addr);
    ws.next_json(LONG).expect("hello");
    // Several frames in one stream, cut into 3-byte pieces that arrive one by one: a ping,
    // a two-fragment subscribe with a ping between the fragments.
    let mut bytes = frame_bytes(0x89, b"cut-ping", true);
    bytes.extend(frame_bytes(0x01, br#"{"op":"subscribe","#, true));
    bytes.extend(frame_bytes(0x89, b"between", true));
    bytes.extend(frame_bytes(
        0x80,
        br#""filter":{"services":["alpha"]}}"#,
        true,
    ));
    ws.send_in_pieces(&bytes, 3, Duration::from_millis(2));
    let pong = ws.next_frame(LONG).expect("pong");
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (0xA, &b"cut-ping"[..])
    );
    let pong = ws.next_frame(LONG).expect("second pong");
    assert_eq!(pong.payload.as_slice(), b"between");
    let (sub, _) = ws.until_type("subscribed", LONG);
    assert_eq!(sub["type"], "subscribed");
    // A message near the size limit (64 KiB), larger than one read, arriving in big pieces:
    // still one message, answered with one error (it is not a known op).
    let big = format!(r#"{{"op":"{}"}}"#, "x".repeat(60_000));
    let bytes = frame_bytes(0x81, big.as_bytes(), true);
    ws.send_in_pieces(&bytes, 7_001, Duration::from_millis(2));
    let (e, _) = ws.until_type("error", LONG);
    assert_eq!(e["code"], "unknown_op", "{e}");
    // And the connection still works.
    ws.send_frame(0x89, b"after", true);
    let mut got = None;
    for _ in 0..10 {
        match ws.next_frame(LONG) {
            Some(f) if f.opcode == 0xA => {
                got = Some(f.payload);
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert_eq!(got.as_deref(), Some(&b"after"[..]));
}

backend_matrix! {
fn resume_replays_without_gap_or_duplicate_while_transitions_continue(backend: Backend) {
    let (target, dir, rw) = start_on(&backend, 2, "");
    // A witness subscribed from the start sees every live transition.
    let mut witness = Ws::connect(rw.addr);
    witness.subscribe(r#"{"op":"subscribe"}"#);
    let flip = |n: usize| {
        for i in 0..n {
            target
                .status
                .store(if i % 2 == 0 { 500 } else { 200 }, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    flip(4);
    let before = collect(&mut witness, LONG, |m| transitions(m).len() >= 8);
    let seqs: Vec<u64> = before.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert!(seqs.len() >= 8, "{before:?}");
    let since = seqs[2];

    // Keep transitions coming while the resuming client replays.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let status = target.status.clone();
    let stop2 = stop.clone();
    let flapper = std::thread::spawn(move || {
        let mut i = 0;
        while !stop2.load(Ordering::Relaxed) {
            status.store(if i % 2 == 0 { 500 } else { 200 }, Ordering::Relaxed);
            i += 1;
            std::thread::sleep(Duration::from_millis(120));
        }
        status.store(200, Ordering::Relaxed);
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut resumer = Ws::connect(rw.addr);
    resumer.subscribe(&format!(r#"{{"op":"subscribe","since":{since}}}"#));
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    flapper.join().expect("flapper");
    // Settle: everything is up again and every shard has delivered.
    assert!(eventually(LONG, || rw
        .metric("ringwatch_services{status=\"up\"}")
        == 3.0));
    std::thread::sleep(Duration::from_millis(500));
    let latest = rw.metric("ringwatch_transition_seq") as u64;
    let got = drain_until_unsubscribed(&mut resumer);
    let got_seqs: Vec<u64> = got.iter().filter_map(|m| m["seq"].as_u64()).collect();
    let unique: BTreeSet<u64> = got_seqs.iter().copied().collect();
    assert_eq!(unique.len(), got_seqs.len(), "duplicates: {got_seqs:?}");
    let want: BTreeSet<u64> = (since + 1..=latest).collect();
    assert_eq!(unique, want, "gap or extra after since={since}");
    assert!(
        latest > seqs[seqs.len() - 1] + 2,
        "transitions continued during the test"
    );
    // The witness (live only) agrees on the content of each seq.
    let mut live = before;
    live.extend(drain_until_unsubscribed(&mut witness));
    for m in got.iter() {
        if let Some(w) = live.iter().find(|w| w["seq"] == m["seq"]) {
            assert_eq!(w["service"], m["service"]);
            assert_eq!(w["to"], m["to"]);
        }
    }
    assert!(rw.metric("ringwatch_ws_replayed_total") + rw.metric("ringwatch_ws_clients") >= 1.0);
    drop(dir);
}
}

#[test]
fn each_event_is_encoded_once_for_many_clients_on_every_shard() {
    let (target, _d, rw) = start(2, "");
    let mut clients: Vec<Ws> = (0..24)
        .map(|_| {
            let mut ws = Ws::connect(rw.addr);
            ws.subscribe(r#"{"op":"subscribe"}"#);
            ws
        })
        .collect();
    let encoded_before = rw.metric("ringwatch_ws_events_encoded_total");
    let tr_before = rw.metric("ringwatch_transitions_total");
    target.status.store(500, Ordering::Relaxed);
    for ws in clients.iter_mut() {
        let got = collect(ws, LONG, |m| transitions(m).len() >= 2);
        assert_eq!(transitions(&got).len(), 2);
    }
    target.status.store(200, Ordering::Relaxed);
    for ws in clients.iter_mut() {
        let got = collect(ws, LONG, |m| transitions(m).len() >= 2);
        assert_eq!(transitions(&got).len(), 2);
    }
    let events = rw.metric("ringwatch_transitions_total") - tr_before;
    let encoded = rw.metric("ringwatch_ws_events_encoded_total") - encoded_before;
    assert_eq!(events, 4.0);
    // 24 clients x 4 events delivered, 4 encodings: one per event, not one per client.
    assert_eq!(encoded, events, "one serialization and framing per event");
    assert!(rw.metric("ringwatch_ws_messages_sent_total") >= 24.0 * 4.0);
    assert_eq!(rw.metric("ringwatch_ws_result_subscribers"), 0.0);
}

/// Name, what to send, expected close code.
type BadFrameCase = (&'static str, Box<dyn Fn(&mut Ws)>, u16);

#[test]
fn bad_frames_get_close_codes_and_others_keep_being_served() {
    let (_t, _d, rw) = start(
        1,
        "    max_frame_bytes: 1024\n    max_message_bytes: 1500\n",
    );
    let mut observer = Ws::connect(rw.addr);
    observer.subscribe(r#"{"op":"subscribe"}"#);
    let utf8_bad: &[u8] = &[0xC3, 0x28];
    let cases: Vec<BadFrameCase> = vec![
        (
            "unmasked",
            Box::new(|w: &mut Ws| w.send_frame(0x81, b"{}", false)),
            1002,
        ),
        (
            "reserved opcode",
            Box::new(|w: &mut Ws| w.send_frame(0x83, b"x", true)),
            1002,
        ),
        (
            "fragmented ping",
            Box::new(|w: &mut Ws| w.send_frame(0x09, b"x", true)),
            1002,
        ),
        (
            "rsv bit",
            Box::new(|w: &mut Ws| w.send_frame(0xC1, b"x", true)),
            1002,
        ),
        (
            "oversized frame",
            Box::new(|w: &mut Ws| w.send_frame(0x81, &[b' '; 2000], true)),
            1009,
        ),
        (
            "oversized message",
            Box::new(|w: &mut Ws| {
                w.send_frame(0x01, &[b' '; 1000], true);
                w.send_frame(0x80, &[b' '; 1000], true);
            }),
            1009,
        ),
        (
            "invalid utf-8",
            Box::new(move |w: &mut Ws| w.send_frame(0x81, utf8_bad, true)),
            1007,
        ),
        (
            "orphan continuation",
            Box::new(|w: &mut Ws| w.send_frame(0x80, b"x", true)),
            1002,
        ),
    ];
    for (name, send, want) in cases {
        let mut ws = Ws::connect(rw.addr);
        ws.next_json(LONG).expect("hello");
        send(&mut ws);
        let got = ws.until_close(LONG);
        assert_eq!(got, Some(want), "{name}");
        assert!(
            ws.eof_within(LONG),
            "{name}: connection closed after the close frame"
        );
    }
    // A fragmented message within the limit is fine.
    let mut ok = Ws::connect(rw.addr);
    ok.next_json(LONG).expect("hello");
    ok.send_frame(0x01, br#"{"op":"sub"#, true);
    ok.send_frame(0x89, b"mid", true); // control frames may interleave
    ok.send_frame(0x80, br#"scribe"}"#, true);
    let pong = ok.next_frame(LONG).expect("pong");
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"mid"[..]));
    ok.until_type("subscribed", LONG);
    // The observer is still served.
    observer.send_text(r#"{"op":"subscribe","filter":{"services":["gamma"]}}"#);
    observer.until_type("subscribed", LONG);
    assert!(rw.metric("ringwatch_ws_dropped_total{reason=\"protocol_error\"}") >= 5.0);
    assert!(rw.metric("ringwatch_ws_dropped_total{reason=\"too_big\"}") >= 2.0);
    assert!(rw.metric("ringwatch_ws_dropped_total{reason=\"invalid_data\"}") >= 1.0);
}

#[test]
fn pings_pongs_and_close_handshakes() {
    let (_t, _d, rw) = start(
        1,
        "    ping_interval: 200ms\n    pong_timeout: 400ms\n    close_timeout: 500ms\n",
    );
    // A client that answers pings (on its own thread, reading all the time) stays connected.
    let mut good = Ws::connect(rw.addr);
    good.next_json(LONG).expect("hello");
    let good = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            good.next_json(Duration::from_millis(50));
        }
        good
    });
    let mut silent = Ws::connect(rw.addr);
    silent.auto_pong = false;
    silent.next_json(LONG).expect("hello");
    // The silent client gets pings, misses the deadline, and is closed.
    assert_eq!(silent.until_close(LONG), Some(1008));
    assert!(silent.eof_within(LONG));
    let mut good = good.join().expect("good client");
    assert!(good.pings >= 3, "pings: {}", good.pings);
    assert_eq!(
        rw.metric("ringwatch_ws_dropped_total{reason=\"pong_timeout\"}"),
        1.0
    );
    // Client ping -> pong with the same payload.
    good.send_frame(0x89, b"hi", true);
    let f = loop {
        let f = good.next_frame(LONG).expect("frame");
        if f.opcode != 9 {
            break f;
        }
        good.send_frame(0x8A, &f.payload, true);
    };
    assert_eq!((f.opcode, f.payload.as_slice()), (0xA, &b"hi"[..]));
    // Client-initiated close: the server echoes the code and closes the TCP connection.
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    good.send_frame(0x88, &payload, true);
    assert_eq!(good.until_close(LONG), Some(1000));
    assert!(good.eof_within(LONG));
    // Server-initiated close (shutdown): 1001, and the client's answer ends it.
    let mut last = Ws::connect(rw.addr);
    last.next_json(LONG).expect("hello");
    rw.signal(libc::SIGTERM);
    assert_eq!(last.until_close(LONG), Some(1001));
    last.send_frame(0x88, &1001u16.to_be_bytes(), true);
    assert!(last.eof_within(LONG));
}

#[test]
fn a_stalled_client_is_dropped_and_does_not_delay_the_others() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cfg = base_config(
        port,
        &dir.path().join("rw.db"),
        1,
        "  ws:\n    max_queue_bytes: 16384\n    slow_grace: 300ms\n    send_buffer_bytes: 8192\n",
    ) + "services:\n";
    for i in 0..30 {
        cfg += &format!(
            "  - name: s{i}\n    url: {}\n    interval: 100ms\n    timeout: 80ms\n",
            target.url(&format!("/ok/{i}"))
        );
    }
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    let results = r#"{"op":"subscribe","filter":{"events":["result"]}}"#;

    // The stalled client: a tiny receive buffer, subscribes to results, then never reads.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(2048).expect("rcvbuf");
    sock.connect(&rw.addr.into()).expect("connect");
    let mut stalled = Ws::connect_stream(sock.into());
    stalled.subscribe(results);

    // A healthy client on its own thread records how fresh each result is on arrival.
    let mut healthy = Ws::connect(rw.addr);
    healthy.subscribe(results);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut lags = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            if let Some(m) = healthy.next_json(Duration::from_millis(200)) {
                if m["type"] == "result" {
                    let at = m["at"].as_str().unwrap_or("").to_string();
                    lags.push((at, std::time::SystemTime::now()));
                }
            }
        }
        (healthy, lags)
    });
    assert!(
        eventually(Duration::from_secs(20), || rw
            .metric("ringwatch_ws_dropped_total{reason=\"slow\"}")
            == 1.0),
        "stalled client not dropped: {}",
        rw.get("/metrics")
            .1
            .lines()
            .filter(|l| l.starts_with("ringwatch_ws") || l.starts_with("ringwatch_probes_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (mut healthy, lags) = reader.join().expect("reader");
    assert!(
        lags.len() > 50,
        "healthy client kept receiving: {}",
        lags.len()
    );
    // Freshness: `at` (ms, UTC) against the arrival time, generous for a loaded machine.
    let worst = lags
        .iter()
        .map(|(at, arrived)| {
            let arrived_ms = arrived
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis() as i64;
            let at =
                ringwatch::model::UnixMillis::parse_rfc3339(at).expect("`at` is an RFC 3339 time");
            arrived_ms - at.0
        })
        .max()
        .unwrap_or(0);
    assert!(worst < 2000, "healthy client delayed by {worst} ms");
    // After the close timeout the stalled socket is cut; only the healthy client is left.
    assert!(
        eventually(LONG, || rw.metric("ringwatch_ws_clients") == 1.0),
        "stalled client still connected"
    );
    healthy.send_text(r#"{"op":"unsubscribe"}"#);
    healthy.until_type("unsubscribed", LONG);
    // The stalled socket was closed: reading it now drains what was buffered, then ends.
    assert!(stalled.eof_within(LONG));
    assert!(rw.metric("ringwatch_ws_coalesced_writes_total") >= 1.0);
}

#[test]
fn python_websockets_client_receives_events_and_closes_cleanly() {
    let (target, _d, rw) = start(2, "");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/py_client.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .arg(rw.addr.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("python3 (scripts/setup-test-deps.sh installs websockets)");
    let out = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        seen.push(line.clone());
        if line == "READY" {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l == "READY"),
        "python client output: {seen:?}"
    );
    target.status.store(500, Ordering::Relaxed);
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().expect("wait");
    assert!(status.success(), "python client failed: {seen:?}");
    let msgs: Vec<Value> = seen
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(msgs[0]["type"], "hello");
    let types: Vec<&str> = msgs.iter().filter_map(|m| m["type"].as_str()).collect();
    assert_eq!(
        types,
        ["hello", "subscribed", "snapshot", "transition"],
        "{seen:?}"
    );
    assert_eq!(msgs[3]["service"], "alpha");
    assert_eq!(msgs[3]["to"], "down");
    assert!(seen.iter().any(|l| l == "PONG"));
    assert_eq!(
        seen.last().map(String::as_str),
        Some("CLOSED 1000"),
        "{seen:?}"
    );
}

#[test]
fn headless_chromium_page_shows_received_events() {
    let (_t, dir, rw) = start(1, "");
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/page.html"
    ))
    .expect("page")
    .replace("ADDR", &rw.addr.to_string());
    let path = dir.path().join("page.html");
    std::fs::write(&path, page).expect("write page");
    let profile = dir.path().join("chromium-profile");
    // Headless Chromium driven by playwright-core (both installed by setup-test-deps.sh).
    let node_modules = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-node/node_modules");
    let out = std::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/chromium_page.js"
        ))
        .arg(format!("file://{}", path.display()))
        .arg(&profile)
        .env("NODE_PATH", node_modules)
        .output()
        .expect("node (scripts/setup-test-deps.sh installs playwright-core and chromium)");
    assert!(
        out.status.success(),
        "chromium page failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(dom.contains("<li class=\"hello\">"), "{dom}");
    assert!(dom.contains("<li class=\"subscribed\">"), "{dom}");
    assert!(dom.contains("<li class=\"snapshot\">"), "{dom}");
    // since: 0 replays the stored UNKNOWN -> UP transition of each of the three services.
    let transitions = dom.matches("<li class=\"transition\">").count();
    assert!(transitions >= 3, "{transitions} transitions in:\n{dom}");
    assert!(
        dom.contains("&quot;to&quot;:&quot;up&quot;") || dom.contains("\"to\":\"up\""),
        "{dom}"
    );
}

#[test]
fn the_upgrade_needs_a_read_token_when_auth_is_on() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = config(&target, port, &dir.path().join("rw.db"), 1, "")
        + "auth:\n  tokens: [{token: ws-read-token-0123456789, scope: read}]\n";
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    let req = |target: &str, extra: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}Connection: close\r\n\r\n"
        )
    };
    let (code, _) = http_request(rw.addr, &req("/ws", "")).expect("request");
    assert_eq!(code, 401);
    let (code, _) =
        http_request(rw.addr, &req("/ws?token=wrong-token-0123456789", "")).expect("request");
    assert!(code == 401 || code == 403, "{code}");
    // The token in the query (what browsers can send) or in the header gets the upgrade.
    for (path, extra) in [
        ("/ws?token=ws-read-token-0123456789", ""),
        ("/ws", "Authorization: Bearer ws-read-token-0123456789\r\n"),
    ] {
        let mut s = std::net::TcpStream::connect(rw.addr).expect("connect");
        std::io::Write::write_all(
            &mut s,
            req(path, extra)
                .replace("Connection: close\r\n", "")
                .as_bytes(),
        )
        .expect("write");
        s.set_read_timeout(Some(LONG)).expect("timeout");
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut s, &mut buf).expect("read");
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 101"), "{path}: {head}");
    }
}
