//! The connections of a [`Connectivity`] looked up by pair and family in constant time, for the
//! analyses that judge many pairs (`diff`, `verify`).

use std::collections::HashMap;

use super::{family_slot, ConnSet, Connectivity, Party};
use crate::cidr::Family;
use crate::model::ObjectRef;

/// An index of a [`Connectivity`] by party and by pair: see [`Connectivity::lookup`].
#[derive(Debug)]
pub struct Lookup<'a> {
    connectivity: &'a Connectivity,
    /// Each party's position in [`Connectivity::parties`].
    index: HashMap<&'a Party, usize>,
    /// Per party, its address families.
    families: Vec<Vec<Family>>,
    /// Per (from, to), what is allowed over each family ([IPv4, IPv6]); pairs with nothing
    /// allowed are absent.
    pairs: HashMap<(usize, usize), [Option<&'a ConnSet>; 2]>,
}

impl Connectivity {
    /// An index of the parties and connections, to look pairs up in constant time.
    pub fn lookup(&self) -> Lookup<'_> {
        let index: HashMap<&Party, usize> = self
            .parties
            .iter()
            .enumerate()
            .map(|(i, p)| (p, i))
            .collect();
        let families: Vec<Vec<Family>> = (0..self.parties.len())
            .map(|p| self.families_of(p))
            .collect();
        let mut pairs: HashMap<(usize, usize), [Option<&ConnSet>; 2]> = HashMap::new();
        for &(from, to, family, set) in &self.connections {
            let (from, to) = (from as usize, to as usize);
            let slots = pairs.entry((from, to)).or_default();
            let set = &self.sets[set as usize];
            match family {
                0 | 1 => slots[usize::from(family)] = Some(set),
                // The same for every family the two share.
                _ => {
                    for f in &families[from] {
                        if families[to].contains(f) {
                            slots[family_slot(*f)] = Some(set);
                        }
                    }
                }
            }
        }
        Lookup {
            connectivity: self,
            index,
            families,
            pairs,
        }
    }
}

impl<'a> Lookup<'a> {
    /// The connectivity looked up.
    pub fn connectivity(&self) -> &'a Connectivity {
        self.connectivity
    }

    /// Whether the party exists.
    pub fn contains(&self, party: &Party) -> bool {
        self.index.contains_key(party)
    }

    /// A party's address families: its pods' (alike for all of them), or an external range's
    /// own; none for an unknown party.
    pub fn families(&self, party: &Party) -> &[Family] {
        self.index
            .get(party)
            .map(|i| self.families[*i].as_slice())
            .unwrap_or_default()
    }

    /// The families two parties share, IPv4 first: those they can talk over.
    pub fn shared_families(&self, a: &Party, b: &Party) -> Vec<Family> {
        let theirs = self.families(b);
        self.families(a)
            .iter()
            .filter(|f| theirs.contains(f))
            .copied()
            .collect()
    }

    /// What is allowed from `from` to `to` over `family`; `None` when nothing is (or either party
    /// is unknown, or lacks the family).
    pub fn allowed(&self, from: &Party, to: &Party, family: Family) -> Option<&'a ConnSet> {
        let (a, b) = (self.index.get(from)?, self.index.get(to)?);
        self.pairs.get(&(*a, *b))?[family_slot(family)]
    }

    /// The pods a workload party stands for (none for an external range or an unknown party).
    pub fn members(&self, party: &Party) -> &'a [ObjectRef] {
        let connectivity = self.connectivity;
        self.index
            .get(party)
            .map(|i| connectivity.members[*i].as_slice())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{documents, materialized, network_policy};
    use crate::workload::PodCidrs;

    #[test]
    fn pairs_are_found_per_family_as_connections_list_them() {
        // web is dual-stack, client IPv4 only (one CIDR per family, client's pod has a real
        // IPv4 address only).
        let text = documents(&[
            "apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {containers: [{name: c, image: i}]}
"
            .to_string(),
            "apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.244.9.9}
"
            .to_string(),
            network_policy(
                "a",
                "web",
                "  podSelector: {matchLabels: {app: web}}\n  ingress: [{ports: [{port: 80}]}]\n",
            ),
        ]);
        let cidrs = PodCidrs::default();
        let c = materialized(&text, &cidrs);
        let conn = Connectivity::compute(&c, &cidrs);
        let lookup = conn.lookup();
        let party = |name: &str| conn.party(name).expect(name).clone();
        let (web, client) = (party("a/web[Pod]"), party("a/client[Pod]"));
        assert_eq!(lookup.families(&web), [Family::V4, Family::V6]);
        assert_eq!(lookup.families(&client), [Family::V4]);
        assert_eq!(lookup.shared_families(&web, &client), [Family::V4]);
        let tcp80 = lookup
            .allowed(&client, &web, Family::V4)
            .expect("client reaches web");
        assert_eq!(tcp80.to_string(), "TCP 80");
        assert_eq!(lookup.allowed(&client, &web, Family::V6), None);
        assert!(lookup
            .allowed(&web, &client, Family::V4)
            .is_some_and(ConnSet::is_all));
        assert_eq!(lookup.members(&web), [ObjectRef::new("a", "web")]);
        let v6_outside = conn
            .parties()
            .iter()
            .find(|p| p.family() == Some(Family::V6))
            .expect("an IPv6 range");
        assert_eq!(lookup.families(v6_outside), [Family::V6]);
        assert_eq!(
            lookup
                .allowed(v6_outside, &web, Family::V6)
                .map(ToString::to_string),
            Some("TCP 80".to_string())
        );
        assert_eq!(lookup.allowed(v6_outside, &client, Family::V6), None);
        let unknown = Party::Workload(crate::model::WorkloadRef::new("a", "x", "Pod"));
        assert!(!lookup.contains(&unknown));
        assert!(lookup.families(&unknown).is_empty());
    }
}
