//! The child-process wrapper every process-owning actor uses.
//!
//! Owns: one OS process and its process group. The child is started in a group of its own (so a
//! signal reaches everything it forks, e.g. chromedriver's Chromium), with a parent-death signal
//! (so it dies with pagecast even on SIGKILL), and its stderr is drained on a task of its own into
//! `tracing` (a child whose stderr pipe fills up blocks), keeping the last lines for error messages.
//!
//! Stops: [`ChildProcess::terminate`] (SIGTERM to the group, SIGKILL after a grace period), or on
//! drop: dropping a `ChildProcess` kills its whole group, so a process can't outlive its actor.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::watch;

/// How many stderr lines are kept to explain a failure.
const TAIL_LINES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{program} is not installed (not found on PATH)")]
    NotFound { program: String },
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
}

impl ProcessError {
    /// As a supervision failure: a missing program is its own kind (the user installs it).
    pub fn into_failure(self) -> crate::supervision::Failure {
        use crate::supervision::{Failure, FailureKind};
        match self {
            ProcessError::NotFound { .. } => {
                Failure::new(FailureKind::MissingProgram, self.to_string())
            }
            ProcessError::Spawn { .. } => Failure::crashed(self.to_string()),
        }
    }
}

/// What to do with the child's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Log it like stderr.
    Log,
    /// Hand it to the caller (e.g. ffmpeg's `-progress pipe:1`).
    Capture,
}

/// Where a child's output lines go instead of the debug log (e.g. a recording's own JSON log,
/// passed on at its own level): called with each line, secrets already redacted.
pub type LineSink = Box<dyn Fn(&str) + Send + Sync>;

/// The strings replaced by `****` in everything a child prints. Shared by the wrapper's readers
/// and whoever learns a secret only after the start (a warm browser's page address): what is
/// [`add`](Redactor::add)ed cleans every line read from then on.
#[derive(Clone, Default)]
pub struct Redactor(Arc<std::sync::RwLock<Vec<String>>>);

impl Redactor {
    pub fn new(secrets: Vec<String>) -> Redactor {
        let redactor = Redactor::default();
        redactor.add(secrets);
        redactor
    }

    /// Cleans every line read from now on of `secrets` too (empty strings are ignored).
    pub fn add(&self, secrets: impl IntoIterator<Item = String>) {
        let mut held = self.0.write().unwrap_or_else(|e| e.into_inner());
        for secret in secrets {
            if !secret.is_empty() && !held.contains(&secret) {
                held.push(secret);
            }
        }
        // The longest first: a secret that holds another is replaced whole.
        held.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `line` with every secret replaced by `****`.
    pub fn redact(&self, line: &str) -> String {
        let held = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut line = line.to_owned();
        for secret in held.iter() {
            line = line.replace(secret.as_str(), "****");
        }
        line
    }
}

/// A started child process. See the module docs.
pub struct ChildProcess {
    inner: Arc<Inner>,
    stdin: Option<ChildStdin>,
}

/// What waiting futures share with the wrapper; they may outlive a borrow of it.
struct Inner {
    name: String,
    pid: Pid,
    status: watch::Receiver<Option<ExitStatus>>,
    tail: Mutex<VecDeque<String>>,
    /// True once stderr reached EOF (its last lines are in `tail`).
    stderr_closed: watch::Sender<bool>,
    /// Strings (stream keys, URLs with keys) replaced by `****` in everything the child prints.
    secrets: Redactor,
    /// Where its lines go (None: the debug log).
    lines: Option<LineSink>,
}

impl ChildProcess {
    /// Starts `cmd` as `name` (used in logs and errors). stdin is piped when `with_stdin`.
    /// Returns the child and, with [`Stdout::Capture`], its stdout.
    pub fn spawn(
        name: &str,
        cmd: Command,
        with_stdin: bool,
        stdout: Stdout,
    ) -> Result<(Self, Option<ChildStdout>), ProcessError> {
        Self::spawn_redacting(name, cmd, with_stdin, stdout, Vec::new())
    }

    /// Like [`ChildProcess::spawn`], for a child whose arguments hold secrets: every occurrence of
    /// each of `secrets` in what it prints becomes `****` before it is logged or kept.
    pub fn spawn_redacting(
        name: &str,
        cmd: Command,
        with_stdin: bool,
        stdout: Stdout,
        secrets: Vec<String>,
    ) -> Result<(Self, Option<ChildStdout>), ProcessError> {
        Self::spawn_full(name, cmd, with_stdin, stdout, secrets, None)
    }

    /// Like [`ChildProcess::spawn`], each line the child prints handed to `lines` instead of the
    /// debug log (the last stderr lines are still kept).
    pub fn spawn_with_lines(
        name: &str,
        cmd: Command,
        with_stdin: bool,
        stdout: Stdout,
        lines: LineSink,
    ) -> Result<(Self, Option<ChildStdout>), ProcessError> {
        Self::spawn_full(name, cmd, with_stdin, stdout, Vec::new(), Some(lines))
    }

    fn spawn_full(
        name: &str,
        mut cmd: Command,
        with_stdin: bool,
        stdout: Stdout,
        secrets: Vec<String>,
        lines: Option<LineSink>,
    ) -> Result<(Self, Option<ChildStdout>), ProcessError> {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        isolate_env(cmd.as_std_mut());
        cmd.stdin(if with_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
        // Why: a parent-death signal is the only thing that still works when pagecast is
        // SIGKILLed; process groups and Drop need pagecast alive.
        let parent = nix::unistd::getpid();
        // SAFETY: only async-signal-safe calls (prctl, getppid, kill) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                if nix::unistd::getppid() != parent {
                    // The parent died before prctl took effect.
                    let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGKILL);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ProcessError::NotFound {
                    program: program.clone(),
                }
            } else {
                ProcessError::Spawn {
                    program: program.clone(),
                    source,
                }
            }
        })?;
        let pid = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);
        let (tx, status) = watch::channel(None);
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            pid,
            status,
            tail: Mutex::new(VecDeque::with_capacity(TAIL_LINES)),
            stderr_closed: watch::Sender::new(false),
            secrets: Redactor::new(secrets),
            lines,
        });
        if let Some(err) = child.stderr.take() {
            tokio::spawn(drain(inner.clone(), err, true));
        }
        let captured = match stdout {
            Stdout::Capture => child.stdout.take(),
            Stdout::Log => {
                if let Some(out) = child.stdout.take() {
                    tokio::spawn(drain(inner.clone(), out, false));
                }
                None
            }
        };
        let stdin = child.stdin.take();
        let task_name = name.to_owned();
        tokio::spawn(async move {
            let result = child.wait().await;
            let status = match result {
                Ok(status) => status,
                Err(err) => {
                    tracing::warn!(process = %task_name, error = %err, "waiting for child failed");
                    ExitStatus::from_raw(-1)
                }
            };
            let _ = tx.send(Some(status));
        });
        tracing::debug!(process = name, pid = pid.as_raw(), "started");
        Ok((Self { inner, stdin }, captured))
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid.as_raw() as u32
    }

    /// What cleans its output of secrets: [`Redactor::add`] a secret learned after the start.
    pub fn redactor(&self) -> Redactor {
        self.inner.secrets.clone()
    }

    /// The exit status, if the process has exited.
    pub fn status(&self) -> Option<ExitStatus> {
        self.inner.status()
    }

    /// Resolves when the process has exited. Like every waiting method here it does not borrow
    /// `self`, so an actor can hold the future while keeping the `ChildProcess`.
    pub fn exited(&self) -> impl Future<Output = ExitStatus> + 'static {
        self.inner.exited()
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: Signal) {
        self.inner.signal(signal);
    }

    /// SIGTERM to the group, then SIGKILL if it has not exited within `grace`.
    pub fn terminate(&self, grace: Duration) -> impl Future<Output = ExitStatus> + 'static {
        let inner = self.inner.clone();
        async move {
            if let Some(status) = inner.status() {
                inner.signal(Signal::SIGKILL); // leftovers of the group, if any
                return status;
            }
            inner.signal(Signal::SIGTERM);
            inner.wait_or_kill(grace).await
        }
    }

    /// Waits up to `grace` for the process to exit on its own, then SIGKILLs the group.
    pub fn wait_or_kill(&self, grace: Duration) -> impl Future<Output = ExitStatus> + 'static {
        let inner = self.inner.clone();
        async move { inner.wait_or_kill(grace).await }
    }

    /// The last stderr lines, joined with " | " (empty if none).
    pub fn stderr_tail(&self) -> String {
        self.inner.stderr_tail()
    }

    /// One line explaining an exit: "ffmpeg exited with status 1: <last stderr lines>".
    pub fn describe_exit(&self, status: ExitStatus) -> String {
        self.inner.describe_exit(status)
    }

    /// Waits for the exit and for stderr to be read to its end (briefly: a grandchild may hold the
    /// pipe open), then explains the exit in one line.
    pub fn exit_report(&self) -> impl Future<Output = (ExitStatus, String)> + 'static {
        let inner = self.inner.clone();
        async move {
            let status = inner.exited().await;
            let mut closed = inner.stderr_closed.subscribe();
            let _ = tokio::time::timeout(Duration::from_millis(500), closed.wait_for(|c| *c)).await;
            (status, inner.describe_exit(status))
        }
    }
}

impl Inner {
    fn describe_exit(&self, status: ExitStatus) -> String {
        let mut out = format!("{} {}", self.name, describe_status(status));
        let tail = self.stderr_tail();
        if !tail.is_empty() {
            let _ = write!(out, ": {tail}");
        }
        out
    }

    fn status(&self) -> Option<ExitStatus> {
        *self.status.borrow()
    }

    fn signal(&self, signal: Signal) {
        // ESRCH (group already gone) is the normal case after exit.
        let _ = killpg(self.pid, signal);
    }

    fn exited(&self) -> impl Future<Output = ExitStatus> + 'static {
        let mut rx = self.status.clone();
        async move {
            loop {
                if let Some(status) = *rx.borrow_and_update() {
                    return status;
                }
                if rx.changed().await.is_err() {
                    return rx.borrow().unwrap_or_else(|| ExitStatus::from_raw(-1));
                }
            }
        }
    }

    async fn wait_or_kill(&self, grace: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(grace, self.exited()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(process = %self.name, grace = ?grace, message = crate::events::KILLED_AFTER_GRACE);
                self.signal(Signal::SIGKILL);
                self.exited().await
            }
        };
        // Whatever the leader left behind in its group goes too.
        self.signal(Signal::SIGKILL);
        status
    }

    fn stderr_tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // The group may hold grandchildren even after the leader exited.
        self.signal(Signal::SIGKILL);
    }
}

impl std::fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildProcess")
            .field("name", &self.inner.name)
            .field("pid", &self.inner.pid)
            .finish()
    }
}

/// Variables of pagecast's own environment a child still gets: what any program needs to run.
/// Everything else (`LIVEKIT_RECORDER_CONFIG` and its secrets, AWS credentials, the service's
/// settings) stays out of every child's /proc/<pid>/environ.
const INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
];

/// Clears the environment `cmd` would inherit, keeping only [`INHERITED_ENV`] and `LC_*`, plus
/// what the caller set on `cmd` itself. Every child gets this through [`ChildProcess`], one-shot
/// helpers (`oneshot.rs`) included.
pub fn isolate_env(cmd: &mut std::process::Command) {
    let explicit: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
        .collect();
    cmd.env_clear();
    for (name, value) in std::env::vars_os() {
        let keep = name
            .to_str()
            .is_some_and(|n| INHERITED_ENV.contains(&n) || n.starts_with("LC_"));
        if keep {
            cmd.env(name, value);
        }
    }
    for (name, value) in explicit {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
}

/// The start of every ffmpeg command line pagecast runs: quiet, machine-readable progress
/// (`key=value` blocks on stdout every `stats_period` seconds), nothing interactive but `q`.
pub fn ffmpeg_prologue(stats_period: &str) -> Vec<String> {
    [
        "-hide_banner",
        "-loglevel",
        "warning",
        "-nostats",
        "-progress",
        "pipe:1",
        "-stats_period",
        stats_period,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// "exited with status 1" or "was killed by SIGKILL".
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(sig) => format!("was killed by {}", sig.as_str()),
            Err(_) => format!("was killed by signal {sig}"),
        }
    } else {
        "exited".to_owned()
    }
}

/// Reads `pipe` line by line into tracing, secrets redacted; stderr's last lines are kept.
async fn drain(inner: Arc<Inner>, pipe: impl AsyncRead + Unpin, is_stderr: bool) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => {
                if is_stderr {
                    inner.stderr_closed.send_replace(true);
                }
                break;
            }
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                if line.is_empty() {
                    continue;
                }
                let line = inner.secrets.redact(&line);
                match &inner.lines {
                    Some(sink) => sink(&line),
                    None => {
                        tracing::debug!(target: "pagecast::child", process = %inner.name, "{line}")
                    }
                }
                if is_stderr {
                    let mut tail = inner.tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.to_owned());
                }
            }
        }
    }
}

/// Whether `program` can be found on PATH (or is an existing path).
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    let candidate = std::path::Path::new(program);
    if candidate.components().count() > 1 {
        return candidate.is_file().then(|| candidate.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(OsStr::new(program)))
        .find(|p| is_executable(p))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `sh -c script`, for tests of process handling.
    pub(crate) fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[tokio::test]
    async fn exit_status_and_stderr_tail_explain_a_failure() {
        let (child, _) = ChildProcess::spawn(
            "fake",
            sh("echo starting >&2; echo 'bad thing' >&2; exit 3"),
            false,
            Stdout::Log,
        )
        .unwrap();
        let (status, report) = child.exit_report().await;
        assert_eq!(status.code(), Some(3));
        assert_eq!(report, "fake exited with status 3: starting | bad thing");
    }

    #[tokio::test]
    async fn secrets_never_leave_the_wrapper() {
        let (child, _) = ChildProcess::spawn_redacting(
            "relay",
            sh("echo 'rtmp://host/app/sk_123: Input/output error' >&2; exit 1"),
            false,
            Stdout::Log,
            vec!["rtmp://host/app/sk_123".into(), "sk_123".into()],
        )
        .unwrap();
        let (_, report) = child.exit_report().await;
        assert_eq!(
            report,
            "relay exited with status 1: ****: Input/output error"
        );
    }

    #[tokio::test]
    async fn a_secret_learned_after_the_start_never_leaves_the_wrapper() {
        let (child, _) = ChildProcess::spawn(
            "driver",
            sh("read line; echo \"navigating to https://h/room?access_token=tok_456\" >&2; exit 1"),
            true,
            Stdout::Log,
        )
        .unwrap();
        let mut child = child;
        child.redactor().add(["tok_456".to_owned()]);
        let mut stdin = child.take_stdin().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, b"go\n")
            .await
            .unwrap();
        let (_, report) = child.exit_report().await;
        assert_eq!(
            report,
            "driver exited with status 1: navigating to https://h/room?access_token=****"
        );
    }

    #[tokio::test]
    async fn terminate_kills_the_whole_group_after_the_grace_period() {
        // The shell ignores SIGTERM and has a grandchild: both must be gone afterwards.
        let (child, out) = ChildProcess::spawn(
            "stubborn",
            sh("trap '' TERM; sleep 60 & echo $!; wait"),
            false,
            Stdout::Capture,
        )
        .unwrap();
        let mut out = BufReader::new(out.unwrap()).lines();
        let grandchild: i32 = out.next_line().await.unwrap().unwrap().parse().unwrap();
        let status = child.terminate(Duration::from_millis(200)).await;
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while alive(grandchild) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "grandchild survived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn dropping_the_wrapper_kills_the_process() {
        let (child, _) =
            ChildProcess::spawn("sleeper", sh("exec sleep 60"), false, Stdout::Log).unwrap();
        let pid = child.pid() as i32;
        let exited = child.exited();
        drop(child);
        let status = tokio::time::timeout(Duration::from_secs(5), exited)
            .await
            .expect("child survived its wrapper");
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        assert!(!alive(pid));
    }

    /// Only the basics and what the caller set reach a child; the rest of pagecast's own
    /// environment (here cargo's variables, standing for LIVEKIT_RECORDER_CONFIG) does not.
    #[tokio::test]
    async fn a_child_gets_a_cleared_environment() {
        assert!(
            std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
            "cargo sets it for tests"
        );
        let mut cmd = sh("env");
        cmd.env("PULSE_SINK", "sink_1");
        let (child, out) = ChildProcess::spawn("env", cmd, false, Stdout::Capture).unwrap();
        let mut lines = BufReader::new(out.unwrap()).lines();
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line);
        }
        child.exited().await;
        assert!(seen.contains(&"PULSE_SINK=sink_1".to_owned()), "{seen:?}");
        assert!(seen.iter().any(|l| l.starts_with("PATH=")), "{seen:?}");
        assert!(!seen.iter().any(|l| l.starts_with("CARGO_")), "{seen:?}");
        let allowed = |l: &String| {
            let name = l.split('=').next().unwrap_or_default();
            INHERITED_ENV.contains(&name)
                || name.starts_with("LC_")
                || ["PULSE_SINK", "PWD", "SHLVL", "_"].contains(&name)
        };
        assert!(seen.iter().all(allowed), "{seen:?}");
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let err = ChildProcess::spawn(
            "nope",
            Command::new("pagecast-no-such-program"),
            false,
            Stdout::Log,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pagecast-no-such-program is not installed (not found on PATH)"
        );
        assert!(find_program("pagecast-no-such-program").is_none());
        assert!(find_program("sh").is_some());
    }

    fn alive(pid: i32) -> bool {
        pagecast_testkit::alive(pid as u32)
    }
}
