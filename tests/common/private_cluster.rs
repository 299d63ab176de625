//! A private PostgreSQL 15 cluster of one test's own, behind a network cable the test
//! can cut: the cluster runs in its own network namespace, joined to the host by a veth
//! pair, so setting the link down is a real cable cut (packets vanish, nothing is closed,
//! nothing ACKs keepalives), unlike a userspace proxy that stops forwarding.
//!
//! ```ignore
//! let cluster = PrivateCluster::new().await;       // netns + veth + initdb + start + migrate
//! let server = TestServer::start_url(&cluster.daemon_url(), &[]).await;
//! cluster.cut();                                   // link down: the daemon's sockets hang
//! cluster.postgrest().await.rpc(…);                // the admin side still works (unix socket)
//! cluster.restore();                               // link up again
//! cluster.stop().await; cluster.start().await;     // a PostgreSQL restart
//! ```
//!
//! - `daemon_url()` goes over the veth, as `authenticator`: give it to the daemon.
//! - `admin_url()` / `local_url(user)` go over the cluster's unix socket, which does not
//!   cross the veth, so the test can write while the link is down.
//! - Everything (postmaster, veth, namespace, data directory) goes on drop.
//!
//! Needs root (network namespaces) and a `postgres` OS user; initdb and pg_ctl run as that
//! user through `runuser`, because they refuse to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::postgrest::{Claims, Postgrest};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The port inside the namespace; the namespace has a network of its own, so it never
/// meets the shared server's 5432.
const PORT: u16 = 5432;
/// The database the cluster is migrated into.
pub const DB_NAME: &str = "pgchat";

pub struct PrivateCluster {
    netns: String,
    host_if: String,
    inner_if: String,
    /// The host side's /30, e.g. `10.213.4.8/30`, and the cluster's address in it.
    subnet: String,
    inner_ip: String,
    dir: PathBuf,
}

impl PrivateCluster {
    /// Creates the namespace and veth pair, initdb's a cluster, starts it and migrates
    /// [`DB_NAME`] with the same settings as the shared test databases.
    pub async fn new() -> PrivateCluster {
        static N: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let (subnet_base, slot) = free_subnet(pid, n);
        let cluster = PrivateCluster {
            netns: format!("pgchat-{pid}-{n}"),
            // Interface names are at most 15 bytes.
            host_if: format!("pch{pid:x}{n:x}h"),
            inner_if: format!("pch{pid:x}{n:x}i"),
            subnet: format!("{subnet_base}.{}/30", slot * 4),
            inner_ip: format!("{subnet_base}.{}", slot * 4 + 2),
            dir: std::env::temp_dir().join(format!("pgchat-cluster-{pid}-{n}")),
        };
        // From here on, Drop cleans up whatever was made.
        cluster.make_network(&subnet_base, slot);
        cluster.initdb();
        cluster.start().await;
        pgchat::migrate::migrate(&cluster.admin_url(), &super::settings())
            .await
            .expect("migrating the private cluster");
        cluster
    }

    /// The daemon's URL: `authenticator` over the veth.
    pub fn daemon_url(&self) -> String {
        format!(
            "postgres://authenticator@{}:{PORT}/{DB_NAME}",
            self.inner_ip
        )
    }

    /// Superuser over the unix socket (works while the link is cut).
    pub fn admin_url(&self) -> String {
        self.local_url("postgres")
    }

    /// `user` over the unix socket (works while the link is cut).
    pub fn local_url(&self, user: &str) -> String {
        format!(
            "host={} port={PORT} user={user} dbname={DB_NAME}",
            self.socket_dir().display()
        )
    }

    pub async fn admin(&self) -> tokio_postgres::Client {
        super::connect(&self.admin_url()).await
    }

    /// A PostgREST-equivalent request context, as `authenticator` over the unix socket.
    pub async fn postgrest(&self) -> Postgrest {
        Postgrest::new(super::connect(&self.local_url("authenticator")).await)
    }

    /// Signs up a user through `api.signup` as `anon`; returns its id.
    pub async fn signup(&self, email: &str, name: &str) -> i64 {
        let out = self
            .postgrest()
            .await
            .rpc(
                &Claims::anon(),
                "signup",
                &[
                    ("email", &email),
                    ("password", &"password123"),
                    ("name", &name),
                ],
            )
            .await
            .expect("signup");
        out["id"].as_i64().unwrap()
    }

    /// Cuts the cable. The namespace's end goes down, so the host's end loses its carrier
    /// but keeps its address and route: the daemon's kernel still sends, without error,
    /// and every packet vanishes in the veth. Open connections hang, nothing is reset,
    /// new connections time out. (Setting the host end down instead removes the route,
    /// so the daemon's kernel would refuse to send at once: not what a freeze looks like.)
    pub fn cut(&self) {
        self.inner_link("down");
    }

    /// Plugs the cable back in.
    pub fn restore(&self) {
        self.inner_link("up");
    }

    fn inner_link(&self, state: &str) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns,
                "ip",
                "link",
                "set",
                &self.inner_if,
                state,
            ],
        );
    }

    /// Stops the postmaster (fast shutdown: sessions are closed).
    pub async fn stop(&self) {
        let data = self.data_dir();
        let data = data.to_str().unwrap();
        run_async(
            "runuser",
            &pg_ctl_args(&["-D", data, "-m", "fast", "-w", "stop"]),
        )
        .await;
    }

    /// Starts the postmaster (again), listening on the veth address and its unix socket.
    pub async fn start(&self) {
        let data = self.data_dir();
        let log = self.dir.join("postgres.log");
        let options = format!(
            "-c listen_addresses={} -c port={PORT} -c unix_socket_directories={} \
             -c max_connections=40 -c shared_buffers=16MB -c fsync=off",
            self.inner_ip,
            self.socket_dir().display()
        );
        let mut args = vec!["netns", "exec", &self.netns, "runuser"];
        let pg_ctl = pg_ctl_args(&[
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ]);
        args.extend(pg_ctl.iter().map(String::as_str));
        run_async("ip", &args).await;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    fn make_network(&self, subnet_base: &str, slot: u32) {
        let inner_if = &self.inner_if;
        let host_ip = format!("{subnet_base}.{}/30", slot * 4 + 1);
        let inner_cidr = format!("{}/30", self.inner_ip);
        run("ip", &["netns", "add", &self.netns]);
        run(
            "ip",
            &[
                "link",
                "add",
                &self.host_if,
                "type",
                "veth",
                "peer",
                "name",
                inner_if,
            ],
        );
        run("ip", &["link", "set", inner_if, "netns", &self.netns]);
        run("ip", &["addr", "add", &host_ip, "dev", &self.host_if]);
        run("ip", &["link", "set", &self.host_if, "up"]);
        // Should the host end ever go down, its route goes with it: without this the host
        // would send the cluster's packets to its default gateway instead of dropping them.
        run(
            "ip",
            &[
                "route",
                "add",
                "unreachable",
                &self.subnet,
                "metric",
                "4242",
            ],
        );
        let ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &self.netns, "ip"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        ns(&["addr", "add", &inner_cidr, "dev", inner_if]);
        ns(&["link", "set", inner_if, "up"]);
        ns(&["link", "set", "lo", "up"]);
    }

    fn initdb(&self) {
        std::fs::create_dir_all(self.socket_dir()).expect("creating the cluster's directory");
        run("chown", &["-R", "postgres:", self.dir.to_str().unwrap()]);
        let data = self.data_dir();
        run(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                &format!("{PG_BIN}/initdb"),
                "-D",
                data.to_str().unwrap(),
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("reading pg_hba.conf");
        text.push_str(&format!("host all all {} trust\n", self.subnet));
        std::fs::write(&hba, text).expect("writing pg_hba.conf");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Immediate stop signals the postmaster by the PID in its pid file; if that does
        // not end it, kill that PID.
        let data = self.data_dir();
        let pid_file = data.join("postmaster.pid");
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            let _ = Command::new("runuser")
                .args(pg_ctl_args(&[
                    "-D",
                    data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "10",
                    "stop",
                ]))
                .output();
            if let Some(pid) = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
            {
                if Path::new(&format!("/proc/{pid}")).exists() && pid_file.exists() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .output();
                }
            }
        }
        // Deleting one end of a veth pair deletes both.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args([
                "route",
                "del",
                "unreachable",
                &self.subnet,
                "metric",
                "4242",
            ])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `runuser` arguments that run pg_ctl as `postgres` with `args`.
fn pg_ctl_args(args: &[&str]) -> Vec<String> {
    let mut all = vec![
        "-u".to_string(),
        "postgres".into(),
        "--".into(),
        format!("{PG_BIN}/pg_ctl"),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

/// A /30 in 10.213.0.0/16 that no interface or route on the host uses yet, picked from
/// the process id and a counter so that parallel test processes get different ones.
/// Returns (`10.213.X`, slot) where the /30 starts at `slot * 4`.
fn free_subnet(pid: u32, n: u32) -> (String, u32) {
    let taken = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "-4", "route", "show", "table", "all"])
            .output()
            .expect("ip route")
            .stdout,
    )
    .into_owned();
    let start = (pid.wrapping_mul(8).wrapping_add(n)) % (256 * 64);
    (0..256 * 64)
        .map(|i| (start + i) % (256 * 64))
        .map(|s| (format!("10.213.{}", s / 64), s % 64))
        .find(|(base, slot)| !taken.contains(&format!("{base}.{}/30", slot * 4)))
        .expect("a free /30 in 10.213.0.0/16")
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Like [`run`], without blocking the runtime that the daemon under test shares.
async fn run_async<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(program: &str, args: &[S]) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program).args(args).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} took over 60 s"))
    .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
