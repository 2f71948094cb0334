//! The text form of a [`Ruleset`], loadable with `nft -f`.
//!
//! The output replaces the table atomically (`add table`, `delete table`, then the full table in one
//! file), so loading it twice gives the same state as loading it once. Every list is printed sorted, so
//! the same ruleset always renders to the same bytes.

use std::fmt::{self, Write};

use super::{
    AddrField, Chain, Counter, Decision, DecisionKey, DecisionMap, DecisionVerdict, Match, Rule,
    Ruleset, Set, SetElement, SetType, Verdict, VerdictMap, MAX_COMMENT_LEN, MAX_LOG_PREFIX_LEN,
    TABLE_NAME,
};
use crate::cidr::Family;

/// `ip` or `ip6`.
pub(crate) fn family_keyword(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// `ipv4_addr` or `ipv6_addr`.
pub(crate) fn addr_type(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// `saddr` or `daddr`.
pub(crate) fn field_keyword(field: AddrField) -> &'static str {
    match field {
        AddrField::Saddr => "saddr",
        AddrField::Daddr => "daddr",
    }
}

/// A comment nft accepts: no double quotes, at most [`MAX_COMMENT_LEN`] bytes.
pub(crate) fn comment(text: &str) -> String {
    let mut out: String = text.replace('"', "'");
    if out.len() > MAX_COMMENT_LEN {
        let mut cut = MAX_COMMENT_LEN - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// A log prefix nft accepts and stores as written: no double quotes (they end the string) and no
/// `$` (nft expands it as a variable), at most [`MAX_LOG_PREFIX_LEN`] bytes (cut at a character
/// boundary: a prefix is matched as it is, so nothing is appended).
pub(crate) fn log_prefix(text: &str) -> String {
    let mut out: String = text.replace('"', "'").replace('$', "_");
    if out.len() > MAX_LOG_PREFIX_LEN {
        let mut cut = MAX_LOG_PREFIX_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

fn port_range(&(a, b): &(u16, u16)) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::CtEstablishedOrRelated => f.write_str("ct state established,related"),
            Match::Prefix {
                field,
                negated,
                cidr,
            } => write!(
                f,
                "{} {} {}{cidr}",
                family_keyword(cidr.family()),
                field_keyword(*field),
                if *negated { "!= " } else { "" }
            ),
            Match::InSet { family, field, set } => write!(
                f,
                "{} {} @{set}",
                family_keyword(*family),
                field_keyword(*field)
            ),
            Match::L4Proto(p) => write!(f, "meta l4proto {}", p.as_nft()),
            Match::L4ProtoWithPorts { negated } => write!(
                f,
                "meta l4proto {}{{ tcp, udp, sctp }}",
                if *negated { "!= " } else { "" }
            ),
            Match::Dport { protocol, ports } => {
                let list: Vec<String> = ports.iter().map(port_range).collect();
                if list.len() == 1 {
                    write!(f, "{} dport {}", protocol.as_nft(), list[0])
                } else {
                    write!(f, "{} dport {{ {} }}", protocol.as_nft(), list.join(", "))
                }
            }
            Match::DaddrProtoPortInSet { family, set } => write!(
                f,
                "{} daddr . meta l4proto . th dport @{set}",
                family_keyword(*family)
            ),
            Match::Counter(name) => write!(f, "counter name \"{name}\""),
            Match::Limit { rate, burst } => {
                write!(f, "limit rate {rate}/second burst {burst} packets")
            }
            Match::Log { group, prefix } => {
                write!(f, "log prefix \"{}\" group {group}", log_prefix(prefix))
            }
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Vmap { family, field, map } => write!(
                f,
                "{} {} vmap @{map}",
                family_keyword(*family),
                field_keyword(*field)
            ),
            Verdict::DecisionVmap {
                family,
                field,
                ports,
                map,
            } => write!(
                f,
                "{} {}{} vmap @{map}",
                family_keyword(*family),
                field_keyword(*field),
                if *ports {
                    " . meta l4proto . th dport"
                } else {
                    ""
                }
            ),
            Verdict::Continue => f.write_str("continue"),
        }
    }
}

/// The rule as nft lists it: its expressions, then its verdict (nothing for [`Verdict::Continue`],
/// unless the rule has no expression: `continue`), then its comment.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.matches.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{m}")?;
        }
        if self.verdict != Verdict::Continue || self.matches.is_empty() {
            if !self.matches.is_empty() {
                f.write_str(" ")?;
            }
            write!(f, "{}", self.verdict)?;
        }
        if let Some(c) = &self.comment {
            write!(f, " comment \"{}\"", comment(c))?;
        }
        Ok(())
    }
}

impl fmt::Display for SetElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetElement::Addr(ip) => write!(f, "{ip}"),
            SetElement::AddrProtoPort(ip, proto, port) => {
                write!(f, "{ip} . {} . {port}", proto.as_nft())
            }
        }
    }
}

impl fmt::Display for DecisionVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionVerdict::Accept => f.write_str("accept"),
            DecisionVerdict::Drop => f.write_str("drop"),
            DecisionVerdict::Return => f.write_str("return"),
            DecisionVerdict::Jump(chain) => write!(f, "jump {chain}"),
        }
    }
}

/// The key as nft writes and lists it: `10.0.0.1`, `10.0.0.0/8` or `10.0.0.1-10.0.0.9`, then
/// `. tcp . 80` or `. tcp . 53-60` in a map with ports.
impl fmt::Display for DecisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix() {
            Some(_) if self.first == self.last => write!(f, "{}", self.first)?,
            Some(cidr) => write!(f, "{cidr}")?,
            None => write!(f, "{}-{}", self.first, self.last)?,
        }
        if let Some((protocol, lo, hi)) = self.ports {
            write!(f, " . {} . {}", protocol.as_nft(), port_range(&(lo, hi)))?;
        }
        Ok(())
    }
}

/// A decision map element as written in a map or an `add element`: `KEY [comment "C"] : VERDICT`.
pub(crate) fn decision_element(key: &DecisionKey, decision: &Decision) -> String {
    match &decision.comment {
        Some(c) => format!("{key} comment \"{}\" : {}", comment(c), decision.verdict),
        None => format!("{key} : {}", decision.verdict),
    }
}

fn write_elements(out: &mut String, items: &[String]) -> fmt::Result {
    match items.len() {
        0 => Ok(()),
        1 => writeln!(out, "\t\telements = {{ {} }}", items[0]),
        _ => {
            writeln!(out, "\t\telements = {{")?;
            for (i, item) in items.iter().enumerate() {
                let sep = if i + 1 < items.len() { "," } else { "" };
                writeln!(out, "\t\t\t{item}{sep}")?;
            }
            writeln!(out, "\t\t}}")
        }
    }
}

/// The declaration lines of a set (type and comment), without elements.
pub(crate) fn set_declaration(set: &Set) -> Vec<String> {
    let key = match set.set_type {
        SetType::Addr(f) => addr_type(f).to_string(),
        SetType::AddrProtoPort(f) => format!("{} . inet_proto . inet_service", addr_type(f)),
    };
    vec![
        format!("type {key}"),
        format!("comment \"{}\"", comment(&set.comment)),
    ]
}

/// The declaration of a verdict map, without elements.
pub(crate) fn map_declaration(map: &VerdictMap) -> String {
    format!("type {} : verdict", addr_type(map.family))
}

/// The declaration lines of a decision map (type and flags), without elements.
pub(crate) fn decision_map_declaration(map: &DecisionMap) -> [String; 2] {
    let key = if map.ports {
        format!("{} . inet_proto . inet_service", addr_type(map.family))
    } else {
        addr_type(map.family).to_string()
    };
    [
        format!("type {key} : verdict"),
        "flags interval".to_string(),
    ]
}

/// The declaration of a named counter (its comment), `None` when it has none.
pub(crate) fn counter_declaration(counter: &Counter) -> Option<String> {
    counter
        .comment
        .as_ref()
        .map(|c| format!("comment \"{}\"", comment(c)))
}

/// The hook line of a base chain; `None` for a regular chain.
pub(crate) fn chain_declaration(chain: &Chain) -> Option<String> {
    let base = chain.base?;
    let priority = match base.priority {
        0 => "filter".to_string(),
        p if p > 0 => format!("filter + {p}"),
        p => format!("filter - {}", -p),
    };
    Some(format!(
        "type filter hook {} priority {priority}; policy accept;",
        base.hook.as_nft()
    ))
}

fn write_counter(out: &mut String, name: &str, counter: &Counter) -> fmt::Result {
    writeln!(out, "\tcounter {name} {{")?;
    if let Some(decl) = counter_declaration(counter) {
        writeln!(out, "\t\t{decl}")?;
    }
    writeln!(out, "\t}}")
}

fn write_set(out: &mut String, name: &str, set: &Set) -> fmt::Result {
    writeln!(out, "\tset {name} {{")?;
    for line in set_declaration(set) {
        writeln!(out, "\t\t{line}")?;
    }
    let items: Vec<String> = set.elements.iter().map(|e| e.to_string()).collect();
    write_elements(out, &items)?;
    writeln!(out, "\t}}")
}

fn write_map(out: &mut String, name: &str, map: &VerdictMap) -> fmt::Result {
    writeln!(out, "\tmap {name} {{")?;
    writeln!(out, "\t\t{}", map_declaration(map))?;
    let items: Vec<String> = map
        .elements
        .iter()
        .map(|(ip, chain)| format!("{ip} : jump {chain}"))
        .collect();
    write_elements(out, &items)?;
    writeln!(out, "\t}}")
}

fn write_decision_map(out: &mut String, name: &str, map: &DecisionMap) -> fmt::Result {
    writeln!(out, "\tmap {name} {{")?;
    for line in decision_map_declaration(map) {
        writeln!(out, "\t\t{line}")?;
    }
    let items: Vec<String> = map
        .elements
        .iter()
        .map(|(key, decision)| decision_element(key, decision))
        .collect();
    write_elements(out, &items)?;
    writeln!(out, "\t}}")
}

fn write_chain(out: &mut String, name: &str, chain: &Chain) -> fmt::Result {
    writeln!(out, "\tchain {name} {{")?;
    if let Some(decl) = chain_declaration(chain) {
        writeln!(out, "\t\t{decl}")?;
    }
    for rule in &chain.rules {
        writeln!(out, "\t\t{rule}")?;
    }
    writeln!(out, "\t}}")
}

impl Ruleset {
    /// The table's definition alone: `table inet nftpolicy { ... }`.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_table(&mut out);
        out
    }

    fn write_table(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "table inet {TABLE_NAME} {{")?;
        for (name, counter) in &self.counters {
            write_counter(out, name, counter)?;
        }
        for (name, set) in &self.sets {
            write_set(out, name, set)?;
        }
        for (name, map) in &self.maps {
            write_map(out, name, map)?;
        }
        for (name, map) in &self.decision_maps {
            write_decision_map(out, name, map)?;
        }
        let base = self.base_chains();
        for (name, chain) in &base {
            write_chain(out, name, chain)?;
        }
        for (name, chain) in self.chains.iter().filter(|(_, c)| c.base.is_none()) {
            write_chain(out, name, chain)?;
        }
        writeln!(out, "}}")
    }

    /// A complete `nft -f` file that atomically replaces the table with this ruleset.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("#!/usr/sbin/nft -f\n");
        out.push_str("# Generated by nftpolicy; replaces table inet nftpolicy atomically.\n");
        out.push_str(&format!("add table inet {TABLE_NAME}\n"));
        out.push_str(&format!("delete table inet {TABLE_NAME}\n"));
        out.push_str(&self.render_table());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::example::{self, key};
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn decision_maps_input_chains_and_lookups_render_as_nft_lists_them() {
        assert_eq!(example::ruleset().render_table(), example::TEXT);
    }

    #[test]
    fn counters_and_statements_render_as_nft_lists_them() {
        assert_eq!(example::counted().render_table(), example::COUNTED_TEXT);
    }

    #[test]
    fn statements_and_rules_without_verdict() {
        let rule = |matches: Vec<Match>, verdict: Verdict| Rule {
            matches,
            verdict,
            comment: None,
        };
        let log = |prefix: &str| Match::Log {
            group: 100,
            prefix: prefix.into(),
        };
        for (r, text) in [
            (rule(vec![], Verdict::Continue), "continue"),
            (
                rule(vec![Match::Counter("x".into())], Verdict::Continue),
                "counter name \"x\"",
            ),
            (
                rule(
                    vec![
                        Match::Limit {
                            rate: 1,
                            burst: u32::MAX,
                        },
                        log("p"),
                    ],
                    Verdict::Continue,
                ),
                "limit rate 1/second burst 4294967295 packets log prefix \"p\" group 100",
            ),
            (
                rule(
                    vec![Match::Counter("a.b-c_0".into()), log("")],
                    Verdict::Accept,
                ),
                "counter name \"a.b-c_0\" log prefix \"\" group 100 accept",
            ),
            // nft would read `$` as a variable and `"` as the end of the prefix.
            (
                rule(vec![log("a \"b\" $c")], Verdict::Drop),
                "log prefix \"a 'b' _c\" group 100 drop",
            ),
        ] {
            assert_eq!(r.to_string(), text);
        }
        // A prefix is cut at 127 bytes, at a character boundary, with nothing appended.
        let long = format!("a{}", "é".repeat(100));
        let cut = log_prefix(&long);
        assert_eq!(cut.len(), 127);
        assert!(long.starts_with(&cut));
        assert_eq!(log_prefix(&"é".repeat(64)).len(), 126);
        assert_eq!(log_prefix("np_x_0"), "np_x_0");
    }

    #[test]
    fn decision_keys_are_an_address_a_prefix_or_a_range() {
        for (first, last, ports, text) in [
            ("10.0.0.1", "10.0.0.1", None, "10.0.0.1"),
            ("10.0.0.0", "10.0.0.1", None, "10.0.0.0/31"),
            ("10.0.0.1", "10.0.0.2", None, "10.0.0.1-10.0.0.2"),
            ("10.0.0.0", "10.0.0.2", None, "10.0.0.0-10.0.0.2"),
            ("0.0.0.0", "255.255.255.255", None, "0.0.0.0/0"),
            ("128.0.0.0", "255.255.255.255", None, "128.0.0.0/1"),
            (
                "200.0.0.0",
                "255.255.255.255",
                None,
                "200.0.0.0-255.255.255.255",
            ),
            (
                "255.255.255.255",
                "255.255.255.255",
                None,
                "255.255.255.255",
            ),
            (
                "::",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                None,
                "::/0",
            ),
            ("fd00::", "fd00::7", None, "fd00::/125"),
            ("fd00::1", "fd00::8", None, "fd00::1-fd00::8"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4", None, "::ffff:1.2.3.4"),
            (
                "10.0.0.1",
                "10.0.0.1",
                Some((Protocol::Tcp, 80, 80)),
                "10.0.0.1 . tcp . 80",
            ),
            (
                "10.0.0.0",
                "10.0.255.255",
                Some((Protocol::Sctp, 0, 65535)),
                "10.0.0.0/16 . sctp . 0-65535",
            ),
            (
                "fd00::1",
                "fd00::2",
                Some((Protocol::Udp, 53, 60)),
                "fd00::1-fd00::2 . udp . 53-60",
            ),
        ] {
            assert_eq!(key(first, last, ports).to_string(), text);
        }
    }

    #[test]
    fn element_comments_are_shortened_and_unquoted_as_other_comments() {
        let long = format!("say \"hi\" {}", "é".repeat(100));
        let text = decision_element(
            &key("10.0.0.1", "10.0.0.1", None),
            &example::decision(DecisionVerdict::Return, Some(&long)),
        );
        assert_eq!(
            text,
            format!("10.0.0.1 comment \"{}\" : return", comment(&long))
        );
        assert!(text.contains("say 'hi' é") && text.contains("...\" : return"));
    }
}
