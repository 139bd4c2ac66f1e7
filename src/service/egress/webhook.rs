//! Webhooks: `egress_started`, `egress_updated` and `egress_ended` to every `--webhook URL`, as
//! LiveKit sends them: a `WebhookEvent` in protobuf JSON, `Content-Type:
//! application/webhook+json`, an `Authorization` header holding a JWT signed with the API key
//! (`iss`) whose `sha256` claim is the body's SHA-256 (base64), so LiveKit's `WebhookReceiver`
//! verifies them.
//!
//! Who sends what: the API that starts an egress sends `egress_started`, the one that stops it
//! `egress_updated` (ENDING); the worker running its
//! job sends `egress_updated` (running, requeued: the worker that moved a dead one's job back)
//! and `egress_ended` (done, failed), learnt from the queue's events (`Q:events`, whose `worker`,
//! or `by` for a requeue, names the worker that wrote the change) and
//! with the egress's info read from Redis at that moment.
//!
//! Never blocking a recording: each URL has a task of its own sending its events in order,
//! fed through a bounded channel (full: the event is dropped and logged); a failed delivery
//! is retried with the project's one backoff, given up after [`GIVE_UP_AFTER`].
//!
//! A start request's own `webhooks` ([`RequestHook`]: a URL and the API key that signs it) get
//! its egress's events too, in order as well: one queue and task per URL and key, made at its
//! first event and ended once it has been idle for [`QUEUE_IDLE`]. Those URLs come
//! from API callers: every attempt checks the URL's host against the service policy (an
//! endpoint's rules: no loopback, link-local or unspecified address unless allowed) and connects
//! to the address it checked, whatever DNS says a moment later.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use livekit_protocol as lk;
use pagecast_actors::backoff::Backoff;
use pagecast_actors::secret::{mask_url, Secret};
use tokio::sync::mpsc;

use super::auth::ApiKeys;
use crate::policy::{Policy, PolicyError};

/// How long one event is retried before it is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Events waiting per URL before new ones are dropped.
const QUEUE: usize = 1000;
/// How long a request webhook's queue (and its task) outlives its last event.
const QUEUE_IDLE: Duration = Duration::from_secs(30);
/// One delivery's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A start request's own webhook, as kept (sealed) for its egress.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RequestHook {
    pub url: String,
    /// The API key whose secret signs its events.
    pub key: String,
    /// Its `filter_params`: only these events (none: all), and never these.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl RequestHook {
    /// Whether its filter lets `event` through.
    pub fn wants(&self, event: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|e| e == event))
            && !self.exclude.iter().any(|e| e == event)
    }
}

/// The webhooks' senders (cheap to clone: the channels' ends), and what a request's own
/// webhooks are sent with.
#[derive(Clone)]
pub struct Webhooks {
    senders: Vec<(String, mpsc::Sender<lk::WebhookEvent>)>,
    keys: ApiKeys,
    policy: Policy,
    requested: RequestQueues,
}

impl Webhooks {
    /// Starts one sender task per URL of `--webhook` (on the current runtime), signing with the
    /// first key; a request's own webhooks are checked against `policy`.
    pub fn start(urls: &[url::Url], keys: &ApiKeys, policy: Policy) -> Result<Webhooks, String> {
        let (key, secret) = keys.signing();
        let mut senders = Vec::new();
        // Without `--webhook` no client is made here (a request's own get theirs when sent).
        if !urls.is_empty() {
            let client = client(None)?;
            for url in urls {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(
                    client.clone(),
                    url.clone(),
                    key.to_owned(),
                    secret.clone(),
                    rx,
                ));
                senders.push((mask_url(url.as_str()), tx));
            }
        }
        Ok(Webhooks {
            senders,
            keys: keys.clone(),
            policy,
            requested: RequestQueues::default(),
        })
    }

    /// Queues `event` (`egress_started`, ...) with `info` for every URL of `--webhook`, and
    /// sends it to each of the egress's own `hooks`.
    pub fn send(&self, event: &str, info: lk::EgressInfo, hooks: &[RequestHook]) {
        let event = lk::WebhookEvent {
            event: event.to_owned(),
            egress_info: Some(info),
            id: format!("EV_{}", &super::info::new_id()[3..]),
            created_at: super::info::now_ns() / 1_000_000_000,
            ..Default::default()
        };
        for (url, tx) in &self.senders {
            if tx.try_send(event.clone()).is_err() {
                tracing::warn!(webhook = %url, event = %event.event, "webhook queue full or closed: event dropped");
            }
        }
        for hook in hooks.iter().filter(|h| h.wants(&event.event)) {
            let Some(secret) = self.keys.secret_of(&hook.key) else {
                // Checked at the start; a service restarted with fewer keys lands here.
                tracing::warn!(webhook = %mask_url(&hook.url), key = %hook.key, "no such API key: webhook not sent");
                continue;
            };
            self.requested.push(
                &self.policy,
                Queued {
                    hook: hook.clone(),
                    secret: secret.clone(),
                    event: event.clone(),
                },
            );
        }
    }
}

/// An event for a request's own webhook, with what signs it.
struct Queued {
    hook: RequestHook,
    secret: Secret,
    event: lk::WebhookEvent,
}

/// The request webhooks' queues, by URL and signing key: each has a task sending its events in
/// order (the events of every egress sending to that URL), made at its first event and ended
/// once it has had nothing to send for [`QUEUE_IDLE`].
#[derive(Clone, Default)]
struct RequestQueues(Arc<Mutex<HashMap<QueueKey, mpsc::Sender<Queued>>>>);

/// A request webhook's URL and the API key that signs its events.
type QueueKey = (String, String);

impl RequestQueues {
    fn push(&self, policy: &Policy, item: Queued) {
        let key = (item.hook.url.clone(), item.hook.key.clone());
        let mut queues = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let tx = queues
            .entry(key.clone())
            .or_insert_with(|| self.spawn(policy, key.clone()));
        // Its task gone with its entry still here (only a panic does that): a new one.
        if tx.is_closed() {
            *tx = self.spawn(policy, key);
        }
        if let Err(e) = tx.try_send(item) {
            let item = e.into_inner();
            tracing::warn!(webhook = %mask_url(&item.hook.url), event = %item.event.event, "webhook queue full: event dropped");
        }
    }

    fn spawn(&self, policy: &Policy, key: QueueKey) -> mpsc::Sender<Queued> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(self.clone().drain(policy.clone(), key, rx));
        tx
    }

    /// Sends one queue's events in order; ends once it was idle for [`QUEUE_IDLE`], removing
    /// its entry under the lock `push` sends under, so no event is left in a queue nobody reads.
    async fn drain(self, policy: Policy, key: QueueKey, mut rx: mpsc::Receiver<Queued>) {
        loop {
            let item = match tokio::time::timeout(QUEUE_IDLE, rx.recv()).await {
                Ok(Some(item)) => item,
                Ok(None) => return,
                Err(_idle) => {
                    let mut queues = self.0.lock().unwrap_or_else(|e| e.into_inner());
                    match rx.try_recv() {
                        Ok(item) => item,
                        Err(_) => {
                            queues.remove(&key);
                            return;
                        }
                    }
                }
            };
            deliver_to_request_hook(policy.clone(), item.hook, item.secret, item.event).await;
        }
    }
}

/// The client webhooks are sent with: with `pin`, every host name resolves to that address
/// only (the one the policy checked).
type HookClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector<Pinned>>,
    Full<Bytes>,
>;

fn client(pin: Option<IpAddr>) -> Result<HookClient, String> {
    let mut http = HttpConnector::new_with_resolver(Pinned(pin));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("cannot load the system's TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// A resolver answering with the pinned address, or the system's answer without one.
#[derive(Clone)]
struct Pinned(Option<IpAddr>);

impl tower_service::Service<Name> for Pinned {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let pin = self.0;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match pin {
                Some(addr) => vec![SocketAddr::new(addr, 0)],
                None => tokio::net::lookup_host((name.as_str(), 0)).await?.collect(),
            };
            Ok(addrs.into_iter())
        })
    }
}

/// Sends one event to a request's own webhook, retried like any; each attempt checks the URL
/// against the policy first and connects to the address it checked.
async fn deliver_to_request_hook(
    policy: Policy,
    hook: RequestHook,
    secret: Secret,
    event: lk::WebhookEvent,
) {
    let Ok(body) = serde_json::to_vec(&event) else {
        return;
    };
    let shown = mask_url(&hook.url);
    let Ok(url) = url::Url::parse(&hook.url) else {
        return;
    };
    retried(&shown, &event.event, || async {
        // A name that does not resolve now may later (retried); a refused address is final.
        let pin = policy
            .check_webhook("webhook", &hook.url)
            .await
            .map_err(|e| match e {
                PolicyError::Unresolvable { .. } => Refusal::Retry(e.to_string()),
                PolicyError::Refused { .. } => Refusal::Final(e.to_string()),
            })?;
        let client = client(pin.map(|p| p.addr)).map_err(Refusal::Final)?;
        post(&client, &url, &body, &hook.key, &secret)
            .await
            .map_err(Refusal::Retry)
    })
    .await;
}

/// Why an attempt failed: worth retrying, or not (the policy refused the URL).
enum Refusal {
    Retry(String),
    Final(String),
}

/// Runs `attempt` until it succeeds, says it is final, or [`GIVE_UP_AFTER`] has passed.
async fn retried<F, Fut>(shown: &str, event: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Refusal>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let since = Instant::now();
    loop {
        match attempt().await {
            Ok(()) => {
                tracing::debug!(webhook = %shown, event = %event, "webhook sent");
                super::metrics::webhook("sent");
                return;
            }
            Err(Refusal::Final(e)) => {
                tracing::warn!(webhook = %shown, event = %event, error = %e, "webhook refused: not sent");
                super::metrics::webhook("refused");
                return;
            }
            Err(Refusal::Retry(e)) if since.elapsed() >= GIVE_UP_AFTER => {
                tracing::warn!(webhook = %shown, event = %event, error = %e, "webhook given up");
                super::metrics::webhook("given_up");
                return;
            }
            Err(Refusal::Retry(e)) => {
                tracing::info!(webhook = %shown, event = %event, error = %e, "webhook failed; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// The signed `Authorization` value for `body`.
pub fn sign(body: &[u8], key: &str, secret: &Secret) -> Result<String, String> {
    let now = super::info::now_ns() / 1_000_000_000;
    let sha256 = base64::engine::general_purpose::STANDARD
        .encode(digest::digest(&digest::SHA256, body).as_ref());
    let claims = serde_json::json!({
        "iss": key, "nbf": now, "exp": now + 300, "sha256": sha256, "video": {},
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| e.to_string())
}

/// Sends one URL's events, in order, each retried until it is taken or given up.
async fn deliver(
    client: HookClient,
    url: url::Url,
    key: String,
    secret: Secret,
    mut events: mpsc::Receiver<lk::WebhookEvent>,
) {
    let shown = mask_url(url.as_str());
    while let Some(event) = events.recv().await {
        let Ok(body) = serde_json::to_vec(&event) else {
            continue;
        };
        retried(&shown, &event.event, || async {
            post(&client, &url, &body, &key, &secret)
                .await
                .map_err(Refusal::Retry)
        })
        .await;
    }
}

async fn post(
    client: &HookClient,
    url: &url::Url,
    body: &[u8],
    key: &str,
    secret: &Secret,
) -> Result<(), String> {
    let token = sign(body, key, secret)?;
    let req = hyper::Request::post(url.as_str())
        .header("content-type", "application/webhook+json")
        .header("authorization", token)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))?
        .map_err(|e| {
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            cause.to_string()
        })?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status()))
    }
}

/// What a queue event (`Q:events`) means for webhooks: the egress and the event to send, if it
/// is an egress's change written by `me`.
pub fn for_event(payload: &str, me: &str) -> Option<(String, &'static str)> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let id = v["id"].as_str().filter(|id| id.starts_with("EG_"))?;
    // A dead worker's job is moved back by another: that one (`by`) tells.
    let writer = v["by"].as_str().or(v["worker"].as_str());
    if writer != Some(me) {
        return None;
    }
    let event = match v["state"].as_str()? {
        "running" | "paused" | "requeued" => "egress_updated",
        "done" | "failed" => "egress_ended",
        _ => return None,
    };
    Some((id.to_owned(), event))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pinned client connects to the address the policy checked, whatever the name: here a
    /// name no DNS answers reaches a listener on loopback; unpinned, the same name fails.
    #[tokio::test]
    async fn a_pinned_client_connects_to_the_checked_address_only() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let url = url::Url::parse(&format!("http://hooks.invalid:{port}/hook")).unwrap();
        let secret = Secret::new("s");
        let pinned = client(Some(IpAddr::from([127, 0, 0, 1]))).unwrap();
        post(&pinned, &url, b"{}", "k", &secret).await.unwrap();
        let unpinned = client(None).unwrap();
        assert!(post(&unpinned, &url, b"{}", "k", &secret).await.is_err());
    }

    /// A request webhook's events arrive in the order they were sent, a failed first delivery
    /// included: the later events wait for its retry.
    #[tokio::test]
    async fn a_request_s_hook_gets_its_events_in_order_though_the_first_is_retried() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (got_tx, mut got) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((mut conn, _)) = listener.accept().await {
                // One request per connection is enough here: the event named in its body.
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                let event = loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req);
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        let v: serde_json::Value = serde_json::from_str(body).unwrap();
                        break Some(v["event"].as_str().unwrap_or_default().to_owned());
                    }
                };
                let answer: &[u8] = if std::mem::take(&mut first) {
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = conn.write_all(answer).await;
                let _ = got_tx.send(event.unwrap_or_default());
            }
        });
        let policy = Policy {
            endpoint_hosts: vec!["127.0.0.1".parse().unwrap()],
            ..Policy::default()
        };
        let queues = RequestQueues::default();
        let hook = RequestHook {
            url: format!("http://127.0.0.1:{port}/hook"),
            key: "k".into(),
            include: Vec::new(),
            exclude: Vec::new(),
        };
        for event in ["egress_started", "egress_updated", "egress_ended"] {
            queues.push(
                &policy,
                Queued {
                    hook: hook.clone(),
                    secret: Secret::new("s"),
                    event: lk::WebhookEvent {
                        event: event.into(),
                        ..Default::default()
                    },
                },
            );
        }
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let next = tokio::time::timeout(Duration::from_secs(10), got.recv())
                .await
                .expect("the next delivery within 10 s")
                .unwrap();
            seen.push(next);
        }
        assert_eq!(
            seen,
            [
                "egress_started",
                "egress_started",
                "egress_updated",
                "egress_ended"
            ]
        );
        // One queue for the URL, while it has work or was busy lately.
        assert_eq!(queues.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_request_s_hook_filters_its_events() {
        let hook = |include: &[&str], exclude: &[&str]| RequestHook {
            url: "https://h.example.com/".into(),
            key: "k".into(),
            include: include.iter().map(|e| e.to_string()).collect(),
            exclude: exclude.iter().map(|e| e.to_string()).collect(),
        };
        assert!(hook(&[], &[]).wants("egress_updated"));
        assert!(!hook(&["egress_ended"], &[]).wants("egress_updated"));
        assert!(hook(&["egress_ended"], &[]).wants("egress_ended"));
        assert!(!hook(&[], &["egress_started"]).wants("egress_started"));
    }

    #[test]
    fn only_the_changes_this_worker_wrote_to_an_egress_become_webhooks() {
        let e = |id: &str, state: &str, worker: &str| {
            serde_json::json!({ "id": id, "state": state, "worker": worker }).to_string()
        };
        assert_eq!(
            for_event(&e("EG_a", "running", "w1"), "w1"),
            Some(("EG_a".into(), "egress_updated"))
        );
        assert_eq!(
            for_event(&e("EG_a", "done", "w1"), "w1"),
            Some(("EG_a".into(), "egress_ended"))
        );
        assert_eq!(for_event(&e("EG_a", "done", "w2"), "w1"), None);
        assert_eq!(for_event(&e("job-1", "done", "w1"), "w1"), None);
        assert_eq!(for_event(&e("EG_a", "queued", ""), ""), None);
        let moved =
            serde_json::json!({ "id": "EG_a", "state": "requeued", "worker": "dead", "by": "w2" });
        assert_eq!(
            for_event(&moved.to_string(), "w2"),
            Some(("EG_a".into(), "egress_updated"))
        );
        assert_eq!(for_event(&moved.to_string(), "dead"), None);
    }
}
