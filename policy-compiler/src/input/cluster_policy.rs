//! Conversion of `ClusterNetworkPolicy` objects (network-policy-api, `v1alpha2` and `v1beta1`,
//! which share one schema) to the internal model, with the validation of the API's CRD: its
//! OpenAPI schema (types, enums, bounds, list lengths, "exactly one of" objects) and its CEL rules.
//! The experimental channel's fields are read (`nodes` peers, named ports); `domainNames` peers
//! are rejected, as nftpolicy does not enforce them.
//!
//! Unknown fields are treated as the API server treats fields its CRD does not define: dropped
//! (pruned) before validation, so an object written for a newer schema still reads. The exception
//! is a peer that sets no field nftpolicy knows: the API says such a peer comes from a newer
//! version and must fail closed, so it becomes [`ClusterPeer::Unknown`]. Null values count as
//! absent, as the API server prunes them too.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::convert::{
    annotation_field, enforcement_annotation, name_of, selector, typed, Checker, FieldResult,
};
use super::RawObject;
use crate::cidr::{Cidr, CidrError};
use crate::model::{
    Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, Direction, Enforcement,
    PodsSelector, Protocol, Subject, Tier, ENFORCEMENT_ANNOTATION,
};
use crate::selector::LabelSelector;

/// The most rules a direction has, peers a rule has, protocols a rule has, and CIDRs a
/// `networks` peer has (the CRD's `maxItems`).
const MAX_ITEMS: usize = 25;

/// The longest rule name, in characters (the CRD's `maxLength`).
const MAX_RULE_NAME: usize = 100;

/// The longest `networks` entry, in characters (the CRD's `maxLength`).
const MAX_CIDR_LENGTH: usize = 43;

/// The object, as far as the schema goes (status is not read).
#[derive(Deserialize)]
struct ApiObject {
    #[serde(default)]
    metadata: meta::ObjectMeta,
    spec: Option<ApiSpec>,
}

/// `spec`. "Exactly one of" objects are kept as maps, to tell set, unknown and conflicting
/// fields apart.
#[derive(Deserialize)]
struct ApiSpec {
    tier: Option<String>,
    priority: Option<i64>,
    subject: Option<Map<String, Value>>,
    ingress: Option<Vec<ApiIngressRule>>,
    egress: Option<Vec<ApiEgressRule>>,
}

#[derive(Deserialize)]
struct ApiIngressRule {
    name: Option<String>,
    action: Option<String>,
    from: Option<Vec<Map<String, Value>>>,
    protocols: Option<Vec<Map<String, Value>>>,
}

#[derive(Deserialize)]
struct ApiEgressRule {
    name: Option<String>,
    action: Option<String>,
    to: Option<Vec<Map<String, Value>>>,
    protocols: Option<Vec<Map<String, Value>>>,
}

/// `NamespacedPod`: a subject's or a peer's `pods`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiNamespacedPod {
    namespace_selector: Option<ApiLabelSelector>,
    pod_selector: Option<ApiLabelSelector>,
}

/// A label selector, its requirements' `key` and `operator` required as the CRD requires them
/// (`k8s-openapi` reads them as empty when absent).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiLabelSelector {
    match_labels: Option<std::collections::BTreeMap<String, String>>,
    match_expressions: Option<Vec<ApiRequirement>>,
}

#[derive(Deserialize)]
struct ApiRequirement {
    key: String,
    operator: String,
    values: Option<Vec<String>>,
}

impl ApiLabelSelector {
    /// Checked as NetworkPolicy's selectors are.
    fn convert(self, c: &Checker<'_>, field: &str) -> FieldResult<LabelSelector> {
        let s = meta::LabelSelector {
            match_labels: self.match_labels,
            match_expressions: self.match_expressions.map(|list| {
                list.into_iter()
                    .map(|r| meta::LabelSelectorRequirement {
                        key: r.key,
                        operator: r.operator,
                        values: r.values,
                    })
                    .collect()
            }),
        };
        selector(c, field, Some(&s))
    }
}

/// The value of `tcp`, `udp` or `sctp`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiProtocolMatch {
    destination_port: Option<Map<String, Value>>,
}

/// A `destinationPort`'s `range`.
#[derive(Deserialize)]
struct ApiPortRange {
    start: Option<i64>,
    end: Option<i64>,
}

/// The fields of an "exactly one of" object (the CRD's `minProperties: 1`, `maxProperties: 1`).
struct OneOf<'a, F> {
    /// The known fields set, in the order of the list they were looked up in.
    set: Vec<(&'static str, F, &'a Value)>,
    /// The other fields set.
    unknown: Vec<&'a str>,
}

impl<'a, F: Copy> OneOf<'a, F> {
    fn of(map: &'a Map<String, Value>, fields: &[(&'static str, F)]) -> Self {
        let set = fields
            .iter()
            .filter_map(|(name, field)| {
                map.get(*name)
                    .filter(|v| !v.is_null())
                    .map(|v| (*name, *field, v))
            })
            .collect();
        let unknown = map
            .iter()
            .filter(|(k, v)| !v.is_null() && !fields.iter().any(|(name, _)| name == k))
            .map(|(k, _)| k.as_str())
            .collect();
        Self { set, unknown }
    }

    /// The names of the known fields set, `a and b` or `a, b and c`.
    fn set_names(&self) -> String {
        let names: Vec<&str> = self.set.iter().map(|(name, _, _)| *name).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }

    /// `; foo is not one of them` when unknown fields are set, for "none set" messages.
    fn unknown_note(&self) -> String {
        match self.unknown.as_slice() {
            [] => String::new(),
            [one] => format!(" ({one} is not one of them)"),
            many => format!(" ({} are not among them)", many.join(", ")),
        }
    }
}

/// `field` then a path inside it, as `serde_path_to_error` prints paths (`.` for the value
/// itself).
fn join(field: &str, inner: &str) -> String {
    match inner {
        "." | "" => field.to_string(),
        s if s.starts_with('[') => format!("{field}{s}"),
        s => format!("{field}.{s}"),
    }
}

/// Deserializes a part of the object found at `field`, errors located inside it.
fn typed_at<T: DeserializeOwned>(c: &Checker<'_>, field: &str, value: &Value) -> FieldResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        c.error(join(field, &inner), e.into_inner().to_string())
    })
}

fn label_selector(c: &Checker<'_>, field: &str, value: &Value) -> FieldResult<LabelSelector> {
    typed_at::<ApiLabelSelector>(c, field, value)?.convert(c, field)
}

fn pods_selector(c: &Checker<'_>, field: &str, value: &Value) -> FieldResult<PodsSelector> {
    let p: ApiNamespacedPod = typed_at(c, field, value)?;
    let pods_field = format!("{field}.podSelector");
    let Some(pods) = p.pod_selector else {
        return Err(c.error(
            pods_field,
            "is required ({} selects every pod of the namespaces)",
        ));
    };
    let namespaces = match p.namespace_selector {
        None => LabelSelector::everything(),
        Some(s) => s.convert(c, &format!("{field}.namespaceSelector"))?,
    };
    Ok(PodsSelector {
        namespaces,
        pods: pods.convert(c, &pods_field)?,
    })
}

/// Checks a list's length against the CRD's `minItems` (`min`) and `maxItems` (25).
fn check_count(
    c: &Checker<'_>,
    field: &str,
    len: usize,
    min: usize,
    items: &str,
) -> FieldResult<()> {
    if len < min {
        return Err(c.error(
            field,
            format!("is empty: it lists {min} to {MAX_ITEMS} {items}"),
        ));
    }
    if len > MAX_ITEMS {
        return Err(c.error(
            field,
            format!("lists {len} {items}: at most {MAX_ITEMS} are allowed"),
        ));
    }
    Ok(())
}

/// Converts a `ClusterNetworkPolicy` (`policy.networking.k8s.io/v1beta1` or `v1alpha2`).
pub fn cluster_policy_from_api(object: &RawObject) -> FieldResult<ClusterNetworkPolicy> {
    let c = Checker::raw(object, "ClusterNetworkPolicy", false);
    let api: ApiObject = typed(&c, &object.value)?;
    let name = name_of(&c, &api.metadata)?;
    check_enforcement(&c, &api.metadata)?;
    let spec = api.spec.ok_or_else(|| c.error("spec", "is required"))?;

    let tier = match spec.tier.as_deref() {
        None => return Err(c.error("spec.tier", "is required: Admin or Baseline")),
        Some(t) => Tier::from_api(t).ok_or_else(|| {
            c.error(
                "spec.tier",
                format!("unknown tier {t:?}: use Admin or Baseline"),
            )
        })?,
    };
    let priority = match spec.priority {
        None => {
            return Err(c.error(
                "spec.priority",
                "is required: 0 to 1000, lower values evaluated first",
            ))
        }
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p <= ClusterNetworkPolicy::MAX_PRIORITY)
            .ok_or_else(|| {
                c.error(
                    "spec.priority",
                    format!("priority {p} is out of range 0-1000"),
                )
            })?,
    };
    let subject = subject(&c, spec.subject.as_ref())?;

    let ingress_rules = spec.ingress.unwrap_or_default();
    check_count(&c, "spec.ingress", ingress_rules.len(), 0, "rules")?;
    let ingress = ingress_rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            rule(
                &c,
                &format!("spec.ingress[{i}]"),
                Direction::Ingress,
                ApiRule {
                    name: r.name.as_deref(),
                    action: r.action.as_deref(),
                    peers: r.from.as_deref(),
                    protocols: r.protocols.as_deref(),
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let egress_rules = spec.egress.unwrap_or_default();
    check_count(&c, "spec.egress", egress_rules.len(), 0, "rules")?;
    let egress = egress_rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            rule(
                &c,
                &format!("spec.egress[{i}]"),
                Direction::Egress,
                ApiRule {
                    name: r.name.as_deref(),
                    action: r.action.as_deref(),
                    peers: r.to.as_deref(),
                    protocols: r.protocols.as_deref(),
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ClusterNetworkPolicy {
        name,
        tier,
        priority,
        subject,
        ingress,
        egress,
    })
}

/// The `nftpolicy.io/enforcement` annotation of a ClusterNetworkPolicy: `enforce` (or none) only.
/// Audit mode is per NetworkPolicy for now; the agent's `--audit-all` audits every policy.
fn check_enforcement(c: &Checker<'_>, metadata: &meta::ObjectMeta) -> FieldResult<()> {
    let Some(value) = enforcement_annotation(metadata) else {
        return Ok(());
    };
    let field = annotation_field(ENFORCEMENT_ANNOTATION);
    match Enforcement::from_annotation(value) {
        Some(Enforcement::Enforce) => Ok(()),
        Some(Enforcement::Audit) => Err(c.error(
            field,
            "audit mode is not supported for ClusterNetworkPolicy yet; remove the annotation, or \
             run the agent with --audit-all",
        )),
        None => Err(c.error(
            field,
            format!(
                "unknown enforcement mode {value:?}: use enforce (audit mode is not supported for \
                 ClusterNetworkPolicy yet)"
            ),
        )),
    }
}

#[derive(Clone, Copy)]
enum SubjectField {
    Namespaces,
    Pods,
}

fn subject(c: &Checker<'_>, map: Option<&Map<String, Value>>) -> FieldResult<Subject> {
    const FIELD: &str = "spec.subject";
    let Some(map) = map else {
        return Err(c.error(FIELD, "is required: namespaces or pods"));
    };
    let fields = OneOf::of(
        map,
        &[
            ("namespaces", SubjectField::Namespaces),
            ("pods", SubjectField::Pods),
        ],
    );
    match fields.set.as_slice() {
        [] => Err(c.error(
            FIELD,
            format!(
                "sets none of namespaces or pods; a subject sets exactly one{}",
                fields.unknown_note()
            ),
        )),
        [(name, field, value)] => {
            let f = format!("{FIELD}.{name}");
            Ok(match field {
                SubjectField::Namespaces => Subject::Namespaces(label_selector(c, &f, value)?),
                SubjectField::Pods => Subject::Pods(pods_selector(c, &f, value)?),
            })
        }
        _ => Err(c.error(
            FIELD,
            format!(
                "sets {}; a subject sets exactly one of namespaces or pods",
                fields.set_names()
            ),
        )),
    }
}

/// One rule, ingress or egress, as written.
struct ApiRule<'a> {
    name: Option<&'a str>,
    action: Option<&'a str>,
    peers: Option<&'a [Map<String, Value>]>,
    protocols: Option<&'a [Map<String, Value>]>,
}

fn rule(
    c: &Checker<'_>,
    field: &str,
    direction: Direction,
    r: ApiRule<'_>,
) -> FieldResult<ClusterRule> {
    let name = r.name.filter(|n| !n.is_empty());
    if let Some(n) = name {
        let len = n.chars().count();
        if len > MAX_RULE_NAME {
            return Err(c.error(
                format!("{field}.name"),
                format!("is {len} characters long: a rule name has at most {MAX_RULE_NAME}"),
            ));
        }
    }
    let action = match r.action {
        None => {
            return Err(c.error(
                format!("{field}.action"),
                "is required: Accept, Deny or Pass",
            ))
        }
        Some(a) => Action::from_api(a).ok_or_else(|| {
            c.error(
                format!("{field}.action"),
                format!("unknown action {a:?}: use Accept, Deny or Pass"),
            )
        })?,
    };
    let peers_key = match direction {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    };
    let peers_field = format!("{field}.{peers_key}");
    let Some(api_peers) = r.peers else {
        return Err(c.error(peers_field, format!("is required: 1 to {MAX_ITEMS} peers")));
    };
    check_count(c, &peers_field, api_peers.len(), 1, "peers")?;
    let peers = api_peers
        .iter()
        .enumerate()
        .map(|(j, p)| peer(c, &format!("{peers_field}[{j}]"), direction, p))
        .collect::<Result<Vec<_>, _>>()?;

    let protocols_field = format!("{field}.protocols");
    let protocols = match r.protocols {
        None => Vec::new(),
        Some([]) => {
            return Err(c.error(
                protocols_field,
                format!(
                    "is empty: it lists 1 to {MAX_ITEMS} protocols, or is left out to match \
                     all traffic"
                ),
            ))
        }
        Some(list) => {
            check_count(c, &protocols_field, list.len(), 1, "protocols")?;
            list.iter()
                .enumerate()
                .map(|(k, p)| protocol(c, &format!("{protocols_field}[{k}]"), p))
                .collect::<Result<Vec<_>, _>>()?
        }
    };

    // The CRD's CEL rule on egress rules: named ports are pods' only.
    let addresses = peers
        .iter()
        .position(|p| matches!(p, ClusterPeer::Networks(_) | ClusterPeer::Nodes(_)));
    let named = protocols
        .iter()
        .position(|p| matches!(p, ClusterPort::Named(_)));
    if let (Some(j), Some(k)) = (addresses, named) {
        let kind = match peers[j] {
            ClusterPeer::Nodes(_) => "nodes",
            _ => "networks",
        };
        return Err(c.error(
            format!("{protocols_field}[{k}].destinationNamedPort"),
            format!(
                "a named port cannot be used in a rule with networks or nodes peers \
                 ({peers_key}[{j}] is a {kind} peer): only pods have named ports"
            ),
        ));
    }

    Ok(ClusterRule {
        name: name.map(str::to_string),
        action,
        peers,
        protocols,
    })
}

#[derive(Clone, Copy)]
enum PeerField {
    Namespaces,
    Pods,
    Networks,
    Nodes,
    DomainNames,
}

/// Every peer field of the schema (egress peers have them all, ingress peers the first two).
const PEER_FIELDS: [(&str, PeerField); 5] = [
    ("namespaces", PeerField::Namespaces),
    ("pods", PeerField::Pods),
    ("networks", PeerField::Networks),
    ("nodes", PeerField::Nodes),
    ("domainNames", PeerField::DomainNames),
];

fn peer(
    c: &Checker<'_>,
    field: &str,
    direction: Direction,
    map: &Map<String, Value>,
) -> FieldResult<ClusterPeer> {
    let allowed = match direction {
        Direction::Ingress => "namespaces or pods",
        Direction::Egress => "namespaces, pods, networks or nodes",
    };
    let fields = OneOf::of(map, &PEER_FIELDS);
    let (name, which, value) = match fields.set.as_slice() {
        // Set by a newer version of the API: fails closed where it is evaluated.
        [] if !fields.unknown.is_empty() => return Ok(ClusterPeer::Unknown),
        [] => {
            return Err(c.error(
                field,
                format!("sets no field; a peer sets exactly one of {allowed}"),
            ))
        }
        [one] => *one,
        _ => {
            return Err(c.error(
                field,
                format!(
                    "sets {}; a peer sets exactly one of {allowed}: write them as separate peers",
                    fields.set_names()
                ),
            ))
        }
    };
    let f = format!("{field}.{name}");
    match (which, direction) {
        (PeerField::Namespaces, _) => Ok(ClusterPeer::Namespaces(label_selector(c, &f, value)?)),
        (PeerField::Pods, _) => Ok(ClusterPeer::Pods(pods_selector(c, &f, value)?)),
        (PeerField::Networks | PeerField::Nodes | PeerField::DomainNames, Direction::Ingress) => {
            Err(c.error(
                f,
                format!("{name} peers are for egress only: an ingress peer is namespaces or pods"),
            ))
        }
        (PeerField::Networks, Direction::Egress) => {
            Ok(ClusterPeer::Networks(networks(c, &f, value)?))
        }
        (PeerField::Nodes, Direction::Egress) => {
            Ok(ClusterPeer::Nodes(label_selector(c, &f, value)?))
        }
        (PeerField::DomainNames, Direction::Egress) => {
            Err(c.error(f, "domainNames peers are not supported by nftpolicy yet"))
        }
    }
}

fn networks(c: &Checker<'_>, field: &str, value: &Value) -> FieldResult<Vec<Cidr>> {
    let list: Vec<String> = typed_at(c, field, value)?;
    check_count(c, field, list.len(), 1, "CIDRs")?;
    let mut cidrs: Vec<Cidr> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let len = s.chars().count();
        if len > MAX_CIDR_LENGTH {
            return Err(c.error(
                f,
                format!("is {len} characters long: a CIDR has at most {MAX_CIDR_LENGTH}"),
            ));
        }
        let cidr = network(s).map_err(|m| c.error(&f, m))?;
        // A set: each string once (equal prefixes written differently are one CIDR here).
        if let Some(first) = list[..i].iter().position(|other| other == s) {
            return Err(c.error(
                f,
                format!("repeats {field}[{first}] ({s}): each CIDR is listed once"),
            ));
        }
        if !cidrs.contains(&cidr) {
            cidrs.push(cidr);
        }
    }
    Ok(cidrs)
}

/// Parses a `networks` entry as the CRD's `isCIDR` does (Go's `netip.ParsePrefix`: no leading
/// zeros in the length, no IPv4-mapped IPv6 address) and, unlike NetworkPolicy's `ipBlock`,
/// requires it canonical: host bits set are an error, not masked away.
fn network(s: &str) -> Result<Cidr, String> {
    let Some((address, length)) = s.split_once('/') else {
        return Err(CidrError::MissingLength(s.to_string()).to_string());
    };
    let cidr: Cidr = s.parse().map_err(|e: CidrError| e.to_string())?;
    let bits = match cidr.family() {
        crate::cidr::Family::V4 => 32,
        crate::cidr::Family::V6 => 128,
    };
    let plain = length.bytes().all(|b| b.is_ascii_digit())
        && !(length.len() > 1 && length.starts_with('0'));
    if !plain {
        return Err(format!(
            "{s:?} is not a CIDR: the prefix length must be 0-{bits}, in plain digits"
        ));
    }
    let address: std::net::IpAddr = address
        .parse()
        .map_err(|_| CidrError::BadAddress(s.to_string()).to_string())?;
    if let std::net::IpAddr::V6(v6) = address {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Err(format!(
                "{s:?} is an IPv4-mapped IPv6 CIDR, which is not allowed: write it as IPv4 \
                 ({v4}/{})",
                cidr.prefix_len().saturating_sub(96)
            ));
        }
    }
    if cidr.addr() != address {
        return Err(format!("{s:?} has host bits set: write {cidr}"));
    }
    Ok(cidr)
}

#[derive(Clone, Copy)]
enum ProtocolField {
    Transport(Protocol),
    NamedPort,
}

fn protocol(c: &Checker<'_>, field: &str, map: &Map<String, Value>) -> FieldResult<ClusterPort> {
    const ALLOWED: &str = "tcp, udp, sctp or destinationNamedPort";
    let fields = OneOf::of(
        map,
        &[
            ("tcp", ProtocolField::Transport(Protocol::Tcp)),
            ("udp", ProtocolField::Transport(Protocol::Udp)),
            ("sctp", ProtocolField::Transport(Protocol::Sctp)),
            ("destinationNamedPort", ProtocolField::NamedPort),
        ],
    );
    match fields.set.as_slice() {
        [] => Err(c.error(
            field,
            format!(
                "sets none of {ALLOWED}; a protocol sets exactly one{}",
                fields.unknown_note()
            ),
        )),
        [(name, which, value)] => {
            let f = format!("{field}.{name}");
            match which {
                ProtocolField::NamedPort => Ok(ClusterPort::Named(typed_at(c, &f, value)?)),
                ProtocolField::Transport(protocol) => port_match(c, &f, *protocol, value),
            }
        }
        _ => Err(c.error(
            field,
            format!(
                "sets {}; a protocol sets exactly one of {ALLOWED}: write them as separate entries",
                fields.set_names()
            ),
        )),
    }
}

#[derive(Clone, Copy)]
enum PortField {
    Number,
    Range,
}

fn port_number(c: &Checker<'_>, field: &str, n: i64) -> FieldResult<u16> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| c.error(field, format!("port {n} is out of range 1-65535")))
}

/// `tcp`, `udp` or `sctp`: a `destinationPort` is required (the CRD's `minProperties: 1`).
fn port_match(
    c: &Checker<'_>,
    field: &str,
    protocol: Protocol,
    value: &Value,
) -> FieldResult<ClusterPort> {
    let m: ApiProtocolMatch = typed_at(c, field, value)?;
    let Some(port) = &m.destination_port else {
        return Err(c.error(
            field,
            "needs a destinationPort: {number: N} or {range: {start: N, end: M}}",
        ));
    };
    let f = format!("{field}.destinationPort");
    let fields = OneOf::of(
        port,
        &[("number", PortField::Number), ("range", PortField::Range)],
    );
    let (first, last) = match fields.set.as_slice() {
        [] => {
            return Err(c.error(
                f,
                format!(
                    "sets none of number or range; a destinationPort sets exactly one{}",
                    fields.unknown_note()
                ),
            ))
        }
        [(_, PortField::Number, value)] => {
            let nf = format!("{f}.number");
            let n = port_number(c, &nf, typed_at(c, &nf, value)?)?;
            (n, n)
        }
        [(_, PortField::Range, value)] => {
            let rf = format!("{f}.range");
            let range: ApiPortRange = typed_at(c, &rf, value)?;
            let bound = |name: &str, v: Option<i64>| -> FieldResult<u16> {
                let bf = format!("{rf}.{name}");
                match v {
                    None => Err(c.error(bf, "is required")),
                    Some(n) => port_number(c, &bf, n),
                }
            };
            let start = bound("start", range.start)?;
            let end = bound("end", range.end)?;
            if start >= end {
                return Err(c.error(
                    rf,
                    format!(
                        "start {start} must be less than end {end} (for one port, write number)"
                    ),
                ));
            }
            (start, end)
        }
        _ => {
            return Err(c.error(
                f,
                "sets number and range; a destinationPort sets exactly one of them",
            ))
        }
    };
    Ok(ClusterPort::Range {
        protocol,
        first,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_parsed_as_the_crd_and_canonical() {
        assert_eq!(
            network("10.0.0.0/8").map(|c| c.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            network("FD00::/8").map(|c| c.to_string()),
            Ok("fd00::/8".into())
        );
        assert_eq!(network("0.0.0.0/0").map(|c| c.prefix_len()), Ok(0));
        let error = |s: &str| network(s).expect_err(s);
        assert!(error("10.0.0.1/8").contains("host bits set: write 10.0.0.0/8"));
        assert!(error("fd00::1/64").contains("host bits set: write fd00::/64"));
        assert!(error("10.0.0.0").contains("expected ADDRESS/LENGTH"));
        assert!(error("10.0.0/8").contains("the address does not parse"));
        assert!(error("010.0.0.0/8").contains("the address does not parse"));
        assert!(error("10.0.0.0/33").contains("prefix length must be 0-32"));
        assert!(error("10.0.0.0/08").contains("in plain digits"));
        assert!(error("10.0.0.0/+8").contains("in plain digits"));
        assert!(error("fe80::/10%eth0").contains("is not a CIDR"));
        assert!(error("::ffff:10.0.0.0/104").contains("write it as IPv4 (10.0.0.0/8)"));
    }

    #[test]
    fn paths_inside_a_field_join_it() {
        assert_eq!(join("spec.subject", "."), "spec.subject");
        assert_eq!(join("a.b", "[0].c"), "a.b[0].c");
        assert_eq!(join("a.b", "matchLabels"), "a.b.matchLabels");
    }
}
