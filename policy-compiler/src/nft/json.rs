//! Reading the kernel's table back: `nft -j list table inet nftpolicy` as a [`Ruleset`], and
//! `nft -j list counters table inet nftpolicy` as the values of its named counters
//! ([`parse_counters`]); and, for stand-ins of the kernel, writing those listings ([`listing`],
//! [`counters_listing`]).
//!
//! The node agent lists its table on restart and audits it for drift. [`parse_table`] maps every shape
//! nft 1.0.6 lists for what [`Ruleset::render`] writes back to the exact model value, so that for
//! every ruleset `R` the compiler emits, `parse_table(list(load(R))) == as_listed(&R)`, and
//! [`as_listed`] is `R` itself unless a comment had to be shortened. Anything the model cannot express —
//! a flag, an anonymous counter, another set type, a chain on another hook, an expression nftpolicy
//! never emits — is a [`JsonError`], never dropped: the agent treats an error as drift and replaces
//! the table whole.
//!
//! What the listing looks like (nft 1.0.6, `json_schema_version` 1), and how it maps back:
//!
//! | written | listed |
//! |---|---|
//! | `set s { type ipv4_addr; comment "c"; elements = { 10.0.0.1 } }` | `{"set": {"name": "s", "type": "ipv4_addr", "comment": "c", "elem": ["10.0.0.1"], ...}}`, no `elem` when empty |
//! | `type ipv4_addr . inet_proto . inet_service`, `10.0.0.1 . tcp . 80` | `"type": ["ipv4_addr", "inet_proto", "inet_service"]`, `{"concat": ["10.0.0.1", "tcp", 80]}` (the protocol by number when nft has no name for it) |
//! | `map m { type ipv4_addr : verdict; elements = { 10.0.0.1 : jump c } }` | `{"map": {"type": "ipv4_addr", "map": "verdict", "elem": [["10.0.0.1", {"jump": {"target": "c"}}]]}}` |
//! | `map d { type ipv4_addr : verdict; flags interval; elements = { 10.0.0.0/8 : drop, 10.1.0.1 comment "c" : return } }` | `{"map": {"type": "ipv4_addr", "map": "verdict", "flags": ["interval"], "elem": [[{"prefix": {"addr": "10.0.0.0", "len": 8}}, {"drop": null}], [{"elem": {"val": "10.1.0.1", "comment": "c"}}, {"return": null}]]}}` |
//! | decision map keys: `10.0.0.1` (also written `10.0.0.1-10.0.0.1` or `10.0.0.1/32`), `10.0.0.0/8` (also `10.0.0.0-10.255.255.255`), `10.0.0.1-10.0.0.9` | `"10.0.0.1"`, `{"prefix": {"addr": "10.0.0.0", "len": 8}}` (every range that is exactly a prefix, `/0` included), `{"range": ["10.0.0.1", "10.0.0.9"]}` |
//! | `type ipv4_addr . inet_proto . inet_service : verdict; flags interval`, `10.0.0.0/8 . udp . 53-60 : drop`, `… . tcp . 80` (also `80-80`) | `"type": ["ipv4_addr", "inet_proto", "inet_service"]`, `[{"concat": [{"prefix": …}, "udp", {"range": [53, 60]}]}, {"drop": null}]`, `… "tcp", 80]` |
//! | `type filter hook forward priority filter + 1; policy accept;`, `hook input priority filter` | `"type": "filter", "hook": "forward", "prio": 1, "policy": "accept"`, `"hook": "input", "prio": 0` |
//! | `ct state established,related` | `{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}` |
//! | `ip saddr 10.0.0.0/8`, `ip6 daddr != fd00::/16` | `"left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}`, `"op": "!="` |
//! | `ip saddr 10.0.0.1/32` | `"right": "10.0.0.1"`: a full-length prefix is listed as a plain address |
//! | `ip saddr @s` | `"right": "@s"` |
//! | `meta l4proto tcp` | `"left": {"meta": {"key": "l4proto"}}, "right": "tcp"` |
//! | `meta l4proto { tcp, udp, sctp }`, `!=` | `"left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp", "sctp"]}`, `"op": "!="` (nft sorts the set by protocol number) |
//! | `tcp dport 80`, `80-90`, `{ 80, 90-100 }` | `"right": 80`, `{"range": [80, 90]}`, `{"set": [80, {"range": [90, 100]}]}` |
//! | `ip daddr . meta l4proto . th dport @s` | `"left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": "@s"` |
//! | `accept`, `drop`, `return`, `jump c` | `{"accept": null}`, `{"drop": null}`, `{"return": null}`, `{"jump": {"target": "c"}}` |
//! | `ip saddr vmap @m` | `{"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@m"}}`: a lookup of a verdict map or, when `m` is a decision map, of that |
//! | `ip6 daddr . meta l4proto . th dport vmap @d` | `{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip6", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@d"}}` |
//! | `comment "c"` on a rule | `"comment": "c"` beside `"expr"` |
//! | `counter c { comment "x"; }`, `counter d { }` | `{"counter": {"family": "inet", "name": "c", "table": "nftpolicy", "handle": 2, "comment": "x", "packets": 0, "bytes": 0}}`, no `comment` when it has none (the counts are ignored) |
//! | `counter name "c"` | `{"counter": "c"}` |
//! | `limit rate 10/second burst 20 packets` | `{"limit": {"rate": 10, "burst": 20, "per": "second"}}` (nft's own text leaves out `burst 5 packets`, its default; the JSON never does) |
//! | `log prefix "p" group 7` (also written `log group 7 prefix "p"`) | `{"log": {"prefix": "p", "group": 7}}` |
//! | a rule without verdict, `limit … log …` | no verdict item: the last item is a match or a statement |
//! | `continue`, alone in a rule | `{"continue": null}` |
//!
//! What the listing loses, which [`as_listed`] applies to a model value so it compares equal:
//!
//! - Comments (of sets, counters, rules and decision map elements) are stored as written, so a
//!   comment [`Ruleset::render`] shortened (longer than [`MAX_COMMENT_LEN`](super::MAX_COMMENT_LEN)
//!   bytes) or whose double quotes it replaced comes back in that form; so are log prefixes, which
//!   it cuts at [`MAX_LOG_PREFIX_LEN`](super::MAX_LOG_PREFIX_LEN) bytes and writes without `"` or `$`.
//! - nft merges a port set's adjacent or overlapping ranges (`{ 1, 2, 3-5 }` lists as `1-5`) and
//!   sorts it; the compiler already emits ports that way.
//! - `meta l4proto tcp` followed (anywhere later in the rule) by `tcp dport` is a protocol dependency
//!   nft does not list (unless a statement stands between them); the compiler never emits both in
//!   one rule. Before a lookup keyed with `. meta l4proto . th dport`, nft lists `meta l4proto tcp`
//!   as the key's `tcp dport`, which the model cannot express (the listing is refused); the
//!   compiler never emits that either.
//! - A chain's or the table's comment, and the table's flags, are not in nft 1.0.6's JSON at all
//!   (the table's flags come back under a wrong value, which is refused): nftpolicy writes none, and
//!   this listing cannot tell.
//!
//! Handles, and the order in which counters, sets, maps and chains are listed, carry no meaning in
//! the model and are ignored; a set's elements are a set, whatever order they are listed in; rules
//! keep their order. A named counter's packet and byte counts are kernel state, not the table's
//! definition: [`parse_table`] ignores them, [`canonical_listing`] leaves them out, and
//! [`parse_counters`] reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::render::{
    addr_type as type_keyword, comment, family_keyword, field_keyword, log_prefix,
};
use super::{
    AddrField, BaseChain, Chain, Counter, CounterValue, Decision, DecisionKey, DecisionMap,
    DecisionVerdict, Hook, Match, Rule, Ruleset, Set, SetElement, SetType, Verdict, VerdictMap,
    TABLE_NAME,
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
                if ruleset.sets.contains_key(&name)
                    || ruleset.maps.contains_key(&name)
                    || ruleset.decision_maps.contains_key(&name)
                {
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
                if ruleset.sets.contains_key(&name)
                    || ruleset.maps.contains_key(&name)
                    || ruleset.decision_maps.contains_key(&name)
                {
                    return Err(unexpected(
                        &format!("map {name}"),
                        "second definition",
                        item,
                    ));
                }
                match map {
                    ParsedMap::Verdict(map) => {
                        ruleset.maps.insert(name, map);
                    }
                    ParsedMap::Decision(map) => {
                        ruleset.decision_maps.insert(name, map);
                    }
                }
            }
            "counter" => {
                let (name, counter, _) = parse_counter(body)?;
                if ruleset.counters.insert(name.clone(), counter).is_some() {
                    return Err(unexpected(
                        &format!("counter {name}"),
                        "second definition",
                        item,
                    ));
                }
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
    for (label, chain, mut rule, item) in rules {
        // `ip saddr vmap @m` reads the same for both kinds of map.
        if let Verdict::Vmap { family, field, map } = &rule.verdict {
            if ruleset.decision_maps.contains_key(map) {
                rule.verdict = Verdict::DecisionVmap {
                    family: *family,
                    field: *field,
                    ports: false,
                    map: map.clone(),
                };
            }
        }
        let Some(target) = ruleset.chains.get_mut(&chain) else {
            return Err(unexpected(&label, "rule of an undeclared chain", item));
        };
        target.rules.push(rule);
    }
    Ok(ruleset)
}

/// Parses `nft -j list counters table inet nftpolicy` output: the packets and bytes of each named
/// counter of the table, by name.
///
/// Every item but the `metainfo` must be a counter of `table inet nftpolicy` as nft 1.0.6 lists it
/// (see the [module documentation](self)); anything else is a [`JsonError`].
pub fn parse_counters(json: &str) -> Result<BTreeMap<String, CounterValue>, JsonError> {
    let root: Value = serde_json::from_str(json)?;
    let items = root
        .as_object()
        .filter(|m| m.len() == 1)
        .and_then(|m| m.get("nftables"))
        .and_then(Value::as_array)
        .ok_or_else(|| JsonError::NotAListing(snippet(&root)))?;
    let mut out = BTreeMap::new();
    for item in items {
        match single(item) {
            Some(("metainfo", _)) => {}
            Some(("counter", body)) => {
                let (name, _, value) = parse_counter(body)?;
                if out.insert(name.clone(), value).is_some() {
                    return Err(unexpected(
                        &format!("counter {name}"),
                        "second definition",
                        item,
                    ));
                }
            }
            _ => return Err(unexpected("counter listing", "item", item)),
        }
    }
    Ok(out)
}

/// The ruleset as the kernel stores and lists it: what [`parse_table`] returns after `ruleset` was
/// loaded with `nft -f`. Equal to `ruleset` for what the compiler emits, except for comments that
/// [`Ruleset::render`] shortens or whose double quotes it replaces.
///
/// Applies what the listing loses: comments (of sets, counters, rules and decision map elements)
/// and log prefixes in their stored form, port lists sorted with adjacent and overlapping ranges
/// merged, and a `meta l4proto P` dropped when a later `P dport` of the same rule depends on it.
pub fn as_listed(ruleset: &Ruleset) -> Ruleset {
    let mut out = ruleset.clone();
    for set in out.sets.values_mut() {
        set.comment = comment(&set.comment);
    }
    for counter in out.counters.values_mut() {
        counter.comment = counter.comment.as_deref().map(comment);
    }
    for map in out.decision_maps.values_mut() {
        for decision in map.elements.values_mut() {
            decision.comment = decision.comment.as_deref().map(comment);
        }
    }
    for chain in out.chains.values_mut() {
        for rule in &mut chain.rules {
            rule.comment = rule.comment.as_deref().map(comment);
            rule.matches = listed_matches(&rule.matches)
                .into_iter()
                .map(|(m, _)| m)
                .collect();
        }
    }
    out
}

/// The matches of a rule as listed, each with whether it was written as an anonymous set (a port
/// list of several items stays a set when nft merges it into one range).
fn listed_matches(matches: &[Match]) -> Vec<(Match, bool)> {
    let mut keep = vec![true; matches.len()];
    // nft remembers the last `meta l4proto` as the dependency of the next transport header match,
    // and does not list it when that match implies it; a statement in between ends the dependency.
    let mut dependency: Option<usize> = None;
    for (i, m) in matches.iter().enumerate() {
        match m {
            Match::L4Proto(_) => dependency = Some(i),
            m if m.is_statement() => dependency = None,
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
            Match::Dport { protocol, ports } => (
                Match::Dport {
                    protocol: *protocol,
                    ports: merged(ports),
                },
                ports.len() > 1,
            ),
            Match::Log { group, prefix } => (
                Match::Log {
                    group: *group,
                    prefix: log_prefix(prefix),
                },
                false,
            ),
            other => (other.clone(), false),
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

// ---- comparing listings ----

/// A listing with what carries no meaning for the table taken out, so that two listings of the same
/// table compare equal as JSON, to the letter otherwise: the `metainfo` item, handles and the counts
/// of named counters dropped, protocols in set elements by name (nft names them on a machine with
/// `/etc/protocols` and gives their numbers otherwise), set elements and the table's objects in a
/// canonical order, rules in their order within their chain. Unlike [`parse_table`], it keeps what the model cannot express.
pub fn canonical_listing(json: &str) -> Result<Value, JsonError> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                for (k, x) in m.iter_mut() {
                    strip(x);
                    match (k.as_str(), x) {
                        ("elem", Value::Array(a)) => a.sort_by_key(|e| e.to_string()),
                        // address . protocol . port
                        ("concat", Value::Array(a)) => {
                            let name = match a.get(1).and_then(Value::as_u64) {
                                Some(6) => Some("tcp"),
                                Some(17) => Some("udp"),
                                Some(132) => Some("sctp"),
                                _ => None,
                            };
                            if let Some(name) = name {
                                a[1] = Value::from(name);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut root: Value = serde_json::from_str(json)?;
    let Some(items) = root.get_mut("nftables").and_then(Value::as_array_mut) else {
        return Err(JsonError::NotAListing(snippet(&root)));
    };
    let mut items = std::mem::take(items);
    items.retain(|i| i.get("metainfo").is_none());
    items.iter_mut().for_each(strip);
    for counter in items
        .iter_mut()
        .filter_map(|i| i.get_mut("counter"))
        .filter_map(Value::as_object_mut)
    {
        counter.remove("packets");
        counter.remove("bytes");
    }
    let (rules, mut objects): (Vec<Value>, Vec<Value>) =
        items.into_iter().partition(|i| i.get("rule").is_some());
    objects.sort_by_key(|o| o.to_string());
    let mut chains: Vec<(String, Vec<Value>)> = Vec::new();
    for rule in rules {
        let chain = rule["rule"]["chain"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match chains.iter_mut().find(|(c, _)| *c == chain) {
            Some((_, list)) => list.push(rule),
            None => chains.push((chain, vec![rule])),
        }
    }
    chains.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(json!({"objects": objects, "rules": chains}))
}

// ---- writing a listing ----

/// What `nft -j list table inet nftpolicy` (nft 1.0.6) prints once `ruleset` is loaded: the inverse
/// of [`parse_table`], so that `parse_table(&listing(r)) == as_listed(r)`. It is what a stand-in for
/// the kernel lists (the agent's fake kernel), so that code reading the table back runs without one.
///
/// As nft does: the `metainfo` item first, then the table, counters (with no counts: 0 packets,
/// 0 bytes), sets, maps, chains and rules, each with a handle; set elements in reverse order;
/// decision map keys as a single address, a prefix (every range that is exactly one) or a range, ports as a number or a range, an element with a comment
/// as `{"elem": {"val": KEY, "comment": C}}`; protocols in concatenated elements by name (as nft
/// prints them on a machine with `/etc/protocols`; without it, by number); what the listing loses
/// already lost (see [`as_listed`]).
pub fn listing(ruleset: &Ruleset) -> String {
    let listed = as_listed(ruleset);
    let r = &listed;
    let mut items = vec![
        json!({"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}),
        json!({"table": {"family": "inet", "name": TABLE_NAME, "handle": 2}}),
    ];
    let mut handle = 3;
    for (name, counter) in &r.counters {
        handle += 1;
        items.push(counter_json(name, counter, handle, CounterValue::default()));
    }
    for (name, set) in &r.sets {
        handle += 1;
        let mut obj = json!({"family": "inet", "name": name, "table": TABLE_NAME, "handle": handle, "comment": set.comment});
        obj["type"] = match set.set_type {
            SetType::Addr(f) => json!(type_keyword(f)),
            SetType::AddrProtoPort(f) => json!([type_keyword(f), "inet_proto", "inet_service"]),
        };
        if !set.elements.is_empty() {
            obj["elem"] = set
                .elements
                .iter()
                .rev()
                .map(|e| match e {
                    SetElement::Addr(ip) => json!(ip.to_string()),
                    SetElement::AddrProtoPort(ip, p, port) => {
                        json!({"concat": [ip.to_string(), p.as_nft(), port]})
                    }
                })
                .collect();
        }
        items.push(json!({ "set": obj }));
    }
    for (name, map) in &r.maps {
        handle += 1;
        let mut obj = json!({"family": "inet", "name": name, "table": TABLE_NAME, "type": type_keyword(map.family), "handle": handle, "map": "verdict"});
        if !map.elements.is_empty() {
            obj["elem"] = map
                .elements
                .iter()
                .map(|(ip, c)| json!([ip.to_string(), {"jump": {"target": c}}]))
                .collect();
        }
        items.push(json!({ "map": obj }));
    }
    for (name, map) in &r.decision_maps {
        handle += 1;
        let key = if map.ports {
            json!([type_keyword(map.family), "inet_proto", "inet_service"])
        } else {
            json!(type_keyword(map.family))
        };
        let mut obj = json!({"family": "inet", "name": name, "table": TABLE_NAME, "type": key, "handle": handle, "map": "verdict", "flags": ["interval"]});
        if !map.elements.is_empty() {
            obj["elem"] = map
                .elements
                .iter()
                .map(|(k, d)| json!([decision_key_json(k, d), decision_verdict_json(&d.verdict)]))
                .collect();
        }
        items.push(json!({ "map": obj }));
    }
    for (name, chain) in &r.chains {
        handle += 1;
        let mut obj =
            json!({"family": "inet", "table": TABLE_NAME, "name": name, "handle": handle});
        if let Some(base) = chain.base {
            obj["type"] = json!("filter");
            obj["hook"] = json!(base.hook.as_nft());
            obj["prio"] = json!(base.priority);
            obj["policy"] = json!("accept");
        }
        items.push(json!({ "chain": obj }));
    }
    for (name, chain) in &ruleset.chains {
        for rule in &chain.rules {
            handle += 1;
            let mut expr: Vec<Value> = listed_matches(&rule.matches)
                .iter()
                .map(|(m, as_set)| match_json(m, *as_set))
                .collect();
            if rule.verdict != Verdict::Continue || expr.is_empty() {
                expr.push(verdict_json(&rule.verdict));
            }
            let mut obj =
                json!({"family": "inet", "table": TABLE_NAME, "chain": name, "handle": handle});
            if let Some(c) = &rule.comment {
                obj["comment"] = json!(comment(c));
            }
            obj["expr"] = json!(expr);
            items.push(json!({ "rule": obj }));
        }
    }
    json!({ "nftables": items }).to_string()
}

/// What `nft -j list counters table inet nftpolicy` (nft 1.0.6) prints for the named counters of
/// `ruleset` with the given counts (a counter without one at 0): the inverse of
/// [`parse_counters`], for stand-ins of the kernel. Counters are listed by name, with comments as
/// stored.
pub fn counters_listing(ruleset: &Ruleset, values: &BTreeMap<String, CounterValue>) -> String {
    let mut items = vec![
        json!({"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}),
    ];
    for (handle, (name, counter)) in (1..).zip(&ruleset.counters) {
        let listed = Counter {
            comment: counter.comment.as_deref().map(comment),
        };
        let value = values.get(name).copied().unwrap_or_default();
        items.push(counter_json(name, &listed, handle, value));
    }
    json!({ "nftables": items }).to_string()
}

/// A named counter object as nft lists it.
fn counter_json(name: &str, counter: &Counter, handle: u64, value: CounterValue) -> Value {
    let mut obj = json!({"family": "inet", "name": name, "table": TABLE_NAME, "handle": handle});
    if let Some(c) = &counter.comment {
        obj["comment"] = json!(c);
    }
    obj["packets"] = json!(value.packets);
    obj["bytes"] = json!(value.bytes);
    json!({ "counter": obj })
}

fn addr_payload(family: Family, field: AddrField) -> Value {
    json!({"payload": {"protocol": family_keyword(family), "field": field_keyword(field)}})
}

fn port_json(&(a, b): &(u16, u16)) -> Value {
    if a == b {
        json!(a)
    } else {
        json!({"range": [a, b]})
    }
}

/// A decision map key's address range as nft lists it.
fn addr_range_json(k: &DecisionKey) -> Value {
    match k.prefix() {
        Some(_) if k.first == k.last => json!(k.first.to_string()),
        Some(cidr) => {
            json!({"prefix": {"addr": cidr.addr().to_string(), "len": cidr.prefix_len()}})
        }
        None => json!({"range": [k.first.to_string(), k.last.to_string()]}),
    }
}

/// A decision map element's key, with its comment when it has one.
fn decision_key_json(k: &DecisionKey, d: &Decision) -> Value {
    let key = match k.ports {
        None => addr_range_json(k),
        Some((p, lo, hi)) => {
            json!({"concat": [addr_range_json(k), p.as_nft(), port_json(&(lo, hi))]})
        }
    };
    match &d.comment {
        Some(c) => json!({"elem": {"val": key, "comment": comment(c)}}),
        None => key,
    }
}

fn decision_verdict_json(v: &DecisionVerdict) -> Value {
    match v {
        DecisionVerdict::Accept => json!({"accept": null}),
        DecisionVerdict::Drop => json!({"drop": null}),
        DecisionVerdict::Return => json!({"return": null}),
        DecisionVerdict::Jump(chain) => json!({"jump": {"target": chain}}),
    }
}

/// The key of a lookup keyed with ports: `ip saddr . meta l4proto . th dport`.
fn ports_key_json(family: Family, field: AddrField) -> Value {
    json!({"concat": [
        addr_payload(family, field),
        {"meta": {"key": "l4proto"}},
        {"payload": {"protocol": "th", "field": "dport"}}
    ]})
}

fn match_json(m: &Match, as_set: bool) -> Value {
    let body = match m {
        Match::Counter(name) => return json!({ "counter": name }),
        Match::Limit { rate, burst } => {
            return json!({"limit": {"rate": rate, "burst": burst, "per": "second"}})
        }
        Match::Log { group, prefix } => {
            return json!({"log": {"prefix": log_prefix(prefix), "group": group}})
        }
        Match::CtEstablishedOrRelated => {
            json!({"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]})
        }
        Match::Prefix {
            field,
            negated,
            cidr,
        } => {
            let full = cidr.prefix_len()
                == match cidr.family() {
                    Family::V4 => 32,
                    Family::V6 => 128,
                };
            let right = if full {
                json!(cidr.addr().to_string())
            } else {
                json!({"prefix": {"addr": cidr.addr().to_string(), "len": cidr.prefix_len()}})
            };
            json!({"op": if *negated { "!=" } else { "==" }, "left": addr_payload(cidr.family(), *field), "right": right})
        }
        Match::InSet { family, field, set } => {
            json!({"op": "==", "left": addr_payload(*family, *field), "right": format!("@{set}")})
        }
        Match::L4Proto(p) => {
            json!({"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": p.as_nft()})
        }
        Match::L4ProtoWithPorts { negated } => {
            json!({"op": if *negated { "!=" } else { "==" }, "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp", "sctp"]}})
        }
        Match::Dport { protocol, ports } => {
            let right = match ports.as_slice() {
                [one] if !as_set => port_json(one),
                many => json!({"set": many.iter().map(port_json).collect::<Vec<_>>()}),
            };
            json!({"op": "==", "left": {"payload": {"protocol": protocol.as_nft(), "field": "dport"}}, "right": right})
        }
        Match::DaddrProtoPortInSet { family, set } => {
            json!({"op": "==", "left": ports_key_json(*family, AddrField::Daddr), "right": format!("@{set}")})
        }
    };
    json!({ "match": body })
}

fn verdict_json(v: &Verdict) -> Value {
    match v {
        Verdict::Continue => json!({"continue": null}),
        Verdict::Accept => json!({"accept": null}),
        Verdict::Drop => json!({"drop": null}),
        Verdict::Return => json!({"return": null}),
        Verdict::Jump(c) => json!({"jump": {"target": c}}),
        Verdict::Vmap { family, field, map }
        | Verdict::DecisionVmap {
            family,
            field,
            ports: false,
            map,
        } => {
            json!({"vmap": {"key": addr_payload(*family, *field), "data": format!("@{map}")}})
        }
        Verdict::DecisionVmap {
            family,
            field,
            ports: true,
            map,
        } => {
            json!({"vmap": {"key": ports_key_json(*family, *field), "data": format!("@{map}")}})
        }
    }
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

/// A map as listed: a verdict map, or a decision map (`flags interval`).
enum ParsedMap {
    Verdict(VerdictMap),
    Decision(DecisionMap),
}

fn parse_map(v: &Value) -> Result<(String, ParsedMap), JsonError> {
    let object = label("map", v, "name");
    let map = members(
        v,
        &[
            "family", "name", "table", "type", "handle", "map", "flags", "elem",
        ],
        &object,
        "map",
    )?;
    check_owner(map, "table", &object, v)?;
    let name = str_member(map, "name", &object, v)?.to_string();
    if map.get("map").and_then(Value::as_str) != Some("verdict") {
        return Err(unexpected(&object, "map data type", v));
    }
    match map.get("flags") {
        None => {}
        Some(flags) if *flags == json!(["interval"]) => {
            return Ok((
                name,
                ParsedMap::Decision(parse_decision_map(map, &object, v)?),
            ))
        }
        Some(flags) => return Err(unexpected(&object, "map flags", flags)),
    }
    let family = map
        .get("type")
        .and_then(addr_type)
        .ok_or_else(|| unexpected(&object, "map key type", v))?;
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
    Ok((name, ParsedMap::Verdict(out)))
}

/// A decision map: `flags interval`, key `ADDR` or `ADDR . inet_proto . inet_service`, verdicts
/// accept, drop and return.
fn parse_decision_map(
    map: &Map<String, Value>,
    object: &str,
    whole: &Value,
) -> Result<DecisionMap, JsonError> {
    let key = map.get("type").unwrap_or(&Value::Null);
    let (family, ports) = match key {
        Value::Array(parts) => match parts.as_slice() {
            [a, p, s] if p == "inet_proto" && s == "inet_service" => {
                addr_type(a).map(|f| (f, true))
            }
            _ => None,
        },
        other => addr_type(other).map(|f| (f, false)),
    }
    .ok_or_else(|| unexpected(object, "map key type", key))?;
    let mut out = DecisionMap {
        family,
        ports,
        elements: Default::default(),
    };
    for e in elem_list(map, object, whole)? {
        let (key, decision) =
            decision_element(e, family, ports).ok_or_else(|| unexpected(object, "element", e))?;
        if out.elements.insert(key, decision).is_some() {
            return Err(unexpected(object, "second element with the same key", e));
        }
    }
    Ok(out)
}

/// A decision map element, `[KEY, VERDICT]` or `[{"elem": {"val": KEY, "comment": C}}, VERDICT]`.
fn decision_element(e: &Value, family: Family, ports: bool) -> Option<(DecisionKey, Decision)> {
    let [key, data] = e.as_array()?.as_slice() else {
        return None;
    };
    let (key, comment) = match single(key) {
        Some(("elem", body)) => {
            let body = body.as_object()?;
            if body.len() != 2 {
                return None;
            }
            (
                body.get("val")?,
                Some(body.get("comment")?.as_str()?.to_string()),
            )
        }
        _ => (key, None),
    };
    let key = if ports {
        let parts = key.get("concat").filter(|_| single(key).is_some())?;
        let [a, p, s] = parts.as_array()?.as_slice() else {
            return None;
        };
        let (first, last) = addr_interval(a, family)?;
        let (lo, hi) = port_range(s)?;
        DecisionKey {
            first,
            last,
            ports: Some((protocol(p)?, lo, hi)),
        }
    } else {
        let (first, last) = addr_interval(key, family)?;
        DecisionKey {
            first,
            last,
            ports: None,
        }
    };
    let verdict = match single(data)? {
        ("accept", Value::Null) => DecisionVerdict::Accept,
        ("drop", Value::Null) => DecisionVerdict::Drop,
        ("return", Value::Null) => DecisionVerdict::Return,
        ("jump", target) => DecisionVerdict::Jump(target.get("target")?.as_str()?.to_string()),
        _ => return None,
    };
    Some((key, Decision { verdict, comment }))
}

/// An address, `{"prefix": {"addr": A, "len": L}}` (A the network address) or
/// `{"range": [A, B]}` (A <= B), as its first and last addresses.
fn addr_interval(v: &Value, family: Family) -> Option<(IpAddr, IpAddr)> {
    if let Some(ip) = addr(v, family) {
        return Some((ip, ip));
    }
    let (kind, body) = single(v)?;
    match kind {
        "prefix" => {
            let prefix = body.as_object()?;
            if prefix.len() != 2 {
                return None;
            }
            let ip = addr(prefix.get("addr")?, family)?;
            let len = u8::try_from(prefix.get("len")?.as_u64()?).ok()?;
            let bits = match family {
                Family::V4 => 32,
                Family::V6 => 128,
            };
            let cidr = Cidr::new(ip, len);
            if len > bits || cidr.addr() != ip {
                return None;
            }
            let (first, last) = cidr.bounds();
            Some((
                crate::cidr::from_u128(family, first),
                crate::cidr::from_u128(family, last),
            ))
        }
        "range" => match body.as_array()?.as_slice() {
            [a, b] => {
                let (a, b) = (addr(a, family)?, addr(b, family)?);
                (crate::cidr::to_u128(&a) <= crate::cidr::to_u128(&b)).then_some((a, b))
            }
            _ => None,
        },
        _ => None,
    }
}

/// A named counter object: its name, definition and counts.
fn parse_counter(v: &Value) -> Result<(String, Counter, CounterValue), JsonError> {
    let object = label("counter", v, "name");
    let map = members(
        v,
        &[
            "family", "name", "table", "handle", "comment", "packets", "bytes",
        ],
        &object,
        "counter",
    )?;
    check_owner(map, "table", &object, v)?;
    let name = str_member(map, "name", &object, v)?.to_string();
    let comment = match map.get("comment") {
        None => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(other) => return Err(unexpected(&object, "comment", other)),
    };
    let count = |key: &str| {
        map.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| unexpected(&object, format!("{key:?} (missing or not a count)"), v))
    };
    let value = CounterValue {
        packets: count("packets")?,
        bytes: count("bytes")?,
    };
    Ok((name, Counter { comment }, value))
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
        let hook = match hook {
            Some("forward") => Some(Hook::Forward),
            Some("input") => Some(Hook::Input),
            _ => None,
        };
        match (kind, hook, policy, prio) {
            (Some("filter"), Some(hook), Some("accept"), Some(priority)) => {
                Some(BaseChain { hook, priority })
            }
            _ => {
                return Err(unexpected(
                    &object,
                    "base chain (only type filter hook forward or input, policy accept)",
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
    let Some((last, rest)) = exprs.split_last() else {
        return Err(unexpected(&object, "empty rule", v));
    };
    // The last item is the verdict, unless it is a match or a statement (a rule without verdict);
    // `continue` is written only alone in a rule.
    let (exprs, verdict) = match single(last) {
        Some(("continue", Value::Null)) if rest.is_empty() => (rest, Verdict::Continue),
        Some((kind, _)) if EXPRESSIONS.contains(&kind) => (exprs.as_slice(), Verdict::Continue),
        _ => (rest, parse_verdict(last, &object)?),
    };
    let matches = exprs
        .iter()
        .map(|m| parse_expression(m, &object))
        .collect::<Result<Vec<Match>, JsonError>>()?;
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

/// The kinds of rule items that are expressions ([`Match`]) rather than verdicts.
const EXPRESSIONS: [&str; 4] = ["match", "counter", "limit", "log"];

/// One expression of a rule: a match or a statement.
fn parse_expression(m: &Value, object: &str) -> Result<Match, JsonError> {
    let bad = || unexpected(object, "statement", m);
    match single(m) {
        Some(("match", body)) => parse_match(body, object, m),
        Some(("counter", Value::String(name))) => Ok(Match::Counter(name.clone())),
        Some(("limit", body)) => {
            let map =
                members(body, &["rate", "burst", "per"], object, "limit").map_err(|_| bad())?;
            let number = |key: &str| {
                map.get(key)
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
            };
            match (number("rate"), number("burst"), map.get("per")) {
                (Some(rate), Some(burst), Some(per)) if per == "second" => {
                    Ok(Match::Limit { rate, burst })
                }
                _ => Err(bad()),
            }
        }
        Some(("log", body)) => {
            let map = members(body, &["prefix", "group"], object, "log").map_err(|_| bad())?;
            let prefix = map.get("prefix").and_then(Value::as_str);
            let group = map
                .get("group")
                .and_then(Value::as_u64)
                .and_then(|g| u16::try_from(g).ok());
            match (prefix, group) {
                (Some(prefix), Some(group)) => Ok(Match::Log {
                    group,
                    prefix: prefix.to_string(),
                }),
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

fn parse_verdict(v: &Value, object: &str) -> Result<Verdict, JsonError> {
    let bad = || unexpected(object, "verdict", v);
    let (kind, body) = single(v).ok_or_else(bad)?;
    match kind {
        "accept" if body.is_null() => Ok(Verdict::Accept),
        "drop" if body.is_null() => Ok(Verdict::Drop),
        "return" if body.is_null() => Ok(Verdict::Return),
        "jump" => {
            let map = members(body, &["target"], object, "jump")?;
            let target = map.get("target").and_then(Value::as_str).ok_or_else(bad)?;
            Ok(Verdict::Jump(target.to_string()))
        }
        "vmap" => {
            let map = members(body, &["key", "data"], object, "vmap")?;
            let key = map.get("key").ok_or_else(bad)?;
            let map_name = map.get("data").and_then(set_ref).ok_or_else(bad)?;
            let addr_key =
                |k: &Value| payload(k).and_then(|(p, f)| Some((ip_family(p)?, addr_field(f)?)));
            if let Some((family, field)) = addr_key(key) {
                // A decision map's name makes this a `DecisionVmap` once the maps are known.
                return Ok(Verdict::Vmap {
                    family,
                    field,
                    map: map_name,
                });
            }
            let parts = key
                .get("concat")
                .filter(|_| single(key).is_some())
                .and_then(Value::as_array)
                .ok_or_else(bad)?;
            match parts.as_slice() {
                [a, p, t]
                    if keyed(p, "meta") == Some("l4proto")
                        && payload(t) == Some(("th", "dport")) =>
                {
                    let (family, field) = addr_key(a).ok_or_else(bad)?;
                    Ok(Verdict::DecisionVmap {
                        family,
                        field,
                        ports: true,
                        map: map_name,
                    })
                }
                _ => Err(bad()),
            }
        }
        "accept" | "drop" | "goto" | "return" | "continue" | "queue" | "reject" => Err(bad()),
        _ => Err(unexpected(object, "statement in place of a verdict", v)),
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
        let negated = match op {
            "==" => false,
            "!=" => true,
            _ => return None,
        };
        if let Some(items) = right.get("set").filter(|_| single(right).is_some()) {
            let protocols: BTreeSet<Protocol> = items
                .as_array()?
                .iter()
                .map(protocol)
                .collect::<Option<_>>()?;
            let with_ports = items.as_array()?.len() == 3 && protocols.len() == 3;
            return with_ports.then_some(Match::L4ProtoWithPorts { negated });
        }
        if negated {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{cluster, Shape};
    use crate::plan::compile_all;

    const META: &str = r#"{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}"#;
    const TABLE: &str = r#"{"table": {"family": "inet", "name": "nftpolicy", "handle": 2}}"#;

    /// A listing of the table holding `items` (JSON objects as text).
    fn listing(items: &[&str]) -> String {
        let mut all = vec![META, TABLE];
        all.extend_from_slice(items);
        format!("{{\"nftables\": [{}]}}", all.join(", "))
    }

    fn parse(items: &[&str]) -> Result<Ruleset, JsonError> {
        parse_table(&listing(items))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    const CHAIN_C: &str =
        r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "c", "handle": 3}}"#;

    /// A rule in chain `c` with the given `expr` items (JSON text).
    fn rule(exprs: &str) -> String {
        format!(
            r#"{{"rule": {{"family": "inet", "table": "nftpolicy", "chain": "c", "handle": 9, "expr": [{exprs}]}}}}"#
        )
    }

    /// The matches of the one rule `{match} accept` in chain `c`.
    fn matches_of(m: &str) -> Result<Vec<Match>, JsonError> {
        let r = parse(&[CHAIN_C, &rule(&format!(r#"{m}, {{"accept": null}}"#))])?;
        Ok(r.chains["c"].rules[0].matches.clone())
    }

    fn one_match(m: &str) -> Match {
        let got = matches_of(m).unwrap_or_else(|e| panic!("{m}: {e}"));
        assert_eq!(got.len(), 1);
        got[0].clone()
    }

    /// Asserts an `Unexpected` error whose message names `object` and quotes part of the JSON.
    fn assert_unexpected(result: Result<Ruleset, JsonError>, object: &str, quoted: &str) {
        match result {
            Err(e @ JsonError::Unexpected { .. }) => {
                let text = e.to_string();
                assert!(text.starts_with(object), "{text:?} should name {object}");
                assert!(text.contains(quoted), "{text:?} should quote {quoted}");
            }
            other => panic!("expected an unexpected-construct error about {object}, got {other:?}"),
        }
    }

    /// Asserts that the rule `{match} accept` is refused, quoting the match (as serde_json prints it).
    fn assert_match_refused(m: &str) {
        let compact = serde_json::from_str::<Value>(m).unwrap().to_string();
        assert_unexpected(
            parse(&[CHAIN_C, &rule(&format!(r#"{m}, {{"accept": null}}"#))]),
            "rule 9 in chain c: unexpected match",
            &compact[..compact.len().min(60)],
        );
    }

    #[test]
    fn an_empty_table_is_an_empty_ruleset() {
        assert_eq!(parse(&[]).unwrap(), Ruleset::default());
    }

    #[test]
    fn malformed_listings_are_refused() {
        assert!(matches!(parse_table("nope"), Err(JsonError::Syntax(_))));
        assert!(matches!(
            parse_table(r#"{"tables": []}"#),
            Err(JsonError::NotAListing(_))
        ));
        assert!(matches!(
            parse_table(&format!(r#"{{"nftables": [{META}]}}"#)),
            Err(JsonError::NoTable)
        ));
        assert_unexpected(
            parse_table(&format!(r#"{{"nftables": [{TABLE}, {TABLE}]}}"#)),
            "listing: unexpected second table",
            "nftpolicy",
        );
        assert_unexpected(parse(&["[1, 2]"]), "listing: unexpected item", "[1,2]");
    }

    #[test]
    fn address_sets() {
        let r = parse(&[
            r#"{"set": {"family": "inet", "name": "pods_v4", "table": "nftpolicy", "type": "ipv4_addr", "handle": 31, "comment": "pods app=api", "elem": ["10.244.2.20", "10.244.1.20"]}}"#,
            r#"{"set": {"family": "inet", "name": "pods_v6", "table": "nftpolicy", "type": "ipv6_addr", "handle": 32, "comment": ""}}"#,
        ])
        .unwrap();
        assert_eq!(
            r.sets["pods_v4"],
            Set {
                set_type: SetType::Addr(Family::V4),
                comment: "pods app=api".into(),
                elements: [ip("10.244.1.20"), ip("10.244.2.20")]
                    .into_iter()
                    .map(SetElement::Addr)
                    .collect(),
            }
        );
        assert_eq!(
            r.sets["pods_v6"],
            Set {
                set_type: SetType::Addr(Family::V6),
                comment: String::new(),
                elements: BTreeSet::new(),
            }
        );
    }

    #[test]
    fn named_port_sets_take_protocol_names_or_numbers() {
        let r = parse(&[
            r#"{"set": {"family": "inet", "name": "named", "table": "nftpolicy", "type": ["ipv6_addr", "inet_proto", "inet_service"], "handle": 4, "comment": "x named ports http/TCP", "elem": [{"concat": ["fd00::2", "tcp", 0]}, {"concat": ["fd00::1", "sctp", 80]}, {"concat": ["fd00::2", 17, 65535]}, {"concat": ["fd00::3", 132, 1]}, {"concat": ["fd00::3", 6, 2]}]}}"#,
        ])
        .unwrap();
        let set = &r.sets["named"];
        assert_eq!(set.set_type, SetType::AddrProtoPort(Family::V6));
        let expected: BTreeSet<SetElement> = [
            ("fd00::2", Protocol::Tcp, 0),
            ("fd00::1", Protocol::Sctp, 80),
            ("fd00::2", Protocol::Udp, 65535),
            ("fd00::3", Protocol::Sctp, 1),
            ("fd00::3", Protocol::Tcp, 2),
        ]
        .into_iter()
        .map(|(a, p, n)| SetElement::AddrProtoPort(ip(a), p, n))
        .collect();
        assert_eq!(set.elements, expected);
    }

    #[test]
    fn unexpected_sets_are_refused() {
        let cases = [
            // Another key type.
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": "ether_addr", "handle": 3, "comment": "c"}}"#,
                "set s: unexpected set type",
                "ether_addr",
            ),
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": ["ipv4_addr", "inet_service"], "handle": 3, "comment": "c"}}"#,
                "set s: unexpected set type",
                "inet_service",
            ),
            // Flags, with the interval elements they allow.
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": "ipv4_addr", "handle": 6, "comment": "c", "flags": ["interval"], "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}]}}"#,
                "set s: unexpected key \"flags\" in set",
                "interval",
            ),
            // Counters on elements.
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": "ipv4_addr", "handle": 7, "comment": "c", "elem": [{"elem": {"val": "10.0.0.1", "counter": {"packets": 0, "bytes": 0}}}], "stmt": [{"counter": null}]}}"#,
                "set s: unexpected key \"stmt\" in set",
                "counter",
            ),
            // An element with a comment.
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": "ipv4_addr", "handle": 8, "comment": "c", "elem": [{"elem": {"val": "10.0.0.1", "comment": "e"}}]}}"#,
                "set s: unexpected element",
                "\"val\"",
            ),
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": "ipv4_addr", "handle": 9, "comment": "c", "size": 100}}"#,
                "set s: unexpected key \"size\"",
                "100",
            ),
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": "ipv4_addr", "handle": 10, "comment": "c", "policy": "memory"}}"#,
                "set s: unexpected key \"policy\"",
                "memory",
            ),
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": "ipv4_addr", "handle": 11, "comment": "c", "flags": ["timeout"], "timeout": 3600}}"#,
                "set s: unexpected key",
                "timeout",
            ),
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": "ipv4_addr", "handle": 12}}"#,
                "set s: unexpected set without a comment",
                "\"handle\":12",
            ),
            // An address of the other family.
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": "ipv4_addr", "handle": 3, "comment": "c", "elem": ["fd00::1"]}}"#,
                "set s: unexpected element",
                "fd00::1",
            ),
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 3, "comment": "c", "elem": [{"concat": ["10.0.0.1", "icmp", 80]}]}}"#,
                "set s: unexpected element",
                "icmp",
            ),
            (
                r#"{"set": {"family": "inet", "name": "s", "table": "nftpolicy", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 3, "comment": "c", "elem": [{"concat": ["10.0.0.1", "tcp", 65536]}]}}"#,
                "set s: unexpected element",
                "65536",
            ),
            // Another table.
            (
                r#"{"set": {"family": "ip", "name": "s", "table": "filter", "type": "ipv4_addr", "handle": 3, "comment": "c"}}"#,
                "set s: unexpected object outside table inet nftpolicy",
                "filter",
            ),
        ];
        for (set, object, quoted) in cases {
            assert_unexpected(parse(&[set]), object, quoted);
        }
    }

    #[test]
    fn verdict_maps() {
        let r = parse(&[
            r#"{"map": {"family": "inet", "name": "egress_v4", "table": "nftpolicy", "type": "ipv4_addr", "handle": 45, "map": "verdict", "elem": [["10.244.1.10", {"jump": {"target": "egress_a"}}], ["10.244.1.20", {"jump": {"target": "egress_b"}}]]}}"#,
            r#"{"map": {"family": "inet", "name": "ingress_v6", "table": "nftpolicy", "type": "ipv6_addr", "handle": 48, "map": "verdict"}}"#,
        ])
        .unwrap();
        assert_eq!(
            r.maps["egress_v4"],
            VerdictMap {
                family: Family::V4,
                elements: [
                    (ip("10.244.1.10"), "egress_a".to_string()),
                    (ip("10.244.1.20"), "egress_b".to_string())
                ]
                .into(),
            }
        );
        assert_eq!(r.maps["ingress_v6"].family, Family::V6);
        assert!(r.maps["ingress_v6"].elements.is_empty());
    }

    #[test]
    fn unexpected_maps_are_refused() {
        let cases = [
            (
                r#"{"map": {"family": "inet", "name": "m", "table": "nftpolicy", "type": "ipv4_addr", "handle": 13, "map": "ipv4_addr", "elem": [["1.1.1.1", "2.2.2.2"]]}}"#,
                "map m: unexpected map data type",
                "2.2.2.2",
            ),
            (
                r#"{"map": {"family": "inet", "name": "m", "table": "nftpolicy", "type": "ipv4_addr", "handle": 14, "map": "verdict", "elem": [["1.1.1.1", {"goto": {"target": "c"}}]]}}"#,
                "map m: unexpected element",
                "goto",
            ),
            (
                r#"{"map": {"family": "inet", "name": "m", "table": "nftpolicy", "type": "ipv4_addr", "handle": 14, "map": "verdict", "elem": [["1.1.1.2", {"accept": null}]]}}"#,
                "map m: unexpected element",
                "accept",
            ),
            (
                r#"{"map": {"family": "inet", "name": "m", "table": "nftpolicy", "type": "ipv4_addr", "handle": 14, "comment": "mc", "map": "verdict"}}"#,
                "map m: unexpected key \"comment\" in map",
                "mc",
            ),
            (
                r#"{"map": {"family": "inet", "name": "m", "table": "nftpolicy", "type": ["ipv4_addr", "inet_proto"], "handle": 14, "map": "verdict"}}"#,
                "map m: unexpected map key type",
                "inet_proto",
            ),
            (
                r#"{"map": {"family": "inet", "name": "m", "table": "nftpolicy", "type": "ipv4_addr", "handle": 14, "map": "verdict", "elem": [["fd00::1", {"jump": {"target": "c"}}]]}}"#,
                "map m: unexpected element",
                "fd00::1",
            ),
            (
                r#"{"map": {"family": "inet", "name": "m", "table": "nftpolicy", "type": "ipv4_addr", "handle": 14, "map": "verdict", "elem": [["1.1.1.1", {"jump": {"target": "c"}}], ["1.1.1.1", {"jump": {"target": "d"}}]]}}"#,
                "map m: unexpected second element with the same key",
                "1.1.1.1",
            ),
        ];
        for (map, object, quoted) in cases {
            assert_unexpected(parse(&[map]), object, quoted);
        }
        // A set and a map share one namespace.
        assert_unexpected(
            parse(&[
                r#"{"set": {"family": "inet", "name": "m", "table": "nftpolicy", "type": "ipv4_addr", "handle": 3, "comment": "c"}}"#,
                r#"{"map": {"family": "inet", "name": "m", "table": "nftpolicy", "type": "ipv4_addr", "handle": 4, "map": "verdict"}}"#,
            ]),
            "map m: unexpected second definition",
            "verdict",
        );
    }

    #[test]
    fn base_and_regular_chains() {
        let r = parse(&[
            r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "egress", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}"#,
            r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "ingress", "handle": 2, "type": "filter", "hook": "forward", "prio": 1, "policy": "accept"}}"#,
            r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "early", "handle": 4, "type": "filter", "hook": "forward", "prio": -5, "policy": "accept"}}"#,
            r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "node", "handle": 5, "type": "filter", "hook": "input", "prio": -3, "policy": "accept"}}"#,
            CHAIN_C,
        ])
        .unwrap();
        assert_eq!(
            r.chains["node"].base,
            Some(BaseChain {
                hook: Hook::Input,
                priority: -3
            })
        );
        assert_eq!(r.chains["egress"].base, Some(BaseChain::forward(0)));
        assert_eq!(r.chains["ingress"].base, Some(BaseChain::forward(1)));
        assert_eq!(r.chains["early"].base, Some(BaseChain::forward(-5)));
        assert_eq!(
            r.chains["c"],
            Chain {
                base: None,
                rules: vec![]
            }
        );
    }

    #[test]
    fn unexpected_chains_and_objects_are_refused() {
        let cases = [
            (
                r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "b1", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}"#,
                "chain b1: unexpected base chain",
                "output",
            ),
            (
                r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "b1", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}"#,
                "chain b1: unexpected base chain",
                "drop",
            ),
            (
                r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "b2", "handle": 2, "type": "nat", "hook": "forward", "prio": -100, "policy": "accept"}}"#,
                "chain b2: unexpected base chain",
                "nat",
            ),
            (
                r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "b3", "handle": 2, "hook": "forward"}}"#,
                "chain b3: unexpected base chain",
                "forward",
            ),
            (
                r#"{"chain": {"family": "netdev", "table": "nftpolicy", "name": "b4", "handle": 2, "type": "filter", "hook": "ingress", "prio": 0, "policy": "accept", "dev": "eth0"}}"#,
                "chain b4: unexpected key \"dev\"",
                "eth0",
            ),
            (
                r#"{"chain": {"family": "inet", "table": "other", "name": "c", "handle": 3}}"#,
                "chain c: unexpected object outside",
                "other",
            ),
            (
                r#"{"limit": {"family": "inet", "name": "lim", "table": "nftpolicy", "handle": 4, "rate": 1, "per": "second", "burst": 5}}"#,
                "table inet nftpolicy: unexpected limit object",
                "lim",
            ),
            (
                r#"{"quota": {"family": "inet", "name": "q", "table": "nftpolicy", "handle": 4, "bytes": 100, "used": 0, "inv": true}}"#,
                "table inet nftpolicy: unexpected quota object",
                "\"q\"",
            ),
            (
                r#"{"flowtable": {"family": "inet", "name": "f", "table": "nftpolicy", "handle": 5}}"#,
                "table inet nftpolicy: unexpected flowtable object",
                "\"f\"",
            ),
        ];
        for (item, object, quoted) in cases {
            assert_unexpected(parse(&[item]), object, quoted);
        }
        // nft 1.0.6 lists a dormant table with a bogus `flags` value; either way it is refused.
        assert_unexpected(
            parse_table(&format!(
                r#"{{"nftables": [{META}, {{"table": {{"family": "inet", "name": "nftpolicy", "handle": 1, "flags": "nftpolicy"}}}}]}}"#
            )),
            "table inet nftpolicy: unexpected key \"flags\"",
            "flags",
        );
        assert_unexpected(
            parse_table(&format!(
                r#"{{"nftables": [{META}, {{"table": {{"family": "ip", "name": "filter", "handle": 1}}}}]}}"#
            )),
            "table filter: unexpected object outside",
            "filter",
        );
        assert_unexpected(
            parse(&[CHAIN_C, CHAIN_C]),
            "chain c: unexpected second definition",
            "\"c\"",
        );
    }

    #[test]
    fn ct_state() {
        assert_eq!(
            one_match(
                r#"{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}"#
            ),
            Match::CtEstablishedOrRelated
        );
        assert_eq!(
            one_match(
                r#"{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["related", "established"]}}"#
            ),
            Match::CtEstablishedOrRelated
        );
        for refused in [
            r#"{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "established"}}"#,
            r#"{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}"#,
            r#"{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related", "new"]}}"#,
            r#"{"match": {"op": "==", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}"#,
            r#"{"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": ["established", "related"]}}"#,
        ] {
            assert_match_refused(refused);
        }
    }

    #[test]
    fn address_matches() {
        let m = |op: &str, proto: &str, field: &str, right: &str| {
            one_match(&format!(
                r#"{{"match": {{"op": "{op}", "left": {{"payload": {{"protocol": "{proto}", "field": "{field}"}}}}, "right": {right}}}}}"#
            ))
        };
        let prefix = |field, negated, c: &str| Match::Prefix {
            field,
            negated,
            cidr: cidr(c),
        };
        use AddrField::{Daddr, Saddr};
        assert_eq!(
            m(
                "==",
                "ip",
                "daddr",
                r#"{"prefix": {"addr": "203.0.113.0", "len": 24}}"#
            ),
            prefix(Daddr, false, "203.0.113.0/24")
        );
        assert_eq!(
            m(
                "!=",
                "ip",
                "daddr",
                r#"{"prefix": {"addr": "10.0.0.10", "len": 31}}"#
            ),
            prefix(Daddr, true, "10.0.0.10/31")
        );
        assert_eq!(
            m(
                "==",
                "ip",
                "saddr",
                r#"{"prefix": {"addr": "0.0.0.0", "len": 0}}"#
            ),
            prefix(Saddr, false, "0.0.0.0/0")
        );
        // A full-length prefix is listed as a plain address.
        assert_eq!(
            m("==", "ip", "saddr", r#""10.1.2.3""#),
            prefix(Saddr, false, "10.1.2.3/32")
        );
        assert_eq!(
            m("!=", "ip6", "daddr", r#""fd00::1""#),
            prefix(Daddr, true, "fd00::1/128")
        );
        assert_eq!(
            m(
                "==",
                "ip6",
                "saddr",
                r#"{"prefix": {"addr": "fd00:1::", "len": 48}}"#
            ),
            prefix(Saddr, false, "fd00:1::/48")
        );
        assert_eq!(
            m("==", "ip6", "daddr", r#""@pods_x_v6""#),
            Match::InSet {
                family: Family::V6,
                field: Daddr,
                set: "pods_x_v6".into()
            }
        );
        assert_eq!(
            m("==", "ip", "saddr", r#""@pods_x_v4""#),
            Match::InSet {
                family: Family::V4,
                field: Saddr,
                set: "pods_x_v4".into()
            }
        );
        // Several matches in one rule keep their order.
        let got = matches_of(
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "fd00::1"}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "fd00::", "len": 16}}}}"#,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                prefix(Daddr, false, "fd00::1/128"),
                prefix(Daddr, true, "fd00::/16")
            ]
        );
    }

    #[test]
    fn unexpected_address_matches_are_refused() {
        for refused in [
            // A negated set lookup.
            r#"{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@fl"}}"#,
            // A range of addresses.
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"range": ["10.0.0.1", "10.0.0.5"]}}}"#,
            // An anonymous set.
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"set": ["10.0.0.1", "10.0.0.2"]}}}"#,
            // Another family's address.
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "fd00::1"}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 33}}}}"#,
            // Other header fields and operators.
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"}}, "right": "tcp"}}"#,
            r#"{"match": {"op": "<", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.0.0.1"}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"base": "nh", "offset": 96, "len": 32}}, "right": 1}}"#,
            r#"{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}"#,
        ] {
            assert_match_refused(refused);
        }
    }

    #[test]
    fn protocol_and_port_matches() {
        let l4 = |right: &str| {
            one_match(&format!(
                r#"{{"match": {{"op": "==", "left": {{"meta": {{"key": "l4proto"}}}}, "right": {right}}}}}"#
            ))
        };
        assert_eq!(l4(r#""tcp""#), Match::L4Proto(Protocol::Tcp));
        assert_eq!(l4(r#""udp""#), Match::L4Proto(Protocol::Udp));
        assert_eq!(l4(r#""sctp""#), Match::L4Proto(Protocol::Sctp));
        assert_eq!(l4("132"), Match::L4Proto(Protocol::Sctp));
        assert_eq!(l4("17"), Match::L4Proto(Protocol::Udp));
        let dport = |proto: &str, right: &str| {
            one_match(&format!(
                r#"{{"match": {{"op": "==", "left": {{"payload": {{"protocol": "{proto}", "field": "dport"}}}}, "right": {right}}}}}"#
            ))
        };
        let want = |protocol, ports: &[(u16, u16)]| Match::Dport {
            protocol,
            ports: ports.to_vec(),
        };
        assert_eq!(dport("tcp", "53"), want(Protocol::Tcp, &[(53, 53)]));
        assert_eq!(
            dport("udp", r#"{"range": [79, 81]}"#),
            want(Protocol::Udp, &[(79, 81)])
        );
        assert_eq!(
            dport(
                "sctp",
                r#"{"set": [80, {"range": [90, 100]}, {"range": [8000, 8080]}]}"#
            ),
            want(Protocol::Sctp, &[(80, 80), (90, 100), (8000, 8080)])
        );
        assert_eq!(
            dport("tcp", r#"{"set": [{"range": [1, 5]}]}"#),
            want(Protocol::Tcp, &[(1, 5)])
        );
        // Listed out of order: sorted, as the model keeps them.
        assert_eq!(
            dport("tcp", r#"{"set": [443, 80]}"#),
            want(Protocol::Tcp, &[(80, 80), (443, 443)])
        );
        assert_eq!(
            dport("tcp", r#"{"range": [0, 65535]}"#),
            want(Protocol::Tcp, &[(0, 65535)])
        );
        assert_eq!(
            one_match(
                r#"{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": "@named_x_v4"}}"#
            ),
            Match::DaddrProtoPortInSet {
                family: Family::V4,
                set: "named_x_v4".into()
            }
        );
        assert_eq!(
            one_match(
                r#"{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip6", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": "@named_x_v6"}}"#
            ),
            Match::DaddrProtoPortInSet {
                family: Family::V6,
                set: "named_x_v6".into()
            }
        );
    }

    #[test]
    fn unexpected_protocol_and_port_matches_are_refused() {
        for refused in [
            r#"{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp"]}}}"#,
            r#"{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "icmp"}}"#,
            r#"{"match": {"op": "!=", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 80}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "sport"}}, "right": 80}}"#,
            r#"{"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 65536}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"range": [81, 79]}}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": []}}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": "@ports"}}"#,
            // An anonymous set of named ports, and other concatenations.
            r#"{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": {"set": [{"concat": ["10.0.0.1", "tcp", 80]}]}}}"#,
            r#"{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": "@s"}}"#,
            r#"{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": "@s"}}"#,
            r#"{"match": {"op": "!=", "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": "@s"}}"#,
        ] {
            assert_match_refused(refused);
        }
    }

    #[test]
    fn verdicts_and_comments() {
        let r = parse(&[
            r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "egress", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}"#,
            CHAIN_C,
            r#"{"rule": {"family": "inet", "table": "nftpolicy", "chain": "egress", "handle": 49, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}}"#,
            r#"{"rule": {"family": "inet", "table": "nftpolicy", "chain": "egress", "handle": 50, "expr": [{"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@egress_v4"}}]}}"#,
            r#"{"rule": {"family": "inet", "table": "nftpolicy", "chain": "egress", "handle": 51, "expr": [{"vmap": {"key": {"payload": {"protocol": "ip6", "field": "daddr"}}, "data": "@ingress_v6"}}]}}"#,
            r#"{"rule": {"family": "inet", "table": "nftpolicy", "chain": "c", "handle": 55, "expr": [{"jump": {"target": "np_x"}}]}}"#,
            r#"{"rule": {"family": "inet", "table": "nftpolicy", "chain": "c", "handle": 58, "comment": "isolated for egress by x/a", "expr": [{"drop": null}]}}"#,
            r#"{"rule": {"family": "inet", "table": "nftpolicy", "chain": "c", "handle": 59, "comment": "", "expr": [{"accept": null}]}}"#,
        ])
        .unwrap();
        let egress = &r.chains["egress"].rules;
        assert_eq!(
            egress[0],
            Rule {
                matches: vec![Match::CtEstablishedOrRelated],
                verdict: Verdict::Accept,
                comment: None
            }
        );
        assert_eq!(
            egress[1].verdict,
            Verdict::Vmap {
                family: Family::V4,
                field: AddrField::Saddr,
                map: "egress_v4".into()
            }
        );
        assert_eq!(
            egress[2].verdict,
            Verdict::Vmap {
                family: Family::V6,
                field: AddrField::Daddr,
                map: "ingress_v6".into()
            }
        );
        let c = &r.chains["c"].rules;
        assert_eq!(c[0].verdict, Verdict::Jump("np_x".into()));
        assert!(c[0].matches.is_empty());
        assert_eq!(c[1].verdict, Verdict::Drop);
        assert_eq!(c[1].comment.as_deref(), Some("isolated for egress by x/a"));
        assert_eq!(c[2].comment.as_deref(), Some(""));
    }

    #[test]
    fn unexpected_statements_and_rules_are_refused() {
        let cases = [
            (
                r#"{"counter": {"packets": 0, "bytes": 0}}, {"accept": null}"#,
                "rule 9 in chain c: unexpected statement",
                "counter",
            ),
            (
                r#"{"counter": {"packets": 0, "bytes": 0}}"#,
                "rule 9 in chain c: unexpected statement",
                "counter",
            ),
            (
                r#"{"log": null}, {"return": null}"#,
                "rule 9 in chain c: unexpected statement",
                "log",
            ),
            (
                r#"{"counter": "x"}, {"continue": null}"#,
                "rule 9 in chain c: unexpected verdict",
                "continue",
            ),
            (
                r#"{"notrack": null}"#,
                "rule 9 in chain c: unexpected statement in place of a verdict",
                "notrack",
            ),
            (
                r#"{"return": 1}"#,
                "rule 9 in chain c: unexpected verdict",
                "return",
            ),
            (
                r#"{"goto": {"target": "c2"}}"#,
                "rule 9 in chain c: unexpected verdict",
                "goto",
            ),
            (
                r#"{"accept": null}, {"counter": null}"#,
                "rule 9 in chain c: unexpected statement",
                "accept",
            ),
            (
                r#"{"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": {"set": [["10.0.0.1", {"jump": {"target": "c2"}}]]}}}"#,
                "rule 9 in chain c: unexpected verdict",
                "c2",
            ),
            (
                r#"{"vmap": {"key": {"payload": {"protocol": "tcp", "field": "dport"}}, "data": "@m"}}"#,
                "rule 9 in chain c: unexpected verdict",
                "dport",
            ),
            (
                r#"{"jump": {"target": "c2", "x": 1}}"#,
                "rule 9 in chain c: unexpected key \"x\" in jump",
                "c2",
            ),
            (
                "",
                "rule 9 in chain c: unexpected empty rule",
                "\"expr\":[]",
            ),
        ];
        for (exprs, object, quoted) in cases {
            assert_unexpected(parse(&[CHAIN_C, &rule(exprs)]), object, quoted);
        }
        assert_unexpected(
            parse(&[&rule(r#"{"accept": null}"#)]),
            "rule 9 in chain c: unexpected rule of an undeclared chain",
            "accept",
        );
        assert_unexpected(
            parse(&[
                CHAIN_C,
                r#"{"rule": {"family": "inet", "table": "nftpolicy", "chain": "c", "handle": 9, "expr": [{"accept": null}], "counter": 1}}"#,
            ]),
            "rule 9 in chain c: unexpected key \"counter\" in rule",
            "counter",
        );
    }

    #[test]
    fn rules_keep_their_order_whatever_the_listing_order_of_chains() {
        let r = parse(&[
            &rule(r#"{"jump": {"target": "a"}}"#),
            &rule(r#"{"jump": {"target": "b"}}"#),
            CHAIN_C,
            &rule(r#"{"drop": null}"#),
        ])
        .unwrap();
        let verdicts: Vec<&Verdict> = r.chains["c"].rules.iter().map(|r| &r.verdict).collect();
        assert_eq!(
            verdicts,
            [
                &Verdict::Jump("a".into()),
                &Verdict::Jump("b".into()),
                &Verdict::Drop
            ]
        );
    }

    #[test]
    fn long_snippets_are_shortened() {
        let long = format!(
            r#"{{"set": {{"family": "inet", "name": "s", "table": "nftpolicy", "type": "ipv4_addr", "handle": 3, "comment": "c", "flags": ["interval"], "elem": [{}]}}}}"#,
            vec![r#""10.0.0.1""#; 200].join(", ")
        );
        let err = parse(&[&long]).unwrap_err();
        let JsonError::Unexpected { snippet, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(snippet.len() <= SNIPPET_LEN + 4, "{snippet}");
        assert!(snippet.ends_with('…'));
        assert!(err.to_string().len() < 400);
    }

    #[test]
    fn as_listed_applies_what_the_listing_loses() {
        let long = "x".repeat(200);
        let mut r = Ruleset::default();
        r.sets.insert(
            "s".into(),
            Set {
                set_type: SetType::Addr(Family::V4),
                comment: format!("say \"hi\" {long}"),
                elements: BTreeSet::new(),
            },
        );
        r.chains.insert(
            "c".into(),
            Chain {
                base: None,
                rules: vec![Rule {
                    matches: vec![
                        Match::L4Proto(Protocol::Tcp),
                        Match::L4Proto(Protocol::Tcp),
                        Match::InSet {
                            family: Family::V4,
                            field: AddrField::Saddr,
                            set: "s".into(),
                        },
                        Match::Dport {
                            protocol: Protocol::Tcp,
                            ports: vec![(7, 7), (3, 5), (1, 1), (2, 2), (4, 6)],
                        },
                        Match::L4Proto(Protocol::Udp),
                    ],
                    verdict: Verdict::Accept,
                    comment: Some("a \"b\"".into()),
                }],
            },
        );
        let listed = as_listed(&r);
        let comment = &listed.sets["s"].comment;
        assert!(comment.starts_with("say 'hi' xxx") && comment.ends_with("..."));
        assert_eq!(comment.len(), crate::nft::MAX_COMMENT_LEN);
        let rule = &listed.chains["c"].rules[0];
        assert_eq!(rule.comment.as_deref(), Some("a 'b'"));
        assert_eq!(
            rule.matches,
            vec![
                Match::L4Proto(Protocol::Tcp),
                Match::InSet {
                    family: Family::V4,
                    field: AddrField::Saddr,
                    set: "s".into(),
                },
                Match::Dport {
                    protocol: Protocol::Tcp,
                    ports: vec![(1, 7)],
                },
                Match::L4Proto(Protocol::Udp),
            ]
        );
        // The listing written for `r` reads back as what the kernel stores: `as_listed(r)`.
        assert_eq!(parse_table(&super::listing(&r)).unwrap(), listed);
        // Nothing to do for what the compiler emits with short comments.
        for seed in 0..10 {
            for ruleset in compile_all(&cluster(seed, Shape::default())).values() {
                assert_eq!(&as_listed(ruleset), ruleset);
            }
        }
    }

    #[test]
    fn canonical_listings_ignore_handles_order_and_protocol_spelling_only() {
        let set = |handle: u32, elem: &str| {
            format!(
                r#"{{"set": {{"family": "inet", "name": "s", "table": "nftpolicy", "handle": {handle}, "type": ["ipv4_addr", "inet_proto", "inet_service"], "elem": {elem}}}}}"#
            )
        };
        let rule = |handle: u32, chain: &str, port: u16| {
            format!(
                r#"{{"rule": {{"family": "inet", "table": "nftpolicy", "chain": "{chain}", "handle": {handle}, "expr": [{{"match": {{"op": "==", "left": {{"payload": {{"protocol": "tcp", "field": "dport"}}}}, "right": {port}}}}}, {{"accept": null}}]}}}}"#
            )
        };
        let a = listing(&[
            &set(
                4,
                r#"[{"concat": ["10.0.0.1", "tcp", 6]}, {"concat": ["10.0.0.2", "udp", 53]}]"#,
            ),
            CHAIN_C,
            &rule(7, "c", 80),
            &rule(8, "c", 81),
        ]);
        let b = format!(
            "{{\"nftables\": [{CHAIN_C}, {}, {}, {TABLE}, {}]}}",
            rule(20, "c", 80),
            set(
                9,
                r#"[{"concat": ["10.0.0.2", 17, 53]}, {"concat": ["10.0.0.1", 6, 6]}]"#
            ),
            rule(21, "c", 81),
        );
        let canonical = |s: &str| canonical_listing(s).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        // Rule order within a chain, and ports that look like protocol numbers, still count.
        let swapped = listing(&[
            &set(
                4,
                r#"[{"concat": ["10.0.0.1", "tcp", 6]}, {"concat": ["10.0.0.2", "udp", 53]}]"#,
            ),
            CHAIN_C,
            &rule(7, "c", 81),
            &rule(8, "c", 80),
        ]);
        assert_ne!(canonical(&a), canonical(&swapped));
        let port = listing(&[
            &set(
                4,
                r#"[{"concat": ["10.0.0.1", "tcp", "tcp"]}, {"concat": ["10.0.0.2", "udp", 53]}]"#,
            ),
            CHAIN_C,
            &rule(7, "c", 80),
            &rule(8, "c", 81),
        ]);
        assert_ne!(canonical(&a), canonical(&port));
        assert!(matches!(
            canonical_listing("[]"),
            Err(JsonError::NotAListing(_))
        ));
    }

    #[test]
    fn compiled_rulesets_read_back_equal() {
        let mut shapes = std::collections::HashSet::new();
        for seed in 0..60 {
            let c = cluster(
                seed,
                Shape {
                    pods: 8,
                    policies: 4,
                    nodes: 2,
                },
            );
            for (node, ruleset) in compile_all(&c) {
                let json = super::listing(&ruleset);
                let parsed = parse_table(&json)
                    .unwrap_or_else(|e| panic!("seed {seed} {node}: {e}\n{json}"));
                assert_eq!(parsed, ruleset, "seed {seed} {node}");
                for chain in ruleset.chains.values() {
                    for rule in &chain.rules {
                        for m in rule.matches.iter().filter(|m| !m.is_statement()) {
                            shapes.insert(std::mem::discriminant(m));
                        }
                    }
                }
            }
        }
        // Every kind of match (statements aside) was exercised.
        assert_eq!(shapes.len(), 6);
    }

    // ---- decision maps ----

    #[test]
    fn decision_maps_as_nft_lists_them_read_back_exactly() {
        assert_eq!(
            parse_table(crate::nft::example::LISTING).unwrap(),
            crate::nft::example::ruleset()
        );
    }

    #[test]
    fn the_listing_written_for_decision_maps_is_nfts() {
        let canonical = |s: &str| canonical_listing(s).unwrap();
        assert_eq!(
            canonical(&super::listing(&crate::nft::example::ruleset())),
            canonical(crate::nft::example::LISTING)
        );
    }

    #[test]
    fn an_address_lookup_is_a_decision_map_lookup_when_the_map_is_one() {
        let interval = r#"{"map": {"family": "inet", "name": "d", "table": "nftpolicy", "type": "ipv4_addr", "handle": 3, "map": "verdict", "flags": ["interval"]}}"#;
        let plain = r#"{"map": {"family": "inet", "name": "m", "table": "nftpolicy", "type": "ipv4_addr", "handle": 4, "map": "verdict"}}"#;
        let lookup = |map: &str| {
            rule(&format!(
                r#"{{"vmap": {{"key": {{"payload": {{"protocol": "ip", "field": "daddr"}}}}, "data": "@{map}"}}}}"#
            ))
        };
        // Rules may be listed before the maps they use.
        let r = parse(&[CHAIN_C, &lookup("d"), &lookup("m"), interval, plain]).unwrap();
        assert_eq!(
            r.chains["c"].rules[0].verdict,
            Verdict::DecisionVmap {
                family: Family::V4,
                field: AddrField::Daddr,
                ports: false,
                map: "d".into()
            }
        );
        assert_eq!(
            r.chains["c"].rules[1].verdict,
            Verdict::Vmap {
                family: Family::V4,
                field: AddrField::Daddr,
                map: "m".into()
            }
        );
        assert!(r.maps.contains_key("m") && r.decision_maps.contains_key("d"));
    }

    #[test]
    fn protocol_sets_and_return() {
        for (op, negated) in [("==", false), ("!=", true)] {
            for set in [r#"["tcp", "udp", "sctp"]"#, r#"["sctp", 6, "udp"]"#] {
                assert_eq!(
                    one_match(&format!(
                        r#"{{"match": {{"op": "{op}", "left": {{"meta": {{"key": "l4proto"}}}}, "right": {{"set": {set}}}}}}}"#
                    )),
                    Match::L4ProtoWithPorts { negated }
                );
            }
        }
        let r = parse(&[CHAIN_C, &rule(r#"{"return": null}"#)]).unwrap();
        assert_eq!(r.chains["c"].rules[0].verdict, Verdict::Return);
    }

    #[test]
    fn unexpected_decision_maps_and_lookups_are_refused() {
        let map = |rest: &str| {
            format!(
                r#"{{"map": {{"family": "inet", "name": "d", "table": "nftpolicy", "handle": 3, "map": "verdict", {rest}}}}}"#
            )
        };
        let v4 = r#""type": "ipv4_addr", "flags": ["interval"]"#;
        let ports = r#""type": ["ipv4_addr", "inet_proto", "inet_service"], "flags": ["interval"]"#;
        let with = |key: &str, elem: &str| map(&format!(r#"{key}, "elem": [{elem}]"#));
        for (object, what, quoted) in [
            (
                map(r#""type": "ipv4_addr", "flags": ["interval", "timeout"]"#),
                "map flags",
                "timeout",
            ),
            (
                map(r#""type": "ipv4_addr", "flags": ["constant"]"#),
                "map flags",
                "constant",
            ),
            (
                map(r#""type": "ether_addr", "flags": ["interval"]"#),
                "map key type",
                "ether_addr",
            ),
            (
                map(r#""type": ["ipv4_addr", "inet_service"], "flags": ["interval"]"#),
                "map key type",
                "inet_service",
            ),
            (
                with(v4, r#"["10.0.0.1", {"goto": {"target": "c"}}]"#),
                "element",
                "goto",
            ),
            (
                with(v4, r#"["10.0.0.1", {"jump": {"chain": "c"}}]"#),
                "element",
                "jump",
            ),
            (
                with(v4, r#"["10.0.0.1", {"queue": null}]"#),
                "element",
                "queue",
            ),
            (
                with(v4, r#"["fd00::1", {"drop": null}]"#),
                "element",
                "fd00::1",
            ),
            (
                with(
                    v4,
                    r#"[{"prefix": {"addr": "10.0.0.1", "len": 8}}, {"drop": null}]"#,
                ),
                "element",
                "10.0.0.1",
            ),
            (
                with(
                    v4,
                    r#"[{"prefix": {"addr": "10.0.0.0", "len": 33}}, {"drop": null}]"#,
                ),
                "element",
                "33",
            ),
            (
                with(
                    v4,
                    r#"[{"range": ["10.0.0.9", "10.0.0.1"]}, {"drop": null}]"#,
                ),
                "element",
                "10.0.0.9",
            ),
            (
                with(
                    v4,
                    r#"[{"elem": {"val": "10.0.0.1", "comment": "c", "expires": 1}}, {"drop": null}]"#,
                ),
                "element",
                "expires",
            ),
            (
                with(
                    v4,
                    r#"[{"elem": {"val": "10.0.0.1", "comment": 1}}, {"drop": null}]"#,
                ),
                "element",
                "comment",
            ),
            (
                with(
                    v4,
                    r#"[{"concat": ["10.0.0.1", "tcp", 80]}, {"drop": null}]"#,
                ),
                "element",
                "concat",
            ),
            (
                with(
                    ports,
                    r#"[{"concat": ["10.0.0.1", "icmp", 80]}, {"drop": null}]"#,
                ),
                "element",
                "icmp",
            ),
            (
                with(
                    ports,
                    r#"[{"concat": ["10.0.0.1", "tcp"]}, {"drop": null}]"#,
                ),
                "element",
                "concat",
            ),
            (
                with(
                    ports,
                    r#"[{"concat": ["10.0.0.1", "tcp", {"range": [9, 8]}]}, {"drop": null}]"#,
                ),
                "element",
                "range",
            ),
            (
                with(ports, r#"["10.0.0.1", {"drop": null}]"#),
                "element",
                "10.0.0.1",
            ),
            (
                with(
                    v4,
                    r#"["10.0.0.1", {"drop": null}], [{"elem": {"val": "10.0.0.1", "comment": "c"}}, {"accept": null}]"#,
                ),
                "second element with the same key",
                "accept",
            ),
        ] {
            assert_unexpected(
                parse(&[&object]),
                &format!("map d: unexpected {what}"),
                quoted,
            );
        }
        for refused in [
            r#"{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@d"}}"#,
            r#"{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "tcp", "field": "dport"}}]}, "data": "@d"}}"#,
            r#"{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "id"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@d"}}"#,
        ] {
            assert_unexpected(
                parse(&[CHAIN_C, &rule(refused)]),
                "rule 9 in chain c: unexpected verdict",
                "concat",
            );
        }
        for refused in [
            r#"{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp", "udp"]}}}"#,
            r#"{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp", "sctp", "icmp"]}}}"#,
            r#"{"match": {"op": "in", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp", "sctp"]}}}"#,
        ] {
            assert_match_refused(refused);
        }
    }

    #[test]
    fn as_listed_shortens_element_comments() {
        let mut r = crate::nft::example::ruleset();
        let long = format!("a \"b\" {}", "x".repeat(200));
        for d in r
            .decision_maps
            .get_mut("d_any_v4")
            .unwrap()
            .elements
            .values_mut()
        {
            d.comment = Some(long.clone());
        }
        let listed = as_listed(&r);
        for d in listed.decision_maps["d_any_v4"].elements.values() {
            let c = d.comment.as_deref().unwrap();
            assert!(c.starts_with("a 'b' xxx") && c.ends_with("..."), "{c}");
        }
        assert_eq!(
            listed.decision_maps["d_any_v6"],
            r.decision_maps["d_any_v6"]
        );
        assert_eq!(parse_table(&super::listing(&r)).unwrap(), listed);
    }

    #[test]
    fn generated_decision_rulesets_read_back_equal() {
        for seed in 0..200 {
            let r = crate::generate::decisions::ruleset(seed);
            let json = super::listing(&r);
            let parsed = parse_table(&json).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{json}"));
            assert_eq!(parsed, as_listed(&r), "seed {seed}");
        }
    }

    // ---- named counters and statements ----

    #[test]
    fn counters_and_statements_as_nft_lists_them_read_back_exactly() {
        use crate::nft::example;
        assert_eq!(
            parse_table(example::COUNTED_LISTING).unwrap(),
            example::counted()
        );
        let canonical = |s: &str| canonical_listing(s).unwrap();
        assert_eq!(
            canonical(&super::listing(&example::counted())),
            canonical(example::COUNTED_LISTING)
        );
    }

    #[test]
    fn counter_objects_with_and_without_comments() {
        let r = parse(&[
            r#"{"counter": {"family": "inet", "name": "a", "table": "nftpolicy", "handle": 2, "comment": "ns/p egress[0]", "packets": 12, "bytes": 3400}}"#,
            r#"{"counter": {"family": "inet", "name": "b", "table": "nftpolicy", "handle": 3, "packets": 0, "bytes": 0}}"#,
            r#"{"counter": {"family": "inet", "name": "c", "table": "nftpolicy", "handle": 4, "comment": "", "packets": 0, "bytes": 0}}"#,
            // A counter may be named like a set and a chain.
            r#"{"set": {"family": "inet", "name": "a", "table": "nftpolicy", "type": "ipv4_addr", "handle": 5, "comment": "s"}}"#,
            r#"{"chain": {"family": "inet", "table": "nftpolicy", "name": "a", "handle": 6}}"#,
        ])
        .unwrap();
        let comments: Vec<(&str, Option<&str>)> = r
            .counters
            .iter()
            .map(|(n, c)| (n.as_str(), c.comment.as_deref()))
            .collect();
        assert_eq!(
            comments,
            [("a", Some("ns/p egress[0]")), ("b", None), ("c", Some(""))]
        );
        assert!(r.sets.contains_key("a") && r.chains.contains_key("a"));
    }

    #[test]
    fn statements_and_rules_without_verdict() {
        let r = parse(&[
            CHAIN_C,
            &rule(r#"{"counter": "np_a_0"}, {"accept": null}"#),
            &rule(
                r#"{"limit": {"rate": 10, "burst": 20, "per": "second"}}, {"log": {"prefix": "egress_Habc", "group": 7}}"#,
            ),
            &rule(r#"{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}"#),
            &rule(r#"{"continue": null}"#),
            &rule(
                r#"{"counter": "x"}, {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}}, {"counter": "y"}, {"drop": null}"#,
            ),
            &rule(
                r#"{"limit": {"rate": 4294967295, "burst": 1, "per": "second"}}, {"log": {"prefix": "", "group": 65535}}, {"return": null}"#,
            ),
        ])
        .unwrap();
        let rules: Vec<(Vec<Match>, Verdict)> = r.chains["c"]
            .rules
            .iter()
            .map(|r| (r.matches.clone(), r.verdict.clone()))
            .collect();
        assert_eq!(
            rules,
            vec![
                (vec![Match::Counter("np_a_0".into())], Verdict::Accept),
                (
                    vec![
                        Match::Limit {
                            rate: 10,
                            burst: 20
                        },
                        Match::Log {
                            group: 7,
                            prefix: "egress_Habc".into()
                        }
                    ],
                    Verdict::Continue
                ),
                (vec![Match::L4Proto(Protocol::Tcp)], Verdict::Continue),
                (vec![], Verdict::Continue),
                (
                    vec![
                        Match::Counter("x".into()),
                        Match::L4Proto(Protocol::Udp),
                        Match::Counter("y".into())
                    ],
                    Verdict::Drop
                ),
                (
                    vec![
                        Match::Limit {
                            rate: u32::MAX,
                            burst: 1
                        },
                        Match::Log {
                            group: u16::MAX,
                            prefix: String::new()
                        }
                    ],
                    Verdict::Return
                ),
            ]
        );
    }

    #[test]
    fn unexpected_counters_and_statements_are_refused() {
        let counter = |rest: &str| {
            format!(
                r#"{{"counter": {{"family": "inet", "name": "k", "table": "nftpolicy", "handle": 2, {rest}}}}}"#
            )
        };
        for (item, what, quoted) in [
            (counter(r#""packets": 0"#), "\"bytes\" (missing", "packets"),
            (
                counter(r#""packets": -1, "bytes": 0"#),
                "\"packets\" (missing",
                "-1",
            ),
            (
                counter(r#""comment": 7, "packets": 0, "bytes": 0"#),
                "comment",
                "7",
            ),
            (
                counter(r#""packets": 0, "bytes": 0, "unit": "x""#),
                "key \"unit\" in counter",
                "unit",
            ),
        ] {
            assert_unexpected(
                parse(&[&item]),
                &format!("counter k: unexpected {what}"),
                quoted,
            );
        }
        assert_unexpected(
            parse(&[
                r#"{"counter": {"family": "ip", "name": "k", "table": "nftpolicy", "handle": 2, "packets": 0, "bytes": 0}}"#,
            ]),
            "counter k: unexpected object outside",
            "\"ip\"",
        );
        let twice = counter(r#""packets": 0, "bytes": 0"#);
        assert_unexpected(
            parse(&[&twice, &twice]),
            "counter k: unexpected second definition",
            "\"k\"",
        );
        for refused in [
            r#"{"counter": 5}"#,
            r#"{"counter": {"packets": 1, "bytes": 2}}"#,
            r#"{"limit": {"rate": 10, "burst": 5, "per": "minute"}}"#,
            r#"{"limit": {"rate": 10, "burst": 5, "per": "second", "inv": true}}"#,
            r#"{"limit": {"rate": 10, "burst": 5, "per": "second", "rate_unit": "kbytes"}}"#,
            r#"{"limit": {"rate": 4294967296, "burst": 5, "per": "second"}}"#,
            r#"{"limit": {"burst": 5, "per": "second"}}"#,
            r#"{"log": {"group": 7}}"#,
            r#"{"log": {"prefix": "p"}}"#,
            r#"{"log": {"prefix": "p", "group": 65536}}"#,
            r#"{"log": {"prefix": "p", "group": 7, "level": "warn"}}"#,
            r#"{"log": {"prefix": "p", "level": "warn"}}"#,
            r#"{"log": {"prefix": 1, "group": 7}}"#,
        ] {
            let compact = serde_json::from_str::<Value>(refused).unwrap().to_string();
            for exprs in [
                format!("{refused}, {{\"drop\": null}}"),
                refused.to_string(),
            ] {
                assert_unexpected(
                    parse(&[CHAIN_C, &rule(&exprs)]),
                    "rule 9 in chain c: unexpected statement",
                    &compact,
                );
            }
        }
    }

    #[test]
    fn as_listed_stores_log_prefixes_and_counter_comments_as_nft_does() {
        let mut r = crate::nft::example::counted();
        let long = format!("a \"b\" $c {}", "é".repeat(100));
        r.counters.get_mut("comb").unwrap().comment = Some(long.clone());
        let comb = r.chains.get_mut("comb").unwrap();
        comb.rules[1].matches[1] = Match::Log {
            group: 7,
            prefix: long.clone(),
        };
        // A statement between `meta l4proto tcp` and `tcp dport` keeps nft from dropping the
        // former.
        comb.rules.push(Rule {
            matches: vec![
                Match::L4Proto(Protocol::Tcp),
                Match::Counter("comb".into()),
                Match::Dport {
                    protocol: Protocol::Tcp,
                    ports: vec![(80, 80)],
                },
            ],
            verdict: Verdict::Accept,
            comment: None,
        });
        let listed = as_listed(&r);
        let comment = listed.counters["comb"].comment.clone().unwrap();
        assert!(
            comment.starts_with("a 'b' $c é") && comment.ends_with("..."),
            "{comment}"
        );
        assert!(comment.len() <= crate::nft::MAX_COMMENT_LEN);
        let Match::Log { prefix, .. } = &listed.chains["comb"].rules[1].matches[1] else {
            panic!("a log statement");
        };
        assert!(prefix.starts_with("a 'b' _c é"), "{prefix}");
        assert!(!prefix.ends_with("..."), "{prefix}");
        assert!(
            prefix.len() <= crate::nft::MAX_LOG_PREFIX_LEN
                && prefix.len() > crate::nft::MAX_LOG_PREFIX_LEN - 2,
            "{}",
            prefix.len()
        );
        assert_eq!(
            listed.chains["comb"].rules[3], r.chains["comb"].rules[3],
            "the dependency stays"
        );
        assert_eq!(parse_table(&super::listing(&r)).unwrap(), listed);
        assert_eq!(as_listed(&listed), listed);
    }

    /// `nft -j list counters table inet nftpolicy` after three datagrams of 28 to 30 bytes went
    /// through `example::counted()`, as nft 1.0.6 printed it.
    const COUNTERS: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"counter": {"family": "inet", "name": "comb", "table": "nftpolicy", "handle": 3, "comment": "isolation of comb", "packets": 3, "bytes": 87}}, {"counter": {"family": "inet", "name": "np_a_0", "table": "nftpolicy", "handle": 4, "packets": 3, "bytes": 87}}, {"counter": {"family": "inet", "name": "spare", "table": "nftpolicy", "handle": 5, "comment": "", "packets": 0, "bytes": 0}}]}"#;

    #[test]
    fn counter_listings_give_each_counters_values() {
        let value = |packets, bytes| CounterValue { packets, bytes };
        let values = parse_counters(COUNTERS).unwrap();
        assert_eq!(
            values,
            BTreeMap::from([
                ("comb".to_string(), value(3, 87)),
                ("np_a_0".to_string(), value(3, 87)),
                ("spare".to_string(), value(0, 0)),
            ])
        );
        // What a stand-in of the kernel lists reads back the same, and as nft's listing, to the
        // letter but for the handles.
        let written = counters_listing(&crate::nft::example::counted(), &values);
        assert_eq!(parse_counters(&written).unwrap(), values);
        let canonical = |s: &str| canonical_listing(s).unwrap();
        assert_eq!(canonical(&written), canonical(COUNTERS));
        // A counter without counts lists at 0; counts of counters the table lacks are not listed.
        let mut partial = BTreeMap::from([("ghost".to_string(), value(1, 1))]);
        partial.insert("comb".into(), value(1, 2));
        let written = counters_listing(&crate::nft::example::counted(), &partial);
        let read = parse_counters(&written).unwrap();
        assert_eq!(read["comb"], value(1, 2));
        assert_eq!(read["np_a_0"], value(0, 0));
        assert!(!read.contains_key("ghost"));
        // The counters of an empty table; counts up to u64::MAX.
        let empty = format!("{{\"nftables\": [{META}]}}");
        assert_eq!(parse_counters(&empty).unwrap(), BTreeMap::new());
        let big = format!(
            r#"{{"nftables": [{META}, {{"counter": {{"family": "inet", "name": "k", "table": "nftpolicy", "handle": 2, "packets": 18446744073709551615, "bytes": 0}}}}]}}"#
        );
        assert_eq!(parse_counters(&big).unwrap()["k"], value(u64::MAX, 0));
    }

    #[test]
    fn counter_listings_hold_counters_of_the_table_only() {
        let counter = r#"{"counter": {"family": "inet", "name": "k", "table": "nftpolicy", "handle": 2, "packets": 1, "bytes": 2}}"#;
        assert!(matches!(
            parse_counters("[]"),
            Err(JsonError::NotAListing(_))
        ));
        assert!(matches!(parse_counters("{"), Err(JsonError::Syntax(_))));
        for (items, object, quoted) in [
            (vec![TABLE], "counter listing: unexpected item", "table"),
            (
                vec![counter, CHAIN_C],
                "counter listing: unexpected item",
                "chain",
            ),
            (
                vec![counter, counter],
                "counter k: unexpected second definition",
                "\"k\"",
            ),
            (
                vec![
                    r#"{"counter": {"family": "inet", "name": "k", "table": "other", "handle": 2, "packets": 1, "bytes": 2}}"#,
                ],
                "counter k: unexpected object outside",
                "other",
            ),
            (
                vec![
                    r#"{"counter": {"family": "inet", "name": "k", "table": "nftpolicy", "handle": 2, "packets": 1.5, "bytes": 2}}"#,
                ],
                "counter k: unexpected \"packets\"",
                "1.5",
            ),
        ] {
            let json = format!("{{\"nftables\": [{META}, {}]}}", items.join(", "));
            match parse_counters(&json) {
                Err(e @ JsonError::Unexpected { .. }) => {
                    let text = e.to_string();
                    assert!(text.starts_with(object), "{text:?} should name {object}");
                    assert!(text.contains(quoted), "{text:?} should quote {quoted}");
                }
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn canonical_listings_ignore_counts() {
        let with = |packets: u64| {
            listing(&[&format!(
                r#"{{"counter": {{"family": "inet", "name": "k", "table": "nftpolicy", "handle": 2, "comment": "c", "packets": {packets}, "bytes": {packets}}}}}"#
            )])
        };
        let canonical = |s: &str| canonical_listing(s).unwrap();
        assert_eq!(canonical(&with(0)), canonical(&with(99)));
        let other_comment = with(0).replace("\"c\"", "\"d\"");
        assert_ne!(canonical(&with(0)), canonical(&other_comment));
    }
}
