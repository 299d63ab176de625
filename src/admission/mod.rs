//! Which connections the server holds. Every connection takes one of `MAX_CONNECTIONS`
//! slots before it is accepted and keeps it until it closes. A connection that has not
//! authenticated yet (still in HTTP, or upgraded but silent) also counts against
//! `MAX_UNAUTHENTICATED`, so that clients who never finish cannot take the slots of
//! those who do; and, when `MAX_CONNECTIONS_PER_IP` is set, every connection counts
//! against its client address.
//!
//! When the unauthenticated pool is full, a newcomer from an address that holds fewer
//! of its places than the address holding the most takes the place of that address's
//! oldest connection, which is closed. So one address (or a few) flooding the pool with
//! connections that never finish keeps every other address's way in open, and the
//! places it holds are its newest, not the ones that are about to time out anyway.

mod client_ip;

pub use client_ip::{BadProxy, TrustedProxies};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::hub::SessionHandle;
use crate::protocol::close;

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections have not authenticated yet")]
    UnauthenticatedCap,
    #[error("too many connections from this address")]
    PerIpCap,
}

impl Refusal {
    /// The `reason` label of `pgchat_connections_refused_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnauthenticatedCap => "unauthenticated_cap",
            Refusal::PerIpCap => "per_ip_cap",
        }
    }
}

pub struct Admission {
    /// `MAX_CONNECTIONS`: the accept loop takes a permit before `accept()`.
    slots: Arc<Semaphore>,
    max_unauthenticated: usize,
    /// 0: no per-address cap.
    max_per_ip: usize,
    trusted: TrustedProxies,
    // std Mutex: held for a few map operations, never across an await.
    state: Mutex<State>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Connections that have not authenticated, per client address, oldest first.
    pending: HashMap<IpAddr, BTreeMap<u64, Evict>>,
    /// (how many of those an address holds, address): the last is the one to evict from.
    ranking: BTreeSet<(usize, IpAddr)>,
    pending_len: usize,
    /// Open connections per client address, kept only when `max_per_ip` is set.
    per_ip: HashMap<IpAddr, usize>,
}

/// How to close a connection that is evicted before it authenticates.
enum Evict {
    /// Still in HTTP: its connection task stops serving it.
    Http(CancellationToken),
    /// Upgraded: its session closes with 1013 (try again later).
    Session(Weak<SessionHandle>),
}

impl Evict {
    fn fire(self) {
        match self {
            Evict::Http(token) => token.cancel(),
            Evict::Session(handle) => {
                if let Some(handle) = handle.upgrade() {
                    handle.kill(close::TRY_AGAIN_LATER);
                }
            }
        }
    }
}

/// A connection's hold on the server, from accept to close. Dropping it gives back
/// its slot and its places.
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    /// The client address it counts against.
    ip: IpAddr,
    /// In the unauthenticated pool.
    pending: bool,
    /// Counted in `per_ip`.
    counted: bool,
}

impl Admission {
    pub fn new(
        max_connections: usize,
        max_unauthenticated: usize,
        max_per_ip: usize,
        trusted: TrustedProxies,
    ) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            max_unauthenticated: max_unauthenticated.max(1),
            max_per_ip,
            trusted,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Waits for one of the `MAX_CONNECTIONS` slots.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed")
    }

    /// Admits a connection just accepted from `peer` into the unauthenticated pool; the
    /// token is cancelled if it is evicted before it upgrades.
    pub fn admit(
        self: &Arc<Self>,
        slot: OwnedSemaphorePermit,
        peer: IpAddr,
    ) -> Result<(Ticket, CancellationToken), Refusal> {
        let ip = peer.to_canonical();
        // Behind a trusted proxy the client is known only from the request's headers.
        let count_ip = self.max_per_ip > 0 && !self.trusted.contains(ip);
        let mut state = self.state.lock().unwrap();
        if count_ip && state.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Err(self.refused(Refusal::PerIpCap));
        }
        let mut evicted = None;
        if state.pending_len >= self.max_unauthenticated {
            let held = state.pending.get(&ip).map_or(0, BTreeMap::len);
            match state.ranking.last().copied() {
                Some((most, busiest)) if held + 1 < most => {
                    evicted = state.remove_oldest(busiest);
                }
                _ => return Err(self.refused(Refusal::UnauthenticatedCap)),
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        state.insert_pending(ip, id, Evict::Http(token.clone()));
        if count_ip {
            *state.per_ip.entry(ip).or_insert(0) += 1;
        }
        drop(state);
        if let Some(evicted) = evicted {
            metrics::counter!("pgchat_connections_refused_total", "reason" => "evicted")
                .increment(1);
            evicted.fire();
        }
        // The slot is given back by the ticket's drop: one word less per connection.
        slot.forget();
        let ticket = Ticket {
            admission: self.clone(),
            id,
            ip,
            pending: true,
            counted: count_ip,
        };
        Ok((ticket, token))
    }

    fn refused(&self, refusal: Refusal) -> Refusal {
        metrics::counter!("pgchat_connections_refused_total", "reason" => refusal.reason())
            .increment(1);
        refusal
    }

    /// Whether requests from `peer` carry the client's address in `X-Forwarded-For`.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted.contains(peer)
    }

    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.trusted
    }
}

impl State {
    fn insert_pending(&mut self, ip: IpAddr, id: u64, evict: Evict) {
        let held = self.pending.entry(ip).or_default();
        let before = held.len();
        held.insert(id, evict);
        self.rerank(ip, before, before + 1);
        self.pending_len += 1;
    }

    fn remove_pending(&mut self, ip: IpAddr, id: u64) -> Option<Evict> {
        let held = self.pending.get_mut(&ip)?;
        let before = held.len();
        let evict = held.remove(&id)?;
        if held.is_empty() {
            self.pending.remove(&ip);
        }
        self.rerank(ip, before, before - 1);
        self.pending_len -= 1;
        Some(evict)
    }

    fn remove_oldest(&mut self, ip: IpAddr) -> Option<Evict> {
        let oldest = *self.pending.get(&ip)?.keys().next()?;
        self.remove_pending(ip, oldest)
    }

    fn rerank(&mut self, ip: IpAddr, before: usize, after: usize) {
        if before > 0 {
            self.ranking.remove(&(before, ip));
        }
        if after > 0 {
            self.ranking.insert((after, ip));
        }
    }
}

impl Ticket {
    /// The connection upgraded: from now on an eviction closes its session.
    /// Returns false if it was evicted already (the session must end at once).
    pub fn attach(&mut self, handle: &Arc<SessionHandle>) -> bool {
        if !self.pending {
            return true;
        }
        let mut state = self.admission.state.lock().unwrap();
        match state
            .pending
            .get_mut(&self.ip)
            .and_then(|m| m.get_mut(&self.id))
        {
            Some(evict) => {
                *evict = Evict::Session(Arc::downgrade(handle));
                true
            }
            None => {
                self.pending = false;
                false
            }
        }
    }

    /// The session authenticated: it leaves the unauthenticated pool (keeping its slot).
    pub fn authenticated(&mut self) {
        if std::mem::take(&mut self.pending) {
            let mut state = self.admission.state.lock().unwrap();
            state.remove_pending(self.ip, self.id);
        }
    }

    /// Behind a trusted proxy: the connection is from `client` (as `X-Forwarded-For`
    /// says), and counts against that address from now on.
    pub fn forwarded_for(&mut self, client: IpAddr) -> Result<(), Refusal> {
        let admission = &self.admission;
        let mut state = admission.state.lock().unwrap();
        if self.pending && client != self.ip {
            if let Some(evict) = state.remove_pending(self.ip, self.id) {
                state.insert_pending(client, self.id, evict);
            }
        }
        self.ip = client;
        if admission.max_per_ip > 0 && !self.counted {
            if state.per_ip.get(&client).copied().unwrap_or(0) >= admission.max_per_ip {
                return Err(admission.refused(Refusal::PerIpCap));
            }
            *state.per_ip.entry(client).or_insert(0) += 1;
            self.counted = true;
        }
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.pending || self.counted {
            let mut state = self.admission.state.lock().unwrap();
            if self.pending {
                state.remove_pending(self.ip, self.id);
            }
            if self.counted {
                if let Some(n) = state.per_ip.get_mut(&self.ip) {
                    *n -= 1;
                    if *n == 0 {
                        state.per_ip.remove(&self.ip);
                    }
                }
            }
        }
        self.admission.slots.add_permits(1);
    }
}

#[cfg(test)]
mod tests;
