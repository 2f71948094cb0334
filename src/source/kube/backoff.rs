//! The delay before retrying a failed request to the Kubernetes API: exponential, capped, with full
//! jitter, so that the agents of a whole cluster do not reconnect in lockstep after an outage and a
//! recovered API server is retried within the cap.

use std::time::Duration;

/// Exponential backoff with full jitter: the n-th consecutive failure waits a uniformly random time
/// in `[0, min(max, initial * 2^n)]`.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A backoff starting at `initial`, never waiting longer than `max`, drawing its jitter from a
    /// generator seeded with `seed` (the node name, say, so that agents differ).
    pub(super) fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Self {
            initial,
            max: max.max(initial),
            failures: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub(super) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(2u32.saturating_pow(self.failures.min(16)))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.u64(0..=millis))
    }

    /// Forgets the failures: the next delay starts from `initial` again.
    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The longest delay this backoff ever returns.
    pub(super) fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_never_exceed_it() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(3), 7);
        let ceilings = [100, 200, 400, 800, 1600, 3000, 3000, 3000];
        for ceiling in ceilings {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(ceiling), "{d:?} > {ceiling} ms");
        }
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(3));
        }
    }

    #[test]
    fn jitter_spreads_agents_over_the_whole_window() {
        // 500 agents, each at its cap: their delays cover [0, cap] rather than bunching.
        let delays: Vec<Duration> = (0..500u64)
            .map(|seed| {
                let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(3), seed);
                for _ in 0..10 {
                    b.next_delay();
                }
                b.next_delay()
            })
            .collect();
        let first_third = delays
            .iter()
            .filter(|d| **d < Duration::from_secs(1))
            .count();
        let last_third = delays
            .iter()
            .filter(|d| **d >= Duration::from_secs(2))
            .count();
        assert!(
            first_third > 100 && last_third > 100,
            "{first_third} {last_third}"
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(3), 1);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
