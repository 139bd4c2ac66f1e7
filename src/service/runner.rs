//! RunnerActor: the service's running recordings.
//!
//! Owns: one `pagecast record --policy ... --config - --stdin-control` process per running job
//! (this binary, the service's policy as flags, the job's config written to its stdin: a config
//! holds secrets, which an environment or a command line would show to anyone reading /proc;
//! the stdin stays open for control lines, [`UpdateStreams`]), each in its own
//! process group, dying with the service, its log lines passed on to the service's log. Its
//! environment is the minimal one every child gets (`process.rs`), plus the few `PAGECAST_*`
//! settings a recording reads, plus the worker's AWS variables only if the policy lends its
//! identity.
//! With `--warm N` it also keeps N warm trees (`record --warm SIZE --config -`, `src/warm.rs`):
//! each says when it is ready (`WARM_TREE_READY`); a job that fits takes a ready one (its config
//! written to that process's stdin: `JOB_TOOK_WARM_TREE`), any other starts cold
//! (`JOB_COLD_START`), and the pool starts a new tree behind it once that job's page is loaded
//! (`PAGE_LOADED`, or [`REFILL_HOLD`] at most: see there). A warm tree is one process per
//! job, never reused (fresh profile and display). One that dies before a job took it is replaced
//! (`WARM_TREE_LOST`). A job admitted only by making warm trees give way (`StartJob::shed_warm`)
//! stops that many (`WARM_TREE_GAVE_WAY`), and the pool stays that much smaller until it ends.
//! Every second it measures each recording's process tree (`usage.rs`, off its thread) and sends
//! the figures, with which recordings are falling behind real time (their encoder's
//! `ENCODER_FALLING_BEHIND` / `ENCODER_CAUGHT_UP` lines), to the queue as [`Usage`]: what
//! admission (`capacity.rs`) counts. A recording whose tree uses well over the cores admission
//! reserved for it ([`StartJob::reserved`]) is put last: its browser's threads get the lowest
//! priority (`cpu_share.rs`, `RECORDING_PUT_LAST`).
//! Accepts: [`StartJob`], [`PauseJob`] (SIGUSR1 / SIGUSR2; the recording's log says when it
//! has paused or resumed: the runner keeps that state and tells the queue running now),
//! [`ResendPauses`] (a restarted queue asks for every state again: one a crashed queue had not
//! written yet is not lost), [`DiscardJob`] (SIGRTMIN),
//! [`UpdateStreams`] (`add-stream` / `remove-stream` lines on its stdin), [`SetLayout`] (a
//! `layout` line),
//! [`StopJob`] (SIGTERM, once: the recording finishes its file and upload
//! within the stop grace, or is killed), [`Shutdown`] (stop every recording at the same moment the
//! same way, those already stopping left to finish, and wait for them all), [`Kill`].
//! Sends: [`JobEnded`] to the queue for every recording that ends, however it ends (also when
//! the runner itself stops or crashes with recordings running: they are killed and reported).
//! The queue's address comes from the supervisor, now and at each of its restarts
//! ([`SiblingUp`], `ChildLink::follow`).
//! Stops: on `Shutdown`, once every recording has ended (the supervisor kills what takes longer
//! than its shutdown timeout).

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use pagecast_actors::process::{ChildProcess, Stdout};
use pagecast_actors::supervision::{ChildLink, ExitReason, Failure, Kill, Shutdown, SiblingUp};
use tokio::process::Command;

use super::capacity::Cost;
use super::cpu_share::{self, ShareWatch};
use super::queue::{QueueActor, QUEUE};
use super::usage::TreeMeter;
use super::{last_error_line, Ended, WarmPool};
use crate::naming::AttemptOutput;
use crate::policy::Policy;
use crate::warm::WarmSize;
use pagecast_actors::events;

/// The runner's child name in the service's tree (the queue follows it by this name).
pub const RUNNER: &str = "runner";

/// The service's own settings a recording reads; nothing else of the service's environment
/// (its Redis URL, keys) reaches a recording.
const RECORDING_ENV: &[&str] = &[
    "PAGECAST_LOG",
    "PAGECAST_CHROMIUM",
    "PAGECAST_CHROMIUM_NO_SANDBOX",
];

/// Message: run this job's recording.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct StartJob {
    pub id: String,
    /// The recorder config, checked already.
    pub config: String,
    /// Which attempt this is (from 1): attempt N > 1 records under names of its own.
    pub attempt: u32,
    /// Warm trees to stop to make room for it; the pool stays that much smaller until it ends.
    pub shed_warm: usize,
    /// What admission reserved for it: a recording that uses much more CPU is put last
    /// (`cpu_share.rs`).
    pub reserved: Cost,
}

/// Message: stop this job's recording (it finishes its file). SIGTERM is sent once; a later
/// request can only shorten the time it has (`within`: killed after that, whatever the grace).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopJob {
    pub id: String,
    pub within: Option<Duration>,
}

/// Message: pause (`pause`) or resume this job's recording: SIGUSR1 / SIGUSR2 to it. Its log
/// says when it has (the queue is told, [`JobPaused`](super::queue::JobPaused)).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PauseJob {
    pub id: String,
    pub pause: bool,
}

/// Message: discard this job's recording (SIGRTMIN, once: it stops and deletes what it
/// recorded, within the stop grace, or is killed). Also after a stop was sent.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DiscardJob {
    pub id: String,
}

/// Message: add and remove live outputs of this job's recording (control lines on its stdin:
/// the URLs, which hold stream keys, go nowhere else). `Debug` shows them masked.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UpdateStreams {
    pub id: String,
    pub add: Vec<pagecast_actors::secret::StreamUrl>,
    pub remove: Vec<pagecast_actors::secret::StreamUrl>,
}

/// Message: switch this job's LiveKit layout (a `layout` control line).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetLayout {
    pub id: String,
    pub layout: String,
}

/// How often the recordings' process trees are measured.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// Message (to the queue): what the running recordings use and which are falling behind.
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "()")]
pub struct Usage {
    /// By job: its process tree's CPU (cores) and memory at the last measurement.
    pub measured: HashMap<String, Cost>,
    /// Jobs whose encoder is falling behind real time.
    pub behind: HashSet<String>,
    /// Each warm tree: its process tree's CPU and memory (None: not measured yet).
    pub warm: Vec<Option<Cost>>,
    /// How many warm trees are ready for a job (each of those a job of the pool's size takes
    /// instead of starting its own).
    pub warm_ready: usize,
    /// Jobs whose recording has encoded its first frame (`ENCODER_RUNNING`): the others are
    /// still starting.
    pub framed: HashSet<String>,
}

/// Message (from a recording's log lines): its encoder fell behind, or caught up.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Pace {
    id: String,
    behind: bool,
}

/// Message (from a recording's log lines): it paused (`true`) or resumed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Paused {
    id: String,
    paused: bool,
}

/// Message (from a queue actor that starts): send it, as [`JobPaused`](super::queue::JobPaused),
/// the pause state of every running job that has paused.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ResendPauses;

/// How long the pool's refill waits, at most, for a job that has just started to have its page
/// loaded. A new warm tree (Chromium's start above all) takes a core for a second or more: started
/// beside the job, on a 2-core machine it slowed the job's page load and first paint (measured
/// with `bench/run.sh --start`, BENCHMARKS.md).
const REFILL_HOLD: Duration = Duration::from_secs(3);

/// Message (from a job's log lines): its page is loaded; the pool may refill.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct PageLoaded(String);

impl Handler<PageLoaded> for RunnerActor {
    type Result = ();

    fn handle(&mut self, PageLoaded(id): PageLoaded, ctx: &mut Context<Self>) {
        if self.starting.remove(&id) {
            self.refill(ctx);
        }
    }
}

/// Message (from a recording's log lines): its first frame is encoded (every encoder start logs
/// it; the first counts). The queue is told at once: its next job may start.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Framed(String);

impl Handler<Framed> for RunnerActor {
    type Result = ();

    fn handle(&mut self, Framed(id): Framed, _: &mut Context<Self>) {
        if self.jobs.contains_key(&id) && self.usage.framed.insert(id) {
            self.send_usage();
        }
    }
}

/// Message (from a warm tree's log lines): it is ready for a job. Carries its log name.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct WarmReady(String);

impl Handler<WarmReady> for RunnerActor {
    type Result = ();

    fn handle(&mut self, WarmReady(tag): WarmReady, _: &mut Context<Self>) {
        let ready = self.warm.iter_mut().find(|(pid, _)| warm_tag(**pid) == tag);
        if let Some((pid, (_, at))) = ready {
            if at.is_none() {
                *at = Some(Instant::now());
                tracing::info!(pid = *pid, "warm tree ready");
                self.warm_usage();
                self.send_usage();
            }
        }
    }
}

/// The log name of the warm tree `pid` before a job takes it.
fn warm_tag(pid: u32) -> String {
    format!("warm-{pid}")
}

/// Message (to the queue): a recording ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobEnded(pub Ended);

pub struct RunnerActor {
    link: ChildLink,
    /// The program run per job (None: this binary).
    recorder: Option<PathBuf>,
    /// A recording asked to stop gets this long to finish its file and upload before SIGKILL.
    grace: Duration,
    /// Each recording's `--keep-dir`.
    keep_dir: PathBuf,
    policy: Policy,
    /// The queue, as the supervisor last said (None until it is up).
    queue: Option<Addr<QueueActor>>,
    jobs: HashMap<String, ChildProcess>,
    /// Each running job's control lines, written to its stdin in order.
    controls: HashMap<String, tokio::sync::mpsc::UnboundedSender<String>>,
    /// What each running job's attempt records to.
    outputs: HashMap<String, AttemptOutput>,
    stopped_by_us: HashSet<String>,
    /// Jobs sent a discard (once).
    discarded: HashSet<String>,
    /// Whether each running job that has paused is paused now (as its log last said).
    paused: HashMap<String, bool>,
    /// Shutting down: no new recording starts.
    stopping: bool,
    /// None while a measurement runs (on a blocking thread).
    meter: Option<(TreeMeter, ShareWatch)>,
    /// What admission reserved for each running job.
    reserved: HashMap<String, Cost>,
    /// Jobs whose recording ended since the last measurement began: its `ShareWatch` forgets
    /// them (an attempt after under the same id starts afresh).
    ended: Vec<String>,
    usage: Usage,
    /// The warm trees to keep ready.
    pool: WarmPool,
    /// The warm trees, by process id: the process, and since when it is ready.
    warm: HashMap<u32, (ChildProcess, Option<Instant>)>,
    /// The name each warm tree's log lines go under, by process id (the job's once taken).
    tags: HashMap<u32, Arc<Mutex<String>>>,
    /// Each warm tree's last measurement, by process id.
    warm_measured: HashMap<u32, Cost>,
    /// Warm trees stopped to make room for a job, by job: the pool is that much smaller while
    /// it runs.
    lent: HashMap<String, usize>,
    /// Warm trees stopping (given way to a job), by process id.
    retiring: HashMap<u32, ChildProcess>,
    /// Jobs started whose page is not loaded yet: the pool's refill waits for them (at most
    /// [`REFILL_HOLD`]).
    starting: HashSet<String>,
}

impl RunnerActor {
    pub(super) fn new(
        recorder: Option<PathBuf>,
        grace: Duration,
        keep_dir: PathBuf,
        policy: Policy,
        pool: WarmPool,
        link: ChildLink,
    ) -> Self {
        Self {
            link,
            recorder,
            grace,
            keep_dir,
            policy,
            queue: None,
            jobs: HashMap::new(),
            controls: HashMap::new(),
            outputs: HashMap::new(),
            stopped_by_us: HashSet::new(),
            discarded: HashSet::new(),
            paused: HashMap::new(),
            stopping: false,
            meter: Some(Default::default()),
            reserved: HashMap::new(),
            ended: Vec::new(),
            usage: Usage::default(),
            pool,
            warm: HashMap::new(),
            tags: HashMap::new(),
            warm_measured: HashMap::new(),
            lent: HashMap::new(),
            retiring: HashMap::new(),
            starting: HashSet::new(),
        }
    }

    /// Starts `pagecast record` (a job's: `warm` None; a warm tree: its size), its log lines
    /// passed on under the name in `tag` (the job's id, a warm tree's until a job takes it).
    fn spawn_recording(
        &self,
        ctx: &mut Context<Self>,
        tag: Arc<Mutex<String>>,
        warm: Option<WarmSize>,
    ) -> Result<ChildProcess, String> {
        let exe = match &self.recorder {
            Some(program) => program.clone(),
            None => {
                std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?
            }
        };
        let mut cmd = Command::new(exe);
        // The config, then control lines, on standard input.
        cmd.args([
            "--log-format",
            "json",
            "record",
            "--config",
            "-",
            "--stdin-control",
        ])
        .args(self.policy.to_args())
        .env_remove("LIVEKIT_RECORDER_CONFIG")
        .env("PAGECAST_KEEP_DIR", &self.keep_dir);
        if let Some(size) = warm {
            cmd.arg(format!("--warm={size}"));
        }
        for (name, value) in std::env::vars_os() {
            let name_str = name.to_string_lossy();
            let lent = RECORDING_ENV.contains(&name_str.as_ref())
                || (self.policy.worker_aws_identity && name_str.starts_with("AWS_"));
            if lent {
                cmd.env(name, value);
            }
        }
        // Weak: the recording's line reader must not keep the runner alive.
        let me = ctx.address().downgrade();
        let name = tag.lock().map(|t| t.clone()).unwrap_or_default();
        let (child, _) = ChildProcess::spawn_with_lines(
            &format!("recording {name}"),
            cmd,
            true,
            Stdout::Log,
            Box::new(move |line| {
                let job_id = tag.lock().map(|t| t.clone()).unwrap_or_default();
                if let (Some(event), Some(me)) = (watched_event(line), me.upgrade()) {
                    let id = job_id.clone();
                    match event {
                        events::WARM_TREE_READY => me.do_send(WarmReady(id)),
                        events::PAGE_LOADED => me.do_send(PageLoaded(id)),
                        events::ENCODER_RUNNING => me.do_send(Framed(id)),
                        events::ENCODER_FALLING_BEHIND => me.do_send(Pace { id, behind: true }),
                        events::ENCODER_CAUGHT_UP => me.do_send(Pace { id, behind: false }),
                        // Through the runner, to the queue actor running then (not the one
                        // running at the recording's start: it may have been restarted since).
                        events::RECORDING_PAUSED => me.do_send(Paused { id, paused: true }),
                        events::RECORDING_RESUMED => me.do_send(Paused { id, paused: false }),
                        _ => {}
                    }
                }
                super::recording_metrics::observe(line);
                pass_on(&job_id, line)
            }),
        )
        .map_err(|e| e.into_failure().message)?;
        Ok(child)
    }

    /// Starts warm trees until the pool is full (not while stopping, nor while a job that has
    /// just started still loads its page).
    fn refill(&mut self, ctx: &mut Context<Self>) {
        let target = self
            .pool
            .count
            .saturating_sub(self.lent.values().sum::<usize>());
        while !self.stopping && self.starting.is_empty() && self.warm.len() < target {
            let tag = Arc::new(Mutex::new(String::new()));
            let child = match self.spawn_recording(ctx, tag.clone(), Some(self.pool.size)) {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a warm tree");
                    return;
                }
            };
            let pid = child.pid();
            if let Ok(mut t) = tag.lock() {
                *t = warm_tag(pid);
            }
            tracing::info!(pid, size = %self.pool.size, "{}", events::WARM_TREE_STARTING);
            self.tags.insert(pid, tag);
            ctx.spawn(actix::fut::wrap_future(child.exit_report()).map(
                move |(status, _), act: &mut Self, ctx: &mut Context<Self>| {
                    // Taken by a job: its end is the job's (reported with the job).
                    act.retiring.remove(&pid);
                    if act.warm.remove(&pid).is_some() {
                        act.tags.remove(&pid);
                        // Its status only: its lines, the last error among them, were passed on
                        // already (and would repeat its ready line).
                        if !act.stopping {
                            let status = pagecast_actors::process::describe_status(status);
                            tracing::warn!(pid, status = %status, "{}", events::WARM_TREE_LOST);
                        }
                        act.refill(ctx);
                    }
                },
            ));
            self.warm.insert(pid, (child, None));
        }
        self.warm_usage();
        self.send_usage();
    }

    /// The warm trees in the usage: each one's last measurement, and how many are ready.
    fn warm_usage(&mut self) {
        self.warm_measured
            .retain(|pid, _| self.warm.contains_key(pid));
        self.usage.warm = self
            .warm
            .keys()
            .map(|pid| self.warm_measured.get(pid).copied())
            .collect();
        self.usage.warm_ready = self.warm.values().filter(|(_, r)| r.is_some()).count();
    }

    /// Stops `n` warm trees (those not ready first) to make room for the job `id`; the pool
    /// stays that much smaller until the job ends.
    fn shed(&mut self, id: &str, n: usize) {
        let mut pids: Vec<(u32, Option<Instant>)> =
            self.warm.iter().map(|(pid, (_, at))| (*pid, *at)).collect();
        // Not ready first, then the youngest (the one ready longest is the next job's).
        pids.sort_by_key(|(_, at)| (at.is_some(), at.map(|at| at.elapsed())));
        for (pid, _) in pids.into_iter().take(n) {
            if let Some((child, _)) = self.warm.remove(&pid) {
                tracing::info!(pid, job = %id, "{}", events::WARM_TREE_GAVE_WAY);
                child.signal(nix::sys::signal::Signal::SIGTERM);
                actix::spawn(child.wait_or_kill(Duration::from_secs(10)));
                self.tags.remove(&pid);
                self.retiring.insert(pid, child);
            }
        }
        self.lent.insert(id.to_owned(), n);
    }

    /// A warm tree's log lines go under `job` from now on.
    fn retag(&mut self, pid: u32, job: &str) {
        if let Some(tag) = self.tags.remove(&pid) {
            if let Ok(mut t) = tag.lock() {
                *t = job.to_owned();
            }
        }
    }

    /// The ready warm tree a job whose config is `config` takes (the one ready longest), or why
    /// it starts cold.
    fn take_warm(&mut self, config: &str) -> Result<(ChildProcess, Duration), String> {
        if self.pool.count == 0 {
            return Err("no warm pool (--warm)".into());
        }
        let config = crate::config::parse(config).map_err(|e| e.to_string())?;
        if let Some(why) = crate::warm::misfit(&config, &self.pool.size) {
            return Err(why);
        }
        // (One that has just exited, its end not yet handled, is not handed a job.)
        let pid = self
            .warm
            .iter()
            .filter(|(_, (child, _))| child.status().is_none())
            .filter_map(|(pid, (_, ready))| ready.map(|at| (*pid, at)))
            .min_by_key(|(_, at)| *at)
            .map(|(pid, _)| pid)
            .ok_or_else(|| "no warm tree is ready".to_owned())?;
        let (child, ready) = self.warm.remove(&pid).expect("listed");
        Ok((child, ready.map(|at| at.elapsed()).unwrap_or_default()))
    }

    fn send_usage(&self) {
        if let Some(queue) = &self.queue {
            queue.do_send(self.usage.clone());
        }
    }

    fn measure(&mut self, ctx: &mut Context<Self>) {
        let Some((mut meter, mut watch)) = self.meter.take() else {
            return;
        };
        let roots: Vec<(String, u32)> = self
            .jobs
            .iter()
            .map(|(id, child)| (id.clone(), child.pid()))
            .chain(self.warm.keys().map(|pid| (warm_tag(*pid), *pid)))
            .collect();
        let reserved = self.reserved.clone();
        let framed = self.usage.framed.clone();
        let ended = std::mem::take(&mut self.ended);
        let measure = tokio::task::spawn_blocking(move || {
            for job in &ended {
                watch.forget(job);
            }
            let measured = meter.measure(&roots);
            let newly = watch.observe(&measured, &reserved, &framed);
            // The browsers put last, every time: their threads and processes born since too.
            for job in watch.over() {
                cpu_share::put_last(&cpu_share::browser_processes(meter.tree(job)));
            }
            (meter, watch, measured, newly)
        });
        ctx.spawn(
            actix::fut::wrap_future(measure).map(|result, act: &mut Self, _| {
                let Ok((meter, watch, measured, newly)) = result else {
                    act.meter = Some(Default::default());
                    return;
                };
                for over in newly {
                    let pid = act.jobs.get(&over.job).map(ChildProcess::pid);
                    tracing::warn!(
                        job = %over.job,
                        pid,
                        cores = format!("{:.2}", over.cores),
                        allowed = format!("{:.2}", over.allowed),
                        "{}",
                        events::RECORDING_PUT_LAST
                    );
                    super::recording_metrics::put_last();
                }
                for (pid, cost) in act
                    .warm
                    .keys()
                    .filter_map(|pid| Some((*pid, *measured.get(&warm_tag(*pid))?)))
                    .collect::<Vec<_>>()
                {
                    act.warm_measured.insert(pid, cost);
                }
                act.warm_usage();
                // A recording that ended meanwhile is not counted any more; one put last counts
                // for no more than its allowance (what its browser takes beyond that, it takes
                // only from idle cores).
                act.usage.measured = measured
                    .into_iter()
                    .filter(|(id, _)| act.jobs.contains_key(id))
                    .map(|(id, used)| {
                        let counted = match act.reserved.get(&id) {
                            Some(reserved) => watch.counted(&id, used, reserved),
                            None => used,
                        };
                        (id, counted)
                    })
                    .collect();
                act.meter = Some((meter, watch));
                act.send_usage();
            }),
        );
    }

    fn report(
        &mut self,
        id: String,
        status: std::process::ExitStatus,
        report: String,
        tail: String,
        output: Option<(u32, String)>,
    ) {
        self.jobs.remove(&id);
        self.controls.remove(&id);
        self.outputs.remove(&id);
        self.discarded.remove(&id);
        self.paused.remove(&id);
        self.lent.remove(&id);
        self.starting.remove(&id);
        self.usage.measured.remove(&id);
        self.usage.framed.remove(&id);
        self.reserved.remove(&id);
        self.ended.push(id.clone());
        if self.usage.behind.remove(&id) {
            self.send_usage();
        }
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
            output,
        };
        tracing::info!(job = %ended.id, code = ?ended.code, signal = ?status.signal(), "recording ended");
        super::recording_metrics::ended(ended.code);
        match &self.queue {
            Some(queue) => queue.do_send(JobEnded(ended)),
            None => {
                tracing::error!(job = %ended.id, "no queue to report the end of a recording to")
            }
        }
    }
}

impl Actor for RunnerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The queue's address now and at each of its restarts.
        self.link.follow(QUEUE, ctx.address().recipient());
        ctx.run_interval(MEASURE_EVERY, |act, ctx| act.measure(ctx));
        self.refill(ctx);
    }
}

impl Handler<SiblingUp<Addr<QueueActor>>> for RunnerActor {
    type Result = ();

    fn handle(&mut self, SiblingUp(queue): SiblingUp<Addr<QueueActor>>, _: &mut Context<Self>) {
        self.queue = Some(queue);
    }
}

impl RunnerActor {
    /// Tells the queue actor running now that `id` paused or resumed.
    fn tell_paused(&self, id: &str, paused: bool) {
        if let Some(queue) = &self.queue {
            queue.do_send(super::queue::JobPaused {
                id: id.to_owned(),
                paused,
            });
        }
    }
}

impl Handler<Paused> for RunnerActor {
    type Result = ();

    fn handle(&mut self, Paused { id, paused }: Paused, _: &mut Context<Self>) {
        if !self.jobs.contains_key(&id) {
            return;
        }
        self.paused.insert(id.clone(), paused);
        self.tell_paused(&id, paused);
    }
}

impl Handler<ResendPauses> for RunnerActor {
    type Result = ();

    fn handle(&mut self, _: ResendPauses, _: &mut Context<Self>) {
        for (id, paused) in &self.paused {
            self.tell_paused(id, *paused);
        }
    }
}

impl Handler<Pace> for RunnerActor {
    type Result = ();

    fn handle(&mut self, Pace { id, behind }: Pace, _: &mut Context<Self>) {
        if !self.jobs.contains_key(&id) {
            return;
        }
        let changed = if behind {
            self.usage.behind.insert(id)
        } else {
            self.usage.behind.remove(&id)
        };
        if changed {
            self.send_usage();
        }
    }
}

/// However the runner goes (a panic included), the recordings it still holds die with it (their
/// `ChildProcess` kills them) and the queue hears of each: one killed by this crash, not asked to
/// stop, is run again; one already asked to stop is failed.
impl Drop for RunnerActor {
    fn drop(&mut self) {
        let Some(queue) = self.queue.clone() else {
            return;
        };
        for (id, _) in self.jobs.drain() {
            tracing::warn!(job = %id, "the runner stopped with this recording still running; it is killed");
            let output = self
                .outputs
                .get(&id)
                .map(|o| (o.attempt, super::attempt::unmeasured(o)));
            queue.do_send(JobEnded(Ended {
                stopped_by_us: self.stopped_by_us.contains(&id),
                output,
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
        // The names are filled in here, not in the recording, so that they can be listed in the
        // job's state; a later attempt never writes over an earlier one's recording.
        let (config, output) =
            crate::naming::for_attempt(&job.config, job.attempt, std::time::SystemTime::now())?;
        // On one line: the control lines follow it.
        let config = serde_json::from_str::<serde_json::Value>(&config)
            .map(|v| v.to_string())
            .unwrap_or(config);
        if job.shed_warm > 0 {
            self.shed(&job.id, job.shed_warm);
        }
        let mut child = match self.take_warm(&config) {
            Ok((child, waited)) => {
                tracing::info!(job = %job.id, pid = child.pid(), waited = ?waited, "{}", events::JOB_TOOK_WARM_TREE);
                metrics::counter!("pagecast_job_starts_total", "start" => "warm").increment(1);
                child
            }
            Err(why) => {
                tracing::info!(job = %job.id, why = %why, "{}", events::JOB_COLD_START);
                metrics::counter!("pagecast_job_starts_total", "start" => "cold").increment(1);
                self.spawn_recording(ctx, Arc::new(Mutex::new(job.id.clone())), None)?
            }
        };
        // A warm tree's log lines are the job's from now on.
        self.retag(child.pid(), &job.id);
        if let Some(mut stdin) = child.take_stdin() {
            // The config (one JSON value), then control lines as they come; closed with the
            // runner's end of the channel. A recording that dies before reading it fails, and
            // is reported, like any other.
            let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
            self.controls.insert(job.id.clone(), tx);
            ctx.spawn(actix::fut::wrap_future(async move {
                use tokio::io::AsyncWriteExt;
                if stdin.write_all(config.as_bytes()).await.is_err()
                    || stdin.write_all(b"\n").await.is_err()
                {
                    return;
                }
                while let Some(line) = lines.recv().await {
                    if stdin.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }));
        }
        tracing::info!(job = %job.id, pid = child.pid(), attempt = job.attempt, "recording started");
        super::recording_metrics::started();
        let report = child.exit_report();
        let keep_file = self
            .keep_dir
            .join(crate::run::upload_file_name(child.pid()));
        let id = job.id.clone();
        let measured_output = output.clone();
        ctx.spawn(
            actix::fut::wrap_future(report)
                .map(move |(status, report), act: &mut Self, _| {
                    let tail = act
                        .jobs
                        .get(&id)
                        .map(ChildProcess::stderr_tail)
                        .unwrap_or_default();
                    (id, status, report, tail)
                })
                .then(move |(id, status, report, tail), _: &mut Self, _| {
                    let measure = async move {
                        let json =
                            super::attempt::measured(&measured_output, Some(keep_file), &tail)
                                .await;
                        (id, status, report, tail, (measured_output.attempt, json))
                    };
                    actix::fut::wrap_future(measure)
                })
                .map(|(id, status, report, tail, output), act: &mut Self, ctx| {
                    act.report(id, status, report, tail, Some(output));
                    // The warm trees it took the room of come back.
                    act.refill(ctx);
                }),
        );
        self.jobs.insert(job.id.clone(), child);
        self.reserved.insert(job.id.clone(), job.reserved);
        // The pool refills once this job's page is loaded, or after REFILL_HOLD.
        if self.pool.count > 0 {
            self.starting.insert(job.id.clone());
            let id = job.id.clone();
            ctx.run_later(REFILL_HOLD, move |act, ctx| {
                if act.starting.remove(&id) {
                    act.refill(ctx);
                }
            });
        }
        self.outputs.insert(job.id, output);
        self.refill(ctx);
        Ok(())
    }
}

impl Handler<StopJob> for RunnerActor {
    type Result = ();

    fn handle(&mut self, msg: StopJob, _: &mut Context<Self>) {
        let Some(child) = self.jobs.get(&msg.id) else {
            return;
        };
        if self.stopped_by_us.insert(msg.id.clone()) {
            tracing::info!(job = %msg.id, "stop requested: finishing the recording");
            let grace = msg.within.map_or(self.grace, |w| w.min(self.grace));
            actix::spawn(child.terminate(grace));
        } else if let Some(within) = msg.within {
            // Already stopping (a second SIGTERM would end it without finishing): only bound it.
            actix::spawn(child.wait_or_kill(within));
        }
    }
}

impl Handler<PauseJob> for RunnerActor {
    type Result = ();

    fn handle(&mut self, msg: PauseJob, _: &mut Context<Self>) {
        let Some(child) = self.jobs.get(&msg.id) else {
            return;
        };
        if self.stopped_by_us.contains(&msg.id) {
            return;
        }
        let (signal, what) = if msg.pause {
            (nix::sys::signal::Signal::SIGUSR1, "pause")
        } else {
            (nix::sys::signal::Signal::SIGUSR2, "resume")
        };
        tracing::info!(job = %msg.id, "{what} requested");
        // To the recording alone, not its process group: SIGUSR1's default action ends a process.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.pid() as i32), signal);
    }
}

impl Handler<UpdateStreams> for RunnerActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateStreams, _: &mut Context<Self>) {
        let Some(lines) = self.controls.get(&msg.id) else {
            return;
        };
        if self.stopped_by_us.contains(&msg.id) {
            return;
        }
        tracing::info!(job = %msg.id, add = ?msg.add, remove = ?msg.remove, "live outputs update requested");
        // Each URL is one line: one holding a line break (or any blank) would be two controls.
        let one_line = |url: &&pagecast_actors::secret::StreamUrl| {
            let ok = !url
                .expose()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                tracing::warn!(job = %msg.id, url = %url, "a live output with a blank or a control character ignored");
            }
            ok
        };
        for url in msg.remove.iter().filter(one_line) {
            let _ = lines.send(format!("remove-stream {}\n", url.expose()));
        }
        for url in msg.add.iter().filter(one_line) {
            let _ = lines.send(format!("add-stream {}\n", url.expose()));
        }
    }
}

impl Handler<SetLayout> for RunnerActor {
    type Result = ();

    fn handle(&mut self, msg: SetLayout, _: &mut Context<Self>) {
        let Some(lines) = self.controls.get(&msg.id) else {
            return;
        };
        tracing::info!(job = %msg.id, layout = %msg.layout, "layout switch requested");
        let _ = lines.send(format!("layout {}\n", msg.layout));
    }
}

impl Handler<DiscardJob> for RunnerActor {
    type Result = ();

    fn handle(&mut self, msg: DiscardJob, _: &mut Context<Self>) {
        let Some(child) = self.jobs.get(&msg.id) else {
            return;
        };
        if !self.discarded.insert(msg.id.clone()) {
            return;
        }
        tracing::info!(job = %msg.id, "discard requested: stopping the recording and deleting it");
        let first_stop = self.stopped_by_us.insert(msg.id.clone());
        // To the recording alone, not its process group.
        if let Err(e) = crate::controls::send_discard(child.pid()) {
            tracing::warn!(job = %msg.id, error = %e, "cannot signal the recording to discard it");
        }
        if first_stop {
            actix::spawn(child.wait_or_kill(self.grace));
        }
    }
}

impl Handler<Shutdown> for RunnerActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.link.set_exit(ExitReason::Shutdown);
        self.stopping = true;
        // Warm trees hold nothing recorded: asked to stop, killed if they take longer.
        let mut waits = Vec::new();
        for (pid, (child, _)) in &self.warm {
            child.signal(nix::sys::signal::Signal::SIGTERM);
            actix::spawn(child.wait_or_kill(Duration::from_secs(10)));
            waits.push((warm_tag(*pid), child.exit_report()));
        }
        for (id, child) in &self.jobs {
            if self.stopped_by_us.insert(id.clone()) {
                tracing::info!(job = %id, "service stopping: finishing the recording");
                // SIGTERM now, to every recording at once (the futures are polled together).
                child.signal(nix::sys::signal::Signal::SIGTERM);
                actix::spawn(child.wait_or_kill(self.grace));
            }
            waits.push((id.clone(), child.exit_report()));
        }
        let all = futures_util::future::join_all(
            waits
                .into_iter()
                .map(|(id, report)| async move { (id, report.await) }),
        );
        Box::pin(actix::fut::wrap_future(all).map(
            |ended, act: &mut Self, ctx: &mut Context<Self>| {
                for (id, (status, report)) in ended {
                    if let Some(child) = act.jobs.get(&id) {
                        let tail = child.stderr_tail();
                        let output = act
                            .outputs
                            .get(&id)
                            .map(|o| (o.attempt, super::attempt::unmeasured(o)));
                        act.report(id, status, report, tail, output);
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

/// The events of a recording's log the runner acts on.
const WATCHED: [&str; 7] = [
    events::WARM_TREE_READY,
    events::PAGE_LOADED,
    events::ENCODER_RUNNING,
    events::ENCODER_FALLING_BEHIND,
    events::ENCODER_CAUGHT_UP,
    events::RECORDING_PAUSED,
    events::RECORDING_RESUMED,
];

/// Which of [`WATCHED`] a recording's JSON log line is, if any.
fn watched_event(line: &str) -> Option<&'static str> {
    // Cheap first: most lines are none of them.
    if !WATCHED.iter().any(|m| line.contains(m)) {
        return None;
    }
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    let message = event.get("message")?.as_str()?;
    WATCHED.into_iter().find(|m| *m == message)
}

/// Passes one line a recording printed (its JSON log, `--log-format json`) on to the service's
/// log at the line's own level, tagged with the job: `job`, the line's `message`, and its other
/// fields as `fields`. A line that is not a JSON log event (its final `pagecast: <error>`, a
/// panic) is a warning.
fn pass_on(job: &str, line: &str) {
    let Ok(serde_json::Value::Object(mut event)) = serde_json::from_str(line) else {
        tracing::warn!(target: "pagecast::recording", job = %job, "{line}");
        return;
    };
    let level = event
        .remove("level")
        .and_then(|l| l.as_str().map(str::to_owned))
        .unwrap_or_default();
    let message = match event.remove("message") {
        Some(serde_json::Value::String(m)) => m,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    event.remove("timestamp");
    let fields = event
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    match level.as_str() {
        "ERROR" => {
            tracing::error!(target: "pagecast::recording", job = %job, fields = %fields, "{message}")
        }
        "WARN" => {
            tracing::warn!(target: "pagecast::recording", job = %job, fields = %fields, "{message}")
        }
        "INFO" => {
            tracing::info!(target: "pagecast::recording", job = %job, fields = %fields, "{message}")
        }
        "DEBUG" => {
            tracing::debug!(target: "pagecast::recording", job = %job, fields = %fields, "{message}")
        }
        _ => {
            tracing::trace!(target: "pagecast::recording", job = %job, fields = %fields, "{message}")
        }
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
