//! What the hub delivers: one event for a room, serialised once, and whether it may be
//! dropped under queue pressure.

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::UserId;
use crate::outbound::Kind;

/// One event for a room, serialised once.
#[derive(Clone)]
pub struct Event {
    /// Message seq, for events that are messages; used to splice replay and live.
    pub seq: Option<i64>,
    /// The room change stream's rev, for events read from it (or committed here, see
    /// [`super::Hub::deliver_own`]): an event at or below the room's position was
    /// delivered already and is skipped, so the two paths never send one change twice.
    pub rev: Option<i64>,
    /// Not delivered to this user's sockets ("others get …").
    pub skip_user: Option<UserId>,
    pub frame: Utf8Bytes,
    /// Typing and presence: dropped rather than queued into a queue half full.
    pub ephemeral: bool,
}

impl Event {
    /// A durable non-message event for everyone in the room.
    pub fn to_all(frame: Utf8Bytes) -> Self {
        Event {
            seq: None,
            rev: None,
            skip_user: None,
            frame,
            ephemeral: false,
        }
    }

    /// A durable non-message event of the room's change stream, for everyone.
    pub fn at_rev(rev: i64, frame: Utf8Bytes) -> Self {
        Event {
            rev: Some(rev),
            ..Self::to_all(frame)
        }
    }

    /// A durable non-message event for everyone in the room but `user`.
    pub fn to_others(user: UserId, frame: Utf8Bytes) -> Self {
        Event {
            skip_user: Some(user),
            ..Self::to_all(frame)
        }
    }

    /// An ephemeral event (typing, presence) for everyone in the room but `user`.
    pub fn ephemeral_to_others(user: UserId, frame: Utf8Bytes) -> Self {
        Event {
            ephemeral: true,
            ..Self::to_others(user, frame)
        }
    }

    pub(super) fn kind(&self) -> Kind {
        kind(self.ephemeral)
    }
}

pub(super) fn kind(ephemeral: bool) -> Kind {
    if ephemeral {
        Kind::Ephemeral
    } else {
        Kind::Durable
    }
}
