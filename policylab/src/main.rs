//! `policylab`: a simulated cluster of network namespaces on one Linux machine, enforcing the compiled
//! rulesets with real nftables and measuring connectivity with real packets.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use policy_compiler::analysis::{
    declared_ports, evaluate, explain_text, write_grid, Endpoint, PortProto,
};
use policy_compiler::cidr::Family;
use policy_compiler::cnp_conformance::Suite as CnpSuite;
use policy_compiler::conformance::Suite;
use policy_compiler::input::{parse_sources, read_paths};
use policylab::lab::{clean_leftovers, preflight};
use policylab::lab_run::{
    run_case, run_cnp_case, schedule, CnpCaseOutcome, LabCluster, Measurement, Via,
};
use policylab::services::input_services;

/// Build a cluster of network namespaces from manifests, enforce nftpolicy's rulesets on it with the
/// real kernel, and measure connectivity with real packets. Needs root, `ip` and `nft`.
#[derive(Parser, Debug)]
#[command(name = "policylab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the lab, enforce, probe every ordered pod pair on every port, print the measured matrix,
    /// tear down.
    Run {
        /// Manifest files, directories, or `-` (Namespaces, Pods, NetworkPolicies, Services).
        #[arg(required = true)]
        paths: Vec<String>,
        /// Nodes to spread unscheduled pods over.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Ports to probe, e.g. `80/TCP,53/UDP` (default: every port a pod declares).
        #[arg(long, value_delimiter = ',')]
        ports: Vec<PortProto>,
        /// Probe pod IPs directly, or through each pod's ClusterIP Service (DNAT on the node).
        #[arg(long, value_enum, default_value_t = ViaArg::Service)]
        via: ViaArg,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Compare with the evaluator; print each mismatch with its explanation; exit 1 if any.
        #[arg(long)]
        check: bool,
        /// Probe timeout in milliseconds (a drop shows as a timeout).
        #[arg(long, default_value_t = 250)]
        timeout_ms: u64,
    },
    /// Run a conformance suite's cases, each on its own lab: the upstream NetworkPolicy e2e suite
    /// (fixtures/upstream-e2e) or the network-policy-api ClusterNetworkPolicy suite
    /// (fixtures/network-policy-api).
    Conformance {
        /// The suite directory (model.yaml and cases/).
        dir: PathBuf,
        /// Which suite the directory holds; `auto` tells them apart by their case files.
        #[arg(long, value_enum, default_value_t = SuiteArg::Auto)]
        suite: SuiteArg,
        /// Run only the cases whose file name contains this.
        #[arg(long)]
        case: Option<String>,
        /// Probe timeout in milliseconds.
        #[arg(long, default_value_t = 250)]
        timeout_ms: u64,
    },
    /// Remove network namespaces left by earlier runs whose process is gone.
    Clean,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SuiteArg {
    /// The suite whose case format the first case file has.
    Auto,
    /// The upstream Kubernetes NetworkPolicy e2e suite.
    UpstreamE2e,
    /// The network-policy-api ClusterNetworkPolicy suite.
    NetworkPolicyApi,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ViaArg {
    Pod,
    Service,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Clean => clean(),
        Command::Run {
            paths,
            nodes,
            ports,
            via,
            output,
            check,
            timeout_ms,
        } => run(
            &paths,
            nodes,
            ports,
            via,
            output,
            check,
            Duration::from_millis(timeout_ms),
        ),
        Command::Conformance {
            dir,
            suite,
            case,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            match detect_suite(&dir, suite) {
                Ok(SuiteArg::NetworkPolicyApi) => cnp_conformance(&dir, case.as_deref(), timeout),
                Ok(_) => conformance(&dir, case.as_deref(), timeout),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("policylab: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn clean() -> Result<ExitCode> {
    preflight()?;
    let removed = clean_leftovers()?;
    for name in &removed {
        println!("removed {name}");
    }
    eprintln!("policylab: removed {} leftover namespace(s)", removed.len());
    Ok(ExitCode::SUCCESS)
}

fn flow_json(m: &Measurement, dual_stack: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "from": m.from.to_string(),
        "to": m.to.to_string(),
        "port": m.port.port,
        "protocol": m.port.protocol.as_api(),
        "allowed": m.allowed,
    });
    if dual_stack {
        v["family"] = serde_json::json!(m.family.number());
    }
    v
}

#[allow(clippy::too_many_arguments)]
fn run(
    paths: &[String],
    nodes: usize,
    ports: Vec<PortProto>,
    via: ViaArg,
    output: Format,
    check: bool,
    timeout: Duration,
) -> Result<ExitCode> {
    preflight()?;
    let sources = read_paths(paths).map_err(|e| anyhow::anyhow!("{e}"))?;
    let manifests = parse_sources(&sources).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cluster = schedule(&manifests.cluster, nodes);
    let services = input_services(&cluster, &manifests.other_objects)?;
    let ports = if ports.is_empty() {
        declared_ports(&cluster)
    } else {
        ports
    };
    if ports.is_empty() {
        bail!("no pod declares a container port: pass --ports, e.g. --ports 80/TCP");
    }
    let via = match via {
        ViaArg::Pod => Via::Pod,
        ViaArg::Service => Via::Service,
    };
    let started = Instant::now();
    let mut lab = LabCluster::build(cluster, services, &ports).context("building the lab")?;
    let built = started.elapsed();
    lab.enforce().context("enforcing the rulesets")?;
    let (measured, skipped) = lab.measure(&[], &ports, via, timeout)?;
    let probed = started.elapsed();
    let cluster = lab.cluster().clone();
    lab.teardown()?;
    eprintln!(
        "policylab: built in {} ms, enforced and probed {} flows in {} ms",
        built.as_millis(),
        measured.len(),
        (probed - built).as_millis()
    );
    for port in &skipped {
        eprintln!("policylab: skipped {port}: this kernel has no SCTP");
    }
    let dual_stack = cluster.families().len() > 1;
    let pods: Vec<String> = cluster
        .participating_pods()
        .map(|p| p.id.to_string())
        .collect();
    match output {
        Format::Json => {
            let v = serde_json::json!({
                "pods": pods,
                "ports": ports.iter().filter(|p| !skipped.contains(p)).map(|p| p.to_string()).collect::<Vec<_>>(),
                "via": via.as_str(),
                "flows": measured.iter().map(|m| flow_json(m, dual_stack)).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => print!("{}", table(&pods, &measured)),
    }
    if !check {
        return Ok(ExitCode::SUCCESS);
    }
    let mismatches: Vec<&Measurement> = measured
        .iter()
        .filter(|m| m.allowed != m.predicted)
        .collect();
    for m in &mismatches {
        let (Some(a), Some(b)) = (cluster.pod(&m.from), cluster.pod(&m.to)) else {
            continue;
        };
        let (Some(ia), Some(ib)) = (a.ip(m.family), b.ip(m.family)) else {
            continue;
        };
        let verdict = evaluate(
            &cluster,
            Endpoint::pod(a, ia),
            Endpoint::pod(b, ib),
            m.port.protocol,
            m.port.port,
        );
        eprintln!(
            "MISMATCH: packets {} but the evaluator predicts:\n{}",
            if m.allowed { "passed" } else { "were dropped" },
            explain_text(&verdict)
        );
    }
    eprintln!(
        "policylab: {} of {} flows as predicted",
        measured.len() - mismatches.len(),
        measured.len()
    );
    Ok(if mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The measured grid per port and family, numbered like `policyc matrix`; `!` marks a cell that
/// differs from the evaluator's prediction.
/// Measured cells of one grid by `(from, to)`.
type Cells<'a> = HashMap<(String, String), &'a Measurement>;

fn table(pods: &[String], measured: &[Measurement]) -> String {
    let mut out = String::new();
    let mut grids: Vec<((PortProto, Family), Cells<'_>)> = Vec::new();
    for m in measured {
        let key = (m.port, m.family);
        if grids.last().is_none_or(|(k, _)| *k != key) {
            grids.push((key, HashMap::new()));
        }
        if let Some((_, cells)) = grids.last_mut() {
            cells.insert((m.from.to_string(), m.to.to_string()), m);
        }
    }
    for ((port, family), cells) in grids {
        let title = format!(
            "{port} IPv{} measured: rows from, columns to; . passed, X dropped, ! differs from prediction, - no common family",
            family.number()
        );
        write_grid(&mut out, &title, pods, |from, to| {
            cells
                .get(&(from.to_string(), to.to_string()))
                .map(|m| match (m.allowed, m.predicted) {
                    (a, p) if a != p => "!",
                    (true, _) => ".",
                    (false, _) => "X",
                })
        });
    }
    out
}

/// The suite `dir` holds: `suite`, or with `auto` the one whose case format its first case file
/// (in name order) has.
fn detect_suite(dir: &Path, suite: SuiteArg) -> Result<SuiteArg> {
    if suite != SuiteArg::Auto {
        return Ok(suite);
    }
    let cases = dir.join("cases");
    let sources = read_paths(&[cases.display().to_string()]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(first) = sources.first() else {
        bail!("{}: no case file", cases.display());
    };
    let cnp = policy_compiler::cnp_conformance::parse_case(first);
    let e2e = policy_compiler::conformance::parse_case(first);
    match (cnp, e2e) {
        (Ok(_), _) => Ok(SuiteArg::NetworkPolicyApi),
        (_, Ok(_)) => Ok(SuiteArg::UpstreamE2e),
        (Err(cnp), Err(e2e)) => bail!(
            "{} has neither case format; as a network-policy-api case: {cnp}; as an upstream e2e \
             case: {e2e}; pass --suite to choose",
            first.name
        ),
    }
}

fn conformance(dir: &Path, only: Option<&str>, timeout: Duration) -> Result<ExitCode> {
    preflight()?;
    let suite = Suite::read(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let (mut passed, mut failed, mut skipped) = (0, 0, Vec::new());
    println!(
        "{:<6} {:<60} {:>5} {:>6} {:>8}",
        "RESULT", "CASE", "STEPS", "CELLS", "TIME"
    );
    for case in &suite.cases {
        if only.is_some_and(|o| !case.file.contains(o) && case.name != o) {
            continue;
        }
        if case.context == "SCTP" {
            println!("{:<6} {:<60}   this kernel has no SCTP", "SKIP", case.name);
            skipped.push(case.name.clone());
            continue;
        }
        let t = Instant::now();
        let outcome =
            run_case(&suite.model, case, timeout).with_context(|| format!("case {}", case.name))?;
        let ok = outcome.mismatches.is_empty();
        println!(
            "{:<6} {:<60} {:>5} {:>6} {:>7.2}s",
            if ok { "PASS" } else { "FAIL" },
            case.name,
            outcome.steps,
            outcome.cells,
            t.elapsed().as_secs_f64()
        );
        for m in &outcome.mismatches {
            println!("         {m}");
        }
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!(
        "conformance: {passed} passed, {failed} failed, {} skipped ({}) in {:.1}s",
        skipped.len(),
        skipped.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The network-policy-api suite on the lab: per case its steps, the probes sent as packets per
/// family (and how many of them went to the source's own node), the SCTP probes only evaluated,
/// and the time; then the totals.
fn cnp_conformance(dir: &Path, only: Option<&str>, timeout: Duration) -> Result<ExitCode> {
    preflight()?;
    let suite = CnpSuite::read(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let mut total = CnpCaseOutcome::default();
    let (mut cases, mut failed, mut evaluated_only) = (0, 0, Vec::new());
    println!(
        "{:<6} {:<36} {:>5} {:>5} {:>5} {:>8} {:>5} {:>8}",
        "RESULT", "CASE", "STEPS", "IPV4", "IPV6", "OWN-NODE", "SCTP", "TIME"
    );
    for case in &suite.cases {
        if only.is_some_and(|o| !case.file.contains(o) && case.name != o) {
            continue;
        }
        let t = Instant::now();
        let outcome = run_cnp_case(&suite.model, case, timeout)
            .with_context(|| format!("case {}", case.name))?;
        let ok = outcome.mismatches.is_empty();
        println!(
            "{:<6} {:<36} {:>5} {:>5} {:>5} {:>8} {:>5} {:>7.2}s",
            if ok { "PASS" } else { "FAIL" },
            case.name,
            outcome.steps,
            outcome.measured.get(&Family::V4).copied().unwrap_or(0),
            outcome.measured.get(&Family::V6).copied().unwrap_or(0),
            outcome.to_own_node,
            outcome.sctp_evaluated,
            t.elapsed().as_secs_f64()
        );
        for m in &outcome.mismatches {
            println!("         {m}");
        }
        cases += 1;
        failed += usize::from(!ok);
        if outcome.measured_total() == 0 {
            evaluated_only.push(case.name.clone());
        }
        total.steps += outcome.steps;
        for (family, n) in outcome.measured {
            *total.measured.entry(family).or_default() += n;
        }
        total.to_own_node += outcome.to_own_node;
        total.sctp_evaluated += outcome.sctp_evaluated;
        total.partial_applies += outcome.partial_applies;
    }
    println!(
        "conformance: {} of {cases} cases passed, {failed} failed; {} steps; {} probes measured \
         (IPv4 {}, IPv6 {}; {} to the source's own node), {} SCTP probes evaluated only; {} diff \
         transactions; in {:.1}s",
        cases - failed,
        total.steps,
        total.measured_total(),
        total.measured.get(&Family::V4).copied().unwrap_or(0),
        total.measured.get(&Family::V6).copied().unwrap_or(0),
        total.to_own_node,
        total.sctp_evaluated,
        total.partial_applies,
        started.elapsed().as_secs_f64()
    );
    if !evaluated_only.is_empty() {
        println!(
            "conformance: only SCTP probes, evaluated, none measured: {}",
            evaluated_only.join(", ")
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
