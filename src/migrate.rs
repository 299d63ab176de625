//! `pgchat migrate`: brings the database to this release's schema and writes the
//! settings SQL reads (the token signing key, the NOTIFY channel) into private tables.
//!
//! The schema is two kinds of embedded files (found by `build.rs`): numbered, forward-only
//! migrations (`sql/migrations`), each applied once in its own transaction and recorded
//! with a checksum, and re-runnable definitions (`sql/definitions`: functions, views,
//! policies, grants), applied again whenever one of them changed or a migration ran. A
//! second run changes nothing. Concurrent runs (several daemons starting at once)
//! serialise on an advisory lock. A run that changed the schema ends with
//! `NOTIFY pgrst, 'reload schema'`, so PostgREST serves new functions at once.

mod files;
mod runner;
mod settings;

use tokio_postgres::{Client, NoTls};

use crate::config::{Config, ConfigError};

pub use files::{Definition, Migration, DEFINITIONS, MIGRATIONS};

/// Every embedded file as (path under `sql/`, text), migrations first: what a change
/// of schema is (the test harness names its template databases by it).
pub fn sql_files() -> Vec<(String, &'static str)> {
    let migrations = MIGRATIONS
        .iter()
        .map(|m| (format!("migrations/{}", m.name), m.sql));
    let definitions = DEFINITIONS
        .iter()
        .map(|d| (format!("definitions/{}", d.name), d.sql));
    migrations.chain(definitions).collect()
}

/// Applies the pending migrations of `migrations` (`migrate` passes the embedded
/// ones) and returns their names. Public so that tests can apply a list with entries
/// of their own; it takes no lock.
pub async fn apply_migrations(
    client: &Client,
    migrations: &'static [Migration],
) -> Result<Vec<&'static str>, MigrateError> {
    runner::ensure_bookkeeping(client).await?;
    runner::apply_migrations(client, migrations).await
}

/// Arbitrary constant key for `pg_advisory_lock`; "pgchat" in ASCII.
const MIGRATION_LOCK: i64 = 0x7067_6368_6174;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("cannot create database {0}: {1}")]
    CreateDatabase(String, #[source] tokio_postgres::Error),
    #[error("applying {file} failed: {}", db_error_text(source))]
    Apply {
        file: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("migration {file} differs from what was applied as {recorded}: a released migration is never edited; restore it and add a new one")]
    Changed {
        recorded: String,
        file: &'static str,
    },
    #[error("the database is at migration {database}, newer than this release knows ({known}): run the newer release's migrate")]
    DatabaseAhead { database: i32, known: i32 },
    #[error("storing the signing key and NOTIFY channel failed: {0}")]
    Settings(#[source] tokio_postgres::Error),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// The migrations applied, in order.
    pub applied: Vec<&'static str>,
    /// Whether the definitions were applied again.
    pub definitions_applied: bool,
    pub settings_changed: bool,
}

impl MigrateReport {
    /// Whether the schema changed (and PostgREST was told to reload it).
    pub fn schema_changed(&self) -> bool {
        !self.applied.is_empty() || self.definitions_applied
    }
}

/// What migrate writes besides the schema (tables of migration 0002). No `Debug`: it holds
/// the signing key.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// The HMAC key SQL signs tokens with: the bytes the daemon verifies with
    /// (`JWT_SECRET`, base64-decoded when `JWT_SECRET_IS_BASE64` is set), or the `k` of
    /// the first `oct` key of a JWK / JWK Set. Empty when `JWT_SECRET` has no such key:
    /// migrate then removes the stored key, and `api.login` and `api.signup` refuse.
    pub jwt_key: Vec<u8>,
    /// That key's `kid` (empty for a plain secret), named in the tokens SQL signs.
    pub jwt_kid: String,
    pub notify_channel: String,
}

impl DatabaseSettings {
    pub fn from_config(config: &Config) -> Result<DatabaseSettings, ConfigError> {
        let key = config.hmac_signing_key()?;
        Ok(DatabaseSettings {
            jwt_kid: key.as_ref().map(|k| k.kid.clone()).unwrap_or_default(),
            jwt_key: key.map(|k| k.secret).unwrap_or_default(),
            notify_channel: config.notify_channel.clone(),
        })
    }
}

/// Applies the schema to the database at `url`, creating the database when missing.
pub async fn migrate(
    url: &str,
    settings: &DatabaseSettings,
) -> Result<MigrateReport, MigrateError> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| MigrateError::BadUrl(e.to_string()))?;
    let client = match connect(&config).await {
        Ok(c) => c,
        Err(MigrateError::Connect(e)) if is_missing_database(&e) => {
            create_database(&config).await?;
            connect(&config).await?
        }
        Err(e) => return Err(e),
    };
    client
        .execute("select pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply_all(&client, settings).await;
    // Unlocks also happen when the session ends; an explicit unlock keeps it tidy.
    let _ = client
        .execute("select pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn apply_all(
    client: &Client,
    settings: &DatabaseSettings,
) -> Result<MigrateReport, MigrateError> {
    let mut report = MigrateReport {
        applied: apply_migrations(client, MIGRATIONS).await?,
        ..MigrateReport::default()
    };
    // The settings tables exist once the migrations ran; the key is written before the
    // definitions whose token_for reads it. The legacy database settings go only after
    // them: during an upgrade the old token_for always finds its setting, the new one
    // its key.
    report.settings_changed = settings::write(client, settings)
        .await
        .map_err(MigrateError::Settings)?;
    report.definitions_applied =
        runner::apply_definitions(client, DEFINITIONS, !report.applied.is_empty()).await?;
    report.settings_changed |= settings::reset_legacy(client)
        .await
        .map_err(MigrateError::Settings)?;
    if report.schema_changed() {
        // PostgREST's recommended signal after a migration, so new RPCs do not 404.
        // pgchat's only use of PostgREST's channel.
        client
            .batch_execute("notify pgrst, 'reload schema'")
            .await?;
    }
    Ok(report)
}

/// The server's message with its detail and position, in one line.
fn db_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(w) = db.where_() {
                text.push_str(&format!(" [{}]", w.replace('\n', "; ")));
            }
            text
        }
        None => e.to_string(),
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, MigrateError> {
    // The idempotent files' "already exists, skipping" notices are noise.
    let mut config = config.clone();
    config.options("-c client_min_messages=warning");
    let (client, connection) = config.connect(NoTls).await.map_err(MigrateError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "migration connection closed");
        }
    });
    Ok(client)
}

fn is_missing_database(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
}

async fn create_database(config: &tokio_postgres::Config) -> Result<(), MigrateError> {
    let name = config.get_dbname().unwrap_or("postgres").to_string();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance).await?;
    let sql = format!("create database {}", quote_ident(&name));
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // Another process created it between our attempts.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(MigrateError::CreateDatabase(name, e)),
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
