//! `pgchat demo`: the one-command local demo. Migrates, starts the server serving the
//! frontend, makes sure two demo users exist, and prints a URL for each with its token.

use anyhow::Context;
use tokio_postgres::NoTls;

use crate::config::Config;
use crate::migrate::{migrate, DatabaseSettings};

const DEMO_USERS: [(&str, &str); 2] = [("alice@example.com", "Alice"), ("bob@example.com", "Bob")];
/// The demo users' password unless `DEMO_PASSWORD` sets another.
const DEMO_PASSWORD: &str = "demo-password";

fn demo_password() -> String {
    std::env::var("DEMO_PASSWORD").unwrap_or_else(|_| DEMO_PASSWORD.to_string())
}

/// The demo works with no configuration on a machine with a local PostgreSQL: fill in
/// what is missing before the configuration is read. It listens on loopback only: its
/// secret is published, so anyone who could reach it could mint tokens.
pub fn default_environment() {
    let defaults = [
        ("WS_HOST", "127.0.0.1"),
        ("JWT_SECRET", "pgchat-demo-secret-not-for-production-0123"),
        (
            "ADMIN_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/pgchat",
        ),
        (
            "DATABASE_URL",
            "postgres://authenticator@127.0.0.1:5432/pgchat",
        ),
    ];
    for (name, value) in defaults {
        if std::env::var_os(name).is_none() {
            // Single-threaded at this point: nothing else reads the environment yet.
            unsafe { std::env::set_var(name, value) };
        }
    }
}

pub async fn run(mut config: Config) -> anyhow::Result<()> {
    migrate(config.admin_url(), &DatabaseSettings::from_config(&config)?)
        .await
        .context("migrating the database")?;
    if config.static_dir.is_none() {
        config.static_dir = Some(std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/frontend"
        )));
    }
    if let Some(dir) = &config.static_dir {
        install_frontend(dir)?;
    }
    let tokens = demo_tokens(&config.database_url).await?;
    let listener = crate::server::bind((config.ws_host, config.ws_port).into())
        .with_context(|| format!("cannot listen on {}:{}", config.ws_host, config.ws_port))?;
    let port = listener.local_addr()?.port();
    println!("\npgchat demo is running. Open each link in its own browser window:\n");
    for ((_, name), token) in DEMO_USERS.iter().zip(&tokens) {
        println!("  {name}: http://127.0.0.1:{port}/#token={token}\n");
    }
    println!("Stop with Ctrl-C.");
    crate::server::run(listener, config, crate::server::shutdown_signal()).await?;
    Ok(())
}

/// Signs each demo user up, or logs them in when they exist, exactly as PostgREST
/// would for `anon` (POST /rpc/signup, /rpc/login); returns their tokens.
async fn demo_tokens(url: &str) -> anyhow::Result<Vec<String>> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting as authenticator")?;
    tokio::spawn(conn);
    let password = demo_password();
    let mut tokens = Vec::new();
    for (email, name) in DEMO_USERS {
        client
            .batch_execute("begin; select set_config('role', 'anon', true)")
            .await?;
        let signed_up = client
            .query_one(
                "select (api.signup(email := $1, password := $2, name := $3))->>'token'",
                &[&email, &password, &name],
            )
            .await;
        let token: String = match signed_up {
            Ok(row) => {
                client.batch_execute("commit").await?;
                row.get(0)
            }
            Err(_) => {
                client
                    .batch_execute("rollback; begin; select set_config('role', 'anon', true)")
                    .await?;
                let row = client
                    .query_one(
                        "select (api.login(email := $1, password := $2))->>'token'",
                        &[&email, &password],
                    )
                    .await
                    .with_context(|| format!("logging in demo user {email}"))?;
                client.batch_execute("commit").await?;
                row.get(0)
            }
        };
        tokens.push(token);
    }
    Ok(tokens)
}

/// Alpine.js comes from npm and is served locally: install it on first run.
fn install_frontend(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.join("node_modules/alpinejs").exists() || !dir.join("package.json").exists() {
        return Ok(());
    }
    println!(
        "installing the frontend's npm packages in {} …",
        dir.display()
    );
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .context("running npm (Node.js is needed for the demo frontend)")?;
    anyhow::ensure!(status.success(), "npm ci failed in {}", dir.display());
    Ok(())
}
