//! A LISTEN connection that collects doorbells, like the daemon's: a plain connection
//! driven with `Connection::poll_message`. It listens on `pgchat` and on PostgREST's
//! `pgrst`, which must stay silent.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

pub struct Listener {
    pub rx: mpsc::UnboundedReceiver<(String, String)>,
    pub client: tokio_postgres::Client,
}

impl Listener {
    /// LISTENs on `pgchat` and on PostgREST's `pgrst`, which must stay silent.
    pub async fn start(db: &super::TestDb) -> Listener {
        Self::start_as(&db.authenticator_url).await
    }

    pub async fn start_as(url: &str) -> Listener {
        let (client, mut conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                match msg {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        client
            .batch_execute("listen pgchat; listen pgrst")
            .await
            .unwrap();
        Listener { rx, client }
    }

    /// The next notification's raw payload.
    pub async fn next_raw(&mut self) -> String {
        let (channel, payload) = tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
            .await
            .expect("a notification within 20 s")
            .expect("listener alive");
        assert_eq!(channel, "pgchat", "{payload}");
        payload
    }

    /// The next doorbell, split into its parts: ("c", room, Some(rev)) and the like.
    pub async fn next(&mut self) -> (String, i64, Option<i64>) {
        let raw = self.next_raw().await;
        let parts: Vec<&str> = raw.split(':').collect();
        assert!(
            (2..=3).contains(&parts.len()) && parts[1..].iter().all(|p| p.parse::<i64>().is_ok()),
            "not a doorbell: {raw}"
        );
        (
            parts[0].to_string(),
            parts[1].parse().unwrap(),
            parts.get(2).map(|p| p.parse().unwrap()),
        )
    }

    /// Sends a sentinel doorbell and returns every notification that came before it.
    pub async fn until_sentinel(&mut self) -> Vec<String> {
        self.client
            .batch_execute("select pg_notify('pgchat', 'sentinel')")
            .await
            .unwrap();
        let mut before = Vec::new();
        loop {
            let raw = self.next_raw().await;
            if raw == "sentinel" {
                return before;
            }
            before.push(raw);
        }
    }
}
