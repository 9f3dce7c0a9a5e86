//! Rate-limited log lines for what clients make happen: one client (or one
//! flood of them) must not fill the log. Per key (a message kind and the
//! client, e.g. network and MAC) the first line is written, then at most one
//! per interval, saying how many were suppressed in between; across all keys
//! at most `per_window` lines per interval, so that a flood from many MACs is
//! bounded too.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// How often a key may log, by default.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Lines per [`LOG_EVERY`] across all keys of one limiter, by default.
pub const LINES_PER_WINDOW: u32 = 20;

/// Keys remembered at most: beyond, keys quiet for an interval are forgotten.
const MAX_KEYS: usize = 4096;

/// One key's state.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// When its last line was written (`None`: never yet, all suppressed so far).
    logged: Option<Instant>,
    /// Lines suppressed since.
    suppressed: u64,
}

/// The limiter: [`RateLimit::allow`] says whether a line may be written now.
#[derive(Debug)]
pub struct RateLimit<K> {
    every: Duration,
    per_window: u32,
    window_start: Option<Instant>,
    window_lines: u32,
    keys: HashMap<K, Slot>,
}

impl<K: Hash + Eq + Clone> Default for RateLimit<K> {
    fn default() -> Self {
        RateLimit::new(LOG_EVERY, LINES_PER_WINDOW)
    }
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    /// A limiter allowing one line per key per `every`, `per_window` lines per `every` in all.
    pub fn new(every: Duration, per_window: u32) -> Self {
        RateLimit {
            every,
            per_window,
            window_start: None,
            window_lines: 0,
            keys: HashMap::new(),
        }
    }

    /// Whether a line about `key` may be written now: `Some(n)` with the
    /// number of its lines suppressed since the last one written, or `None`
    /// (the line is counted as suppressed).
    pub fn allow(&mut self, key: K) -> Option<u64> {
        self.allow_at(key, Instant::now())
    }

    /// [`RateLimit::allow`] at time `now`.
    pub fn allow_at(&mut self, key: K, now: Instant) -> Option<u64> {
        if self
            .window_start
            .is_none_or(|t| now.duration_since(t) >= self.every)
        {
            self.window_start = Some(now);
            self.window_lines = 0;
        }
        if self.keys.len() >= MAX_KEYS && !self.keys.contains_key(&key) {
            self.forget_quiet(now);
        }
        let every = self.every;
        let slot = self.keys.entry(key).or_insert(Slot {
            logged: None,
            suppressed: 0,
        });
        let due = slot.logged.is_none_or(|t| now.duration_since(t) >= every);
        if due && self.window_lines < self.per_window {
            self.window_lines += 1;
            let suppressed = slot.suppressed;
            *slot = Slot {
                logged: Some(now),
                suppressed: 0,
            };
            Some(suppressed)
        } else {
            slot.suppressed += 1;
            None
        }
    }

    /// Drops keys that logged an interval ago and suppressed nothing since;
    /// when that is not enough (a flood of new keys), all of them.
    fn forget_quiet(&mut self, now: Instant) {
        let every = self.every;
        self.keys.retain(|_, s| {
            s.suppressed > 0 || s.logged.is_some_and(|t| now.duration_since(t) < every)
        });
        if self.keys.len() >= MAX_KEYS {
            self.keys.clear();
        }
    }
}

/// The text a rate-limited line ends with: "" or " (K more suppressed)".
pub fn suppressed(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval_with_the_suppressed_count() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut rl: RateLimit<&str> = RateLimit::new(Duration::from_secs(10), 100);
        // (what, key, seconds after t0, expected)
        let cases: &[(&str, &str, u64, Option<u64>)] = &[
            ("the first line of a key is written", "a", 0, Some(0)),
            ("a second one within the interval is not", "a", 1, None),
            ("nor a third", "a", 9, None),
            ("another key has its own interval", "b", 9, Some(0)),
            (
                "after the interval: written, with what was suppressed",
                "a",
                10,
                Some(2),
            ),
            ("the count starts again", "a", 11, None),
            ("an interval later: one suppressed", "a", 20, Some(1)),
            ("a quiet key: nothing suppressed", "b", 40, Some(0)),
        ];
        for (what, key, at, want) in cases {
            assert_eq!(rl.allow_at(*key, t0 + s * *at as u32), *want, "{what}");
        }
    }

    #[test]
    fn many_keys_share_one_budget_per_interval() {
        let t0 = Instant::now();
        let mut rl: RateLimit<u32> = RateLimit::new(Duration::from_secs(10), 3);
        let written = (0..1000).filter(|k| rl.allow_at(*k, t0).is_some()).count();
        assert_eq!(written, 3, "at most 3 lines per interval across keys");
        // Next interval: a key that was held back reports its suppressed line.
        assert_eq!(rl.allow_at(500, t0 + Duration::from_secs(10)), Some(1));
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_keys() {
        let t0 = Instant::now();
        let mut rl: RateLimit<u32> = RateLimit::new(Duration::from_secs(10), 3);
        for k in 0..(3 * MAX_KEYS as u32) {
            rl.allow_at(k, t0);
        }
        assert!(rl.keys.len() <= MAX_KEYS, "{} keys kept", rl.keys.len());
    }

    #[test]
    fn the_suffix_names_the_count() {
        assert_eq!(suppressed(0), "");
        assert_eq!(suppressed(7), " (7 more suppressed)");
    }
}
