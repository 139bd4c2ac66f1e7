//! The recordings' own series for `GET /metrics` (rendered by `egress/metrics.rs`), counted by
//! the runner of the worker that runs them: starts, ends by outcome, and what their log lines
//! say (restarts by part, frames dropped, bytes uploaded). Each label comes from a fixed list,
//! so a recording cannot grow them without bound. Without `--http` nothing records them (the
//! `metrics` crate's calls are then no-ops).
//!
//! - `pagecast_recordings_started_total`
//! - `pagecast_recordings_ended_total{outcome}`: `done`, `failed`, `refused` (bad config or the
//!   policy), `missing_program`, `input`, `output`, `discarded`, `interrupted`, `killed`;
//! - `pagecast_restarts_total{part}`: restarts of a part of a recording's tree (`display`,
//!   `audio`, `browser`, `encoder`, `relay`, `fan-out`, `media`, `live`, `other`);
//! - `pagecast_dropped_frames_total`: frames the encoders dropped (each encoder run that
//!   finished its part);
//! - `pagecast_uploaded_bytes_total`: bytes of the S3 objects the recordings completed;
//! - `pagecast_encoder_tail_lost_milliseconds_total`: the ends of recordings never encoded (an
//!   encoder further behind the page at its stop than a stop waits for);
//! - `pagecast_recordings_over_limit_total{limit}`: recordings stopped for passing a limit of
//!   the policy (`memory`, `storage`: see `limits.rs`).
//! - `pagecast_recordings_put_last_total`: recordings that used more than their share of the CPU
//!   and had their browser set to the lowest priority (`cpu_share.rs`).

use crate::limits::Limit;
use pagecast_actors::events;

const PARTS: &[&str] = &[
    "display", "audio", "browser", "encoder", "relay", "fan-out", "media", "live",
];
const OUTCOMES: &[&str] = &[
    "done",
    "failed",
    "refused",
    "missing_program",
    "input",
    "output",
    "discarded",
    "interrupted",
    "killed",
];

/// Registers every series at zero, so a scrape shows them before anything happened.
pub fn register() {
    metrics::counter!("pagecast_recordings_started_total").absolute(0);
    for outcome in OUTCOMES {
        metrics::counter!("pagecast_recordings_ended_total", "outcome" => *outcome).increment(0);
    }
    for part in PARTS.iter().chain(&["other"]) {
        metrics::counter!("pagecast_restarts_total", "part" => *part).increment(0);
    }
    metrics::counter!("pagecast_dropped_frames_total").increment(0);
    metrics::counter!("pagecast_uploaded_bytes_total").increment(0);
    metrics::counter!("pagecast_encoder_tail_lost_milliseconds_total").increment(0);
    for limit in Limit::ALL {
        metrics::counter!("pagecast_recordings_over_limit_total", "limit" => limit.name())
            .increment(0);
    }
    metrics::counter!("pagecast_recordings_put_last_total").increment(0);
}

pub fn started() {
    metrics::counter!("pagecast_recordings_started_total").increment(1);
}

/// A recording used more than its share of the CPU and was put last.
pub fn put_last() {
    metrics::counter!("pagecast_recordings_put_last_total").increment(1);
}

/// A recording ended with exit code `code` (None: killed by a signal).
pub fn ended(code: Option<i32>) {
    let outcome = match code {
        Some(0) => "done",
        Some(2) => "refused",
        Some(3) => "missing_program",
        Some(4) => "input",
        Some(5) => "output",
        Some(6) => "discarded",
        Some(130) => "interrupted",
        Some(_) => "failed",
        None => "killed",
    };
    metrics::counter!("pagecast_recordings_ended_total", "outcome" => outcome).increment(1);
}

/// One of a recording's JSON log lines.
pub fn observe(line: &str) {
    // Cheap first: most lines are none of these.
    let wanted = [
        events::RESTARTING,
        events::ENCODER_FINISHED,
        events::ENCODER_TAIL_LOST,
        crate::run::OBJECT_COMPLETE,
        crate::limits::OVER_LIMIT,
    ];
    if !wanted.iter().any(|m| line.contains(m)) {
        return;
    }
    let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
        return;
    };
    let message = event["message"].as_str().unwrap_or_default();
    if message == events::RESTARTING {
        let child = event["child"].as_str().unwrap_or_default();
        let name = child.split(' ').next().unwrap_or_default();
        let part = PARTS.iter().find(|p| **p == name).unwrap_or(&"other");
        metrics::counter!("pagecast_restarts_total", "part" => *part).increment(1);
    } else if message == events::ENCODER_FINISHED {
        let dropped = event["dropped"].as_u64().unwrap_or(0);
        metrics::counter!("pagecast_dropped_frames_total").increment(dropped);
    } else if message == events::ENCODER_TAIL_LOST {
        let lost = event["lost_ms"].as_u64().unwrap_or(0);
        metrics::counter!("pagecast_encoder_tail_lost_milliseconds_total").increment(lost);
    } else if message == crate::limits::OVER_LIMIT {
        let limit = event["limit"].as_str().unwrap_or_default();
        if let Some(limit) = Limit::ALL.into_iter().find(|l| l.name() == limit) {
            metrics::counter!("pagecast_recordings_over_limit_total", "limit" => limit.name())
                .increment(1);
        }
    } else if message == crate::run::OBJECT_COMPLETE {
        let bytes = event["bytes"].as_u64().unwrap_or(0);
        metrics::counter!("pagecast_uploaded_bytes_total").increment(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// Each limit's line, as `limits::watch` logs it, counts under its own label; another
    /// label counts nothing.
    #[test]
    fn a_recording_over_a_limit_is_counted_under_that_limit() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for (limit, times) in [(Limit::Memory, 2), (Limit::Storage, 1)] {
                for _ in 0..times {
                    observe(
                        &serde_json::json!({
                            "level": "WARN",
                            "message": crate::limits::OVER_LIMIT,
                            "limit": limit.name(),
                            "used": 2,
                            "allowed": 1,
                        })
                        .to_string(),
                    );
                }
            }
            observe(
                &serde_json::json!({ "message": crate::limits::OVER_LIMIT, "limit": "cpu" })
                    .to_string(),
            );
        });
        let text = handle.render();
        assert!(
            text.contains(r#"pagecast_recordings_over_limit_total{limit="memory"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"pagecast_recordings_over_limit_total{limit="storage"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"limit="cpu""#), "{text}");
    }
}
