//! What one attempt of a job left: its file or object (the names are filled in before the
//! recording starts, see `naming.rs`), the file an S3 upload that gave up was kept in, and how
//! many seconds (and, for a file, bytes) it holds; what its HLS and snapshot directories hold. Written to the job's state as `attempt_<N>`, so a killed attempt's
//! recording is never lost from view when the job runs again.

use std::path::{Path, PathBuf};

use pagecast_actors::events::DIRECTORY_UPLOADED;
use pagecast_actors::join::{probe, Probe};
use serde_json::json;

use crate::naming::AttemptOutput;

/// The job-state field of attempt `n`.
pub fn field(n: u32) -> String {
    format!("attempt_{n}")
}

/// The attempt's output as JSON, measured now that its recording has ended: the file is probed;
/// the kept upload file (`keep_file`, if it is there) too; else the seconds the recording itself
/// logged when it kept something (found in its last stderr lines, `tail`).
pub async fn measured(out: &AttemptOutput, keep_file: Option<PathBuf>, tail: &str) -> String {
    let mut v = serde_json::to_value(out).unwrap_or_default();
    let mut seconds = None;
    if let Some(file) = &out.file {
        seconds = plays(file).await;
        // The size, for the egress API's file results (`egress/info.rs`).
        if let Ok(meta) = tokio::fs::metadata(file).await {
            v["bytes"] = json!(meta.len());
        }
    }
    if let Some(kept) = keep_file.filter(|k| k.exists()) {
        if seconds.is_none() {
            seconds = plays(&kept).await;
        }
        v["kept"] = json!(kept);
    }
    if seconds.is_none() {
        seconds = logged_seconds(tail);
    }
    // The object, as its upload logged it (the egress API's file results): its size, its URL,
    // and whether it is on the backup store.
    if let Some(object) = logged(tail, crate::run::OBJECT_COMPLETE, "object") {
        v["object"] = object;
        if v.get("bytes").is_none() {
            if let Some(bytes) = logged(tail, crate::run::OBJECT_COMPLETE, "bytes") {
                v["bytes"] = bytes;
            }
        }
        if logged(tail, crate::run::OBJECT_COMPLETE, "backup") == Some(json!(true)) {
            v["backup"] = json!(true);
        }
    }
    v["seconds"] = json!(seconds.map(|s| (s * 10.0).round() / 10.0));
    if let Some(dir) = &out.hls {
        v["hls_measured"] = hls(dir).await;
    }
    if let Some(dir) = &out.images {
        v["images_count"] = json!(count(dir, "image-", ".jpg").await.0);
    }
    // Where the directories were copied to, once the copy completed (the egress API's segment
    // and image results name it, not the worker's directory).
    for (key, field) in [
        ("hls_copy", crate::run::HLS_PREFIX_FIELD),
        ("images_copy", crate::run::IMAGES_PREFIX_FIELD),
    ] {
        if let Some(to) = logged_where(tail, DIRECTORY_UPLOADED, field, "to") {
            v[key] = to;
        }
    }
    v.to_string()
}

/// The files in `dir` named `<prefix>…<suffix>`: how many, how many bytes in all.
async fn count(dir: &Path, prefix: &str, suffix: &str) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return (0, 0);
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            n += 1;
            bytes += e.metadata().await.map(|m| m.len()).unwrap_or(0);
        }
    }
    (n, bytes)
}

/// An HLS directory: its segments, their bytes, and the seconds its playlist lists.
async fn hls(dir: &Path) -> serde_json::Value {
    let (segments, bytes) = count(dir, "segment-", ".ts").await;
    let playlist = tokio::fs::read_to_string(dir.join(pagecast_actors::encoder::HLS_PLAYLIST))
        .await
        .unwrap_or_default();
    json!({ "segments": segments, "bytes": bytes, "seconds": playlist_seconds(&playlist) })
}

/// The seconds of the segments a playlist lists (`#EXTINF:<seconds>,`).
fn playlist_seconds(playlist: &str) -> f64 {
    let total: f64 = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.split(',').next()?.trim().parse::<f64>().ok())
        .sum();
    (total * 1000.0).round() / 1000.0
}

/// The attempt's names alone (its recording could not be measured).
pub fn unmeasured(out: &AttemptOutput) -> String {
    serde_json::to_value(out).unwrap_or_default().to_string()
}

async fn plays(file: &Path) -> Option<f64> {
    match probe(file).await {
        Probe::Plays(s) => Some(s),
        Probe::NoFrame => Some(0.0),
        Probe::Unknown(_) => None,
    }
}

/// The `seconds` of the recording's last "recording kept" log line (JSON lines joined by " | ").
fn logged_seconds(tail: &str) -> Option<f64> {
    logged(tail, crate::run::RECORDING_KEPT, "seconds")?.as_f64()
}

/// `field` of the last log line whose message is `message`.
fn logged(tail: &str, message: &str, field: &str) -> Option<serde_json::Value> {
    last_line(tail, message, |_| true)?.get(field).cloned()
}

/// `field` of the last `message` line of the copy of the config field `of` (a directory's
/// `DIRECTORY_UPLOADED`: the HLS copy and the snapshots' both log it).
fn logged_where(tail: &str, message: &str, of: &str, field: &str) -> Option<serde_json::Value> {
    last_line(tail, message, |v| v["field"] == of)?
        .get(field)
        .cloned()
}

/// The last log line whose message is `message` and that `also` accepts.
fn last_line(
    tail: &str,
    message: &str,
    also: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    tail.rsplit(" | ").find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        (v["message"] == message && also(&v)).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_playlist_s_seconds_are_the_sum_of_its_segments() {
        let playlist = "#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:4.000000,\nsegment-00000.ts\n\
                        #EXT-X-DISCONTINUITY\n#EXTINF:2.5,\nsegment-00001.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(playlist_seconds(playlist), 6.5);
        assert_eq!(playlist_seconds(""), 0.0);
    }

    #[test]
    fn the_seconds_a_recording_logged_are_found() {
        let tail = r#"{"level":"INFO","message":"object complete"} | {"level":"INFO","kept":"s3://b/k","seconds":12.5,"message":"recording kept"} | "#;
        assert_eq!(logged_seconds(tail), Some(12.5));
        assert_eq!(logged_seconds("pagecast: bad"), None);
        let tail = r#"{"level":"INFO","bytes":123456,"message":"object complete"} | "#;
        assert_eq!(
            logged(tail, crate::run::OBJECT_COMPLETE, "bytes"),
            Some(json!(123456))
        );
    }

    #[actix_rt::test]
    async fn an_object_on_the_backup_store_is_named_as_such() {
        let out = AttemptOutput {
            attempt: 1,
            ..AttemptOutput::default()
        };
        let tail = r#"{"level":"INFO","bytes":2048,"object":"azure://a/c/k.mp4","backup":true,"message":"object complete"} | {"level":"INFO","seconds":4.0,"message":"recording kept"}"#;
        let v: serde_json::Value = serde_json::from_str(&measured(&out, None, tail).await).unwrap();
        assert_eq!(v["object"], "azure://a/c/k.mp4");
        assert_eq!(
            (v["bytes"].as_u64(), v["backup"].as_bool()),
            (Some(2048), Some(true))
        );
        let tail = tail.replace(r#""backup":true"#, r#""backup":false"#);
        let v: serde_json::Value =
            serde_json::from_str(&measured(&out, None, &tail).await).unwrap();
        assert!(v.get("backup").is_none(), "{v}");
    }

    #[actix_rt::test]
    async fn each_directory_copy_is_named_by_its_own_event() {
        let out = AttemptOutput {
            attempt: 1,
            hls: Some("/nowhere/h".into()),
            images: Some("/nowhere/i".into()),
            ..AttemptOutput::default()
        };
        let tail = r#"{"field":"output.hls.prefix","objects":3,"to":"s3://b/rec/hls/","message":"directory uploaded"} | {"field":"output.images.prefix","objects":2,"to":"s3://b/rec/img/","message":"directory uploaded"} | {"seconds":4.0,"message":"recording kept"}"#;
        let v: serde_json::Value = serde_json::from_str(&measured(&out, None, tail).await).unwrap();
        assert_eq!(
            (v["hls_copy"].as_str(), v["images_copy"].as_str()),
            (Some("s3://b/rec/hls/"), Some("s3://b/rec/img/"))
        );
        // A copy that did not complete logged no such event: nothing is named.
        let tail = r#"{"seconds":4.0,"message":"recording kept"}"#;
        let v: serde_json::Value = serde_json::from_str(&measured(&out, None, tail).await).unwrap();
        assert!(
            v.get("hls_copy").is_none() && v.get("images_copy").is_none(),
            "{v}"
        );
    }
}
