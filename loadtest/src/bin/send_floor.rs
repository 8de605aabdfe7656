//! `send_floor`: the least time one core can take to hand one small message to each of N
//! loopback TCP clients, measured with nothing but a `send(2)` loop.
//!
//! This is the floor under any fan-out server on this machine: ringwatch and the Node `ws`
//! peer both pay at least this per client, because on loopback the kernel runs the receiving
//! side's TCP processing on the sending core. `scripts/ws-bench.sh` runs it in the same run
//! as the servers, so their latency and CPU per delivery can be read against it.
//!
//! A client process (pinned to `--client-cpu`; a second process, so each side has its own
//! descriptor limit) connects N sockets from several 127.0.x.y
//! source addresses and reads them with epoll; the server thread (pinned to `--server-cpu`)
//! accepts them and, once per round, sends a `--bytes` message to each in turn. It prints
//! one JSON line: per round, the send loop's wall time and CPU time per send, and the
//! receipt latency (from the start of the round) at the clients: p50, p99, max.
//!
//! Loopback only; bounded by `--clients` and `--rounds`, with a 10 s timeout per round.

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ringwatch_loadtest::procstat::thread_cpu;

#[derive(Parser, Clone, Copy)]
#[command(about = "Floor of a one-core loopback fan-out: a bare send() loop to N clients")]
struct Args {
    /// Clients (sockets).
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Broadcast rounds, one per second.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Message size in bytes (a ringwatch transition frame is about 200-250).
    #[arg(long, default_value_t = 220)]
    bytes: usize,
    /// First client source address (127.x.y.z); clients spread over `--sources` addresses.
    #[arg(long, default_value = "127.0.200.1")]
    source: Ipv4Addr,
    /// Source addresses to spread over.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// CPU for the sending thread.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the client process.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Internal: run as the client process, connecting to this address.
    #[arg(long, hide = true)]
    connect: Option<SocketAddr>,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The client process: connects, says `ready`, then prints one line per round with the
/// receipt times (unix ns) of every client's message at p50, p99 and max, and how many came.
fn client_side(cfg: &Args, addr: SocketAddr) -> io::Result<()> {
    let _ = monoio::utils::bind_to_cpu_set([cfg.client_cpu]);
    let mut socks = Vec::with_capacity(cfg.clients);
    let base = cfg.source.octets();
    for i in 0..cfg.clients {
        let src = Ipv4Addr::new(
            base[0],
            base[1],
            base[2],
            base[3].wrapping_add((i % cfg.sources.max(1) as usize) as u8),
        );
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&SocketAddr::new(src.into(), 0).into())?;
        s.connect(&addr.into())?;
        let t: TcpStream = s.into();
        t.set_nonblocking(true)?;
        socks.push(t);
    }
    // SAFETY: plain epoll calls on descriptors we own; the event array outlives every call.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    for (i, s) in socks.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
    }
    let mut out = io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = vec![0usize; cfg.clients];
    for _ in 0..cfg.rounds {
        let mut at = Vec::with_capacity(cfg.clients);
        // The first message of a round starts its clock; the round ends when all are in.
        let mut deadline = Instant::now() + Duration::from_secs(15);
        while at.len() < cfg.clients && Instant::now() < deadline {
            let k = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), evs.len() as i32, 1000) };
            for e in evs.iter().take(k.max(0) as usize) {
                let i = e.u64 as usize;
                while let Ok(n) = socks[i].read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got[i] += n;
                    // One receipt per client per round, when its whole message is in.
                    while got[i] >= cfg.bytes {
                        got[i] -= cfg.bytes;
                        if at.is_empty() {
                            deadline = Instant::now() + Duration::from_secs(10);
                        }
                        at.push(unix_ns());
                    }
                }
            }
        }
        at.sort_unstable();
        let q = |p: f64| at.get(((at.len() as f64 * p) as usize).min(at.len().saturating_sub(1)));
        writeln!(
            out,
            "{} {} {} {}",
            at.len(),
            q(0.5).unwrap_or(&0),
            q(0.99).unwrap_or(&0),
            at.last().unwrap_or(&0)
        )?;
        out.flush()?;
    }
    unsafe { libc::close(ep) };
    Ok(())
}

fn other(msg: &str) -> io::Error {
    io::Error::other(msg.to_string())
}

fn run(cfg: Args) -> io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["--connect", &addr.to_string()])
        .args(["--clients", &cfg.clients.to_string()])
        .args(["--rounds", &cfg.rounds.to_string()])
        .args(["--bytes", &cfg.bytes.to_string()])
        .args(["--source", &cfg.source.to_string()])
        .args(["--sources", &cfg.sources.to_string()])
        .args(["--client-cpu", &cfg.client_cpu.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut lines =
        io::BufReader::new(child.stdout.take().ok_or_else(|| other("no stdout"))?).lines();
    let _ = monoio::utils::bind_to_cpu_set([cfg.server_cpu]);
    listener.set_nonblocking(true)?;
    let mut conns = Vec::with_capacity(cfg.clients);
    let deadline = Instant::now() + Duration::from_secs(120);
    while conns.len() < cfg.clients {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                conns.push(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    if conns.len() < cfg.clients {
        let _ = child.kill();
        return Err(other(&format!(
            "only {} of {} clients connected",
            conns.len(),
            cfg.clients
        )));
    }
    if lines.next().transpose()?.as_deref() != Some("ready") {
        return Err(other("the client process did not get ready"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let msg = vec![b'x'; cfg.bytes];
    let mut rounds = Vec::new();
    for _ in 0..cfg.rounds {
        std::thread::sleep(Duration::from_secs(1));
        let (c0, t0) = (thread_cpu(), Instant::now());
        let start = unix_ns();
        let mut sent = 0u64;
        for c in conns.iter_mut() {
            // An empty socket buffer takes a few hundred bytes whole.
            if matches!(c.write(&msg), Ok(n) if n == msg.len()) {
                sent += 1;
            }
        }
        let (wall, cpu) = (t0.elapsed(), thread_cpu().saturating_sub(c0));
        // The client's line for this round: count, then p50, p99 and max receipt times.
        let line = lines
            .next()
            .transpose()?
            .ok_or_else(|| other("the client process ended early"))?;
        let f: Vec<u64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
        let [received, p50, p99, max] = f[..] else {
            return Err(other(&format!("bad client line: {line}")));
        };
        let ms = |t: u64| t.saturating_sub(start) as f64 / 1e6;
        rounds.push(serde_json::json!({
            "sent": sent,
            "send_loop_ms": wall.as_secs_f64() * 1e3,
            "cpu_us_per_send": cpu.as_secs_f64() * 1e6 / sent.max(1) as f64,
            "received": received,
            "p50_ms": ms(p50),
            "p99_ms": ms(p99),
            "max_ms": ms(max),
        }));
    }
    let _ = child.wait();
    // The median round is the figure: the first can pay for cold caches.
    let mut p99: Vec<f64> = rounds.iter().filter_map(|r| r["p99_ms"].as_f64()).collect();
    let mut cpu: Vec<f64> = rounds
        .iter()
        .filter_map(|r| r["cpu_us_per_send"].as_f64())
        .collect();
    p99.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    let mid = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
    Ok(serde_json::json!({
        "clients": cfg.clients,
        "bytes": cfg.bytes,
        "median_p99_ms": mid(&p99),
        "median_cpu_us_per_send": mid(&cpu),
        "rounds": rounds,
    })
    .to_string())
}

fn main() -> ExitCode {
    let cfg = Args::parse();
    if cfg.source.octets()[0] != 127 {
        eprintln!("send_floor: --source must be in 127.0.0.0/8 (loopback only)");
        return ExitCode::FAILURE;
    }
    if let Some(addr) = cfg.connect {
        return match client_side(&cfg, addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("send_floor client: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cfg) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("send_floor: {e}");
            ExitCode::FAILURE
        }
    }
}
