//! Giving freed memory back to the system after bursts.
//!
//! A join storm's announcements and handshakes are many short-lived buffers at once;
//! glibc keeps the freed space in its arenas, so after 10,000 joins a daemon's RSS stayed
//! at the storm's peak, about 300 bytes per socket above what the sockets hold. Two
//! moments return it: every presence heartbeat (10 s), and the first quiet second after
//! a storm of socket openings and closings, so an operator watching RSS after a deploy or
//! a reconnect wave sees what the sockets cost, not the wave.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// How often the storm watch looks at the hub's socket count of changes.
pub const STORM_WATCH_EVERY: Duration = Duration::from_secs(1);

/// Socket openings and closings that make a storm worth a trim: below this the arenas
/// hold a few hundred kilobytes at most, not worth the walk.
pub const STORM_SOCKETS: u64 = 500;

/// Decides when a storm of socket changes is over: fed the hub's running count of
/// changes once per tick, it says to trim on the first tick without changes after at
/// least [`STORM_SOCKETS`] of them.
#[derive(Debug, Default)]
pub struct StormWatch {
    last_seen: u64,
    last_trimmed: u64,
}

impl StormWatch {
    pub fn tick(&mut self, changes: u64) -> bool {
        let quiet = changes == self.last_seen;
        self.last_seen = changes;
        if quiet && changes.saturating_sub(self.last_trimmed) >= STORM_SOCKETS {
            self.last_trimmed = changes;
            return true;
        }
        false
    }
}

/// Trims once each storm of socket changes has calmed for a tick; ends on `cancel`.
pub async fn trim_after_storms(hub: Arc<Hub>, cancel: CancellationToken) {
    let mut watch = StormWatch::default();
    let mut tick = tokio::time::interval(STORM_WATCH_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if watch.tick(hub.socket_changes()) {
            return_free_memory();
        }
    }
}

/// Gives the allocator's free pages back to the system. It costs a walk of the free
/// lists (well under a millisecond for a daemon of 10,000 sockets).
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases unused memory of glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_trimmed_once_on_its_first_quiet_tick() {
        let mut watch = StormWatch::default();
        assert!(!watch.tick(300), "changing: not yet");
        assert!(!watch.tick(800), "still changing");
        assert!(watch.tick(800), "first quiet tick after 800 changes");
        assert!(!watch.tick(800), "trimmed already");
        assert!(!watch.tick(900), "a trickle");
        assert!(!watch.tick(900), "quiet, but only 100 since the trim");
        assert!(!watch.tick(1400));
        assert!(watch.tick(1400), "the next storm");
    }

    #[test]
    fn a_trickle_never_trims() {
        let mut watch = StormWatch::default();
        for changes in (0..400).step_by(7) {
            assert!(!watch.tick(changes));
            assert!(!watch.tick(changes), "quiet after {changes} changes");
        }
    }
}
