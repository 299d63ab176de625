//! The integration tests, as one test binary: one module per former `tests/<name>.rs`
//! (same name), so `tests/common` and the daemon's library are compiled once for all of
//! them instead of once per file. The tests still use the real PostgreSQL and real
//! WebSocket clients; under `cargo nextest` each test is its own process, as before.
//!
//! **Adding tests.** Put a new file here (`git mv tests/<name>.rs tests/it/<name>.rs`)
//! and add `mod <name>;` below, in alphabetical order. In the file, `use crate::common;` replaces the
//! `mod common;` a standalone test file declares (and `use crate::common::ws_extra;` or
//! `use crate::common::raw_ws;` replaces `#[path = "common/…"] mod …;`); a `#[path]` to
//! a fixture gains a `../` (`#[path = "../fixtures/…"]`). Nothing else changes: the
//! file's `//!` doc, helpers and tests stay as they are. A standalone `tests/<name>.rs`
//! still builds as a binary of its own, only slower; fold it in here.
//!
//! Test names are `<module>::<test>` in the `pgchat::it` binary: run one module's tests
//! with `cargo nextest run -E 'binary(it) & test(/^ws_tokens::/)'` (or
//! `cargo test --test it ws_tokens::`).
//!
//! `dispatch` and `relay` were `tests/core/` (the chat core and the relay as components:
//! commands called without a socket; the relay driven by PostgreSQL LISTEN and by the
//! in-memory bus).

#[path = "../common/mod.rs"]
mod common;

mod bench_smoke;
mod db_batched_reads;
mod db_context;
mod demo;
mod deploy_files;
mod dispatch;
mod fault_hung_db;
mod health_command;
mod http_routes;
mod jwt_keys;
mod logs;
mod migrate;
mod migrate_job;
mod migrate_upgrade;
mod model_stream;
mod observability;
mod relay;
mod scale_smoke;
mod sql_auth;
mod sql_history_cost;
mod sql_message_changes;
mod sql_messages;
mod sql_notify;
mod sql_presence;
mod sql_read_marker;
mod sql_rls;
mod sql_rpc;
mod typing_batch;
mod ws_delivery;
mod ws_doorbell;
mod ws_errors;
mod ws_fairness;
mod ws_frames;
mod ws_hardening;
mod ws_messaging;
mod ws_online_roster;
mod ws_queue_pressure;
mod ws_rev;
mod ws_tokens;
