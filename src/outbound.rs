//! One socket's outbound queue: bounded in frames, never blocks a producer, and holds no
//! memory while idle (a channel would keep its first block allocated for the socket's
//! whole life, and blocks from the largest burst after it).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    Full,
    Closed,
}

pub struct Outbound {
    // std Mutex: held only to move frames in or out, never across an await.
    frames: Mutex<Frames>,
    ready: Notify,
    capacity: usize,
}

struct Frames {
    queue: VecDeque<Utf8Bytes>,
    closed: bool,
    /// Set by [`Outbound::interrupt`]: the consumer must look at its session's state.
    interrupted: bool,
}

impl Outbound {
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: Mutex::new(Frames {
                queue: VecDeque::new(),
                closed: false,
                interrupted: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&self, frame: Utf8Bytes) -> Result<(), PushError> {
        {
            let mut frames = self.frames.lock().unwrap();
            if frames.closed {
                return Err(PushError::Closed);
            }
            if frames.queue.len() >= self.capacity {
                return Err(PushError::Full);
            }
            frames.queue.push_back(frame);
        }
        // One consumer: a stored permit covers a push that lands before it waits.
        self.ready.notify_one();
        Ok(())
    }

    /// Waits for frames and takes up to `max` of them, in a vector of exactly that size
    /// (an idle socket keeps no batch buffer); returns an empty vector once
    /// [`Outbound::interrupt`] was called. Cancel-safe: frames are taken only in the
    /// poll that returns them.
    pub async fn pop_batch(&self, max: usize) -> Vec<Utf8Bytes> {
        loop {
            {
                let mut frames = self.frames.lock().unwrap();
                if frames.interrupted {
                    return Vec::new();
                }
                if !frames.queue.is_empty() {
                    let n = frames.queue.len().min(max);
                    let batch: Vec<Utf8Bytes> = frames.queue.drain(..n).collect();
                    if frames.queue.is_empty() {
                        // An idle socket holds no queue memory; a busy one reallocates
                        // once per batch, which costs far less than its write syscall.
                        frames.queue = VecDeque::new();
                    }
                    return batch;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Wakes the consumer for good: `pop_batch` returns at once from now on, and
    /// [`Outbound::interrupted`] completes.
    pub fn interrupt(&self) {
        self.frames.lock().unwrap().interrupted = true;
        self.ready.notify_one();
    }

    /// Completes once [`Outbound::interrupt`] was called. For a consumer that is busy
    /// writing, not waiting in `pop_batch`; a push may wake it early, and it checks again.
    pub async fn interrupted(&self) {
        loop {
            if self.frames.lock().unwrap().interrupted {
                return;
            }
            self.ready.notified().await;
        }
    }

    /// Refuses further frames and drops queued ones (the socket is gone).
    pub fn close(&self) {
        let mut frames = self.frames.lock().unwrap();
        frames.closed = true;
        frames.queue = VecDeque::new();
    }

    /// Frames queued now, without waiting.
    pub fn try_pop_all(&self) -> Vec<Utf8Bytes> {
        self.frames.lock().unwrap().queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_ordered_and_closable() {
        let q = Outbound::new(3);
        for f in ["a", "b", "c"] {
            q.push(f.into()).unwrap();
        }
        assert_eq!(q.push("d".into()), Err(PushError::Full));
        let first = q.pop_batch(2).await;
        let second = q.pop_batch(10).await;
        let all: Vec<&str> = first.iter().chain(&second).map(|f| f.as_str()).collect();
        assert_eq!(all, ["a", "b", "c"]);
        q.close();
        assert_eq!(q.push("e".into()), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn an_interrupt_wakes_a_waiting_or_writing_consumer() {
        let q = std::sync::Arc::new(Outbound::new(4));
        let waiting = {
            let q = q.clone();
            tokio::spawn(async move { q.pop_batch(4).await })
        };
        let writing = {
            let q = q.clone();
            tokio::spawn(async move { q.interrupted().await })
        };
        tokio::task::yield_now().await;
        q.interrupt();
        q.interrupt();
        // One stored permit between two waiters: the interrupted() loop re-checks the flag.
        let (batch, ()) = tokio::join!(async { waiting.await.unwrap() }, async {
            writing.await.unwrap()
        });
        assert!(batch.is_empty());
        q.push("late".into()).unwrap();
        assert!(q.pop_batch(4).await.is_empty(), "stays interrupted");
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_on_push() {
        let q = std::sync::Arc::new(Outbound::new(4));
        let consumer = {
            let q = q.clone();
            tokio::spawn(async move { q.pop_batch(4).await })
        };
        tokio::task::yield_now().await;
        q.push("x".into()).unwrap();
        assert_eq!(consumer.await.unwrap()[0].as_str(), "x");
    }
}
