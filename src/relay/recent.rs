//! A bounded memory of recent membership changes already acted on.

use std::collections::{HashSet, VecDeque};

use crate::protocol::RoomId;

/// Remembered changes at most; older ones are also refused by age (see `changes`).
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct Recent {
    order: VecDeque<(RoomId, i64)>,
    seen: HashSet<(RoomId, i64)>,
}

impl Recent {
    /// Records (room, rev); false when it was already recorded.
    pub fn first_time(&mut self, room: RoomId, rev: i64) -> bool {
        if !self.seen.insert((room, rev)) {
            return false;
        }
        self.order.push_back((room, rev));
        if self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_its_capacity() {
        let mut r = Recent::default();
        assert!(r.first_time(1, 1));
        assert!(!r.first_time(1, 1));
        for rev in 2..=(CAPACITY as i64 + 1) {
            assert!(r.first_time(1, rev));
        }
        assert!(r.first_time(1, 1), "the oldest was forgotten");
    }
}
