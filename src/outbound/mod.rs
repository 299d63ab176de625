//! One socket's outbound queue: bounded in frames, never blocks a producer, and holds no
//! memory while idle (a channel would keep its first block allocated for the socket's
//! whole life, and blocks from the largest burst after it).
//!
//! Two writers share a socket, one at a time: its session's task, and a room's fan-out.
//! When a fan-out queues a frame into an idle plain-TCP socket (nothing queued, nobody
//! writing), the producer writes it itself with one non-blocking `sendmsg` once it holds
//! no hub lock ([`Outbound::flush`]), instead of waking the socket's task to do it: in a
//! room of 5,000, a wake, poll and re-park per delivery was a fifth of the daemon's CPU.
//! What a direct write cannot finish (the socket buffer is full) stays here, and the
//! session is woken to finish it with ordinary readiness-driven writes.
//!
//! Under pressure ephemeral frames go first: once the queue is half full, typing and
//! presence frames are dropped instead of queued, so the other half stays for durable
//! frames (messages, edits, read markers, membership), which are never dropped: a
//! durable frame that finds the queue full closes the socket (4003) so the client
//! resumes with `since`.

mod direct;

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};
use std::task::{Poll, Waker};

use tokio_tungstenite::tungstenite::Utf8Bytes;

#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    Full,
    Closed,
}

/// Whether a frame may be dropped under queue pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Must arrive, or the socket is closed so the client resumes.
    Durable,
    /// Typing and presence: stale within seconds; dropped once the queue is half full.
    Ephemeral,
}

/// What a fan-out push of several frames did.
#[derive(Debug, PartialEq, Eq)]
pub struct Pushed {
    pub queued: Queued,
    /// Ephemeral frames dropped because the queue was at least half full.
    pub dropped: usize,
}

/// What a fan-out push left to its producer.
#[derive(Debug, PartialEq, Eq)]
pub enum Queued {
    /// The session writes it (it was woken, or is writing and looks again after).
    BySession,
    /// The socket was idle: the producer must call [`Outbound::flush`], holding no lock.
    FlushPromised,
    /// An earlier push promised a flush that has not run yet: it takes this frame too.
    WithPromisedFlush,
}

pub struct Outbound {
    // std Mutex: held only to move frames in or out, or for one non-blocking write of an
    // idle socket; never across an await.
    frames: Mutex<Frames>,
    capacity: u32,
    /// The socket's descriptor for direct writes, or -1 (not a plain socket). Used only
    /// under the `frames` lock while not `closed`: the session closes the queue before it
    /// drops the socket, so a descriptor number reused by a later connection is never
    /// written to.
    fd: RawFd,
}

struct Frames {
    queue: VecDeque<Utf8Bytes>,
    /// The unsent bytes of a frame a direct write sent in part: they go out first.
    rest: Option<Box<[u8]>>,
    closed: bool,
    /// Set by [`Outbound::interrupt`]: the consumer must look at its session's state.
    interrupted: bool,
    /// A producer queued into an idle socket and will call [`Outbound::flush`].
    flush_promised: bool,
    /// The session is writing: nobody else may until it is done.
    session_writing: bool,
    /// The session is carrying out a client's command: its reply goes out before any
    /// event queued meanwhile (a sender's `ack` before the broadcast of its message).
    session_busy: bool,
    /// The one consumer task, while it waits. A slot here instead of a `Notify` beside
    /// the lock: 16 bytes less per socket, and that kept the handle in a smaller
    /// allocation class.
    waker: Option<Waker>,
}

/// What the session takes to write, in this order.
#[derive(Default)]
pub struct Batch {
    /// The rest of a frame a direct write began (raw bytes, header included).
    pub rest: Option<Box<[u8]>>,
    pub frames: Vec<Utf8Bytes>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.rest.is_none() && self.frames.is_empty()
    }
}

impl Outbound {
    /// A queue of up to `capacity` frames; `fd` is the socket's descriptor when the
    /// transport is a plain socket that fan-outs may write to directly.
    pub fn new(capacity: usize, fd: Option<RawFd>) -> Self {
        Self {
            frames: Mutex::new(Frames {
                queue: VecDeque::new(),
                rest: None,
                closed: false,
                interrupted: false,
                flush_promised: false,
                session_writing: false,
                session_busy: false,
                waker: None,
            }),
            capacity: capacity.clamp(1, u32::MAX as usize) as u32,
            fd: fd.unwrap_or(-1),
        }
    }

    /// Queues a durable frame and wakes the session to write it.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), PushError> {
        self.push_kind(frame, Kind::Durable).map(|_| ())
    }

    /// Queues a frame and wakes the session to write it. `Ok(false)`: an ephemeral
    /// frame dropped because the queue is at least half full.
    pub fn push_kind(&self, frame: Utf8Bytes, kind: Kind) -> Result<bool, PushError> {
        let mut frames = self.frames.lock().unwrap();
        if !frames.enqueue(frame, kind, self.capacity)? {
            return Ok(false);
        }
        wake(frames);
        Ok(true)
    }

    /// Queues a durable frame of a fan-out. Into an idle socket it promises a direct
    /// write instead of waking the session: the caller must then call [`Outbound::flush`].
    pub fn push_fanout(&self, frame: Utf8Bytes) -> Result<Queued, PushError> {
        self.push_fanout_all(std::iter::once((frame, Kind::Durable)))
            .map(|pushed| pushed.queued)
    }

    /// Queues frames of fan-outs, in order, under one lock; as [`Outbound::push_fanout`].
    /// Ephemeral frames that find the queue half full are dropped (and counted).
    pub fn push_fanout_all(
        &self,
        batch: impl IntoIterator<Item = (Utf8Bytes, Kind)>,
    ) -> Result<Pushed, PushError> {
        let batch = batch.into_iter();
        let mut frames = self.frames.lock().unwrap();
        let was_empty = frames.queue.is_empty();
        // One allocation for the batch: an emptied queue gives its buffer back (see
        // `flush`), and growing it again frame by frame copied it log2(n) times.
        frames.queue.reserve(batch.size_hint().0);
        let mut dropped = 0;
        for (frame, kind) in batch {
            if !frames.enqueue(frame, kind, self.capacity)? {
                dropped += 1;
            }
        }
        let queued = if frames.flush_promised {
            Queued::WithPromisedFlush
        } else if frames.session_writing || frames.session_busy {
            // The session, once done, takes these frames too.
            Queued::BySession
        } else if was_empty && frames.rest.is_none() && !frames.interrupted && self.fd >= 0 {
            // Idle: nothing queued before (a drop implies a queue half full, so this
            // is never a batch that was dropped whole).
            frames.flush_promised = true;
            Queued::FlushPromised
        } else {
            wake(frames);
            Queued::BySession
        };
        Ok(Pushed { queued, dropped })
    }

    /// Keeps a [`Queued::FlushPromised`]: writes what is queued straight into the socket,
    /// and wakes the session for whatever the socket would not take now. Does nothing if
    /// the session took the frames first.
    pub fn flush(&self) {
        let mut frames = self.frames.lock().unwrap();
        if !std::mem::take(&mut frames.flush_promised) {
            return;
        }
        if frames.closed || frames.interrupted || frames.session_writing || frames.session_busy {
            return;
        }
        let Frames { queue, rest, .. } = &mut *frames;
        direct::write(self.fd, rest, queue);
        let left = !frames.queue.is_empty() || frames.rest.is_some();
        if frames.queue.is_empty() {
            frames.queue = VecDeque::new();
        }
        if left {
            wake(frames);
        }
    }

    /// Waits for something to write and takes it: a partly written frame's rest and up
    /// to `max` frames, in a vector of exactly that size (an idle socket keeps no batch
    /// buffer). From then on the session is the writer until [`Outbound::end_write`].
    /// Returns an empty batch once [`Outbound::interrupt`] was called. Cancel-safe:
    /// frames are taken only in the poll that returns them.
    pub async fn pop_batch(&self, max: usize) -> Batch {
        self.wait_until(|frames| {
            if frames.interrupted {
                return Some(Batch::default());
            }
            if frames.rest.is_none() && frames.queue.is_empty() {
                return None;
            }
            let n = frames.queue.len().min(max);
            let batch = Batch {
                rest: frames.rest.take(),
                frames: frames.queue.drain(..n).collect(),
            };
            if frames.queue.is_empty() {
                // An idle socket holds no queue memory; a busy one reallocates once
                // per batch, which costs far less than its write syscall.
                frames.queue = VecDeque::new();
            }
            // A promised flush finds nothing left to do.
            frames.flush_promised = false;
            frames.session_writing = true;
            Some(batch)
        })
        .await
    }

    /// Waits, as the queue's one consumer task, until `ready` yields a value. `ready`
    /// runs under the lock, so no wake-up can fall between its check and the waiting.
    async fn wait_until<T>(&self, mut ready: impl FnMut(&mut Frames) -> Option<T>) -> T {
        std::future::poll_fn(|cx| {
            let mut frames = self.frames.lock().unwrap();
            if let Some(value) = ready(&mut frames) {
                return Poll::Ready(value);
            }
            match &frames.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => frames.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Makes the session the writer for a frame of its own (a reply, ping or close);
    /// returns the rest of a partly written frame, which must go out first.
    pub fn begin_write(&self) -> Option<Box<[u8]>> {
        let mut frames = self.frames.lock().unwrap();
        frames.session_writing = true;
        frames.rest.take()
    }

    /// Keeps the unsent part of a frame the session stopped writing halfway (killed, or
    /// shutting down) as the rest that must go out first: a Close frame may follow only
    /// a whole frame. Called while the session is still the writer.
    pub fn keep_unsent(&self, tail: Box<[u8]>) {
        let mut frames = self.frames.lock().unwrap();
        debug_assert!(frames.session_writing && frames.rest.is_none());
        frames.rest = Some(tail);
    }

    /// The session is done writing. Frames queued meanwhile were not announced: the
    /// session looks at the queue before it waits again.
    pub fn end_write(&self) {
        self.frames.lock().unwrap().session_writing = false;
    }

    /// The session starts carrying out a command: until [`Outbound::end_command`], events
    /// wait for the session, so they follow its reply as they always did.
    pub fn begin_command(&self) {
        self.frames.lock().unwrap().session_busy = true;
    }

    /// The command is done; the session looks at the queue before it waits again.
    pub fn end_command(&self) {
        self.frames.lock().unwrap().session_busy = false;
    }

    /// Wakes the consumer for good: `pop_batch` returns at once from now on, and
    /// [`Outbound::interrupted`] completes.
    pub fn interrupt(&self) {
        let mut frames = self.frames.lock().unwrap();
        frames.interrupted = true;
        wake(frames);
    }

    /// Completes once [`Outbound::interrupt`] was called. For a consumer that is busy
    /// writing, not waiting in `pop_batch`; a push may wake it early, and it checks again.
    pub async fn interrupted(&self) {
        self.wait_until(|frames| frames.interrupted.then_some(()))
            .await
    }

    /// Refuses further frames and drops queued ones (the connection is ending). Must be
    /// called before the socket is closed: no direct write happens after it. Returns the
    /// unsent part of a frame a direct write began, which must precede a Close frame.
    pub fn close(&self) -> Option<Box<[u8]>> {
        let mut frames = self.frames.lock().unwrap();
        frames.closed = true;
        frames.queue = VecDeque::new();
        frames.rest.take()
    }

    /// Frames queued now and not yet written.
    pub fn queued(&self) -> usize {
        self.frames.lock().unwrap().queue.len()
    }

    /// Frames queued now, without waiting.
    pub fn try_pop_all(&self) -> Vec<Utf8Bytes> {
        self.frames.lock().unwrap().queue.drain(..).collect()
    }
}

/// Wakes the consumer if it waits (once: it looks at everything when it runs).
fn wake(mut frames: MutexGuard<'_, Frames>) {
    let waker = frames.waker.take();
    drop(frames);
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl Frames {
    /// Queues a frame; `Ok(false)` when it is ephemeral and the queue is half full.
    fn enqueue(&mut self, frame: Utf8Bytes, kind: Kind, capacity: u32) -> Result<bool, PushError> {
        if self.closed {
            return Err(PushError::Closed);
        }
        let len = self.queue.len();
        if kind == Kind::Ephemeral && len * 2 >= capacity as usize {
            return Ok(false);
        }
        if len >= capacity as usize {
            return Err(PushError::Full);
        }
        self.queue.push_back(frame);
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
