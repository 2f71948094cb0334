//! ClusterNetworkPolicy (`policy.networking.k8s.io`, network-policy-api v1alpha2 and v1beta1):
//! cluster-wide rules in the Admin tier (before NetworkPolicy) or the Baseline tier (after it),
//! validated as the CRD validates them.

use std::fmt;

use crate::cidr::Cidr;
use crate::model::{Direction, Protocol};
use crate::selector::LabelSelector;

/// The tier a ClusterNetworkPolicy is evaluated in. Admin comes before NetworkPolicy, Baseline
/// after it (and only for pods no NetworkPolicy isolates); the order of the variants is the order
/// of evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// `Admin`: before NetworkPolicy; its Accept and Deny are final.
    Admin,
    /// `Baseline`: after NetworkPolicy, for pods no NetworkPolicy isolates.
    Baseline,
}

impl Tier {
    /// Both tiers, in evaluation order.
    pub const ALL: [Tier; 2] = [Tier::Admin, Tier::Baseline];

    /// Parses the API spelling (`Admin`, `Baseline`).
    pub fn from_api(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_api() == s)
    }

    /// The API spelling.
    pub fn as_api(self) -> &'static str {
        match self {
            Tier::Admin => "Admin",
            Tier::Baseline => "Baseline",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_api())
    }
}

/// What a rule does with the traffic it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// `Accept`: allowed in this direction; no later rule of any tier is consulted for it.
    Accept,
    /// `Deny`: dropped.
    Deny,
    /// `Pass`: the remaining rules of the tier are skipped; evaluation goes on in the next tier.
    Pass,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 3] = [Action::Accept, Action::Deny, Action::Pass];

    /// Parses the API spelling (`Accept`, `Deny`, `Pass`).
    pub fn from_api(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_api() == s)
    }

    /// The API spelling.
    pub fn as_api(self) -> &'static str {
        match self {
            Action::Accept => "Accept",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_api())
    }
}

/// Pods chosen by namespace and pod labels (the API's `NamespacedPod`): the pods matching `pods`
/// in the namespaces matching `namespaces`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodsSelector {
    /// `namespaceSelector`; absent or empty selects every namespace.
    pub namespaces: LabelSelector,
    /// `podSelector`; empty selects every pod.
    pub pods: LabelSelector,
}

impl fmt::Display for PodsSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pods {} in namespaces {}", self.pods, self.namespaces)
    }
}

/// The pods a ClusterNetworkPolicy applies to. Host-network pods are never subjects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// `namespaces`: every pod of the namespaces matching the selector.
    Namespaces(LabelSelector),
    /// `pods`: the pods matching both selectors.
    Pods(PodsSelector),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Namespaces(s) => write!(f, "namespaces {s}"),
            Subject::Pods(p) => p.fmt(f),
        }
    }
}

/// One entry of a rule's `from` or `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterPeer {
    /// `namespaces`: every pod of the matching namespaces (host-network pods excluded).
    Namespaces(LabelSelector),
    /// `pods`: the matching pods (host-network pods excluded).
    Pods(PodsSelector),
    /// `networks` (egress only): addresses, pod addresses included, in written order without
    /// repeats.
    Networks(Vec<Cidr>),
    /// `nodes` (egress only, experimental): the InternalIP and ExternalIP addresses of the
    /// matching Nodes.
    Nodes(LabelSelector),
    /// A peer that sets no field nftpolicy knows: written for a newer version of the API. As the
    /// API requires, it fails closed: an Accept rule matches nothing with it, a Deny or Pass rule
    /// matches everything.
    Unknown,
}

impl fmt::Display for ClusterPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterPeer::Namespaces(s) => write!(f, "namespaces {s}"),
            ClusterPeer::Pods(p) => p.fmt(f),
            ClusterPeer::Networks(cidrs) => {
                let cidrs: Vec<String> = cidrs.iter().map(Cidr::to_string).collect();
                write!(f, "networks {}", cidrs.join(", "))
            }
            ClusterPeer::Nodes(s) => write!(f, "nodes {s}"),
            ClusterPeer::Unknown => f.write_str("a peer of a kind nftpolicy does not know"),
        }
    }
}

/// One entry of a rule's `protocols`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterPort {
    /// `tcp`, `udp` or `sctp` with a `destinationPort`: a `number` (`first == last`) or an
    /// inclusive `range` (`first < last`).
    Range {
        /// The protocol.
        protocol: Protocol,
        /// The first port, 1-65535.
        first: u16,
        /// The last port, inclusive: `first` for a single port.
        last: u16,
    },
    /// `destinationNamedPort` (experimental): the container port of that name on the
    /// destination pod, with that port's protocol.
    Named(String),
}

impl fmt::Display for ClusterPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterPort::Range {
                protocol,
                first,
                last,
            } if first == last => write!(f, "{first}/{protocol}"),
            ClusterPort::Range {
                protocol,
                first,
                last,
            } => write!(f, "{first}-{last}/{protocol}"),
            ClusterPort::Named(name) => write!(f, "named port {name}"),
        }
    }
}

/// One ingress or egress rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterRule {
    /// `name`, up to 100 characters; `None` when absent or empty.
    pub name: Option<String>,
    /// `action`.
    pub action: Action,
    /// `from` or `to`: 1 to 25 peers; the rule matches traffic from or to any of them.
    pub peers: Vec<ClusterPeer>,
    /// `protocols`: empty matches all IP traffic, ICMP included; otherwise only the TCP, UDP or
    /// SCTP traffic an entry matches.
    pub protocols: Vec<ClusterPort>,
}

/// A ClusterNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterNetworkPolicy {
    /// `metadata.name` (the object is cluster-scoped).
    pub name: String,
    /// `tier`.
    pub tier: Tier,
    /// `priority`, 0-1000: lower values are evaluated first within the tier.
    pub priority: u16,
    /// `subject`: the pods the policy applies to.
    pub subject: Subject,
    /// `ingress`: up to 25 rules, in written (evaluation) order.
    pub ingress: Vec<ClusterRule>,
    /// `egress`: up to 25 rules, in written (evaluation) order.
    pub egress: Vec<ClusterRule>,
}

impl ClusterNetworkPolicy {
    /// The highest priority value.
    pub const MAX_PRIORITY: u16 = 1000;

    /// The rules of one direction, in evaluation order.
    pub fn rules(&self, direction: Direction) -> &[ClusterRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The policy's place in the evaluation of its tier: by priority, then, as the API leaves the
    /// order of equal priorities to the implementation, by name.
    pub fn order_key(&self) -> (u16, &str) {
        (self.priority, &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, priority: u16) -> ClusterNetworkPolicy {
        ClusterNetworkPolicy {
            name: name.into(),
            tier: Tier::Admin,
            priority,
            subject: Subject::Namespaces(LabelSelector::everything()),
            ingress: vec![],
            egress: vec![ClusterRule {
                name: Some("r".into()),
                action: Action::Deny,
                peers: vec![ClusterPeer::Unknown],
                protocols: vec![],
            }],
        }
    }

    #[test]
    fn policies_are_ordered_by_priority_then_name() {
        let mut policies = [policy("b", 5), policy("a", 7), policy("a", 5)];
        policies.sort_by(|x, y| x.order_key().cmp(&y.order_key()));
        let order: Vec<(u16, &str)> = policies.iter().map(|p| p.order_key()).collect();
        assert_eq!(order, [(5, "a"), (5, "b"), (7, "a")]);
        assert_eq!(policies[0].rules(Direction::Egress).len(), 1);
        assert!(policies[0].rules(Direction::Ingress).is_empty());
    }

    #[test]
    fn api_spellings_parse_back() {
        for tier in Tier::ALL {
            assert_eq!(Tier::from_api(tier.as_api()), Some(tier));
        }
        for action in Action::ALL {
            assert_eq!(Action::from_api(action.as_api()), Some(action));
        }
        assert_eq!(Tier::from_api("admin"), None);
        assert_eq!(Action::from_api("Allow"), None);
        assert!(Tier::Admin < Tier::Baseline, "Admin is evaluated first");
    }

    #[test]
    fn peers_and_ports_display_for_reports() {
        let port = |first, last| ClusterPort::Range {
            protocol: Protocol::Udp,
            first,
            last,
        };
        assert_eq!(port(53, 53).to_string(), "53/UDP");
        assert_eq!(port(5000, 5010).to_string(), "5000-5010/UDP");
        assert_eq!(
            ClusterPort::Named("web".into()).to_string(),
            "named port web"
        );
        let networks = ClusterPeer::Networks(vec![
            "10.0.0.0/8".parse().expect("cidr"),
            "fd00::/8".parse().expect("cidr"),
        ]);
        assert_eq!(networks.to_string(), "networks 10.0.0.0/8, fd00::/8");
        let pods = ClusterPeer::Pods(PodsSelector {
            namespaces: LabelSelector::everything(),
            pods: LabelSelector::from_labels([("app", "web")]),
        });
        assert_eq!(pods.to_string(), "pods app=web in namespaces {}");
    }
}
