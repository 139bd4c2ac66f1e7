//! The state of every egress, in Redis so that any worker's API answers for any job: the
//! egress's own record `{Q}:egress:<id>` (its `EgressInfo` as it was started: source, room, the
//! request with its secrets dropped, the masked stream URLs; protobuf JSON) in the set
//! `{Q}:egresses` (scored by its start in ms), and the job's hash the queue keeps (`mod.rs`:
//! state, attempts, times, exit code, message, what each attempt left). An `EgressInfo` is put
//! together from both when asked for, so it is never behind the job: a worker's death, a retry
//! or an end shows at once. A record whose job hash has expired (the retention) is gone.

use std::collections::HashMap;

use livekit_protocol as lk;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::super::Keys;

/// The egress records of one queue.
#[derive(Clone)]
pub struct Records {
    con: ConnectionManager,
    keys: Keys,
}

pub(in crate::service) fn record_key(keys: &Keys, id: &str) -> String {
    format!("{}:egress:{id}", keys.tag())
}

/// What an egress keeps sealed with the job key beside its record (`sealed_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// Its stream URLs as given (with their keys): what `UpdateStream` matches a URL to remove
    /// against (the record holds only masked URLs, and two keys on one server mask alike).
    Streams,
    /// Its request's own webhooks (URLs from the caller, which may carry tokens).
    Webhooks,
}

impl Sealed {
    pub const ALL: [Sealed; 2] = [Sealed::Streams, Sealed::Webhooks];

    pub fn name(self) -> &'static str {
        match self {
            Sealed::Streams => "streams",
            Sealed::Webhooks => "webhooks",
        }
    }
}

pub(in crate::service) fn sealed_key(keys: &Keys, id: &str, what: Sealed) -> String {
    format!("{}:egress:{id}:{}", keys.tag(), what.name())
}

pub(in crate::service) fn index_key(keys: &Keys) -> String {
    format!("{}:egresses", keys.tag())
}

/// Now in nanoseconds since the epoch (what `EgressInfo` times are in).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A new egress id: `EG_` and 12 random letters and digits (LiveKit's form).
pub fn new_id() -> String {
    use aws_lc_rs::rand::SecureRandom;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 12];
    // The system's random source cannot fail on Linux; the time is a fallback that stays unique.
    if aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .is_err()
    {
        bytes.copy_from_slice(&now_ns().to_le_bytes().repeat(2)[..12]);
    }
    let tail: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("EG_{tail}")
}

impl Records {
    pub fn new(con: ConnectionManager, keys: Keys) -> Self {
        Self { con, keys }
    }

    /// Writes a new egress's record (before its job is submitted, so the job is never seen
    /// without it).
    pub async fn create(&mut self, info: &lk::EgressInfo) -> Result<(), String> {
        let json = serde_json::to_string(info).map_err(|e| e.to_string())?;
        let ms = info.started_at.max(info.updated_at) / 1_000_000;
        redis::pipe()
            .set(record_key(&self.keys, &info.egress_id), json)
            .ignore()
            .zadd(index_key(&self.keys), &info.egress_id, ms)
            .ignore()
            .query_async::<()>(&mut self.con)
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes an egress's record anew (its stream outputs changed), keeping its place in the
    /// index.
    pub async fn update(&mut self, info: &lk::EgressInfo) -> Result<(), String> {
        let json = serde_json::to_string(info).map_err(|e| e.to_string())?;
        self.con
            .set::<_, _, ()>(record_key(&self.keys, &info.egress_id), json)
            .await
            .map_err(|e| e.to_string())
    }

    /// The record as stored (what [`Records::get`] brings up to date), or None.
    pub async fn record(&mut self, id: &str) -> Result<Option<lk::EgressInfo>, String> {
        let record: Option<String> = self
            .con
            .get(record_key(&self.keys, id))
            .await
            .map_err(|e| e.to_string())?;
        record
            .map(|r| serde_json::from_str(&r).map_err(|e| format!("egress {id}'s record: {e}")))
            .transpose()
    }

    /// Stores the egress's stream URLs or its webhooks, sealed (see [`Sealed`]).
    pub async fn set_sealed(&mut self, id: &str, what: Sealed, sealed: &str) -> Result<(), String> {
        self.con
            .set::<_, _, ()>(sealed_key(&self.keys, id, what), sealed)
            .await
            .map_err(|e| e.to_string())
    }

    /// The egress's sealed stream URLs or webhooks, if it has any.
    pub async fn sealed(&mut self, id: &str, what: Sealed) -> Result<Option<String>, String> {
        self.con
            .get(sealed_key(&self.keys, id, what))
            .await
            .map_err(|e| e.to_string())
    }

    /// Removes a record whose job could not be submitted.
    pub async fn remove(&mut self, id: &str) -> Result<(), String> {
        redis::pipe()
            .del(record_key(&self.keys, id))
            .ignore()
            .del(
                Sealed::ALL
                    .map(|what| sealed_key(&self.keys, id, what))
                    .to_vec(),
            )
            .ignore()
            .zrem(index_key(&self.keys), id)
            .ignore()
            .query_async::<()>(&mut self.con)
            .await
            .map_err(|e| e.to_string())
    }

    /// The egress as it stands, or None if there is no such egress (any more).
    pub async fn get(&mut self, id: &str) -> Result<Option<lk::EgressInfo>, String> {
        let (record, job): (Option<String>, HashMap<String, String>) = redis::pipe()
            .get(record_key(&self.keys, id))
            .hgetall(self.keys.job(id))
            .query_async(&mut self.con)
            .await
            .map_err(|e| e.to_string())?;
        let Some(record) = record else {
            return Ok(None);
        };
        if job.is_empty() {
            // The job's hash expired after the retention: the egress goes with it.
            self.remove(id).await?;
            return Ok(None);
        }
        let base: lk::EgressInfo =
            serde_json::from_str(&record).map_err(|e| format!("egress {id}'s record: {e}"))?;
        Ok(Some(assemble(base, &job)))
    }

    /// Every egress, newest first, that matches the filters (empty: any).
    pub async fn list(
        &mut self,
        room: &str,
        id: &str,
        active_only: bool,
    ) -> Result<Vec<lk::EgressInfo>, String> {
        let ids: Vec<String> = if id.is_empty() {
            self.con
                .zrevrange(index_key(&self.keys), 0, -1)
                .await
                .map_err(|e| e.to_string())?
        } else {
            vec![id.to_owned()]
        };
        let mut items = Vec::new();
        for id in ids {
            let Some(info) = self.get(&id).await? else {
                continue;
            };
            if !room.is_empty() && info.room_name != room {
                continue;
            }
            if active_only && !is_active(&info) {
                continue;
            }
            items.push(info);
        }
        Ok(items)
    }
}

/// STARTING, ACTIVE or ENDING.
pub fn is_active(info: &lk::EgressInfo) -> bool {
    use lk::EgressStatus as S;
    matches!(
        S::try_from(info.status),
        Ok(S::EgressStarting | S::EgressActive | S::EgressEnding)
    )
}

fn secs_to_ns(field: Option<&String>) -> i64 {
    field
        .and_then(|s| s.parse::<i64>().ok())
        .map(|s| s * 1_000_000_000)
        .unwrap_or(0)
}

/// The egress's record brought up to date with its job's hash.
pub fn assemble(mut info: lk::EgressInfo, job: &HashMap<String, String>) -> lk::EgressInfo {
    use lk::EgressStatus as S;
    let state = job
        .get("state")
        .map(String::as_str)
        .and_then(super::super::JobState::parse);
    let stopping = job.get("stop").map(String::as_str) == Some("1");
    use super::super::JobState as J;
    let status = match state {
        None | Some(J::Queued) | Some(J::Requeued) if stopping => S::EgressEnding,
        None | Some(J::Queued) | Some(J::Requeued) => S::EgressStarting,
        // Paused is still active for LiveKit's API (it has no paused status).
        Some(J::Running) | Some(J::Paused) if stopping => S::EgressEnding,
        Some(J::Running) | Some(J::Paused) => S::EgressActive,
        Some(J::Done) => S::EgressComplete,
        // A discarded recording (exit 6) was aborted on purpose.
        Some(J::Failed) if job.get("exit_code").map(String::as_str) == Some("6") => {
            S::EgressAborted
        }
        Some(J::Failed) => S::EgressFailed,
    };
    info.status = status as i32;
    let started = secs_to_ns(job.get("started_at"));
    if started > 0 {
        info.started_at = started;
    }
    let final_ = matches!(
        status,
        S::EgressComplete | S::EgressFailed | S::EgressAborted
    );
    if final_ {
        info.ended_at = secs_to_ns(job.get("ended_at"));
    }
    info.updated_at = info.updated_at.max(info.started_at).max(info.ended_at);
    let attempts: i32 = job
        .get("attempts")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    info.retry_count = (attempts - 1).max(0);
    if status == S::EgressFailed {
        info.error = job.get("message").cloned().unwrap_or_default();
        info.error_code = job
            .get("exit_code")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
    }
    // What each attempt left, in order.
    let mut outputs: Vec<(u32, serde_json::Value)> = job
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix("attempt_")?.parse().ok()?;
            Some((n, serde_json::from_str(v).ok()?))
        })
        .collect();
    outputs.sort_by_key(|(n, _)| *n);
    info.file_results = outputs
        .iter()
        .filter_map(|(_, o)| file_info(o, info.started_at, info.ended_at))
        .collect();
    // The upload to the request's store gave up and the backup store holds the recording.
    info.backup_storage_used = outputs.iter().any(|(_, o)| o["backup"] == true);
    for s in &mut info.stream_results {
        // Removed while recording (UpdateStream): ended then, whatever came after.
        if s.ended_at != 0 && s.status == lk::stream_info::Status::Finished as i32 {
            continue;
        }
        s.status = match status {
            S::EgressStarting | S::EgressActive | S::EgressEnding => {
                lk::stream_info::Status::Active as i32
            }
            S::EgressComplete => lk::stream_info::Status::Finished as i32,
            _ => lk::stream_info::Status::Failed as i32,
        };
        if s.started_at == 0 {
            s.started_at = info.started_at;
        }
        if final_ {
            s.ended_at = info.ended_at;
            s.duration = (s.ended_at - s.started_at).max(0);
        }
    }
    // The HLS and snapshot directories, as the last attempt that wrote them left them (they are
    // shared by the attempts).
    let last = |key: &str| {
        outputs
            .iter()
            .rev()
            .find_map(|(_, o)| o.get(key).map(|_| o))
    };
    let live_playlist = super::request::live_playlist_name(&info);
    info.segment_results = last("hls")
        .map(|o| segments_info(o, &live_playlist, info.started_at, info.ended_at))
        .into_iter()
        .collect();
    info.image_results = last("images")
        .map(|o| lk::ImagesInfo {
            filename_prefix: format!("{}image-", where_(o, "images", "images_copy")),
            image_count: o["images_count"].as_i64().unwrap_or(0),
            started_at: info.started_at,
            ended_at: info.ended_at,
        })
        .into_iter()
        .collect();
    // What no peer reports: the seconds each attempt recorded, and where its file is.
    info.details = serde_json::json!({
        "attempts": outputs.iter().map(|(_, o)| o).collect::<Vec<_>>(),
    })
    .to_string();
    info
}

/// Where an attempt's directory `dir` (`hls`, `images`) is, as a prefix its file names follow:
/// the objects it was copied to (`copy`, once the copy completed), else the worker's directory.
fn where_(o: &serde_json::Value, dir: &str, copy: &str) -> String {
    match o[copy].as_str() {
        // The copy's URL is its prefix, as its objects are named (`dir_upload.rs`).
        Some(to) => to.to_owned(),
        None => format!("{}/", o[dir].as_str().unwrap_or_default()),
    }
}

/// An attempt's HLS directory as a segments result; `live_playlist`: the sliding playlist's
/// name, if the request asked for one.
fn segments_info(
    o: &serde_json::Value,
    live_playlist: &str,
    started: i64,
    ended: i64,
) -> lk::SegmentsInfo {
    let at = where_(o, "hls", "hls_copy");
    let m = &o["hls_measured"];
    let playlist = pagecast_actors::encoder::HLS_PLAYLIST;
    let (live_playlist_name, live_playlist_location) = if live_playlist.is_empty() {
        Default::default()
    } else {
        (live_playlist.to_owned(), format!("{at}{live_playlist}"))
    };
    lk::SegmentsInfo {
        playlist_name: playlist.to_owned(),
        playlist_location: format!("{at}{playlist}"),
        live_playlist_name,
        live_playlist_location,
        duration: m["seconds"].as_f64().map(|s| (s * 1e9) as i64).unwrap_or(0),
        size: m["bytes"].as_i64().unwrap_or(0),
        segment_count: m["segments"].as_i64().unwrap_or(0),
        started_at: started,
        ended_at: ended,
    }
}

/// One attempt's output as a file result: a local file, or the object (the one its upload
/// completed, on the backup store if it came to that; else the S3 object it was named).
fn file_info(o: &serde_json::Value, started: i64, ended: i64) -> Option<lk::FileInfo> {
    let seconds = o["seconds"].as_f64();
    let object = o["object"].as_str().or(o["s3"].as_str());
    let (filename, location) = match (o["file"].as_str(), object) {
        (_, Some(object)) => (
            object
                .split_once("://")
                .and_then(|(_, r)| r.split_once('/'))
                .map(|(_, key)| key.to_owned())
                .unwrap_or_else(|| object.to_owned()),
            object.to_owned(),
        ),
        (Some(file), None) => (file.to_owned(), file.to_owned()),
        (None, None) => return None,
    };
    Some(lk::FileInfo {
        filename,
        location,
        started_at: started,
        ended_at: ended,
        duration: seconds.map(|s| (s * 1e9) as i64).unwrap_or(0),
        size: o["bytes"].as_i64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(fields: &[(&str, &str)]) -> HashMap<String, String> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_egress_s_status_follows_its_job() {
        use lk::EgressStatus as S;
        let base = lk::EgressInfo {
            egress_id: "EG_x".into(),
            ..Default::default()
        };
        let status = |fields: &[(&str, &str)]| {
            S::try_from(assemble(base.clone(), &job(fields)).status).unwrap()
        };
        assert_eq!(status(&[("state", "queued")]), S::EgressStarting);
        assert_eq!(status(&[("state", "running")]), S::EgressActive);
        assert_eq!(
            status(&[("state", "running"), ("stop", "1")]),
            S::EgressEnding
        );
        assert_eq!(status(&[("state", "done")]), S::EgressComplete);
        assert_eq!(status(&[("state", "failed")]), S::EgressFailed);
        assert_eq!(status(&[("state", "paused")]), S::EgressActive);
        assert_eq!(
            status(&[("state", "failed"), ("exit_code", "6")]),
            S::EgressAborted
        );
        let done = assemble(
            base,
            &job(&[
                ("state", "failed"),
                ("attempts", "2"),
                ("started_at", "100"),
                ("ended_at", "104"),
                ("exit_code", "4"),
                ("message", "input: the page could not be loaded"),
                (
                    "attempt_1",
                    r#"{"attempt":1,"file":"/o/a.mp4","seconds":1.5,"bytes":1000}"#,
                ),
                (
                    "attempt_2",
                    r#"{"attempt":2,"s3":"s3://b/k/a-attempt2.mp4","seconds":2.0}"#,
                ),
            ]),
        );
        assert_eq!(
            (done.started_at, done.ended_at),
            (100_000_000_000, 104_000_000_000)
        );
        assert_eq!((done.retry_count, done.error_code), (1, 4));
        assert_eq!(done.error, "input: the page could not be loaded");
        let files: Vec<_> = done
            .file_results
            .iter()
            .map(|f| (f.filename.as_str(), f.location.as_str(), f.size, f.duration))
            .collect();
        assert_eq!(
            files,
            vec![
                ("/o/a.mp4", "/o/a.mp4", 1000, 1_500_000_000),
                (
                    "k/a-attempt2.mp4",
                    "s3://b/k/a-attempt2.mp4",
                    0,
                    2_000_000_000
                ),
            ]
        );
    }

    #[test]
    fn a_recording_on_the_backup_store_is_the_file_result_and_says_so() {
        let attempt = r#"{"attempt":1,"object":"azure://acct/recs/k.mp4","backup":true,"seconds":4.0,"bytes":2048}"#;
        let info = assemble(
            lk::EgressInfo::default(),
            &job(&[("state", "done"), ("attempts", "1"), ("attempt_1", attempt)]),
        );
        assert!(info.backup_storage_used);
        let f = &info.file_results[0];
        assert_eq!(
            (f.filename.as_str(), f.location.as_str(), f.size),
            ("recs/k.mp4", "azure://acct/recs/k.mp4", 2048)
        );
        let attempt = r#"{"attempt":1,"object":"gs://b/k.mp4","seconds":4.0}"#;
        let info = assemble(
            lk::EgressInfo::default(),
            &job(&[("state", "done"), ("attempts", "1"), ("attempt_1", attempt)]),
        );
        assert!(!info.backup_storage_used);
        assert_eq!(info.file_results[0].filename, "k.mp4");
    }

    #[test]
    fn hls_and_snapshot_directories_are_reported_as_segment_and_image_results() {
        let info = assemble(
            lk::EgressInfo::default(),
            &job(&[
                ("state", "done"),
                ("started_at", "100"),
                ("ended_at", "110"),
                (
                    "attempt_1",
                    r#"{"attempt":1,"hls":"/o/h","images":"/o/i","seconds":10.0,
                        "hls_measured":{"segments":3,"bytes":9000,"seconds":9.5},"images_count":2}"#,
                ),
            ]),
        );
        let s = &info.segment_results[0];
        assert_eq!(
            (
                s.playlist_location.as_str(),
                s.segment_count,
                s.size,
                s.duration
            ),
            ("/o/h/index.m3u8", 3, 9000, 9_500_000_000)
        );
        assert_eq!(s.ended_at, 110_000_000_000);
        let i = &info.image_results[0];
        assert_eq!(
            (i.filename_prefix.as_str(), i.image_count),
            ("/o/i/image-", 2)
        );
        assert!(info.file_results.is_empty());
    }

    #[test]
    fn copied_directories_are_reported_where_they_were_copied_to() {
        let record = lk::EgressInfo {
            request: Some(lk::egress_info::Request::Web(lk::WebEgressRequest {
                segment_outputs: vec![lk::SegmentedFileOutput {
                    live_playlist_name: "live.m3u8".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let info = assemble(
            record,
            &job(&[
                ("state", "done"),
                (
                    "attempt_1",
                    r#"{"attempt":1,"hls":"/o/h","images":"/o/i","seconds":10.0,
                        "hls_copy":"s3://b/rec/hls/","images_copy":"s3://b/rec/img/"}"#,
                ),
            ]),
        );
        let s = &info.segment_results[0];
        assert_eq!(
            (
                s.playlist_location.as_str(),
                s.live_playlist_name.as_str(),
                s.live_playlist_location.as_str()
            ),
            (
                "s3://b/rec/hls/index.m3u8",
                "live.m3u8",
                "s3://b/rec/hls/live.m3u8"
            )
        );
        assert_eq!(
            info.image_results[0].filename_prefix,
            "s3://b/rec/img/image-"
        );
    }

    #[test]
    fn egress_ids_look_like_livekit_s() {
        let a = new_id();
        assert!(a.starts_with("EG_") && a.len() == 15, "{a}");
        assert_ne!(a, new_id());
        assert!(super::super::super::valid_id(&a));
    }
}
