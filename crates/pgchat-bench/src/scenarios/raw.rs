//! The limit for `persist`: the identical transaction the server runs for a message
//! (PostgREST's request context, then `api.send_message`), executed straight over
//! tokio-postgres as `authenticator` from K connections, pipelined in one round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use crate::frames;

pub const CONTEXT_SQL: &str = "select set_config('search_path', '\"api\", \"public\"', true), \
     set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
     set_config('request.method', 'POST', true), set_config('request.path', $3, true)";

pub const SEND_SQL: &str =
    "select to_json(api.send_message(room_id := $1, message := $2, client_id := $3))";

/// `--admin-url` with the user switched to `authenticator` and no password.
pub fn authenticator_config(admin_url: &str) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = admin_url.parse().context("parsing --admin-url")?;
    config.user("authenticator");
    config.password("");
    Ok(config)
}

/// One raw sender: the user's claims and room, and its sender index.
pub struct RawSender {
    pub index: u64,
    pub round: usize,
    pub claims_json: String,
    pub room: i64,
}

/// Runs every sender for `duration`; returns the transactions committed within it
/// and its length in seconds.
pub async fn limit(
    config: &tokio_postgres::Config,
    run: &str,
    senders: Vec<RawSender>,
    duration: Duration,
) -> anyhow::Result<(u64, f64)> {
    let mut clients = Vec::with_capacity(senders.len());
    for _ in &senders {
        let (client, conn) = config
            .connect(NoTls)
            .await
            .context("connecting for the raw-transaction limit (see --db-url)")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        clients.push(client);
    }
    let committed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + duration;
    let mut tasks = Vec::new();
    for (client, sender) in clients.into_iter().zip(senders) {
        let committed = committed.clone();
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            sender_loop(client, &run, sender, until, &committed).await
        }));
    }
    for t in tasks {
        t.await.context("raw sender panicked")??;
    }
    let secs = start.elapsed().as_secs_f64().min(duration.as_secs_f64());
    Ok((committed.load(Ordering::Relaxed), secs))
}

async fn sender_loop(
    client: tokio_postgres::Client,
    run: &str,
    s: RawSender,
    until: Instant,
    committed: &AtomicU64,
) -> anyhow::Result<()> {
    let context = client.prepare(CONTEXT_SQL).await?;
    let send = client.prepare(SEND_SQL).await?;
    let role = "authenticated";
    let path = "/rpc/send_message";
    let mut n = 0u64;
    while Instant::now() < until {
        let text = format!("t={};k={}:{n}", frames::unix_nanos(), s.index);
        let client_id = format!("{run}-raw{}-{}-{n}", s.round, s.index);
        let begin = client.batch_execute("BEGIN");
        let context_params: [&(dyn ToSql + Sync); 3] = [&role, &s.claims_json, &path];
        let send_params: [&(dyn ToSql + Sync); 3] = [&s.room, &text, &client_id];
        let set = client.query_one(&context, &context_params);
        let insert = client.query_one(&send, &send_params);
        let commit = client.batch_execute("COMMIT");
        let (begin, set, insert, commit) = tokio::join!(begin, set, insert, commit);
        begin?;
        set?;
        insert.context("raw send_message")?;
        commit?;
        if Instant::now() <= until {
            committed.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticator_replaces_user_and_password() {
        let c = authenticator_config("postgres://postgres:pw@127.0.0.1:5432/db").unwrap();
        assert_eq!(c.get_user(), Some("authenticator"));
        assert_eq!(c.get_password(), Some(&b""[..]));
        assert_eq!(c.get_dbname(), Some("db"));
    }
}
