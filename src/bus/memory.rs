//! An in-process bus: doorbells published by its owner reach every daemon (relay)
//! subscribed to it, as a NATS subject or a Redis channel would. It proves the seam a
//! network bus uses and drives the relay's tests without PostgreSQL's LISTEN.
//!
//! Like any bus it carries doorbells as text and parses them strictly. A subscriber that
//! falls behind by more than its buffer has missed doorbells: it is told `Lost`, then
//! `Connected`, and its relay catches up from the tables.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Bells, Bus, BusStatus, Doorbell, Signal};

/// Doorbells a subscriber may fall behind by before it has missed some.
const BUFFER: usize = 4096;

#[derive(Clone, Debug)]
enum Event {
    Ring(String),
    Lose,
    Regain,
}

/// A handle on one in-process bus; clones publish to and subscribe on the same bus.
#[derive(Clone)]
pub struct MemoryBus {
    tx: broadcast::Sender<Event>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BUFFER).0,
        }
    }
}

impl MemoryBus {
    /// Publishes a doorbell (the text a SQL trigger would NOTIFY) to every subscriber.
    pub fn ring(&self, payload: &str) {
        let _ = self.tx.send(Event::Ring(payload.to_owned()));
    }

    /// Every subscriber loses the bus: doorbells rung until [`MemoryBus::regain`] are
    /// missed, as across a broken connection.
    pub fn lose(&self) {
        let _ = self.tx.send(Event::Lose);
    }

    /// Every subscriber is connected again (and catches up).
    pub fn regain(&self) {
        let _ = self.tx.send(Event::Regain);
    }
}

impl Bus for MemoryBus {
    async fn run(self, bells: Bells, status: Arc<BusStatus>, cancel: CancellationToken) {
        let mut rx = self.tx.subscribe();
        let connect = |first: bool| {
            status.set_connected(true);
            status.alive.mark();
            Signal::Connected { first }
        };
        if !bells.send(connect(true)).await {
            return;
        }
        let mut connected = true;
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                _ = cancel.cancelled() => break,
            };
            status.alive.mark();
            let signal = match event {
                Ok(Event::Ring(payload)) if connected => match Doorbell::parse(&payload) {
                    Some(bell) => Signal::Ring(bell),
                    None => continue,
                },
                Ok(Event::Lose) if connected => {
                    connected = false;
                    status.set_connected(false);
                    Signal::Lost
                }
                Ok(Event::Regain) if !connected => {
                    connected = true;
                    connect(false)
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if connected && !bells.send(Signal::Lost).await {
                        break;
                    }
                    connected = true;
                    connect(false)
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if !bells.send(signal).await {
                break;
            }
        }
        status.set_connected(false);
    }
}
