//! Nodes, as ClusterNetworkPolicy `nodes` peers select them.

use std::net::IpAddr;

use crate::selector::Labels;

/// A Node, reduced to what `nodes` peers match: its labels and addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// The `InternalIP` and `ExternalIP` entries of `status.addresses`, in written order without
    /// repeats (`Hostname`, `InternalDNS` and `ExternalDNS` entries are not addresses).
    pub addresses: Vec<IpAddr>,
}
