//! ApiActor: LiveKit's Egress API on `pagecast serve --http ADDR`, so a LiveKit user's own SDK
//! code (`EgressClient`, `lk egress`) starts, lists and stops pagecast recordings.
//!
//! Owns: the actix-web server (one worker thread) answering Twirp at
//! `/twirp/livekit.Egress/<Method>` (`twirp.rs`), each call authorized by a LiveKit access token
//! (`auth.rs`); `GET /healthz`. A start request is made into a job (`request.rs`), checked
//! against the service's policy (as a worker will check it again), sealed and submitted through
//! the queue exactly as `pagecast submit` does; the egress's state lives in Redis (`info.rs`),
//! so any worker's API answers for any job. `GET /metrics` in Prometheus' format (`metrics.rs`).
//! The webhook senders (`--webhook`'s URLs, and a start request's own `webhooks`) and the
//! `Q:events` follower feeding them (`webhook.rs`).
//! With `--livekit-url`: room composites, participant and track composite egresses
//! (`request::room_composite`, `request::participant`, `request::track_composite`).
//! Accepts: [`Shutdown`] (no new connections, requests in flight answered, then stopped),
//! [`Kill`] (stopped at once).
//! Sends: nothing to other actors: stop requests go through Redis like any other.
//! Stops: on `Shutdown`/`Kill`; a server that ends by itself is a crash (restarted).

mod auth;
pub(super) mod info;
mod metrics;
mod request;
mod twirp;
mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use livekit_protocol as lk;
use pagecast_actors::events::API_LISTENING;
use pagecast_actors::supervision::{ChildLink, ExitReason, Failure, FailureKind, Kill, Shutdown};

pub use auth::{ApiKeys, KEY_VAR, SECRET_VAR};
use info::Records;
use info::Sealed;
use twirp::{Code, Encoding, TwirpError};
use webhook::{RequestHook, Webhooks};

use super::sealed::JobKey;
use super::store::Store;
use crate::policy::{Policy, PolicyError};

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub addr: SocketAddr,
    pub keys: ApiKeys,
    /// Where webhooks go (`--webhook`).
    pub webhooks: Vec<url::Url>,
    /// The LiveKit server room composites join (`--livekit-url`); their room tokens are
    /// signed with the first API key.
    pub livekit_url: Option<url::Url>,
}

/// What the API shares with the rest of the service.
pub(super) struct Shared {
    pub store: Store,
    pub con: redis::aio::ConnectionManager,
    pub client: redis::Client,
    pub keys: super::Keys,
    pub worker: String,
    pub job_key: Arc<JobKey>,
    pub policy: Policy,
    /// What this worker's recordings hold and what is left (`/healthz`).
    pub capacity: super::capacity::ReportReceiver,
}

/// What every request handler shares (cloned into the server's worker thread).
#[derive(Clone)]
struct Api {
    keys: ApiKeys,
    store: Store,
    records: Records,
    job_key: Arc<JobKey>,
    policy: Policy,
    webhooks: Webhooks,
    livekit_url: Option<url::Url>,
    capacity: super::capacity::ReportReceiver,
}

pub struct ApiActor {
    link: ChildLink,
    server: ServerHandle,
    stopping: bool,
    /// The queue-event follower of the webhooks, ended with the actor.
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for ApiActor {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Message (from the server's task): the server ended.
#[derive(Message)]
#[rtype(result = "()")]
struct ServerEnded(std::io::Result<()>);

impl Actor for ApiActor {
    type Context = Context<Self>;
}

/// Starts the API: resolves once it listens (a port it cannot bind: `Input`).
pub(super) fn start(
    options: ApiOptions,
    shared: Shared,
    link: ChildLink,
) -> Result<Addr<ApiActor>, Failure> {
    let records = Records::new(shared.con, shared.keys.clone());
    let webhooks = Webhooks::start(&options.webhooks, &options.keys, shared.policy.clone())
        .map_err(|e| Failure::new(FailureKind::Input, format!("--webhook: {e}")))?;
    let api = Api {
        keys: options.keys.clone(),
        store: shared.store,
        records,
        job_key: shared.job_key,
        policy: shared.policy,
        webhooks,
        livekit_url: options.livekit_url.clone(),
        capacity: shared.capacity,
    };
    // The changes this worker writes go to `--webhook`'s URLs and each egress's own.
    let follower = follow_for_webhooks(
        shared.client.clone(),
        shared.keys.events(),
        shared.worker.clone(),
        api.clone(),
    );
    metrics::install();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(api.clone()))
            .app_data(web::PayloadConfig::new(1 << 20))
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(scrape))
            .route(
                &format!("{}{{method}}", twirp::PREFIX),
                web::post().to(call),
            )
            .default_service(web::to(|| async {
                TwirpError::new(Code::BadRoute, "no such route").response()
            }))
    })
    .workers(1)
    // SIGTERM is the service's to handle: it stops the tree, which stops this server in order.
    .disable_signals()
    .shutdown_timeout(10)
    .bind(options.addr)
    .map_err(|e| {
        Failure::new(
            FailureKind::Input,
            format!("--http {}: cannot listen: {e}", options.addr),
        )
    })?;
    let bound = server.addrs().first().copied().unwrap_or(options.addr);
    let server = server.run();
    let handle = server.handle();
    tracing::info!(addr = %bound, "{API_LISTENING}");
    let addr = ApiActor {
        link,
        server: handle,
        stopping: false,
        follower,
    }
    .start();
    let watcher = addr.clone();
    actix::spawn(async move {
        let ended = server.await;
        watcher.do_send(ServerEnded(ended));
    });
    Ok(addr)
}

impl Handler<ServerEnded> for ApiActor {
    type Result = ();
    fn handle(&mut self, msg: ServerEnded, ctx: &mut Context<Self>) {
        if !self.stopping {
            let why = match msg.0 {
                Ok(()) => "ended by itself".to_owned(),
                Err(e) => e.to_string(),
            };
            self.link
                .set_exit(ExitReason::Failed(Failure::crashed(format!(
                    "egress API server lost: {why}"
                ))));
            ctx.stop();
        }
    }
}

impl Handler<Shutdown> for ApiActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.link.set_exit(ExitReason::Shutdown);
        self.stopping = true;
        // Graceful: no new connections, the requests in flight are answered.
        let stopped = self.server.stop(true);
        Box::pin(actix::fut::wrap_future(stopped).map(
            |_, _: &mut Self, ctx: &mut Context<Self>| {
                ctx.stop();
                Ok(())
            },
        ))
    }
}

impl Handler<Kill> for ApiActor {
    type Result = ();
    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.link.set_exit(ExitReason::Shutdown);
        self.stopping = true;
        actix::spawn(self.server.stop(false));
        ctx.stop();
    }
}

/// Follows the queue's events: this worker's changes to an egress become `egress_updated` /
/// `egress_ended` with the egress's info of that moment, one after the other (in order).
fn follow_for_webhooks(
    client: redis::Client,
    channel: String,
    worker: String,
    api: Api,
) -> tokio::task::JoinHandle<()> {
    let mut records = api.records.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, &'static str)>(1000);
    actix::spawn(async move {
        let follow = super::control::follow_messages(client, channel, move |payload| {
            if let Some(change) = webhook::for_event(&payload, &worker) {
                let _ = tx.try_send(change);
            }
        });
        let send = async move {
            while let Some((id, event)) = rx.recv().await {
                match records.get(&id).await {
                    Ok(Some(info)) => api.notify(&mut records, event, &info).await,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(egress = %id, error = %e, "no webhook: cannot read the egress")
                    }
                }
            }
        };
        tokio::join!(follow, send);
    })
}

/// `GET /healthz`: 200 when Redis answers, with this worker's capacity (JSON: `redis`, and
/// `capacity`: recordings and their limit, cores and memory used and left, `overloaded`; null
/// until the first count, a second after the start).
async fn healthz(api: web::Data<Api>) -> HttpResponse {
    let mut store = api.store.clone();
    let capacity = *api.capacity.borrow();
    match store.job_fields("-").await {
        Ok(_) => {
            HttpResponse::Ok().json(serde_json::json!({ "redis": "ok", "capacity": capacity }))
        }
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "redis": e.to_string(), "capacity": capacity })),
    }
}

/// `GET /metrics`.
async fn scrape(api: web::Data<Api>) -> HttpResponse {
    let queued = api.store.clone().queue_length().await;
    let egresses = api.records.clone().list("", "", false).await;
    let capacity = *api.capacity.borrow();
    match (queued, egresses) {
        (Ok(queued), Ok(egresses)) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(metrics::render(queued, &egresses, capacity)),
        (Err(e), _) => HttpResponse::ServiceUnavailable().body(format!("Redis: {e}\n")),
        (_, Err(e)) => HttpResponse::ServiceUnavailable().body(format!("Redis: {e}\n")),
    }
}

/// One Twirp call.
async fn call(
    req: HttpRequest,
    method: web::Path<String>,
    body: web::Bytes,
    api: web::Data<Api>,
) -> HttpResponse {
    let method = method.into_inner();
    let answer = answer(&req, &method, &body, &api).await;
    match &answer {
        Ok(_) => metrics::request(&method, "ok"),
        Err(e) => {
            metrics::request(&method, e.code.as_str());
            tracing::info!(method = %method, code = e.code.as_str(), error = %e.msg, "egress API call refused");
        }
    }
    answer.unwrap_or_else(|e| e.response())
}

async fn answer(
    req: &HttpRequest,
    method: &str,
    body: &[u8],
    api: &Api,
) -> Result<HttpResponse, TwirpError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let encoding = Encoding::of(header("content-type").as_deref())?;
    let caller = api.keys.authorize(header("authorization").as_deref())?;
    match method {
        "StartWebEgress" => {
            let r: lk::WebEgressRequest = encoding.decode(body)?;
            let job = request::web(&r)?;
            Ok(encoding.encode(&start_egress(api, job, String::new(), &caller).await?))
        }
        "StartRoomCompositeEgress" => {
            let r: lk::RoomCompositeEgressRequest = encoding.decode(body)?;
            let job = request::room_composite(&r, &room(api)?)?;
            let info = start_egress(api, job, r.room_name.clone(), &caller).await?;
            Ok(encoding.encode(&info))
        }
        "StartParticipantEgress" => {
            let r: lk::ParticipantEgressRequest = encoding.decode(body)?;
            let job = request::participant(&r, &room(api)?)?;
            let info = start_egress(api, job, r.room_name.clone(), &caller).await?;
            Ok(encoding.encode(&info))
        }
        "ListEgress" => {
            let r: lk::ListEgressRequest = encoding.decode(body)?;
            let items = api
                .records
                .clone()
                .list(&r.room_name, &r.egress_id, r.active)
                .await
                .map_err(|e| TwirpError::new(Code::Unavailable, format!("Redis: {e}")))?;
            Ok(encoding.encode(&lk::ListEgressResponse {
                items,
                next_page_token: None,
            }))
        }
        "StopEgress" => {
            let r: lk::StopEgressRequest = encoding.decode(body)?;
            Ok(encoding.encode(&stop(api, &r.egress_id).await?))
        }
        "UpdateStream" => {
            let r: lk::UpdateStreamRequest = encoding.decode(body)?;
            Ok(encoding.encode(&update_stream(api, &r).await?))
        }
        "UpdateLayout" => {
            let r: lk::UpdateLayoutRequest = encoding.decode(body)?;
            Ok(encoding.encode(&update_layout(api, &r).await?))
        }
        "StartTrackCompositeEgress" => {
            let r: lk::TrackCompositeEgressRequest = encoding.decode(body)?;
            let job = request::track_composite(&r, &room(api)?)?;
            let info = start_egress(api, job, r.room_name.clone(), &caller).await?;
            Ok(encoding.encode(&info))
        }
        "StartTrackEgress" => Err(TwirpError::new(
            Code::Unimplemented,
            format!("{method} is not served by pagecast yet"),
        )),
        _ => Err(TwirpError::new(
            Code::BadRoute,
            format!("no method {method} in livekit.Egress"),
        )),
    }
}

/// Where the service's room recordings join: its `--livekit-url`, their tokens signed with the
/// first API key.
fn room(api: &Api) -> Result<request::Room<'_>, TwirpError> {
    let ws_url = api.livekit_url.as_ref().ok_or_else(|| {
        TwirpError::new(
            Code::FailedPrecondition,
            "this service was started without --livekit-url: it records no rooms",
        )
    })?;
    let (key, secret) = api.keys.signing();
    Ok(request::Room {
        ws_url: ws_url.as_str(),
        api_key: key,
        api_secret: secret.expose(),
    })
}

/// Fills `{egress_id}` in every text of the job's config (the file paths and keys that hold it).
fn with_egress_id(config: &mut serde_json::Value, id: &str) {
    match config {
        serde_json::Value::String(s) if s.contains(request::EGRESS_ID) => {
            *s = s.replace(request::EGRESS_ID, id);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| with_egress_id(v, id)),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(|v| with_egress_id(v, id));
        }
        _ => {}
    }
}

/// Submits a new egress's job; its info as it starts.
async fn start_egress(
    api: &Api,
    job: request::Job,
    room: String,
    caller: &str,
) -> Result<lk::EgressInfo, TwirpError> {
    let id = info::new_id();
    let mut config = job.config;
    with_egress_id(&mut config, &id);
    // The policy refuses what a worker would refuse, now, naming the field; the output file
    // becomes its path inside the output root (so its results name the real file).
    let mut checked = crate::config::parse(&config.to_string())
        .map_err(|e| TwirpError::new(Code::InvalidArgument, e.to_string()))?;
    if let Err(e) = api.policy.apply(&mut checked).await {
        return Err(match &e {
            PolicyError::Refused { .. } | PolicyError::Unresolvable { .. } => {
                TwirpError::new(Code::InvalidArgument, e.to_string())
            }
        });
    }
    // The request's own webhooks: signed with the caller's own key (no caller gets events
    // signed with another's), to a host the policy allows an endpoint on (checked again at each
    // delivery).
    let mut hooks = job.webhooks;
    for (i, hook) in hooks.iter_mut().enumerate() {
        if hook.key.is_empty() {
            hook.key = caller.to_owned();
        } else if hook.key != caller {
            return Err(TwirpError::invalid(
                &format!("webhooks[{i}].signing_key"),
                "only the API key of the caller's token signs its webhooks",
            ));
        }
        api.policy
            .check_webhook(&format!("webhooks[{i}].url"), &hook.url)
            .await
            .map_err(|e| TwirpError::new(Code::InvalidArgument, e.to_string()))?;
    }
    if let Some(file) = &checked.output.file {
        config["output"]["file"] = serde_json::json!(file);
    }
    // The same for the HLS and image directories (their results name them).
    if let Some(hls) = &checked.output.hls {
        config["output"]["hls"]["directory"] = serde_json::json!(hls.directory);
    }
    if let Some(images) = &checked.output.images {
        config["output"]["images"]["directory"] = serde_json::json!(images.directory);
    }
    if config.get("max_duration").is_none() {
        if let Some(max) = checked.max_duration {
            config["max_duration"] = serde_json::json!(humantime::format_duration(max).to_string());
        }
    }
    let now = info::now_ns();
    let info = lk::EgressInfo {
        egress_id: id.clone(),
        room_name: room,
        // Every pagecast egress is a page in Chromium (LiveKit's WEB source).
        source_type: lk::EgressSourceType::Web as i32,
        status: lk::EgressStatus::EgressStarting as i32,
        updated_at: now,
        stream_results: job
            .streams
            .iter()
            .map(|url| lk::StreamInfo {
                url: url.clone(),
                ..Default::default()
            })
            .collect(),
        request: Some(job.shown),
        ..Default::default()
    };
    // The stream URLs as given, kept sealed for UpdateStream.
    let raw: Vec<String> = config["output"]["rtmp"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let payload = super::sealed_job(&id, config, Some(api.job_key.as_ref()))
        .map_err(|o| TwirpError::new(Code::InvalidArgument, o.message))?;
    let mut records = api.records.clone();
    records.create(&info).await.map_err(redis_down)?;
    // Its stream URLs and its own webhooks, kept sealed beside it (when it has any).
    let mut sealed = Vec::new();
    if !raw.is_empty() {
        sealed.push((
            Sealed::Streams,
            seal_list(&api.job_key, &id, Sealed::Streams, &raw)?,
        ));
    }
    if !hooks.is_empty() {
        sealed.push((
            Sealed::Webhooks,
            seal_list(&api.job_key, &id, Sealed::Webhooks, &hooks)?,
        ));
    }
    for (what, stored) in sealed {
        if let Err(e) = records.set_sealed(&id, what, &stored).await {
            let _ = records.remove(&id).await;
            return Err(redis_down(e));
        }
    }
    match api.store.clone().submit(&id, &payload).await {
        Ok(Ok(())) => {}
        Ok(Err(state)) => {
            return Err(TwirpError::internal(format!(
                "egress {id} is already {state}"
            )))
        }
        Err(e) => {
            let _ = records.remove(&id).await;
            return Err(redis_down(e.to_string()));
        }
    }
    tracing::info!(egress = %id, "egress submitted");
    metrics::egress_started();
    api.webhooks.send("egress_started", info.clone(), &hooks);
    Ok(info)
}

/// Asks a running egress to stop (it finishes its file and upload); its info, ENDING.
async fn stop(api: &Api, id: &str) -> Result<lk::EgressInfo, TwirpError> {
    let mut records = api.records.clone();
    let info = records
        .get(id)
        .await
        .map_err(redis_down)?
        .ok_or_else(|| TwirpError::new(Code::NotFound, format!("egress {id} not found")))?;
    if !info::is_active(&info) {
        return Err(TwirpError::new(
            Code::FailedPrecondition,
            format!(
                "egress {id} is {}, not active",
                lk::EgressStatus::try_from(info.status)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?")
            ),
        ));
    }
    api.store
        .clone()
        .request_stop(id)
        .await
        .map_err(|e| redis_down(e.to_string()))?;
    let info = records
        .get(id)
        .await
        .map_err(redis_down)?
        .ok_or_else(|| TwirpError::new(Code::NotFound, format!("egress {id} not found")))?;
    api.notify(&mut records, "egress_updated", &info).await;
    Ok(info)
}

/// Adds and removes live outputs of a running egress: checked here (URLs, the policy, the last
/// output), then sent sealed to the worker running it (the URLs hold stream keys), and written
/// masked to the egress's record; its info, updated.
async fn update_stream(
    api: &Api,
    r: &lk::UpdateStreamRequest,
) -> Result<lk::EgressInfo, TwirpError> {
    let id = &r.egress_id;
    let (mut records, info, mut record) = active_record(api, id).await?;
    let mut raw = match records
        .sealed(id, Sealed::Streams)
        .await
        .map_err(redis_down)?
    {
        Some(sealed) => open_list(&api.job_key, id, Sealed::Streams, &sealed)?,
        None => Vec::new(),
    };
    let change = request::stream_change(&record, &raw, r)?;
    let streaming = change.streaming_after - r.add_output_urls.len();
    for (i, url) in r.add_output_urls.iter().enumerate() {
        let field = format!("add_output_urls[{i}]");
        api.policy
            .check_added_stream(&field, url, streaming + i)
            .await
            .map_err(|e| TwirpError::new(Code::InvalidArgument, e.to_string()))?;
    }
    let update = super::StreamUpdate {
        add: r.add_output_urls.clone(),
        remove: r.remove_output_urls.clone(),
    };
    let sealed = update
        .seal(id, &api.job_key)
        .map_err(TwirpError::internal)?;
    api.store
        .clone()
        .push_stream_update(id, &sealed)
        .await
        .map_err(|e| redis_down(e.to_string()))?;
    change.apply(&mut record, &mut raw, info::now_ns(), info.started_at);
    let sealed = seal_list(&api.job_key, id, Sealed::Streams, &raw)?;
    records
        .set_sealed(id, Sealed::Streams, &sealed)
        .await
        .map_err(redis_down)?;
    records.update(&record).await.map_err(redis_down)?;
    tracing::info!(egress = %id, added = r.add_output_urls.len(), removed = r.remove_output_urls.len(), "egress live outputs updated");
    updated(api, &mut records, id).await
}

/// Switches a running room composite's layout: sent to the worker running it (no secret in
/// it), and written to the egress's record; its info, updated.
async fn update_layout(
    api: &Api,
    r: &lk::UpdateLayoutRequest,
) -> Result<lk::EgressInfo, TwirpError> {
    let id = &r.egress_id;
    let (mut records, _, mut record) = active_record(api, id).await?;
    let layout = request::layout_change(&mut record, &r.layout)?;
    api.store
        .clone()
        .set_layout(id, layout)
        .await
        .map_err(|e| redis_down(e.to_string()))?;
    records.update(&record).await.map_err(redis_down)?;
    tracing::info!(egress = %id, layout, "egress layout updated");
    updated(api, &mut records, id).await
}

/// The record of the egress `id`, which must be active (an update of an ended one is refused).
/// Also its info as it is now.
async fn active_record(
    api: &Api,
    id: &str,
) -> Result<(Records, lk::EgressInfo, lk::EgressInfo), TwirpError> {
    let not_found = || TwirpError::new(Code::NotFound, format!("egress {id} not found"));
    let mut records = api.records.clone();
    let info = records
        .get(id)
        .await
        .map_err(redis_down)?
        .ok_or_else(not_found)?;
    if !info::is_active(&info) {
        return Err(TwirpError::new(
            Code::FailedPrecondition,
            format!("egress {id} is not active"),
        ));
    }
    let record = records
        .record(id)
        .await
        .map_err(redis_down)?
        .ok_or_else(not_found)?;
    Ok((records, info, record))
}

/// The egress's info after an update, also sent to the webhooks (`egress_updated`).
async fn updated(api: &Api, records: &mut Records, id: &str) -> Result<lk::EgressInfo, TwirpError> {
    let info = records
        .get(id)
        .await
        .map_err(redis_down)?
        .ok_or_else(|| TwirpError::new(Code::NotFound, format!("egress {id} not found")))?;
    api.notify(records, "egress_updated", &info).await;
    Ok(info)
}

/// An egress's stream URLs as given (they hold stream keys) or its webhooks (their URLs may
/// hold tokens), sealed for Redis.
fn seal_list<T: serde::Serialize>(
    key: &super::sealed::JobKey,
    id: &str,
    what: Sealed,
    items: &[T],
) -> Result<String, TwirpError> {
    let clear = serde_json::to_string(items).map_err(TwirpError::internal)?;
    key.seal(&format!("{}:{id}", what.name()), &clear)
        .map_err(TwirpError::internal)
}

fn open_list<T: serde::de::DeserializeOwned>(
    key: &super::sealed::JobKey,
    id: &str,
    what: Sealed,
    stored: &str,
) -> Result<Vec<T>, TwirpError> {
    let stored: serde_json::Value = serde_json::from_str(stored).map_err(TwirpError::internal)?;
    let sealed = stored["sealed"].as_str().unwrap_or_default();
    let clear = key
        .open(&format!("{}:{id}", what.name()), sealed)
        .map_err(TwirpError::internal)?;
    serde_json::from_str(&clear).map_err(TwirpError::internal)
}

/// The egress's own webhooks (its request's), opened; none when it has none or they cannot be
/// read (logged: the egress goes on without them).
async fn request_hooks(records: &mut Records, key: &JobKey, id: &str) -> Vec<RequestHook> {
    let opened = match records.sealed(id, Sealed::Webhooks).await {
        Ok(None) => return Vec::new(),
        Ok(Some(stored)) => open_list(key, id, Sealed::Webhooks, &stored).map_err(|e| e.msg),
        Err(e) => Err(e),
    };
    opened.unwrap_or_else(|e| {
        tracing::warn!(egress = %id, error = %e, "cannot read the egress's own webhooks");
        Vec::new()
    })
}

impl Api {
    /// Sends `event` with `info` to the webhooks: `--webhook`'s and the egress's own.
    async fn notify(&self, records: &mut Records, event: &str, info: &lk::EgressInfo) {
        let hooks = request_hooks(records, &self.job_key, &info.egress_id).await;
        self.webhooks.send(event, info.clone(), &hooks);
    }
}

fn redis_down(e: String) -> TwirpError {
    TwirpError::new(Code::Unavailable, format!("Redis: {e}"))
}

/// Keeps the server's shutdown bounded like every child's.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_egress_id_is_filled_into_every_path_that_holds_it() {
        let mut config = serde_json::json!({
            "input": { "url": "https://example.com/" },
            "output": { "file": "{time}-{egress_id}.mp4", "s3": { "key": "a/{egress_id}/b.mp4" },
                "rtmp": ["rtmp://h/app/k"], "video_bitrate": 3000 },
        });
        with_egress_id(&mut config, "EG_x1");
        assert_eq!(config["output"]["file"], "{time}-EG_x1.mp4");
        assert_eq!(config["output"]["s3"]["key"], "a/EG_x1/b.mp4");
        assert_eq!(config["output"]["rtmp"][0], "rtmp://h/app/k");
        assert_eq!(config["output"]["video_bitrate"], 3000);
    }
}
