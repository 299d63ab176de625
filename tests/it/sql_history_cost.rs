//! Cost independent of history (SPEC §6.1, issue 13 §3): the room list, a history page,
//! a join and a resume touch the same number of buffers (±10 %) in a database whose
//! room holds 1,000 messages and in one whose room holds 100 times more. Counted with
//! EXPLAIN (ANALYZE, BUFFERS) as the user, in PostgREST's context, not timed.
//! (scripts/history-cost measures the same at 1,000,000.)

use crate::common;

use common::postgrest::Claims;
use serde_json::Value;

const SMALL: i64 = 1_000;
const LARGE: i64 = 100_000;

/// A database with one room of `n` messages by two members, seeded with COPY (triggers
/// off, counters set as the triggers would have), and the reader's id and room.
async fn seeded(n: i64) -> (common::TestDb, i64, i64) {
    let db = common::TestDb::new().await;
    let (reader, _) = db.signup("reader@example.com", "Reader").await;
    let (writer, _) = db.signup("writer@example.com", "Writer").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(writer, "Busy").await;
    pg.rpc(
        &Claims::user(reader),
        "join_chat_room",
        &[("room_id", &room)],
    )
    .await
    .unwrap();
    let admin = db.admin().await;
    admin
        .batch_execute("set session_replication_role = replica")
        .await
        .unwrap();
    let base = admin
        .query_one(
            "select last_rev from api.chat_rooms where id = $1",
            &[&room],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    let mut data = String::new();
    for seq in 1..=n {
        let user = if seq % 3 == 0 { reader } else { writer };
        data.push_str(&format!(
            "{room}\t{seq}\t{}\t{user}\tmessage number {seq} of the seeded history\t2026-01-01 00:00:00+00\n",
            base + seq
        ));
    }
    let sink = admin
        .copy_in(
            "copy api.chat_messages (room_id, seq, rev, user_id, message, created_at) from stdin",
        )
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    sink.finish().await.unwrap();
    admin
        .execute(
            "update api.chat_rooms set last_seq = $2, last_rev = last_rev + $2,
                    message_count = $2, last_message_at = '2026-01-01' where id = $1",
            &[&room, &n],
        )
        .await
        .unwrap();
    admin
        .execute(
            "update api.room_members set last_read_seq = $2::bigint / 2, last_sent_seq = $2::bigint - 1
              where room_id = $1 and user_id = $3",
            &[&room, &n, &reader],
        )
        .await
        .unwrap();
    admin
        .batch_execute("set session_replication_role = origin")
        .await
        .unwrap();
    admin.batch_execute("vacuum analyze").await.unwrap();
    (db, reader, room)
}

/// Shared buffers (hit + read) the statement's execution touched, planning excluded;
/// the second of two runs, so that both databases start with warm caches.
async fn buffers(pg: &common::postgrest::Postgrest, user: i64, sql: &str) -> i64 {
    let mut touched = 0;
    for _ in 0..2 {
        let rows = pg
            .query(
                &Claims::user(user),
                &format!("explain (analyze, buffers, format json) {sql}"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let plan: Value = rows[0].get(0);
        let top = &plan[0]["Plan"];
        touched = top["Shared Hit Blocks"].as_i64().unwrap()
            + top["Shared Read Blocks"].as_i64().unwrap();
    }
    touched
}

/// The statements behind `rooms`, `history`, `join` and resume (by seq and by rev).
fn statements(room: i64, last: i64) -> Vec<(&'static str, String)> {
    vec![
        (
            "rooms",
            "select coalesce(json_agg(r order by r.last_message_at desc nulls last, r.id desc), '[]'::json) \
             from api.my_chat_rooms r"
                .to_string(),
        ),
        ("history", format!("select api.chat_history(room_id := {room})")),
        (
            "history before",
            format!("select api.chat_history(room_id := {room}, before_seq := {})", last / 2),
        ),
        ("join", format!("select api.room_state(room_id := {room})")),
        (
            "resume since",
            format!("select api.messages_since(room_id := {room}, after_seq := {})", last - 20),
        ),
        (
            "resume sinceRev",
            format!(
                "select api.messages_since_rev(room_id := {room}, after_rev := \
                 (select last_rev - 20 from api.chat_rooms where id = {room}))"
            ),
        ),
    ]
}

#[tokio::test]
async fn room_list_history_join_and_resume_cost_the_same_at_1000_and_100000_messages() {
    let (small, small_reader, small_room) = seeded(SMALL).await;
    let (large, large_reader, large_room) = seeded(LARGE).await;
    let (small_pg, large_pg) = (small.postgrest().await, large.postgrest().await);
    let mut report = Vec::new();
    for ((name, small_sql), (_, large_sql)) in statements(small_room, SMALL)
        .into_iter()
        .zip(statements(large_room, LARGE))
    {
        let a = buffers(&small_pg, small_reader, &small_sql).await;
        let b = buffers(&large_pg, large_reader, &large_sql).await;
        report.push(format!("{name}: {a} buffers at {SMALL}, {b} at {LARGE}"));
        assert!(a > 0, "{name}: nothing counted");
        assert!(
            (b - a).abs() * 10 <= a,
            "{name} grows with history: {a} buffers at {SMALL} messages, {b} at {LARGE}\n{}",
            report.join("\n")
        );
    }
    println!("{}", report.join("\n"));
    // The rows really are there: the room list counts them without reading them.
    let rooms = large_pg
        .query(
            &Claims::user(large_reader),
            "select message_count, unread_count from api.my_chat_rooms",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rooms[0].get::<_, i64>(0), LARGE);
    assert_eq!(rooms[0].get::<_, i64>(1), 1, "after my own last message");
}
