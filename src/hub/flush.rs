//! Writing what fan-outs queued into idle sockets: outside the room lock, from the
//! caller's thread for a few sockets, and for a big room by flush threads, one per core,
//! while the caller goes on relaying.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{Hub, SessionHandle};

/// How long a presence announcement may wait for others to share its writes.
pub const ANNOUNCE_DELAY: Duration = Duration::from_millis(100);
/// Events queued since the last flush at which the next flush is due at once: a quarter
/// of the default outbound queue (less for a smaller queue, see [`Hub::for_queue`]), so
/// a burst can never fill an idle socket's queue.
pub const MAX_UNFLUSHED_EVENTS: usize = 256;

/// Sockets a flush writes from its caller's thread; a bigger one goes to the flush
/// threads (handing over costs a wake-up; writing to a socket, a few microseconds).
const FLUSH_CHUNK: usize = 256;

/// Threads a flush may use: one per core.
fn flush_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Sockets still to be written by the flush threads, and who waits for them.
struct Job {
    handles: Vec<Arc<SessionHandle>>,
    done: Arc<Countdown>,
}

/// Jobs left of one flush; its producer waits for zero before handing over the next.
pub(super) struct Countdown {
    left: Mutex<usize>,
    zero: Condvar,
}

impl Countdown {
    fn new(jobs: usize) -> Self {
        Self {
            left: Mutex::new(jobs),
            zero: Condvar::new(),
        }
    }

    fn finish_one(&self) {
        let mut left = self.left.lock().unwrap();
        *left -= 1;
        if *left == 0 {
            self.zero.notify_all();
        }
    }

    fn wait(&self) {
        let mut left = self.left.lock().unwrap();
        while *left > 0 {
            left = self.zero.wait(left).unwrap();
        }
    }
}

/// The flush threads, shared by every hub of the process, started on first use.
struct FlushThreads {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

fn flush_pool() -> &'static FlushThreads {
    static POOL: OnceLock<&'static FlushThreads> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static FlushThreads = Box::leak(Box::new(FlushThreads {
            jobs: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        }));
        for _ in 0..flush_threads() {
            let started = std::thread::Builder::new()
                .name("pgchat-flush".into())
                .spawn(move || pool.work());
            if let Err(e) = started {
                tracing::error!(error = %e, "could not start a flush thread");
            }
        }
        pool
    })
}

impl FlushThreads {
    fn work(&self) {
        loop {
            let job = {
                let mut jobs = self.jobs.lock().unwrap();
                loop {
                    match jobs.pop_front() {
                        Some(job) => break job,
                        None => jobs = self.ready.wait(jobs).unwrap(),
                    }
                }
            };
            job.handles.iter().for_each(|h| h.flush());
            job.done.finish_one();
        }
    }
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
    /// one `sendmsg` per socket, outside the room lock: a few sockets from the caller's
    /// thread, more by the flush threads while the caller returns.
    ///
    /// Whoever calls [`Hub::deliver`] or [`Hub::announce`] must call this when
    /// [`Hub::flush_due`] says: the listener flushes messages once no notification is
    /// waiting (or after a few), and announcements within [`ANNOUNCE_DELAY`], so a burst
    /// reaches each socket in a few writes instead of one per event.
    pub fn flush(&self) {
        let handles = self.unflushed.lock().unwrap().take();
        if handles.len() < 2 * FLUSH_CHUNK {
            handles.iter().for_each(|h| h.flush());
            return;
        }
        // A big room's writes are spread over the cores (each socket's write also runs
        // the loopback or NIC path, ~5 µs, so 5,000 in a row take 25 ms), and the caller
        // goes on relaying meanwhile. Only one big flush is in flight: the caller waits
        // for the previous one first, so frames cannot pile up in sockets waiting their
        // turn beyond what the flush rules allow.
        self.flush_settled();
        let per_thread = handles.len().div_ceil(flush_threads());
        let jobs: Vec<Vec<Arc<SessionHandle>>> =
            handles.chunks(per_thread).map(<[_]>::to_vec).collect();
        let done = Arc::new(Countdown::new(jobs.len()));
        *self.big_flush.lock().unwrap() = Some(done.clone());
        let pool = flush_pool();
        let mut queue = pool.jobs.lock().unwrap();
        for handles in jobs {
            queue.push_back(Job {
                handles,
                done: done.clone(),
            });
        }
        drop(queue);
        pool.ready.notify_all();
    }

    /// Waits until the flush threads have written every big flush handed to them.
    pub fn flush_settled(&self) {
        let previous = self.big_flush.lock().unwrap().take();
        if let Some(previous) = previous {
            previous.wait();
        }
    }
}
