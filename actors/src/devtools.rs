//! Chromium's DevTools endpoint, as the browser actor uses it beside WebDriver: its JSON lists,
//! one command on a socket, and the page-target commands that work while chromedriver waits for a
//! navigation (which holds every WebDriver command until the page's document is parsed).
//!
//! The endpoint (`debugger`, host:port) is on loopback: chromedriver opened it for its Chromium.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A WebSocket to the endpoint (a page target, or the browser's).
pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the endpoint may take to answer a list or a command.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`first_paint`] asks the page whether it has shown anything yet.
const PAINT_POLL: Duration = Duration::from_millis(250);

/// True in a document that has painted (its first paint: anything other than the blank it
/// replaced, its background colour included; a page's first text or image comes later, as its
/// first contentful paint) and is the page asked for: not the blank page a browser starts on, not
/// Chromium's error page (a name that does not resolve, an untrusted certificate), not a server's
/// error page (HTTP 400 and above; 0 where there is no status, a `file:` page).
const PAINTED: &str = "location.href !== 'about:blank' \
    && location.protocol !== 'chrome-error:' \
    && performance.getEntriesByType('paint').length > 0 \
    && ((performance.getEntriesByType('navigation')[0] || {}).responseStatus || 0) < 400";

/// Stops every tab's load (CDP `Page.stopLoading` on each page target of `debugger`): what has
/// arrived is shown and the document completes.
pub(crate) async fn stop_loading(debugger: &str) -> Result<(), String> {
    for ws_url in page_targets(debugger).await? {
        let stop = json!({ "id": 1, "method": "Page.stopLoading", "params": {} });
        on_page(&ws_url, stop, "Page.stopLoading").await?;
    }
    Ok(())
}

/// Returns once a page of `debugger` has shown the content of the page asked for (see
/// [`PAINTED`]), which may be long before its document is parsed: a page whose parser waits for a
/// slow script shows what came before the script. Asks every [`PAINT_POLL`] through DevTools,
/// which answers while WebDriver waits for the navigation; an unanswered question is asked again.
pub(crate) async fn first_paint(debugger: &str) {
    loop {
        if painted(debugger).await.unwrap_or(false) {
            return;
        }
        tokio::time::sleep(PAINT_POLL).await;
    }
}

/// Whether a page target of `debugger` has painted (one look: see [`first_paint`]).
async fn painted(debugger: &str) -> Result<bool, String> {
    for ws_url in page_targets(debugger).await? {
        let evaluate = json!({ "id": 1, "method": "Runtime.evaluate",
                               "params": { "expression": PAINTED, "returnByValue": true } });
        let answer = on_page(&ws_url, evaluate, "Runtime.evaluate").await?;
        if answer.pointer("/result/result/value") == Some(&Value::Bool(true)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Sends one CDP command to the page target at `ws_url` on a socket of its own, and returns its
/// answer (see [`command`]).
async fn on_page(ws_url: &str, cdp: Value, what: &str) -> Result<Value, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .map_err(|e| e.to_string())?;
    let answer = command(&mut ws, cdp, what).await;
    let _ = ws.close(None).await;
    answer
}

/// The WebSocket addresses of `debugger`'s page targets (its tabs).
async fn page_targets(debugger: &str) -> Result<Vec<String>, String> {
    let targets = devtools_json(debugger, "/json/list").await?;
    Ok(targets
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("page"))
        .filter_map(|t| t.get("webSocketDebuggerUrl").and_then(Value::as_str))
        .map(str::to_owned)
        .collect())
}

/// GETs `path` of the DevTools endpoint `debugger` (loopback) as JSON.
pub(crate) async fn devtools_json(debugger: &str, path: &str) -> Result<Value, String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = format!("http://{debugger}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        let response = client.get(uri).await.map_err(|e| e.to_string())?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice::<Value>(&body.to_bytes()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| format!("no answer from {path}"))?
}

/// Sends one command (BiDi or CDP: both answer with the command's `id`) and waits for its answer,
/// which it returns. An error says what failed (`what`) and the error the browser gave, never the
/// command (it may hold a cookie's value).
pub(crate) async fn command(ws: &mut Socket, command: Value, what: &str) -> Result<Value, String> {
    let id = command.get("id").cloned().unwrap_or_default();
    ws.send(WsMessage::text(command.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let msg = tokio::time::timeout(ANSWER_TIMEOUT, ws.next())
            .await
            .map_err(|_| format!("no answer to {what}"))?
            .ok_or("socket closed")?
            .map_err(|e| e.to_string())?;
        let WsMessage::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if v.get("id") != Some(&id) {
            continue;
        }
        // BiDi: "type": "success" | "error"; CDP: "result" | "error": { "message" }.
        let failed = v.get("type").and_then(Value::as_str) == Some("error")
            || v.get("error").is_some_and(|e| !e.is_null());
        if !failed {
            return Ok(v);
        }
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        let error = v.get("error");
        let detail = match error {
            Some(Value::Object(e)) => text(e.get("message")),
            other => format!("{} {}", text(other), text(v.get("message"))),
        };
        let detail = detail.trim();
        return Err(format!(
            "{what} failed: {}",
            detail.lines().next().unwrap_or(detail)
        ));
    }
}
