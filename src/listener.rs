//! The dedicated LISTEN connection: connect, LISTEN, catch up, reconnect (see `relay`
//! for what each notification becomes).
//!
//! tokio-postgres drops notifications when its `Connection` is merely spawned, so the
//! connection is driven with `poll_message` by a forwarding task that feeds a bounded
//! channel. When the connection is lost it is re-made with backoff and LISTEN issued
//! again; then every room with subscribers is caught up by seq from the table before
//! live notifications flow again. Per room, the hub's cursor is the highest seq relayed:
//! older seqs are duplicates and dropped, a jump past cursor+1 is a gap and is fetched.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::db::{self, Db, DbError};
use crate::hub::{Event, FlushDue, Hub};
use crate::migrate::quote_ident;
use crate::presence::{Presence, TypingTracker};
use crate::protocol::{self, RoomId};

/// Rows fetched per query when catching up a room.
const CATCH_UP_PAGE: i32 = 500;
/// Notifications buffered between the socket and the dispatcher.
const NOTIFY_BUFFER: usize = 8192;
/// Notifications relayed before the hub's queued messages are written, when more are
/// already waiting: a burst reaches each socket in one write per few messages.
const FLUSH_EVERY: usize = 16;

/// Shared with /readyz: true while LISTEN is established.
#[derive(Default)]
pub struct ListenerState {
    pub listening: AtomicBool,
}

pub struct Listener {
    pub url: String,
    pub channel: String,
    pub db: Db,
    pub hub: Arc<Hub>,
    pub presence: Arc<Presence>,
    pub typing: Arc<TypingTracker>,
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

    /// One connection's life: connect, LISTEN, catch up, relay until it ends.
    async fn listen_once(&self, first: bool) -> Result<(), DbError> {
        let config = db::connect_config(&self.url, "pgchat-listener", Duration::from_secs(30))?;
        let (client, mut connection) = config.connect(NoTls).await?;
        let (tx, mut rx) = mpsc::channel::<tokio_postgres::Notification>(NOTIFY_BUFFER);
        let forward = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n).await.is_err() {
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
        client
            .batch_execute(&format!("LISTEN {}", quote_ident(&self.channel)))
            .await?;
        if let Err(e) = self.db.load_role_settings().await {
            tracing::warn!(error = %e, "could not read role settings");
        }
        self.state.listening.store(true, Ordering::Release);
        // From here on every presence change reaches us: rosters can be kept again.
        self.hub.reset_rosters(true);
        if !first {
            tracing::info!("LISTEN re-established; catching up");
            self.catch_up_all().await;
            self.hub.flush();
            self.reannounce_presence().await;
        }
        // Notifications relayed since the last flush, and when queued announcements
        // must be written if nothing else writes them first.
        let mut relayed = 0;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = match deadline {
                Some(at) => tokio::select! {
                    n = rx.recv() => n,
                    _ = tokio::time::sleep_until(at) => {
                        self.hub.flush();
                        (relayed, deadline) = (0, None);
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(n) = next else { break };
            metrics::counter!("pgchat_notifications_total").increment(1);
            if let Err(e) = self.dispatch(n.payload()).await {
                tracing::warn!(error = %e, "could not relay a notification");
            }
            relayed += 1;
            deadline = None;
            let flush = match self.hub.flush_due() {
                FlushDue::Nothing => false,
                FlushDue::Now => true,
                FlushDue::Soon => rx.is_empty() || relayed >= FLUSH_EVERY,
                FlushDue::By(at) => {
                    deadline = Some(at.into());
                    at <= std::time::Instant::now()
                }
            };
            if flush {
                self.hub.flush();
                (relayed, deadline) = (0, None);
            }
        }
        self.hub.flush();
        self.hub.flush_settled();
        forward.abort();
        drop(client);
        Ok(())
    }

    async fn catch_up_all(&self) {
        for (room, cursor) in self.hub.cursors() {
            if let Some(after) = cursor {
                if let Err(e) = self.catch_up(room, after, None).await {
                    tracing::warn!(room, error = %e, "catch-up failed");
                }
            }
        }
    }

    /// After PostgreSQL restarts, unlogged presence rows are gone: record ours again.
    async fn reannounce_presence(&self) {
        for (room, user) in self.hub.present_users() {
            self.presence.arrive(room, user).await;
        }
    }

    /// Relays every message after `after` (up to `until`, if given), in seq order.
    pub(crate) async fn catch_up(
        &self,
        room: RoomId,
        mut after: i64,
        until: Option<i64>,
    ) -> Result<(), DbError> {
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached("select pgchat.messages_after($1, $2, $3)::text")
            .await?;
        loop {
            let rows = client
                .query(&stmt, &[&room, &after, &CATCH_UP_PAGE])
                .await?;
            let count = rows.len();
            for row in rows {
                let json: String = row.get(0);
                let seq = crate::relay::seq_of(&json).unwrap_or(after + 1);
                if until.is_some_and(|u| seq > u) {
                    return Ok(());
                }
                self.relay_message(room, seq, &json);
                after = seq;
            }
            if count < CATCH_UP_PAGE as usize {
                return Ok(());
            }
        }
    }

    pub(crate) fn relay_message(&self, room: RoomId, seq: i64, row_json: &str) {
        metrics::counter!("pgchat_messages_out_total").increment(1);
        self.hub.deliver(
            room,
            Event {
                seq: Some(seq),
                skip_user: None,
                frame: protocol::message_frame(room, row_json),
                ephemeral: false,
            },
        );
    }
}
