//! QueueActor: the service's side of the Redis queue.
//!
//! Owns: the Redis connection (a `ConnectionManager`: it reconnects by itself; while Redis is
//! away, recordings go on and their results wait here until they can be written), this worker's
//! heartbeat, and the list of jobs this worker has taken.
//! Accepts: [`JobEnded`] (from the runner), [`Shutdown`] (write every result still pending, then
//! take the heartbeat away), [`Kill`].
//! Sends: [`StartJob`] and [`StopJob`] to the runner.
//! Every 250 ms (one round at a time): refresh the heartbeat; write pending results; move the jobs
//! of workers whose heartbeat expired back to the queue; pass stop requests on; and, with a free
//! slot, take the next job (`LMOVE` into this worker's processing list, so it is never lost).
//! Stops: on `Shutdown`, after the last write (bounded by the supervisor's timeout).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use pagecast_actors::supervision::{ChildLink, ExitReason, Failure, FailureKind, Kill, Shutdown};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::runner::{JobEnded, StartJob, StopJob};
use super::{
    decide, parse_job, Decision, Ended, Keys, Parsed, ServiceOptions, Wiring, MAX_ATTEMPTS,
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
}

pub struct QueueActor {
    link: ChildLink,
    con: ConnectionManager,
    keys: Keys,
    options: ServiceOptions,
    wiring: Rc<RefCell<Wiring>>,
    running: HashMap<String, Taken>,
    pending: Vec<Outcome>,
    in_round: bool,
    /// Redis was unreachable at the last round (logged once per outage).
    offline: bool,
    last_heartbeat: Option<std::time::Instant>,
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

impl QueueActor {
    /// Connects to Redis and starts; fails (an input failure: nothing to take jobs from) if Redis
    /// does not answer within 5 s.
    pub(super) async fn start(
        client: redis::Client,
        keys: Keys,
        options: ServiceOptions,
        wiring: Rc<RefCell<Wiring>>,
        link: ChildLink,
    ) -> Result<Addr<QueueActor>, Failure> {
        let host = host_of(&options.redis);
        let unreachable = |why: String| {
            Failure::new(
                FailureKind::Input,
                format!("cannot reach Redis at {host}: {why}"),
            )
        };
        let con = tokio::time::timeout(CONNECT_TIMEOUT, ConnectionManager::new(client))
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
        Ok(QueueActor {
            link,
            con,
            keys,
            options,
            wiring,
            running: HashMap::new(),
            pending: Vec::new(),
            in_round: false,
            offline: false,
            last_heartbeat: None,
        }
        .start())
    }

    fn round(&mut self, ctx: &mut Context<Self>, take: bool) {
        if self.in_round {
            return;
        }
        self.in_round = true;
        let runner = self.wiring.borrow().runner.clone();
        let free = if take && runner.is_some() {
            self.options
                .max_recordings
                .saturating_sub(self.running.len())
        } else {
            0
        };
        let round = Round {
            con: self.con.clone(),
            keys: self.keys.clone(),
            worker: self.options.worker_id.clone(),
            ttl: self.options.heartbeat_ttl,
            pending: self.pending.clone(),
            running: self.running.keys().cloned().collect(),
            free,
        };
        ctx.spawn(actix::fut::wrap_future(round.run()).map(
            move |result, act: &mut Self, _| {
                act.in_round = false;
                let done = match result {
                    Ok(done) => done,
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
                act.last_heartbeat = Some(std::time::Instant::now());
                act.pending.drain(..done.written.min(act.pending.len()));
                for id in done.stop {
                    if let Some(runner) = &runner {
                        runner.do_send(StopJob { id });
                    }
                }
                for (id, raw, config, attempts) in done.taken {
                    act.run(id, raw, config, attempts);
                }
                act.pending.extend(done.refused);
            },
        ));
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
        });
        // A job that could not even start is failed (an internal error: exit 1).
        let fail = move |why: String| Outcome {
            id: Some(id.clone()),
            raw: raw.clone(),
            decision: Decision::Failed,
            code: Some(1),
            message: why,
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

    fn handle(&mut self, Failed(outcome): Failed, _: &mut Context<Self>) {
        if let Some(id) = &outcome.id {
            self.running.remove(id);
        }
        tracing::error!(job = ?outcome.id, error = %outcome.message, "job could not start");
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
        let decision = decide(&ended, taken.attempts);
        let Ended {
            id, code, message, ..
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
        });
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(ROUND_EVERY, |act, ctx| {
            // Without a heartbeat written for a whole TTL, other workers take this one's jobs:
            // a worker cut off from Redis that long must not go on taking new ones.
            act.round(ctx, true);
        });
        self.round(ctx, true);
    }
}

impl Handler<Shutdown> for QueueActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.link.set_exit(ExitReason::Shutdown);
        // The runner has stopped (it started after this actor): its results are in `pending`.
        let round = Round {
            con: self.con.clone(),
            keys: self.keys.clone(),
            worker: self.options.worker_id.clone(),
            ttl: self.options.heartbeat_ttl,
            pending: self.pending.clone(),
            running: Vec::new(),
            free: 0,
        };
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
    ttl: Duration,
    pending: Vec<Outcome>,
    running: Vec<String>,
    free: usize,
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
}

impl Round {
    async fn run(mut self) -> redis::RedisResult<RoundDone> {
        self.reclaim().await?;
        let keys = self.keys.clone();
        let k = &keys;
        let processing = k.processing(&self.worker);
        let ttl_ms = self.ttl.as_millis().max(1000) as u64;
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(k.worker(&self.worker))
            .arg(now())
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .sadd(k.workers(), &self.worker)
            .ignore()
            .query_async(&mut self.con)
            .await?;

        let mut written = 0;
        for outcome in &self.pending {
            write_outcome(&mut self.con, k, &processing, &self.worker, outcome).await?;
            written += 1;
        }

        let mut stop = Vec::new();
        for id in &self.running {
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
                    });
                }
            }
        }
        Ok(RoundDone {
            written,
            stop,
            taken,
            refused,
        })
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
            loop {
                let raw: Option<String> = redis::cmd("LMOVE")
                    .arg(k.processing(&worker))
                    .arg(k.jobs())
                    .arg("RIGHT")
                    .arg("RIGHT")
                    .query_async(&mut self.con)
                    .await?;
                let Some(raw) = raw else { break };
                if let Parsed::Job { id, .. } | Parsed::Refused { id: Some(id), .. } =
                    parse_job(&raw)
                {
                    let _: () = redis::pipe()
                        .hset(k.job(&id), "state", "requeued")
                        .ignore()
                        .hset(
                            k.job(&id),
                            "message",
                            format!("worker {worker} stopped answering; running it again"),
                        )
                        .ignore()
                        .publish(
                            k.events(),
                            serde_json::json!({ "id": id, "state": "requeued", "worker": worker })
                                .to_string(),
                        )
                        .ignore()
                        .query_async(&mut self.con)
                        .await?;
                }
                tracing::warn!(dead_worker = %worker, "moved a job of a worker without heartbeat back to the queue");
            }
            let _: () = self.con.srem(k.workers(), &worker).await?;
        }
        Ok(())
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
    let mut fields = vec![
        ("state", state.to_owned()),
        ("worker", worker.to_owned()),
        ("ended_at", now().to_string()),
        ("message", o.message.clone()),
    ];
    if let Some(code) = o.code {
        fields.push(("exit_code", code.to_string()));
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
