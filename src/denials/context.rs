//! What a denial is resolved against: the origin of each drop point of the ruleset in force, by
//! counter name (the NFLOG prefix), and the pod behind each address. The agent builds one after
//! each sync and swaps it in whole ([`super::Denials::set_context`]); resolving one denial only
//! looks both up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use policy_compiler::model::Direction;
use policy_compiler::plan::{Origin, Origins};
use policy_compiler::ClusterState;

use super::{Denial, Endpoint, Verdict};
use crate::nflog::{PacketHeaders, Transport};

/// The lookups of one compiled ruleset and cluster state.
#[derive(Debug, Clone, Default)]
pub struct DenialContext {
    origins: Arc<Origins>,
    pods: HashMap<IpAddr, String>,
}

/// What a drop point is, read from its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DropPoint {
    direction: Direction,
    verdict: Verdict,
    policies: Vec<String>,
    tier: Option<String>,
}

impl DenialContext {
    /// The context of a ruleset whose counters come from `origins`, in `cluster`: every address of
    /// a pod that takes part in policy names it (`namespace/name`).
    pub fn new(origins: Arc<Origins>, cluster: &ClusterState) -> Self {
        let pods = cluster
            .participating_pods()
            .flat_map(|pod| pod.ips.iter().map(move |ip| (*ip, pod.id.to_string())))
            .collect();
        Self { origins, pods }
    }

    /// The pod (`namespace/name`) that holds `address`, if one does.
    pub fn pod(&self, address: &IpAddr) -> Option<&str> {
        self.pods.get(address).map(String::as_str)
    }

    /// The denial a packet with `headers`, logged with `prefix` at `time` (Unix), stands for. A
    /// prefix that names no drop point of the ruleset (a ruleset of another version, another
    /// program's log rule) gives a denial whose direction, verdict and policies are unknown.
    pub fn resolve(
        &self,
        prefix: &str,
        headers: &PacketHeaders,
        time: std::time::SystemTime,
    ) -> Denial {
        let point = self.origins.get(prefix).and_then(drop_point);
        let (src_port, dst_port, icmp_type, icmp_code) = match headers.transport {
            Transport::Ports { src, dst } => (Some(src), Some(dst), None, None),
            Transport::Icmp { icmp_type, code } => (None, None, Some(icmp_type), Some(code)),
            Transport::None => (None, None, None, None),
        };
        Denial {
            time,
            direction: point.as_ref().map(|p| p.direction),
            verdict: point.as_ref().map(|p| p.verdict),
            src: self.endpoint(headers.src),
            dst: self.endpoint(headers.dst),
            protocol: headers.protocol,
            src_port,
            dst_port,
            icmp_type,
            icmp_code,
            tier: point.as_ref().and_then(|p| p.tier.clone()),
            policies: point.map(|p| p.policies),
            counter: prefix.to_string(),
        }
    }

    fn endpoint(&self, address: IpAddr) -> Endpoint {
        Endpoint {
            address,
            pod: self.pod(&address).map(str::to_string),
        }
    }
}

/// The drop point an origin stands for; `None` for an accept (a log prefix never names one).
fn drop_point(origin: &Origin) -> Option<DropPoint> {
    let verdict = match origin.verdict() {
        "drop" => Verdict::Deny,
        "would_deny" => Verdict::WouldDeny,
        _ => return None,
    };
    let (policies, tier) = match origin {
        Origin::Isolation { policies, .. } => {
            (policies.iter().map(ToString::to_string).collect(), None)
        }
        Origin::ClusterRule { tier, policy, .. } => (vec![policy.clone()], Some(tier.to_string())),
        Origin::PolicyRule { .. } => return None,
    };
    Some(DropPoint {
        direction: origin.direction(),
        verdict,
        policies,
        tier,
    })
}
