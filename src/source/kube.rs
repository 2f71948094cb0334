//! Kubernetes source.
