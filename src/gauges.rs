//! Gauges read from the daemon's state when `/metrics` is scraped: the pool, the
//! sockets' queues and who is present here. Reading them per scrape costs nothing on the
//! data path; every few seconds is as fresh as a dashboard needs.

use std::collections::HashSet;

use crate::app::App;

/// Sets every scrape-time gauge from `state`.
pub fn refresh(state: &App) {
    let pool = state.db.status();
    metrics::gauge!("pgchat_db_pool_size").set(pool.max_size as f64);
    metrics::gauge!("pgchat_db_pool_in_use").set(pool.size.saturating_sub(pool.available) as f64);
    metrics::gauge!("pgchat_db_pool_waiting").set(pool.waiting as f64);
    let joins_waiting = state.join_reads.waiting();
    metrics::gauge!("pgchat_join_reads_waiting").set(joins_waiting as f64);

    // The fullest queue among sockets in rooms: what a slow reader looks like before it
    // is closed at OUTBOUND_QUEUE.
    let rooms = state.hub.room_ids();
    let fullest = rooms
        .iter()
        .map(|room| state.hub.max_queued(*room))
        .max()
        .unwrap_or(0);
    metrics::gauge!("pgchat_outbound_queue_max_frames").set(fullest as f64);
    metrics::gauge!("pgchat_outbound_queue_capacity").set(state.config.outbound_queue as f64);

    let present = state.hub.present_users();
    let users: HashSet<_> = present.iter().map(|(_, user)| *user).collect();
    metrics::gauge!("pgchat_presence_room_users").set(present.len() as f64);
    metrics::gauge!("pgchat_presence_users").set(users.len() as f64);
}
