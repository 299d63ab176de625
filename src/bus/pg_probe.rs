//! Watchdog of the LISTEN connection. A connection whose peer vanished without closing
//! (a cable cut, a frozen host) delivers no notifications and no error: the receive loop
//! would wait on it forever while messages are committed unseen. So a `select 1` is sent
//! every [`PROBE_INTERVAL`]; one that fails or is not answered within [`PROBE_DEADLINE`]
//! aborts the task driving the connection, which ends the receive loop, and the usual
//! reconnect and catch-up by seq follow. Each answer is recorded for `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};

use super::BusStatus;

/// Time between probes. A hung connection is noticed within interval + deadline.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait for a probe's answer. Generous: a busy server answers `select 1` in
/// milliseconds, and a false alarm costs a reconnect and a catch-up.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// Stops probing when dropped (when the connection's life ends).
pub struct ProbeGuard(JoinHandle<()>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Probes `client` until a probe fails or is late, then aborts `connection` (the task
/// that drives the client's socket). Answers are recorded in `status.alive`.
pub fn spawn(
    client: Arc<tokio_postgres::Client>,
    connection: AbortHandle,
    status: Arc<BusStatus>,
) -> ProbeGuard {
    ProbeGuard(tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            match tokio::time::timeout(PROBE_DEADLINE, client.simple_query("select 1")).await {
                Ok(Ok(_)) => status.alive.mark(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "LISTEN connection probe failed");
                    break;
                }
                Err(_) => {
                    tracing::warn!(
                        deadline_ms = PROBE_DEADLINE.as_millis() as u64,
                        "LISTEN connection did not answer its probe in time; reconnecting"
                    );
                    break;
                }
            }
        }
        metrics::counter!("pgchat_listener_probe_failures_total").increment(1);
        connection.abort();
    }))
}
