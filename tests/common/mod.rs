//! Running the `pagecast` binary in tests: its stderr is read line by line with arrival times,
//! so tests can wait for a log event (with a deadline) and time what follows it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pagecast");

/// A running pagecast with its stderr collected.
pub struct Run {
    pub child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Run {
    /// Starts `pagecast --log-format json <args>` with `LIVEKIT_RECORDER_CONFIG` = `config`.
    pub fn start(config: &serde_json::Value, args: &[&str]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(["--log-format", "json"])
            .args(args)
            .env("LIVEKIT_RECORDER_CONFIG", config.to_string());
        Run::spawn(cmd)
    }

    pub fn spawn(mut cmd: Command) -> Run {
        cmd.stdin(Stdio::null());
        Run::spawn_with_stdin(cmd)
    }

    /// Like [`spawn`](Self::spawn), with the stdin `cmd` was given (e.g. piped, for control lines).
    pub fn spawn_with_stdin(mut cmd: Command) -> Run {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("PAGECAST_LOG");
        let mut child = cmd.spawn().expect("start pagecast");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Run {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits for a stderr line containing `needle`; returns when it arrived.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Instant {
        self.wait_for_nth(needle, 1, timeout)
    }

    /// Waits for the `n`th stderr line (from 1) containing `needle`; returns when it arrived.
    pub fn wait_for_nth(&mut self, needle: &str, n: usize, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((at, _)) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, l)| l.contains(needle))
                .nth(n - 1)
            {
                return *at;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to collect the last lines, then one last look.
                std::thread::sleep(Duration::from_millis(100));
                if let Some((at, _)) = self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, l)| l.contains(needle))
                    .nth(n - 1)
                {
                    return *at;
                }
                panic!(
                    "pagecast exited ({status}) before logging {needle:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls `cond` every 20 ms until it is true; on timeout panics with `what` and this run's
    /// log, so a wait on something outside pagecast (a server, a file) still shows what it did.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; pagecast's log:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// When the `n`th stderr line (from 1) containing `needle` arrived, if it has.
    pub fn seen_nth(&self, needle: &str, n: usize) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .nth(n - 1)
            .map(|(at, _)| *at)
    }

    /// How many stderr lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .count()
    }

    /// Waits for the exit (killing it after `timeout`); returns the status and when it exited.
    pub fn wait(&mut self, timeout: Duration) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let at = Instant::now();
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return (status, at);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "pagecast did not exit within {timeout:?}:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bundled demo page (motion + tone) as a file URL.
pub fn demo_page() -> String {
    format!(
        "file://{}",
        pagecast_testkit::repo_root()
            .join("assets/demo/index.html")
            .display()
    )
}

pub fn out_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rec.mp4");
    (dir, file)
}

/// The file names in `dir`, sorted.
pub fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
