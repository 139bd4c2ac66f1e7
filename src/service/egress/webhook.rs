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

use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use livekit_protocol as lk;
use pagecast_actors::backoff::Backoff;
use pagecast_actors::secret::{mask_url, Secret};
use tokio::sync::mpsc;

/// How long one event is retried before it is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Events waiting per URL before new ones are dropped.
const QUEUE: usize = 1000;
/// One delivery's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhooks' senders (cheap to clone: the channels' ends).
#[derive(Clone)]
pub struct Webhooks {
    senders: Vec<(String, mpsc::Sender<lk::WebhookEvent>)>,
}

impl Webhooks {
    /// Starts one sender task per URL (on the current runtime), signing with `key`/`secret`.
    pub fn start(urls: &[url::Url], key: &str, secret: &Secret) -> Result<Webhooks, String> {
        let client = crate::livekit::client()?;
        let senders = urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(
                    client.clone(),
                    url.clone(),
                    key.to_owned(),
                    secret.clone(),
                    rx,
                ));
                (mask_url(url.as_str()), tx)
            })
            .collect();
        Ok(Webhooks { senders })
    }

    /// Queues `event` (`egress_started`, ...) with `info` for every URL.
    pub fn send(&self, event: &str, info: lk::EgressInfo) {
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
    client: crate::livekit::Client,
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
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let since = Instant::now();
        loop {
            let result = post(&client, &url, &body, &key, &secret).await;
            match result {
                Ok(()) => {
                    tracing::debug!(webhook = %shown, event = %event.event, "webhook sent");
                    break;
                }
                Err(e) if since.elapsed() >= GIVE_UP_AFTER => {
                    tracing::warn!(webhook = %shown, event = %event.event, error = %e, "webhook given up");
                    break;
                }
                Err(e) => {
                    tracing::info!(webhook = %shown, event = %event.event, error = %e, "webhook failed; retrying");
                    backoff.wait().await;
                }
            }
        }
    }
}

async fn post(
    client: &crate::livekit::Client,
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
