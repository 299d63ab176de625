//! The doorbells the SQL triggers ring (sql/050, sql/060): a kind and ids, nothing else.
//!
//! Any role that can log in may NOTIFY on any channel, so a doorbell is only a reason to
//! read the tables; it is parsed strictly and anything else is ignored.

use crate::protocol::RoomId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doorbell {
    /// `c:<room>:<rev>`: the room's change stream reached `rev`.
    Changes { room: RoomId, rev: i64 },
    /// `m:<room>:<rev>`: a membership change at `rev` (also read for rooms nobody here
    /// is subscribed to, so a new member's sockets learn of the room).
    Member { room: RoomId, rev: i64 },
    /// `p:<room>`: presence in the room changed.
    Presence { room: RoomId },
    /// `t:<room>`: typing in the room changed.
    Typing { room: RoomId },
}

impl Doorbell {
    pub fn parse(payload: &str) -> Option<Doorbell> {
        let (kind, rest) = payload.split_once(':')?;
        let number = |s: &str| -> Option<i64> {
            // Plain decimal digits only: no sign, no spaces, no leading '+'.
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let with_rev = |rest: &str| -> Option<(RoomId, i64)> {
            let (room, rev) = rest.split_once(':')?;
            Some((number(room)?, number(rev)?))
        };
        match kind {
            "c" => with_rev(rest).map(|(room, rev)| Doorbell::Changes { room, rev }),
            "m" => with_rev(rest).map(|(room, rev)| Doorbell::Member { room, rev }),
            "p" => number(rest).map(|room| Doorbell::Presence { room }),
            "t" => number(rest).map(|room| Doorbell::Typing { room }),
            _ => None,
        }
    }
}

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
    fn doorbells_parse_strictly() {
        assert_eq!(
            Doorbell::parse("c:12:345"),
            Some(Doorbell::Changes { room: 12, rev: 345 })
        );
        assert_eq!(
            Doorbell::parse("m:1:2"),
            Some(Doorbell::Member { room: 1, rev: 2 })
        );
        assert_eq!(Doorbell::parse("p:7"), Some(Doorbell::Presence { room: 7 }));
        assert_eq!(Doorbell::parse("t:7"), Some(Doorbell::Typing { room: 7 }));
        for bad in [
            "",
            "c",
            "c:1",
            "c:1:",
            "c:-1:2",
            "c:+1:2",
            "c: 1:2",
            "p:1:2",
            "x:1",
            "t:",
            "c:99999999999999999999:1",
            r#"{"t":"message","room_id":1,"seq":1}"#,
        ] {
            assert_eq!(Doorbell::parse(bad), None, "{bad:?}");
        }
    }

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
