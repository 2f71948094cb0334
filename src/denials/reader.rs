//! The thread that reads the deny log: NFLOG datagrams into [`Denials`].
//!
//! A blocking thread of its own rather than a task on the async runtime: a flood of denied packets
//! (rate-limited per drop point, but there may be many) then costs this thread's CPU and never
//! delays the reconcile loop or the HTTP server on the runtime's two workers; its CPU time is its
//! own to measure ([`ReaderSummary::cpu_time`]); and reading one socket needs no readiness
//! machinery: a blocking `recv` with a short timeout, after which the thread checks whether to stop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::{Denials, Sequence};
use crate::nflog::{NflogError, NflogSocket, Received, SocketOptions, DATAGRAM_SIZE};

/// What to read.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// The NFLOG group the ruleset logs to.
    pub group: u16,
    /// The network namespace to read in (`/run/netns/NAME`), when not the agent's own.
    pub netns: Option<PathBuf>,
    /// The socket's settings.
    pub socket: SocketOptions,
}

impl ReaderConfig {
    /// Reads `group` in the agent's namespace with the default socket settings.
    pub fn new(group: u16) -> Self {
        Self {
            group,
            netns: None,
            socket: SocketOptions::default(),
        }
    }
}

/// What a reader did, when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderSummary {
    /// Datagrams read.
    pub datagrams: u64,
    /// Overruns the socket reported.
    pub overruns: u64,
    /// CPU time the thread used (user and system).
    pub cpu_time: Duration,
}

/// A running reader; it stops when [`DenyLogReader::stop`] is called or it is dropped.
#[derive(Debug)]
pub struct DenyLogReader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ReaderSummary>>,
}

impl DenyLogReader {
    /// Binds the group (so that a group another process holds, or a missing capability, fails
    /// here) and starts the thread that records each logged packet into `denials`.
    pub fn start(config: &ReaderConfig, denials: Arc<Denials>) -> Result<Self, NflogError> {
        let socket = NflogSocket::bind_in(config.netns.clone(), config.group, &config.socket)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("deny-log".into())
            .spawn(move || read(&socket, &denials, &stopping))
            .map_err(NflogError::Socket)?;
        tracing::info!(
            group = config.group,
            netns = config.netns.as_ref().map(|p| p.display().to_string()),
            "reading the deny log"
        );
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread (within the socket's read timeout) and says what it did.
    pub fn stop(mut self) -> Option<ReaderSummary> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Option<ReaderSummary> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take()?.join().ok()
    }
}

impl Drop for DenyLogReader {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn read(socket: &NflogSocket, denials: &Denials, stop: &AtomicBool) -> ReaderSummary {
    let mut buf = vec![0u8; DATAGRAM_SIZE];
    let mut seq = Sequence::default();
    let mut summary = ReaderSummary {
        datagrams: 0,
        overruns: 0,
        cpu_time: Duration::ZERO,
    };
    let mut failures = 0u32;
    while !stop.load(Ordering::SeqCst) {
        match socket.recv(&mut buf) {
            Ok(Received::Datagram(n)) => {
                failures = 0;
                summary.datagrams += 1;
                denials.ingest(&buf[..n], SystemTime::now(), &mut seq);
            }
            Ok(Received::Overrun) => {
                summary.overruns += 1;
                if summary.overruns.is_power_of_two() {
                    tracing::warn!(
                        group = socket.group(),
                        overruns = summary.overruns,
                        "the deny log overran its socket buffer: denials were lost (counted in nftpolicy_deny_log_lost_total)"
                    );
                }
                denials.overrun(&seq);
            }
            Ok(Received::Timeout) => {}
            Err(e) => {
                // Not expected on a bound socket; back off rather than spin, and go on.
                failures = failures.saturating_add(1);
                if failures.is_power_of_two() {
                    tracing::error!(error = %e, group = socket.group(), "cannot read the deny log");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    summary.cpu_time = thread_cpu_time();
    summary
}

/// The calling thread's CPU time (user and system), zero if the kernel does not say.
pub fn thread_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` through the pointer, which points to one that lives
    // for the call; on failure nothing is read from it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded, so it filled the struct (which was zeroed anyway).
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
