//! nftpolicy's node agent, `policyd`: it watches the cluster, compiles the node's ruleset and keeps
//! the kernel's `table inet nftpolicy` equal to it. The pure compiler lives in the `policy-compiler`
//! crate; the network-namespace lab, which runs clusters on this dataplane, in `policylab`.
//!
//! - [`source`] turns the Kubernetes API (or a directory of manifests) into updates of the cluster
//!   state;
//! - [`agent`] is the reconcile loop: debounce, compile, apply, audit; [`debounce`] decides when
//!   it syncs;
//! - [`dataplane`] keeps what was committed and sends the kernel only the difference;
//! - [`revocation`] finds the local pods whose established connections a change may have revoked
//!   (their conntrack entries are deleted with `--conntrack-flush`);
//! - [`nflog`] reads the packets the ruleset logs through NFLOG, and [`denials`] turns them into
//!   denial records (`--deny-log`: log lines, `/denials`, metrics);
//! - [`kernel`] is the seam to the kernel: `nft` itself, or an in-memory fake for tests;
//! - [`netns`] enters named network namespaces, for sockets that belong there;
//! - [`process`] runs `nft`, `ip` and `conntrack`, for the agent and the lab;
//! - [`policy_metrics`] reads the ruleset's named counters into packets and bytes per policy;
//! - [`http`], [`metrics`] and [`cli`] are the agent's edges.

#![deny(missing_docs)]

pub mod agent;
pub mod cli;
pub mod dataplane;
pub mod debounce;
pub mod denials;
pub mod heap;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod netns;
pub mod nflog;
pub mod policy_metrics;
pub mod process;
pub mod revocation;
pub mod source;
