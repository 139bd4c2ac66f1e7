//! One-shot helper programs (ffprobe, the join's ffmpeg, xrandr, pactl), run to their end through
//! [`ChildProcess`] like every other child: own process group, parent-death signal (a killed
//! pagecast leaves none behind), stderr drained and its last lines kept to explain a failure.
//!
//! Owns: the one process it runs, until it has exited.
//! Stops: when the process exits; past its time limit (SIGKILL to its group); or when the caller
//! stops waiting (dropping the wrapper kills the group).

use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::process::{ChildProcess, ProcessError, Stdout};

/// How a helper ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// One line explaining the exit: "xrandr exited with status 1: <last stderr lines>".
    pub report: String,
    /// Its last stderr lines, joined with " | " (what `report` quotes, also after a success).
    pub stderr_tail: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Why a helper gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error(transparent)]
    Start(#[from] ProcessError),
    #[error("{name} did not finish within {limit:?}")]
    Timeout { name: String, limit: Duration },
}

/// Runs `cmd` (named `name` in logs and errors) to its end, at most `limit`.
pub async fn run(name: &str, cmd: Command, limit: Duration) -> Result<Finished, OneShotError> {
    let (child, stdout) = ChildProcess::spawn(name, cmd, false, Stdout::Capture)?;
    let work = async {
        let mut out = Vec::new();
        if let Some(mut stdout) = stdout {
            // A read error only shortens what is returned; the exit status still tells.
            let _ = stdout.read_to_end(&mut out).await;
        }
        let (status, report) = child.exit_report().await;
        Finished {
            status,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            report,
            stderr_tail: child.stderr_tail(),
        }
    };
    match tokio::time::timeout(limit, work).await {
        Ok(finished) => Ok(finished),
        // `child` is dropped on return: its group is killed.
        Err(_) => Err(OneShotError::Timeout {
            name: name.to_owned(),
            limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::tests::sh;

    #[tokio::test]
    async fn stdout_status_and_stderr_come_back() {
        let done = run(
            "helper",
            sh("echo out; echo why >&2; exit 2"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.status.code(), Some(2));
        assert_eq!(done.report, "helper exited with status 2: why");
        assert_eq!(done.stderr_tail, "why");
    }

    #[tokio::test]
    async fn a_helper_past_its_limit_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let err = run("slow", sh(&script), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "slow did not finish within 500ms");
        let grandchild: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pagecast_testkit::alive(grandchild) {
            assert!(
                std::time::Instant::now() < deadline,
                "the helper's child survived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
