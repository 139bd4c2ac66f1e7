//! The recording service as a trust boundary: what a job may do (the service policy), and what
//! the processes of a running job show to anyone on the machine (their environment and command
//! line). Against the real binary, a real redis-server, nginx-rtmp and moto's S3 server.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use pagecast_actors::events;
use pagecast_testkit::{descendants, heavy, probe, test_page, wait_until, Moto, Nginx, Redis};
use serde_json::json;

/// `pagecast <args>` with `config` on stdin; returns the exit code and stderr.
fn run_with_stdin(args: &[&str], config: &serde_json::Value) -> (Option<i32>, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("LIVEKIT_RECORDER_CONFIG")
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A job config recording `url` to `file`.
fn job(url: &str, file: &str) -> serde_json::Value {
    json!({ "input": { "url": url, "width": 640, "height": 360 }, "output": { "file": file } })
}

/// What `pagecast record --policy` refuses (exit 2, one line naming the field and the rule)
/// before anything starts: no process, no file.
#[test]
fn a_job_that_breaks_the_policy_is_refused_before_anything_starts() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
    let page = "https://example.com/";
    let mut cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            job(&test_page("silent.html", ""), "a.mp4"),
            "policy: input.url: file:// pages",
            "--allow-file-urls",
        ),
        (
            job("http://169.254.169.254/latest/meta-data/", "a.mp4"),
            "policy: input.url: 169.254.169.254 is a link-local address",
            "--allow-page-host",
        ),
        (
            job("http://localhost:9/", "a.mp4"),
            "policy: input.url: localhost resolves to 127.0.0.1, a loopback address",
            "--allow-page-host",
        ),
        (
            job("http://10.1.2.3/", "a.mp4"),
            "policy: input.url: 10.1.2.3 is a private address",
            "--allow-page-host",
        ),
        (
            job("http://[::1]:9/", "a.mp4"),
            "policy: input.url: ::1 is a loopback address",
            "--allow-page-host",
        ),
        (
            job(page, "../../etc/x.mp4"),
            "policy: output.file: ../../etc/x.mp4 contains \"..\"",
            "output root",
        ),
        (
            job(page, "/etc/x.mp4"),
            "policy: output.file: /etc/x.mp4 is outside this service's output root",
            "--output-root",
        ),
        (
            job(page, "out/x.mp4"),
            "policy: output.file: out/x.mp4 is outside",
            "--output-root",
        ),
        (
            job(page, "http://evil.example/x.mp4"),
            "config: output.file: http://evil.example/x.mp4 looks like a URL",
            "local path",
        ),
        (
            job(page, "tcp:x.mp4"),
            "config: output.file: ",
            "looks like a URL",
        ),
    ];
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut config = job(page, "a.mp4");
        change(&mut config);
        config
    };
    cases.extend([
        (
            with(&|c| c["max_duration"] = json!("7h")),
            "policy: max_duration: 7h is longer than this service allows (6h",
            "--max-duration",
        ),
        (
            with(&|c| {
                c["input"]["width"] = json!(3840);
                c["input"]["height"] = json!(2160);
                c["input"]["framerate"] = json!(60);
            }),
            "policy: input: 3840x2160 at 60 fps",
            "--max-pixel-rate",
        ),
        (
            with(&|c| {
                c["output"]["rtmp"] = json!((0..5)
                    .map(|i| format!("rtmp://live.example.com/app/key{i}"))
                    .collect::<Vec<_>>())
            }),
            "policy: output.rtmp: 5 live outputs",
            "--max-rtmp-outputs",
        ),
        (
            with(&|c| c["output"]["rtmp"] = json!("rtmp://127.0.0.1:1935/live/sk_123")),
            "policy: output.rtmp: 127.0.0.1 is a loopback address",
            "--allow-endpoint-host",
        ),
        (
            with(&|c| {
                c["output"]["srt"] = json!("srt://127.0.0.1:9000?passphrase=sk_123_passphrase")
            }),
            "policy: output.srt: 127.0.0.1 is a loopback address",
            "--allow-endpoint-host",
        ),
        (
            with(&|c| {
                c["output"]["rtmp"] = json!("rtmp://live.example.com/app/key0");
                c["output"]["srt"] = json!((0..4)
                    .map(|i| format!("srt://live.example.com:900{i}"))
                    .collect::<Vec<_>>())
            }),
            "policy: output.rtmp + output.srt: 5 live outputs",
            "--max-rtmp-outputs",
        ),
        (
            with(&|c| c["output"]["s3"] = json!({ "bucket": "b", "key": "k.mp4" })),
            "policy: output.s3: has no access_key and secret",
            "--allow-worker-aws-identity",
        ),
        (
            with(&|c| {
                c["output"]["s3"] = json!({
                    "bucket": "b", "key": "k.mp4", "access_key": "a", "secret": "s",
                    "endpoint": "http://169.254.169.254/",
                })
            }),
            "policy: output.s3.endpoint: 169.254.169.254 is a link-local address",
            "--allow-endpoint-host",
        ),
        (
            with(&|c| {
                c["output"]["s3"] = json!({
                    "bucket": "b", "key": "k.mp4", "access_key": "a", "secret": "s",
                    "part_size": "1GiB",
                })
            }),
            "policy: output.s3.part_size: 1073741824 bytes",
            "--max-part-size",
        ),
    ]);
    let root_arg = format!("--output-root={}", root.path().display());
    for (config, want, rule) in &cases {
        let started = std::time::Instant::now();
        let (code, stderr) = run_with_stdin(&["record", "--policy", &root_arg, "-c", "-"], config);
        assert_eq!(code, Some(2), "{config}: {stderr}");
        let line = stderr.trim();
        assert_eq!(line.lines().count(), 1, "one line: {stderr}");
        assert!(
            line.starts_with(&format!("pagecast: {want}")) && line.contains(rule),
            "{config}:\n{line}\nwanted {want:?} and {rule:?}"
        );
        // Refused before anything started: nothing was written, within a moment.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // `check --policy` refuses the same.
        let (code, stderr) = run_with_stdin(&["check", "--policy", &root_arg, "-c", "-"], config);
        assert_eq!(code, Some(2), "check {config}: {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        1,
        "only the symlink"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    // Allowed by the policy's flags, the same jobs pass the check.
    let allowed = [
        (
            job(&test_page("silent.html", ""), "a.mp4"),
            vec!["--allow-file-urls"],
        ),
        (
            job("http://localhost:9/", "sub/a.mp4"),
            vec!["--allow-page-host=127.0.0.0/8"],
        ),
        (
            job("http://localhost:9/", "a.mp4"),
            vec!["--allow-page-host=localhost"],
        ),
    ];
    for (config, flags) in allowed {
        let mut args = vec!["check", "--policy", &root_arg];
        args.extend(flags);
        args.extend(["-c", "-"]);
        let (code, stderr) = run_with_stdin(&args, &config);
        assert_eq!(code, Some(0), "{config}: {stderr}");
    }
}

/// A duration too long for the clock ("584542046090y") is a one-line config error, not a panic.
#[test]
fn a_duration_too_long_for_the_clock_is_a_clean_error() {
    let config = json!({
        "api_key": "k", "api_secret": "s",
        "input": { "template": { "layout": "grid-dark", "ws_url": "ws://127.0.0.1:9", "room_name": "r" } },
        "output": { "file": "/tmp/pagecast-never-written.mp4" },
        "max_duration": "584542046090y",
    });
    let (code, stderr) = run_with_stdin(&["record", "-c", "-"], &config);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "pagecast: config: max_duration: \"584542046090y\" is longer than the longest duration taken (366 days)"
    );
    let out = Command::new(BIN)
        .args(["demo", "--duration", "584542046090y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("366 days"));
}

/// The local address of every listening TCP socket and every UDP socket the processes hold, as
/// (process name, hex address from /proc/net).
fn bound_sockets(processes: &[(u32, String)]) -> Vec<(String, String)> {
    let mut inodes = std::collections::HashMap::new();
    for (pid, name) in processes {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy().into_owned();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(inode.to_owned(), name.clone());
            }
        }
    }
    let mut out = Vec::new();
    for (table, listening) in [
        ("tcp", Some("0A")),
        ("tcp6", Some("0A")),
        ("udp", None),
        ("udp6", None),
    ] {
        let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (cols[1], cols[3], cols[9]);
            if listening.is_some_and(|s| s != state) {
                continue;
            }
            if let Some(name) = inodes.get(inode) {
                out.push((name.clone(), local.to_owned()));
            }
        }
    }
    out
}

/// A /proc/net address ("0100007F:1F90", or 32 hex digits for IPv6) on the loopback interface.
fn is_loopback(addr: &str) -> bool {
    let host = addr.split(':').next().unwrap_or_default();
    match host.len() {
        8 => host.ends_with("7F"), // 127.x.x.x, little-endian
        32 => {
            host == "00000000000000000000000001000000" // ::1
                || (host.starts_with("0000000000000000FFFF0000") && host.ends_with("7F"))
        }
        _ => false,
    }
}

fn serve(redis: &Redis, root: &Path, extra: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-format", "json", "serve", "--redis", &redis.url()])
        .args(["--queue", "test", "--worker-id", "w1"])
        .arg(format!("--output-root={}", root.display()))
        .args(extra)
        // Jobs carrying secrets are sealed in Redis with it (a worker without a key refuses them).
        .env(
            "PAGECAST_JOB_KEY",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff",
        );
    Run::spawn(cmd)
}

/// Through the service: each job breaking a rule fails with exit code 2 and the rule in its
/// message; the service goes on.
#[test]
fn service_jobs_that_break_the_policy_fail_with_code_2_and_the_rule() {
    let redis = Redis::start();
    let root = tempfile::tempdir().unwrap();
    let cases = [
        (
            "file",
            job(&test_page("silent.html", ""), "a.mp4"),
            "policy: input.url: file:// pages",
        ),
        (
            "metadata",
            job("http://169.254.169.254/latest/meta-data/", "a.mp4"),
            "policy: input.url: 169.254.169.254 is a link-local address",
        ),
        (
            "escape",
            job("https://example.com/", "../../etc/x.mp4"),
            "policy: output.file: ../../etc/x.mp4 contains \"..\"",
        ),
        (
            "http-output",
            job("https://example.com/", "http://evil.example/x.mp4"),
            "config: output.file: http://evil.example/x.mp4 looks like a URL",
        ),
    ];
    for (id, config, _) in &cases {
        let job = json!({ "id": id, "config": config }).to_string();
        redis.cli(&["LPUSH", "{test}:jobs", &job]);
    }
    let mut run = serve(&redis, root.path(), &["--max-recordings", "1"]);
    for (id, _, want) in &cases {
        let key = format!("{{test}}:job:{id}");
        wait_until(
            &format!("job {id} to fail"),
            Duration::from_secs(60),
            || redis.hget(&key, "state") == "failed",
        );
        assert_eq!(redis.hget(&key, "exit_code"), "2", "{id}");
        let message = redis.hget(&key, "message");
        assert!(message.starts_with(want), "{id}: {message}");
    }
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _) = run.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", run.stderr());
}

/// Every process of a running job: pagecast's own `record`, Xvfb, PulseAudio, chromedriver,
/// Chromium and its helpers, the encoder, the relay. None has the job's config, S3 secret, API
/// secret or stream key in its environment (/proc/<pid>/environ) or command line
/// (/proc/<pid>/cmdline, readable by every user). The recording still streams to the real
/// nginx-rtmp and uploads to S3.
#[test]
fn no_process_of_a_running_job_shows_a_secret() {
    const S3_SECRET: &str = "s3secret-wJalrXUtnFEMI";
    const API_SECRET: &str = "apisecret-Qx7Zk2";
    const STREAM_KEY: &str = "sk_live_9d3e1b";
    let _heavy = heavy();
    let redis = Redis::start();
    let nginx = Nginx::start();
    let moto = Moto::start();
    moto.s3(&["mkbucket", "recordings"]);
    let root = tempfile::tempdir().unwrap();
    let config = json!({
        "api_key": "APIpagecast", "api_secret": API_SECRET,
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": {
            "file": "job.mp4",
            "rtmp": nginx.url("live", STREAM_KEY),
            "s3": {
                "access_key": "AKIAPAGECASTTEST", "secret": S3_SECRET,
                "bucket": "recordings", "key": "job.mp4", "endpoint": moto.endpoint(),
            },
        },
    });
    let job = json!({ "id": "secret", "config": config }).to_string();
    redis.cli(&["LPUSH", "{test}:jobs", &job]);
    let mut run = serve(
        &redis,
        root.path(),
        &["--allow-file-urls", "--allow-endpoint-host=127.0.0.1"],
    );
    let file = root.path().join("job.mp4");
    // Running: the stream reaches nginx and the file grows.
    run.wait_until("the stream to reach nginx", Duration::from_secs(60), || {
        assert_ne!(
            redis.hget("{test}:job:secret", "state"),
            "failed",
            "{}",
            redis.hget("{test}:job:secret", "message")
        );
        nginx
            .recordings()
            .iter()
            .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 50_000))
    });
    let processes = descendants(run.child.id());
    let names: Vec<&str> = processes.iter().map(|(_, n)| n.as_str()).collect();
    for needed in ["pagecast", "Xvfb", "pulseaudio", "chromedriver", "ffmpeg"] {
        assert!(names.contains(&needed), "no {needed} among {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("chrom")),
        "no Chromium among {names:?}"
    );
    assert!(
        names.iter().filter(|n| **n == "ffmpeg").count() >= 2,
        "the encoder and the relay: {names:?}"
    );
    let mut leaks = Vec::new();
    for (pid, name) in &processes {
        for what in ["environ", "cmdline"] {
            let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{what}")) else {
                continue; // exited meanwhile
            };
            let text = String::from_utf8_lossy(&bytes);
            for secret in [S3_SECRET, API_SECRET, STREAM_KEY, "LIVEKIT_RECORDER_CONFIG"] {
                if text.contains(secret) {
                    leaks.push(format!("{name} ({pid}) {what}: {secret}"));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "secrets shown: {leaks:#?}");
    // Nothing of the job listens beyond this machine: chromedriver, Chromium's DevTools port,
    // the relay's UDP port, the key proxy.
    let sockets = bound_sockets(&processes);
    assert!(
        sockets.iter().any(|(name, _)| name == "chromedriver"),
        "chromedriver listens: {sockets:?}"
    );
    let open: Vec<_> = sockets
        .iter()
        .filter(|(_, addr)| !is_loopback(addr))
        .collect();
    assert!(open.is_empty(), "bound beyond loopback: {open:?}");
    redis.cli(&["PUBLISH", "test:control", r#"{"stop":"secret"}"#]);
    run.wait_until("the job to be done", Duration::from_secs(60), || {
        let state = redis.hget("{test}:job:secret", "state");
        assert_ne!(
            state,
            "failed",
            "{}",
            redis.hget("{test}:job:secret", "message")
        );
        state == "done"
    });
    let p = probe(&file);
    assert_eq!(p.video_codec(), "h264");
    assert!(p.duration() > 1.0, "{}", p.duration());
    let streamed = nginx.recordings();
    let flv = streamed.last().expect("nginx recorded the stream");
    assert!(probe(flv).duration() > 1.0);
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _) = run.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    // The recording's own lines are in the service's log (so they are checked too).
    assert!(
        run.count(events::ENCODER_RUNNING) > 0,
        "the recording's own log reaches the service's:\n{}",
        run.stderr()
    );
    for secret in [S3_SECRET, API_SECRET, STREAM_KEY] {
        assert!(
            !run.stderr().contains(secret),
            "{secret} in the service's log"
        );
    }
}

/// `pagecast check` shows what a config records without a secret: no API secret, token, S3
/// secret or session token, no stream key, no URL password or query value.
#[test]
fn check_prints_no_secret() {
    let config = json!({
        "api_key": "APIpagecast", "api_secret": "apisecret-XYZ1",
        "input": { "url": "https://user:pagepass-XYZ2@example.com/live?token=pagetoken-XYZ3" },
        "output": {
            "file": "/tmp/pagecast-never-written.mp4",
            "rtmp": "rtmp://live.example.com/app/streamkey-XYZ4",
            "s3": {
                "access_key": "AKIA-XYZ5", "secret": "s3secret-XYZ6", "session_token": "sess-XYZ7",
                "bucket": "recordings", "key": "rec.mp4",
                "endpoint": "https://s3user:s3pass-XYZ8@s3.example.com/",
            },
        },
    });
    let out = Command::new(BIN)
        .args(["check"])
        .env("LIVEKIT_RECORDER_CONFIG", config.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("XYZ"), "a secret was printed:\n{text}");
    assert!(
        text.contains("output.rtmp: rtmp://live.example.com/app/****"),
        "{text}"
    );
    assert!(
        text.contains("output.s3: bucket recordings, key rec.mp4"),
        "{text}"
    );
}

/// A service whose output root is not a directory does not start.
#[test]
fn serve_refuses_an_output_root_that_is_not_a_directory() {
    let out = Command::new(BIN)
        .args(["serve", "--output-root", "/nonexistent/pagecast-root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "pagecast: --output-root: /nonexistent/pagecast-root is not a directory"
    );
}

/// A tiny HTTP server on `ip` answering every request with `body`; counts the connections.
fn counting_server(
    ip: &str,
    body: &'static str,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut con in listener.incoming().map_while(Result::ok) {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 8192];
            let _ = con.read(&mut buf);
            let path = String::from_utf8_lossy(&buf)
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_owned();
            let body = body.replace("{path}", &path);
            let _ = write!(
                con,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, count)
}

/// A page the policy lets a job record (its host allowed) asks for a resource, a fetch and a
/// WebSocket on an internal address (another loopback address, standing for the cloud metadata
/// service or a worker's neighbour): none of them reaches it, while the page's requests to its
/// own host still work, and the recording ends normally.
#[test]
fn a_page_under_the_policy_reaches_no_internal_address() {
    use std::sync::atomic::Ordering;
    let _heavy = heavy();
    let (inside_port, inside) = counting_server("127.0.0.2", "internal secret");
    let page = r#"<!doctype html><body style="background:#246;color:#fff"><h1>probe</h1>
<img src="http://127.0.0.2:INSIDE/pixel.png">
<script>
const inside = fetch("http://127.0.0.2:INSIDE/secret").then(r => r.text(), () => "refused");
const ws = new Promise(done => {
  const w = new WebSocket("ws://127.0.0.2:INSIDE/ws");
  w.onopen = () => done("open");
  w.onerror = () => done("error");
});
const own = fetch("/own").then(r => r.text());
Promise.allSettled([inside, ws, own]).then(() => setTimeout(() => console.log("END_RECORDING"), 1500));
</script></body>"#
        .replace("INSIDE", &inside_port.to_string());
    let page: &'static str = Box::leak(page.into_boxed_str());
    let (page_port, own) = counting_server("127.0.0.1", page);
    let root = tempfile::tempdir().unwrap();
    let config = json!({
        "input": { "url": format!("http://127.0.0.1:{page_port}/"), "width": 640, "height": 360 },
        "output": { "file": "probe.mp4" },
        "max_duration": "30s",
    });
    let root_arg = format!("--output-root={}", root.path().display());
    let (code, stderr) = run_with_stdin(
        &[
            "--log-format",
            "json",
            "record",
            "--policy",
            &root_arg,
            "--allow-page-host=127.0.0.1",
            "-c",
            "-",
        ],
        &config,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(events::PAGE_ENDED), "{stderr}");
    // The page and its fetch of its own host: two connections at least.
    assert!(own.load(Ordering::SeqCst) >= 2, "{stderr}");
    assert_eq!(
        inside.load(Ordering::SeqCst),
        0,
        "the page reached the internal address:\n{stderr}"
    );
    assert!(
        stderr.contains(pagecast_actors::page_proxy::REFUSED) && stderr.contains("127.0.0.2"),
        "{stderr}"
    );
    let p = probe(&root.path().join("probe.mp4"));
    assert!(p.duration() >= 1.0, "{}", p.duration());
}

/// A job's page that takes more and more memory, or fills its browser profile on disk, is
/// stopped once it passes the policy's limit (`--max-job-memory`, `--max-page-storage`): the
/// recording up to then is finished and kept, and the run fails with exit 4 naming the limit
/// and the file.
#[test]
fn a_page_that_takes_more_memory_or_disk_than_the_policy_allows_is_stopped_and_kept() {
    use std::io::Write;
    let _heavy = heavy();
    for (what, flag) in [
        ("storage", "--max-page-storage=256MiB"),
        ("memory", "--max-job-memory=1GiB"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let root_arg = format!("--output-root={}", root.path().display());
        let config = json!({
            "input": { "url": test_page("hog.html", &format!("what={what}")),
                       "width": 640, "height": 360 },
            "output": { "file": "rec.mp4" },
            "max_duration": "90s",
        });
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--log-format",
            "json",
            "record",
            "--policy",
            "--allow-file-urls",
        ])
        .args([root_arg.as_str(), flag, "-c", "-"])
        .env_remove("LIVEKIT_RECORDER_CONFIG")
        .stdin(Stdio::piped());
        let mut run = Run::spawn_with_stdin(cmd);
        let mut stdin = run.child.stdin.take().unwrap();
        stdin.write_all(config.to_string().as_bytes()).unwrap();
        drop(stdin);
        let (status, _) = run.wait(Duration::from_secs(90));
        let stderr = run.stderr();
        assert_eq!(status.code(), Some(4), "{what}: {stderr}");
        assert!(
            stderr.contains(pagecast::limits::OVER_LIMIT),
            "{what}: {stderr}"
        );
        let file = root.path().canonicalize().unwrap().join("rec.mp4");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("pagecast: policy: the page used ")
                && last.contains(flag.split('=').next().unwrap())
                && last.contains(&format!("is in {}", file.display())),
            "{what}: {last}"
        );
        // Stopped by the limit, long before its max_duration.
        let p = probe(&file);
        assert!(
            p.duration() >= 1.0 && p.duration() < 60.0,
            "{what}: {}",
            p.duration()
        );
        assert_eq!(p.dimensions(), (640, 360), "{what}");
    }
}
