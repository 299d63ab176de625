//! How often one user's typing in one room reaches the database, whatever the value.
//!
//! Every relayed typing change is a write and a doorbell that every daemon reads. A
//! client alternating `isTyping` true/false would otherwise make each frame one of each.
//! Per (user, room), across all of the user's sockets:
//! - a change of state (start after stop, stop after start) is written at once, within a
//!   budget of [`TYPING_WRITES_PER_WINDOW`] writes per [`TYPING_THROTTLE`]; so a user who
//!   sends a message and starts typing the next one is shown at once;
//! - a refresh (start while started) is written at most once per [`TYPING_THROTTLE`];
//! - a stop is written only after a start was.
//!
//! A change over budget is dropped: a start shows with the client's next refresh, a stop
//! lets the indicator run out by itself (`TYPING_TTL_MS`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::hub::UserId;
use crate::protocol::RoomId;

/// The window of the write budget, and the least time between two refreshes.
pub const TYPING_THROTTLE: Duration = Duration::from_secs(2);
/// Typing writes per (user, room) per [`TYPING_THROTTLE`], at most.
pub const TYPING_WRITES_PER_WINDOW: u32 = 4;

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
    /// When the current budget window began, and the writes made in it.
    window: Instant,
    writes: u32,
}

impl TypingThrottle {
    /// Whether this change should be written now; records it if so.
    pub fn admit(&self, user: UserId, room: RoomId, is_typing: bool, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap();
        let Some(w) = last.get_mut(&(user, room)) else {
            if is_typing {
                last.insert(
                    (user, room),
                    Written {
                        started: now,
                        typing: true,
                        window: now,
                        writes: 1,
                    },
                );
            }
            return is_typing;
        };
        if now.duration_since(w.window) >= TYPING_THROTTLE {
            w.window = now;
            w.writes = 0;
        }
        let wanted = match (is_typing, w.typing) {
            (true, true) => now.duration_since(w.started) >= TYPING_THROTTLE,
            (true, false) | (false, true) => true,
            (false, false) => false,
        };
        if !wanted || w.writes >= TYPING_WRITES_PER_WINDOW {
            return false;
        }
        w.writes += 1;
        w.typing = is_typing;
        if is_typing {
            w.started = now;
        }
        true
    }

    /// Forgets entries whose window has long passed, so the map holds only recent typists.
    pub fn prune(&self, now: Instant) {
        self.last
            .lock()
            .unwrap()
            .retain(|_, w| now.duration_since(w.started.max(w.window)) < TYPING_THROTTLE * 5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_values_write_at_most_the_budget_per_window() {
        let t = TypingThrottle::default();
        let start = Instant::now();
        let mut written = 0;
        for i in 0..1000u64 {
            let at = start + Duration::from_millis(i);
            if t.admit(1, 9, i % 2 == 0, at) {
                written += 1;
            }
        }
        assert_eq!(
            written, TYPING_WRITES_PER_WINDOW,
            "the budget within the first second"
        );
        // After the window a change is written again.
        assert!(t.admit(1, 9, true, start + TYPING_THROTTLE));
        // Another room or user has its own budget.
        assert!(t.admit(2, 9, true, start));
        assert!(t.admit(1, 8, true, start));
    }

    #[test]
    fn a_start_right_after_a_stop_is_written() {
        // Type, send (stop), type the next message: shown at once, not after a refresh.
        let t = TypingThrottle::default();
        let now = Instant::now();
        assert!(t.admit(1, 1, true, now));
        assert!(t.admit(1, 1, false, now + Duration::from_millis(300)));
        assert!(t.admit(1, 1, true, now + Duration::from_millis(600)));
    }

    #[test]
    fn refreshes_are_written_once_per_window() {
        let t = TypingThrottle::default();
        let now = Instant::now();
        assert!(t.admit(1, 1, true, now));
        assert!(!t.admit(1, 1, true, now + Duration::from_millis(500)));
        assert!(!t.admit(1, 1, true, now + TYPING_THROTTLE - Duration::from_millis(1)));
        assert!(t.admit(1, 1, true, now + TYPING_THROTTLE));
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
