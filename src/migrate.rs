//! `pgchat migrate`: applies the SQL files embedded in the binary, in order, and writes
//! the settings SQL reads (the token signing key, the NOTIFY channel) into private
//! tables.
//!
//! Every file is idempotent, and each applied file is recorded with its checksum, so a
//! second run applies nothing and changes nothing. A changed file is applied again.
//! Concurrent migrations (several daemons starting at once) serialise on an advisory lock.

mod settings;

use tokio_postgres::{Client, NoTls};

use crate::config::{Config, ConfigError};

/// The files of `sql/`, in the order they apply.
pub const SQL_FILES: &[(&str, &str)] = &[
    ("000_roles.sql", include_str!("../sql/000_roles.sql")),
    ("005_settings.sql", include_str!("../sql/005_settings.sql")),
    ("010_auth.sql", include_str!("../sql/010_auth.sql")),
    (
        "020_chat_schema.sql",
        include_str!("../sql/020_chat_schema.sql"),
    ),
    ("030_chat_rpc.sql", include_str!("../sql/030_chat_rpc.sql")),
    ("040_chat_rls.sql", include_str!("../sql/040_chat_rls.sql")),
    ("050_notify.sql", include_str!("../sql/050_notify.sql")),
    ("060_presence.sql", include_str!("../sql/060_presence.sql")),
    (
        "070_daemon_grants.sql",
        include_str!("../sql/070_daemon_grants.sql"),
    ),
];

/// The file that creates the settings tables. migrate writes the settings as soon as
/// it is in place, before the files that read them, and removes the legacy database
/// settings only after the last file: during an upgrade, the old `token_for` always
/// finds its setting and the new one its key.
const SETTINGS_FILE: &str = "005_settings.sql";

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
    #[error("applying {file} failed: {source}")]
    Apply {
        file: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("storing the signing key and NOTIFY channel failed: {0}")]
    Settings(#[source] tokio_postgres::Error),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub applied: Vec<&'static str>,
    pub settings_changed: bool,
}

/// What migrate writes besides the schema (sql/005_settings.sql). No `Debug`: it holds
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
    client
        .batch_execute(
            "create schema if not exists pgchat;
             create table if not exists pgchat.migrations (
               name text primary key,
               checksum text not null,
               applied_at timestamptz not null default now());
             revoke all on pgchat.migrations from public;",
        )
        .await?;
    let mut report = MigrateReport::default();
    for (name, sql) in SQL_FILES {
        if apply_file(client, name, sql).await? {
            report.applied.push(name);
        }
        if *name == SETTINGS_FILE {
            report.settings_changed = settings::write(client, settings)
                .await
                .map_err(MigrateError::Settings)?;
        }
    }
    report.settings_changed |= settings::reset_legacy(client)
        .await
        .map_err(MigrateError::Settings)?;
    Ok(report)
}

/// Applies one file in its own transaction unless it is recorded with this checksum.
/// Returns whether it applied it.
async fn apply_file(client: &Client, name: &'static str, sql: &str) -> Result<bool, MigrateError> {
    let current: Option<String> = client
        .query_opt(
            "select checksum from pgchat.migrations where name = $1",
            &[&name],
        )
        .await?
        .map(|row| row.get(0));
    let wanted: String = client.query_one("select md5($1)", &[&sql]).await?.get(0);
    if current.as_deref() == Some(wanted.as_str()) {
        return Ok(false);
    }
    let apply = format!(
        "begin;\n{sql}\n;\ninsert into pgchat.migrations (name, checksum) values ({}, {})
         on conflict (name) do update set checksum = excluded.checksum, applied_at = now();\ncommit;",
        quote_literal(name),
        quote_literal(&wanted)
    );
    if let Err(source) = client.batch_execute(&apply).await {
        let _ = client.batch_execute("rollback").await;
        return Err(MigrateError::Apply { file: name, source });
    }
    Ok(true)
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
