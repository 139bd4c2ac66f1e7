//! `pagecast serve`: the long-lived recording service. Jobs come from a Redis list; each runs as a
//! `pagecast record` child process of this binary (one recording's crash never touches another);
//! several machines share one queue.
//!
//! ```text
//! service (one-for-one)
//! ├── queue    QueueActor    owns the Redis connection: heartbeat, takes jobs, writes results,
//! │                          moves the jobs of dead workers back to the queue
//! └── runner   RunnerActor   owns one `pagecast record` process per running job
//! ```
//!
//! The job protocol (all keys under the queue name `Q`, default `pagecast`):
//! - `LPUSH Q:jobs '{"id": "...", "config": {...}}'`: a job; `config` is exactly what
//!   `LIVEKIT_RECORDER_CONFIG` takes.
//! - A worker with a free slot moves it atomically to `Q:processing:<worker>` (`LMOVE`), so a job
//!   is never lost: if the worker dies, its list stays behind and another worker moves it back.
//!   [`submit`] (`pagecast submit`) checks the job first and marks it `queued`.
//! - `Q:job:<id>` (hash): `state` (queued, running, done, failed, requeued), `worker`, `attempts`,
//!   `started_at`, `ended_at` (unix seconds), `exit_code`, `message`. Each change is published on
//!   `Q:events` as JSON.
//! - `PUBLISH Q:control '{"stop": "<id>"}'`: stop that recording (SIGTERM; it finishes its file
//!   and upload). `HSET Q:job:<id> stop 1` does the same and is not lost if the worker is
//!   reconnecting when it is sent (it is read every round).
//! - `Q:worker:<worker>`: the worker's heartbeat (a key with a time to live, its value the worker
//!   process's own token); `Q:workers`: the set of workers, to find the dead ones.
//!
//! Before the tree starts, [`serve`] connects (unreachable: exit 4 naming the host), claims the
//! worker id (a live worker with the same id: exit 2) and moves any job left in its own processing
//! list by an earlier run with the same id back to the queue.
//!
//! Retries: a recording killed by a signal nobody sent it is run again, up to [`MAX_ATTEMPTS`]
//! times; one that exits with a code is done (0) or failed (the code says why, see `exit.rs`), and
//! not retried: a bad config, page or output stays bad.

mod queue;
mod runner;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use pagecast_actors::supervision::{
    ChildSpec, Intensity, Restart, StopTree, Strategy, Supervisor, SupervisorConfig, TreeExit,
};
use serde::Deserialize;

use crate::exit::Exit;
use crate::run::Outcome;
use queue::QueueActor;
use runner::RunnerActor;

/// How often a job is tried before it is failed for good.
pub const MAX_ATTEMPTS: u32 = 3;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub redis: String,
    pub queue: String,
    pub max_recordings: usize,
    pub worker_id: String,
    /// The heartbeat's time to live: a worker silent this long is taken for dead.
    pub heartbeat_ttl: Duration,
    /// The program run for each job, with `--log-format json record` (None: this binary).
    /// Tests put a stand-in here.
    pub recorder: Option<std::path::PathBuf>,
    /// What a job may do: every recording is run with it (`record --policy ...`).
    pub policy: crate::policy::Policy,
}

/// A stop request on `Q:control`: `{"stop": "<id>"}`. Anything else is ignored (the channel may
/// carry other requests later).
pub fn parse_control(payload: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    v.get("stop")?
        .as_str()
        .filter(|id| valid_id(id))
        .map(str::to_owned)
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

/// The Redis keys of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    pub queue: String,
}

impl Keys {
    pub fn jobs(&self) -> String {
        format!("{}:jobs", self.queue)
    }
    pub fn processing(&self, worker: &str) -> String {
        format!("{}:processing:{worker}", self.queue)
    }
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.queue)
    }
    pub fn worker(&self, worker: &str) -> String {
        format!("{}:worker:{worker}", self.queue)
    }
    pub fn workers(&self) -> String {
        format!("{}:workers", self.queue)
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

/// Who the service's actors are, as they start.
#[derive(Default)]
struct Wiring {
    queue: Option<Addr<QueueActor>>,
    runner: Option<Addr<RunnerActor>>,
    /// The job table a crashed queue actor left for the next.
    ledger: Option<queue::Ledger>,
}

/// Runs the service until SIGTERM/SIGINT (finishing running recordings) or until it gives up.
pub async fn serve(options: ServiceOptions) -> Outcome {
    let client = match redis::Client::open(options.redis.as_str()) {
        Ok(client) => client,
        Err(e) => {
            return Outcome::fail(
                Exit::Config,
                format!("--redis: not a Redis URL ({}): {e}", mask(&options.redis)),
            )
        }
    };
    let keys = Keys {
        queue: options.queue.clone(),
    };
    // Pre-flight, before the tree: a service that cannot reach its queue, or whose id is taken,
    // has nothing to do.
    let instance = instance_token();
    let con = match queue::connect(&client, &options.redis).await {
        Ok(con) => con,
        Err(message) => return Outcome::fail(Exit::Input, message),
    };
    if let Err(message) = queue::claim_worker_id(con.clone(), &keys, &options, &instance).await {
        return Outcome::fail(Exit::Config, message);
    }
    let wiring = Rc::new(RefCell::new(Wiring::default()));
    #[cfg(test)]
    tests::WIRING.with(|w| *w.borrow_mut() = Some(wiring.clone()));
    let queue = {
        let (client, keys, wiring, options) = (
            client.clone(),
            keys.clone(),
            wiring.clone(),
            options.clone(),
        );
        ChildSpec::new(
            "queue",
            Restart::Permanent,
            Duration::from_secs(15),
            move |link| {
                let addr = QueueActor::new(
                    con.clone(),
                    client.clone(),
                    keys.clone(),
                    options.clone(),
                    instance.clone(),
                    wiring.clone(),
                    link,
                )
                .start();
                wiring.borrow_mut().queue = Some(addr.clone());
                std::future::ready(Ok(addr))
            },
        )
    };
    let runner = {
        let wiring = wiring.clone();
        let recorder = options.recorder.clone();
        let policy = options.policy.clone();
        // Running recordings finish their files and uploads: give them time.
        ChildSpec::new(
            "runner",
            Restart::Permanent,
            Duration::from_secs(120),
            move |link| {
                let addr = RunnerActor::new(recorder.clone(), policy.clone(), wiring.clone(), link)
                    .start();
                wiring.borrow_mut().runner = Some(addr.clone());
                std::future::ready(Ok(addr))
            },
        )
    };
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
        vec![queue, runner],
    );
    let signals = actix::spawn(forward_signals(supervisor, wiring.clone()));
    let exit = exit.await.unwrap_or(TreeExit::Stopped {
        cause: "supervisor vanished".into(),
        failures: Vec::new(),
    });
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
/// then, in one transaction, marks it `queued` (attempts 0), publishes that, and pushes it.
/// Refuses an id whose job is still queued or running. Returns the id.
pub async fn submit(
    redis: &str,
    queue: &str,
    id: Option<String>,
    config: &str,
) -> Result<String, Outcome> {
    let id = id.unwrap_or_else(|| format!("job-{}", instance_token()));
    let config: serde_json::Value = serde_json::from_str(config)
        .map_err(|e| Outcome::fail(Exit::Config, format!("config: not JSON ({e})")))?;
    let raw = serde_json::json!({ "id": id, "config": config }).to_string();
    if let Parsed::Refused { message, .. } = parse_job(&raw) {
        return Err(Outcome::fail(Exit::Config, message));
    }
    let client = redis::Client::open(redis).map_err(|e| {
        Outcome::fail(
            Exit::Config,
            format!("--redis: not a Redis URL ({}): {e}", mask(redis)),
        )
    })?;
    let mut con = queue::connect(&client, redis)
        .await
        .map_err(|m| Outcome::fail(Exit::Input, m))?;
    let keys = Keys {
        queue: queue.to_owned(),
    };
    let failed = |e: redis::RedisError| Outcome::fail(Exit::Input, format!("Redis: {e}"));
    let state: Option<String> = redis::cmd("HGET")
        .arg(keys.job(&id))
        .arg("state")
        .query_async(&mut con)
        .await
        .map_err(failed)?;
    if let Some(state @ ("queued" | "running" | "requeued")) = state.as_deref() {
        return Err(Outcome::fail(
            Exit::Config,
            format!("--id: job {id} is already {state}; give the new job another id"),
        ));
    }
    let _: () = redis::pipe()
        .atomic()
        .del(keys.job(&id))
        .ignore()
        .hset_multiple(keys.job(&id), &[("state", "queued"), ("attempts", "0")])
        .ignore()
        .publish(
            keys.events(),
            serde_json::json!({ "id": id, "state": "queued" }).to_string(),
        )
        .ignore()
        .lpush(keys.jobs(), &raw)
        .ignore()
        .query_async(&mut con)
        .await
        .map_err(failed)?;
    Ok(id)
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

/// SIGTERM or SIGINT: no new jobs, then the tree stops in order (the runner first: every
/// recording finishes). A second one: leave now (the recordings die with us).
async fn forward_signals(supervisor: Addr<Supervisor>, wiring: Rc<RefCell<Wiring>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "stopping: no new jobs; finishing the running recordings"
    );
    if let Some(queue) = wiring.borrow().queue.clone() {
        queue.do_send(queue::Drain);
    }
    supervisor.do_send(StopTree {
        cause: format!("{name} received"),
    });
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    eprintln!("pagecast: second signal, stopping without finishing the recordings");
    std::process::exit(Exit::Interrupted.code().into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagecast_testkit::Redis;
    use runner::Crash;

    thread_local! {
        /// The wiring of the service a test runs on this thread.
        pub(super) static WIRING: RefCell<Option<Rc<RefCell<Wiring>>>> = const { RefCell::new(None) };
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Serves queue `t` as worker `w` with one job, `id`, whose recording is a stand-in script
    /// that runs until SIGTERM and then exits 0.
    fn serve_one_fake_job(
        redis: &Redis,
        id: &str,
    ) -> (tempfile::TempDir, tokio::task::JoinHandle<Outcome>) {
        let dir = tempfile::tempdir().unwrap();
        let recorder = dir.path().join("recorder.sh");
        std::fs::write(
            &recorder,
            "#!/bin/sh\ntrap 'exit 0' TERM\nsleep 60 &\nwait\n",
        )
        .unwrap();
        std::fs::set_permissions(
            &recorder,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let job = serde_json::json!({
            "id": id,
            "config": { "input": { "url": "https://example.com" }, "output": { "file": format!("/tmp/{id}.mp4") } },
        });
        redis.cli(&["LPUSH", "t:jobs", &job.to_string()]);
        let options = ServiceOptions {
            redis: redis.url(),
            queue: "t".into(),
            max_recordings: 1,
            worker_id: "w".into(),
            heartbeat_ttl: Duration::from_secs(10),
            recorder: Some(recorder),
            policy: Default::default(),
        };
        (dir, actix::spawn(serve(options)))
    }

    /// The runner panics with a recording running: the recording is killed with it and run again
    /// by the restarted runner (a second attempt); the queue actor goes on; a stop request then
    /// ends it normally. The recording is a stand-in script, so this needs only redis-server.
    #[actix_rt::test]
    async fn a_crashed_runner_s_recording_runs_again_and_the_service_carries_on() {
        let redis = Redis::start();
        let (_dir, service) = serve_one_fake_job(&redis, "c");
        until("the job to run", || {
            redis.hget("t:job:c", "state") == "running"
        })
        .await;
        let wiring = WIRING.with(|w| w.borrow().clone()).unwrap();
        let first = wiring.borrow().runner.clone().unwrap();
        first.do_send(Crash);
        until("the job to run again", || {
            redis.hget("t:job:c", "attempts") == "2" && redis.hget("t:job:c", "state") == "running"
        })
        .await;
        let second = wiring.borrow().runner.clone().unwrap();
        assert!(!first.connected() && second.connected(), "a new runner");
        redis.cli(&["PUBLISH", "t:control", r#"{"stop":"c"}"#]);
        until("the job to be done", || {
            redis.hget("t:job:c", "state") == "done"
        })
        .await;
        assert_eq!(redis.hget("t:job:c", "exit_code"), "0");
        assert_eq!(redis.cli(&["LLEN", "t:processing:w"]), "0");
        service.abort();
    }

    /// The queue actor panics with a recording running: the restarted one carries on with its
    /// job table, so the recording's end is still written (and stop requests still reach it).
    #[actix_rt::test]
    async fn a_crashed_queue_forgets_no_running_job() {
        let redis = Redis::start();
        let (_dir, service) = serve_one_fake_job(&redis, "q");
        until("the job to run", || {
            redis.hget("t:job:q", "state") == "running"
        })
        .await;
        let wiring = WIRING.with(|w| w.borrow().clone()).unwrap();
        let first = wiring.borrow().queue.clone().unwrap();
        first.do_send(queue::Crash);
        until("a new queue actor", || {
            wiring
                .borrow()
                .queue
                .as_ref()
                .is_some_and(|q| *q != first && q.connected())
        })
        .await;
        until("the new queue to follow stop requests", || {
            redis
                .cli(&["PUBSUB", "NUMSUB", "t:control"])
                .ends_with("\n1")
        })
        .await;
        redis.cli(&["PUBLISH", "t:control", r#"{"stop":"q"}"#]);
        until("the job to be done", || {
            redis.hget("t:job:q", "state") == "done"
        })
        .await;
        assert_eq!(redis.hget("t:job:q", "attempts"), "1");
        assert_eq!(redis.cli(&["LLEN", "t:processing:w"]), "0");
        service.abort();
    }

    fn ended(code: Option<i32>, stopped_by_us: bool) -> Ended {
        Ended {
            id: "j".into(),
            code,
            stopped_by_us,
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
        assert_eq!(parse_control(r#"{"stop":"a-1"}"#).as_deref(), Some("a-1"));
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
