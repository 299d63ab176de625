//! Typing writes from this daemon's sockets, committed in batches.
//!
//! Each typing start is a row written as the user (RLS decides, as for `api.set_typing`
//! through PostgREST) and a doorbell. A doorbell's commit takes PostgreSQL's one NOTIFY
//! lock for the database, so at 50,000 sockets one commit per start (833 a second) kept
//! the lock saturated and message delivery fell seconds behind. Here one task writes
//! whatever accumulated while its previous batch was committing, each call as its own
//! user, in one transaction: an idle daemon still writes a start at once, a busy one
//! pays the lock once per batch.

use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::db::Db;
use crate::protocol::RoomId;

const PATH: &str = "/rpc/set_typing";
const SQL: &str = "select api.set_typing(room_id := $1, is_typing := $2)";

/// Writes waiting for the next batch; beyond it a write is dropped (typing is best
/// effort: the client's next refresh shows it).
const QUEUE: usize = 8192;
/// Writes per transaction at most.
pub const MAX_BATCH: usize = 256;

/// One typing change to write as `who`.
#[derive(Debug, Clone)]
pub struct TypingWrite {
    pub who: Identity,
    pub room: RoomId,
    pub typing: bool,
}

pub struct TypingWriter {
    db: Db,
    queue: mpsc::Sender<TypingWrite>,
    /// Taken by [`TypingWriter::run`].
    pending: Mutex<Option<mpsc::Receiver<TypingWrite>>>,
}

impl TypingWriter {
    pub fn new(db: Db) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        Self {
            db,
            queue,
            pending: Mutex::new(Some(pending)),
        }
    }

    /// Queues a write for the next batch; `false` when the queue is full and it was
    /// dropped.
    pub fn write(&self, change: TypingWrite) -> bool {
        self.queue.try_send(change).is_ok()
    }

    /// Writes queued changes until `cancel`.
    pub async fn run(&self, cancel: CancellationToken) {
        let Some(mut pending) = self.pending.lock().unwrap().take() else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let got = tokio::select! {
                n = pending.recv_many(&mut batch, MAX_BATCH) => n,
                _ = cancel.cancelled() => return,
            };
            if got == 0 {
                return;
            }
            self.write_batch(&batch).await;
            batch.clear();
        }
    }

    /// Writes `batch` in one transaction per role (a role's settings apply to the whole
    /// transaction). If it fails, every write is tried on its own, so one write that
    /// RLS refuses (its user just left the room) does not drop the others.
    pub async fn write_batch(&self, batch: &[TypingWrite]) {
        let mut rest: Vec<&TypingWrite> = batch.iter().collect();
        while let Some(first) = rest.first() {
            let role = first.who.role.clone();
            let (same, other): (Vec<&TypingWrite>, Vec<&TypingWrite>) =
                rest.into_iter().partition(|w| w.who.role == role);
            rest = other;
            let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 2]> = same
                .iter()
                .map(|w| [&w.room as _, &w.typing as _])
                .collect();
            let calls: Vec<_> = same
                .iter()
                .zip(&params)
                .map(|(w, p)| (&w.who, &p[..]))
                .collect();
            let started = std::time::Instant::now();
            let result = self.db.as_each_user(PATH, SQL, &calls).await;
            metrics::histogram!("pgchat_db_latency_seconds")
                .record(started.elapsed().as_secs_f64());
            if let Err(e) = result {
                if same.len() == 1 {
                    tracing::debug!(error = %e, "typing write refused");
                    continue;
                }
                for (w, p) in same.iter().zip(&params) {
                    if let Err(e) = self.db.as_user(&w.who, PATH, SQL, p).await {
                        tracing::debug!(error = %e, room = w.room, "typing write refused");
                    }
                }
            }
        }
    }
}
