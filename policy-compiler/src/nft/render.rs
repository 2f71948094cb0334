//! The text form of a [`Ruleset`], loadable with `nft -f`.
//!
//! The output replaces the table atomically (`add table`, `delete table`, then the full table in one
//! file), so loading it twice gives the same state as loading it once. Every list is printed sorted, so
//! the same ruleset always renders to the same bytes.

use std::fmt::{self, Write};

use super::{
    AddrField, Chain, Match, Rule, Ruleset, Set, SetElement, SetType, Verdict, VerdictMap,
    MAX_COMMENT_LEN, TABLE_NAME,
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
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Vmap { family, field, map } => write!(
                f,
                "{} {} vmap @{map}",
                family_keyword(*family),
                field_keyword(*field)
            ),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        write!(f, "{}", self.verdict)?;
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

/// The hook line of a base chain; `None` for a regular chain.
pub(crate) fn chain_declaration(chain: &Chain) -> Option<String> {
    let base = chain.base?;
    let priority = match base.priority {
        0 => "filter".to_string(),
        p if p > 0 => format!("filter + {p}"),
        p => format!("filter - {}", -p),
    };
    Some(format!(
        "type filter hook forward priority {priority}; policy accept;"
    ))
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
        for (name, set) in &self.sets {
            write_set(out, name, set)?;
        }
        for (name, map) in &self.maps {
            write_map(out, name, map)?;
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
