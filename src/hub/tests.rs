//! Unit tests of the hub: splicing, slow consumers, presence counting, eviction.

use super::*;
use crate::protocol::close;

/// A handle, and a second reference to it for reading what was queued.
fn handle(conn: ConnId, cap: usize) -> (Arc<SessionHandle>, Arc<SessionHandle>) {
    let h = Arc::new(SessionHandle::new(conn, cap, None));
    (h.clone(), h)
}

/// A new message at `seq`, as a stream frame at rev `seq`.
fn msg(seq: i64) -> Event {
    Event::stream(
        crate::protocol::StreamFrame::fields("m", 10, seq, serde_json::json!({})),
        Some(seq),
    )
}

/// A change that is not a new message (an edit, a read marker) at `rev`.
fn change(rev: i64) -> Event {
    Event::stream(
        crate::protocol::StreamFrame::fields("m", 10, rev, serde_json::json!({})),
        None,
    )
}

/// What was queued: stream frames as `m<rev>`, others as they are.
fn drain(rx: &mut Arc<SessionHandle>) -> Vec<String> {
    drain_chain(rx).into_iter().map(|(f, _)| f).collect()
}

/// What was queued, each stream frame with its `prevRev`.
fn drain_chain(rx: &mut Arc<SessionHandle>) -> Vec<(String, Option<i64>)> {
    rx.queue()
        .try_pop_all()
        .iter()
        .map(
            |f| match serde_json::from_str::<serde_json::Value>(f.as_str()) {
                Ok(v) if v["type"] == "m" => (format!("m{}", v["rev"]), v["prevRev"].as_i64()),
                _ => (f.as_str().to_owned(), None),
            },
        )
        .collect()
}

/// A socket pair whose one end an active subscriber of room 10 (connection 1, user 7)
/// writes to: (its handle, that end, kept open, and the peer's end, non-blocking).
fn subscriber_socket(
    hub: &Hub,
    cap: usize,
) -> (
    Arc<SessionHandle>,
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
) {
    use std::os::fd::AsRawFd;
    let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
    peer.set_nonblocking(true).unwrap();
    let h = Arc::new(SessionHandle::new(1, cap, Some(ours.as_raw_fd())));
    hub.subscribe(10, 7, h.clone());
    hub.activate(10, 1, 0, 0);
    (h, ours, peer)
}

#[test]
fn pending_subscription_splices_replay_and_live_without_gap_or_duplicate() {
    let hub = Hub::new();
    let (h, mut rx) = handle(1, 16);
    hub.subscribe(10, 7, h);
    hub.deliver(10, msg(4));
    hub.deliver(10, msg(5));
    assert!(drain(&mut rx).is_empty(), "held while pending");
    // The session replayed up to rev 4, so only 5 is released, then live continues.
    hub.activate(10, 1, 4, 4);
    hub.deliver(10, msg(5));
    hub.deliver(10, msg(6));
    assert_eq!(drain(&mut rx), ["m5", "m6"]);
}

#[test]
fn every_socket_sees_an_unbroken_prev_rev_chain_from_its_join() {
    let hub = Hub::new();
    let (a, mut ra) = handle(1, 64);
    hub.subscribe(10, 7, a);
    hub.activate(10, 1, 0, 3);
    hub.deliver(10, msg(4));
    hub.deliver(10, change(6));
    // B joins at rev 8: revs 7 and 8 were changes nobody here was sent (e.g. skipped).
    let (b, mut rb) = handle(2, 64);
    hub.subscribe(10, 8, b);
    hub.deliver(10, change(9));
    hub.activate(10, 2, 4, 8);
    hub.deliver(10, change(10));
    assert_eq!(
        drain_chain(&mut ra),
        [
            ("m4".into(), Some(3)),
            ("m6".into(), Some(4)),
            ("m9".into(), Some(6)),
            ("m10".into(), Some(9))
        ]
    );
    // B's chain starts at the rev it joined at, whatever the room's previous frame was.
    assert_eq!(
        drain_chain(&mut rb),
        [("m9".into(), Some(8)), ("m10".into(), Some(9))]
    );
}

#[test]
fn a_resync_jump_shows_as_a_gap_in_the_chain() {
    let hub = Hub::new();
    let (a, mut ra) = handle(1, 64);
    hub.subscribe(10, 7, a);
    hub.activate(10, 1, 0, 3);
    hub.deliver(10, change(4));
    hub.skip_to(10, 0, 20_000, "resync".into());
    hub.deliver(10, change(20_001));
    assert_eq!(
        drain_chain(&mut ra),
        [
            ("m4".into(), Some(3)),
            ("resync".into(), None),
            ("m20001".into(), Some(20_000))
        ]
    );
}

#[test]
fn a_full_queue_closes_only_that_connection() {
    let hub = Hub::new();
    let (slow, _slow_rx) = handle(1, 2);
    let (fast, mut fast_rx) = handle(2, 64);
    hub.subscribe(1, 1, slow.clone());
    hub.subscribe(1, 2, fast.clone());
    hub.activate(1, 1, 0, 0);
    hub.activate(1, 2, 0, 0);
    for seq in 1..=10 {
        hub.deliver(1, msg(seq));
    }
    assert_eq!(slow.close_code(), Some(close::SLOW_CONSUMER));
    assert_eq!(fast.close_code(), None);
    assert_eq!(drain(&mut fast_rx).len(), 10);
}

#[test]
fn presence_is_per_user_not_per_socket() {
    let hub = Hub::new();
    let (a, _ra) = handle(1, 4);
    let (b, _rb) = handle(2, 4);
    assert_eq!(hub.subscribe(5, 9, a), PresenceChange::Arrived);
    assert_eq!(hub.subscribe(5, 9, b), PresenceChange::Unchanged);
    assert_eq!(hub.unsubscribe(5, 1), PresenceChange::Unchanged);
    assert_eq!(hub.unsubscribe(5, 2), PresenceChange::Departed);
    assert_eq!(hub.room_count(), 0);
}

#[test]
fn skip_user_and_eviction() {
    let hub = Hub::new();
    let (a, mut ra) = handle(1, 4);
    let (b, mut rb) = handle(2, 4);
    hub.subscribe(5, 1, a);
    hub.subscribe(5, 2, b);
    hub.activate(5, 1, 0, 0);
    hub.activate(5, 2, 0, 0);
    hub.deliver(5, Event::to_others(1, "t".into()));
    assert!(drain(&mut ra).is_empty());
    assert_eq!(drain(&mut rb), ["t"]);
    assert_eq!(hub.evict_user(5, 2).len(), 1);
    assert!(!hub.is_subscribed(5, 2));
    assert!(hub.is_subscribed(5, 1));
}

fn online_ids(online: Online) -> Vec<UserId> {
    match online {
        Online::Known(json) => serde_json::from_str::<Vec<serde_json::Value>>(&json)
            .unwrap()
            .iter()
            .map(|u| u["id"].as_i64().unwrap())
            .collect(),
        _ => panic!("roster not ready"),
    }
}

/// A hub with LISTEN up and room 5 joined by user 1, whose roster a first join has
/// started loading and a second join waits for: (hub, the load, the waiter's signal).
fn room_being_loaded() -> (Hub, u64, Arc<tokio::sync::Semaphore>) {
    let hub = Hub::new();
    hub.reset_rosters(true);
    let (a, _ra) = handle(1, 4);
    hub.subscribe(5, 1, a);
    let Online::Load(load) = hub.online(5, (1, None)) else {
        panic!("the first join loads")
    };
    let Online::Wait(done) = hub.online(5, (1, None)) else {
        panic!("a second join waits for that load")
    };
    (hub, load, done)
}

#[tokio::test]
async fn joins_share_one_roster_load_and_follow_presence_reads() {
    let (hub, load, done) = room_being_loaded();
    hub.roster_loaded(5, load, Some(vec![(1, None), (2, Some("Bo".into()))]));
    assert!(done.acquire().await.is_err(), "waiters are released");
    assert_eq!(online_ids(hub.online(5, (1, None))), [1, 2]);

    // A presence read: Cy came, Bo went; user 1 has a socket here, so stays whatever
    // the table says yet.
    let changes = hub.apply_presence(5, vec![(3, Some("Cy".into()))]);
    let mut changes: Vec<(UserId, bool)> = changes.into_iter().map(|(u, _, on)| (u, on)).collect();
    changes.sort();
    assert_eq!(changes, [(2, false), (3, true)]);
    assert_eq!(online_ids(hub.online(5, (1, None))), [1, 3]);
    assert!(
        hub.apply_presence(5, vec![(3, Some("Cy".into()))])
            .is_empty(),
        "the same state read again announces nothing"
    );

    // A local arrival is listed at once, and announced once.
    assert!(hub.local_arrival(5, 4, Some("Di")));
    assert!(!hub.local_arrival(5, 4, Some("Di")));
    assert_eq!(online_ids(hub.online(5, (1, None))), [1, 3, 4]);

    // LISTEN lost: joins ask PostgreSQL; the roster is kept to compare with later.
    hub.reset_rosters(false);
    assert!(matches!(hub.online(5, (1, None)), Online::Ask));
    hub.reset_rosters(true);
    assert_eq!(online_ids(hub.online(5, (1, None))), [1, 3, 4]);
}

#[tokio::test]
async fn a_presence_read_during_a_load_releases_its_waiters() {
    let (hub, _load, done) = room_being_loaded();
    assert!(
        hub.apply_presence(5, vec![(2, None)]).is_empty(),
        "nothing to compare with"
    );
    assert!(done.acquire().await.is_err());
    assert_eq!(online_ids(hub.online(5, (1, None))), [1, 2]);
}

#[tokio::test]
async fn a_failed_roster_load_releases_waiters_and_is_retried() {
    let (hub, load, done) = room_being_loaded();
    hub.roster_loaded(5, load, None);
    assert!(done.acquire().await.is_err());
    assert!(
        matches!(hub.online(5, (1, None)), Online::Load(_)),
        "the next join loads again"
    );
}

#[test]
fn fanouts_into_idle_sockets_are_written_on_flush_once_per_socket() {
    use std::io::Read;
    let hub = Hub::new();
    let (h, _ours, mut peer) = subscriber_socket(&hub, 16);
    hub.deliver(10, Event::to_all("m1".into()));
    hub.deliver(10, Event::to_all("typing".into()));
    let mut buf = [0u8; 64];
    assert!(
        peer.read(&mut buf).is_err(),
        "nothing written before the flush"
    );
    hub.flush();
    let n = peer.read(&mut buf).unwrap();
    // Both frames, in order, in one write: 0x81 <len> <payload> each.
    assert_eq!(&buf[..n], b"\x81\x02m1\x81\x06typing");
    assert!(h.queue().try_pop_all().is_empty());
    hub.flush();
    assert!(
        peer.read(&mut buf).is_err(),
        "a flush writes each frame once"
    );
}

#[test]
fn a_big_flush_reaches_every_socket_once() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let hub = Hub::new();
    let mut peers = Vec::new();
    for conn in 0..600 {
        let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let h = Arc::new(SessionHandle::new(conn, 4, Some(ours.as_raw_fd())));
        hub.subscribe(10, conn as i64, h);
        hub.activate(10, conn, 0, 0);
        peers.push((ours, peer));
    }
    hub.deliver(10, Event::to_all("m1".into()));
    hub.flush();
    hub.flush_settled();
    for (_, peer) in &mut peers {
        let mut buf = [0u8; 16];
        assert_eq!(peer.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"\x81\x02m1");
        assert!(peer.read(&mut buf).is_err(), "written once");
    }
}

#[test]
fn announcements_may_wait_messages_may_not_and_a_burst_is_bounded() {
    let hub = Hub::new();
    let (h, _ours, _peer) = subscriber_socket(&hub, 1024);
    assert_eq!(hub.flush_due(), FlushDue::Nothing);

    let before = std::time::Instant::now();
    hub.announce(10, &[Event::to_others(8, "joined 8".into())]);
    let FlushDue::By(at) = hub.flush_due() else {
        panic!("an announcement alone may wait")
    };
    assert!(at >= before + flush::ANNOUNCE_DELAY);
    assert!(at <= std::time::Instant::now() + flush::ANNOUNCE_DELAY);

    hub.deliver(10, msg(1));
    assert_eq!(hub.flush_due(), FlushDue::Soon, "a message may not wait");
    hub.flush();
    assert_eq!(hub.flush_due(), FlushDue::Nothing);
    assert!(h.queue().try_pop_all().is_empty(), "all written");

    for user in 0..flush::MAX_UNFLUSHED_EVENTS as i64 {
        assert_ne!(hub.flush_due(), FlushDue::Now);
        hub.announce(10, &[Event::to_others(100 + user, "joined".into())]);
    }
    assert_eq!(
        hub.flush_due(),
        FlushDue::Now,
        "a burst is written long before it could fill a socket's queue"
    );
}

#[test]
fn a_small_outbound_queue_makes_bursts_flush_sooner() {
    let hub = Hub::for_queue(16);
    let (_h, _ours, _peer) = subscriber_socket(&hub, 16);
    for user in 0..3 {
        hub.announce(10, &[Event::to_others(100 + user, "joined".into())]);
        assert!(matches!(hub.flush_due(), FlushDue::By(_)));
    }
    hub.announce(10, &[Event::to_others(200, "joined".into())]);
    assert_eq!(hub.flush_due(), FlushDue::Now, "a quarter of 16 frames");
    hub.flush();
    assert_eq!(hub.flush_due(), FlushDue::Nothing);
}

#[test]
fn a_batch_of_announcements_reaches_everyone_but_its_subject_in_order() {
    let hub = Hub::new();
    let (a, mut ra) = handle(1, 16);
    let (b, mut rb) = handle(2, 16);
    hub.subscribe(10, 7, a);
    hub.subscribe(10, 8, b);
    hub.activate(10, 1, 0, 0);
    hub.activate(10, 2, 0, 0);
    let batch = [
        Event::to_others(7, "7 joined".into()),
        Event::to_others(8, "8 joined".into()),
        Event::to_others(9, "9 joined".into()),
    ];
    assert_eq!(hub.announce(10, &batch), 4);
    assert_eq!(drain(&mut ra), ["8 joined", "9 joined"]);
    assert_eq!(drain(&mut rb), ["7 joined", "9 joined"]);
}

#[test]
fn under_pressure_typing_and_announcements_are_dropped_and_messages_kept() {
    let hub = Hub::new();
    let (h, mut rx) = handle(1, 8);
    hub.subscribe(10, 7, h.clone());
    hub.activate(10, 1, 0, 0);
    let typing = || Event::ephemeral_to_others(8, "typing".into());
    // Announcements are ephemeral even when built as durable events.
    let joined = || Event::to_others(8, "joined".into());
    for seq in 1..=4 {
        hub.deliver(10, msg(seq));
    }
    assert_eq!(hub.deliver(10, typing()), 0, "half full: dropped");
    assert_eq!(hub.announce(10, &[joined(), joined()]), 0);
    for seq in 5..=8 {
        assert_eq!(hub.deliver(10, msg(seq)), 1);
    }
    assert_eq!(h.close_code(), None, "8 durable frames fit a queue of 8");
    let got = drain(&mut rx);
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"]);
    // A durable event into a full queue closes the socket instead of vanishing.
    for seq in 9..=17 {
        hub.deliver(10, msg(seq));
    }
    assert_eq!(h.close_code(), Some(close::SLOW_CONSUMER));
}

#[test]
fn a_pending_subscription_holds_messages_before_typing() {
    let hub = Hub::new();
    let (h, mut rx) = handle(1, 2 * MAX_PENDING);
    hub.subscribe(10, 7, h.clone());
    for seq in 1..=(MAX_PENDING / 2) as i64 {
        hub.deliver(10, msg(seq));
    }
    // Half of what a joining session may hold back: typing is no longer held...
    hub.deliver(10, Event::ephemeral_to_others(8, "typing".into()));
    // ...and messages still are, up to the limit.
    let last = MAX_PENDING as i64;
    for seq in (MAX_PENDING / 2) as i64 + 1..=last {
        hub.deliver(10, msg(seq));
    }
    assert_eq!(h.close_code(), None);
    hub.activate(10, 1, 0, 0);
    let got = drain(&mut rx);
    assert_eq!(got.len(), MAX_PENDING);
    assert!(got.iter().all(|f| f.starts_with('m')), "no typing");
}
