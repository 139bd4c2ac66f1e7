//! The segments of one recording and their join into the file the user asked for.
//!
//! A recording whose encoder restarted, or that was paused and resumed, has several segments: the first is the requested file
//! itself, later ones are hidden siblings in the same directory
//! (`.<name>.<recording id>.part<N>.mp4`; the id keeps them apart from a killed run's leftovers).
//! At the end they are joined without re-encoding (ffmpeg's concat demuxer, `-c copy`) so that
//! no moment loses what was recorded:
//!
//! 1. each part is probed; a part is left out only on a definite answer that it holds no frame
//!    (an encoder killed before its first fragment); a part that could not be probed is kept;
//! 2. the parts are joined into a temporary file in the same directory
//!    (`.<name>.<id>.joining.mp4`), fragmented like every output, so that it survives a cut too;
//! 3. the joined file is checked: it plays as long as the parts together (within two frames);
//! 4. it is renamed over the requested file (atomic: a kill leaves the old or the new file);
//! 5. only then are the parts removed.
//!
//! A run killed during the join leaves the first segment in place and the parts beside it;
//! [`leftovers`] finds them for the next run's warning. Nothing here deletes a part that was not
//! joined into a checked file.
//!
//! Owns: for the length of a join, one ffmpeg and the ffprobes (one-shot helpers).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::oneshot::{self, OneShotError};
use crate::supervision::{Failure, FailureKind};

/// One probe of a file. A probe is short; a hung one must not hold the end of a recording.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// The join copies, it does not encode: a long recording takes seconds, not minutes.
const JOIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Where segment `n` of recording `id` is written: the output itself for the first, a hidden
/// sibling after that (same directory, so the same file system and a rename at the end).
pub fn segment_path(output: &Path, id: &str, n: usize) -> PathBuf {
    if n == 0 {
        return output.to_path_buf();
    }
    output.with_file_name(format!(".{}.{id}.part{n}.mp4", file_name(output)))
}

/// The temporary joined file.
fn joining_path(output: &Path, id: &str) -> PathBuf {
    output.with_file_name(format!(".{}.{id}.joining.mp4", file_name(output)))
}

fn file_name(output: &Path) -> String {
    output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "recording.mp4".into())
}

/// Parts of `output` that a killed run left behind (segments not yet joined, a join cut short),
/// sorted. They are reported, never deleted: they may hold the only copy of a recording.
pub fn leftovers(output: &Path) -> Vec<PathBuf> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = format!(".{}.", file_name(output));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(&prefix)
                && n.ends_with(".mp4")
                && (n.contains(".part") || n.ends_with(".joining.mp4"))
        })
        .map(|n| dir.join(n))
        .collect();
    found.sort();
    found
}

/// What a probe found in a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// It plays for this many seconds (frames found: video, or the sound of an audio-only
    /// recording).
    Plays(f64),
    /// A definite answer: no frame of any stream in it (an empty file, or tracks without a
    /// sample).
    NoFrame,
    /// No answer: ffprobe could not run, or could not read the file. Why.
    Unknown(String),
}

/// Probes `path`: how long it plays, if it holds a frame. Every stream's packets count: an
/// audio-only recording's sound is what it recorded.
pub async fn probe(path: &Path) -> Probe {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => return Probe::NoFrame,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::NoFrame,
        Err(e) => return Probe::Unknown(format!("cannot read {}: {e}", path.display())),
    }
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets:format=duration"])
        .args(["-of", "json"])
        .arg(crate::encoder::file_url(path));
    let done = match oneshot::run("ffprobe", cmd, PROBE_TIMEOUT).await {
        Ok(done) => done,
        Err(e) => return Probe::Unknown(e.to_string()),
    };
    if !done.success() {
        return Probe::Unknown(done.report);
    }
    let v: serde_json::Value = match serde_json::from_str(&done.stdout) {
        Ok(v) => v,
        Err(_) => return Probe::Unknown(format!("ffprobe answered {:?}", done.stdout.trim())),
    };
    let counts: Vec<u64> = v["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["nb_read_packets"].as_str()?.parse().ok())
        .collect();
    let packets = (!counts.is_empty()).then(|| counts.iter().sum::<u64>());
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse::<f64>().ok());
    match (packets, duration) {
        (Some(0), _) => Probe::NoFrame,
        (Some(_), Some(d)) => Probe::Plays(d),
        (Some(_), None) => Probe::Plays(0.0),
        // ffprobe read the file and counted no packet: no stream at all, or streams without a
        // sample (an encoder killed before its first fragment: `"streams": [{}]`).
        (None, _) if v["streams"].is_array() => Probe::NoFrame,
        (None, _) => Probe::Unknown(format!("ffprobe answered {:?}", done.stdout.trim())),
    }
}

/// What a join did.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// Parts in the output, in order.
    pub parts: usize,
    /// Seconds the output plays, if known.
    pub seconds: Option<f64>,
}

/// Joins `segments` (the first is `output` itself) into `output`. See the module docs for the
/// order of steps that keeps every moment safe. `framerate` sets the check's tolerance. On
/// failure the segments are all kept and named in the error.
pub async fn join_segments(
    output: &Path,
    id: &str,
    segments: &[PathBuf],
    framerate: u32,
) -> Result<Joined, Failure> {
    let mut parts = Vec::new();
    let mut empty = Vec::new();
    // Parts ffprobe could not check: joined, but never removed (the join's own check cannot
    // tell whether it took all of them).
    let mut unchecked = Vec::new();
    let mut expected = Some(0.0);
    for segment in segments {
        match probe(segment).await {
            Probe::Plays(d) => {
                expected = expected.map(|e| e + d);
                parts.push(segment.clone());
            }
            Probe::NoFrame => {
                tracing::warn!(segment = %segment.display(), "segment holds no frame, leaving it out");
                empty.push(segment.clone());
            }
            Probe::Unknown(why) => {
                tracing::warn!(segment = %segment.display(), reason = %why, "could not probe a segment; keeping it in the join");
                expected = None;
                parts.push(segment.clone());
                unchecked.push(segment.clone());
            }
        }
    }
    let named = |msg: String| {
        Failure::new(
            FailureKind::Output,
            format!(
                "{msg}; the recording is in {}",
                segments
                    .iter()
                    .filter(|s| s.exists())
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    let joined = match parts.as_slice() {
        [] => Joined {
            parts: 0,
            seconds: None,
        },
        // One part with frames: it is the output already, or it replaces a frameless first one.
        [only] => {
            if only != output {
                std::fs::rename(only, output)
                    .map_err(|e| named(format!("cannot rename {}: {e}", only.display())))?;
                sync_dir(output);
            }
            Joined {
                parts: 1,
                seconds: expected,
            }
        }
        _ => {
            tracing::info!(segments = parts.len(), output = %output.display(), "joining the recording's segments (the encoder restarted, or the recording was paused)");
            let seconds = concat(output, id, &parts, expected, framerate)
                .await
                .map_err(named)?;
            Joined {
                parts: parts.len(),
                seconds: Some(seconds),
            }
        }
    };
    // The output holds everything now: the parts (and frameless ones) can go.
    for part in parts.iter().chain(&empty) {
        if part != output && !unchecked.contains(part) {
            let _ = std::fs::remove_file(part);
        }
    }
    let kept: Vec<String> = unchecked
        .iter()
        .filter(|p| *p != output && p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !kept.is_empty() {
        tracing::warn!(
            kept = %kept.join(", "),
            "segments ffprobe could not check are kept beside the joined file"
        );
    }
    Ok(joined)
}

/// The concat itself: into the temporary file, checked, renamed over `output`. Returns the
/// joined file's duration.
async fn concat(
    output: &Path,
    id: &str,
    parts: &[PathBuf],
    expected: Option<f64>,
    framerate: u32,
) -> Result<f64, String> {
    let list = output.with_file_name(format!(".{}.{id}.parts.txt", file_name(output)));
    let text: String = parts
        .iter()
        .map(|p| {
            format!(
                "file '{}'\n",
                crate::encoder::file_url(p).replace('\'', r"'\''")
            )
        })
        .collect();
    std::fs::write(&list, text).map_err(|e| format!("cannot write {}: {e}", list.display()))?;
    let joining = joining_path(output, id);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-f", "concat", "-safe", "0", "-i"])
        .arg(&list)
        // Fragmented like the encoder's output: a join cut short is still playable.
        .args(["-c", "copy", "-movflags", crate::encoder::MOVFLAGS])
        .args(["-frag_duration", "1000000", "-f", "mp4", "-y"])
        .arg(crate::encoder::file_url(&joining));
    let result = oneshot::run("ffmpeg (join)", cmd, JOIN_TIMEOUT).await;
    let _ = std::fs::remove_file(&list);
    let fail = |msg: String| {
        // The temporary file is ours alone and holds nothing the parts don't.
        let _ = std::fs::remove_file(&joining);
        Err(msg)
    };
    match result {
        Ok(done) if done.success() => {}
        Ok(done) => return fail(format!("joining the segments failed: {}", done.report)),
        Err(e @ OneShotError::Start(_)) => {
            return fail(format!("cannot run ffmpeg to join the segments: {e}"))
        }
        Err(e) => return fail(format!("joining the segments failed: {e}")),
    }
    let seconds = match probe(&joining).await {
        Probe::Plays(d) => d,
        Probe::NoFrame => return fail("the joined file holds no frame".into()),
        Probe::Unknown(why) => return fail(format!("cannot check the joined file: {why}")),
    };
    // Two frames of slack: each part may end on a partial frame.
    let slack = 2.0 / f64::from(framerate.max(1)) + 0.05;
    if let Some(expected) = expected {
        if seconds + slack < expected {
            return fail(format!(
                "the joined file plays {seconds:.2} s, the segments {expected:.2} s"
            ));
        }
    }
    if let Err(e) = std::fs::File::open(&joining).and_then(|f| f.sync_all()) {
        return fail(format!("cannot sync {}: {e}", joining.display()));
    }
    if let Err(e) = std::fs::rename(&joining, output) {
        return fail(format!(
            "cannot rename {} to {}: {e}",
            joining.display(),
            output.display()
        ));
    }
    sync_dir(output);
    Ok(seconds)
}

/// Makes a rename in `path`'s directory durable before anything is removed.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_after_the_first_are_hidden_siblings_named_by_the_recording() {
        let out = Path::new("/out/rec.mp4");
        assert_eq!(segment_path(out, "r1", 0), Path::new("/out/rec.mp4"));
        assert_eq!(
            segment_path(out, "r1", 2),
            Path::new("/out/.rec.mp4.r1.part2.mp4")
        );
    }

    #[test]
    fn leftovers_are_found_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rec.mp4");
        for name in [
            "rec.mp4",
            ".rec.mp4.r1.part1.mp4",
            ".rec.mp4.part2.mp4",
            ".rec.mp4.r2.joining.mp4",
            ".other.mp4.r1.part1.mp4",
            ".rec.mp4.r1.parts.txt",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<String> = leftovers(&out)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                ".rec.mp4.part2.mp4",
                ".rec.mp4.r1.part1.mp4",
                ".rec.mp4.r2.joining.mp4"
            ]
        );
    }
}
