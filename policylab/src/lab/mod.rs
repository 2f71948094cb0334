//! The lab: a simulated cluster on one Linux box, built from network namespaces.
//!
//! - A **node** is a network namespace acting as a router (forwarding on, `rp_filter` off). It holds one
//!   veth per local pod and one veth (`fab0`) to the **fabric**, a namespace with a bridge that links all
//!   nodes. Each node routes every local pod address (`/32`, `/128`) to the pod's veth and every remote
//!   pod address to the remote node's fabric address, so cross-node pod traffic is routed with the
//!   original pod source address, never NATed.
//!   A node may also have **addresses of its own** (a Node's InternalIP and ExternalIP): they are on
//!   its `lo`, every other node routes them to its fabric address, and a node serves ports on them
//!   (the ports of the host-network pods it runs, which share its namespace). A pod reaching an
//!   address of its own node crosses that node's input hook, not forward, as in a cluster.
//! - A **pod** is a network namespace with `eth0`, its addresses as `/32` and `/128`, and default routes
//!   through link-local gateways on its node (`169.254.1.1`, `fe80::1`), with permanent neighbour
//!   entries so that no probe waits for ARP or neighbour discovery.
//! - **Services** are DNATed in every node, as kube-proxy does, by `table ip policylab_nat` and
//!   `table ip6 policylab_nat` (prerouting, priority `dstnat`). A filter on the forward hook of a node
//!   (such as `table inet nftpolicy`) therefore sees the backend pod address and target port.
//! - Each pod **serves** its TCP ports (accepting and closing connections) and UDP ports (echoing each
//!   datagram), and each node its ports on each of its own addresses; **probes** run in parallel from
//!   threads that enter the source pod's namespace, and tell a connection made from a timeout (a drop)
//!   and from a refusal or an ICMP error ([`ProbeOutcome`]).
//!
//! Every namespace of a lab is named `nplab<pid>x<counter>-...` ([`Lab::prefix`]) and is removed by
//! [`Lab::teardown`], by `Drop` (panics included) and on Ctrl-C/SIGTERM/SIGHUP. [`clean_leftovers`]
//! removes those of processes that died without cleaning up (`kill -9`).
//!
//! Everything here needs root; [`preflight`] says what is missing.

mod cmd;
pub mod netns;
mod probe;
mod render;
mod server;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

pub use netns::Netns;
pub use policy_compiler::model::Protocol;

use render::Layout;

/// The start of every network namespace name the lab creates; the full prefix of a run is
/// `nplab<pid>x<counter>-`.
pub const NETNS_PREFIX: &str = "nplab";

/// The most probes [`Lab::probe_all`] runs at once.
pub const MAX_PARALLEL_PROBES: usize = 64;

/// What a lab is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabSpec {
    /// The nodes (each becomes a namespace acting as a router). A name converts into a node without
    /// addresses: `vec!["node-1".into()]`.
    pub nodes: Vec<NodeSpec>,
    /// The pods, each on one of `nodes`.
    pub pods: Vec<PodSpec>,
    /// The Services DNATed on every node.
    pub services: Vec<ServiceSpec>,
}

/// A node of the lab.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSpec {
    /// Its name (any string).
    pub name: String,
    /// Addresses of the node itself, any number per family (a Node's InternalIPs and ExternalIPs):
    /// on the node's `lo`, routed to it by every other node. Unique in the lab.
    pub ips: Vec<IpAddr>,
    /// The ports the node serves on each of its addresses, as a pod serves its own (host-network
    /// pods' ports): TCP accepts and closes connections, UDP echoes datagrams from the address they
    /// were sent to. SCTP ports are not served.
    pub ports: Vec<(u16, Protocol)>,
}

impl From<&str> for NodeSpec {
    fn from(name: &str) -> Self {
        NodeSpec {
            name: name.to_string(),
            ..NodeSpec::default()
        }
    }
}

/// A pod of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// `namespace/name`; probes name their source pod by it.
    pub id: String,
    /// The node the pod runs on (one of [`LabSpec::nodes`]).
    pub node: String,
    /// The pod's addresses: one per family, IPv4 and/or IPv6. Unique in the lab.
    pub ips: Vec<IpAddr>,
    /// The ports the pod serves: TCP accepts and closes connections, UDP echoes datagrams. SCTP ports
    /// are not served (the lab's kernels have no SCTP sockets) but may still appear.
    pub ports: Vec<(u16, Protocol)>,
}

/// A Service, DNATed from its cluster IPs to its backends on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// A name for comments and logs (`namespace/name`, say).
    pub name: String,
    /// The cluster IPs (at most one per family in Kubernetes; any number is accepted).
    pub cluster_ips: Vec<IpAddr>,
    /// The service ports.
    pub ports: Vec<ServicePort>,
}

/// One port of a [`ServiceSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The service port (on the cluster IPs).
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// `(pod IP, target port)` of each endpoint. Each cluster IP is DNATed to the backends of its own
    /// family, picked at random when there are several; a cluster IP with no backend of its family is
    /// not DNATed (probes to it fail as unreachable).
    pub backends: Vec<(IpAddr, u16)>,
}

/// One connection attempt for [`Lab::probe_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The source pod (`namespace/name`, a [`PodSpec::id`]).
    pub from: String,
    /// The destination address: a pod IP, a cluster IP, a node's address, or any other address.
    pub to: IpAddr,
    /// The destination port.
    pub port: u16,
    /// The protocol: TCP (connect) or UDP (datagram and echo). SCTP is [`LabError::Unsupported`].
    pub protocol: Protocol,
}

/// What a probe's packets met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeOutcome {
    /// The TCP handshake completed, or the UDP echo came back.
    Reached,
    /// No answer within the timeout: the packets were dropped (or the answer was).
    TimedOut,
    /// Refused: a TCP reset, or an ICMP port unreachable (no listener, or a `reject`).
    Refused,
    /// Unreachable: an ICMP host, network or administratively-prohibited error, no route, or a local
    /// filter refusing to send.
    Unreachable,
}

impl ProbeOutcome {
    /// Whether the connection was made.
    pub fn reached(self) -> bool {
        self == ProbeOutcome::Reached
    }

    /// `reached`, `timed out`, `refused` or `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeOutcome::Reached => "reached",
            ProbeOutcome::TimedOut => "timed out",
            ProbeOutcome::Refused => "refused",
            ProbeOutcome::Unreachable => "unreachable",
        }
    }
}

impl std::fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of the lab. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The process is not root.
    #[error(
        "the lab creates network namespaces and needs root: run it as root (sudo), or skip the lab"
    )]
    NotRoot,
    /// A program the lab runs is not on `PATH`.
    #[error("`{tool}` is not on PATH; {hint}")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// How to get it.
        hint: &'static str,
    },
    /// The [`LabSpec`] or [`ServiceSpec`]s are inconsistent.
    #[error("invalid lab spec: {0}; fix the spec")]
    InvalidSpec(String),
    /// `ip` or `nft` failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line (and the namespace it ran in).
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error, with the failing input line when known.
        stderr: String,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and what to check.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A probe names a pod the lab does not have.
    #[error(
        "unknown pod `{0}`: a probe's `from` must be the id (namespace/name) of a pod of the lab"
    )]
    UnknownPod(String),
    /// A probe's source pod has no address of the destination's family.
    #[error(
        "pod `{pod}` has no IPv{family} address, so it cannot probe {to}; probe an address of a family \
         the pod has"
    )]
    NoAddress {
        /// The source pod.
        pod: String,
        /// 4 or 6.
        family: u8,
        /// The destination.
        to: IpAddr,
    },
    /// The lab cannot do this on this kernel (SCTP probes).
    #[error("{0}")]
    Unsupported(String),
    /// Entering a network namespace failed.
    #[error(
        "cannot enter network namespace {netns}: {source}; was it deleted behind the lab's back \
         (`ip netns del`, another run's clean-up)?"
    )]
    Setns {
        /// The namespace name.
        netns: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A lab thread panicked (a bug in the lab).
    #[error("internal error in the lab: {0}; please report it")]
    Internal(String),
}

impl LabError {
    fn io(context: impl Into<String>, source: std::io::Error) -> LabError {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Prefixes of the labs alive in this process, for the signal handler and [`teardown_all_labs`].
static LIVE_LABS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Makes prefixes unique within the process.
static LAB_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Installs the Ctrl-C handler once.
static SIGNAL_HANDLER: Once = Once::new();

fn live_labs() -> std::sync::MutexGuard<'static, Vec<String>> {
    LIVE_LABS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pod as built: its namespace (open, for `setns`) and addresses.
#[derive(Debug)]
struct PodHandle {
    netns: String,
    file: File,
    ips: Vec<IpAddr>,
}

/// A running lab. Tear it down with [`Lab::teardown`]; dropping it does the same and logs errors.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    layout: Layout,
    /// Node name → its open namespace.
    node_files: BTreeMap<String, File>,
    pods: HashMap<String, PodHandle>,
    servers: Option<server::Servers>,
    source_ports: probe::SourcePorts,
    live: bool,
}

impl Lab {
    /// Builds the lab: namespaces, links, addresses, routes, DNAT for `spec.services`, and the pods'
    /// servers. On failure, everything created so far is removed.
    pub fn create(spec: &LabSpec) -> Result<Lab, LabError> {
        preflight()?;
        render::validate(spec)?;
        let prefix = format!(
            "{NETNS_PREFIX}{}x{}-",
            std::process::id(),
            LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let layout = Layout::new(&prefix, spec);
        render::validate_services(&layout.own_ips(), &spec.services)?;
        install_signal_handler();
        // Registered before anything exists, so that a signal during creation still cleans up.
        live_labs().push(prefix.clone());
        let mut lab = Lab {
            prefix,
            layout,
            node_files: BTreeMap::new(),
            pods: HashMap::new(),
            servers: None,
            source_ports: probe::SourcePorts::new(
                spec.pods
                    .iter()
                    .flat_map(|p| p.ports.iter().map(|(port, _)| *port))
                    .collect(),
            ),
            live: true,
        };
        // On error, `lab` is dropped here, which removes whatever was made.
        lab.build(spec)?;
        Ok(lab)
    }

    fn build(&mut self, spec: &LabSpec) -> Result<(), LabError> {
        let start = Instant::now();
        let layout = &self.layout;
        let all_netns: Vec<&str> = std::iter::once(layout.fabric.as_str())
            .chain(layout.nodes.iter().map(|n| n.netns.as_str()))
            .chain(layout.pods.iter().map(|p| p.netns.as_str()))
            .collect();
        cmd::add_netns(&all_netns)?;
        let t_netns = start.elapsed();

        let fabric = netns::open(&layout.fabric)?;
        let mut node_files = Vec::new();
        for node in &layout.nodes {
            node_files.push(netns::open(&node.netns)?);
        }
        let mut pod_files = Vec::new();
        for pod in &layout.pods {
            pod_files.push(netns::open(&pod.netns)?);
        }

        // Sysctls first: links created afterwards inherit `default` (accept_dad, rp_filter).
        let mut sysctls: Vec<netns::SysctlJob<'_>> =
            vec![(&fabric, layout.fabric.as_str(), render::FABRIC_SYSCTLS)];
        for (node, file) in layout.nodes.iter().zip(&node_files) {
            sysctls.push((file, node.netns.as_str(), render::NODE_SYSCTLS));
        }
        for (pod, file) in layout.pods.iter().zip(&pod_files) {
            sysctls.push((file, pod.netns.as_str(), render::POD_SYSCTLS));
        }
        netns::write_sysctls(&sysctls)?;
        let t_sysctl = start.elapsed();

        // The fabric and the pods create their veths (peers straight into the node namespaces) ...
        let mut jobs: Vec<(String, String)> = vec![(layout.fabric.clone(), layout.fabric_script())];
        for (j, pod) in layout.pods.iter().enumerate() {
            jobs.push((pod.netns.clone(), layout.pod_script(j)));
        }
        parallel(&jobs, |(ns, script)| cmd::ip_batch(Some(ns), script))?;
        // ... then each node configures them and its routes, and loads the DNAT tables.
        let nat = render::nat_ruleset(&spec.services);
        let node_jobs: Vec<(usize, &File)> = node_files.iter().enumerate().collect();
        parallel(&node_jobs, |&(i, file)| {
            let ns = &layout.nodes[i].netns;
            cmd::ip_batch(Some(ns), &layout.node_script(i))?;
            netns::run_in(file, ns, || cmd::nft(ns, &nat))?
        })?;
        let t_links = start.elapsed();
        #[cfg(test)]
        if tests::FAIL_BUILD.with(|f| f.get()) {
            return Err(LabError::Internal(format!(
                "injected failure in {} ",
                self.prefix
            )));
        }

        let served: Vec<server::ToServe<'_>> = layout
            .pods
            .iter()
            .zip(&pod_files)
            .map(|(p, f)| {
                let binds = server::pod_binds(&p.ips);
                (p.netns.as_str(), f, binds, p.ports.as_slice())
            })
            .chain(layout.nodes.iter().zip(&node_files).map(|(n, f)| {
                let binds = server::node_binds(&n.ips);
                (n.netns.as_str(), f, binds, n.ports.as_slice())
            }))
            .collect();
        self.servers = Some(server::Servers::start(&self.prefix, &served)?);
        let t_servers = start.elapsed();

        self.node_files = layout
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .zip(node_files)
            .collect();
        self.pods = layout
            .pods
            .iter()
            .zip(pod_files)
            .map(|(p, file)| {
                (
                    p.id.clone(),
                    PodHandle {
                        netns: p.netns.clone(),
                        file,
                        ips: p.ips.clone(),
                    },
                )
            })
            .collect();
        tracing::info!(
            prefix = %self.prefix,
            nodes = layout.nodes.len(),
            pods = layout.pods.len(),
            netns_ms = t_netns.as_millis() as u64,
            sysctl_ms = t_sysctl.as_millis() as u64,
            links_ms = t_links.as_millis() as u64,
            total_ms = t_servers.as_millis() as u64,
            "lab created"
        );
        Ok(())
    }

    /// The unique prefix of every network namespace of this lab (`nplab<pid>x<counter>-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The network namespace of a node, for `ip netns exec NAME nft -f -`; `None` for an unknown node.
    pub fn node_netns(&self, node: &str) -> Option<&str> {
        self.layout
            .nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.netns.as_str())
    }

    /// The network namespace of a pod (`namespace/name`); `None` for an unknown pod.
    pub fn pod_netns(&self, pod: &str) -> Option<&str> {
        self.layout
            .pods
            .iter()
            .find(|p| p.id == pod)
            .map(|p| p.netns.as_str())
    }

    /// The network namespace of the fabric (the bridge linking the nodes).
    pub fn fabric_netns(&self) -> &str {
        &self.layout.fabric
    }

    /// Runs the probes in parallel (see [`Lab::probe_outcomes`]): `Ok(true)` when the TCP connection
    /// was established or the UDP echo came back within `timeout`, `Ok(false)` when it did not
    /// (dropped, refused, unreachable, timed out).
    pub fn probe_all(&self, probes: &[Probe], timeout: Duration) -> Vec<Result<bool, LabError>> {
        self.probe_outcomes(probes, timeout)
            .into_iter()
            .map(|r| r.map(ProbeOutcome::reached))
            .collect()
    }

    /// Runs the probes in parallel (at most [`MAX_PARALLEL_PROBES`] at once) and returns what each
    /// met, in input order. Errors are for probes the lab cannot run: unknown pod, no address of the
    /// family, SCTP, or a namespace that cannot be entered.
    pub fn probe_outcomes(
        &self,
        probes: &[Probe],
        timeout: Duration,
    ) -> Vec<Result<ProbeOutcome, LabError>> {
        let mut results: Vec<Option<Result<ProbeOutcome, LabError>>> =
            Vec::with_capacity(probes.len());
        let mut todo: Vec<(usize, &PodHandle)> = Vec::new();
        for (i, p) in probes.iter().enumerate() {
            match self.check_probe(p, timeout) {
                Ok(pod) => {
                    results.push(None);
                    todo.push((i, pod));
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let next = AtomicUsize::new(0);
        let workers = todo.len().min(MAX_PARALLEL_PROBES);
        let done: Vec<Vec<(usize, Result<ProbeOutcome, LabError>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut out = Vec::new();
                        let mut current: Option<&str> = None;
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&(i, pod)) = todo.get(k) else { break };
                            if current != Some(pod.netns.as_str()) {
                                if let Err(e) = netns::enter(&pod.file, &pod.netns) {
                                    current = None;
                                    out.push((i, Err(e)));
                                    continue;
                                }
                                current = Some(pod.netns.as_str());
                            }
                            out.push((i, probe::run(&probes[i], i, timeout, &self.source_ports)));
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (i, r) in done.into_iter().flatten() {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(LabError::Internal("a probe thread panicked".to_string())))
            })
            .collect()
    }

    fn check_probe(&self, p: &Probe, timeout: Duration) -> Result<&PodHandle, LabError> {
        let pod = self
            .pods
            .get(&p.from)
            .ok_or_else(|| LabError::UnknownPod(p.from.clone()))?;
        if p.protocol == Protocol::Sctp {
            return Err(LabError::Unsupported(format!(
                "cannot probe {} port {}/SCTP from {}: the lab does not run SCTP (the kernel of this \
                 host has no SCTP sockets); leave SCTP out of the probes or report them as skipped",
                p.to, p.port, p.from
            )));
        }
        if !pod.ips.iter().any(|ip| ip.is_ipv4() == p.to.is_ipv4()) {
            return Err(LabError::NoAddress {
                pod: p.from.clone(),
                family: if p.to.is_ipv4() { 4 } else { 6 },
                to: p.to,
            });
        }
        if timeout.is_zero() {
            return Err(LabError::InvalidSpec(
                "the probe timeout is zero; give it a few hundred milliseconds".to_string(),
            ));
        }
        Ok(pod)
    }

    /// Replaces the Service DNAT of every node with `services`: one atomic `nft -f -` transaction per
    /// node (the nodes are updated in parallel, each all at once).
    pub fn set_services(&self, services: &[ServiceSpec]) -> Result<(), LabError> {
        render::validate_services(&self.layout.own_ips(), services)?;
        let nat = render::nat_ruleset(services);
        let nodes: Vec<(&String, &File)> = self.node_files.iter().collect();
        parallel(&nodes, |&(name, file)| {
            let ns = self
                .node_netns(name)
                .ok_or_else(|| LabError::Internal(format!("node {name} has no namespace")))?;
            netns::run_in(file, ns, || cmd::nft(ns, &nat))?
        })
    }

    /// Stops the servers and removes every network namespace of the lab.
    pub fn teardown(mut self) -> Result<(), LabError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), LabError> {
        if !self.live {
            return Ok(());
        }
        self.live = false;
        let start = Instant::now();
        if let Some(servers) = self.servers.take() {
            servers.stop();
        }
        self.pods.clear();
        self.node_files.clear();
        let removed = cmd::delete_netns_with_prefix(&self.prefix)?;
        live_labs().retain(|p| p != &self.prefix);
        tracing::info!(
            prefix = %self.prefix,
            removed = removed.len(),
            ms = start.elapsed().as_millis() as u64,
            "lab torn down"
        );
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(prefix = %self.prefix, error = %e, "lab teardown failed");
        }
    }
}

/// Checks what the lab needs: root, and `ip` (iproute2) and `nft` (nftables) on `PATH`.
pub fn preflight() -> Result<(), LabError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NotRoot);
    }
    if cmd::which("ip").is_none() {
        return Err(LabError::MissingTool {
            tool: "ip",
            hint: "install iproute2 (apt-get install iproute2)",
        });
    }
    if cmd::which("nft").is_none() {
        return Err(LabError::MissingTool {
            tool: "nft",
            hint: "install nftables (apt-get install nftables)",
        });
    }
    Ok(())
}

/// For tests and benches that need root and the kernel: whether they can run ([`preflight`] passes).
/// When they cannot, prints a loud `SKIPPED` banner straight to the standard error (the test harness
/// does not capture it) and returns false, or panics when `NFTPOLICY_REQUIRE_LAB=1` (as CI runs), so
/// that a skipped kernel test never passes for a green one.
pub fn kernel_available(test: &str) -> bool {
    let Err(e) = preflight() else {
        return true;
    };
    if std::env::var("NFTPOLICY_REQUIRE_LAB").as_deref() == Ok("1") {
        panic!("{test}: the kernel is required (NFTPOLICY_REQUIRE_LAB=1) but unavailable: {e}");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED {test}: {e} !!!!!!!!\n"
    );
    false
}

/// Removes the network namespaces of earlier labs whose process is gone (`nplab<pid>x...` with no
/// process `<pid>`), and returns their names. Namespaces of live processes, this one included, and
/// namespaces of other naming schemes are left alone.
pub fn clean_leftovers() -> Result<Vec<String>, LabError> {
    preflight()?;
    let me = std::process::id();
    let mut dead_prefixes = BTreeSet::new();
    for name in cmd::list_netns()? {
        if let Some((pid, prefix)) = parse_prefix(&name) {
            if pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                dead_prefixes.insert(prefix.to_string());
            }
        }
    }
    let mut removed = Vec::new();
    for prefix in dead_prefixes {
        removed.extend(cmd::delete_netns_with_prefix(&prefix)?);
    }
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), "removed leftover lab namespaces");
    }
    Ok(removed)
}

/// Removes the namespaces of every lab alive in this process, and returns their names. For programs
/// with their own Ctrl-C handler (the lab installs one only when none is installed yet).
pub fn teardown_all_labs() -> Vec<String> {
    let prefixes: Vec<String> = live_labs().drain(..).collect();
    let mut removed = Vec::new();
    for prefix in prefixes {
        match cmd::delete_netns_with_prefix(&prefix) {
            Ok(names) => removed.extend(names),
            Err(e) => tracing::error!(%prefix, error = %e, "cannot remove the lab's namespaces"),
        }
    }
    removed
}

/// `nplab<pid>x<counter>-rest` → `(pid, "nplab<pid>x<counter>-")`.
fn parse_prefix(name: &str) -> Option<(u32, &str)> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let (pid, rest) = rest.split_once('x')?;
    let (counter, _) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(counter) {
        return None;
    }
    let pid = pid.parse().ok()?;
    let len = NETNS_PREFIX.len() + name[NETNS_PREFIX.len()..].find('-')? + 1;
    Some((pid, &name[..len]))
}

fn install_signal_handler() {
    SIGNAL_HANDLER.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            let removed = teardown_all_labs();
            eprintln!(
                "interrupted: removed {} lab network namespace(s)",
                removed.len()
            );
            std::process::exit(130);
        });
        if let Err(e) = installed {
            tracing::warn!(
                error = %e,
                "cannot install the lab's Ctrl-C handler; call policylab::lab::teardown_all_labs() \
                 from yours, or run clean_leftovers() later"
            );
        }
    });
}

/// Runs `f` on every item, up to 16 at once, and returns the first error (in item order).
fn parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> Result<(), LabError> + Sync,
) -> Result<(), LabError> {
    let next = AtomicUsize::new(0);
    let workers = items.len().min(16);
    let mut errors: Vec<(usize, LabError)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut errors = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(k) else { break };
                        if let Err(e) = f(item) {
                            errors.push((k, e));
                        }
                    }
                    errors
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(0, LabError::Internal("a lab thread panicked".to_string()))]
                })
            })
            .collect()
    });
    errors.sort_by_key(|(k, _)| *k);
    match errors.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}
