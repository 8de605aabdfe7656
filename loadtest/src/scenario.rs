//! The `probe` scenario: a scripted target fleet (in-process), a generated config, a ringwatch
//! child (or one already running), one `/metrics` scrape per second, and a report directory.
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
use crate::genconfig::{self, GenConfig};
use crate::procstat;
use crate::report::{self, Latency, Metric, Report};

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
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
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
    child: Option<ChildGuard>,
    tmp: Option<PathBuf>,
    _fleet: Option<Fleet>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        drop(self.child.take());
        if let Some(dir) = self.tmp.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn check_common(cfg: &ProbeScenario) -> Result<(), String> {
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
    Ok(stack)
}

/// Runs the scenario and writes the report; returns the report directory.
pub fn run_probe(cfg: &ProbeScenario) -> Result<PathBuf, String> {
    check_common(cfg)?;
    let stack = start_stack(cfg, "probe")?;
    sample_and_report(cfg, stack.addr, stack.pid, stack.services)
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
/// messages/s, and ringwatch's RSS per client.
pub fn run_fanout(f: &FanoutScenario) -> Result<PathBuf, String> {
    let cfg = &f.base;
    check_common(cfg)?;
    if !(1..=MAX_CLIENTS).contains(&f.clients) {
        return Err(format!("--clients must be 1..={MAX_CLIENTS}"));
    }
    if !f.source.is_loopback() {
        return Err("--source must be in 127.0.0.0/8".into());
    }
    let warmup = f.warmup_s.clamp(0.0, 60.0);
    let stack = start_stack(cfg, "fanout")?;
    let rss = |pid: Option<u32>| {
        pid.and_then(|p| procstat::sample(p).ok())
            .map_or(f64::NAN, |s| s.rss_kib as f64)
    };
    let rss0 = rss(stack.pid);
    let first = scrape(stack.addr)?;
    let cpu0 = cpu_s(stack.pid);
    let swarm_cfg = crate::swarm::SwarmConfig {
        server: stack.addr,
        path: "/ws".into(),
        clients: f.clients,
        source: f.source,
        sources: f.sources.max(1),
        subscribe: r#"{"op":"subscribe"}"#.into(),
        threads: f.threads.max(1),
        cpus: Vec::new(),
        warmup,
        duration: cfg.duration_s as f64,
        uring: false,
    };
    let handle = std::thread::spawn(move || crate::swarm::run(swarm_cfg));
    let t0 = Instant::now();
    let mut prev = (0.0f64, first.ws_messages_sent);
    let mut last = first.clone();
    let mut series = Vec::new();
    let mut rss_max = rss0;
    // The swarm connects (bounded by its own timeouts), warms up and measures; give it a
    // minute beyond that before giving up on it.
    let limit = cfg.duration_s + warmup.ceil() as u64 + 60;
    for tick in 1..=limit {
        if handle.is_finished() {
            break;
        }
        std::thread::sleep(
            (t0 + Duration::from_secs(tick)).saturating_duration_since(Instant::now()),
        );
        let Ok(m) = scrape(stack.addr) else {
            eprintln!("fanout: [{tick:>3}s] scrape failed");
            continue;
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
    }
    if !handle.is_finished() {
        return Err("the swarm did not finish in time".into());
    }
    let rep = handle
        .join()
        .map_err(|_| "swarm thread panicked".to_string())??;
    let cpu = match (cpu0, cpu_s(stack.pid)) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let wall = t0.elapsed().as_secs_f64();
    let connected = rep.connected as f64;
    let summary = vec![
        Metric::new("clients", f.clients as f64, "count"),
        Metric::new("connected", connected, "count"),
        Metric::new("failed", rep.failed as f64, "count"),
        Metric::new("connect_time", rep.connect_seconds, "s"),
        Metric::new("window", rep.window, "s"),
        Metric::new("messages_received", rep.events as f64, "count"),
        Metric::new(
            "delivered_per_s",
            rep.events as f64 / rep.window.max(1e-3),
            "1/s",
        ),
        Metric::new(
            "ringwatch_messages_sent",
            last.ws_messages_sent - first.ws_messages_sent,
            "count",
        ),
        Metric::new("transitions", last.transitions - first.transitions, "count"),
        Metric::new("ringwatch_cpu_seconds", cpu, "s"),
        Metric::new("ringwatch_cpu_util", cpu / wall.max(1e-3), "cores"),
        Metric::new("ringwatch_rss_before_clients", rss0, "KiB"),
        Metric::new("ringwatch_rss_peak", rss_max, "KiB"),
        Metric::new(
            "rss_per_client",
            (rss_max - rss0) / connected.max(1.0),
            "KiB",
        ),
    ];
    let r = Report {
        scenario: "fanout",
        summary: &summary,
        latency: Latency::Hdr(&rep.latency),
        latency_label: "status change -> receipt",
        throughput: &series,
        throughput_label: "messages sent/s",
    };
    report::write(&cfg.out, &r).map_err(|e| format!("{}: {e}", cfg.out.display()))?;
    eprintln!(
        "fanout: {} clients, {} messages in {:.1} s window; report in {}",
        rep.connected,
        rep.events,
        rep.window,
        cfg.out.display()
    );
    Ok(cfg.out.clone())
}

fn cpu_s(pid: Option<u32>) -> Option<f64> {
    pid.and_then(|p| procstat::sample(p).ok())
        .map(|s| s.cpu_s())
}

fn sample_and_report(
    cfg: &ProbeScenario,
    addr: SocketAddr,
    pid: Option<u32>,
    services: Option<usize>,
) -> Result<PathBuf, String> {
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
    let r = Report {
        scenario: "probe",
        summary: &summary,
        latency: Latency::Quantiles {
            points: &points,
            count: last.latency_count.max(0.0) as u64,
        },
        latency_label: "probe latency (/metrics, since start)",
        throughput: &series,
        throughput_label: "probes/s",
    };
    report::write(&cfg.out, &r).map_err(|e| format!("{}: {e}", cfg.out.display()))?;
    eprintln!(
        "probe: {probes:.0} probes in {wall:.1} s = {per_s:.0}/s, {cpu:.2} CPU-s; report in {}",
        cfg.out.display()
    );
    Ok(cfg.out.clone())
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
        };
        assert!(run_probe(&cfg).is_err());
        cfg.duration_s = MAX_DURATION_S + 1;
        assert!(run_probe(&cfg).is_err());
        cfg.duration_s = 1;
        cfg.services = 0;
        assert!(run_probe(&cfg).is_err());
    }
}
