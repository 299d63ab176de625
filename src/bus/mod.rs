//! The bus: what tells the relay that something changed. It only rings; the relay reads
//! what changed from the tables. A bus delivers, in order:
//! - [`Signal::Connected`] once it can deliver doorbells (again),
//! - [`Signal::Ring`] for each doorbell, as they come (the relay takes them in bursts),
//! - [`Signal::Lost`] when doorbells may have been missed (the relay catches up from the
//!   tables once connected again).
//!
//! - [`pg`]: PostgreSQL LISTEN, the daemon's bus (doorbells from the SQL triggers)
//! - [`memory`]: rung by its owner in-process; proves the seam another bus (NATS,
//!   Redis) would use, and drives the relay's tests
//! - [`doorbell`]: the doorbells' wire format, parsed strictly

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub mod doorbell;
pub mod memory;
pub mod pg;
pub mod pg_probe;

pub use doorbell::Doorbell;

/// Signals buffered between a bus and the relay.
pub const SIGNAL_BUFFER: usize = 8192;

/// What a bus tells the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Doorbells are delivered from here on. `first`: the bus's first connection; later
    /// ones follow a [`Signal::Lost`] and make the relay catch up.
    Connected {
        first: bool,
    },
    Ring(Doorbell),
    /// Doorbells may be missed until the next `Connected`.
    Lost,
}

/// A source of doorbells. `run` delivers signals into `bells` until `cancel` fires or
/// the relay is gone, reconnecting on its own after a loss.
pub trait Bus: Send + 'static {
    fn run(
        self,
        bells: Bells,
        status: std::sync::Arc<BusStatus>,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + Send;
}

/// The bus's side of the channel to the relay.
#[derive(Clone)]
pub struct Bells(mpsc::Sender<Signal>);

/// The relay's side: signals in the order the bus sent them.
pub type Signals = mpsc::Receiver<Signal>;

/// A channel from a bus to the relay.
pub fn channel() -> (Bells, Signals) {
    let (tx, rx) = mpsc::channel(SIGNAL_BUFFER);
    (Bells(tx), rx)
}

impl Bells {
    /// Sends a signal; false once the relay is gone.
    pub async fn send(&self, signal: Signal) -> bool {
        self.0.send(signal).await.is_ok()
    }
}

/// Whether the bus is connected and answered lately: `/readyz` reads it.
#[derive(Default)]
pub struct BusStatus {
    pub connected: AtomicBool,
    /// When the bus last proved alive (for LISTEN: its connection answered a probe).
    pub alive: Liveness,
}

impl BusStatus {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }
}

/// When something last answered.
#[derive(Default)]
pub struct Liveness(Mutex<Option<Instant>>);

impl Liveness {
    pub fn mark(&self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }

    /// True when it answered less than `age` ago.
    pub fn within(&self, age: Duration) -> bool {
        self.0.lock().unwrap().is_some_and(|at| at.elapsed() < age)
    }
}
