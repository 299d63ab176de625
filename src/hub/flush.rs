//! Writing what fan-outs queued into idle sockets: from the caller's thread, outside
//! the room lock, and for a big room spread over the cores.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{Hub, SessionHandle};

/// How long a presence announcement may wait for others to share its writes.
pub const ANNOUNCE_DELAY: Duration = Duration::from_millis(50);
/// Events queued since the last flush at which the next flush is due at once: a quarter
/// of the default outbound queue (less for a smaller queue, see [`Hub::for_queue`]), so
/// a burst can never fill an idle socket's queue.
pub const MAX_UNFLUSHED_EVENTS: usize = 256;

/// Sockets per flush thread: a smaller flush is written by its caller alone (starting a
/// thread costs tens of microseconds; writing to a socket, a few).
const FLUSH_CHUNK: usize = 256;

/// Threads a flush may use: one per core.
fn flush_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Sockets with frames queued by fan-outs and not yet written.
pub(super) struct Unflushed {
    handles: Vec<Arc<SessionHandle>>,
    /// Events that queued frames since the last flush.
    events: usize,
    /// One of them was a message or typing change, not only announcements.
    urgent: bool,
    /// When the first of them was queued.
    since: Option<Instant>,
    /// Events at which a flush is due at once.
    burst_limit: usize,
}

impl Default for Unflushed {
    fn default() -> Self {
        Self::with_burst_limit(MAX_UNFLUSHED_EVENTS)
    }
}

impl Unflushed {
    pub(super) fn with_burst_limit(burst_limit: usize) -> Self {
        Self {
            handles: Vec::new(),
            events: 0,
            urgent: false,
            since: None,
            burst_limit,
        }
    }

    fn take(&mut self) -> Vec<Arc<SessionHandle>> {
        (self.events, self.urgent, self.since) = (0, false, None);
        std::mem::take(&mut self.handles)
    }

    pub(super) fn add(
        &mut self,
        handles: &mut Vec<Arc<SessionHandle>>,
        events: usize,
        urgent: bool,
    ) {
        self.handles.append(handles);
        self.events += events;
        self.urgent |= urgent;
        self.since.get_or_insert_with(Instant::now);
    }
}

/// When the frames fan-outs queued must be written, for the relay to decide.
#[derive(Debug, PartialEq, Eq)]
pub enum FlushDue {
    /// Nothing is queued.
    Nothing,
    /// A message or typing change is queued: flush once no notification is waiting.
    Soon,
    /// Only presence announcements are queued: flush at this instant at the latest.
    By(Instant),
    /// So many events are queued that an idle socket's queue could fill: flush now.
    Now,
}

impl Hub {
    /// How urgently the queued frames need a [`Hub::flush`].
    pub fn flush_due(&self) -> FlushDue {
        let unflushed = self.unflushed.lock().unwrap();
        match unflushed.since {
            None => FlushDue::Nothing,
            Some(_) if unflushed.events >= unflushed.burst_limit => FlushDue::Now,
            Some(_) if unflushed.urgent => FlushDue::Soon,
            Some(since) => FlushDue::By(since + ANNOUNCE_DELAY),
        }
    }

    /// Writes the frames that deliveries since the last flush queued into idle sockets,
    /// one `sendmsg` per socket, from the caller's thread and outside the room lock.
    ///
    /// Whoever calls [`Hub::deliver`] or [`Hub::announce`] must call this when
    /// [`Hub::flush_due`] says: the listener flushes messages once no notification is
    /// waiting (or after a few), and announcements within [`ANNOUNCE_DELAY`], so a burst
    /// reaches each socket in a few writes instead of one per event.
    pub fn flush(&self) {
        let handles = self.unflushed.lock().unwrap().take();
        let workers = (handles.len() / FLUSH_CHUNK).clamp(1, flush_threads());
        if workers == 1 {
            handles.iter().for_each(|h| h.flush());
            return;
        }
        // A big room's writes are spread over the cores: each socket's write also runs
        // the loopback or NIC path, ~7 µs, so 5,000 in a row took 35 ms on one thread.
        let per_worker = handles.len().div_ceil(workers);
        std::thread::scope(|scope| {
            let mut chunks = handles.chunks(per_worker);
            let own = chunks.next().unwrap_or_default();
            for chunk in chunks {
                let spawned = std::thread::Builder::new()
                    .name("pgchat-flush".into())
                    .spawn_scoped(scope, move || chunk.iter().for_each(|h| h.flush()));
                if spawned.is_err() {
                    chunk.iter().for_each(|h| h.flush());
                }
            }
            own.iter().for_each(|h| h.flush());
        });
    }
}
