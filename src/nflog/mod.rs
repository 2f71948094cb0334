//! NFLOG: the packets a ruleset's `log group N` statements send to userspace, over a netfilter
//! netlink socket bound to group N.
//!
//! - [`NflogSocket`] binds a group (copying only the first bytes of each packet) and receives
//!   datagrams, telling overruns (`ENOBUFS`: the kernel dropped messages the socket had no room
//!   for) and read timeouts from data;
//! - [`message`] reads the netlink messages of a datagram into [`LoggedPacket`]s;
//! - [`packet`] reads the IP and transport headers of a logged packet.

pub mod message;
pub mod packet;

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, Timeout,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::constants::NETLINK_NETFILTER;
use netlink_sys::Socket;

pub use message::{packets, LoggedPacket, MessageError};
pub use packet::{MalformedPacket, PacketHeaders, Transport, TransportProtocol};

/// How a group is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Bytes of each packet copied to the message: enough for the IP and transport headers.
    pub copy_range: u32,
    /// The socket's receive buffer (bytes): what the kernel may queue while the reader is busy.
    pub receive_buffer: usize,
    /// How long the kernel holds messages to batch them before sending.
    pub flush_timeout: Duration,
    /// How many messages the kernel batches at most.
    pub batch: u32,
    /// How long [`NflogSocket::recv`] waits for a datagram before it returns
    /// [`Received::Timeout`] (so that a reading thread can check whether to stop).
    pub read_timeout: Duration,
}

impl Default for SocketOptions {
    /// 128 bytes copied (an IPv6 header, extension headers and ports fit), a 4 MiB receive
    /// buffer, batches of up to 32 messages flushed within 100 ms, a 200 ms read timeout.
    fn default() -> Self {
        Self {
            copy_range: 128,
            receive_buffer: 4 << 20,
            flush_timeout: Duration::from_millis(100),
            batch: 32,
            read_timeout: Duration::from_millis(200),
        }
    }
}

/// The most the kernel puts in one batch (`NFULA_CFG_NLBUFSIZ`).
const BATCH_BYTES: u32 = 32 << 10;

/// The size of the buffer [`NflogSocket::recv`] needs: twice the largest batch the kernel builds
/// (its buffer may be rounded up).
pub const DATAGRAM_SIZE: usize = 2 * BATCH_BYTES as usize;

/// Why a group cannot be bound or read.
#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    /// The netlink socket cannot be opened or set up.
    #[error("NFLOG socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused to bind the group (`EBUSY`: another process reads it; `EPERM`: no
    /// CAP_NET_ADMIN).
    #[error("cannot bind NFLOG group {group}: {source}")]
    Bind {
        /// The group.
        group: u16,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The network namespace cannot be entered.
    #[error("cannot enter the network namespace {netns}: {source}")]
    Netns {
        /// Its path.
        netns: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// What one [`NflogSocket::recv`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A datagram of this many bytes, at the start of the buffer.
    Datagram(usize),
    /// The kernel dropped messages for want of room in the receive buffer (`ENOBUFS`); the socket
    /// goes on.
    Overrun,
    /// Nothing within the read timeout (or a signal interrupted the wait).
    Timeout,
}

/// A netlink socket bound to one NFLOG group.
#[derive(Debug)]
pub struct NflogSocket {
    socket: Socket,
    group: u16,
}

impl NflogSocket {
    /// Binds `group` in the calling thread's network namespace: packet copy mode with
    /// `options.copy_range` bytes, sequence numbers on (so that lost messages can be counted).
    pub fn bind(group: u16, options: &SocketOptions) -> Result<Self, NflogError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NflogError::Socket)?;
        socket.bind_auto().map_err(NflogError::Socket)?;
        set_receive_buffer(&socket, options.receive_buffer)?;
        // Acknowledgements come at once; a bound wait keeps a silent kernel from hanging the bind.
        set_read_timeout(&socket, Duration::from_secs(2)).map_err(NflogError::Socket)?;
        let this = Self { socket, group };
        this.configure(vec![ConfigCmd::Bind.into()])?;
        this.configure(vec![
            ConfigMode::new_packet(options.copy_range).into(),
            ConfigFlags::SEQ.into(),
            Timeout::from(options.flush_timeout).into(),
            ConfigNla::QThresh(options.batch.max(1)),
            ConfigNla::NlBufSiz(BATCH_BYTES),
        ])?;
        set_read_timeout(&this.socket, options.read_timeout).map_err(NflogError::Socket)?;
        Ok(this)
    }

    /// Binds `group` in the network namespace at `netns` (`/run/netns/NAME`), or in the calling
    /// thread's one when `None`. The socket belongs to that namespace for its whole life, whichever
    /// thread reads it: it is opened from a thread spawned for the purpose, which enters the
    /// namespace and ends, so no other thread changes namespace.
    pub fn bind_in(
        netns: Option<PathBuf>,
        group: u16,
        options: &SocketOptions,
    ) -> Result<Self, NflogError> {
        let Some(path) = netns else {
            return Self::bind(group, options);
        };
        let bound = crate::netns::run_in(&path, || Self::bind(group, options));
        bound.unwrap_or_else(|source| {
            Err(NflogError::Netns {
                netns: path.display().to_string(),
                source,
            })
        })
    }

    /// The group bound.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Waits for the next datagram (at most the read timeout) and writes it to `buf`, which should
    /// hold [`DATAGRAM_SIZE`] bytes (a longer datagram is cut, and its last message reads as
    /// unreadable).
    pub fn recv(&self, buf: &mut [u8]) -> Result<Received, NflogError> {
        match self.socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => Ok(Received::Datagram(n.min(buf.len()))),
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOBUFS) => Ok(Received::Overrun),
                Some(libc::EAGAIN | libc::EINTR) => Ok(Received::Timeout),
                _ => Err(NflogError::Socket(e)),
            },
        }
    }

    /// Sends one config request for the group and waits for its acknowledgement.
    fn configure(&self, nlas: Vec<ConfigNla>) -> Result<(), NflogError> {
        let bind_error = |source| NflogError::Bind {
            group: self.group,
            source,
        };
        let mut request = config_request(NetfilterProtoFamily::Unspec, self.group, nlas);
        request.header.sequence_number = 1;
        let mut out = vec![0; request.buffer_len()];
        request.serialize(&mut out);
        self.socket.send(&out, 0).map_err(bind_error)?;
        let mut buf = vec![0; DATAGRAM_SIZE];
        // Packets logged meanwhile (the group may already be in use by a ruleset) come before the
        // acknowledgement: skip them.
        for _ in 0..64 {
            let n = self
                .socket
                .recv(&mut &mut buf[..], 0)
                .map_err(bind_error)?
                .min(buf.len());
            if let Some(result) = acknowledgement(&buf[..n]) {
                return result.map_err(bind_error);
            }
        }
        Err(bind_error(io::Error::other("no acknowledgement")))
    }
}

/// The outcome the first acknowledgement of `datagram` reports, if it holds one.
fn acknowledgement(datagram: &[u8]) -> Option<io::Result<()>> {
    let mut rest = datagram;
    while let Some((message, next)) = message::split_message(rest) {
        if let Ok(NetlinkMessage {
            payload: NetlinkPayload::Error(e),
            ..
        }) = NetlinkMessage::<NetfilterMessage>::deserialize(message)
        {
            return Some(match e.code {
                None => Ok(()),
                Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
            });
        }
        rest = next;
    }
    None
}

/// Sets the receive buffer, above `net.core.rmem_max` when the process may (`SO_RCVBUFFORCE`
/// needs CAP_NET_ADMIN, which binding needs anyway), else as large as that limit allows.
fn set_receive_buffer(socket: &Socket, bytes: usize) -> Result<(), NflogError> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    if set_option(socket, libc::SO_RCVBUFFORCE, &size).is_ok() {
        return Ok(());
    }
    set_option(socket, libc::SO_RCVBUF, &size).map_err(NflogError::Socket)
}

/// Sets how long a blocking `recv` on `socket` waits (`SO_RCVTIMEO`).
pub(crate) fn set_read_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let timeval = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    set_option(socket, libc::SO_RCVTIMEO, &timeval)
}

/// Sets the socket-level option `name` of `socket` to `value`.
pub(crate) fn set_option<T>(socket: &Socket, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::other("option too large"))?;
    // SAFETY: `value` points to a live `T` of `len` bytes for the whole call, which only reads it;
    // the descriptor is the socket's own, open while `socket` lives.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
