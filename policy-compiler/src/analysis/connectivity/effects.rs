//! What each ClusterNetworkPolicy rule does over a cluster (what `policyc lint` judges them by):
//! for every pod its policy selects, every end the pod talks to (every class of pods, external
//! range and node of the input) and every address family they share, which connections the rule
//! matches, which of them it decides (it is the first rule of its tier to match them), which
//! earlier rules decide the rest, where what a Pass hands on ends, and where two policies of equal
//! priority would decide a connection differently.
//!
//! A pod's traffic to itself is not judged by ClusterNetworkPolicies, nor the traffic from a node
//! to its own pods; a pod's traffic to its own node is (egress), with the NetworkPolicy stage
//! allowing it.

use std::collections::{BTreeSet, HashSet};

use super::{dir_slot, tier_slot, ConnSet, Connectivity, End, FAMILIES};
use crate::analysis::ClusterRuleRef;
use crate::cidr::Family;
use crate::model::{Action, Direction, Tier as TierName};

/// What one ClusterNetworkPolicy rule does over the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEffect {
    /// The rule.
    pub rule: ClusterRuleRef,
    /// Its action.
    pub action: Action,
    /// Some connection of a pod its policy selects matches it.
    pub matches: bool,
    /// It decides some connection: it is the first rule of its tier to match it.
    pub decides: bool,
    /// The earlier rules of its tier (of policies of higher priority, of equal priority and an
    /// earlier name, or earlier in its own policy) that decide connections it matches.
    pub decided_earlier_by: Vec<ClusterRuleRef>,
    /// A Baseline rule: NetworkPolicies isolating the pods decide some of the connections it
    /// matches (the Baseline tier is not consulted for them).
    pub decided_by_network_policies: bool,
    /// A Pass of the Admin tier: some of what it passes on is judged by NetworkPolicies or
    /// denied by a Baseline rule (else all of it is allowed, as an Accept would allow it).
    pub reaches: bool,
}

/// Two rules of policies of one tier and one priority that would each decide a connection no
/// policy of higher priority decides, with different actions: the policy first by name decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tie {
    /// The rule of the policy first by name: the one that decides.
    pub first: ClusterRuleRef,
    /// Its action.
    pub first_action: Action,
    /// The rule of the other policy.
    pub second: ClusterRuleRef,
    /// Its action.
    pub second_action: Action,
    /// One pair of parties where they overlap (source, destination), and what of it both match.
    pub example: (String, String, ConnSet),
}

/// What every ClusterNetworkPolicy rule does: see [`Connectivity::cluster_rule_effects`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterRuleEffects {
    /// Per rule, in evaluation order (Admin then Baseline, by priority, name and written order).
    pub rules: Vec<RuleEffect>,
    /// The conflicting pairs of rules of equal-priority policies, each once, in the order found.
    pub ties: Vec<Tie>,
}

/// One tier of one walk: its rules in evaluation order, each with what it matches of everything
/// (`None`: nothing).
struct Tier<'w> {
    rules: &'w [usize],
    matched: &'w [Option<ConnSet>],
}

/// What one walk notes, across walks.
struct Notes<'n> {
    effects: &'n mut ClusterRuleEffects,
    /// Per rule, the earlier rules that decided some of what it matches.
    shadowers: Vec<BTreeSet<usize>>,
    /// The pairs of rules already reported as a tie.
    ties: HashSet<(usize, usize)>,
}

impl Connectivity {
    /// What every ClusterNetworkPolicy rule does over the cluster's pods and the ends they talk to
    /// (see the module documentation of `effects`).
    pub fn cluster_rule_effects(&self) -> ClusterRuleEffects {
        let mut effects = ClusterRuleEffects {
            rules: self
                .cluster_rules
                .iter()
                .map(|r| RuleEffect {
                    rule: r.rule.clone(),
                    action: r.action,
                    matches: false,
                    decides: false,
                    decided_earlier_by: Vec::new(),
                    decided_by_network_policies: false,
                    reaches: false,
                })
                .collect(),
            ties: Vec::new(),
        };
        // Per class: a party of it (for examples), how many pods it has, the nodes they run on.
        let n = self.classes.len();
        let mut party_of: Vec<Option<usize>> = vec![None; n];
        let mut members = vec![0usize; n];
        let mut nodes: Vec<BTreeSet<Option<&str>>> = vec![BTreeSet::new(); n];
        let mut outside: Vec<usize> = Vec::new();
        for (i, (end, _)) in self.ends.iter().enumerate() {
            match end {
                End::Class(c) => {
                    party_of[*c].get_or_insert(i);
                    members[*c] += self.members[i].len();
                    nodes[*c].extend(self.member_nodes[i].iter().map(Option::as_deref));
                }
                End::External(_) | End::Node(..) => outside.push(i),
            }
        }
        let mut notes = Notes {
            effects: &mut effects,
            shadowers: vec![BTreeSet::new(); self.cluster_rules.len()],
            ties: HashSet::new(),
        };
        for c in 0..n {
            let Some(party) = party_of[c] else { continue };
            let class = &self.classes[c];
            for direction in Direction::BOTH {
                let d = dir_slot(direction);
                let (admin, baseline) = (
                    &class.tiers[tier_slot(TierName::Admin)][d],
                    &class.tiers[tier_slot(TierName::Baseline)][d],
                );
                if admin.is_empty() && baseline.is_empty() {
                    continue;
                }
                // The other ends: every class (the class itself when it has two pods or more),
                // every external range, every node the class has pods off (and on, for its own
                // node's egress).
                let mut others: Vec<(End, usize)> = (0..n)
                    .filter(|o| *o != c || members[c] > 1)
                    .filter_map(|o| party_of[o].map(|p| (End::Class(o), p)))
                    .collect();
                for &i in &outside {
                    let end = self.ends[i].0;
                    let keep = match end {
                        End::Node(k, true) => {
                            direction == Direction::Egress
                                && nodes[c].contains(&Some(self.node_ends[k].name.as_str()))
                        }
                        End::Node(k, false) => {
                            let name = self.node_ends[k].name.as_str();
                            nodes[c].iter().any(|n| *n != Some(name))
                        }
                        _ => true,
                    };
                    if keep {
                        others.push((end, i));
                    }
                }
                // Ends whose peers every rule matches alike (with the same named ports, when a
                // rule names one) walk alike: each such walk is made once.
                let named = admin.iter().chain(baseline).any(|r| {
                    self.cluster_rules[*r]
                        .protocols
                        .iter()
                        .any(|p| matches!(p, crate::model::ClusterPort::Named(_)))
                });
                let mut walked: HashSet<(bool, Option<usize>, Vec<bool>)> = HashSet::new();
                for (other, other_party) in others {
                    let destination = match direction {
                        Direction::Egress => other,
                        Direction::Ingress => End::Class(c),
                    };
                    for family in self.shared_families(End::Class(c), other) {
                        let peers: Vec<bool> = admin
                            .iter()
                            .chain(baseline)
                            .map(|r| {
                                self.cluster_peer_matches(&self.cluster_rules[*r], other, family)
                            })
                            .collect();
                        if !peers.contains(&true) {
                            continue;
                        }
                        let own_node = matches!(other, End::Node(_, true));
                        let ports = match destination {
                            End::Class(d) if named => Some(d),
                            _ => None,
                        };
                        if !walked.insert((own_node, ports, peers.clone())) {
                            continue;
                        }
                        let matched: Vec<Option<ConnSet>> = admin
                            .iter()
                            .chain(baseline)
                            .zip(&peers)
                            .map(|(r, peer)| {
                                peer.then(|| {
                                    self.cluster_rule_set(&self.cluster_rules[*r], destination)
                                })
                                .filter(|s| !s.is_empty())
                            })
                            .collect();
                        let (admin_matched, baseline_matched) = matched.split_at(admin.len());
                        let example = match direction {
                            Direction::Egress => (party, other_party),
                            Direction::Ingress => (other_party, party),
                        };
                        self.walk_tiers(
                            !class.isolated_by[d].is_empty() && !own_node,
                            !class.isolated_by[d].is_empty(),
                            Tier {
                                rules: admin,
                                matched: admin_matched,
                            },
                            Tier {
                                rules: baseline,
                                matched: baseline_matched,
                            },
                            example,
                            &mut notes,
                        );
                    }
                }
            }
        }
        let shadowers = std::mem::take(&mut notes.shadowers);
        for (effect, earlier) in effects.rules.iter_mut().zip(shadowers) {
            effect.decided_earlier_by = earlier
                .into_iter()
                .map(|r| self.cluster_rules[r].rule.clone())
                .collect();
        }
        effects
    }

    /// The families two ends both have.
    fn shared_families(&self, a: End, b: End) -> Vec<Family> {
        FAMILIES
            .into_iter()
            .filter(|f| self.atom(a, *f).is_some() && self.atom(b, *f).is_some())
            .collect()
    }

    /// Walks one direction of a class with one other end through both tiers, noting what each
    /// rule matches and decides, what decides it earlier, where Passes end, and ties.
    /// `judged_by_network_policies`: NetworkPolicies isolate the pod in this direction and judge
    /// what the Admin tier leaves (not so for a pod's own node, which they allow);
    /// `isolated`: they isolate it (the Baseline tier is then not consulted).
    fn walk_tiers(
        &self,
        judged_by_network_policies: bool,
        isolated: bool,
        admin: Tier<'_>,
        baseline: Tier<'_>,
        example: (usize, usize),
        notes: &mut Notes<'_>,
    ) {
        let mut open = ConnSet::all();
        let admin_decided = self.walk_tier(&admin, &mut open, example, notes);
        let passes: Vec<&(usize, ConnSet)> = admin_decided
            .iter()
            .filter(|(r, _)| self.cluster_rules[*r].action == Action::Pass)
            .collect();
        let passed = passes
            .iter()
            .fold(ConnSet::none(), |acc, (_, set)| acc.union(set));
        let mut rest = open.union(&passed);
        // Earlier rules for the Baseline's are the Admin tier's (but its Passes, which hand their
        // connections on) too.
        for (&r, matched) in baseline.rules.iter().zip(baseline.matched) {
            let Some(matched) = matched else { continue };
            for (q, set) in &admin_decided {
                if self.cluster_rules[*q].action != Action::Pass
                    && !set.intersection(matched).is_empty()
                {
                    notes.shadowers[r].insert(*q);
                }
            }
        }
        if isolated {
            if judged_by_network_policies {
                for (r, _) in &passes {
                    notes.effects.rules[*r].reaches = true;
                }
            }
            // The Baseline tier is not consulted: what its rules match, the NetworkPolicies (or
            // the Admin tier) decide.
            for (&r, matched) in baseline.rules.iter().zip(baseline.matched) {
                let Some(matched) = matched else { continue };
                notes.effects.rules[r].matches = true;
                if !matched.intersection(&rest).is_empty() {
                    notes.effects.rules[r].decided_by_network_policies = true;
                }
            }
            return;
        }
        let baseline_decided = self.walk_tier(&baseline, &mut rest, example, notes);
        for (b, denied) in &baseline_decided {
            if self.cluster_rules[*b].action != Action::Deny {
                continue;
            }
            for (p, set) in &passes {
                if !set.intersection(denied).is_empty() {
                    notes.effects.rules[*p].reaches = true;
                }
            }
        }
    }

    /// One tier's walk over what is `open` (as [`Connectivity::tier`] judges it), noting each
    /// rule's effect and the ties between policies of equal priority; returns what each rule
    /// decided, in order.
    fn walk_tier(
        &self,
        tier: &Tier<'_>,
        open: &mut ConnSet,
        example: (usize, usize),
        notes: &mut Notes<'_>,
    ) -> Vec<(usize, ConnSet)> {
        let mut decided: Vec<(usize, ConnSet)> = Vec::new();
        let mut i = 0;
        while i < tier.rules.len() {
            // The policies of one priority from here on, each a run of consecutive rules.
            let priority = self.cluster_rules[tier.rules[i]].rule.priority;
            let mut j = i;
            while j < tier.rules.len()
                && self.cluster_rules[tier.rules[j]].rule.priority == priority
            {
                j += 1;
            }
            let group = Tier {
                rules: &tier.rules[i..j],
                matched: &tier.matched[i..j],
            };
            self.find_ties(&group, open, example, notes);
            for (&r, matched) in group.rules.iter().zip(group.matched) {
                let Some(matched) = matched else { continue };
                notes.effects.rules[r].matches = true;
                for (q, set) in &decided {
                    if !set.intersection(matched).is_empty() {
                        notes.shadowers[r].insert(*q);
                    }
                }
                let taken = matched.intersection(open);
                if taken.is_empty() {
                    continue;
                }
                notes.effects.rules[r].decides = true;
                *open = open.difference(&taken);
                decided.push((r, taken));
            }
            i = j;
        }
        decided
    }

    /// Ties among the rules of one priority (policies in name order, each a run of consecutive
    /// rules): two policies whose first-matching rules, each judging what is `open` on its own,
    /// decide a connection with different actions.
    fn find_ties(
        &self,
        group: &Tier<'_>,
        open: &ConnSet,
        example: (usize, usize),
        notes: &mut Notes<'_>,
    ) {
        // Per policy: what each of its rules would decide of `open` if it came first.
        let mut policies: Vec<Vec<(usize, ConnSet)>> = Vec::new();
        let mut last: Option<&str> = None;
        let mut left = ConnSet::none();
        for (&r, matched) in group.rules.iter().zip(group.matched) {
            let name = self.cluster_rules[r].rule.policy.as_str();
            if last != Some(name) {
                policies.push(Vec::new());
                last = Some(name);
                left = open.clone();
            }
            let decided = match matched {
                Some(matched) => matched.intersection(&left),
                None => ConnSet::none(),
            };
            left = left.difference(&decided);
            if let Some(list) = policies.last_mut() {
                list.push((r, decided));
            }
        }
        if policies.len() < 2 {
            return;
        }
        for (a, first) in policies.iter().enumerate() {
            for second in &policies[a + 1..] {
                for (ra, sa) in first.iter().filter(|(_, s)| !s.is_empty()) {
                    for (rb, sb) in second.iter().filter(|(_, s)| !s.is_empty()) {
                        let (xa, xb) = (
                            self.cluster_rules[*ra].action,
                            self.cluster_rules[*rb].action,
                        );
                        if xa == xb || notes.ties.contains(&(*ra, *rb)) {
                            continue;
                        }
                        let both = sa.intersection(sb);
                        if both.is_empty() {
                            continue;
                        }
                        notes.ties.insert((*ra, *rb));
                        notes.effects.ties.push(Tie {
                            first: self.cluster_rules[*ra].rule.clone(),
                            first_action: xa,
                            second: self.cluster_rules[*rb].rule.clone(),
                            second_action: xb,
                            example: (
                                self.parties[example.0].to_string(),
                                self.parties[example.1].to_string(),
                                both,
                            ),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{documents, materialized};
    use crate::workload::PodCidrs;

    const PODS: &str = "apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a, labels: {app: client}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.244.0.20}
";

    fn cnp(name: &str, tier: &str, priority: u16, ingress: &str) -> String {
        format!(
            "apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {{name: {name}}}
spec:
  tier: {tier}
  priority: {priority}
  subject: {{pods: {{podSelector: {{matchLabels: {{app: web}}}}}}}}
  ingress:
{ingress}"
        )
    }

    fn effects(policies: &[String]) -> ClusterRuleEffects {
        let mut docs = vec![PODS.to_string()];
        docs.extend(policies.iter().cloned());
        let cidrs = PodCidrs::parse(&["10.244.0.0/16"]).expect("cidr");
        let c = materialized(&documents(&docs), &cidrs);
        Connectivity::compute(&c, &cidrs).cluster_rule_effects()
    }

    fn names(rules: &[ClusterRuleRef]) -> Vec<String> {
        rules.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_rule_whose_connections_earlier_rules_decide_decides_nothing() {
        let e = effects(&[
            cnp(
                "a",
                "Admin",
                5,
                "    - {name: all, action: Deny, from: [{namespaces: {}}]}\n",
            ),
            cnp(
                "b",
                "Admin",
                9,
                "    - {name: client, action: Accept, from: [{pods: {podSelector: {matchLabels: {app: client}}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}\n    - {name: none, action: Accept, from: [{pods: {podSelector: {matchLabels: {app: nobody}}}}]}\n",
            ),
        ]);
        let [all, client, none] = &e.rules[..] else {
            panic!("{e:?}")
        };
        assert!(all.matches && all.decides && all.decided_earlier_by.is_empty());
        assert!(client.matches && !client.decides);
        assert_eq!(
            names(&client.decided_earlier_by),
            ["[Admin] a ingress[0] \"all\""]
        );
        assert!(!none.matches && !none.decides);
        assert!(e.ties.is_empty());
    }

    #[test]
    fn passes_reach_network_policies_or_baseline_denials_only() {
        let pass = "    - {name: pass, action: Pass, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}\n";
        // Nothing after the Pass: its traffic is allowed as by an Accept.
        let e = effects(&[cnp("a", "Admin", 5, pass)]);
        assert!(e.rules[0].decides && !e.rules[0].reaches);
        // A Baseline Deny of some of it: reached.
        let e = effects(&[
            cnp("a", "Admin", 5, pass),
            cnp(
                "z",
                "Baseline",
                5,
                "    - {name: deny, action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 80, end: 81}}}}]}\n",
            ),
        ]);
        assert!(e.rules[0].reaches);
        // A Baseline Accept of it changes nothing: not reached.
        let e = effects(&[
            cnp("a", "Admin", 5, pass),
            cnp(
                "z",
                "Baseline",
                5,
                "    - {name: ok, action: Accept, from: [{namespaces: {}}]}\n",
            ),
        ]);
        assert!(!e.rules[0].reaches);
    }

    #[test]
    fn equal_priorities_that_decide_alike_are_no_tie() {
        let deny_80 = "    - {name: d, action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}\n";
        let accept_all = "    - {name: ok, action: Accept, from: [{pods: {podSelector: {matchLabels: {app: client}}}}]}\n";
        let e = effects(&[
            cnp("b", "Admin", 5, deny_80),
            cnp("a", "Admin", 5, accept_all),
        ]);
        assert_eq!(e.ties.len(), 1, "{e:?}");
        let tie = &e.ties[0];
        assert_eq!(tie.first.to_string(), "[Admin] a ingress[0] \"ok\"");
        assert_eq!(tie.second.to_string(), "[Admin] b ingress[0] \"d\"");
        assert_eq!(
            (tie.first_action, tie.second_action),
            (Action::Accept, Action::Deny)
        );
        assert_eq!(
            (tie.example.0.as_str(), tie.example.1.as_str()),
            ("a/client[Pod]", "a/web[Pod]")
        );
        assert_eq!(tie.example.2.to_string(), "TCP 80");
        // Both denying: no tie; other priorities: no tie.
        let deny_all = "    - {name: ok, action: Deny, from: [{pods: {podSelector: {matchLabels: {app: client}}}}]}\n";
        assert!(effects(&[
            cnp("b", "Admin", 5, deny_80),
            cnp("a", "Admin", 5, deny_all)
        ])
        .ties
        .is_empty());
        assert!(effects(&[
            cnp("b", "Admin", 5, deny_80),
            cnp("a", "Admin", 6, accept_all)
        ])
        .ties
        .is_empty());
        // A higher priority deciding it first leaves no tie.
        let e = effects(&[
            cnp("b", "Admin", 5, deny_80),
            cnp("a", "Admin", 5, accept_all),
            cnp(
                "early",
                "Admin",
                1,
                "    - {name: first, action: Deny, from: [{namespaces: {}}]}\n",
            ),
        ]);
        assert!(e.ties.is_empty(), "{e:?}");
    }
}

#[cfg(test)]
mod agreement {
    use std::collections::HashMap;

    use crate::analysis::{evaluate, evaluate_portless, Endpoint};
    use crate::generate::cluster_policies::with_cluster_policies;
    use crate::generate::{cluster, Shape};
    use crate::model::Protocol;
    use crate::workload::PodCidrs;

    use super::*;

    /// Every rule the evaluator finds deciding a connection (the first match of its tier) is one
    /// the effects say decides something: no rule is called shadowed that decides a connection.
    #[test]
    fn the_rules_that_decide_some_verdict_are_the_ones_said_to_decide() {
        let cidrs = PodCidrs::parse(&["10.0.0.0/16", "fd00::/48"]).expect("cidrs");
        let mut judged = 0;
        for seed in 0..40 {
            let shape = Shape {
                pods: 8,
                ..Shape::default()
            };
            let c = with_cluster_policies(&cluster(seed, shape), seed, 5, shape.nodes);
            let effects = Connectivity::compute(&c, &cidrs).cluster_rule_effects();
            let decides: HashMap<String, bool> = effects
                .rules
                .iter()
                .map(|e| (e.rule.to_string(), e.decides && e.matches))
                .collect();
            let pods: Vec<_> = c.participating_pods().collect();
            let mut ends: Vec<Endpoint<'_>> = Vec::new();
            for p in &pods {
                for ip in &p.ips {
                    ends.push(Endpoint::pod(p, *ip));
                }
            }
            for ip in [
                "192.0.2.1",
                "192.168.0.1",
                "192.168.0.2",
                "8.8.8.8",
                "fd00:0:1::9",
            ] {
                ends.push(Endpoint::from_ip(&c, ip.parse().expect("ip")));
            }
            for a in &ends {
                for b in &ends {
                    if (a.pod.is_none() && b.pod.is_none())
                        || crate::cidr::Family::of(&a.ip) != crate::cidr::Family::of(&b.ip)
                    {
                        continue;
                    }
                    for probe in [
                        Some((Protocol::Tcp, 80)),
                        Some((Protocol::Udp, 53)),
                        Some((Protocol::Tcp, 8080)),
                        None,
                    ] {
                        let v = match probe {
                            Some((protocol, port)) => evaluate(&c, *a, *b, protocol, port),
                            None => evaluate_portless(&c, *a, *b),
                        };
                        if v.loopback {
                            continue;
                        }
                        let mut directions = vec![&v.egress];
                        if !v.node_local {
                            directions.push(&v.ingress);
                        }
                        for d in directions {
                            for m in &d.tiers {
                                assert_eq!(
                                    decides.get(&m.rule.to_string()),
                                    Some(&true),
                                    "seed {seed}: {} decides {} -> {}",
                                    m.rule,
                                    v.from,
                                    v.to
                                );
                                judged += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(judged > 1000, "{judged} decisions compared");
    }
}
