//! Per-key rate limits: fixed one-minute and one-hour windows. Pure: the caller passes the
//! time, so tests are exact. Where the counters live is the store's choice
//! (`Store::rate_limit`): in memory for SQLite (no database write per request), in a shared
//! table for PostgreSQL, whose instances must count together.
//!
//! Windows are aligned to the Unix clock (a minute window is `[60k, 60k+60)` seconds). A request
//! is allowed when every window has room; an allowed request counts in both windows, a refused
//! one in neither ("the request has no effect"). The 61st request within a minute window with a
//! limit of 60 is refused, and the first one in the next window is served.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::auth::Limits;

/// What the limiter decided, and the values of the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// `X-RateLimit-Limit`: the limit of the window that binds (the one with the least room).
    pub limit: u32,
    /// `X-RateLimit-Remaining`: requests left in that window after this one.
    pub remaining: u32,
    /// `X-RateLimit-Reset`: seconds until that window ends.
    pub reset_secs: u64,
}

/// One fixed window: which one (Unix seconds ÷ its length) and how many requests it counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The window's index: Unix seconds divided by its length.
    pub index: u64,
    /// Requests counted in it.
    pub count: u32,
}

/// The counters of one key. Pure: [`KeyWindows::decide`] is the whole algorithm, whether the
/// counters live in memory (one instance) or in a database row shared by several instances.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyWindows {
    /// The one-minute window.
    pub minute: Window,
    /// The one-hour window.
    pub hour: Window,
}

impl KeyWindows {
    /// Decides for one request under `limits` at Unix time `now_secs`, counting it if allowed.
    /// `None` when there are no limits at all (admin), so there is nothing to report.
    pub fn decide(&mut self, limits: Limits, now_secs: u64) -> Option<Decision> {
        if limits.per_minute.is_none() && limits.per_hour.is_none() {
            return None;
        }
        let windows = [
            (limits.per_minute, 60u64, &mut self.minute),
            (limits.per_hour, 3600u64, &mut self.hour),
        ];
        // (limit, window, reset) of each limited window, counts of stale windows reset.
        let mut active: Vec<(u32, &mut Window, u64)> = Vec::with_capacity(2);
        for (limit, length, window) in windows {
            let Some(limit) = limit else { continue };
            let index = now_secs / length;
            if window.index != index {
                *window = Window { index, count: 0 };
            }
            let reset = (index + 1) * length - now_secs;
            active.push((limit, window, reset));
        }
        let allowed = active.iter().all(|(limit, w, _)| w.count < *limit);
        if allowed {
            for (_, w, _) in active.iter_mut() {
                w.count += 1;
            }
        }
        // The binding window: the fewest requests left; on a tie, the one that resets last.
        let (limit, window, reset) = active.iter().min_by_key(|(limit, w, reset)| {
            (limit.saturating_sub(w.count), std::cmp::Reverse(*reset))
        })?;
        let exhausted = active
            .iter()
            .filter(|(limit, w, _)| w.count >= *limit)
            .map(|(_, _, reset)| *reset)
            .max();
        Some(Decision {
            allowed,
            limit: *limit,
            remaining: limit.saturating_sub(window.count),
            reset_secs: if allowed {
                *reset
            } else {
                exhausted.unwrap_or(*reset)
            },
        })
    }
}

/// The counters of every key seen since start, in memory: right when one process serves the
/// database (the SQLite backend). A shared database keeps them in a table instead.
#[derive(Debug, Default)]
pub struct RateLimiter {
    keys: Mutex<HashMap<String, KeyWindows>>,
}

impl RateLimiter {
    /// Decides for one request of `key_id` at Unix time `now_secs` (see [`KeyWindows::decide`]).
    pub fn check(&self, key_id: &str, limits: Limits, now_secs: u64) -> Option<Decision> {
        if limits.per_minute.is_none() && limits.per_hour.is_none() {
            return None;
        }
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.entry(key_id.to_string())
            .or_default()
            .decide(limits, now_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(m: Option<u32>, h: Option<u32>) -> Limits {
        Limits::new(m, h)
    }

    #[test]
    fn the_61st_request_within_a_minute_is_refused_and_the_first_of_the_next_is_served() {
        let rl = RateLimiter::default();
        let start = 1_700_000_080; // 40 s into a minute window (1_700_000_040 is a multiple of 60)
        for i in 0..60 {
            let d = rl
                .check("k", limits(Some(60), None), start + i % 20)
                .expect("limited");
            assert!(d.allowed, "request {}", i + 1);
            assert_eq!(d.remaining, 59 - i as u32);
        }
        let refused = rl
            .check("k", limits(Some(60), None), start + 19)
            .expect("limited");
        assert!(!refused.allowed);
        assert_eq!(
            (refused.limit, refused.remaining, refused.reset_secs),
            (60, 0, 1)
        );
        let next = rl
            .check("k", limits(Some(60), None), start + 20)
            .expect("limited");
        assert!(next.allowed, "first request of the next window");
        assert_eq!(next.remaining, 59);
    }

    #[test]
    fn refused_requests_do_not_count() {
        let rl = RateLimiter::default();
        let l = limits(Some(1), Some(2));
        assert!(rl.check("k", l, 0).expect("d").allowed);
        for _ in 0..5 {
            assert!(!rl.check("k", l, 1).expect("d").allowed);
        }
        // Next minute: the hourly window has one left, since refusals were not counted.
        let d = rl.check("k", l, 60).expect("d");
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining), (2, 0));
        let d = rl.check("k", l, 120).expect("d");
        assert!(!d.allowed, "the hourly limit binds");
        assert_eq!(d.reset_secs, 3600 - 120);
    }

    #[test]
    fn keys_are_counted_apart() {
        let rl = RateLimiter::default();
        let l = limits(Some(1), None);
        assert!(rl.check("a", l, 0).expect("d").allowed);
        assert!(rl.check("b", l, 0).expect("d").allowed);
        assert!(!rl.check("a", l, 0).expect("d").allowed);
    }

    #[test]
    fn unlimited_keys_get_no_decision() {
        assert_eq!(
            RateLimiter::default().check("k", limits(None, None), 0),
            None
        );
    }
}
