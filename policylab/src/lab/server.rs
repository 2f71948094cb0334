//! The servers of pods and nodes: every TCP port accepts and closes connections, every UDP port
//! echoes datagrams.
//!
//! The sockets are created by a thread that enters each namespace in turn; one thread per lab then
//! serves them all with `poll`, until [`Servers::stop`].

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use super::{netns, LabError, Protocol};

/// A listening socket of a pod.
#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Socket {
    fn fd(&self) -> RawFd {
        match self {
            Socket::Tcp(l) => l.as_raw_fd(),
            Socket::Udp(u) => u.as_raw_fd(),
        }
    }
}

/// A namespace to serve: its name, the namespace, the addresses to bind each port on, the ports.
pub(super) type ToServe<'a> = (&'a str, &'a File, Vec<IpAddr>, &'a [(u16, Protocol)]);

/// What a pod binds: `[::]`, which also serves IPv4 (net.ipv6.bindv6only is 0 in the pods), or
/// `0.0.0.0` for a pod without IPv6. A pod has one address per family, so its answers come from the
/// address they were sent to.
pub(super) fn pod_binds(ips: &[IpAddr]) -> Vec<IpAddr> {
    if ips.iter().any(IpAddr::is_ipv6) {
        vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
    } else {
        vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
    }
}

/// What a node binds: each of its addresses. A node has other addresses (fabric, gateways), so a
/// UDP echo from a wildcard socket would leave from the address of the route back, which the
/// client's connected socket ignores.
pub(super) fn node_binds(ips: &[IpAddr]) -> Vec<IpAddr> {
    ips.to_vec()
}

/// The running servers of a lab.
#[derive(Debug)]
pub(super) struct Servers {
    /// Dropping it wakes the serving thread up and ends it.
    stop: UnixStream,
    thread: JoinHandle<()>,
}

impl Servers {
    /// Binds every TCP and UDP port of every namespace, and starts serving them.
    pub(super) fn start(prefix: &str, namespaces: &[ToServe<'_>]) -> Result<Servers, LabError> {
        let sockets = std::thread::scope(|s| {
            s.spawn(|| bind_all(namespaces))
                .join()
                .unwrap_or_else(|_| Err(LabError::Internal("the bind thread panicked".into())))
        })?;
        let (stop, stopped) = UnixStream::pair()
            .map_err(|e| LabError::io("cannot create the servers' stop socket", e))?;
        let thread = std::thread::Builder::new()
            .name(format!("{prefix}serve"))
            .spawn(move || serve(&sockets, &stopped))
            .map_err(|e| LabError::io("cannot start the servers' thread", e))?;
        Ok(Servers { stop, thread })
    }

    /// Stops serving and closes every socket.
    pub(super) fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the lab's server thread panicked");
        }
    }
}

fn bind_all(namespaces: &[ToServe<'_>]) -> Result<Vec<Socket>, LabError> {
    let mut sockets = Vec::new();
    for (name, file, binds, ports) in namespaces {
        let name = *name;
        if binds.is_empty() || ports.is_empty() {
            continue;
        }
        netns::enter(file, name)?;
        for (&(port, protocol), bind) in
            ports.iter().flat_map(|p| binds.iter().map(move |b| (p, b)))
        {
            let addr = SocketAddr::new(*bind, port);
            let err = |e| LabError::io(format!("cannot bind {addr}/{protocol} in netns {name}"), e);
            let socket = match protocol {
                Protocol::Tcp => Socket::Tcp(TcpListener::bind(addr).map_err(err)?),
                Protocol::Udp => Socket::Udp(UdpSocket::bind(addr).map_err(err)?),
                Protocol::Sctp => {
                    tracing::debug!(netns = name, port, "SCTP port not served (no SCTP)");
                    continue;
                }
            };
            match &socket {
                Socket::Tcp(l) => l.set_nonblocking(true),
                Socket::Udp(u) => u.set_nonblocking(true),
            }
            .map_err(|e| LabError::io(format!("cannot make {addr}/{protocol} nonblocking"), e))?;
            sockets.push(socket);
        }
    }
    Ok(sockets)
}

fn serve(sockets: &[Socket], stopped: &UnixStream) {
    let mut fds: Vec<libc::pollfd> = std::iter::once(stopped.as_raw_fd())
        .chain(sockets.iter().map(Socket::fd))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds whose
        // descriptors (`stopped` and `sockets`) outlive the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "the lab's servers stopped: poll failed");
            return;
        }
        if fds[0].revents != 0 {
            // The other end was dropped (or written to): stop.
            let _ = (&*stopped).read(&mut buf);
            return;
        }
        for (pfd, socket) in fds[1..].iter().zip(sockets) {
            if pfd.revents == 0 {
                continue;
            }
            match socket {
                Socket::Tcp(listener) => loop {
                    match listener.accept() {
                        // Accepted and closed at once: the probe only needs the handshake.
                        Ok((stream, _)) => drop(stream),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "accept failed");
                            break;
                        }
                    }
                },
                Socket::Udp(udp) => loop {
                    match udp.recv_from(&mut buf) {
                        Ok((len, peer)) => {
                            if let Err(e) = udp.send_to(&buf[..len], peer) {
                                tracing::debug!(error = %e, %peer, "UDP echo failed");
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "UDP receive failed");
                            break;
                        }
                    }
                },
            }
        }
    }
}
