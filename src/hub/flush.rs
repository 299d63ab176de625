//! Writing what fan-outs queued into idle sockets: from the caller's thread, outside
//! the room lock, and for a big room spread over the cores.

use std::sync::OnceLock;

use super::Hub;

/// Sockets per flush thread: a smaller flush is written by its caller alone (starting a
/// thread costs tens of microseconds; writing to a socket, a few).
const FLUSH_CHUNK: usize = 256;

/// Threads a flush may use: one per core.
fn flush_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Hub {
    /// Writes the frames that deliveries since the last flush queued into idle sockets,
    /// one `sendmsg` per socket, from the caller's thread and outside the room lock.
    ///
    /// Whoever calls [`Hub::deliver`] must call this soon after: the listener does after
    /// each notification, or after a few when more are already waiting, so a burst
    /// (a thousand joins announcing presence) reaches each socket in a few writes
    /// instead of one per event.
    pub fn flush(&self) {
        let handles = std::mem::take(&mut *self.unflushed.lock().unwrap());
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
