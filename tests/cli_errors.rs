//! Bad input never starts anything: one line on stderr naming the problem, a distinct exit code.
//! PATH is emptied for the config cases, so if pagecast tried to start a program it would fail
//! with "missing programs" (exit 3) instead of the config error (exit 2).
mod common;

use std::process::Command;

use common::BIN;
use serde_json::json;

fn run_with_config(config: &str, path: &str) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .env("LIVEKIT_RECORDER_CONFIG", config)
        .env("PATH", path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_config_error(config: &str, field: &str) {
    let (code, stderr) = run_with_config(config, "/nonexistent");
    assert_eq!(code, Some(2), "{config} -> {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(lines[0].starts_with("pagecast: config: "), "{stderr}");
    assert!(lines[0].contains(field), "{field} not named in: {stderr}");
}

#[test]
fn invalid_configs_exit_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.mp4");
    let out = json!({ "file": file });
    let cases = [
        (
            json!({ "input": { "url": "https://example.com", "widht": 1280 }, "output": out }),
            "widht",
        ),
        (
            json!({ "input": { "url": "https://example.com", "width": 1281 }, "output": out }),
            "input.width",
        ),
        (
            json!({ "input": { "url": "https://example.com", "framerate": 0 }, "output": out }),
            "input.framerate",
        ),
        (
            json!({ "input": { "url": "https://example.com" }, "output": {} }),
            "output",
        ),
        (json!({ "input": {}, "output": out }), "input"),
        (
            json!({ "input": { "url": "https://example.com", "template": { "layout": "grid-dark", "ws_url": "wss://x.example.com", "token": "t" } }, "output": out }),
            "input",
        ),
        (
            json!({ "input": { "template": { "layout": "mosaic", "ws_url": "wss://x.example.com", "token": "t" } }, "output": out }),
            "layout",
        ),
        (
            json!({ "input": { "url": "https://example.com" }, "output": { "file": file, "video_bitrate": "lots" } }),
            "output.video_bitrate",
        ),
        (
            json!({ "input": { "url": "ftp://example.com" }, "output": out }),
            "input.url",
        ),
        (
            json!({ "input": { "url": "https://example.com" }, "output": out, "max_duration": "soon" }),
            "max_duration",
        ),
    ];
    for (config, field) in cases {
        assert_config_error(&config.to_string(), field);
    }
    assert_config_error("{ not json", "line 1");
    assert!(!file.exists(), "a config error created the output file");
}

#[test]
fn an_unreachable_stream_server_exits_5_naming_the_host_not_the_key() {
    // A loopback port nobody listens on.
    let port = pagecast_testkit::free_port();
    let config = json!({ "input": { "url": "https://example.com" },
                         "output": { "rtmp": format!("rtmp://127.0.0.1:{port}/live/sk_live_9876") } });
    let started = std::time::Instant::now();
    let (code, stderr) = run_with_config(&config.to_string(), &std::env::var("PATH").unwrap());
    assert_eq!(code, Some(5), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        stderr.contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("/live/****") && !stderr.contains("sk_live_9876"),
        "{stderr}"
    );
}

#[test]
fn a_missing_program_exits_3_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({ "input": { "url": "https://example.com" }, "output": { "file": dir.path().join("x.mp4") } });
    let (code, stderr) = run_with_config(&config.to_string(), "/nonexistent");
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("missing programs: Xvfb, pulseaudio"),
        "{stderr}"
    );
}

#[test]
fn an_unwritable_output_exits_5() {
    let config = json!({ "input": { "url": "https://example.com" }, "output": { "file": "/proc/pagecast/x.mp4" } });
    let (code, stderr) = run_with_config(&config.to_string(), &std::env::var("PATH").unwrap());
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("output.file: cannot write /proc/pagecast/x.mp4"),
        "{stderr}"
    );
}

#[test]
fn no_config_and_no_command_exits_2() {
    let out = Command::new(BIN)
        .env_remove("LIVEKIT_RECORDER_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LIVEKIT_RECORDER_CONFIG"));
}

#[test]
fn check_accepts_every_example_config() {
    let dir = pagecast_testkit::repo_root().join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let out = Command::new(BIN)
                .arg("check")
                .arg("--config")
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}: {stderr}", path.display());
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                !stdout.contains("fakekey") && !stdout.contains("<aws-secret>"),
                "a secret was printed: {stdout}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 9, "only {checked} example configs");
}

#[test]
fn help_documents_every_command() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "record",
        "check",
        "demo",
        "calibrate",
        "LIVEKIT_RECORDER_CONFIG",
        "END_RECORDING",
        "Exit codes",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
}

/// A recording already at output.file is never written over: refused before anything starts
/// (exit 5 naming the file and how to get a fresh name), the file untouched. Parts a killed join
/// left beside it are named in one warning line and kept.
#[test]
fn an_output_that_holds_a_recording_is_refused_and_leftover_parts_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rec.mp4");
    std::fs::write(&file, b"an earlier recording").unwrap();
    let part = dir.path().join(".rec.mp4.4242_1f.part1.mp4");
    std::fs::write(&part, b"part of a killed join").unwrap();
    let page = format!(
        "file://{}",
        pagecast_testkit::repo_root()
            .join("assets/demo/index.html")
            .display()
    );
    let config = json!({
        "input": { "url": page, "width": 640, "height": 360 },
        "output": { "file": file },
        "max_duration": "2s",
    });
    let started = std::time::Instant::now();
    let (code, stderr) = run_with_config(&config.to_string(), &std::env::var("PATH").unwrap());
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "something started"
    );
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!(
            "pagecast: output.file: {} already holds a recording",
            file.display()
        )) && last.contains("--overwrite")
            && last.contains("{time}"),
        "{last}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"an earlier recording");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("parts of an earlier recording"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains(&part.display().to_string()),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&part).unwrap(), b"part of a killed join");
}

#[test]
fn unknown_placeholders_in_names_are_config_errors() {
    let config = json!({ "input": { "url": "https://example.com" }, "output": { "file": "/tmp/rec-{date}.mp4" } });
    assert_config_error(&config.to_string(), "output.file");
    let config = json!({ "input": { "url": "https://example.com" }, "output": { "file": "/tmp/{room_name}.mp4" } });
    assert_config_error(&config.to_string(), "output.file");
}

#[test]
fn serve_http_without_its_keys_or_the_job_key_exits_2_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let bad_keys = dir.path().join("keys.yaml");
    std::fs::write(&bad_keys, "APIkey the-secret-of-the-key-without-a-colon\n").unwrap();
    let good_keys = dir.path().join("good.yaml");
    std::fs::write(&good_keys, "APIkey: the-secret-of-the-key\n").unwrap();
    let serve = |args: &[&str], job_key: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--http", "127.0.0.1:0"])
            .args(args)
            .env_remove("LIVEKIT_API_KEY")
            .env_remove("LIVEKIT_API_SECRET")
            .env_remove("PAGECAST_JOB_KEY");
        if job_key {
            cmd.env("PAGECAST_JOB_KEY", "00".repeat(32));
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = serve(&[], true);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--http: the API needs its keys"), "{err}");
    let keys = format!("--keys={}", bad_keys.display());
    let (code, err) = serve(&[&keys], true);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("line 1: not `key: secret`"), "{err}");
    assert!(!err.contains("the-secret-of-the-key"), "{err}");
    let keys = format!("--keys={}", good_keys.display());
    let (code, err) = serve(&[&keys], false);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--http: the API submits jobs sealed: set PAGECAST_JOB_KEY"),
        "{err}"
    );
}

/// `pagecast calibrate` runs the probe `serve` scales job costs by (real ffmpeg) and prints its
/// figures; without ffmpeg it exits 3 naming it; `serve --cost-factor` takes `auto` or a number
/// above 0, and exits 2 naming the option otherwise.
#[test]
fn calibrate_measures_this_machine_and_a_bad_cost_factor_exits_2() {
    let out = Command::new(BIN)
        .args(["calibrate", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cpu = found["cpu_seconds"].as_f64().unwrap();
    let factor = found["cost_factor"].as_f64().unwrap();
    let reference = found["reference_cpu_seconds"].as_f64().unwrap();
    assert!(cpu > 0.05, "{found}");
    assert!((0.25..=4.0).contains(&factor), "{found}");
    if found["clamped"] == false {
        assert!((factor - cpu / reference).abs() < 1e-9, "{found}");
    }

    let out = Command::new(BIN)
        .arg("calibrate")
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("calibration: ffmpeg is not installed"),
        "{stderr}"
    );

    for bad in ["0", "-1", "fast"] {
        let out = Command::new(BIN)
            .arg("serve")
            .arg(format!("--cost-factor={bad}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("invalid value '{bad}' for '--cost-factor"))
                && stderr.contains("`auto` or a number above 0"),
            "{stderr}"
        );
    }
}
