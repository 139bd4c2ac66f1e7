//! The service's Redis store: every read and write of the queue protocol (see `mod.rs`), and
//! nothing else. No actor, no decision: the queue actor decides, the store writes.
//!
//! Atomic where two parties could race: a job is taken (`LMOVE` into the worker's processing
//! list, refused if its id is running anywhere, marked running) by one Lua script, a submission
//! (refused if its id is queued or running, marked queued, pushed) by another, and every result
//! is one `MULTI`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use super::{Decision, JobState, Keys};
use pagecast_actors::backoff::Backoff;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The reconnect backoff of the Redis connection.
pub(super) fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
}

/// What a running job's hash asks of its recording, read every round (so not lost while a
/// worker reconnects, as a message on `Q:control` can be): `stop` 1, `discard` 1, `pause` 1
/// (paused) or 0 (recording), each of one run (cleared when its result is written); how many
/// live-output updates the job has had (`stream_updates`) and the layout it is to show
/// (`layout`), both kept for every run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Asked {
    pub stop: bool,
    pub discard: bool,
    pub pause: Option<bool>,
    pub stream_updates: u64,
    /// The LiveKit layout the recording is to show (`layout`, kept for every run: a run starts
    /// with the submitted one).
    pub layout: Option<String>,
}

/// The job-hash field of the LiveKit layout its recording is to show.
const LAYOUT: &str = "layout";

/// The job-hash field counting its live-output updates; each is `stream_update_<N>`, from 1.
const STREAM_UPDATES: &str = "stream_updates";

fn stream_update_field(n: u64) -> String {
    format!("stream_update_{n}")
}

/// The job-hash fields of [`Asked`].
const ASKED_FIELDS: [&str; 3] = ["stop", "discard", "pause"];

/// A result to write: what became of a job.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    pub id: Option<String>,
    /// The job exactly as it is in the processing list (to remove it from there).
    pub raw: String,
    pub decision: Decision,
    pub code: Option<i32>,
    pub message: String,
    /// The job never ran (taken as the worker began to stop): its attempt does not count.
    pub not_run: bool,
    /// What the attempt left: its number and JSON (see `attempt.rs`).
    pub output: Option<(u32, String)>,
}

/// What taking a job gave.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// The queue is empty.
    Empty,
    /// A job, now in this worker's processing list and (with an id) marked running.
    Job {
        raw: String,
        /// None: the payload has no readable id (it is refused by the caller).
        id: Option<String>,
        attempts: u32,
    },
    /// A job whose id is running already (on `worker`): dropped from the queue, the running
    /// one untouched, a `failed` event published.
    Duplicate { id: String, worker: String },
    /// The next job is no longer the one admission was asked about (another worker took it):
    /// nothing taken.
    Moved,
}

/// Where a running job stands in Redis, seen from the worker running it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Presence {
    /// In this worker's processing list: all is well.
    Here,
    /// Moved back to the queue, or taken by another worker: this copy must stop.
    TakenOver,
    /// Gone without a trace (Redis lost its data): this worker still owns it.
    Lost,
}

/// Takes the next job: see [`Take`]. KEYS: queue, processing list, the hash of the job
/// admission was asked about (every key a script touches is named in KEYS, and all are in the
/// queue's hash slot: Redis Cluster). ARGV: the job hash prefix, the worker, now (unix s), the
/// events channel, the job admission was asked about (taken only if it is still the next one).
/// A job whose id, read here, does not name that hash is refused as unreadable.
const TAKE: &str = r#"
local next = redis.call('LINDEX', KEYS[1], -1)
if not next then return false end
if next ~= ARGV[5] then return {'', '', -2, ''} end
local raw = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not raw then return false end
local ok, job = pcall(cjson.decode, raw)
if not ok or type(job) ~= 'table' or type(job.id) ~= 'string' or #job.id < 1 or #job.id > 128
   or not string.match(job.id, '^[%w%._%-]+$') or ARGV[1] .. job.id ~= KEYS[3] then
  return {raw, '', 0, ''}
end
local key = KEYS[3]
local current = redis.call('HGET', key, 'state')
if current == 'running' or current == 'paused' then
  local worker = redis.call('HGET', key, 'worker') or ''
  redis.call('LREM', KEYS[2], 1, raw)
  local message = 'job ' .. job.id .. ' is already running (on worker ' .. worker .. '); this copy is refused'
  redis.call('PUBLISH', ARGV[4], cjson.encode({id = job.id, state = 'failed', worker = ARGV[2], message = message}))
  return {'', job.id, -1, worker}
end
local attempts = redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'state', 'running', 'worker', ARGV[2], 'started_at', ARGV[3])
redis.call('HDEL', key, 'ended_at', 'exit_code', 'message')
redis.call('PERSIST', key)
return {raw, job.id, attempts, ''}
"#;

/// Marks a running job paused or running again, if it runs on this worker and is not in that
/// state already (a state sent again after a queue actor's restart is not published twice).
/// KEYS: the job hash. ARGV: the new state, the worker, the events channel, the event.
const SET_PAUSED: &str = r#"
local state = redis.call('HGET', KEYS[1], 'state')
if state == ARGV[1] then return 0 end
if (state == 'running' or state == 'paused') and redis.call('HGET', KEYS[1], 'worker') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'state', ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0
"#;

/// Submits a job unless its id is queued or running. KEYS: the job hash, the queue. ARGV: the
/// payload, the events channel, the event. Returns the blocking state, or nil once pushed.
const SUBMIT: &str = r#"
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' or state == 'running' or state == 'paused' or state == 'requeued' then return state end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', '0')
redis.call('PUBLISH', ARGV[2], ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[1])
return false
"#;

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `host:port` of a Redis URL: what errors and logs name (never the password).
pub(super) fn host_of(url: &str) -> String {
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

pub(super) fn connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped()
}

fn ttl_ms(ttl: Duration) -> u64 {
    ttl.as_millis().max(1000) as u64
}

/// Connects to Redis: the connection every round uses, reconnecting by itself with the
/// [`reconnect_backoff`]. An error names the host, never the password.
pub(super) async fn connect(
    client: &redis::Client,
    url: &str,
) -> Result<ConnectionManager, String> {
    let host = host_of(url);
    let unreachable = |why: String| format!("cannot reach Redis at {host}: {why}");
    let backoff = reconnect_backoff();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_min_delay(backoff.first())
        .set_max_delay(backoff.max())
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

fn event(id: Option<&str>, state: JobState, worker: &str, extra: serde_json::Value) -> String {
    let mut e = serde_json::json!({ "id": id, "state": state.as_str(), "worker": worker });
    if let (Some(e), serde_json::Value::Object(extra)) = (e.as_object_mut(), extra) {
        e.extend(extra);
    }
    e.to_string()
}

/// One worker's view of one queue's keys, on a (cloneable, reconnecting) connection.
#[derive(Clone)]
pub(super) struct Store {
    con: ConnectionManager,
    keys: Keys,
    worker: String,
}

impl Store {
    pub fn new(con: ConnectionManager, keys: Keys, worker: String) -> Store {
        Store { con, keys, worker }
    }

    fn processing(&self) -> String {
        self.keys.processing(&self.worker)
    }

    /// Sets this worker's heartbeat to `instance` only if it has none. True if set.
    pub async fn claim_heartbeat(
        &mut self,
        instance: &str,
        ttl: Duration,
    ) -> redis::RedisResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.worker(&self.worker))
            .arg(instance)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async(&mut self.con)
            .await?;
        if set.is_some() {
            let _: () = self.con.sadd(self.keys.workers(), &self.worker).await?;
        }
        Ok(set.is_some())
    }

    /// Renews this worker's heartbeat (its lease) for `ttl`. Returns the value it had: None if
    /// it had expired, another process's token if two processes share the worker id.
    pub async fn heartbeat(
        &mut self,
        instance: &str,
        ttl: Duration,
    ) -> redis::RedisResult<Option<String>> {
        let (previous,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(self.keys.worker(&self.worker))
            .arg(instance)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .arg("GET")
            .sadd(self.keys.workers(), &self.worker)
            .ignore()
            .query_async(&mut self.con)
            .await?;
        Ok(previous)
    }

    /// Leaves: no heartbeat, not a worker any more.
    pub async fn leave(&mut self) -> redis::RedisResult<()> {
        redis::pipe()
            .del(self.keys.worker(&self.worker))
            .srem(self.keys.workers(), &self.worker)
            .query_async(&mut self.con)
            .await
    }

    /// Moves every job in `worker`'s processing list back to the queue (to its end: they run
    /// next), each marked `requeued` with `why`, its stop flag cleared. Returns how many.
    pub async fn requeue_jobs_of(&mut self, worker: &str, why: &str) -> redis::RedisResult<usize> {
        let k = self.keys.clone();
        let mut moved = 0;
        loop {
            let raw: Option<String> = redis::cmd("LMOVE")
                .arg(k.processing(worker))
                .arg(k.jobs())
                .arg("RIGHT")
                .arg("RIGHT")
                .query_async(&mut self.con)
                .await?;
            let Some(raw) = raw else { break };
            moved += 1;
            if let Some(id) = job_id(&raw) {
                let _: () = redis::pipe()
                    .hset_multiple(
                        k.job(&id),
                        &[("state", JobState::Requeued.as_str()), ("message", why)],
                    )
                    .ignore()
                    .hdel(k.job(&id), &ASKED_FIELDS)
                    .ignore()
                    .publish(
                        k.events(),
                        event(
                            Some(&id),
                            JobState::Requeued,
                            worker,
                            // `by`: the worker that moved it (the egress API's webhooks).
                            serde_json::json!({ "message": why, "by": self.worker }),
                        ),
                    )
                    .ignore()
                    .query_async(&mut self.con)
                    .await?;
            }
        }
        Ok(moved)
    }

    /// The workers of this queue, this one left out, whose heartbeat has expired.
    pub async fn dead_workers(&mut self) -> redis::RedisResult<Vec<String>> {
        let workers: Vec<String> = self.con.smembers(self.keys.workers()).await?;
        let mut dead = Vec::new();
        for worker in workers.into_iter().filter(|w| *w != self.worker) {
            let alive: bool = self.con.exists(self.keys.worker(&worker)).await?;
            if !alive {
                dead.push(worker);
            }
        }
        Ok(dead)
    }

    /// Forgets a worker (after its jobs went back to the queue).
    pub async fn forget_worker(&mut self, worker: &str) -> redis::RedisResult<()> {
        self.con.srem(self.keys.workers(), worker).await
    }

    /// Where a job this worker runs stands in Redis.
    pub async fn presence(&mut self, id: &str, raw: &str) -> redis::RedisResult<Presence> {
        let (here, queued, state, worker): (
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
        ) = redis::pipe()
            .cmd("LPOS")
            .arg(self.processing())
            .arg(raw)
            .cmd("LPOS")
            .arg(self.keys.jobs())
            .arg(raw)
            .hget(self.keys.job(id), "state")
            .hget(self.keys.job(id), "worker")
            .query_async(&mut self.con)
            .await?;
        let state = state.as_deref().and_then(JobState::parse);
        Ok(presence(
            here.is_some(),
            queued.is_some(),
            state,
            worker.as_deref(),
            &self.worker,
        ))
    }

    /// Puts a running job Redis lost back in this worker's processing list, marked running.
    pub async fn restore_running(&mut self, id: &str, raw: &str) -> redis::RedisResult<()> {
        redis::pipe()
            .lpush(self.processing(), raw)
            .ignore()
            .hset_multiple(
                self.keys.job(id),
                &[
                    ("state", JobState::Running.as_str()),
                    ("worker", self.worker.as_str()),
                ],
            )
            .ignore()
            .query_async(&mut self.con)
            .await
    }

    /// Marks a job running here `paused` (or `running` again), and publishes it.
    pub async fn set_paused(&mut self, id: &str, paused: bool) -> redis::RedisResult<()> {
        let state = if paused {
            JobState::Paused
        } else {
            JobState::Running
        };
        let _: i64 = redis::Script::new(SET_PAUSED)
            .key(self.keys.job(id))
            .arg(state.as_str())
            .arg(&self.worker)
            .arg(self.keys.events())
            .arg(event(
                Some(id),
                state,
                &self.worker,
                serde_json::Value::Null,
            ))
            .invoke_async(&mut self.con)
            .await?;
        Ok(())
    }

    /// What the job's hash asks of its running recording ([`Asked`]).
    pub async fn asked(&mut self, id: &str) -> redis::RedisResult<Asked> {
        type Fields = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<u64>,
            Option<String>,
        );
        let (stop, discard, pause, updates, layout): Fields = redis::cmd("HMGET")
            .arg(self.keys.job(id))
            .arg(&ASKED_FIELDS[..])
            .arg(STREAM_UPDATES)
            .arg(LAYOUT)
            .query_async(&mut self.con)
            .await?;
        Ok(Asked {
            stop: stop.as_deref() == Some("1"),
            discard: discard.as_deref() == Some("1"),
            pause: match pause.as_deref() {
                Some("1") => Some(true),
                Some("0") => Some(false),
                _ => None,
            },
            stream_updates: updates.unwrap_or(0),
            layout,
        })
    }

    /// Asks for a job's layout switch, both ways: kept in its hash (`layout`, read every round)
    /// and published for the worker running it (at once).
    pub async fn set_layout(&mut self, id: &str, layout: &str) -> redis::RedisResult<()> {
        let message = serde_json::json!({ "update_layout": id, "layout": layout });
        self.ask_both_ways(id, LAYOUT, layout, message.to_string())
            .await
    }

    /// Sets `field` of the job's hash to `value` (read every round) and publishes `message` on
    /// `Q:control` (for the worker running the job, at once): one request, both ways.
    async fn ask_both_ways(
        &mut self,
        id: &str,
        field: &str,
        value: &str,
        message: String,
    ) -> redis::RedisResult<()> {
        redis::pipe()
            .hset(self.keys.job(id), field, value)
            .ignore()
            .publish(self.keys.control(), message)
            .ignore()
            .query_async(&mut self.con)
            .await
    }

    /// A job's live-output updates `from..=to` (sealed), in order, up to the first not written
    /// yet (`push_stream_update` counts before it writes).
    pub async fn stream_updates(
        &mut self,
        id: &str,
        from: u64,
        to: u64,
    ) -> redis::RedisResult<Vec<(u64, String)>> {
        if from > to {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = (from..=to).map(stream_update_field).collect();
        let got: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.job(id))
            .arg(fields)
            .query_async(&mut self.con)
            .await?;
        Ok((from..=to)
            .zip(got)
            .map_while(|(n, sealed)| Some((n, sealed?)))
            .collect())
    }

    /// Keeps a live-output update (sealed) in the job's hash as its next one, and publishes it
    /// for the worker running the job.
    pub async fn push_stream_update(&mut self, id: &str, sealed: &str) -> redis::RedisResult<()> {
        let n: u64 = self.con.hincr(self.keys.job(id), STREAM_UPDATES, 1).await?;
        let message = super::StreamUpdate::request(id, sealed, n);
        self.ask_both_ways(id, &stream_update_field(n), sealed, message)
            .await
    }

    /// Asks for a job's stop, both ways (see `mod.rs`): the flag in its hash (read every round,
    /// not lost while a worker reconnects) and the control message (at once).
    pub async fn request_stop(&mut self, id: &str) -> redis::RedisResult<()> {
        let message = serde_json::json!({ "stop": id }).to_string();
        self.ask_both_ways(id, "stop", "1", message).await
    }

    /// Moves the jobs queued under the key names of versions before the hash tag (`Q:jobs`,
    /// and this worker's `Q:processing:<worker>`: jobs it was running when it stopped) into
    /// today's queue, oldest next, so an upgrade loses no queued job. Returns how many moved.
    /// (Such a deployment cannot have been a Redis Cluster: its scripts needed one slot.)
    pub async fn adopt_unbraced_jobs(&mut self) -> redis::RedisResult<usize> {
        // The queue first: the job this worker was running was taken before any still queued,
        // so it goes last, nearest the take.
        let old = [
            format!("{}:jobs", self.keys.queue),
            format!("{}:processing:{}", self.keys.queue, self.worker),
        ];
        let mut moved = 0;
        for from in old {
            // Newest first from the left to the right end: the oldest ends nearest the take.
            loop {
                let job: Option<String> = redis::cmd("LMOVE")
                    .arg(&from)
                    .arg(self.keys.jobs())
                    .arg("LEFT")
                    .arg("RIGHT")
                    .query_async(&mut self.con)
                    .await?;
                if job.is_none() {
                    break;
                }
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// How many jobs wait in the queue.
    pub async fn queue_length(&mut self) -> redis::RedisResult<u64> {
        self.con.llen(self.keys.jobs()).await
    }

    /// A job's hash (empty: no such job, or it expired).
    pub async fn job_fields(
        &mut self,
        id: &str,
    ) -> redis::RedisResult<std::collections::HashMap<String, String>> {
        self.con.hgetall(self.keys.job(id)).await
    }

    /// Takes the next job (see [`Take`] and [`TAKE`]).
    /// The next job to take, as stored, if any (nothing is moved).
    pub async fn next(&mut self) -> redis::RedisResult<Option<String>> {
        self.con.lindex(self.keys.jobs(), -1).await
    }

    /// Takes the next job if it is still `expected` (what [`Store::next`] gave).
    pub async fn take(&mut self, expected: &str) -> redis::RedisResult<Take> {
        // The hash of the job as this side reads its id (none: a key in the slot that the
        // script never touches, for a payload it refuses anyway).
        let hash = self.keys.job(&job_id(expected).unwrap_or_default());
        let taken: Option<(String, String, i64, String)> = redis::Script::new(TAKE)
            .key(self.keys.jobs())
            .key(self.processing())
            .key(hash)
            .arg(self.keys.job(""))
            .arg(&self.worker)
            .arg(now())
            .arg(self.keys.events())
            .arg(expected)
            .invoke_async(&mut self.con)
            .await?;
        Ok(match taken {
            None => Take::Empty,
            Some((_, _, -2, _)) => Take::Moved,
            Some((_, id, -1, worker)) => Take::Duplicate { id, worker },
            Some((raw, id, attempts, _)) => Take::Job {
                raw,
                id: (!id.is_empty()).then_some(id),
                attempts: attempts.max(0) as u32,
            },
        })
    }

    /// Replaces a job in this worker's processing list (a clear job by its sealed form), at once.
    pub async fn replace_taken(&mut self, old: &str, new: &str) -> redis::RedisResult<()> {
        redis::pipe()
            .atomic()
            .lrem(self.processing(), 1, old)
            .ignore()
            .lpush(self.processing(), new)
            .ignore()
            .query_async(&mut self.con)
            .await
    }

    /// Publishes that a taken job runs.
    pub async fn started(&mut self, id: &str, attempts: u32) -> redis::RedisResult<()> {
        self.con
            .publish(
                self.keys.events(),
                event(
                    Some(id),
                    JobState::Running,
                    &self.worker,
                    serde_json::json!({ "attempts": attempts }),
                ),
            )
            .await
    }

    /// Every job in this worker's processing list.
    pub async fn taken(&mut self) -> redis::RedisResult<Vec<String>> {
        self.con.lrange(self.processing(), 0, -1).await
    }

    /// Writes one result, atomically: the job's hash (expiring after `retention` once the job
    /// is over), its removal from this worker's processing list (and, to run it again, its
    /// return to the queue), and the event.
    pub async fn write_outcome(
        &mut self,
        o: &Outcome,
        retention: Duration,
    ) -> redis::RedisResult<()> {
        let k = &self.keys;
        let state = JobState::of(o.decision);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.lrem(self.processing(), 1, &o.raw).ignore();
        if o.decision == Decision::Requeue {
            pipe.rpush(k.jobs(), &o.raw).ignore();
        }
        if let Some(id) = &o.id {
            if o.not_run {
                pipe.hincr(k.job(id), "attempts", -1).ignore();
            }
            let mut fields = vec![
                ("state", state.as_str().to_owned()),
                ("worker", self.worker.clone()),
                ("ended_at", now().to_string()),
                ("message", o.message.clone()),
            ];
            if let Some(code) = o.code {
                fields.push(("exit_code", code.to_string()));
            }
            pipe.hset_multiple(k.job(id), &fields).ignore();
            if let Some((n, output)) = &o.output {
                pipe.hset(k.job(id), super::attempt::field(*n), output)
                    .ignore();
            }
            // What was asked of this run is not asked of the next (or of a later job with this
            // id).
            pipe.hdel(k.job(id), &ASKED_FIELDS).ignore();
            if state.is_final() {
                pipe.pexpire(k.job(id), retention.as_millis().max(1) as i64)
                    .ignore();
            } else {
                pipe.persist(k.job(id)).ignore();
            }
        }
        pipe.publish(
            k.events(),
            event(
                o.id.as_deref(),
                state,
                &self.worker,
                serde_json::json!({ "exit_code": o.code, "message": o.message }),
            ),
        )
        .ignore();
        pipe.query_async::<()>(&mut self.con).await
    }

    /// Submits a job (`payload` as it is to be stored) unless its id is queued or running:
    /// then `Err(state)`, nothing written.
    pub async fn submit(
        &mut self,
        id: &str,
        payload: &str,
    ) -> redis::RedisResult<Result<(), JobState>> {
        let blocked: Option<String> = redis::Script::new(SUBMIT)
            .key(self.keys.job(id))
            .key(self.keys.jobs())
            .arg(payload)
            .arg(self.keys.events())
            .arg(serde_json::json!({ "id": id, "state": JobState::Queued.as_str() }).to_string())
            .invoke_async(&mut self.con)
            .await?;
        Ok(match blocked.as_deref().and_then(JobState::parse) {
            Some(state) => Err(state),
            None => Ok(()),
        })
    }
}

/// The id of a stored job (sealed or clear), if it has a valid one.
pub(super) fn job_id(raw: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()?
        .get("id")?
        .as_str()
        .filter(|id| super::valid_id(id))
        .map(str::to_owned)
}

fn presence(
    in_processing: bool,
    in_queue: bool,
    state: Option<JobState>,
    worker: Option<&str>,
    me: &str,
) -> Presence {
    if in_processing {
        Presence::Here
    } else if in_queue || state == Some(JobState::Requeued) || worker.is_some_and(|w| w != me) {
        Presence::TakenOver
    } else {
        Presence::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagecast_testkit::Redis;

    async fn store(redis: &Redis, worker: &str) -> Store {
        let client = redis::Client::open(redis.url()).unwrap();
        let con = connect(&client, &redis.url()).await.unwrap();
        Store::new(con, Keys { queue: "t".into() }, worker.into())
    }

    /// Takes the next job, as a round does (asking for the one it saw next).
    async fn take_next(s: &mut Store) -> Take {
        match s.next().await.unwrap() {
            None => Take::Empty,
            Some(next) => s.take(&next).await.unwrap(),
        }
    }

    fn job(id: &str) -> String {
        serde_json::json!({ "id": id, "config": { "input": { "url": "https://e.com" } } })
            .to_string()
    }

    /// A job is taken only if it is still the one admission was asked about.
    #[actix_rt::test]
    async fn a_job_another_worker_took_since_it_was_seen_is_not_taken_in_its_place() {
        let redis = Redis::start();
        let (mut w1, mut w2) = (store(&redis, "w1").await, store(&redis, "w2").await);
        redis.cli(&["LPUSH", "{t}:jobs", &job("b"), &job("a")]);
        let seen = w1.next().await.unwrap().unwrap();
        assert_eq!(
            take_next(&mut w2).await,
            Take::Job {
                raw: seen.clone(),
                id: Some("b".into()),
                attempts: 1
            }
        );
        assert_eq!(w1.take(&seen).await.unwrap(), Take::Moved);
        assert_eq!(redis.cli(&["LLEN", "{t}:jobs"]), "1", "a stays queued");
        assert_eq!(redis.cli(&["LLEN", "{t}:processing:w1"]), "0");
    }

    #[test]
    fn a_running_job_missing_from_redis_is_told_taken_over_from_lost() {
        use JobState::*;
        assert_eq!(
            presence(true, false, Some(Running), Some("w1"), "w1"),
            Presence::Here
        );
        // Another worker moved it back to the queue, or has taken it since.
        assert_eq!(
            presence(false, true, Some(Running), Some("w1"), "w1"),
            Presence::TakenOver
        );
        assert_eq!(
            presence(false, false, Some(Requeued), Some("w1"), "w1"),
            Presence::TakenOver
        );
        assert_eq!(
            presence(false, false, Some(Running), Some("w2"), "w1"),
            Presence::TakenOver
        );
        // Redis restarted empty, or the hash still names this worker: still this worker's.
        assert_eq!(presence(false, false, None, None, "w1"), Presence::Lost);
        assert_eq!(
            presence(false, false, Some(Running), Some("w1"), "w1"),
            Presence::Lost
        );
    }

    #[actix_rt::test]
    async fn a_taken_job_is_marked_running_and_a_duplicate_id_is_refused_untouched() {
        let redis = Redis::start();
        let events = redis.subscribe("t:events");
        let mut w1 = store(&redis, "w1").await;
        let mut w2 = store(&redis, "w2").await;
        assert_eq!(take_next(&mut w1).await, Take::Empty);
        redis.cli(&["LPUSH", "{t}:jobs", &job("a")]);
        let Take::Job { raw, id, attempts } = take_next(&mut w1).await else {
            panic!("no job")
        };
        assert_eq!((id.as_deref(), attempts), (Some("a"), 1));
        assert_eq!(redis.cli(&["LRANGE", "{t}:processing:w1", "0", "-1"]), raw);
        assert_eq!(redis.hget("{t}:job:a", "state"), "running");
        assert_eq!(redis.hget("{t}:job:a", "worker"), "w1");
        // The same id pushed raw while it runs: refused and dropped, the first untouched.
        redis.cli(&["LPUSH", "{t}:jobs", &job("a")]);
        assert_eq!(
            take_next(&mut w2).await,
            Take::Duplicate {
                id: "a".into(),
                worker: "w1".into()
            }
        );
        assert_eq!(redis.cli(&["LLEN", "{t}:jobs"]), "0");
        assert_eq!(redis.cli(&["LLEN", "{t}:processing:w2"]), "0");
        assert_eq!(redis.hget("{t}:job:a", "worker"), "w1");
        assert_eq!(redis.hget("{t}:job:a", "attempts"), "1");
        assert_eq!(redis.hget("{t}:job:a", "state"), "running");
        pagecast_testkit::wait_until("the refusal event", Duration::from_secs(5), || {
            events.messages().iter().any(|m| {
                m["id"] == "a"
                    && m["state"] == "failed"
                    && m["message"]
                        .as_str()
                        .is_some_and(|s| s.contains("already running"))
            })
        });
        // A payload without an id is taken as is, for the caller to refuse.
        redis.cli(&["LPUSH", "{t}:jobs", "nope"]);
        assert_eq!(
            take_next(&mut w2).await,
            Take::Job {
                raw: "nope".into(),
                id: None,
                attempts: 0
            }
        );
    }

    #[actix_rt::test]
    async fn a_submission_is_refused_atomically_while_its_id_is_queued_or_running() {
        let redis = Redis::start();
        let mut s = store(&redis, "w1").await;
        assert_eq!(s.submit("a", &job("a")).await.unwrap(), Ok(()));
        assert_eq!(redis.hget("{t}:job:a", "state"), "queued");
        assert_eq!(
            s.submit("a", &job("a")).await.unwrap(),
            Err(JobState::Queued)
        );
        assert_eq!(redis.cli(&["LLEN", "{t}:jobs"]), "1");
        let Take::Job { raw, .. } = take_next(&mut s).await else {
            panic!()
        };
        assert_eq!(
            s.submit("a", &job("a")).await.unwrap(),
            Err(JobState::Running)
        );
        let done = Outcome {
            id: Some("a".into()),
            raw,
            decision: Decision::Done,
            code: Some(0),
            message: String::new(),
            not_run: false,
            output: None,
        };
        s.write_outcome(&done, Duration::from_secs(60))
            .await
            .unwrap();
        // Over: the id can be used again (a new hash, attempts from 0).
        assert_eq!(s.submit("a", &job("a")).await.unwrap(), Ok(()));
        assert_eq!(redis.hget("{t}:job:a", "attempts"), "0");
        assert_eq!(redis.cli(&["TTL", "{t}:job:a"]), "-1");
    }

    #[actix_rt::test]
    async fn results_leave_the_processing_list_requeue_without_what_was_asked_and_expire_when_over()
    {
        let redis = Redis::start();
        let mut s = store(&redis, "w1").await;
        redis.cli(&["LPUSH", "{t}:jobs", &job("a")]);
        let Take::Job { raw, .. } = take_next(&mut s).await else {
            panic!()
        };
        redis.cli(&[
            "HSET",
            "{t}:job:a",
            "stop",
            "1",
            "discard",
            "1",
            "pause",
            "0",
            "stream_updates",
            "2",
            "layout",
            "speaker-dark",
        ]);
        assert_eq!(
            s.asked("a").await.unwrap(),
            Asked {
                stop: true,
                discard: true,
                pause: Some(false),
                stream_updates: 2,
                layout: Some("speaker-dark".into()),
            }
        );
        let mut o = Outcome {
            id: Some("a".into()),
            raw: raw.clone(),
            decision: Decision::Requeue,
            code: None,
            message: "killed".into(),
            not_run: false,
            output: None,
        };
        s.write_outcome(&o, Duration::from_secs(60)).await.unwrap();
        assert_eq!(redis.cli(&["LRANGE", "{t}:jobs", "0", "-1"]), raw);
        assert_eq!(redis.cli(&["LLEN", "{t}:processing:w1"]), "0");
        assert_eq!(redis.hget("{t}:job:a", "state"), "requeued");
        // The retry is asked nothing, but has the job's live-output updates and layout.
        assert_eq!(
            s.asked("a").await.unwrap(),
            Asked {
                stream_updates: 2,
                layout: Some("speaker-dark".into()),
                ..Asked::default()
            }
        );
        assert_eq!(redis.cli(&["TTL", "{t}:job:a"]), "-1");
        let Take::Job { attempts, .. } = take_next(&mut s).await else {
            panic!()
        };
        assert_eq!(attempts, 2);
        o.decision = Decision::Failed;
        o.code = Some(4);
        s.write_outcome(&o, Duration::from_secs(60)).await.unwrap();
        assert_eq!(redis.hget("{t}:job:a", "state"), "failed");
        assert_eq!(redis.hget("{t}:job:a", "exit_code"), "4");
        let ttl: i64 = redis.cli(&["TTL", "{t}:job:a"]).parse().unwrap();
        assert!((1..=60).contains(&ttl), "{ttl}");
        assert_eq!(redis.cli(&["LLEN", "{t}:jobs"]), "0");
        assert_eq!(redis.cli(&["LLEN", "{t}:processing:w1"]), "0");
    }

    #[actix_rt::test]
    async fn jobs_queued_under_the_names_before_the_hash_tag_are_adopted_oldest_next() {
        let redis = Redis::start();
        let mut w1 = store(&redis, "w1").await;
        // Queued before the upgrade: "old1" first; "run" was running on w1 when it stopped.
        redis.cli(&["LPUSH", "t:jobs", "old1"]);
        redis.cli(&["LPUSH", "t:jobs", "old2"]);
        redis.cli(&["LPUSH", "t:processing:w1", "run"]);
        redis.cli(&["LPUSH", "t:processing:w2", "other"]);
        // Queued after it, under today's name.
        redis.cli(&["LPUSH", "{t}:jobs", "new1"]);
        assert_eq!(w1.adopt_unbraced_jobs().await.unwrap(), 3);
        let order = redis.cli(&["LRANGE", "{t}:jobs", "0", "-1"]);
        // Taken from the right: the interrupted job, then the old ones in order, then the new.
        assert_eq!(
            order.split_whitespace().collect::<Vec<_>>(),
            ["new1", "old2", "old1", "run"]
        );
        assert_eq!(redis.cli(&["EXISTS", "t:jobs"]), "0");
        // Another worker's interrupted jobs are its own to adopt (or the dead-worker check's).
        assert_eq!(redis.cli(&["LLEN", "t:processing:w2"]), "1");
        assert_eq!(w1.adopt_unbraced_jobs().await.unwrap(), 0);
    }

    #[actix_rt::test]
    async fn a_dead_worker_s_jobs_go_back_to_the_queue_and_its_copy_learns_it() {
        let redis = Redis::start();
        let mut w1 = store(&redis, "w1").await;
        let mut w2 = store(&redis, "w2").await;
        assert!(w1
            .claim_heartbeat("i1", Duration::from_secs(1))
            .await
            .unwrap());
        assert!(
            !w1.claim_heartbeat("i2", Duration::from_secs(1))
                .await
                .unwrap(),
            "taken"
        );
        assert!(w2
            .claim_heartbeat("i3", Duration::from_secs(30))
            .await
            .unwrap());
        redis.cli(&["LPUSH", "{t}:jobs", &job("a")]);
        let Take::Job { raw, .. } = take_next(&mut w1).await else {
            panic!()
        };
        assert_eq!(w1.presence("a", &raw).await.unwrap(), Presence::Here);
        assert!(w2.dead_workers().await.unwrap().is_empty());
        pagecast_testkit::wait_until("w1's heartbeat to expire", Duration::from_secs(5), || {
            redis.cli(&["EXISTS", "{t}:worker:w1"]) == "0"
        });
        assert_eq!(w2.dead_workers().await.unwrap(), ["w1"]);
        assert_eq!(w2.requeue_jobs_of("w1", "w1 is gone").await.unwrap(), 1);
        w2.forget_worker("w1").await.unwrap();
        assert_eq!(redis.cli(&["SMEMBERS", "{t}:workers"]), "w2");
        assert_eq!(redis.hget("{t}:job:a", "state"), "requeued");
        assert_eq!(w1.presence("a", &raw).await.unwrap(), Presence::TakenOver);
        // w1 comes back: its heartbeat had expired.
        assert_eq!(
            w1.heartbeat("i1", Duration::from_secs(5)).await.unwrap(),
            None
        );
        assert_eq!(
            w1.heartbeat("i1", Duration::from_secs(5))
                .await
                .unwrap()
                .as_deref(),
            Some("i1")
        );
        // Redis lost everything: the job is w1's still, and put back.
        redis.cli(&["FLUSHALL"]);
        assert_eq!(w1.presence("a", &raw).await.unwrap(), Presence::Lost);
        w1.restore_running("a", &raw).await.unwrap();
        assert_eq!(w1.taken().await.unwrap(), vec![raw.clone()]);
        assert_eq!(w1.presence("a", &raw).await.unwrap(), Presence::Here);
        let sealed = r#"{"id":"a","sealed":"x"}"#;
        w1.replace_taken(&raw, sealed).await.unwrap();
        assert_eq!(w1.taken().await.unwrap(), [sealed]);
        w1.leave().await.unwrap();
        assert_eq!(redis.cli(&["EXISTS", "{t}:worker:w1"]), "0");
    }
}
