//! `policyd`: the nftpolicy node agent (not built yet; see the README).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "policyd: the node agent is not implemented yet.\n\
         usage: policyd --node-name NAME (planned)\n\
         Use `policyc compile --node NAME` to produce the ruleset a node would enforce."
    );
    ExitCode::from(2)
}
