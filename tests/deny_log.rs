//! The deny log on the real kernel (root), in a network namespace of the test's own: a hand-written
//! `table inet nftpolicy` logs rate-limited through NFLOG before its drops, as the compiled ruleset
//! does with `--deny-log`, and the reader turns what it logs into denial records.
//!
//! Packets are sent over the namespace's loopback, judged by the output hook.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{kernel_available, netns, Netns};
use nftpolicy::denials::reader::{DenyLogReader, ReaderConfig};
use nftpolicy::denials::{Denial, DenialContext, Denials, LostReason, Verdict};
use nftpolicy::nflog::{NflogError, TransportProtocol};
use policy_compiler::input::{parse_sources, Source};
use policy_compiler::model::{Direction, ObjectRef};
use policy_compiler::plan::{Origin, Origins};

const GROUP: u16 = 77;

/// Two drop points, each with its own limit (5/second, burst 5), logging before dropping: one for
/// UDP 9999 and TCP 9998, one for UDP 9997 (the flood); and one that logs without a limit before
/// accepting (UDP 9996), to measure the reader on every packet.
const RULESET: &str = r#"
table inet nftpolicy {
    counter egress_Htest { }
    counter ingress_Hflood { }
    counter egress_Hall { }
    chain output {
        type filter hook output priority 0; policy accept;
        meta l4proto { tcp, udp } th dport { 9998, 9999 } limit rate 5/second burst 5 packets log prefix "egress_Htest" group 77
        meta l4proto { tcp, udp } th dport { 9998, 9999 } counter name "egress_Htest" drop
        udp dport 9997 limit rate 5/second burst 5 packets log prefix "ingress_Hflood" group 77
        udp dport 9997 counter name "ingress_Hflood" drop
        udp dport 9996 log prefix "egress_Hall" group 77
        udp dport 9996 counter name "egress_Hall" drop
    }
}
"#;

const CLUSTER: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 127.0.0.1, podIPs: [{ip: 127.0.0.1}, {ip: '::1'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: app}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 127.0.0.2, podIPs: [{ip: 127.0.0.2}]}
";

fn context() -> DenialContext {
    let origins = Origins::from([
        (
            "egress_Htest".to_string(),
            Origin::Isolation {
                direction: Direction::Egress,
                policies: vec![ObjectRef::new("app", "default-deny")],
                audit: false,
            },
        ),
        (
            "ingress_Hflood".to_string(),
            Origin::Isolation {
                direction: Direction::Ingress,
                policies: vec![ObjectRef::new("app", "lockdown")],
                audit: true,
            },
        ),
    ]);
    let cluster = parse_sources(&[Source {
        name: "t.yaml".into(),
        text: CLUSTER.into(),
    }])
    .expect("valid")
    .cluster;
    DenialContext::new(std::sync::Arc::new(origins), &cluster)
}

/// Brings `lo` up and loads the ruleset in `ns`.
fn setup(ns: &Netns) {
    let exec = |args: &[&str], stdin: &str| {
        let mut all = vec!["netns", "exec", ns.name()];
        all.extend(args);
        nftpolicy::process::run("ip", &all, stdin).unwrap_or_else(|e| panic!("{e}"))
    };
    exec(&["ip", "link", "set", "lo", "up"], "");
    exec(&["nft", "-f", "-"], RULESET);
}

/// The packets counter `name` counted in `ns`.
fn counted(ns: &Netns, name: &str) -> u64 {
    let out = nftpolicy::process::run(
        "ip",
        &[
            "netns",
            "exec",
            ns.name(),
            "nft",
            "-j",
            "list",
            "counter",
            "inet",
            "nftpolicy",
            name,
        ],
        "",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("nft JSON");
    json["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
        .unwrap_or_else(|| panic!("no counter {name} in {}", out.stdout))
}

/// Runs `f` on a thread inside `ns` (sockets it opens are the namespace's).
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = ns.name().to_string();
    std::thread::spawn(move || {
        let file = policylab::lab::netns::open(&name).unwrap_or_else(|e| panic!("{e}"));
        policylab::lab::netns::enter(&file, &name).unwrap_or_else(|e| panic!("{e}"));
        f()
    })
    .join()
    .expect("the sending thread")
}

/// `count` UDP datagrams from `from` to `to`, spread evenly over `over`; returns the time taken.
/// The output hook drops them, so each send may fail (EPERM): only the kernel's counter says
/// what was sent.
fn send_udp(ns: &Netns, from: &str, to: &str, count: usize, over: Duration) -> Duration {
    let from: SocketAddr = from.parse().unwrap();
    let to: SocketAddr = to.parse().unwrap();
    in_netns(ns, move || {
        let socket = UdpSocket::bind(from).expect("bind");
        let started = Instant::now();
        for i in 0..count {
            let due = started + over.mul_f64(i as f64 / count as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = socket.send_to(b"denied?", to);
        }
        started.elapsed()
    })
}

/// Waits until `denials` holds `n` records (or 3 s pass) and returns them.
fn wait_for(denials: &Denials, n: usize) -> Vec<Denial> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let recent = denials.recent();
        if recent.len() >= n || Instant::now() > deadline {
            return recent;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reader(ns: &Netns, denials: &Arc<Denials>, receive_buffer: Option<usize>) -> DenyLogReader {
    let mut config = ReaderConfig::new(GROUP);
    config.netns = Some(PathBuf::from(format!("/run/netns/{}", ns.name())));
    if let Some(bytes) = receive_buffer {
        config.socket.receive_buffer = bytes;
    }
    DenyLogReader::start(&config, denials.clone()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn logged_drops_become_denials_within_the_rate_limit() {
    if !kernel_available("logged_drops_become_denials_within_the_rate_limit") {
        return;
    }
    let ns = netns("denylog");
    setup(&ns);

    // 1. What a record says: UDP over IPv4 and IPv6, a TCP SYN.
    let denials = Arc::new(Denials::new(100));
    denials.set_context(context());
    let reading = reader(&ns, &denials, None);
    // The group is this reader's: a second one cannot bind it.
    let mut second = ReaderConfig::new(GROUP);
    second.netns = Some(PathBuf::from(format!("/run/netns/{}", ns.name())));
    let err = DenyLogReader::start(&second, denials.clone()).expect_err("the group is taken");
    assert!(
        matches!(err, NflogError::Bind { group: GROUP, .. }),
        "{err}"
    );
    send_udp(&ns, "127.0.0.1:40001", "127.0.0.2:9999", 1, Duration::ZERO);
    send_udp(&ns, "[::1]:40002", "[::1]:9999", 1, Duration::ZERO);
    in_netns(&ns, || {
        // The SYN is dropped: the attempt fails or times out; closing the socket stops retries.
        let _ = std::net::TcpStream::connect_timeout(
            &"127.0.0.2:9998".parse().unwrap(),
            Duration::from_millis(200),
        );
    });
    let got = wait_for(&denials, 3);
    reading.stop();
    assert_eq!(got.len(), 3, "{got:#?}");
    let v4 = &got[0];
    assert_eq!(
        (
            v4.direction,
            v4.verdict,
            v4.src.pod.as_deref(),
            v4.src.address.to_string(),
            v4.dst.pod.as_deref(),
            v4.protocol,
            v4.src_port,
            v4.dst_port,
            v4.policies.as_deref(),
            v4.counter.as_str(),
        ),
        (
            Some(Direction::Egress),
            Some(Verdict::Deny),
            Some("app/client"),
            "127.0.0.1".to_string(),
            Some("app/server"),
            TransportProtocol::Udp,
            Some(40001),
            Some(9999),
            Some(&["app/default-deny".to_string()][..]),
            "egress_Htest",
        )
    );
    let v6 = &got[1];
    assert_eq!(
        (
            v6.src.address.to_string(),
            v6.src.pod.as_deref(),
            v6.src_port,
            v6.dst_port,
            v6.protocol
        ),
        (
            "::1".to_string(),
            Some("app/client"),
            Some(40002),
            Some(9999),
            TransportProtocol::Udp
        )
    );
    let syn = &got[2];
    assert_eq!(
        (
            syn.protocol,
            syn.dst.pod.as_deref(),
            syn.dst_port,
            syn.counter.as_str()
        ),
        (
            TransportProtocol::Tcp,
            Some("app/server"),
            Some(9998),
            "egress_Htest"
        )
    );
    let now = std::time::SystemTime::now();
    for d in &got {
        let age = now.duration_since(d.time).unwrap_or_default();
        assert!(age < Duration::from_secs(10), "time {:?}", d.time);
    }
    assert_eq!(counted(&ns, "egress_Htest"), 3);

    // 2. A flood of 2,000 packets in 1 s: every one dropped, only the rate limit's worth logged.
    let flood = Arc::new(Denials::new(10_000));
    flood.set_context(context());
    let reading = reader(&ns, &flood, None);
    const FLOOD: usize = 2_000;
    let elapsed = send_udp(
        &ns,
        "127.0.0.1:40003",
        "127.0.0.2:9997",
        FLOOD,
        Duration::from_secs(1),
    );
    std::thread::sleep(Duration::from_millis(500)); // past the kernel's flush timeout
    let summary = reading.stop().expect("the reader's summary");
    let logged = flood.recent();
    assert_eq!(counted(&ns, "ingress_Hflood"), FLOOD as u64);
    // Burst 5 plus 5/second over the flood, with a packet of slack either way for the clock.
    let ceiling = 5.0 + 5.0 * elapsed.as_secs_f64() + 2.0;
    assert!(
        logged.len() >= 5 && logged.len() as f64 <= ceiling,
        "{} logged in {elapsed:?} (ceiling {ceiling})",
        logged.len()
    );
    assert!(logged.iter().all(|d| d.verdict == Some(Verdict::WouldDeny)
        && d.direction == Some(Direction::Ingress)
        && d.policies.as_deref() == Some(&["app/lockdown".to_string()][..])
        && d.src_port == Some(40003)));
    assert_eq!(
        flood.metrics().denial_count("ingress", "would_deny"),
        logged.len() as u64
    );
    for reason in LostReason::ALL {
        assert_eq!(flood.metrics().lost_count(reason), 0, "{reason:?}");
    }
    eprintln!(
        "deny log flood: {FLOOD} packets in {elapsed:.2?}, all dropped, {} logged; reader CPU {:?} \
         over {} datagrams",
        logged.len(),
        summary.cpu_time,
        summary.datagrams
    );
}

#[test]
fn every_logged_message_is_recorded_or_counted_lost() {
    if !kernel_available("every_logged_message_is_recorded_or_counted_lost") {
        return;
    }
    let ns = netns("denylost");
    setup(&ns);
    // Unlimited logging of 20,000 packets sent as fast as possible, into a small receive buffer:
    // the kernel may drop messages (an overrun), and the sequence numbers count what it dropped.
    let denials = Arc::new(Denials::new(0));
    let reading = reader(&ns, &denials, Some(64 << 10));
    const SENT: usize = 20_000;
    let elapsed = send_udp(
        &ns,
        "127.0.0.1:40004",
        "127.0.0.2:9996",
        SENT,
        Duration::ZERO,
    );
    std::thread::sleep(Duration::from_millis(300));
    // A last packet after the burst, so that a gap at its end shows.
    send_udp(&ns, "127.0.0.1:40004", "127.0.0.2:9996", 1, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(500));
    let summary = reading.stop().expect("the reader's summary");
    let logged = counted(&ns, "egress_Hall");
    assert_eq!(logged, SENT as u64 + 1);
    let m = denials.metrics();
    // The context is empty: every record's prefix is unknown, and counted as such.
    let recorded = m.lost_count(LostReason::UnknownPrefix);
    let lost = m.lost_count(LostReason::Overrun);
    assert_eq!(m.lost_count(LostReason::Malformed), 0);
    assert_eq!(
        recorded + lost,
        logged,
        "{recorded} recorded and {lost} lost of {logged} logged ({summary:?})"
    );
    eprintln!(
        "deny log without limit: {SENT} packets sent in {elapsed:.2?}: {recorded} recorded, {lost} \
         lost to overruns ({} reported); reader CPU {:?} over {} datagrams ({:.1} µs per record)",
        summary.overruns,
        summary.cpu_time,
        summary.datagrams,
        summary.cpu_time.as_secs_f64() * 1e6 / recorded.max(1) as f64
    );
}

/// A denial recorded by hand (no kernel needed).
fn denial(src: &str, dst_port: u16) -> Denial {
    Denial {
        time: std::time::UNIX_EPOCH + Duration::from_secs(1_714_564_800),
        direction: Some(Direction::Egress),
        verdict: Some(Verdict::Deny),
        src: nftpolicy::denials::Endpoint {
            address: src.parse().unwrap(),
            pod: None,
        },
        dst: nftpolicy::denials::Endpoint {
            address: "10.0.0.2".parse().unwrap(),
            pod: Some("app/server".into()),
        },
        protocol: TransportProtocol::Tcp,
        src_port: Some(40000),
        dst_port: Some(dst_port),
        icmp_type: None,
        icmp_code: None,
        tier: None,
        policies: Some(vec!["app/default-deny".into()]),
        counter: "egress_Htest".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_the_last_denials_and_their_metrics() {
    let health = Arc::new(nftpolicy::agent::Health::default());
    let denials = Arc::new(Denials::new(2));
    let metrics = Arc::new(nftpolicy::metrics::Metrics::new_with(|r| {
        denials.register(r)
    }));
    for (src, port) in [("10.0.0.1", 1), ("10.0.0.3", 3), ("10.0.0.4", 4)] {
        denials.record(denial(src, port));
    }
    let (addr, server) = nftpolicy::http::serve(
        "127.0.0.1:0".parse().unwrap(),
        health.clone(),
        metrics.clone(),
        Some(denials.clone()),
    )
    .await
    .expect("serve");
    let get = |path: &'static str| {
        tokio::task::spawn_blocking(move || {
            common::http_get(addr.port(), path).expect("a response")
        })
    };
    let (status, response) = get("/denials").await.unwrap();
    assert_eq!(status, 200, "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{response}"
    );
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let expected: serde_json::Value = serde_json::from_str(
        r#"[
          {"time": "2024-05-01T12:00:00Z", "direction": "egress", "verdict": "deny",
           "src": "10.0.0.3", "src_ip": "10.0.0.3", "dst": "app/server", "dst_ip": "10.0.0.2",
           "protocol": "tcp", "src_port": 40000, "dst_port": 3, "icmp_type": null,
           "icmp_code": null, "policies": ["app/default-deny"], "tier": null,
           "counter": "egress_Htest"},
          {"time": "2024-05-01T12:00:00Z", "direction": "egress", "verdict": "deny",
           "src": "10.0.0.4", "src_ip": "10.0.0.4", "dst": "app/server", "dst_ip": "10.0.0.2",
           "protocol": "tcp", "src_port": 40000, "dst_port": 4, "icmp_type": null,
           "icmp_code": null, "policies": ["app/default-deny"], "tier": null,
           "counter": "egress_Htest"}
        ]"#,
    )
    .unwrap();
    assert_eq!(json, expected);

    let (status, body) = get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    for line in [
        "nftpolicy_denials_total{direction=\"egress\",verdict=\"deny\"} 3",
        "nftpolicy_denials_total{direction=\"egress\",verdict=\"would_deny\"} 0",
        "nftpolicy_denials_total{direction=\"ingress\",verdict=\"deny\"} 0",
        "nftpolicy_denials_total{direction=\"ingress\",verdict=\"would_deny\"} 0",
        "nftpolicy_deny_log_lost_total{reason=\"overrun\"} 0",
        "nftpolicy_deny_log_lost_total{reason=\"malformed\"} 0",
        "nftpolicy_deny_log_lost_total{reason=\"unknown_prefix\"} 0",
    ] {
        assert!(body.contains(line), "no {line} in {body}");
    }
    server.abort();

    // Without --deny-log there is nothing to serve.
    let (addr, server) =
        nftpolicy::http::serve("127.0.0.1:0".parse().unwrap(), health, metrics, None)
            .await
            .expect("serve");
    let (status, body) =
        tokio::task::spawn_blocking(move || common::http_get(addr.port(), "/denials").unwrap())
            .await
            .unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("--deny-log"), "{body}");
    server.abort();
}
