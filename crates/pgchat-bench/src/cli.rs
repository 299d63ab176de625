//! Command-line interface: options shared by every scenario, and one subcommand each.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "pgchat-bench",
    version,
    about = "Load generator for pgchat and any server speaking the plan's core frames",
    long_about = "Load generator for pgchat and any server speaking the plan's core frames \
    (auth, join, message, typing).\n\n\
    Each run seeds its own users, rooms and memberships straight through SQL on \
    --admin-url (names carry a fresh run id, so runs never collide), mints HS256 tokens \
    with --jwt-secret, opens WebSocket connections spread over the loopback source \
    addresses 127.0.0.1..127.0.0.N, drives one scenario for a bounded time and stops by \
    itself. The process stays under 20,000 open files and refuses runs that would not.\n\n\
    Scenarios:\n  \
    connect  N sockets authenticated and joined: connect+auth+join rate, and with \
             --server-pid the server's resident memory per connection\n  \
    fanout   R rooms of M members, an aggregate X messages/s for D seconds: latency of \
             every delivery (HDR histogram), lost, duplicated and out-of-order deliveries\n  \
    persist  K senders as fast as acks allow: sustained persisted messages/s, and as the \
             limit the identical PostgREST-style transaction straight over tokio-postgres\n  \
    bigroom  one room of M members at X messages/s\n\n\
    Example:\n  \
    pgchat-bench --url ws://127.0.0.1:3001/ws \\\n    \
    --admin-url postgres://postgres@127.0.0.1:5432/pgchat --jwt-secret \"$JWT_SECRET\" \\\n    \
    --json fanout --rooms 100 --members 100 --rate 500 --duration 30"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// WebSocket URL of the server under test. Repeat it (or separate URLs with commas)
    /// to drive several servers: socket i goes to URL i mod the number of URLs.
    #[arg(
        long,
        global = true,
        env = "PGCHAT_BENCH_URL",
        default_value = "ws://127.0.0.1:3001/ws",
        value_delimiter = ','
    )]
    pub url: Vec<String>,

    /// Superuser URL of the server's database; users, rooms and memberships are seeded
    /// through it.
    #[arg(
        long,
        global = true,
        env = "ADMIN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/pgchat"
    )]
    pub admin_url: String,

    /// The server's HS256 JWT secret (tokens carry sub, role=authenticated and name).
    #[arg(long, global = true, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Number of loopback source addresses to spread connections over (127.0.0.1..N).
    #[arg(long, global = true, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_addrs: u8,

    /// Print one JSON object instead of a readable summary.
    #[arg(long, global = true)]
    pub json: bool,

    /// The server does not acknowledge messages: count and pace by own deliveries.
    #[arg(long, global = true)]
    pub no_acks: bool,

    /// The server does not reply `joined`: do not wait for it (then wait --settle).
    #[arg(long, global = true)]
    pub no_join_reply: bool,

    /// Seconds to wait after everyone joined before sending (default 0, or 1 with
    /// --no-join-reply).
    #[arg(long, global = true)]
    pub settle: Option<f64>,

    /// Connection attempts (connect+auth+join) in flight at once.
    #[arg(long, global = true, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Seconds one connection may take to connect, authenticate and join.
    #[arg(long, global = true, default_value_t = 60.0)]
    pub connect_timeout: f64,

    /// Seconds to wait after the last send for outstanding deliveries.
    #[arg(long, global = true, default_value_t = 5.0)]
    pub drain: f64,

    /// PID of the server: its VmRSS is read before and after connecting. With several
    /// URLs, one PID per URL in the same order (repeated or comma-separated); the
    /// single-server scenarios read the first.
    #[arg(long, global = true, value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// Extra characters of padding in every message (the text stays ASCII).
    #[arg(long, global = true, default_value_t = 0)]
    pub pad: usize,

    /// fanout/bigroom: aggregate `typing` frames per second sent beside the messages.
    #[arg(long, global = true, default_value_t = 0.0)]
    pub typing_rate: f64,
}

impl Common {
    /// The first server's PID, for the single-server scenarios.
    pub fn server_pid(&self) -> Option<u32> {
        self.server_pid.first().copied()
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout.max(0.1))
    }
    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.drain.max(0.0))
    }
    pub fn settle(&self) -> Duration {
        let default = if self.no_join_reply { 1.0 } else { 0.0 };
        Duration::from_secs_f64(self.settle.unwrap_or(default).max(0.0))
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// N sockets authenticated and joined; connect+auth+join rate and server RSS/conn.
    Connect {
        /// Sockets to open (one user each).
        #[arg(long, short = 'n', default_value_t = 1000)]
        connections: usize,
        /// Members per room; every socket joins its user's one room.
        #[arg(long, default_value_t = 100)]
        room_size: usize,
        /// Seconds to hold all sockets open before measuring RSS and closing.
        #[arg(long, default_value_t = 2.0)]
        hold: f64,
    },
    /// R rooms of M members, an aggregate X messages/s for D seconds.
    Fanout {
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        #[arg(long, default_value_t = 100)]
        members: usize,
        /// Aggregate messages per second over all rooms.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
    },
    /// K senders as fast as acks allow; the raw transaction rate as the limit.
    Persist {
        #[arg(long, short = 'k', default_value_t = 16)]
        senders: usize,
        /// Messages each sender keeps in flight.
        #[arg(long, default_value_t = 1)]
        window: usize,
        /// Seconds of each phase (server, then raw transaction).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Rounds of both phases, alternating which goes first, so that drift in the
        /// machine's load hits both alike. PostgreSQL's own rate drifts by several per
        /// cent over tens of seconds (WAL flushes, checkpoints, autovacuum of the growing
        /// table): many short phases measure the ratio more steadily than a few long ones.
        #[arg(long, default_value_t = 6)]
        rounds: usize,
        /// URL for the raw phase, as the role PostgREST and pgchat connect as
        /// (default: --admin-url with user `authenticator`).
        #[arg(long)]
        db_url: Option<String>,
        /// Skip the raw-transaction phase.
        #[arg(long)]
        no_limit: bool,
    },
    /// N sockets over several servers (--url repeated), held by worker processes; rooms
    /// spanning servers; messages, typing and API requests; optionally one server
    /// SIGKILLed mid-traffic (its sockets resume on the others with `since`).
    Scale(ScaleArgs),
    /// A worker process of `scale` (started by the coordinator; commands on stdin).
    #[command(hide = true)]
    Worker,
    /// One room of M members at X messages/s for D seconds.
    Bigroom {
        #[arg(long, default_value_t = 5000)]
        members: usize,
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Sockets in all (one user each), spread evenly over the URLs.
    #[arg(long, short = 'n', default_value_t = 50_000)]
    pub connections: usize,
    /// Members per room: consecutive users, so each room spans every server.
    #[arg(long, default_value_t = 50)]
    pub room_size: usize,
    /// Aggregate messages per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Every socket starts typing once per this many seconds (0: no typing).
    #[arg(long, default_value_t = 60.0)]
    pub typing_period: f64,
    /// `rooms` and `history` requests per second in aggregate, alternating.
    #[arg(long, default_value_t = 20.0)]
    pub api_rate: f64,
    /// Worker processes (default: one per 12,500 sockets).
    #[arg(long)]
    pub workers: Option<usize>,
    /// SIGKILL one server this many seconds into the load (needs --server-pid).
    #[arg(long)]
    pub kill_at: Option<f64>,
    /// Which server to kill: its index among the URLs (default the last).
    #[arg(long)]
    pub kill: Option<usize>,
    /// The documented bound for sweeping a dead daemon's presence, in seconds from its
    /// death: silent for 3 heartbeats (30 s), then the next survivor's heartbeat (10 s).
    #[arg(long, default_value_t = 40.0)]
    pub sweep_bound: f64,
    /// Seconds after the kill to keep watching for the sweep.
    #[arg(long, default_value_t = 60.0)]
    pub sweep_wait: f64,
}

impl Scenario {
    /// Sockets the scenario opens.
    pub fn connections(&self) -> usize {
        match self {
            Scenario::Connect { connections, .. } => *connections,
            Scenario::Fanout { rooms, members, .. } => rooms * members,
            Scenario::Persist { senders, .. } => *senders,
            Scenario::Bigroom { members, .. } => *members,
            // The coordinator holds none; each worker checks its own share.
            Scenario::Scale(_) | Scenario::Worker => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_global_options_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "pgchat-bench",
            "fanout",
            "--rooms",
            "3",
            "--members",
            "4",
            "--json",
            "--no-acks",
            "--jwt-secret",
            "s",
        ])
        .unwrap();
        assert!(cli.common.json && cli.common.no_acks);
        assert_eq!(cli.scenario.connections(), 12);
        assert_eq!(cli.common.settle(), Duration::ZERO);
    }

    #[test]
    fn no_join_reply_settles_for_a_second_by_default() {
        let cli = Cli::try_parse_from([
            "pgchat-bench",
            "--no-join-reply",
            "bigroom",
            "--members",
            "2",
        ])
        .unwrap();
        assert_eq!(cli.common.settle(), Duration::from_secs(1));
        assert_eq!(cli.scenario.connections(), 2);
    }

    #[test]
    fn urls_and_pids_repeat_or_split_on_commas() {
        let cli = Cli::try_parse_from([
            "pgchat-bench",
            "--url",
            "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws",
            "--url",
            "ws://127.0.0.1:3/ws",
            "--server-pid",
            "10,11",
            "--server-pid",
            "12",
            "connect",
        ])
        .unwrap();
        assert_eq!(cli.common.url.len(), 3);
        assert_eq!(cli.common.url[2], "ws://127.0.0.1:3/ws");
        assert_eq!(cli.common.server_pid, vec![10, 11, 12]);
        assert_eq!(cli.common.server_pid(), Some(10));
        let single = Cli::try_parse_from(["pgchat-bench", "connect"]).unwrap();
        assert_eq!(
            single.common.url,
            vec!["ws://127.0.0.1:3001/ws".to_string()]
        );
        assert_eq!(single.common.server_pid(), None);
    }

    #[test]
    fn source_addresses_are_bounded() {
        assert!(Cli::try_parse_from(["pgchat-bench", "--source-addrs", "0", "connect"]).is_err());
    }
}
