//! The scenarios, and the setup they share: seed, mint, resolve, open the fleet.

pub mod connect;
pub mod fanout;
pub mod persist;
pub mod raw;
pub mod scale;
mod scale_db;
mod scale_metrics;
mod scale_report;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{Common, Scenario};
use crate::clients::{self, Fleet, Options, Shared, Spec};
use crate::report::Report;
use crate::seed::{self, Seeded};

pub async fn run(common: &Common, scenario: &Scenario) -> anyhow::Result<Report> {
    match scenario {
        Scenario::Connect {
            connections,
            room_size,
            hold,
        } => connect::run(common, *connections, *room_size, *hold).await,
        Scenario::Fanout {
            rooms,
            members,
            rate,
            duration,
        } => fanout::run(common, "fanout", *rooms, *members, *rate, *duration).await,
        Scenario::Bigroom {
            members,
            rate,
            duration,
        } => fanout::run(common, "bigroom", 1, *members, *rate, *duration).await,
        Scenario::Persist {
            senders,
            window,
            duration,
            rounds,
            db_url,
            no_limit,
        } => {
            let limit_db = match (no_limit, db_url) {
                (true, _) => None,
                (false, Some(url)) => Some(url.parse().context("parsing --db-url")?),
                (false, None) => Some(raw::authenticator_config(&common.admin_url)?),
            };
            persist::run(common, *senders, *window, *duration, *rounds, limit_db).await
        }
        Scenario::Scale(_) | Scenario::Worker => {
            anyhow::bail!("scale and worker are run by main")
        }
    }
}

/// What every scenario starts from: seeded data and the shared fleet state.
pub struct Setup {
    pub seeded: Seeded,
    pub shared: Arc<Shared>,
}

/// Seeds `users` users and `rooms` (member indices), and prepares the fleet state.
pub async fn setup(common: &Common, users: usize, rooms: &[Vec<usize>]) -> anyhow::Result<Setup> {
    let secret = common
        .jwt_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .context("--jwt-secret (or JWT_SECRET) is required: the server's HS256 secret")?;
    let servers = clients::resolve_all(&common.url).await?;
    let seeded = seed::seed(&common.admin_url, secret.as_bytes(), users, rooms).await?;
    let members: HashMap<i64, AtomicU64> = seeded
        .rooms
        .iter()
        .map(|r| (r.id, AtomicU64::new(0)))
        .collect();
    let shared = Arc::new(Shared {
        opts: Options {
            servers,
            sources: common.source_addrs,
            wait_join: !common.no_join_reply,
            acks: !common.no_acks,
            timeout: common.connect_timeout(),
            pad: common.pad,
            run: seeded.run.clone(),
            reconnect: false,
        },
        counters: Default::default(),
        members,
        stop: CancellationToken::new(),
        gate: Arc::new(tokio::sync::Semaphore::new(
            common.connect_concurrency.max(1),
        )),
    });
    Ok(Setup { seeded, shared })
}

impl Setup {
    /// One connection per user, joining the user's rooms among the first `joined`.
    pub fn specs(&self, joined: usize) -> Vec<Spec> {
        let mut rooms_of: Vec<Vec<i64>> = vec![Vec::new(); self.seeded.users.len()];
        for room in self.seeded.rooms.iter().take(joined) {
            for &u in &room.members {
                rooms_of[u].push(room.id);
            }
        }
        self.seeded
            .users
            .iter()
            .zip(rooms_of)
            .enumerate()
            .map(|(i, (u, rooms))| Spec {
                index: i as u64,
                token: u.token.clone(),
                rooms,
            })
            .collect()
    }

    /// Opens one connection per user, joining all of its rooms.
    pub async fn open(&self, common: &Common) -> anyhow::Result<Fleet> {
        self.open_joining(common, usize::MAX).await
    }

    /// Opens one connection per user, joining its rooms among the first `joined`;
    /// fails the run when none connected.
    pub async fn open_joining(&self, common: &Common, joined: usize) -> anyhow::Result<Fleet> {
        let specs = self.specs(joined);
        let fleet = clients::open_all(&self.shared, specs, common.connect_concurrency).await;
        if fleet.connected == 0 && fleet.failed > 0 {
            anyhow::bail!(
                "no connection succeeded; first errors: {}",
                fleet.errors.join("; ")
            );
        }
        let settle = common.settle();
        if settle > Duration::ZERO {
            tokio::time::sleep(settle).await;
        }
        Ok(fleet)
    }
}
