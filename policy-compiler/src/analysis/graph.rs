//! The connectivity graph (`policyc graph`, `policyc connections -o dot`): workloads, external
//! ranges and Kubernetes Nodes as nodes, workloads grouped by namespace, and an edge per allowed
//! connection labelled with what it allows; written as Graphviz DOT or as a Mermaid flowchart for
//! markdown comments.

use std::collections::{BTreeMap, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use super::connectivity::{Connection, Party};

/// A connectivity graph.
#[derive(Debug)]
pub struct Graph {
    graph: DiGraph<Party, String>,
}

impl Graph {
    /// The graph of some connections (their parties are the nodes).
    pub fn new<'a>(connections: impl IntoIterator<Item = Connection<'a>>) -> Self {
        let mut graph = DiGraph::new();
        let mut nodes: HashMap<Party, NodeIndex> = HashMap::new();
        let mut node = |graph: &mut DiGraph<Party, String>, p: &Party| {
            *nodes
                .entry(p.clone())
                .or_insert_with(|| graph.add_node(p.clone()))
        };
        for c in connections {
            let (a, b) = (node(&mut graph, c.from), node(&mut graph, c.to));
            let label = match c.family {
                Some(f) => format!("{} (IPv{})", c.allowed, f.number()),
                None => c.allowed.to_string(),
            };
            graph.add_edge(a, b, label);
        }
        Self { graph }
    }

    /// How many nodes.
    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// How many edges.
    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// Nodes grouped: by namespace for workloads, one group for external ranges and Nodes (`None`).
    fn groups(&self) -> BTreeMap<Option<String>, Vec<NodeIndex>> {
        let mut groups: BTreeMap<Option<String>, Vec<NodeIndex>> = BTreeMap::new();
        for i in self.graph.node_indices() {
            let group = match &self.graph[i] {
                Party::Workload(w) => Some(w.namespace.clone()),
                Party::External { .. } | Party::Node(_) => None,
            };
            groups.entry(group).or_default().push(i);
        }
        for nodes in groups.values_mut() {
            nodes.sort_by_key(|i| self.graph[*i].to_string());
        }
        groups
    }

    fn short_name(party: &Party) -> String {
        match party {
            Party::Workload(w) => format!("{}[{}]", w.name, w.kind),
            external => external.to_string(),
        }
    }
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz DOT: one cluster per namespace, external ranges apart.
pub fn to_dot(g: &Graph) -> String {
    let mut out =
        String::from("digraph connectivity {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for (group, nodes) in g.groups() {
        let indent = match &group {
            Some(ns) => {
                out.push_str(&format!(
                    "  subgraph {} {{\n    label={};\n    style=dashed;\n",
                    dot_quote(&format!("cluster_{ns}")),
                    dot_quote(ns)
                ));
                "    "
            }
            None => "  ",
        };
        for i in nodes {
            let party = &g.graph[i];
            let shape = match party {
                Party::External { .. } => ", shape=ellipse",
                Party::Node(_) => ", shape=box3d",
                Party::Workload(_) => "",
            };
            out.push_str(&format!(
                "{indent}{} [label={}{shape}];\n",
                dot_quote(&party.to_string()),
                dot_quote(&Graph::short_name(party))
            ));
        }
        if group.is_some() {
            out.push_str("  }\n");
        }
    }
    let mut edges: Vec<(String, String, &String)> = g
        .graph
        .edge_references()
        .map(|e| {
            (
                g.graph[e.source()].to_string(),
                g.graph[e.target()].to_string(),
                e.weight(),
            )
        })
        .collect();
    edges.sort();
    for (a, b, label) in edges {
        out.push_str(&format!(
            "  {} -> {} [label={}];\n",
            dot_quote(&a),
            dot_quote(&b),
            dot_quote(label)
        ));
    }
    out.push_str("}\n");
    out
}

fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// A Mermaid flowchart (renders in GitHub and GitLab markdown): one subgraph per namespace.
pub fn to_mermaid(g: &Graph) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut ids: HashMap<NodeIndex, String> = HashMap::new();
    let mut n = 0;
    for (group, nodes) in g.groups() {
        if let Some(ns) = &group {
            out.push_str(&format!("  subgraph ns_{n}[\"{}\"]\n", mermaid_text(ns)));
            n += 1;
        }
        for i in nodes {
            let id = format!("n{}", ids.len());
            let party = &g.graph[i];
            let (open, close) = match party {
                Party::External { .. } => ("([", "])"),
                Party::Node(_) => ("[[", "]]"),
                Party::Workload(_) => ("[", "]"),
            };
            out.push_str(&format!(
                "    {id}{open}\"{}\"{close}\n",
                mermaid_text(&Graph::short_name(party))
            ));
            ids.insert(i, id);
        }
        if group.is_some() {
            out.push_str("  end\n");
        }
    }
    let mut edges: Vec<(&String, &String, &String)> = g
        .graph
        .edge_references()
        .map(|e| (&ids[&e.source()], &ids[&e.target()], e.weight()))
        .collect();
    edges.sort();
    for (a, b, label) in edges {
        out.push_str(&format!("  {a} -->|\"{}\"| {b}\n", mermaid_text(label)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::connectivity::{ConnSet, PortRanges};
    use crate::model::{Protocol, WorkloadRef};

    #[test]
    fn namespaces_are_clusters_and_edges_carry_ports() {
        let web = Party::Workload(WorkloadRef::new("shop", "web", "Deployment"));
        let db = Party::Workload(WorkloadRef::new("data", "db", "StatefulSet"));
        let out = Party::External {
            first: "0.0.0.0".parse().expect("ip"),
            last: "9.255.255.255".parse().expect("ip"),
        };
        let tcp = ConnSet::ports(Protocol::Tcp, PortRanges::range(5432, 5432));
        let all = ConnSet::all();
        let g = Graph::new([
            Connection {
                from: &web,
                to: &db,
                family: None,
                allowed: &tcp,
            },
            Connection {
                from: &out,
                to: &web,
                family: None,
                allowed: &all,
            },
        ]);
        assert_eq!((g.node_count(), g.edge_count()), (3, 2));
        let dot = to_dot(&g);
        assert!(dot.contains("subgraph \"cluster_shop\""), "{dot}");
        assert!(
            dot.contains(
                "\"shop/web[Deployment]\" -> \"data/db[StatefulSet]\" [label=\"TCP 5432\"];"
            ),
            "{dot}"
        );
        assert!(
            dot.contains("[label=\"0.0.0.0-9.255.255.255\", shape=ellipse]"),
            "{dot}"
        );
        let mermaid = to_mermaid(&g);
        assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
        assert!(mermaid.contains("-->|\"TCP 5432\"|"), "{mermaid}");
        assert!(mermaid.contains("subgraph ns_1[\"shop\"]"), "{mermaid}");
    }
}
