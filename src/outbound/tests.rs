//! Unit tests of the outbound queue: bounds, order, direct writes, queue pressure.

use super::*;

#[tokio::test]
async fn bounded_ordered_and_closable() {
    let q = Outbound::new(3, None);
    for f in ["a", "b", "c"] {
        q.push(f.into()).unwrap();
    }
    assert_eq!(q.push("d".into()), Err(PushError::Full));
    let first = q.pop_batch(2).await;
    let second = q.pop_batch(10).await;
    let all: Vec<&str> = first
        .frames
        .iter()
        .chain(&second.frames)
        .map(|f| f.as_str())
        .collect();
    assert_eq!(all, ["a", "b", "c"]);
    q.close();
    assert_eq!(q.push("e".into()), Err(PushError::Closed));
}

#[tokio::test]
async fn an_interrupt_wakes_a_waiting_or_writing_consumer() {
    // The consumer waits in pop_batch (idle) or in interrupted() (busy writing).
    for writing in [false, true] {
        let q = std::sync::Arc::new(Outbound::new(4, None));
        let consumer = {
            let q = q.clone();
            tokio::spawn(async move {
                if writing {
                    q.interrupted().await;
                    Batch::default()
                } else {
                    q.pop_batch(4).await
                }
            })
        };
        tokio::task::yield_now().await;
        q.interrupt();
        q.interrupt();
        assert!(consumer.await.unwrap().is_empty());
        q.push("late".into()).unwrap();
        assert!(q.pop_batch(4).await.is_empty(), "stays interrupted");
        q.interrupted().await;
    }
}

#[tokio::test]
async fn a_waiting_consumer_wakes_on_push() {
    let q = std::sync::Arc::new(Outbound::new(4, None));
    let consumer = {
        let q = q.clone();
        tokio::spawn(async move { q.pop_batch(4).await })
    };
    tokio::task::yield_now().await;
    q.push("x".into()).unwrap();
    assert_eq!(consumer.await.unwrap().frames[0].as_str(), "x");
}

/// A socket pair whose first end the queue may write to directly.
fn direct_queue() -> (
    Outbound,
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
) {
    use std::os::fd::AsRawFd;
    let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
    peer.set_nonblocking(true).unwrap();
    (Outbound::new(8, Some(ours.as_raw_fd())), ours, peer)
}

fn received(peer: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0; 1 << 16];
    match peer.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

fn frame(text: &str) -> Vec<u8> {
    let (h, n) = crate::frame_writer::header(crate::frame_writer::TEXT, text.len());
    [&h[..n], text.as_bytes()].concat()
}

#[test]
fn a_fanout_into_an_idle_socket_is_written_by_its_producer() {
    let (q, _ours, mut peer) = direct_queue();
    assert_eq!(q.push_fanout("a".into()), Ok(Queued::FlushPromised));
    // Until the promise is kept, later frames ride along with it.
    assert_eq!(q.push_fanout("b".into()), Ok(Queued::WithPromisedFlush));
    assert!(received(&mut peer).is_empty());
    q.flush();
    assert_eq!(received(&mut peer), [frame("a"), frame("b")].concat());
    assert!(q.try_pop_all().is_empty());
    // A second flush (nothing promised) writes nothing.
    q.flush();
    assert!(received(&mut peer).is_empty());
}

#[tokio::test]
async fn the_session_writing_or_closing_keeps_producers_off_the_socket() {
    let (q, _ours, mut peer) = direct_queue();
    assert_eq!(q.push_fanout("a".into()), Ok(Queued::FlushPromised));
    // The session took the frame before the producer flushed: the promise lapses.
    let batch = q.pop_batch(8).await;
    assert_eq!(batch.frames.len(), 1);
    q.flush();
    assert_eq!(
        q.push_fanout("b".into()),
        Ok(Queued::BySession),
        "session writing"
    );
    q.end_write();
    assert!(received(&mut peer).is_empty());
    assert_eq!(q.pop_batch(8).await.frames[0].as_str(), "b");
    q.end_write();

    assert_eq!(q.push_fanout("c".into()), Ok(Queued::FlushPromised));
    q.close();
    q.flush();
    assert!(
        received(&mut peer).is_empty(),
        "no direct write after close"
    );
}

#[tokio::test]
async fn a_direct_write_the_socket_cannot_finish_is_left_to_the_session() {
    let (q, _ours, mut peer) = direct_queue();
    let big = "y".repeat(1 << 20);
    assert_eq!(q.push_fanout(big.clone().into()), Ok(Queued::FlushPromised));
    q.flush();
    let mut got = Vec::new();
    loop {
        let chunk = received(&mut peer);
        if chunk.is_empty() {
            break;
        }
        got.extend(chunk);
    }
    // The session is woken with the unsent bytes, which complete the frame.
    let batch = q.pop_batch(8).await;
    assert!(batch.frames.is_empty());
    got.extend_from_slice(&batch.rest.expect("the unsent part"));
    assert_eq!(got, frame(&big));
}

#[tokio::test]
async fn events_during_a_command_wait_for_its_reply() {
    let (q, _ours, mut peer) = direct_queue();
    q.begin_command();
    assert_eq!(q.push_fanout("event".into()), Ok(Queued::BySession));
    q.flush();
    assert!(received(&mut peer).is_empty(), "not before the reply");
    q.end_command();
    assert_eq!(q.pop_batch(8).await.frames[0].as_str(), "event");
}

#[test]
fn ephemeral_frames_stop_at_half_full_and_durable_ones_fill_the_rest() {
    let q = Outbound::new(8, None);
    let typing = || ("typing".into(), Kind::Ephemeral);
    // Below half, ephemeral frames queue like any other.
    for i in 0..3 {
        assert_eq!(q.push_kind(format!("m{i}").into(), Kind::Durable), Ok(true));
    }
    assert_eq!(q.push_kind("typing".into(), Kind::Ephemeral), Ok(true));
    // At half (4 of 8), they are dropped, in single pushes and in batches alike...
    assert_eq!(q.push_kind("typing".into(), Kind::Ephemeral), Ok(false));
    let pushed = q
        .push_fanout_all([typing(), ("m3".into(), Kind::Durable), typing()])
        .unwrap();
    assert_eq!(pushed.dropped, 2);
    // ...while durable frames fill the queue to the brim, in order.
    for i in 4..7 {
        q.push(format!("m{i}").into()).unwrap();
    }
    let queued: Vec<String> = q
        .try_pop_all()
        .iter()
        .map(|f| f.as_str().to_owned())
        .collect();
    assert_eq!(queued, ["m0", "m1", "m2", "typing", "m3", "m4", "m5", "m6"]);
}

#[test]
fn a_durable_frame_is_never_dropped_a_full_queue_refuses_it() {
    let q = Outbound::new(4, None);
    for i in 0..4 {
        q.push(format!("m{i}").into()).unwrap();
    }
    // Full: an ephemeral frame is dropped quietly, a durable one is refused (the
    // caller closes the socket with 4003 so the client resumes).
    assert_eq!(q.push_kind("typing".into(), Kind::Ephemeral), Ok(false));
    assert_eq!(q.push("m4".into()), Err(PushError::Full));
    assert_eq!(
        q.push_fanout_all([("m4".into(), Kind::Durable)]),
        Err(PushError::Full)
    );
    // Once the session drains it, ephemeral frames are welcome again.
    assert_eq!(q.try_pop_all().len(), 4);
    assert_eq!(q.push_kind("typing".into(), Kind::Ephemeral), Ok(true));
}

#[test]
fn a_one_frame_queue_still_takes_an_ephemeral_frame_when_empty() {
    let q = Outbound::new(1, None);
    assert_eq!(q.push_kind("typing".into(), Kind::Ephemeral), Ok(true));
    assert_eq!(q.push_kind("typing".into(), Kind::Ephemeral), Ok(false));
}
