//! The chat core and the relay as components:
//! - `dispatch`: commands called directly against PostgreSQL, no socket (replies
//!   collected in a `Vec`, live events read from the connection's hub queue);
//! - `relay`: the same relay tests driven by PostgreSQL LISTEN and by the in-memory bus.
#[path = "../common/mod.rs"]
mod common;

mod dispatch;
mod relay;
