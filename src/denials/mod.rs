//! Denials: the packets the ruleset's drop points logged through NFLOG (`--deny-log`), as records
//! that say who was denied what, by which policies.
//!
//! - [`Denial`] is one record (and its JSON, served at `/denials`);
//! - [`DenialContext`] resolves a logged packet: its prefix is the counter name of the drop point
//!   that logged it, whose [`policy_compiler::plan::Origin`] names the direction, the verdict and
//!   the policies; its addresses name pods;
//! - [`Denials`] records them: one `tracing` line each (target `nftpolicy::denial`), the last N
//!   kept for `/denials`, and the [`DenialMetrics`];
//! - [`reader`] is the thread that reads the NFLOG socket into them.

mod context;
mod metrics;
pub mod reader;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use policy_compiler::model::Direction;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::nflog::{self, TransportProtocol};

pub use context::{DenialContext, PodAddresses};
pub use metrics::{DenialLabels, DenialMetrics, LostLabels, LostReason};

/// The `tracing` target of denial lines.
pub const TRACING_TARGET: &str = "nftpolicy::denial";

/// What the ruleset did with a denied packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Dropped.
    Deny,
    /// Accepted, but the policies in audit mode would have dropped it.
    WouldDeny,
}

impl Verdict {
    /// `deny` or `would_deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would_deny",
        }
    }
}

/// One end of a denied packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub address: IpAddr,
    /// The pod that holds the address (`namespace/name`), if one does.
    pub pod: Option<String>,
}

impl Endpoint {
    /// The pod's `namespace/name`, else the address.
    pub fn name(&self) -> String {
        self.pod.clone().unwrap_or_else(|| self.address.to_string())
    }
}

/// One denial: a packet a drop point of the ruleset logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// When the packet was received (the kernel's stamp), else when its message was read.
    pub time: SystemTime,
    /// The direction of the drop point; `None` when its prefix is unknown.
    pub direction: Option<Direction>,
    /// Dropped, or would be; `None` when the prefix is unknown.
    pub verdict: Option<Verdict>,
    /// The source.
    pub src: Endpoint,
    /// The destination.
    pub dst: Endpoint,
    /// The transport protocol.
    pub protocol: TransportProtocol,
    /// The TCP, UDP or SCTP source port.
    pub src_port: Option<u16>,
    /// The TCP, UDP or SCTP destination port.
    pub dst_port: Option<u16>,
    /// The ICMP type.
    pub icmp_type: Option<u8>,
    /// The ICMP code.
    pub icmp_code: Option<u8>,
    /// For a ClusterNetworkPolicy Deny: its tier (`Admin`, `Baseline`).
    pub tier: Option<String>,
    /// The policies that denied it: NetworkPolicies as `namespace/name` (every policy isolating
    /// the pod in that direction: none of their rules allowed it), a ClusterNetworkPolicy by its
    /// name (with [`Denial::tier`]). `None` when the prefix is unknown.
    pub policies: Option<Vec<String>>,
    /// The log prefix: the counter name of the drop point.
    pub counter: String,
}

/// The JSON of a [`Denial`] (see the README).
#[derive(Serialize)]
struct DenialJson<'a> {
    time: String,
    direction: Option<&'static str>,
    verdict: Option<&'static str>,
    src: String,
    src_ip: IpAddr,
    dst: String,
    dst_ip: IpAddr,
    protocol: String,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    policies: Option<&'a [String]>,
    tier: Option<&'a str>,
    counter: &'a str,
}

impl Denial {
    /// The time in RFC 3339, UTC (`2024-05-01T12:00:00.25Z`).
    pub fn time_rfc3339(&self) -> String {
        jiff::Timestamp::try_from(self.time)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    fn json(&self) -> DenialJson<'_> {
        DenialJson {
            time: self.time_rfc3339(),
            direction: self.direction.map(Direction::as_str),
            verdict: self.verdict.map(Verdict::as_str),
            src: self.src.name(),
            src_ip: self.src.address,
            dst: self.dst.name(),
            dst_ip: self.dst.address,
            protocol: self.protocol.to_string(),
            src_port: self.src_port,
            dst_port: self.dst_port,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            policies: self.policies.as_deref(),
            tier: self.tier.as_deref(),
            counter: &self.counter,
        }
    }
}

impl Serialize for Denial {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json().serialize(serializer)
    }
}

/// The sequence numbers of one NFLOG group's messages, which the kernel numbers from 0 once the
/// group is bound with sequence numbers on: a gap is messages it built but could not deliver (an
/// overrun), or that arrived before the bind was acknowledged (and were not read).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequence {
    next: u32,
    unnumbered: bool,
}

impl Sequence {
    /// Notes `seq` and returns how many messages were lost before it.
    pub fn observe(&mut self, seq: u32) -> u64 {
        let lost = seq.wrapping_sub(self.next);
        self.next = seq.wrapping_add(1);
        // A number behind the expected one is not 4 billion losses: the numbering started again.
        if lost >= 1 << 31 {
            0
        } else {
            u64::from(lost)
        }
    }

    /// Notes a message without a sequence number (a kernel that ignored the flag): overruns are
    /// then counted as the socket reports them.
    pub fn unnumbered(&mut self) {
        self.unnumbered = true;
    }

    /// Whether gaps count the lost messages (every message so far had a number).
    pub fn counting(&self) -> bool {
        !self.unnumbered
    }
}

/// Where denials go: shared by the NFLOG reader (which records them), the agent (which brings the
/// context up to date after each sync) and the HTTP server (which serves the last ones).
#[derive(Debug)]
pub struct Denials {
    /// Read for each denial, written in place after each sync (under the lock: a reader never
    /// sees half an update). Its users go on past a poisoned lock: a context a panic left half
    /// updated names a pod or two wrongly, until the next full rebuild.
    context: RwLock<DenialContext>,
    recent: Mutex<VecDeque<Denial>>,
    capacity: usize,
    metrics: DenialMetrics,
}

/// After each sync the denials resolve against the committed ruleset's drop points and the
/// cluster's pods: the addresses of the pods that changed since the last commit are updated in
/// place, and only after a full compile or a list (when any pod may have changed) are they read
/// again from every pod, outside the lock (only with `--deny-log`).
impl crate::agent::CommitObserver for Denials {
    fn committed(
        &self,
        origins: &Arc<policy_compiler::plan::Origins>,
        cluster: &policy_compiler::ClusterState,
        changed: crate::agent::Changed<'_>,
    ) {
        match changed {
            crate::agent::Changed::All => {
                self.set_context(DenialContext::new(Arc::clone(origins), cluster))
            }
            crate::agent::Changed::Pods(pods) => self
                .context
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .update(
                    Arc::clone(origins),
                    cluster,
                    pods.iter().map(|(id, before)| (id, &**before)),
                ),
        }
    }
}

impl Denials {
    /// Keeps the last `capacity` denials, with an empty context until the first commit or
    /// [`Denials::set_context`] (every prefix unknown, no pods).
    pub fn new(capacity: usize) -> Self {
        Self {
            context: RwLock::new(DenialContext::default()),
            recent: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            metrics: DenialMetrics::default(),
        }
    }

    /// Registers the metrics (see [`DenialMetrics::register`]).
    pub fn register(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// The metrics.
    pub fn metrics(&self) -> &DenialMetrics {
        &self.metrics
    }

    /// Replaces the context: denials read from now on resolve against it. The one replaced is
    /// dropped after the lock is released.
    pub fn set_context(&self, context: DenialContext) {
        let replaced = std::mem::replace(
            &mut *self.context.write().unwrap_or_else(PoisonError::into_inner),
            context,
        );
        drop(replaced);
    }

    /// The pod (`namespace/name`) that the context in force names for `address`, if any.
    pub fn pod(&self, address: &IpAddr) -> Option<String> {
        self.context
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .pod(address)
            .map(ToString::to_string)
    }

    /// The denial a packet stands for, resolved against the context in force (its lock held for
    /// that only).
    fn resolve(&self, prefix: &str, headers: &nflog::PacketHeaders, time: SystemTime) -> Denial {
        self.context
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .resolve(prefix, headers, time)
    }

    /// The denials kept, oldest first.
    pub fn recent(&self) -> Vec<Denial> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Reads one NFLOG datagram received at `received` and records each packet it holds; `seq`
    /// follows the group's sequence numbers, to count messages lost in between.
    pub fn ingest(&self, datagram: &[u8], received: SystemTime, seq: &mut Sequence) {
        for packet in nflog::packets(datagram) {
            let packet = match packet {
                Ok(packet) => packet,
                Err(e) => {
                    tracing::debug!(error = %e, "unreadable NFLOG message");
                    self.metrics.lost(LostReason::Malformed, 1);
                    continue;
                }
            };
            match packet.seq {
                Some(n) => {
                    let lost = seq.observe(n);
                    if lost > 0 {
                        self.metrics.lost(LostReason::Overrun, lost);
                    }
                }
                None => seq.unnumbered(),
            }
            let headers = match nflog::packet::parse(&packet.payload, packet.hw_protocol) {
                Ok(headers) => headers,
                Err(e) => {
                    tracing::debug!(error = %e, prefix = ?packet.prefix, "unreadable logged packet");
                    self.metrics.lost(LostReason::Malformed, 1);
                    continue;
                }
            };
            let prefix = packet.prefix.as_deref().unwrap_or_default();
            let denial = self.resolve(prefix, &headers, packet.timestamp.unwrap_or(received));
            self.record(denial);
        }
    }

    /// Counts an overrun the socket reported: while messages carry sequence numbers, the gap the
    /// next one shows counts what was lost (the socket reports the overrun before the messages
    /// still queued); otherwise the overrun counts as one.
    pub fn overrun(&self, seq: &Sequence) {
        if !seq.counting() {
            self.metrics.lost(LostReason::Overrun, 1);
        }
    }

    /// Logs, counts and keeps one denial.
    pub fn record(&self, denial: Denial) {
        let policies = denial.policies.as_ref().map(|p| p.join(","));
        match (denial.direction, denial.verdict) {
            (Some(direction), Some(verdict)) => {
                self.metrics.denial(direction.as_str(), verdict.as_str())
            }
            _ => self.metrics.lost(LostReason::UnknownPrefix, 1),
        }
        tracing::info!(
            target: TRACING_TARGET,
            time = %denial.time_rfc3339(),
            direction = denial.direction.map(Direction::as_str),
            verdict = denial.verdict.map(Verdict::as_str),
            src = %denial.src.name(),
            src_ip = %denial.src.address,
            dst = %denial.dst.name(),
            dst_ip = %denial.dst.address,
            protocol = %denial.protocol,
            src_port = denial.src_port,
            dst_port = denial.dst_port,
            icmp_type = denial.icmp_type,
            icmp_code = denial.icmp_code,
            tier = denial.tier.as_deref(),
            policies = policies.as_deref(),
            counter = %denial.counter,
            "{}",
            match denial.verdict {
                Some(Verdict::Deny) => "denied",
                Some(Verdict::WouldDeny) => "would deny",
                None => "logged by an unknown drop point",
            }
        );
        if self.capacity == 0 {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == self.capacity {
            recent.pop_front();
        }
        recent.push_back(denial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nflog::message::tests::{datagram, done_message, packet_message};
    use crate::nflog::packet::{ETH_P_IP, ETH_P_IPV6};
    use policy_compiler::input::{parse_sources, Source};
    use policy_compiler::model::{Action, ObjectRef, Tier};
    use policy_compiler::plan::{Origin, Origins};
    use std::time::{Duration, UNIX_EPOCH};

    const CLUSTER: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: backend}
---
apiVersion: v1
kind: Pod
metadata: {name: worker-0, namespace: backend}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}, {ip: 'fd00::5'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: backend}
spec: {nodeName: node-2, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.244.2.7, podIPs: [{ip: 10.244.2.7}]}
---
apiVersion: v1
kind: Pod
metadata: {name: done-0, namespace: backend}
spec: {nodeName: node-2, containers: [{name: c, image: i}]}
status: {phase: Succeeded, podIP: 10.244.2.9, podIPs: [{ip: 10.244.2.9}]}
";

    fn origins() -> Origins {
        Origins::from([
            (
                "egress_Habc".to_string(),
                Origin::Isolation {
                    direction: Direction::Egress,
                    policies: vec![
                        ObjectRef::new("backend", "default-deny"),
                        ObjectRef::new("backend", "only-dns"),
                    ],
                    audit: false,
                },
            ),
            (
                "ingress_Haudit".to_string(),
                Origin::Isolation {
                    direction: Direction::Ingress,
                    policies: vec![ObjectRef::new("backend", "lockdown")],
                    audit: true,
                },
            ),
            (
                "admin_ingress_deny_db_0".to_string(),
                Origin::ClusterRule {
                    tier: Tier::Admin,
                    policy: "deny-db".to_string(),
                    direction: Direction::Ingress,
                    index: 0,
                    rule_name: Some("no-db".to_string()),
                    action: Action::Deny,
                    audit: false,
                },
            ),
            (
                "np_backend_allow_0".to_string(),
                Origin::PolicyRule {
                    policy: ObjectRef::new("backend", "allow"),
                    direction: Direction::Egress,
                    index: 0,
                    audit: false,
                },
            ),
        ])
    }

    fn context() -> DenialContext {
        let cluster = parse_sources(&[Source {
            name: "t.yaml".into(),
            text: CLUSTER.into(),
        }])
        .expect("valid")
        .cluster;
        DenialContext::new(std::sync::Arc::new(origins()), &cluster)
    }

    /// A UDP/IPv4 packet from `src`:40000 to `dst`:53.
    fn udp4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend(src);
        p.extend(dst);
        p.extend([0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
        p
    }

    /// An ICMPv6 echo request from `src` to `dst`.
    fn ping6(src: &str, dst: &str) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
        p.extend(src.parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend(dst.parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend([128, 0, 0, 0, 0, 1, 0, 1]);
        p
    }

    const T: u64 = 1_714_564_800; // 2024-05-01T12:00:00Z

    fn ingest_one(denials: &Denials, message: Vec<u8>) {
        denials.ingest(
            &datagram(&[message]),
            UNIX_EPOCH + Duration::from_secs(T),
            &mut Sequence::default(),
        );
    }

    #[test]
    fn a_prefix_names_the_drop_point_and_addresses_name_pods() {
        let ctx = context();
        let headers = nflog::packet::parse(&udp4([10, 244, 1, 5], [10, 96, 0, 10]), None).unwrap();
        let time = UNIX_EPOCH + Duration::from_secs(T);
        assert_eq!(
            ctx.resolve("egress_Habc", &headers, time),
            Denial {
                time,
                direction: Some(Direction::Egress),
                verdict: Some(Verdict::Deny),
                src: Endpoint {
                    address: "10.244.1.5".parse().unwrap(),
                    pod: Some("backend/worker-0".into())
                },
                dst: Endpoint {
                    address: "10.96.0.10".parse().unwrap(),
                    pod: None
                },
                protocol: TransportProtocol::Udp,
                src_port: Some(40000),
                dst_port: Some(53),
                icmp_type: None,
                icmp_code: None,
                tier: None,
                policies: Some(vec![
                    "backend/default-deny".into(),
                    "backend/only-dns".into()
                ]),
                counter: "egress_Habc".into(),
            }
        );
        // An audited isolation would deny; a ClusterNetworkPolicy Deny names the policy and tier.
        let audit = ctx.resolve("ingress_Haudit", &headers, time);
        assert_eq!(
            (audit.direction, audit.verdict, audit.policies),
            (
                Some(Direction::Ingress),
                Some(Verdict::WouldDeny),
                Some(vec!["backend/lockdown".to_string()])
            )
        );
        let cnp = ctx.resolve("admin_ingress_deny_db_0", &headers, time);
        assert_eq!(
            (cnp.verdict, cnp.tier.as_deref(), cnp.policies),
            (
                Some(Verdict::Deny),
                Some("Admin"),
                Some(vec!["deny-db".to_string()])
            )
        );
        // An IPv6 address of a dual-stack pod; a finished pod's address names no pod.
        assert_eq!(
            ctx.pod(&"fd00::5".parse().unwrap())
                .map(ToString::to_string),
            Some("backend/worker-0".to_string())
        );
        assert_eq!(ctx.pod(&"10.244.2.9".parse().unwrap()), None);
    }

    #[test]
    fn an_unknown_prefix_or_an_accept_counter_has_unknown_policies() {
        let ctx = context();
        let headers = nflog::packet::parse(&udp4([10, 244, 1, 5], [10, 244, 2, 7]), None).unwrap();
        for prefix in ["egress_Hfrom_another_version", "np_backend_allow_0", ""] {
            let d = ctx.resolve(prefix, &headers, UNIX_EPOCH);
            assert_eq!(
                (d.direction, d.verdict, d.policies, d.tier),
                (None, None, None, None),
                "{prefix}"
            );
            assert_eq!(d.counter, prefix);
            assert_eq!(d.dst.pod.as_deref(), Some("backend/db-0"));
        }
    }

    #[test]
    fn the_json_of_a_denial() {
        let denials = Denials::new(10);
        denials.set_context(context());
        ingest_one(
            &denials,
            packet_message(
                Some("egress_Habc"),
                ETH_P_IP,
                Some((T, 250_000)),
                None,
                &udp4([10, 244, 1, 5], [10, 96, 0, 10]),
            ),
        );
        ingest_one(
            &denials,
            packet_message(
                Some("admin_ingress_deny_db_0"),
                ETH_P_IPV6,
                None,
                None,
                &ping6("fd00::9", "fd00::5"),
            ),
        );
        ingest_one(
            &denials,
            packet_message(
                Some("gone"),
                ETH_P_IP,
                None,
                None,
                &udp4([10, 0, 0, 1], [10, 244, 2, 7]),
            ),
        );
        let json = serde_json::to_value(denials.recent()).unwrap();
        let expected: serde_json::Value = serde_json::from_str(
            r#"[
              {"time": "2024-05-01T12:00:00.25Z", "direction": "egress", "verdict": "deny",
               "src": "backend/worker-0", "src_ip": "10.244.1.5",
               "dst": "10.96.0.10", "dst_ip": "10.96.0.10",
               "protocol": "udp", "src_port": 40000, "dst_port": 53,
               "icmp_type": null, "icmp_code": null,
               "policies": ["backend/default-deny", "backend/only-dns"], "tier": null,
               "counter": "egress_Habc"},
              {"time": "2024-05-01T12:00:00Z", "direction": "ingress", "verdict": "deny",
               "src": "fd00::9", "src_ip": "fd00::9",
               "dst": "backend/worker-0", "dst_ip": "fd00::5",
               "protocol": "icmpv6", "src_port": null, "dst_port": null,
               "icmp_type": 128, "icmp_code": 0,
               "policies": ["deny-db"], "tier": "Admin",
               "counter": "admin_ingress_deny_db_0"},
              {"time": "2024-05-01T12:00:00Z", "direction": null, "verdict": null,
               "src": "10.0.0.1", "src_ip": "10.0.0.1",
               "dst": "backend/db-0", "dst_ip": "10.244.2.7",
               "protocol": "udp", "src_port": 40000, "dst_port": 53,
               "icmp_type": null, "icmp_code": null,
               "policies": null, "tier": null,
               "counter": "gone"}
            ]"#,
        )
        .unwrap();
        assert_eq!(json, expected);
        let m = denials.metrics();
        assert_eq!(m.denial_count("egress", "deny"), 1);
        assert_eq!(m.denial_count("ingress", "deny"), 1);
        assert_eq!(m.lost_count(LostReason::UnknownPrefix), 1);
    }

    #[test]
    fn the_buffer_keeps_the_last_n_oldest_first() {
        let denials = Denials::new(3);
        denials.set_context(context());
        for i in 0..5u8 {
            ingest_one(
                &denials,
                packet_message(
                    Some("egress_Habc"),
                    ETH_P_IP,
                    None,
                    None,
                    &udp4([10, 0, 0, i], [10, 96, 0, 10]),
                ),
            );
        }
        let kept: Vec<String> = denials.recent().iter().map(|d| d.src.name()).collect();
        assert_eq!(kept, ["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        assert_eq!(denials.metrics().denial_count("egress", "deny"), 5);

        let none = Denials::new(0);
        ingest_one(
            &none,
            packet_message(Some("x"), ETH_P_IP, None, None, &udp4([1; 4], [2; 4])),
        );
        assert!(none.recent().is_empty());
        assert_eq!(none.metrics().lost_count(LostReason::UnknownPrefix), 1);
    }

    #[test]
    fn a_new_context_applies_to_the_next_denials() {
        let denials = Denials::new(10);
        let message = || {
            packet_message(
                Some("egress_Habc"),
                ETH_P_IP,
                None,
                None,
                &udp4([10, 244, 1, 5], [10, 96, 0, 10]),
            )
        };
        ingest_one(&denials, message());
        denials.set_context(context());
        ingest_one(&denials, message());
        let recent = denials.recent();
        assert_eq!(recent[0].policies, None);
        assert_eq!(recent[0].src.pod, None);
        assert_eq!(recent[1].verdict, Some(Verdict::Deny));
        assert_eq!(recent[1].src.pod.as_deref(), Some("backend/worker-0"));
    }

    #[test]
    fn a_commit_updates_the_changed_pods_and_all_reads_every_pod_again() {
        use crate::agent::{Changed, CommitObserver, PodsBefore};
        let mut cluster = parse_sources(&[Source {
            name: "t.yaml".into(),
            text: CLUSTER.into(),
        }])
        .expect("valid")
        .cluster;
        let denials = Denials::new(10);
        let origins = Arc::new(origins());
        denials.committed(&origins, &cluster, Changed::All);
        let pod = |ip: &str| denials.pod(&ip.parse().unwrap());
        assert_eq!(pod("10.244.1.5").as_deref(), Some("backend/worker-0"));
        assert_eq!(pod("10.244.2.7").as_deref(), Some("backend/db-0"));

        // worker-0 moves to db-0's address and db-0 goes; only worker-0's event is given (as if
        // db-0's were still to come): db-0 keeps its address until its own change is.
        let worker = ObjectRef::new("backend", "worker-0");
        let db = ObjectRef::new("backend", "db-0");
        let mut moved = cluster.pod(&worker).expect("worker-0").clone();
        let changed = PodsBefore::from([(worker.clone(), moved.ips.clone().into_boxed_slice())]);
        moved.ips = vec!["10.244.1.6".parse().unwrap()];
        cluster.upsert_pod(moved);
        cluster.remove_pod(&db);
        denials.committed(&origins, &cluster, Changed::Pods(&changed));
        assert_eq!(pod("10.244.1.5"), None);
        assert_eq!(pod("fd00::5"), None);
        assert_eq!(pod("10.244.1.6").as_deref(), Some("backend/worker-0"));
        assert_eq!(pod("10.244.2.7").as_deref(), Some("backend/db-0"));
        // The origins are the ones given, with the pods' update.
        let other = Arc::new(Origins::new());
        denials.committed(&other, &cluster, Changed::Pods(&PodsBefore::new()));
        let headers = nflog::packet::parse(&udp4([10, 244, 1, 6], [10, 96, 0, 10]), None).unwrap();
        let d = denials.resolve("egress_Habc", &headers, UNIX_EPOCH);
        assert_eq!(
            (d.verdict, d.src.pod.as_deref()),
            (None, Some("backend/worker-0"))
        );

        // All: every pod read again.
        denials.committed(&origins, &cluster, Changed::All);
        assert_eq!(pod("10.244.2.7"), None);
        assert_eq!(pod("10.244.1.6").as_deref(), Some("backend/worker-0"));
    }

    #[test]
    fn malformed_messages_and_sequence_gaps_are_counted_lost() {
        let denials = Denials::new(10);
        denials.set_context(context());
        let good = |seq| {
            packet_message(
                Some("egress_Habc"),
                ETH_P_IP,
                None,
                Some(seq),
                &udp4([10, 244, 1, 5], [10, 96, 0, 10]),
            )
        };
        let mut seq = Sequence::default();
        let now = UNIX_EPOCH;
        // The socket's report counts nothing while messages carry sequence numbers...
        denials.overrun(&seq);
        assert_eq!(denials.metrics().lost_count(LostReason::Overrun), 0);
        denials.ingest(
            &datagram(&[good(0), good(1), done_message()]),
            now,
            &mut seq,
        );
        denials.overrun(&seq);
        assert_eq!(denials.metrics().lost_count(LostReason::Overrun), 0);
        // ...the gap counts them: 2 to 6 were lost.
        denials.ingest(&datagram(&[good(7)]), now, &mut seq);
        assert_eq!(denials.metrics().lost_count(LostReason::Overrun), 5);
        // A packet cut inside its UDP header, a payload that is no IP, and a cut message.
        let cut = packet_message(
            Some("egress_Habc"),
            ETH_P_IP,
            None,
            Some(8),
            &udp4([10, 244, 1, 5], [10, 96, 0, 10])[..22],
        );
        let noise = packet_message(Some("egress_Habc"), ETH_P_IP, None, Some(9), &[0xff; 30]);
        let mut tail = good(10);
        tail.truncate(tail.len() - 5);
        denials.ingest(&datagram(&[cut, noise, tail]), now, &mut seq);
        assert_eq!(denials.metrics().lost_count(LostReason::Malformed), 3);
        assert_eq!(denials.metrics().lost_count(LostReason::Overrun), 5);
        assert_eq!(denials.recent().len(), 3);
        assert_eq!(denials.metrics().denial_count("egress", "deny"), 3);
        // A message without a number: from then on each reported overrun counts one.
        let unnumbered = packet_message(
            Some("egress_Habc"),
            ETH_P_IP,
            None,
            None,
            &udp4([10, 244, 1, 5], [10, 96, 0, 10]),
        );
        denials.ingest(&datagram(&[unnumbered]), now, &mut seq);
        denials.overrun(&seq);
        assert_eq!(denials.metrics().lost_count(LostReason::Overrun), 6);
    }

    #[test]
    fn sequence_numbers_wrap_and_restart() {
        let mut seq = Sequence::default();
        assert_eq!(seq.observe(3), 3, "0 to 2 lost before the first read");
        let mut seq = Sequence::default();
        assert_eq!(seq.observe(0), 0);
        assert_eq!(seq.observe(1), 0);
        let mut seq = Sequence {
            next: u32::MAX - 1,
            unnumbered: false,
        };
        assert_eq!(seq.observe(u32::MAX - 1), 0);
        assert_eq!(seq.observe(u32::MAX), 0);
        assert_eq!(seq.observe(2), 2, "0 and 1 lost across the wrap");
        assert_eq!(seq.observe(0), 0, "numbering started again");
        assert_eq!(seq.observe(1), 0);
    }

    #[test]
    fn each_denial_is_one_structured_line() {
        use std::io::Write;
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let denials = Denials::new(10);
        denials.set_context(context());
        tracing::subscriber::with_default(subscriber, || {
            // Other test threads reach the callsite with no subscriber in force, and one of them
            // may cache its interest as "never" in a race with this subscriber's registration:
            // compute it again and emit until the subscriber sees an event (once, nearly always).
            for _ in 0..20 {
                buf.0.lock().unwrap().clear();
                tracing::callsite::rebuild_interest_cache();
                ingest_one(
                    &denials,
                    packet_message(
                        Some("egress_Habc"),
                        ETH_P_IP,
                        Some((T, 0)),
                        None,
                        &udp4([10, 244, 1, 5], [10, 96, 0, 10]),
                    ),
                );
                if !buf.0.lock().unwrap().is_empty() {
                    break;
                }
            }
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert_eq!(lines[0]["target"], "nftpolicy::denial");
        assert_eq!(lines[0]["level"], "INFO");
        let fields: serde_json::Value = serde_json::from_str(
            r#"{"message": "denied", "time": "2024-05-01T12:00:00Z", "direction": "egress",
                "verdict": "deny", "src": "backend/worker-0", "src_ip": "10.244.1.5",
                "dst": "10.96.0.10", "dst_ip": "10.96.0.10", "protocol": "udp",
                "src_port": 40000, "dst_port": 53,
                "policies": "backend/default-deny,backend/only-dns", "counter": "egress_Habc"}"#,
        )
        .unwrap();
        assert_eq!(lines[0]["fields"], fields);
    }
}
