//! Reading the kernel's table back: `nft -j list table inet nftpolicy` as a [`Ruleset`].
//!
//! The node agent lists its table on restart and audits it for drift. [`parse_table`] maps every shape
//! nft 1.0.6 lists for what [`Ruleset::render`] writes back to the exact model value, so that for
//! every ruleset `R` the compiler emits, `parse_table(list(load(R))) == as_listed(&R)`, and
//! [`as_listed`] is `R` itself unless a comment had to be shortened. Anything the model cannot express —
//! a flag, a counter, another set type, a chain on another hook, an expression nftpolicy never emits —
//! is a [`JsonError`], never dropped: the agent treats an error as drift and replaces the table whole.
//!
//! What the listing looks like (nft 1.0.6, `json_schema_version` 1), and how it maps back:
//!
//! | written | listed |
//! |---|---|
//! | `set s { type ipv4_addr; comment "c"; elements = { 10.0.0.1 } }` | `{"set": {"name": "s", "type": "ipv4_addr", "comment": "c", "elem": ["10.0.0.1"], ...}}`, no `elem` when empty |
//! | `type ipv4_addr . inet_proto . inet_service`, `10.0.0.1 . tcp . 80` | `"type": ["ipv4_addr", "inet_proto", "inet_service"]`, `{"concat": ["10.0.0.1", "tcp", 80]}` (the protocol by number when nft has no name for it) |
//! | `map m { type ipv4_addr : verdict; elements = { 10.0.0.1 : jump c } }` | `{"map": {"type": "ipv4_addr", "map": "verdict", "elem": [["10.0.0.1", {"jump": {"target": "c"}}]]}}` |
//! | `type filter hook forward priority filter + 1; policy accept;` | `"type": "filter", "hook": "forward", "prio": 1, "policy": "accept"` |
//! | `ct state established,related` | `{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}` |
//! | `ip saddr 10.0.0.0/8`, `ip6 daddr != fd00::/16` | `"left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}`, `"op": "!="` |
//! | `ip saddr 10.0.0.1/32` | `"right": "10.0.0.1"`: a full-length prefix is listed as a plain address |
//! | `ip saddr @s` | `"right": "@s"` |
//! | `meta l4proto tcp` | `"left": {"meta": {"key": "l4proto"}}, "right": "tcp"` |
//! | `tcp dport 80`, `80-90`, `{ 80, 90-100 }` | `"right": 80`, `{"range": [80, 90]}`, `{"set": [80, {"range": [90, 100]}]}` |
//! | `ip daddr . meta l4proto . th dport @s` | `"left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": "@s"` |
//! | `accept`, `drop`, `jump c` | `{"accept": null}`, `{"drop": null}`, `{"jump": {"target": "c"}}` |
//! | `ip saddr vmap @m` | `{"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@m"}}` |
//! | `comment "c"` on a rule | `"comment": "c"` beside `"expr"` |
//!
//! What the listing loses, which [`as_listed`] applies to a model value so it compares equal:
//!
//! - Comments are stored as written, so a comment [`Ruleset::render`] shortened (longer than
//!   [`MAX_COMMENT_LEN`](super::MAX_COMMENT_LEN) bytes) or whose double quotes it replaced comes back
//!   in that form.
//! - nft merges a port set's adjacent or overlapping ranges (`{ 1, 2, 3-5 }` lists as `1-5`) and
//!   sorts it; the compiler already emits ports that way.
//! - `meta l4proto tcp` followed (anywhere later in the rule) by `tcp dport` is a protocol dependency
//!   nft does not list; the compiler never emits both in one rule.
//! - A chain's or the table's comment, and the table's flags, are not in nft 1.0.6's JSON at all
//!   (the table's flags come back under a wrong value, which is refused): nftpolicy writes none, and
//!   this listing cannot tell.
//!
//! Handles, and the order in which sets, maps and chains are listed, carry no meaning in the model and
//! are ignored; a set's elements are a set, whatever order they are listed in; rules keep their order.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::render::comment;
use super::{
    AddrField, BaseChain, Chain, Match, Rule, Ruleset, Set, SetElement, SetType, Verdict,
    VerdictMap, TABLE_NAME,
};
use crate::cidr::{Cidr, Family};
use crate::model::Protocol;

/// The longest JSON snippet an error quotes, in bytes.
const SNIPPET_LEN: usize = 200;

/// Why a listing is not a table nftpolicy could have written.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The text is not JSON at all.
    #[error("the listing is not JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// The JSON is not an `nft -j` listing (`{"nftables": [...]}`).
    #[error("not an `nft -j` listing (expected {{\"nftables\": [...]}}): {0}")]
    NotAListing(String),
    /// The listing holds no `table inet nftpolicy` object.
    #[error("the listing holds no table inet {TABLE_NAME}")]
    NoTable,
    /// Something the model cannot express, or a shape nftpolicy never writes.
    #[error("{object}: unexpected {what}: {snippet}")]
    Unexpected {
        /// The object it was found in, e.g. `set pods_x_v4` or `rule 12 in chain egress`.
        object: String,
        /// What was not understood, e.g. `key "flags"` or `statement`.
        what: String,
        /// The JSON in question, shortened to a couple of hundred bytes.
        snippet: String,
    },
}

/// Parses `nft -j list table inet nftpolicy` output into the ruleset model.
///
/// Every object must belong to `table inet nftpolicy` and be something [`Ruleset::render`] can write;
/// see the [module documentation](self) for the shapes understood and what the listing loses.
pub fn parse_table(json: &str) -> Result<Ruleset, JsonError> {
    let root: Value = serde_json::from_str(json)?;
    let items = root
        .as_object()
        .filter(|m| m.len() == 1)
        .and_then(|m| m.get("nftables"))
        .and_then(Value::as_array)
        .ok_or_else(|| JsonError::NotAListing(snippet(&root)))?;
    let mut ruleset = Ruleset::default();
    let mut table_seen = false;
    // Rules are attached once every chain is known, in the order they are listed.
    let mut rules: Vec<(String, String, Rule, &Value)> = Vec::new();
    for item in items {
        let Some((kind, body)) = single(item) else {
            return Err(unexpected("listing", "item", item));
        };
        match kind {
            "metainfo" => {}
            "table" => {
                parse_table_object(body)?;
                if table_seen {
                    return Err(unexpected("listing", "second table", item));
                }
                table_seen = true;
            }
            "set" => {
                let (name, set) = parse_set(body)?;
                if ruleset.sets.contains_key(&name) || ruleset.maps.contains_key(&name) {
                    return Err(unexpected(
                        &format!("set {name}"),
                        "second definition",
                        item,
                    ));
                }
                ruleset.sets.insert(name, set);
            }
            "map" => {
                let (name, map) = parse_map(body)?;
                if ruleset.sets.contains_key(&name) || ruleset.maps.contains_key(&name) {
                    return Err(unexpected(
                        &format!("map {name}"),
                        "second definition",
                        item,
                    ));
                }
                ruleset.maps.insert(name, map);
            }
            "chain" => {
                let (name, chain) = parse_chain(body)?;
                if ruleset.chains.contains_key(&name) {
                    return Err(unexpected(
                        &format!("chain {name}"),
                        "second definition",
                        item,
                    ));
                }
                ruleset.chains.insert(name, chain);
            }
            "rule" => {
                let (label, chain, rule) = parse_rule(body)?;
                rules.push((label, chain, rule, item));
            }
            other => {
                return Err(unexpected(
                    &format!("table inet {TABLE_NAME}"),
                    format!("{other} object"),
                    item,
                ))
            }
        }
    }
    if !table_seen {
        return Err(JsonError::NoTable);
    }
    for (label, chain, rule, item) in rules {
        let Some(target) = ruleset.chains.get_mut(&chain) else {
            return Err(unexpected(&label, "rule of an undeclared chain", item));
        };
        target.rules.push(rule);
    }
    Ok(ruleset)
}

/// The ruleset as the kernel stores and lists it: what [`parse_table`] returns after `ruleset` was
/// loaded with `nft -f`. Equal to `ruleset` for what the compiler emits, except for comments that
/// [`Ruleset::render`] shortens or whose double quotes it replaces.
///
/// Applies what the listing loses: comments in their stored form, port lists sorted with adjacent
/// and overlapping ranges merged, and a `meta l4proto P` dropped when a later `P dport` of the same
/// rule depends on it.
pub fn as_listed(ruleset: &Ruleset) -> Ruleset {
    let mut out = ruleset.clone();
    for set in out.sets.values_mut() {
        set.comment = comment(&set.comment);
    }
    for chain in out.chains.values_mut() {
        for rule in &mut chain.rules {
            rule.comment = rule.comment.as_deref().map(comment);
            rule.matches = listed_matches(&rule.matches);
        }
    }
    out
}

fn listed_matches(matches: &[Match]) -> Vec<Match> {
    let mut keep = vec![true; matches.len()];
    // nft remembers the last `meta l4proto` as the dependency of the next transport header match,
    // and does not list it when that match implies it.
    let mut dependency: Option<usize> = None;
    for (i, m) in matches.iter().enumerate() {
        match m {
            Match::L4Proto(_) => dependency = Some(i),
            Match::Dport { protocol, .. } => {
                if let Some(d) = dependency.take() {
                    if matches[d] == Match::L4Proto(*protocol) {
                        keep[d] = false;
                    }
                }
            }
            _ => {}
        }
    }
    matches
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(m, _)| match m {
            Match::Dport { protocol, ports } => Match::Dport {
                protocol: *protocol,
                ports: merged(ports),
            },
            other => other.clone(),
        })
        .collect()
}

fn merged(ports: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (a, b) in sorted {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

// ---- helpers ----

fn snippet(v: &Value) -> String {
    let mut text = v.to_string();
    if text.len() > SNIPPET_LEN {
        let mut cut = SNIPPET_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" …");
    }
    text
}

fn unexpected(object: &str, what: impl Into<String>, v: &Value) -> JsonError {
    JsonError::Unexpected {
        object: object.to_string(),
        what: what.into(),
        snippet: snippet(v),
    }
}

/// The key and value of an object with exactly one member.
fn single(v: &Value) -> Option<(&str, &Value)> {
    let map = v.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// The members of an object, refusing any key outside `allowed`.
fn members<'a>(
    v: &'a Value,
    allowed: &[&str],
    object: &str,
    what: &str,
) -> Result<&'a Map<String, Value>, JsonError> {
    let Some(map) = v.as_object() else {
        return Err(unexpected(object, what, v));
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(unexpected(object, format!("key {key:?} in {what}"), v));
    }
    Ok(map)
}

fn str_member<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    object: &str,
    whole: &Value,
) -> Result<&'a str, JsonError> {
    map.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| unexpected(object, format!("{key:?} (missing or not a string)"), whole))
}

/// The label of an object for messages: `set NAME`, or `set` when it has no name.
fn label(kind: &str, v: &Value, name_key: &str) -> String {
    match v.get(name_key).and_then(Value::as_str) {
        Some(name) => format!("{kind} {name}"),
        None => kind.to_string(),
    }
}

/// Checks that an object belongs to `table inet nftpolicy`.
fn check_owner(
    map: &Map<String, Value>,
    table_key: &str,
    object: &str,
    whole: &Value,
) -> Result<(), JsonError> {
    let family = map.get("family").and_then(Value::as_str);
    let table = map.get(table_key).and_then(Value::as_str);
    if family == Some("inet") && table == Some(TABLE_NAME) {
        Ok(())
    } else {
        Err(unexpected(
            object,
            format!("object outside table inet {TABLE_NAME}"),
            whole,
        ))
    }
}

fn addr_type(v: &Value) -> Option<Family> {
    match v.as_str()? {
        "ipv4_addr" => Some(Family::V4),
        "ipv6_addr" => Some(Family::V6),
        _ => None,
    }
}

fn addr(v: &Value, family: Family) -> Option<IpAddr> {
    let ip: IpAddr = v.as_str()?.parse().ok()?;
    (Family::of(&ip) == family).then_some(ip)
}

fn any_addr(v: &Value) -> Option<IpAddr> {
    v.as_str()?.parse().ok()
}

fn protocol(v: &Value) -> Option<Protocol> {
    match v {
        Value::String(s) => match s.as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        },
        Value::Number(n) => match n.as_u64()? {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        },
        _ => None,
    }
}

fn port(v: &Value) -> Option<u16> {
    u16::try_from(v.as_u64()?).ok()
}

/// A set reference, `"@name"`.
fn set_ref(v: &Value) -> Option<String> {
    v.as_str()?.strip_prefix('@').map(str::to_string)
}

// ---- objects ----

fn parse_table_object(v: &Value) -> Result<(), JsonError> {
    let object = format!("table inet {TABLE_NAME}");
    let map = members(v, &["family", "name", "handle"], &object, "table")?;
    check_owner(map, "name", &label("table", v, "name"), v)
}

fn parse_set(v: &Value) -> Result<(String, Set), JsonError> {
    let object = label("set", v, "name");
    let map = members(
        v,
        &[
            "family", "name", "table", "type", "handle", "comment", "elem",
        ],
        &object,
        "set",
    )?;
    check_owner(map, "table", &object, v)?;
    let name = str_member(map, "name", &object, v)?.to_string();
    let key = map.get("type").unwrap_or(&Value::Null);
    let set_type = match key {
        Value::Array(parts) => match parts.as_slice() {
            [a, p, s] if p == "inet_proto" && s == "inet_service" => {
                addr_type(a).map(SetType::AddrProtoPort)
            }
            _ => None,
        },
        other => addr_type(other).map(SetType::Addr),
    }
    .ok_or_else(|| unexpected(&object, "set type", key))?;
    let comment = map
        .get("comment")
        .and_then(Value::as_str)
        .ok_or_else(|| unexpected(&object, "set without a comment", v))?
        .to_string();
    let mut elements = BTreeSet::new();
    for e in elem_list(map, &object, v)? {
        let element = match set_type {
            SetType::Addr(f) => addr(e, f).map(SetElement::Addr),
            SetType::AddrProtoPort(f) => e
                .get("concat")
                .filter(|_| e.as_object().is_some_and(|o| o.len() == 1))
                .and_then(Value::as_array)
                .and_then(|parts| match parts.as_slice() {
                    [a, p, s] => Some(SetElement::AddrProtoPort(
                        addr(a, f)?,
                        protocol(p)?,
                        port(s)?,
                    )),
                    _ => None,
                }),
        };
        elements.insert(element.ok_or_else(|| unexpected(&object, "element", e))?);
    }
    Ok((
        name,
        Set {
            set_type,
            comment,
            elements,
        },
    ))
}

/// The `elem` array of a set or map; absent when it is empty.
fn elem_list<'a>(
    map: &'a Map<String, Value>,
    object: &str,
    whole: &Value,
) -> Result<&'a [Value], JsonError> {
    match map.get("elem") {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(unexpected(object, "elements", whole)),
    }
}

/// A verdict map element, `[address, {"jump": {"target": chain}}]`.
fn map_element(e: &Value, family: Family) -> Option<(IpAddr, String)> {
    let [key, data] = e.as_array()?.as_slice() else {
        return None;
    };
    let (kind, body) = single(data)?;
    let (field, target) = single(body)?;
    if kind != "jump" || field != "target" {
        return None;
    }
    Some((addr(key, family)?, target.as_str()?.to_string()))
}

fn parse_map(v: &Value) -> Result<(String, VerdictMap), JsonError> {
    let object = label("map", v, "name");
    let map = members(
        v,
        &["family", "name", "table", "type", "handle", "map", "elem"],
        &object,
        "map",
    )?;
    check_owner(map, "table", &object, v)?;
    let name = str_member(map, "name", &object, v)?.to_string();
    let family = map
        .get("type")
        .and_then(addr_type)
        .ok_or_else(|| unexpected(&object, "map key type", v))?;
    if map.get("map").and_then(Value::as_str) != Some("verdict") {
        return Err(unexpected(&object, "map data type", v));
    }
    let mut out = VerdictMap {
        family,
        elements: Default::default(),
    };
    for e in elem_list(map, &object, v)? {
        let pair = map_element(e, family);
        let Some((key, chain)) = pair else {
            return Err(unexpected(&object, "element", e));
        };
        if out.elements.insert(key, chain).is_some() {
            return Err(unexpected(&object, "second element with the same key", e));
        }
    }
    Ok((name, out))
}

fn parse_chain(v: &Value) -> Result<(String, Chain), JsonError> {
    let object = label("chain", v, "name");
    let map = members(
        v,
        &[
            "family", "table", "name", "handle", "type", "hook", "prio", "policy",
        ],
        &object,
        "chain",
    )?;
    check_owner(map, "table", &object, v)?;
    let name = str_member(map, "name", &object, v)?.to_string();
    let hook_keys = ["type", "hook", "prio", "policy"];
    let base = if hook_keys.iter().any(|k| map.contains_key(*k)) {
        let kind = map.get("type").and_then(Value::as_str);
        let hook = map.get("hook").and_then(Value::as_str);
        let policy = map.get("policy").and_then(Value::as_str);
        let prio = map
            .get("prio")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok());
        match (kind, hook, policy, prio) {
            (Some("filter"), Some("forward"), Some("accept"), Some(priority)) => {
                Some(BaseChain { priority })
            }
            _ => {
                return Err(unexpected(
                    &object,
                    "base chain (only type filter hook forward, policy accept)",
                    v,
                ))
            }
        }
    } else {
        None
    };
    Ok((
        name,
        Chain {
            base,
            rules: Vec::new(),
        },
    ))
}

/// A rule: its label for messages, its chain, and the rule.
fn parse_rule(v: &Value) -> Result<(String, String, Rule), JsonError> {
    let chain = v.get("chain").and_then(Value::as_str).unwrap_or("?");
    let object = match v.get("handle").and_then(Value::as_u64) {
        Some(h) => format!("rule {h} in chain {chain}"),
        None => format!("rule in chain {chain}"),
    };
    let map = members(
        v,
        &["family", "table", "chain", "handle", "expr", "comment"],
        &object,
        "rule",
    )?;
    check_owner(map, "table", &object, v)?;
    let chain = str_member(map, "chain", &object, v)?.to_string();
    let comment = match map.get("comment") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(unexpected(&object, "comment", other)),
    };
    let Some(Value::Array(exprs)) = map.get("expr") else {
        return Err(unexpected(&object, "rule without an expression list", v));
    };
    let Some((last, matches)) = exprs.split_last() else {
        return Err(unexpected(&object, "empty rule", v));
    };
    let matches = matches
        .iter()
        .map(|m| match single(m) {
            Some(("match", body)) => parse_match(body, &object, m),
            _ => Err(unexpected(&object, "statement", m)),
        })
        .collect::<Result<Vec<Match>, JsonError>>()?;
    let verdict = parse_verdict(last, &object)?;
    Ok((
        object,
        chain,
        Rule {
            matches,
            verdict,
            comment,
        },
    ))
}

fn parse_verdict(v: &Value, object: &str) -> Result<Verdict, JsonError> {
    let bad = || unexpected(object, "verdict", v);
    let (kind, body) = single(v).ok_or_else(bad)?;
    match kind {
        "accept" if body.is_null() => Ok(Verdict::Accept),
        "drop" if body.is_null() => Ok(Verdict::Drop),
        "jump" => {
            let map = members(body, &["target"], object, "jump")?;
            let target = map.get("target").and_then(Value::as_str).ok_or_else(bad)?;
            Ok(Verdict::Jump(target.to_string()))
        }
        "vmap" => {
            let map = members(body, &["key", "data"], object, "vmap")?;
            let (family, field) = map
                .get("key")
                .and_then(payload)
                .and_then(|(p, f)| Some((ip_family(p)?, addr_field(f)?)))
                .ok_or_else(bad)?;
            let map_name = map.get("data").and_then(set_ref).ok_or_else(bad)?;
            Ok(Verdict::Vmap {
                family,
                field,
                map: map_name,
            })
        }
        "match" => Err(unexpected(object, "rule without a verdict", v)),
        _ => Err(bad()),
    }
}

/// `{"payload": {"protocol": P, "field": F}}` as `(P, F)`.
fn payload(v: &Value) -> Option<(&str, &str)> {
    let (kind, body) = single(v)?;
    let map = body.as_object()?;
    if kind != "payload" || map.len() != 2 {
        return None;
    }
    Some((map.get("protocol")?.as_str()?, map.get("field")?.as_str()?))
}

/// `{"meta": {"key": K}}` as `K`; `{"ct": {"key": K}}` likewise.
fn keyed<'a>(v: &'a Value, expected_kind: &str) -> Option<&'a str> {
    let (kind, body) = single(v)?;
    let map = body.as_object()?;
    if kind != expected_kind || map.len() != 1 {
        return None;
    }
    map.get("key")?.as_str()
}

fn ip_family(protocol: &str) -> Option<Family> {
    match protocol {
        "ip" => Some(Family::V4),
        "ip6" => Some(Family::V6),
        _ => None,
    }
}

fn addr_field(field: &str) -> Option<AddrField> {
    match field {
        "saddr" => Some(AddrField::Saddr),
        "daddr" => Some(AddrField::Daddr),
        _ => None,
    }
}

fn transport(protocol: &str) -> Option<Protocol> {
    match protocol {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// One match expression; `whole` is the `{"match": ...}` statement, quoted in errors.
fn parse_match(v: &Value, object: &str, whole: &Value) -> Result<Match, JsonError> {
    let map = members(v, &["op", "left", "right"], object, "match")?;
    let (Some(op), Some(left), Some(right)) = (
        map.get("op").and_then(Value::as_str),
        map.get("left"),
        map.get("right"),
    ) else {
        return Err(unexpected(object, "match", whole));
    };
    match_from(op, left, right).ok_or_else(|| unexpected(object, "match", whole))
}

fn match_from(op: &str, left: &Value, right: &Value) -> Option<Match> {
    if keyed(left, "ct") == Some("state") {
        let states: BTreeSet<&str> = right.as_array()?.iter().filter_map(Value::as_str).collect();
        let expected = BTreeSet::from(["established", "related"]);
        return (op == "in" && right.as_array()?.len() == 2 && states == expected)
            .then_some(Match::CtEstablishedOrRelated);
    }
    if keyed(left, "meta") == Some("l4proto") {
        if op != "==" {
            return None;
        }
        return protocol(right).map(Match::L4Proto);
    }
    if let Some((proto, field)) = payload(left) {
        if let (Some(family), Some(field)) = (ip_family(proto), addr_field(field)) {
            return addr_match(op, family, field, right);
        }
        if let (Some(protocol), "dport", "==") = (transport(proto), field, op) {
            return Some(Match::Dport {
                protocol,
                ports: ports(right)?,
            });
        }
        return None;
    }
    let parts = left.get("concat")?.as_array()?;
    if left.as_object()?.len() != 1 || op != "==" {
        return None;
    }
    match parts.as_slice() {
        [a, p, t] if keyed(p, "meta") == Some("l4proto") && payload(t) == Some(("th", "dport")) => {
            let (proto, field) = payload(a)?;
            let family = ip_family(proto)?;
            (field == "daddr").then_some(())?;
            Some(Match::DaddrProtoPortInSet {
                family,
                set: set_ref(right)?,
            })
        }
        _ => None,
    }
}

fn addr_match(op: &str, family: Family, field: AddrField, right: &Value) -> Option<Match> {
    let negated = match op {
        "==" => false,
        "!=" => true,
        _ => return None,
    };
    if let Some(set) = set_ref(right) {
        return (!negated).then_some(Match::InSet { family, field, set });
    }
    let cidr = match right {
        Value::String(_) => Cidr::host(addr(right, family)?),
        Value::Object(o) if o.len() == 1 => {
            let prefix = o.get("prefix")?.as_object()?;
            if prefix.len() != 2 {
                return None;
            }
            let ip = any_addr(prefix.get("addr")?)?;
            let len = u8::try_from(prefix.get("len")?.as_u64()?).ok()?;
            let bits = match family {
                Family::V4 => 32,
                Family::V6 => 128,
            };
            if Family::of(&ip) != family || len > bits {
                return None;
            }
            Cidr::new(ip, len)
        }
        _ => return None,
    };
    Some(Match::Prefix {
        field,
        negated,
        cidr,
    })
}

/// A port, `{"range": [a, b]}`, or `{"set": [...]}` of those, as sorted inclusive ranges.
fn ports(v: &Value) -> Option<Vec<(u16, u16)>> {
    let mut out = match v {
        Value::Object(o) if o.len() == 1 && o.contains_key("set") => {
            let items = o.get("set")?.as_array()?;
            if items.is_empty() {
                return None;
            }
            items.iter().map(port_range).collect::<Option<Vec<_>>>()?
        }
        other => vec![port_range(other)?],
    };
    out.sort_unstable();
    Some(out)
}

fn port_range(v: &Value) -> Option<(u16, u16)> {
    if let Some(p) = port(v) {
        return Some((p, p));
    }
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    match o.get("range")?.as_array()?.as_slice() {
        [a, b] => {
            let (a, b) = (port(a)?, port(b)?);
            (a <= b).then_some((a, b))
        }
        _ => None,
    }
}
