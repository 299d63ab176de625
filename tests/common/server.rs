//! Starts the real server on 127.0.0.1:0 against a test database, and a real
//! WebSocket client to talk to it.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::{TestDb, JWT_SECRET};

pub struct TestServer {
    pub addr: SocketAddr,
    pub cancel: CancellationToken,
    pub task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts pgchat for `db` with extra `NAME=value` settings.
    pub async fn start(db: &TestDb, extra: &[(&str, &str)]) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(db, extra, listener).await
    }

    pub async fn start_on(
        db: &TestDb,
        extra: &[(&str, &str)],
        listener: tokio::net::TcpListener,
    ) -> TestServer {
        Self::start_url_on(&db.authenticator_url, extra, listener).await
    }

    /// Starts pgchat against any database URL (e.g. a private cluster's daemon URL).
    pub async fn start_url(database_url: &str, extra: &[(&str, &str)]) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_url_on(database_url, extra, listener).await
    }

    /// Starts pgchat for `db` with doorbells from the in-memory `bus` instead of LISTEN.
    pub async fn start_with_bus(
        db: &TestDb,
        extra: &[(&str, &str)],
        bus: pgchat::bus::memory::MemoryBus,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_url_with(&db.authenticator_url, extra, listener, Some(bus)).await
    }

    pub async fn start_url_on(
        database_url: &str,
        extra: &[(&str, &str)],
        listener: tokio::net::TcpListener,
    ) -> TestServer {
        Self::start_url_with(database_url, extra, listener, None).await
    }

    async fn start_url_with(
        database_url: &str,
        extra: &[(&str, &str)],
        listener: tokio::net::TcpListener,
        bus: Option<pgchat::bus::memory::MemoryBus>,
    ) -> TestServer {
        let mut pairs: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database_url.to_string()),
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            ("DB_POOL_SIZE".into(), "4".into()),
        ];
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = pgchat::config::Config::from_pairs(pairs).expect("valid test config");
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let shutdown = cancel.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            match bus {
                None => pgchat::server::run(listener, config, shutdown).await,
                Some(bus) => {
                    pgchat::server::run_with_bus(listener, config, shutdown, |_| bus).await
                }
            }
            .expect("server runs");
        });
        let server = TestServer {
            addr,
            cancel,
            task: Some(task),
        };
        server.wait_ready().await;
        server
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// Polls /readyz until the pool and LISTEN are up.
    pub async fn wait_ready(&self) {
        for _ in 0..100 {
            if self.get("/readyz").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not become ready");
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops")
                .unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A minimal HTTP/1.1 GET over a raw socket; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn token_for(user_id: i64, ttl_secs: Option<i64>) -> String {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), user_id.to_string().into());
    claims.insert("role".into(), "authenticated".into());
    pgchat::auth::mint_token(JWT_SECRET.as_bytes(), claims, ttl_secs).unwrap()
}

/// The identity the daemon's verifier makes of [`token_for`]`(user_id, 600 s)`: what
/// the database layer is called with for that user.
pub fn identity_for(user_id: i64) -> pgchat::auth::Identity {
    let config = pgchat::config::Config::from_pairs([("JWT_SECRET", JWT_SECRET)]).unwrap();
    pgchat::auth::Verifier::new(&config)
        .unwrap()
        .verify(&token_for(user_id, Some(600)), pgchat::auth::unix_now())
        .unwrap()
}

pub fn sign_claims(claims: Value) -> String {
    let Value::Object(map) = claims else {
        panic!("claims must be an object")
    };
    use jsonwebtoken::{encode, EncodingKey, Header};
    encode(
        &Header::default(),
        &Value::Object(map),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Client { ws }
    }

    /// Connects and authenticates with a token for `user_id`.
    pub async fn authed(url: &str, user_id: i64) -> Client {
        let mut c = Client::connect(url).await;
        c.send(json!({"type": "auth", "token": token_for(user_id, Some(3600))}))
            .await;
        let reply = c.recv_type("authenticated").await;
        assert_eq!(reply["user"]["id"], user_id);
        c
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    /// The next JSON text frame (pings and pongs are skipped). Panics on timeout.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(RECV_TIMEOUT)
            .await
            .expect("a frame within the timeout")
    }

    /// The next JSON text frame within `wait`, or None (timeout or closed).
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match next.ok()? {
                Message::Text(t) => {
                    return Some(serde_json::from_str(t.as_str()).expect("server sends JSON"))
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Skips frames until one of type `kind`; panics if none arrives in time.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(v) if v["type"] == kind => return v,
                Some(_) => continue,
                None => panic!("no `{kind}` frame arrived"),
            }
        }
    }

    /// Sends a frame with a ref and returns the reply carrying that ref.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let r = format!("r{}", rand_ref());
        frame["ref"] = json!(r);
        self.send(frame.clone()).await;
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(v) if v["ref"] == json!(r) => return v,
                Some(_) => continue,
                None => panic!("no reply to {frame}"),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => return Some(f.code.into()),
                Ok(Some(Ok(Message::Close(None)))) => return Some(1005),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => return None,
            }
        }
    }
}

fn rand_ref() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Presence is eventually consistent by a few milliseconds: a user whose arrival was
/// still being recorded is not in a `joined` reply's `online` list, and is announced
/// with `user_joined` right after. Returns once `user` is known to be online.
pub async fn assert_sees_online(c: &mut Client, joined: &Value, user: i64) {
    let listed = joined["online"]
        .as_array()
        .expect("joined carries online")
        .iter()
        .any(|u| u["id"] == user);
    if listed {
        return;
    }
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_recv(left).await {
            Some(f) if f["type"] == "user_joined" && f["user"]["id"] == user => return,
            Some(_) => continue,
            None => panic!("user {user} never shown online: {joined}"),
        }
    }
}
