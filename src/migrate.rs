//! `pgchat migrate`: applies the SQL files embedded in the binary, in order, and sets
//! the database setting SQL signs tokens with.
//!
//! Every file is idempotent, and each applied file is recorded with its checksum, so a
//! second run applies nothing and changes nothing. A changed file is applied again.
//! Concurrent migrations (several daemons starting at once) serialise on an advisory lock.

use tokio_postgres::{Client, NoTls};

/// The files of `sql/`, in the order they apply.
pub const SQL_FILES: &[(&str, &str)] = &[
    ("000_roles.sql", include_str!("../sql/000_roles.sql")),
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
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub applied: Vec<&'static str>,
    pub settings_changed: bool,
}

/// What migrate writes besides the schema: database settings read by SQL.
pub struct DatabaseSettings<'a> {
    pub jwt_secret: &'a str,
    pub notify_channel: &'a str,
}

/// Applies the schema to the database at `url`, creating the database when missing.
pub async fn migrate(
    url: &str,
    settings: &DatabaseSettings<'_>,
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
    settings: &DatabaseSettings<'_>,
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
        let current: Option<String> = client
            .query_opt(
                "select checksum from pgchat.migrations where name = $1",
                &[name],
            )
            .await?
            .map(|row| row.get(0));
        let wanted: String = client.query_one("select md5($1)", &[sql]).await?.get(0);
        if current.as_deref() == Some(wanted.as_str()) {
            continue;
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
        report.applied.push(name);
    }
    report.settings_changed |=
        set_database_setting(client, "app.jwt_secret", settings.jwt_secret).await?;
    report.settings_changed |=
        set_database_setting(client, "pgchat.channel", settings.notify_channel).await?;
    Ok(report)
}

/// `ALTER DATABASE … SET name = value` unless it already holds that value.
/// Returns whether it changed anything.
async fn set_database_setting(
    client: &Client,
    name: &str,
    value: &str,
) -> Result<bool, MigrateError> {
    let stored: Option<String> = client
        .query_opt(
            "select substr(cfg, length($1) + 2)
               from pg_db_role_setting s, unnest(s.setconfig) cfg
              where s.setdatabase = (select oid from pg_database where datname = current_database())
                and s.setrole = 0 and starts_with(cfg, $1 || '=')",
            &[&name],
        )
        .await?
        .map(|row| row.get(0));
    if stored.as_deref() == Some(value) {
        return Ok(false);
    }
    let sql: String = client
        .query_one("select format('alter database %I set %s = %L', current_database(), $1::text, $2::text)", &[&name, &value])
        .await?
        .get(0);
    client.batch_execute(&sql).await?;
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
