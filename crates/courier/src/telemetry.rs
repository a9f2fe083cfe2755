//! Logging: human-readable by default, JSON by config, filter from config or
//! `RUST_LOG`; to standard error, or to a file (the demo, so its terminal
//! shows progress only).

use std::path::Path;
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber once, writing to standard error; later
/// calls are no-ops (tests).
pub fn init(settings: &LogSettings) {
    install(settings, std::io::stderr, true);
}

/// Like [`init`], but writes to the file at `path` (created, with its
/// directory, if missing; emptied first), without colour codes.
pub fn init_to_file(settings: &LogSettings, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    install(settings, Arc::new(file), false);
    Ok(())
}

fn install<W>(settings: &LogSettings, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match settings.format {
        LogFormat::Pretty if ansi => builder.try_init(),
        LogFormat::Pretty => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
