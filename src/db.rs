//! The connection pool and the one way user actions reach the database: a transaction
//! that first sets role and claims exactly like PostgREST (POSTGREST.md §2), then runs
//! the chat SQL with bound parameters.
//!
//! Each user's as-user calls run at most `DB_USER_CONCURRENCY` at a time ([`fair`]), so
//! no user holds more than a fair share of the pool.

mod fair;
mod pipeline;

pub use pipeline::{Param, ReadQueue};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::NoTls;

use crate::auth::Identity;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// 42501 (no privilege / RLS), 22023 (role does not exist), 28000.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// 23514; the constraint name tells which rule.
    #[error("check violation on {constraint}")]
    Check { constraint: String },
    #[error("conflict: {0}")]
    Conflict(String),
    /// A `raise exception` (P0001) or 22xxx data error: the text is meant for the user.
    #[error("{0}")]
    User(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The user's share of the pool stayed taken by their own other calls until the
    /// pool wait timeout.
    #[error(transparent)]
    OverShare(#[from] fair::OverShare),
    #[error("database error: {0}")]
    Internal(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            return DbError::Unavailable(e.to_string());
        };
        let code = db.code();
        let message = db.message().to_string();
        if *code == SqlState::INSUFFICIENT_PRIVILEGE
            || *code == SqlState::INVALID_PARAMETER_VALUE && message.contains("role")
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            DbError::Forbidden(message)
        } else if *code == SqlState::NO_DATA_FOUND {
            DbError::NotFound(message)
        } else if *code == SqlState::CHECK_VIOLATION {
            DbError::Check {
                constraint: db.constraint().unwrap_or_default().to_string(),
            }
        } else if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION {
            DbError::Conflict(message)
        } else if *code == SqlState::RAISE_EXCEPTION || code.code().starts_with("22") {
            DbError::User(message)
        } else {
            DbError::Internal(format!("{}: {}", code.code(), message))
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

/// A `json` result kept as the text PostgreSQL sent, so it can be spliced into a frame
/// without parsing and re-serialising.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson(pub String);

impl<'a> FromSql<'a> for RawJson {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // jsonb's binary form is a version byte followed by the text.
        let text = if *ty == Type::JSONB { &raw[1..] } else { raw };
        Ok(RawJson(std::str::from_utf8(text)?.to_owned()))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON || *ty == Type::JSONB
    }
}

/// PostgREST's per-request context (POSTGREST.md §2): search path, role, claims,
/// method and path.
const CONTEXT_SQL: &str = "select set_config('search_path', '\"api\", \"public\"', true), \
     set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
     set_config('request.method', 'POST', true), set_config('request.path', $3, true)";

/// The same, then the role's own settings (`ALTER ROLE … SET`), which PostgREST applies
/// per request because `SET ROLE` alone does not. Only for roles that have settings:
/// the set-returning subquery is a few per cent of PostgreSQL's work per message.
const CONTEXT_WITH_SETTINGS_SQL: &str =
    "select set_config('search_path', '\"api\", \"public\"', true), \
     set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
     set_config('request.method', 'POST', true), set_config('request.path', $3, true), \
     (select count(set_config(k, v, true)) from json_each_text($4::text::json) as s(k, v))";

/// Settings of every role, from `pg_db_role_setting` (database-wide ones first, so the
/// database-specific value of a setting wins when applied in order).
const ROLE_SETTINGS_SQL: &str = "select r.rolname::text, \
       json_object_agg(split_part(cfg, '=', 1), substr(cfg, strpos(cfg, '=') + 1) order by s.setdatabase)::text \
  from pg_db_role_setting s join pg_roles r on r.oid = s.setrole, unnest(s.setconfig) cfg \
 where s.setdatabase in (0, (select oid from pg_database where datname = current_database())) \
 group by r.rolname";

/// The parameters of [`CONTEXT_SQL`], or of [`CONTEXT_WITH_SETTINGS_SQL`] when the role
/// has settings.
fn context_params<'a>(
    who: &'a Identity,
    path: &'a &'a str,
    settings: &'a Option<String>,
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&who.role, &who.claims_json, path];
    if let Some(settings) = settings {
        params.push(settings);
    }
    params
}

/// The context statement for a role with `settings` or without.
async fn context_statement(
    client: &deadpool_postgres::Object,
    settings: &Option<String>,
) -> Result<tokio_postgres::Statement, DbError> {
    Ok(match settings {
        Some(_) => client.prepare_cached(CONTEXT_WITH_SETTINGS_SQL).await?,
        None => client.prepare_cached(CONTEXT_SQL).await?,
    })
}

/// One as-user call in its own transaction: BEGIN, the context, the statement and COMMIT
/// are all sent on the first poll (one round trip), in that order. If any step fails,
/// COMMIT turns into a rollback and the first error is returned.
async fn in_transaction(
    client: &tokio_postgres::Client,
    context: &tokio_postgres::Statement,
    who: &Identity,
    path: &str,
    settings: &Option<String>,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<RawJson>, DbError> {
    let path = &path;
    let begin = client.batch_execute("BEGIN");
    let context_params = context_params(who, path, settings);
    let set = client.query_one(context, &context_params);
    let action = client.query_opt(statement, params);
    let commit = client.batch_execute("COMMIT");
    let (begin, set, action, commit) = tokio::join!(begin, set, action, commit);
    begin?;
    set?;
    let row = action?;
    commit?;
    Ok(match row {
        Some(row) => row.try_get::<_, Option<RawJson>>(0)?,
        None => None,
    })
}

/// How long a call waits for a pool connection, its wait for the user's share included.
const POOL_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// Role name → JSON object of that role's settings; see [`Db::load_role_settings`].
    role_settings: Arc<RwLock<HashMap<String, String>>>,
    /// Per-user limit on concurrent as-user calls; `None`: off.
    fair: Option<Arc<fair::FairShare>>,
}

pub fn connect_config(
    url: &str,
    application_name: &str,
    statement_timeout: Duration,
) -> Result<tokio_postgres::Config, DbError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::Unavailable(e.to_string()))?;
    config.application_name(application_name);
    config.options(format!(
        "-c statement_timeout={}",
        statement_timeout.as_millis()
    ));
    // A peer that vanishes without closing (cable cut, frozen host) is found within
    // about 20 s: idle connections by keepalives (10 s idle, then 3 probes 3 s apart),
    // ones waiting on an answer by the TCP user timeout (unacknowledged data for 20 s).
    // Without these, an idle connection lingers for hours and a query in flight for
    // ~15 minutes of retransmissions; statement_timeout cannot help, as the server
    // that would enforce it is unreachable.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    config.keepalives_interval(Duration::from_secs(3));
    config.keepalives_retries(3);
    config.tcp_user_timeout(Duration::from_secs(20));
    config.connect_timeout(Duration::from_secs(5));
    Ok(config)
}

impl Db {
    pub fn new(url: &str, size: usize, statement_timeout: Duration) -> Result<Self, DbError> {
        Self::named(url, "pgchat", size, statement_timeout)
    }

    /// A pool whose connections carry `application_name` (what `pg_stat_activity` shows).
    pub fn named(
        url: &str,
        application_name: &str,
        size: usize,
        statement_timeout: Duration,
    ) -> Result<Self, DbError> {
        let config = connect_config(url, application_name, statement_timeout)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        Ok(Self {
            pool,
            role_settings: Arc::default(),
            fair: None,
        })
    }

    /// Shares `other`'s role settings (loaded once, for both pools).
    pub fn sharing_settings_with(mut self, other: &Db) -> Self {
        self.role_settings = other.role_settings.clone();
        self
    }

    /// Lets each user run at most `per_user` as-user calls at once (0: no limit).
    pub fn with_user_concurrency(mut self, per_user: usize) -> Self {
        self.fair = (per_user > 0).then(|| fair::FairShare::new(per_user));
        self
    }

    /// A pool connection, waiting until `deadline` at most; the wait is measured.
    async fn get_until(&self, deadline: Instant) -> Result<deadpool_postgres::Object, DbError> {
        let started = Instant::now();
        let timeouts = Timeouts {
            wait: Some(deadline.saturating_duration_since(started)),
            ..self.pool.timeouts()
        };
        let client = self.pool.timeout_get(&timeouts).await;
        metrics::histogram!("pgchat_db_pool_wait_seconds").record(started.elapsed().as_secs_f64());
        Ok(client?)
    }

    /// Runs one statement as the user in its own transaction, PostgREST-style, and
    /// returns its single json value (`None` when it returned no row or SQL NULL).
    ///
    /// BEGIN, the context, the statement and COMMIT are pipelined: one round trip.
    /// If any step fails, COMMIT turns into a rollback and the first error is returned.
    ///
    /// The call first takes one of the user's slots (see [`fair`]); that wait and the
    /// pool's share one deadline, so a refused call ends within the pool wait timeout.
    pub async fn as_user(
        &self,
        who: &Identity,
        path: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<RawJson>, DbError> {
        let deadline = Instant::now() + POOL_WAIT;
        let _slot = self.user_slot(who, deadline).await?;
        let client = self.get_until(deadline).await?;
        let settings = self.settings_of(&who.role);
        let context = context_statement(&client, &settings).await?;
        let statement = client.prepare_cached(sql).await?;
        in_transaction(&client, &context, who, path, &settings, &statement, params).await
    }

    /// One of the user's slots (see [`fair`]), waiting until `deadline` at most; `None`
    /// when calls per user are not limited.
    async fn user_slot(
        &self,
        who: &Identity,
        deadline: Instant,
    ) -> Result<Option<fair::Slot>, DbError> {
        match &self.fair {
            Some(fair) => Ok(Some(fair.acquire(fair::UserKey::of(who), deadline).await?)),
            None => Ok(None),
        }
    }

    /// The role's own settings, if it has any (see [`Db::load_role_settings`]).
    fn settings_of(&self, role: &str) -> Option<String> {
        self.role_settings.read().unwrap().get(role).cloned()
    }

    /// Runs `sql` once for each of `calls`, each as its user, all in one transaction: the
    /// context is set again before each call, exactly as
    /// [`Db::as_user`] sets it. For best-effort writes that ring a doorbell (typing),
    /// where one commit for many users takes PostgreSQL's NOTIFY lock once instead of
    /// once per user. Every call must have the same role, so the role's settings are
    /// the same for all. If any call fails, none is kept and its error returns.
    pub async fn as_each_user(
        &self,
        path: &str,
        sql: &str,
        calls: &[(&Identity, &[&(dyn ToSql + Sync)])],
    ) -> Result<(), DbError> {
        let Some((first, _)) = calls.first() else {
            return Ok(());
        };
        if calls.iter().any(|(who, _)| who.role != first.role) {
            return Err(DbError::Internal("one role per batch".into()));
        }
        let client = self.get_until(Instant::now() + POOL_WAIT).await?;
        let settings = self.settings_of(&first.role);
        let context = context_statement(&client, &settings).await?;
        let statement = client.prepare_cached(sql).await?;
        // One round trip per call (context and statement pipelined); the commit, where
        // the lock is taken, comes once at the end. A failed step turns COMMIT into a
        // rollback.
        client.batch_execute("BEGIN").await?;
        let mut failed = None;
        for (who, params) in calls {
            let context_params = context_params(who, &path, &settings);
            let set = client.query_one(&context, &context_params);
            let action = client.query_opt(&statement, params);
            let (set, action) = tokio::join!(set, action);
            if let Err(e) = set.and(action) {
                failed = Some(e);
                break;
            }
        }
        let commit = client.batch_execute("COMMIT").await;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(commit?),
        }
    }

    /// Reads every role's `ALTER ROLE … SET` settings, as PostgREST does at start and on
    /// schema reload. Called at start and whenever the LISTEN connection is re-made.
    pub async fn load_role_settings(&self) -> Result<(), DbError> {
        let client = self.client().await?;
        let rows = client.query(ROLE_SETTINGS_SQL, &[]).await?;
        let map = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        *self.role_settings.write().unwrap() = map;
        Ok(())
    }

    /// Privileged, narrow calls of the daemon itself (functions in schema `pgchat`).
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.get_until(Instant::now() + POOL_WAIT).await
    }

    /// True when a connection can be had and answers.
    pub async fn ping(&self) -> bool {
        match self.pool.get().await {
            Ok(client) => client.simple_query("").await.is_ok(),
            Err(_) => false,
        }
    }

    pub fn status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    pub fn close(&self) {
        self.pool.close();
    }
}
