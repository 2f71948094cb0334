//! nftpolicy's policy compiler: Kubernetes NetworkPolicy to per-node nftables rulesets.
//!
//! The crate is pure: no network, no processes, no clock, no global state (reading manifest files in
//! [`input::read_paths`] is its one edge).
//!
//! # The pipeline
//!
//! ```text
//! manifests --input--> ClusterState --index, plan--> Ruleset --render--> nft -f text
//!                                                          \--diff--> Transaction (the agent)
//! ```
//!
//! - [`input`] reads manifests, and [`object`] (the one place that knows the kinds) converts each
//!   object into the compact, validated [`model`], kept in a [`ClusterState`] ([`cluster`]) with
//!   [`selector`]s and [`cidr`]s parsed once;
//! - [`index`] resolves selectors through label indexes;
//! - [`plan`] decides per node which local pods are isolated and by which policies
//!   ([`plan::isolation`]), names every set, map and chain ([`plan::naming`]) and generates the
//!   rules; [`compile_node`] is the entry point;
//! - [`nft`] is the typed model of the one table: its text form, [`nft::transaction`] (the diff the
//!   agent applies), [`nft::json`] (the kernel's listing read back, and written for stand-ins of the
//!   kernel) and [`nft::interp`] (the verdict of a packet, without a kernel).
//!
//! # Analysis, tests and tooling
//!
//! - [`analysis`] answers connectivity questions straight from the API semantics (`policyc matrix`,
//!   `policyc explain`): the reference the rulesets are tested against, sharing no code with `plan`;
//! - [`verify`] checks rendered rulesets against [`analysis`] with [`nft::interp`];
//! - [`generate`] makes seeded clusters for property tests, benches and `policyc generate`, which
//!   [`manifest`] writes back as Kubernetes manifests;
//! - [`workload`] makes a repository's workloads into pods to analyse, for offline review
//!   (`policyc connections`, `policyc graph`);
//! - [`conformance`] holds the upstream e2e cases as data, for the conformance tests and the lab.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod analysis;
pub mod cidr;
pub mod cluster;
pub mod cnp_conformance;
pub mod conformance;
pub mod diff;
pub mod generate;
pub mod index;
pub mod input;
pub mod intern;
pub mod lint;
pub mod manifest;
pub mod model;
pub mod nft;
pub mod object;
pub mod plan;
pub mod selector;
#[cfg(test)]
pub(crate) mod test_support;
pub mod verify;
pub mod verify_rules;
pub mod workload;

pub use cidr::{Cidr, Family};
pub use cluster::ClusterState;
pub use model::{Direction, ObjectRef, Protocol};
pub use plan::{compile_all, compile_node};
