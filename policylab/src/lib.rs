//! The lab: a simulated cluster of network namespaces on one Linux box, with the real kernel
//! enforcing what the compiler predicts and real packets measuring it.
//!
//! - [`lab`] builds the namespaces (nodes, pods, the fabric between nodes), DNATs Services, serves
//!   the pods' ports and probes connectivity; it also offers tests and benches a network namespace
//!   of their own ([`lab::Netns`]) and the rule for tests that need the kernel
//!   ([`lab::kernel_available`]);
//! - [`lab_run`] runs a cluster on a lab: each node's compiled ruleset is enforced by the agent's
//!   own dataplane ([`nftpolicy::dataplane::Dataplane`]), and the measured connectivity is compared
//!   with the evaluator's prediction; the upstream e2e cases run there too;
//! - [`services`] turns the input's Services, and one Service per pod, into the lab's DNAT.
//!
//! Everything that builds namespaces needs root, `ip` and `nft` ([`lab::preflight`]).

#![deny(missing_docs)]

pub mod lab;
pub mod lab_run;
pub mod services;
