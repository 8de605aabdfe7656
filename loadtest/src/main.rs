//! `ringwatch-loadtest`: target fleet, config generator, `/proc` sampler, WebSocket swarm, and
//! the `probe`, `fanout` and `soak` scenarios.

use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ringwatch_loadtest::fleet::{DriverChoice, Fleet, FleetConfig};
use ringwatch_loadtest::genconfig::{self, FlapShare, GenConfig};
use ringwatch_loadtest::peers::Peer;
use ringwatch_loadtest::{ports, procstat};

#[derive(Parser)]
#[command(version, about = "Load-test harness for ringwatch (loopback only)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve scripted HTTP/1.1 targets (/ok, /status/N, /delay/MS, /hang, /flap/MS, /close,
    /// /chunked, /bytes/N, /reset) on many loopback ports until SIGINT/SIGTERM.
    Fleet {
        /// Address to bind (127.0.0.0/8 only).
        #[arg(long, default_value = "127.0.0.1", value_parser = ports::parse_loopback)]
        listen: IpAddr,
        /// Ports: `20000-20099`, `8080`, or a comma list of both.
        #[arg(long, default_value = "20000-20099", value_parser = ports::parse_ports)]
        ports: std::vec::Vec<u16>,
        /// Server threads (default: one per available CPU). Every thread serves every port.
        #[arg(long)]
        threads: Option<usize>,
        /// Open connections allowed per thread; more are accepted, closed and counted.
        #[arg(long, default_value_t = 50_000)]
        max_conns: usize,
        /// Runtime driver.
        #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
        driver: DriverChoice,
        /// Pin thread t to CPU cpus[t % len] (e.g. `0,1`); default: no pinning.
        #[arg(long, value_delimiter = ',')]
        cpus: Vec<usize>,
        /// Print the summary line to stderr every N seconds (0 = only at exit).
        #[arg(long, default_value_t = 0)]
        stats_every: u64,
    },
    /// Write a ringwatch YAML config with N services aimed at the fleet (to stdout).
    GenConfig {
        /// Number of services.
        #[arg(long)]
        services: usize,
        /// Fleet ports; services go round-robin over them.
        #[arg(long, default_value = "20000-20099", value_parser = ports::parse_ports)]
        ports: std::vec::Vec<u16>,
        /// Fleet address (127.0.0.0/8 only).
        #[arg(long, default_value = "127.0.0.1", value_parser = ports::parse_loopback)]
        host: IpAddr,
        /// Path every service probes.
        #[arg(long, default_value = "/ok")]
        path: String,
        /// Realistic mix instead of one path: 90% /ok, 5% /delay/50, 3% /flap/30000,
        /// 2% /status/503.
        #[arg(long)]
        mix: bool,
        /// Probe interval.
        #[arg(long, default_value = "60s")]
        interval: String,
        /// Probe timeout.
        #[arg(long, default_value = "5s")]
        timeout: String,
        /// Scheduling jitter.
        #[arg(long, default_value = "10%")]
        jitter: String,
        /// ringwatch's listen address.
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: String,
        /// SQLite database path.
        #[arg(long, default_value = "/tmp/rw-bench.db")]
        db: String,
        /// ringwatch shards (0 = one per core).
        #[arg(long, default_value_t = 0)]
        shards: usize,
    },
    /// Connect N WebSocket clients (spread over loopback source addresses), subscribe, and
    /// measure `arrival - at` of every event at every client (HDR); prints JSON.
    Swarm {
        /// Server address.
        #[arg(long, default_value = "127.0.0.1:18080")]
        server: std::net::SocketAddr,
        /// Request path.
        #[arg(long, default_value = "/ws")]
        path: String,
        /// Clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// First source address (127.0.0.0/8); clients use it and the next `--sources - 1`.
        #[arg(long, default_value = "127.0.0.2", value_parser = ports::parse_loopback)]
        source: IpAddr,
        /// How many consecutive source addresses to spread clients over.
        #[arg(long, default_value_t = 8)]
        sources: usize,
        /// Text message sent after the handshake.
        #[arg(long, default_value = r#"{"op":"subscribe"}"#)]
        subscribe: String,
        /// Threads (each one runtime).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Pin thread t to CPU cpus[t % len].
        #[arg(long, value_delimiter = ',')]
        cpus: Vec<usize>,
        /// Seconds to wait after connecting before measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Measurement window, seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Client runtime driver: `legacy` (epoll; cheapest per message for a swarm of
        /// mostly-idle sockets) or `uring`.
        #[arg(long, default_value = "legacy")]
        driver: String,
    },
    /// Probe scenario: start a scripted fleet and a ringwatch (or sample one already running
    /// with --url), scrape /metrics every second, and write a report directory.
    Probe {
        /// Measurement duration, seconds (1..=600).
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Services in the generated config.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Probe interval of every service.
        #[arg(long, default_value = "1s")]
        interval: String,
        /// Probe timeout (must be shorter than the interval).
        #[arg(long, default_value = "800ms")]
        timeout: String,
        /// Path every service probes; default: the scripted mix (90% /ok, 5% /delay/50,
        /// 3% /flap/30000, 2% /status/503).
        #[arg(long)]
        path: Option<String>,
        /// Fleet threads.
        #[arg(long, default_value_t = 1)]
        fleet_threads: usize,
        /// After ringwatch, measure these peers against the same fleet (ringwatch stopped)
        /// and print ringwatch / peer ratios: `wrk` (requests per wrk CPU-second on `/ok`),
        /// `blackbox` (Debian prometheus-blackbox-exporter, probes per CPU-second). A missing
        /// peer is a note in the report (install: scripts/install-peers.sh).
        #[arg(long, value_enum, value_delimiter = ',')]
        peers: Vec<Peer>,
        /// Seconds each peer is measured (default: --duration).
        #[arg(long)]
        peer_duration: Option<u64>,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Fan-out scenario: services flapping every --flap-ms, a WebSocket swarm subscribed to
    /// everything; change -> receipt latency, delivered messages/s, CPU per delivery.
    Fanout {
        /// Measurement window, seconds (1..=600), after the warm-up.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Seconds between connecting the clients and measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Services; each one flaps every --flap-ms.
        #[arg(long, default_value_t = 100)]
        services: usize,
        /// Flap period of the targets, ms (one transition per service per period).
        #[arg(long, default_value_t = 2000)]
        flap_ms: u64,
        /// Probe interval.
        #[arg(long, default_value = "500ms")]
        interval: String,
        /// Probe timeout (shorter than the interval).
        #[arg(long, default_value = "400ms")]
        timeout: String,
        /// WebSocket clients.
        #[arg(long, default_value_t = 500)]
        clients: usize,
        /// First client source address (127.0.0.0/8).
        #[arg(long, default_value = "127.0.10.1", value_parser = ports::parse_loopback)]
        source: IpAddr,
        /// Consecutive source addresses.
        #[arg(long, default_value_t = 8)]
        sources: usize,
        /// Swarm threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// After ringwatch, run this peer with the same swarm and print ringwatch / peer
        /// ratios: `ws` (Node ws broadcast server, scripts/ws-peer/server.js; install:
        /// scripts/install-ws-peer.sh).
        #[arg(long, value_enum)]
        peer: Option<Peer>,
        /// Seconds the peer is measured (default: --duration).
        #[arg(long)]
        peer_duration: Option<u64>,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Soak scenario: probe load and WebSocket fan-out at once; checks that every transition
    /// reaches every client exactly once and is in the store. Exits non-zero when a check
    /// fails.
    Soak {
        /// Measurement window, seconds (1..=600), after the warm-up.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Seconds between connecting the clients and the latency window.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Seconds the clients keep reading after the window, before the checks.
        #[arg(long, default_value_t = 3.0)]
        drain: f64,
        /// Services in the generated config.
        #[arg(long, default_value_t = 200)]
        services: usize,
        /// Percent of the services probing /flap/FLAP_MS; the rest probe /ok.
        #[arg(long, default_value_t = 50)]
        flap_percent: u32,
        /// Flap period of the flapping targets, ms (one transition per service per period).
        #[arg(long, default_value_t = 2000)]
        flap_ms: u64,
        /// Probe interval of every service (at most half of --flap-ms).
        #[arg(long, default_value = "250ms")]
        interval: String,
        /// Probe timeout (shorter than the interval).
        #[arg(long, default_value = "200ms")]
        timeout: String,
        /// WebSocket clients.
        #[arg(long, default_value_t = 500)]
        clients: usize,
        /// First client source address (127.0.0.0/8).
        #[arg(long, default_value = "127.0.30.1", value_parser = ports::parse_loopback)]
        source: IpAddr,
        /// Consecutive source addresses.
        #[arg(long, default_value_t = 8)]
        sources: usize,
        /// Swarm threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Most transition seqs one client records (one bit each, grown on demand); more
        /// fail the check rather than grow memory.
        #[arg(long, default_value_t = 1_000_000)]
        seq_cap: u64,
        /// Fleet threads.
        #[arg(long, default_value_t = 1)]
        fleet_threads: usize,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Print a process's CPU-seconds and RSS from /proc as JSON.
    Procstat {
        /// Process id.
        #[arg(long)]
        pid: u32,
        /// If set, sample twice this many seconds apart and print the difference too.
        #[arg(long)]
        window: Option<f64>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringwatch-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Fleet {
            listen,
            ports,
            threads,
            max_conns,
            driver,
            cpus,
            stats_every,
        } => run_fleet(
            FleetConfig {
                listen,
                ports,
                threads: threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                max_conns_per_thread: max_conns,
                driver,
                cpus,
            },
            stats_every,
        ),
        Cmd::GenConfig {
            services,
            ports,
            host,
            path,
            mix,
            interval,
            timeout,
            jitter,
            listen,
            db,
            shards,
        } => {
            genconfig::check_duration(&interval)?;
            genconfig::check_duration(&timeout)?;
            if !path.starts_with('/') || path.contains(['?', '#', '"', ' ']) {
                return Err(format!(
                    "--path {path:?} must start with / and have no query"
                ));
            }
            let cfg = GenConfig {
                services,
                ports,
                host: host.to_string(),
                path,
                mix,
                flap: None,
                interval,
                timeout,
                jitter,
                listen,
                shards,
                db,
            };
            let stdout = io::stdout();
            let mut w = BufWriter::with_capacity(1 << 16, stdout.lock());
            genconfig::write_config(&cfg, &mut w)
                .and_then(|()| w.flush())
                .map_err(|e| format!("writing config: {e}"))
        }
        Cmd::Swarm {
            server,
            path,
            clients,
            source,
            sources,
            subscribe,
            threads,
            cpus,
            warmup,
            duration,
            driver,
        } => {
            raise_nofile_limit();
            let IpAddr::V4(source) = source else {
                return Err("--source must be IPv4".into());
            };
            let report = ringwatch_loadtest::swarm::run(ringwatch_loadtest::swarm::SwarmConfig {
                server,
                path,
                clients,
                source,
                sources,
                subscribe,
                threads,
                cpus,
                warmup,
                duration,
                uring: driver == "uring",
                seqs: None,
            })?;
            println!("{}", report.to_json());
            Ok(())
        }
        Cmd::Probe {
            duration,
            services,
            interval,
            timeout,
            path,
            fleet_threads,
            peers,
            peer_duration,
            target,
        } => {
            raise_nofile_limit();
            let load = Load {
                duration_s: duration,
                services,
                fleet_threads,
                path,
                flap: None,
                interval,
                timeout,
                peers,
                peer_duration_s: peer_duration.unwrap_or(duration),
            };
            let base = target.scenario("probe", load)?;
            let dir = ringwatch_loadtest::scenario::run_probe(&base)?;
            println!("{}", dir.display());
            Ok(())
        }
        Cmd::Fanout {
            duration,
            warmup,
            services,
            flap_ms,
            interval,
            timeout,
            clients,
            source,
            sources,
            threads,
            peer,
            peer_duration,
            target,
        } => {
            raise_nofile_limit();
            let IpAddr::V4(source) = source else {
                return Err("--source must be IPv4".into());
            };
            let path = Some(format!("/flap/{}", flap_ms.max(1)));
            let load = Load {
                duration_s: duration,
                services,
                fleet_threads: 1,
                path,
                flap: None,
                interval,
                timeout,
                peers: peer.into_iter().collect(),
                peer_duration_s: peer_duration.unwrap_or(duration),
            };
            let base = target.scenario("fanout", load)?;
            let dir = ringwatch_loadtest::scenario::run_fanout(
                &ringwatch_loadtest::scenario::FanoutScenario {
                    base,
                    clients,
                    source,
                    sources,
                    threads,
                    warmup_s: warmup,
                },
            )?;
            println!("{}", dir.display());
            Ok(())
        }
        Cmd::Soak {
            duration,
            warmup,
            drain,
            services,
            flap_percent,
            flap_ms,
            interval,
            timeout,
            clients,
            source,
            sources,
            threads,
            seq_cap,
            fleet_threads,
            target,
        } => {
            raise_nofile_limit();
            let IpAddr::V4(source) = source else {
                return Err("--source must be IPv4".into());
            };
            let load = Load {
                duration_s: duration,
                services,
                fleet_threads,
                path: Some("/ok".into()),
                flap: Some(FlapShare {
                    percent: flap_percent,
                    path: format!("/flap/{}", flap_ms.max(1)),
                }),
                interval,
                timeout,
                peers: Vec::new(),
                peer_duration_s: 0,
            };
            let base = target.scenario("soak", load)?;
            let outcome =
                ringwatch_loadtest::soak::run_soak(&ringwatch_loadtest::soak::SoakScenario {
                    base,
                    flap_ms: flap_ms.max(1),
                    clients,
                    source,
                    sources,
                    threads,
                    warmup_s: warmup,
                    drain_s: drain,
                    seq_cap,
                })?;
            println!("{}", outcome.dir.display());
            if outcome.failed.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "soak: {} check(s) failed ({}); see {}",
                    outcome.failed.len(),
                    outcome.failed.join("; "),
                    outcome.dir.join("summary.md").display()
                ))
            }
        }
        Cmd::Procstat { pid, window } => {
            let a = procstat::sample(pid).map_err(|e| format!("pid {pid}: {e}"))?;
            let Some(secs) = window else {
                println!("{}", a.to_json());
                return Ok(());
            };
            std::thread::sleep(Duration::from_secs_f64(secs.max(0.0)));
            let b = procstat::sample(pid).map_err(|e| format!("pid {pid}: {e}"))?;
            let wall = (b.at_unix_s - a.at_unix_s).max(1e-9);
            let cpu = b.cpu_s() - a.cpu_s();
            println!(
                "{{\"pid\":{pid},\"window_seconds\":{wall:.3},\"cpu_seconds\":{cpu:.3},\"cpu_util\":{:.3},\"rss_kib\":{},\"before\":{},\"after\":{}}}",
                cpu / wall,
                b.rss_kib,
                a.to_json(),
                b.to_json()
            );
            Ok(())
        }
    }
}

/// Where a scenario's ringwatch comes from and where its report goes (shared by scenarios).
#[derive(clap::Args)]
struct TargetArgs {
    /// Fleet ports (`0`: one ephemeral port).
    #[arg(long, default_value = "20000-20099", value_parser = ports::parse_ports)]
    fleet_ports: std::vec::Vec<u16>,
    /// ringwatch shards (0 = one per core).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// ringwatch binary to start.
    #[arg(long, default_value = "target/release/ringwatch")]
    ringwatch: std::path::PathBuf,
    /// Use an already running ringwatch at this loopback address instead (no fleet, no
    /// child), e.g. http://127.0.0.1:18080.
    #[arg(long, value_parser = ringwatch_loadtest::scenario::parse_url)]
    url: Option<std::net::SocketAddr>,
    /// With --url: ringwatch's pid, for its CPU-seconds and RSS.
    #[arg(long, requires = "url")]
    pid: Option<u32>,
    /// Report directory (default: loadtest/reports/<scenario>-<unix time>).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// The load a scenario generates.
struct Load {
    duration_s: u64,
    services: usize,
    fleet_threads: usize,
    path: Option<String>,
    flap: Option<FlapShare>,
    interval: String,
    timeout: String,
    peers: Vec<Peer>,
    peer_duration_s: u64,
}

impl TargetArgs {
    /// The scenario settings these arguments fill in; SIGINT/SIGTERM end the run early.
    fn scenario(
        self,
        name: &str,
        load: Load,
    ) -> Result<ringwatch_loadtest::scenario::ProbeScenario, String> {
        let Load {
            duration_s,
            services,
            fleet_threads,
            path,
            flap,
            interval,
            timeout,
            peers,
            peer_duration_s,
        } = load;
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal: {e}"))?;
        }
        Ok(ringwatch_loadtest::scenario::ProbeScenario {
            duration_s,
            services,
            fleet_ports: self.fleet_ports,
            fleet_threads,
            path,
            interval,
            timeout,
            shards: self.shards,
            ringwatch: self.ringwatch,
            url: self.url,
            pid: self.pid,
            out: self.out.unwrap_or_else(|| default_out(name)),
            stop,
            flap,
            peers,
            peer_duration_s,
        })
    }
}

/// `loadtest/reports/<scenario>-<unix time>`.
fn default_out(scenario: &str) -> std::path::PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    std::path::PathBuf::from(format!("loadtest/reports/{scenario}-{now}"))
}

fn run_fleet(cfg: FleetConfig, stats_every: u64) -> Result<(), String> {
    raise_nofile_limit();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal: {e}"))?;
    }
    let (first, last, n) = (
        cfg.ports[0],
        cfg.ports[cfg.ports.len() - 1],
        cfg.ports.len(),
    );
    let fleet = Fleet::start(cfg.clone()).map_err(|e| format!("fleet: {e}"))?;
    println!(
        "fleet: listening on {} ports {first}-{last} ({n} ports) threads={} drivers={} max_conns_per_thread={}",
        cfg.listen,
        cfg.threads,
        fleet.drivers().join(","),
        cfg.max_conns_per_thread
    );
    let _ = io::stdout().flush();
    let mut next_stats = Instant::now() + Duration::from_secs(stats_every);
    // The serving threads never block on the main thread; it only watches for a signal.
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if stats_every > 0 && Instant::now() >= next_stats {
            eprintln!("{}", fleet.summary());
            next_stats += Duration::from_secs(stats_every);
        }
    }
    println!("{}", fleet.summary());
    let _ = io::stdout().flush();
    // Detached serving threads end with the process.
    std::process::exit(0);
}

/// Raises the soft open-files limit to the hard limit: a fleet for 100k services can hold
/// tens of thousands of connections, and the default soft limit is far lower.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a properly initialized struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
