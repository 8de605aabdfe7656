//! The `probe` and `fanout` scenarios, and the stack every scenario runs on: a scripted
//! target fleet (in-process), a generated config, a ringwatch child (or one already running),
//! one `/metrics` scrape per second, and a report directory. Peers asked for with `--peers`
//! (`crate::peers`) run after ringwatch's measurement, with ringwatch stopped, against the
//! same fleet or swarm.
//!
//! Every address involved is in 127.0.0.0/8; every loop is bounded in count and time; the
//! ringwatch child is killed when the run ends, however it ends.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fleet::{Fleet, FleetConfig};
use crate::genconfig::{self, FlapShare, GenConfig};
use crate::peers::{self, Peer, PeerError};
use crate::procstat;
use crate::report::{self, Latency, Metric, PeerRow, Report};
use crate::swarm::{Swarm, SwarmConfig};

/// Longest run the scenario accepts, seconds.
pub const MAX_DURATION_S: u64 = 600;
/// Most services the scenario generates.
pub const MAX_SERVICES: usize = 200_000;
/// Largest `/metrics` body read, bytes.
const MAX_SCRAPE: u64 = 32 << 20;

/// Settings of one `probe` run.
#[derive(Debug, Clone)]
pub struct ProbeScenario {
    /// Measurement duration, seconds (1..=[`MAX_DURATION_S`]).
    pub duration_s: u64,
    /// Services in the generated config (ignored with `url`).
    pub services: usize,
    /// Fleet ports (a single 0: one ephemeral port).
    pub fleet_ports: Vec<u16>,
    /// Fleet threads.
    pub fleet_threads: usize,
    /// Path every service probes; `None` uses the scripted mix (`/ok`, `/delay/50`,
    /// `/flap/30000`, `/status/503`).
    pub path: Option<String>,
    /// A share of services probing a flapping path instead of `path` (soak).
    pub flap: Option<FlapShare>,
    /// Probe interval, e.g. `1s`.
    pub interval: String,
    /// Probe timeout, e.g. `2s`.
    pub timeout: String,
    /// ringwatch shards (0 = one per core).
    pub shards: usize,
    /// ringwatch binary to start.
    pub ringwatch: PathBuf,
    /// Address of an already running ringwatch; then no fleet or child is started.
    pub url: Option<SocketAddr>,
    /// Pid of the already running ringwatch, for its CPU-seconds (only with `url`).
    pub pid: Option<u32>,
    /// Report directory.
    pub out: PathBuf,
    /// Set from a signal handler: stop early (the report is still written).
    pub stop: Arc<AtomicBool>,
    /// Peers to measure after ringwatch in the same run (`probe`: wrk, blackbox; `fanout`:
    /// ws).
    pub peers: Vec<Peer>,
    /// Seconds each peer is measured.
    pub peer_duration_s: u64,
}

/// Parses `http://127.0.0.1:18080`, `127.0.0.1:18080` (a trailing `/...` is ignored); the
/// address must be IPv4 loopback.
pub fn parse_url(s: &str) -> Result<SocketAddr, String> {
    let rest = s.strip_prefix("http://").unwrap_or(s);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = hostport
        .parse()
        .map_err(|e| format!("--url {s:?}: expected http://127.x.y.z:PORT ({e})"))?;
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => Ok(addr),
        _ => Err(format!("--url {s:?}: only 127.0.0.0/8 is allowed")),
    }
}

/// One HTTP/1.1 GET over a fresh connection; returns status and body (bounded in size and
/// time).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: ringwatch-loadtest\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(MAX_SCRAPE).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no response head"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "chunked /metrics is not supported",
        ));
    }
    Ok((status, body.to_string()))
}

/// The figures of one `/metrics` scrape the scenario uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSample {
    /// Sum of `ringwatch_probes_total` over every outcome.
    pub probes_total: f64,
    /// `ringwatch_probes_total{outcome="ok"}`.
    pub probes_ok: f64,
    /// `ringwatch_schedule_lag_seconds` quantiles: (quantile in 0..1, seconds).
    pub lag: Vec<(f64, f64)>,
    /// `ringwatch_probe_latency_seconds` quantiles: (quantile in 0..1, seconds).
    pub latency: Vec<(f64, f64)>,
    /// `ringwatch_probe_latency_seconds_count`.
    pub latency_count: f64,
    /// `ringwatch_ws_messages_sent_total`.
    pub ws_messages_sent: f64,
    /// `ringwatch_transitions_total` (summed over labels).
    pub transitions: f64,
}

impl MetricsSample {
    /// Quantile `q` of the schedule lag in ms (NaN when absent).
    pub fn lag_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.lag, q)
    }

    /// Quantile `q` of the probe latency in ms (NaN when absent).
    pub fn latency_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latency, q)
    }
}

fn quantile_ms(v: &[(f64, f64)], q: f64) -> f64 {
    v.iter()
        .find(|p| (p.0 - q).abs() < 1e-9)
        .map_or(f64::NAN, |p| p.1 * 1000.0)
}

/// Parses the Prometheus text the scenario needs; unknown lines are ignored.
pub fn parse_metrics(text: &str) -> MetricsSample {
    let mut m = MetricsSample::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (name_labels, ""),
        };
        let quantile = || {
            labels
                .strip_prefix("quantile=\"")
                .and_then(|q| q.strip_suffix('"'))
                .and_then(|q| q.parse::<f64>().ok())
        };
        match name {
            "ringwatch_probes_total" => {
                m.probes_total += v;
                if labels == "outcome=\"ok\"" {
                    m.probes_ok += v;
                }
            }
            "ringwatch_schedule_lag_seconds" => {
                if let Some(q) = quantile() {
                    m.lag.push((q, v));
                }
            }
            "ringwatch_probe_latency_seconds" => {
                if let Some(q) = quantile() {
                    m.latency.push((q, v));
                }
            }
            "ringwatch_probe_latency_seconds_count" => m.latency_count = v,
            "ringwatch_ws_messages_sent_total" => m.ws_messages_sent += v,
            "ringwatch_transitions_total" => m.transitions += v,
            _ => {}
        }
    }
    m
}

/// Scrapes and parses `/metrics`.
pub fn scrape(addr: SocketAddr) -> Result<MetricsSample, String> {
    match http_get(addr, "/metrics", Duration::from_secs(5)) {
        Ok((200, body)) => Ok(parse_metrics(&body)),
        Ok((code, _)) => Err(format!("GET /metrics: status {code}")),
        Err(e) => Err(format!("GET /metrics: {e}")),
    }
}

/// Kills and reaps the child when dropped, so no exit path leaves ringwatch running.
#[derive(Debug)]
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1 (the kernel's pick; free when this returns).
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("picking a port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("picking a port: {e}"))
}

/// Waits (bounded) until `GET /healthz` answers 200, or the child exits.
fn wait_healthy(
    addr: SocketAddr,
    child: &mut Child,
    within: Duration,
    log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(format!(
                "ringwatch exited ({st}) before it was healthy: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        if matches!(
            http_get(addr, "/healthz", Duration::from_secs(1)),
            Ok((200, _))
        ) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("ringwatch at {addr} not healthy within {within:?}"))
}

/// A running fleet and ringwatch child (or the address of one already running). Dropping it
/// kills and reaps the child and removes its temporary database directory.
pub struct Stack {
    /// ringwatch's address.
    pub addr: SocketAddr,
    /// ringwatch's pid, when known (for `/proc` figures).
    pub pid: Option<u32>,
    /// Services configured, when this run generated the config.
    pub services: Option<usize>,
    /// The fleet's ports (empty with `--url`).
    pub fleet_ports: Vec<u16>,
    /// ringwatch's SQLite file, when this run started ringwatch (in a temporary directory
    /// removed when the stack is dropped).
    pub db: Option<PathBuf>,
    child: Option<ChildGuard>,
    tmp: Option<PathBuf>,
    _fleet: Option<Fleet>,
}

impl Stack {
    /// Kills ringwatch (if this run started it) so peers measured next have the CPU to
    /// themselves; the fleet keeps serving.
    pub fn stop_child(&mut self) {
        drop(self.child.take());
    }

    /// Stops ringwatch gracefully with SIGTERM (it drains its store before exiting) and waits
    /// for it at most `within`; killed if it takes longer. Returns how long it took.
    pub fn terminate(&mut self, within: Duration) -> Result<Duration, String> {
        let Some(mut g) = self.child.take() else {
            return Err("no ringwatch child to stop".into());
        };
        let t0 = Instant::now();
        let pid = libc::pid_t::try_from(g.0.id()).map_err(|e| format!("pid: {e}"))?;
        // SAFETY: kill(2) on our own unreaped child's pid.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!("SIGTERM: {}", io::Error::last_os_error()));
        }
        while t0.elapsed() < within {
            match g.0.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(t0.elapsed()),
                Ok(Some(st)) => return Err(format!("ringwatch exited with {st} after SIGTERM")),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("waiting for ringwatch: {e}")),
            }
        }
        // Dropping the guard kills it.
        Err(format!(
            "ringwatch did not exit within {within:?} of SIGTERM"
        ))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        drop(self.child.take());
        if let Some(dir) = self.tmp.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Checks the settings every scenario shares (duration, services, durations) and creates the
/// report directory.
pub fn check_common(cfg: &ProbeScenario) -> Result<(), String> {
    if !(1..=MAX_DURATION_S).contains(&cfg.duration_s) {
        return Err(format!("--duration must be 1..={MAX_DURATION_S} seconds"));
    }
    if !(1..=MAX_SERVICES).contains(&cfg.services) {
        return Err(format!("--services must be 1..={MAX_SERVICES}"));
    }
    genconfig::check_duration(&cfg.interval)?;
    genconfig::check_duration(&cfg.timeout)?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| format!("{}: {e}", cfg.out.display()))
}

/// Starts the fleet and a ringwatch child as `cfg` says (writing `OUT/ringwatch.yaml` and
/// `OUT/ringwatch.log`), or only checks `cfg.url`; `tag` prefixes the messages.
pub fn start_stack(cfg: &ProbeScenario, tag: &str) -> Result<Stack, String> {
    let mut stack = Stack {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        pid: None,
        services: None,
        fleet_ports: Vec::new(),
        db: None,
        child: None,
        tmp: None,
        _fleet: None,
    };
    if let Some(addr) = cfg.url {
        eprintln!("{tag}: using the ringwatch already running at {addr}");
        stack.addr = addr;
        stack.pid = cfg.pid;
        return Ok(stack);
    }
    let mut fc = FleetConfig::local(cfg.fleet_ports.clone());
    fc.threads = cfg.fleet_threads.max(1);
    let fleet = Fleet::start(fc).map_err(|e| format!("fleet: {e}"))?;
    let ports = fleet.ports().to_vec();
    stack._fleet = Some(fleet);
    let port = free_port()?;
    let dir =
        std::env::temp_dir().join(format!("ringwatch-loadtest-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    stack.tmp = Some(dir.clone());
    let gc = GenConfig {
        services: cfg.services,
        ports,
        host: "127.0.0.1".into(),
        path: cfg.path.clone().unwrap_or_else(|| "/ok".into()),
        mix: cfg.path.is_none(),
        flap: cfg.flap.clone(),
        interval: cfg.interval.clone(),
        timeout: cfg.timeout.clone(),
        jitter: "10%".into(),
        listen: format!("127.0.0.1:{port}"),
        shards: cfg.shards,
        db: dir.join("ringwatch.db").display().to_string(),
    };
    let conf_path = cfg.out.join("ringwatch.yaml");
    let mut f =
        std::fs::File::create(&conf_path).map_err(|e| format!("{}: {e}", conf_path.display()))?;
    genconfig::write_config(&gc, &mut f)
        .and_then(|()| f.flush())
        .map_err(|e| format!("{}: {e}", conf_path.display()))?;
    let log_path = cfg.out.join("ringwatch.log");
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| format!("log: {e}"))?;
    let c = Command::new(&cfg.ringwatch)
        .arg("run")
        .arg("--config")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", cfg.ringwatch.display()))?;
    let pid = c.id();
    let g = stack.child.insert(ChildGuard(c));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_healthy(addr, &mut g.0, Duration::from_secs(60), &log_path)?;
    eprintln!(
        "{tag}: ringwatch pid {pid} on {addr}, {} services every {} over {} fleet port(s)",
        cfg.services,
        cfg.interval,
        gc.ports.len()
    );
    stack.addr = addr;
    stack.pid = Some(pid);
    stack.services = Some(cfg.services);
    stack.fleet_ports = gc.ports;
    stack.db = Some(dir.join("ringwatch.db"));
    Ok(stack)
}

/// Runs the scenario and writes the report; returns the report directory.
pub fn run_probe(cfg: &ProbeScenario) -> Result<PathBuf, String> {
    check_common(cfg)?;
    check_peers(cfg, &[Peer::Wrk, Peer::Blackbox], "probe")?;
    let mut stack = start_stack(cfg, "probe")?;
    let mut p = sample_probe(cfg, stack.addr, stack.pid, stack.services)?;
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    if !cfg.peers.is_empty() {
        stack.stop_child();
        let rw = p
            .summary
            .iter()
            .find(|m| m.key == "probes_per_cpu_second")
            .map_or(f64::NAN, |m| m.value);
        probe_peers(cfg, &stack, rw, &mut p.summary, &mut rows, &mut notes);
    }
    let r = Report {
        scenario: "probe",
        summary: &p.summary,
        latency: Latency::Quantiles {
            points: &p.points,
            count: p.count,
        },
        latency_label: "probe latency (/metrics, since start)",
        throughput: &p.series,
        throughput_label: "probes/s",
        peers: &rows,
        checks: &[],
        notes: &notes,
    };
    report::write(&cfg.out, &r).map_err(|e| format!("{}: {e}", cfg.out.display()))?;
    for p in &rows {
        eprintln!(
            "probe: ringwatch / {} = {:.3} ({:.0} vs {:.0} {}: {})",
            p.peer,
            p.ratio(),
            p.ringwatch,
            p.peer_value,
            p.unit,
            p.metric
        );
    }
    for n in &notes {
        eprintln!("probe: {n}");
    }
    eprintln!("probe: report in {}", cfg.out.display());
    Ok(cfg.out.clone())
}

/// Refuses peers that belong to another scenario.
fn check_peers(cfg: &ProbeScenario, allowed: &[Peer], scenario: &str) -> Result<(), String> {
    match cfg.peers.iter().find(|p| !allowed.contains(p)) {
        Some(p) => Err(format!(
            "peer {:?} is not measured by {scenario} (it takes: {})",
            p.name(),
            allowed
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None if !cfg.peers.is_empty() && cfg.url.is_some() => {
            Err("peers need the scenario's own fleet and ringwatch (not --url)".into())
        }
        None => Ok(()),
    }
}

/// Measures wrk and the blackbox exporter against the fleet's `/ok` (ringwatch stopped),
/// adding their figures to `summary`, ratio rows to `rows` and why a peer was skipped to
/// `notes`. `rw_per_cpu` is ringwatch's probes per CPU-second.
fn probe_peers(
    cfg: &ProbeScenario,
    stack: &Stack,
    rw_per_cpu: f64,
    summary: &mut Vec<Metric>,
    rows: &mut Vec<PeerRow>,
    notes: &mut Vec<String>,
) {
    let Some(&port) = stack.fleet_ports.first() else {
        notes.push("peers: no fleet in this run".into());
        return;
    };
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let secs = cfg.peer_duration_s.clamp(1, MAX_DURATION_S);
    let row = |peer: Peer, metric: &str, value: f64| PeerRow {
        peer: peer.name().into(),
        metric: metric.into(),
        unit: "1/CPU-s".into(),
        ringwatch: rw_per_cpu,
        peer_value: value,
        higher_is_better: true,
    };
    for &peer in &cfg.peers {
        if cfg.stop.load(Ordering::Relaxed) {
            notes.push(format!(
                "{}: not measured, the run was stopped",
                peer.name()
            ));
            continue;
        }
        eprintln!(
            "probe: measuring peer {} for {secs} s against {target}/ok",
            peer.name()
        );
        let res = match peer {
            Peer::Wrk => peers::run_wrk(target, 64, secs).map(|f| {
                summary.extend(peers::wrk_metrics(&f));
                rows.push(row(
                    peer,
                    "work per CPU-second (ringwatch probes; wrk requests to the fleet's /ok)",
                    f.per_cpu_s(),
                ));
            }),
            Peer::Blackbox => free_port()
                .map_err(PeerError::Failed)
                .and_then(|bb_port| {
                    peers::run_blackbox(&cfg.out, bb_port, &format!("http://{target}/ok"), 16, secs)
                })
                .map(|f| {
                    summary.extend(peers::blackbox_metrics(&f));
                    rows.push(row(
                        peer,
                        "probes per CPU-second (exporter probing the fleet's /ok)",
                        f.per_cpu_s(),
                    ));
                }),
            Peer::Ws => Err(PeerError::Failed("not a probe peer".into())),
        };
        if let Err(e) = res {
            notes.push(peers::note(peer, &e));
        }
    }
}

/// Most WebSocket clients one fanout run connects.
pub const MAX_CLIENTS: usize = 100_000;

/// Settings of one `fanout` run: the stack of `base` (whose services flap), plus a swarm.
#[derive(Debug, Clone)]
pub struct FanoutScenario {
    /// Stack, duration and output settings; `base.path` should flap (`/flap/MS`).
    pub base: ProbeScenario,
    /// WebSocket clients.
    pub clients: usize,
    /// First client source address (127.0.0.0/8).
    pub source: std::net::Ipv4Addr,
    /// Consecutive source addresses to spread clients over.
    pub sources: usize,
    /// Swarm threads.
    pub threads: usize,
    /// Seconds between connecting and measuring.
    pub warmup_s: f64,
}

/// Runs the fanout scenario: every transition the flapping fleet causes is pushed to every
/// client; reports status-change -> receipt latency (HDR, at every client), delivered
/// messages/s, ringwatch's CPU per delivery and RSS per client; with `--peer ws`, then the
/// Node peer with the same swarm.
pub fn run_fanout(f: &FanoutScenario) -> Result<PathBuf, String> {
    let cfg = &f.base;
    check_common(cfg)?;
    check_peers(cfg, &[Peer::Ws], "fanout")?;
    if !(1..=MAX_CLIENTS).contains(&f.clients) {
        return Err(format!("--clients must be 1..={MAX_CLIENTS}"));
    }
    if !f.source.is_loopback() {
        return Err("--source must be in 127.0.0.0/8".into());
    }
    let warmup = f.warmup_s.clamp(0.0, 60.0);
    let mut stack = start_stack(cfg, "fanout")?;
    let rss = |pid: Option<u32>| {
        pid.and_then(|p| procstat::sample(p).ok())
            .map_or(f64::NAN, |s| s.rss_kib as f64)
    };
    let rss0 = rss(stack.pid);
    let first = scrape(stack.addr)?;
    let cpu0 = cpu_s(stack.pid);
    let t0 = Instant::now();
    let mut swarm = Swarm::start(fanout_swarm(f, stack.addr, f.source))?;
    eprintln!(
        "fanout: {} clients connected, {} failed in {:.1} s; warmup {warmup} s, measuring {} s",
        swarm.connected(),
        swarm.failed(),
        swarm.connect_seconds(),
        cfg.duration_s
    );
    let (open, close) = swarm.open_window(warmup, cfg.duration_s as f64);
    let mut prev = (t0.elapsed().as_secs_f64(), first.ws_messages_sent);
    let mut last = first.clone();
    let mut series = Vec::new();
    let mut rss_max = rss0;
    let mut tick = 0u32;
    let window_cpu = timed_window(&cfg.stop, open, close, stack.pid, || {
        tick += 1;
        let Ok(m) = scrape(stack.addr) else {
            eprintln!("fanout: [{tick:>3}s] scrape failed");
            return;
        };
        let t = t0.elapsed().as_secs_f64();
        let rate = (m.ws_messages_sent - prev.1) / (t - prev.0).max(1e-3);
        series.push((t, rate));
        prev = (t, m.ws_messages_sent);
        let r = rss(stack.pid);
        if r > rss_max || rss_max.is_nan() {
            rss_max = r;
        }
        eprintln!(
            "fanout: [{tick:>3}s] {rate:>9.0} messages/s sent  transitions {:>7.0}  rss {:>8.0} KiB",
            m.transitions - first.transitions,
            r
        );
        last = m;
    });
    let rep = swarm.finish()?;
    let cpu = match (cpu0, cpu_s(stack.pid)) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let wall = t0.elapsed().as_secs_f64();
    let connected = rep.connected as f64;
    let rw = fanout_figures(&rep, window_cpu);
    let mut summary = vec![
        Metric::new("clients", f.clients as f64, "count"),
        Metric::new("connected", connected, "count"),
        Metric::new("failed", rep.failed as f64, "count"),
        Metric::new("disconnected", rep.disconnected as f64, "count"),
        Metric::new("connect_time", rep.connect_seconds, "s"),
        Metric::new("window", rep.window, "s"),
        Metric::new("messages_received", rep.events as f64, "count"),
        Metric::new("delivered_per_s", rw.delivered_per_s, "1/s"),
        Metric::new(
            "ringwatch_messages_sent",
            last.ws_messages_sent - first.ws_messages_sent,
            "count",
        ),
        Metric::new("transitions", last.transitions - first.transitions, "count"),
        Metric::new("ringwatch_cpu_seconds", cpu, "s"),
        Metric::new("ringwatch_cpu_util", cpu / wall.max(1e-3), "cores"),
        Metric::new("ringwatch_window_cpu_seconds", window_cpu, "s"),
        Metric::new("cpu_per_delivery", rw.cpu_us_per_delivery, "us"),
        Metric::new("ringwatch_rss_before_clients", rss0, "KiB"),
        Metric::new("ringwatch_rss_peak", rss_max, "KiB"),
        Metric::new(
            "rss_per_client",
            (rss_max - rss0) / connected.max(1.0),
            "KiB",
        ),
    ];
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    if cfg.peers.contains(&Peer::Ws) && !cfg.stop.load(Ordering::Relaxed) {
        stack.stop_child();
        match ws_peer(f, warmup) {
            Ok((peer, peer_rep)) => {
                summary.extend([
                    Metric::new("peer_ws_connected", peer_rep.connected as f64, "count"),
                    Metric::new("peer_ws_messages_received", peer_rep.events as f64, "count"),
                    Metric::new("peer_ws_delivered_per_s", peer.delivered_per_s, "1/s"),
                    Metric::new("peer_ws_cpu_per_delivery", peer.cpu_us_per_delivery, "us"),
                ]);
                rows = peers::fanout_rows(&rw, &peer);
                if peer_rep.connected < f.clients as u64 {
                    notes.push(format!(
                        "node ws: {} of {} clients connected; the peer broadcasts only once all have",
                        peer_rep.connected, f.clients
                    ));
                }
            }
            Err(e) => notes.push(peers::note(Peer::Ws, &e)),
        }
    }
    let r = Report {
        scenario: "fanout",
        summary: &summary,
        latency: Latency::Hdr(&rep.latency),
        latency_label: "status change -> receipt",
        throughput: &series,
        throughput_label: "messages sent/s",
        peers: &rows,
        checks: &[],
        notes: &notes,
    };
    report::write(&cfg.out, &r).map_err(|e| format!("{}: {e}", cfg.out.display()))?;
    for n in &notes {
        eprintln!("fanout: {n}");
    }
    eprintln!(
        "fanout: {} clients, {} messages in {:.1} s window; report in {}",
        rep.connected,
        rep.events,
        rep.window,
        cfg.out.display()
    );
    Ok(cfg.out.clone())
}

/// The swarm of a fanout run against `server`, from source addresses starting at `source`.
fn fanout_swarm(f: &FanoutScenario, server: SocketAddr, source: std::net::Ipv4Addr) -> SwarmConfig {
    SwarmConfig {
        server,
        path: "/ws".into(),
        clients: f.clients,
        source,
        sources: f.sources.max(1),
        subscribe: r#"{"op":"subscribe"}"#.into(),
        threads: f.threads.max(1),
        cpus: Vec::new(),
        warmup: f.warmup_s,
        duration: f.base.duration_s as f64,
        uring: false,
        seqs: None,
    }
}

/// Delivered frames/s, latency and CPU per delivery of one swarm run.
fn fanout_figures(rep: &crate::swarm::SwarmReport, window_cpu: f64) -> peers::FanoutFigures {
    let q = |p: f64| {
        if rep.latency.is_empty() {
            f64::NAN
        } else {
            rep.latency.value_at_quantile(p) as f64 / 1000.0
        }
    };
    peers::FanoutFigures {
        delivered_per_s: rep.events as f64 / rep.window.max(1e-3),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        cpu_us_per_delivery: window_cpu * 1e6 / rep.events as f64,
    }
}

/// Runs the Node ws peer with the same swarm (next block of source addresses, so the
/// previous run's TIME_WAIT sockets are not in the way), broadcasting as many events per
/// second as the fleet's flaps cause in ringwatch.
fn ws_peer(
    f: &FanoutScenario,
    warmup: f64,
) -> Result<(peers::FanoutFigures, crate::swarm::SwarmReport), PeerError> {
    let cfg = &f.base;
    let period_ms = cfg
        .path
        .as_deref()
        .and_then(|p| p.strip_prefix("/flap/"))
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(1000)
        .max(1);
    // Same offered rate as ringwatch: every service changes once per period.
    let rate = ((cfg.services as u64 * 1000).div_ceil(period_ms)).clamp(1, 1000) as u32;
    let source = u32::from(f.source)
        .checked_add(f.sources.max(1) as u32)
        .map(std::net::Ipv4Addr::from)
        .filter(|a| a.is_loopback())
        .ok_or_else(|| PeerError::Failed("no loopback source block left for the peer".into()))?;
    let port = free_port().map_err(PeerError::Failed)?;
    let peer = peers::start_ws_peer(port, rate, f.clients, &cfg.out.join("ws-peer.log"))?;
    eprintln!(
        "fanout: peer node ws (pid {}) on {}, {rate} broadcasts/s once {} clients are connected",
        peer.pid(),
        peer.addr,
        f.clients
    );
    let mut sc = fanout_swarm(f, peer.addr, source);
    sc.duration = cfg.peer_duration_s as f64;
    let mut swarm = Swarm::start(sc).map_err(PeerError::Failed)?;
    let (open, close) = swarm.open_window(warmup, cfg.peer_duration_s as f64);
    let pid = Some(peer.pid());
    let window_cpu = timed_window(&cfg.stop, open, close, pid, || {});
    let rep = swarm.finish().map_err(PeerError::Failed)?;
    Ok((fanout_figures(&rep, window_cpu), rep))
}

/// Waits until `close` (or a stop signal), calling `tick` about once a second, and returns
/// `pid`'s CPU-seconds between `open` and `close` (NaN when unknown); then waits half a
/// second more for the last frames of the window.
pub fn timed_window(
    stop: &AtomicBool,
    open: Instant,
    close: Instant,
    pid: Option<u32>,
    mut tick: impl FnMut(),
) -> f64 {
    let mut cpu_open = None;
    let mut next = Instant::now() + Duration::from_secs(1);
    // Bounded: `close` is at most warmup + duration away (both capped by the callers).
    loop {
        let now = Instant::now();
        if cpu_open.is_none() && now >= open {
            cpu_open = Some(cpu_s(pid));
        }
        if now >= close || stop.load(Ordering::Relaxed) {
            break;
        }
        let boundary = if cpu_open.is_none() { open } else { close };
        std::thread::sleep(next.min(boundary).saturating_duration_since(now));
        if Instant::now() >= next {
            tick();
            next += Duration::from_secs(1);
        }
    }
    let cpu = match (cpu_open.flatten(), cpu_s(pid)) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    std::thread::sleep(Duration::from_millis(500));
    cpu
}

/// CPU-seconds of `pid` so far, when known.
pub fn cpu_s(pid: Option<u32>) -> Option<f64> {
    pid.and_then(|p| procstat::sample(p).ok())
        .map(|s| s.cpu_s())
}

/// What the probe scenario's sampling measured.
struct ProbeSampled {
    summary: Vec<Metric>,
    /// Latency `(percentile, ms)` points from `/metrics`.
    points: Vec<(f64, f64)>,
    count: u64,
    series: Vec<(f64, f64)>,
}

fn sample_probe(
    cfg: &ProbeScenario,
    addr: SocketAddr,
    pid: Option<u32>,
    services: Option<usize>,
) -> Result<ProbeSampled, String> {
    let first = scrape(addr)?;
    let t0 = Instant::now();
    let cpu0 = cpu_s(pid);
    let mut prev = (0.0f64, first.probes_total);
    let mut last = first.clone();
    let mut series: Vec<(f64, f64)> = Vec::with_capacity(cfg.duration_s as usize + 1);
    let mut errors = 0u32;
    // One iteration per second, at most `duration_s` of them.
    for tick in 1..=cfg.duration_s {
        if cfg.stop.load(Ordering::Relaxed) {
            eprintln!("probe: stopped early by a signal");
            break;
        }
        let next = t0 + Duration::from_secs(tick);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let m = match scrape(addr) {
            Ok(m) => m,
            Err(e) => {
                errors += 1;
                eprintln!("probe: [{tick:>3}s] scrape failed: {e}");
                if errors >= 5 {
                    return Err(format!("five scrapes failed, last: {e}"));
                }
                continue;
            }
        };
        let t = t0.elapsed().as_secs_f64();
        let rate = (m.probes_total - prev.1) / (t - prev.0).max(1e-3);
        series.push((t, rate));
        prev = (t, m.probes_total);
        let cpu = match (cpu0, cpu_s(pid)) {
            (Some(a), Some(b)) => format!("{:.2}", (b - a) / t.max(1e-3)),
            _ => "-".into(),
        };
        eprintln!(
            "probe: [{tick:>3}/{}s] {rate:>9.0} probes/s  total {:>9.0}  lag p99 {:>7.2} ms  latency p99 {:>7.2} ms  cpu {cpu} cores",
            cfg.duration_s,
            m.probes_total - first.probes_total,
            m.lag_ms(0.99),
            m.latency_ms(0.99),
        );
        last = m;
    }
    let wall = prev.0;
    let cpu = match (cpu0, cpu_s(pid)) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let rss = pid
        .and_then(|p| procstat::sample(p).ok())
        .map_or(f64::NAN, |s| s.rss_kib as f64);
    let probes = last.probes_total - first.probes_total;
    let ok = last.probes_ok - first.probes_ok;
    let per_s = if wall > 0.0 { probes / wall } else { f64::NAN };
    let summary = vec![
        Metric::new("services", services.map_or(f64::NAN, |s| s as f64), "count"),
        Metric::new("duration", wall, "s"),
        Metric::new("probes", probes, "count"),
        Metric::new("probes_failed", probes - ok, "count"),
        Metric::new("probes_per_s", per_s, "1/s"),
        Metric::new("ringwatch_cpu_seconds", cpu, "s"),
        Metric::new("ringwatch_cpu_util", cpu / wall.max(1e-3), "cores"),
        Metric::new("probes_per_cpu_second", probes / cpu, "1/s"),
        Metric::new("ringwatch_rss", rss, "KiB"),
        Metric::new("schedule_lag_p50", last.lag_ms(0.5), "ms"),
        Metric::new("schedule_lag_p99", last.lag_ms(0.99), "ms"),
        Metric::new("schedule_lag_p99_9", last.lag_ms(0.999), "ms"),
        Metric::new("probe_latency_p50", last.latency_ms(0.5), "ms"),
        Metric::new("probe_latency_p99", last.latency_ms(0.99), "ms"),
        Metric::new("scrape_errors", f64::from(errors), "count"),
    ];
    let points: Vec<(f64, f64)> = last
        .latency
        .iter()
        .map(|&(q, s)| (q * 100.0, s * 1000.0))
        .collect();
    eprintln!("probe: {probes:.0} probes in {wall:.1} s = {per_s:.0}/s, {cpu:.2} CPU-s");
    Ok(ProbeSampled {
        summary,
        points,
        count: last.latency_count.max(0.0) as u64,
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics() {
        let text = "# HELP ringwatch_probes_total x\n\
ringwatch_probes_total{outcome=\"ok\"} 90\n\
ringwatch_probes_total{outcome=\"timeout\"} 10\n\
ringwatch_probe_latency_seconds{quantile=\"0.5\"} 0.0015\n\
ringwatch_probe_latency_seconds{quantile=\"0.99\"} NaN\n\
ringwatch_probe_latency_seconds_count 100\n\
ringwatch_schedule_lag_seconds{quantile=\"0.99\"} 0.002\n\
garbage line\n";
        let m = parse_metrics(text);
        assert_eq!(m.probes_total, 100.0);
        assert_eq!(m.probes_ok, 90.0);
        assert!((m.latency_ms(0.5) - 1.5).abs() < 1e-9);
        assert!(m.latency_ms(0.99).is_nan());
        assert!(m.latency_ms(0.9).is_nan());
        assert!((m.lag_ms(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(m.latency_count, 100.0);
    }

    #[test]
    fn url_is_loopback_only() {
        assert_eq!(
            parse_url("http://127.0.0.1:18080/metrics"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 18080)))
        );
        assert!(parse_url("127.0.0.9:1").is_ok());
        assert!(parse_url("http://10.0.0.1:80").is_err());
        assert!(parse_url("localhost:80").is_err());
    }

    #[test]
    fn rejects_unbounded_runs() {
        let mut cfg = ProbeScenario {
            duration_s: 0,
            services: 10,
            fleet_ports: vec![0],
            fleet_threads: 1,
            path: None,
            interval: "1s".into(),
            timeout: "1s".into(),
            shards: 1,
            ringwatch: PathBuf::from("/nonexistent"),
            url: None,
            pid: None,
            out: std::env::temp_dir().join("rw-never-written"),
            stop: Arc::new(AtomicBool::new(false)),
            flap: None,
            peers: Vec::new(),
            peer_duration_s: 1,
        };
        assert!(run_probe(&cfg).is_err());
        cfg.duration_s = MAX_DURATION_S + 1;
        assert!(run_probe(&cfg).is_err());
        cfg.duration_s = 1;
        cfg.services = 0;
        assert!(run_probe(&cfg).is_err());
    }
}
