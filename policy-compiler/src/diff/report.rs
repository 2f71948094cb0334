//! A [`Diff`] in the formats reviews read: text (one line per change, as netpol-analyzer's diff
//! prints them), markdown (a pull-request comment) and JSON.

use serde_json::{json, Value};

use super::{Change, ChangeKind, Diff};
use crate::analysis::connectivity::report::{allowed_text, connection_json, family_suffix};
use crate::analysis::TierMatch;

/// The nft transaction a node's agent would apply to go from the old ruleset to the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTransaction {
    /// The node.
    pub node: String,
    /// The transaction as `nft -f` text (empty: nothing to apply).
    pub text: String,
}

/// Rows a markdown table shows before the rest is folded under "and N more".
pub const MARKDOWN_ROWS: usize = 50;

const KINDS: [(ChangeKind, &str); 3] = [
    (ChangeKind::Added, "added"),
    (ChangeKind::Removed, "removed"),
    (ChangeKind::Changed, "changed"),
];

/// `shop/allow-web, [Admin] deny-metadata (priority 5) egress[0] Deny, workload
/// shop/web[Deployment], node node-1`: what causes a change.
fn causes(change: &Change) -> String {
    let mut parts: Vec<String> = change.policies.iter().map(ToString::to_string).collect();
    parts.extend(change.cluster_rules.iter().map(TierMatch::cause));
    parts.extend(change.workloads.iter().map(|w| format!("workload {w}")));
    parts.extend(change.nodes.iter().map(|n| format!("node {n}")));
    parts.join(", ")
}

/// One line per change (`added: a => b : TCP 80 (by shop/allow-web)`, `changed: a => b : TCP 80
/// -> TCP 80,443 (by ...)`), then the workloads added and removed, then the transaction.
pub fn to_text(diff: &Diff, transaction: Option<&NodeTransaction>) -> String {
    let mut out = String::new();
    for (kind, word) in KINDS {
        for c in diff.of_kind(kind) {
            let sets = match kind {
                ChangeKind::Added => allowed_text(&c.after()),
                ChangeKind::Removed => allowed_text(&c.before()),
                ChangeKind::Changed => {
                    format!("{} -> {}{}", c.before, c.after, family_suffix(c.family))
                }
            };
            let by = causes(c);
            let by = if by.is_empty() {
                String::new()
            } else {
                format!(" (by {by})")
            };
            out.push_str(&format!("{word}: {} => {} : {sets}{by}\n", c.from, c.to));
        }
    }
    for w in &diff.workloads_added {
        out.push_str(&format!("workload added: {w}\n"));
    }
    for w in &diff.workloads_removed {
        out.push_str(&format!("workload removed: {w}\n"));
    }
    if out.is_empty() {
        out.push_str("no connectivity changes\n");
    }
    if let Some(t) = transaction {
        if t.text.is_empty() {
            out.push_str(&format!(
                "\nnft transaction on node {}: none (the ruleset is the same)\n",
                t.node
            ));
        } else {
            out.push_str(&format!(
                "\nnft transaction on node {}:\n{}",
                t.node, t.text
            ));
        }
    }
    out
}

/// Rows of a table, the first [`MARKDOWN_ROWS`] shown and the rest folded under "and N more".
fn table(header: &str, rows: &[String]) -> String {
    let mut out = format!("{header}\n");
    let shown = rows.len().min(MARKDOWN_ROWS);
    for row in &rows[..shown] {
        out.push_str(row);
        out.push('\n');
    }
    if rows.len() > shown {
        out.push_str(&format!(
            "\n<details><summary>and {} more</summary>\n\n{header}\n",
            rows.len() - shown
        ));
        for row in &rows[shown..] {
            out.push_str(row);
            out.push('\n');
        }
        out.push_str("\n</details>\n");
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A pull-request comment: the counts first, then a table per kind of change (long ones folded),
/// the workloads added and removed, and the transaction in a folded code block.
pub fn to_markdown(diff: &Diff, transaction: Option<&NodeTransaction>) -> String {
    let mut out = String::from("### Connectivity changes\n\n");
    if diff.is_empty() {
        out.push_str("No change in who can reach whom.\n");
    } else {
        out.push_str(&format!(
            "**{} added, {} removed, {} changed**; workloads: {} added, {} removed.\n",
            plural(diff.added.len(), "connection", "connections"),
            diff.removed.len(),
            diff.changed.len(),
            diff.workloads_added.len(),
            diff.workloads_removed.len(),
        ));
    }
    for (kind, word) in KINDS {
        let changes = diff.of_kind(kind);
        if changes.is_empty() {
            continue;
        }
        let (header, rows): (&str, Vec<String>) = match kind {
            ChangeKind::Changed => (
                "| from | to | before | after | by |\n|---|---|---|---|---|",
                changes
                    .iter()
                    .map(|c| {
                        format!(
                            "| {} | {} | {} | {} | {} |",
                            c.from,
                            c.to,
                            allowed_text(&c.before()),
                            allowed_text(&c.after()),
                            causes(c)
                        )
                    })
                    .collect(),
            ),
            _ => (
                "| from | to | allowed | by |\n|---|---|---|---|",
                changes
                    .iter()
                    .map(|c| {
                        let conn = if kind == ChangeKind::Added {
                            c.after()
                        } else {
                            c.before()
                        };
                        format!(
                            "| {} | {} | {} | {} |",
                            c.from,
                            c.to,
                            allowed_text(&conn),
                            causes(c)
                        )
                    })
                    .collect(),
            ),
        };
        let title = format!("{}{}", word[..1].to_uppercase(), &word[1..]);
        out.push_str(&format!("\n#### {title} ({})\n\n", changes.len()));
        out.push_str(&table(header, &rows));
    }
    for (title, workloads) in [
        ("Workloads added", &diff.workloads_added),
        ("Workloads removed", &diff.workloads_removed),
    ] {
        if workloads.is_empty() {
            continue;
        }
        let rows: Vec<String> = workloads.iter().map(|w| format!("| {w} |")).collect();
        out.push_str(&format!("\n#### {title} ({})\n\n", workloads.len()));
        out.push_str(&table("| workload |\n|---|", &rows));
    }
    if let Some(t) = transaction {
        if t.text.is_empty() {
            out.push_str(&format!(
                "\nThe nft ruleset of node `{}` is the same.\n",
                t.node
            ));
        } else {
            out.push_str(&format!(
                "\n<details><summary>nft transaction on node <code>{}</code></summary>\n\n```\n{}```\n\n</details>\n",
                t.node, t.text
            ));
        }
    }
    out
}

/// A change as JSON: the connection as `connections -o json` writes it (the current one for an
/// added pair, the former one for a removed pair; `before` and `after` for a changed pair), with
/// `"policies"`, `"cluster_rules"` when changed ClusterNetworkPolicies decide it (see
/// [`TierMatch::to_json`]), and, when an end changed, `"workloads"` or `"nodes"`.
fn change_json(change: &Change) -> Value {
    let mut v = match change.kind() {
        ChangeKind::Added => connection_json(&change.after()),
        ChangeKind::Removed => connection_json(&change.before()),
        ChangeKind::Changed => {
            let mut v = json!({
                "from": change.from.to_string(),
                "to": change.to.to_string(),
                "before": connection_json(&change.before()),
                "after": connection_json(&change.after()),
            });
            if let Some(f) = change.family {
                v["family"] = json!(format!("IPv{}", f.number()));
            }
            v
        }
    };
    let policies: Vec<String> = change.policies.iter().map(ToString::to_string).collect();
    v["policies"] = json!(policies);
    if !change.cluster_rules.is_empty() {
        let rules: Vec<Value> = change
            .cluster_rules
            .iter()
            .map(TierMatch::to_json)
            .collect();
        v["cluster_rules"] = json!(rules);
    }
    if !change.workloads.is_empty() {
        let workloads: Vec<String> = change.workloads.iter().map(ToString::to_string).collect();
        v["workloads"] = json!(workloads);
    }
    if !change.nodes.is_empty() {
        v["nodes"] = json!(change.nodes);
    }
    v
}

/// `{"added": [...], "removed": [...], "changed": [...], "workloads_added": [...],
/// "workloads_removed": [...]}`, with `"transaction"` when one is given.
pub fn to_json(diff: &Diff, transaction: Option<&NodeTransaction>) -> Value {
    let list = |changes: &[Change]| -> Vec<Value> { changes.iter().map(change_json).collect() };
    let names = |ws: &[crate::model::WorkloadRef]| -> Vec<String> {
        ws.iter().map(ToString::to_string).collect()
    };
    let mut v = json!({
        "added": list(&diff.added),
        "removed": list(&diff.removed),
        "changed": list(&diff.changed),
        "workloads_added": names(&diff.workloads_added),
        "workloads_removed": names(&diff.workloads_removed),
    });
    if let Some(t) = transaction {
        v["transaction"] = json!(t.text);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::connectivity::{ConnSet, Party, PortRanges};
    use crate::model::{ObjectRef, Protocol, WorkloadRef};

    fn added(i: usize) -> Change {
        Change {
            from: Party::Workload(WorkloadRef::new("a", format!("w{i:02}"), "Deployment")),
            to: Party::Workload(WorkloadRef::new("b", "db", "StatefulSet")),
            family: None,
            before: ConnSet::none(),
            after: ConnSet::ports(Protocol::Tcp, PortRanges::range(5432, 5432)),
            policies: vec![ObjectRef::new("b", "db")],
            cluster_rules: vec![],
            workloads: vec![],
            nodes: vec![],
        }
    }

    #[test]
    fn long_markdown_tables_fold_the_rest() {
        let diff = Diff {
            added: (0..MARKDOWN_ROWS + 3).map(added).collect(),
            ..Diff::default()
        };
        let md = to_markdown(&diff, None);
        let row =
            |i: usize| format!("| a/w{i:02}[Deployment] | b/db[StatefulSet] | TCP 5432 | b/db |");
        let expected = format!(
            "### Connectivity changes\n\n\
             **53 connections added, 0 removed, 0 changed**; workloads: 0 added, 0 removed.\n\n\
             #### Added (53)\n\n\
             | from | to | allowed | by |\n|---|---|---|---|\n\
             {}\n\n\
             <details><summary>and 3 more</summary>\n\n\
             | from | to | allowed | by |\n|---|---|---|---|\n\
             {}\n\n\
             </details>\n",
            (0..50).map(row).collect::<Vec<_>>().join("\n"),
            (50..53).map(row).collect::<Vec<_>>().join("\n"),
        );
        assert_eq!(md, expected);
    }

    #[test]
    fn an_empty_diff_says_so_and_still_shows_the_transaction() {
        let diff = Diff::default();
        let none = NodeTransaction {
            node: "n1".into(),
            text: String::new(),
        };
        assert_eq!(
            to_text(&diff, Some(&none)),
            "no connectivity changes\n\nnft transaction on node n1: none (the ruleset is the same)\n"
        );
        assert_eq!(
            to_markdown(&diff, Some(&none)),
            "### Connectivity changes\n\nNo change in who can reach whom.\n\n\
             The nft ruleset of node `n1` is the same.\n"
        );
        let some = NodeTransaction {
            node: "n1".into(),
            text: "flush chain inet nftpolicy x\n".into(),
        };
        assert_eq!(
            to_markdown(&diff, Some(&some)),
            "### Connectivity changes\n\nNo change in who can reach whom.\n\n\
             <details><summary>nft transaction on node <code>n1</code></summary>\n\n\
             ```\nflush chain inet nftpolicy x\n```\n\n</details>\n"
        );
        assert_eq!(
            to_json(&diff, Some(&some)),
            json!({"added": [], "removed": [], "changed": [], "workloads_added": [],
                   "workloads_removed": [], "transaction": "flush chain inet nftpolicy x\n"})
        );
    }
}
