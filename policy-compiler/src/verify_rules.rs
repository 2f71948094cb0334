//! Must-allow and must-deny expectations, checked against the connectivity (`policyc verify`).
//!
//! # The rules file
//!
//! ```yaml
//! rules:
//!   - name: web accepts the frontend on 8080
//!     allow:                               # or deny:
//!       from: {workload: shop/frontend}
//!       to: {workload: "shop/web[Deployment]"}
//!       protocol: TCP                      # TCP (the default), UDP, SCTP or ICMP
//!       port: 8080                         # or a range: ports: 8080-8090
//!   - name: nothing outside reaches the database
//!     deny:
//!       from: {cidr: 0.0.0.0/0}
//!       to: {pods: {namespace: db, labels: {app: postgres}}}
//! ```
//!
//! Each rule has a `name` and exactly one of `allow` or `deny`, each with `from` and `to`, an
//! optional `protocol` and an optional `port` or `ports` (the two keys are the same: one port,
//! `8080`, or an inclusive range, `8080-8090`; absent: every port, 1-65535). `protocol: ICMP`, which
//! takes no port, is ICMP and every other protocol without ports (what ClusterNetworkPolicy rules
//! without `protocols` decide). An endpoint is exactly one of:
//!
//! - `workload: ns/name[Kind]` (or `ns/name`, any kind): the workload's pods, also when they are
//!   reported one by one (`ns/pod[Pod]`) because they behave differently; a party of the
//!   connectivity report is named the same way;
//! - `namespace: NAME`: every workload of the namespace;
//! - `pods: {namespace: NAME, labels: {KEY: VALUE}}`: the workloads with a pod in the namespace
//!   (any namespace when absent) whose labels match (`matchLabels`; every pod when absent);
//! - `namespaceLabels: {KEY: VALUE}`: the workloads of the namespaces whose labels match;
//! - `cidr: PREFIX`: the external addresses in the prefix: those outside the pod CIDRs, judged
//!   per external range of the connectivity report (a range counts for the addresses it shares
//!   with the prefix), and the nodes with an address in it (over the prefix's family). Pods are
//!   chosen by the other forms, never by `cidr`;
//! - `node: NAME`: a Node of the input, as pods on other nodes and as its own pods reach it
//!   (both `node/NAME` and `node/NAME (own node)` of the connectivity report).
//!
//! # What holds
//!
//! The pairs a rule judges are every selected source with every selected destination, except a
//! workload with itself (as `connections` leaves it out) and a workload with the side of a node
//! none of its pods is on ([`Connectivity::has_pair`]); `from` and `to` cannot both be `cidr` or
//! `node`.
//! A pair is judged over every address family both ends have; a pair that shares none allows
//! nothing. An `allow` holds when every pair allows every port of the range over every family; a
//! `deny` holds when no pair allows any port of the range over any family. A selector that
//! matches nothing, or a rule left with no pair, is an error in the rules file, not a rule that
//! holds.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{json, Value};
use serde_saphyr::Spanned;

use crate::analysis::connectivity::report::connection_json;
use crate::analysis::connectivity::{ConnSet, Connection, Connectivity, Lookup, Party, PortRanges};
use crate::analysis::TierMatch;
use crate::cidr::{from_u128, to_u128, Cidr, Family};
use crate::cluster::ClusterState;
use crate::model::{ObjectRef, Protocol, WorkloadRef};
use crate::selector::{LabelSelector, Labels};

/// How rules files and reports name ICMP (with every protocol without ports).
const ICMP: &str = "ICMP";

/// Whether a rule demands that connections be allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectationKind {
    /// Every pair must allow every port of the range.
    Allow,
    /// No pair may allow any port of the range.
    Deny,
}

impl ExpectationKind {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectationKind::Allow => "allow",
            ExpectationKind::Deny => "deny",
        }
    }
}

/// One end of a rule: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `ns/name[Kind]` or `ns/name`.
    Workload(String),
    /// Every workload of a namespace.
    Namespace(String),
    /// Workloads with a pod in the namespace (any when `None`) whose labels match.
    Pods {
        /// The namespace, if one.
        namespace: Option<String>,
        /// The pods' labels.
        labels: LabelSelector,
    },
    /// Workloads of the namespaces whose labels match.
    NamespaceLabels(LabelSelector),
    /// External addresses in a prefix (and the nodes with an address in it).
    Cidr(Cidr),
    /// A Node.
    Node(String),
}

/// A place in the rules file, 1-based (0: unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Spot {
    line: u64,
    column: u64,
}

impl Spot {
    fn of(location: &serde_saphyr::Location) -> Self {
        Self {
            line: location.line(),
            column: location.column(),
        }
    }
}

/// One expectation of the rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Its `name`.
    pub name: String,
    /// `allow` or `deny`.
    pub kind: ExpectationKind,
    /// The sources.
    pub from: Endpoint,
    /// The destinations.
    pub to: Endpoint,
    /// TCP, UDP or SCTP; `None`: ICMP, with every protocol without ports.
    pub protocol: Option<Protocol>,
    /// The inclusive port range (1-65535 for ICMP, which has none).
    pub ports: (u16, u16),
    /// Where the rule, its `from` and its `to` are.
    spots: [Spot; 3],
}

impl Expectation {
    /// The connections the rule is about, e.g. `TCP 8080-8090`, or the other protocols for ICMP.
    pub fn connections(&self) -> ConnSet {
        match self.protocol {
            Some(protocol) => {
                ConnSet::ports(protocol, PortRanges::range(self.ports.0, self.ports.1))
            }
            None => ConnSet::other_protocols(),
        }
    }

    /// What the rule is about, as reports write it: `TCP 8080-8090`, or `ICMP`.
    pub fn traffic(&self) -> String {
        match self.protocol {
            Some(_) => self.connections().to_string(),
            None => ICMP.to_string(),
        }
    }
}

/// A parsed rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesFile {
    /// Its name, for messages.
    pub file: String,
    /// The rules, in order.
    pub rules: Vec<Expectation>,
}

/// A problem in the rules file, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RulesError {
    /// The file.
    pub file: String,
    /// 1-based line (0: unknown).
    pub line: u64,
    /// 1-based column (0: unknown).
    pub column: u64,
    /// The rule's index in `rules`, and its name when it has one.
    pub rule: Option<(usize, Option<String>)>,
    /// The field, within the rule (`allow.from.cidr`) or the file.
    pub field: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        f.write_str(": ")?;
        match &self.rule {
            Some((i, Some(name))) => write!(f, "rules[{i}] ({name:?}): ")?,
            Some((i, None)) => write!(f, "rules[{i}]: ")?,
            None => {}
        }
        if let Some(field) = &self.field {
            write!(f, "field {field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a rules file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct RulesErrors(pub Vec<RulesError>);

// The file as written. `Spanned` keeps each node's place for the checks after parsing.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    allow: Option<Spanned<RawExpectation>>,
    deny: Option<Spanned<RawExpectation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectation {
    from: Spanned<RawEndpoint>,
    to: Spanned<RawEndpoint>,
    protocol: Option<Spanned<String>>,
    port: Option<Spanned<RawPorts>>,
    ports: Option<Spanned<RawPorts>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEndpoint {
    workload: Option<String>,
    namespace: Option<String>,
    pods: Option<RawPods>,
    namespace_labels: Option<Labels>,
    cidr: Option<String>,
    node: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPods {
    namespace: Option<String>,
    labels: Option<Labels>,
}

/// A port (`8080`) or an inclusive range (`8080-8090`), as written.
enum RawPorts {
    Number(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawPorts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawPorts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (8080) or an inclusive range (8080-8090)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawPorts, E> {
                Ok(RawPorts::Number(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawPorts, E> {
                Ok(RawPorts::Text(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPorts, E> {
                Ok(RawPorts::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

const PORTS_EXPECTED: &str = "expected a port 1-65535 (8080) or an inclusive range (8080-8090)";

fn port_range(raw: &RawPorts) -> Result<(u16, u16), String> {
    let port = |s: &str| -> Result<u16, String> {
        match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("{s:?}: {PORTS_EXPECTED}")),
        }
    };
    match raw {
        RawPorts::Number(n) => match u16::try_from(*n) {
            Ok(p) if p > 0 => Ok((p, p)),
            _ => Err(format!("{n}: {PORTS_EXPECTED}")),
        },
        RawPorts::Text(text) => {
            let (a, b) = match text.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => {
                    let p = port(text)?;
                    (p, p)
                }
            };
            if a > b {
                return Err(format!(
                    "{text:?}: the range ends before it starts; {PORTS_EXPECTED}"
                ));
            }
            Ok((a, b))
        }
    }
}

/// The path of a field within a rule, from the deserializer's path: without the `rules[i]` prefix
/// and the `value` steps of the span wrappers.
fn field_of(path: &serde_path_to_error::Path) -> (Option<usize>, Option<String>) {
    use serde_path_to_error::Segment;
    const SPANNED: [&str; 7] = ["allow", "deny", "from", "to", "protocol", "port", "ports"];
    let mut rule = None;
    let mut parts: Vec<String> = Vec::new();
    let mut after_span = false;
    let mut segments = path.iter().peekable();
    if let Some(Segment::Map { key }) = segments.peek() {
        if key == "rules" {
            segments.next();
            if let Some(Segment::Seq { index }) = segments.peek() {
                rule = Some(*index);
                segments.next();
                after_span = true;
            } else {
                parts.push("rules".to_string());
            }
        }
    }
    for segment in segments {
        let text = match segment {
            Segment::Seq { index } => {
                if let Some(last) = parts.last_mut() {
                    last.push_str(&format!("[{index}]"));
                }
                after_span = false;
                continue;
            }
            Segment::Map { key } => key.clone(),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => "?".to_string(),
        };
        if after_span && text == "value" {
            after_span = false;
            continue;
        }
        after_span = SPANNED.contains(&text.as_str());
        parts.push(text);
    }
    (rule, (!parts.is_empty()).then(|| parts.join(".")))
}

/// Parses and checks a rules file's text (`file` names it in messages).
pub fn parse(file: &str, text: &str) -> Result<RulesFile, RulesErrors> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let mut path = None;
    let raw: Result<RawFile, serde_saphyr::Error> =
        serde_saphyr::with_deserializer_from_str_with_options(text, options.clone(), |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                path = Some(field_of(e.path()));
                e.into_inner()
            })
        });
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            let spot = e.location().map(|l| Spot::of(&l)).unwrap_or_default();
            let (rule, field) = path.unwrap_or((None, None));
            // The rule's name, if the file reads well enough to find it.
            let name = rule.and_then(|i| {
                let loose: serde_json::Value =
                    serde_saphyr::from_str_with_options(text, options).ok()?;
                loose["rules"][i]["name"].as_str().map(str::to_string)
            });
            let mut message = e.to_string();
            // The place is given in front, as for every other error.
            let suffix = format!(" at line {}, column {}", spot.line, spot.column);
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
            return Err(RulesErrors(vec![RulesError {
                file: file.to_string(),
                line: spot.line,
                column: spot.column,
                rule: rule.map(|i| (i, name)),
                field,
                message,
            }]));
        }
    };
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    if raw.rules.is_empty() {
        errors.push(RulesError {
            file: file.to_string(),
            line: 0,
            column: 0,
            rule: None,
            field: Some("rules".to_string()),
            message: "no rules: give at least one (an empty file verifies nothing)".to_string(),
        });
    }
    for (i, raw_rule) in raw.rules.into_iter().enumerate() {
        let error = |spot: Spot, field: Option<String>, message: String| RulesError {
            file: file.to_string(),
            line: spot.line,
            column: spot.column,
            rule: Some((i, Some(raw_rule.value.name.clone()))),
            field,
            message,
        };
        let rule_spot = Spot::of(&raw_rule.referenced);
        let (kind, expectation) = match (&raw_rule.value.allow, &raw_rule.value.deny) {
            (Some(e), None) => (ExpectationKind::Allow, e),
            (None, Some(e)) => (ExpectationKind::Deny, e),
            (Some(_), Some(e)) => {
                errors.push(error(
                    Spot::of(&e.referenced),
                    Some("deny".to_string()),
                    "give one of allow or deny, not both".to_string(),
                ));
                continue;
            }
            (None, None) => {
                errors.push(error(
                    rule_spot,
                    None,
                    "give one of allow or deny".to_string(),
                ));
                continue;
            }
        };
        let key = kind.as_str();
        let before = errors.len();
        if raw_rule.value.name.trim().is_empty() {
            errors.push(error(
                rule_spot,
                Some("name".to_string()),
                "must not be empty".to_string(),
            ));
        }
        let e = &expectation.value;
        let mut endpoint = |raw: &Spanned<RawEndpoint>, side: &str| -> Option<Endpoint> {
            match parse_endpoint(&raw.value) {
                Ok(endpoint) => Some(endpoint),
                Err((sub, message)) => {
                    let field = match sub {
                        Some(sub) => format!("{key}.{side}.{sub}"),
                        None => format!("{key}.{side}"),
                    };
                    errors.push(error(Spot::of(&raw.referenced), Some(field), message));
                    None
                }
            }
        };
        let from = endpoint(&e.from, "from");
        let to = endpoint(&e.to, "to");
        let outside =
            |e: &Option<Endpoint>| matches!(e, Some(Endpoint::Cidr(_) | Endpoint::Node(_)));
        if outside(&from) && outside(&to) {
            errors.push(error(
                Spot::of(&e.to.referenced),
                Some(format!("{key}.to")),
                "from and to are both cidr or node: connections between addresses outside the \
                 pods are not judged"
                    .to_string(),
            ));
        }
        let protocol = match &e.protocol {
            None => Some(Some(Protocol::Tcp)),
            Some(p) if p.value == ICMP => {
                if let Some(port) = e.port.as_ref().or(e.ports.as_ref()) {
                    errors.push(error(
                        Spot::of(&port.referenced),
                        Some(format!(
                            "{key}.{}",
                            if e.port.is_some() { "port" } else { "ports" }
                        )),
                        "ICMP has no ports: give none".to_string(),
                    ));
                }
                Some(None)
            }
            Some(p) => {
                let protocol = Protocol::from_api(&p.value);
                if protocol.is_none() {
                    errors.push(error(
                        Spot::of(&p.referenced),
                        Some(format!("{key}.protocol")),
                        format!("{:?}: expected TCP, UDP, SCTP or ICMP", p.value),
                    ));
                }
                protocol.map(Some)
            }
        };
        let ports = match (&e.port, &e.ports) {
            (Some(_), Some(p)) => {
                errors.push(error(
                    Spot::of(&p.referenced),
                    Some(format!("{key}.ports")),
                    "give port or ports, not both".to_string(),
                ));
                None
            }
            (Some(p), None) | (None, Some(p)) => {
                let field = if e.port.is_some() { "port" } else { "ports" };
                match port_range(&p.value) {
                    Ok(range) => Some(range),
                    Err(message) => {
                        errors.push(error(
                            Spot::of(&p.referenced),
                            Some(format!("{key}.{field}")),
                            message,
                        ));
                        None
                    }
                }
            }
            (None, None) => Some((1, u16::MAX)),
        };
        if errors.len() > before {
            continue;
        }
        if let (Some(from), Some(to), Some(protocol), Some(ports)) = (from, to, protocol, ports) {
            rules.push(Expectation {
                name: raw_rule.value.name.clone(),
                kind,
                from,
                to,
                protocol,
                ports,
                spots: [
                    rule_spot,
                    Spot::of(&e.from.referenced),
                    Spot::of(&e.to.referenced),
                ],
            });
        }
    }
    errors.sort_by_key(|e| (e.line, e.column));
    if errors.is_empty() {
        Ok(RulesFile {
            file: file.to_string(),
            rules,
        })
    } else {
        Err(RulesErrors(errors))
    }
}

/// An endpoint, or the sub-field that is wrong and why.
fn parse_endpoint(raw: &RawEndpoint) -> Result<Endpoint, (Option<&'static str>, String)> {
    const FORMS: &str = "workload, namespace, pods, namespaceLabels, cidr or node";
    let given = [
        raw.workload.is_some(),
        raw.namespace.is_some(),
        raw.pods.is_some(),
        raw.namespace_labels.is_some(),
        raw.cidr.is_some(),
        raw.node.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err((None, format!("give exactly one of {FORMS} (found {given})")));
    }
    let labels = |labels: &Labels| LabelSelector::from_labels(labels.iter());
    if let Some(name) = &raw.workload {
        let well_formed = match name.split_once('/') {
            Some((ns, rest)) if !ns.is_empty() && !rest.is_empty() => {
                !rest.contains(['[', ']']) || WorkloadRef::parse(name).is_some()
            }
            _ => false,
        };
        if !well_formed {
            return Err((
                Some("workload"),
                format!("{name:?}: expected namespace/name[Kind] or namespace/name"),
            ));
        }
        return Ok(Endpoint::Workload(name.clone()));
    }
    if let Some(namespace) = &raw.namespace {
        if namespace.is_empty() {
            return Err((Some("namespace"), "must not be empty".to_string()));
        }
        return Ok(Endpoint::Namespace(namespace.clone()));
    }
    if let Some(pods) = &raw.pods {
        if pods.namespace.as_deref() == Some("") {
            return Err((Some("pods.namespace"), "must not be empty".to_string()));
        }
        return Ok(Endpoint::Pods {
            namespace: pods.namespace.clone(),
            labels: pods
                .labels
                .as_ref()
                .map(labels)
                .unwrap_or_else(LabelSelector::everything),
        });
    }
    if let Some(selector) = &raw.namespace_labels {
        return Ok(Endpoint::NamespaceLabels(labels(selector)));
    }
    if let Some(node) = &raw.node {
        if node.is_empty() {
            return Err((Some("node"), "must not be empty".to_string()));
        }
        return Ok(Endpoint::Node(node.clone()));
    }
    let text = raw.cidr.as_deref().unwrap_or_default();
    let cidr: Cidr = text
        .parse()
        .map_err(|e: crate::cidr::CidrError| (Some("cidr"), e.to_string()))?;
    let (address, _) = text.split_once('/').unwrap_or((text, ""));
    if address.parse::<IpAddr>().ok() != Some(cidr.addr()) {
        return Err((
            Some("cidr"),
            format!("{text:?}: host bits are set; the network is {cidr}"),
        ));
    }
    Ok(Endpoint::Cidr(cidr))
}

/// A pair that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Source (for an external range, the part of it in the rule's prefix).
    pub from: Party,
    /// Destination.
    pub to: Party,
    /// The family, when the pair's families differ (`None`: every family it has, or an external
    /// range's own).
    pub family: Option<Family>,
    /// What the pair allows (for a deny, more than the rule's ports; for an allow, less).
    pub allowed: ConnSet,
    /// The NetworkPolicies deciding the pair: isolating either end, or allowing
    /// ([`Connectivity::causes`]).
    pub policies: Vec<ObjectRef>,
    /// The ClusterNetworkPolicy rules deciding some of its connections, with their action.
    pub cluster_rules: Vec<TierMatch>,
    /// The two ends have no address family in common: nothing can pass between them, whatever
    /// the policies (which are then not named).
    pub no_shared_family: bool,
}

impl Violation {
    /// The pair as a connection.
    pub fn connection(&self) -> Connection<'_> {
        Connection {
            from: &self.from,
            to: &self.to,
            family: self.family,
            allowed: &self.allowed,
        }
    }
}

/// How a rule fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<'r> {
    /// The rule.
    pub rule: &'r Expectation,
    /// How many pairs break it.
    pub violation_count: usize,
    /// The first of them (as many as asked for), with their causes.
    pub violations: Vec<Violation>,
}

impl Outcome<'_> {
    /// Whether the rule holds.
    pub fn holds(&self) -> bool {
        self.violation_count == 0
    }
}

/// A party a rule's endpoint selects, and how it is shown (an external range cut to the prefix).
struct Selected<'a> {
    party: &'a Party,
    shown: Party,
    /// The only family it is judged over (an external range's, or a prefix's for a node it
    /// selects); `None`: every family the pair shares.
    family: Option<Family>,
}

fn select<'a>(
    endpoint: &Endpoint,
    cluster: &ClusterState,
    lookup: &Lookup<'a>,
) -> Vec<Selected<'a>> {
    let mut out = Vec::new();
    for party in lookup.connectivity().parties() {
        let selected = match (party, endpoint) {
            (Party::External { first, last }, Endpoint::Cidr(cidr)) => {
                if Family::of(first) != cidr.family() {
                    continue;
                }
                let (lo, hi) = cidr.bounds();
                let (a, b) = (to_u128(first).max(lo), to_u128(last).min(hi));
                if a > b {
                    continue;
                }
                out.push(Selected {
                    party,
                    shown: Party::External {
                        first: from_u128(cidr.family(), a),
                        last: from_u128(cidr.family(), b),
                    },
                    family: Some(cidr.family()),
                });
                continue;
            }
            (Party::Node(n), Endpoint::Cidr(cidr)) => {
                if n.addresses.iter().any(|ip| cidr.contains(ip)) {
                    out.push(Selected {
                        party,
                        shown: party.clone(),
                        family: Some(cidr.family()),
                    });
                }
                continue;
            }
            (Party::Node(n), Endpoint::Node(name)) => &n.name == name,
            (Party::External { .. } | Party::Node(_), _)
            | (Party::Workload(_), Endpoint::Cidr(_) | Endpoint::Node(_)) => false,
            (Party::Workload(w), endpoint) => {
                let mut pods = lookup
                    .members(party)
                    .iter()
                    .filter_map(|id| cluster.pod(id));
                match endpoint {
                    Endpoint::Workload(name) => {
                        party.is_named(name)
                            || pods.any(|p| Party::Workload(p.workload_ref()).is_named(name))
                    }
                    Endpoint::Namespace(ns) => &w.namespace == ns,
                    Endpoint::Pods { namespace, labels } => {
                        namespace.as_ref().is_none_or(|ns| &w.namespace == ns)
                            && pods.any(|p| labels.matches(&p.labels))
                    }
                    Endpoint::NamespaceLabels(selector) => cluster
                        .namespace(&w.namespace)
                        .is_some_and(|n| selector.matches(&n.labels)),
                    Endpoint::Cidr(_) | Endpoint::Node(_) => false,
                }
            }
        };
        if selected {
            out.push(Selected {
                party,
                shown: party.clone(),
                family: party.family(),
            });
        }
    }
    out
}

/// Why an endpoint selects nothing.
fn nothing(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Workload(name) => {
            format!("no workload {name} in the input (host-network and finished pods take no part)")
        }
        Endpoint::Namespace(ns) => format!("no workload in namespace {ns}"),
        Endpoint::Pods {
            namespace: Some(ns),
            ..
        } => format!("no pod of namespace {ns} has these labels"),
        Endpoint::Pods {
            namespace: None, ..
        } => "no pod has these labels".to_string(),
        Endpoint::NamespaceLabels(_) => "no workload in a namespace with these labels".to_string(),
        Endpoint::Cidr(cidr) => {
            format!("no external address in {cidr} (addresses in the pod CIDRs are pods')")
        }
        Endpoint::Node(name) => format!("no Node {name} in the input"),
    }
}

/// Whether `allowed` satisfies the rule.
fn satisfies(rule: &Expectation, allowed: Option<&ConnSet>) -> bool {
    let Some(protocol) = rule.protocol else {
        let icmp = allowed.is_some_and(ConnSet::has_other_protocols);
        return match rule.kind {
            ExpectationKind::Allow => icmp,
            ExpectationKind::Deny => !icmp,
        };
    };
    let wanted = PortRanges::range(rule.ports.0, rule.ports.1);
    let ports = allowed.map(|s| s.protocol(protocol)).unwrap_or_default();
    match rule.kind {
        ExpectationKind::Allow => wanted.difference(&ports).is_empty(),
        ExpectationKind::Deny => wanted.intersection(&ports).is_empty(),
    }
}

/// Checks every rule against a (materialized) cluster's connectivity; `shown` is how many
/// violations per rule are kept with their causes (all are counted). A selector that matches
/// nothing, or a rule left with no pair, is an error.
pub fn check<'r>(
    rules: &'r RulesFile,
    cluster: &ClusterState,
    connectivity: &Connectivity,
    shown: usize,
) -> Result<Vec<Outcome<'r>>, RulesErrors> {
    let lookup = connectivity.lookup();
    let mut errors = Vec::new();
    let mut outcomes = Vec::new();
    for (i, rule) in rules.rules.iter().enumerate() {
        let error = |spot: Spot, field: String, message: String| RulesError {
            file: rules.file.clone(),
            line: spot.line,
            column: spot.column,
            rule: Some((i, Some(rule.name.clone()))),
            field: Some(field),
            message,
        };
        let key = rule.kind.as_str();
        let froms = select(&rule.from, cluster, &lookup);
        let tos = select(&rule.to, cluster, &lookup);
        let mut empty = false;
        for (selected, endpoint, side, spot) in [
            (&froms, &rule.from, "from", rule.spots[1]),
            (&tos, &rule.to, "to", rule.spots[2]),
        ] {
            if selected.is_empty() {
                errors.push(error(spot, format!("{key}.{side}"), nothing(endpoint)));
                empty = true;
            }
        }
        if empty {
            continue;
        }
        let mut pairs = 0;
        let mut outcome = Outcome {
            rule,
            violation_count: 0,
            violations: Vec::new(),
        };
        for a in &froms {
            for b in &tos {
                if !connectivity.has_pair(a.party, b.party) {
                    continue;
                }
                pairs += 1;
                let families: Vec<Family> = match (a.family, b.family) {
                    (Some(f), _) | (_, Some(f)) => {
                        let both = lookup.families(a.party).contains(&f)
                            && lookup.families(b.party).contains(&f);
                        if both {
                            vec![f]
                        } else {
                            Vec::new()
                        }
                    }
                    (None, None) => lookup.shared_families(a.party, b.party),
                };
                let mut broken: Vec<(Family, ConnSet)> = Vec::new();
                for f in &families {
                    let allowed = lookup.allowed(a.party, b.party, *f);
                    if !satisfies(rule, allowed) {
                        broken.push((*f, allowed.cloned().unwrap_or_default()));
                    }
                }
                let mut found: Vec<(Option<Family>, ConnSet, Vec<Family>)> = Vec::new();
                if families.is_empty() {
                    if !satisfies(rule, None) {
                        found.push((None, ConnSet::none(), Vec::new()));
                    }
                } else if broken.len() == families.len()
                    && broken.windows(2).all(|w| w[0].1 == w[1].1)
                {
                    found.push((None, broken[0].1.clone(), families.clone()));
                } else {
                    for (f, set) in broken {
                        found.push((Some(f), set, vec![f]));
                    }
                }
                for (family, allowed, judged) in found {
                    outcome.violation_count += 1;
                    if outcome.violations.len() >= shown {
                        continue;
                    }
                    let mut policies: BTreeSet<ObjectRef> = BTreeSet::new();
                    let mut cluster_rules: Vec<TierMatch> = Vec::new();
                    for f in judged {
                        let causes = connectivity.causes(a.party, b.party, f);
                        policies.extend(causes.policies().into_iter().cloned());
                        for m in causes.cluster_rules {
                            if !cluster_rules.contains(&m) {
                                cluster_rules.push(m);
                            }
                        }
                    }
                    outcome.violations.push(Violation {
                        from: a.shown.clone(),
                        to: b.shown.clone(),
                        family,
                        allowed,
                        policies: policies.into_iter().collect(),
                        cluster_rules,
                        no_shared_family: families.is_empty(),
                    });
                }
            }
        }
        if pairs == 0 {
            errors.push(error(
                rule.spots[0],
                key.to_string(),
                "from and to make no pair: a workload with itself is not judged, nor a workload \
                 with the side of a node none of its pods is on"
                    .to_string(),
            ));
            continue;
        }
        outcomes.push(outcome);
    }
    if errors.is_empty() {
        Ok(outcomes)
    } else {
        Err(RulesErrors(errors))
    }
}

fn policies_text(v: &Violation) -> String {
    if v.no_shared_family {
        " (no address family in common)".to_string()
    } else if v.policies.is_empty() && v.cluster_rules.is_empty() {
        " (no policy isolates either end)".to_string()
    } else {
        let names: Vec<String> = v
            .policies
            .iter()
            .map(ToString::to_string)
            .chain(v.cluster_rules.iter().map(TierMatch::cause))
            .collect();
        format!(" (by {})", names.join(", "))
    }
}

/// One line per rule (`holds: NAME` or `violated: NAME: ...`), the violating pairs under each
/// violated rule with what they allow and the policies deciding them, and a summary line.
pub fn to_text(outcomes: &[Outcome<'_>]) -> String {
    let mut out = String::new();
    let mut violated = 0;
    for o in outcomes {
        if o.holds() {
            out.push_str(&format!("holds: {}\n", o.rule.name));
            continue;
        }
        violated += 1;
        let pairs = if o.violation_count == 1 {
            "1 pair".to_string()
        } else {
            format!("{} pairs", o.violation_count)
        };
        let verb = match (o.rule.kind, o.violation_count == 1) {
            (ExpectationKind::Allow, true) => "does not allow",
            (ExpectationKind::Allow, false) => "do not allow",
            (ExpectationKind::Deny, true) => "allows",
            (ExpectationKind::Deny, false) => "allow",
        };
        // A range is broken by an allow missing one port of it, or a deny allowing one: say so,
        // rather than that the pair allows (or misses) the whole range.
        let quantity = match (o.rule.kind, o.rule.ports.0 == o.rule.ports.1) {
            _ if o.rule.protocol.is_none() => "",
            (_, true) => "",
            (ExpectationKind::Allow, false) => "all of ",
            (ExpectationKind::Deny, false) => "some of ",
        };
        out.push_str(&format!(
            "violated: {}: {pairs} {verb} {quantity}{}\n",
            o.rule.name,
            o.rule.traffic()
        ));
        for v in &o.violations {
            let c = v.connection();
            let family = c
                .family
                .map(|f| format!(" (IPv{} only)", f.number()))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {} => {} : {}{family}{}\n",
                c.from,
                c.to,
                c.allowed,
                policies_text(v)
            ));
        }
        if o.violation_count > o.violations.len() {
            out.push_str(&format!(
                "  and {} more\n",
                o.violation_count - o.violations.len()
            ));
        }
    }
    out.push_str(&format!(
        "{} of {} rule{} violated\n",
        violated,
        outcomes.len(),
        if outcomes.len() == 1 { "" } else { "s" }
    ));
    out
}

/// `{"rules": [{"name", "kind", "protocol", "ports": [a, b] (null for ICMP), "holds", "violation_count",
/// "violations": [{"from", "to", "all", "allowed", "policies"}]}]}`, each violation the pair's
/// connection as `connections -o json` writes it, with the NetworkPolicies deciding it, the
/// ClusterNetworkPolicy rules deciding some of it when there are any (`"cluster_rules"`, see
/// [`TierMatch::to_json`]), and `"no_shared_family": true` when the ends have no address family
/// in common.
pub fn to_json(outcomes: &[Outcome<'_>]) -> Value {
    let rules: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let violations: Vec<Value> = o
                .violations
                .iter()
                .map(|v| {
                    let mut c = connection_json(&v.connection());
                    let policies: Vec<String> =
                        v.policies.iter().map(ToString::to_string).collect();
                    c["policies"] = json!(policies);
                    if !v.cluster_rules.is_empty() {
                        c["cluster_rules"] = json!(v
                            .cluster_rules
                            .iter()
                            .map(TierMatch::to_json)
                            .collect::<Vec<_>>());
                    }
                    if v.no_shared_family {
                        c["no_shared_family"] = json!(true);
                    }
                    c
                })
                .collect();
            json!({
                "name": o.rule.name,
                "kind": o.rule.kind.as_str(),
                "protocol": o.rule.protocol.map_or(ICMP, Protocol::as_api),
                "ports": o.rule.protocol.map(|_| [o.rule.ports.0, o.rule.ports.1]),
                "holds": o.holds(),
                "violation_count": o.violation_count,
                "violations": violations,
            })
        })
        .collect();
    json!({ "rules": rules })
}

#[cfg(test)]
mod tests;
