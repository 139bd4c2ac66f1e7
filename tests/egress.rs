//! End to end: LiveKit's Egress API on `pagecast serve --http`, called by LiveKit's own Python
//! server SDK (`livekit-api`, tests/support/egress.py), against a real redis-server; the
//! recordings are checked with ffprobe.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use pagecast_actors::events::{self, API_LISTENING};
use pagecast_testkit::livekit::{LiveKitServer, Media, Netns, Participant};
use pagecast_testkit::{
    frame_rgb, free_port, heavy, is_blue, is_green, is_red, probe, repo_root, seconds_written,
    test_page, tone_volume_db, wait_until, Moto, Nginx, Redis,
};
use serde_json::Value;

const JOB_KEY: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff";
const API_KEY: &str = "APIpagecast";
const API_SECRET: &str = "the-secret-of-the-pagecast-test-key-000";
const STREAM_KEY: &str = "sk-egress-test-7f3a9c";
/// The key of the stream added while recording (UpdateStream).
const ADDED_KEY: &str = "added-egress-test-5d21e8";
/// The token in the URL of a request's own webhook.
const HOOK_TOKEN: &str = "hook-token-of-the-egress-test-4b1e";
const S3_SECRET: &str = "s3-secret-of-the-egress-test-0123456789";

/// A worker serving the API on a free port; its URL.
fn serve_api(redis: &Redis, out: &Path) -> (Run, String) {
    serve_api_with(redis, out, "api-worker", &[])
}

fn serve_api_with(redis: &Redis, out: &Path, worker: &str, extra: &[&str]) -> (Run, String) {
    let port = free_port();
    let keys = out.join("keys.yaml");
    std::fs::write(&keys, format!("{API_KEY}: {API_SECRET}\n")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-format", "json", "serve"])
        .args(["--queue", "test", "--worker-id", worker])
        .arg("--allow-file-urls")
        .arg(format!("--output-root={}", out.display()))
        .arg(format!("--http=127.0.0.1:{port}"))
        .arg(format!("--keys={}", keys.display()))
        .args(extra)
        .env("PAGECAST_REDIS_URL", redis.url())
        .env("PAGECAST_JOB_KEY", JOB_KEY);
    let mut run = Run::spawn(cmd);
    run.wait_for(API_LISTENING, Duration::from_secs(20));
    (run, format!("http://127.0.0.1:{port}"))
}

/// Runs tests/support/egress.py; its JSON answer.
fn client(url: &str, args: &[&str]) -> Value {
    let python = Command::new(repo_root().join(".venv/bin/python"));
    client_with(python, (url, API_KEY, API_SECRET), args)
}

/// The same with `python` (a command, maybe in a namespace) and (URL, key, secret).
fn client_with(
    mut python: Command,
    (url, key, secret): (&str, &str, &str),
    args: &[&str],
) -> Value {
    let out = python
        .arg(repo_root().join("tests/support/egress.py"))
        .args(args)
        .env("LIVEKIT_URL", url)
        .env("LIVEKIT_API_KEY", key)
        .env("LIVEKIT_API_SECRET", secret)
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "egress.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "egress.py {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// tests/support/webhook_receiver.py on a free port: it verifies every webhook with LiveKit's
/// WebhookReceiver and writes one JSON line per request to `log`. Killed on drop.
struct Receiver {
    child: std::process::Child,
    url: String,
    log: std::path::PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        let port = free_port();
        let log = dir.join(format!("webhooks-{port}.jsonl"));
        let child = Command::new(repo_root().join(".venv/bin/python"))
            .arg(repo_root().join("tests/support/webhook_receiver.py"))
            .arg(port.to_string())
            .arg(&log)
            .env("LIVEKIT_API_KEY", API_KEY)
            .env("LIVEKIT_API_SECRET", API_SECRET)
            .spawn()
            .expect("run the venv's python");
        wait_until(
            "the webhook receiver to listen",
            Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Receiver {
            child,
            url: format!("http://127.0.0.1:{port}/hook"),
            log,
        }
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The id of the egress a start call answered with (failing with the answer when it is none).
fn egress_id(started: &Value) -> String {
    started["egress_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"))
        .to_owned()
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn stop_cleanly(run: &mut Run) {
    run.signal(Signal::SIGTERM);
    let (status, _) = run.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", run.stderr());
}

#[test]
fn tokens_with_a_wrong_secret_expired_or_without_room_record_are_refused_with_twirp_codes() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut run, url) = serve_api(&redis, dir.path());
    let codes = client(&url, &["tokens"]);
    assert_eq!(codes["wrong_secret"], "unauthenticated", "{codes}");
    assert_eq!(codes["expired"], "unauthenticated", "{codes}");
    assert_eq!(codes["no_grant"], "permission_denied", "{codes}");
    assert_eq!(codes["good"], "ok", "{codes}");
    assert_eq!(codes["json"], 200, "{codes}");
    // A request pagecast cannot serve is refused naming the field, and nothing is queued.
    let refused = client(&url, &["start-web", "", "a.mp4", "640", "360"]);
    assert_eq!(refused["error"], "invalid_argument", "{refused}");
    assert!(
        refused["msg"].as_str().unwrap().starts_with("url:"),
        "{refused}"
    );
    // The service's policy holds for API jobs: nothing is written outside the output root.
    let outside = client(
        &url,
        &[
            "start-web",
            &test_page("silent.html", ""),
            "../a.mp4",
            "640",
            "360",
        ],
    );
    assert_eq!(outside["error"], "invalid_argument", "{outside}");
    assert!(
        outside["msg"].as_str().unwrap().contains("output.file"),
        "{outside}"
    );
    // A request's own webhook: to a host an endpoint may be on (not this machine's loopback,
    // which this worker does not allow), signed with a key of this service.
    let page = test_page("silent.html", "");
    for (hook, field) in [
        (
            &["--webhook", "http://127.0.0.1:9/hook"][..],
            "webhooks[0].url",
        ),
        (
            &["--webhook", "http://10.9.9.9/hook", "--signing-key", "NOPE"][..],
            "webhooks[0].signing_key",
        ),
    ] {
        let mut args = vec!["start-web", &page, "a.mp4", "640", "360"];
        args.extend(hook);
        let refused = client(&url, &args);
        assert_eq!(refused["error"], "invalid_argument", "{refused}");
        assert!(
            refused["msg"].as_str().unwrap().contains(field),
            "{refused}"
        );
    }
    assert_eq!(redis.cli(&["LLEN", "{test}:jobs"]).trim(), "0");
    // Health, and the calls counted by method and answer.
    let health = health(&url);
    assert_eq!(health["redis"], "ok", "{health}");
    let metrics = get(&url, "/metrics");
    let value = |name: &str, labels: &[&str]| -> Option<f64> {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let calls = |method: &str, code: &str| {
        value(
            "pagecast_api_requests_total",
            &[&format!("method=\"{method}\""), &format!("code=\"{code}\"")],
        )
    };
    assert_eq!(
        calls("ListEgress", "unauthenticated"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        calls("ListEgress", "permission_denied"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(calls("ListEgress", "ok"), Some(2.0), "{metrics}");
    assert_eq!(
        calls("StartWebEgress", "invalid_argument"),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(value("pagecast_queue_length", &[]), Some(0.0), "{metrics}");
    stop_cleanly(&mut run);
}

/// The value of the first series `name` of a Prometheus scrape with every label in `labels`.
fn series(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `/healthz`'s JSON body.
fn health(url: &str) -> Value {
    let answer = get(url, "/healthz");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// A plain HTTP GET; the whole answer, status line first.
fn get(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_web_egress_started_by_the_sdk_is_listed_active_stopped_and_complete_with_its_file() {
    let _heavy = heavy();
    let redis = Redis::start();
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    // The request's own webhook (its URL with a token, and without egress_updated).
    let own = Receiver::start(dir.path());
    let own_url = format!("{}?token={HOOK_TOKEN}", own.url);
    // Two workers on one queue, both serving the API: the egress is started through the first
    // and followed and stopped through the second, whichever runs it.
    let flags = [
        &format!("--webhook={}", receiver.url),
        "--allow-endpoint-host=127.0.0.1",
    ];
    let (mut first, url) = serve_api_with(&redis, dir.path(), "w1", &flags);
    let (mut second, other) = serve_api_with(&redis, dir.path(), "w2", &flags);
    let page = test_page("silent.html", "");
    let stream = nginx.url("live", STREAM_KEY);
    let mut answers = Vec::new();
    let mut client = |url: &str, args: &[&str]| {
        let answer = client(url, args);
        answers.push(answer.to_string());
        answer
    };
    let started = client(
        &url,
        &[
            "start-web",
            &page,
            "egress.mp4",
            "640",
            "360",
            &stream,
            "--hls",
            "hls",
            "--images",
            "shots",
            "--webhook",
            &own_url,
            "--no-updates",
        ],
    );
    let id = egress_id(&started);
    assert!(id.starts_with("EG_"), "{started}");
    assert_eq!(started["status"], "EGRESS_STARTING", "{started}");
    let file = dir.path().canonicalize().unwrap().join("egress.mp4");

    // ACTIVE among the active ones, once its recording runs.
    wait_until(
        "the egress to be listed active",
        Duration::from_secs(60),
        || {
            let list = client(&other, &["list", "--active"]);
            items(&list)
                .iter()
                .any(|i| i["egress_id"] == id.as_str() && i["status"] == "EGRESS_ACTIVE")
        },
    );
    wait_until("3 s recorded", Duration::from_secs(60), || {
        seconds_written(&file) >= 3.0
    });
    // /healthz: the worker running it counts it, with cores and memory used and left.
    wait_until(
        "/healthz to count the recording",
        Duration::from_secs(10),
        || {
            let (a, b) = (health(&url), health(&other));
            let running = |h: &Value| h["capacity"]["recordings"].as_u64().unwrap_or(0);
            running(&a) + running(&b) == 1
        },
    );
    // Each worker (no test machine given) calibrated itself before taking jobs: it logged the
    // probe's figures, and /healthz and /metrics give the factor it scales job costs by.
    for (run, url) in [(&first, &url), (&second, &other)] {
        let line = run
            .stderr()
            .lines()
            .find(|l| l.contains(events::MACHINE_CALIBRATED))
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .unwrap_or_else(|| panic!("no calibration logged: {}", run.stderr()));
        let logged = line["cost_factor"]
            .as_f64()
            .unwrap_or_else(|| panic!("{line}"));
        assert!((0.25..=4.0).contains(&logged), "{line}");
        assert!(line["cpu_seconds"].as_f64().unwrap() > 0.05, "{line}");
        // The same factor, to the last digits a text format may round.
        let same = |v: Option<f64>| v.is_some_and(|v| (v - logged).abs() <= 1e-9 * logged);
        let healthz = health(url)["capacity"]["cost_factor"].as_f64();
        assert!(same(healthz), "{healthz:?} against {logged}");
        let metrics = get(url, "/metrics");
        let scraped = series(&metrics, "pagecast_cost_factor", &[]);
        assert!(same(scraped), "{scraped:?} against {logged}");
        let h = health(url);
        for (gauge, field) in [
            ("pagecast_capacity_recordings", "recordings"),
            ("pagecast_capacity_cores_left", "cores_left"),
            ("pagecast_capacity_memory_used_bytes", "memory_used"),
        ] {
            let scraped = series(&metrics, gauge, &[]).unwrap_or_else(|| panic!("{metrics}"));
            assert!(scraped >= 0.0, "{gauge}: {scraped}");
            // Counted every second: the scrape and /healthz may be a count apart.
            if field == "recordings" {
                assert_eq!(scraped, h["capacity"][field].as_f64().unwrap(), "{h}");
            }
        }
    }
    for h in [health(&url), health(&other)] {
        let c = &h["capacity"];
        assert!(c["max_recordings"].as_u64().unwrap() >= 1, "{h}");
        assert!(c["cores_left"].as_f64().unwrap() >= 0.0, "{h}");
        if c["recordings"] == 1 {
            assert!(c["cores_used"].as_f64().unwrap() > 0.0, "{h}");
            assert!(c["memory_used"].as_u64().unwrap() > 100 << 20, "{h}");
        }
    }

    // UpdateStream: a second URL (another key on the same nginx) receives the stream while it
    // records, then is removed and ends, while the first goes on.
    let added = nginx.url("live", ADDED_KEY);
    let streamed = |key: &str| -> Option<(f64, PathBuf)> {
        nginx
            .recordings()
            .into_iter()
            .filter(|f| f.file_name().unwrap().to_string_lossy().starts_with(key))
            .map(|f| (seconds_written(&f), f))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let masked_added = added.replace(ADDED_KEY, "****");
    let updated = client(&other, &["update-stream", &id, "--add", &added]);
    assert_eq!(
        updated["stream_results"][1]["url"],
        masked_added.as_str(),
        "{updated}"
    );
    assert_eq!(
        updated["stream_results"][1]["status"], "ACTIVE",
        "{updated}"
    );
    wait_until(
        "the added URL to receive 1.5 s of the stream",
        Duration::from_secs(30),
        || streamed(ADDED_KEY).is_some_and(|(s, _)| s >= 1.5),
    );
    // Removing a URL the egress does not stream to is refused, naming the field.
    let wrong = client(
        &url,
        &["update-stream", &id, "--remove", &nginx.url("live", "nope")],
    );
    assert_eq!(wrong["error"], "invalid_argument", "{wrong}");
    assert!(
        wrong["msg"]
            .as_str()
            .unwrap()
            .starts_with("remove_output_urls[0]"),
        "{wrong}"
    );
    let removed = client(&url, &["update-stream", &id, "--remove", &added]);
    assert_eq!(
        removed["stream_results"][1]["status"], "FINISHED",
        "{removed}"
    );
    assert_eq!(
        removed["stream_results"][0]["status"], "ACTIVE",
        "{removed}"
    );
    // The added stream ends while the first goes on: 2 s more of the first, then 1 s more, and
    // the added one has not grown in between.
    let first_at_removal = streamed(STREAM_KEY).expect("the first stream").0;
    let mut ended_at = 0.0;
    wait_until(
        "the first stream to go on 2 s",
        Duration::from_secs(30),
        || {
            ended_at = streamed(ADDED_KEY).unwrap().0;
            streamed(STREAM_KEY).unwrap().0 >= first_at_removal + 2.0
        },
    );
    wait_until(
        "the first stream to go on 1 s more",
        Duration::from_secs(30),
        || streamed(STREAM_KEY).unwrap().0 >= first_at_removal + 3.0,
    );
    let (added_seconds, added_flv) = streamed(ADDED_KEY).unwrap();
    assert_eq!(
        added_seconds, ended_at,
        "the removed stream went on: {added_flv:?}"
    );
    let p = probe(&added_flv);
    assert_eq!(p.video_codec(), "h264", "{added_flv:?}");
    assert!(p.duration() > 1.0, "{added_flv:?}: {} s", p.duration());

    let stopping = client(&other, &["stop", &id]);
    assert_eq!(stopping["status"], "EGRESS_ENDING", "{stopping}");

    let mut done = Value::Null;
    wait_until("the egress to be complete", Duration::from_secs(60), || {
        done = items(&client(&other, &["list", "--id", &id]))
            .pop()
            .unwrap_or_default();
        assert_ne!(done["status"], "EGRESS_FAILED", "{done}");
        done["status"] == "EGRESS_COMPLETE"
    });
    // The file results are the file's.
    let p = probe(&file);
    assert_eq!(p.video_codec(), "h264");
    let results = done["file_results"]
        .as_array()
        .unwrap_or_else(|| panic!("{done}"));
    assert_eq!(results.len(), 1, "{done}");
    let f = &results[0];
    assert_eq!(f["filename"], file.display().to_string(), "{done}");
    assert_eq!(f["location"], file.display().to_string(), "{done}");
    let size: u64 = f["size"].as_str().unwrap().parse().unwrap();
    assert_eq!(size, std::fs::metadata(&file).unwrap().len(), "{done}");
    let duration = f["duration"].as_str().unwrap().parse::<f64>().unwrap() / 1e9;
    assert!(
        (duration - p.duration()).abs() <= 0.1,
        "{duration} s reported, {} s in the file",
        p.duration()
    );
    let (from, to): (f64, f64) = (
        done["started_at"].as_str().unwrap().parse().unwrap(),
        done["ended_at"].as_str().unwrap().parse().unwrap(),
    );
    assert!(to > from && from > 0.0, "{done}");
    // No longer active; still listed (on either worker's API).
    assert!(items(&client(&other, &["list", "--active"])).is_empty());
    assert_eq!(items(&client(&url, &["list"])).len(), 1);
    // Stopping it again is refused: it is over.
    assert_eq!(
        client(&other, &["stop", &id])["error"],
        "failed_precondition"
    );
    assert_eq!(client(&url, &["stop", "EG_none"])["error"], "not_found");
    // /metrics: the recordings' series, summed over both workers (one of them ran it): one
    // start, one end done, no restart, a few dropped frames at most, nothing uploaded.
    let scrapes = [get(&url, "/metrics"), get(&other, "/metrics")];
    let sum = |name: &str, labels: &[&str]| -> f64 {
        scrapes
            .iter()
            .map(|m| series(m, name, labels).unwrap_or_else(|| panic!("no {name} in {m}")))
            .sum()
    };
    assert_eq!(sum("pagecast_recordings_started_total", &[]), 1.0);
    assert_eq!(
        sum("pagecast_recordings_ended_total", &["outcome=\"done\""]),
        1.0
    );
    assert_eq!(
        sum("pagecast_recordings_ended_total", &["outcome=\"failed\""]),
        0.0
    );
    for part in ["display", "audio", "browser", "encoder", "relay"] {
        let restarts = sum("pagecast_restarts_total", &[&format!("part=\"{part}\"")]);
        assert_eq!(restarts, 0.0, "{part}");
    }
    let dropped = sum("pagecast_dropped_frames_total", &[]);
    assert!(
        dropped <= 30.0 * p.duration() * 0.1,
        "{dropped} frames dropped"
    );
    assert_eq!(sum("pagecast_uploaded_bytes_total", &[]), 0.0);
    // The segment and image outputs: HLS and snapshots in their directories, counted as they
    // are on disk.
    let root = dir.path().canonicalize().unwrap();
    let segments = &done["segment_results"][0];
    assert_eq!(
        segments["playlist_location"],
        root.join("hls/index.m3u8").display().to_string(),
        "{done}"
    );
    let on_disk = |sub: &str, ext: &str| {
        std::fs::read_dir(root.join(sub))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
            .count()
    };
    let count = |v: &Value| v.as_str().unwrap_or("0").parse::<usize>().unwrap();
    assert!(on_disk("hls", ".ts") >= 2, "{done}");
    assert_eq!(
        count(&segments["segment_count"]),
        on_disk("hls", ".ts"),
        "{done}"
    );
    let listed = segments["duration"]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        / 1e9;
    assert!(
        (listed - p.duration()).abs() < 1.5,
        "{listed} s listed, {} s in the file",
        p.duration()
    );
    let images = &done["image_results"][0];
    assert!(on_disk("shots", ".jpg") >= 3, "{done}");
    assert_eq!(
        count(&images["image_count"]),
        on_disk("shots", ".jpg"),
        "{done}"
    );
    assert_eq!(
        images["filename_prefix"],
        format!("{}/image-", root.join("shots").display()),
        "{done}"
    );
    // The stream went out, and is shown masked, finished.
    // The longest of nginx's recordings (a reconnect starts another file).
    let recorded: Vec<(f64, PathBuf)> = nginx
        .recordings()
        .into_iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(STREAM_KEY)
        })
        .map(|f| (seconds_written(&f), f))
        .collect();
    let (seconds, flv) = recorded
        .iter()
        .cloned()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .expect("nginx recorded the stream");
    assert!(seconds >= 2.0, "{seconds} s streamed: {recorded:?}");
    assert!(probe(&flv).has_audio(), "{recorded:?}");
    let masked = stream.replace(STREAM_KEY, "****");
    assert_eq!(done["stream_results"][0]["url"], masked.as_str(), "{done}");
    assert_eq!(done["stream_results"][0]["status"], "FINISHED", "{done}");
    assert_eq!(
        done["web"]["stream_outputs"][0]["urls"][0],
        masked.as_str(),
        "{done}"
    );
    // The webhooks, each verified by LiveKit's WebhookReceiver: the first delivery was refused
    // (503) and retried; started, updated (active, then ending on the stop), ended with the
    // final info.
    wait_until("egress_ended to arrive", Duration::from_secs(30), || {
        receiver
            .lines()
            .iter()
            .any(|l| l["event"] == "egress_ended")
    });
    let lines = receiver.lines();
    assert_eq!(lines[0], serde_json::json!({ "refused": true }));
    let events: Vec<(&str, &str)> = lines[1..]
        .iter()
        .map(|l| {
            assert!(l.get("error").is_none(), "{l}");
            assert_eq!(l["content_type"], "application/webhook+json");
            assert_eq!(l["egress_info"]["egress_id"], id.as_str(), "{l}");
            (
                l["event"].as_str().unwrap(),
                l["egress_info"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    // The worker running the job sends its updates in order, ending with egress_ended. The
    // API's egress_started comes from another worker: when its first delivery is refused, its
    // retry may land after the runner's first update (the README says so).
    let runner: Vec<_> = events
        .iter()
        .copied()
        .filter(|e| e.0 != "egress_started")
        .collect();
    assert_eq!(
        runner,
        vec![
            ("egress_updated", "EGRESS_ACTIVE"),
            // The stream added, then removed (UpdateStream).
            ("egress_updated", "EGRESS_ACTIVE"),
            ("egress_updated", "EGRESS_ACTIVE"),
            ("egress_updated", "EGRESS_ENDING"),
            ("egress_ended", "EGRESS_COMPLETE"),
        ],
        "{lines:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == ("egress_started", "EGRESS_STARTING"))
            .count(),
        1,
        "{lines:?}"
    );
    assert_eq!(events.len(), 6, "{lines:?}");
    assert_eq!(events.last(), Some(&("egress_ended", "EGRESS_COMPLETE")));
    let ended = &lines.last().unwrap()["egress_info"];
    assert_eq!(ended["file_results"], done["file_results"], "{ended}");
    // The request's own webhook got its egress's start and end, verified, and no update (its
    // filter); its first delivery refused and retried as well.
    wait_until(
        "egress_ended at the request's webhook",
        Duration::from_secs(30),
        || own.lines().iter().any(|l| l["event"] == "egress_ended"),
    );
    let own_lines = own.lines();
    assert_eq!(own_lines[0], serde_json::json!({ "refused": true }));
    let own_events: Vec<&str> = own_lines[1..]
        .iter()
        .map(|l| {
            assert!(l.get("error").is_none(), "{l}");
            assert_eq!(l["egress_info"]["egress_id"], id.as_str(), "{l}");
            l["event"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        own_events,
        ["egress_started", "egress_ended"],
        "{own_lines:?}"
    );
    // Each delivery counted where it was sent: the 6 events at --webhook, the 2 at the request's.
    wait_until(
        "8 webhooks counted as sent",
        Duration::from_secs(10),
        || {
            let sent = |url: &str| {
                series(
                    &get(url, "/metrics"),
                    "pagecast_webhooks_total",
                    &["outcome=\"sent\""],
                )
                .unwrap_or(0.0)
            };
            sent(&url) + sent(&other) == 8.0
        },
    );
    // No answer, no webhook and no log holds the stream key or the webhook's token; Redis keeps
    // the webhook's URL sealed.
    let webhooks = std::fs::read_to_string(&receiver.log).unwrap();
    let own_webhooks = std::fs::read_to_string(&own.log).unwrap();
    let logs = [first.stderr(), second.stderr()];
    let redis_text = redis.everything();
    assert!(
        redis_text.contains(&id),
        "Redis holds the egress: {redis_text}"
    );
    for text in answers
        .iter()
        .chain([&webhooks, &own_webhooks])
        .chain(&logs)
    {
        assert!(!text.contains(STREAM_KEY), "the stream key in {text}");
        assert!(
            !text.contains(ADDED_KEY),
            "the added stream's key in {text}"
        );
        assert!(!text.contains(HOOK_TOKEN), "the webhook's token in {text}");
    }
    assert!(
        !redis_text.contains(HOOK_TOKEN),
        "the webhook's token in Redis"
    );
    stop_cleanly(&mut first);
    stop_cleanly(&mut second);
}

/// redis-server inside a network namespace (its own loopback); killed on drop.
struct NsRedis(std::process::Child);

impl Drop for NsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A network namespace of its own with livekit-server, Redis and a worker serving the API with
/// `--livekit-url`: the worker, Redis, the SDK client and the participants all run there.
/// (Fields drop in order: the worker before the server, the namespace last.)
struct RoomWorker {
    run: Run,
    url: String,
    dir: tempfile::TempDir,
    _redis: NsRedis,
    server: LiveKitServer,
    ns: Netns,
}

impl RoomWorker {
    fn start() -> RoomWorker {
        let ns = Netns::create();
        let server = LiveKitServer::start(&ns);
        let dir = tempfile::tempdir().unwrap();
        // Everything runs in the namespace: Redis on its loopback, the worker, the SDK client.
        let (redis_port, api_port) = (6390, 7090);
        let _redis = NsRedis(
            ns.command("redis-server")
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start redis-server"),
        );
        wait_until(
            "redis-server in the namespace",
            Duration::from_secs(10),
            || ns.can_connect("127.0.0.1", redis_port),
        );
        let keys = dir.path().join("keys.yaml");
        std::fs::write(
            &keys,
            format!("{}: {}\n", server.api_key, server.api_secret),
        )
        .unwrap();
        let mut cmd = ns.command(BIN);
        cmd.args([
            "--log-format",
            "json",
            "serve",
            "--queue",
            "test",
            "--worker-id",
            "w",
        ])
        .arg(format!("--output-root={}", dir.path().display()))
        .arg(format!("--http=127.0.0.1:{api_port}"))
        .arg(format!("--keys={}", keys.display()))
        .arg(format!("--livekit-url={}", server.ws_url()))
        .env(
            "PAGECAST_REDIS_URL",
            format!("redis://127.0.0.1:{redis_port}"),
        )
        .env("PAGECAST_JOB_KEY", JOB_KEY);
        let mut run = Run::spawn(cmd);
        run.wait_for(API_LISTENING, Duration::from_secs(20));
        let url = format!("http://127.0.0.1:{api_port}");
        RoomWorker {
            run,
            url,
            dir,
            _redis,
            server,
            ns,
        }
    }

    /// tests/support/egress.py against this worker's API, in the namespace, with the server's
    /// key.
    fn call(&self, args: &[&str]) -> Value {
        let python = self.ns.command(repo_root().join(".venv/bin/python"));
        let key = (&*self.url, &*self.server.api_key, &*self.server.api_secret);
        client_with(python, key, args)
    }

    /// A participant joining `room`, in the namespace.
    fn join(&self, room: &str, media: Media) -> Participant {
        Participant::join(&self.ns, &self.server, room, media)
    }

    /// Where a file output named `name` is written (inside the output root).
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join(name)
    }

    /// The egress `id` once it is complete; failing if it fails.
    fn completed(&self, id: &str) -> Value {
        let mut done = Value::Null;
        wait_until("the egress to be complete", Duration::from_secs(60), || {
            done = items(&self.call(&["list", "--id", id]))
                .pop()
                .unwrap_or_default();
            assert_ne!(done["status"], "EGRESS_FAILED", "{done}");
            done["status"] == "EGRESS_COMPLETE"
        });
        done
    }
}

#[test]
fn a_room_composite_started_before_anyone_joined_waits_and_records_both_participants() {
    let _heavy = heavy();
    let mut w = RoomWorker::start();
    // Nobody is in the room yet (it does not exist): the recording waits for it.
    let started = w.call(&["start-room", "standup", "grid", "room.mp4", "640", "360"]);
    let id = egress_id(&started);
    assert_eq!(started["room_name"], "standup", "{started}");
    w.run
        .wait_for(events::WAITING_FOR_ROOM, Duration::from_secs(60));
    let red = w.join("standup", media("red", "FF0000", 440));
    let blue = w.join("standup", media("blue", "0000FF", 660));
    let file = w.file("room.mp4");
    wait_until("4 s recorded", Duration::from_secs(60), || {
        seconds_written(&file) >= 4.0
    });
    let active = items(&w.call(&["list", "--room", "standup", "--active"]));
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0]["status"], "EGRESS_ACTIVE");
    // UpdateLayout: an unknown layout is refused naming the field; "speaker" switches the
    // running recording from the grid (two equal tiles) to one large tile and a small one.
    let wrong = w.call(&["update-layout", &id, "single-speaker"]);
    assert_eq!(wrong["error"], "invalid_argument", "{wrong}");
    assert!(
        wrong["msg"].as_str().unwrap().starts_with("layout"),
        "{wrong}"
    );
    let updated = w.call(&["update-layout", &id, "speaker"]);
    assert_eq!(updated["room_composite"]["layout"], "speaker", "{updated}");
    w.run
        .wait_for(events::LAYOUT_SWITCHED, Duration::from_secs(20));
    let switched_at = seconds_written(&file);
    // What the file holds lags the encoder by up to a fragment (1 s): a frame 2.5 s later is
    // surely after the switch.
    wait_until("3.5 s more recorded", Duration::from_secs(60), || {
        seconds_written(&file) >= switched_at + 3.5
    });
    red.leave();
    blue.leave();
    // The layout ends the recording once the room is empty: COMPLETE, with the file.
    let done = w.completed(&id);
    assert_reported_size(&done, &file);
    let p = probe(&file);
    assert_eq!(p.dimensions(), (640, 360));
    assert!(p.duration() >= 4.0, "{} s", p.duration());
    let f = frame_rgb(&file, 2.0, 96, 54);
    let (red_share, blue_share) = (f.share(is_red), f.share(is_blue));
    assert!(
        red_share > 0.1 && blue_share > 0.1,
        "red {red_share:.2}, blue {blue_share:.2}"
    );
    // The grid showed both alike; after the switch one fills most of the frame, the other a
    // small strip tile.
    assert!(
        red_share.max(blue_share) < 2.0 * red_share.min(blue_share),
        "grid: red {red_share:.2}, blue {blue_share:.2}"
    );
    let f = frame_rgb(&file, switched_at + 2.5, 96, 54);
    let (red_after, blue_after) = (f.share(is_red), f.share(is_blue));
    let (large, small) = (red_after.max(blue_after), red_after.min(blue_after));
    assert!(
        large > 0.35 && large > 3.0 * small && large > red_share.max(blue_share) * 1.3,
        "speaker: red {red_after:.2}, blue {blue_after:.2} (grid: red {red_share:.2}, blue {blue_share:.2})"
    );
    // The key's secret is in no answer.
    assert!(!done.to_string().contains(&w.server.api_secret));
    stop_cleanly(&mut w.run);
}

/// StartParticipantEgress through the SDK: one participant's camera and sound fill the
/// recording, the egress is listed with its participant request, and it is complete once that
/// participant has left, although another is still in the room.
#[test]
fn a_participant_egress_records_that_participant_alone_until_they_leave() {
    let _heavy = heavy();
    let mut w = RoomWorker::start();
    let red = w.join("one", media("red", "FF0000", 440));
    let _blue = w.join("one", media("blue", "0000FF", 660));
    let started = w.call(&["start-participant", "one", "red", "red.mp4", "640", "360"]);
    let id = egress_id(&started);
    assert_eq!(started["room_name"], "one", "{started}");
    assert_eq!(started["participant"]["identity"], "red", "{started}");
    let file = w.file("red.mp4");
    wait_until("4 s recorded", Duration::from_secs(60), || {
        seconds_written(&file) >= 4.0
    });
    let active = items(&w.call(&["list", "--room", "one", "--active"]));
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0]["participant"]["identity"], "red", "{active:?}");
    red.leave();
    let done = w.completed(&id);
    assert_reported_size(&done, &file);
    let p = probe(&file);
    assert_eq!(p.dimensions(), (640, 360));
    assert!(p.duration() >= 4.0, "{} s", p.duration());
    assert!(p.has_audio());
    let f = frame_rgb(&file, 2.0, 96, 54);
    let (red_share, blue_share) = (f.share(is_red), f.share(is_blue));
    assert!(
        red_share > 0.8 && blue_share < 0.01,
        "red {red_share:.2}, blue {blue_share:.2}"
    );
    assert!(!done.to_string().contains(&w.server.api_secret));
    stop_cleanly(&mut w.run);
}

/// StartTrackCompositeEgress through the SDK: one participant's camera with another's
/// microphone. The picture is that camera's alone; with the sound's participant gone the
/// picture goes on; once neither track is left the egress is complete, although a third
/// participant is still in the room. Then the third's microphone alone: the sound alone.
#[test]
fn a_track_composite_egress_records_one_camera_with_another_s_sound_or_one_track_alone() {
    let _heavy = heavy();
    let mut w = RoomWorker::start();
    let red = w.join("tc", media("red", "FF0000", 440));
    let blue = w.join("tc", media("blue", "0000FF", 660));
    let green = w.join("tc", media("green", "00FF00", 550));
    let (video, audio) = (&blue.tracks["video"], &red.tracks["audio"]);
    let started = w.call(&[
        "start-tracks",
        "tc",
        "tracks.mp4",
        "640",
        "360",
        video,
        audio,
    ]);
    let id = egress_id(&started);
    assert_eq!(started["track_composite"]["video_track_id"], video.as_str());
    assert_eq!(started["track_composite"]["audio_track_id"], audio.as_str());
    let file = w.file("tracks.mp4");
    wait_until("4 s recorded", Duration::from_secs(60), || {
        seconds_written(&file) >= 4.0
    });
    red.leave();
    let at = seconds_written(&file);
    wait_until("3 s more recorded", Duration::from_secs(30), || {
        seconds_written(&file) >= at + 3.0
    });
    let active = items(&w.call(&["list", "--id", &id, "--active"]));
    assert_eq!(active.len(), 1, "blue's picture is still there: {active:?}");
    blue.leave();
    let done = w.completed(&id);
    let p = probe(&file);
    assert_eq!(p.dimensions(), (640, 360));
    assert!(p.duration() >= 7.0, "{} s", p.duration());
    assert!(p.has_audio());
    // Red's tone (440 Hz), not blue's (660 Hz).
    let (red_tone, blue_tone) = (tone_volume_db(&file, 440), tone_volume_db(&file, 660));
    assert!(
        red_tone > -50.0 && red_tone > blue_tone + 20.0,
        "440 Hz at {red_tone} dB, 660 Hz at {blue_tone} dB"
    );
    // At 2 s, and after red left (its sound gone, blue's picture still there).
    for at in [2.0, at + 2.0] {
        let f = frame_rgb(&file, at, 96, 54);
        let (blue, red, green) = (f.share(is_blue), f.share(is_red), f.share(is_green));
        assert!(
            blue > 0.8 && red < 0.01 && green < 0.01,
            "at {at} s: blue {blue:.2}, red {red:.2}, green {green:.2}"
        );
    }
    assert!(!done.to_string().contains(&w.server.api_secret));

    // One track alone: green's microphone, a recording of the sound alone (as LiveKit's), until
    // the egress is stopped.
    let started = w.call(&[
        "start-tracks",
        "tc",
        "sound.mp4",
        "640",
        "360",
        "",
        &green.tracks["audio"],
    ]);
    let id = egress_id(&started);
    let file = w.file("sound.mp4");
    wait_until("3 s of sound", Duration::from_secs(60), || {
        seconds_written(&file) >= 3.0
    });
    w.call(&["stop", &id]);
    let done = w.completed(&id);
    let p = probe(&file);
    assert!(!p.has_video(), "a picture in {}", p.json);
    assert_eq!(p.audio_codec(), "aac");
    assert!(p.duration() >= 3.0, "{} s", p.duration());
    assert_reported_size(&done, &file);
    let (green_tone, blue_tone) = (tone_volume_db(&file, 550), tone_volume_db(&file, 660));
    assert!(
        green_tone > -50.0 && green_tone > blue_tone + 20.0,
        "550 Hz at {green_tone} dB, 660 Hz at {blue_tone} dB"
    );
    stop_cleanly(&mut w.run);
}

/// The finished egress's first file result gives the file's size on disk.
fn assert_reported_size(done: &Value, file: &std::path::Path) {
    let size: u64 = done["file_results"][0]["size"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no size in {done}"));
    assert_eq!(size, std::fs::metadata(file).unwrap().len(), "{done}");
}

fn media(identity: &str, color: &str, tone: u32) -> Media {
    Media {
        identity: identity.into(),
        color: Some(color.into()),
        tone,
        size: None,
        screen: None,
        screen_tone: 0,
    }
}

#[test]
fn an_egress_whose_worker_is_killed_runs_again_on_another_and_shows_its_retry() {
    let _heavy = heavy();
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let hook = format!("--webhook={}", receiver.url);
    let ttl = ["--heartbeat-ttl", "2s", &hook];
    let (mut first, url) = serve_api_with(&redis, dir.path(), "w1", &ttl);
    let page = test_page("silent.html", "");
    let started = client(&url, &["start-web", &page, "killed.mp4", "640", "360"]);
    let id = egress_id(&started);
    let file = dir.path().canonicalize().unwrap().join("killed.mp4");
    wait_until("2 s recorded", Duration::from_secs(60), || {
        seconds_written(&file) >= 2.0
    });
    // The machine dies: the worker and (parent-death signal) its recording.
    first.signal(Signal::SIGKILL);
    first.wait(Duration::from_secs(10));
    let kept = seconds_written(&file);
    let (mut second, other) = serve_api_with(&redis, dir.path(), "w2", &ttl);
    let retry = dir
        .path()
        .canonicalize()
        .unwrap()
        .join("killed-attempt2.mp4");
    let mut info = Value::Null;
    wait_until("the egress to run again", Duration::from_secs(60), || {
        info = items(&client(&other, &["list", "--id", &id]))
            .pop()
            .unwrap_or_default();
        info["status"] == "EGRESS_ACTIVE" && info["retry_count"] == 1
    });
    wait_until("2 s recorded again", Duration::from_secs(60), || {
        seconds_written(&retry) >= 2.0
    });
    assert_eq!(client(&other, &["stop", &id])["status"], "EGRESS_ENDING");
    wait_until("the egress to be complete", Duration::from_secs(60), || {
        info = items(&client(&other, &["list", "--id", &id]))
            .pop()
            .unwrap_or_default();
        info["status"] == "EGRESS_COMPLETE"
    });
    assert_eq!(info["retry_count"], 1, "{info}");
    let last = info["file_results"]
        .as_array()
        .and_then(|f| f.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["filename"], retry.display().to_string(), "{info}");
    let size: u64 = last["size"].as_str().unwrap().parse().unwrap();
    assert_eq!(size, std::fs::metadata(&retry).unwrap().len(), "{info}");
    // The killed attempt's recording is kept, never overwritten.
    assert!(
        seconds_written(&file) >= kept.min(2.0),
        "{} s left of {kept} s",
        seconds_written(&file)
    );
    // The webhooks tell the story: the worker that moved the job back says it starts again.
    wait_until("egress_ended to arrive", Duration::from_secs(30), || {
        receiver
            .lines()
            .iter()
            .any(|l| l["event"] == "egress_ended")
    });
    let events: Vec<(String, String)> = receiver.lines()[1..]
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap().to_owned(),
                l["egress_info"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("egress_started", "EGRESS_STARTING"),
        ("egress_updated", "EGRESS_ACTIVE"),
        ("egress_updated", "EGRESS_STARTING"),
        ("egress_updated", "EGRESS_ACTIVE"),
        ("egress_updated", "EGRESS_ENDING"),
        ("egress_ended", "EGRESS_COMPLETE"),
    ]
    .iter()
    .map(|(e, s)| (e.to_string(), s.to_string()))
    .collect();
    assert_eq!(events, want);
    stop_cleanly(&mut second);
}

/// A web egress to S3 with a segment output uploaded to the same bucket: the object and the HLS
/// copy (`output.hls.prefix`) are in the bucket, the copy byte for byte the local directory and
/// playing as long as the MP4, and the segment result names the playlists in the bucket; no
/// credential is shown.
#[test]
fn a_web_egress_to_s3_reports_the_object_and_shows_no_credential() {
    let _heavy = heavy();
    let redis = Redis::start();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept");
    let (mut run, url) = serve_api_with(
        &redis,
        dir.path(),
        "w1",
        &[
            "--allow-endpoint-host=127.0.0.1",
            &format!("--keep-dir={}", kept.display()),
        ],
    );
    let call = |args: &[&str]| {
        let mut python = Command::new(repo_root().join(".venv/bin/python"));
        python
            .env("S3_ENDPOINT", moto.endpoint())
            .env("S3_ACCESS_KEY", "AKIAPAGECASTEGRESS")
            .env("S3_SECRET", S3_SECRET);
        let answer = client_with(python, (&url, API_KEY, API_SECRET), args);
        assert!(!answer.to_string().contains(S3_SECRET), "{answer}");
        assert!(
            !answer.to_string().contains("AKIAPAGECASTEGRESS"),
            "{answer}"
        );
        answer
    };
    let page = test_page("silent.html", "");
    let started = call(&[
        "start-web-s3",
        &page,
        "rec/egress.mp4",
        "640",
        "360",
        "--hls",
        "rec/hls",
    ]);
    let id = egress_id(&started);
    // The recording is written in the keep directory while it uploads.
    let growing = || {
        std::fs::read_dir(&kept)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "mp4"))
    };
    wait_until("3 s recorded", Duration::from_secs(60), || {
        growing().is_some_and(|f| seconds_written(&f) >= 3.0)
    });
    call(&["stop", &id]);
    let mut done = Value::Null;
    wait_until("the egress to be complete", Duration::from_secs(60), || {
        done = items(&call(&["list", "--id", &id]))
            .pop()
            .unwrap_or_default();
        assert_ne!(done["status"], "EGRESS_FAILED", "{done}");
        done["status"] == "EGRESS_COMPLETE"
    });
    let f = &done["file_results"][0];
    assert_eq!(f["location"], "s3://recordings/rec/egress.mp4", "{done}");
    assert_eq!(f["filename"], "rec/egress.mp4", "{done}");
    let object = dir.path().join("object.mp4");
    moto.s3(&[
        "get",
        "recordings",
        "rec/egress.mp4",
        object.to_str().unwrap(),
    ]);
    let size: u64 = f["size"].as_str().unwrap().parse().unwrap();
    assert_eq!(size, std::fs::metadata(&object).unwrap().len(), "{done}");
    // /metrics counts the bytes uploaded.
    let metrics = get(&url, "/metrics");
    assert_eq!(
        series(&metrics, "pagecast_uploaded_bytes_total", &[]),
        Some(size as f64),
        "{metrics}"
    );
    let duration = f["duration"].as_str().unwrap().parse::<f64>().unwrap() / 1e9;
    let p = probe(&object);
    assert!(
        (duration - p.duration()).abs() <= 0.1,
        "{duration} s reported, {} s in the object",
        p.duration()
    );
    // The segments and playlist, copied to the bucket beside the MP4, are the local ones.
    let local = dir.path().join("rec/hls");
    let fetched = tempfile::tempdir().unwrap();
    moto.s3(&[
        "fetch",
        "recordings",
        "rec/hls/",
        fetched.path().to_str().unwrap(),
    ]);
    let names = files_in(&local);
    assert_eq!(files_in(fetched.path()), names);
    assert!(names.len() >= 3, "{names:?}");
    assert!(names.iter().any(|n| n == "live.m3u8"), "{names:?}");
    // The segment result names the playlists where they were copied to, not the worker's
    // directory.
    let s = &done["segment_results"][0];
    assert_eq!(
        (
            s["playlist_location"].as_str(),
            s["live_playlist_name"].as_str(),
            s["live_playlist_location"].as_str()
        ),
        (
            Some("s3://recordings/rec/hls/index.m3u8"),
            Some("live.m3u8"),
            Some("s3://recordings/rec/hls/live.m3u8")
        ),
        "{done}"
    );
    for name in names {
        assert!(
            std::fs::read(fetched.path().join(&name)).unwrap()
                == std::fs::read(local.join(&name)).unwrap(),
            "rec/hls/{name} differs from the local file"
        );
    }
    let vod = probe(&fetched.path().join("index.m3u8")).duration();
    assert!(
        (vod - p.duration()).abs() <= 1.0,
        "the playlist holds {vod} s, the MP4 {} s",
        p.duration()
    );
    // The request is shown without its credentials.
    for s3 in [
        &done["web"]["file_outputs"][0]["s3"],
        &done["web"]["segment_outputs"][0]["s3"],
    ] {
        assert_eq!(
            (s3["bucket"].as_str(), s3["secret"].as_str()),
            (Some("recordings"), Some("")),
            "{done}"
        );
    }
    stop_cleanly(&mut run);
}
