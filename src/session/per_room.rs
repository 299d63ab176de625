//! A socket's per-room state: the rooms it joined and when it last relayed typing.
//! A handful of rooms per socket, so vectors rather than hash tables.

use tokio::time::Instant;

use crate::protocol::RoomId;

/// Rooms one socket joined: a handful, so a vector rather than a hash table per socket.
#[derive(Default)]
pub(crate) struct JoinedRooms(Vec<RoomId>);

impl JoinedRooms {
    pub(crate) fn insert(&mut self, room: RoomId) {
        if !self.0.contains(&room) {
            self.0.push(room);
        }
    }

    pub(crate) fn remove(&mut self, room: &RoomId) {
        self.0.retain(|r| r != room);
    }

    /// Every joined room, leaving none.
    pub(crate) fn take_all(&mut self) -> Vec<RoomId> {
        std::mem::take(&mut self.0)
    }
}

/// When this socket last relayed `isTyping: true`, per room: a few rooms at most, so a
/// vector (24 bytes in every socket's state, where a hash map took 48).
#[derive(Default)]
pub(crate) struct TypingSent(Vec<(RoomId, Instant)>);

impl TypingSent {
    pub(crate) fn get(&self, room: &RoomId) -> Option<&Instant> {
        self.0.iter().find(|(r, _)| r == room).map(|(_, t)| t)
    }

    pub(crate) fn insert(&mut self, room: RoomId, at: Instant) {
        match self.0.iter_mut().find(|(r, _)| *r == room) {
            Some(entry) => entry.1 = at,
            None => self.0.push((room, at)),
        }
    }

    /// Forgets `room`; returns whether it was there.
    pub(crate) fn remove(&mut self, room: &RoomId) -> bool {
        let before = self.0.len();
        self.0.retain(|(r, _)| r != room);
        self.0.len() != before
    }
}
