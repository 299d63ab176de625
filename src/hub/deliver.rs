//! Delivery of a room's events to its subscribers, under the rooms lock: the prevRev
//! chain, the skip of stream events already delivered, held events of joining sockets,
//! and the sockets a flush must write.

use super::event::{chain, kind, stream_frame_for};
use super::{handle, Event, Hub, Room, MAX_PENDING};
use crate::outbound::Queued;
use crate::protocol::RoomId;

impl Hub {
    /// Delivers an event to a room's subscribers. Message events (with seq) advance the
    /// room's cursor; stream events take the next place in the room's `prevRev` chain
    /// and are skipped for subscribers whose rev floor already covers them.
    /// Frames for idle sockets are only queued: [`Hub::flush`] writes them, at once
    /// when the relay has nothing more waiting (see [`Hub::flush_due`]).
    pub fn deliver(&self, room_id: RoomId, event: Event) -> usize {
        self.deliver_all(room_id, std::slice::from_ref(&event), true)
    }

    /// Delivers presence announcements, in order: like [`Hub::deliver`], but their
    /// writes may wait a little (see [`FlushDue::By`]), and a batch is queued into each
    /// socket under one lock. A join storm announces every member to every member
    /// (12.5 M frames for 5,000), so its cost per frame is what matters. Announcements
    /// are ephemeral, whatever their constructor said.
    pub fn announce(&self, room_id: RoomId, events: &[Event]) -> usize {
        self.deliver_all(room_id, events, false)
    }

    /// Delivers a message this daemon's own socket just committed, from the RPC's result
    /// (the row as the database returned it in the writer's transaction, not a
    /// doorbell), when it is the room's next change: the relay has delivered everything
    /// before it, so nothing can come out of order, and the relay skips it when it reads
    /// the stream. Otherwise returns false, and the relay delivers it as usual. This
    /// spares the writer's daemon the doorbell's read on the busiest path.
    pub fn deliver_own(&self, room_id: RoomId, event: Event) -> bool {
        let (Some(rev), Some(seq)) = (event.stream.as_ref().map(|s| s.rev), event.seq) else {
            return false;
        };
        let next = |room: &Room| room.rev == Some(rev - 1) && room.cursor.is_some_and(|c| seq > c);
        self.deliver_checked(room_id, std::slice::from_ref(&event), true, next)
            .is_some()
    }

    /// `urgent`: durable-or-not per event, written at once (not an announcement).
    fn deliver_all(&self, room_id: RoomId, events: &[Event], urgent: bool) -> usize {
        self.deliver_checked(room_id, events, urgent, |_| true)
            .unwrap_or(0)
    }

    /// Delivers `events` if `check` holds for the room, under the same lock; `None` if it
    /// did not (or the room has no subscribers here).
    fn deliver_checked(
        &self,
        room_id: RoomId,
        events: &[Event],
        urgent: bool,
        check: impl FnOnce(&Room) -> bool,
    ) -> Option<usize> {
        let mut to_flush = Vec::new();
        // One socket's share of `events`, reused from socket to socket.
        let mut share = Vec::with_capacity(events.len());
        let mut rooms = self.rooms.lock().unwrap();
        let room = rooms.get_mut(&room_id)?;
        if !check(room) {
            return None;
        }
        // Stream events at or below the room's position went out already (the writer's
        // daemon delivers its own, see `deliver_own`; the relay may read it again).
        let position = room.rev;
        let fresh = |e: &Event| match (e.stream.as_ref().map(|s| s.rev), position) {
            (Some(rev), Some(at)) => rev > at,
            _ => true,
        };
        // Stream events get their place in the chain (announcements never are stream
        // events: they go through untouched, with no copy).
        let events: std::borrow::Cow<[Event]> = if events.iter().any(|e| e.stream.is_some()) {
            std::borrow::Cow::Owned(
                events
                    .iter()
                    .filter(|e| fresh(e))
                    .map(|e| chain(&mut room.sent_rev, e))
                    .collect(),
            )
        } else {
            std::borrow::Cow::Borrowed(events)
        };
        let events = &*events;
        if let Some(rev) = events
            .iter()
            .filter_map(|e| e.stream.as_ref().map(|s| s.rev))
            .max()
        {
            room.rev = Some(room.rev.map_or(rev, |r| r.max(rev)));
        }
        if let Some(seq) = events.iter().filter_map(|e| e.seq).max() {
            room.cursor = Some(room.cursor.map_or(seq, |c| c.max(seq)));
        }
        let mut delivered = 0;
        let mut awaits_flush = false;
        for sub in room.subscribers.values_mut() {
            for event in events {
                if event.skip_user == Some(sub.user_id) {
                    continue;
                }
                let ephemeral = event.ephemeral || !urgent;
                if let Some(pending) = &mut sub.pending {
                    // Held events follow the queue's rule: ephemeral ones go first.
                    if ephemeral && pending.len() * 2 >= MAX_PENDING {
                        handle::dropped_ephemeral(1);
                    } else if pending.len() >= MAX_PENDING {
                        sub.handle.close_too_slow();
                    } else {
                        pending.push(Event {
                            ephemeral,
                            ..event.clone()
                        });
                    }
                    continue;
                }
                let Some(frame) = stream_frame_for(&mut sub.rev_floor, event) else {
                    continue;
                };
                share.push((frame, kind(ephemeral)));
            }
            if share.is_empty() {
                continue;
            }
            let count = share.len();
            let Some(pushed) = sub.handle.push_fanout(share.drain(..)) else {
                // Refused; the drain emptied `share` even so.
                continue;
            };
            delivered += count - pushed.dropped;
            match pushed.queued {
                Queued::FlushPromised => {
                    awaits_flush = true;
                    to_flush.push(sub.handle.clone());
                }
                Queued::WithPromisedFlush => awaits_flush = true,
                Queued::BySession => {}
            }
        }
        drop(rooms);
        // Counted even when every socket it reached was promised a flush earlier: how
        // many events a flush may find queued is what bounds a socket's queue.
        if awaits_flush {
            self.unflushed
                .lock()
                .unwrap()
                .add(&mut to_flush, events.len(), urgent);
        }
        metrics::counter!("pgchat_deliveries_total").increment(delivered as u64);
        Some(delivered)
    }
}
