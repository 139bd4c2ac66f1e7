//! `pagecast serve`: the long-lived recording service. Jobs come from a Redis list; each runs as a
//! `pagecast record` child process of this binary (one recording's crash never touches another);
//! several machines share one queue.
//!
//! ```text
//! service (one-for-one)
//! ├── queue    QueueActor    owns the store (queue.rs; Redis in store.rs, stop requests in
//! │                          control.rs): the lease, takes jobs, writes results, moves the jobs
//! │                          of dead workers back to the queue
//! ├── runner   RunnerActor   owns one `pagecast record` process per running job
//! └── api      ApiActor      with `--http`: LiveKit's Egress API (`egress/`), whose jobs go
//!                            through the same queue
//! ```
//!
//! The job protocol (every key under the queue name `Q`, default `pagecast`, as a hash tag
//! `{Q}`: one Redis Cluster slot for all, see [`Keys`]; the channels `Q:events` and `Q:control`
//! are not keys):
//! - `LPUSH {Q}:jobs '{"id": "...", "config": {...}}'`: a job; `config` is exactly what
//!   `LIVEKIT_RECORDER_CONFIG` takes. Stored sealed it is `{"id": "...", "sealed": "<base64>"}`
//!   (`sealed.rs`); a clear one is re-stored sealed by the worker that takes it.
//! - A worker with a free slot moves it atomically to `{Q}:processing:<worker>` (`LMOVE`), so a job
//!   is never lost: if the worker dies, its list stays behind and another worker moves it back.
//!   A job whose id is running is refused there (atomically, a Lua script). [`submit`]
//!   (`pagecast submit`) checks the job first, seals it and marks it `queued`.
//! - `{Q}:job:<id>` (hash): `state` (queued, running, paused, done, failed, requeued), `worker`, `attempts`,
//!   `started_at`, `ended_at` (unix seconds), `exit_code`, `message`, `stop`, and for each
//!   attempt N `attempt_<N>`: what it left, as JSON (`file`, `s3`, `kept`, `seconds`). Attempt
//!   N > 1 records to `<stem>-attempt<N>.mp4` (and the same suffix on the S3 key): never over an
//!   earlier one. Each change is published on `Q:events` as JSON. Expires after the retention
//!   once done or failed.
//! - `PUBLISH Q:control '{"stop": "<id>"}'`: stop that recording (SIGTERM; it finishes its file
//!   and upload). `HSET {Q}:job:<id> stop 1` does the same and is not lost if the worker is
//!   reconnecting when it is sent (it is read every round). `{"pause": "<id>"}` and
//!   `{"resume": "<id>"}` pause and resume it (SIGUSR1 / SIGUSR2 to its recording); `state`
//!   becomes `paused` (and `running` again) when the recording says it has paused (resumed).
//!   `{"discard": "<id>"}` stops it and deletes what it recorded (SIGRTMIN; exit code 6).
//!   Those too have a field read every round ([`store::Asked`]): `discard 1`, and `pause 1` or
//!   `0`, the state the recording is to be in (it wins, at the next round, over a message that
//!   asked otherwise). What was asked of a run is cleared when its result is written.
//!   `{"update_stream": "<id>", "sealed": "…", "seq": N}` adds and removes live outputs
//!   ([`StreamUpdate`], sealed with the job key: the egress API's `UpdateStream`; `add-stream` /
//!   `remove-stream` lines on the recording's stdin). Each is kept in the job's hash too
//!   (`stream_updates` counts them, `stream_update_<N>` holds each, sealed): every round applies
//!   those a recording has not had yet, in order, so none is lost while a worker reconnects, and
//!   a job run again gets them all again. `{"update_layout": "<id>", "layout": "<name>"}` switches a
//!   LiveKit layout in place (a `layout` line); so does `HSET {Q}:job:<id> layout <name>`, read
//!   every round and kept for a job run again (the egress API's `UpdateLayout` does both).
//! - `{Q}:worker:<worker>`: the worker's heartbeat, its lease (a key with a time to live, its value
//!   the worker process's own token); `{Q}:workers`: the set of workers, to find the dead ones.
//!
//! Before the tree starts, [`serve`] connects (unreachable: exit 4 naming the host), claims the
//! worker id (a live worker with the same id: exit 2) and moves any job left in its own processing
//! list by an earlier run with the same id back to the queue.
//!
//! Retries: a recording killed by a signal nobody sent it is run again, up to [`MAX_ATTEMPTS`]
//! times; one that exits with a code is done (0) or failed (the code says why, see `exit.rs`), and
//! not retried: a bad config, page or output stays bad.

mod attempt;
pub mod calibration;
pub mod capacity;
mod control;
mod cpu_share;
pub mod egress;
mod queue;
mod recording_metrics;
mod runner;
pub mod sealed;
mod store;
pub(crate) mod usage;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use pagecast_actors::supervision::{
    ChildSpec, Intensity, Restart, StopTree, Strategy, Supervisor, SupervisorConfig, TreeExit,
};
use serde::Deserialize;

use crate::exit::Exit;
use crate::run::Outcome;
use crate::shutdown::{Level, Shutdown, SECOND_SIGNAL_SERVICE};
use queue::QueueActor;
use runner::RunnerActor;
use sealed::JobKey;
use store::Store;

/// How often a job is tried before it is failed for good.
pub const MAX_ATTEMPTS: u32 = 3;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub redis: String,
    pub queue: String,
    pub max_recordings: usize,
    pub worker_id: String,
    /// The heartbeat's time to live, the worker's lease: a worker silent this long is taken for
    /// dead; one that cannot renew it for a third of it stops its recordings.
    pub heartbeat_ttl: Duration,
    /// Jobs are sealed with it in Redis (`PAGECAST_JOB_KEY`).
    pub job_key: Option<Arc<JobKey>>,
    /// Without a key, run jobs carrying secrets anyway (they rest in Redis in clear).
    pub trusted_redis: bool,
    /// How long a recording asked to stop has to finish its file and upload before SIGKILL.
    pub stop_grace: Duration,
    /// How long a finished job's hash stays.
    pub retention: Duration,
    /// Where a recording whose S3 upload gave up is kept (`--keep-dir` of each recording).
    pub keep_dir: std::path::PathBuf,
    /// The program run for each job, with `--log-format json record` (None: this binary).
    /// Tests put a stand-in here.
    pub recorder: Option<std::path::PathBuf>,
    /// What a job may do: every recording is run with it (`record --policy ...`).
    pub policy: crate::policy::Policy,
    /// The machine the recordings share (`capacity.rs`).
    pub machine: capacity::Machine,
    /// Measure the machine's cost factor before taking jobs (`calibration.rs`); otherwise
    /// `machine.cost_factor` stands as given.
    pub calibrate: bool,
    /// Measure it again this long after the last time, when no recording runs (None: never).
    pub recalibrate_every: Option<Duration>,
    /// The share of it recordings may use together (`--max-utilisation`).
    pub max_utilisation: f64,
    /// Recordings that may be starting at once (`--concurrent-starts`).
    pub concurrent_starts: usize,
    /// The warm trees kept ready (`--warm`, `--warm-size`).
    pub warm: WarmPool,
    /// LiveKit's Egress API (`--http`), if served.
    pub api: Option<egress::ApiOptions>,
}

/// How many warm trees the runner keeps ready, and of which size (`src/warm.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmPool {
    pub count: usize,
    pub size: crate::warm::WarmSize,
}

impl ServiceOptions {
    pub fn keys(&self) -> Keys {
        Keys {
            queue: self.queue.clone(),
        }
    }

    /// The admission rule: cost against what is left, at most `max_recordings`.
    pub fn admission(&self) -> capacity::Admission {
        capacity::Admission {
            machine: self.machine,
            max_utilisation: self.max_utilisation,
            max_recordings: self.max_recordings,
            concurrent_starts: self.concurrent_starts,
        }
    }
}

/// Where a job stands (`state` in its hash and in its events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    /// Running, paused (`{"pause": id}`): nothing is encoded until `{"resume": id}`.
    Paused,
    Done,
    Failed,
    Requeued,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Paused,
        JobState::Done,
        JobState::Failed,
        JobState::Requeued,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Requeued => "requeued",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// The job is over (its hash expires after the retention).
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }

    /// The state a decision leaves a job in.
    pub fn of(decision: Decision) -> JobState {
        match decision {
            Decision::Done => JobState::Done,
            Decision::Failed => JobState::Failed,
            Decision::Requeue => JobState::Requeued,
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request on `Q:control`, naming one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// `{"stop": "<id>"}`: finish the recording.
    Stop(String),
    /// `{"pause": "<id>"}`: pause it (SIGUSR1 to its recording).
    Pause(String),
    /// `{"resume": "<id>"}`: resume it (SIGUSR2).
    Resume(String),
    /// `{"discard": "<id>"}`: stop it and delete what it recorded (SIGRTMIN).
    Discard(String),
    /// `{"update_stream": "<id>", "sealed": "<...>", "seq": N}`: add and remove live outputs;
    /// `sealed` is [`StreamUpdate`] sealed with the job key (its URLs hold stream keys); `seq`,
    /// its number among the job's updates kept in its hash (`stream_update_<N>`), if it is one.
    UpdateStream {
        id: String,
        sealed: String,
        seq: Option<u64>,
    },
    /// `{"update_layout": "<id>", "layout": "<one of pagecast's layouts>"}`: switch a LiveKit
    /// layout while recording.
    UpdateLayout { id: String, layout: String },
}

/// Live outputs to add to and remove from a running job (the egress API's `UpdateStream`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StreamUpdate {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// What a [`StreamUpdate`] is sealed under: not the job's id alone, so that neither can be
/// passed off as the other.
fn stream_update_aad(id: &str) -> String {
    format!("update-stream:{id}")
}

impl StreamUpdate {
    /// It, sealed for job `id` (what the job's hash keeps and a control request carries).
    pub fn seal(&self, id: &str, key: &JobKey) -> Result<String, String> {
        let clear = serde_json::to_string(self).map_err(|e| e.to_string())?;
        let stored: serde_json::Value = serde_json::from_str(
            &key.seal(&stream_update_aad(id), &clear)
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        stored["sealed"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "sealing gave no sealed text".to_owned())
    }

    /// The control request carrying `sealed`, update number `seq` of job `id`.
    pub fn request(id: &str, sealed: &str, seq: u64) -> String {
        serde_json::json!({ "update_stream": id, "sealed": sealed, "seq": seq }).to_string()
    }

    /// The update of a request, opened.
    pub fn open(id: &str, sealed: &str, key: &JobKey) -> Result<StreamUpdate, String> {
        let clear = key
            .open(&stream_update_aad(id), sealed)
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&clear).map_err(|e| e.to_string())
    }
}

/// A request on `Q:control`: an object with one of `stop`, `pause`, `resume`, `discard` naming a
/// job.
/// Anything else is ignored (the channel may carry other requests later).
pub fn parse_control(payload: &str) -> Option<ControlRequest> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let id = |key: &str| {
        v.get(key)?
            .as_str()
            .filter(|id| valid_id(id))
            .map(str::to_owned)
    };
    id("stop")
        .map(ControlRequest::Stop)
        .or_else(|| id("pause").map(ControlRequest::Pause))
        .or_else(|| id("resume").map(ControlRequest::Resume))
        .or_else(|| id("discard").map(ControlRequest::Discard))
        .or_else(|| {
            let layout = v.get("layout")?.as_str()?;
            Some(ControlRequest::UpdateLayout {
                id: id("update_layout")?,
                layout: known_layout(layout)?.to_owned(),
            })
        })
        .or_else(|| {
            Some(ControlRequest::UpdateStream {
                id: id("update_stream")?,
                sealed: v.get("sealed")?.as_str()?.to_owned(),
                seq: v.get("seq").and_then(serde_json::Value::as_u64),
            })
        })
}

/// `name`, if it is one of pagecast's LiveKit layouts (a layout switch asked by message or in
/// the job's hash becomes a line on the recording's stdin: nothing else may pass).
pub fn known_layout(name: &str) -> Option<&'static str> {
    ["grid-dark", "grid-light", "speaker-dark", "speaker-light"]
        .into_iter()
        .find(|l| *l == name)
}

/// The default number of recordings at once: one per two cores (a 1080p30 recording takes about
/// one and a half), at least one.
pub fn default_max_recordings() -> usize {
    std::thread::available_parallelism()
        .map(|n| (n.get() / 2).max(1))
        .unwrap_or(1)
}

/// `<hostname>-<pid>`: unique among the workers of one queue.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "pagecast".into()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

/// The Redis keys and channels of one queue.
///
/// Every key starts with the queue's name as a hash tag, `{Q}:`: Redis Cluster puts keys of
/// one tag in one slot, and a script or a `MULTI` may only touch keys of one slot (taking a job
/// moves it between two lists and marks its hash in one script). The channels are not keys
/// (a cluster carries a publication to every node): `Q:events`, `Q:control`.
#[derive(Debug, Clone)]
pub struct Keys {
    pub queue: String,
}

impl Keys {
    /// `{Q}`: the hash tag every key of the queue starts with.
    pub fn tag(&self) -> String {
        format!("{{{}}}", self.queue)
    }
    pub fn jobs(&self) -> String {
        format!("{}:jobs", self.tag())
    }
    pub fn processing(&self, worker: &str) -> String {
        format!("{}:processing:{worker}", self.tag())
    }
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.tag())
    }
    pub fn worker(&self, worker: &str) -> String {
        format!("{}:worker:{worker}", self.tag())
    }
    pub fn workers(&self) -> String {
        format!("{}:workers", self.tag())
    }
    pub fn events(&self) -> String {
        format!("{}:events", self.queue)
    }
    pub fn control(&self) -> String {
        format!("{}:control", self.queue)
    }
}

/// A job as pushed to the queue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    id: String,
    config: serde_json::Value,
}

/// A job read from the queue: runnable, or refused with a reason (and the exit code a recording
/// would have given).
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Job { id: String, config: String },
    Refused { id: Option<String>, message: String },
}

/// Reads a job: its id must be a short name (it is part of a Redis key) and its config must pass
/// the same checks as `pagecast record`.
pub fn parse_job(raw: &str) -> Parsed {
    let job: RawJob = match serde_json::from_str(raw) {
        Ok(job) => job,
        Err(e) => {
            // The id, if there is one, so the refusal can be recorded under it.
            let id = serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                .filter(|id| valid_id(id));
            return Parsed::Refused {
                id,
                message: format!(
                    "job: not a job object ({}): expected {{\"id\": ..., \"config\": {{...}}}}",
                    strip_position(&e.to_string())
                ),
            };
        }
    };
    if !valid_id(&job.id) {
        return Parsed::Refused {
            id: None,
            message: "job: id must be 1 to 128 characters of A-Z a-z 0-9 . _ -".into(),
        };
    }
    let config = job.config.to_string();
    if config.len() > crate::policy::MAX_CONFIG_BYTES {
        return Parsed::Refused {
            id: Some(job.id),
            message: format!(
                "config: {} bytes of JSON, more than a job may have ({} bytes)",
                config.len(),
                crate::policy::MAX_CONFIG_BYTES
            ),
        };
    }
    match crate::config::parse(&config) {
        Ok(_) => Parsed::Job { id: job.id, config },
        Err(e) => Parsed::Refused {
            id: Some(job.id),
            message: e.to_string(),
        },
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// How a recording process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub id: String,
    /// The exit code; None if a signal ended it.
    pub code: Option<i32>,
    /// The service asked it to stop (a stop request, or the service shutting down).
    pub stopped_by_us: bool,
    /// Its last `pagecast: ...` line, or how it died.
    pub message: String,
    /// The attempt's number and what it left (JSON, see `attempt.rs`).
    pub output: Option<(u32, String)>,
}

/// What becomes of a job whose recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Done,
    Failed,
    /// Killed by something else than us: run it again (on any worker).
    Requeue,
}

/// The retry rule: only a recording that died of a signal it was not sent is run again, and only
/// [`MAX_ATTEMPTS`] times in all.
pub fn decide(ended: &Ended, attempts: u32) -> Decision {
    match ended.code {
        Some(0) => Decision::Done,
        Some(_) => Decision::Failed,
        None if ended.stopped_by_us || attempts >= MAX_ATTEMPTS => Decision::Failed,
        None => Decision::Requeue,
    }
}

/// The last `pagecast: ...` line in a stderr tail (lines joined with " | "), if any.
pub fn last_error_line(tail: &str) -> Option<String> {
    tail.split(" | ")
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find_map(|l| l.trim().strip_prefix("pagecast: ").map(str::to_owned))
}

/// Runs the service until SIGTERM/SIGINT (finishing running recordings) or until it gives up.
pub async fn serve(mut options: ServiceOptions) -> Outcome {
    let client = match redis::Client::open(options.redis.as_str()) {
        Ok(client) => client,
        Err(e) => {
            return Outcome::fail(
                Exit::Config,
                format!("Redis URL: not a Redis URL ({}): {e}", mask(&options.redis)),
            )
        }
    };
    // API jobs carry storage credentials and stream keys: they rest in Redis only sealed.
    let api_key = match (&options.api, &options.job_key) {
        (Some(_), None) => {
            return Outcome::fail(
                Exit::Config,
                format!(
                    "--http: the API submits jobs sealed: set {}",
                    sealed::KEY_VAR
                ),
            )
        }
        (_, key) => key.clone(),
    };
    // Listened for from the start: a SIGTERM that comes as soon as the worker is seen (its
    // heartbeat, set by the pre-flight) stops it cleanly instead of killing it.
    let mut signals = match StopSignals::listen() {
        Ok(signals) => signals,
        Err(e) => return Outcome::fail(Exit::Failed, format!("cannot listen for signals: {e}")),
    };
    // How fast this machine is against the cost model's: measured while the pre-flight below
    // runs (so a taken id or an unreachable Redis is still said at once), known before the tree
    // starts and any job is weighed.
    let calibrating = options
        .calibrate
        .then(|| actix::spawn(calibration::calibrate()));
    // Pre-flight, before the tree: a service that cannot reach its queue, or whose id is taken,
    // has nothing to do.
    let instance = instance_token();
    let con = match store::connect(&client, &options.redis).await {
        Ok(con) => con,
        Err(message) => return Outcome::fail(Exit::Input, message),
    };
    let api_con = con.clone();
    let store = Store::new(con, options.keys(), options.worker_id.clone());
    let api_store = Store::new(api_con.clone(), options.keys(), options.worker_id.clone());
    if let Err(message) = queue::claim_worker_id(store.clone(), &options, &instance).await {
        return Outcome::fail(Exit::Config, message);
    }
    if let Some(mut calibrating) = calibrating {
        // The claimed heartbeat is renewed while the probe runs, as the queue will renew it: a
        // probe longer than a short --heartbeat-ttl does not let the claim lapse.
        let mut renew =
            tokio::time::interval((options.heartbeat_ttl / 3).max(Duration::from_millis(100)));
        renew.tick().await;
        let found = loop {
            tokio::select! {
                found = &mut calibrating => {
                    break found.unwrap_or_else(|e| Err(format!("calibration: {e}")))
                }
                name = signals.stopped() => {
                    // Nothing taken yet: the worker leaves at once (its heartbeat removed).
                    let _ = store.clone().leave().await;
                    tracing::info!(signal = name, "recording service stopped before taking any job");
                    return Outcome::ok();
                }
                _ = renew.tick() => {
                    // A failure shows again, and is handled, in the queue's first round.
                    let _ = store.clone().heartbeat(&instance, options.heartbeat_ttl).await;
                }
            }
        };
        match found {
            Ok(found) => {
                options.machine.cost_factor = found.cost_factor;
                found.log();
            }
            Err(message) => {
                return Outcome::fail(
                    Exit::MissingProgram,
                    format!("{message} (give --cost-factor to start without it)"),
                )
            }
        }
    }
    // Raised by the first signal (no more jobs: the queue reads it) and the second (leave now).
    let shutdown = Shutdown::default();
    // What the recordings hold and what is left (the queue counts, `/healthz` shows).
    let (capacity_report, capacity_read) = tokio::sync::watch::channel(None);
    // The queue and the runner need each other: each follows the other through the supervisor
    // (`ChildLink::follow`), so either may restart alone.
    let queue = {
        let (client, options) = (client.clone(), options.clone());
        let from_service = queue::FromService {
            // The job table a crashed queue actor leaves for the next.
            ledger: queue::LedgerSlot::default(),
            shutdown: shutdown.clone(),
            capacity: capacity_report.clone(),
        };
        ChildSpec::publishing(
            queue::QUEUE,
            Restart::Permanent,
            Duration::from_secs(15),
            move |link| {
                let addr = QueueActor::new(
                    store.clone(),
                    client.clone(),
                    options.clone(),
                    instance.clone(),
                    from_service.clone(),
                    link,
                )
                .start();
                #[cfg(test)]
                tests::QUEUE.with(|q| *q.borrow_mut() = Some(addr.clone()));
                std::future::ready(Ok((addr.clone(), addr)))
            },
        )
    };
    let runner = {
        let (recorder, grace) = (options.recorder.clone(), options.stop_grace);
        let keep_dir = options.keep_dir.clone();
        let policy = options.policy.clone();
        let warm = options.warm;
        // Running recordings finish their files and uploads: give them time.
        ChildSpec::publishing(
            runner::RUNNER,
            Restart::Permanent,
            grace + Duration::from_secs(20),
            move |link| {
                let addr = RunnerActor::new(
                    recorder.clone(),
                    grace,
                    keep_dir.clone(),
                    policy.clone(),
                    warm,
                    link,
                )
                .start();
                #[cfg(test)]
                tests::RUNNER.with(|r| *r.borrow_mut() = Some(addr.clone()));
                std::future::ready(Ok((addr.clone(), addr)))
            },
        )
    };
    // Last, so it is the first to stop: no new requests, then the recordings finish.
    let api = options.api.clone().zip(api_key).map(|(api, key)| {
        let (keys, policy) = (options.keys(), options.policy.clone());
        let (client, worker) = (client.clone(), options.worker_id.clone());
        ChildSpec::new(
            "api",
            Restart::Permanent,
            egress::SHUTDOWN_TIMEOUT,
            move |link| {
                let shared = egress::Shared {
                    store: api_store.clone(),
                    con: api_con.clone(),
                    client: client.clone(),
                    keys: keys.clone(),
                    worker: worker.clone(),
                    job_key: key.clone(),
                    policy: policy.clone(),
                    capacity: capacity_read.clone(),
                };
                std::future::ready(egress::start(api.clone(), shared, link))
            },
        )
    });
    tracing::info!(
        worker = %options.worker_id,
        queue = %options.queue,
        redis = %mask(&options.redis),
        max_recordings = options.max_recordings,
        "recording service starting"
    );
    let (supervisor, exit) = Supervisor::start(
        SupervisorConfig {
            name: "service".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 5,
                period: Duration::from_secs(60),
            },
        },
        [queue, runner].into_iter().chain(api).collect(),
    );
    #[cfg(test)]
    tests::STOP.with(|s| *s.borrow_mut() = Some((supervisor.clone(), shutdown.clone())));
    let signals = actix::spawn(forward_signals(supervisor, signals, shutdown.clone()));
    let exit = tokio::select! {
        exit = exit => exit.unwrap_or(TreeExit::Stopped {
            cause: "supervisor vanished".into(),
            failures: Vec::new(),
        }),
        // A second signal: leave now; the tree dropped with the system kills the recordings.
        () = shutdown.reached(Level::Now) => {
            return Outcome::fail(Exit::Interrupted, SECOND_SIGNAL_SERVICE);
        }
    };
    signals.abort();
    match exit {
        TreeExit::Stopped { cause, .. } => {
            tracing::info!(cause = %cause, "recording service stopped");
            Outcome::ok()
        }
        TreeExit::StartFailed { failure, .. } => {
            Outcome::fail(Exit::for_failure(failure.kind), failure.message)
        }
        TreeExit::GaveUp { child, reason } => {
            Outcome::fail(Exit::Failed, format!("{child} kept failing: {reason}"))
        }
    }
}

/// `pagecast submit`: checks a job as a worker will (bad id or config: exit 2, nothing queued),
/// seals it with the job key (submit pushes nothing in clear: without a key, exit 2), then, in
/// one atomic script, refuses it if its id is queued or running, else marks it `queued`
/// (attempts 0), publishes that and pushes it. Returns the id.
pub async fn submit(
    redis: &str,
    queue: &str,
    id: Option<String>,
    config: &str,
    key: Option<&JobKey>,
) -> Result<String, Outcome> {
    let id = id.unwrap_or_else(|| format!("job-{}", instance_token()));
    let config: serde_json::Value = serde_json::from_str(config)
        .map_err(|e| Outcome::fail(Exit::Config, format!("config: not JSON ({e})")))?;
    let payload = sealed_job(&id, config, key)?;
    let client = redis::Client::open(redis).map_err(|e| {
        Outcome::fail(
            Exit::Config,
            format!("Redis URL: not a Redis URL ({}): {e}", mask(redis)),
        )
    })?;
    let con = store::connect(&client, redis)
        .await
        .map_err(|m| Outcome::fail(Exit::Input, m))?;
    let keys = Keys {
        queue: queue.to_owned(),
    };
    let mut store = Store::new(con, keys, String::new());
    match store.submit(&id, &payload).await {
        Ok(Ok(())) => Ok(id),
        Ok(Err(state)) => Err(Outcome::fail(
            Exit::Config,
            format!("--id: job {id} is already {state}; give the new job another id"),
        )),
        Err(e) => Err(Outcome::fail(Exit::Input, format!("Redis: {e}"))),
    }
}

/// A job checked as a worker will check it (bad id or config: exit 2), sealed with the key
/// (none: exit 2, nothing is pushed in clear): the payload to submit. Shared by `pagecast
/// submit` and the egress API.
fn sealed_job(
    id: &str,
    config: serde_json::Value,
    key: Option<&JobKey>,
) -> Result<String, Outcome> {
    let raw = serde_json::json!({ "id": id, "config": config }).to_string();
    if let Parsed::Refused { message, .. } = parse_job(&raw) {
        return Err(Outcome::fail(Exit::Config, message));
    }
    let key = key.ok_or_else(|| {
        Outcome::fail(
            Exit::Config,
            format!(
                "{}: not set: submit pushes jobs only sealed (give it the workers' key)",
                sealed::KEY_VAR
            ),
        )
    })?;
    key.seal(id, &raw)
        .map_err(|e| Outcome::fail(Exit::Failed, e.to_string()))
}

/// A Redis URL without its password.
fn mask(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("****"));
            }
            u.to_string()
        }
        Err(_) => "****".into(),
    }
}

/// This process's token in its heartbeat: tells it apart from another worker given the same id.
fn instance_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

/// No new jobs (the queue reads `shutdown`), then the tree stops in order (the runner first:
/// every recording finishes).
fn begin_stop(supervisor: &Addr<Supervisor>, shutdown: &Shutdown, cause: String) {
    shutdown.raise(Level::Orderly);
    supervisor.do_send(StopTree { cause });
}

/// SIGTERM and SIGINT, listened for from the moment this is made.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next stop signal's name.
    async fn stopped(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// SIGTERM or SIGINT: no new jobs, then the tree stops in order (the runner first: every
/// recording finishes). A second one raises `shutdown` to [`Level::Now`]: [`serve`] leaves (the
/// recordings die with it).
async fn forward_signals(supervisor: Addr<Supervisor>, signals: StopSignals, shutdown: Shutdown) {
    let mut signals = signals;
    let name = signals.stopped().await;
    tracing::info!(
        signal = name,
        "stopping: no new jobs; finishing the running recordings"
    );
    begin_stop(&supervisor, &shutdown, format!("{name} received"));
    signals.stopped().await;
    shutdown.raise(Level::Now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagecast_testkit::Redis;
    use runner::Crash;
    use std::cell::RefCell;

    thread_local! {
        /// The service a test runs on this thread: its supervisor and its stop.
        pub(super) static STOP: RefCell<Option<(Addr<Supervisor>, Shutdown)>> = const { RefCell::new(None) };
        /// Its queue actor, as last started.
        pub(super) static QUEUE: RefCell<Option<Addr<QueueActor>>> = const { RefCell::new(None) };
        /// Its runner, as last started.
        pub(super) static RUNNER: RefCell<Option<Addr<RunnerActor>>> = const { RefCell::new(None) };
    }

    /// Redis Cluster's slot of `key`: CRC16 (XMODEM) of its hash tag (what is between its first
    /// `{` and the next `}`, if not empty) or of the whole key, modulo 16384.
    fn cluster_slot(key: &str) -> u16 {
        let hashed = key
            .find('{')
            .and_then(|open| {
                let rest = &key[open + 1..];
                rest.find('}').map(|close| &rest[..close])
            })
            .filter(|tag| !tag.is_empty())
            .unwrap_or(key);
        let mut crc: u16 = 0;
        for byte in hashed.bytes() {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    /// Every key of a queue is in one Redis Cluster slot (a script, like the take, and a
    /// `MULTI` may touch only keys of one slot), whatever the queue's name; two queues' keys are
    /// not tied to one slot.
    #[test]
    fn every_key_of_a_queue_is_in_one_cluster_slot() {
        // CRC16/XMODEM's check value (0x31c3), and the hash tags of the cluster specification.
        assert_eq!(cluster_slot("123456789"), 0x31c3);
        assert_eq!(
            cluster_slot("{user1000}.following"),
            cluster_slot("{user1000}.followers")
        );
        for queue in ["pagecast", "t", "a:b", "x{y", "rec-1.eu"] {
            let keys = Keys {
                queue: queue.into(),
            };
            let all = [
                keys.jobs(),
                keys.processing("w1"),
                keys.processing("worker-2.local"),
                keys.job("standup-42"),
                keys.job(""),
                keys.worker("w1"),
                keys.workers(),
                egress::info::record_key(&keys, "EG_1"),
                egress::info::sealed_key(&keys, "EG_1", egress::info::Sealed::Streams),
                egress::info::sealed_key(&keys, "EG_1", egress::info::Sealed::Webhooks),
                egress::info::index_key(&keys),
            ];
            let slot = cluster_slot(&all[0]);
            for key in &all {
                assert!(key.starts_with(&format!("{{{queue}}}:")), "{key}");
                assert_eq!(cluster_slot(key), slot, "{key} is not in {}'s slot", all[0]);
            }
        }
        let (a, b) = (Keys { queue: "a".into() }, Keys { queue: "b".into() });
        assert_ne!(cluster_slot(&a.jobs()), cluster_slot(&b.jobs()));
        // The channels are not keys: no braces, as documented.
        assert_eq!(
            (a.events(), a.control()),
            ("a:events".into(), "a:control".into())
        );
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    /// Queue `t` on `url` as `worker`, with a lease of 30 s (a loaded machine does not lose it)
    /// and a stop grace of 20 s.
    fn test_options(url: String, worker: &str) -> ServiceOptions {
        ServiceOptions {
            redis: url,
            queue: "t".into(),
            max_recordings: 1,
            worker_id: worker.into(),
            heartbeat_ttl: Duration::from_secs(30),
            job_key: None,
            trusted_redis: false,
            stop_grace: Duration::from_secs(20),
            retention: Duration::from_secs(3600),
            keep_dir: std::env::temp_dir().join("pagecast-test-kept"),
            recorder: None,
            policy: Default::default(),
            machine: capacity::Machine {
                cores: 64.0,
                memory: 1 << 40,
                cost_factor: 1.0,
            },
            calibrate: false,
            recalibrate_every: None,
            max_utilisation: capacity::DEFAULT_MAX_UTILISATION,
            concurrent_starts: capacity::DEFAULT_CONCURRENT_STARTS,
            warm: WarmPool::default(),
            api: None,
        }
    }

    /// A stand-in recorder in `dir`, named `name`: it logs `<name> start|pause|resume|term|end
    /// <job> <unix time>` lines to `dir/log`, says it encoded its first frame (as a recording's
    /// log does) at once, runs until SIGTERM, then takes `stop_secs` to finish and exits 0.
    /// SIGUSR1 / SIGUSR2 make it log that it paused / resumed, as a recording does; SIGRTMIN
    /// (discard) makes it exit 6 at once. The job is the stem of its `output.file` (the config
    /// comes on stdin, one line).
    fn stand_in(dir: &std::path::Path, name: &str, stop_secs: f32) -> std::path::PathBuf {
        stand_in_framing(dir, name, stop_secs, 0.0)
    }

    /// [`stand_in`], whose first frame comes `frame_secs` after its start (logged `frame`).
    fn stand_in_framing(
        dir: &std::path::Path,
        name: &str,
        stop_secs: f32,
        frame_secs: f32,
    ) -> std::path::PathBuf {
        let recorder = dir.join(format!("{name}.sh"));
        let log = dir.join("log");
        std::fs::write(
            &recorder,
            format!(
                r#"#!/bin/sh
IFS= read -r config
job=$(printf '%s' "$config" | sed 's/.*"file":"[^"]*\/\([^"/.]*\)\.mp4".*/\1/')
say() {{ echo "{name} $1 $job $(date +%s.%N)" >> {log}; }}
# The traps first: once `start` is logged, a signal is the stand-in's to answer.
trap 'say term; sleep {stop_secs}; say end; exit 0' TERM
trap 'say pause; echo "{{\"level\":\"INFO\",\"message\":\"{paused}\"}}" >&2' USR1
trap 'say resume; echo "{{\"level\":\"INFO\",\"message\":\"{resumed}\"}}" >&2' USR2
trap 'say discard; echo "pagecast: the recording was discarded on request: removed it" >&2; exit 6' {discard}
say start
(sleep {frame_secs}; say frame; echo '{{"level":"INFO","message":"{framed}"}}' >&2) &
# Each control line after the config (a live output added or removed, a layout) logged as one
# event: `add-stream:<url>`. (A list run with `&` reads /dev/null: the stdin goes by fd 3.)
exec 3<&0
while IFS= read -r line <&3; do say "$(printf '%s' "$line" | tr ' ' ':')"; done &
sleep 600 &
sleeper=$!
# A trapped signal ends `wait`: wait again until the sleep is over.
while kill -0 $sleeper 2>/dev/null; do wait $sleeper; done
"#,
                framed = pagecast_actors::events::ENCODER_RUNNING,
                paused = pagecast_actors::events::RECORDING_PAUSED,
                resumed = pagecast_actors::events::RECORDING_RESUMED,
                discard = crate::controls::discard_signal(),
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &recorder,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        recorder
    }

    /// The control lines the stand-ins read, of every job, in order, as they logged them:
    /// those starting with `verb` (`add-stream:<url>`, `layout:<name>`).
    fn control_lines(dir: &std::path::Path, verb: &str) -> Vec<String> {
        let prefix = format!("{verb}:");
        stand_in_log(dir)
            .into_iter()
            .map(|(_, event, _, _)| event)
            .filter(|event| event.starts_with(&prefix))
            .collect()
    }

    /// The stand-ins' log lines: (name, event, job, time).
    fn stand_in_log(dir: &std::path::Path) -> Vec<(String, String, String, f64)> {
        std::fs::read_to_string(dir.join("log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.to_string(),
                    f.get(2)?.to_string(),
                    f.get(3)?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// When a stand-in first logged `event` for `job` (seconds since the epoch).
    fn logged_at(dir: &std::path::Path, event: &str, job: &str) -> Option<f64> {
        stand_in_log(dir)
            .into_iter()
            .find(|(_, e, j, _)| e == event && j == job)
            .map(|(_, _, _, at)| at)
    }

    fn logged(dir: &std::path::Path, event: &str, job: &str) -> usize {
        stand_in_log(dir)
            .iter()
            .filter(|(_, e, j, _)| e == event && j == job)
            .count()
    }

    fn fake_job(id: &str) -> String {
        serde_json::json!({
            "id": id,
            "config": { "input": { "url": "https://example.com" }, "output": { "file": format!("/tmp/{id}.mp4") } },
        })
        .to_string()
    }

    /// Stops the service the way SIGTERM does; its outcome.
    async fn stop_service(service: tokio::task::JoinHandle<Outcome>) -> Outcome {
        let (supervisor, shutdown) = STOP.with(|s| s.borrow().clone()).unwrap();
        begin_stop(&supervisor, &shutdown, "test".into());
        tokio::time::timeout(Duration::from_secs(30), service)
            .await
            .expect("the service to stop")
            .unwrap()
    }

    /// Serves queue `t` as worker `w` with one job, `id`, whose recording is a stand-in script
    /// that runs until SIGTERM and then exits 0.
    fn serve_one_fake_job(
        redis: &Redis,
        id: &str,
    ) -> (tempfile::TempDir, tokio::task::JoinHandle<Outcome>) {
        serve_one_fake_job_with(redis, id, |options| options)
    }

    /// As [`serve_one_fake_job`], with the options `adjust` makes of the usual ones.
    fn serve_one_fake_job_with(
        redis: &Redis,
        id: &str,
        adjust: impl FnOnce(ServiceOptions) -> ServiceOptions,
    ) -> (tempfile::TempDir, tokio::task::JoinHandle<Outcome>) {
        let dir = tempfile::tempdir().unwrap();
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job(id)]);
        let options = ServiceOptions {
            recorder: Some(stand_in(dir.path(), "w", 0.0)),
            ..test_options(redis.url(), "w")
        };
        (dir, actix::spawn(serve(adjust(options))))
    }

    /// The runner panics with a recording running: the recording is killed with it and run again
    /// by the restarted runner (a second attempt); the queue actor goes on; a stop request then
    /// ends it normally. The recording is a stand-in script, so this needs only redis-server.
    #[actix_rt::test]
    async fn a_crashed_runner_s_recording_runs_again_and_the_service_carries_on() {
        let redis = Redis::start();
        let (dir, service) = serve_one_fake_job(&redis, "c");
        // Its recording started (the state says running from the moment a round took it).
        until("the job to run", || logged(dir.path(), "start", "c") == 1).await;
        let first = runner_now();
        first.do_send(Crash);
        until("the job to run again", || {
            redis.hget("{t}:job:c", "attempts") == "2"
                && redis.hget("{t}:job:c", "state") == "running"
        })
        .await;
        let second = runner_now();
        assert!(!first.connected() && second.connected(), "a new runner");
        // The state says running once the job is taken; its process is ready for a stop once it
        // said so.
        // (The stand-in names its job by its file: the second attempt's has the suffix.)
        until("the second attempt to start", || {
            logged(dir.path(), "start", "c-attempt2") == 1
        })
        .await;
        redis.cli(&["PUBLISH", "t:control", r#"{"stop":"c"}"#]);
        until("the job to end", || {
            matches!(redis.hget("{t}:job:c", "state").as_str(), "done" | "failed")
        })
        .await;
        assert_eq!(
            redis.hget("{t}:job:c", "state"),
            "done",
            "{}",
            redis.cli(&["HGETALL", "{t}:job:c"])
        );
        assert_eq!(redis.hget("{t}:job:c", "exit_code"), "0");
        assert_eq!(redis.cli(&["LLEN", "{t}:processing:w"]), "0");
        service.abort();
    }

    /// The queue actor started last on this thread.
    fn queue_now() -> Addr<QueueActor> {
        QUEUE.with(|q| q.borrow().clone()).unwrap()
    }

    /// The runner started last on this thread.
    fn runner_now() -> Addr<RunnerActor> {
        RUNNER.with(|r| r.borrow().clone()).unwrap()
    }

    /// Crashes the running queue actor `first` and waits for its successor to connect.
    async fn crash_the_queue(first: &Addr<QueueActor>) {
        first.do_send(queue::Crash);
        until("a new queue actor", || {
            let now = queue_now();
            now != *first && now.connected()
        })
        .await;
    }

    /// Waits until a queue actor follows the control channel `t:control`.
    async fn following_control(redis: &Redis) {
        until("the queue to follow control requests", || {
            redis
                .cli(&["PUBSUB", "NUMSUB", "t:control"])
                .ends_with("\n1")
        })
        .await;
    }

    /// The queue actor panics with a recording running: the restarted one carries on with its
    /// job table, so the recording's end is still written (and stop requests still reach it).
    #[actix_rt::test]
    async fn a_crashed_queue_forgets_no_running_job() {
        let redis = Redis::start();
        let (dir, service) = serve_one_fake_job(&redis, "q");
        // Its recording started (the state says running from the moment a round took it).
        until("the job to run", || logged(dir.path(), "start", "q") == 1).await;
        let first = queue_now();
        crash_the_queue(&first).await;
        following_control(&redis).await;
        redis.cli(&["PUBLISH", "t:control", r#"{"stop":"q"}"#]);
        until("the job to be done", || {
            redis.hget("{t}:job:q", "state") == "done"
        })
        .await;
        assert_eq!(redis.hget("{t}:job:q", "attempts"), "1");
        assert_eq!(redis.cli(&["LLEN", "{t}:processing:w"]), "0");
        service.abort();
    }

    /// A pause the queue actor had not written when it crashed (Redis holding its writes back)
    /// is written by the next one, and a resume after the restart reaches the job's state too:
    /// the runner keeps each recording's pause state and tells the queue actor running now.
    #[actix_rt::test]
    async fn pause_states_survive_a_crashed_queue() {
        let redis = Redis::start();
        let (dir, service) = serve_one_fake_job(&redis, "s");
        until("the job to run", || logged(dir.path(), "start", "s") == 1).await;
        let first = queue_now();
        let runner = runner_now();
        // No write reaches Redis for 3 s: the pause waits in the queue actor, which then crashes.
        redis.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]);
        runner.do_send(runner::PauseJob {
            id: "s".into(),
            pause: true,
        });
        until("the recording to pause", || {
            logged(dir.path(), "pause", "s") == 1
        })
        .await;
        crash_the_queue(&first).await;
        until("the pause to be written", || {
            redis.hget("{t}:job:s", "state") == "paused"
        })
        .await;
        following_control(&redis).await;
        redis.cli(&["PUBLISH", "t:control", r#"{"resume":"s"}"#]);
        until("the resume to be written", || {
            logged(dir.path(), "resume", "s") == 1 && redis.hget("{t}:job:s", "state") == "running"
        })
        .await;
        service.abort();
    }

    /// `{"pause": id}` and `{"resume": id}` on the control channel reach the job's recording
    /// (SIGUSR1, SIGUSR2), and the job's state follows what the recording says: paused, then
    /// running; a stop while paused ends it done.
    #[actix_rt::test]
    async fn a_job_is_paused_and_resumed_through_the_control_channel() {
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("p")]);
        let options = ServiceOptions {
            recorder: Some(stand_in(dir.path(), "w", 0.0)),
            ..test_options(redis.url(), "w")
        };
        let events = redis.subscribe("t:events");
        let service = actix::spawn(serve(options));
        until("the recording", || logged(dir.path(), "start", "p") == 1).await;
        until("the control follower", || {
            redis
                .cli(&["PUBSUB", "NUMSUB", "t:control"])
                .ends_with("\n1")
        })
        .await;
        // Another worker's job, and a malformed id: ignored.
        redis.cli(&["PUBLISH", "t:control", r#"{"pause":"other"}"#]);
        redis.cli(&["PUBLISH", "t:control", r#"{"pause":"p"}"#]);
        until("the job to be paused", || {
            redis.hget("{t}:job:p", "state") == "paused"
        })
        .await;
        assert_eq!(logged(dir.path(), "pause", "p"), 1);
        redis.cli(&["PUBLISH", "t:control", r#"{"resume":"p"}"#]);
        until("the job to run again", || {
            logged(dir.path(), "resume", "p") == 1 && redis.hget("{t}:job:p", "state") == "running"
        })
        .await;
        redis.cli(&["PUBLISH", "t:control", r#"{"pause":"p"}"#]);
        until("the job to be paused again", || {
            redis.hget("{t}:job:p", "state") == "paused"
        })
        .await;
        redis.cli(&["PUBLISH", "t:control", r#"{"stop":"p"}"#]);
        until("the job to be done", || {
            redis.hget("{t}:job:p", "state") == "done"
        })
        .await;
        let states: Vec<String> = events
            .messages()
            .iter()
            .filter(|e| e["id"] == "p")
            .map(|e| e["state"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(states, ["running", "paused", "running", "paused", "done"]);
        service.abort();
    }

    /// `{"discard": id}` reaches the job's recording (SIGRTMIN, not SIGTERM) and the job fails
    /// with the recording's exit code 6 and its message.
    #[actix_rt::test]
    async fn a_job_is_discarded_through_the_control_channel() {
        let redis = Redis::start();
        let (dir, service) = serve_one_fake_job(&redis, "d");
        until("the recording", || logged(dir.path(), "start", "d") == 1).await;
        following_control(&redis).await;
        redis.cli(&["PUBLISH", "t:control", r#"{"discard":"d"}"#]);
        ends_discarded(&redis, dir.path(), "d").await;
        assert!(redis.hget("{t}:job:d", "message").contains("discarded"));
        service.abort();
    }

    /// Waits for job `id` to fail, and checks that its stand-in recording was discarded
    /// (SIGRTMIN, not SIGTERM) and exited 6.
    async fn ends_discarded(redis: &Redis, dir: &std::path::Path, id: &str) {
        let job = format!("{{t}}:job:{id}");
        until("the job to fail", || redis.hget(&job, "state") == "failed").await;
        assert_eq!(logged(dir, "discard", id), 1);
        assert_eq!(logged(dir, "term", id), 0);
        assert_eq!(redis.hget(&job, "exit_code"), "6");
    }

    /// Pause, resume and discard written in the job's hash (read every round, so not lost while
    /// the worker's control channel reconnects) reach the recording with no message at all; the
    /// hash's pause state wins over a message to the contrary at the next round; and what was
    /// asked of the run is cleared with its result.
    #[actix_rt::test]
    async fn requests_in_the_job_s_hash_reach_its_recording_without_a_message() {
        let redis = Redis::start();
        let (dir, service) = serve_one_fake_job(&redis, "h");
        until("the job to run", || logged(dir.path(), "start", "h") == 1).await;
        redis.cli(&["HSET", "{t}:job:h", "pause", "1"]);
        until("the pause", || {
            logged(dir.path(), "pause", "h") == 1 && redis.hget("{t}:job:h", "state") == "paused"
        })
        .await;
        // A resume by message, the hash still saying paused: resumed, then paused again.
        following_control(&redis).await;
        redis.cli(&["PUBLISH", "t:control", r#"{"resume":"h"}"#]);
        until("the resume and the pause again", || {
            logged(dir.path(), "resume", "h") == 1 && logged(dir.path(), "pause", "h") == 2
        })
        .await;
        redis.cli(&["HSET", "{t}:job:h", "pause", "0"]);
        until("the resume", || {
            logged(dir.path(), "resume", "h") == 2 && redis.hget("{t}:job:h", "state") == "running"
        })
        .await;
        redis.cli(&["HSET", "{t}:job:h", "discard", "1"]);
        ends_discarded(&redis, dir.path(), "h").await;
        for field in ["stop", "discard", "pause"] {
            assert_eq!(redis.hget("{t}:job:h", field), "", "{field} is cleared");
        }
        service.abort();
    }

    /// Live-output updates kept in the job's hash (as the egress API's `UpdateStream` keeps
    /// them) reach the recording in order, each once, whether their message was heard (the
    /// first) or not (the second is only in the hash, as when the control channel reconnects);
    /// and a job run again (its runner crashed) gets them all again, in order.
    #[actix_rt::test]
    async fn stream_updates_kept_in_the_hash_reach_every_run_in_order() {
        let redis = Redis::start();
        let key = Arc::new(JobKey::from_hex(TEST_KEY).unwrap());
        let (dir, service) = serve_one_fake_job_with(&redis, "u", |options| ServiceOptions {
            job_key: Some(key.clone()),
            ..options
        });
        until("the job to run", || logged(dir.path(), "start", "u") == 1).await;
        following_control(&redis).await;
        let update = |url: &str| {
            StreamUpdate {
                add: vec![url.to_owned()],
                remove: vec![],
            }
            .seal("u", &key)
            .unwrap()
        };
        let con = store::connect(&redis::Client::open(redis.url()).unwrap(), &redis.url())
            .await
            .unwrap();
        let mut store = Store::new(con, test_options(redis.url(), "w").keys(), "api".into());
        store
            .push_stream_update("u", &update("rtmp://h/app/one"))
            .await
            .unwrap();
        // The second only in the hash: no message.
        let sealed = update("rtmp://h/app/two");
        redis.cli(&["HINCRBY", "{t}:job:u", "stream_updates", "1"]);
        redis.cli(&["HSET", "{t}:job:u", "stream_update_2", &sealed]);
        // The only job here (its second run records to `u-attempt2`).
        let lines = || control_lines(dir.path(), "add-stream");
        let both = ["add-stream:rtmp://h/app/one", "add-stream:rtmp://h/app/two"];
        until("both updates", || lines().len() >= 2).await;
        assert_eq!(lines(), both);
        runner_now().do_send(Crash);
        until("the job to run again with both", || {
            redis.hget("{t}:job:u", "attempts") == "2" && lines().len() >= 4
        })
        .await;
        assert_eq!(lines()[2..], both);
        service.abort();
    }

    /// A layout asked in the job's hash (as the egress API's `UpdateLayout` keeps it) reaches
    /// the recording with no message, once; a job run again (its runner crashed) is switched to
    /// it again. Only pagecast's own layout names pass (each becomes a line on stdin).
    #[actix_rt::test]
    async fn a_layout_in_the_job_s_hash_reaches_every_run() {
        assert_eq!(known_layout("grid-light"), Some("grid-light"));
        assert_eq!(known_layout("grid-light\nstop"), None);
        assert_eq!(known_layout("../grid-light"), None);
        let redis = Redis::start();
        let (dir, service) = serve_one_fake_job(&redis, "l");
        until("the job to run", || logged(dir.path(), "start", "l") == 1).await;
        redis.cli(&["HSET", "{t}:job:l", "layout", "grid-light"]);
        let layouts = || control_lines(dir.path(), "layout");
        until("the layout line", || layouts().len() == 1).await;
        runner_now().do_send(Crash);
        until("the job to run again, switched again", || {
            redis.hget("{t}:job:l", "attempts") == "2" && layouts().len() == 2
        })
        .await;
        assert_eq!(layouts(), ["layout:grid-light", "layout:grid-light"]);
        service.abort();
    }

    /// SIGTERM to the service: every recording gets its SIGTERM at the same moment, so three
    /// recordings that each take 2 s to finish are all done within one stop time.
    #[actix_rt::test]
    async fn a_stopping_service_stops_every_recording_at_once() {
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        let ids = ["s1", "s2", "s3"];
        for id in ids {
            redis.cli(&["LPUSH", "{t}:jobs", &fake_job(id)]);
        }
        let options = ServiceOptions {
            max_recordings: 3,
            recorder: Some(stand_in(dir.path(), "w", 2.0)),
            ..test_options(redis.url(), "w")
        };
        let service = actix::spawn(serve(options));
        until("three recordings", || {
            ids.iter().all(|id| logged(dir.path(), "start", id) == 1)
        })
        .await;
        let outcome = stop_service(service).await;
        assert_eq!(outcome.exit, Exit::Ok, "{}", outcome.message);
        let log = stand_in_log(dir.path());
        let times = |event: &str| -> Vec<f64> {
            log.iter()
                .filter(|(_, e, _, _)| e == event)
                .map(|(_, _, _, t)| *t)
                .collect()
        };
        let (terms, ends) = (times("term"), times("end"));
        assert_eq!((terms.len(), ends.len()), (3, 3), "{log:?}");
        let spread = |t: &[f64]| {
            t.iter().cloned().fold(f64::MIN, f64::max) - t.iter().cloned().fold(f64::MAX, f64::min)
        };
        assert!(
            spread(&terms) < 1.0,
            "SIGTERMs sent one after another: {log:?}"
        );
        assert!(
            spread(&ends) < 1.0,
            "recordings finished one after another: {log:?}"
        );
        for id in ids {
            assert_eq!(redis.hget(&format!("{{t}}:job:{id}"), "state"), "done");
        }
    }

    /// A recording already stopping (a stop request) is not sent a second SIGTERM when the
    /// service stops (a recording takes a second one as "quit now, unfinished").
    #[actix_rt::test]
    async fn a_stopping_recording_is_not_stopped_twice() {
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("once")]);
        let options = ServiceOptions {
            recorder: Some(stand_in(dir.path(), "w", 2.0)),
            ..test_options(redis.url(), "w")
        };
        let service = actix::spawn(serve(options));
        until("the recording", || logged(dir.path(), "start", "once") == 1).await;
        redis.cli(&["HSET", "{t}:job:once", "stop", "1"]);
        until("the stop", || logged(dir.path(), "term", "once") == 1).await;
        let outcome = stop_service(service).await;
        assert_eq!(outcome.exit, Exit::Ok, "{}", outcome.message);
        assert_eq!(
            logged(dir.path(), "term", "once"),
            1,
            "{:?}",
            stand_in_log(dir.path())
        );
        assert_eq!(logged(dir.path(), "end", "once"), 1);
        assert_eq!(redis.hget("{t}:job:once", "state"), "done");
        // Over: no stop flag left for a later job with this id; the hash expires.
        assert_eq!(redis.cli(&["HEXISTS", "{t}:job:once", "stop"]), "0");
        let ttl: i64 = redis.cli(&["TTL", "{t}:job:once"]).parse().unwrap();
        assert!((1..=3600).contains(&ttl), "{ttl}");
    }

    /// A job id pushed raw while a job with that id runs: the first goes on untouched, the copy
    /// is failed "already running" (an event; the hash stays the running job's).
    #[actix_rt::test]
    async fn a_duplicate_id_is_refused_and_the_running_job_untouched() {
        let redis = Redis::start();
        let events = redis.subscribe("t:events");
        let dir = tempfile::tempdir().unwrap();
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("dup")]);
        let options = ServiceOptions {
            max_recordings: 2,
            recorder: Some(stand_in(dir.path(), "w", 0.0)),
            ..test_options(redis.url(), "w")
        };
        let service = actix::spawn(serve(options));
        until("the recording", || logged(dir.path(), "start", "dup") == 1).await;
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("dup")]);
        until("the copy to be refused", || {
            events.messages().iter().any(|m| {
                m["id"] == "dup"
                    && m["state"] == "failed"
                    && m["message"]
                        .as_str()
                        .is_some_and(|s| s.contains("already running"))
            })
        })
        .await;
        assert_eq!(redis.cli(&["LLEN", "{t}:jobs"]), "0");
        assert_eq!(redis.cli(&["LLEN", "{t}:processing:w"]), "1");
        assert_eq!(redis.hget("{t}:job:dup", "state"), "running");
        assert_eq!(redis.hget("{t}:job:dup", "attempts"), "1");
        // One recording, never stopped.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(logged(dir.path(), "start", "dup"), 1);
        assert_eq!(logged(dir.path(), "term", "dup"), 0);
        redis.cli(&["PUBLISH", "t:control", r#"{"stop":"dup"}"#]);
        until("the job to be done", || {
            redis.hget("{t}:job:dup", "state") == "done"
        })
        .await;
        assert_eq!(redis.hget("{t}:job:dup", "attempts"), "1");
        stop_service(service).await;
    }

    /// A job in this worker's processing list that runs nowhere (taken by a round that failed
    /// halfway) goes back to the queue and runs.
    #[actix_rt::test]
    async fn a_stranded_job_in_the_processing_list_goes_back_and_runs() {
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        let options = ServiceOptions {
            recorder: Some(stand_in(dir.path(), "w", 0.0)),
            ..test_options(redis.url(), "w")
        };
        let service = actix::spawn(serve(options));
        // After the worker started (its earlier runs' leftovers are requeued at start), as a
        // round that took it and failed would leave it.
        until("the worker", || {
            redis.cli(&["EXISTS", "{t}:worker:w"]) == "1"
        })
        .await;
        redis.cli(&["LPUSH", "{t}:processing:w", &fake_job("stranded")]);
        until("the stranded job to run", || {
            logged(dir.path(), "start", "stranded") == 1
        })
        .await;
        assert_eq!(redis.hget("{t}:job:stranded", "state"), "running");
        redis.cli(&["PUBLISH", "t:control", r#"{"stop":"stranded"}"#]);
        until("the job to be done", || {
            redis.hget("{t}:job:stranded", "state") == "done"
        })
        .await;
        assert_eq!(redis.cli(&["LLEN", "{t}:processing:w"]), "0");
        stop_service(service).await;
    }

    /// The service's log lines (JSON), captured for one test.
    #[derive(Clone, Default)]
    struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for LogBuffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl LogBuffer {
        /// Captures this thread's log at info until the guard is dropped.
        fn capture(&self) -> tracing::subscriber::DefaultGuard {
            let writer = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_max_level(tracing::Level::INFO)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_default(subscriber)
        }

        /// The lines whose message is `event` (and, if given, whose `job` is `job`).
        fn events(&self, event: &str, job: Option<&str>) -> usize {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|l| l["message"] == event && job.is_none_or(|j| l["job"] == j))
                .count()
        }

        /// When `event` was first logged, as seconds since the epoch.
        fn first_at(&self, event: &str) -> Option<f64> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["message"] == event)
                .and_then(|l| humantime::parse_rfc3339(l["timestamp"].as_str()?).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
        }
    }

    /// `--recalibrate-every`: the machine is measured again only once no recording runs, and
    /// a job pushed meanwhile starts after the probe has ended.
    #[actix_rt::test]
    async fn an_idle_worker_measures_its_machine_again_and_takes_no_job_meanwhile() {
        use pagecast_actors::events::{MACHINE_CALIBRATED, MACHINE_CALIBRATING};
        let log = LogBuffer::default();
        let _log = log.capture();
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("busy")]);
        let service = actix::spawn(serve(ServiceOptions {
            recalibrate_every: Some(Duration::from_millis(300)),
            recorder: Some(stand_in(dir.path(), "w", 0.0)),
            ..test_options(redis.url(), "w")
        }));
        until("the job to run", || {
            logged(dir.path(), "start", "busy") == 1
        })
        .await;
        // Due all along (300 ms), but a recording runs: for 4 rounds and more, no probe.
        let started = stand_in_log(dir.path())[0].3;
        until("1 s of the job", || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
                > started + 1.0
        })
        .await;
        assert_eq!(log.events(MACHINE_CALIBRATING, None), 0);
        redis.cli(&["PUBLISH", "t:control", r#"{"stop":"busy"}"#]);
        until("the probe to begin", || {
            log.events(MACHINE_CALIBRATING, None) == 1
        })
        .await;
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("after")]);
        until("the next job to run", || {
            logged(dir.path(), "start", "after") == 1
        })
        .await;
        let calibrated = log
            .first_at(MACHINE_CALIBRATED)
            .expect("the probe ended before the next job was taken");
        let after = logged_at(dir.path(), "start", "after").unwrap();
        assert!(
            after >= calibrated,
            "the job started at {after}, the probe ended at {calibrated}"
        );
        assert!(log.events(MACHINE_CALIBRATED, None) >= 1);
        stop_service(service).await;
    }

    /// Two jobs with room for both: the second is taken only once the first's recording has
    /// encoded its first frame (`--concurrent-starts 1`, the default), said as a wait; with
    /// `--concurrent-starts 2` both start at once.
    #[actix_rt::test]
    async fn a_job_starts_once_the_recording_started_before_it_has_its_first_frame() {
        use pagecast_actors::events::JOB_WAITS_FOR_CAPACITY;
        let log = LogBuffer::default();
        let _log = log.capture();
        for concurrent_starts in [1, 2] {
            let redis = Redis::start();
            let dir = tempfile::tempdir().unwrap();
            let (first, second) = (
                format!("first{concurrent_starts}"),
                format!("second{concurrent_starts}"),
            );
            redis.cli(&["LPUSH", "{t}:jobs", &fake_job(&first), &fake_job(&second)]);
            let service = actix::spawn(serve(ServiceOptions {
                max_recordings: 4,
                concurrent_starts,
                recorder: Some(stand_in_framing(dir.path(), "w", 0.0, 1.5)),
                ..test_options(redis.url(), "w")
            }));
            // Both: with two starts at once, the second's process may write its line first.
            until("both jobs to start", || {
                logged_at(dir.path(), "start", &first).is_some()
                    && logged_at(dir.path(), "start", &second).is_some()
            })
            .await;
            let (a, b) = (
                logged_at(dir.path(), "start", &first).unwrap(),
                logged_at(dir.path(), "start", &second).unwrap(),
            );
            if concurrent_starts == 1 {
                let framed = logged_at(dir.path(), "frame", &first)
                    .expect("the first's frame before the second's start");
                assert!(
                    b >= framed,
                    "the second started at {b}, the first's frame came at {framed}"
                );
                assert_eq!(log.events(JOB_WAITS_FOR_CAPACITY, Some(&second)), 1);
                let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
                assert!(
                    text.contains("--concurrent-starts 1"),
                    "the wait says why: {text}"
                );
            } else {
                assert!(b - a < 1.0, "both start at once: {a}, {b}");
            }
            stop_service(service).await;
        }
    }

    /// With room for one 1080p30 job (0.84 cores of 1.3: 2 cores x 0.65, and up to 4 recordings), a
    /// second one waits at the head of the queue, said once, and is taken when the first ends.
    #[actix_rt::test]
    async fn a_job_that_does_not_fit_waits_and_is_taken_when_the_first_ends() {
        use pagecast_actors::events::JOB_WAITS_FOR_CAPACITY;
        let log = LogBuffer::default();
        let _log = log.capture();
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("first"), &fake_job("second")]);
        let service = actix::spawn(serve(ServiceOptions {
            max_recordings: 4,
            machine: capacity::Machine {
                cores: 2.0,
                memory: 8 << 30,
                cost_factor: 1.0,
            },
            recorder: Some(stand_in(dir.path(), "w", 0.0)),
            ..test_options(redis.url(), "w")
        }));
        until("the second job to wait", || {
            log.events(JOB_WAITS_FOR_CAPACITY, Some("second")) == 1
        })
        .await;
        until("the first job to run", || {
            logged(dir.path(), "start", "first") == 1
        })
        .await;
        assert_eq!(logged(dir.path(), "start", "second"), 0);
        assert_eq!(
            redis.cli(&["LLEN", "{t}:jobs"]),
            "1",
            "it waits in the queue"
        );
        redis.cli(&["PUBLISH", "t:control", r#"{"stop":"first"}"#]);
        until("the second job to run", || {
            logged(dir.path(), "start", "second") == 1
        })
        .await;
        assert_eq!(
            log.events(JOB_WAITS_FOR_CAPACITY, Some("second")),
            1,
            "said once"
        );
        stop_service(service).await;
    }

    /// A recording that says its encoder falls behind stops the worker taking jobs (however
    /// much room is left) until it says it caught up; it is not stopped.
    #[actix_rt::test]
    async fn a_worker_whose_recording_falls_behind_takes_no_job_until_it_catches_up() {
        use pagecast_actors::events::{
            ENCODER_CAUGHT_UP, ENCODER_FALLING_BEHIND, ENCODER_RUNNING, JOB_WAITS_FOR_CAPACITY,
            WORKER_OVERLOADED, WORKER_RECOVERED,
        };
        let log = LogBuffer::default();
        let _log = log.capture();
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        let recorder = dir.path().join("slowpoke.sh");
        let caught_up = dir.path().join("caught-up");
        std::fs::write(
            &recorder,
            format!(
                r#"#!/bin/sh
IFS= read -r config
job=$(printf '%s' "$config" | sed 's/.*"file":"[^"]*\/\([^"/.]*\)\.mp4".*/\1/')
echo "$job" >> {started}
trap 'exit 0' TERM
# Its first frame at once: the next job waits for the pace alone, not for a start under way.
echo '{{"level":"INFO","message":"{framed}"}}' >&2
if [ "$job" = slow ]; then
  echo '{{"level":"WARN","message":"{behind}","speed":0.8}}' >&2
  while [ ! -e {caught_up} ]; do sleep 0.05; done
  echo '{{"level":"INFO","message":"{up}"}}' >&2
fi
sleep 600 &
wait
"#,
                started = dir.path().join("started").display(),
                framed = ENCODER_RUNNING,
                behind = ENCODER_FALLING_BEHIND,
                up = ENCODER_CAUGHT_UP,
                caught_up = caught_up.display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &recorder,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let started = || std::fs::read_to_string(dir.path().join("started")).unwrap_or_default();
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("slow")]);
        let service = actix::spawn(serve(ServiceOptions {
            max_recordings: 4,
            recorder: Some(recorder.clone()),
            ..test_options(redis.url(), "w")
        }));
        until("the worker to be overloaded", || {
            log.events(WORKER_OVERLOADED, None) == 1
        })
        .await;
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("next")]);
        until("the next job to wait", || {
            log.events(JOB_WAITS_FOR_CAPACITY, Some("next")) == 1
        })
        .await;
        assert_eq!(started(), "slow\n");
        assert_eq!(
            redis.hget("{t}:job:slow", "state"),
            "running",
            "not stopped"
        );
        std::fs::write(&caught_up, "").unwrap();
        until("the next job to run", || started() == "slow\nnext\n").await;
        assert_eq!(log.events(WORKER_RECOVERED, None), 1);
        stop_service(service).await;
    }

    /// Every key and value in Redis, as text.
    fn dump(redis: &Redis) -> String {
        let mut out = String::new();
        for key in redis.cli(&["KEYS", "*"]).lines().filter(|k| !k.is_empty()) {
            let value = match redis.cli(&["TYPE", key]).as_str() {
                "string" => redis.cli(&["GET", key]),
                "list" => redis.cli(&["LRANGE", key, "0", "-1"]),
                "hash" => redis.cli(&["HGETALL", key]),
                "set" => redis.cli(&["SMEMBERS", key]),
                other => panic!("{key}: a {other}"),
            };
            out.push_str(&format!("{key} = {value}\n"));
        }
        out
    }

    const SECRETS: [&str; 3] = ["S3-SECRET-7a7a", "API-SECRET-7b7b", "STREAM-KEY-7c7c"];

    /// A job carrying an S3 secret, a LiveKit API secret and an RTMP stream key.
    fn secret_job(id: &str) -> String {
        serde_json::json!({
            "id": id,
            "config": {
                "api_key": "APIkey",
                "api_secret": SECRETS[1],
                "input": { "template": { "layout": "grid-dark", "ws_url": "ws://127.0.0.1:7880", "room_name": "r" } },
                "output": {
                    "file": format!("/tmp/{id}.mp4"),
                    "rtmp": format!("rtmp://127.0.0.1/live/{}", SECRETS[2]),
                    "s3": { "access_key": "AKIA", "secret": SECRETS[0], "bucket": "b", "key": "k.mp4", "endpoint": "http://127.0.0.1:9" },
                },
            },
        })
        .to_string()
    }

    fn assert_no_secret(what: &str, text: &str) {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{what} holds {secret}:\n{text}");
        }
    }

    /// With a job key, a job pushed in clear is re-stored sealed the moment it is taken, and
    /// one submitted is sealed from the start: during and after the jobs no key, no value and
    /// no event in Redis holds a secret.
    #[actix_rt::test]
    async fn a_job_s_secrets_never_rest_in_redis() {
        let redis = Redis::start();
        let events = redis.subscribe("t:events");
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(JobKey::from_hex(TEST_KEY).unwrap());
        let submitted: serde_json::Value = serde_json::from_str(&secret_job("submitted")).unwrap();
        submit(
            &redis.url(),
            "t",
            Some("submitted".into()),
            &submitted["config"].to_string(),
            Some(&key),
        )
        .await
        .unwrap();
        assert_no_secret("Redis after submit", &dump(&redis));
        redis.cli(&["LPUSH", "{t}:jobs", &secret_job("raw")]);
        let options = ServiceOptions {
            max_recordings: 2,
            job_key: Some(key),
            recorder: Some(stand_in(dir.path(), "w", 0.0)),
            ..test_options(redis.url(), "w")
        };
        let service = actix::spawn(serve(options));
        until("both recordings", || {
            logged(dir.path(), "start", "raw") == 1 && logged(dir.path(), "start", "submitted") == 1
        })
        .await;
        assert_eq!(redis.cli(&["LLEN", "{t}:processing:w"]), "2");
        assert_no_secret("Redis during the jobs", &dump(&redis));
        for id in ["raw", "submitted"] {
            redis.cli(&["PUBLISH", "t:control", &format!(r#"{{"stop":"{id}"}}"#)]);
        }
        until("the jobs to be done", || {
            ["raw", "submitted"]
                .iter()
                .all(|id| redis.hget(&format!("{{t}}:job:{id}"), "state") == "done")
        })
        .await;
        stop_service(service).await;
        assert_no_secret("Redis after the jobs", &dump(&redis));
        assert_no_secret("the events", &format!("{:?}", events.messages()));
    }

    /// Without a key, a job carrying secrets is refused (exit code 2, the fields named) and
    /// gone from Redis; with --trusted-redis it runs.
    #[actix_rt::test]
    async fn without_a_key_a_job_carrying_secrets_is_refused_unless_redis_is_trusted() {
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        redis.cli(&["LPUSH", "{t}:jobs", &secret_job("clear")]);
        let options = ServiceOptions {
            recorder: Some(stand_in(dir.path(), "w", 0.0)),
            ..test_options(redis.url(), "w")
        };
        let service = actix::spawn(serve(options.clone()));
        until("the job to be refused", || {
            redis.hget("{t}:job:clear", "state") == "failed"
        })
        .await;
        assert_eq!(redis.hget("{t}:job:clear", "exit_code"), "2");
        let message = redis.hget("{t}:job:clear", "message");
        assert!(
            message.contains("input.template.api_secret, output.rtmp, output.s3.secret")
                && message.contains("PAGECAST_JOB_KEY"),
            "{message}"
        );
        assert_eq!(logged(dir.path(), "start", "clear"), 0);
        assert_no_secret("Redis after the refusal", &dump(&redis));
        stop_service(service).await;
        redis.cli(&["LPUSH", "{t}:jobs", &secret_job("trusted")]);
        let service = actix::spawn(serve(ServiceOptions {
            trusted_redis: true,
            ..options
        }));
        until("the trusted job to run", || {
            logged(dir.path(), "start", "trusted") == 1
        })
        .await;
        stop_service(service).await;
    }

    /// A worker cut off from Redis (its connection through a proxy the test cuts) stops its
    /// recording before its lease ends; only then may another worker take the job over: the
    /// job never runs twice at once.
    #[actix_rt::test]
    async fn a_worker_that_loses_its_lease_stops_its_recording_before_another_takes_it() {
        let redis = Redis::start();
        let proxy = pagecast_testkit::TcpProxy::start(redis.port);
        let dir = tempfile::tempdir().unwrap();
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("lease")]);
        let ttl = Duration::from_secs(3);
        let cut_off = actix::spawn(serve(ServiceOptions {
            heartbeat_ttl: ttl,
            recorder: Some(stand_in(dir.path(), "w1", 0.3)),
            ..test_options(proxy.redis_url(), "w1")
        }));
        until("w1 to record", || logged(dir.path(), "start", "lease") == 1).await;
        let other = actix::spawn(serve(ServiceOptions {
            heartbeat_ttl: ttl,
            recorder: Some(stand_in(dir.path(), "w2", 0.0)),
            ..test_options(redis.url(), "w2")
        }));
        proxy.cut();
        until("w2 to record the job", || {
            stand_in_log(dir.path())
                .iter()
                .any(|(w, e, _, _)| w == "w2" && e == "start")
        })
        .await;
        let log = stand_in_log(dir.path());
        let at = |who: &str, event: &str| {
            log.iter()
                .find(|(w, e, _, _)| w == who && e == event)
                .map(|(_, _, _, t)| *t)
        };
        let (w1_end, w2_start) = (at("w1", "end"), at("w2", "start").unwrap());
        assert!(
            w1_end.is_some_and(|end| end < w2_start),
            "w1's copy still ran when w2 started: {log:?}"
        );
        assert_eq!(redis.hget("{t}:job:lease", "worker"), "w2");
        assert_eq!(redis.hget("{t}:job:lease", "attempts"), "2");
        cut_off.abort();
        other.abort();
    }

    /// A recording's own log lines reach the service's log at their own level, tagged with
    /// the job id.
    #[actix_rt::test]
    async fn a_recording_s_log_lines_reach_the_service_log_at_their_level_with_the_job() {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        let recorder = dir.path().join("talker.sh");
        std::fs::write(
            &recorder,
            "#!/bin/sh\necho '{\"timestamp\":\"t\",\"level\":\"WARN\",\"message\":\"the page is slow\",\"fps\":12}' >&2\n\
             echo '{\"level\":\"DEBUG\",\"message\":\"noise\"}' >&2\nexit 0\n",
        )
        .unwrap();
        std::fs::set_permissions(
            &recorder,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        redis.cli(&["LPUSH", "{t}:jobs", &fake_job("talk")]);
        let service = actix::spawn(serve(ServiceOptions {
            recorder: Some(recorder),
            ..test_options(redis.url(), "w")
        }));
        until("the job to be done", || {
            redis.hget("{t}:job:talk", "state") == "done"
        })
        .await;
        stop_service(service).await;
        let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &serde_json::Value| l["job"] == "talk")
            .collect();
        let slow = lines
            .iter()
            .find(|l| l["message"] == "the page is slow")
            .unwrap_or_else(|| panic!("{log}"));
        assert_eq!(slow["level"], "WARN");
        assert_eq!(slow["fields"], "fps=12");
        assert!(!log.contains("noise"), "a debug line at info: {log}");
    }

    fn ended(code: Option<i32>, stopped_by_us: bool) -> Ended {
        Ended {
            id: "j".into(),
            code,
            stopped_by_us,
            output: None,
            message: String::new(),
        }
    }

    #[test]
    fn only_a_recording_killed_by_someone_else_is_retried_and_not_forever() {
        assert_eq!(decide(&ended(Some(0), false), 1), Decision::Done);
        assert_eq!(decide(&ended(Some(0), true), 1), Decision::Done);
        for code in [1, 2, 3, 4, 5, 130] {
            assert_eq!(decide(&ended(Some(code), false), 1), Decision::Failed);
        }
        assert_eq!(decide(&ended(None, false), 1), Decision::Requeue);
        assert_eq!(decide(&ended(None, false), 2), Decision::Requeue);
        assert_eq!(decide(&ended(None, false), MAX_ATTEMPTS), Decision::Failed);
        assert_eq!(
            decide(&ended(None, true), 1),
            Decision::Failed,
            "we killed it after its stop grace"
        );
    }

    #[test]
    fn jobs_are_checked_like_a_recording_config() {
        let ok = r#"{"id":"a-1","config":{"input":{"url":"https://example.com"},"output":{"file":"/tmp/a.mp4"}}}"#;
        assert!(matches!(parse_job(ok), Parsed::Job { id, .. } if id == "a-1"));
        let bad = r#"{"id":"a-2","config":{"input":{"url":"https://example.com","width":3},"output":{"file":"/tmp/a.mp4"}}}"#;
        match parse_job(bad) {
            Parsed::Refused { id, message } => {
                assert_eq!(id.as_deref(), Some("a-2"));
                assert!(message.starts_with("config: input.width:"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match parse_job(r#"{"id":"a-3","config":{},"extra":1}"#) {
            Parsed::Refused { id, message } => {
                assert_eq!(id.as_deref(), Some("a-3"));
                assert!(message.starts_with("job: not a job object"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_job("nope"),
            Parsed::Refused { id: None, .. }
        ));
        assert!(matches!(
            parse_job(r#"{"id":"a b","config":{}}"#),
            Parsed::Refused { id: None, .. }
        ));
        // A config too large is refused before it is parsed (at submit, not when it would run).
        let big = serde_json::json!({
            "id": "big",
            "config": { "input": { "url": "https://example.com/".to_owned() + &"a".repeat(70_000) }, "output": { "file": "/tmp/a.mp4" } },
        });
        match parse_job(&big.to_string()) {
            Parsed::Refused { id, message } => {
                assert_eq!(id.as_deref(), Some("big"));
                assert!(message.starts_with("config: 70"), "{message}");
                assert!(
                    message.ends_with("more than a job may have (65536 bytes)"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A secret in a refused config never comes back in the message.
        let secret = r#"{"id":"s","config":{"api_key":"k","api_secret":12345678,"input":{"url":"https://e.com"}}}"#;
        match parse_job(secret) {
            Parsed::Refused { message, .. } => assert!(!message.contains("12345678"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stop_requests_name_a_job() {
        assert_eq!(
            parse_control(r#"{"stop":"a-1"}"#),
            Some(ControlRequest::Stop("a-1".into()))
        );
        assert_eq!(
            parse_control(r#"{"pause":"a-1"}"#),
            Some(ControlRequest::Pause("a-1".into()))
        );
        assert_eq!(
            parse_control(r#"{"resume":"a-1"}"#),
            Some(ControlRequest::Resume("a-1".into()))
        );
        assert_eq!(
            parse_control(r#"{"discard":"a-1"}"#),
            Some(ControlRequest::Discard("a-1".into()))
        );
        assert_eq!(
            parse_control(r#"{"update_stream":"a-1","sealed":"xyz"}"#),
            Some(ControlRequest::UpdateStream {
                id: "a-1".into(),
                sealed: "xyz".into(),
                seq: None,
            })
        );
        assert_eq!(parse_control(r#"{"update_stream":"a-1"}"#), None);
        assert_eq!(
            parse_control(r#"{"update_layout":"a-1","layout":"grid-light"}"#),
            Some(ControlRequest::UpdateLayout {
                id: "a-1".into(),
                layout: "grid-light".into()
            })
        );
        assert_eq!(
            parse_control(r#"{"update_layout":"a-1","layout":"grid-light\nstop"}"#),
            None
        );
        let key = JobKey::from_hex(&"ab".repeat(32)).unwrap();
        let update = StreamUpdate {
            add: vec!["rtmp://h/app/SECRETKEY".into()],
            remove: vec![],
        };
        let request = StreamUpdate::request("a-1", &update.seal("a-1", &key).unwrap(), 3);
        assert!(!request.contains("SECRETKEY"), "{request}");
        let Some(ControlRequest::UpdateStream { id, sealed, seq }) = parse_control(&request) else {
            panic!("{request}")
        };
        assert_eq!(seq, Some(3));
        assert_eq!(
            StreamUpdate::open(&id, &sealed, &key).unwrap().add,
            update.add
        );
        // Sealed for one job, it opens for no other.
        assert!(StreamUpdate::open("a-2", &sealed, &key).is_err());
        assert_eq!(parse_control(r#"{"pause":"a b"}"#), None);
        assert_eq!(parse_control(r#"{"stop":"a b"}"#), None);
        assert_eq!(parse_control(r#"{"stop":1}"#), None);
        assert_eq!(parse_control(r#"{"start":"a"}"#), None);
        assert_eq!(parse_control("stop a"), None);
    }

    #[test]
    fn the_recording_s_own_error_line_is_found_in_its_stderr() {
        let tail = r#"{"level":"INFO"} | pagecast: output.file: cannot write /x: denied | "#;
        assert_eq!(
            last_error_line(tail).as_deref(),
            Some("output.file: cannot write /x: denied")
        );
        assert_eq!(last_error_line("a | b"), None);
    }
}
