//! `GET /metrics`, in Prometheus' text format (the `metrics` crate and its Prometheus
//! exporter): the API's own counters, kept as requests are answered, and what Redis holds,
//! read at each scrape so that every worker shows the whole queue.
//!
//! - `pagecast_api_requests_total{method, code}`: calls by method and answer (`ok` or the Twirp
//!   code);
//! - `pagecast_egress_started_total`: egresses this worker's API submitted;
//! - `pagecast_webhooks_total{outcome}`: webhook events this worker delivered (`sent`), gave up
//!   after a minute of retries (`given_up`) or did not send because the policy refused the URL
//!   (`refused`), `--webhook`'s and requests' own alike;
//! - `pagecast_queue_length`: jobs waiting in the queue;
//! - `pagecast_egresses{status}`: egresses by status (LiveKit's names);
//! - this worker's capacity as admission last counted it (`capacity.rs`, what `/healthz` shows):
//!   `pagecast_capacity_recordings`, `_max_recordings`, `_cores_used`, `_cores_left`,
//!   `_memory_used_bytes`, `_memory_left_bytes`, `_overloaded` (1 while a recording falls
//!   behind), `_starting` (recordings with no frame yet), and `pagecast_cost_factor` (what the
//!   model's cores are scaled by here);
//! - the recordings this worker ran (`recording_metrics.rs`): started, ended by outcome,
//!   restarts by part, frames dropped, bytes uploaded.

use std::sync::OnceLock;

use livekit_protocol as lk;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process's recorder, installed on first use (a restarted API keeps its counters).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Only this module installs one; a test binary running two services shares it.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Makes sure the recorder is there before the first request counts.
pub fn install() {
    handle();
    super::super::recording_metrics::register();
}

/// The methods of `livekit.Egress`: any other path is counted as `other`, so a caller cannot
/// grow the labels without bound.
const METHODS: &[&str] = &[
    "StartRoomCompositeEgress",
    "StartWebEgress",
    "StartParticipantEgress",
    "StartTrackCompositeEgress",
    "StartTrackEgress",
    "UpdateLayout",
    "UpdateStream",
    "ListEgress",
    "StopEgress",
];

pub fn request(method: &str, code: &'static str) {
    let method = METHODS.iter().find(|m| **m == method).unwrap_or(&"other");
    metrics::counter!(
        "pagecast_api_requests_total",
        "method" => *method,
        "code" => code
    )
    .increment(1);
}

pub fn egress_started() {
    metrics::counter!("pagecast_egress_started_total").increment(1);
}

/// One webhook event's delivery ended: `sent`, `given_up` or `refused`.
pub fn webhook(outcome: &'static str) {
    metrics::counter!("pagecast_webhooks_total", "outcome" => outcome).increment(1);
}

/// The text of a scrape: the state read from Redis now and this worker's last capacity count,
/// then the counters.
pub fn render(
    queue_length: u64,
    egresses: &[lk::EgressInfo],
    capacity: Option<crate::service::capacity::Report>,
) -> String {
    metrics::gauge!("pagecast_queue_length").set(queue_length as f64);
    if let Some(c) = capacity {
        metrics::gauge!("pagecast_capacity_recordings").set(c.recordings as f64);
        metrics::gauge!("pagecast_capacity_max_recordings").set(c.max_recordings as f64);
        metrics::gauge!("pagecast_capacity_cores_used").set(c.cores_used);
        metrics::gauge!("pagecast_capacity_cores_left").set(c.cores_left);
        metrics::gauge!("pagecast_capacity_memory_used_bytes").set(c.memory_used as f64);
        metrics::gauge!("pagecast_capacity_memory_left_bytes").set(c.memory_left as f64);
        metrics::gauge!("pagecast_capacity_overloaded").set(f64::from(u8::from(c.overloaded)));
        metrics::gauge!("pagecast_capacity_starting").set(c.starting as f64);
        metrics::gauge!("pagecast_cost_factor").set(c.cost_factor);
    }
    use lk::EgressStatus as S;
    for status in [
        S::EgressStarting,
        S::EgressActive,
        S::EgressEnding,
        S::EgressComplete,
        S::EgressFailed,
        S::EgressAborted,
        S::EgressLimitReached,
    ] {
        let n = egresses
            .iter()
            .filter(|e| e.status == status as i32)
            .count();
        metrics::gauge!("pagecast_egresses", "status" => status.as_str_name()).set(n as f64);
    }
    handle().render()
}
