//! A socket's per-room state: the rooms it joined. A handful of rooms per socket, so a
//! vector rather than a hash table. (Typing is throttled per user and room, across
//! sockets: see `typing_throttle`.)

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
