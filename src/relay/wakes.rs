//! What wakes the relay besides doorbells: rooms this daemon just started following,
//! its own users' arrivals to announce, and its own message writes in flight.
//!
//! A message sent through a socket here is delivered from the RPC's result
//! ([`crate::hub::Hub::deliver_own`]). Its doorbell usually arrives while the RPC's
//! reply is still on its way, and reading the stream then would only race the writer to
//! the same row. So while a write to a room is in flight here, the room's doorbells are
//! held; when the last such write ends, a held doorbell whose change the writes did not
//! deliver is read as usual.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::hub::{Event, Hub};
use crate::protocol::RoomId;

#[derive(Default)]
pub struct Wakes {
    rooms: Mutex<Vec<RoomId>>,
    woken: tokio::sync::Notify,
    /// Per room: own writes in flight, and the highest rev rung meanwhile.
    writing: Mutex<HashMap<RoomId, (u32, Option<i64>)>>,
    /// Held doorbells released by the end of the writes they waited for.
    held: Mutex<Vec<(RoomId, i64)>>,
    arrivals: Mutex<Arrivals>,
}

/// Arrivals of this daemon's own users, announced by the relay in one batch per room,
/// and when the oldest of them came.
type Arrivals = (Vec<(RoomId, Event)>, Option<Instant>);

/// How long arrivals gather before the relay announces them. Each batch costs a pass
/// over the room's sockets (a lock and a queue each, then a write): in a join storm into
/// a room of 5,000, batches taken at every turn of the relay held a few arrivals each,
/// and those passes were the daemon's busiest work. Announcements wait up to
/// `ANNOUNCE_DELAY` (100 ms) for their write anyway; this adds at most its own length.
pub const ARRIVAL_GATHER: Duration = Duration::from_millis(25);

impl Wakes {
    /// The relay reads the room's stream once more (it just started following it).
    pub fn wake(&self, room: RoomId) {
        self.rooms.lock().unwrap().push(room);
        self.woken.notify_one();
    }

    /// Announces a user's arrival here to the room's other sockets. The relay writes
    /// what gathered in one batch per room: in a join storm, one announcement per join,
    /// each queued into every socket of a big room under the hub's lock, held up every
    /// other join.
    pub fn announce_arrival(&self, room: RoomId, event: Event) {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.0.push((room, event));
        if arrivals.1.is_none() {
            // The first of a batch: the relay learns when to take it.
            arrivals.1 = Some(Instant::now());
            self.woken.notify_one();
        }
    }

    /// When the gathered arrivals are due, if any are waiting.
    pub(super) fn arrivals_due(&self) -> Option<Instant> {
        self.arrivals
            .lock()
            .unwrap()
            .1
            .map(|since| since + ARRIVAL_GATHER)
    }

    /// The arrivals gathered so far, grouped by room in the order they came, once they
    /// have gathered for [`ARRIVAL_GATHER`] (none before).
    pub(super) fn take_arrivals(&self, now: Instant) -> Vec<(RoomId, Vec<Event>)> {
        let arrivals = {
            let mut arrivals = self.arrivals.lock().unwrap();
            match arrivals.1 {
                Some(since) if since + ARRIVAL_GATHER <= now => {
                    arrivals.1 = None;
                    std::mem::take(&mut arrivals.0)
                }
                _ => return Vec::new(),
            }
        };
        let mut by_room: Vec<(RoomId, Vec<Event>)> = Vec::new();
        for (room, event) in arrivals {
            match by_room.iter_mut().find(|(r, _)| *r == room) {
                Some((_, events)) => events.push(event),
                None => by_room.push((room, vec![event])),
            }
        }
        by_room
    }

    /// An own write to the room starts; its end is the guard's drop (however the call
    /// ends, a dropped future included).
    pub fn writing(self: &Arc<Self>, room: RoomId) -> WriteGuard {
        self.writing.lock().unwrap().entry(room).or_default().0 += 1;
        WriteGuard {
            wakes: self.clone(),
            room,
        }
    }

    /// Holds a doorbell for the room if an own write to it is in flight.
    pub(super) fn hold(&self, room: RoomId, rev: i64) -> bool {
        match self.writing.lock().unwrap().get_mut(&room) {
            Some((_, held)) => {
                *held = Some(held.map_or(rev, |h| h.max(rev)));
                true
            }
            None => false,
        }
    }

    pub(super) fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.woken.notified()
    }

    pub(super) fn take(&self) -> Vec<RoomId> {
        std::mem::take(&mut *self.rooms.lock().unwrap())
    }

    pub(super) fn take_held(&self) -> Vec<(RoomId, i64)> {
        std::mem::take(&mut *self.held.lock().unwrap())
    }
}

/// One own write in flight; see [`Wakes::writing`].
pub struct WriteGuard {
    wakes: Arc<Wakes>,
    room: RoomId,
}

impl WriteGuard {
    /// The write ended and its change went out (or not) through `hub`: a doorbell held
    /// for a change the hub has delivered by now does not wake the relay. Each own
    /// message's doorbell is held this way, so waking the relay only to find it
    /// delivered cost a wake-up and a turn of the relay per message.
    pub fn end(self, hub: &Hub) {
        self.release(|room, rev| {
            hub.position(room)
                .is_some_and(|(_, read)| read.is_some_and(|read| read >= rev))
        });
        std::mem::forget(self);
    }

    /// Ends this write; when it was the room's last in flight, hands a held doorbell
    /// that is not `delivered` yet to the relay.
    fn release(&self, delivered: impl FnOnce(RoomId, i64) -> bool) {
        let mut writing = self.wakes.writing.lock().unwrap();
        let Some((count, held)) = writing.get_mut(&self.room) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        let held = *held;
        writing.remove(&self.room);
        drop(writing);
        // The relay reads only if the rev is past what was delivered by then.
        if let Some(rev) = held.filter(|rev| !delivered(self.room, *rev)) {
            self.wakes.held.lock().unwrap().push((self.room, rev));
            self.wakes.woken.notify_one();
        }
    }
}

/// A write that ended without [`WriteGuard::end`] (failed, or its future dropped): the
/// relay checks any held doorbell itself.
impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.release(|_, _| false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::SessionHandle;

    /// A hub following room 10, read up to rev `read`.
    fn hub_at(read: i64) -> Hub {
        let hub = Hub::new();
        hub.subscribe(10, 7, Arc::new(SessionHandle::new(1, 16, None)));
        hub.activate(10, 1, 0, read);
        hub
    }

    #[test]
    fn a_held_doorbell_the_write_delivered_does_not_wake_the_relay() {
        let wakes = Arc::new(Wakes::default());
        let hub = hub_at(5);
        let writing = wakes.writing(10);
        assert!(wakes.hold(10, 5));
        writing.end(&hub);
        assert!(wakes.take_held().is_empty());
        // The room is no longer being written: the next doorbell is not held.
        assert!(!wakes.hold(10, 6));
    }

    #[test]
    fn a_held_doorbell_past_what_was_delivered_goes_to_the_relay() {
        let wakes = Arc::new(Wakes::default());
        let hub = hub_at(5);
        let first = wakes.writing(10);
        let second = wakes.writing(10);
        assert!(wakes.hold(10, 7));
        // Another write is still in flight: it may deliver rev 7 itself.
        first.end(&hub);
        assert!(wakes.take_held().is_empty());
        second.end(&hub);
        assert_eq!(wakes.take_held(), vec![(10, 7)]);
    }

    #[test]
    fn a_write_that_fails_hands_its_held_doorbell_to_the_relay() {
        let wakes = Arc::new(Wakes::default());
        let writing = wakes.writing(10);
        assert!(wakes.hold(10, 5));
        drop(writing);
        assert_eq!(wakes.take_held(), vec![(10, 5)]);
    }
}
