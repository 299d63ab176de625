//! The relay: doorbells from a bus → reads of the tables → hub events. A doorbell only
//! rings: a burst of them is reduced to the rooms that rang ([`Burst`]), and what
//! changed is read from the tables through the daemon's narrow privileged functions, so
//! a forged doorbell can cause a read but never a frame. Which bus rings (PostgreSQL
//! LISTEN, an in-memory one, later NATS or Redis) is no concern of the relay's.
//!
//! - [`run`]: the loop: signals in bursts, wakes, flush deadlines, catch-up after a loss
//! - [`changes`]: the room change stream (messages, edits, deletions, read markers,
//!   memberships), read by rev, in pages that are written as they go
//! - [`presence`]: who is online: each room's presence changes after its roster's rev
//! - [`typing`]: who is typing, read per room and compared with what is shown
//!
//! Reads are batched: one query per burst for the change stream, for presence and for
//! typing.

use std::sync::{Arc, Mutex};

use crate::db::Db;
use crate::hub::Hub;
use crate::presence::{Presence, TypingTracker};
use crate::protocol::RoomId;

mod burst;
mod changes;
mod members;
mod presence;
mod recent;
mod run;
mod typing;
mod wakes;

pub use burst::Burst;
pub use presence::presence_event;
pub use typing::{expire_typing, typing_event};
pub use wakes::{Wakes, WriteGuard};

/// Turns doorbells into events for this daemon's sockets.
pub struct Relay {
    pub db: Db,
    pub hub: Arc<Hub>,
    pub presence: Arc<Presence>,
    pub typing: Arc<TypingTracker>,
    /// Frames a socket may queue (`OUTBOUND_QUEUE`): catch-up waits for queues to drain
    /// below half of it between pages.
    pub queue_capacity: usize,
    /// Rooms joins asked to read once more.
    pub wakes: Arc<Wakes>,
    /// Membership changes already told to the member's sockets, so that one rung twice
    /// (or read both by rev and in the stream) is told once.
    told_joins: Mutex<recent::Recent>,
    /// When the bus was lost, until the resync after it.
    lost_at: Mutex<Option<std::time::SystemTime>>,
}

impl Relay {
    pub fn new(
        db: Db,
        hub: Arc<Hub>,
        presence: Arc<Presence>,
        typing: Arc<TypingTracker>,
        queue_capacity: usize,
        wakes: Arc<Wakes>,
    ) -> Self {
        Self {
            db,
            hub,
            presence,
            typing,
            queue_capacity,
            wakes,
            told_joins: Mutex::new(recent::Recent::default()),
            lost_at: Mutex::new(None),
        }
    }

    /// Reads and relays what one burst of doorbells rang for.
    pub async fn ring(&self, burst: Burst) {
        let mut rooms = Vec::new();
        for (room, rev, _) in &burst.changes {
            match self.hub.position(*room) {
                // Followed here, and the stream moved past what was read, unless an own
                // write to the room will deliver it (see `wakes`).
                Some((_, Some(read))) if *rev > read && !self.wakes.hold(*room, *rev) => {
                    rooms.push(*room)
                }
                _ => {}
            }
        }
        if let Err(e) = self.read_changes(&rooms).await {
            tracing::warn!(error = %e, "could not read room changes");
        }
        let unfollowed: Vec<(RoomId, i64)> = burst
            .members
            .iter()
            .copied()
            .filter(|(room, _)| self.hub.position(*room).is_none())
            .collect();
        if let Err(e) = self.member_changes(&unfollowed).await {
            tracing::warn!(error = %e, "could not read membership changes");
        }
        if let Err(e) = self.read_presence(&self.followed(&burst.presence)).await {
            tracing::warn!(error = %e, "could not read presence");
        }
        if let Err(e) = self.read_typing(&self.followed(&burst.typing)).await {
            tracing::warn!(error = %e, "could not read typing");
        }
    }

    /// After the bus was lost and regained, doorbells may have been missed: check
    /// every subscription's membership before relaying anything, then catch every room
    /// up and read presence and typing again.
    pub async fn resync(&self) {
        if let Err(e) = self.recheck_memberships().await {
            tracing::warn!(error = %e, "could not re-check memberships");
        }
        let lost_at = self.lost_at.lock().unwrap().take();
        if let Some(lost_at) = lost_at {
            if let Err(e) = self.memberships_begun(lost_at).await {
                tracing::warn!(error = %e, "could not read memberships begun meanwhile");
            }
        }
        self.catch_up_all().await;
        self.hub.flush();
        let rooms = self.hub.room_ids();
        if let Err(e) = self.read_presence_whole(&rooms).await {
            tracing::warn!(error = %e, "could not read presence");
        }
        if let Err(e) = self.read_typing(&rooms).await {
            tracing::warn!(error = %e, "could not read typing");
        }
    }

    /// The rooms of `rooms` that have subscribers here.
    fn followed(&self, rooms: &[RoomId]) -> Vec<RoomId> {
        rooms
            .iter()
            .copied()
            .filter(|r| self.hub.position(*r).is_some())
            .collect()
    }
}
