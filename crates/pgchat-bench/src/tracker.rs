//! Per-receiver delivery bookkeeping: which messages arrived, twice, or out of order.
//!
//! A receiver's deliveries in a room form one stream ordered by the room's `seq` when
//! the server sends one, or else one stream per sender ordered by the sender's counter.

use std::collections::HashSet;

/// Keys this far past the first one go to the overflow set instead of the bitmap.
const BITMAP_SPAN: u64 = 1 << 24;

#[derive(Debug, Default)]
struct Stream {
    base: Option<u64>,
    bits: Vec<u64>,
    overflow: HashSet<u64>,
    max: Option<u64>,
}

impl Stream {
    /// Marks `key` seen; returns whether it was new.
    fn insert(&mut self, key: u64) -> bool {
        let base = *self.base.get_or_insert(key);
        if key < base || key - base >= BITMAP_SPAN {
            return self.overflow.insert(key);
        }
        let idx = (key - base) as usize;
        let (word, bit) = (idx / 64, idx % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let new = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        new
    }
}

/// What one delivery was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    InOrder,
    OutOfOrder,
    Duplicate,
}

#[derive(Debug, Default)]
pub struct Tracker {
    /// (room, stream) → stream: one per room when the server sends `seq`, so a short
    /// vector searched in place (a hash lookup per delivery showed in the bench's profile).
    streams: Vec<((i64, u64), Stream)>,
    pub delivered: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Tracker {
    /// Records one delivery in `room`: by `seq` when given, else by (sender, n).
    pub fn record(&mut self, room: i64, seq: Option<i64>, sender: u64, n: u64) -> Seen {
        let (stream, key) = match seq {
            Some(s) if s >= 0 => (0, s as u64),
            _ => (sender + 1, n),
        };
        let id = (room, stream);
        let at = match self.streams.iter().position(|(k, _)| *k == id) {
            Some(at) => at,
            None => {
                self.streams.push((id, Stream::default()));
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[at].1;
        self.delivered += 1;
        if !s.insert(key) {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        self.unique += 1;
        match s.max {
            Some(max) if key < max => {
                self.out_of_order += 1;
                Seen::OutOfOrder
            }
            _ => {
                s.max = Some(key);
                Seen::InOrder
            }
        }
    }

    /// The highest `seq` received in `room` (servers that send `seq`).
    pub fn last_seq(&self, room: i64) -> Option<u64> {
        let (_, s) = self.streams.iter().find(|(k, _)| *k == (room, 0))?;
        s.max
    }

    pub fn merge_counts(&mut self, other: &Tracker) {
        self.delivered += other.delivered;
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_by_seq() {
        let mut t = Tracker::default();
        for seq in 1..=100 {
            assert_eq!(t.record(1, Some(seq), 9, 0), Seen::InOrder);
        }
        assert_eq!(
            (t.delivered, t.unique, t.duplicates, t.out_of_order),
            (100, 100, 0, 0)
        );
    }

    #[test]
    fn duplicates_and_reordering_by_seq() {
        let mut t = Tracker::default();
        assert_eq!(t.record(1, Some(1), 0, 0), Seen::InOrder);
        assert_eq!(t.record(1, Some(3), 0, 0), Seen::InOrder);
        assert_eq!(t.record(1, Some(2), 0, 0), Seen::OutOfOrder);
        assert_eq!(t.record(1, Some(3), 0, 0), Seen::Duplicate);
        assert_eq!(t.record(1, Some(1), 0, 0), Seen::Duplicate);
        assert_eq!(
            (t.delivered, t.unique, t.duplicates, t.out_of_order),
            (5, 3, 2, 1)
        );
    }

    #[test]
    fn rooms_are_separate_streams() {
        let mut t = Tracker::default();
        assert_eq!(t.record(1, Some(5), 0, 0), Seen::InOrder);
        assert_eq!(t.record(2, Some(1), 0, 0), Seen::InOrder);
        assert_eq!(t.record(2, Some(5), 0, 0), Seen::InOrder);
        assert_eq!(t.out_of_order + t.duplicates, 0);
    }

    #[test]
    fn without_seq_each_sender_is_a_stream() {
        let mut t = Tracker::default();
        assert_eq!(t.record(1, None, 1, 0), Seen::InOrder);
        assert_eq!(t.record(1, None, 2, 0), Seen::InOrder);
        assert_eq!(t.record(1, None, 1, 1), Seen::InOrder);
        assert_eq!(t.record(1, None, 2, 2), Seen::InOrder);
        assert_eq!(t.record(1, None, 2, 1), Seen::OutOfOrder);
        assert_eq!(t.record(1, None, 1, 1), Seen::Duplicate);
    }

    #[test]
    fn keys_below_the_first_or_far_away_still_count() {
        let mut t = Tracker::default();
        assert_eq!(t.record(1, Some(10), 0, 0), Seen::InOrder);
        assert_eq!(t.record(1, Some(4), 0, 0), Seen::OutOfOrder);
        assert_eq!((t.last_seq(1), t.last_seq(2)), (Some(10), None));
        assert_eq!(t.record(1, Some(4), 0, 0), Seen::Duplicate);
        let far = 10 + BITMAP_SPAN as i64 + 5;
        assert_eq!(t.record(1, Some(far), 0, 0), Seen::InOrder);
        assert_eq!(t.record(1, Some(far), 0, 0), Seen::Duplicate);
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = Tracker::default();
        a.record(1, Some(1), 0, 0);
        let mut b = Tracker::default();
        b.record(1, Some(1), 0, 0);
        b.record(1, Some(1), 0, 0);
        a.merge_counts(&b);
        assert_eq!((a.delivered, a.unique, a.duplicates), (3, 2, 1));
    }
}
