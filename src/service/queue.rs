//! QueueActor: the service's side of the Redis queue.
//!
//! Owns: the [`Store`] (a reconnecting connection: while Redis is away, recordings go on and
//! their results wait here until they can be written), the control follower (`control.rs`, a
//! connection of its own), this worker's lease (its heartbeat) and the jobs this worker has taken.
//! Accepts: [`JobEnded`] and [`Usage`] (from the runner), [`Shutdown`] (write every result still
//! pending, then give the lease up), [`Kill`], [`SiblingUp`] (the runner, at each of its starts:
//! the supervisor wires them, `ChildLink::follow`).
//! Also accepts [`JobPaused`] (from the runner: a recording paused or resumed; its state is
//! written at the next round). A restarted queue actor asks the runner for every pause state
//! again ([`ResendPauses`]): those its predecessor had not written are written (a state already
//! there is not written twice: `SET_PAUSED`).
//! Sends: [`StartJob`], [`StopJob`], [`DiscardJob`] and [`PauseJob`] (pause and resume
//! requests) to the runner.
//! Every 250 ms (one round at a time): renew the lease; write pending results; give back what
//! the processing list holds that runs nowhere here; move the jobs of workers whose lease expired
//! back to the queue; pass stop requests on (once per job); and take the next jobs while
//! admission (`capacity.rs`) lets it: each is read where it lies (`LINDEX`), its cost weighed
//! against what the running recordings hold, and only then moved (`LMOVE`, only if it is still
//! the next one); a job that does not fit waits at the head of the queue, one that never can
//! fails at once (its payload re-stored sealed at once when taken). Between rounds: a lease that could not be renewed
//! for a third of its life stops every recording here, to be finished before the lease ends
//! (so no other worker runs the job while this one still does).
//! Takes no more jobs once the service is stopping (the [`ServiceShutdown`] it is handed has
//! reached `Orderly`: the running recordings finish).
//! Stops: on `Shutdown`, after the last write (bounded by the supervisor's timeout). Crashed and
//! restarted, it carries on with its predecessor's jobs and unwritten results (a [`Ledger`],
//! left in its [`LedgerSlot`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use pagecast_actors::backoff::Backoff;
use pagecast_actors::supervision::{ChildLink, ExitReason, Failure, Kill, Shutdown, SiblingUp};

use super::capacity::{self, Admission, Cost, Held, Verdict};
use super::runner::{
    DiscardJob, JobEnded, PauseJob, ResendPauses, RunnerActor, StartJob, StopJob, Usage, RUNNER,
};
use super::sealed::{self, JobKey};
use super::store::{connection_error, host_of, Asked, Outcome, Presence, Store, Take};
use super::{
    decide, parse_job, ControlRequest, Decision, Ended, Parsed, ServiceOptions, MAX_ATTEMPTS,
};
use crate::shutdown::{Level, Shutdown as ServiceShutdown};
use pagecast_actors::events;

const ROUND_EVERY: Duration = Duration::from_millis(250);

/// A job this worker runs.
#[derive(Debug, Clone)]
struct Taken {
    /// The job exactly as it is in the processing list (to remove it from there).
    raw: String,
    attempts: u32,
    /// What admission reserved for it.
    reserved: Cost,
    /// The last pause (true) or resume asked of its recording, by either way (None: neither).
    pause_asked: Option<bool>,
    /// A discard was passed on (once: the hash asks it again every round).
    discard_asked: bool,
    /// How many of the job's live-output updates (numbered from 1 in its hash) its recording
    /// has had: a run starts from none (it records the job's config as submitted).
    streams_applied: u64,
    /// The last layout switch asked of its recording, by either way.
    layout_asked: Option<String>,
    /// When it was handed to the runner: it counts as starting until its first frame, for at
    /// most `capacity::STARTING_LIMIT`.
    taken_at: Instant,
}

/// A job a round took, ready to run.
struct Start {
    id: String,
    raw: String,
    config: String,
    attempts: u32,
    cost: Cost,
    /// Warm trees that stop to make room for it (`Admission::admit_shedding`).
    shed_warm: usize,
}

/// Message (from the control follower): stop, pause or resume this job's recording, if it runs
/// here.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Control(ControlRequest);

/// Message (from the runner, which reads it in the recording's log): the job's recording has
/// paused (`true`) or resumed; its state is written at the next round.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobPaused {
    pub id: String,
    pub paused: bool,
}

/// The queue's child name in the service's tree (the runner follows it by this name).
pub const QUEUE: &str = "queue";

/// What the service hands each queue actor it starts, besides its connections and options.
#[derive(Clone, Default)]
pub(super) struct FromService {
    /// Where the last queue actor left its jobs (empty at the first start).
    pub ledger: LedgerSlot,
    /// The service's stop: once `Orderly`, no more jobs are taken.
    pub shutdown: ServiceShutdown,
    /// What `/healthz` shows of capacity (the queue writes it, the API reads it).
    pub capacity: capacity::ReportSender,
}

/// Where a queue actor leaves its [`Ledger`] when it stops, for the next one: kept by the queue's
/// own child spec, from one start of it to the next (not shared with any other actor).
pub(super) type LedgerSlot = Rc<RefCell<Option<Ledger>>>;

/// What a queue actor knows of its jobs. Handed to the next queue actor if this one crashes
/// (through its [`LedgerSlot`]), so a restart forgets no running job and no unwritten result.
#[derive(Default)]
pub(super) struct Ledger {
    running: HashMap<String, Taken>,
    abandoned: HashSet<String>,
    stopping: HashSet<String>,
    pending: Vec<Outcome>,
    draining: bool,
    lease_until: Option<Instant>,
    /// The cost factor last measured by a queue actor, and when (`recalibrate`).
    calibration: Option<(f64, Instant)>,
}

pub struct QueueActor {
    link: ChildLink,
    store: Store,
    /// For the control follower (a connection of its own).
    client: redis::Client,
    options: ServiceOptions,
    /// This process's heartbeat value.
    instance: String,
    /// Where this actor's ledger goes when it stops.
    ledger: LedgerSlot,
    /// The service's stop: once `Orderly`, no more jobs are taken.
    service: ServiceShutdown,
    /// The runner, as the supervisor last said (None until it is up).
    runner: Option<Addr<RunnerActor>>,
    /// What `/healthz` shows of capacity (the API reads it).
    capacity: capacity::ReportSender,
    running: HashMap<String, Taken>,
    /// Jobs this worker no longer owns (another worker took them over while this one was cut off,
    /// or this one stopped them when its lease ran out): their recordings are stopped here and
    /// their results are not ours to write.
    abandoned: HashSet<String>,
    /// Jobs whose recording was asked to stop (a stop is sent once).
    stopping: HashSet<String>,
    pending: Vec<Outcome>,
    /// Pauses and resumes of running jobs, to write (`state` paused / running) in order.
    pauses: Vec<(String, bool)>,
    in_round: bool,
    /// False while a round runs (the last round waits for it: two rounds would write the same
    /// results twice).
    idle: tokio::sync::watch::Sender<bool>,
    /// Shutting down: no more rounds but the last.
    closing: bool,
    draining: bool,
    /// Until when this worker's lease (its heartbeat in Redis) surely holds.
    lease_until: Option<Instant>,
    /// When this worker last looked for dead workers.
    last_reclaim: Option<Instant>,
    /// Redis was unreachable at the last round (logged once per outage).
    offline: bool,
    /// Another live process uses this worker id (logged once).
    duplicate_seen: bool,
    /// What the running recordings use, as the runner last measured.
    usage: Usage,
    /// The job last logged as waiting for capacity (logged once per job).
    waiting: Option<String>,
    /// When the machine's cost factor was last measured (or the actor started).
    calibrated_at: Instant,
    /// The calibration probe runs: no job is taken until it is done.
    calibrating: bool,
}

/// Makes this process the worker `options.worker_id`: its heartbeat is set only if no other has
/// one. A heartbeat left by an earlier run with this id (killed, restarted) expires within its
/// time to live and is waited for; one still refreshed after that belongs to a live worker, and
/// two workers with one id would take each other's jobs: an error. Then the jobs that earlier run
/// left in this worker's processing list go back to the queue.
pub(super) async fn claim_worker_id(
    mut store: Store,
    options: &ServiceOptions,
    instance: &str,
) -> Result<(), String> {
    let worker = options.worker_id.clone();
    let deadline = tokio::time::Instant::now() + options.heartbeat_ttl + Duration::from_secs(1);
    let redis_error = |e: redis::RedisError| {
        format!(
            "Redis at {} failed while claiming the worker id: {e}",
            host_of(&options.redis)
        )
    };
    let mut waited = false;
    let mut poll = Backoff::fixed(ROUND_EVERY);
    while !store
        .claim_heartbeat(instance, options.heartbeat_ttl)
        .await
        .map_err(redis_error)?
    {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "--worker-id: another worker named {worker} is running on this queue (its \
                 heartbeat is fresh); give each worker its own id"
            ));
        }
        if !waited {
            tracing::info!(worker = %worker, "a worker with this id had a heartbeat; waiting for it to expire");
            waited = true;
        }
        poll.wait().await;
    }
    let moved = store
        .requeue_jobs_of(
            &worker,
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
    let adopted = store.adopt_unbraced_jobs().await.map_err(redis_error)?;
    if adopted > 0 {
        tracing::warn!(
            jobs = adopted,
            "moved the jobs queued under the key names without the hash tag into the queue"
        );
    }
    Ok(())
}

impl QueueActor {
    pub(super) fn new(
        store: Store,
        client: redis::Client,
        mut options: ServiceOptions,
        instance: String,
        from_service: FromService,
        link: ChildLink,
    ) -> QueueActor {
        let FromService {
            ledger: slot,
            shutdown: service,
            capacity,
        } = from_service;
        let ledger = slot.borrow_mut().take().unwrap_or_default();
        if !ledger.running.is_empty() || !ledger.pending.is_empty() {
            tracing::info!(
                running = ledger.running.len(),
                results = ledger.pending.len(),
                "queue restarted: carrying on with its jobs"
            );
        }
        // A factor measured again by a crashed predecessor stands (not the one at the start).
        let calibrated_at = match ledger.calibration {
            Some((factor, at)) => {
                options.machine.cost_factor = factor;
                at
            }
            None => Instant::now(),
        };
        QueueActor {
            link,
            store,
            client,
            options,
            instance,
            ledger: slot,
            service,
            runner: None,
            capacity,
            running: ledger.running,
            abandoned: ledger.abandoned,
            stopping: ledger.stopping,
            pending: ledger.pending,
            pauses: Vec::new(),
            in_round: false,
            idle: tokio::sync::watch::Sender::new(true),
            closing: false,
            draining: ledger.draining,
            lease_until: ledger.lease_until,
            last_reclaim: None,
            offline: false,
            duplicate_seen: false,
            usage: Usage::default(),
            waiting: None,
            calibrated_at,
            calibrating: false,
        }
    }

    /// What each running recording holds, for admission.
    fn held(&self) -> Vec<Held> {
        self.running
            .iter()
            .map(|(id, taken)| Held {
                reserved: taken.reserved,
                measured: self.usage.measured.get(id).copied(),
                behind: self.usage.behind.contains(id),
                warm: false,
                starting: !self.usage.framed.contains(id)
                    && taken.taken_at.elapsed() < capacity::STARTING_LIMIT,
            })
            // The warm trees waiting for jobs hold their share too.
            .chain(self.usage.warm.iter().map(|measured| Held {
                reserved: self.options.admission().warm_tree(),
                measured: *measured,
                behind: false,
                warm: true,
                starting: false,
            }))
            .collect()
    }

    /// The runner, if it runs: between a crash of it and the supervisor's word of the next one,
    /// the address held is the dead one's.
    fn runner(&self) -> Option<Addr<RunnerActor>> {
        self.runner.clone().filter(Addr::connected)
    }

    /// Taking no more jobs: the service is stopping (or a predecessor was, see [`Ledger`]).
    fn draining(&self) -> bool {
        self.draining || self.service.level() >= Level::Orderly
    }

    /// Asks the runner to stop a recording, once; `within` bounds how long it may take.
    fn stop(&mut self, id: &str, within: Option<Duration>) {
        if !self.running.contains_key(id) {
            return;
        }
        let first = self.stopping.insert(id.to_owned());
        if !first && within.is_none() {
            return;
        }
        if let Some(runner) = self.runner() {
            runner.do_send(StopJob {
                id: id.to_owned(),
                within,
            });
        }
    }

    /// A lease not renewed for a third of its life: stop every recording while there is time to
    /// finish it before the lease ends and another worker may take the job.
    fn guard_lease(&mut self) {
        let Some(until) = self.lease_until else {
            return;
        };
        let now = Instant::now();
        let ttl = self.options.heartbeat_ttl;
        if until.saturating_duration_since(now) > ttl * 2 / 3 {
            return;
        }
        let owned: Vec<String> = self
            .running
            .keys()
            .filter(|id| !self.abandoned.contains(*id))
            .cloned()
            .collect();
        if owned.is_empty() {
            return;
        }
        // Finished (or killed) a little before the lease ends, whatever the clock drift.
        let within = until
            .saturating_duration_since(now)
            .saturating_sub(ttl / 10 + Duration::from_millis(500));
        tracing::error!(
            jobs = owned.len(),
            within = ?within,
            "cannot renew this worker's lease in Redis: stopping its recordings before another worker may take them over"
        );
        for id in owned {
            self.abandoned.insert(id.clone());
            self.stop(&id, Some(within));
        }
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        self.guard_lease();
        if self.in_round || self.closing {
            return;
        }
        self.recalibrate(ctx);
        self.in_round = true;
        self.idle.send_replace(false);
        let take = !self.draining() && self.runner().is_some() && !self.calibrating;
        let round = self.new_round(take);
        let written = round.written.clone();
        let pauses_written = round.pauses_written.clone();
        ctx.spawn(actix::fut::wrap_future(round.run()).map(
            move |result, act: &mut Self, ctx| {
                act.in_round = false;
                act.idle.send_replace(true);
                // Written results are gone from `pending` even if the round failed after them
                // (each is one transaction): written twice, a requeue would queue a job twice.
                let written = written.load(Ordering::SeqCst).min(act.pending.len());
                act.pending.drain(..written);
                let pauses_written = pauses_written.load(Ordering::SeqCst).min(act.pauses.len());
                act.pauses.drain(..pauses_written);
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
                act.finish_round(done, ctx);
            },
        ));
    }

    fn finish_round(&mut self, done: RoundDone, ctx: &mut Context<Self>) {
        if self.offline {
            tracing::info!("Redis is back");
            self.offline = false;
        }
        self.lease_until = Some(done.leased_at + self.options.heartbeat_ttl);
        if done.duplicate && !self.duplicate_seen {
            tracing::error!(worker = %self.options.worker_id, "another process runs as this worker id: the two will take each other's jobs");
            self.duplicate_seen = true;
        }
        for id in done.taken_over {
            if self.abandoned.insert(id.clone()) {
                tracing::warn!(job = %id, "this worker was cut off from Redis so long that another took the job over; stopping this copy");
                self.stop(&id, None);
            }
        }
        for (id, updates) in done.stream_updates {
            self.stream_updates(&id, updates);
        }
        for (id, asked) in done.asked {
            self.asked(&id, asked);
        }
        match &done.waiting {
            Some((id, why)) if self.waiting.as_ref() != Some(id) => {
                let left = self.options.admission().left(&self.held());
                tracing::info!(job = %id, why = %why, cores_left = left.cores, memory_left_mib = left.memory >> 20, "{}", events::JOB_WAITS_FOR_CAPACITY);
                self.waiting = Some(id.clone());
            }
            Some(_) => {}
            None => self.waiting = None,
        }
        for start in done.taken {
            if self.draining() {
                // Taken by a round that began before the stop: give it back untried.
                self.pending.push(Outcome {
                    id: Some(start.id),
                    raw: start.raw,
                    decision: Decision::Requeue,
                    code: None,
                    message: "the worker stopped before starting it".into(),
                    not_run: true,
                    output: None,
                });
            } else {
                self.run(start, ctx);
            }
        }
        self.pending.extend(done.refused);
    }

    /// Measures the machine's cost factor again (`calibration.rs`) when `--recalibrate-every`
    /// has passed and no recording runs here: the probe would slow a recording, and measure the
    /// machine less truly beside one. No job is taken while it runs (about 2 s). A probe that
    /// fails leaves the factor as it was.
    fn recalibrate(&mut self, ctx: &mut Context<Self>) {
        let Some(every) = self.options.recalibrate_every else {
            return;
        };
        if self.calibrating
            || !self.running.is_empty()
            || self.draining()
            || self.calibrated_at.elapsed() < every
        {
            return;
        }
        self.calibrating = true;
        tracing::info!("{}", events::MACHINE_CALIBRATING);
        ctx.spawn(
            actix::fut::wrap_future(super::calibration::calibrate()).map(
                |found, act: &mut Self, _| {
                    act.calibrating = false;
                    act.calibrated_at = Instant::now();
                    match found {
                        Ok(found) => {
                            act.options.machine.cost_factor = found.cost_factor;
                            found.log();
                        }
                        Err(message) => tracing::warn!(
                            error = %message,
                            cost_factor = act.options.machine.cost_factor,
                            "measuring the machine again failed: its cost factor stays"
                        ),
                    }
                },
            ),
        );
    }

    fn new_round(&mut self, take: bool) -> Round {
        // Looking for dead workers costs a command per worker: a few times per time to live is
        // enough (a dead worker's jobs wait at most its TTL plus this).
        let every = (self.options.heartbeat_ttl / 3).max(Duration::from_secs(1));
        let reclaim = self.last_reclaim.is_none_or(|t| t.elapsed() >= every);
        if reclaim {
            self.last_reclaim = Some(Instant::now());
        }
        Round {
            reclaim,
            store: self.store.clone(),
            instance: self.instance.clone(),
            ttl: self.options.heartbeat_ttl,
            retention: self.options.retention,
            key: self.options.job_key.clone(),
            trusted_redis: self.options.trusted_redis,
            pending: self.pending.clone(),
            written: Arc::new(AtomicUsize::new(0)),
            pauses: self.pauses.clone(),
            pauses_written: Arc::new(AtomicUsize::new(0)),
            running: self
                .running
                .iter()
                .filter(|(id, _)| !self.abandoned.contains(*id))
                .map(|(id, t)| (id.clone(), t.raw.clone()))
                .collect(),
            streams_applied: self
                .running
                .iter()
                .map(|(id, t)| (id.clone(), t.streams_applied))
                .collect(),
            known: self
                .running
                .values()
                .map(|t| t.raw.clone())
                .chain(self.pending.iter().map(|o| o.raw.clone()))
                .collect(),
            admission: take.then_some(self.options.admission()),
            held: self.held(),
            warm: self.options.warm,
            warm_ready: self.usage.warm_ready,
        }
    }

    fn run(&mut self, start: Start, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let Some(runner) = self.runner() else {
            // The runner crashed since the round began: back to the queue untried.
            self.pending.push(Outcome {
                id: Some(start.id),
                raw: start.raw,
                decision: Decision::Requeue,
                code: None,
                message: "no runner to start it; running it again".into(),
                not_run: true,
                output: None,
            });
            return;
        };
        let Start {
            id,
            raw,
            config,
            attempts,
            cost,
            shed_warm,
        } = start;
        self.running.insert(
            id.clone(),
            Taken {
                raw: raw.clone(),
                attempts,
                reserved: cost,
                pause_asked: None,
                discard_asked: false,
                streams_applied: 0,
                layout_asked: None,
                taken_at: Instant::now(),
            },
        );
        let sent = runner.send(StartJob {
            id: id.clone(),
            config,
            attempt: attempts,
            shed_warm,
            reserved: cost,
        });
        actix::spawn(async move {
            let outcome = match sent.await {
                Ok(Ok(())) => return,
                // A job that could not even start is failed (an internal error: exit 1).
                Ok(Err(why)) => Outcome {
                    id: Some(id),
                    raw,
                    decision: Decision::Failed,
                    code: Some(1),
                    message: why,
                    not_run: false,
                    output: None,
                },
                // The runner crashed before it had the job: it goes back to the queue untried,
                // for the next runner (this one's crash is not the job's).
                Err(e) => Outcome {
                    id: Some(id),
                    raw,
                    decision: Decision::Requeue,
                    code: None,
                    message: format!(
                        "the runner stopped before starting it ({e}); running it again"
                    ),
                    not_run: true,
                    output: None,
                },
            };
            me.do_send(Failed(outcome));
        });
    }
}

/// Message: a job could not start (failed), or was not started (back to the queue).
#[derive(Message)]
#[rtype(result = "()")]
struct Failed(Outcome);

impl Handler<Failed> for QueueActor {
    type Result = ();

    fn handle(&mut self, Failed(mut outcome): Failed, _: &mut Context<Self>) {
        if let Some(id) = &outcome.id {
            self.running.remove(id);
            self.stopping.remove(id);
        }
        if self.draining() {
            // The runner is stopping: the job goes back to the queue untried.
            outcome.decision = Decision::Requeue;
            outcome.code = None;
            outcome.message = "the worker stopped before starting it".into();
            outcome.not_run = true;
        } else if outcome.decision == Decision::Requeue {
            tracing::warn!(job = ?outcome.id, why = %outcome.message, "job not started");
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
        self.stopping.remove(&ended.id);
        if self.abandoned.remove(&ended.id) {
            // Still in this worker's processing list (nobody took it over): the next round
            // gives it back to the queue.
            tracing::info!(job = %ended.id, "a recording of a job this worker no longer owns ended; its result is not ours to write");
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

impl Handler<Usage> for QueueActor {
    type Result = ();

    fn handle(&mut self, usage: Usage, _: &mut Context<Self>) {
        let (was, is) = (!self.usage.behind.is_empty(), !usage.behind.is_empty());
        self.usage = usage;
        let report = self.options.admission().report(&self.held());
        self.capacity.send_replace(Some(report));
        if is && !was {
            let mut behind: Vec<&String> = self.usage.behind.iter().collect();
            behind.sort();
            tracing::warn!(jobs = ?behind, "{}", events::WORKER_OVERLOADED);
        } else if was && !is {
            tracing::info!("{}", events::WORKER_RECOVERED);
        }
    }
}

impl Handler<SiblingUp<Addr<RunnerActor>>> for QueueActor {
    type Result = ();

    fn handle(&mut self, SiblingUp(runner): SiblingUp<Addr<RunnerActor>>, _: &mut Context<Self>) {
        // The pause states a crashed predecessor (of either) had not written come again (the
        // runner keeps them); written before this one's first round can lose them too.
        runner.do_send(ResendPauses);
        self.runner = Some(runner);
    }
}

impl Handler<Control> for QueueActor {
    type Result = ();

    fn handle(&mut self, Control(request): Control, _: &mut Context<Self>) {
        // Another worker's job is not in `running` (every worker hears every request).
        match request {
            ControlRequest::Stop(id) => self.stop(&id, None),
            ControlRequest::Discard(id) => self.discard(&id),
            ControlRequest::Pause(id) => self.pause(&id, true),
            ControlRequest::Resume(id) => self.pause(&id, false),
            // Not kept in the hash (published by hand): passed on as it comes.
            ControlRequest::UpdateStream {
                id,
                sealed,
                seq: None,
            } => {
                self.update_streams(&id, &sealed);
            }
            // Passed on now if it is the next one (else a round applies it, in order).
            ControlRequest::UpdateStream {
                id,
                sealed,
                seq: Some(n),
            } => self.stream_updates(&id, vec![(n, sealed)]),
            ControlRequest::UpdateLayout { id, layout } => self.set_layout(&id, layout),
        }
    }
}

impl QueueActor {
    /// Stops a recording and deletes what it recorded, if it runs here (once; also when it is
    /// finishing after a stop).
    fn discard(&mut self, id: &str) {
        let Some(taken) = self.running.get_mut(id) else {
            return;
        };
        if std::mem::replace(&mut taken.discard_asked, true) {
            return;
        }
        // Stopping now (a later stop request adds nothing).
        self.stopping.insert(id.to_owned());
        if let Some(runner) = self.runner() {
            runner.do_send(DiscardJob { id: id.to_owned() });
        }
    }

    /// A job running here whose recording can be asked for a change: not one being stopped
    /// (it is finishing its file).
    fn askable(&mut self, id: &str) -> Option<&mut Taken> {
        if self.stopping.contains(id) {
            return None;
        }
        self.running.get_mut(id)
    }

    /// Pauses (`pause`) or resumes a recording, if it runs here.
    fn pause(&mut self, id: &str, pause: bool) {
        let Some(taken) = self.askable(id) else {
            return;
        };
        taken.pause_asked = Some(pause);
        if let Some(runner) = self.runner() {
            runner.do_send(PauseJob {
                id: id.to_owned(),
                pause,
            });
        }
    }

    /// Switches a LiveKit layout recording's layout, if it runs here.
    fn set_layout(&mut self, id: &str, layout: String) {
        let Some(taken) = self.askable(id) else {
            return;
        };
        taken.layout_asked = Some(layout.clone());
        if let Some(runner) = self.runner() {
            runner.do_send(super::runner::SetLayout {
                id: id.to_owned(),
                layout,
            });
        }
    }

    /// What a round read in a running job's hash ([`Asked`]): a discard or a stop is passed on
    /// once; a pause state other than the last one asked of the recording (either way) is asked
    /// for, so the hash's state wins at the next round; a layout likewise.
    fn asked(&mut self, id: &str, asked: Asked) {
        let last_layout = self.running.get(id).and_then(|t| t.layout_asked.clone());
        if let Some(layout) = asked.layout.filter(|l| Some(l) != last_layout.as_ref()) {
            match super::known_layout(&layout) {
                Some(known) => self.set_layout(id, known.to_owned()),
                None => {
                    tracing::warn!(job = %id, "the job's hash asks for a layout pagecast does not have; ignored");
                    if let Some(taken) = self.running.get_mut(id) {
                        // Said once.
                        taken.layout_asked = Some(layout);
                    }
                }
            }
        }
        if asked.discard {
            self.discard(id);
        } else if asked.stop {
            self.stop(id, None);
        } else if let Some(pause) = asked.pause {
            let last = self.running.get(id).and_then(|t| t.pause_asked);
            if last.unwrap_or(false) != pause {
                self.pause(id, pause);
            }
        }
    }
}

impl QueueActor {
    /// Passes a sealed live-outputs update on to the job's recording, if it runs here. Whether
    /// it is done with (passed on, or one that can never be: it does not open here); false when
    /// the recording cannot take it now (stopping, or no runner).
    fn update_streams(&mut self, id: &str, sealed: &str) -> bool {
        if self.askable(id).is_none() {
            return false;
        }
        let Some(key) = &self.options.job_key else {
            tracing::warn!(job = %id, "a live outputs update ignored: this worker has no job key to open it");
            return true;
        };
        let update = match super::StreamUpdate::open(id, sealed, key) {
            Ok(update) => update,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "a live outputs update ignored: it does not open");
                return true;
            }
        };
        use pagecast_actors::secret::StreamUrl;
        let Some(runner) = self.runner() else {
            return false;
        };
        runner.do_send(super::runner::UpdateStreams {
            id: id.to_owned(),
            add: update.add.into_iter().map(StreamUrl::new).collect(),
            remove: update.remove.into_iter().map(StreamUrl::new).collect(),
        });
        true
    }

    /// The live-output updates a round read for `id` (numbered, in order): those its recording
    /// has not had yet are passed on.
    fn stream_updates(&mut self, id: &str, updates: Vec<(u64, String)>) {
        for (n, sealed) in updates {
            let Some(applied) = self.running.get(id).map(|t| t.streams_applied) else {
                return;
            };
            if n != applied + 1 {
                continue;
            }
            if !self.update_streams(id, &sealed) {
                return;
            }
            if let Some(taken) = self.running.get_mut(id) {
                taken.streams_applied = n;
            }
        }
    }
}

impl Handler<JobPaused> for QueueActor {
    type Result = ();

    fn handle(&mut self, JobPaused { id, paused }: JobPaused, _: &mut Context<Self>) {
        if self.running.contains_key(&id) && !self.abandoned.contains(&id) {
            self.pauses.push((id, paused));
        }
    }
}

impl Drop for QueueActor {
    fn drop(&mut self) {
        *self.ledger.borrow_mut() = Some(Ledger {
            running: std::mem::take(&mut self.running),
            abandoned: std::mem::take(&mut self.abandoned),
            stopping: std::mem::take(&mut self.stopping),
            pending: std::mem::take(&mut self.pending),
            draining: self.draining,
            lease_until: self.lease_until,
            calibration: Some((self.options.machine.cost_factor, self.calibrated_at)),
        });
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        ctx.spawn(actix::fut::wrap_future(super::control::follow(
            self.client.clone(),
            self.options.keys().control(),
            move |request| me.do_send(Control(request)),
        )));
        ctx.run_interval(ROUND_EVERY, |act, ctx| act.round(ctx));
        // The runner's address now (if it is up) and at each of its restarts.
        self.link.follow(RUNNER, ctx.address().recipient());
        self.round(ctx);
    }
}

impl Handler<Shutdown> for QueueActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.link.set_exit(ExitReason::Shutdown);
        // The runner has stopped (it started after this actor): its results are in `pending`.
        self.draining = true;
        self.closing = true;
        let mut idle = self.idle.subscribe();
        let round_over = async move {
            let _ = idle.wait_for(|idle| *idle).await;
        };
        Box::pin(actix::fut::wrap_future(round_over).then(|(), act: &mut Self, _| act.last_round()))
    }
}

impl QueueActor {
    /// Writes what is left, gives the lease up, and stops.
    fn last_round(&mut self) -> impl ActorFuture<Self, Output = Result<(), Failure>> {
        let mut round = self.new_round(false);
        round.running.clear();
        let mut store = self.store.clone();
        let written = round.written.clone();
        let last = async move {
            let mut backoff = Backoff::fixed(Duration::from_millis(500));
            for _ in 0..20 {
                // A retry goes on from the first result not yet written.
                match round.clone().run().await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot write the last results yet");
                        backoff.wait().await;
                    }
                }
            }
            // Leaving: no heartbeat, not a worker any more. Anything left in the processing list
            // (a result that could not be written) is found by the others as a dead worker's job.
            let _ = store.leave().await;
            written.load(Ordering::SeqCst)
        };
        actix::fut::wrap_future(last).map(|written, act: &mut Self, ctx: &mut Context<Self>| {
            let left = act.pending.len().saturating_sub(written);
            if left > 0 {
                tracing::error!(results = left, "Redis is unreachable: results not written");
            }
            ctx.stop();
            Ok(())
        })
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
    store: Store,
    instance: String,
    ttl: Duration,
    retention: Duration,
    key: Option<Arc<JobKey>>,
    trusted_redis: bool,
    pending: Vec<Outcome>,
    /// How many of `pending` are written (from the front), shared with the actor and with a
    /// retry of this round.
    written: Arc<AtomicUsize>,
    /// Pause states to write, and how many are written (from the front).
    pauses: Vec<(String, bool)>,
    pauses_written: Arc<AtomicUsize>,
    /// (id, raw) of the jobs running here that this worker owns.
    running: Vec<(String, String)>,
    /// How many live-output updates each running job's recording has had.
    streams_applied: HashMap<String, u64>,
    /// Every job this worker accounts for (running, or with a result to write), as stored.
    known: HashSet<String>,
    /// How jobs are admitted (None: take none this round).
    admission: Option<Admission>,
    /// What the running recordings (and warm trees) hold.
    held: Vec<Held>,
    /// The warm pool, and how many of its trees are ready: a job that will take one is weighed
    /// without it (the tree becomes the job's recording).
    warm: super::WarmPool,
    warm_ready: usize,
    /// Look for dead workers this round.
    reclaim: bool,
}

/// What a round did.
struct RoundDone {
    /// When the lease renewed this round was asked for (it holds for its TTL from then, at least).
    leased_at: Instant,
    /// What the hashes of the running jobs ask (a stop, a discard, a pause state, a layout).
    asked: Vec<(String, Asked)>,
    /// The live-output updates of running jobs their recordings have not had yet, in order.
    stream_updates: Vec<(String, Vec<(u64, String)>)>,
    taken: Vec<Start>,
    /// Jobs taken and refused at once: results to write next round.
    refused: Vec<Outcome>,
    /// Running jobs no longer in this worker's processing list: while this worker's heartbeat
    /// was gone, another worker moved them back to the queue.
    taken_over: Vec<String>,
    /// The heartbeat held another process's token: two workers share this id.
    duplicate: bool,
    /// The next job does not fit now: its id (or payload's start) and why.
    waiting: Option<(String, String)>,
}

impl Round {
    async fn run(mut self) -> redis::RedisResult<RoundDone> {
        if self.reclaim {
            self.reclaim().await?;
        }
        let leased_at = Instant::now();
        let previous = self.store.heartbeat(&self.instance, self.ttl).await?;
        let duplicate = previous.as_ref().is_some_and(|p| *p != self.instance);
        // The heartbeat was gone: this worker was cut off longer than its time to live (other
        // workers may have moved its jobs back to the queue), or Redis lost its data (restarted
        // without persistence). Tell the two apart for each running job.
        let mut taken_over = Vec::new();
        if previous.is_none() {
            for (id, raw) in self.running.clone() {
                match self.store.presence(&id, &raw).await? {
                    Presence::Here => {}
                    Presence::TakenOver => taken_over.push(id),
                    Presence::Lost => {
                        // Put it back, so that if this worker dies now the job is not lost.
                        tracing::warn!(job = %id, "Redis lost this running job; recording it again there");
                        self.store.restore_running(&id, &raw).await?;
                    }
                }
            }
        }

        // Before the results: a job that paused and then ended ends up done (or failed).
        for (id, paused) in &self.pauses {
            self.store.set_paused(id, *paused).await?;
            self.pauses_written.fetch_add(1, Ordering::SeqCst);
        }

        let from = self.written.load(Ordering::SeqCst);
        for outcome in self.pending.iter().skip(from) {
            self.store.write_outcome(outcome, self.retention).await?;
            self.written.fetch_add(1, Ordering::SeqCst);
        }

        // What the processing list holds that this worker does not account for (taken by a
        // round that failed halfway, or whose recording was stopped with the lease) goes back.
        for raw in self.store.taken().await? {
            if !self.known.contains(&raw) {
                let id = super::store::job_id(&raw);
                tracing::warn!(job = ?id, "a job in this worker's processing list runs nowhere; back to the queue");
                self.store
                    .write_outcome(
                        &Outcome {
                            id,
                            raw,
                            decision: Decision::Requeue,
                            code: None,
                            message: "taken but not running; running it again".into(),
                            not_run: false,
                            output: None,
                        },
                        self.retention,
                    )
                    .await?;
            }
        }

        let mut asked = Vec::new();
        let mut stream_updates = Vec::new();
        for (id, _) in &self.running {
            let now = self.store.asked(id).await?;
            let applied = self.streams_applied.get(id).copied().unwrap_or(0);
            if now.stream_updates > applied {
                let updates = self
                    .store
                    .stream_updates(id, applied + 1, now.stream_updates)
                    .await?;
                stream_updates.push((id.clone(), updates));
            }
            if now != Asked::default() {
                asked.push((id.clone(), now));
            }
        }

        let (taken, refused, waiting) = self.take_jobs().await?;
        Ok(RoundDone {
            leased_at,
            asked,
            stream_updates,
            taken,
            refused,
            taken_over,
            duplicate,
            waiting,
        })
    }

    /// Takes the next jobs while admission lets it. A job that does not fit now stays at the
    /// head of the queue (the order is kept: the jobs behind it wait too).
    #[allow(clippy::type_complexity)]
    async fn take_jobs(
        &mut self,
    ) -> redis::RedisResult<(Vec<Start>, Vec<Outcome>, Option<(String, String)>)> {
        let (mut taken, mut refused) = (Vec::new(), Vec::new());
        let Some(admission) = self.admission else {
            return Ok((taken, refused, None));
        };
        let mut held = self.held.clone();
        while let Some(next) = self.store.next().await? {
            // A job that cannot be read costs nothing: it is taken and refused (in `accept`).
            let (cost, fits_warm) = self.cost_of(&admission, &next).unzip();
            // A job that takes a ready warm tree is weighed without it (the tree becomes its
            // recording); any other makes warm trees give way if they are all it waits for.
            let fits_warm = fits_warm.unwrap_or(false) && self.warm_ready > 0;
            let (verdict, shed_warm) = match cost {
                Some(cost) if fits_warm => {
                    (admission.admit(&capacity::without_warm(&held, 1), cost), 0)
                }
                Some(cost) => admission.admit_shedding(&held, cost),
                None if held.iter().filter(|h| !h.warm).count() >= admission.max_recordings => (
                    Verdict::Wait(format!("--max-recordings {} running", held.len())),
                    0,
                ),
                None => (Verdict::Take, 0),
            };
            if let Verdict::Wait(why) = verdict {
                let id =
                    super::store::job_id(&next).unwrap_or_else(|| next.chars().take(40).collect());
                return Ok((taken, refused, Some((id, why))));
            }
            match self.store.take(&next).await? {
                Take::Empty => break,
                Take::Moved => continue,
                Take::Duplicate { id, worker } => {
                    tracing::warn!(job = %id, running_on = %worker, "refused a job whose id is already running");
                }
                Take::Job { raw, id, attempts } => {
                    if let Verdict::Never(message) = verdict {
                        tracing::warn!(job = ?id, error = %message, "job refused: larger than this worker");
                        refused.push(Outcome {
                            id,
                            raw,
                            decision: Decision::Failed,
                            code: Some(2),
                            message,
                            not_run: false,
                            output: None,
                        });
                        continue;
                    }
                    match self.accept(raw, id, attempts).await? {
                        Ok(mut start) => {
                            start.cost = cost.unwrap_or_default();
                            if fits_warm {
                                held = capacity::without_warm(&held, 1);
                                self.warm_ready -= 1;
                            }
                            if shed_warm > 0 {
                                tracing::info!(job = %start.id, warm_trees = shed_warm, "warm trees give way to a job");
                                held = capacity::without_warm(&held, shed_warm);
                            }
                            start.shed_warm = shed_warm;
                            held.push(Held {
                                reserved: start.cost,
                                starting: true,
                                ..Held::default()
                            });
                            taken.push(start);
                        }
                        Err(outcome) => refused.push(outcome),
                    }
                }
            }
        }
        Ok((taken, refused, None))
    }

    /// What a stored job will cost, if it can be read (opened and checked), and whether it fits
    /// the warm pool's trees.
    fn cost_of(&self, admission: &Admission, raw: &str) -> Option<(Cost, bool)> {
        let clear = sealed::unseal(raw, self.key.as_deref()).ok()?;
        let Parsed::Job { config, .. } = parse_job(&clear) else {
            return None;
        };
        crate::config::parse(&config).ok().map(|c| {
            let fits = self.warm.count > 0 && crate::warm::misfit(&c, &self.warm.size).is_none();
            (admission.cost_of(&c), fits)
        })
    }

    /// A job just taken: opened, checked, re-stored sealed if it came in clear, announced.
    async fn accept(
        &mut self,
        raw: String,
        id: Option<String>,
        attempts: u32,
    ) -> redis::RedisResult<Result<Start, Outcome>> {
        let refuse = |id: Option<String>, raw: String, message: String| {
            tracing::warn!(job = ?id, error = %message, "job refused");
            Err(Outcome {
                id,
                raw,
                decision: Decision::Failed,
                code: Some(2),
                message,
                not_run: false,
                output: None,
            })
        };
        let clear = match sealed::unseal(&raw, self.key.as_deref()) {
            Ok(clear) => clear,
            Err(e) => return Ok(refuse(id, raw, e.to_string())),
        };
        let (id, config) = match parse_job(&clear) {
            Parsed::Job { id, config } => (id, config),
            Parsed::Refused {
                id: parsed,
                message,
            } => return Ok(refuse(parsed.or(id), raw, message)),
        };
        if attempts > MAX_ATTEMPTS {
            let mut refused = refuse(
                Some(id),
                raw,
                format!("tried {MAX_ATTEMPTS} times already, giving up"),
            );
            if let Err(o) = &mut refused {
                o.code = None;
            }
            return Ok(refused);
        }
        let mut raw = raw;
        if matches!(sealed::stored(&raw), sealed::Stored::Clear(_)) {
            match &self.key {
                Some(key) => match key.seal(&id, &clear) {
                    Ok(sealed) => {
                        // From now on only the sealed form is in Redis.
                        self.store.replace_taken(&raw, &sealed).await?;
                        raw = sealed;
                    }
                    Err(e) => return Ok(refuse(Some(id), raw, e.to_string())),
                },
                None if !self.trusted_redis => {
                    let fields = crate::config::parse(&config)
                        .map(|c| sealed::secret_fields(&c))
                        .unwrap_or_default();
                    if !fields.is_empty() {
                        return Ok(refuse(
                            Some(id),
                            raw,
                            format!(
                                "job: {} would rest in Redis in clear: this worker has no {} \
                                 to seal it (or run it with --trusted-redis)",
                                fields.join(", "),
                                sealed::KEY_VAR
                            ),
                        ));
                    }
                }
                None => {}
            }
        }
        self.store.started(&id, attempts).await?;
        tracing::info!(job = %id, attempts, "job taken");
        Ok(Ok(Start {
            id,
            raw,
            config,
            attempts,
            cost: Cost::default(),
            shed_warm: 0,
        }))
    }

    /// Moves the jobs of workers without a heartbeat back to the queue (to its end: they run
    /// next), and forgets those workers.
    async fn reclaim(&mut self) -> redis::RedisResult<()> {
        for worker in self.store.dead_workers().await? {
            let why = format!("worker {worker} stopped answering; running it again");
            let moved = self.store.requeue_jobs_of(&worker, &why).await?;
            if moved > 0 {
                tracing::warn!(dead_worker = %worker, jobs = moved, "moved the jobs of a worker without heartbeat back to the queue");
            }
            self.store.forget_worker(&worker).await?;
        }
        Ok(())
    }
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
