//! Names of recordings: the placeholders of `output.file` and the S3 key, and the attempt suffix.
//!
//! So that a repeated run gets a fresh name without a flag, `output.file` and `output.s3.key` may
//! hold `{time}` (the start, local time, `2006-01-02T150405`), `{utc}` (the start in UTC,
//! `20060102150405` and milliseconds) and, for LiveKit rooms, `{room_name}`: the placeholders of
//! LiveKit egress file names. In `pagecast serve`, attempt N > 1 of a job writes
//! `<stem>-attempt<N>.mp4` (and the same suffix on the S3 key), never over an earlier attempt.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{Config, Source, TemplateAuth};
use pagecast_actors::civil;

/// The placeholders a name may hold.
pub const PLACEHOLDERS: [&str; 3] = ["{time}", "{utc}", "{room_name}"];

/// The values of the placeholders for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub time: String,
    pub utc: String,
    pub room_name: Option<String>,
}

impl Names {
    /// The names of a run of `config` starting at `now`.
    pub fn new(config: &Config, now: SystemTime) -> Names {
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs() as i64;
        Names {
            time: civil::format(&civil::local(secs), "-", "T"),
            utc: format!(
                "{}{:03}",
                civil::format(&civil::utc(secs), "", ""),
                since.subsec_millis()
            ),
            room_name: room_name(config),
        }
    }

    /// `text` with every placeholder replaced. Validation refused `{room_name}` without a room.
    pub fn expand(&self, text: &str) -> String {
        let mut out = text
            .replace("{time}", &self.time)
            .replace("{utc}", &self.utc);
        if let Some(room) = &self.room_name {
            // A room name may hold a '/', which would make a directory of it.
            out = out.replace("{room_name}", &room.replace('/', "_"));
        }
        out
    }
}

/// The placeholders of `config`'s names filled in (a no-op when there are none).
pub fn resolve(mut config: Config, now: SystemTime) -> Config {
    let names = Names::new(&config, now);
    if let Some(file) = &config.output.file {
        config.output.file = Some(PathBuf::from(names.expand(&file.to_string_lossy())));
    }
    if let Some(s3) = &mut config.output.s3 {
        s3.key = names.expand(&s3.key);
    }
    if let Some(gcs) = &mut config.output.gcs {
        gcs.key = names.expand(&gcs.key);
    }
    if let Some(azure) = &mut config.output.azure {
        azure.blob = names.expand(&azure.blob);
    }
    if let Some(backup) = &mut config.output.backup {
        let name = backup.name_mut();
        *name = names.expand(name);
    }
    config
}

/// The name of attempt `attempt` (from 1) of a file or key: unchanged for the first,
/// `<stem>-attempt<N>.<ext>` after that.
pub fn with_attempt(name: &str, attempt: u32) -> String {
    if attempt <= 1 {
        return name.to_owned();
    }
    let (dir, base) = match name.rfind('/') {
        Some(i) => name.split_at(i + 1),
        None => ("", name),
    };
    match base.rfind('.') {
        Some(dot) if dot > 0 => format!("{dir}{}-attempt{attempt}{}", &base[..dot], &base[dot..]),
        _ => format!("{dir}{base}-attempt{attempt}"),
    }
}

/// A directory or key prefix for attempt `attempt` (> 1), ending as it did: `live/` becomes
/// `live-attempt2/`, `shots-` `shots-attempt2-`, `/r/hls` `/r/hls-attempt2`.
fn dir_with_attempt(name: &str, attempt: u32) -> String {
    match name.chars().last() {
        Some('/') => format!("{}-attempt{attempt}/", &name[..name.len() - 1]),
        Some(end @ ('-' | '_')) => format!("{name}attempt{attempt}{end}"),
        _ => format!("{name}-attempt{attempt}"),
    }
}

/// Where one attempt of a service job records: filled in before the recording starts, so the
/// service knows the names (placeholders included) and can list them in the job's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct AttemptOutput {
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    /// The HLS directory (`output.hls`): one per attempt (`-attempt<n>` after the first); a
    /// restart within an attempt carries the playlist on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hls: Option<PathBuf>,
    /// The snapshots' directory (`output.images`): one per attempt, like the HLS directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
}

/// The job config `json` for attempt `attempt`: placeholders filled in and, after the first
/// attempt, the attempt suffix on every name it writes (the file, the stores' keys, the HLS and
/// snapshot directories and prefixes). Returns the config and its names.
pub fn for_attempt(
    json: &str,
    attempt: u32,
    now: SystemTime,
) -> Result<(String, AttemptOutput), String> {
    let config = crate::config::parse(json).map_err(|e| e.to_string())?;
    let names = Names::new(&config, now);
    let mut v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut out = AttemptOutput {
        attempt,
        ..AttemptOutput::default()
    };
    let output = &mut v["output"];
    if let Some(file) = output.get("file").and_then(|f| f.as_str()) {
        let file = with_attempt(&names.expand(file), attempt);
        out.file = Some(PathBuf::from(&file));
        output["file"] = file.into();
    }
    for s3 in ["s3", "S3"] {
        if let Some(key) = output
            .get(s3)
            .and_then(|s| s.get("key"))
            .and_then(|k| k.as_str())
        {
            let key = with_attempt(&names.expand(key), attempt);
            let bucket = output[s3]["bucket"].as_str().unwrap_or_default();
            out.s3 = Some(format!("s3://{bucket}/{key}"));
            output[s3]["key"] = key.into();
        }
    }
    // The other stores' names, the backup's too: never over an earlier attempt's object.
    for pointer in [
        "/gcs/key",
        "/azure/blob",
        "/backup/s3/key",
        "/backup/gcs/key",
        "/backup/azure/blob",
    ] {
        if let Some(name) = output.pointer_mut(pointer) {
            if let Some(text) = name.as_str() {
                *name = with_attempt(&names.expand(text), attempt).into();
            }
        }
    }
    // The HLS and snapshot directories and their copies' prefixes too: a later attempt (on
    // another worker, its local directory empty) numbers its segments and images from the start
    // again, and would copy them over the earlier attempt's objects.
    if attempt > 1 {
        for (dir, field) in [
            ("hls", "directory"),
            ("hls", "prefix"),
            ("hls", "s3_prefix"),
            ("images", "directory"),
            ("images", "prefix"),
            ("images", "s3_prefix"),
        ] {
            if let Some(name) = output.get_mut(dir).and_then(|d| d.get_mut(field)) {
                if let Some(text) = name.as_str().filter(|t| !t.is_empty()) {
                    *name = dir_with_attempt(text, attempt).into();
                }
            }
        }
    }
    let dir = |o: &serde_json::Value, key: &str| {
        o.get(key)?.get("directory")?.as_str().map(PathBuf::from)
    };
    out.hls = dir(output, "hls");
    out.images = dir(output, "images");
    Ok((v.to_string(), out))
}

/// The room a LiveKit recording joins: named in the config, or in the given token's claims.
fn room_name(config: &Config) -> Option<String> {
    let Source::Template(template) = &config.input.source else {
        return None;
    };
    match &template.auth {
        TemplateAuth::ApiKey { room_name, .. } => Some(room_name.clone()),
        TemplateAuth::Token(token) => crate::livekit::token_claims(token)
            .and_then(|c| c["video"]["room"].as_str().map(str::to_owned)),
    }
}

/// Whether `path` is (after the placeholders) a file to be refused: it exists and is not empty.
pub fn holds_a_recording(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(json: serde_json::Value) -> Config {
        crate::config::parse(&json.to_string()).unwrap()
    }

    #[test]
    fn placeholders_are_filled_in() {
        let c = config(serde_json::json!({
            "api_key": "k", "api_secret": "s",
            "input": { "template": { "layout": "grid-dark", "ws_url": "ws://127.0.0.1:7880", "room_name": "stand/up" } },
            "output": { "file": "/rec/{room_name}-{utc}.mp4" },
        }));
        // 2024-02-29 13:04:05.678 UTC
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_211_845_678);
        let c = resolve(c, now);
        assert_eq!(
            c.output.file.unwrap(),
            Path::new("/rec/stand_up-20240229130405678.mp4")
        );
        let names = Names::new(
            &config(
                serde_json::json!({"input": {"url": "https://example.com"}, "output": {"file": "/a.mp4"}}),
            ),
            now,
        );
        assert_eq!(names.time.len(), "2024-02-29T130405".len());
        assert_eq!(names.room_name, None);
    }

    #[test]
    fn later_attempts_get_a_suffix() {
        assert_eq!(with_attempt("/r/rec.mp4", 1), "/r/rec.mp4");
        assert_eq!(with_attempt("/r/rec.mp4", 2), "/r/rec-attempt2.mp4");
        assert_eq!(with_attempt("rec/x", 3), "rec/x-attempt3");
        assert_eq!(with_attempt("a.b/.hidden", 2), "a.b/.hidden-attempt2");
    }

    #[test]
    fn an_attempt_s_config_names_its_outputs() {
        let json = serde_json::json!({
            "input": { "url": "https://example.com" },
            "output": { "file": "/r/rec.mp4", "s3": { "bucket": "b", "key": "k/rec.mp4" } },
        })
        .to_string();
        let (config, out) = for_attempt(&json, 2, SystemTime::now()).unwrap();
        let parsed = crate::config::parse(&config).unwrap();
        assert_eq!(
            parsed.output.file.unwrap(),
            Path::new("/r/rec-attempt2.mp4")
        );
        assert_eq!(parsed.output.s3.unwrap().key, "k/rec-attempt2.mp4");
        assert_eq!(out.file.unwrap(), Path::new("/r/rec-attempt2.mp4"));
        assert_eq!(out.s3.unwrap(), "s3://b/k/rec-attempt2.mp4");
    }

    #[test]
    fn a_later_attempt_writes_its_segments_and_images_beside_the_earlier_ones() {
        let json = serde_json::json!({
            "input": { "url": "https://example.com" },
            "output": {
                "s3": { "bucket": "b", "key": "k/rec.mp4" },
                "hls": { "directory": "/r/hls", "prefix": "live/" },
                "images": { "directory": "/r/shots/", "prefix": "shots_" },
            },
        })
        .to_string();
        let (first, _) = for_attempt(&json, 1, SystemTime::now()).unwrap();
        let first = crate::config::parse(&first).unwrap();
        assert_eq!(first.output.hls.unwrap().directory, Path::new("/r/hls"));
        let (config, out) = for_attempt(&json, 2, SystemTime::now()).unwrap();
        let parsed = crate::config::parse(&config).unwrap();
        let hls = parsed.output.hls.unwrap();
        assert_eq!(hls.directory, Path::new("/r/hls-attempt2"));
        assert_eq!(hls.prefix.as_deref(), Some("live-attempt2/"));
        let images = parsed.output.images.unwrap();
        assert_eq!(images.directory, Path::new("/r/shots-attempt2/"));
        assert_eq!(images.prefix.as_deref(), Some("shots_attempt2_"));
        assert_eq!(out.hls.unwrap(), Path::new("/r/hls-attempt2"));
        assert_eq!(out.images.unwrap(), Path::new("/r/shots-attempt2/"));
    }

    #[test]
    fn every_store_s_name_gets_the_attempt_suffix_and_no_store_is_added() {
        let json = serde_json::json!({
            "input": { "url": "https://example.com" },
            "output": { "gcs": { "bucket": "b", "key": "g/rec.mp4" },
                "backup": { "azure": { "account": "a", "container": "c", "blob": "z/rec.mp4" } } },
        })
        .to_string();
        let (config, _) = for_attempt(&json, 3, SystemTime::now()).unwrap();
        let parsed = crate::config::parse(&config).unwrap();
        assert_eq!(parsed.output.gcs.unwrap().key, "g/rec-attempt3.mp4");
        match parsed.output.backup {
            Some(crate::config::Backup::Azure(a)) => assert_eq!(a.blob, "z/rec-attempt3.mp4"),
            other => panic!("{other:?}"),
        }
        assert!(parsed.output.azure.is_none() && parsed.output.s3.is_none());
    }
}
