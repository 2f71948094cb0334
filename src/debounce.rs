//! When the reconcile loop syncs: a change in a quiet period at once, a burst coalesced.
//!
//! The policy, with its three settings ([`DebounceConfig`], flags `--debounce-min-ms`,
//! `--debounce-interval-ms`, `--debounce-max-wait-ms`):
//!
//! - **Quiet.** A change that arrives when no sync ended in the last `interval` is synced at once,
//!   after a gather window of `min` (1 ms), so that the changes of one watch read go together.
//! - **Burst.** A change that arrives within `interval` (50 ms) of the end of the previous sync
//!   waits until `interval` after it: under a burst there is at most one sync per `interval`, and
//!   each carries every change since the previous one. The agent then spends at most
//!   `d / (d + interval)` of its time syncing, where `d` is how long a sync takes (with `max_wait`
//!   at least `interval`, as by default).
//! - **Cap.** The oldest pending change never waits more than `max_wait` (250 ms) from entering
//!   the agent, whatever the other two say. A change enters the agent when the loop reads it, and
//!   the loop does not read while it syncs (what comes meanwhile waits in the channel and enters
//!   when the sync ends), so a change waits at most `max(min, interval)` otherwise: the cap binds
//!   when `min` or `interval` is set above it.
//!
//! In short, with `first` the oldest pending change and `last` the end of the previous sync: the
//! sync is due at `min(max(first + min, last + interval), first + max_wait)`.
//!
//! The reconcile loop applies the rest on top, unchanged: nothing syncs before every kind was
//! listed once, a failed sync is retried after the retry delay, and a due sync waits for kinds
//! that are being listed again (see [`crate::agent::AgentConfig`]).
//!
//! [`Debounce`] is only this decision, on instants it is given: no clock, no timer.

use std::time::Duration;

use tokio::time::Instant;

/// The debounce settings (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebounceConfig {
    /// How long a change in a quiet period waits for the changes that come with it.
    pub min: Duration,
    /// At most one sync per `interval` after the end of the previous one.
    pub interval: Duration,
    /// The longest the oldest pending change waits.
    pub max_wait: Duration,
}

impl DebounceConfig {
    /// The defaults: 1 ms gather window, 50 ms interval, 250 ms cap.
    pub const DEFAULT: Self = Self {
        min: Duration::from_millis(1),
        interval: Duration::from_millis(50),
        max_wait: Duration::from_millis(250),
    };

    /// The same wait after the first change of every burst, whatever came before (the agent's
    /// behaviour before the debounce adapted; kept for comparisons): a gather window of `wait`,
    /// no interval.
    pub fn fixed(wait: Duration) -> Self {
        Self {
            min: wait,
            interval: Duration::ZERO,
            max_wait: wait,
        }
    }
}

impl Default for DebounceConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The changes one sync committed (see [`Debounce::synced`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// How many changes entered the agent since the previous sync.
    pub changes: u64,
    /// When the oldest of them entered the agent.
    pub since: Instant,
}

/// The debounce's state: the changes not synced yet and the end of the last sync.
#[derive(Debug, Clone)]
pub struct Debounce {
    config: DebounceConfig,
    pending: Option<Batch>,
    last_sync: Option<Instant>,
}

impl Debounce {
    /// No change pending, no sync yet (the first change is in a quiet period).
    pub fn new(config: DebounceConfig) -> Self {
        Self {
            config,
            pending: None,
            last_sync: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &DebounceConfig {
        &self.config
    }

    /// A change entered the agent at `now`.
    pub fn on_change(&mut self, now: Instant) {
        match &mut self.pending {
            Some(batch) => batch.changes += 1,
            None => {
                self.pending = Some(Batch {
                    changes: 1,
                    since: now,
                })
            }
        }
    }

    /// When the pending changes are to be synced (possibly already past); `None` when nothing is
    /// pending.
    pub fn due(&self) -> Option<Instant> {
        let first = self.pending?.since;
        let gathered = first + self.config.min;
        let spaced = match self.last_sync {
            Some(last) => gathered.max(last + self.config.interval),
            None => gathered,
        };
        Some(spaced.min(first + self.config.max_wait))
    }

    /// A sync ended successfully at `now`, committing every change pending when it started:
    /// returns them (`None` when there were none, as for a drift repair).
    pub fn synced(&mut self, now: Instant) -> Option<Batch> {
        self.last_sync = Some(now);
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nothing_pending_is_never_due() {
        let mut d = Debounce::new(DebounceConfig::DEFAULT);
        assert_eq!(d.due(), None);
        let t0 = Instant::now();
        assert_eq!(d.synced(t0), None, "a sync without changes commits none");
        assert_eq!(d.due(), None);
    }

    #[test]
    fn a_change_in_a_quiet_period_is_synced_after_the_gather_window() {
        let mut d = Debounce::new(DebounceConfig::DEFAULT);
        let t0 = Instant::now();
        d.on_change(t0);
        assert_eq!(d.due(), Some(t0 + MS), "the first change ever");
        // More changes in the window go along, and do not push the sync back.
        d.on_change(t0 + Duration::from_micros(300));
        assert_eq!(d.due(), Some(t0 + MS));
        assert_eq!(
            d.synced(t0 + ms(5)),
            Some(Batch {
                changes: 2,
                since: t0
            })
        );
        // A change more than an interval after the last sync is quiet again.
        let t1 = t0 + ms(5) + ms(50);
        d.on_change(t1);
        assert_eq!(d.due(), Some(t1 + MS));
        let t2 = t1 + ms(500);
        d.synced(t1 + ms(3));
        d.on_change(t2);
        assert_eq!(d.due(), Some(t2 + MS));
    }

    #[test]
    fn a_change_soon_after_a_sync_waits_for_the_interval() {
        let mut d = Debounce::new(DebounceConfig::DEFAULT);
        let t0 = Instant::now();
        d.on_change(t0);
        let end = t0 + ms(10);
        d.synced(end);
        d.on_change(end + ms(2));
        assert_eq!(
            d.due(),
            Some(end + ms(50)),
            "one interval after the sync ended"
        );
        // Late in the interval, the gather window still applies.
        let mut late = Debounce::new(DebounceConfig::DEFAULT);
        late.synced(t0);
        late.on_change(t0 + ms(50) - Duration::from_micros(100));
        assert_eq!(
            late.due(),
            Some(t0 + ms(50) - Duration::from_micros(100) + MS)
        );
    }

    #[test]
    fn a_burst_is_synced_at_most_once_per_interval() {
        // A change every millisecond for two seconds; each sync takes 5 ms and starts when due.
        let config = DebounceConfig::DEFAULT;
        let mut d = Debounce::new(config);
        let t0 = Instant::now();
        let mut syncs: Vec<(Instant, Instant, Batch)> = Vec::new();
        let mut busy_until = t0;
        let mut changes = 0;
        for i in 0..2000u64 {
            let now = t0 + ms(i);
            // Run every sync that came due before this change (none while one is running).
            if let Some(due) = d.due() {
                let start = due.max(busy_until);
                if start <= now {
                    let end = start + ms(5);
                    let batch = d.synced(end).expect("changes were pending");
                    syncs.push((start, end, batch));
                    busy_until = end;
                }
            }
            if now >= busy_until {
                d.on_change(now);
                changes += 1;
            }
        }
        assert_eq!(
            syncs[0].0,
            t0 + MS,
            "the burst's first change is synced at once"
        );
        for pair in syncs.windows(2) {
            let ((_, end, _), (start, _, batch)) = (pair[0], pair[1]);
            assert!(start >= end + config.interval, "{start:?} {end:?}");
            assert!(start <= batch.since + config.max_wait);
        }
        let synced: u64 = syncs.iter().map(|(_, _, b)| b.changes).sum();
        let pending = d.synced(t0 + ms(3000)).map_or(0, |b| b.changes);
        assert_eq!(synced + pending, changes, "every change is synced once");
        // 2 s at 55 ms a cycle: 37 syncs for some 1,900 changes.
        assert!(syncs.len() <= 2000 / 55 + 1, "{} syncs", syncs.len());
        assert!(syncs.len() >= 2000 / 55 - 1, "{} syncs", syncs.len());
    }

    #[test]
    fn the_oldest_change_never_waits_more_than_max_wait() {
        let config = DebounceConfig {
            min: ms(1),
            interval: ms(1000),
            max_wait: ms(250),
        };
        let mut d = Debounce::new(config);
        let t0 = Instant::now();
        d.synced(t0);
        d.on_change(t0 + ms(10));
        d.on_change(t0 + ms(200));
        assert_eq!(d.due(), Some(t0 + ms(260)), "capped, not at t0 + 1 s");
        // A gather window above the cap is capped too.
        let mut d = Debounce::new(DebounceConfig {
            min: ms(400),
            ..config
        });
        d.on_change(t0);
        assert_eq!(d.due(), Some(t0 + ms(250)));
        // And any order of changes and syncs keeps the bound.
        let mut d = Debounce::new(DebounceConfig::DEFAULT);
        let mut now = t0;
        for step in 0..500u64 {
            now += [ms(1), ms(3), ms(40), ms(70), ms(300)][(step * 7 % 5) as usize];
            match step % 4 {
                0 | 1 => d.on_change(now),
                3 => {
                    d.synced(now);
                }
                _ => {}
            }
            if let (Some(due), Some(batch)) = (d.due(), d.pending) {
                assert!(due <= batch.since + ms(250));
                assert!(due >= batch.since + ms(1));
            }
        }
    }

    #[test]
    fn the_fixed_setting_waits_the_same_after_every_first_change() {
        let mut d = Debounce::new(DebounceConfig::fixed(ms(50)));
        let t0 = Instant::now();
        d.on_change(t0);
        assert_eq!(d.due(), Some(t0 + ms(50)));
        d.synced(t0 + ms(60));
        d.on_change(t0 + ms(61));
        assert_eq!(d.due(), Some(t0 + ms(111)));
        let mut zero = Debounce::new(DebounceConfig::fixed(Duration::ZERO));
        zero.synced(t0);
        zero.on_change(t0 + MS);
        assert_eq!(zero.due(), Some(t0 + MS), "no wait at all");
    }
}
