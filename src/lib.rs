//! pgchat: a realtime WebSocket bridge beside PostgREST.
//!
//! # Layout
//! The data path reads straight through the modules:
//! socket → [`session`] (the WebSocket transport) → [`chat`] (the request, as the user
//! through [`db`]) → NOTIFY doorbell → [`bus`] (PostgreSQL LISTEN) → [`relay`] (reads
//! what changed from the tables) → [`hub`] → sockets.
//!
//! Shared state is [`app`]; the chat core knows no transport, and the relay knows no
//! bus. Nothing below [`server`] imports it, and the core imports no transport.
//!
//! - [`config`]    one struct from the environment, validated at start
//! - [`admission`] connection slots: the unauthenticated pool, per-address caps, proxies
//! - [`auth`]      JWT verification with PostgREST's rules; token minting
//! - [`db`]        the pool and the "run as this user" transaction
//! - [`migrate`]   the embedded `sql/` migrations (once each) and definitions (re-run)
//! - [`migrate_job`] migrate as a pod's step: wait for PostgreSQL, migrate, stay
//! - [`protocol`]  client and server frames: parsing, validation, serialisation
//! - [`app`]       the shared state every connection and task reads
//! - [`chat`]      the chat core: what each request does, for any transport
//! - [`session`]   the WebSocket transport: the event loop, deadlines, batched writes
//! - [`hub`]       room → subscribers, fan-out over bounded queues
//! - [`outbound`]  one socket's bounded queue of frames, and direct writes into idle sockets
//! - [`frame_reader`] client frames off the socket, with no buffer kept while idle
//! - [`frame_writer`] frames to the socket in one `writev`, without a retained buffer
//! - [`bus`]       what rings the relay: PostgreSQL LISTEN (reconnecting, probed), or an
//!   in-memory bus; doorbells, and lost/regained signals
//! - [`relay`]     doorbells in bursts → reads of the tables → hub events (the room change
//!   stream, memberships, presence, typing); catch-up after the bus was lost
//! - [`typing_throttle`] how often one user's typing in a room is written
//! - [`presence`]  who is online and typing, shared across daemons through PostgreSQL
//! - [`http`]      the upgrade, /healthz, /readyz, /metrics and static files
//! - [`metrics`]   counters and gauges, exposed in Prometheus format
//! - [`gauges`]    gauges read from the daemon's state at each scrape
//! - [`server`]    wiring: accept loop, background tasks, graceful shutdown
//! - [`demo`]      `pgchat demo`: migrate, seed two users, serve the frontend
//! - [`telemetry`] tracing setup
//! - [`health_check`] `pgchat health`: the container probe, over loopback HTTP

pub mod admission;
pub mod app;
pub mod auth;
pub mod bus;
pub mod chat;
pub mod config;
pub mod db;
pub mod demo;
pub mod frame_reader;
pub mod frame_writer;
pub mod gauges;
pub mod health_check;
pub mod http;
pub mod hub;
pub mod memory;
pub mod metrics;
pub mod migrate;
pub mod migrate_job;
pub mod outbound;
pub mod presence;
pub mod protocol;
pub mod relay;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod typing_throttle;
pub mod typing_writer;
