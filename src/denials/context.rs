//! What a denial is resolved against: the origin of each drop point of the ruleset in force, by
//! counter name (the NFLOG prefix), and the pod behind each address. The agent brings it up to date
//! after each sync ([`super::Denials`] as a [`crate::agent::CommitObserver`]): the origins swapped
//! as an `Arc`, the pods' addresses changed in place for the pods that changed; resolving one
//! denial only looks both up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use policy_compiler::model::{Direction, ObjectRef, Pod};
use policy_compiler::plan::{Origin, Origins};
use policy_compiler::ClusterState;

use super::{Denial, Endpoint, Verdict};
use crate::nflog::{PacketHeaders, Transport};

/// The lookups of one compiled ruleset and cluster state.
#[derive(Debug, Clone, Default)]
pub struct DenialContext {
    origins: Arc<Origins>,
    pods: PodAddresses,
}

/// The addresses of the pods that take part in policy, and the pod each names, kept up to date
/// pod by pod.
///
/// An address held by several participating pods (one taken over before the API shows the pod
/// that had it gone) names the first of them in `namespace/name` order, the one the ruleset
/// decides for ([`ClusterState::pod_by_ip`] finds the same).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAddresses {
    /// Every address of a participating pod, and the pod it names.
    by_address: HashMap<IpAddr, ObjectRef>,
    /// The addresses that several participating pods hold, and all of them in `namespace/name`
    /// order (the first is the one [`Self::by_address`] names).
    shared: HashMap<IpAddr, Vec<ObjectRef>>,
}

impl PodAddresses {
    /// The addresses of every participating pod of `cluster` (one walk over the pods).
    pub fn new(cluster: &ClusterState) -> Self {
        let mut pods = Self::default();
        for pod in cluster.participating_pods() {
            pods.enter(pod);
        }
        pods
    }

    /// Brings the addresses of the pods `changed` up to date with `cluster`, each given with the
    /// addresses it had when these were last brought up to date (none when it did not exist;
    /// those of a pod that took no part then name nothing here, and change nothing): those go, its
    /// addresses in `cluster` come in if it takes part in policy now (a pod gone, finished or on
    /// the host network names none).
    pub fn update<'a>(
        &mut self,
        cluster: &ClusterState,
        changed: impl IntoIterator<Item = (&'a ObjectRef, &'a [IpAddr])>,
    ) {
        for (id, before) in changed {
            for address in before {
                self.release(*address, id);
            }
            if let Some(pod) = cluster.pod(id).filter(|p| p.participates()) {
                self.enter(pod);
            }
        }
    }

    /// The pod that holds `address`, if one does.
    pub fn pod(&self, address: &IpAddr) -> Option<&ObjectRef> {
        self.by_address.get(address)
    }

    /// How many addresses name a pod.
    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    /// Whether no address names a pod.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    fn enter(&mut self, pod: &Pod) {
        for address in &pod.ips {
            self.hold(*address, &pod.id);
        }
    }

    /// `id` holds `address` too.
    fn hold(&mut self, address: IpAddr, id: &ObjectRef) {
        let Some(named) = self.by_address.get_mut(&address) else {
            self.by_address.insert(address, id.clone());
            return;
        };
        if named == id {
            return;
        }
        let holders = self
            .shared
            .entry(address)
            .or_insert_with(|| vec![named.clone()]);
        if let Err(at) = holders.binary_search(id) {
            holders.insert(at, id.clone());
        }
        if let Some(first) = holders.first() {
            named.clone_from(first);
        }
    }

    /// `id` no longer holds `address`.
    fn release(&mut self, address: IpAddr, id: &ObjectRef) {
        let Some(holders) = self.shared.get_mut(&address) else {
            if self.by_address.get(&address) == Some(id) {
                self.by_address.remove(&address);
            }
            return;
        };
        if let Ok(at) = holders.binary_search(id) {
            holders.remove(at);
        }
        let first = holders.first().cloned();
        if holders.len() < 2 {
            self.shared.remove(&address);
        }
        match first {
            Some(first) => {
                self.by_address.insert(address, first);
            }
            None => {
                self.by_address.remove(&address);
            }
        }
    }
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
    /// a pod that takes part in policy names it (see [`PodAddresses`]).
    pub fn new(origins: Arc<Origins>, cluster: &ClusterState) -> Self {
        Self {
            origins,
            pods: PodAddresses::new(cluster),
        }
    }

    /// The context of the ruleset whose counters come from `origins`, after the pods `changed`
    /// changed to what `cluster` holds of them (see [`PodAddresses::update`]): work in proportion
    /// to the change.
    pub fn update<'a>(
        &mut self,
        origins: Arc<Origins>,
        cluster: &ClusterState,
        changed: impl IntoIterator<Item = (&'a ObjectRef, &'a [IpAddr])>,
    ) {
        self.origins = origins;
        self.pods.update(cluster, changed);
    }

    /// The pod that holds `address`, if one does.
    pub fn pod(&self, address: &IpAddr) -> Option<&ObjectRef> {
        self.pods.pod(address)
    }

    /// The pods' addresses.
    pub fn pods(&self) -> &PodAddresses {
        &self.pods
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
            pod: self.pod(&address).map(ToString::to_string),
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

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::model::PodPhase;
    use policy_compiler::selector::Labels;
    use std::collections::BTreeMap;

    fn pod(namespace: &str, name: &str, ips: &[&str]) -> Pod {
        Pod {
            id: ObjectRef::new(namespace, name),
            labels: Labels::new(),
            node: Some("node-1".into()),
            ips: ips.iter().map(|ip| ip.parse().expect("ip")).collect(),
            host_network: false,
            host_ips: vec![],
            phase: PodPhase::Active,
            ports: vec![],
            owner: None,
            live: true,
            workload: None,
        }
    }

    /// What each address names (the specification): the first participating pod in
    /// `namespace/name` order that holds it, as [`ClusterState::pod_by_ip`] finds it.
    fn rebuilt(cluster: &ClusterState) -> HashMap<IpAddr, String> {
        let mut named = HashMap::new();
        for pod in cluster.participating_pods() {
            for ip in &pod.ips {
                named.entry(*ip).or_insert_with(|| pod.id.to_string());
            }
        }
        for (ip, name) in &named {
            let found = cluster.pod_by_ip(ip).map(|p| p.id.to_string());
            assert_eq!(found.as_ref(), Some(name), "{ip}");
        }
        named
    }

    /// Asserts that `pods` answers as the full rebuild does for every address of `addresses`,
    /// and holds what a fresh [`PodAddresses::new`] holds (nothing left over).
    fn assert_as_rebuilt(
        pods: &PodAddresses,
        cluster: &ClusterState,
        addresses: &[IpAddr],
        at: &str,
    ) {
        let expected = rebuilt(cluster);
        for address in addresses {
            assert_eq!(
                pods.pod(address).map(ToString::to_string),
                expected.get(address).cloned(),
                "{address} after {at}"
            );
        }
        assert_eq!(pods, &PodAddresses::new(cluster), "after {at}");
    }

    /// The pods of `keys` with the addresses each holds in `cluster` (none when it is not
    /// there): what the agent gives with a pod's change, read before the change.
    fn before(cluster: &ClusterState, keys: &[(&str, &str)]) -> Vec<(ObjectRef, Box<[IpAddr]>)> {
        keys.iter()
            .map(|(ns, n)| {
                let id = ObjectRef::new(ns, n);
                let ips = cluster
                    .pod(&id)
                    .map(|p| p.ips.clone().into_boxed_slice())
                    .unwrap_or_default();
                (id, ips)
            })
            .collect()
    }

    /// Makes `change` to `cluster` and brings `pods` up to date with it, given the pods of `keys`
    /// as the agent gives them.
    fn change(
        cluster: &mut ClusterState,
        pods: &mut PodAddresses,
        keys: &[(&str, &str)],
        change: impl FnOnce(&mut ClusterState),
    ) {
        let before = before(cluster, keys);
        change(cluster);
        pods.update(cluster, before.iter().map(|(id, ips)| (id, &**ips)));
    }

    #[test]
    fn an_address_two_pods_hold_names_the_first_in_name_order_through_every_change() {
        let shared: IpAddr = "10.0.0.1".parse().unwrap();
        let mut cluster = ClusterState::new();
        cluster.upsert_pod(pod("b", "p0", &["10.0.0.1"]));
        cluster.upsert_pod(pod("a", "p1", &["10.0.0.1", "fd00::1"]));
        let mut pods = PodAddresses::new(&cluster);
        let name = |pods: &PodAddresses| pods.pod(&shared).map(ToString::to_string);
        assert_eq!(name(&pods), Some("a/p1".into()), "a/p1 comes before b/p0");

        // The second goes away: the first still names it.
        change(&mut cluster, &mut pods, &[("b", "p0")], |c| {
            c.remove_pod(&ObjectRef::new("b", "p0"));
        });
        assert_eq!(name(&pods), Some("a/p1".into()));
        assert_as_rebuilt(&pods, &cluster, &[shared], "b/p0 deleted");

        // It comes back (the first still names it); then the first goes away: the other does.
        change(&mut cluster, &mut pods, &[("b", "p0")], |c| {
            c.upsert_pod(pod("b", "p0", &["10.0.0.1"]));
        });
        assert_eq!(name(&pods), Some("a/p1".into()));
        change(&mut cluster, &mut pods, &[("a", "p1")], |c| {
            c.remove_pod(&ObjectRef::new("a", "p1"));
        });
        assert_eq!(name(&pods), Some("b/p0".into()));
        assert_eq!(pods.pod(&"fd00::1".parse().unwrap()), None);
        assert_as_rebuilt(&pods, &cluster, &[shared], "a/p1 deleted");

        // Two holders before it, then the first of them finishes: the next one names it.
        change(&mut cluster, &mut pods, &[("a", "p1"), ("a", "p2")], |c| {
            c.upsert_pod(pod("a", "p1", &["10.0.0.1"]));
            c.upsert_pod(pod("a", "p2", &["10.0.0.1"]));
        });
        assert_eq!(name(&pods), Some("a/p1".into()));
        let mut finished = pod("a", "p1", &["10.0.0.1"]);
        finished.phase = PodPhase::Finished;
        change(&mut cluster, &mut pods, &[("a", "p1")], |c| {
            c.upsert_pod(finished);
        });
        assert_eq!(name(&pods), Some("a/p2".into()));
        assert_as_rebuilt(&pods, &cluster, &[shared], "a/p1 finished");
        change(&mut cluster, &mut pods, &[("b", "p0")], |c| {
            c.remove_pod(&ObjectRef::new("b", "p0"));
        });

        // Readdressed away one by one: none names it; the new address names the first.
        for name in ["p2", "p1"] {
            change(&mut cluster, &mut pods, &[("a", name)], |c| {
                c.upsert_pod(pod("a", name, &["10.0.0.9"]));
            });
        }
        assert_eq!(pods.pod(&shared), None);
        assert_eq!(
            pods.pod(&"10.0.0.9".parse().unwrap())
                .map(ToString::to_string),
            Some("a/p1".into())
        );
        assert_as_rebuilt(&pods, &cluster, &[shared], "readdressed");
    }

    /// Random pod adds, deletes, readdresses, finishes and moves to the host network, a few per
    /// commit, over few addresses (so that pods often share one): after every commit the
    /// addresses kept up to date answer as the full rebuild does.
    #[test]
    fn updates_pod_by_pod_answer_as_the_full_rebuild_for_random_changes() {
        let addresses: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1", "fd00::2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let keys: Vec<ObjectRef> = ["a", "b", "c"]
            .iter()
            .flat_map(|ns| (0..4).map(move |i| ObjectRef::new(ns, format!("p{i}"))))
            .collect();
        for seed in 0..300 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut cluster = ClusterState::new();
            let mut pods = PodAddresses::new(&cluster);
            for step in 0..40 {
                // Each pod changed, with the addresses it had at the last update (the first
                // version since, as the agent keeps it).
                let mut changed: BTreeMap<ObjectRef, Box<[IpAddr]>> = BTreeMap::new();
                let held = |cluster: &ClusterState, id: &ObjectRef| -> Box<[IpAddr]> {
                    cluster
                        .pod(id)
                        .map(|p| p.ips.clone().into_boxed_slice())
                        .unwrap_or_default()
                };
                for _ in 0..rng.usize(1..=3) {
                    let id = keys[rng.usize(..keys.len())].clone();
                    changed
                        .entry(id.clone())
                        .or_insert_with(|| held(&cluster, &id));
                    match rng.u8(..10) {
                        0..=2 => {
                            cluster.remove_pod(&id);
                        }
                        n => {
                            // 0 to 3 addresses, a repeat or two of one family at times.
                            let ips: Vec<String> = (0..rng.usize(..=3))
                                .map(|_| addresses[rng.usize(..addresses.len())].to_string())
                                .collect();
                            let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
                            let mut p = pod(&id.namespace, &id.name, &ips);
                            p.phase = if n == 3 {
                                PodPhase::Finished
                            } else {
                                PodPhase::Active
                            };
                            p.host_network = n == 4;
                            cluster.upsert_pod(p);
                        }
                    }
                }
                // A pod given that did not change changes nothing.
                if rng.bool() {
                    let id = keys[rng.usize(..keys.len())].clone();
                    changed
                        .entry(id.clone())
                        .or_insert_with(|| held(&cluster, &id));
                }
                pods.update(&cluster, changed.iter().map(|(id, ips)| (id, &**ips)));
                assert_as_rebuilt(
                    &pods,
                    &cluster,
                    &addresses,
                    &format!("seed {seed} step {step}"),
                );
            }
        }
    }

    #[test]
    fn the_context_updates_only_the_pods_it_is_given_and_swaps_the_origins() {
        let mut cluster = ClusterState::new();
        cluster.upsert_pod(pod("a", "p0", &["10.0.0.1"]));
        cluster.upsert_pod(pod("a", "p1", &["10.0.0.2"]));
        let mut ctx = DenialContext::new(Arc::new(Origins::new()), &cluster);
        // Both pods readdressed, only one of them given: the other keeps its old address (no
        // walk over the pods).
        let given = before(&cluster, &[("a", "p0")]);
        cluster.upsert_pod(pod("a", "p0", &["10.0.0.3"]));
        cluster.upsert_pod(pod("a", "p1", &["10.0.0.4"]));
        let origins = Arc::new(Origins::new());
        ctx.update(
            Arc::clone(&origins),
            &cluster,
            given.iter().map(|(id, ips)| (id, &**ips)),
        );
        let name = |ip: &str| ctx.pod(&ip.parse().unwrap()).map(ToString::to_string);
        assert_eq!(name("10.0.0.1"), None);
        assert_eq!(name("10.0.0.3"), Some("a/p0".into()));
        assert_eq!(name("10.0.0.2"), Some("a/p1".into()));
        assert_eq!(name("10.0.0.4"), None);
        assert!(Arc::ptr_eq(&ctx.origins, &origins));
    }
}
