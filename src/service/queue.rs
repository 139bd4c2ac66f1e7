//! QueueActor: the service's side of the Redis queue.
//!
//! Owns: the Redis connection (a `ConnectionManager`: it reconnects by itself, with backoff; while
//! Redis is away, recordings go on and their results wait here until they can be written), a
//! subscription to `Q:control` (its own connection, reconnected with backoff), this worker's
//! heartbeat, and the list of jobs this worker has taken.
//! Accepts: [`JobEnded`] (from the runner), [`Drain`] (take no more jobs), [`Shutdown`] (write
//! every result still pending, then take the heartbeat away), [`Kill`].
//! Sends: [`StartJob`] and [`StopJob`] to the runner.
//! Every 250 ms (one round at a time): refresh the heartbeat; write pending results; move the jobs
//! of workers whose heartbeat expired back to the queue; pass stop requests on; and, with a free
//! slot, take the next job (`LMOVE` into this worker's processing list, so it is never lost).
//! Stops: on `Shutdown`, after the last write (bounded by the supervisor's timeout). Crashed and
//! restarted, it carries on with its predecessor's jobs and unwritten results (a [`Ledger`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use futures_util::StreamExt;
use pagecast_actors::supervision::{ChildLink, ExitReason, Failure, Kill, Shutdown};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use super::runner::{JobEnded, StartJob, StopJob};
use super::{
    decide, parse_control, parse_job, Decision, Ended, Keys, Parsed, ServiceOptions, Wiring,
    MAX_ATTEMPTS,
};

const ROUND_EVERY: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A job this worker runs.
#[derive(Debug, Clone)]
struct Taken {
    /// The job exactly as it is in the processing list (to remove it from there).
    raw: String,
    attempts: u32,
}

/// A result to write: what became of a job.
#[derive(Debug, Clone)]
struct Outcome {
    id: Option<String>,
    raw: String,
    decision: Decision,
    code: Option<i32>,
    message: String,
    /// The job never ran (taken as the worker began to stop): its attempt does not count.
    not_run: bool,
    /// What the attempt left: its number and JSON (see `attempt.rs`).
    output: Option<(u32, String)>,
}

/// Message: take no more jobs (the service is stopping; the running ones finish).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Message (from the control subscription): stop this job's recording, if it runs here.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Control {
    stop: String,
}

/// What a queue actor knows of its jobs. Handed to the next queue actor if this one crashes
/// (through [`Wiring`]), so a restart forgets no running job and no unwritten result.
#[derive(Default)]
pub(super) struct Ledger {
    running: HashMap<String, Taken>,
    abandoned: HashSet<String>,
    pending: Vec<Outcome>,
    draining: bool,
}

pub struct QueueActor {
    link: ChildLink,
    con: ConnectionManager,
    /// For the control subscription (a connection of its own).
    client: redis::Client,
    keys: Keys,
    options: ServiceOptions,
    /// This process's heartbeat value.
    instance: String,
    wiring: Rc<RefCell<Wiring>>,
    running: HashMap<String, Taken>,
    /// Jobs taken over by another worker while this one was cut off from Redis: their recordings
    /// are stopped here and their results are not ours to write.
    abandoned: HashSet<String>,
    pending: Vec<Outcome>,
    in_round: bool,
    draining: bool,
    /// When this worker last looked for dead workers.
    last_reclaim: Option<std::time::Instant>,
    /// Redis was unreachable at the last round (logged once per outage).
    offline: bool,
    /// Another live process uses this worker id (logged once).
    duplicate_seen: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or("127.0.0.1"),
                u.port().unwrap_or(6379)
            )
        })
        .unwrap_or_else(|| "the Redis server".into())
}

/// Connects to Redis: the connection every round uses, reconnecting by itself with backoff
/// (0.1 s doubling to 2 s). An error names the host, never the password.
pub(super) async fn connect(
    client: &redis::Client,
    url: &str,
) -> Result<ConnectionManager, String> {
    let host = host_of(url);
    let unreachable = |why: String| format!("cannot reach Redis at {host}: {why}");
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(2);
    let con = tokio::time::timeout(
        CONNECT_TIMEOUT,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
    .map_err(|e| unreachable(e.to_string()))?;
    let mut check = con.clone();
    let _: String =
        tokio::time::timeout(CONNECT_TIMEOUT, redis::cmd("PING").query_async(&mut check))
            .await
            .map_err(|_| unreachable("no answer to PING".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
    tracing::info!(redis = %host, "connected to Redis");
    Ok(con)
}

/// Makes this process the worker `options.worker_id`: its heartbeat is set only if no other has
/// one. A heartbeat left by an earlier run with this id (killed, restarted) expires within its
/// time to live and is waited for; one still refreshed after that belongs to a live worker, and
/// two workers with one id would take each other's jobs: an error. Then the jobs that earlier run
/// left in this worker's processing list go back to the queue.
pub(super) async fn claim_worker_id(
    mut con: ConnectionManager,
    keys: &Keys,
    options: &ServiceOptions,
    instance: &str,
) -> Result<(), String> {
    let worker = &options.worker_id;
    let key = keys.worker(worker);
    let ttl = ttl_ms(options.heartbeat_ttl);
    let deadline = tokio::time::Instant::now() + options.heartbeat_ttl + Duration::from_secs(1);
    let redis_error = |e: redis::RedisError| {
        format!(
            "Redis at {} failed while claiming the worker id: {e}",
            host_of(&options.redis)
        )
    };
    let mut waited = false;
    loop {
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(instance)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .query_async(&mut con)
            .await
            .map_err(redis_error)?;
        if set.is_some() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "--worker-id: another worker named {worker} is running on this queue (its \
                 heartbeat {key} is fresh); give each worker its own id"
            ));
        }
        if !waited {
            tracing::info!(worker = %worker, "a worker with this id had a heartbeat; waiting for it to expire");
            waited = true;
        }
        tokio::time::sleep(ROUND_EVERY).await;
    }
    let _: () = con
        .sadd(keys.workers(), worker)
        .await
        .map_err(redis_error)?;
    let moved = requeue_jobs_of(
        &mut con,
        keys,
        worker,
        &format!("worker {worker} restarted; running it again"),
    )
    .await
    .map_err(redis_error)?;
    if moved > 0 {
        tracing::warn!(
            jobs = moved,
            "moved the jobs an earlier run with this worker id left back to the queue"
        );
    }
    Ok(())
}

fn connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped()
}

fn ttl_ms(ttl: Duration) -> u64 {
    ttl.as_millis().max(1000) as u64
}

/// Moves every job in `worker`'s processing list back to the queue (to its end: they run next),
/// each marked `requeued`. Returns how many.
async fn requeue_jobs_of(
    con: &mut ConnectionManager,
    k: &Keys,
    worker: &str,
    why: &str,
) -> redis::RedisResult<usize> {
    let mut moved = 0;
    loop {
        let raw: Option<String> = redis::cmd("LMOVE")
            .arg(k.processing(worker))
            .arg(k.jobs())
            .arg("RIGHT")
            .arg("RIGHT")
            .query_async(con)
            .await?;
        let Some(raw) = raw else { break };
        moved += 1;
        if let Parsed::Job { id, .. } | Parsed::Refused { id: Some(id), .. } = parse_job(&raw) {
            let _: () = redis::pipe()
                .hset(k.job(&id), "state", "requeued")
                .ignore()
                .hset(k.job(&id), "message", why)
                .ignore()
                .publish(
                    k.events(),
                    serde_json::json!({ "id": id, "state": "requeued", "worker": worker, "message": why })
                        .to_string(),
                )
                .ignore()
                .query_async(con)
                .await?;
        }
    }
    Ok(moved)
}

/// Follows `Q:control` on a connection of its own (a subscribed connection can do nothing
/// else), reconnecting with backoff; a ping every 5 s finds a connection that died silently.
async fn follow_control(client: redis::Client, channel: String, me: Addr<QueueActor>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| "no answer".to_owned())?
                .map_err(|e| e.to_string())?;
            let (mut sink, stream) = pubsub.split();
            sink.subscribe(&channel).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((sink, stream))
        }
        .await;
        match subscribed {
            Ok((mut sink, mut stream)) => {
                tracing::debug!(channel = %channel, "following stop requests");
                let since = tokio::time::Instant::now();
                let every = Duration::from_secs(5);
                let mut ping = tokio::time::interval_at(since + every, every);
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            let payload: String = msg.get_payload().unwrap_or_default();
                            match parse_control(&payload) {
                                Some(stop) => me.do_send(Control { stop }),
                                None => tracing::warn!(channel = %channel, "ignored a control message that is not {{\"stop\": \"<id>\"}}"),
                            }
                        }
                        _ = ping.tick() => {
                            // Subscribed, the answer is ["pong", ""]: any answer will do.
                            let pong = tokio::time::timeout(Duration::from_secs(2), sink.ping::<redis::Value>()).await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                tracing::debug!(channel = %channel, "control subscription lost; reconnecting");
                if since.elapsed() > every {
                    delay = Duration::from_millis(100);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot subscribe to stop requests yet"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

impl QueueActor {
    pub(super) fn new(
        con: ConnectionManager,
        client: redis::Client,
        keys: Keys,
        options: ServiceOptions,
        instance: String,
        wiring: Rc<RefCell<Wiring>>,
        link: ChildLink,
    ) -> QueueActor {
        let ledger = wiring.borrow_mut().ledger.take().unwrap_or_default();
        if !ledger.running.is_empty() || !ledger.pending.is_empty() {
            tracing::info!(
                running = ledger.running.len(),
                results = ledger.pending.len(),
                "queue restarted: carrying on with its jobs"
            );
        }
        QueueActor {
            link,
            con,
            client,
            keys,
            options,
            instance,
            wiring,
            running: ledger.running,
            abandoned: ledger.abandoned,
            pending: ledger.pending,
            in_round: false,
            draining: ledger.draining,
            last_reclaim: None,
            offline: false,
            duplicate_seen: false,
        }
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.in_round {
            return;
        }
        self.in_round = true;
        let runner = self.wiring.borrow().runner.clone();
        let free = if !self.draining && runner.is_some() {
            self.options
                .max_recordings
                .saturating_sub(self.running.len())
        } else {
            0
        };
        let round = self.new_round(free);
        ctx.spawn(actix::fut::wrap_future(round.run()).map(
            move |result, act: &mut Self, _| {
                act.in_round = false;
                let done = match result {
                    Ok(done) => done,
                    Err(e) if !connection_error(&e) => {
                        // Not an outage (a key of the wrong type, a refused command): say so
                        // every time, it will not heal by itself.
                        tracing::error!(error = %e, "Redis refused a command; retrying");
                        return;
                    }
                    Err(e) => {
                        if !act.offline {
                            tracing::warn!(redis = %host_of(&act.options.redis), error = %e, "Redis unreachable; running recordings go on, results wait");
                            act.offline = true;
                        }
                        return;
                    }
                };
                if act.offline {
                    tracing::info!("Redis is back");
                    act.offline = false;
                }
                if done.duplicate && !act.duplicate_seen {
                    tracing::error!(worker = %act.options.worker_id, "another process runs as this worker id: the two will take each other's jobs");
                    act.duplicate_seen = true;
                }
                act.pending.drain(..done.written.min(act.pending.len()));
                for id in done.taken_over {
                    if act.abandoned.insert(id.clone()) {
                        tracing::warn!(job = %id, "this worker was cut off from Redis so long that another took the job over; stopping this copy");
                        if let Some(runner) = &runner {
                            runner.do_send(StopJob { id });
                        }
                    }
                }
                for id in done.stop {
                    if let Some(runner) = &runner {
                        runner.do_send(StopJob { id });
                    }
                }
                for (id, raw, config, attempts) in done.taken {
                    if act.draining {
                        // Taken by a round that began before the stop: give it back untried.
                        act.pending.push(Outcome {
                            id: Some(id),
                            raw,
                            decision: Decision::Requeue,
                            code: None,
                            message: "the worker stopped before starting it".into(),
                            not_run: true,
                            output: None,
                        });
                    } else {
                        act.run(id, raw, config, attempts);
                    }
                }
                act.pending.extend(done.refused);
            },
        ));
    }

    fn new_round(&mut self, free: usize) -> Round {
        // Looking for dead workers costs a command per worker: a few times per time to live is
        // enough (a dead worker's jobs wait at most its TTL plus this).
        let every = (self.options.heartbeat_ttl / 3).max(Duration::from_secs(1));
        let reclaim = self.last_reclaim.is_none_or(|t| t.elapsed() >= every);
        if reclaim {
            self.last_reclaim = Some(std::time::Instant::now());
        }
        Round {
            reclaim,
            con: self.con.clone(),
            keys: self.keys.clone(),
            worker: self.options.worker_id.clone(),
            instance: self.instance.clone(),
            ttl: self.options.heartbeat_ttl,
            pending: self.pending.clone(),
            running: self
                .running
                .iter()
                .filter(|(id, _)| !self.abandoned.contains(*id))
                .map(|(id, t)| (id.clone(), t.raw.clone()))
                .collect(),
            free,
        }
    }

    fn run(&mut self, id: String, raw: String, config: String, attempts: u32) {
        let Some(runner) = self.wiring.borrow().runner.clone() else {
            return;
        };
        self.running.insert(
            id.clone(),
            Taken {
                raw: raw.clone(),
                attempts,
            },
        );
        let sent = runner.send(StartJob {
            id: id.clone(),
            config,
            attempt: attempts,
        });
        // A job that could not even start is failed (an internal error: exit 1).
        let fail = move |why: String| Outcome {
            id: Some(id.clone()),
            raw: raw.clone(),
            decision: Decision::Failed,
            code: Some(1),
            message: why,
            not_run: false,
            output: None,
        };
        let me = self.link_addr();
        actix::spawn(async move {
            let why = match sent.await {
                Ok(Ok(())) => return,
                Ok(Err(why)) => why,
                Err(e) => format!("the runner is gone: {e}"),
            };
            if let Some(me) = me {
                me.do_send(Failed(fail(why)));
            }
        });
    }

    fn link_addr(&self) -> Option<Addr<QueueActor>> {
        self.wiring.borrow().queue.clone()
    }
}

/// Message: a job could not start.
#[derive(Message)]
#[rtype(result = "()")]
struct Failed(Outcome);

impl Handler<Failed> for QueueActor {
    type Result = ();

    fn handle(&mut self, Failed(mut outcome): Failed, _: &mut Context<Self>) {
        if let Some(id) = &outcome.id {
            self.running.remove(id);
        }
        if self.draining {
            // The runner is stopping: the job goes back to the queue untried.
            outcome.decision = Decision::Requeue;
            outcome.code = None;
            outcome.message = "the worker stopped before starting it".into();
            outcome.not_run = true;
        } else {
            tracing::error!(job = ?outcome.id, error = %outcome.message, "job could not start");
        }
        self.pending.push(outcome);
    }
}

impl Handler<JobEnded> for QueueActor {
    type Result = ();

    fn handle(&mut self, JobEnded(ended): JobEnded, _: &mut Context<Self>) {
        let Some(taken) = self.running.remove(&ended.id) else {
            tracing::warn!(job = %ended.id, "a recording this worker does not know ended");
            return;
        };
        if self.abandoned.remove(&ended.id) {
            tracing::info!(job = %ended.id, "the copy of a job taken over by another worker ended; its result is the other's to write");
            return;
        }
        let decision = decide(&ended, taken.attempts);
        let Ended {
            id,
            code,
            message,
            output,
            ..
        } = ended;
        let message = match decision {
            Decision::Requeue => format!("the recording was killed ({message}); running it again"),
            Decision::Failed if code.is_none() && taken.attempts >= MAX_ATTEMPTS => {
                format!("killed {MAX_ATTEMPTS} times, giving up ({message})")
            }
            _ => message,
        };
        tracing::info!(job = %id, ?decision, code = ?code, "job ended");
        self.pending.push(Outcome {
            id: Some(id),
            raw: taken.raw,
            decision,
            code,
            message,
            not_run: false,
            output,
        });
    }
}

impl Handler<Drain> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.draining = true;
    }
}

impl Handler<Control> for QueueActor {
    type Result = ();

    fn handle(&mut self, Control { stop }: Control, _: &mut Context<Self>) {
        if !self.running.contains_key(&stop) {
            return; // another worker's job (every worker hears every request)
        }
        if let Some(runner) = &self.wiring.borrow().runner {
            runner.do_send(StopJob { id: stop });
        }
    }
}

impl Drop for QueueActor {
    fn drop(&mut self) {
        self.wiring.borrow_mut().ledger = Some(Ledger {
            running: std::mem::take(&mut self.running),
            abandoned: std::mem::take(&mut self.abandoned),
            pending: std::mem::take(&mut self.pending),
            draining: self.draining,
        });
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(actix::fut::wrap_future(follow_control(
            self.client.clone(),
            self.keys.control(),
            ctx.address(),
        )));
        ctx.run_interval(ROUND_EVERY, |act, ctx| act.round(ctx));
        self.round(ctx);
    }
}

impl Handler<Shutdown> for QueueActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.link.set_exit(ExitReason::Shutdown);
        // The runner has stopped (it started after this actor): its results are in `pending`.
        self.draining = true;
        let mut round = self.new_round(0);
        round.running.clear();
        let (mut con, keys, worker) = (
            self.con.clone(),
            self.keys.clone(),
            self.options.worker_id.clone(),
        );
        let last = async move {
            let mut written = 0;
            for _ in 0..20 {
                match round.clone().run().await {
                    Ok(done) => {
                        written = done.written;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot write the last results yet");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            // Leaving: no heartbeat, not a worker any more. Anything left in the processing list
            // (a result that could not be written) is found by the others as a dead worker's job.
            let _: Result<(), _> = redis::pipe()
                .del(keys.worker(&worker))
                .srem(keys.workers(), &worker)
                .query_async(&mut con)
                .await;
            written
        };
        Box::pin(actix::fut::wrap_future(last).map(
            |written, act: &mut Self, ctx: &mut Context<Self>| {
                let left = act.pending.len().saturating_sub(written);
                if left > 0 {
                    tracing::error!(results = left, "Redis is unreachable: results not written");
                }
                ctx.stop();
                Ok(())
            },
        ))
    }
}

impl Handler<Kill> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.link.set_exit(ExitReason::Shutdown);
        ctx.stop();
    }
}

/// One round of Redis work, on copies of what it needs (so it can run while the actor goes on).
#[derive(Clone)]
struct Round {
    con: ConnectionManager,
    keys: Keys,
    worker: String,
    instance: String,
    ttl: Duration,
    pending: Vec<Outcome>,
    /// (id, raw) of the jobs running here.
    running: Vec<(String, String)>,
    free: usize,
    /// Look for dead workers this round.
    reclaim: bool,
}

/// What a round did.
struct RoundDone {
    /// How many of the pending results were written (from the front).
    written: usize,
    stop: Vec<String>,
    /// (id, raw, config, attempts) of jobs taken to run.
    taken: Vec<(String, String, String, u32)>,
    /// Jobs taken and refused at once: results to write next round.
    refused: Vec<Outcome>,
    /// Running jobs no longer in this worker's processing list: while this worker's heartbeat
    /// was gone, another worker moved them back to the queue.
    taken_over: Vec<String>,
    /// The heartbeat held another process's token: two workers share this id.
    duplicate: bool,
}

impl Round {
    async fn run(mut self) -> redis::RedisResult<RoundDone> {
        if self.reclaim {
            self.reclaim().await?;
        }
        let keys = self.keys.clone();
        let k = &keys;
        let processing = k.processing(&self.worker);
        let (previous,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(k.worker(&self.worker))
            .arg(&self.instance)
            .arg("PX")
            .arg(ttl_ms(self.ttl))
            .arg("GET")
            .sadd(k.workers(), &self.worker)
            .ignore()
            .query_async(&mut self.con)
            .await?;
        let duplicate = previous.as_ref().is_some_and(|p| *p != self.instance);
        // The heartbeat was gone: this worker was cut off longer than its time to live (other
        // workers may have moved its jobs back to the queue), or Redis lost its data (restarted
        // without persistence). Tell the two apart for each running job.
        let mut taken_over = Vec::new();
        if previous.is_none() {
            for (id, raw) in self.running.clone() {
                match self.check_running(&processing, &id, &raw).await? {
                    Presence::Here => {}
                    Presence::TakenOver => taken_over.push(id),
                    Presence::Lost => {
                        // Put it back, so that if this worker dies now the job is not lost.
                        tracing::warn!(job = %id, "Redis lost this running job; recording it again there");
                        let _: () = redis::pipe()
                            .lpush(&processing, &raw)
                            .ignore()
                            .hset_multiple(
                                k.job(&id),
                                &[("state", "running"), ("worker", self.worker.as_str())],
                            )
                            .ignore()
                            .query_async(&mut self.con)
                            .await?;
                    }
                }
            }
        }

        let mut written = 0;
        for outcome in &self.pending {
            write_outcome(&mut self.con, k, &processing, &self.worker, outcome).await?;
            written += 1;
        }

        let mut stop = Vec::new();
        for (id, _) in &self.running {
            let flag: Option<String> = self.con.hget(k.job(id), "stop").await?;
            if flag.as_deref() == Some("1") {
                stop.push(id.clone());
            }
        }

        let mut taken = Vec::new();
        let mut refused = Vec::new();
        for _ in 0..self.free {
            let raw: Option<String> = redis::cmd("LMOVE")
                .arg(k.jobs())
                .arg(&processing)
                .arg("RIGHT")
                .arg("LEFT")
                .query_async(&mut self.con)
                .await?;
            let Some(raw) = raw else { break };
            match parse_job(&raw) {
                Parsed::Job { id, config } => {
                    let attempts: u32 = self.con.hincr(k.job(&id), "attempts", 1).await?;
                    if attempts > MAX_ATTEMPTS {
                        refused.push(Outcome {
                            id: Some(id),
                            raw,
                            decision: Decision::Failed,
                            code: None,
                            message: format!("tried {MAX_ATTEMPTS} times already, giving up"),
                            not_run: false,
                            output: None,
                        });
                        continue;
                    }
                    let started = now();
                    let _: () = redis::pipe()
                        .hset_multiple(
                            k.job(&id),
                            &[
                                ("state", "running".to_owned()),
                                ("worker", self.worker.clone()),
                                ("started_at", started.to_string()),
                            ],
                        )
                        .ignore()
                        .hdel(k.job(&id), &["ended_at", "exit_code", "message"])
                        .ignore()
                        .publish(
                            k.events(),
                            serde_json::json!({ "id": id, "state": "running", "worker": self.worker, "attempts": attempts }).to_string(),
                        )
                        .ignore()
                        .query_async(&mut self.con)
                        .await?;
                    tracing::info!(job = %id, attempts, "job taken");
                    taken.push((id, raw, config, attempts));
                }
                Parsed::Refused { id, message } => {
                    tracing::warn!(job = ?id, error = %message, "job refused");
                    refused.push(Outcome {
                        id,
                        raw,
                        decision: Decision::Failed,
                        code: Some(2),
                        message,
                        not_run: false,
                        output: None,
                    });
                }
            }
        }
        Ok(RoundDone {
            written,
            stop,
            taken,
            refused,
            taken_over,
            duplicate,
        })
    }

    /// Where a job this worker runs stands in Redis.
    async fn check_running(
        &mut self,
        processing: &str,
        id: &str,
        raw: &str,
    ) -> redis::RedisResult<Presence> {
        let (here, queued, state, worker): (
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
        ) = redis::pipe()
            .cmd("LPOS")
            .arg(processing)
            .arg(raw)
            .cmd("LPOS")
            .arg(self.keys.jobs())
            .arg(raw)
            .hget(self.keys.job(id), "state")
            .hget(self.keys.job(id), "worker")
            .query_async(&mut self.con)
            .await?;
        Ok(presence(
            here.is_some(),
            queued.is_some(),
            state.as_deref(),
            worker.as_deref(),
            &self.worker,
        ))
    }

    /// Moves the jobs of workers without a heartbeat back to the queue (to its end: they run
    /// next), and forgets those workers.
    async fn reclaim(&mut self) -> redis::RedisResult<()> {
        let k = &self.keys;
        let workers: Vec<String> = self.con.smembers(k.workers()).await?;
        for worker in workers.into_iter().filter(|w| *w != self.worker) {
            let alive: bool = self.con.exists(k.worker(&worker)).await?;
            if alive {
                continue;
            }
            let why = format!("worker {worker} stopped answering; running it again");
            let moved = requeue_jobs_of(&mut self.con, k, &worker, &why).await?;
            if moved > 0 {
                tracing::warn!(dead_worker = %worker, jobs = moved, "moved the jobs of a worker without heartbeat back to the queue");
            }
            let _: () = self.con.srem(k.workers(), &worker).await?;
        }
        Ok(())
    }
}

/// Where a running job stands in Redis, seen from the worker running it.
#[derive(Debug, PartialEq, Eq)]
enum Presence {
    /// In this worker's processing list: all is well.
    Here,
    /// Moved back to the queue, or taken by another worker: this copy must stop.
    TakenOver,
    /// Gone without a trace (Redis lost its data): this worker still owns it.
    Lost,
}

fn presence(
    in_processing: bool,
    in_queue: bool,
    state: Option<&str>,
    worker: Option<&str>,
    me: &str,
) -> Presence {
    if in_processing {
        Presence::Here
    } else if in_queue || state == Some("requeued") || worker.is_some_and(|w| w != me) {
        Presence::TakenOver
    } else {
        Presence::Lost
    }
}

/// Writes one result, atomically: the job's hash, its removal from this worker's processing list
/// (and, to run it again, its return to the queue), and the event.
async fn write_outcome(
    con: &mut ConnectionManager,
    k: &Keys,
    processing: &str,
    worker: &str,
    o: &Outcome,
) -> redis::RedisResult<()> {
    let state = match o.decision {
        Decision::Done => "done",
        Decision::Failed => "failed",
        Decision::Requeue => "requeued",
    };
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.lrem(processing, 1, &o.raw).ignore();
    if o.decision == Decision::Requeue {
        pipe.rpush(k.jobs(), &o.raw).ignore();
    }
    if let (true, Some(id)) = (o.not_run, &o.id) {
        pipe.hincr(k.job(id), "attempts", -1).ignore();
    }
    let mut fields = vec![
        ("state".to_owned(), state.to_owned()),
        ("worker".to_owned(), worker.to_owned()),
        ("ended_at".to_owned(), now().to_string()),
        ("message".to_owned(), o.message.clone()),
    ];
    if let Some(code) = o.code {
        fields.push(("exit_code".to_owned(), code.to_string()));
    }
    if let Some((n, output)) = &o.output {
        fields.push((super::attempt::field(*n), output.clone()));
    }
    if let Some(id) = &o.id {
        pipe.hset_multiple(k.job(id), &fields).ignore();
    }
    pipe.publish(
        k.events(),
        serde_json::json!({
            "id": o.id, "state": state, "worker": worker, "exit_code": o.code, "message": o.message,
        })
        .to_string(),
    )
    .ignore();
    pipe.query_async::<()>(con).await
}

/// Message (tests only): panic, as a bug would.
#[cfg(test)]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Crash;

#[cfg(test)]
impl Handler<Crash> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("the queue crashed on purpose");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_job_missing_from_redis_is_told_taken_over_from_lost() {
        assert_eq!(
            presence(true, false, Some("running"), Some("w1"), "w1"),
            Presence::Here
        );
        // Another worker moved it back to the queue, or has taken it since.
        assert_eq!(
            presence(false, true, Some("running"), Some("w1"), "w1"),
            Presence::TakenOver
        );
        assert_eq!(
            presence(false, false, Some("requeued"), Some("w1"), "w1"),
            Presence::TakenOver
        );
        assert_eq!(
            presence(false, false, Some("running"), Some("w2"), "w1"),
            Presence::TakenOver
        );
        // Redis restarted empty, or the hash still names this worker: still this worker's.
        assert_eq!(presence(false, false, None, None, "w1"), Presence::Lost);
        assert_eq!(
            presence(false, false, Some("running"), Some("w1"), "w1"),
            Presence::Lost
        );
    }
}
