//! How often one user's typing in one room reaches the database, whatever the value.
//!
//! Every relayed typing change is a write and a doorbell that every daemon reads. A
//! client alternating `isTyping` true/false would otherwise make each frame one of each:
//! a start is written at most once per [`TYPING_THROTTLE`] per (user, room), across all
//! of the user's sockets, and a stop only after a start was written.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::hub::UserId;
use crate::protocol::RoomId;

/// A start (or refresh) of typing is written at most this often per (user, room).
pub const TYPING_THROTTLE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct TypingThrottle {
    // std Mutex: a map lookup under it, never held across an await.
    last: Mutex<HashMap<(UserId, RoomId), Written>>,
}

#[derive(Clone, Copy)]
struct Written {
    /// When the last start was written.
    started: Instant,
    /// Whether the last write was a start (a stop is written only after one).
    typing: bool,
}

impl TypingThrottle {
    /// Whether this change should be written now; records it if so.
    pub fn admit(&self, user: UserId, room: RoomId, is_typing: bool, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap();
        let entry = last.get(&(user, room)).copied();
        let admit = match (is_typing, entry) {
            (true, None) => true,
            (true, Some(w)) => now.duration_since(w.started) >= TYPING_THROTTLE,
            (false, Some(w)) => w.typing,
            (false, None) => false,
        };
        if admit {
            let started = match (is_typing, entry) {
                (true, _) => now,
                (false, Some(w)) => w.started,
                (false, None) => now,
            };
            last.insert(
                (user, room),
                Written {
                    started,
                    typing: is_typing,
                },
            );
        }
        admit
    }

    /// Forgets entries whose window has long passed, so the map holds only recent typists.
    pub fn prune(&self, now: Instant) {
        self.last
            .lock()
            .unwrap()
            .retain(|_, w| now.duration_since(w.started) < TYPING_THROTTLE * 5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_values_write_at_most_a_start_and_a_stop_per_window() {
        let t = TypingThrottle::default();
        let start = Instant::now();
        let mut written = 0;
        for i in 0..1000u64 {
            let at = start + Duration::from_millis(i);
            if t.admit(1, 9, i % 2 == 0, at) {
                written += 1;
            }
        }
        assert_eq!(written, 2, "one start and one stop within the first second");
        // After the window a start is written again.
        assert!(t.admit(1, 9, true, start + TYPING_THROTTLE));
        // Another room or user has its own window.
        assert!(t.admit(2, 9, true, start));
        assert!(t.admit(1, 8, true, start));
    }

    #[test]
    fn a_stop_without_a_written_start_is_not_written() {
        let t = TypingThrottle::default();
        let now = Instant::now();
        assert!(!t.admit(1, 1, false, now));
        assert!(t.admit(1, 1, true, now));
        assert!(t.admit(1, 1, false, now));
        assert!(!t.admit(1, 1, false, now), "already stopped");
        t.prune(now + TYPING_THROTTLE * 6);
        assert!(t.admit(1, 1, true, now + TYPING_THROTTLE * 6));
    }
}
