//! A connection's deadlines (auth timeout, token expiry, idle timeout, next ping) behind
//! one timer.
//!
//! Each armed tokio `Sleep` is 112 bytes inside the connection's future, and an
//! `Interval` boxes another; with tens of thousands of mostly idle sockets, one timer
//! armed for the earliest deadline is cheaper than four. Deadlines that move later (idle,
//! after every frame) are not re-armed: the timer fires early, finds nothing due, and is
//! armed again for the new earliest.

use std::time::Duration;

use tokio::time::Instant;

/// What fell due, most serious first.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    AuthTimeout,
    TokenExpired,
    Idle,
    Ping,
}

pub struct Deadlines {
    /// Until authenticated.
    auth: Option<Instant>,
    /// While authenticated with a token that expires (PostgREST's leeway included).
    token: Option<Instant>,
    idle: Instant,
    idle_timeout: Duration,
    ping: Instant,
    ping_interval: Duration,
}

impl Deadlines {
    pub fn new(
        now: Instant,
        auth_timeout: Duration,
        idle_timeout: Duration,
        ping_interval: Duration,
    ) -> Self {
        Self {
            auth: Some(now + auth_timeout),
            token: None,
            idle: now + idle_timeout,
            idle_timeout,
            ping: now + ping_interval,
            ping_interval,
        }
    }

    /// Authenticated: the auth timeout no longer applies; the token's expiry does.
    pub fn authenticated(&mut self, token_deadline: Option<Instant>) {
        self.auth = None;
        self.token = token_deadline;
    }

    /// The client sent a frame.
    pub fn heard_from_client(&mut self, now: Instant) {
        self.idle = now + self.idle_timeout;
    }

    /// The earliest deadline: when the timer should fire.
    pub fn earliest(&self) -> Instant {
        [self.auth, self.token, Some(self.idle), Some(self.ping)]
            .into_iter()
            .flatten()
            .min()
            .expect("idle and ping are always set")
    }

    /// What is due at `now`, if anything. A due ping is rescheduled as it is reported.
    pub fn take_due(&mut self, now: Instant) -> Option<Due> {
        if self.auth.is_some_and(|t| t <= now) {
            return Some(Due::AuthTimeout);
        }
        if self.token.is_some_and(|t| t <= now) {
            return Some(Due::TokenExpired);
        }
        if self.idle <= now {
            return Some(Due::Idle);
        }
        if self.ping <= now {
            self.ping = now + self.ping_interval;
            return Some(Due::Ping);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    fn fresh(start: Instant) -> Deadlines {
        Deadlines::new(
            start,
            Duration::from_secs(10),
            Duration::from_secs(300),
            Duration::from_secs(30),
        )
    }

    #[test]
    fn auth_timeout_first_until_authenticated() {
        let t0 = Instant::now();
        let mut d = fresh(t0);
        assert_eq!(d.earliest(), at(t0, 10));
        assert_eq!(d.take_due(at(t0, 9)), None);
        assert_eq!(d.take_due(at(t0, 10)), Some(Due::AuthTimeout));
        d.authenticated(None);
        assert_eq!(d.earliest(), at(t0, 30), "next ping");
        assert_eq!(d.take_due(at(t0, 10)), None);
    }

    #[test]
    fn pings_repeat_and_idle_moves_with_traffic() {
        let t0 = Instant::now();
        let mut d = fresh(t0);
        d.authenticated(None);
        assert_eq!(d.take_due(at(t0, 30)), Some(Due::Ping));
        assert_eq!(d.take_due(at(t0, 30)), None, "rescheduled");
        assert_eq!(d.earliest(), at(t0, 60));
        d.heard_from_client(at(t0, 250));
        assert_eq!(
            d.take_due(at(t0, 300)),
            Some(Due::Ping),
            "not idle: heard at 250"
        );
        assert_eq!(d.take_due(at(t0, 550)), Some(Due::Idle));
    }

    #[test]
    fn token_expiry_outranks_ping() {
        let t0 = Instant::now();
        let mut d = fresh(t0);
        d.authenticated(Some(at(t0, 40)));
        assert_eq!(d.take_due(at(t0, 45)), Some(Due::TokenExpired));
        d.authenticated(Some(at(t0, 400)));
        assert_eq!(d.take_due(at(t0, 45)), Some(Due::Ping));
    }
}
