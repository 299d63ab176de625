//! The doorbells the SQL triggers ring (sql/050, sql/060): a kind and ids, nothing else.
//! Every bus carries them in this text form.
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
}
