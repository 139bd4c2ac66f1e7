//! RunnerActor: the service's running recordings.
//!
//! Owns: one `pagecast record --policy ... --config -` process per running job (this binary, the
//! service's policy as flags, the job's config on its stdin: never in its environment or command
//! line, both readable in /proc), each in its own process group, dying with the service, its
//! stderr drained into the service's log (debug level) with the last lines kept. Its environment
//! is the minimal one every child gets (`process.rs`), plus the few `PAGECAST_*` settings a
//! recording reads, plus the worker's AWS variables only if the policy lends its identity.
//! Accepts: [`StartJob`], [`StopJob`] (SIGTERM: the recording finishes its file and upload),
//! [`Shutdown`] (stop every recording the same way and wait for them), [`Kill`].
//! Sends: [`JobEnded`] to the queue for every recording that ends, however it ends (also when
//! the runner itself stops or crashes with recordings running: they are killed and reported).
//! Stops: on `Shutdown`, once every recording has ended (the supervisor kills what takes longer
//! than its shutdown timeout).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use pagecast_actors::process::{ChildProcess, Stdout};
use pagecast_actors::supervision::{ChildLink, ExitReason, Failure, Kill, Shutdown};
use tokio::process::Command;

use super::{last_error_line, Ended, Wiring};
use crate::policy::Policy;

/// The service's own settings a recording reads; nothing else of the service's environment
/// (its Redis URL, keys) reaches a recording.
const RECORDING_ENV: &[&str] = &[
    "PAGECAST_LOG",
    "PAGECAST_CHROMIUM",
    "PAGECAST_CHROMIUM_NO_SANDBOX",
];

/// A recording asked to stop gets this long to finish its file and upload before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(100);

/// Message: run this job's recording.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct StartJob {
    pub id: String,
    /// The recorder config, checked already.
    pub config: String,
}

/// Message: stop this job's recording (it finishes its file).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopJob {
    pub id: String,
}

/// Message (to the queue): a recording ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobEnded(pub Ended);

pub struct RunnerActor {
    link: ChildLink,
    /// The program run per job (None: this binary).
    recorder: Option<PathBuf>,
    policy: Policy,
    wiring: Rc<RefCell<Wiring>>,
    jobs: HashMap<String, ChildProcess>,
    stopped_by_us: HashSet<String>,
    /// Shutting down: no new recording starts.
    stopping: bool,
}

impl RunnerActor {
    pub(super) fn new(
        recorder: Option<PathBuf>,
        policy: Policy,
        wiring: Rc<RefCell<Wiring>>,
        link: ChildLink,
    ) -> Self {
        Self {
            link,
            recorder,
            policy,
            wiring,
            jobs: HashMap::new(),
            stopped_by_us: HashSet::new(),
            stopping: false,
        }
    }

    fn report(
        &mut self,
        id: String,
        status: std::process::ExitStatus,
        report: String,
        tail: String,
    ) {
        self.jobs.remove(&id);
        let stopped_by_us = self.stopped_by_us.remove(&id);
        let message = last_error_line(&tail).unwrap_or_else(|| {
            if status.success() {
                String::new()
            } else {
                report
            }
        });
        let ended = Ended {
            id,
            code: status.code(),
            stopped_by_us,
            message,
        };
        tracing::info!(job = %ended.id, code = ?ended.code, signal = ?status.signal(), "recording ended");
        match &self.wiring.borrow().queue {
            Some(queue) => queue.do_send(JobEnded(ended)),
            None => {
                tracing::error!(job = %ended.id, "no queue to report the end of a recording to")
            }
        }
    }
}

impl Actor for RunnerActor {
    type Context = Context<Self>;
}

/// However the runner goes (a panic included), the recordings it still holds die with it (their
/// `ChildProcess` kills them) and the queue hears of each: one killed by this crash, not asked to
/// stop, is run again; one already asked to stop is failed.
impl Drop for RunnerActor {
    fn drop(&mut self) {
        let Some(queue) = self.wiring.borrow().queue.clone() else {
            return;
        };
        for (id, _) in self.jobs.drain() {
            tracing::warn!(job = %id, "the runner stopped with this recording still running; it is killed");
            queue.do_send(JobEnded(Ended {
                stopped_by_us: self.stopped_by_us.contains(&id),
                id,
                code: None,
                message: "the service's runner stopped while it ran".into(),
            }));
        }
    }
}

impl Handler<StartJob> for RunnerActor {
    type Result = Result<(), String>;

    fn handle(&mut self, job: StartJob, ctx: &mut Context<Self>) -> Self::Result {
        if self.stopping {
            return Err("the service is stopping".into());
        }
        let exe = match &self.recorder {
            Some(program) => program.clone(),
            None => {
                std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?
            }
        };
        let mut cmd = Command::new(exe);
        cmd.args(["--log-format", "json", "record", "--config", "-"])
            .args(self.policy.to_args());
        for (name, value) in std::env::vars_os() {
            let name_str = name.to_string_lossy();
            let lent = RECORDING_ENV.contains(&name_str.as_ref())
                || (self.policy.worker_aws_identity && name_str.starts_with("AWS_"));
            if lent {
                cmd.env(name, value);
            }
        }
        let (mut child, _) =
            ChildProcess::spawn(&format!("recording {}", job.id), cmd, true, Stdout::Log)
                .map_err(|e| e.into_failure().message)?;
        // The config is written and stdin closed at once: the recording reads it to its end
        // before anything else.
        if let Some(mut stdin) = child.take_stdin() {
            let config = job.config.into_bytes();
            actix::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stdin.write_all(&config).await;
            });
        }
        tracing::info!(job = %job.id, pid = child.pid(), "recording started");
        let report = child.exit_report();
        let id = job.id.clone();
        ctx.spawn(actix::fut::wrap_future(report).map(
            move |(status, report), act: &mut Self, _| {
                let tail = act
                    .jobs
                    .get(&id)
                    .map(ChildProcess::stderr_tail)
                    .unwrap_or_default();
                act.report(id, status, report, tail);
            },
        ));
        self.jobs.insert(job.id, child);
        Ok(())
    }
}

impl Handler<StopJob> for RunnerActor {
    type Result = ();

    fn handle(&mut self, msg: StopJob, _: &mut Context<Self>) {
        if let Some(child) = self.jobs.get(&msg.id) {
            if self.stopped_by_us.insert(msg.id.clone()) {
                tracing::info!(job = %msg.id, "stop requested: finishing the recording");
                let stop = child.terminate(STOP_GRACE);
                actix::spawn(async move {
                    stop.await;
                });
            }
        }
    }
}

impl Handler<Shutdown> for RunnerActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.link.set_exit(ExitReason::Shutdown);
        self.stopping = true;
        let mut waits = Vec::new();
        for (id, child) in &self.jobs {
            self.stopped_by_us.insert(id.clone());
            tracing::info!(job = %id, "service stopping: finishing the recording");
            let stop = child.terminate(STOP_GRACE);
            let report = child.exit_report();
            let tail = {
                let id = id.clone();
                move |act: &Self| {
                    act.jobs
                        .get(&id)
                        .map(ChildProcess::stderr_tail)
                        .unwrap_or_default()
                }
            };
            let id = id.clone();
            waits.push((id, stop, report, tail));
        }
        let all = async move {
            let mut ended = Vec::new();
            for (id, stop, report, tail) in waits {
                stop.await;
                let (status, report) = report.await;
                ended.push((id, status, report, tail));
            }
            ended
        };
        Box::pin(actix::fut::wrap_future(all).map(
            |ended, act: &mut Self, ctx: &mut Context<Self>| {
                for (id, status, report, tail) in ended {
                    if act.jobs.contains_key(&id) {
                        let tail = tail(act);
                        act.report(id, status, report, tail);
                    }
                }
                ctx.stop();
                Ok(())
            },
        ))
    }
}

impl Handler<Kill> for RunnerActor {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.link.set_exit(ExitReason::Shutdown);
        // Dropped with the actor, they are killed (their process groups) and reported.
        ctx.stop();
    }
}

/// Message (tests only): panic, as a bug would.
#[cfg(test)]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Crash;

#[cfg(test)]
impl Handler<Crash> for RunnerActor {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("the runner crashed on purpose");
    }
}
