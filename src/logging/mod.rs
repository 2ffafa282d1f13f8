//! Logging: the subscriber for everything `tracing` says, and the access log.
//!
//! The per-request line does not go through `tracing`'s formatter once [`init`] has run:
//! the request's task hands a small fixed [`access::Line`] to a bounded queue, and one
//! writer thread formats the lines and writes them in batches ([`access`]). Without
//! [`init`] (the library used on its own) the line is a `tracing` event as before, so a
//! host application's subscriber still sees it.

mod access;
mod format;

pub use access::{Begun, Line, dropped, enabled, request};

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `2026-12-02T23:36:37.818627Z  INFO patchgate::layer: request route="api" …`
    Text,
    /// One JSON object per line, the fields flattened beside `message`.
    Json,
}

/// Flushes both writers when dropped (on exit).
pub struct Guard {
    _events: tracing_appender::non_blocking::WorkerGuard,
    _access: Option<access::Writer>,
}

/// Lines the access log queue holds before it drops (and counts) new ones.
/// `PATCHGATE_LOG_QUEUE` overrides it (tests make it small).
const QUEUE_LINES: usize = 2048;

/// Installs the log subscriber (level from `RUST_LOG`, default `info`) and the access log
/// writer, both writing to stderr from threads of their own, so that a request never
/// waits on a write to the terminal or a file.
pub fn init(format: Format) -> Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    install(filter, format)
}

/// [`init`] with these directives instead of `RUST_LOG` (the benches set the level).
pub fn init_with_filter(directives: &str, format: Format) -> Guard {
    install(tracing_subscriber::EnvFilter::new(directives), format)
}

fn install(filter: tracing_subscriber::EnvFilter, format: Format) -> Guard {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    // The default queue (128 000 lines) is a 4 MiB array touched up front.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .lossy(false)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let installed = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
    let queue = std::env::var("PATCHGATE_LOG_QUEUE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(QUEUE_LINES);
    // Another subscriber was there first: its owner decides where lines go. With request
    // lines filtered out, no writer: its idle polling would only wake the CPU.
    let access = match installed {
        Ok(()) if access::enabled() => access::Writer::start(format, queue, Box::new(std::io::stderr())),
        _ => None,
    };
    Guard {
        _events: guard,
        _access: access,
    }
}
