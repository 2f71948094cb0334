//! Running the programs nftpolicy drives (`nft`, `ip`, `conntrack`): one runner for the agent and
//! the lab.
//!
//! Standard input is written from a thread of its own while the output is read, so a program that
//! fills its standard output or error before it has read all of its input cannot deadlock the caller.
//! A program that fails is reported with its own error text (its standard error), which for `nft -f -`
//! holds the line and column of the offending input.

use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};

/// What a program printed, once it exited 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (some programs report on it even when they succeed).
    pub stderr: String,
}

/// Why a program did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started (not installed, not executable).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the program, or reading what it printed, failed.
    #[error("cannot wait for `{command}`: {source}")]
    Wait {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and did not exit 0.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// Its standard error, trimmed: the program's own account of what went wrong.
        stderr: String,
    },
}

/// Runs `program` with `args`, writes `stdin` to its standard input, waits for it to exit, and
/// returns what it printed. Fails unless it exits 0.
pub fn run(program: &str, args: &[&str], stdin: &str) -> Result<Output, ProcessError> {
    let command = || {
        std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            command: command(),
            source,
        })?;
    let input = child.stdin.take();
    let output = std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(mut input) = input {
                // A program that exits early (on an error) closes the pipe: its status says why.
                let _ = input.write_all(stdin.as_bytes());
            }
        });
        child.wait_with_output()
    })
    .map_err(|source| ProcessError::Wait {
        command: command(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(ProcessError::Failed {
            command: command(),
            status: output.status,
            stderr: stderr.trim().to_string(),
        });
    }
    Ok(Output {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: stderr.into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_larger_than_a_pipe_is_written_while_the_output_is_read() {
        // `cat` echoes as it reads: with the input written before the output is read, both pipes
        // (64 KiB each) would fill and neither side could go on.
        let input = "0123456789abcdef\n".repeat(64 * 1024);
        let out = run("cat", &[], &input).expect("cat");
        assert_eq!(out.stdout.len(), input.len());
        assert!(out.stdout == input);
    }

    #[test]
    fn a_failing_program_is_reported_with_its_own_error_text() {
        let err =
            run("sh", &["-c", "echo 'line 3: no such set' >&2; exit 3"], "").expect_err("exit 3");
        match &err {
            ProcessError::Failed {
                command,
                status,
                stderr,
            } => {
                assert_eq!(stderr, "line 3: no such set");
                assert_eq!(status.code(), Some(3));
                assert!(command.starts_with("sh -c"), "{command}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(err.to_string().contains("line 3: no such set"), "{err}");
    }

    #[test]
    fn a_missing_program_cannot_be_started() {
        let err = run("nftpolicy-no-such-program", &["-f", "-"], "x").expect_err("missing");
        assert!(
            matches!(&err, ProcessError::Spawn { command, .. } if command == "nftpolicy-no-such-program -f -"),
            "{err:?}"
        );
    }

    #[test]
    fn a_program_that_stops_reading_early_is_judged_by_its_status() {
        // `true` never reads: the write fails with a broken pipe, which is not the failure.
        let out = run("true", &[], &"x".repeat(1 << 20)).expect("true exits 0");
        assert_eq!(out, Output::default());
    }
}
