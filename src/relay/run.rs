//! The relay's loop: signals from the bus in bursts, the rooms joins woke, and the
//! hub's flush deadlines.
//!
//! Doorbells are taken in bursts: whatever is already waiting when one arrives is read
//! with it, so a room that rang many times is read once.

use tokio_util::sync::CancellationToken;

use super::{Burst, Relay};
use crate::bus::{Doorbell, Signal, Signals};
use crate::hub::FlushDue;

/// Doorbells taken into one burst at most, besides the one that started it.
const MAX_BURST: usize = 1024;

impl Relay {
    /// Relays what the bus rings until it stops or `cancel` fires.
    pub async fn run(self, signals: Signals, cancel: CancellationToken) {
        tokio::select! {
            _ = self.relay(signals) => {}
            _ = cancel.cancelled() => {}
        }
    }

    async fn relay(&self, mut signals: Signals) {
        // When queued announcements must be written if nothing else writes them first.
        let mut deadline: Option<tokio::time::Instant> = None;
        // A signal that ended the previous burst, handled before anything newer.
        let mut next: Option<Signal> = None;
        loop {
            let mut burst = Burst::default();
            let signal = match next.take() {
                Some(signal) => Some(signal),
                None => tokio::select! {
                    s = signals.recv() => match s {
                        Some(signal) => Some(signal),
                        None => break,
                    },
                    _ = self.wakes.woken() => None,
                    // A flush or gathered arrivals are due: handled below.
                    _ = sleep_until(deadline) => None,
                },
            };
            match signal {
                Some(Signal::Ring(bell)) => {
                    burst.add(bell);
                    // Only what is waiting already: a burst never waits for more.
                    for _ in 0..MAX_BURST {
                        match signals.try_recv() {
                            Ok(Signal::Ring(bell)) => burst.add(bell),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Some(Signal::Connected { first }) => self.connected(first).await,
                Some(Signal::Lost) => {
                    self.lost_at
                        .lock()
                        .unwrap()
                        .get_or_insert_with(std::time::SystemTime::now);
                    self.hub.flush();
                    self.hub.flush_settled();
                    // Changes may be missed until the bus is back: no roster can be trusted.
                    self.hub.reset_rosters(false);
                    continue;
                }
                None => {}
            }
            for room in self.wakes.take() {
                if let Some((_, Some(rev))) = self.hub.position(room) {
                    burst.add(Doorbell::Changes { room, rev: rev + 1 });
                }
            }
            for (room, events) in self.wakes.take_arrivals(std::time::Instant::now()) {
                self.hub.announce(room, &events);
            }
            // Doorbells held while this daemon's own writes were in flight, whose
            // changes those writes did not deliver themselves.
            for (room, rev) in self.wakes.take_held() {
                burst.add(Doorbell::Changes { room, rev });
            }
            if !burst.is_empty() {
                self.ring(burst).await;
                // Doorbells that rang while the relay read: its backlog.
                metrics::gauge!("pgchat_listener_backlog").set(signals.len() as f64);
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
            // Arrivals still gathering: come back when they are due.
            if let Some(due) = self.wakes.arrivals_due() {
                let due = tokio::time::Instant::from(due);
                deadline = Some(deadline.map_or(due, |d| d.min(due)));
            }
        }
        self.hub.flush();
        self.hub.flush_settled();
    }

    /// The bus delivers doorbells (again). After a loss some may have been missed:
    /// memberships are re-checked and every room caught up before anything is relayed.
    async fn connected(&self, first: bool) {
        if !first {
            self.resync().await;
            self.reannounce_presence().await;
            self.hub.flush();
        }
        // From here on every doorbell reaches us: rosters can be kept again.
        self.hub.reset_rosters(true);
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
