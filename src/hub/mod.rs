//! Room → subscribers, and fan-out over bounded per-connection queues.
//!
//! Every event is serialised once; recipients share the bytes. Producers never wait on
//! a client: a full queue ends that connection (it can resume with `since`). Ephemeral
//! events (typing, presence) are dropped instead once a queue is half full, so they
//! never crowd out a durable one (see `outbound`).
//!
//! A subscription starts *pending*: live events are held while the joining session
//! replays history, then released in order by [`Hub::activate`], so replay and live
//! splice with no gap and no duplicate.
//!
//! Frames of a room's change stream carry `rev` and `prevRev`. The hub writes `prevRev`:
//! the rev of the room's previous stream frame, or, for a socket that joined at a later
//! rev than that, the rev it joined at. So every socket sees an unbroken chain from its
//! `joined` reply on, and a `prevRev` above what a socket last saw means it missed
//! something (after a `resync`, see [`Hub::skip_to`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::RoomId;

mod deliver;
mod event;
mod flush;
mod handle;
pub use flush::FlushDue;
use flush::Unflushed;
mod online_list;
mod roster;
use event::stream_frame_for;
pub use event::Event;
pub use handle::SessionHandle;
pub use online_list::online_json;
use roster::Roster;
pub use roster::{Name, Online, PresenceEntry};

pub type ConnId = u64;
pub type UserId = i64;

/// Events a joining session may have held back before it is closed as too slow.
const MAX_PENDING: usize = 4096;

struct Subscriber {
    handle: Arc<SessionHandle>,
    user_id: UserId,
    /// Highest stream rev this socket knows (its `joined` reply's `lastRev`, then each
    /// stream frame sent to it): a stream event at or below it is a duplicate or predates
    /// the join, and is skipped.
    rev_floor: i64,
    /// Some while the session is still replaying: held events, released on activate.
    pending: Option<Vec<Event>>,
}

#[derive(Default)]
struct Room {
    /// Highest message seq this daemon has relayed for the room (see listener).
    cursor: Option<i64>,
    /// Highest rev of the room's change stream read here (see `relay`): `None` until the
    /// first join here tells where the stream stood.
    rev: Option<i64>,
    /// The rev of the last stream frame delivered to the room's subscribers (or where a
    /// `resync` jumped to): the next stream frame's `prevRev`.
    sent_rev: Option<i64>,
    subscribers: HashMap<ConnId, Subscriber>,
    /// Who is online here, once loaded (see `roster`).
    roster: Option<Roster>,
    /// The room's presence rev the roster reflects (see `roster`): `None` until a whole
    /// read of the room's presence installed it.
    presence_rev: Option<i64>,
}

impl Room {
    fn sockets_of(&self, user: UserId) -> usize {
        self.subscribers
            .values()
            .filter(|s| s.user_id == user)
            .count()
    }
}

#[derive(Default)]
pub struct Hub {
    // std Mutex: nothing awaits while it is held, and fan-out under it is short.
    rooms: Mutex<HashMap<RoomId, Room>>,
    /// A user's sockets here: a handful at most, so a vector, not a table per user.
    users: Mutex<HashMap<UserId, Vec<Arc<SessionHandle>>>>,
    /// Idle sockets that fan-outs queued frames into, to be written by [`Hub::flush`].
    unflushed: Mutex<Unflushed>,
    /// The big flush the flush threads are writing, if any.
    big_flush: Mutex<Option<Arc<flush::Countdown>>>,
    /// Rosters are kept only while LISTEN is up (changed under the `rooms` lock).
    rosters_on: AtomicBool,
    /// Identifies each roster load, so a load overtaken by an invalidation is dropped.
    roster_loads: AtomicU64,
    /// Authenticated sockets added and removed so far (see `memory`).
    socket_changes: AtomicU64,
}

/// What a subscription change meant for the user's presence on this daemon.
#[derive(Debug, PartialEq, Eq)]
pub enum PresenceChange {
    /// First socket of this user in the room here: announce them.
    Arrived,
    /// Last socket of this user in the room here left: announce their departure.
    Departed,
    Unchanged,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub for sockets that queue up to `capacity` frames: a burst is flushed before
    /// it could fill a quarter of that.
    pub fn for_queue(capacity: usize) -> Self {
        let limit = (capacity / 4).clamp(1, flush::MAX_UNFLUSHED_EVENTS);
        Self {
            unflushed: Mutex::new(Unflushed::with_burst_limit(limit)),
            ..Self::default()
        }
    }

    /// Registers an authenticated connection of `user` (for pushes to all their sockets).
    pub fn add_user_socket(&self, user: UserId, handle: Arc<SessionHandle>) {
        self.socket_changes.fetch_add(1, Ordering::Relaxed);
        self.users
            .lock()
            .unwrap()
            .entry(user)
            .or_default()
            .push(handle);
    }

    pub fn remove_user_socket(&self, user: UserId, conn: ConnId) {
        self.socket_changes.fetch_add(1, Ordering::Relaxed);
        let mut users = self.users.lock().unwrap();
        if let Some(sockets) = users.get_mut(&user) {
            sockets.retain(|h| h.conn_id != conn);
            if sockets.is_empty() {
                users.remove(&user);
            }
        }
    }

    /// Authenticated sockets added and removed since the hub began: a storm shows as a
    /// jump.
    pub fn socket_changes(&self) -> u64 {
        self.socket_changes.load(Ordering::Relaxed)
    }

    /// Sends a frame to every socket of a user on this daemon.
    pub fn push_to_user(&self, user: UserId, frame: &Utf8Bytes, except: Option<ConnId>) {
        let users = self.users.lock().unwrap();
        for handle in users.get(&user).into_iter().flatten() {
            if Some(handle.conn_id) != except {
                handle.push(frame.clone());
            }
        }
    }

    /// Subscribes a connection to a room, pending until [`Hub::activate`].
    pub fn subscribe(
        &self,
        room_id: RoomId,
        user: UserId,
        handle: Arc<SessionHandle>,
    ) -> PresenceChange {
        let mut rooms = self.rooms.lock().unwrap();
        let room = rooms.entry(room_id).or_default();
        let first = room.sockets_of(user) == 0;
        let conn = handle.conn_id;
        let previous = room.subscribers.insert(
            conn,
            Subscriber {
                handle,
                user_id: user,
                rev_floor: i64::MAX,
                pending: Some(Vec::new()),
            },
        );
        metrics::gauge!("pgchat_rooms").set(rooms.len() as f64);
        if first && previous.is_none() {
            PresenceChange::Arrived
        } else {
            PresenceChange::Unchanged
        }
    }

    /// Ends the pending phase: held stream events newer than `rev` go out in order, and
    /// from now on events are queued directly. `floor` and `rev` are the room's last seq
    /// and rev as the join read them (its `joined` reply's `lastSeq` and `lastRev`);
    /// returns true when it starts this daemon following the room, so the relay reads
    /// once more whatever rang while it did not know where to start.
    pub fn activate(&self, room_id: RoomId, conn: ConnId, floor: i64, rev: i64) -> bool {
        let mut rooms = self.rooms.lock().unwrap();
        let Some(room) = rooms.get_mut(&room_id) else {
            return false;
        };
        if room.cursor.is_none() {
            room.cursor = Some(floor);
        }
        let started = room.rev.is_none();
        if started {
            room.rev = Some(rev);
        }
        if room.sent_rev.is_none() {
            room.sent_rev = Some(rev);
        }
        let Some(sub) = room.subscribers.get_mut(&conn) else {
            return started;
        };
        sub.rev_floor = rev;
        for event in sub.pending.take().unwrap_or_default() {
            let kind = event.kind();
            if let Some(frame) = stream_frame_for(&mut sub.rev_floor, &event) {
                sub.handle.push_kind(frame, kind);
            }
        }
        started
    }

    pub fn unsubscribe(&self, room_id: RoomId, conn: ConnId) -> PresenceChange {
        let mut rooms = self.rooms.lock().unwrap();
        let Some(room) = rooms.get_mut(&room_id) else {
            return PresenceChange::Unchanged;
        };
        let Some(sub) = room.subscribers.remove(&conn) else {
            return PresenceChange::Unchanged;
        };
        let last = room.sockets_of(sub.user_id) == 0;
        if room.subscribers.is_empty() {
            rooms.remove(&room_id);
        }
        metrics::gauge!("pgchat_rooms").set(rooms.len() as f64);
        if last {
            PresenceChange::Departed
        } else {
            PresenceChange::Unchanged
        }
    }

    /// Removes every socket of `user` from a room (membership ended elsewhere).
    /// Returns the handles removed, for telling them, and whether any were present.
    pub fn evict_user(&self, room_id: RoomId, user: UserId) -> Vec<Arc<SessionHandle>> {
        let mut rooms = self.rooms.lock().unwrap();
        let Some(room) = rooms.get_mut(&room_id) else {
            return Vec::new();
        };
        let conns: Vec<ConnId> = room
            .subscribers
            .iter()
            .filter(|(_, s)| s.user_id == user)
            .map(|(c, _)| *c)
            .collect();
        let evicted = conns
            .iter()
            .filter_map(|c| room.subscribers.remove(c))
            .map(|s| s.handle)
            .collect();
        if room.subscribers.is_empty() {
            rooms.remove(&room_id);
        }
        evicted
    }

    pub fn is_subscribed(&self, room_id: RoomId, conn: ConnId) -> bool {
        let rooms = self.rooms.lock().unwrap();
        rooms
            .get(&room_id)
            .is_some_and(|r| r.subscribers.contains_key(&conn))
    }

    /// The room's relay position, `None` when nobody here is subscribed (nothing to
    /// relay): the highest message seq relayed, and the change-stream rev read (`None`
    /// until a join here set them).
    pub fn position(&self, room_id: RoomId) -> Option<(Option<i64>, Option<i64>)> {
        self.rooms
            .lock()
            .unwrap()
            .get(&room_id)
            .map(|r| (r.cursor, r.rev))
    }

    /// Moves the room's change-stream position forward to `rev`.
    pub fn advance_rev(&self, room_id: RoomId, rev: i64) {
        if let Some(room) = self.rooms.lock().unwrap().get_mut(&room_id) {
            room.rev = Some(room.rev.map_or(rev, |r| r.max(rev)));
        }
    }

    /// Rooms followed here and their change-stream positions, for catching up.
    pub fn positions(&self) -> Vec<(RoomId, i64)> {
        self.rooms
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(id, r)| r.rev.map(|rev| (*id, rev)))
            .collect()
    }

    /// Users with a socket subscribed to the room here.
    pub fn local_users(&self, room_id: RoomId) -> Vec<UserId> {
        let rooms = self.rooms.lock().unwrap();
        let mut users: Vec<UserId> = rooms
            .get(&room_id)
            .map(|r| r.subscribers.values().map(|s| s.user_id).collect())
            .unwrap_or_default();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Rooms with subscribers here.
    pub fn room_ids(&self) -> Vec<RoomId> {
        self.rooms.lock().unwrap().keys().copied().collect()
    }

    /// Users with a socket here.
    pub fn user_ids(&self) -> Vec<UserId> {
        self.users.lock().unwrap().keys().copied().collect()
    }

    /// Whether `user` has a socket here, subscribed to the room or not.
    pub fn has_user(&self, user: UserId) -> bool {
        self.users.lock().unwrap().contains_key(&user)
    }

    /// The fullest outbound queue among the room's subscribers, in frames.
    pub fn max_queued(&self, room_id: RoomId) -> usize {
        let rooms = self.rooms.lock().unwrap();
        rooms.get(&room_id).map_or(0, |room| {
            room.subscribers
                .values()
                .map(|s| s.handle.queue().queued())
                .max()
                .unwrap_or(0)
        })
    }

    /// The room's backlog is too large to replay: every subscriber gets `frame` (telling
    /// it to reload) and the room's position jumps to (`last_seq`, `last_rev`), so no
    /// older message follows.
    pub fn skip_to(&self, room_id: RoomId, last_seq: i64, last_rev: i64, frame: Utf8Bytes) {
        let mut rooms = self.rooms.lock().unwrap();
        let Some(room) = rooms.get_mut(&room_id) else {
            return;
        };
        room.cursor = Some(room.cursor.map_or(last_seq, |c| c.max(last_seq)));
        room.rev = Some(room.rev.map_or(last_rev, |r| r.max(last_rev)));
        // Subscribers' floors stay: the next stream frame's prevRev shows them the jump.
        room.sent_rev = Some(room.sent_rev.map_or(last_rev, |r| r.max(last_rev)));
        for sub in room.subscribers.values_mut() {
            match &mut sub.pending {
                Some(pending) => pending.push(Event::to_all(frame.clone())),
                None => {
                    sub.handle.push(frame.clone());
                }
            }
        }
    }

    /// Every (room, user) with a socket here, for re-announcing presence.
    pub fn present_users(&self) -> Vec<(RoomId, UserId)> {
        let rooms = self.rooms.lock().unwrap();
        let mut out: Vec<(RoomId, UserId)> = rooms
            .iter()
            .flat_map(|(id, r)| r.subscribers.values().map(move |s| (*id, s.user_id)))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    pub fn room_count(&self) -> usize {
        self.rooms.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests;
