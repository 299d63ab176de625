//! Tracing setup: text or JSON lines on stdout, filtered by `RUST_LOG` (default `info`).
//!
//! Whatever `RUST_LOG` asks for, the database driver and the WebSocket library are held
//! at `info`: at `debug` tokio-postgres logs every statement's parameters (passwords at
//! sign-up, message text, tokens) and tungstenite logs frame payloads. The daemon's own
//! events never carry them (see `docs/operations.md`).

use std::io::IsTerminal;

use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Crates whose `debug`/`trace` events carry user data, and the most they may log.
const CAPPED: [(&str, LevelFilter); 3] = [
    ("tokio_postgres", LevelFilter::INFO),
    ("tungstenite", LevelFilter::INFO),
    ("tokio_tungstenite", LevelFilter::INFO),
];

/// The filter every event passes: `RUST_LOG` (else `info`), then the caps above.
fn filter<S>() -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let caps = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(CAPPED);
    env.and(caps)
}

/// Installs the global subscriber (and the bridge for crates that use `log`). Colours
/// only when stdout is a terminal: piped to a file or a journal, lines stay plain.
pub fn init(format: &str) {
    let ansi = std::io::stdout().is_terminal();
    let layer = if format == "json" {
        fmt::layer()
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_target(false)
            .boxed()
    } else {
        fmt::layer().with_ansi(ansi).with_target(false).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter()))
        .try_init();
}
