//! As-user reads sent together on one connection: each in its own transaction, exactly
//! as [`Db::as_user`] runs it, but many transactions in one round trip.
//!
//! A join storm (thousands of sockets joining one room, or a dead daemon's sockets
//! resuming on the others) is bound by round trips, not by PostgreSQL: a join's read
//! costs PostgreSQL 0.1 ms, but its round trip several milliseconds on a busy machine,
//! and joins waited for one of a few connections in turn. Here whoever finds a
//! connection free takes every read waiting and sends them all at once.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;

use super::{context_statement, in_transaction, Db, DbError, RawJson, POOL_WAIT};
use crate::auth::Identity;

/// A parameter owned by a queued read.
pub type Param = Box<dyn ToSql + Send + Sync>;

/// Reads one connection carries in one round trip at most.
const MAX_BATCH: usize = 64;

/// One queued read and where its result goes.
struct Read {
    who: Identity,
    path: &'static str,
    sql: &'static str,
    params: Vec<Param>,
    reply: oneshot::Sender<Result<Option<RawJson>, DbError>>,
}

/// Reads waiting for a connection, and how many connections they may use at once.
pub struct ReadQueue {
    waiting: Mutex<VecDeque<Read>>,
    /// Reads queued or sent and not answered yet (a gauge at scrape).
    len: AtomicUsize,
    /// Batches sent so far.
    batches: AtomicUsize,
    connections: Arc<Semaphore>,
}

impl ReadQueue {
    /// Reads of this queue use at most `connections` pool connections at once.
    pub fn new(connections: usize) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::default(),
            len: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            connections: Arc::new(Semaphore::new(connections.max(1))),
        })
    }

    /// Reads waiting for their answer: queued, or sent behind others.
    pub fn waiting(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Batches sent so far (each one connection's round trip).
    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }

    /// Runs `sql` as `who` in its own transaction, like [`Db::as_user`] (the user's
    /// share of the pool included), sent with whatever other reads wait meanwhile.
    pub async fn read(
        self: &Arc<Self>,
        db: &Db,
        who: &Identity,
        path: &'static str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Option<RawJson>, DbError> {
        let deadline = Instant::now() + POOL_WAIT;
        let _slot = db.user_slot(who, deadline).await?;
        let (reply, result) = oneshot::channel();
        let read = Read {
            who: who.clone(),
            path,
            sql,
            params,
            reply,
        };
        {
            let mut waiting = self.waiting.lock().unwrap();
            waiting.push_back(read);
            self.len.fetch_add(1, Ordering::Relaxed);
            // Under the queue's lock, so a sender that finds the queue empty and gives its
            // connection back cannot miss this read.
            if let Ok(permit) = self.connections.clone().try_acquire_owned() {
                tokio::spawn(self.clone().send_all(db.clone(), permit));
            }
        }
        result
            .await
            .unwrap_or_else(|_| Err(DbError::Internal("read abandoned".into())))
    }

    /// Sends what waits, batch after batch on one connection, until nothing does.
    async fn send_all(self: Arc<Self>, db: Db, permit: OwnedSemaphorePermit) {
        loop {
            let batch: Vec<Read> = {
                let mut waiting = self.waiting.lock().unwrap();
                if waiting.is_empty() {
                    drop(permit);
                    return;
                }
                let n = waiting.len().min(MAX_BATCH);
                waiting.drain(..n).collect()
            };
            self.batches.fetch_add(1, Ordering::Relaxed);
            let results = db.run_batch(&batch).await;
            self.len.fetch_sub(batch.len(), Ordering::Relaxed);
            for (read, result) in batch.into_iter().zip(results) {
                let _ = read.reply.send(result);
            }
        }
    }
}

impl Db {
    /// Runs every read in its own transaction on one connection, all sent before any
    /// answer is awaited.
    async fn run_batch(&self, batch: &[Read]) -> Vec<Result<Option<RawJson>, DbError>> {
        let client = match self.get_until(Instant::now() + POOL_WAIT).await {
            Ok(client) => client,
            Err(e) => {
                let message = e.to_string();
                return batch
                    .iter()
                    .map(|_| Err(DbError::Unavailable(message.clone())))
                    .collect();
            }
        };
        // Statements first (cached: a round trip only the first time on a connection).
        let mut prepared = Vec::with_capacity(batch.len());
        for read in batch {
            let settings = self.settings_of(&read.who.role);
            let statements = async {
                let context = context_statement(&client, &settings).await?;
                let statement = client.prepare_cached(read.sql).await?;
                Ok::<_, DbError>((context, statement))
            }
            .await;
            prepared.push((settings, statements));
        }
        let calls = batch
            .iter()
            .zip(&prepared)
            .map(|(read, (settings, statements))| {
                let client = &**client;
                async move {
                    let (context, statement) = statements.as_ref().map_err(again)?;
                    let params: Vec<&(dyn ToSql + Sync)> = read
                        .params
                        .iter()
                        .map(|p| &**p as &(dyn ToSql + Sync))
                        .collect();
                    in_transaction(
                        client, context, &read.who, read.path, settings, statement, &params,
                    )
                    .await
                }
            });
        join_in_order(calls.collect()).await
    }
}

/// A copy of a preparation's error for each read that needed it.
fn again(e: &DbError) -> DbError {
    match e {
        DbError::Forbidden(m) => DbError::Forbidden(m.clone()),
        DbError::Unavailable(m) => DbError::Unavailable(m.clone()),
        other => DbError::Internal(other.to_string()),
    }
}

/// Awaits every future, polling them in the order given every time: each sends its
/// requests on its first poll, so the connection gets whole transactions one after
/// another, never two interleaved.
async fn join_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("ready")).collect()
}
