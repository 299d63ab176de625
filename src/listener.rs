//! The dedicated LISTEN connection: connect, LISTEN, resync, relay doorbells, reconnect
//! (see `relay` for what each doorbell makes it read).
//!
//! tokio-postgres drops notifications when its `Connection` is merely spawned, so the
//! connection is driven with `poll_message` by a forwarding task that feeds a bounded
//! channel. When the connection is lost it is re-made with backoff and LISTEN issued
//! again; then, before anything else is relayed, memberships are re-checked and every
//! followed room is caught up by rev from the tables ([`Relay::resync`]).
//!
//! Doorbells are taken in bursts: whatever is already waiting when one arrives is read
//! with it, so a room that rang many times is read once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::db::{self, Db, DbError};
use crate::hub::{FlushDue, Hub};
use crate::listener_probe::{self, Liveness};
use crate::migrate::quote_ident;
use crate::presence::Presence;
use crate::protocol::RoomId;
use crate::relay::{Burst, Doorbell, Relay};

/// Notifications buffered between the socket and the relay.
const NOTIFY_BUFFER: usize = 8192;
/// Doorbells taken into one burst at most, besides the one that started it.
const MAX_BURST: usize = 1024;

/// Shared with /readyz and the sessions.
#[derive(Default)]
pub struct ListenerState {
    /// True while LISTEN is established.
    pub listening: AtomicBool,
    /// When the connection last answered (see `listener_probe`).
    pub alive: Arc<Liveness>,
    /// Rooms this daemon just started following: their stream is read once more, for
    /// doorbells that rang before the relay knew where the room's stream stood.
    wakes: Mutex<Vec<RoomId>>,
    woken: tokio::sync::Notify,
}

impl ListenerState {
    pub fn wake(&self, room: RoomId) {
        self.wakes.lock().unwrap().push(room);
        self.woken.notify_one();
    }

    fn take_wakes(&self) -> Vec<RoomId> {
        std::mem::take(&mut *self.wakes.lock().unwrap())
    }
}

pub struct Listener {
    pub url: String,
    pub channel: String,
    pub db: Db,
    pub hub: Arc<Hub>,
    pub presence: Arc<Presence>,
    pub relay: Relay,
    pub state: Arc<ListenerState>,
}

impl Listener {
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        while !cancel.is_cancelled() {
            let session = tokio::select! {
                s = self.listen_once(first) => s,
                _ = cancel.cancelled() => break,
            };
            self.state.listening.store(false, Ordering::Release);
            // Changes may be missed until LISTEN is back: no roster can be trusted.
            self.hub.reset_rosters(false);
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
        self.state.listening.store(false, Ordering::Release);
    }

    /// One connection's life: connect, LISTEN, resync, relay until it ends.
    async fn listen_once(&self, first: bool) -> Result<(), DbError> {
        let config = db::connect_config(&self.url, "pgchat-listener", Duration::from_secs(30))?;
        let (client, mut connection) = config.connect(NoTls).await?;
        let client = Arc::new(client);
        let (tx, mut rx) = mpsc::channel::<String>(NOTIFY_BUFFER);
        let forward = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost");
                        break;
                    }
                }
            }
        });
        // A hung connection ends `forward`, and with it the receive loop below.
        let _probe = listener_probe::spawn(
            client.clone(),
            forward.abort_handle(),
            self.state.alive.clone(),
        );
        client
            .batch_execute(&format!("LISTEN {}", quote_ident(&self.channel)))
            .await?;
        self.state.alive.mark();
        if let Err(e) = self.db.load_role_settings().await {
            tracing::warn!(error = %e, "could not read role settings");
        }
        self.state.listening.store(true, Ordering::Release);
        if !first {
            tracing::info!("LISTEN re-established; catching up");
            self.relay.resync().await;
            self.reannounce_presence().await;
            self.hub.flush();
        }
        // From here on every doorbell reaches us: rosters can be kept again.
        self.hub.reset_rosters(true);
        // When queued announcements must be written if nothing else writes them first.
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let mut burst = Burst::default();
            tokio::select! {
                n = rx.recv() => match n {
                    Some(payload) => self.take(&mut burst, &payload),
                    None => break,
                },
                _ = self.state.woken.notified() => {}
                _ = sleep_until(deadline) => {
                    self.hub.flush();
                    deadline = None;
                    continue;
                }
            }
            // Only what is waiting already: a burst never waits for more.
            for _ in 0..MAX_BURST {
                match rx.try_recv() {
                    Ok(payload) => self.take(&mut burst, &payload),
                    Err(_) => break,
                }
            }
            for room in self.state.take_wakes() {
                if let Some((_, Some(rev))) = self.hub.position(room) {
                    burst.add(Doorbell::Changes { room, rev: rev + 1 });
                }
            }
            if !burst.is_empty() {
                self.relay.ring(burst).await;
                // Doorbells that rang while the relay read: its backlog.
                metrics::gauge!("pgchat_listener_backlog").set(rx.len() as f64);
            }
            deadline = None;
            let flush = match self.hub.flush_due() {
                FlushDue::Nothing => false,
                FlushDue::Now | FlushDue::Soon => true,
                FlushDue::By(at) => {
                    deadline = Some(at.into());
                    at <= std::time::Instant::now()
                }
            };
            if flush {
                self.hub.flush();
                deadline = None;
            }
        }
        self.hub.flush();
        self.hub.flush_settled();
        forward.abort();
        drop(client);
        Ok(())
    }

    fn take(&self, burst: &mut Burst, payload: &str) {
        metrics::counter!("pgchat_notifications_total").increment(1);
        match Doorbell::parse(payload) {
            Some(bell) => burst.add(bell),
            None => {
                metrics::counter!("pgchat_notifications_ignored_total").increment(1);
                tracing::debug!("ignoring a notification that is not a doorbell");
            }
        }
    }

    /// After PostgreSQL restarts, unlogged presence rows are gone: record ours again.
    async fn reannounce_presence(&self) {
        for (room, user) in self.hub.present_users() {
            self.presence.arrive(room, user).await;
        }
    }
}

/// Completes at `at`, or never.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
