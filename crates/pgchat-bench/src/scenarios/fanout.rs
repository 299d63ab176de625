//! `fanout` (R rooms of M members) and `bigroom` (one room): an aggregate rate of X
//! messages/s for D seconds. Every delivery's latency goes into the histogram; lost,
//! duplicated and out-of-order deliveries are counted per receiver and room.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use crate::cli::Common;
use crate::clients::{self, Counters};
use crate::conn::Cmd;
use crate::limits;
use crate::report::{round1, Report};
use crate::seed;

/// Message `i` goes to room `i % R`, from member `(i / R) % M` of that room, so every
/// room gets the same share and every member sends in turn.
pub fn pick(i: u64, rooms: usize, members: usize) -> (usize, usize) {
    let r = (i % rooms as u64) as usize;
    let m = ((i / rooms as u64) % members as u64) as usize;
    (r, m)
}

/// Like [`pick`], but each room's turn starts at another member: room r's k-th sender is
/// member (k + r) mod M. With `pick` every room's k-th message came from the same
/// member position at the same moment; where rooms are consecutive users spread over
/// servers by index (`scale`), that put all of a turn's senders on one or two servers
/// for its whole length, so a server killed during that turn took half the run's
/// sends with it, and a server slow at that moment delayed half of them.
pub fn pick_staggered(i: u64, rooms: usize, members: usize) -> (usize, usize) {
    let (r, m) = pick(i, rooms, members);
    (r, (m + r) % members)
}

pub async fn run(
    common: &Common,
    scenario: &'static str,
    rooms: usize,
    members: usize,
    rate: f64,
    duration: f64,
) -> anyhow::Result<Report> {
    if rooms == 0 || members == 0 || rate <= 0.0 || duration <= 0.0 {
        bail!("rooms, members, rate and duration must be positive");
    }
    let layout = seed::consecutive_rooms(rooms * members, members);
    let setup = super::setup(common, rooms * members, &layout).await?;
    let mut fleet = setup.open(common).await?;
    let room_ids: Vec<i64> = setup.seeded.rooms.iter().map(|r| r.id).collect();
    let senders: Vec<&UnboundedSender<Cmd>> = fleet.handles.iter().map(|h| &h.tx).collect();

    let total = (rate * duration).round() as u64;
    let typing_total = (common.typing_rate.max(0.0) * duration).round() as u64;
    let start = Instant::now();
    let cpu = limits::CpuMark::now(common.server_pid());
    let (mut i, mut t, mut scheduled) = (0u64, 0u64, 0u64);
    while i < total || t < typing_total {
        let elapsed = start.elapsed().as_secs_f64();
        let due = ((elapsed * rate) as u64 + 1).min(total);
        while i < due {
            let (r, m) = pick(i, rooms, members);
            if senders[layout[r][m]]
                .send(Cmd::Send { room: room_ids[r] })
                .is_ok()
            {
                scheduled += 1;
            }
            i += 1;
        }
        let typing_due = ((elapsed * common.typing_rate) as u64 + 1).min(typing_total);
        while t < typing_due {
            // A different walk than messages, so typing comes from other members.
            let (r, m) = pick(t.wrapping_mul(7919), rooms, members);
            let _ = senders[layout[r][m]].send(Cmd::Typing { room: room_ids[r] });
            t += 1;
        }
        let next = [(i, total, rate), (t, typing_total, common.typing_rate)]
            .iter()
            .filter(|(k, n, _)| k < n)
            .map(|&(k, _, per_s)| k as f64 / per_s)
            .fold(f64::INFINITY, f64::min);
        if next.is_finite() {
            tokio::time::sleep_until((start + Duration::from_secs_f64(next)).into()).await;
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    clients::drain(&setup.shared, scheduled, common.drain()).await;
    let total_secs = start.elapsed().as_secs_f64();
    let (server_cpu, bench_cpu) = cpu.since(common.server_pid());
    let results = clients::close_all(&setup.shared, &mut fleet).await;

    let parameters = json!({
        "rooms": rooms,
        "members": members,
        "rate": rate,
        "duration_s": duration,
        "typing_rate": common.typing_rate,
        "pad": common.pad,
        "source_addrs": common.source_addrs,
        "acks": !common.no_acks,
        "wait_join": !common.no_join_reply,
    });
    let mut report = Report::collect(scenario, parameters, &setup.shared, &fleet, &results);
    let sent = Counters::get(&setup.shared.counters.sent);
    report.msgs_per_s = Some(round1(sent as f64 / send_secs));
    report.deliveries_per_s = Some(round1(report.delivered as f64 / total_secs));
    report.server_cpu_s = server_cpu;
    report.bench_cpu_s = bench_cpu;
    report.duration_s = round1(total_secs);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staggered_picks_give_every_member_its_turn_and_mix_positions_within_a_turn() {
        let (rooms, members) = (8, 50);
        let mut per_member = vec![vec![0; members]; rooms];
        for i in 0..(rooms * members * 3) as u64 {
            let (r, m) = pick_staggered(i, rooms, members);
            per_member[r][m] += 1;
        }
        assert!(per_member.iter().flatten().all(|&n| n == 3));
        // Rooms of 50 consecutive users, user u on server u mod 4 (as in `scale`): within
        // one turn (one message per room), no server has more than 3 of the 8 senders;
        // with `pick`, two servers had 4 each and the others none.
        let server = |r: usize, m: usize| (r * members + m) % 4;
        for turn in 0..members as u64 {
            let mut staggered = [0; 4];
            let mut plain = [0; 4];
            for i in turn * rooms as u64..(turn + 1) * rooms as u64 {
                let (r, m) = pick_staggered(i, rooms, members);
                staggered[server(r, m)] += 1;
                let (r, m) = pick(i, rooms, members);
                plain[server(r, m)] += 1;
            }
            assert!(
                staggered.iter().all(|&n| n <= 3),
                "turn {turn}: {staggered:?}"
            );
            assert_eq!(plain.iter().filter(|&&n| n == 4).count(), 2, "turn {turn}");
        }
    }

    #[test]
    fn picks_spread_over_rooms_and_members() {
        let (rooms, members) = (3, 4);
        let mut per_room = vec![0; rooms];
        let mut per_member = vec![vec![0; members]; rooms];
        for i in 0..(rooms * members * 5) as u64 {
            let (r, m) = pick(i, rooms, members);
            per_room[r] += 1;
            per_member[r][m] += 1;
        }
        assert!(per_room.iter().all(|&n| n == members * 5));
        assert!(per_member.iter().flatten().all(|&n| n == 5));
    }

    #[test]
    fn one_room_walks_every_member() {
        let senders: Vec<usize> = (0..5).map(|i| pick(i, 1, 5).1).collect();
        assert_eq!(senders, vec![0, 1, 2, 3, 4]);
    }
}
