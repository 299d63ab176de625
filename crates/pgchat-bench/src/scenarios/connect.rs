//! `connect`: N sockets authenticated and joined. Measures the connect+auth+join rate
//! and, with `--server-pid`, the server's resident memory per connection.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::Common;
use crate::clients;
use crate::limits;
use crate::report::{round1, Report};
use crate::seed;

pub async fn run(
    common: &Common,
    connections: usize,
    room_size: usize,
    hold: f64,
) -> anyhow::Result<Report> {
    let rooms = seed::consecutive_rooms(connections, room_size);
    let setup = super::setup(common, connections, &rooms).await?;
    // Let the server digest the seeding notifications before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = common.server_pid().and_then(limits::rss_bytes);
    let started = Instant::now();
    let cpu = limits::CpuMark::now(common.server_pid());
    let mut fleet = setup.open(common).await?;
    let (server_cpu, bench_cpu) = cpu.since(common.server_pid());
    tokio::time::sleep(Duration::from_secs_f64(hold.max(0.0))).await;
    let rss_after = common.server_pid().and_then(limits::rss_bytes);
    let results = clients::close_all(&setup.shared, &mut fleet).await;
    let parameters = json!({
        "connections": connections,
        "room_size": room_size,
        "rooms": rooms.len(),
        "hold_s": hold,
        "source_addrs": common.source_addrs,
        "connect_concurrency": common.connect_concurrency,
        "wait_join": !common.no_join_reply,
        "server_pid": common.server_pid(),
    });
    let mut report = Report::collect("connect", parameters, &setup.shared, &fleet, &results);
    report.server_cpu_s = server_cpu;
    report.bench_cpu_s = bench_cpu;
    report.server_rss_bytes_before = rss_before;
    report.server_rss_bytes_after = rss_after;
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        if fleet.connected > 0 {
            report.server_rss_bytes_per_conn = Some(round1(
                (after as f64 - before as f64) / fleet.connected as f64,
            ));
        }
    }
    report.duration_s = round1(started.elapsed().as_secs_f64());
    Ok(report)
}
