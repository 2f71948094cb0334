//! The deployment (deploy/) checked against the agent it deploys, without a cluster and without root.
//!
//! Every manifest must be an object of the Kubernetes API with no field the schema does not know
//! (parsed into its k8s-openapi type and compared with what that type serializes back), and must
//! agree with policyd itself: the arguments parse with policyd's own parser, the probes and the
//! scrape annotations point at paths policyd's HTTP server serves on the port it listens on, the
//! ClusterRole grants exactly `nftpolicy::source::kube::RBAC`, and the image is the crate's
//! version. The Dockerfile is checked for what the DaemonSet relies on (nft, conntrack, the
//! entrypoint), since it cannot be built here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Container, Namespace, PodSpec, Service, ServiceAccount, Toleration,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::serde::de::DeserializeOwned;
use k8s_openapi::serde::Serialize;
use nftpolicy::cli::{Cli, LogFormat, DEFAULT_PORT};
use nftpolicy::http::DEFAULT_LISTEN;
use serde_json::Value;

const NAMESPACE: &str = "nftpolicy-system";
const KUSTOMIZATION: &str = "Kustomization";
/// Manifests that the default install leaves out.
const OPTIONAL_DIR: &str = "optional";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// One YAML document of a manifest file.
struct Doc {
    /// Path relative to deploy/, with `/` separators.
    file: String,
    /// Position in the file, from 0.
    index: usize,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or("")
    }

    fn optional(&self) -> bool {
        self.file.starts_with(&format!("{OPTIONAL_DIR}/"))
    }

    fn at(&self) -> String {
        format!(
            "deploy/{} document {}: {} {}",
            self.file,
            self.index + 1,
            self.kind(),
            self.value["metadata"]["name"].as_str().unwrap_or("?")
        )
    }
}

/// The YAML files under `dir`, recursively, in name order (as `kubectl apply -f` visits a directory).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(deploy_dir())
        .expect("under deploy/")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Every Kubernetes object under deploy/ (all YAML files but the kustomization), in apply order.
fn documents() -> Vec<Doc> {
    let mut docs = Vec::new();
    for path in yaml_files(&deploy_dir()) {
        let file = relative(&path);
        if file == KUSTOMIZATION {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read manifest");
        let values: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("deploy/{file}: not YAML: {e}"));
        for (index, value) in values.into_iter().filter(|v| !v.is_null()).enumerate() {
            docs.push(Doc {
                file: file.clone(),
                index,
                value,
            });
        }
    }
    assert!(!docs.is_empty(), "no manifests under deploy/");
    docs
}

/// The first path where `written` and `typed` (the manifest as its type serializes it) differ: a
/// field the schema does not have, or a value of the wrong shape.
fn first_difference(written: &Value, typed: &Value, path: &str) -> Option<String> {
    match (written, typed) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|k| {
                let here = format!("{path}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => first_difference(x, y, &here),
                    _ => Some(here),
                }
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}[{i}]"))),
        _ if written == typed => None,
        _ => Some(path.to_string()),
    }
}

/// The document as its k8s-openapi type, which must hold every field the manifest writes.
fn typed<T: DeserializeOwned + Serialize>(doc: &Doc) -> T {
    let object: T = serde_json::from_value(doc.value.clone())
        .unwrap_or_else(|e| panic!("{}: not a valid object: {e}", doc.at()));
    let back = serde_json::to_value(&object).expect("serialize");
    if let Some(field) = first_difference(&doc.value, &back, "") {
        panic!(
            "{}: field {field} is not in the API schema, or has the wrong type \
             (as written: {}; as the API reads it: {})",
            doc.at(),
            lookup(&doc.value, &field),
            lookup(&back, &field)
        );
    }
    object
}

fn lookup(v: &Value, path: &str) -> String {
    let mut cur = Some(v);
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        cur = cur.and_then(|c| c.get(key));
        if let Some(i) = index {
            cur = cur.and_then(|c| c.get(i));
        }
    }
    cur.map_or("absent".to_string(), |v| v.to_string())
}

fn one<T: DeserializeOwned + Serialize>(kind: &str) -> T {
    let docs = documents();
    let matching: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == kind && !d.optional())
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "the default install must hold exactly one {kind}"
    );
    typed(matching[0])
}

fn daemonset() -> DaemonSet {
    one("DaemonSet")
}

fn pod_spec(ds: &DaemonSet) -> PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("the DaemonSet has a pod template")
}

fn policyd(ds: &DaemonSet) -> Container {
    let spec = pod_spec(ds);
    assert!(
        spec.init_containers.unwrap_or_default().is_empty(),
        "no init containers"
    );
    assert_eq!(spec.containers.len(), 1, "one container: policyd");
    spec.containers[0].clone()
}

/// policyd's command line as the container runs it: the image's entrypoint, then `args`.
fn policyd_argv(c: &Container) -> Vec<String> {
    assert!(
        c.command.is_none(),
        "the container must not override the image's ENTRYPOINT (/usr/local/bin/policyd)"
    );
    let mut argv = vec!["policyd".to_string()];
    argv.extend(c.args.clone().unwrap_or_default());
    argv
}

/// Parses the container's command line with policyd's parser, the node name coming from NODE_NAME
/// as in the pod (passed as the flag here, so that the test does not touch its environment).
fn parsed_cli(c: &Container) -> Cli {
    let mut argv = policyd_argv(c);
    argv.push("--node-name=node-1".into());
    Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("policyd rejects {argv:?}:\n{e}"))
}

fn metrics_port(c: &Container) -> i32 {
    let ports = c.ports.clone().unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("a container port named `metrics`");
    assert_eq!(port.protocol.as_deref().unwrap_or("TCP"), "TCP");
    if let Some(host_port) = port.host_port {
        assert_eq!(
            host_port, port.container_port,
            "on the host network hostPort must equal containerPort"
        );
    }
    port.container_port
}

#[test]
fn every_manifest_is_an_api_object_with_only_known_fields() {
    let mut default_kinds = BTreeSet::new();
    let mut optional_kinds = BTreeSet::new();
    for doc in documents() {
        match (doc.api_version(), doc.kind()) {
            ("v1", "Namespace") => drop(typed::<Namespace>(&doc)),
            ("v1", "ServiceAccount") => drop(typed::<ServiceAccount>(&doc)),
            ("v1", "Service") => drop(typed::<Service>(&doc)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(typed::<ClusterRole>(&doc)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                drop(typed::<ClusterRoleBinding>(&doc))
            }
            ("apps/v1", "DaemonSet") => drop(typed::<DaemonSet>(&doc)),
            // A CRD of the Prometheus Operator: no k8s-openapi type; checked field by field in
            // servicemonitor_scrapes_the_agents_metrics_port.
            ("monitoring.coreos.com/v1", "ServiceMonitor") => {}
            (api, kind) => panic!(
                "{}: unexpected apiVersion {api} kind {kind}: check it here",
                doc.at()
            ),
        }
        let kinds = if doc.optional() {
            &mut optional_kinds
        } else {
            &mut default_kinds
        };
        kinds.insert(doc.kind().to_string());
    }
    let set = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        default_kinds,
        set(&[
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "Namespace",
            "ServiceAccount"
        ])
    );
    assert_eq!(optional_kinds, set(&["Service", "ServiceMonitor"]));
}

#[test]
fn objects_live_in_the_agent_namespace_which_admits_its_pods() {
    for doc in documents() {
        let ns = doc.value["metadata"]["namespace"].as_str();
        match doc.kind() {
            "Namespace" | "ClusterRole" | "ClusterRoleBinding" => {
                assert_eq!(ns, None, "{}: cluster-scoped", doc.at())
            }
            // Written in every manifest, so that `kubectl apply -f` needs no kustomize.
            _ => assert_eq!(ns, Some(NAMESPACE), "{}", doc.at()),
        }
    }
    let ns: Namespace = one("Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some(NAMESPACE));
    // hostNetwork and an added capability are outside the `baseline` Pod Security Standard: a
    // cluster enforcing it by default would refuse the agent's pods.
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged")
    );
}

#[test]
fn kustomization_lists_exactly_the_default_manifests_and_changes_nothing() {
    let text = std::fs::read_to_string(deploy_dir().join(KUSTOMIZATION)).expect("read");
    let k: Value = serde_saphyr::from_str(&text).expect("Kustomization is YAML");
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k["kind"], "Kustomization");

    let listed: Vec<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a path").to_string())
        .collect();
    let present: Vec<String> = yaml_files(&deploy_dir())
        .iter()
        .map(|p| relative(p))
        .filter(|f| f != KUSTOMIZATION && !f.starts_with(&format!("{OPTIONAL_DIR}/")))
        .collect();
    assert_eq!(
        listed, present,
        "Kustomization must list every manifest of deploy/ (not optional/), in file order"
    );

    // Nothing that would make `kubectl apply -k` install something else than the files themselves.
    let allowed: BTreeSet<&str> = [
        "apiVersion",
        "kind",
        "metadata",
        "namespace",
        "resources",
        "images",
    ]
    .into();
    for key in k.as_object().expect("a mapping").keys() {
        assert!(
            allowed.contains(key.as_str()),
            "Kustomization: `{key}` would make -k differ from -f"
        );
    }
    assert_eq!(k["namespace"], NAMESPACE);

    let image = policyd(&daemonset()).image.expect("an image");
    let (name, tag) = image.rsplit_once(':').expect("a tagged image");
    let images = k["images"].as_array().expect("images");
    assert_eq!(images.len(), 1, "one image: policyd");
    assert_eq!(
        images[0]["name"], name,
        "images[0].name must match the DaemonSet's image"
    );
    let new_name = images[0]["newName"].as_str().unwrap_or(name);
    let new_tag = images[0]["newTag"].as_str().unwrap_or(tag);
    assert_eq!(
        format!("{new_name}:{new_tag}"),
        image,
        "the kustomization must install the image the DaemonSet names"
    );
}

#[test]
fn plain_apply_creates_the_namespace_and_account_before_their_users() {
    // `kubectl apply -f deploy/` applies the files in name order, each file's documents in order.
    let order: Vec<(String, bool)> = documents()
        .iter()
        .filter(|d| !d.optional())
        .map(|d| {
            (
                d.kind().to_string(),
                d.value["metadata"]["namespace"].is_string(),
            )
        })
        .collect();
    let position = |kind: &str| {
        order
            .iter()
            .position(|(k, _)| k == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let first_namespaced = order
        .iter()
        .position(|(_, namespaced)| *namespaced)
        .expect("namespaced objects");
    assert!(position("Namespace") < first_namespaced, "{order:?}");
    assert!(
        position("ServiceAccount") < position("DaemonSet"),
        "{order:?}"
    );
    assert!(
        position("ClusterRoleBinding") < position("DaemonSet"),
        "{order:?}"
    );
}

#[test]
fn container_args_are_accepted_by_policyd() {
    let ds = daemonset();
    let c = policyd(&ds);
    assert_eq!(c.name, "policyd");
    let cli = parsed_cli(&c);
    assert_eq!(cli.source, "kube");
    assert_eq!(cli.listen.port(), DEFAULT_PORT);
    assert!(
        cli.listen.ip().is_unspecified(),
        "kubelet probes the node's address"
    );
    assert!(matches!(cli.log_format, LogFormat::Json));
    assert_eq!(
        cli.netns, None,
        "the agent enforces in the node's namespace"
    );
    // The default matches, so that running policyd by hand serves the same port.
    let default: SocketAddr = DEFAULT_LISTEN.parse().expect("DEFAULT_LISTEN");
    assert_eq!(default.port(), DEFAULT_PORT);

    // The options the manifest documents in a comment must parse too.
    let mut argv = policyd_argv(&c);
    argv.extend(["--node-name=n".to_string(), "--conntrack-flush".to_string()]);
    assert!(Cli::try_parse_from(&argv).expect("parses").conntrack_flush);
    // And a typo must not: the check above can fail.
    argv.push("--conntrack-flsuh".into());
    assert!(Cli::try_parse_from(&argv).is_err());
}

#[test]
fn node_name_comes_from_the_downward_api_in_the_variable_policyd_reads() {
    let c = policyd(&daemonset());
    let argv = policyd_argv(&c);
    assert!(
        !argv.iter().any(|a| a.starts_with("--node-name")),
        "the node name must come from the environment, not be written in the manifest"
    );
    let env_name = Cli::command()
        .get_arguments()
        .find(|a| a.get_id() == "node_name")
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .expect("policyd reads --node-name from the environment");
    let env = c.env.unwrap_or_default();
    let var = env
        .iter()
        .find(|e| e.name == env_name)
        .unwrap_or_else(|| panic!("the container sets {env_name}"));
    let field = var
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("from the downward API");
    assert_eq!(field.field_path, "spec.nodeName");
    assert_eq!(var.value, None);
}

#[test]
fn the_log_filter_is_policyds_default() {
    let c = policyd(&daemonset());
    let env = c.env.unwrap_or_default();
    let filter = env
        .iter()
        .find(|e| e.name == "RUST_LOG")
        .and_then(|e| e.value.clone())
        .expect("RUST_LOG is set");
    assert_eq!(filter, nftpolicy::cli::DEFAULT_LOG_FILTER);
}

#[test]
fn probes_and_scrape_annotations_use_the_port_policyd_listens_on() {
    let ds = daemonset();
    let c = policyd(&ds);
    let port = metrics_port(&c);
    assert_eq!(port, i32::from(DEFAULT_PORT));
    assert_eq!(parsed_cli(&c).listen.port(), DEFAULT_PORT);

    for (probe, path) in [
        (c.liveness_probe.as_ref(), "/healthz"),
        (c.readiness_probe.as_ref(), "/readyz"),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("an HTTP probe on {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("metrics".into()));
        assert_eq!(get.scheme.as_deref().unwrap_or("HTTP"), "HTTP");
    }

    let annotations = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    let a = |k: &str| annotations.get(k).map(String::as_str);
    assert_eq!(a("prometheus.io/scrape"), Some("true"));
    assert_eq!(a("prometheus.io/port"), Some(&*port.to_string()));
    assert_eq!(a("prometheus.io/path"), Some("/metrics"));
}

/// `GET path` on policyd's HTTP server; returns the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    (status, response)
}

#[tokio::test]
async fn probe_and_scrape_paths_are_served_by_policyd() {
    let ds = daemonset();
    let c = policyd(&ds);
    let path = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        p.and_then(|p| p.http_get.as_ref())
            .and_then(|g| g.path.clone())
            .expect("an HTTP probe path")
    };
    let scrape = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("prometheus.io/path").cloned())
        .expect("prometheus.io/path");

    let health = Arc::new(nftpolicy::agent::Health::default());
    let metrics = Arc::new(nftpolicy::metrics::Metrics::new());
    let (addr, server) =
        nftpolicy::http::serve("127.0.0.1:0".parse().unwrap(), health, metrics, None)
            .await
            .expect("serve");
    // A fresh agent: alive, not ready until its first sync.
    assert_eq!(get(addr, &path(c.liveness_probe.as_ref())).await.0, 200);
    assert_eq!(get(addr, &path(c.readiness_probe.as_ref())).await.0, 503);
    let (status, body) = get(addr, &scrape).await;
    assert_eq!(status, 200);
    assert!(body.contains("nftpolicy_sync_errors_total"), "{body}");
    assert_eq!(get(addr, "/no-such-path").await.0, 404);
    server.abort();
}

fn capabilities(c: &Container, which: &str) -> BTreeSet<String> {
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .expect("capabilities");
    let list = match which {
        "add" => caps.add.clone(),
        _ => caps.drop.clone(),
    };
    list.unwrap_or_default().into_iter().collect()
}

#[test]
fn the_container_has_net_admin_and_nothing_more() {
    let ds = daemonset();
    let spec = pod_spec(&ds);
    let c = policyd(&ds);
    let sc = c.security_context.clone().expect("a securityContext");
    assert_ne!(sc.privileged, Some(true), "never privileged");
    // nf_tables (nft) and ctnetlink (conntrack -D) both check NET_ADMIN, and only that.
    assert_eq!(
        capabilities(&c, "add"),
        BTreeSet::from(["NET_ADMIN".to_string()])
    );
    assert_eq!(
        capabilities(&c, "drop"),
        BTreeSet::from(["ALL".to_string()])
    );
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_user, Some(0), "nft needs uid 0 to keep NET_ADMIN");
    let seccomp = sc
        .seccomp_profile
        .or_else(|| spec.security_context.as_ref()?.seccomp_profile.clone())
        .expect("a seccomp profile");
    assert_eq!(seccomp.type_, "RuntimeDefault");

    assert_eq!(
        spec.host_network,
        Some(true),
        "rules go into the node's namespace"
    );
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_ne!(spec.host_pid, Some(true));
    assert_ne!(spec.host_ipc, Some(true));
    for v in spec.volumes.unwrap_or_default() {
        assert!(v.host_path.is_none(), "no host paths: {}", v.name);
    }
}

/// Whether `t` tolerates the taint `key=value:effect`, as the scheduler decides it.
fn tolerates(t: &Toleration, key: &str, value: &str, effect: &str) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != effect)
    {
        return false;
    }
    let exists = t.operator.as_deref() == Some("Exists");
    match t.key.as_deref() {
        None | Some("") if !exists => return false,
        Some(k) if !k.is_empty() && k != key => return false,
        _ => {}
    }
    exists || t.value.as_deref().unwrap_or("") == value
}

#[test]
fn the_agent_runs_on_every_node() {
    let ds = daemonset();
    let spec = pod_spec(&ds);
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    for (key, value, effect) in [
        ("node-role.kubernetes.io/control-plane", "", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "", "NoExecute"),
        ("node.kubernetes.io/unreachable", "", "NoExecute"),
        ("node.kubernetes.io/unschedulable", "", "NoSchedule"),
        ("example.com/dedicated", "gpu", "NoSchedule"),
        ("example.com/dedicated", "gpu", "NoExecute"),
        ("CriticalAddonsOnly", "true", "NoSchedule"),
    ] {
        assert!(
            tolerations.iter().any(|t| tolerates(t, key, value, effect)),
            "the DaemonSet must tolerate {key}={value}:{effect}"
        );
    }
    // The check itself: a toleration for one key does not tolerate another.
    let narrow = Toleration {
        key: Some("a".into()),
        operator: Some("Exists".into()),
        ..Default::default()
    };
    assert!(tolerates(&narrow, "a", "", "NoSchedule"));
    assert!(!tolerates(&narrow, "b", "", "NoSchedule"));

    // Nothing narrows the set of nodes but the OS.
    assert!(spec.affinity.is_none());
    let selector = spec.node_selector.clone().unwrap_or_default();
    assert_eq!(
        selector,
        BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())])
    );
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let grace = spec.termination_grace_period_seconds.expect("set");
    assert!(
        (1..=30).contains(&grace),
        "policyd stops at once: {grace} s"
    );

    let strategy = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.clone())
        .expect("an update strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        strategy.rolling_update.and_then(|r| r.max_unavailable),
        Some(IntOrString::Int(1))
    );
}

/// A resource quantity in base units (cores, bytes), for the suffixes manifests use.
fn quantity(q: &str) -> f64 {
    let (number, factor) = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ]
    .iter()
    .find_map(|(suffix, f)| q.strip_suffix(suffix).map(|n| (n, *f)))
    .unwrap_or((q, 1.0));
    number
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("quantity {q}"))
        * factor
}

#[test]
fn resources_are_requested_and_limited() {
    assert_eq!(quantity("128Mi"), 134_217_728.0);
    assert_eq!(quantity("50m"), 0.05);
    let c = policyd(&daemonset());
    let r = c.resources.expect("resources");
    let requests = r.requests.expect("requests");
    let limits = r.limits.expect("limits");
    for resource in ["cpu", "memory"] {
        let request = quantity(&requests.get(resource).expect(resource).0);
        let limit = quantity(&limits.get(resource).expect(resource).0);
        assert!(
            request > 0.0 && request <= limit,
            "{resource}: request {request} must be within the limit {limit}"
        );
    }
    // The agent targets less than 150 MB at 100k pods, and the nft processes it runs are charged
    // to the same limit.
    let memory_limit = quantity(&limits["memory"].0);
    assert!(
        memory_limit >= 256.0 * 1024.0 * 1024.0,
        "memory limit {memory_limit} B"
    );
}

#[test]
fn the_cluster_role_grants_exactly_what_the_agent_uses() {
    let role: ClusterRole = one("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.clone().unwrap_or_default() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
        for group in rule.api_groups.clone().unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    for word in [&group, &resource, verb] {
                        assert!(!word.contains('*'), "no wildcards: {rule:?}");
                    }
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let used: BTreeSet<(String, String, String)> = nftpolicy::source::kube::RBAC
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs
                .iter()
                .map(move |v| (group.to_string(), resource.to_string(), v.to_string()))
        })
        .collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ClusterRole vs nftpolicy::source::kube::RBAC: missing {missing:?}, not used {extra:?}"
    );

    let account: ServiceAccount = one("ServiceAccount");
    let binding: ClusterRoleBinding = one("ClusterRoleBinding");
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(
        pod_spec(&daemonset()).service_account_name,
        account.metadata.name
    );
}

#[test]
fn the_image_is_pinned_to_the_crate_version() {
    let c = policyd(&daemonset());
    let image = c.image.expect("an image");
    let (name, tag) = image.rsplit_once(':').expect("a tag");
    assert!(name.contains('/'), "registry/repository: {image}");
    assert_eq!(tag, format!("v{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
}

#[test]
fn servicemonitor_scrapes_the_agents_metrics_port() {
    let docs = documents();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d.kind() == kind && d.optional())
            .unwrap_or_else(|| panic!("deploy/{OPTIONAL_DIR}/ has a {kind}"))
    };
    let service: Service = typed(find("Service"));
    let monitor = &find("ServiceMonitor").value;
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], NAMESPACE);

    // Service → the agents' pods.
    let pod_labels = daemonset()
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.labels)
        .unwrap_or_default();
    let spec = service.spec.clone().expect("spec");
    assert_eq!(
        spec.cluster_ip.as_deref(),
        Some("None"),
        "headless: one endpoint per agent"
    );
    let selector = spec.selector.clone().expect("a selector");
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "Service selector {k}={v}");
    }
    let ports = spec.ports.unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("metrics"));
    assert_eq!(ports[0].port, i32::from(DEFAULT_PORT));
    assert_eq!(
        ports[0].target_port,
        Some(IntOrString::String("metrics".into()))
    );

    // ServiceMonitor → the Service.
    let service_labels = service.metadata.labels.unwrap_or_default();
    let match_labels = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector.matchLabels");
    assert!(!match_labels.is_empty());
    for (k, v) in match_labels {
        assert_eq!(
            service_labels.get(k).map(String::as_str),
            v.as_str(),
            "ServiceMonitor selector {k}"
        );
    }
    // The Service is found in the ServiceMonitor's own namespace, wherever an overlay puts both.
    assert!(
        monitor["spec"].get("namespaceSelector").is_none(),
        "a namespaceSelector would pin the namespace that overlays may change"
    );
    let endpoints = monitor["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], "metrics");
    assert_eq!(endpoints[0]["path"], "/metrics");
}

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    rest: String,
}

fn dockerfile(name: &str) -> Vec<Instruction> {
    let text = std::fs::read_to_string(deploy_dir().join(name)).expect("read Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, rest) = current.split_once(char::is_whitespace).expect("argument");
                out.push(Instruction {
                    keyword: keyword.to_uppercase(),
                    rest: rest.trim().to_string(),
                });
                current.clear();
            }
        }
    }
    out
}

/// The Dockerfile's stages: (image, alias, instructions), with global ARG defaults substituted.
fn stages(instructions: &[Instruction]) -> Vec<(String, Option<String>, Vec<&Instruction>)> {
    let mut args = BTreeMap::new();
    let mut stages: Vec<(String, Option<String>, Vec<&Instruction>)> = Vec::new();
    for i in instructions {
        match i.keyword.as_str() {
            "ARG" if stages.is_empty() => {
                if let Some((k, v)) = i.rest.split_once('=') {
                    args.insert(k.to_string(), v.to_string());
                }
            }
            "FROM" => {
                let words: Vec<&str> = i.rest.split_whitespace().collect();
                let mut image = words[0].to_string();
                for (k, v) in &args {
                    image = image.replace(&format!("${{{k}}}"), v);
                }
                let alias = match words.as_slice() {
                    [_, as_, alias] if as_.eq_ignore_ascii_case("as") => Some(alias.to_string()),
                    _ => None,
                };
                stages.push((image, alias, Vec::new()));
            }
            _ => stages
                .last_mut()
                .expect("an instruction before FROM")
                .2
                .push(i),
        }
    }
    stages
}

/// `major.minor` of a version string.
fn minor_version(v: &str) -> (u32, u32) {
    let mut parts = v
        .split('.')
        .map(|p| p.parse::<u32>().expect("numeric version"));
    (parts.next().expect("major"), parts.next().unwrap_or(0))
}

#[test]
fn the_dockerfile_builds_policyd_and_ships_nft_and_conntrack() {
    let instructions = dockerfile("Dockerfile");
    let stages = stages(&instructions);
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");
    let (builder_image, builder_alias, builder) = &stages[0];
    let (runtime_image, _, runtime) = &stages[1];

    // Builder: the workspace's toolchain floor or newer, on the runtime's Debian release (glibc).
    let rust_tag = builder_image.strip_prefix("rust:").expect("FROM rust:...");
    assert!(rust_tag.ends_with("-bookworm"), "{builder_image}");
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    let floor = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .expect("rust-version in Cargo.toml");
    let toolchain = rust_tag.trim_end_matches("-bookworm");
    if toolchain != "1" {
        assert!(
            minor_version(toolchain) >= minor_version(floor),
            "rust:{toolchain} is older than the workspace's rust-version {floor}"
        );
    }
    assert_eq!(runtime_image, "debian:bookworm-slim");

    let build = builder
        .iter()
        .filter(|i| i.keyword == "RUN")
        .find(|i| i.rest.contains("cargo build"))
        .expect("RUN cargo build");
    for flag in ["--release", "--locked", "--bin policyd"] {
        assert!(
            build.rest.contains(flag),
            "cargo build needs {flag}: {}",
            build.rest
        );
    }

    // Runtime: nft and conntrack from Debian, no recommends, no package lists left behind.
    let install = runtime
        .iter()
        .filter(|i| i.keyword == "RUN")
        .find(|i| i.rest.contains("apt-get install"))
        .expect("RUN apt-get install");
    let command = install
        .rest
        .split("&&")
        .find(|c| c.contains("apt-get install"))
        .expect("install command");
    let words: Vec<&str> = command.split_whitespace().collect();
    let after_install = words.iter().position(|w| *w == "install").expect("install");
    let packages: BTreeSet<&str> = words[after_install + 1..]
        .iter()
        .copied()
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert_eq!(packages, BTreeSet::from(["conntrack", "nftables"]));
    assert!(command.contains("--no-install-recommends"), "{command}");
    assert!(
        install.rest.contains("rm -rf /var/lib/apt/lists"),
        "{}",
        install.rest
    );

    let alias = builder_alias
        .as_deref()
        .expect("the builder stage is named");
    let copy = runtime
        .iter()
        .find(|i| i.keyword == "COPY" && i.rest.starts_with(&format!("--from={alias} ")))
        .expect("COPY --from the builder");
    assert!(
        copy.rest.ends_with(" /usr/local/bin/policyd"),
        "{}",
        copy.rest
    );
    assert!(copy.rest.contains("policyd "), "{}", copy.rest);
    let entrypoint = runtime
        .iter()
        .rfind(|i| i.keyword == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&entrypoint.rest).expect("exec form"),
        vec!["/usr/local/bin/policyd".to_string()]
    );
    // The runtime stage never builds, so nothing writes to the image's filesystem at run time.
    assert!(!runtime.iter().any(|i| i.keyword == "VOLUME"));
}

#[test]
fn the_build_context_leaves_out_build_output_but_not_sources() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile.dockerignore"))
        .expect("deploy/Dockerfile.dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(patterns.contains(&"target/"), "{patterns:?}");
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "policy-compiler",
        "policylab",
        "benches",
    ] {
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(needed).exists(),
            "{needed} exists"
        );
        for p in &patterns {
            let p = p.trim_end_matches('/');
            assert!(
                p != needed && p != "*" && p != "**" && !needed.starts_with(&format!("{p}/")),
                "{p} would leave {needed} out of the build context"
            );
        }
    }
}
