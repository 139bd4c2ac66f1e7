//! Logs (tracing, text or JSON, on stderr) and the one-line live status on a terminal.
//!
//! The status line and log lines share stderr: a log line is written with the status line
//! suspended, so neither tears the other.

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

static STATUS: OnceLock<ProgressBar> = OnceLock::new();

/// Log format chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `level` is a filter like `info` or `pagecast=debug`;
/// `PAGECAST_LOG` overrides it.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_env("PAGECAST_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(StatusAwareStderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The status line, if stderr is a terminal (JSON logs and pipes get none).
pub fn status_line(format: LogFormat) -> Option<ProgressBar> {
    if format == LogFormat::Json || !io::stderr().is_terminal() {
        return None;
    }
    let bar = STATUS.get_or_init(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    });
    Some(bar.clone())
}

/// Removes the status line (at the end of a recording).
pub fn clear_status_line() {
    if let Some(bar) = STATUS.get() {
        bar.finish_and_clear();
    }
}

#[derive(Clone, Copy)]
struct StatusAwareStderr;

impl Write for StatusAwareStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match STATUS.get() {
            Some(bar) if !bar.is_finished() => bar.suspend(|| io::stderr().write(buf)),
            _ => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for StatusAwareStderr {
    type Writer = StatusAwareStderr;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}
