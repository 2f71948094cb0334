//! nftpolicy's side-effecting parts: the nftables dataplane (running `nft` on transactions the compiler
//! builds) and the network-namespace lab. The pure compiler lives in the `policy-compiler` crate.

pub mod agent;
pub mod cli;
pub mod dataplane;
pub mod http;
pub mod kernel;
pub mod lab;
pub mod lab_run;
pub mod metrics;
pub mod process;
pub mod services;
pub mod source;
