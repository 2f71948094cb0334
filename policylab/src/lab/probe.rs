//! One probe, from a thread already inside the source pod's namespace.

use std::collections::BTreeSet;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{LabError, Probe, ProbeOutcome, Protocol};

/// The source ports of UDP probes, in rotation over 20000-60999 (skipping the ports the pods serve).
///
/// Random ephemeral ports would now and then repeat the 5-tuple of a probe made a few seconds
/// earlier, whose conntrack entry (30 s for UDP) would make the new probe `established`: allowed by
/// `ct state established accept` even when a new policy denies it, and DNATed to the old backend.
/// In rotation, a source port comes back only after 41000 UDP probes of the lab.
#[derive(Debug)]
pub(super) struct SourcePorts {
    next: AtomicU32,
    skip: BTreeSet<u16>,
}

const FIRST_PORT: u32 = 20_000;
const PORT_COUNT: u32 = 41_000;

impl SourcePorts {
    /// Rotates over the range, skipping `skip`.
    pub(super) fn new(skip: BTreeSet<u16>) -> SourcePorts {
        SourcePorts {
            next: AtomicU32::new(0),
            skip,
        }
    }

    fn next(&self) -> u16 {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % PORT_COUNT;
            // FIRST_PORT + PORT_COUNT <= 65535.
            let port = (FIRST_PORT + n) as u16;
            if !self.skip.contains(&port) {
                return port;
            }
        }
    }
}

/// Runs `probe` (the `index`-th of its batch) from the calling thread's namespace: what its packets
/// met within `timeout`.
pub(super) fn run(
    probe: &Probe,
    index: usize,
    timeout: Duration,
    ports: &SourcePorts,
) -> Result<ProbeOutcome, LabError> {
    let to = SocketAddr::new(probe.to, probe.port);
    let outcome = match probe.protocol {
        Protocol::Tcp => tcp(to, timeout),
        Protocol::Udp => udp(to, timeout, index, ports),
        Protocol::Sctp => {
            return Err(LabError::Unsupported(
                "SCTP probes are not supported by the lab".to_string(),
            ))
        }
    };
    match outcome {
        Ok(true) => Ok(ProbeOutcome::Reached),
        Ok(false) => Ok(ProbeOutcome::TimedOut),
        Err(e) => blocked(&e).ok_or_else(|| {
            LabError::io(
                format!(
                    "probe {} -> {to}/{} failed to run",
                    probe.from, probe.protocol
                ),
                e,
            )
        }),
    }
}

/// What an error says of the packets: dropped (timed out), refused (closed port, reject),
/// unreachable (no route, ICMP unreachable, or denied by a local filter); `None` for an error that
/// says nothing of them (the probe could not run).
fn blocked(e: &io::Error) -> Option<ProbeOutcome> {
    if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
        return Some(ProbeOutcome::TimedOut);
    }
    match e.raw_os_error()? {
        libc::ETIMEDOUT => Some(ProbeOutcome::TimedOut),
        libc::ECONNREFUSED | libc::ECONNRESET => Some(ProbeOutcome::Refused),
        libc::EHOSTUNREACH
        | libc::ENETUNREACH
        | libc::EHOSTDOWN
        | libc::ENETDOWN
        | libc::EPERM
        | libc::EACCES
        | libc::EPROTO => Some(ProbeOutcome::Unreachable),
        _ => None,
    }
}

fn tcp(to: SocketAddr, timeout: Duration) -> io::Result<bool> {
    TcpStream::connect_timeout(&to, timeout)?;
    Ok(true)
}

fn udp(to: SocketAddr, timeout: Duration, index: usize, ports: &SourcePorts) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let any: IpAddr = match to {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let mut attempts = 0;
    let socket = loop {
        match UdpSocket::bind(SocketAddr::new(any, ports.next())) {
            Ok(socket) => break socket,
            // Still held by a probe of another batch running at the same time: take the next.
            Err(e) if e.kind() == ErrorKind::AddrInUse && attempts < 64 => attempts += 1,
            Err(e) => return Err(e),
        }
    };
    // Connected: only datagrams from `to` are received, and ICMP errors are reported.
    socket.connect(to)?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let payload = format!("nplab probe {index} {nonce:08x}");
    socket.send(payload.as_bytes())?;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        socket.set_read_timeout(Some(left))?;
        let len = socket.recv(&mut buf)?;
        if &buf[..len] == payload.as_bytes() {
            return Ok(true);
        }
    }
}
