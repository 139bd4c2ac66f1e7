//! The container image, built and run for real: `scripts/container-image.sh` builds the
//! Dockerfile with podman (a debootstrap-made Debian bookworm base, this build's binary in the
//! runtime stage), and each test runs it as the README's `docker run` does, with podman (runc,
//! no network): a recording lands in the mounted folder, owned by the image's user, checked with
//! ffprobe on the host; `podman stop` finishes it and its S3 upload; `podman kill` leaves a playable file; a bad
//! config is one line and exit 2; `pagecast check` answers; a `pagecast serve` worker beside a
//! Redis runs a job; Docker's default 64 MiB /dev/shm does not crash Chromium. Every failure
//! prints the container's log. Needs root, podman, runc and debootstrap (scripts/setup.sh);
//! missing, the tests fail.
mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Run, BIN};
use pagecast_actors::events;
use pagecast_testkit::container::{image, pages_volume, Container, OutDir};
use pagecast_testkit::livekit::Netns;
use pagecast_testkit::{heavy, mean_volume_db, probe, repo_root, wait_until};
use serde_json::json;

/// Docker's default grace between `docker stop`'s SIGTERM and its SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The S3 secret in a config: it must never reach the container's log.
const S3_SECRET: &str = "wJalrXUtnFEMI-not-a-real-secret";

/// `podman run` of the image with `LIVEKIT_RECORDER_CONFIG` passed from podman's environment
/// (`-e NAME` without a value), so the config is never on a command line.
fn run_with_config(
    container: &Container,
    image: &str,
    config: &serde_json::Value,
    options: &[&str],
    args: &[&str],
) -> Run {
    let mut options = options.to_vec();
    options.extend(["-e", "LIVEKIT_RECORDER_CONFIG"]);
    let mut cmd = container.run(&options, image, args);
    cmd.env("LIVEKIT_RECORDER_CONFIG", config.to_string());
    Run::spawn(cmd)
}

#[test]
fn the_demo_recording_lands_in_the_mounted_folder_owned_by_uid_1000() {
    let _heavy = heavy();
    let image = image(BIN.as_ref());
    let out = OutDir::new();
    let container = Container::named("demo");
    let mut run = Run::spawn(container.run(
        &["-v", &out.volume()],
        image,
        &["demo", "--output", "/app/out/demo.mp4", "--duration", "5s"],
    ));
    let (status, _) = run.wait(Duration::from_secs(120));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    let file = out.path.join("demo.mp4");
    let meta = std::fs::metadata(&file)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), run.stderr()));
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1000, 1000),
        "the recording is not the image user's:\n{}",
        run.stderr()
    );
    let log = run.stderr();
    let p = probe(&file);
    assert_eq!(p.video_codec(), "h264", "{log}");
    assert_eq!(p.dimensions(), (1280, 720), "{log}");
    assert!(
        (p.duration() - 5.0).abs() <= 0.5,
        "duration {} for 5 s:\n{log}",
        p.duration()
    );
    assert!(
        p.frames() >= 135,
        "only {} frames in 5 s at 30 fps:\n{log}",
        p.frames()
    );
    assert_eq!(p.audio_codec(), "aac", "{log}");
    let volume = mean_volume_db(&file);
    assert!(
        volume > -50.0,
        "the demo's tone is missing: {volume} dB:\n{log}"
    );
}

#[test]
fn podman_stop_finishes_a_named_recording_and_its_upload_with_exit_0_within_the_grace() {
    let _heavy = heavy();
    let image = image(BIN.as_ref());
    // The container and moto's S3 server share a network namespace of the test's own.
    let netns = Netns::create();
    let mut moto = netns
        .command(repo_root().join(".venv/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", "5000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server (run scripts/setup.sh)");
    wait_until("moto to listen", Duration::from_secs(30), || {
        netns.can_connect("127.0.0.1", 5000)
    });
    let s3 = |args: &[&str]| {
        let out = netns
            .command(repo_root().join(".venv/bin/python"))
            .arg(repo_root().join("tests/support/s3.py"))
            .arg("http://127.0.0.1:5000")
            .args(args)
            .output()
            .expect("run tests/support/s3.py");
        assert!(
            out.status.success(),
            "s3.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    s3(&["mkbucket", "recordings"]);
    let out = OutDir::new();
    let container = Container::named("stop");
    let config = json!({
        "input": { "url": "file:///pages/end.html?ms=600000", "width": 1280, "height": 720 },
        "output": {
            "file": "/app/out/stopped.mp4",
            "s3": {
                "access_key": "AKIAPAGECASTTEST", "secret": S3_SECRET,
                "bucket": "recordings", "key": "stopped.mp4", "endpoint": "http://127.0.0.1:5000",
            },
        },
    });
    let network = format!("ns:/run/netns/{}", netns.name);
    let (volume, pages) = (out.volume(), pages_volume());
    let options = ["--network", &network, "-v", &volume, "-v", &pages];
    let mut run = run_with_config(&container, image, &config, &options, &[]);
    run.wait_for(events::PAGE_LOADED, Duration::from_secs(120));
    // Record for a while: this sleep is the recording's length, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(5));
    let sent = Instant::now();
    let stop = container.podman("stop", &[]);
    assert!(
        stop.status.success(),
        "podman stop: {}\n{}",
        String::from_utf8_lossy(&stop.stderr),
        run.stderr()
    );
    let (status, exited) = run.wait(Duration::from_secs(30));
    let log = run.stderr();
    assert_eq!(
        status.code(),
        Some(0),
        "not a clean stop ({status}):\n{log}"
    );
    assert!(
        exited - sent < STOP_GRACE,
        "the stop took {:?}, past Docker's grace:\n{log}",
        exited - sent
    );
    assert!(log.contains("recording complete"), "{log}");
    assert!(!log.contains(S3_SECRET), "the secret reached the log");
    let file = out.path.join("stopped.mp4");
    let p = probe(&file);
    assert_eq!(p.video_codec(), "h264");
    assert_eq!(p.dimensions(), (1280, 720));
    // About 5 s recorded before the stop (plus the page's start): the file holds all of it.
    assert!(
        p.duration() >= 4.5 && p.duration() <= 9.0,
        "duration {}:\n{log}",
        p.duration()
    );
    assert!(
        p.frames() as f64 >= p.duration() * 25.0,
        "{} frames in {} s",
        p.frames(),
        p.duration()
    );
    assert_eq!(p.audio_codec(), "aac");
    // The upload finished before the exit: the object is the file, byte for byte.
    let object = out.path.join("object.mp4");
    s3(&["get", "recordings", "stopped.mp4", object.to_str().unwrap()]);
    assert!(
        std::fs::read(&object).unwrap() == std::fs::read(&file).unwrap(),
        "the object and the file differ"
    );
    let _ = moto.kill();
    let _ = moto.wait();
}

#[test]
fn a_bad_config_is_one_line_and_exit_2() {
    let _heavy = heavy();
    let image = image(BIN.as_ref());
    let container = Container::named("badconfig");
    let config = json!({
        "input": { "url": "https://example.com", "width": 1281 },
        "output": { "file": "/app/out/bad.mp4" },
    });
    let out = container
        .run(&["-e", "LIVEKIT_RECORDER_CONFIG"], image, &[])
        .env("LIVEKIT_RECORDER_CONFIG", config.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run podman");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(lines[0].starts_with("pagecast: config: "), "{stderr}");
    assert!(
        lines[0].contains("input.width"),
        "the field is not named: {stderr}"
    );
}

#[test]
fn podman_kill_leaves_a_playable_file() {
    let _heavy = heavy();
    let out = OutDir::new();
    let container = Container::named("kill");
    let config = json!({
        "input": { "url": "file:///pages/end.html?ms=600000", "width": 1280, "height": 720 },
        "output": { "file": "/app/out/killed.mp4" },
    });
    let mut run = run_with_config(
        &container,
        image(BIN.as_ref()),
        &config,
        &["-v", &out.volume(), "-v", &pages_volume()],
        &[],
    );
    run.wait_for(events::PAGE_LOADED, Duration::from_secs(120));
    // Record for a while: this sleep is the recording's length, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(5));
    // SIGKILL to the container's PID 1: every process in it dies at once, nothing finishes.
    let kill = container.podman("kill", &[]);
    assert!(
        kill.status.success(),
        "podman kill: {}\n{}",
        String::from_utf8_lossy(&kill.stderr),
        run.stderr()
    );
    let (status, _) = run.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(137), "{status}:\n{}", run.stderr());
    // Fragmented MP4: what was written before the kill plays.
    let p = probe(&out.path.join("killed.mp4"));
    assert_eq!(p.video_codec(), "h264", "{}", run.stderr());
    assert!(
        p.duration() >= 3.0,
        "only {} s playable of about 5:\n{}",
        p.duration(),
        run.stderr()
    );
    assert!(
        p.frames() as f64 >= p.duration() * 25.0,
        "{} frames",
        p.frames()
    );
}

#[test]
fn pagecast_check_answers_in_the_image() {
    let _heavy = heavy();
    let image = image(BIN.as_ref());
    let container = Container::named("check");
    let config = json!({
        "input": { "url": "https://example.com", "width": 1280, "height": 720 },
        "output": { "file": "/app/out/checked.mp4" },
    });
    let out = container
        .run(&["-e", "LIVEKIT_RECORDER_CONFIG"], image, &["check"])
        .env("LIVEKIT_RECORDER_CONFIG", config.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run podman");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("/app/out/checked.mp4"), "{stdout}");
}

#[test]
fn the_image_runs_a_serve_worker_beside_a_redis() {
    let _heavy = heavy();
    let image = image(BIN.as_ref());
    // The worker and its Redis share a network namespace of the test's own (its loopback only).
    let netns = Netns::create();
    let mut redis = netns
        .command("redis-server")
        .args([
            "--port",
            "6379",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (run scripts/setup.sh)");
    let cli = |args: &[&str]| -> String {
        let out = netns
            .command("redis-cli")
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    wait_until("redis-server to answer", Duration::from_secs(10), || {
        cli(&["PING"]) == "PONG"
    });
    let out = OutDir::new();
    let container = Container::named("serve");
    let network = format!("ns:/run/netns/{}", netns.name);
    // As the README's `docker run` does: the Redis URL and the job key from the environment.
    let mut worker = container.run(
        &[
            "--network",
            &network,
            "-v",
            &out.volume(),
            "-v",
            &pages_volume(),
            "-e",
            "PAGECAST_REDIS_URL",
            "-e",
            "PAGECAST_JOB_KEY",
        ],
        image,
        // The service policy: jobs write under /app/out; this test's page is a mounted file.
        &[
            "serve",
            "--queue",
            "test",
            "--output-root",
            "/app/out",
            "--allow-file-urls",
        ],
    );
    worker
        .env("PAGECAST_REDIS_URL", "redis://127.0.0.1:6379")
        .env("PAGECAST_JOB_KEY", "5a".repeat(32));
    let mut run = Run::spawn(worker);
    let job = json!({
        "id": "in-a-container",
        "config": {
            "input": { "url": "file:///pages/end.html?ms=3000", "width": 640, "height": 360 },
            "output": { "file": "/app/out/job.mp4" },
        },
    });
    cli(&["LPUSH", "{test}:jobs", &job.to_string()]);
    wait_until("the job to be done", Duration::from_secs(120), || {
        let state = cli(&["HGET", "{test}:job:in-a-container", "state"]);
        assert!(
            state != "failed",
            "the job failed: {}\n{}",
            cli(&["HGET", "{test}:job:in-a-container", "message"]),
            run.stderr()
        );
        state == "done"
    });
    let stop = container.podman("stop", &[]);
    assert!(stop.status.success(), "podman stop: {stop:?}");
    let (status, _) = run.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status}:\n{}", run.stderr());
    let p = probe(&out.path.join("job.mp4"));
    assert_eq!(p.dimensions(), (640, 360), "{}", run.stderr());
    // The page ends its recording 3 s after loading (the recording starts before the page has
    // loaded, sooner on a busy machine).
    assert!(
        p.duration() >= 2.5 && p.duration() <= 8.0,
        "duration {}:\n{}",
        p.duration(),
        run.stderr()
    );
    let _ = redis.kill();
    let _ = redis.wait();
}

#[test]
fn a_heavy_1080p_page_records_without_a_chromium_crash_in_dockers_64_mib_dev_shm() {
    let _heavy = heavy();
    let out = OutDir::new();
    let container = Container::named("shm");
    // 10 fps keeps the encoder light; the page's shared memory does not depend on it.
    let config = json!({
        "input": { "url": "file:///pages/layers.html", "width": 1920, "height": 1080, "framerate": 10 },
        "output": { "file": "/app/out/layers.mp4" },
        "max_duration": "6s",
    });
    let mut run = run_with_config(
        &container,
        image(BIN.as_ref()),
        &config,
        &[
            "--shm-size",
            "64m",
            "-v",
            &out.volume(),
            "-v",
            &pages_volume(),
        ],
        &[],
    );
    run.wait_for(events::PAGE_LOADED, Duration::from_secs(120));
    // The container's /dev/shm is Docker's default size, not the host's.
    let df = container.exec(&["df", "-k", "--output=size", "/dev/shm"]);
    let size_kib = String::from_utf8_lossy(&df.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse::<u64>().ok());
    assert_eq!(
        size_kib,
        Some(64 * 1024),
        "/dev/shm: {}{}",
        String::from_utf8_lossy(&df.stdout),
        String::from_utf8_lossy(&df.stderr)
    );
    let (status, _) = run.wait(Duration::from_secs(120));
    let log = run.stderr();
    assert!(status.success(), "{status}:\n{log}");
    for crash in ["child crashed", "restarting", "tab crashed"] {
        assert!(!log.contains(crash), "{crash:?} in the log:\n{log}");
    }
    let p = probe(&out.path.join("layers.mp4"));
    assert_eq!(p.dimensions(), (1920, 1080));
    assert!(
        (p.duration() - 6.0).abs() <= 0.6,
        "duration {}:\n{log}",
        p.duration()
    );
    assert!(
        p.frames() >= 50,
        "only {} frames in 6 s at 10 fps",
        p.frames()
    );
    assert!(mean_volume_db(&out.path.join("layers.mp4")) > -50.0);
}
