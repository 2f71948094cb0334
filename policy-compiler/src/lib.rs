//! nftpolicy's policy compiler: Kubernetes NetworkPolicy to per-node nftables rulesets.
//!
//! The crate is pure: no network, no processes, no clock, no global state (reading manifest files in
//! [`input::read_paths`] is its one edge). The flow is
//!
//! ```text
//! manifests --input--> ClusterState --index/plan--> NodePlan --render--> nft::Ruleset --> text
//!                                   \--analysis (API semantics) --> matrix, explain
//! ```
//!
//! [`nft::interp`] evaluates a rendered [`nft::Ruleset`] packet by packet, so tests prove that the
//! rules say what [`analysis`] says the API means.

pub mod analysis;
pub mod cidr;
pub mod cluster;
pub mod conformance;
pub mod generate;
pub mod index;
pub mod input;
pub mod lint;
pub mod manifest;
pub mod model;
pub mod nft;
pub mod object;
pub mod plan;
pub mod selector;
pub mod verify;
pub mod workload;

pub use cidr::{Cidr, Family};
pub use cluster::ClusterState;
pub use model::{Direction, ObjectRef, Protocol};
pub use plan::{compile_all, compile_node};
