//! Logging through `tracing`: levels and targets (`espgw::api`,
//! `espgw::audit`, ...), a human format by default and JSON lines on
//! request, to stderr. Under systemd (`JOURNAL_STREAM` set) the human format
//! drops its own timestamps and colours: journald adds the time.
//!
//! The level comes from `--log-level` or `ESPGW_LOG` (an `EnvFilter`
//! directive such as `info` or `info,espgw::api=debug`); `info` by default.
//! Keys are never logged: the API audit line names the request, not its body.

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Install the process's subscriber (once; later calls do nothing).
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let directive =
        level.map(str::to_string).or_else(|| std::env::var("ESPGW_LOG").ok()).unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&directive).map_err(|e| format!("log level {directive:?}: {e}"))?;
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let r = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Human if journald => builder.without_time().with_ansi(false).try_init(),
        LogFormat::Human => builder.with_ansi(false).try_init(),
    };
    let _ = r; // already installed (tests): keep the first
    Ok(())
}
