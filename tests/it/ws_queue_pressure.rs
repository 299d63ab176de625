//! Issue 11 point 9: under queue pressure, ephemeral events (typing, presence) go first
//! and durable ones are never dropped silently.
use crate::common;

use std::time::Duration;

use common::postgrest::Claims;
use common::server::{Client, TestServer};
use common::TestDb;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The paused reader's queue, in frames.
const QUEUE: usize = 64;
const TYPISTS: usize = 6;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Waits until some backend of this database waits for a lock.
async fn wait_for_lock_wait(admin: &tokio_postgres::Client) {
    for _ in 0..500 {
        let waiting: i64 = admin
            .query_one(
                "select count(*) from pg_stat_activity
                  where datname = current_database() and wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the paused reader's call never blocked");
}

/// A typist's socket: frames it receives are read (so its own queue stays empty) by a
/// task that reports the text of every `message` it sees.
struct Typist {
    sink: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        Message,
    >,
    messages: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Typist {
    async fn start(c: Client) -> Typist {
        let (sink, mut stream) = c.ws.split();
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = m {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "message" {
                        let _ = tx.send(v["message"]["message"].as_str().unwrap().to_owned());
                    }
                }
            }
        });
        Typist { sink, messages }
    }

    async fn typing(&mut self, room: i64, is_typing: bool) {
        let frame = json!({"type": "typing", "roomId": room, "isTyping": is_typing});
        self.sink
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_paused_reader_flooded_with_typing_gets_every_message_and_stays_open() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let create = |name: &'static str| {
        let pg = &pg;
        async move {
            pg.rpc(
                &Claims::user(bob),
                "create_chat_room",
                &[("name", &name), ("description", &"")],
            )
            .await
            .unwrap()["id"]
                .as_i64()
                .unwrap()
        }
    };
    let room = create("busy").await;
    // Bob's own room, whose membership row pauses him (below).
    let aside = create("aside").await;
    pg.rpc(
        &Claims::user(alice),
        "join_chat_room",
        &[("room_id", &room)],
    )
    .await
    .unwrap();
    let mut typist_ids = Vec::new();
    for i in 0..TYPISTS {
        let (id, _) = db
            .signup(&format!("typist{i}@example.com"), &format!("Typist {i}"))
            .await;
        pg.rpc(&Claims::user(id), "join_chat_room", &[("room_id", &room)])
            .await
            .unwrap();
        typist_ids.push(id);
    }

    let queue = QUEUE.to_string();
    let server = TestServer::start(
        &db,
        &[
            ("OUTBOUND_QUEUE", queue.as_str()),
            ("RATE_LIMIT_PER_SEC", "0"),
            ("DB_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let mut reader = Client::authed(&server.url(), bob).await;
    let joined = reader
        .request(json!({"type": "join", "roomId": room}))
        .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let mut typists = Vec::new();
    for &id in &typist_ids {
        let mut c = Client::authed(&server.url(), id).await;
        let j = c.request(json!({"type": "join", "roomId": room})).await;
        assert_eq!(j["type"], "joined", "{j}");
        // The reader sees each typist arrive before it pauses: nothing else is queued.
        common::server::assert_sees_online(&mut reader, &joined, id).await;
        typists.push(Typist::start(c).await);
    }
    let mut alice_ws = Client::authed(&server.url(), alice).await;

    // Pause the reader: its next command waits for a row lock held here, and until it
    // completes its session writes nothing, so every event for it stays in its queue.
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "begin; select 1 from api.room_members where room_id = {aside} and user_id = {bob} for update"
        ))
        .await
        .unwrap();
    reader
        .send(json!({"type": "read", "roomId": aside, "seq": 0, "ref": "paused"}))
        .await;
    wait_for_lock_wait(&admin).await;

    let send = |n: usize| json!({"type": "message", "roomId": room, "message": format!("m{n}")});
    // Half the queue in messages, then messages and a flood of typing until it is
    // three-quarters full: 48 messages and 6 × 16 typing frames would overflow a queue
    // of 64 twice over. (A stricter typing throttle relays fewer, which changes nothing
    // here: the queue is half full before the first one.)
    let durable = QUEUE * 3 / 4;
    for n in 1..=QUEUE / 2 {
        assert_eq!(alice_ws.request(send(n)).await["type"], "ack");
    }
    for n in QUEUE / 2 + 1..=durable {
        for t in &mut typists {
            t.typing(room, n % 2 == 1).await;
        }
        assert_eq!(alice_ws.request(send(n)).await["type"], "ack");
    }
    // Every typist saw the last message, so every message was fanned out to the paused
    // reader by now.
    for t in &mut typists {
        loop {
            let text = tokio::time::timeout(Duration::from_secs(10), t.messages.recv())
                .await
                .expect("typists receive the messages")
                .unwrap();
            if text == format!("m{durable}") {
                break;
            }
        }
    }
    // Messages go out from the writer's daemon at once, typing after the relay read its
    // rows: wait until the typing flood reached the paused reader's queue (some of it
    // found the queue half full and was dropped).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = server.get("/metrics").await;
        if metric(&metrics, "pgchat_ephemeral_dropped_total") > 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no typing frame was dropped while the queue was over half full\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Resume: the reader's call completes, then it reads everything queued meanwhile.
    admin.batch_execute("rollback").await.unwrap();
    let mut seqs = Vec::new();
    let mut acked = false;
    while seqs.len() < durable || !acked {
        let frame = reader
            .try_recv(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("closed or silent after {} messages: {seqs:?}", seqs.len()));
        match frame["type"].as_str() {
            Some("message") => seqs.push(frame["message"]["seq"].as_i64().unwrap()),
            Some("ack") => acked = true,
            Some("typing" | "user_joined" | "user_left") => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert_eq!(
        seqs,
        (1..=durable as i64).collect::<Vec<_>>(),
        "every message, once, in order"
    );
    // Still open: a request after it all is answered.
    assert_eq!(
        reader.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metric(&metrics, "pgchat_ephemeral_dropped_total") > 0.0,
        "the queue passed half full: typing was dropped\n{metrics}"
    );
    assert_eq!(metric(&metrics, "pgchat_slow_consumer_closes_total"), 0.0);
    server.stop().await;
}
