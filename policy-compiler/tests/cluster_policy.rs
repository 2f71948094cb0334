//! ClusterNetworkPolicy and Node input: every validation of the network-policy-api CRD, each error
//! located at its field, cross-checked against the CRD's own schema
//! (`fixtures/network-policy-api/crd/`); every ClusterNetworkPolicy and Node of the conformance
//! suite's data converts; both API versions are read, other groups and versions are not ours.

mod common;

use std::net::IpAddr;

use policy_compiler::cnp_conformance::Suite;
use policy_compiler::input::{parse_sources, InputError, Location, RawObject, Source};
use policy_compiler::model::{
    Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, PodsSelector, Subject, Tier,
};
use policy_compiler::object::{convert, Converted, Kind, Object, DEFAULT_NAMESPACE};
use policy_compiler::selector::LabelSelector;
use policy_compiler::{Direction, Protocol};
use serde_json::Value;

/// Why the CRD's schema, checked as JSON Schema, decides otherwise than nftpolicy (which decides
/// as the API server would, or, where stated, more strictly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A CEL rule of the CRD (`x-kubernetes-validations`) rejects it; JSON Schema has no CEL.
    Cel,
    /// The API server requires it of every object (`metadata.name`), outside the CRD.
    ApiServer,
    /// The API server prunes fields the schema does not define, and null values, before
    /// validating: the object it validates is not the one written.
    Pruning,
    /// `x-kubernetes-list-type: set` (no repeated items) is the API server's, not JSON Schema's.
    ListSet,
    /// nftpolicy rejects what the CRD accepts: label selector operators and values (checked as for
    /// NetworkPolicy), `networks` with host bits set (canonical CIDRs, unlike `ipBlock`),
    /// `domainNames` peers (not supported), and the `nftpolicy.io/enforcement` annotation (only
    /// `enforce`: audit mode is not supported for ClusterNetworkPolicies yet).
    Stricter,
}

/// One object of the table.
struct Case {
    /// What it shows.
    what: &'static str,
    /// The object, YAML.
    object: String,
    /// `None` if valid, else the field and a fragment of the message.
    error: Option<(&'static str, &'static str)>,
    /// `None` where the CRD's schema agrees with nftpolicy.
    crd: Option<Why>,
}

const SUBJECT: &str = "subject: {namespaces: {}}";

fn cnp(spec: &str) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
         metadata: {{name: p}}\nspec: {spec}\n"
    )
}

/// An Admin policy with these extra spec fields (`, egress: [...]`).
fn spec(extra: &str) -> String {
    cnp(&format!("{{tier: Admin, priority: 5, {SUBJECT}{extra}}}"))
}

fn egress(rule: &str) -> String {
    spec(&format!(", egress: [{rule}]"))
}

fn ingress(rule: &str) -> String {
    spec(&format!(", ingress: [{rule}]"))
}

/// A Deny egress rule to these peers.
fn to(peers: &str) -> String {
    egress(&format!("{{action: Deny, to: [{peers}]}}"))
}

/// A Deny ingress rule from these peers.
fn from(peers: &str) -> String {
    ingress(&format!("{{action: Deny, from: [{peers}]}}"))
}

/// An Accept egress rule to every namespace on these protocols.
fn protocols(list: &str) -> String {
    egress(&format!(
        "{{action: Accept, to: [{{namespaces: {{}}}}], protocols: [{list}]}}"
    ))
}

fn repeat(item: &str, n: usize) -> String {
    vec![item; n].join(", ")
}

fn invalid(
    what: &'static str,
    object: String,
    field: &'static str,
    message: &'static str,
    crd: Option<Why>,
) -> Case {
    Case {
        what,
        object,
        error: Some((field, message)),
        crd,
    }
}

fn valid(what: &'static str, object: String, crd: Option<Why>) -> Case {
    Case {
        what,
        object,
        error: None,
        crd,
    }
}

fn cases() -> Vec<Case> {
    use Why::*;
    let rule = "{action: Deny, to: [{namespaces: {}}]}";
    let long_name = "n".repeat(100);
    let networks26: Vec<String> = (0..26).map(|i| format!("\"10.{i}.0.0/16\"")).collect();
    vec![
        // metadata and spec
        invalid(
            "a name is required",
            "apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
             metadata: {labels: {a: b}}\nspec: {tier: Admin, priority: 5, subject: {namespaces: {}}}\n"
                .into(),
            "metadata.name",
            "is required",
            Some(ApiServer),
        ),
        valid(
            "an enforce annotation is the default",
            spec(", egress: []").replace(
                "metadata: {name: p}",
                "metadata: {name: p, annotations: {nftpolicy.io/enforcement: enforce}}",
            ),
            None,
        ),
        invalid(
            "audit mode is for NetworkPolicies only",
            spec(", egress: []").replace(
                "metadata: {name: p}",
                "metadata: {name: p, annotations: {nftpolicy.io/enforcement: audit}}",
            ),
            "metadata.annotations[\"nftpolicy.io/enforcement\"]",
            "audit mode is not supported for ClusterNetworkPolicy yet; remove the annotation, or \
             run the agent with --audit-all",
            Some(Stricter),
        ),
        invalid(
            "the enforcement annotation is enforce or nothing",
            spec(", egress: []").replace(
                "metadata: {name: p}",
                "metadata: {name: p, annotations: {nftpolicy.io/enforcement: strict}}",
            ),
            "metadata.annotations[\"nftpolicy.io/enforcement\"]",
            "unknown enforcement mode \"strict\": use enforce",
            Some(Stricter),
        ),
        invalid(
            "spec is required",
            "apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
             metadata: {name: p}\n"
                .into(),
            "spec",
            "is required",
            None,
        ),
        invalid(
            "tier is required",
            cnp(&format!("{{priority: 5, {SUBJECT}}}")),
            "spec.tier",
            "is required: Admin or Baseline",
            None,
        ),
        invalid(
            "tier is an enum",
            cnp(&format!("{{tier: admin, priority: 5, {SUBJECT}}}")),
            "spec.tier",
            "unknown tier \"admin\": use Admin or Baseline",
            None,
        ),
        invalid(
            "tier is a string",
            cnp(&format!("{{tier: 7, priority: 5, {SUBJECT}}}")),
            "spec.tier",
            "invalid type: integer `7`, expected a string",
            None,
        ),
        invalid(
            "priority is required",
            cnp(&format!("{{tier: Admin, {SUBJECT}}}")),
            "spec.priority",
            "is required: 0 to 1000",
            None,
        ),
        invalid(
            "priority is at least 0",
            cnp(&format!("{{tier: Admin, priority: -1, {SUBJECT}}}")),
            "spec.priority",
            "priority -1 is out of range 0-1000",
            None,
        ),
        invalid(
            "priority is at most 1000",
            cnp(&format!("{{tier: Baseline, priority: 1001, {SUBJECT}}}")),
            "spec.priority",
            "priority 1001 is out of range 0-1000",
            None,
        ),
        invalid(
            "priority is an integer",
            cnp(&format!("{{tier: Admin, priority: \"5\", {SUBJECT}}}")),
            "spec.priority",
            "invalid type: string \"5\"",
            None,
        ),
        // subject
        invalid(
            "subject is required",
            cnp("{tier: Admin, priority: 5}"),
            "spec.subject",
            "is required: namespaces or pods",
            None,
        ),
        invalid(
            "a subject sets at least one field",
            cnp("{tier: Admin, priority: 5, subject: {}}"),
            "spec.subject",
            "sets none of namespaces or pods; a subject sets exactly one",
            None,
        ),
        invalid(
            "a subject's unknown fields are pruned, leaving it empty",
            cnp("{tier: Admin, priority: 5, subject: {nodes: {}}}"),
            "spec.subject",
            "a subject sets exactly one (nodes is not one of them)",
            Some(Pruning),
        ),
        invalid(
            "a subject sets at most one field",
            cnp("{tier: Admin, priority: 5, subject: {namespaces: {}, pods: {podSelector: {}}}}"),
            "spec.subject",
            "sets namespaces and pods; a subject sets exactly one of namespaces or pods",
            None,
        ),
        invalid(
            "a pods subject needs its podSelector",
            cnp("{tier: Admin, priority: 5, subject: {pods: {namespaceSelector: {}}}}"),
            "spec.subject.pods.podSelector",
            "is required",
            None,
        ),
        invalid(
            "selector operators are checked",
            cnp(
                "{tier: Admin, priority: 5, subject: {namespaces: \
                 {matchExpressions: [{key: a, operator: Has}]}}}",
            ),
            "spec.subject.namespaces.matchExpressions[0].operator",
            "unknown operator \"Has\": use In, NotIn, Exists or DoesNotExist",
            Some(Stricter),
        ),
        invalid(
            "In needs values",
            cnp(
                "{tier: Admin, priority: 5, subject: {pods: {podSelector: \
                 {matchExpressions: [{key: a, operator: In}]}}}}",
            ),
            "spec.subject.pods.podSelector.matchExpressions[0].values",
            "operator In needs at least one value",
            Some(Stricter),
        ),
        invalid(
            "a selector requirement needs its key",
            cnp(
                "{tier: Admin, priority: 5, subject: {namespaces: \
                 {matchExpressions: [{operator: Exists}]}}}",
            ),
            "spec.subject.namespaces.matchExpressions[0]",
            "missing field `key`",
            None,
        ),
        // rules
        invalid(
            "at most 25 ingress rules",
            spec(&format!(
                ", ingress: [{}]",
                repeat("{action: Deny, from: [{namespaces: {}}]}", 26)
            )),
            "spec.ingress",
            "lists 26 rules: at most 25 are allowed",
            None,
        ),
        invalid(
            "at most 25 egress rules",
            spec(&format!(", egress: [{}]", repeat(rule, 26))),
            "spec.egress",
            "lists 26 rules: at most 25 are allowed",
            None,
        ),
        invalid(
            "action is required",
            egress("{to: [{namespaces: {}}]}"),
            "spec.egress[0].action",
            "is required: Accept, Deny or Pass",
            None,
        ),
        invalid(
            "action is an enum",
            spec(&format!(
                ", egress: [{rule}, {{action: Allow, to: [{{namespaces: {{}}}}]}}]"
            )),
            "spec.egress[1].action",
            "unknown action \"Allow\": use Accept, Deny or Pass",
            None,
        ),
        invalid(
            "a rule name has at most 100 characters",
            egress(&format!(
                "{{name: {long_name}x, action: Deny, to: [{{namespaces: {{}}}}]}}"
            )),
            "spec.egress[0].name",
            "is 101 characters long: a rule name has at most 100",
            None,
        ),
        invalid(
            "from is required",
            ingress("{action: Deny}"),
            "spec.ingress[0].from",
            "is required: 1 to 25 peers",
            None,
        ),
        invalid(
            "an ingress rule's peers are from, not to",
            ingress("{action: Deny, to: [{namespaces: {}}]}"),
            "spec.ingress[0].from",
            "is required",
            None,
        ),
        invalid(
            "to is required",
            egress("{action: Pass}"),
            "spec.egress[0].to",
            "is required: 1 to 25 peers",
            None,
        ),
        invalid(
            "at least 1 peer",
            ingress("{action: Deny, from: []}"),
            "spec.ingress[0].from",
            "is empty: it lists 1 to 25 peers",
            None,
        ),
        invalid(
            "at most 25 peers",
            to(&repeat("{namespaces: {}}", 26)),
            "spec.egress[0].to",
            "lists 26 peers: at most 25 are allowed",
            None,
        ),
        // peers
        invalid(
            "an egress peer sets at least one field",
            to("{}"),
            "spec.egress[0].to[0]",
            "sets no field; a peer sets exactly one of namespaces, pods, networks or nodes",
            None,
        ),
        invalid(
            "an ingress peer sets at least one field",
            from("{namespaces: {}}, {}"),
            "spec.ingress[0].from[1]",
            "sets no field; a peer sets exactly one of namespaces or pods",
            None,
        ),
        invalid(
            "a peer sets at most one field",
            to("{namespaces: {}}, {namespaces: {}, pods: {podSelector: {}}}"),
            "spec.egress[0].to[1]",
            "sets namespaces and pods; a peer sets exactly one of",
            None,
        ),
        invalid(
            "networks and nodes are separate peers",
            to("{networks: [\"10.0.0.0/8\"], nodes: {}}"),
            "spec.egress[0].to[0]",
            "sets networks and nodes; a peer sets exactly one of namespaces, pods, networks or \
             nodes: write them as separate peers",
            None,
        ),
        invalid(
            "networks peers are egress only",
            from("{networks: [\"10.0.0.0/8\"]}"),
            "spec.ingress[0].from[0].networks",
            "networks peers are for egress only: an ingress peer is namespaces or pods",
            Some(Pruning),
        ),
        invalid(
            "nodes peers are egress only",
            from("{nodes: {}}"),
            "spec.ingress[0].from[0].nodes",
            "nodes peers are for egress only",
            Some(Pruning),
        ),
        invalid(
            "domainNames peers are not supported",
            to("{namespaces: {}}, {domainNames: [kubernetes.io]}"),
            "spec.egress[0].to[1].domainNames",
            "domainNames peers are not supported by nftpolicy yet",
            Some(Stricter),
        ),
        invalid(
            "a pods peer needs its podSelector",
            to("{pods: {namespaceSelector: {}}}"),
            "spec.egress[0].to[0].pods.podSelector",
            "is required",
            None,
        ),
        invalid(
            "a nodes peer is a label selector",
            to("{nodes: {matchLabels: [a]}}"),
            "spec.egress[0].to[0].nodes.matchLabels",
            "invalid type: sequence, expected a map",
            None,
        ),
        invalid(
            "a peer is an object",
            to("null"),
            "spec.egress[0].to[0]",
            "invalid type: null, expected a map",
            None,
        ),
        // networks
        invalid(
            "at least 1 CIDR",
            to("{networks: []}"),
            "spec.egress[0].to[0].networks",
            "is empty: it lists 1 to 25 CIDRs",
            None,
        ),
        invalid(
            "at most 25 CIDRs",
            to(&format!("{{networks: [{}]}}", networks26.join(", "))),
            "spec.egress[0].to[0].networks",
            "lists 26 CIDRs: at most 25 are allowed",
            None,
        ),
        invalid(
            "networks are CIDRs",
            to("{networks: [\"10.0.0.0/8\", \"10.0.0.0.0/8\"]}"),
            "spec.egress[0].to[0].networks[1]",
            "\"10.0.0.0.0/8\" is not a CIDR: the address does not parse",
            Some(Cel),
        ),
        invalid(
            "networks have a prefix length",
            to("{networks: [\"10.0.0.0\"]}"),
            "spec.egress[0].to[0].networks[0]",
            "is not a CIDR: expected ADDRESS/LENGTH",
            Some(Cel),
        ),
        invalid(
            "prefix lengths are plain numbers",
            to("{networks: [\"10.0.0.0/08\"]}"),
            "spec.egress[0].to[0].networks[0]",
            "the prefix length must be 0-32, in plain digits",
            Some(Cel),
        ),
        invalid(
            "IPv4-mapped IPv6 CIDRs are not allowed",
            to("{networks: [\"::ffff:10.0.0.0/104\"]}"),
            "spec.egress[0].to[0].networks[0]",
            "IPv4-mapped IPv6 CIDR, which is not allowed: write it as IPv4 (10.0.0.0/8)",
            Some(Cel),
        ),
        invalid(
            "host bits are an error",
            to("{networks: [\"10.1.2.3/8\"]}"),
            "spec.egress[0].to[0].networks[0]",
            "\"10.1.2.3/8\" has host bits set: write 10.0.0.0/8",
            Some(Stricter),
        ),
        invalid(
            "host bits are an error in IPv6",
            to("{networks: [\"::/0\", \"fd00::1/8\"]}"),
            "spec.egress[0].to[0].networks[1]",
            "has host bits set: write fd00::/8",
            Some(Stricter),
        ),
        invalid(
            "a CIDR has at most 43 characters",
            to("{networks: [\"1234:5678:9abc:def0:1234:5678:9abc:def0/0128\"]}"),
            "spec.egress[0].to[0].networks[0]",
            "is 44 characters long: a CIDR has at most 43",
            None,
        ),
        invalid(
            "networks is a set",
            to("{networks: [\"10.0.0.0/8\", \"192.168.0.0/16\", \"10.0.0.0/8\"]}"),
            "spec.egress[0].to[0].networks[2]",
            "repeats spec.egress[0].to[0].networks[0] (10.0.0.0/8): each CIDR is listed once",
            Some(ListSet),
        ),
        invalid(
            "networks is a list",
            to("{networks: \"10.0.0.0/8\"}"),
            "spec.egress[0].to[0].networks",
            "invalid type: string \"10.0.0.0/8\", expected a sequence",
            None,
        ),
        // protocols
        invalid(
            "protocols, when present, lists at least 1",
            egress("{action: Deny, to: [{namespaces: {}}], protocols: []}"),
            "spec.egress[0].protocols",
            "is empty: it lists 1 to 25 protocols, or is left out to match all traffic",
            None,
        ),
        invalid(
            "at most 25 protocols",
            protocols(&repeat("{tcp: {destinationPort: {number: 80}}}", 26)),
            "spec.egress[0].protocols",
            "lists 26 protocols: at most 25 are allowed",
            None,
        ),
        invalid(
            "a protocol sets at least one field",
            protocols("{}"),
            "spec.egress[0].protocols[0]",
            "sets none of tcp, udp, sctp or destinationNamedPort; a protocol sets exactly one",
            None,
        ),
        invalid(
            "a protocol's unknown fields are pruned, leaving it empty",
            protocols("{icmp: {}}"),
            "spec.egress[0].protocols[0]",
            "a protocol sets exactly one (icmp is not one of them)",
            Some(Pruning),
        ),
        invalid(
            "a protocol sets at most one field",
            protocols(
                "{tcp: {destinationPort: {number: 53}}, udp: {destinationPort: {number: 53}}}",
            ),
            "spec.egress[0].protocols[0]",
            "sets tcp and udp; a protocol sets exactly one of tcp, udp, sctp or \
             destinationNamedPort: write them as separate entries",
            None,
        ),
        invalid(
            "tcp needs a destinationPort",
            protocols("{tcp: {destinationPort: {number: 80}}}, {tcp: {}}"),
            "spec.egress[0].protocols[1].tcp",
            "needs a destinationPort: {number: N} or {range: {start: N, end: M}}",
            None,
        ),
        invalid(
            "a destinationPort sets at least one field",
            protocols("{udp: {destinationPort: {}}}"),
            "spec.egress[0].protocols[0].udp.destinationPort",
            "sets none of number or range; a destinationPort sets exactly one",
            None,
        ),
        invalid(
            "a destinationPort sets at most one field",
            protocols("{udp: {destinationPort: {number: 53, range: {start: 53, end: 54}}}}"),
            "spec.egress[0].protocols[0].udp.destinationPort",
            "sets number and range; a destinationPort sets exactly one of them",
            None,
        ),
        invalid(
            "port numbers are at least 1",
            protocols("{sctp: {destinationPort: {number: 0}}}"),
            "spec.egress[0].protocols[0].sctp.destinationPort.number",
            "port 0 is out of range 1-65535",
            None,
        ),
        invalid(
            "port numbers are at most 65535",
            protocols("{tcp: {destinationPort: {number: 65536}}}"),
            "spec.egress[0].protocols[0].tcp.destinationPort.number",
            "port 65536 is out of range 1-65535",
            None,
        ),
        invalid(
            "a range's start is less than its end",
            protocols("{tcp: {destinationPort: {range: {start: 80, end: 80}}}}"),
            "spec.egress[0].protocols[0].tcp.destinationPort.range",
            "start 80 must be less than end 80",
            Some(Cel),
        ),
        invalid(
            "a range is not reversed",
            protocols("{udp: {destinationPort: {range: {start: 90, end: 80}}}}"),
            "spec.egress[0].protocols[0].udp.destinationPort.range",
            "start 90 must be less than end 80",
            Some(Cel),
        ),
        invalid(
            "a range's end is required",
            protocols("{tcp: {destinationPort: {range: {start: 80}}}}"),
            "spec.egress[0].protocols[0].tcp.destinationPort.range.end",
            "is required",
            None,
        ),
        invalid(
            "a range's start is at least 1",
            protocols("{tcp: {destinationPort: {range: {start: 0, end: 80}}}}"),
            "spec.egress[0].protocols[0].tcp.destinationPort.range.start",
            "port 0 is out of range 1-65535",
            None,
        ),
        invalid(
            "a range's end is at most 65535",
            protocols("{tcp: {destinationPort: {range: {start: 80, end: 70000}}}}"),
            "spec.egress[0].protocols[0].tcp.destinationPort.range.end",
            "port 70000 is out of range 1-65535",
            None,
        ),
        invalid(
            "a named port is a string",
            protocols("{destinationNamedPort: 80}"),
            "spec.egress[0].protocols[0].destinationNamedPort",
            "invalid type: integer `80`, expected a string",
            None,
        ),
        invalid(
            "ingress protocols are checked alike",
            ingress("{action: Accept, from: [{namespaces: {}}], protocols: [{sctp: {}}]}"),
            "spec.ingress[0].protocols[0].sctp",
            "needs a destinationPort",
            None,
        ),
        invalid(
            "no named port with a networks peer",
            egress(
                "{action: Accept, to: [{namespaces: {}}, {networks: [\"10.0.0.0/8\"]}], \
                 protocols: [{tcp: {destinationPort: {number: 80}}}, {destinationNamedPort: web}]}",
            ),
            "spec.egress[0].protocols[1].destinationNamedPort",
            "a named port cannot be used in a rule with networks or nodes peers (to[1] is a \
             networks peer): only pods have named ports",
            Some(Cel),
        ),
        invalid(
            "no named port with a nodes peer",
            egress(
                "{action: Deny, to: [{nodes: {matchLabels: {kubernetes.io/os: linux}}}], \
                 protocols: [{destinationNamedPort: web}]}",
            ),
            "spec.egress[0].protocols[0].destinationNamedPort",
            "(to[0] is a nodes peer)",
            Some(Cel),
        ),
        // valid objects
        valid(
            "the least a policy says",
            cnp("{tier: Baseline, priority: 0, subject: {pods: {podSelector: {}}}}"),
            None,
        ),
        valid(
            "every kind of peer and protocol, at the bounds",
            cnp(&format!(
                "{{tier: Admin, priority: 1000, subject: {{pods: {{namespaceSelector: \
                 {{matchLabels: {{a: b}}}}, podSelector: {{matchExpressions: [{{key: c, \
                 operator: NotIn, values: [d]}}]}}}}}}, ingress: [{{name: {long_name}, action: \
                 Accept, from: [{}], protocols: [{{destinationNamedPort: web}}, {{sctp: \
                 {{destinationPort: {{range: {{start: 1, end: 65535}}}}}}}}]}}], egress: [{{action: \
                 Pass, to: [{{namespaces: {{}}}}, {{pods: {{podSelector: {{}}}}}}, {{networks: \
                 [\"0.0.0.0/0\", \"::/0\"]}}, {{nodes: {{}}}}], protocols: [{{udp: \
                 {{destinationPort: {{number: 65535}}}}}}]}}, {}]}}",
                repeat("{namespaces: {}}", 25),
                repeat(rule, 24),
            )),
            None,
        ),
        valid(
            "a peer of a newer API version",
            to("{namespaces: {}}, {fooBar: {}}"),
            None,
        ),
        valid(
            "unknown fields elsewhere are pruned",
            spec(
                ", newField: 1, egress: [{action: Deny, newField: 1, to: [{pods: \
                 {podSelector: {}, newField: 1}}], protocols: [{tcp: {destinationPort: \
                 {number: 1}, newField: 1}}]}]",
            ),
            None,
        ),
        valid(
            "an unknown field beside the one field of a protocol or port is pruned",
            protocols(
                "{tcp: {destinationPort: {number: 1}}, newField: 1}, \
                 {udp: {destinationPort: {number: 1, newField: 1}}}",
            ),
            Some(Pruning),
        ),
        valid(
            "a peer's unknown field beside a known one is pruned",
            to("{namespaces: {}, fooBar: {}}"),
            Some(Pruning),
        ),
        valid(
            "null values are pruned",
            spec(", ingress: null, egress: [{name: null, action: Deny, to: [{namespaces: {}, pods: null}]}]"),
            Some(Pruning),
        ),
        valid(
            "an empty rule name is no name",
            egress("{name: \"\", action: Deny, to: [{namespaces: {}}]}"),
            None,
        ),
        valid(
            "equal CIDRs written differently are one CIDR",
            to("{networks: [\"fd00::/8\", \"FD00::/8\"]}"),
            None,
        ),
    ]
}

fn source(name: &str, text: &str) -> Source {
    Source {
        name: name.into(),
        text: text.into(),
    }
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("YAML: {e}\n{text}"))
}

/// The CRD's schema, as a JSON Schema validator.
fn crd_schema() -> jsonschema::Validator {
    let path = common::fixtures()
        .join("network-policy-api/crd/policy.networking.k8s.io_clusternetworkpolicies.yaml");
    let crd = yaml(&std::fs::read_to_string(path).expect("read the CRD"));
    assert_eq!(crd["spec"]["group"], "policy.networking.k8s.io");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    let schema = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .expect("openAPIV3Schema");
    jsonschema::options()
        .build(schema)
        .expect("the schema compiles")
}

#[test]
fn every_validation_is_located_and_matches_the_crd() {
    let schema = crd_schema();
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let result = parse_sources(&[source("cnp.yaml", &case.object)]);
        let ours = match (&result, case.error) {
            (Ok(m), None) => {
                if m.cluster.cluster_policy("p").is_none() {
                    failures.push(format!("{}: no policy p read", case.what));
                }
                true
            }
            (Err(errors), Some((field, message))) => {
                match errors.0.as_slice() {
                    [InputError::Invalid(e)] => {
                        let located = e.location
                            == Location {
                                file: "cnp.yaml".into(),
                                document: 1,
                                item: None,
                            }
                            && e.kind == "ClusterNetworkPolicy"
                            && (e.object == "p" || field == "metadata.name");
                        if !located || e.field != field || !e.message.contains(message) {
                            failures.push(format!(
                                "{}: expected field {field} with {message:?}, got {e}",
                                case.what
                            ));
                        }
                    }
                    other => {
                        failures.push(format!("{}: expected one error, got {other:?}", case.what))
                    }
                }
                false
            }
            (Ok(_), Some(_)) => {
                failures.push(format!("{}: accepted, but must be rejected", case.what));
                true
            }
            (Err(e), None) => {
                failures.push(format!("{}: rejected: {e}", case.what));
                false
            }
        };
        let crd = schema.is_valid(&yaml(&case.object));
        match case.crd {
            None if crd != ours => failures.push(format!(
                "{}: the CRD's schema says {}, nftpolicy {}",
                case.what,
                verdict(crd),
                verdict(ours)
            )),
            Some(why) if crd == ours => failures.push(format!(
                "{}: said to differ from the CRD's schema ({why:?}), but both say {}",
                case.what,
                verdict(ours)
            )),
            _ => {}
        }
        // Each reason but pruning (which drops a field either way) makes the schema the more
        // lenient.
        if let Some(why) = case.crd.filter(|why| *why != Why::Pruning) {
            if !crd {
                failures.push(format!(
                    "{}: {why:?} does not explain the CRD's verdict",
                    case.what
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() > 70, "the table lost cases");
}

fn verdict(valid: bool) -> &'static str {
    if valid {
        "valid"
    } else {
        "invalid"
    }
}

fn read(text: &str) -> ClusterNetworkPolicy {
    let m = parse_sources(&[source("cnp.yaml", text)]).unwrap_or_else(|e| panic!("{e}"));
    m.cluster.cluster_policy("p").expect("policy p").clone()
}

#[test]
fn the_model_is_the_object() {
    let p = read(&cnp(
        "{tier: Baseline, priority: 7, subject: {pods: {podSelector: {matchLabels: {app: web}}}}, \
         ingress: [{name: r0, action: Pass, from: [{pods: {namespaceSelector: {matchLabels: \
         {team: a}}, podSelector: {}}}], protocols: [{tcp: {destinationPort: {number: 80}}}, \
         {udp: {destinationPort: {range: {start: 5000, end: 5010}}}}, {destinationNamedPort: \
         dns}]}], egress: [{action: Accept, to: [{fooBar: {}}, {networks: [\"fd00::/8\", \
         \"FD00::/8\", \"10.0.0.0/8\"]}, {nodes: {matchLabels: {kubernetes.io/os: linux}}}]}]}",
    ));
    assert_eq!(
        (p.tier, p.priority, p.name.as_str()),
        (Tier::Baseline, 7, "p")
    );
    assert_eq!(
        p.subject,
        Subject::Pods(PodsSelector {
            namespaces: LabelSelector::everything(),
            pods: LabelSelector::from_labels([("app", "web")]),
        }),
        "an absent namespaceSelector selects every namespace"
    );
    let ingress = &p.rules(Direction::Ingress)[0];
    assert_eq!(ingress.name.as_deref(), Some("r0"));
    assert_eq!(ingress.action, Action::Pass);
    assert_eq!(
        ingress.peers,
        [ClusterPeer::Pods(PodsSelector {
            namespaces: LabelSelector::from_labels([("team", "a")]),
            pods: LabelSelector::everything(),
        })]
    );
    assert_eq!(
        ingress.protocols,
        [
            ClusterPort::Range {
                protocol: Protocol::Tcp,
                first: 80,
                last: 80
            },
            ClusterPort::Range {
                protocol: Protocol::Udp,
                first: 5000,
                last: 5010
            },
            ClusterPort::Named("dns".into()),
        ]
    );
    let egress = &p.rules(Direction::Egress)[0];
    assert_eq!(egress.name, None);
    assert!(egress.protocols.is_empty(), "all traffic");
    assert_eq!(
        egress.peers,
        [
            ClusterPeer::Unknown,
            ClusterPeer::Networks(vec![
                "fd00::/8".parse().expect("cidr"),
                "10.0.0.0/8".parse().expect("cidr"),
            ]),
            ClusterPeer::Nodes(LabelSelector::from_labels([("kubernetes.io/os", "linux")])),
        ]
    );
}

#[test]
fn errors_name_the_file_document_object_and_field() {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: a}}\n---\n{}",
        to("{networks: [\"10.1.2.3/8\"]}").replace("name: p", "name: no-metadata-service")
    );
    let error = parse_sources(&[source("cnp.yaml", &text)])
        .expect_err("invalid")
        .to_string();
    assert_eq!(
        error,
        "cnp.yaml: document 2: ClusterNetworkPolicy no-metadata-service: field \
         spec.egress[0].to[0].networks[0]: \"10.1.2.3/8\" has host bits set: write 10.0.0.0/8"
    );
}

fn raw(value: Value) -> RawObject {
    RawObject::document("t.yaml", 1, value)
}

#[test]
fn both_api_versions_are_read_and_no_other() {
    let object = |api_version: &str| {
        yaml(
            &cnp("{tier: Admin, priority: 1, subject: {namespaces: {}}}")
                .replace("policy.networking.k8s.io/v1beta1", api_version),
        )
    };
    for version in ["v1beta1", "v1alpha2"] {
        let value = object(&format!("policy.networking.k8s.io/{version}"));
        assert_eq!(Kind::of(&value), Some(Kind::ClusterNetworkPolicy));
        let Converted::Valid(Object::ClusterPolicy(p)) = convert(raw(value), DEFAULT_NAMESPACE)
        else {
            panic!("{version} is read")
        };
        assert_eq!((p.name.as_str(), p.priority), ("p", 1));
    }
    for other in [
        "policy.networking.k8s.io/v1alpha1",
        "policy.networking.k8s.io/v2",
        "example.com/v1beta1",
        "v1beta1",
    ] {
        let value = object(other);
        assert_eq!(Kind::of(&value), None, "{other}");
        assert!(
            matches!(convert(raw(value), DEFAULT_NAMESPACE), Converted::Other(_)),
            "{other} is not ours"
        );
    }
    // A skipped kind, as any other the input does not read.
    let m = parse_sources(&[source(
        "x.yaml",
        &serde_json::to_string(&object("example.com/v1")).unwrap(),
    )])
    .expect("skipped");
    assert_eq!(
        m.skipped["x.yaml"].kinds.get("ClusterNetworkPolicy"),
        Some(&1)
    );
    assert!(m.cluster.cluster_policies().is_empty());
}

#[test]
fn cluster_policies_are_cluster_scoped_and_unique_across_versions() {
    let a = cnp("{tier: Admin, priority: 1, subject: {namespaces: {}}}").replace(
        "metadata: {name: p}",
        "metadata: {name: p, namespace: ignored}",
    );
    let b = a.replace("v1beta1", "v1alpha2");
    let error = parse_sources(&[source("a.yaml", &a), source("b.yaml", &b)])
        .expect_err("twice")
        .to_string();
    assert_eq!(
        error,
        "ClusterNetworkPolicy p is defined twice: at a.yaml: document 1 and at b.yaml: document 1"
    );
    let m = parse_sources(&[source("a.yaml", &a)]).expect("valid");
    let key = policy_compiler::model::ObjectRef::new("", "p");
    assert_eq!(
        m.locations
            .get(&(Kind::ClusterNetworkPolicy, key.clone()))
            .map(|l| l.file.as_str()),
        Some("a.yaml")
    );
    let mut cluster = m.cluster;
    assert_eq!(
        cluster.keys(Kind::ClusterNetworkPolicy),
        std::slice::from_ref(&key)
    );
    assert!(matches!(
        cluster.get(Kind::ClusterNetworkPolicy, &key),
        Some(Object::ClusterPolicy(p)) if p.name == "p"
    ));
    assert!(
        cluster.namespace("ignored").is_none(),
        "no namespace is implied"
    );
    assert!(cluster.remove(Kind::ClusterNetworkPolicy, &key));
    assert!(!cluster.remove(Kind::ClusterNetworkPolicy, &key));
    assert!(cluster.cluster_policies().is_empty());
}

#[test]
fn a_typed_list_of_cluster_policies_is_read() {
    let list = "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicyList\n\
                items:\n- metadata: {name: a}\n  spec: {tier: Admin, priority: 1, subject: \
                {namespaces: {}}}\n- metadata: {name: b}\n  spec: {tier: Admin, priority: 1}\n";
    let error = parse_sources(&[source("l.yaml", list)])
        .expect_err("b has no subject")
        .to_string();
    assert_eq!(
        error,
        "l.yaml: document 1, items[1]: ClusterNetworkPolicy b: field spec.subject: is required: \
         namespaces or pods"
    );
    let m = parse_sources(&[source(
        "l.yaml",
        &list.replace(
            "priority: 1}\n",
            "priority: 1, subject: {namespaces: {}}}\n",
        ),
    )])
    .expect("valid");
    assert_eq!(m.cluster.cluster_policies().len(), 2);
}

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {kubernetes.io/os: linux}}\n\
status:\n  addresses:\n  - {type: Hostname, address: n1}\n  - {type: InternalIP, address: \"192.168.0.1\"}\n  \
- {type: InternalDNS, address: n1.internal}\n  - {type: ExternalIP, address: \"2001:db8::1\"}\n  \
- {type: ExternalIP, address: \"192.168.0.1\"}\n";

#[test]
fn nodes_keep_their_internal_and_external_ips() {
    let m = parse_sources(&[source("n.yaml", NODE)]).expect("valid");
    let node = m.cluster.node("n1").expect("node n1");
    assert_eq!(
        node.labels
            .get("kubernetes.io/os")
            .expect("label kubernetes.io/os"),
        "linux"
    );
    let ips: Vec<IpAddr> = ["192.168.0.1", "2001:db8::1"]
        .iter()
        .map(|s| s.parse().expect("ip"))
        .collect();
    assert_eq!(
        node.addresses, ips,
        "written order, each once, names left out"
    );
    assert_eq!(
        m.cluster.keys(Kind::Node),
        [policy_compiler::model::ObjectRef::new("", "n1")]
    );
    assert!(
        m.cluster.nodes().is_empty(),
        "no pod runs on it: nodes() is the nodes of pods"
    );

    let bad = NODE.replace("\"2001:db8::1\"", "\"2001:db8::zz\"");
    assert_eq!(
        parse_sources(&[source("n.yaml", &bad)])
            .expect_err("bad")
            .to_string(),
        "n.yaml: document 1: Node n1: field status.addresses[3].address: \"2001:db8::zz\" is not \
         an IP address (an ExternalIP entry holds one)"
    );
    let unnamed = NODE.replace("name: n1, ", "");
    assert!(parse_sources(&[source("n.yaml", &unnamed)])
        .expect_err("unnamed")
        .to_string()
        .ends_with("Node <unnamed>: field metadata.name: is required"));
    let no_status = "apiVersion: v1\nkind: Node\nmetadata: {name: n2}\n";
    let m = parse_sources(&[source("n.yaml", no_status)]).expect("valid");
    assert!(m.cluster.node("n2").expect("n2").addresses.is_empty());
}

#[test]
fn every_cluster_policy_and_node_of_the_conformance_suite_converts() {
    let dir = common::fixtures().join("network-policy-api");
    let suite = Suite::read(&dir).unwrap_or_else(|e| panic!("{e}"));
    let schema = crd_schema();
    let mut read = Vec::new();
    for case in &suite.cases {
        for (i, step) in case.steps.iter().enumerate() {
            for object in step
                .apply
                .iter()
                .filter(|o| o["kind"] == "ClusterNetworkPolicy")
            {
                assert!(
                    schema.is_valid(object),
                    "{}, step {}: the CRD rejects {}",
                    case.file,
                    i + 1,
                    object["metadata"]["name"]
                );
                match convert(raw(object.clone()), DEFAULT_NAMESPACE) {
                    Converted::Valid(Object::ClusterPolicy(p)) => {
                        read.push((case.name.clone(), i, p))
                    }
                    other => panic!("{}, step {}: {other:?}", case.file, i + 1),
                }
            }
        }
    }
    // Counted in the files: `grep -c 'kind: ClusterNetworkPolicy' cases/*.yaml`.
    assert_eq!(read.len(), 64);
    let find = |case: &str, step: usize, name: &str| {
        read.iter()
            .find(|(c, s, p)| c == case && *s == step && p.name == name)
            .map(|(_, _, p)| p)
            .unwrap_or_else(|| panic!("{case} step {step}: no {name}"))
    };

    let nodes = find(
        "admin-egress-node-peers",
        0,
        "node-and-cidr-as-peers-example",
    );
    assert_eq!((nodes.tier, nodes.priority), (Tier::Admin, 75));
    let linux = LabelSelector::from_labels([("kubernetes.io/os", "linux")]);
    let rules = nodes.rules(Direction::Egress);
    assert_eq!(
        rules[0].name.as_deref(),
        Some("allow-egress-to-34345-on-nodes")
    );
    assert_eq!(rules[0].peers, [ClusterPeer::Nodes(linux.clone())]);
    assert_eq!(
        rules[0].protocols,
        [ClusterPort::Range {
            protocol: Protocol::Tcp,
            first: 34345,
            last: 34345
        }]
    );
    assert_eq!(rules[2].action, Action::Deny);
    assert_eq!(
        rules[2].peers[1..],
        [
            ClusterPeer::Nodes(linux),
            ClusterPeer::Networks(vec![
                "0.0.0.0/0".parse().expect("cidr"),
                "::/0".parse().expect("cidr")
            ]),
        ]
    );

    let named = find("admin-egress-named-port", 1, "egress-tcp");
    assert_eq!(named.priority, 6);
    assert_eq!(
        named.egress[5].protocols,
        [ClusterPort::Named("web".into())]
    );

    let inline = find(
        "admin-egress-inline-cidr-peers",
        4,
        "inline-cidr-as-peers-example",
    );
    let ClusterPeer::Networks(cidrs) = &inline.egress[0].peers[0] else {
        panic!("a networks peer first: {:?}", inline.egress[0])
    };
    let cidrs: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        cidrs,
        [
            "10.244.1.40/32",
            "10.244.1.30/32",
            "fd00:10:244:1::40/128",
            "fd00:10:244:1::30/128"
        ]
    );

    // The model's Nodes, read by the input as every kind.
    let cluster = &suite.model.cluster;
    assert_eq!(cluster.node_objects().len(), 2);
    let node = cluster.node("node-1").expect("node-1");
    let ips: Vec<String> = node.addresses.iter().map(|ip| ip.to_string()).collect();
    assert_eq!(
        ips,
        [
            "192.168.100.1",
            "fd00:192:168:100::1",
            "203.0.113.1",
            "2001:db8:100::1"
        ]
    );
    assert_eq!(
        node.labels
            .get("kubernetes.io/os")
            .expect("label kubernetes.io/os"),
        "linux"
    );
}
