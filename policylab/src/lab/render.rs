//! The lab as data: names, addresses and the `ip -batch` scripts and nft ruleset that build it. Pure, so
//! it is tested without root.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{LabError, LabSpec, NodeSpec, PodSpec, Protocol, ServiceSpec};

/// The pods' IPv4 gateway, on every node-side pod veth.
pub(super) const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 gateway, on every node-side pod veth.
pub(super) const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The fabric's IPv4 network (RFC 2544 benchmarking space): node `i` is `198.18.0.0 + i + 1`.
const FABRIC_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 16);
/// The fabric's IPv6 network: node `i` is `fd6e:706c:6162::(i + 1)`.
const FABRIC_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd6e, 0x706c, 0x6162, 0, 0, 0, 0, 0), 64);
/// The name of the Service NAT tables (`ip` and `ip6`) in every node.
pub(super) const NAT_TABLE: &str = "policylab_nat";

/// Every namespace: addresses are usable at once (no duplicate address detection).
pub(super) const FABRIC_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
];

/// Pods: no DAD, no reverse-path filter, no redirects.
pub(super) const POD_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv4/conf/all/accept_redirects", "0"),
    ("net/ipv4/conf/default/accept_redirects", "0"),
    ("net/ipv6/conf/all/accept_redirects", "0"),
    ("net/ipv6/conf/default/accept_redirects", "0"),
    ("net/ipv6/bindv6only", "0"),
];

/// Nodes: routers (forwarding on), no DAD, no reverse-path filter, no redirects.
pub(super) const NODE_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv4/conf/all/send_redirects", "0"),
    ("net/ipv4/conf/default/send_redirects", "0"),
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
];

/// A node of the lab.
#[derive(Debug, Clone)]
pub(super) struct NodeLayout {
    pub name: String,
    pub netns: String,
    /// Its own addresses (on `lo`).
    pub ips: Vec<IpAddr>,
    /// The ports served on each of `ips`.
    pub ports: Vec<(u16, Protocol)>,
}

/// A pod of the lab.
#[derive(Debug, Clone)]
pub(super) struct PodLayout {
    pub id: String,
    pub netns: String,
    /// Index into [`Layout::nodes`].
    pub node: usize,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<(u16, Protocol)>,
}

/// Names and addresses of every part of a lab.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub fabric: String,
    pub nodes: Vec<NodeLayout>,
    pub pods: Vec<PodLayout>,
}

/// Ports sorted, without repeats.
fn sorted(ports: &[(u16, Protocol)]) -> Vec<(u16, Protocol)> {
    let mut ports = ports.to_vec();
    ports.sort();
    ports.dedup();
    ports
}

/// A string usable in a namespace name: `[A-Za-z0-9._-]`, at most 40 characters.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

/// A locally administered unicast MAC address: `02:<kind>:00:<index>`.
fn mac(kind: u8, index: usize) -> String {
    let i = index as u32;
    format!(
        "02:{kind:02x}:00:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

const MAC_POD: u8 = 0xaa;
const MAC_NODE_POD_SIDE: u8 = 0xbb;
const MAC_NODE_FABRIC: u8 = 0xcc;
const MAC_FABRIC_PORT: u8 = 0xdd;

/// The fabric address of node `i` in the family of `v4`.
fn fabric_addr(i: usize, v4: bool) -> IpAddr {
    let n = i as u32 + 1;
    if v4 {
        IpAddr::V4(Ipv4Addr::from(u32::from(FABRIC_V4.0) + n))
    } else {
        IpAddr::V6(Ipv6Addr::from(u128::from(FABRIC_V6.0) + u128::from(n)))
    }
}

fn host_len(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn in_net(ip: &IpAddr, v4: (Ipv4Addr, u8), v6: (Ipv6Addr, u8)) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(v4.1)).unwrap_or(0);
            u32::from(*a) & mask == u32::from(v4.0) & mask
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(v6.1)).unwrap_or(0);
            u128::from(*a) & mask == u128::from(v6.0) & mask
        }
    }
}

/// Addresses the lab uses itself, or that cannot be a pod's or a Service's.
fn reserved(ip: &IpAddr) -> Option<&'static str> {
    if in_net(ip, FABRIC_V4, FABRIC_V6) {
        return Some("in the lab's fabric network (198.18.0.0/16, fd6e:706c:6162::/64)");
    }
    if in_net(
        ip,
        (Ipv4Addr::new(169, 254, 0, 0), 16),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    ) {
        return Some("link-local (the lab's gateways are 169.254.1.1 and fe80::1)");
    }
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Some("unspecified, loopback or multicast");
    }
    if let IpAddr::V4(a) = ip {
        if a.is_broadcast() {
            return Some("broadcast");
        }
    }
    None
}

/// Checks the nodes and pods of a spec.
pub(super) fn validate(spec: &LabSpec) -> Result<(), LabError> {
    let bad = |m: String| Err(LabError::InvalidSpec(m));
    if spec.nodes.is_empty() {
        return bad("the lab has no node".to_string());
    }
    if spec.nodes.len() > 60_000 {
        return bad(format!(
            "{} nodes is too many (at most 60000)",
            spec.nodes.len()
        ));
    }
    let mut nodes = BTreeSet::new();
    let mut owners: BTreeMap<IpAddr, String> = BTreeMap::new();
    for n in &spec.nodes {
        if !nodes.insert(n.name.as_str()) {
            return bad(format!("node `{}` is listed twice", n.name));
        }
        validate_node(n)?;
        for ip in &n.ips {
            if let Some(other) = owners.insert(*ip, format!("node `{}`", n.name)) {
                return bad(format!("{other} and node `{}` both have {ip}", n.name));
            }
        }
    }
    let mut ids = BTreeSet::new();
    for p in &spec.pods {
        if !ids.insert(p.id.as_str()) {
            return bad(format!("pod `{}` is listed twice", p.id));
        }
        if !nodes.contains(p.node.as_str()) {
            return bad(format!(
                "pod `{}` is on node `{}`, which is not in the nodes ({})",
                p.id,
                p.node,
                spec.nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        validate_pod_ips(p)?;
        for ip in &p.ips {
            if let Some(other) = owners.insert(*ip, format!("pod `{}`", p.id)) {
                return bad(format!("{other} and pod `{}` both have {ip}", p.id));
            }
        }
        if let Some((port, proto)) = p.ports.iter().find(|(port, _)| *port == 0) {
            return bad(format!("pod `{}` has port {port}/{proto}", p.id));
        }
    }
    Ok(())
}

fn validate_node(n: &NodeSpec) -> Result<(), LabError> {
    let bad = |m: String| Err(LabError::InvalidSpec(m));
    for ip in &n.ips {
        if let Some(why) = reserved(ip) {
            return bad(format!("node `{}` has {ip}, which is {why}", n.name));
        }
    }
    if let Some((port, proto)) = n.ports.iter().find(|(port, _)| *port == 0) {
        return bad(format!("node `{}` has port {port}/{proto}", n.name));
    }
    Ok(())
}

fn validate_pod_ips(p: &PodSpec) -> Result<(), LabError> {
    let bad = |m: String| Err(LabError::InvalidSpec(m));
    if p.ips.is_empty() {
        return bad(format!("pod `{}` has no IP", p.id));
    }
    for v4 in [true, false] {
        if p.ips.iter().filter(|ip| ip.is_ipv4() == v4).count() > 1 {
            return bad(format!(
                "pod `{}` has more than one IPv{} address (one per family)",
                p.id,
                if v4 { 4 } else { 6 }
            ));
        }
    }
    for ip in &p.ips {
        if let Some(why) = reserved(ip) {
            return bad(format!("pod `{}` has {ip}, which is {why}", p.id));
        }
    }
    Ok(())
}

/// Checks Services against the addresses of the pods and nodes.
pub(super) fn validate_services(
    own_ips: &BTreeSet<IpAddr>,
    services: &[ServiceSpec],
) -> Result<(), LabError> {
    let bad = |m: String| Err(LabError::InvalidSpec(m));
    for s in services {
        for ip in &s.cluster_ips {
            if let Some(why) = reserved(ip) {
                return bad(format!(
                    "service `{}` has cluster IP {ip}, which is {why}",
                    s.name
                ));
            }
            if own_ips.contains(ip) {
                return bad(format!(
                    "service `{}` has cluster IP {ip}, which is a pod's or a node's address",
                    s.name
                ));
            }
        }
        for p in &s.ports {
            if p.port == 0 {
                return bad(format!("service `{}` has port 0", s.name));
            }
            for (ip, target) in &p.backends {
                if *target == 0 {
                    return bad(format!(
                        "service `{}` port {}/{} has backend {ip} with target port 0",
                        s.name, p.port, p.protocol
                    ));
                }
                if !s.cluster_ips.iter().any(|c| c.is_ipv4() == ip.is_ipv4()) {
                    return bad(format!(
                        "service `{}` port {}/{} has backend {ip}, but no cluster IP of its family",
                        s.name, p.port, p.protocol
                    ));
                }
            }
        }
    }
    Ok(())
}

impl Layout {
    /// Names every namespace of a lab with `prefix`. The spec must be valid.
    pub(super) fn new(prefix: &str, spec: &LabSpec) -> Layout {
        let nodes: Vec<NodeLayout> = spec
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| NodeLayout {
                name: node.name.clone(),
                netns: format!("{prefix}n{i}-{}", sanitize(&node.name)),
                ips: node.ips.clone(),
                ports: sorted(&node.ports),
            })
            .collect();
        let pods = spec
            .pods
            .iter()
            .enumerate()
            .map(|(j, p)| PodLayout {
                id: p.id.clone(),
                netns: format!("{prefix}p{j}-{}", sanitize(&p.id)),
                node: nodes.iter().position(|n| n.name == p.node).unwrap_or(0),
                ips: p.ips.clone(),
                ports: sorted(&p.ports),
            })
            .collect();
        Layout {
            fabric: format!("{prefix}fabric"),
            nodes,
            pods,
        }
    }

    /// Every address of a pod or a node (which no Service may have).
    pub(super) fn own_ips(&self) -> BTreeSet<IpAddr> {
        self.pods
            .iter()
            .flat_map(|p| p.ips.iter().copied())
            .chain(self.nodes.iter().flat_map(|n| n.ips.iter().copied()))
            .collect()
    }

    /// The fabric: a bridge, and one veth per node whose peer `fab0` is created in the node.
    pub(super) fn fabric_script(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "link set lo up");
        let _ = writeln!(
            s,
            "link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
        );
        let _ = writeln!(s, "link set br0 up");
        for (i, node) in self.nodes.iter().enumerate() {
            let _ = writeln!(
                s,
                "link add n{i} address {} type veth peer name fab0 address {} netns {}",
                mac(MAC_FABRIC_PORT, i),
                mac(MAC_NODE_FABRIC, i),
                node.netns
            );
            let _ = writeln!(s, "link set n{i} master br0 up");
        }
        s
    }

    /// Pod `j`: `eth0` (its peer `p<j>` created in the node), addresses, default routes through the
    /// gateways with permanent neighbour entries.
    pub(super) fn pod_script(&self, j: usize) -> String {
        let pod = &self.pods[j];
        let node = &self.nodes[pod.node];
        let gw_mac = mac(MAC_NODE_POD_SIDE, j);
        let mut s = String::new();
        let _ = writeln!(s, "link set lo up");
        let _ = writeln!(
            s,
            "link add eth0 address {} type veth peer name p{j} address {gw_mac} netns {}",
            mac(MAC_POD, j),
            node.netns
        );
        for ip in &pod.ips {
            let nodad = if ip.is_ipv6() { " nodad" } else { "" };
            let _ = writeln!(s, "addr add {ip}/{} dev eth0{nodad}", host_len(ip));
        }
        let _ = writeln!(s, "link set eth0 up");
        if pod.ips.iter().any(IpAddr::is_ipv4) {
            let _ = writeln!(s, "route add 0.0.0.0/0 via {GATEWAY_V4} dev eth0 onlink");
            let _ = writeln!(
                s,
                "neigh replace {GATEWAY_V4} lladdr {gw_mac} dev eth0 nud permanent"
            );
        }
        if pod.ips.iter().any(IpAddr::is_ipv6) {
            let _ = writeln!(s, "route add ::/0 via {GATEWAY_V6} dev eth0");
            let _ = writeln!(
                s,
                "neigh replace {GATEWAY_V6} lladdr {gw_mac} dev eth0 nud permanent"
            );
        }
        s
    }

    /// Node `i`: its own addresses on `lo`, its fabric address and neighbours, the gateways on its
    /// pods' veths, a route to each local pod through its veth, and to each remote pod and remote
    /// node address through the remote node's fabric address.
    pub(super) fn node_script(&self, i: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "link set lo up");
        for ip in &self.nodes[i].ips {
            let nodad = if ip.is_ipv6() { " nodad" } else { "" };
            let _ = writeln!(s, "addr add {ip}/{} dev lo{nodad}", host_len(ip));
        }
        let _ = writeln!(s, "link set fab0 up");
        let _ = writeln!(
            s,
            "addr add {}/{} dev fab0",
            fabric_addr(i, true),
            FABRIC_V4.1
        );
        let _ = writeln!(
            s,
            "addr add {}/{} dev fab0 nodad",
            fabric_addr(i, false),
            FABRIC_V6.1
        );
        for k in (0..self.nodes.len()).filter(|&k| k != i) {
            for v4 in [true, false] {
                let _ = writeln!(
                    s,
                    "neigh replace {} lladdr {} dev fab0 nud permanent",
                    fabric_addr(k, v4),
                    mac(MAC_NODE_FABRIC, k)
                );
            }
            for ip in &self.nodes[k].ips {
                let _ = writeln!(
                    s,
                    "route add {ip}/{} via {} dev fab0",
                    host_len(ip),
                    fabric_addr(k, ip.is_ipv4())
                );
            }
        }
        for (j, pod) in self.pods.iter().enumerate() {
            if pod.node == i {
                let _ = writeln!(s, "link set p{j} up");
                let _ = writeln!(s, "addr add {GATEWAY_V4}/32 dev p{j}");
                let _ = writeln!(s, "addr add {GATEWAY_V6}/64 dev p{j} nodad");
                for ip in &pod.ips {
                    let _ = writeln!(s, "route add {ip}/{} dev p{j}", host_len(ip));
                    let _ = writeln!(
                        s,
                        "neigh replace {ip} lladdr {} dev p{j} nud permanent",
                        mac(MAC_POD, j)
                    );
                }
            } else {
                for ip in &pod.ips {
                    let _ = writeln!(
                        s,
                        "route add {ip}/{} via {} dev fab0",
                        host_len(ip),
                        fabric_addr(pod.node, ip.is_ipv4())
                    );
                }
            }
        }
        s
    }
}

/// An nft comment: no quotes or backslashes, at most 100 characters.
fn comment(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .take(100)
        .collect()
}

/// The Service NAT of a node, as one `nft -f` transaction that replaces `table ip policylab_nat` and
/// `table ip6 policylab_nat` atomically. Each cluster IP and port is DNATed to a backend of its family
/// (chosen at random among several); a pod reaching itself through a Service is masqueraded, as
/// kube-proxy does, so that the reply comes back through the node.
pub(super) fn nat_ruleset(services: &[ServiceSpec]) -> String {
    let mut out = String::new();
    for v4 in [true, false] {
        let (family, addr) = if v4 { ("ip", "ip") } else { ("ip6", "ip6") };
        let mut pre = String::new();
        let mut hairpin: BTreeSet<IpAddr> = BTreeSet::new();
        for s in services {
            for cip in s.cluster_ips.iter().filter(|ip| ip.is_ipv4() == v4) {
                for p in &s.ports {
                    let backends: Vec<&(IpAddr, u16)> = p
                        .backends
                        .iter()
                        .filter(|(ip, _)| ip.is_ipv4() == v4)
                        .collect();
                    let proto = p.protocol.as_nft();
                    let c = comment(&format!("{} {}/{}", s.name, p.port, p.protocol));
                    let target = match backends.as_slice() {
                        [] => continue,
                        [(ip, port)] => match ip {
                            IpAddr::V4(a) => format!("dnat to {a}:{port}"),
                            IpAddr::V6(a) => format!("dnat to [{a}]:{port}"),
                        },
                        many => {
                            let elements: Vec<String> = many
                                .iter()
                                .enumerate()
                                .map(|(k, (ip, port))| format!("{k} : {ip} . {port}"))
                                .collect();
                            format!(
                                "dnat {family} to numgen random mod {} map {{ {} }}",
                                many.len(),
                                elements.join(", ")
                            )
                        }
                    };
                    hairpin.extend(backends.iter().map(|(ip, _)| *ip));
                    let _ = writeln!(
                        pre,
                        "\t\t{addr} daddr {cip} {proto} dport {} {target} comment \"{c}\"",
                        p.port
                    );
                }
            }
        }
        let _ = writeln!(out, "table {family} {NAT_TABLE} {{}}");
        let _ = writeln!(out, "delete table {family} {NAT_TABLE}");
        let _ = writeln!(out, "table {family} {NAT_TABLE} {{");
        let _ = writeln!(out, "\tchain prerouting {{");
        let _ = writeln!(
            out,
            "\t\ttype nat hook prerouting priority dstnat; policy accept;"
        );
        out.push_str(&pre);
        let _ = writeln!(out, "\t}}");
        let _ = writeln!(out, "\tchain postrouting {{");
        let _ = writeln!(
            out,
            "\t\ttype nat hook postrouting priority srcnat; policy accept;"
        );
        for ip in hairpin {
            let _ = writeln!(
                out,
                "\t\tct status dnat {addr} saddr {ip} {addr} daddr {ip} masquerade comment \"hairpin\""
            );
        }
        let _ = writeln!(out, "\t}}");
        let _ = writeln!(out, "}}");
    }
    out
}
