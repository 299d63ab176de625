//! The hub's way to reach one connection: its outbound queue and its kill switch.

use std::sync::atomic::{AtomicU16, Ordering};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::ConnId;
use crate::outbound::{Kind, Outbound, PushError, Pushed};
use crate::protocol::close;

/// The hub's way to reach one connection.
pub struct SessionHandle {
    pub conn_id: ConnId,
    /// Inline: one allocation per connection for the handle and its queue.
    queue: Outbound,
    /// Close code chosen by whoever killed the session first.
    close_code: AtomicU16,
}

impl SessionHandle {
    /// A handle whose outbound queue holds up to `queue_capacity` frames; `fd` is the
    /// socket's descriptor when fan-outs may write to it directly (see `outbound`).
    pub fn new(conn_id: ConnId, queue_capacity: usize, fd: Option<std::os::fd::RawFd>) -> Self {
        Self {
            conn_id,
            queue: Outbound::new(queue_capacity, fd),
            close_code: AtomicU16::new(0),
        }
    }

    /// The connection's outbound queue (its session drains it).
    pub fn queue(&self) -> &Outbound {
        &self.queue
    }

    /// Queues a durable frame without waiting. A full queue closes the connection as
    /// too slow.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_kind(frame, Kind::Durable)
    }

    /// Queues a frame without waiting; an ephemeral one is dropped (and counted) when
    /// the queue is half full. Returns whether it was queued.
    pub fn push_kind(&self, frame: Utf8Bytes, kind: Kind) -> bool {
        match self.queue.push_kind(frame, kind) {
            Ok(true) => {
                metrics::counter!("pgchat_deliveries_total").increment(1);
                true
            }
            Ok(false) => {
                dropped_ephemeral(1);
                false
            }
            Err(e) => {
                self.refused(e);
                false
            }
        }
    }

    /// Queues frames of a room's fan-out, in order (counted by the caller; ephemeral
    /// frames dropped under pressure are counted here). On [`crate::outbound::Queued::FlushPromised`] the
    /// caller must call [`SessionHandle::flush`] once it holds no hub lock. `None`:
    /// refused (closed, or full and now being closed).
    pub(super) fn push_fanout(
        &self,
        frames: impl IntoIterator<Item = (Utf8Bytes, Kind)>,
    ) -> Option<Pushed> {
        match self.queue.push_fanout_all(frames) {
            Ok(pushed) => {
                dropped_ephemeral(pushed.dropped);
                Some(pushed)
            }
            Err(e) => {
                self.refused(e);
                None
            }
        }
    }

    /// Writes what [`SessionHandle::push_fanout`] promised, from the caller's thread.
    pub(super) fn flush(&self) {
        self.queue.flush();
    }

    /// A refused push: a full queue closes the connection as too slow.
    fn refused(&self, error: PushError) {
        if error == PushError::Full {
            self.close_too_slow();
        }
    }

    /// Closes the connection as too slow (4003), counted once.
    pub(super) fn close_too_slow(&self) {
        if self.kill(close::SLOW_CONSUMER) {
            metrics::counter!("pgchat_slow_consumer_closes_total").increment(1);
            tracing::info!(
                conn = self.conn_id,
                "outbound queue full: closing slow consumer"
            );
        }
    }

    /// Ends the session with `code`; returns false if it was already being ended.
    pub fn kill(&self, code: u16) -> bool {
        let first = self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        // The session sees the code when its queue wakes it (no per-socket token).
        self.queue.interrupt();
        first
    }

    pub fn close_code(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }
}

/// Counts ephemeral frames dropped under queue pressure.
pub(super) fn dropped_ephemeral(count: usize) {
    if count > 0 {
        metrics::counter!("pgchat_ephemeral_dropped_total").increment(count as u64);
    }
}
