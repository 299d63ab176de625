//! Fair share of the pool: at most `per_user` as-user transactions of one user run at
//! once, so one user's expensive calls (a `rooms` over 200 rooms × 1,000 messages took
//! 3 s) cannot hold every pool connection while everyone else's messages wait.
//!
//! A user is keyed by user id, or by the claims for a token without one. An entry lives
//! only while someone holds or awaits a slot of it: an idle user costs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Identity;

/// Who shares one limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserKey {
    User(i64),
    /// A token without `sub` (for example the anonymous role): its claims as sent.
    Claims(String),
}

impl UserKey {
    pub fn of(who: &Identity) -> Self {
        match who.user_id {
            Some(id) => UserKey::User(id),
            None => UserKey::Claims(who.claims_json.clone()),
        }
    }
}

struct Entry {
    slots: Arc<Semaphore>,
    /// Holders and waiters; the entry is removed when the last of them is done.
    users: usize,
}

pub struct FairShare {
    per_user: usize,
    // std Mutex: held only to find, create or remove an entry, never across an await.
    entries: Mutex<HashMap<UserKey, Entry>>,
}

/// The user waited until the deadline and all their slots were still taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("this user already has {0} database calls running")]
pub struct OverShare(pub usize);

/// One running call's slot; dropping it frees the slot (and the entry, if unused).
pub struct Slot {
    // Field order: the permit is released before the entry is looked at.
    _permit: OwnedSemaphorePermit,
    _lease: Lease,
}

/// Counts one holder or waiter of an entry, so the entry outlives them all.
struct Lease {
    share: Arc<FairShare>,
    key: UserKey,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut entries = self.share.entries.lock().unwrap();
        if let Some(entry) = entries.get_mut(&self.key) {
            entry.users -= 1;
            if entry.users == 0 {
                entries.remove(&self.key);
            }
        }
    }
}

impl FairShare {
    /// `per_user` calls of one user at once; must be at least 1.
    pub fn new(per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            per_user: per_user.max(1),
            entries: Mutex::default(),
        })
    }

    /// Waits for one of the user's slots until `deadline`. Cancel-safe: a dropped wait
    /// gives up its place and, if it was the last, the entry.
    pub async fn acquire(
        self: &Arc<Self>,
        key: UserKey,
        deadline: Instant,
    ) -> Result<Slot, OverShare> {
        let slots = {
            let mut entries = self.entries.lock().unwrap();
            let entry = entries.entry(key.clone()).or_insert_with(|| Entry {
                slots: Arc::new(Semaphore::new(self.per_user)),
                users: 0,
            });
            entry.users += 1;
            entry.slots.clone()
        };
        let lease = Lease {
            share: self.clone(),
            key,
        };
        // Most calls find a free slot: no timer, no wait.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let started = Instant::now();
                let waited = tokio::time::timeout_at(deadline.into(), slots.acquire_owned()).await;
                metrics::histogram!("pgchat_db_user_wait_seconds")
                    .record(started.elapsed().as_secs_f64());
                match waited {
                    Ok(Ok(permit)) => permit,
                    // Timed out (the semaphore is never closed).
                    _ => return Err(OverShare(self.per_user)),
                }
            }
        };
        Ok(Slot {
            _permit: permit,
            _lease: lease,
        })
    }

    /// Users with a call running or waiting.
    #[cfg(test)]
    fn active_users(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_user_gets_per_user_slots_and_others_are_not_held_up() {
        let share = FairShare::new(2);
        let a1 = share.acquire(UserKey::User(1), soon(1000)).await.unwrap();
        let _a2 = share.acquire(UserKey::User(1), soon(1000)).await.unwrap();
        // User 1 is at their share: a third call waits and then gives up...
        let refused = share.acquire(UserKey::User(1), soon(50)).await;
        assert_eq!(refused.err(), Some(OverShare(2)));
        // ...while another user (or a claims-only token) goes straight through.
        let _b = share.acquire(UserKey::User(2), soon(0)).await.unwrap();
        let _anon = share
            .acquire(UserKey::Claims(r#"{"role":"anon"}"#.into()), soon(0))
            .await
            .unwrap();
        // A slot freed is taken by the next waiter of that user.
        let waiter = {
            let share = share.clone();
            tokio::spawn(async move { share.acquire(UserKey::User(1), soon(5000)).await })
        };
        tokio::task::yield_now().await;
        drop(a1);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn entries_are_freed_when_unused_even_by_an_abandoned_wait() {
        let share = FairShare::new(1);
        let held = share.acquire(UserKey::User(7), soon(1000)).await.unwrap();
        let abandoned = {
            let share = share.clone();
            tokio::spawn(async move { share.acquire(UserKey::User(7), soon(60_000)).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(share.active_users(), 1);
        abandoned.abort();
        let _ = abandoned.await;
        drop(held);
        assert_eq!(share.active_users(), 0, "no entry outlives its users");
        // A refused wait leaves nothing behind either.
        let _held = share.acquire(UserKey::User(8), soon(0)).await.unwrap();
        assert!(share.acquire(UserKey::User(8), soon(10)).await.is_err());
        drop(_held);
        assert_eq!(share.active_users(), 0);
    }
}
