//! Extra WebSocket helpers for the `ws_tokens`, `ws_errors` and `jwt_keys` tests
//! (`use crate::common::ws_extra;`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

use crate::common::server::Client;
use crate::common::JWT_SECRET;

pub fn now() -> i64 {
    pgchat::auth::unix_now()
}

/// Signs `claims` with `secret` and `alg` (an HMAC algorithm).
pub fn sign_with(secret: &[u8], alg: jsonwebtoken::Algorithm, claims: &Value) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A token assembled by hand: base64url(header) . base64url(payload) . signature.
pub fn craft(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        signature
    )
}

/// The payload of a token, decoded without any verification.
pub fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("three-part token");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Sends `auth` with `token` and returns the reply (authenticated or error).
pub async fn auth(c: &mut Client, token: &str) -> Value {
    c.request(json!({"type": "auth", "token": token})).await
}

/// A fresh connection's reply to `auth` with `token`; the connection is returned too.
pub async fn try_token(url: &str, token: &str) -> (Client, Value) {
    let mut c = Client::connect(url).await;
    let reply = auth(&mut c, token).await;
    (c, reply)
}

#[track_caller]
pub fn assert_error(reply: &Value, code: &str) {
    assert_eq!(reply["type"], "error", "expected error {code}, got {reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(
        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {reply}"
    );
}

/// The connection is open and served: `ping` gets its `pong`.
pub async fn assert_alive(c: &mut Client) {
    let pong = c.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
}

/// Connects with `Authorization: Bearer <token>` on the upgrade request.
pub async fn connect_bearer(url: &str, token: &str) -> Client {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connects");
    Client { ws }
}

/// Connects over a socket whose receive buffer is as small as the kernel allows, so a
/// client that stops reading backs the server up quickly.
pub async fn connect_small_buffer(addr: SocketAddr, url: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket connects");
    Client { ws }
}

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server sent a Close frame with this code.
    Close(u16),
    /// The transport ended without a Close frame (EOF, reset, protocol error).
    Dropped,
    /// Still open when the wait was over.
    Open,
}

/// Reads every text frame until the connection ends or `wait` is over.
pub async fn drain(c: &mut Client, wait: Duration) -> (Vec<Value>, End) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => return (frames, End::Open),
            Ok(None) | Ok(Some(Err(_))) => return (frames, End::Dropped),
            Ok(Some(Ok(Message::Close(f)))) => {
                return (frames, End::Close(f.map_or(1005, |f| f.code.into())))
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                frames.push(serde_json::from_str(t.as_str()).expect("server sends JSON"))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A token for `user_id` with exactly these extra/overriding claims.
pub fn token_with(user_id: i64, extra: Value) -> String {
    let mut claims = json!({"sub": user_id.to_string(), "role": "authenticated"});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    sign_with(
        JWT_SECRET.as_bytes(),
        jsonwebtoken::Algorithm::HS256,
        &claims,
    )
}
