//! S3 output against a real S3 server (moto's, from the project's venv, on loopback): the object
//! is uploaded while recording, is byte-identical to the local file, survives a server that stops
//! answering for a while, and bad targets are refused before anything starts. HLS segments,
//! playlists and snapshots are copied beside it as they close.
mod common;

use std::time::{Duration, Instant};

use common::*;
use pagecast_actors::events;
use pagecast_testkit::{heavy, probe, Moto};
use serde_json::json;

const SECRET: &str = "wJalrXUtnFEMI-not-a-real-secret";

fn s3_block(moto: &Moto, bucket: &str) -> serde_json::Value {
    json!({
        "access_key": "AKIAPAGECASTTEST",
        "secret": SECRET,
        "bucket": bucket,
        "key": "rec/recording.mp4",
        "endpoint": moto.endpoint(),
        "part_size": "5MiB",
    })
}

/// Downloads the recording's object into `dir`.
fn download(moto: &Moto, dir: &std::path::Path) -> std::path::PathBuf {
    let downloaded = dir.join("downloaded.mp4");
    moto.s3(&[
        "get",
        "recordings",
        "rec/recording.mp4",
        downloaded.to_str().unwrap(),
    ]);
    downloaded
}

fn assert_same_bytes(object: &std::path::Path, file: &std::path::Path) {
    assert!(
        std::fs::read(object).unwrap() == std::fs::read(file).unwrap(),
        "object and file differ"
    );
}

fn uploaded_parts_before(stderr: &str, marker: &str) -> usize {
    let cut = stderr.find(marker).unwrap_or(stderr.len());
    stderr[..cut]
        .matches(r#""message":"uploaded part""#)
        .count()
}

#[test]
fn uploads_parts_while_recording_and_the_object_is_the_file() {
    let _heavy = heavy();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let (dir, file) = out_dir();
    let config = json!({
        "input": { "url": demo_page(), "width": 1280, "height": 720 },
        // 12 Mbit/s: a 5 MiB part every 3.5 s, so several parts go up while recording.
        "output": { "file": file, "S3": s3_block(&moto, "recordings"), "video_bitrate": "12M", "video_buffer": "24M" },
        "max_duration": "16s",
    });
    let mut run = Run::start(&config, &[]);
    let (status, _) = run.wait(Duration::from_secs(120));
    let stderr = run.stderr();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(!stderr.contains(SECRET), "the secret reached the output");
    let before_stop = uploaded_parts_before(&stderr, "max_duration 16s reached");
    assert!(
        before_stop >= 2,
        "only {before_stop} parts uploaded while recording:\n{stderr}"
    );
    let complete = stderr
        .lines()
        .find(|l| {
            l.contains(&format!(
                r#""message":"{}""#,
                pagecast::run::OBJECT_COMPLETE
            ))
        })
        .unwrap();
    println!("stop to complete: {complete}");
    let downloaded = download(&moto, dir.path());
    assert_same_bytes(&downloaded, &file);
    let p = probe(&downloaded);
    assert!(
        (p.duration() - 16.0).abs() <= 1.0,
        "object holds {} s",
        p.duration()
    );
    assert!(p.has_audio());
    assert_eq!(
        moto.s3(&["uploads", "recordings"]),
        "0",
        "a multipart upload was left open"
    );
}

/// ffprobe failing the last check (as it does when it times out on a large file on a slow disk)
/// does not throw the upload away: the object is completed and is the file, and the run says it
/// could not check it (an upload stopped without completing is aborted, and its parts go).
#[test]
fn a_recording_ffprobe_cannot_check_is_still_uploaded_whole() {
    let _heavy = heavy();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let (dir, file) = out_dir();
    // An ffprobe that fails the check that counts the file's packets, and only that one.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let real = std::process::Command::new("sh")
        .args(["-c", "command -v ffprobe"])
        .output()
        .unwrap();
    let real = String::from_utf8(real.stdout).unwrap();
    let script = bin.join("ffprobe");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" -count_packets \"*) echo 'ffprobe: simulated failure' >&2; exit 1;; esac\nexec {} \"$@\"\n",
            real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let config = json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": { "file": file, "S3": s3_block(&moto, "recordings") },
        "max_duration": "4s",
    });
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--log-format", "json"])
        .env("LIVEKIT_RECORDER_CONFIG", config.to_string())
        .env("PATH", path);
    let mut run = Run::spawn(cmd);
    let (status, _) = run.wait(Duration::from_secs(120));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(5), "the output's exit code:\n{stderr}");
    assert!(
        stderr.contains("cannot check that") && stderr.contains("simulated failure"),
        "{stderr}"
    );
    assert!(
        stderr.contains(pagecast::run::OBJECT_COMPLETE),
        "the object was not completed:\n{stderr}"
    );
    let downloaded = download(&moto, dir.path());
    assert_same_bytes(&downloaded, &file);
    let p = probe(&downloaded);
    assert!(p.duration() >= 3.5, "object holds {} s", p.duration());
    assert!(p.frames() >= 100, "object holds {} frames", p.frames());
    assert_eq!(
        moto.s3(&["uploads", "recordings"]),
        "0",
        "a multipart upload was left open"
    );
}

#[test]
fn a_server_that_stops_answering_for_a_while_loses_nothing() {
    let _heavy = heavy();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let (dir, _) = out_dir();
    // S3 only: the local file is pagecast's own and goes once the object is complete.
    let config = json!({
        "input": { "url": demo_page(), "width": 1280, "height": 720 },
        "output": { "S3": s3_block(&moto, "recordings"), "video_bitrate": "6M", "video_buffer": "12M" },
        "max_duration": "35s",
    });
    let mut run = Run::start(&config, &[]);
    run.wait_for(r#""message":"uploaded part""#, Duration::from_secs(60));
    moto.pause();
    // The server answers nothing for 20 s (this sleep is the outage, not a wait for a condition).
    std::thread::sleep(Duration::from_secs(20));
    moto.resume();
    let (status, _) = run.wait(Duration::from_secs(120));
    let stderr = run.stderr();
    assert!(status.success(), "{status}:\n{stderr}");
    let downloaded = download(&moto, dir.path());
    let p = probe(&downloaded);
    assert!(
        (p.duration() - 35.0).abs() <= 1.0,
        "object holds {} s",
        p.duration()
    );
    assert!(p.has_audio());
}

#[test]
fn a_missing_bucket_or_an_unreachable_endpoint_is_refused_before_anything_starts() {
    let _heavy = heavy();
    let moto = Moto::start();
    let closed = pagecast_testkit::free_port();
    let mut unreachable = s3_block(&moto, "recordings");
    unreachable["endpoint"] = json!(format!("http://127.0.0.1:{closed}"));
    for (s3, expect) in [
        (s3_block(&moto, "no-such-bucket"), "no such bucket".to_owned()),
        (unreachable, format!("s3://recordings/rec/recording.mp4 at http://127.0.0.1:{closed}: endpoint unreachable")),
    ] {
        let (_dir, file) = out_dir();
        let config = json!({ "input": { "url": demo_page() }, "output": { "file": file, "S3": s3 } });
        let started = Instant::now();
        let mut run = Run::start(&config, &[]);
        let (status, _) = run.wait(Duration::from_secs(60));
        let stderr = run.stderr();
        assert_eq!(status.code(), Some(5), "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(stderr.lines().last().unwrap().contains(&expect), "{stderr}");
        assert!(!stderr.contains("browser ready") && !stderr.contains("display ready"), "something started:\n{stderr}");
        assert!(!stderr.contains(SECRET));
        assert!(!file.exists());
    }
}

/// A prefix that already holds an earlier copy (its HLS playlist; with index naming, the first
/// snapshot this run would write) is refused before anything starts, as an object under the
/// recording's name is: this run's names are the same and would write over it.
#[test]
fn a_prefix_holding_an_earlier_copy_is_refused_before_anything_starts() {
    let _heavy = heavy();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let dir = tempfile::tempdir().unwrap();
    let earlier = dir.path().join("earlier");
    std::fs::write(&earlier, b"#EXTM3U\n").unwrap();
    for (key, output, expect) in [
        (
            "rec/hls/index.m3u8",
            json!({ "hls": { "directory": dir.path().join("hls"), "prefix": "rec/hls/" } }),
            "output.hls.prefix: s3://recordings/rec/hls/index.m3u8 already holds a playlist",
        ),
        (
            "rec/shots/image-000001.jpg",
            json!({ "images": { "directory": dir.path().join("shots"), "every": "1s",
                                "prefix": "rec/shots/" } }),
            "output.images.prefix: s3://recordings/rec/shots/image-000001.jpg already holds a \
             snapshot",
        ),
    ] {
        moto.s3(&["put", "recordings", key, earlier.to_str().unwrap()]);
        let mut config = json!({ "input": { "url": demo_page() }, "max_duration": "3s",
            "output": { "file": dir.path().join("rec.mp4"), "S3": s3_block(&moto, "recordings") } });
        let (field, value) = output.as_object().unwrap().iter().next().unwrap();
        config["output"][field] = value.clone();
        let mut run = Run::start(&config, &[]);
        let (status, _) = run.wait(Duration::from_secs(60));
        let stderr = run.stderr();
        assert_eq!(status.code(), Some(5), "{stderr}");
        assert!(stderr.lines().last().unwrap().contains(expect), "{stderr}");
        assert!(
            !stderr.contains("display ready"),
            "something started:\n{stderr}"
        );
    }
    assert_eq!(moto.s3(&["objects", "recordings"]), "2");
}

/// Two runs started at once copy HLS to the same prefix (from different local directories, which
/// no claim can see): the first to store a segment keeps the prefix; the other's copy stops at
/// that segment, never writes over it, and its run fails (exit 5) naming it, its own files kept.
/// What the prefix holds is the winner's directory, byte for byte.
#[test]
fn two_runs_copying_to_one_prefix_never_write_over_each_other() {
    let _heavy = heavy();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let mut s3 = s3_block(&moto, "recordings");
        s3["key"] = json!(format!("rec/{name}.mp4"));
        let config = json!({
            "input": { "url": demo_page(), "width": 640, "height": 360 },
            "output": {
                "file": dir.path().join(format!("{name}.mp4")),
                "S3": s3,
                "hls": { "directory": dir.path().join(name), "segment_duration": "1s",
                         "prefix": "rec/hls/" },
            },
            "max_duration": "6s",
        });
        Run::start(&config, &[])
    };
    let mut runs = [("a", start("a")), ("b", start("b"))];
    let mut ended = Vec::new();
    for (name, run) in &mut runs {
        let (status, _) = run.wait(Duration::from_secs(90));
        ended.push((*name, status.code(), run.stderr()));
    }
    let winners: Vec<_> = ended
        .iter()
        .filter(|(_, code, _)| *code == Some(0))
        .collect();
    let losers: Vec<_> = ended
        .iter()
        .filter(|(_, code, _)| *code == Some(5))
        .collect();
    assert!(winners.len() == 1 && losers.len() == 1, "{ended:#?}");
    let (winner, loser) = (winners[0].0, losers[0]);
    let last = loser.2.lines().last().unwrap_or_default();
    assert!(
        last.contains("output.hls.prefix")
            && last.contains("another writer stored s3://recordings/rec/hls/segment-")
            && last.contains(&format!(
                "the files are kept in {}",
                dir.path().join(loser.0).display()
            )),
        "{last}"
    );
    let fetched = tempfile::tempdir().unwrap();
    moto.s3(&[
        "fetch",
        "recordings",
        "rec/hls/",
        fetched.path().to_str().unwrap(),
    ]);
    let local = dir.path().join(winner);
    assert_eq!(files_in(fetched.path()), files_in(&local));
    for name in files_in(&local) {
        assert!(
            std::fs::read(fetched.path().join(&name)).unwrap()
                == std::fs::read(local.join(&name)).unwrap(),
            "rec/hls/{name} is not {winner}'s"
        );
    }
    for (name, _, _) in &ended {
        let p = probe(&dir.path().join(format!("{name}.mp4")));
        assert!(p.duration() >= 5.0, "{name}: {}", p.duration());
        assert_eq!(p.dimensions(), (640, 360), "{name}");
        assert!(p.has_audio(), "{name}");
    }
}

#[test]
fn a_wrong_secret_is_refused_before_anything_starts_and_never_printed() {
    let _heavy = heavy();
    let moto = Moto::start_authenticating(4);
    let created = moto.s3(&["iam-user", "recordings"]);
    let (access_key, secret) = created.split_once(' ').expect("key and secret");
    let mut s3 = s3_block(&moto, "recordings");
    s3["access_key"] = json!(access_key);
    s3["secret"] = json!(SECRET);
    let (_dir, file) = out_dir();
    let config = json!({ "input": { "url": demo_page() }, "output": { "file": file, "S3": s3 } });
    let mut run = Run::start(&config, &[]);
    let (status, _) = run.wait(Duration::from_secs(60));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(5), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("s3://recordings/rec/recording.mp4")
            && last.contains("access denied (HTTP 403)"),
        "{last}"
    );
    assert!(
        !stderr.contains(SECRET) && !stderr.contains(secret),
        "a secret was printed:\n{stderr}"
    );
    assert!(
        !stderr.contains("display ready"),
        "something started:\n{stderr}"
    );
    // The right secret works against the same server (the 403 was about the secret).
    let mut good = s3_block(&moto, "recordings");
    good["access_key"] = json!(access_key);
    good["secret"] = json!(secret);
    let config = json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": { "file": file, "S3": good },
        "max_duration": "2s",
    });
    let mut run = Run::start(&config, &[]);
    let (status, _) = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", run.stderr());
    assert!(!run.stderr().contains(secret));
    assert!(probe(&file).duration() >= 1.5);
    // No keys in the config: the standard AWS credential chain (here, the environment) applies.
    let mut from_env = s3_block(&moto, "recordings");
    let block = from_env.as_object_mut().unwrap();
    block.remove("access_key");
    block.remove("secret");
    // A file of its own: the first good run's recording is never written over.
    let file = file.with_file_name("from-env.mp4");
    let config = json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": { "file": file, "S3": from_env },
        "max_duration": "2s",
    });
    let from_env_run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["--log-format", "json", "record"])
            .args(args)
            .env("LIVEKIT_RECORDER_CONFIG", config.to_string())
            .env("AWS_ACCESS_KEY_ID", access_key)
            .env("AWS_SECRET_ACCESS_KEY", secret);
        Run::spawn(cmd)
    };
    // The key holds the good run's recording: refused before anything starts, the object kept.
    let mut run = from_env_run(&[]);
    let (status, _) = run.wait(Duration::from_secs(60));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(5), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("s3://recordings/rec/recording.mp4")
            && last.contains("already holds a recording")
            && last.contains("--overwrite"),
        "{last}"
    );
    assert!(
        !stderr.contains("display ready"),
        "something started:\n{stderr}"
    );
    // Asked for, the object is written over.
    let mut run = from_env_run(&["--overwrite"]);
    let (status, _) = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", run.stderr());
    assert!(!run.stderr().contains(secret));
    assert!(probe(&file).duration() >= 1.5);
}

#[test]
fn an_encoder_crash_during_an_upload_still_gives_one_correct_object() {
    let _heavy = heavy();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let (dir, file) = out_dir();
    let config = json!({
        "input": { "url": demo_page(), "width": 1280, "height": 720 },
        "output": { "file": file, "S3": s3_block(&moto, "recordings"), "video_bitrate": "6M", "video_buffer": "12M" },
        "max_duration": "16s",
    });
    let mut run = Run::start(&config, &[]);
    // Once a part of the first segment is up, ffmpeg dies: the joined file replaces it.
    run.wait_for(r#""message":"uploaded part""#, Duration::from_secs(60));
    pagecast_testkit::kill_descendant(run.child.id(), "ffmpeg");
    let (status, _) = run.wait(Duration::from_secs(120));
    let stderr = run.stderr();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(stderr.contains("uploading it again"), "{stderr}");
    let downloaded = download(&moto, dir.path());
    assert_same_bytes(&downloaded, &file);
    let p = probe(&downloaded);
    assert!(p.duration() >= 13.0, "object holds {} s", p.duration());
    assert_eq!(
        moto.s3(&["uploads", "recordings"]),
        "0",
        "a multipart upload was left open"
    );
}

#[test]
fn a_server_gone_for_good_keeps_the_local_file_and_names_it() {
    let _heavy = heavy();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let mut s3 = s3_block(&moto, "recordings");
    s3["give_up_after"] = json!("4s");
    let config = json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": { "S3": s3 },
        "max_duration": "8s",
    });
    // Kept in a directory of the user's choice (--keep-dir), not in a /tmp that may be wiped.
    let keep = tempfile::tempdir().unwrap();
    let keep_dir = keep.path().join("kept");
    let mut run = Run::start(
        &config,
        &["record", "--keep-dir", keep_dir.to_str().unwrap()],
    );
    run.wait_for(events::PAGE_LOADED, Duration::from_secs(60));
    moto.pause();
    let (status, _) = run.wait(Duration::from_secs(120));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(5), "{stderr}");
    let last = stderr.lines().last().unwrap();
    let kept = last
        .split("the recording is kept at ")
        .nth(1)
        .unwrap_or_else(|| panic!("no local file named: {last}"));
    let kept = std::path::Path::new(kept.trim());
    assert!(kept.exists(), "{} is gone", kept.display());
    assert_eq!(kept.parent(), Some(keep_dir.as_path()), "{last}");
    assert!(probe(kept).duration() >= 7.0);
}

/// output.hls.prefix and output.images.s3_prefix (its older name): while recording, every segment a playlist
/// in the bucket names is in the bucket already; at the end the bucket holds exactly the local
/// segments, playlists and images, byte for byte.
#[test]
fn hls_and_snapshots_are_copied_to_s3_as_they_close() {
    let _heavy = heavy();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let (dir, file) = out_dir();
    let (hls, shots) = (dir.path().join("hls"), dir.path().join("shots"));
    let config = json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": {
            "file": file,
            "S3": s3_block(&moto, "recordings"),
            "hls": { "directory": hls, "segment_duration": "2s", "prefix": "rec/hls/",
                     "live_playlist": { "window": 2 } },
            "images": { "directory": shots, "every": "1s", "s3_prefix": "rec/shots/" },
        },
        "max_duration": "8s",
    });
    let mut run = Run::start(&config, &[]);
    // While it records: a playlist fetched from the bucket names no segment missing there.
    let live = tempfile::tempdir().unwrap();
    let mut looked = 0;
    while run.child.try_wait().unwrap().is_none() {
        moto.s3(&[
            "fetch",
            "recordings",
            "rec/hls/",
            live.path().to_str().unwrap(),
        ]);
        // Listed after the playlists were fetched (a playlist fetched a moment after the fetch's
        // own listing may name a segment that went up in between): a segment goes up before any
        // playlist naming it, so each one a fetched playlist names is in this listing.
        let keys = moto.s3(&["keys", "recordings", "rec/hls/"]);
        for playlist in ["index.m3u8", "live.m3u8"] {
            let Ok(text) = std::fs::read_to_string(live.path().join(playlist)) else {
                continue;
            };
            let named = pagecast_actors::dir_upload::playlist_segments(&text);
            for segment in &named {
                assert!(
                    keys.lines().any(|k| k == format!("rec/hls/{segment}")),
                    "{playlist} in the bucket names {segment}, not there:\n{keys}"
                );
            }
            looked += usize::from(!named.is_empty());
        }
        std::fs::remove_dir_all(live.path()).unwrap();
        std::fs::create_dir(live.path()).unwrap();
    }
    assert!(
        looked > 0,
        "no playlist with a segment was seen while recording"
    );
    let (status, _) = run.wait(Duration::from_secs(60));
    let stderr = run.stderr();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(!stderr.contains(SECRET), "the secret reached the output");
    assert_eq!(
        stderr.matches(events::DIRECTORY_UPLOADED).count(),
        2,
        "{stderr}"
    );
    for (local, prefix) in [(&hls, "rec/hls/"), (&shots, "rec/shots/")] {
        let fetched = tempfile::tempdir().unwrap();
        moto.s3(&[
            "fetch",
            "recordings",
            prefix,
            fetched.path().to_str().unwrap(),
        ]);
        assert_eq!(files_in(fetched.path()), files_in(local), "{prefix}");
        assert!(files_in(local).len() >= 4, "{:?}", files_in(local));
        for name in files_in(local) {
            assert!(
                std::fs::read(fetched.path().join(&name)).unwrap()
                    == std::fs::read(local.join(&name)).unwrap(),
                "{prefix}{name} differs from the local file"
            );
        }
    }
    // The closed playlist in the bucket plays to the end.
    let fetched = tempfile::tempdir().unwrap();
    moto.s3(&[
        "fetch",
        "recordings",
        "rec/hls/",
        fetched.path().to_str().unwrap(),
    ]);
    let vod = probe(&fetched.path().join("index.m3u8")).duration();
    assert!((vod - 8.0).abs() <= 1.5, "the playlist holds {vod} s");
}

/// SIGRTMIN discards: the multipart upload begun while recording is aborted, no object is made,
/// and the file recorded into the keep directory is removed; exit 6.
#[test]
fn a_discarded_recording_leaves_no_object_and_no_file() {
    let _heavy = heavy();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let keep = tempfile::tempdir().unwrap();
    let hls = tempfile::tempdir().unwrap();
    let config = json!({
        "input": { "url": demo_page(), "width": 1280, "height": 720 },
        "output": { "S3": s3_block(&moto, "recordings"), "video_bitrate": "8M", "video_buffer": "16M",
            "hls": { "directory": hls.path().join("hls"), "segment_duration": "1s",
                     "s3_prefix": "rec/hls/" } },
    });
    let mut run = Run::start(
        &config,
        &["record", "--keep-dir", keep.path().to_str().unwrap()],
    );
    // A part is uploaded: a multipart upload is open; and HLS segments are in the bucket.
    run.wait_for(r#""message":"uploaded part""#, Duration::from_secs(60));
    pagecast_testkit::wait_until("HLS objects", Duration::from_secs(10), || {
        moto.s3(&["objects", "recordings"]) != "0"
    });
    assert_eq!(moto.s3(&["uploads", "recordings"]), "1");
    let rtmin = nix::libc::SIGRTMIN();
    // SAFETY: kill(2) with plain integers.
    assert_eq!(unsafe { nix::libc::kill(run.child.id() as i32, rtmin) }, 0);
    let (status, _) = run.wait(Duration::from_secs(60));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(6), "{stderr}");
    assert!(!stderr.contains(SECRET), "the secret reached the output");
    assert_eq!(
        moto.s3(&["uploads", "recordings"]),
        "0",
        "the multipart upload was left open:\n{stderr}"
    );
    assert_eq!(moto.s3(&["objects", "recordings"]), "0");
    assert_eq!(std::fs::read_dir(keep.path()).unwrap().count(), 0);
}
