//! What the hub delivers: one event for a room, serialised once, and whether it may be
//! dropped under queue pressure.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::UserId;
use crate::outbound::Kind;
use crate::protocol::StreamFrame;

/// One event for a room, serialised once.
#[derive(Clone)]
pub struct Event {
    /// Message seq, for events that are messages: the room's seq cursor follows it.
    pub seq: Option<i64>,
    /// Not delivered to this user's sockets ("others get …").
    pub skip_user: Option<UserId>,
    pub frame: Utf8Bytes,
    /// Typing and presence: dropped rather than queued into a queue half full.
    pub ephemeral: bool,
    /// A frame of the room's change stream: `frame` is filled in by the hub, with the
    /// room's previous stream rev as `prevRev` (kept in `prev_rev`), and subscribers
    /// skip it when they already know its rev.
    pub stream: Option<Arc<StreamFrame>>,
    /// The `prevRev` written into `frame` (stream events only).
    pub prev_rev: i64,
}

impl Event {
    /// A durable non-message event for everyone in the room.
    pub fn to_all(frame: Utf8Bytes) -> Self {
        Event {
            seq: None,
            skip_user: None,
            frame,
            ephemeral: false,
            stream: None,
            prev_rev: 0,
        }
    }

    /// A frame of the room's change stream, for everyone in the room; `seq` when it is
    /// a message's first appearance.
    pub fn stream(frame: StreamFrame, seq: Option<i64>) -> Self {
        Event {
            seq,
            stream: Some(Arc::new(frame)),
            ..Self::to_all(Utf8Bytes::from_static(""))
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

/// A stream event given its place in the room's chain: its frame written with the
/// previous stream frame's rev as `prevRev`; other events as they are.
pub(super) fn chain(sent_rev: &mut Option<i64>, event: &Event) -> Event {
    let Some(stream) = &event.stream else {
        return event.clone();
    };
    let prev = sent_rev.unwrap_or(0);
    *sent_rev = Some(prev.max(stream.rev));
    Event {
        frame: stream.with_prev(prev),
        prev_rev: prev,
        ..event.clone()
    }
}

/// What one subscriber with this rev floor gets of an event: nothing for a stream event
/// it already knows; for a newer one the shared frame, or its own copy when it knows
/// more than the room's previous frame (it joined later), so its chain is unbroken.
pub(super) fn stream_frame_for(rev_floor: &mut i64, event: &Event) -> Option<Utf8Bytes> {
    let Some(stream) = &event.stream else {
        return Some(event.frame.clone());
    };
    if stream.rev <= *rev_floor {
        return None;
    }
    let prev = event.prev_rev.max(*rev_floor);
    *rev_floor = stream.rev;
    Some(if prev == event.prev_rev {
        event.frame.clone()
    } else {
        stream.with_prev(prev)
    })
}
