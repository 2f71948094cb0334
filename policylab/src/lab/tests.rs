//! Tests of the lab. Those that build namespaces need root: they skip with a banner otherwise, and fail
//! instead with `NFTPOLICY_REQUIRE_LAB=1`.

use std::net::IpAddr;
use std::process::{Command, Stdio};

use nftpolicy::kernel::NftKernel;
use nftpolicy::process;
use std::time::{Duration, Instant};

use super::render::{nat_ruleset, validate, Layout};
use super::*;

const TIMEOUT: Duration = Duration::from_millis(250);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn pod(id: &str, node: &str, ips: &[&str], ports: &[(u16, Protocol)]) -> PodSpec {
    PodSpec {
        id: id.to_string(),
        node: node.to_string(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        ports: ports.to_vec(),
    }
}

const PORTS: &[(u16, Protocol)] = &[
    (80, Protocol::Tcp),
    (80, Protocol::Udp),
    (81, Protocol::Tcp),
    (81, Protocol::Sctp),
];

/// Two nodes, four pods: a (dual-stack) and b on node-1, c and d (dual-stack) on node-2.
fn small_spec() -> LabSpec {
    LabSpec {
        nodes: vec!["node-1".into(), "node-2".into()],
        pods: vec![
            pod("x/a", "node-1", &["10.244.1.2", "fd00:244:1::2"], PORTS),
            pod("x/b", "node-1", &["10.244.1.3"], PORTS),
            pod("y/c", "node-2", &["10.244.2.2"], PORTS),
            pod("y/d", "node-2", &["fd00:244:2::3", "10.244.2.3"], PORTS),
        ],
        services: vec![],
    }
}

/// The namespaces `ip netns list` shows whose name starts with `prefix`.
fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let out = process::run("ip", &["netns", "list"], "").expect("ip netns list");
    out.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn probe(from: &str, to: IpAddr, port: u16, protocol: Protocol) -> Probe {
    Probe {
        from: from.to_string(),
        to,
        port,
        protocol,
    }
}

fn outcomes(lab: &Lab, probes: &[Probe]) -> Vec<bool> {
    lab.probe_all(probes, TIMEOUT)
        .into_iter()
        .zip(probes)
        .map(|(r, p)| r.unwrap_or_else(|e| panic!("{p:?}: {e}")))
        .collect()
}

fn load_nft(netns: &str, ruleset: &str) {
    NftKernel::in_netns(netns)
        .run_script(ruleset)
        .unwrap_or_else(|e| panic!("{e}"));
}

// ---- without root ----

#[test]
fn prefixes_parse() {
    assert_eq!(
        parse_prefix("nplab123x4-p0-x_a"),
        Some((123, "nplab123x4-"))
    );
    assert_eq!(
        parse_prefix("nplab123x4-fabric"),
        Some((123, "nplab123x4-"))
    );
    assert_eq!(parse_prefix("nplab123x-fabric"), None);
    assert_eq!(parse_prefix("nplabx4-fabric"), None);
    assert_eq!(parse_prefix("nplab12a3x4-fabric"), None);
    assert_eq!(parse_prefix("other123x4-fabric"), None);
}

#[test]
fn layout_names_and_scripts() {
    let layout = Layout::new("nplab1x0-", &small_spec());
    assert_eq!(layout.fabric, "nplab1x0-fabric");
    assert_eq!(layout.nodes[1].netns, "nplab1x0-n1-node-2");
    assert_eq!(layout.pods[0].netns, "nplab1x0-p0-x_a");
    let pod = layout.pod_script(0);
    assert!(pod.contains("link add eth0 address 02:aa:00:00:00:00 type veth peer name p0 address 02:bb:00:00:00:00 netns nplab1x0-n0-node-1"), "{pod}");
    assert!(
        pod.contains("addr add fd00:244:1::2/128 dev eth0 nodad"),
        "{pod}"
    );
    assert!(
        pod.contains("route add 0.0.0.0/0 via 169.254.1.1 dev eth0 onlink"),
        "{pod}"
    );
    assert!(pod.contains("route add ::/0 via fe80::1 dev eth0"), "{pod}");
    let v4_only = layout.pod_script(1);
    assert!(!v4_only.contains("::/0"), "{v4_only}");
    let node = layout.node_script(0);
    assert!(node.contains("route add 10.244.1.2/32 dev p0"), "{node}");
    assert!(
        node.contains("route add fd00:244:2::3/128 via fd6e:706c:6162::2 dev fab0"),
        "{node}"
    );
    assert!(
        node.contains("route add 10.244.2.2/32 via 198.18.0.2 dev fab0"),
        "{node}"
    );
    assert!(node.contains("addr add 198.18.0.1/16 dev fab0"), "{node}");
    assert!(layout.fabric_script().contains("link set n1 master br0 up"));
}

#[test]
fn nat_ruleset_shapes() {
    let services = vec![ServiceSpec {
        name: "x/web".into(),
        cluster_ips: vec![ip("10.96.0.10"), ip("fd00:96::10")],
        ports: vec![
            ServicePort {
                port: 80,
                protocol: Protocol::Tcp,
                backends: vec![(ip("10.244.1.2"), 8080), (ip("fd00:244:1::2"), 8080)],
            },
            ServicePort {
                port: 53,
                protocol: Protocol::Udp,
                backends: vec![(ip("10.244.1.2"), 53), (ip("10.244.2.2"), 5353)],
            },
        ],
    }];
    let nat = nat_ruleset(&services);
    assert!(
        nat.contains(
            "ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.1.2:8080 comment \"x/web 80/TCP\""
        ),
        "{nat}"
    );
    assert!(
        nat.contains("ip6 daddr fd00:96::10 tcp dport 80 dnat to [fd00:244:1::2]:8080"),
        "{nat}"
    );
    assert!(nat.contains("ip daddr 10.96.0.10 udp dport 53 dnat ip to numgen random mod 2 map { 0 : 10.244.1.2 . 53, 1 : 10.244.2.2 . 5353 }"), "{nat}");
    assert!(
        !nat.contains("ip6 daddr fd00:96::10 udp"),
        "no IPv6 backend: {nat}"
    );
    assert!(
        nat.contains("ct status dnat ip saddr 10.244.2.2 ip daddr 10.244.2.2 masquerade"),
        "{nat}"
    );
    assert!(
        nat.starts_with("table ip policylab_nat {}\ndelete table ip policylab_nat\n"),
        "{nat}"
    );
}

#[test]
fn invalid_specs_are_rejected() {
    let mut spec = small_spec();
    spec.pods[1].node = "node-9".into();
    let e = validate(&spec).expect_err("unknown node").to_string();
    assert!(e.contains("node-9"), "{e}");
    let mut spec = small_spec();
    spec.pods[1].ips = vec![ip("10.244.1.2")];
    let e = validate(&spec).expect_err("duplicate ip").to_string();
    assert!(e.contains("both have 10.244.1.2"), "{e}");
    let mut spec = small_spec();
    spec.pods[1].ips = vec![ip("198.18.0.7")];
    assert!(validate(&spec).is_err());
    let mut spec = small_spec();
    spec.pods[1].ips = vec![ip("10.0.0.1"), ip("10.0.0.2")];
    assert!(validate(&spec).is_err());
    let pod_ips = Layout::new("p-", &small_spec()).own_ips();
    let bad = ServiceSpec {
        name: "s".into(),
        cluster_ips: vec![ip("10.96.0.1")],
        ports: vec![ServicePort {
            port: 80,
            protocol: Protocol::Tcp,
            backends: vec![(ip("fd00:244:1::2"), 80)],
        }],
    };
    assert!(render::validate_services(&pod_ips, &[bad]).is_err());
}

/// `small_spec` with addresses on both nodes (as a Node's InternalIP and ExternalIP) that serve
/// TCP 34345 and UDP 34347, as host-network pods would.
fn spec_with_node_addresses() -> LabSpec {
    let mut spec = small_spec();
    let node_ports = vec![(34345, Protocol::Tcp), (34347, Protocol::Udp)];
    spec.nodes = vec![
        NodeSpec {
            name: "node-1".into(),
            ips: vec![
                ip("192.168.100.1"),
                ip("fd00:192:168:100::1"),
                ip("203.0.113.1"),
            ],
            ports: node_ports.clone(),
        },
        NodeSpec {
            name: "node-2".into(),
            ips: vec![ip("192.168.100.2"), ip("fd00:192:168:100::2")],
            ports: node_ports,
        },
    ];
    spec
}

#[test]
fn node_addresses_are_on_lo_and_routed_by_the_other_nodes() {
    let layout = Layout::new("nplab1x0-", &spec_with_node_addresses());
    let node1 = layout.node_script(0);
    for line in [
        "addr add 192.168.100.1/32 dev lo\n",
        "addr add fd00:192:168:100::1/128 dev lo nodad\n",
        "addr add 203.0.113.1/32 dev lo\n",
        "route add 192.168.100.2/32 via 198.18.0.2 dev fab0\n",
        "route add fd00:192:168:100::2/128 via fd6e:706c:6162::2 dev fab0\n",
    ] {
        assert!(node1.contains(line), "{line}in:\n{node1}");
    }
    assert!(!node1.contains("192.168.100.1/32 via"), "{node1}");
    let node2 = layout.node_script(1);
    for line in [
        "addr add 192.168.100.2/32 dev lo\n",
        "route add 192.168.100.1/32 via 198.18.0.1 dev fab0\n",
        "route add fd00:192:168:100::1/128 via fd6e:706c:6162::1 dev fab0\n",
        "route add 203.0.113.1/32 via 198.18.0.1 dev fab0\n",
    ] {
        assert!(node2.contains(line), "{line}in:\n{node2}");
    }
    // Nodes without addresses (small_spec) have nothing on lo but lo itself.
    let plain = Layout::new("nplab1x0-", &small_spec()).node_script(0);
    assert!(!plain.contains("dev lo"), "{plain}");
    assert!(layout.own_ips().contains(&ip("fd00:192:168:100::2")));
}

#[test]
fn node_addresses_are_validated() {
    let mut spec = spec_with_node_addresses();
    spec.nodes[1].ips.push(ip("192.168.100.1"));
    let e = validate(&spec).expect_err("shared").to_string();
    assert!(
        e.contains("node `node-1` and node `node-2` both have 192.168.100.1"),
        "{e}"
    );
    let mut spec = spec_with_node_addresses();
    spec.nodes[0].ips.push(ip("10.244.2.2"));
    let e = validate(&spec).expect_err("a pod's").to_string();
    assert!(
        e.contains("node `node-1` and pod `y/c` both have 10.244.2.2"),
        "{e}"
    );
    let mut spec = spec_with_node_addresses();
    spec.nodes[0].ips.push(ip("198.18.0.9"));
    let e = validate(&spec).expect_err("fabric").to_string();
    assert!(e.contains("node `node-1` has 198.18.0.9"), "{e}");
    let mut spec = spec_with_node_addresses();
    spec.nodes[0].ports.push((0, Protocol::Udp));
    assert!(validate(&spec).is_err());
    let own = Layout::new("p-", &spec_with_node_addresses()).own_ips();
    let on_a_node = ServiceSpec {
        name: "s".into(),
        cluster_ips: vec![ip("192.168.100.2")],
        ports: vec![],
    };
    let e = render::validate_services(&own, &[on_a_node])
        .expect_err("a node's address")
        .to_string();
    assert!(e.contains("a pod's or a node's address"), "{e}");
}

// ---- with root ----

/// The outcomes of `probes`, which the lab must be able to run.
fn met(lab: &Lab, probes: &[Probe]) -> Vec<ProbeOutcome> {
    lab.probe_outcomes(probes, TIMEOUT)
        .into_iter()
        .zip(probes)
        .map(|(r, p)| r.unwrap_or_else(|e| panic!("{p:?}: {e}")))
        .collect()
}

#[test]
fn lab_node_addresses_are_served_and_a_pods_own_node_is_reached_through_input() {
    if !kernel_available(
        "lab_node_addresses_are_served_and_a_pods_own_node_is_reached_through_input",
    ) {
        return;
    }
    use ProbeOutcome::{Reached, Refused, TimedOut, Unreachable};
    let lab = Lab::create(&spec_with_node_addresses()).expect("lab");
    // x/a (dual-stack) and x/b run on node-1, y/d (dual-stack) on node-2.
    let mut served = Vec::new();
    for (from, to) in [
        ("x/a", "192.168.100.1"),
        ("x/a", "fd00:192:168:100::1"),
        ("x/a", "203.0.113.1"),
        ("x/a", "192.168.100.2"),
        ("x/a", "fd00:192:168:100::2"),
        ("y/d", "192.168.100.1"),
        ("y/d", "fd00:192:168:100::1"),
        ("y/d", "192.168.100.2"),
        ("y/d", "fd00:192:168:100::2"),
    ] {
        served.push(probe(from, ip(to), 34345, Protocol::Tcp));
        // The echo comes from the address it was sent to (the client's socket is connected).
        served.push(probe(from, ip(to), 34347, Protocol::Udp));
    }
    assert_eq!(met(&lab, &served), vec![Reached; served.len()]);
    // Ports the node does not serve are refused, not dropped.
    let closed = vec![
        probe("x/a", ip("192.168.100.1"), 34346, Protocol::Tcp),
        probe("x/a", ip("fd00:192:168:100::1"), 34349, Protocol::Udp),
        probe("x/a", ip("192.168.100.2"), 34346, Protocol::Tcp),
    ];
    assert_eq!(met(&lab, &closed), vec![Refused; closed.len()]);

    // A forward-hook drop in node-1 does not see x/a reach its own node, only the other one.
    let node1 = lab.node_netns("node-1").expect("node-1");
    load_nft(
        node1,
        "table inet lab_forward {\n  chain f {\n    type filter hook forward priority filter;\n    \
         tcp dport 34345 drop\n  }\n}\n",
    );
    let through_forward = vec![
        probe("x/a", ip("192.168.100.1"), 34345, Protocol::Tcp),
        probe("x/a", ip("fd00:192:168:100::1"), 34345, Protocol::Tcp),
        probe("x/a", ip("192.168.100.2"), 34345, Protocol::Tcp),
        probe("x/a", ip("fd00:192:168:100::2"), 34345, Protocol::Tcp),
        probe("y/d", ip("192.168.100.1"), 34345, Protocol::Tcp),
    ];
    assert_eq!(
        met(&lab, &through_forward),
        vec![Reached, Reached, TimedOut, TimedOut, Reached]
    );
    // An input-hook filter in node-1 sees it: drop times out, reject is refused or unreachable.
    load_nft(
        node1,
        "table inet lab_input {\n  chain i {\n    type filter hook input priority filter;\n    \
         ip saddr 10.244.1.2 tcp dport 34345 drop\n    \
         ip6 saddr fd00:244:1::2 udp dport 34347 drop\n    \
         ip saddr 10.244.1.2 udp dport 34347 reject\n    \
         ip6 saddr fd00:244:1::2 tcp dport 34345 reject with tcp reset\n    \
         ip saddr 10.244.1.3 tcp dport 34345 reject with icmpx type admin-prohibited\n  }\n}\n",
    );
    let through_input = vec![
        probe("x/a", ip("192.168.100.1"), 34345, Protocol::Tcp),
        probe("x/a", ip("fd00:192:168:100::1"), 34347, Protocol::Udp),
        probe("x/a", ip("192.168.100.1"), 34347, Protocol::Udp),
        probe("x/a", ip("fd00:192:168:100::1"), 34345, Protocol::Tcp),
        probe("x/b", ip("192.168.100.1"), 34345, Protocol::Tcp),
        // From the other node: node-1's input sees y/d's address, which none of the rules name.
        probe("y/d", ip("192.168.100.1"), 34347, Protocol::Udp),
    ];
    assert_eq!(
        met(&lab, &through_input),
        vec![TimedOut, TimedOut, Refused, Refused, Unreachable, Reached]
    );
    // probe_all says whether the connection was made.
    assert_eq!(
        lab.probe_all(&through_input[4..], TIMEOUT)
            .into_iter()
            .map(|r| r.expect("runs"))
            .collect::<Vec<_>>(),
        vec![false, true]
    );
    lab.teardown().expect("teardown");
}

#[test]
fn lab_full_mesh_tcp_udp_v4_v6() {
    if !kernel_available("lab_full_mesh_tcp_udp_v4_v6") {
        return;
    }
    let spec = small_spec();
    let lab = Lab::create(&spec).expect("lab");
    let mut probes = Vec::new();
    for from in &spec.pods {
        for to in &spec.pods {
            for to_ip in &to.ips {
                if !from.ips.iter().any(|i| i.is_ipv4() == to_ip.is_ipv4()) {
                    continue;
                }
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    probes.push(probe(&from.id, *to_ip, 80, protocol));
                }
                probes.push(probe(&from.id, *to_ip, 81, Protocol::Tcp));
            }
        }
    }
    let start = Instant::now();
    let results = outcomes(&lab, &probes);
    let elapsed = start.elapsed();
    for (p, ok) in probes.iter().zip(&results) {
        assert!(ok, "should be reachable: {p:?}");
    }
    eprintln!("{} allowed probes in {elapsed:?}", probes.len());
    for p in [
        probe("x/a", ip("10.244.2.2"), 80, Protocol::Tcp),
        probe("x/a", ip("fd00:244:2::3"), 80, Protocol::Udp),
    ] {
        let start = Instant::now();
        assert_eq!(outcomes(&lab, std::slice::from_ref(&p)), vec![true]);
        eprintln!("one allowed probe {:?}: {:?}", p.protocol, start.elapsed());
    }

    // Cross-node traffic keeps the pod source address: node-2 can filter on it.
    load_nft(
        lab.node_netns("node-2").expect("node-2"),
        "table inet t {\n  chain f {\n    type filter hook forward priority filter;\n    \
         ip saddr 10.244.1.2 ip daddr 10.244.2.2 tcp dport 80 drop\n    \
         ip6 saddr fd00:244:1::2 ip6 daddr fd00:244:2::3 udp dport 80 drop\n  }\n}\n",
    );
    let filtered = vec![
        probe("x/a", ip("10.244.2.2"), 80, Protocol::Tcp),
        probe("x/a", ip("fd00:244:2::3"), 80, Protocol::Udp),
        probe("x/b", ip("10.244.2.2"), 80, Protocol::Tcp),
        probe("x/a", ip("10.244.2.2"), 81, Protocol::Tcp),
    ];
    assert_eq!(outcomes(&lab, &filtered), vec![false, false, true, true]);
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    lab.teardown().expect("teardown");
}

#[test]
fn lab_closed_ports_and_unreachable_addresses_are_false() {
    if !kernel_available("lab_closed_ports_and_unreachable_addresses_are_false") {
        return;
    }
    let lab = Lab::create(&small_spec()).expect("lab");
    let probes = vec![
        probe("x/a", ip("10.244.2.2"), 82, Protocol::Tcp),
        probe("x/a", ip("10.244.2.2"), 82, Protocol::Udp),
        probe("x/a", ip("fd00:244:2::3"), 82, Protocol::Tcp),
        probe("x/a", ip("fd00:244:2::3"), 82, Protocol::Udp),
        probe("x/a", ip("10.244.1.3"), 82, Protocol::Tcp),
        probe("x/a", ip("10.99.0.1"), 80, Protocol::Tcp),
        probe("x/a", ip("10.99.0.1"), 80, Protocol::Udp),
        probe("x/a", ip("fd00:99::1"), 80, Protocol::Tcp),
    ];
    let start = Instant::now();
    let results = outcomes(&lab, &probes);
    let elapsed = start.elapsed();
    assert_eq!(results, vec![false; probes.len()]);
    assert!(elapsed < TIMEOUT * 3, "{elapsed:?}");

    // Errors: probes the lab cannot run.
    let bad = vec![
        probe("x/nope", ip("10.244.2.2"), 80, Protocol::Tcp),
        probe("x/b", ip("fd00:244:2::3"), 80, Protocol::Tcp),
        probe("x/a", ip("10.244.2.2"), 81, Protocol::Sctp),
    ];
    // A new policy denies UDP flows that were allowed a moment ago: the new probes are not taken for
    // the conntrack entries of the old ones (`ct state established accept` comes first).
    let udp: Vec<Probe> = (0..200)
        .map(|_| probe("x/a", ip("10.244.2.2"), 80, Protocol::Udp))
        .collect();
    assert_eq!(outcomes(&lab, &udp), vec![true; udp.len()]);
    load_nft(
        lab.node_netns("node-2").expect("node-2"),
        "table inet t {\n  chain f {\n    type filter hook forward priority filter;\n    \
         ct state established,related accept\n    \
         ip saddr 10.244.1.2 ip daddr 10.244.2.2 udp dport 80 drop\n  }\n}\n",
    );
    assert_eq!(outcomes(&lab, &udp), vec![false; udp.len()]);

    let r = lab.probe_all(&bad, TIMEOUT);
    assert!(matches!(r[0], Err(LabError::UnknownPod(_))), "{:?}", r[0]);
    assert!(
        matches!(r[1], Err(LabError::NoAddress { family: 6, .. })),
        "{:?}",
        r[1]
    );
    assert!(matches!(r[2], Err(LabError::Unsupported(_))), "{:?}", r[2]);
    lab.teardown().expect("teardown");
}

fn web_service(cluster_v4: &str, backends: &[(&str, u16)]) -> ServiceSpec {
    let backends: Vec<(IpAddr, u16)> = backends.iter().map(|(a, p)| (ip(a), *p)).collect();
    ServiceSpec {
        name: "y/web".into(),
        cluster_ips: vec![ip(cluster_v4), ip("fd00:96::10")],
        ports: vec![
            ServicePort {
                port: 8080,
                protocol: Protocol::Tcp,
                backends: backends.clone(),
            },
            ServicePort {
                port: 8053,
                protocol: Protocol::Udp,
                backends: backends
                    .iter()
                    .map(|(a, p)| (*a, if *p == 80 { 80 } else { *p }))
                    .collect(),
            },
        ],
    }
}

#[test]
fn lab_services_are_dnated_before_the_forward_hook() {
    if !kernel_available("lab_services_are_dnated_before_the_forward_hook") {
        return;
    }
    let mut spec = small_spec();
    // 10.96.0.10 → c:80 (node-2); fd00:96::10 → d:80 (node-2).
    spec.services = vec![web_service(
        "10.96.0.10",
        &[("10.244.2.2", 80), ("fd00:244:2::3", 80)],
    )];
    let lab = Lab::create(&spec).expect("lab");
    let cip4 = ip("10.96.0.10");
    let cip6 = ip("fd00:96::10");
    let through_service = vec![
        probe("x/a", cip4, 8080, Protocol::Tcp), // cross-node
        probe("x/a", cip4, 8053, Protocol::Udp),
        probe("x/a", cip6, 8080, Protocol::Tcp),
        probe("x/a", cip6, 8053, Protocol::Udp),
        probe("y/d", cip4, 8080, Protocol::Tcp), // same node
        probe("y/c", cip4, 8080, Protocol::Tcp), // hairpin: c reaches itself
        probe("y/c", cip4, 8053, Protocol::Udp),
        probe("y/d", cip6, 8080, Protocol::Tcp),
    ];
    assert_eq!(
        outcomes(&lab, &through_service),
        vec![true; through_service.len()]
    );
    // Not a service port: not DNATed, and the node has no route to cluster IPs.
    assert_eq!(
        outcomes(&lab, &[probe("x/a", cip4, 9999, Protocol::Tcp)]),
        vec![false]
    );

    // A forward-hook filter in node-1 sees the backend address and target port.
    let node1 = lab.node_netns("node-1").expect("node-1");
    load_nft(
        node1,
        "table inet t {\n  chain f {\n    type filter hook forward priority filter;\n    \
         ip daddr 10.244.2.2 tcp dport 80 drop\n  }\n}\n",
    );
    let start = Instant::now();
    let dropped = outcomes(&lab, &[probe("x/a", cip4, 8080, Protocol::Tcp)]);
    let drop_latency = start.elapsed();
    assert_eq!(dropped, vec![false]);
    assert!(
        drop_latency >= TIMEOUT && drop_latency < TIMEOUT * 2,
        "{drop_latency:?}"
    );
    let start = Instant::now();
    let others = vec![
        probe("x/a", ip("10.244.2.2"), 80, Protocol::Tcp), // direct: dropped too
        probe("x/a", cip4, 8053, Protocol::Udp),           // UDP: allowed
        probe("x/a", cip6, 8080, Protocol::Tcp),           // other backend: allowed
        probe("y/d", cip4, 8080, Protocol::Tcp),           // not through node-1: allowed
    ];
    assert_eq!(outcomes(&lab, &others), vec![false, true, true, true]);
    eprintln!("drop {drop_latency:?}, mixed batch {:?}", start.elapsed());

    // Reprogram: the cluster IP now goes to a and b (node-1, random between them); the filter in
    // node-1 no longer matches.
    lab.set_services(&[web_service(
        "10.96.0.10",
        &[("10.244.1.2", 80), ("10.244.1.3", 80)],
    )])
    .expect("set_services");
    let many: Vec<Probe> = (0..20)
        .map(|_| probe("y/c", cip4, 8080, Protocol::Tcp))
        .collect();
    assert_eq!(outcomes(&lab, &many), vec![true; many.len()]);
    // The IPv6 cluster IP lost its backend: no DNAT, unreachable.
    assert_eq!(
        outcomes(&lab, &[probe("x/a", cip6, 8080, Protocol::Tcp)]),
        vec![false]
    );
    lab.set_services(&[]).expect("set_services");
    assert_eq!(
        outcomes(&lab, &[probe("y/c", cip4, 8080, Protocol::Tcp)]),
        vec![false]
    );
    lab.teardown().expect("teardown");
}

#[test]
fn lab_two_at_once() {
    if !kernel_available("lab_two_at_once") {
        return;
    }
    let spec = small_spec();
    let run = || {
        let lab = Lab::create(&spec).expect("lab");
        let probes = vec![
            probe("x/a", ip("10.244.2.2"), 80, Protocol::Tcp),
            probe("y/d", ip("fd00:244:1::2"), 80, Protocol::Udp),
        ];
        assert_eq!(outcomes(&lab, &probes), vec![true, true]);
        lab
    };
    let (one, two) = std::thread::scope(|s| {
        let one = s.spawn(run);
        let two = s.spawn(run);
        (one.join().expect("one"), two.join().expect("two"))
    });
    assert_ne!(one.prefix(), two.prefix());
    assert_ne!(one.pod_netns("x/a"), two.pod_netns("x/a"));
    let prefix = one.prefix().to_string();
    one.teardown().expect("teardown");
    assert!(netns_with_prefix(&prefix).is_empty());
    // The other lab is unaffected.
    assert_eq!(
        outcomes(&two, &[probe("x/b", ip("10.244.2.3"), 81, Protocol::Tcp)]),
        vec![true]
    );
    let prefix = two.prefix().to_string();
    drop(two);
    assert!(netns_with_prefix(&prefix).is_empty());
}

#[test]
fn lab_teardown_removes_every_namespace_even_on_panic() {
    if !kernel_available("lab_teardown_removes_every_namespace_even_on_panic") {
        return;
    }
    let spec = small_spec();
    let lab = Lab::create(&spec).expect("lab");
    let prefix = lab.prefix().to_string();
    // fabric + 2 nodes + 4 pods
    assert_eq!(netns_with_prefix(&prefix).len(), 7);
    assert!(lab
        .node_netns("node-2")
        .is_some_and(|n| n.starts_with(&prefix)));
    assert!(lab.pod_netns("y/c").is_some_and(|n| n.starts_with(&prefix)));
    assert_eq!(lab.node_netns("node-3"), None);
    // Sysctls landed in the namespaces, seen by another tool.
    let sysctl = |netns: &str, key: &str| {
        let path = format!("/proc/sys/{key}");
        let out =
            process::run("ip", &["netns", "exec", netns, "cat", &path], "").expect("ip netns exec");
        out.stdout.trim().to_string()
    };
    let node = lab.node_netns("node-1").expect("node");
    let pod = lab.pod_netns("x/a").expect("pod");
    assert_eq!(sysctl(node, "net/ipv4/ip_forward"), "1");
    assert_eq!(sysctl(node, "net/ipv6/conf/all/forwarding"), "1");
    assert_eq!(sysctl(node, "net/ipv4/conf/p0/rp_filter"), "0");
    assert_eq!(sysctl(pod, "net/ipv4/ip_forward"), "0");
    assert_eq!(sysctl(pod, "net/ipv6/conf/eth0/accept_dad"), "0");
    lab.teardown().expect("teardown");
    assert!(netns_with_prefix(&prefix).is_empty());

    let seen = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::create(&spec).expect("lab");
        *seen.lock().expect("lock") = lab.prefix().to_string();
        assert_eq!(netns_with_prefix(lab.prefix()).len(), 7);
        panic!("deliberate panic with a live lab");
    });
    assert!(result.is_err());
    let prefix = seen.lock().expect("lock").clone();
    assert!(!prefix.is_empty());
    assert!(netns_with_prefix(&prefix).is_empty());
    assert!(!live_labs().contains(&prefix));
}

thread_local! {
    /// Makes `Lab::create` on this thread fail after building the links (fault injection).
    pub(super) static FAIL_BUILD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[test]
fn lab_failed_creation_leaves_nothing() {
    if !kernel_available("lab_failed_creation_leaves_nothing") {
        return;
    }
    FAIL_BUILD.with(|f| f.set(true));
    let result = Lab::create(&small_spec());
    FAIL_BUILD.with(|f| f.set(false));
    let e = result.expect_err("injected failure").to_string();
    let prefix = e
        .split_whitespace()
        .find(|w| w.starts_with(NETNS_PREFIX))
        .unwrap_or_else(|| panic!("no prefix in {e}"))
        .to_string();
    assert!(netns_with_prefix(&prefix).is_empty());
    assert!(!live_labs().contains(&prefix));
}

#[test]
fn lab_nine_pods_two_nodes_timing() {
    if !kernel_available("lab_nine_pods_two_nodes_timing") {
        return;
    }
    let mut pods = Vec::new();
    for (i, ns) in ["x", "y", "z"].iter().enumerate() {
        for (j, name) in ["a", "b", "c"].iter().enumerate() {
            let n = i * 3 + j;
            pods.push(pod(
                &format!("{ns}/{name}"),
                if n % 2 == 0 { "node-1" } else { "node-2" },
                &[&format!("10.244.{}.{}", n % 2 + 1, n + 10)],
                &[
                    (80, Protocol::Tcp),
                    (81, Protocol::Tcp),
                    (80, Protocol::Udp),
                    (81, Protocol::Udp),
                ],
            ));
        }
    }
    let spec = LabSpec {
        nodes: vec!["node-1".into(), "node-2".into()],
        pods,
        services: vec![],
    };
    let start = Instant::now();
    let lab = Lab::create(&spec).expect("lab");
    let created = start.elapsed();
    let mut probes = Vec::new();
    for from in &spec.pods {
        for to in &spec.pods {
            for (port, protocol) in [
                (80, Protocol::Tcp),
                (81, Protocol::Tcp),
                (80, Protocol::Udp),
                (81, Protocol::Udp),
            ] {
                probes.push(probe(&from.id, to.ips[0], port, protocol));
            }
        }
    }
    let start = Instant::now();
    let results = outcomes(&lab, &probes);
    let probed = start.elapsed();
    assert_eq!(results, vec![true; probes.len()]);
    let prefix = lab.prefix().to_string();
    let start = Instant::now();
    lab.teardown().expect("teardown");
    let torn_down = start.elapsed();
    assert!(netns_with_prefix(&prefix).is_empty());
    eprintln!(
        "9 pods / 2 nodes: create {created:?}, {} probes {probed:?}, teardown {torn_down:?}",
        probes.len()
    );
    assert!(created < Duration::from_secs(5), "{created:?}");
    assert!(torn_down < Duration::from_secs(5), "{torn_down:?}");
}

#[test]
fn lab_clean_leftovers_removes_dead_runs_only() {
    if !kernel_available("lab_clean_leftovers_removes_dead_runs_only") {
        return;
    }
    // A pid above the kernel's limit (4194304) can never be alive.
    let dead = "nplab4194999x0-n0-fake";
    let alive = format!("nplab{}x999999-n0-fake", std::process::id());
    let other = "nplabnotours-fake";
    cmd::add_netns(&[dead, alive.as_str(), other]).expect("ip netns add");
    let removed = clean_leftovers().expect("clean_leftovers");
    let remaining = netns_with_prefix("nplab");
    for name in [alive.as_str(), other] {
        let _ = process::run("ip", &["netns", "del", name], "");
    }
    assert!(removed.contains(&dead.to_string()), "{removed:?}");
    assert!(!removed.contains(&alive), "{removed:?}");
    assert!(!removed.iter().any(|n| n == other), "{removed:?}");
    assert!(!remaining.contains(&dead.to_string()));
    assert!(remaining.contains(&alive));
}

/// Not a test on its own: the child process of `lab_signal_removes_namespaces`.
#[test]
#[ignore = "run by lab_signal_removes_namespaces"]
fn lab_signal_child() {
    if std::env::var("NPLAB_SIGNAL_CHILD").as_deref() != Ok("1") {
        return;
    }
    let lab = Lab::create(&small_spec()).expect("lab");
    println!("PREFIX={}", lab.prefix());
    std::thread::sleep(Duration::from_secs(30));
    drop(lab);
}

#[test]
fn lab_signal_removes_namespaces() {
    if !kernel_available("lab_signal_removes_namespaces") {
        return;
    }
    use std::io::BufRead;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "lab::tests::lab_signal_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("NPLAB_SIGNAL_CHILD", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("stdout");
        let prefix = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split("PREFIX=").nth(1).map(|p| p.trim().to_string()))
            .expect("the child prints its prefix");
        assert_eq!(netns_with_prefix(&prefix).len(), 7);
        // SAFETY: kill with a valid signal on our own child's pid.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0);
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(130), "{status}");
        assert!(netns_with_prefix(&prefix).is_empty(), "signal {signal}");
    }
}
