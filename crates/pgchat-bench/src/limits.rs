//! Process limits: open files (raised to the hard limit, capped at 20,000) and the
//! server's resident memory from /proc.

/// The bench never holds more open files than this, whatever the hard limit allows.
pub const MAX_OPEN_FILES: u64 = 20_000;

/// Files kept free for the runtime, database connections, stdio and the like.
pub const RESERVED_FILES: u64 = 200;

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the usable number of
/// open files (the soft limit, capped at [`MAX_OPEN_FILES`]).
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur.min(MAX_OPEN_FILES)
}

/// Refuses a run of `connections` sockets that would not fit under `limit` files.
pub fn check_connections(connections: usize, limit: u64) -> Result<(), String> {
    let needed = connections as u64 + RESERVED_FILES;
    if needed > limit {
        return Err(format!(
            "{connections} connections need about {needed} open files, but this process may \
             hold only {limit} (soft RLIMIT_NOFILE after raising, capped at {MAX_OPEN_FILES}); \
             use at most {} connections per process",
            limit.saturating_sub(RESERVED_FILES)
        ));
    }
    Ok(())
}

/// Resident set size of process `pid` in bytes (VmRSS in /proc/<pid>/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss(&status)
}

/// CPU time (user + system) process `pid` has used, in seconds; `None` for this
/// process reads /proc/self.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse_cpu_ticks(&stat).map(|t| t as f64 / ticks.max(1) as f64)
}

/// utime + stime from /proc/<pid>/stat (fields 14 and 15, after the `(comm)`).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds used by the server (with `--server-pid`) and by the bench between two
/// points of a run.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server: Option<f64>,
    bench: Option<f64>,
}

impl CpuMark {
    pub fn now(server_pid: Option<u32>) -> CpuMark {
        CpuMark {
            server: server_pid.and_then(|p| cpu_seconds(Some(p))),
            bench: cpu_seconds(None),
        }
    }

    /// (server, bench) CPU seconds used since `self`.
    pub fn since(&self, server_pid: Option<u32>) -> (Option<f64>, Option<f64>) {
        let now = CpuMark::now(server_pid);
        let delta = |a: Option<f64>, b: Option<f64>| Some(((b? - a?) * 100.0).round() / 100.0);
        (delta(self.server, now.server), delta(self.bench, now.bench))
    }
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmrss_in_bytes() {
        let status = "Name:\tpgchat\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(1234 * 1024));
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }

    #[test]
    fn reads_cpu_ticks_past_a_command_with_spaces() {
        let stat = "42 (pg chat) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert!(cpu_seconds(None).is_some());
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn refuses_runs_over_the_limit() {
        assert!(check_connections(10_000, 20_000).is_ok());
        let err = check_connections(19_900, 20_000).unwrap_err();
        assert!(err.contains("at most 19800"), "{err}");
    }

    #[test]
    fn raising_never_exceeds_the_cap() {
        let n = raise_nofile();
        assert!(n > 0 && n <= MAX_OPEN_FILES);
    }
}
