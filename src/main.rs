//! `ringwatch`: run the monitor, check a config file, migrate the store, or check a running
//! monitor's readiness.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringwatch::config::{Config, LogFormat};
use ringwatch::roles as server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A thread-per-core io_uring service-health monitor.
#[derive(Parser)]
#[command(name = "ringwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the monitor until SIGTERM/SIGINT (SIGHUP reloads the config).
    Run {
        /// YAML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Override `server.shards` (0 = one per core).
        #[arg(long)]
        shards: Option<usize>,
        /// Override `server.listen` (IP:port), so processes on one host can share a config
        /// file; a non-loopback address needs `auth` like the file's own.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Cluster roles of this process, comma-separated: scheduler, worker, ingest, gateway,
        /// or all (overrides `cluster.roles`; needs a `cluster` section).
        #[arg(long)]
        role: Option<String>,
    },
    /// Validate a config file and exit (non-zero, naming the bad key, when invalid).
    Check {
        /// YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Create the store if needed, apply pending schema migrations, and exit.
    Migrate {
        /// YAML config file (its `storage` section).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// GET /readyz of a running monitor: exit 0 when ready, 1 when not (for HEALTHCHECK).
    Healthcheck {
        /// YAML config file: checks its `server.listen` (https when `server.tls` is set).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// URL to check instead (`/readyz` when it has no path); default http://127.0.0.1:8080.
        #[arg(long, conflicts_with = "config")]
        url: Option<String>,
        /// Time allowed for the whole check, e.g. `2s`, `500ms`.
        #[arg(long, default_value = "2s", value_parser = ringwatch::config::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `--role` overrides `cluster.roles`.
fn apply_roles(cfg: &mut Config, role: Option<&str>) -> Result<(), String> {
    let Some(list) = role else {
        return Ok(());
    };
    let roles = ringwatch::config::Roles::parse_list(list.split(','))?;
    match cfg.cluster.as_mut() {
        Some(c) => {
            c.roles = roles;
            Ok(())
        }
        None => Err("needs a cluster section in the config (cluster.redis)".into()),
    }
}

/// Installs the `tracing` subscriber on stderr.
fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG, when set, wins over the config so an operator can raise verbosity ad hoc.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Colour codes only on a terminal: in a file, a pipe or journald they are noise that breaks
/// grep. `NO_COLOR` (https://no-color.org/) with any non-empty value turns them off.
fn use_colour(stderr_is_tty: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_tty && no_color.is_none_or(|v| v.is_empty())
}

/// `1 service`, `2 services`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Healthcheck {
            config,
            url,
            timeout,
        } => ringwatch::roles::healthcheck::cli(config.as_deref(), url.as_deref(), timeout),
        Command::Check { config } => match Config::load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({}, {})",
                    config.display(),
                    count(cfg.services.len(), "service"),
                    count(server::shard_count(cfg.server.shards), "shard")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Migrate { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    // The error names the file already (as for check and run).
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg.log.level, cfg.log.format);
            match ringwatch::store::migrate(&cfg.storage) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            shards,
            listen,
            role,
        } => {
            let mut cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(n) = shards {
                cfg.server.shards = n;
            }
            if let Some(addr) = listen {
                if let Err(e) = cfg.set_listen(addr) {
                    eprintln!("error: --listen: {e}");
                    return ExitCode::from(2);
                }
            }
            if let Err(e) = apply_roles(&mut cfg, role.as_deref()) {
                eprintln!("error: --role: {e}");
                return ExitCode::from(2);
            }
            init_logging(&cfg.log.level, cfg.log.format);
            let started = if cfg.cluster.is_some() {
                ringwatch::roles::cluster::start(cfg, &config)
            } else {
                server::start(cfg, &config)
            };
            let running = match started {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let running = if listen.is_some() {
                running.with_listen_flag()
            } else {
                running
            };
            match running.serve_signals() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(use_colour(true, Some(OsStr::new(""))));
    }

    #[test]
    fn counts_are_pluralized() {
        assert_eq!(count(0, "service"), "0 services");
        assert_eq!(count(1, "service"), "1 service");
        assert_eq!(count(2, "shard"), "2 shards");
    }
}
