//! End to end: `pagecast serve` against a real redis-server, running real recordings. Each job's
//! file is checked with ffprobe.
mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use pagecast_actors::events;
use pagecast_testkit::{
    descendants, frame_rgb, heavy, is_green, is_red, probe, seconds_written, test_page, threads,
    wait_until, Redis,
};
use serde_json::json;

/// The job key of every worker and submitter in these tests.
const JOB_KEY: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff";

fn serve(redis: &Redis, worker: &str, extra: &[&str]) -> Run {
    serve_on(&redis.url(), worker, extra)
}

fn serve_on(url: &str, worker: &str, extra: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-format", "json", "serve"])
        .args(["--queue", "test", "--worker-id", worker])
        // The test pages are files, the recordings go to temporary directories.
        .arg("--allow-file-urls")
        .arg(format!("--output-root={}", std::env::temp_dir().display()))
        .args(extra)
        .env("PAGECAST_REDIS_URL", url)
        .env("PAGECAST_JOB_KEY", JOB_KEY);
    Run::spawn(cmd)
}

/// `serve` as worker w1 on a machine of the given size (`PAGECAST_TEST_MACHINE`).
fn serve_sized(redis: &Redis, machine: &str, extra: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-format", "json", "serve"])
        .args(["--queue", "test", "--worker-id", "w1"])
        .arg("--allow-file-urls")
        .arg(format!("--output-root={}", std::env::temp_dir().display()))
        .args(extra)
        .env("PAGECAST_REDIS_URL", redis.url())
        .env("PAGECAST_JOB_KEY", JOB_KEY)
        .env("PAGECAST_TEST_MACHINE", machine);
    Run::spawn(cmd)
}

/// A job recording a test page at 640x360 into `dir`.
fn push(redis: &Redis, id: &str, dir: &Path, page: &str, max: Option<&str>) -> PathBuf {
    let file = dir.join(format!("{id}.mp4"));
    let mut config = json!({
        "input": { "url": page, "width": 640, "height": 360 },
        "output": { "file": file },
    });
    if let Some(max) = max {
        config["max_duration"] = json!(max);
    }
    let job = json!({ "id": id, "config": config }).to_string();
    redis.cli(&["LPUSH", "{test}:jobs", &job]);
    file
}

/// Attempt `n`'s file of a job recording to `file`.
fn attempt(file: &Path, n: u32) -> PathBuf {
    let stem = file.file_stem().unwrap().to_string_lossy();
    file.with_file_name(format!("{stem}-attempt{n}.mp4"))
}

/// A finished recording of about `secs` seconds (ffprobe).
fn assert_recorded(file: &Path, secs: f64) {
    let p = probe(file);
    assert_eq!(p.video_codec(), "h264", "{}", file.display());
    assert!(
        (p.duration() - secs).abs() <= 0.5,
        "{}: duration {} for {secs} s",
        file.display(),
        p.duration()
    );
}

/// SIGTERM: the service finishes and exits 0.
fn stop_cleanly(run: &mut Run) {
    run.signal(Signal::SIGTERM);
    let (status, _) = run.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", run.stderr());
}

fn state(redis: &Redis, id: &str) -> String {
    redis.hget(&format!("{{test}}:job:{id}"), "state")
}

fn wait_state(redis: &Redis, id: &str, want: &str, timeout: Duration) {
    wait_until(&format!("job {id} to be {want}"), timeout, || {
        let s = state(redis, id);
        assert!(
            s != "failed" || want == "failed",
            "job {id} failed: {}",
            redis.hget(&format!("{{test}}:job:{id}"), "message")
        );
        s == want
    });
}

#[test]
fn jobs_run_within_the_limit_and_a_bad_config_fails_with_code_2() {
    let _heavy = heavy();
    let redis = Redis::start();
    let (dir, _) = out_dir();
    let page = test_page("silent.html", "");
    // `pagecast submit`: checked, marked queued, pushed; a second job under the same id or a bad
    // config is refused with nothing queued.
    let a = dir.path().join("a.mp4");
    let config = json!({
        "input": { "url": page, "width": 640, "height": 360 },
        "output": { "file": a },
        "max_duration": "2s",
    })
    .to_string();
    let submit = |id: &str, config: &str| {
        Command::new(BIN)
            .args(["submit", "--queue", "test", "--id", id])
            .env("PAGECAST_REDIS_URL", redis.url())
            .env("PAGECAST_JOB_KEY", JOB_KEY)
            .env("LIVEKIT_RECORDER_CONFIG", config)
            .output()
            .unwrap()
    };
    let out = submit("a", &config);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "a");
    assert_eq!(state(&redis, "a"), "queued");
    let again = submit("a", &config);
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("job a is already queued"));
    let wrong = submit("w", r#"{"input":{"url":"https://e.com","width":3}}"#);
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("input.width"));
    assert_eq!(redis.cli(&["LLEN", "{test}:jobs"]), "1");
    let bad_job = json!({ "id": "bad", "config": { "input": { "url": page, "width": 3 }, "output": { "file": "/tmp/x.mp4" } } });
    redis.cli(&["LPUSH", "{test}:jobs", &bad_job.to_string()]);
    let b = push(&redis, "b", dir.path(), &page, Some("2s"));
    let mut run = serve(&redis, "w1", &["--max-recordings", "1"]);
    wait_state(&redis, "b", "done", Duration::from_secs(120));
    wait_state(&redis, "a", "done", Duration::from_secs(5));
    assert_eq!(state(&redis, "bad"), "failed");
    assert_eq!(redis.hget("{test}:job:bad", "exit_code"), "2");
    let message = redis.hget("{test}:job:bad", "message");
    assert!(message.starts_with("config: input.width:"), "{message}");
    for (id, file) in [("a", &a), ("b", &b)] {
        assert_eq!(redis.hget(&format!("{{test}}:job:{id}"), "exit_code"), "0");
        assert_eq!(redis.hget(&format!("{{test}}:job:{id}"), "worker"), "w1");
        let p = probe(file);
        assert_eq!(p.video_codec(), "h264");
        assert!(
            (p.duration() - 2.0).abs() <= 0.5,
            "{id}: duration {}",
            p.duration()
        );
    }
    // One at a time: b (pushed last, taken last) started after a ended.
    let a_end: u64 = redis.hget("{test}:job:a", "ended_at").parse().unwrap();
    let b_start: u64 = redis.hget("{test}:job:b", "started_at").parse().unwrap();
    assert!(
        b_start >= a_end,
        "a ended at {a_end}, b started at {b_start}"
    );
    assert_eq!(redis.cli(&["LLEN", "{test}:processing:w1"]), "0");
    assert_eq!(redis.cli(&["EXISTS", "{test}:worker:w1"]), "1", "heartbeat");
    stop_cleanly(&mut run);
    assert_eq!(
        redis.cli(&["EXISTS", "{test}:worker:w1"]),
        "0",
        "a stopped worker leaves"
    );
}

#[test]
fn a_dead_worker_s_job_is_taken_over_by_another() {
    let _heavy = heavy();
    let redis = Redis::start();
    let (dir, _) = out_dir();
    let file = push(
        &redis,
        "j",
        dir.path(),
        &test_page("silent.html", ""),
        Some("3s"),
    );
    let mut first = serve(&redis, "w1", &["--heartbeat-ttl", "2s"]);
    wait_state(&redis, "j", "running", Duration::from_secs(30));
    assert_eq!(redis.hget("{test}:job:j", "worker"), "w1");
    // The machine dies: the worker and (parent-death signal) its recording.
    first.signal(Signal::SIGKILL);
    first.wait(Duration::from_secs(10));
    let mut second = serve(&redis, "w2", &["--heartbeat-ttl", "2s"]);
    wait_state(&redis, "j", "done", Duration::from_secs(90));
    assert_eq!(redis.hget("{test}:job:j", "worker"), "w2");
    assert_eq!(redis.hget("{test}:job:j", "attempts"), "2");
    assert_eq!(redis.cli(&["LLEN", "{test}:processing:w1"]), "0");
    assert_eq!(redis.cli(&["SISMEMBER", "{test}:workers", "w1"]), "0");
    assert_recorded(&attempt(&file, 2), 3.0);
    stop_cleanly(&mut second);
}

#[test]
fn a_stop_request_and_sigterm_finish_the_running_recordings() {
    let _heavy = heavy();
    let redis = Redis::start();
    let (dir, _) = out_dir();
    let page = test_page("end.html", "ms=600000");
    let one = push(&redis, "one", dir.path(), &page, None);
    let two = push(&redis, "two", dir.path(), &page, None);
    let mut run = serve(&redis, "w1", &["--max-recordings", "2"]);
    wait_state(&redis, "one", "running", Duration::from_secs(30));
    wait_state(&redis, "two", "running", Duration::from_secs(30));
    // Both record for a while (fragmented MP4 is readable while it is written).
    wait_until("3 s in both files", Duration::from_secs(60), || {
        [&one, &two].iter().all(|f| seconds_written(f) >= 3.0)
    });
    // A job's config (its secrets with it) reaches its recording on stdin: it is in no
    // recording's environment or command line.
    let recordings: Vec<u32> = descendants(run.child.id())
        .into_iter()
        .filter(|(_, name)| name == "pagecast")
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(recordings.len(), 2, "{recordings:?}");
    for pid in recordings {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        for seen in [environ, cmdline] {
            let seen = String::from_utf8_lossy(&seen);
            assert!(
                !seen.contains("LIVEKIT_RECORDER_CONFIG") && !seen.contains(".mp4"),
                "a job's config is visible in /proc/{pid}: {seen}"
            );
        }
    }
    let heard = redis.cli(&["PUBLISH", "test:control", r#"{"stop":"one"}"#]);
    assert_eq!(heard, "1", "the worker follows the control channel");
    wait_state(&redis, "one", "done", Duration::from_secs(20));
    assert_eq!(state(&redis, "two"), "running");
    run.signal(Signal::SIGTERM);
    let (status, _) = run.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    assert_eq!(
        state(&redis, "two"),
        "done",
        "{}",
        redis.hget("{test}:job:two", "message")
    );
    for file in [&one, &two] {
        let p = probe(file);
        assert!(
            p.duration() >= 2.5,
            "{}: duration {}",
            file.display(),
            p.duration()
        );
        assert!(p.has_audio());
    }
}

#[test]
fn two_workers_share_a_queue_and_run_each_job_once() {
    let _heavy = heavy();
    let redis = Redis::start();
    let (dir, _) = out_dir();
    let page = test_page("silent.html", "");
    let ids = ["j1", "j2", "j3", "j4"];
    let files: Vec<PathBuf> = ids
        .iter()
        .map(|id| push(&redis, id, dir.path(), &page, Some("2s")))
        .collect();
    let mut workers = [
        serve(&redis, "w1", &["--max-recordings", "1"]),
        serve(&redis, "w2", &["--max-recordings", "1"]),
    ];
    for id in ids {
        wait_state(&redis, id, "done", Duration::from_secs(120));
    }
    let mut who = HashSet::new();
    for (id, file) in ids.iter().zip(&files) {
        let job = format!("{{test}}:job:{id}");
        // Every take counts an attempt: one means no job ran twice.
        assert_eq!(redis.hget(&job, "attempts"), "1", "{id}");
        assert_eq!(redis.hget(&job, "exit_code"), "0", "{id}");
        who.insert(redis.hget(&job, "worker"));
        let p = probe(file);
        assert!(
            (p.duration() - 2.0).abs() <= 0.5,
            "{id}: duration {}",
            p.duration()
        );
    }
    assert_eq!(who, HashSet::from(["w1".to_owned(), "w2".to_owned()]));
    for key in [
        "{test}:jobs",
        "{test}:processing:w1",
        "{test}:processing:w2",
    ] {
        assert_eq!(redis.cli(&["LLEN", key]), "0", "{key}");
    }
    for w in &mut workers {
        stop_cleanly(w);
    }
}

#[test]
fn a_worker_restarted_under_its_id_runs_its_interrupted_job_again_and_a_twin_is_refused() {
    let _heavy = heavy();
    let redis = Redis::start();
    let (dir, _) = out_dir();
    let file = push(
        &redis,
        "j",
        dir.path(),
        &test_page("silent.html", ""),
        Some("2s"),
    );
    let ttl = ["--heartbeat-ttl", "2s"];
    let mut first = serve(&redis, "w1", &ttl);
    wait_state(&redis, "j", "running", Duration::from_secs(30));
    // A second live worker with the same id would take the first one's jobs: refused.
    let mut twin = serve(&redis, "w1", &ttl);
    let (status, _) = twin.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{}", twin.stderr());
    assert!(
        twin.stderr().contains("another worker named w1 is running"),
        "{}",
        twin.stderr()
    );
    // Killed (with its recording) and started again under its id: it waits out the old
    // heartbeat and runs the job its earlier self left behind.
    first.signal(Signal::SIGKILL);
    first.wait(Duration::from_secs(10));
    let mut again = serve(&redis, "w1", &ttl);
    wait_state(&redis, "j", "done", Duration::from_secs(90));
    assert_eq!(redis.hget("{test}:job:j", "attempts"), "2");
    assert_recorded(&attempt(&file, 2), 2.0);
    stop_cleanly(&mut again);
}

#[test]
fn a_lost_redis_is_reconnected_while_the_recording_goes_on() {
    let _heavy = heavy();
    let mut redis = Redis::start();
    let (dir, _) = out_dir();
    let file = push(
        &redis,
        "long",
        dir.path(),
        &test_page("end.html", "ms=600000"),
        None,
    );
    let mut run = serve(&redis, "w1", &[]);
    wait_state(&redis, "long", "running", Duration::from_secs(30));
    wait_until("2 s recorded", Duration::from_secs(60), || {
        seconds_written(&file) >= 2.0
    });
    redis.kill();
    let before = seconds_written(&file);
    wait_until(
        "the recording to go on without Redis",
        Duration::from_secs(30),
        || seconds_written(&file) >= before + 2.0,
    );
    // Back, empty (no persistence): the worker reconnects, writes its heartbeat again and
    // puts the job it runs back in its processing list.
    redis.restart();
    wait_until("the worker to reconnect", Duration::from_secs(30), || {
        redis.cli(&["LLEN", "{test}:processing:w1"]) == "1"
    });
    assert_eq!(redis.cli(&["EXISTS", "{test}:worker:w1"]), "1");
    // Its control subscription is back too: a stop request reaches the recording.
    wait_until(
        "the control subscription to come back",
        Duration::from_secs(30),
        || redis.cli(&["PUBLISH", "test:control", r#"{"stop":"long"}"#]) == "1",
    );
    wait_state(&redis, "long", "done", Duration::from_secs(30));
    assert!(probe(&file).duration() >= before + 2.0);
    let next = push(
        &redis,
        "next",
        dir.path(),
        &test_page("silent.html", ""),
        Some("2s"),
    );
    wait_state(&redis, "next", "done", Duration::from_secs(60));
    assert!(probe(&next).duration() >= 1.5);
    assert_eq!(run.stderr().matches("Redis unreachable").count(), 1);
    stop_cleanly(&mut run);
}

#[test]
fn a_recording_killed_by_someone_else_runs_again_and_each_change_is_published() {
    let _heavy = heavy();
    let redis = Redis::start();
    let events = redis.subscribe("test:events");
    let (dir, _) = out_dir();
    let file = push(
        &redis,
        "k",
        dir.path(),
        &test_page("silent.html", ""),
        Some("4s"),
    );
    let mut run = serve(&redis, "w1", &[]);
    wait_state(&redis, "k", "running", Duration::from_secs(30));
    let recording = || {
        descendants(run.child.id())
            .into_iter()
            .find(|(_, name)| name == "pagecast")
            .map(|(pid, _)| pid)
    };
    let mut pid = None;
    wait_until("the recording process", Duration::from_secs(10), || {
        pid = recording();
        pid.is_some()
    });
    // Once the first attempt has recorded a while: what it recorded must survive the retry.
    wait_until("1.5 s recorded", Duration::from_secs(60), || {
        seconds_written(&file) >= 1.5
    });
    // The OOM killer, say: not a stop the service asked for.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid.unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    wait_state(&redis, "k", "done", Duration::from_secs(90));
    assert_eq!(redis.hget("{test}:job:k", "attempts"), "2");
    // The retry wrote a file of its own: both attempts' recordings play, and the job's state
    // lists each with its seconds.
    let second = attempt(&file, 2);
    assert_recorded(&second, 4.0);
    let first = probe(&file);
    assert_eq!(first.video_codec(), "h264");
    assert!(first.duration() >= 1.0, "{} s kept", first.duration());
    for (n, path, secs) in [(1, &file, first.duration()), (2, &second, 4.0)] {
        let listed: serde_json::Value =
            serde_json::from_str(&redis.hget("{test}:job:k", &format!("attempt_{n}"))).unwrap();
        assert_eq!(listed["file"], path.display().to_string(), "{listed}");
        let listed_secs = listed["seconds"].as_f64().unwrap_or(-1.0);
        assert!((listed_secs - secs).abs() <= 0.5, "{listed} for {secs} s");
    }
    let seen: Vec<(String, String)> = events
        .messages()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or("").to_owned(),
                m["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let states: Vec<&str> = seen
        .iter()
        .filter(|(id, _)| id == "k")
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(
        states,
        ["running", "requeued", "running", "done"],
        "{seen:?}"
    );
    let requeued = &events.messages()[1];
    assert!(
        requeued["message"]
            .as_str()
            .is_some_and(|m| m.contains("killed")),
        "{requeued}"
    );
    stop_cleanly(&mut run);
}

#[test]
fn an_unreachable_redis_is_a_clear_error() {
    let port = pagecast_testkit::free_port();
    let url = format!("redis://:hunter2-secret@127.0.0.1:{port}");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").env("PAGECAST_REDIS_URL", &url);
    let mut run = Run::spawn(cmd);
    let (status, _) = run.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(4), "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains(&format!("cannot reach Redis at 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    // A password on the command line (readable by every local user) is refused; a file is fine.
    let mut argv = Run::spawn({
        let mut c = Command::new(BIN);
        c.args(["serve", "--redis", &url]);
        c
    });
    let (status, _) = argv.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(2), "{}", argv.stderr());
    assert!(
        argv.stderr().contains("PAGECAST_REDIS_URL"),
        "{}",
        argv.stderr()
    );
    assert!(!argv.stderr().contains("hunter2"), "{}", argv.stderr());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-url");
    std::fs::write(&file, &url).unwrap();
    let mut from_file = Run::spawn({
        let mut c = Command::new(BIN);
        c.args(["serve", "--redis-file"]).arg(&file);
        c
    });
    let (status, _) = from_file.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(4), "{}", from_file.stderr());
    assert!(
        from_file
            .stderr()
            .contains(&format!("cannot reach Redis at 127.0.0.1:{port}")),
        "{}",
        from_file.stderr()
    );
    let mut bad = Run::spawn({
        let mut c = Command::new(BIN);
        c.args(["serve", "--redis", "http://nope"]);
        c
    });
    let (status, _) = bad.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(2), "{}", bad.stderr());
    let mut none = Run::spawn({
        let mut c = Command::new(BIN);
        c.args(["serve", "--max-recordings", "0"]);
        c
    });
    let (status, _) = none.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(2), "{}", none.stderr());
}

/// A `rediss://` URL (from PAGECAST_REDIS_URL) reaches a TLS-only redis-server: the worker
/// connects, holds its heartbeat there, and leaves it on SIGTERM.
#[test]
fn a_rediss_url_connects_over_tls() {
    let redis = pagecast_testkit::RedisTls::start();
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-format", "json", "serve", "--queue", "test"])
        .args(["--worker-id", "tls"])
        .env("PAGECAST_REDIS_URL", redis.url())
        .env("SSL_CERT_FILE", &redis.ca);
    let mut run = Run::spawn(cmd);
    wait_until("the worker's heartbeat", Duration::from_secs(20), || {
        redis.cli(&["EXISTS", "{test}:worker:tls"]) == "1"
    });
    stop_cleanly(&mut run);
    assert_eq!(redis.cli(&["EXISTS", "{test}:worker:tls"]), "0");
}

/// A worker whose calibration probe (about 2 s) outlasts its lease (--heartbeat-ttl 1s) renews
/// its claimed heartbeat meanwhile: from the moment it appears until the worker says it has
/// measured the machine, the heartbeat never lapses (another worker would think it dead).
#[test]
fn a_worker_keeps_its_heartbeat_while_it_measures_its_machine() {
    let redis = Redis::start();
    let mut run = serve(&redis, "w1", &["--heartbeat-ttl", "1s"]);
    wait_until("the worker's heartbeat", Duration::from_secs(20), || {
        redis.cli(&["EXISTS", "{test}:worker:w1"]) == "1"
    });
    let mut polls = 0;
    while run.count(events::MACHINE_CALIBRATED) == 0 {
        assert_eq!(
            redis.cli(&["EXISTS", "{test}:worker:w1"]),
            "1",
            "the heartbeat lapsed during the probe (poll {polls}): {}",
            run.stderr()
        );
        polls += 1;
        assert!(
            polls < 2000,
            "no calibration within the polls: {}",
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        polls > 10,
        "the probe ran while the heartbeat was watched ({polls} polls)"
    );
    stop_cleanly(&mut run);
}

/// A worker cut off from Redis (its connection goes through a proxy the test cuts) longer than
/// its lease: its recording stops by itself, the file finished, before another worker takes the
/// job over; at no moment do both run it.
#[test]
fn a_worker_cut_off_from_redis_stops_its_recording_before_another_takes_the_job() {
    let _heavy = heavy();
    let redis = Redis::start();
    let proxy = pagecast_testkit::TcpProxy::start(redis.port);
    let (dir, _) = out_dir();
    let file = push(
        &redis,
        "cut",
        dir.path(),
        &test_page("end.html", "ms=600000"),
        None,
    );
    let ttl = ["--heartbeat-ttl", "6s"];
    let mut first = serve_on(&proxy.redis_url(), "w1", &ttl);
    wait_state(&redis, "cut", "running", Duration::from_secs(30));
    wait_until("2 s recorded", Duration::from_secs(60), || {
        seconds_written(&file) >= 2.0
    });
    let mut second = serve(&redis, "w2", &ttl);
    proxy.cut();
    let w1_records = || {
        descendants(first.child.id())
            .iter()
            .any(|(_, name)| name == "pagecast")
    };
    let mut w1_file = None;
    wait_until("w2 to take the job over", Duration::from_secs(60), || {
        let w2_has_it = redis.hget("{test}:job:cut", "worker") == "w2";
        let w1_runs_it = w1_records();
        assert!(!(w2_has_it && w1_runs_it), "the job runs on both workers");
        if !w1_runs_it && w1_file.is_none() {
            // w1's copy, as it left it (w2's attempt writes the same file).
            let copy = dir.path().join("w1-copy.mp4");
            std::fs::copy(&file, &copy).unwrap();
            w1_file = Some(copy);
        }
        w2_has_it
    });
    let w1_file = w1_file.expect("w1's recording stopped");
    let p = probe(&w1_file);
    assert_eq!(p.video_codec(), "h264");
    assert!(p.duration() >= 2.0, "w1's copy: {} s", p.duration());
    assert!(
        first.stderr().contains("cannot renew this worker's lease"),
        "{}",
        first.stderr()
    );
    // It finished (exit 0), not killed at the end of the lease.
    assert!(
        first.stderr().lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                v["message"] == "recording ended" && v["job"] == "cut" && v["code"] == "Some(0)"
            })
        }),
        "{}",
        first.stderr()
    );
    assert_eq!(redis.hget("{test}:job:cut", "attempts"), "2");
    first.signal(Signal::SIGKILL);
    first.wait(Duration::from_secs(10));
    redis.cli(&["PUBLISH", "test:control", r#"{"stop":"cut"}"#]);
    wait_state(&redis, "cut", "done", Duration::from_secs(30));
    stop_cleanly(&mut second);
}

/// A worker given a machine of 0.6 cores (`PAGECAST_TEST_MACHINE`; x 0.65 = 0.39) has room for
/// one 640x360@30 recording (about 0.25 cores), not two, though --max-recordings allows four:
/// the second job waits in the queue (said once) and runs when the first has ended.
#[test]
fn a_job_that_does_not_fit_waits_and_runs_when_the_running_one_ends() {
    let _heavy = heavy();
    let redis = Redis::start();
    let (dir, _) = out_dir();
    let page = test_page("silent.html", "");
    let a = push(&redis, "a", dir.path(), &page, Some("3s"));
    let b = push(&redis, "b", dir.path(), &page, Some("3s"));
    let mut run = serve_sized(&redis, "cores=0.6,memory=8GiB", &["--max-recordings", "4"]);
    wait_state(&redis, "a", "running", Duration::from_secs(30));
    run.wait_for(events::JOB_WAITS_FOR_CAPACITY, Duration::from_secs(10));
    assert_eq!(state(&redis, "b"), "", "b is not taken while a runs");
    assert_eq!(redis.cli(&["LLEN", "{test}:jobs"]), "1");
    wait_state(&redis, "b", "done", Duration::from_secs(120));
    assert_eq!(state(&redis, "a"), "done");
    let a_end: u64 = redis.hget("{test}:job:a", "ended_at").parse().unwrap();
    let b_start: u64 = redis.hget("{test}:job:b", "started_at").parse().unwrap();
    assert!(
        b_start >= a_end,
        "a ended at {a_end}, b started at {b_start}"
    );
    assert_eq!(run.count(events::JOB_WAITS_FOR_CAPACITY), 1, "said once");
    for file in [&a, &b] {
        assert_recorded(file, 3.0);
    }
    stop_cleanly(&mut run);
}

/// A 1920x1080@30 job (about 0.84 cores) on a worker of one core (0.65 for recordings) can never
/// run there: it fails at once with code 2 and a message naming the fields and the sizes, and
/// no recording starts; the worker goes on.
#[test]
fn a_job_larger_than_the_machine_fails_at_once() {
    let redis = Redis::start();
    let (dir, _) = out_dir();
    let file = dir.path().join("big.mp4");
    let job = json!({
        "id": "big",
        "config": {
            "input": { "url": test_page("silent.html", ""), "width": 1920, "height": 1080 },
            "output": { "file": file },
        },
    });
    redis.cli(&["LPUSH", "{test}:jobs", &job.to_string()]);
    let mut run = serve_sized(&redis, "cores=1,memory=8GiB", &[]);
    wait_state(&redis, "big", "failed", Duration::from_secs(10));
    assert_eq!(redis.hget("{test}:job:big", "exit_code"), "2");
    let message = redis.hget("{test}:job:big", "message");
    assert!(
        message.starts_with(
            "config: input.width x input.height at input.framerate needs about 0.84 cores"
        ) && message.contains("at most 0.65 cores")
            && message.contains("can never run here"),
        "{message}"
    );
    assert!(!file.exists(), "no recording started");
    assert_eq!(redis.cli(&["LLEN", "{test}:jobs"]), "0");
    assert_eq!(redis.cli(&["LLEN", "{test}:processing:w1"]), "0");
    assert!(
        run.stderr().contains("PAGECAST_TEST_MACHINE"),
        "the test machine is logged"
    );
    stop_cleanly(&mut run);
}

/// The colour shown at `at` seconds of a 640x360 recording: mostly green, no red.
fn assert_green(file: &Path, at: f64) {
    let frame = frame_rgb(file, at, 640, 360);
    let (green, red) = (frame.share(is_green), frame.share(is_red));
    assert!(
        green > 0.9 && red < 0.01,
        "{} at {at} s: {green:.2} green, {red:.2} red",
        file.display()
    );
}

/// A worker keeping one warm tree at 640x360 (`--warm 1 --warm-size 640x360`), its browser's
/// audio started ahead of the page: a job of that size takes the ready tree (logged) and the pool
/// starts another, which the next job takes. The pool refills once the job's page is loaded, not
/// beside its start. The page turns red if it finds what an earlier page stored in localStorage, else green (and
/// stores its mark): both recordings are green, the browser of the first job was not the
/// second's. Then the pooled Chromium is killed (-9): the tree is lost and replaced by a new
/// one that gets ready; so is the next one when its pulseaudio is killed.
#[test]
fn a_job_takes_a_warm_tree_the_pool_refills_and_a_pooled_browser_is_never_reused() {
    let _heavy = heavy();
    let redis = Redis::start();
    let (dir, _) = out_dir();
    let page = test_page("storage.html", "");
    let mut run = serve(&redis, "w1", &["--warm", "1", "--warm-size", "640x360"]);
    run.wait_for(events::WARM_TREE_READY, Duration::from_secs(30));
    // Its browser's audio started ahead of any page (an audio context that ran, then closed).
    run.wait_for(events::BROWSER_AUDIO_AHEAD, Duration::from_secs(10));
    let log = run.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains(events::BROWSER_AUDIO_AHEAD) && l.contains("state=running")),
        "the warm browser's audio did not start ahead of the page:\n{log}"
    );
    let mut files = Vec::new();
    for (n, id) in ["a", "b"].into_iter().enumerate() {
        if n > 0 {
            // The pool refilled behind the first job.
            run.wait_for_nth(events::WARM_TREE_READY, n + 1, Duration::from_secs(30));
        }
        files.push(push(&redis, id, dir.path(), &page, Some("3s")));
        run.wait_for_nth(events::JOB_TOOK_WARM_TREE, n + 1, Duration::from_secs(10));
        // The pool refills only once the job's page is loaded: a Chromium starting beside it
        // would slow it down.
        let loaded = run.wait_for_nth(events::PAGE_LOADED, n + 1, Duration::from_secs(30));
        let refill = run.wait_for_nth(events::WARM_TREE_STARTING, n + 2, Duration::from_secs(30));
        assert!(
            refill > loaded,
            "the pool refilled before job {id}'s page was loaded:\n{}",
            run.stderr()
        );
        wait_state(&redis, id, "done", Duration::from_secs(60));
    }
    assert_eq!(run.count(events::JOB_COLD_START), 0, "{}", run.stderr());
    for file in &files {
        assert_recorded(file, 3.0);
        let p = probe(file);
        assert_eq!(p.dimensions(), (640, 360));
        assert!(p.has_audio(), "{}", file.display());
        assert_green(file, 1.5);
    }
    // The pool's third tree, ready; its Chromium killed.
    run.wait_for_nth(events::WARM_TREE_READY, 3, Duration::from_secs(30));
    let chromium: Vec<u32> = descendants(run.child.id())
        .into_iter()
        .filter(|(_, name)| name.starts_with("chromium"))
        .map(|(pid, _)| pid)
        .collect();
    assert!(!chromium.is_empty(), "no pooled Chromium found");
    for pid in chromium {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    run.wait_for(events::WARM_TREE_LOST, Duration::from_secs(20));
    run.wait_for_nth(events::WARM_TREE_READY, 4, Duration::from_secs(30));
    // The next one's sound server killed: a tree that could not record is not kept either.
    let tree = descendants(run.child.id());
    let pulse: Vec<u32> = tree
        .iter()
        .filter(|(_, name)| name.starts_with("pulseaudio"))
        .map(|(pid, _)| *pid)
        .collect();
    assert_eq!(pulse.len(), 1, "one pooled tree's pulseaudio: {tree:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pulse[0] as i32), Signal::SIGKILL).unwrap();
    run.wait_for_nth(events::WARM_TREE_LOST, 2, Duration::from_secs(20));
    run.wait_for_nth(events::WARM_TREE_READY, 5, Duration::from_secs(30));
    stop_cleanly(&mut run);
}

/// On a worker of 0.38 cores (x 0.65 = 0.247) keeping one warm tree at 640x360@30, a job at
/// 640x360@25 (about 0.233 cores) fits only without the warm tree (held at 0.05 cores at least):
/// the tree gives way (it is stopped, the job runs cold) and the pool refills only once the job
/// has ended.
#[test]
fn a_warm_tree_gives_way_to_a_job_that_does_not_take_it_and_comes_back_after() {
    let _heavy = heavy();
    let redis = Redis::start();
    let (dir, _) = out_dir();
    let mut run = serve_sized(
        &redis,
        "cores=0.38,memory=8GiB",
        &["--warm", "1", "--warm-size", "640x360"],
    );
    run.wait_for(events::WARM_TREE_READY, Duration::from_secs(30));
    let file = dir.path().join("slow.mp4");
    let job = json!({
        "id": "slow",
        "config": {
            "input": { "url": test_page("colour.html", ""), "width": 640, "height": 360, "framerate": 25 },
            "output": { "file": file },
            "max_duration": "3s",
        },
    });
    redis.cli(&["LPUSH", "{test}:jobs", &job.to_string()]);
    run.wait_for(events::JOB_COLD_START, Duration::from_secs(10));
    run.wait_for(events::WARM_TREE_GAVE_WAY, Duration::from_secs(5));
    wait_state(&redis, "slow", "done", Duration::from_secs(60));
    let ended = run.wait_for("recording ended", Duration::from_secs(5));
    let back = run.wait_for_nth(events::WARM_TREE_READY, 2, Duration::from_secs(30));
    assert!(back > ended, "the pool refilled while the job ran");
    assert_eq!(run.count(events::WARM_TREE_LOST), 0, "{}", run.stderr());
    assert_recorded(&file, 3.0);
    assert_green(&file, 1.5);
    stop_cleanly(&mut run);
}

/// The `nice` of every thread of `root` and of its descendants: (process name/thread id, nice).
/// Each thread below `root` (and of it): its process's name, its own name and id, its `nice`.
struct Thread {
    process: String,
    name: String,
    nice: i64,
}

impl std::fmt::Debug for Thread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} {}", self.process, self.name, self.nice)
    }
}

fn threads_nice(root: u32) -> Vec<Thread> {
    std::iter::once(root)
        .chain(descendants(root).into_iter().map(|(pid, _)| pid))
        .flat_map(|pid| {
            let threads = threads(pid);
            // A process is named as its main thread (whose id is the process's).
            let process = threads
                .iter()
                .find(|(tid, _, _)| *tid == pid)
                .map(|(_, name, _)| name.clone())
                .unwrap_or_default();
            threads.into_iter().map(move |(tid, name, nice)| Thread {
                process: process.clone(),
                name: format!("{name}/{tid}"),
                nice,
            })
        })
        .collect()
}

/// The pid the first JSON log line with `needle` gives for job `id`, waited for (30 s at most).
fn logged_pid(run: &Run, needle: &str, id: &str) -> u32 {
    let find = || {
        run.stderr()
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["job"] == id)
            .and_then(|v| v["pid"].as_u64())
    };
    run.wait_until(
        &format!("a {needle:?} line with a pid for job {id}"),
        Duration::from_secs(30),
        || find().is_some(),
    );
    find().expect("found") as u32
}

/// A job whose page keeps two web workers busy (`hog.html?what=cpu`) uses far more than the
/// 0.25 cores admission reserved for it (640x360@30): every thread of its browser, those born
/// after too, is set to the lowest priority, said once; the rest of its recording (pagecast,
/// Xvfb, ffmpeg) keeps its own, and so does the job beside it. The other job is taken though the
/// hog measures more than this worker's whole budget (1.3 cores): once put last, the hog counts
/// for its allowance (0.62). Both recordings go on to their stop and are kept whole.
#[test]
fn a_recording_using_more_than_its_share_of_the_cpu_runs_last_and_is_kept_whole() {
    let _heavy = heavy();
    let redis = Redis::start();
    let (dir, _) = out_dir();
    let hog = push(
        &redis,
        "hog",
        dir.path(),
        &test_page("hog.html", "what=cpu"),
        Some("90s"),
    );
    let calm = push(
        &redis,
        "calm",
        dir.path(),
        &test_page("colour.html", ""),
        Some("90s"),
    );
    let mut run = serve_sized(&redis, "cores=2,memory=8GiB", &["--max-recordings", "2"]);
    wait_state(&redis, "calm", "running", Duration::from_secs(60));
    run.wait_for(events::RECORDING_PUT_LAST, Duration::from_secs(40));
    let hog_pid = logged_pid(&run, events::RECORDING_PUT_LAST, "hog");
    let calm_pid = logged_pid(&run, "recording started", "calm");
    let browser = |t: &Thread| t.process == "chromium";
    // A thread born since the last pass is set at the next (every second).
    run.wait_until(
        "every thread of the hog's browser at the lowest priority",
        Duration::from_secs(5),
        || {
            let threads = threads_nice(hog_pid);
            threads.iter().any(browser)
                && threads.iter().filter(|t| browser(t)).all(|t| t.nice == 19)
        },
    );
    let hog_threads = threads_nice(hog_pid);
    assert!(
        hog_threads
            .iter()
            .any(|t| browser(t) && t.name.starts_with("DedicatedWorker")),
        "the page's workers are the browser's: {hog_threads:?}"
    );
    for process in ["pagecast", "Xvfb", "ffmpeg"] {
        let threads: Vec<&Thread> = hog_threads
            .iter()
            .filter(|t| t.process == process)
            .collect();
        assert!(
            !threads.is_empty() && threads.iter().all(|t| t.nice < 19),
            "the hog's {process} keeps its priority: {hog_threads:?}"
        );
    }
    // The other recording's threads keep what they were given (this test's own nice, or what
    // Chromium and PulseAudio set some of theirs to: higher for audio, I/O and the compositor,
    // lower for background work), never the lowest.
    let me = std::process::id();
    let own = threads(me)
        .into_iter()
        .find(|(tid, _, _)| *tid == me)
        .map(|(_, _, nice)| nice)
        .expect("this test's own main thread");
    assert!(own < 19, "run this test above the lowest priority");
    // (Taken once the hog counts for its allowance: its tree may still be starting.)
    run.wait_until(
        "the other recording's browser and encoder",
        Duration::from_secs(30),
        || {
            let threads = threads_nice(calm_pid);
            ["chromium", "ffmpeg"]
                .iter()
                .all(|p| threads.iter().any(|t| t.process == *p))
        },
    );
    // Three seconds of it recorded: measurements that would have put its browser last too.
    run.wait_until(
        "3 s of the other recording",
        Duration::from_secs(30),
        || seconds_written(&calm) >= 3.0,
    );
    let calm_threads = threads_nice(calm_pid);
    assert!(calm_threads.iter().all(|t| t.nice < 19), "{calm_threads:?}");
    // Both stopped: each file holds its recording to the stop.
    for id in ["hog", "calm"] {
        let stop = json!({ "stop": id }).to_string();
        redis.cli(&["PUBLISH", "test:control", &stop]);
    }
    wait_state(&redis, "hog", "done", Duration::from_secs(60));
    wait_state(&redis, "calm", "done", Duration::from_secs(60));
    assert_eq!(run.count(events::RECORDING_PUT_LAST), 1, "{}", run.stderr());
    // The hog was put last after ten measurements a second apart from its first frame on (9 s
    // and more), the other had recorded 3 s; both were stopped after that.
    for (file, least) in [(&hog, 8.5), (&calm, 3.0)] {
        let p = probe(file);
        assert_eq!(p.video_codec(), "h264", "{}", file.display());
        assert_eq!(p.dimensions(), (640, 360), "{}", file.display());
        assert!(p.has_audio(), "{}", file.display());
        assert!(
            p.duration() >= least,
            "{}: {} s",
            file.display(),
            p.duration()
        );
    }
    assert_green(&hog, probe(&hog).duration() - 0.5);
    stop_cleanly(&mut run);
}
