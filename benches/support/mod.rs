//! What the agent's benches share: the runtime they run on and the statistics they print.
#![allow(dead_code)] // each bench uses a part of it

use std::future::Future;
use std::time::Duration;

/// Runs `future` on a multi-threaded runtime of two workers, to its end.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// The `p` quantile (0 to 1) of `sorted` durations, by nearest rank: 0.5 is the median (the
/// upper middle one of an even count), 1.0 the maximum.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
