//! `ringwatch`: run the monitor, check a config file, migrate the store, or check a running
//! monitor's readiness.

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

fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG, when set, wins over the config so an operator can raise verbosity ad hoc.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
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
                    "{}: ok ({} services, {} shards)",
                    config.display(),
                    cfg.services.len(),
                    server::shard_count(cfg.server.shards)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Migrate { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {}: {e}", config.display());
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
        Command::Run { config, shards } => {
            let mut cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            if let Some(n) = shards {
                cfg.server.shards = n;
            }
            init_logging(&cfg.log.level, cfg.log.format);
            let running = match server::start(cfg, &config) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
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
