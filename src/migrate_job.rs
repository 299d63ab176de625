//! `pgchat migrate` as a pod's migration step: wait for PostgreSQL, migrate (which ends
//! by telling PostgREST to reload its schema cache when the schema changed), and
//! optionally stay up until stopped.
//!
//! In a pod every container starts at once, PostgreSQL included, so the step that holds
//! the superuser's credentials has to wait for it itself (an init container would run
//! before PostgreSQL and never reach it). It waits only for what passes: a server not
//! listening yet or still starting up; a wrong password fails at once. Staying up
//! afterwards keeps a pod whose restart policy is `Always` from running it again and
//! again: it runs once per start of the pod.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::error::SqlState;

use crate::migrate::{migrate, DatabaseSettings, MigrateError, MigrateReport};

/// Pause between attempts while PostgreSQL is not accepting connections yet.
const RETRY_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Migrate(#[from] MigrateError),
    #[error("PostgreSQL did not accept connections within {secs} s: {last}")]
    GaveUp { secs: u64, last: MigrateError },
}

/// Migrates the database at `admin_url`, retrying for up to `wait` while PostgreSQL is
/// not up yet. `Duration::ZERO` tries once.
pub async fn migrate_when_up(
    admin_url: &str,
    settings: &DatabaseSettings,
    wait: Duration,
) -> Result<MigrateReport, JobError> {
    let deadline = Instant::now() + wait;
    let mut logged = false;
    loop {
        match migrate(admin_url, settings).await {
            Ok(report) => return Ok(report),
            Err(e) if not_up_yet(&e) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(if wait.is_zero() {
                        JobError::Migrate(e)
                    } else {
                        JobError::GaveUp {
                            secs: wait.as_secs(),
                            last: e,
                        }
                    });
                }
                if !logged {
                    tracing::info!(error = %e, "waiting for PostgreSQL to accept connections");
                    logged = true;
                }
                // The last try is made at the deadline itself.
                tokio::time::sleep(RETRY_EVERY.min(deadline - now)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connection refused or reset, no socket file yet, or "the database system is starting
/// up": worth another try. Anything PostgreSQL itself refuses otherwise is final.
fn not_up_yet(e: &MigrateError) -> bool {
    match e {
        MigrateError::Connect(e) => match e.code() {
            None => true,
            Some(code) => *code == SqlState::CANNOT_CONNECT_NOW,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DatabaseSettings {
        DatabaseSettings {
            jwt_key: b"a-secret-of-at-least-thirty-two-chars!".to_vec(),
            jwt_kid: String::new(),
            notify_channel: "pgchat".into(),
        }
    }

    /// A loopback port nobody listens on.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn gives_up_after_the_wait_when_nothing_listens() {
        let url = format!("postgres://postgres@127.0.0.1:{}/app", closed_port());
        let started = std::time::Instant::now();
        let err = migrate_when_up(&url, &settings(), Duration::from_secs(2))
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(err, JobError::GaveUp { secs: 2, .. }), "{err}");
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn without_a_wait_it_tries_once() {
        let url = format!("postgres://postgres@127.0.0.1:{}/app", closed_port());
        let started = std::time::Instant::now();
        let err = migrate_when_up(&url, &settings(), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(
            matches!(err, JobError::Migrate(MigrateError::Connect(_))),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
