//! The truth table of pod-to-pod connectivity.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use serde_json::json;

use super::{evaluate_with, Endpoint, EvalOptions};
use crate::cidr::Family;
use crate::cluster::ClusterState;
use crate::model::Protocol;

/// A destination port and protocol, printed `80/TCP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortProto {
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

impl std::fmt::Display for PortProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

impl std::str::FromStr for PortProto {
    type Err = String;

    /// Parses `80`, `80/TCP`, `53/udp`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{s:?}: the port must be a number 1-65535, as in 80/TCP"))?;
        let protocol = Protocol::from_api(&proto.to_ascii_uppercase())
            .ok_or_else(|| format!("{s:?}: the protocol must be TCP, UDP or SCTP"))?;
        Ok(Self { port, protocol })
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixFlow {
    /// Source pod, `ns/name`.
    pub from: String,
    /// Destination pod, `ns/name`.
    pub to: String,
    /// Port and protocol.
    pub port: PortProto,
    /// The family, when the cluster is dual-stack.
    pub family: Option<Family>,
    /// Whether a new connection is allowed.
    pub allowed: bool,
    /// What would deny it, when audit mode lets it through (`x/deny-all (audit)`), as its first
    /// packet meets them ([`super::ConnectionVerdict::would_deny`]).
    pub would_deny: Vec<String>,
}

impl MatrixFlow {
    /// Allowed, but only because audit mode lets it through.
    pub fn audited(&self) -> bool {
        self.allowed && !self.would_deny.is_empty()
    }
}

/// The truth table: every ordered pair of participating pods (a pod to itself included), every port,
/// and in a dual-stack cluster every family both pods have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    /// Pods, `ns/name`, sorted.
    pub pods: Vec<String>,
    /// Ports.
    pub ports: Vec<PortProto>,
    /// Cells, by port, family, source, destination.
    pub flows: Vec<MatrixFlow>,
    /// Whether the cluster has both families (flows then carry theirs).
    pub dual_stack: bool,
}

/// Writes one numbered grid: the title, a header of column numbers, then a row per pod (row `i` is the
/// source numbered `i`, column `j` the destination numbered `j`), each cell the mark `mark(from, to)`
/// gives, or `-` when it gives none.
pub fn write_grid(
    out: &mut String,
    title: &str,
    pods: &[String],
    mark: impl Fn(&str, &str) -> Option<&'static str>,
) {
    let num = pods.len().to_string().len();
    let name = pods.iter().map(String::len).max().unwrap_or(1);
    let _ = writeln!(out, "{title}");
    let _ = write!(out, "{:w$}", "", w = num + 1 + name);
    for j in 1..=pods.len() {
        let _ = write!(out, " {j:>num$}");
    }
    out.push('\n');
    for (i, from) in pods.iter().enumerate() {
        let _ = write!(out, "{:>num$} {from:name$}", i + 1);
        for to in pods {
            let m = mark(from, to).unwrap_or("-");
            let _ = write!(out, " {m:>num$}");
        }
        out.push('\n');
    }
    out.push('\n');
}

/// Every port and protocol any participating pod declares.
pub fn declared_ports(cluster: &ClusterState) -> Vec<PortProto> {
    let set: BTreeSet<PortProto> = cluster
        .participating_pods()
        .flat_map(|p| p.ports.iter())
        .map(|p| PortProto {
            port: p.port,
            protocol: p.protocol,
        })
        .collect();
    set.into_iter().collect()
}

impl Matrix {
    /// Evaluates the matrix for the given ports.
    pub fn evaluate(cluster: &ClusterState, ports: &[PortProto]) -> Self {
        Self::evaluate_with(cluster, ports, EvalOptions::default())
    }

    /// Evaluates the matrix for the given ports, with `options`.
    pub fn evaluate_with(
        cluster: &ClusterState,
        ports: &[PortProto],
        options: EvalOptions,
    ) -> Self {
        let pods: Vec<_> = cluster.participating_pods().collect();
        let families = cluster.families();
        let dual_stack = families.len() > 1;
        let mut flows = Vec::new();
        for port in ports {
            for family in &families {
                for from in &pods {
                    let Some(from_ip) = from.ip(*family) else {
                        continue;
                    };
                    for to in &pods {
                        let Some(to_ip) = to.ip(*family) else {
                            continue;
                        };
                        let verdict = evaluate_with(
                            cluster,
                            Endpoint::pod(from, from_ip),
                            Endpoint::pod(to, to_ip),
                            Some((port.protocol, port.port)),
                            options,
                        );
                        flows.push(MatrixFlow {
                            from: from.id.to_string(),
                            to: to.id.to_string(),
                            port: *port,
                            family: dual_stack.then_some(*family),
                            allowed: verdict.allowed(),
                            would_deny: verdict
                                .would_deny()
                                .iter()
                                .filter_map(|d| d.would_deny_text())
                                .collect(),
                        });
                    }
                }
            }
        }
        Self {
            pods: pods.iter().map(|p| p.id.to_string()).collect(),
            ports: ports.to_vec(),
            flows,
            dual_stack,
        }
    }

    /// Whether some cell is allowed only because audit mode lets it through.
    pub fn has_audited(&self) -> bool {
        self.flows.iter().any(MatrixFlow::audited)
    }

    /// The JSON form: `{"pods": [...], "ports": [...], "flows": [{from, to, port, protocol,
    /// allowed}]}`, a flow with would-denies also with `"wouldDeny": ["x/deny-all (audit)"]`.
    pub fn to_json(&self) -> serde_json::Value {
        let flows: Vec<serde_json::Value> = self
            .flows
            .iter()
            .map(|f| {
                let mut v = json!({
                    "from": f.from,
                    "to": f.to,
                    "port": f.port.port,
                    "protocol": f.port.protocol.as_api(),
                    "allowed": f.allowed,
                });
                if let Some(family) = f.family {
                    v["family"] = json!(family.number());
                }
                if !f.would_deny.is_empty() {
                    v["wouldDeny"] = json!(f.would_deny);
                }
                v
            })
            .collect();
        json!({
            "pods": self.pods,
            "ports": self.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "flows": flows,
        })
    }

    fn grids(&self) -> Vec<(String, Vec<&MatrixFlow>)> {
        let mut grids: Vec<(String, Vec<&MatrixFlow>)> = Vec::new();
        for f in &self.flows {
            let title = match f.family {
                Some(fam) => format!("{} IPv{}", f.port, fam.number()),
                None => f.port.to_string(),
            };
            match grids.last_mut() {
                Some((t, cells)) if *t == title => cells.push(f),
                _ => grids.push((title, vec![f])),
            }
        }
        grids
    }

    /// The cells of one grid by `(from, to)`, so that rendering a grid is linear in its cells.
    fn by_pair<'a>(cells: &[&'a MatrixFlow]) -> HashMap<(&'a str, &'a str), &'a MatrixFlow> {
        cells
            .iter()
            .map(|f| ((f.from.as_str(), f.to.as_str()), *f))
            .collect()
    }

    /// A plain-text grid per port: row `i` is the source pod numbered `i`, column `j` the destination
    /// numbered `j`; `.` allowed, `X` denied, `-` where the pair shares no address family, and, in
    /// a matrix with any, `A` allowed only because audit mode lets it through (it would be denied).
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let audit = if self.has_audited() {
            ", A allowed by audit mode only (it would be denied)"
        } else {
            ""
        };
        for (title, cells) in self.grids() {
            let cells = Self::by_pair(&cells);
            let title = format!(
                "{title}: rows from, columns to; . allowed{audit}, X denied, - no common address \
                 family"
            );
            write_grid(&mut out, &title, &self.pods, |from, to| {
                cells.get(&(from, to)).map(|f| {
                    if f.audited() {
                        "A"
                    } else if f.allowed {
                        "."
                    } else {
                        "X"
                    }
                })
            });
        }
        out
    }

    /// The same grids as Markdown tables: ✓ allowed, ✗ denied, and ⚠ allowed only because audit
    /// mode lets it through (said under each title of a matrix with any).
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let audit = self.has_audited();
        for (title, cells) in self.grids() {
            let cells = Self::by_pair(&cells);
            let _ = writeln!(out, "### {title}\n");
            if audit {
                let _ = writeln!(
                    out,
                    "✓ allowed, ⚠ allowed by audit mode only (it would be denied), ✗ denied\n"
                );
            }
            let _ = writeln!(out, "| from \\ to | {} |", self.pods.join(" | "));
            let _ = writeln!(out, "|---|{}", "---|".repeat(self.pods.len()));
            for from in &self.pods {
                let row: Vec<&str> = self
                    .pods
                    .iter()
                    .map(|to| match cells.get(&(from.as_str(), to.as_str())) {
                        Some(f) if f.audited() => "⚠",
                        Some(f) if f.allowed => "✓",
                        Some(_) => "✗",
                        None => "",
                    })
                    .collect();
                let _ = writeln!(out, "| {from} | {} |", row.join(" | "));
            }
            out.push('\n');
        }
        out
    }
}
