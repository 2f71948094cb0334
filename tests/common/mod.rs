//! Helpers shared by the root package's integration tests.
#![allow(dead_code, unused_imports)] // each test binary uses a part of it

pub use policylab::lab::{kernel_available, Netns};

/// A network namespace of the test's own, removed on drop (see [`Netns`]).
pub fn netns(label: &str) -> Netns {
    Netns::create(label).unwrap_or_else(|e| panic!("{e}"))
}

/// A loopback port that was free a moment ago (for a child process to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on a loopback port: the status code and the whole response.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let code = body.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body))
}
pub mod reconcile;
