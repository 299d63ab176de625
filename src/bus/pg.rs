//! The PostgreSQL bus: a dedicated LISTEN connection. Connect, LISTEN, ring, reconnect.
//!
//! tokio-postgres drops notifications when its `Connection` is merely spawned, so the
//! connection is driven with `poll_message` by a forwarding task, which parses each
//! notification into a doorbell and hands it to the relay (no copy of the payload is
//! kept). When the connection is lost it is re-made with backoff and LISTEN issued
//! again; the relay is told `Lost`, then `Connected`, and catches up from the tables.
//! Doorbells that arrive before `Connected` was sent are held back until it is, so the
//! relay re-checks memberships before it relays anything after a reconnect.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::{pg_probe, Bells, Bus, BusStatus, Doorbell, Signal};
use crate::db::{self, Db, DbError};
use crate::migrate::quote_ident;

pub struct PgBus {
    pub url: String,
    pub channel: String,
    /// The daemon's pool: role settings are read again on each (re)connection, as a
    /// PostgreSQL restart may come with changed settings.
    pub db: Db,
}

impl Bus for PgBus {
    async fn run(self, bells: Bells, status: Arc<BusStatus>, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        while !cancel.is_cancelled() {
            let session = tokio::select! {
                s = self.listen_once(&bells, &status, first) => s,
                _ = cancel.cancelled() => break,
            };
            if status
                .connected
                .swap(false, std::sync::atomic::Ordering::AcqRel)
                && !bells.send(Signal::Lost).await
            {
                break;
            }
            match session {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::warn!(error = %e, "LISTEN connection failed"),
            }
            first = false;
            metrics::counter!("pgchat_listener_reconnects_total").increment(1);
            tracing::warn!(
                retry_in_ms = backoff.as_millis() as u64,
                "re-making the LISTEN connection"
            );
            // Jitter keeps several daemons from reconnecting in lockstep after a restart.
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            tokio::select! {
                _ = tokio::time::sleep(backoff + jitter) => {}
                _ = cancel.cancelled() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        status.set_connected(false);
    }
}

impl PgBus {
    /// One connection's life: connect, LISTEN, tell the relay, ring until it ends.
    async fn listen_once(
        &self,
        bells: &Bells,
        status: &Arc<BusStatus>,
        first: bool,
    ) -> Result<(), DbError> {
        let config = db::connect_config(&self.url, "pgchat-listener", Duration::from_secs(30))?;
        let (client, connection) = config.connect(NoTls).await?;
        let client = Arc::new(client);
        let (open, gate) = oneshot::channel();
        let forward =
            AbortOnDropHandle::new(tokio::spawn(forward(connection, bells.clone(), gate)));
        // A hung connection ends `forward`, and with it this connection's life.
        let _probe = pg_probe::spawn(client.clone(), forward.abort_handle(), status.clone());
        client
            .batch_execute(&format!("LISTEN {}", quote_ident(&self.channel)))
            .await?;
        status.alive.mark();
        if let Err(e) = self.db.load_role_settings().await {
            tracing::warn!(error = %e, "could not read role settings");
        }
        status.set_connected(true);
        if !first {
            tracing::info!("LISTEN re-established; catching up");
        }
        if !bells.send(Signal::Connected { first }).await {
            return Ok(());
        }
        let _ = open.send(());
        let _ = forward.await;
        drop(client);
        Ok(())
    }
}

/// Drives the connection, turning notifications into doorbells for the relay. Until
/// `gate` opens, doorbells are held back (the relay has not been told `Connected`).
async fn forward<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    bells: Bells,
    gate: oneshot::Receiver<()>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let mut gate = Some(gate);
    let mut held: Vec<Doorbell> = Vec::new();
    loop {
        let message = tokio::select! {
            biased;
            _ = async { gate.as_mut().expect("guarded").await }, if gate.is_some() => {
                gate = None;
                for bell in held.drain(..) {
                    if !bells.send(Signal::Ring(bell)).await {
                        return;
                    }
                }
                continue;
            }
            m = messages.next() => m,
        };
        match message {
            Some(Ok(AsyncMessage::Notification(n))) => {
                metrics::counter!("pgchat_notifications_total").increment(1);
                let Some(bell) = Doorbell::parse(n.payload()) else {
                    metrics::counter!("pgchat_notifications_ignored_total").increment(1);
                    tracing::debug!("ignoring a notification that is not a doorbell");
                    continue;
                };
                if gate.is_some() {
                    held.push(bell);
                } else if !bells.send(Signal::Ring(bell)).await {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "LISTEN connection lost");
                return;
            }
            None => return,
        }
    }
}
