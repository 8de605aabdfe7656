//! `scripts/cluster-up.sh` end to end: a private PostgreSQL and Redis, a flapping target and six
//! ringwatch processes in their roles; a WebSocket client on the printed gateway URL gets a
//! live transition; `scripts/cluster-down.sh` stops every process it started and removes the
//! directory.

mod common;
mod ws_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, http_get, metric_value};
use ws_support::Ws;

/// Bounds, generous for a loaded 2-core machine; none is waited out when things work.
const UP: Duration = Duration::from_secs(150);
const DOWN: Duration = Duration::from_secs(120);
const TRANSITION: Duration = Duration::from_secs(60);

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Lines of a child's output, filled by a reader thread as they come.
type Lines = Arc<Mutex<Vec<String>>>;

/// Lines read from `pipe` as they come, into a shared list.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Lines {
    let sink = Arc::new(Mutex::new(Vec::new()));
    let lines = sink.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            lines.lock().expect("lock").push(line);
        }
    });
    sink
}

/// A child's stdout and stderr lines, read as they come.
fn collect(child: &mut Child) -> (Lines, Lines) {
    let out = lines_of(child.stdout.take().expect("piped stdout"));
    let err = lines_of(child.stderr.take().expect("piped stderr"));
    (out, err)
}

/// Waits for `child` to exit within `limit`; SIGTERM (then SIGKILL) when it does not.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if !eventually(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    }) {
        let _ = child.kill();
    }
    let _ = child.wait();
    None
}

/// Runs `cluster-down.sh DIR` (bounded); its exit status and output.
fn cluster_down(dir: &Path) -> (Option<std::process::ExitStatus>, String) {
    let mut child = Command::new("bash")
        .arg(script("cluster-down.sh"))
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cluster-down.sh");
    let (out, err) = collect(&mut child);
    let st = wait_bounded(&mut child, DOWN);
    std::thread::sleep(Duration::from_millis(100)); // let the readers store the tail
    let text = [out, err]
        .iter()
        .map(|l| l.lock().expect("lock").join("\n"))
        .collect::<Vec<_>>()
        .join("\n");
    (st, text)
}

/// Stops the cluster if the test ends early (a failed assertion).
struct Guard(Option<PathBuf>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let (_, text) = cluster_down(&dir);
            eprintln!("cleanup: {text}");
        }
    }
}

/// True while `pid` is the process that started at `start` and has not exited (a zombie has).
fn running(pid: u32, start: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return false;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.first() != Some(&"Z") && f.get(19) == Some(&start)
}

/// `key:   value` lines of the script's summary.
fn summary(lines: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(": ") {
            m.entry(k.to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    m
}

fn addr_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("scheme").1;
    rest.split('/')
        .next()
        .expect("host")
        .parse()
        .expect("ip:port")
}

#[test]
fn cluster_up_runs_every_role_and_cluster_down_stops_it_all() {
    let started = Instant::now();
    let mut up = Command::new("bash")
        .arg(script("cluster-up.sh"))
        .env("RINGWATCH_BIN", env!("CARGO_BIN_EXE_ringwatch"))
        .env("CLUSTER_READY_TIMEOUT", "120")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cluster-up.sh");
    let (out, err) = collect(&mut up);
    let status = wait_bounded(&mut up, UP);
    std::thread::sleep(Duration::from_millis(100));
    let out = out.lock().expect("lock").clone();
    let err = err.lock().expect("lock").join("\n");
    let s = summary(&out);
    let mut guard = Guard(s.get("dir").map(|d| PathBuf::from(&d[0])));
    assert!(
        status.is_some_and(|st| st.success()),
        "cluster-up.sh: {status:?}\nstdout:\n{}\nstderr:\n{err}",
        out.join("\n")
    );
    let dir = guard.0.clone().expect("dir: line");
    eprintln!(
        "cluster up after {:?}:\n{}",
        started.elapsed(),
        out.join("\n")
    );

    // Every process it started runs, each named in the PID file.
    let pids_file = PathBuf::from(&s["pid file"][0]);
    assert!(pids_file.starts_with(&dir));
    let pids: Vec<(String, u32, String)> = std::fs::read_to_string(&pids_file)
        .expect("pid file")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "pid file line {l:?}");
            (
                f[0].to_string(),
                f[1].parse().expect("pid"),
                f[2].to_string(),
            )
        })
        .collect();
    let mut names: Vec<&str> = pids.iter().map(|p| p.0.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "gateway",
            "ingest",
            "postgres",
            "redis",
            "scheduler-1",
            "scheduler-2",
            "target",
            "worker-1",
            "worker-2"
        ]
    );
    for (name, pid, start) in &pids {
        assert!(running(*pid, start), "{name} ({pid}) is not running");
    }

    // The gateway's REST API lists the 20 services.
    let rest = &s["rest api"][0];
    let gateway = addr_of(rest);
    let (code, body) = http_get(gateway, "/api/v1/services?limit=100").expect("GET services");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(20), "{body}");

    // Exactly one of the two schedulers holds the lease (what the alert checks).
    let scheduler_metrics: Vec<SocketAddr> = s["metrics"]
        .iter()
        .filter(|l| l.starts_with("scheduler-"))
        .map(|l| addr_of(l.split_whitespace().nth(1).expect("url")))
        .collect();
    assert_eq!(scheduler_metrics.len(), 2, "{:?}", s["metrics"]);
    assert_eq!(s["metrics"].len(), 6);
    let held = || -> f64 {
        scheduler_metrics
            .iter()
            .filter_map(|a| http_get(*a, "/metrics").ok())
            .filter_map(|(_, b)| metric_value(&b, "ringwatch_cluster_lease_held"))
            .sum()
    };
    assert!(
        eventually(Duration::from_secs(30), || held() == 1.0),
        "lease held {} times",
        held()
    );

    // A live transition of a flapping service arrives through the gateway, with a seq.
    let ws_url = &s["websocket"][0];
    assert!(
        ws_url.starts_with("ws://") && ws_url.ends_with("/ws"),
        "{ws_url}"
    );
    let mut ws = Ws::connect(addr_of(ws_url));
    ws.send_text(r#"{"op":"subscribe","filter":{"tags":["flap"]}}"#);
    let (sub, _) = ws.until_type("subscribed", Duration::from_secs(20));
    let from = sub["seq"].as_u64().expect("subscribed seq");
    let deadline = Instant::now() + TRANSITION;
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        let Some(m) = ws.next_json(Duration::from_secs(1)) else {
            continue;
        };
        if m["type"] == "transition" {
            got = Some(m);
        }
    }
    let t = got.expect("no transition through the gateway");
    let seq = t["seq"].as_u64().expect("transition has a seq");
    assert!(
        seq > from,
        "live transition {t} after subscribed seq {from}"
    );
    assert!(
        t["service"]
            .as_str()
            .is_some_and(|s| s.starts_with("flap-")),
        "{t}"
    );
    drop(ws);

    // Down: every process gone, the directory removed.
    guard.0 = None;
    let (st, text) = cluster_down(&dir);
    assert!(
        st.is_some_and(|s| s.success()),
        "cluster-down.sh: {st:?}\n{text}"
    );
    for (name, pid, start) in &pids {
        assert!(!running(*pid, start), "{name} ({pid}) still runs:\n{text}");
    }
    assert!(!dir.exists(), "{} still exists:\n{text}", dir.display());
    eprintln!("whole run: {:?}", started.elapsed());
}
