//! The connectivity report in the formats CI systems and people read: text (one line per
//! connection, as np-guard's netpol-analyzer and roxctl print them), JSON, markdown, CSV.

use serde_json::{json, Value};

use super::Connection;
use crate::cidr::Family;

/// ` (IPv4 only)` or ` (IPv6 only)` for a connection of one family (the pair's families differ).
pub(crate) fn family_suffix(family: Option<Family>) -> String {
    family
        .map(|f| format!(" (IPv{} only)", f.number()))
        .unwrap_or_default()
}

/// What a connection allows, with its [`family_suffix`].
pub(crate) fn allowed_text(c: &Connection<'_>) -> String {
    format!("{}{}", c.allowed, family_suffix(c.family))
}

/// `ns/a[Deployment] => ns/b[StatefulSet] : TCP 80,8080-8090`, one line per connection.
pub fn to_text<'a>(connections: impl IntoIterator<Item = Connection<'a>>) -> String {
    let mut out = String::new();
    for c in connections {
        out.push_str(&format!("{} => {} : {}\n", c.from, c.to, allowed_text(&c)));
    }
    out
}

/// One connection as JSON: `{"from", "to", "all", "allowed": [{"protocol", "ports": [[a, b]]}]}`,
/// with `"family": "IPv4"|"IPv6"` when the families of the pair differ.
pub fn connection_json(c: &Connection<'_>) -> Value {
    let (all, allowed) = c.allowed.json_fields();
    let mut v =
        json!({"from": c.from.to_string(), "to": c.to.to_string(), "all": all, "allowed": allowed});
    if let Some(f) = c.family {
        v["family"] = json!(format!("IPv{}", f.number()));
    }
    v
}

/// `{"connections": [...]}`.
pub fn to_json<'a>(connections: impl IntoIterator<Item = Connection<'a>>) -> Value {
    let list: Vec<Value> = connections
        .into_iter()
        .map(|c| connection_json(&c))
        .collect();
    json!({ "connections": list })
}

/// A markdown table: `| from | to | allowed |`.
pub fn to_markdown<'a>(connections: impl IntoIterator<Item = Connection<'a>>) -> String {
    let mut out = String::from("| from | to | allowed |\n|---|---|---|\n");
    for c in connections {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            c.from,
            c.to,
            allowed_text(&c)
        ));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV with a header: `from,to,allowed`.
pub fn to_csv<'a>(connections: impl IntoIterator<Item = Connection<'a>>) -> String {
    let mut out = String::from("from,to,allowed\n");
    for c in connections {
        out.push_str(&format!(
            "{},{},{}\n",
            csv_field(&c.from.to_string()),
            csv_field(&c.to.to_string()),
            csv_field(&allowed_text(&c))
        ));
    }
    out
}
