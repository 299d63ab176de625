//! What wakes the relay besides doorbells: rooms this daemon just started following,
//! a nudge to flush, and this daemon's own message writes in flight.
//!
//! A message sent through a socket here is delivered from the RPC's result
//! ([`crate::hub::Hub::deliver_own`]). Its doorbell usually arrives while the RPC's
//! reply is still on its way, and reading the stream then would only race the writer to
//! the same row. So while a write to a room is in flight here, the room's doorbells are
//! held; when the last such write ends, a held doorbell whose change the writes did not
//! deliver is read as usual.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::protocol::RoomId;

#[derive(Default)]
pub struct Wakes {
    rooms: Mutex<Vec<RoomId>>,
    woken: tokio::sync::Notify,
    /// Per room: own writes in flight, and the highest rev rung meanwhile.
    writing: Mutex<HashMap<RoomId, (u32, Option<i64>)>>,
    /// Held doorbells released by the end of the writes they waited for.
    held: Mutex<Vec<(RoomId, i64)>>,
}

impl Wakes {
    /// The relay reads the room's stream once more (it just started following it).
    pub fn wake(&self, room: RoomId) {
        self.rooms.lock().unwrap().push(room);
        self.woken.notify_one();
    }

    /// Wakes the relay without a room: it flushes what others queued (see
    /// [`crate::hub::Hub::deliver_own`]).
    pub fn nudge(&self) {
        self.woken.notify_one();
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

impl Drop for WriteGuard {
    fn drop(&mut self) {
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
        if let Some(rev) = held {
            self.wakes.held.lock().unwrap().push((self.room, rev));
            self.wakes.woken.notify_one();
        }
    }
}
