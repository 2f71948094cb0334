//! Running `ip` and `nft`, and managing `/run/netns`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::LabError;
use nftpolicy::process::{self, ProcessError};

/// Where `ip netns` keeps its namespaces.
pub(super) const NETNS_DIR: &str = "/run/netns";

/// Serializes `ip netns add` within the process: the first one also sets up the `/run/netns` mount,
/// which must not be done twice at once.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// The path of `program` on `PATH`, if it is there.
pub(super) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `program args` with `input` on standard input (with [`nftpolicy::process::run`]); fails with its
/// standard error (and, for a batch, the failing input line) unless it exits 0.
fn run(program: &str, args: &[&str], input: &str, label: &str) -> Result<(), LabError> {
    let command = format!("{program} {}{label}", args.join(" "));
    match process::run(program, args, input) {
        Ok(_) => Ok(()),
        Err(ProcessError::Failed {
            status, mut stderr, ..
        }) => {
            if let Some(line) =
                failed_line(&stderr).and_then(|n| input.lines().nth(n.wrapping_sub(1)))
            {
                stderr.push_str(&format!(" (input line: `{line}`)"));
            }
            Err(LabError::Command {
                command,
                status: status.to_string(),
                stderr,
            })
        }
        Err(ProcessError::Spawn { source, .. }) => Err(LabError::io(
            format!("cannot run `{command}`; run preflight()"),
            source,
        )),
        Err(ProcessError::Wait { source, .. }) => {
            Err(LabError::io(format!("cannot wait for `{command}`"), source))
        }
    }
}

/// The line number in `ip -batch`'s "Command failed -:N".
fn failed_line(stderr: &str) -> Option<usize> {
    let rest = &stderr[stderr.find("Command failed -:")? + "Command failed -:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Runs an `ip -batch` script, in namespace `netns` (`ip -n`) or in the current one.
pub(super) fn ip_batch(netns: Option<&str>, script: &str) -> Result<(), LabError> {
    tracing::debug!(netns = netns.unwrap_or(""), %script, "ip -batch");
    match netns {
        Some(ns) => run("ip", &["-n", ns, "-batch", "-"], script, ""),
        None => run("ip", &["-batch", "-"], script, ""),
    }
}

/// Runs `nft -f -` with `ruleset` in the network namespace of the calling thread (`label` names it
/// in errors).
pub(super) fn nft(label: &str, ruleset: &str) -> Result<(), LabError> {
    tracing::debug!(netns = label, %ruleset, "nft -f -");
    run(
        "nft",
        &["-f", "-"],
        ruleset,
        &format!(" (in netns {label})"),
    )
}

/// Creates the named network namespaces (one `ip -batch`).
pub(super) fn add_netns(names: &[&str]) -> Result<(), LabError> {
    let script: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
    let _guard = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
    ip_batch(None, &script)
}

/// The names in `/run/netns` (none when it does not exist).
pub(super) fn list_netns() -> Result<Vec<String>, LabError> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LabError::io(format!("cannot list {NETNS_DIR}"), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LabError::io(format!("cannot list {NETNS_DIR}"), e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Deletes every network namespace whose name starts with `prefix` (one `ip -force -batch`), and
/// returns their names. Fails only if some are still there afterwards.
pub(super) fn delete_netns_with_prefix(prefix: &str) -> Result<Vec<String>, LabError> {
    let names: Vec<String> = list_netns()?
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    if names.is_empty() {
        return Ok(names);
    }
    let script: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
    let result = run("ip", &["-force", "-batch", "-"], &script, "");
    let left: Vec<String> = names
        .iter()
        .filter(|n| Path::new(NETNS_DIR).join(n).exists())
        .cloned()
        .collect();
    if left.is_empty() {
        if let Err(e) = result {
            tracing::debug!(error = %e, "ip netns del complained, but every namespace is gone");
        }
        return Ok(names);
    }
    let why = match result {
        Err(e) => e.to_string(),
        Ok(()) => "ip exited 0".to_string(),
    };
    Err(LabError::Command {
        command: "ip -force -batch - (netns del)".to_string(),
        status: "namespaces left behind".to_string(),
        stderr: format!(
            "{} still exist(s) ({why}); remove them with `ip netns del NAME`",
            left.join(", ")
        ),
    })
}
