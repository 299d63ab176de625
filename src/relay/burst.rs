//! A burst of doorbells, reduced to what must be read.

use crate::bus::Doorbell;
use crate::protocol::RoomId;

/// One burst of doorbells, reduced to what must be read: per room, the highest rev rung
/// and whether presence or typing changed. Rooms keep the order they first rang in.
#[derive(Debug, Default)]
pub struct Burst {
    /// (room, highest rev rung, whether a membership change rang)
    pub changes: Vec<(RoomId, i64, bool)>,
    /// Membership changes by rev, for rooms with no subscribers here.
    pub members: Vec<(RoomId, i64)>,
    pub presence: Vec<RoomId>,
    pub typing: Vec<RoomId>,
}

impl Burst {
    pub fn add(&mut self, bell: Doorbell) {
        match bell {
            Doorbell::Changes { room, rev } => self.add_change(room, rev, false),
            Doorbell::Member { room, rev } => {
                self.add_change(room, rev, true);
                self.members.push((room, rev));
            }
            Doorbell::Presence { room } => {
                if !self.presence.contains(&room) {
                    self.presence.push(room);
                }
            }
            Doorbell::Typing { room } => {
                if !self.typing.contains(&room) {
                    self.typing.push(room);
                }
            }
        }
    }

    fn add_change(&mut self, room: RoomId, rev: i64, member: bool) {
        match self.changes.iter_mut().find(|(r, _, _)| *r == room) {
            Some(entry) => {
                entry.1 = entry.1.max(rev);
                entry.2 |= member;
            }
            None => self.changes.push((room, rev, member)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.presence.is_empty() && self.typing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_reads_each_room_once_at_its_highest_rev() {
        let mut b = Burst::default();
        for p in [
            "c:1:5", "c:2:3", "c:1:7", "m:1:6", "p:3", "p:3", "t:2", "c:1:2",
        ] {
            b.add(Doorbell::parse(p).unwrap());
        }
        assert_eq!(b.changes, vec![(1, 7, true), (2, 3, false)]);
        assert_eq!(b.members, vec![(1, 6)]);
        assert_eq!(b.presence, vec![3]);
        assert_eq!(b.typing, vec![2]);
    }
}
