//! The `pgchat` command: serve (default), migrate, token, demo, health.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgchat::config::Config;

#[derive(Parser)]
#[command(
    name = "pgchat",
    version,
    about = "Realtime WebSocket bridge for PostgREST chat apps",
    long_about = "Realtime WebSocket bridge for PostgREST chat apps.\n\n\
    Configuration comes from the environment (DATABASE_URL, JWT_SECRET, WS_PORT, …); \
    see the README for every variable."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WebSocket clients, /healthz, /readyz and /metrics (the default).
    Serve {
        /// Apply the SQL schema first (with ADMIN_DATABASE_URL, else DATABASE_URL).
        #[arg(long)]
        migrate: bool,
    },
    /// Apply the embedded SQL schema and store the signing key and NOTIFY channel.
    Migrate {
        /// Wait up to this many seconds for PostgreSQL to accept connections (in a pod).
        #[arg(long, default_value_t = 0)]
        wait_secs: u64,
        /// Deprecated, does nothing: migrate itself asks PostgREST to reload its schema
        /// cache whenever it changed the schema. Still accepted for older pod files.
        #[arg(long, hide = true)]
        reload_postgrest: bool,
        /// Then stay up until stopped, so that a pod runs the migration once per start.
        #[arg(long)]
        stay: bool,
    },
    /// Print a JWT signed with the configured HMAC key, or with a private JWK.
    Token {
        /// The `sub` claim (user id).
        #[arg(long)]
        sub: String,
        #[arg(long, default_value = "authenticated")]
        role: String,
        /// Lifetime such as 90s, 30m, 1h, 7d; `0` for a token without `exp`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Optional `name` claim.
        #[arg(long)]
        name: Option<String>,
        /// A private JWK to sign with instead of JWT_SECRET: `@path` of a file, or the
        /// JSON itself. Its `kid` goes into the header.
        #[arg(long, value_name = "@FILE")]
        key: Option<String>,
    },
    /// Migrate, start pgchat serving frontend/, create two demo users and print their URLs.
    Demo,
    /// Probe the daemon on this host: exit 0 when /healthz (or /readyz) answers 200.
    Health {
        /// Ask /readyz (database and LISTEN connection up) instead of /healthz.
        #[arg(long)]
        ready: bool,
    },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve { migrate: false });
    if matches!(command, Command::Demo) {
        pgchat::demo::default_environment();
    }
    // Configuration errors are one clear line, without a backtrace or debug dump.
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgchat: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgchat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Migrate {
            wait_secs,
            reload_postgrest,
            stay,
        } => {
            pgchat::telemetry::init(&config.log_format);
            if reload_postgrest {
                tracing::warn!(
                    "--reload-postgrest is deprecated and does nothing: migrate itself sends \
                     NOTIFY pgrst, 'reload schema' whenever it changed the schema"
                );
            }
            let report = pgchat::migrate_job::migrate_when_up(
                config.admin_url(),
                &database_settings(&config)?,
                std::time::Duration::from_secs(wait_secs),
            )
            .await?;
            println!(
                "migrated: {} migration(s) applied{}{}",
                report.applied.len(),
                if report.definitions_applied {
                    ", definitions re-applied"
                } else {
                    ""
                },
                if report.settings_changed {
                    ", settings updated"
                } else {
                    ""
                }
            );
            if stay {
                pgchat::server::shutdown_signal().await;
            }
            Ok(())
        }
        Command::Token {
            sub,
            role,
            ttl,
            name,
            key,
        } => {
            let ttl = parse_ttl(&ttl)?;
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), sub.into());
            claims.insert("role".into(), role.into());
            if let Some(name) = name {
                claims.insert("name".into(), name.into());
            }
            let token = signer(key.as_deref(), &config)?.sign(claims, ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::Serve { migrate } => {
            pgchat::telemetry::init(&config.log_format);
            if migrate {
                pgchat::migrate::migrate(config.admin_url(), &database_settings(&config)?).await?;
            }
            let listener = pgchat::server::bind((config.ws_host, config.ws_port).into())
                .with_context(|| {
                    format!("cannot listen on {}:{}", config.ws_host, config.ws_port)
                })?;
            pgchat::server::run(listener, config, pgchat::server::shutdown_signal()).await?;
            Ok(())
        }
        Command::Demo => {
            config.hmac_signing_key()?.context(
                "JWT_SECRET holds no oct (HMAC) key, and the demo's users log in with \
                 api.login, which signs tokens in SQL with one",
            )?;
            pgchat::telemetry::init(&config.log_format);
            pgchat::demo::run(config).await
        }
        Command::Health { ready } => {
            pgchat::health_check::Probe::for_config(&config, ready)
                .check()
                .await?;
            Ok(())
        }
    }
}

const NO_HMAC_KEY: &str = "JWT_SECRET holds no oct (HMAC) key to sign tokens with; \
    add one to the JWK Set, or pass a private key with --key @private.jwk";

/// `--key` (a private JWK, `@path` or inline), else the HMAC key of JWT_SECRET.
fn signer(key: Option<&str>, config: &Config) -> anyhow::Result<pgchat::auth::Signer> {
    let Some(key) = key else {
        let hmac = config.hmac_signing_key()?.context(NO_HMAC_KEY)?;
        return Ok(pgchat::auth::Signer::hmac(&hmac));
    };
    let json = match key.strip_prefix('@') {
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read --key {path}"))?,
        None => key.as_bytes().to_vec(),
    };
    pgchat::auth::Signer::from_jwk(&json).context("--key")
}

fn database_settings(config: &Config) -> anyhow::Result<pgchat::migrate::DatabaseSettings> {
    Ok(pgchat::migrate::DatabaseSettings::from_config(config)?)
}

/// `90s`, `30m`, `1h`, `7d` or plain seconds; `0` means no expiry.
fn parse_ttl(s: &str) -> anyhow::Result<Option<i64>> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .with_context(|| format!("invalid --ttl `{s}`"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => anyhow::bail!("invalid --ttl unit in `{s}` (use s, m, h or d)"),
    };
    Ok((secs > 0).then_some(secs))
}

/// glibc gives threads their own malloc arenas, up to eight per core. A socket's
/// long-lived state then lands in whichever arena its thread had, beside the holes its
/// freed handshake left, and the same 10,000 connections measured 2.7 to 3.1 KB each
/// from run to run. Two arenas keep them at 2.5 to 2.9 KB (docs/benchmarks.md); per-thread
/// caches still serve most small allocations without the arena lock. An operator's
/// `MALLOC_ARENA_MAX` wins. Called before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
