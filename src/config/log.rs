//! The `log` section: the `tracing` filter and the output format.

use super::raw::RawLog;
use super::validate::{err, Result};
use super::{LogConfig, LogFormat};

/// The `log` section (absent = `info`, text).
pub(super) fn log(l: Option<&RawLog>) -> Result<LogConfig> {
    let level = l
        .and_then(|l| l.level.clone())
        .unwrap_or_else(|| "info".to_string());
    // Checked here so `ringwatch check` catches a bad filter before `run` needs it.
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        return err(
            "log.level",
            format!("invalid filter \"{level}\": {e} (e.g. info, debug, ringwatch=debug,warn)"),
        );
    }
    let format = match l.and_then(|l| l.format.as_deref()).map(str::trim) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return err(
                "log.format",
                format!("unknown format \"{other}\" (expected text or json)"),
            )
        }
    };
    Ok(LogConfig { level, format })
}
