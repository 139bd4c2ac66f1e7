//! The control follower: `Q:control` on a connection of its own (a subscribed connection can do
//! nothing else), reconnecting with the store's backoff; a ping every 5 s finds a connection
//! that died silently. Each request (stop, pause, resume, discard, update_stream) is handed to `on_request`; anything
//! else is logged and ignored.

use std::time::Duration;

use futures_util::StreamExt;

use super::store::reconnect_backoff;
use super::{parse_control, ControlRequest};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PING_EVERY: Duration = Duration::from_secs(5);

/// Follows `channel` until the future is dropped.
pub(super) async fn follow(
    client: redis::Client,
    channel: String,
    on_request: impl Fn(ControlRequest),
) {
    let name = channel.clone();
    follow_messages(client, channel, move |payload| match parse_control(&payload) {
        Some(request) => on_request(request),
        None => tracing::warn!(
            channel = %name,
            "ignored a control message that is not {{\"stop\"|\"pause\"|\"resume\"|\"discard\": \"<id>\"}} or an update_stream"
        ),
    })
    .await
}

/// Follows `channel` until the future is dropped, handing every message to `on_message` (also
/// used for `Q:events` by the egress API's webhooks).
pub(super) async fn follow_messages(
    client: redis::Client,
    channel: String,
    on_message: impl Fn(String),
) {
    let mut backoff = reconnect_backoff();
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
                tracing::debug!(channel = %channel, "following the channel");
                let since = tokio::time::Instant::now();
                let mut ping = tokio::time::interval_at(since + PING_EVERY, PING_EVERY);
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            let payload: String = msg.get_payload().unwrap_or_default();
                            on_message(payload);
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
                tracing::debug!(channel = %channel, "subscription lost; reconnecting");
                if since.elapsed() > PING_EVERY {
                    backoff.reset();
                }
            }
            Err(e) => tracing::debug!(channel = %channel, error = %e, "cannot subscribe yet"),
        }
        backoff.wait().await;
    }
}
