//! End-to-end: the pages people actually record. Text in the world's scripts and colour emoji,
//! WebGL, pages behind a login (a header, a cookie, basic auth) and a self-signed HTTPS page,
//! each recorded by the `pagecast` binary with real Xvfb, PulseAudio, Chromium and ffmpeg, and
//! each recording checked with ffprobe and by the colour of its frames.
mod common;

use std::time::Duration;

use common::*;
use pagecast_actors::events;
use pagecast_testkit::page_server::PageServer;
use pagecast_testkit::{descendants, frame_rgb, heavy, is_green, is_red, probe, test_page};
use serde_json::json;

/// Records `config` (written to a file: secrets stay out of pagecast's environment) with debug
/// logs; returns the run once it ended, with `during` called once the page has loaded.
fn record_from_file(config: &serde_json::Value, during: impl FnOnce(&Run)) -> (Run, i32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "record",
        "--config",
    ])
    .arg(&path);
    let mut run = Run::spawn(cmd);
    // A run that fails before the page loads has nothing to look at during the recording.
    let loaded = {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if run.stderr().contains(events::PAGE_LOADED) {
                break true;
            }
            if run.child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    if loaded {
        during(&run);
    }
    let (status, _) = run.wait(Duration::from_secs(60));
    let code = status.code().unwrap_or(-1);
    (run, code)
}

/// No process of the run (pagecast included) has `secret` in its command line or environment.
fn assert_not_in_any_process(run: &Run, secret: &str) {
    let mut pids = vec![run.child.id()];
    pids.extend(descendants(run.child.id()).into_iter().map(|(pid, _)| pid));
    assert!(pids.len() > 3, "the run's processes are gone: {pids:?}");
    for pid in pids {
        for what in ["cmdline", "environ"] {
            let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{what}")) else {
                continue; // ended meanwhile
            };
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "a secret is in the {what} of process {pid}"
            );
        }
    }
}

#[test]
fn text_in_the_worlds_scripts_and_colour_emoji_is_drawn_not_as_boxes() {
    let _heavy = heavy();
    let (_dir, file) = out_dir();
    // The page checks its own text: every letter of Japanese, Chinese, Korean, Arabic, Devanagari
    // and Thai samples against the missing-glyph box, and emoji for colour. Green and
    // START_RECORDING if all is drawn; PAGECAST_ERROR naming what is missing otherwise.
    let config = json!({
        "input": { "url": test_page("scripts.html", ""), "width": 640, "height": 360,
                   "await_start_signal": true, "start_timeout": "30s" },
        "output": { "file": file },
        "max_duration": "2s",
    });
    let mut run = Run::start(&config, &[]);
    let (status, _) = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    let p = probe(&file);
    assert!(
        (p.duration() - 2.0).abs() <= 0.5,
        "duration {}",
        p.duration()
    );
    // The top three quarters are the page's verdict; the bottom quarter shows the text itself.
    let frame = frame_rgb(&file, 0.5, 32, 18);
    let verdict = frame.share_in((0, 0, 32, 12), is_green);
    assert!(
        verdict > 0.95,
        "the page did not draw every script: {verdict}"
    );
    let text = frame.share_in((0, 14, 32, 18), |p| p.iter().any(|c| *c < 200));
    assert!(text > 0.05, "no text in the text band: {text}");
}

#[test]
fn webgl_and_webgl2_pages_are_recorded_and_webgl_false_turns_them_off() {
    let _heavy = heavy();
    // Left half: a `webgl` canvas, right half: a `webgl2` one, each cleared to green by WebGL
    // every frame; a canvas without its context shows red.
    let record = |webgl: Option<bool>| {
        let (dir, file) = out_dir();
        let mut input = json!({ "url": test_page("webgl.html", ""), "width": 640, "height": 360,
                                "await_start_signal": true, "start_timeout": "30s" });
        if let Some(webgl) = webgl {
            input["webgl"] = json!(webgl);
        }
        let config = json!({ "input": input, "output": { "file": file }, "max_duration": "2s" });
        let mut run = Run::start(&config, &[]);
        let (status, _) = run.wait(Duration::from_secs(60));
        assert!(status.success(), "{status}:\n{}", run.stderr());
        assert!(
            probe(&file).frames() >= 45,
            "frames {}",
            probe(&file).frames()
        );
        (dir, frame_rgb(&file, 1.0, 32, 18))
    };
    let (_dir, on) = record(None);
    for (half, name) in [((0, 0, 16, 18), "webgl"), ((16, 0, 32, 18), "webgl2")] {
        let green = on.share_in(half, is_green);
        assert!(green > 0.95, "{name} drew nothing: {green} green");
    }
    let (_dir, off) = record(Some(false));
    let red = off.share(is_red);
    assert!(
        red > 0.95,
        "webgl: false still gave WebGL contexts: {red} red"
    );
}

#[test]
fn pages_behind_a_login_are_recorded_and_their_secrets_go_nowhere_else() {
    let _heavy = heavy();
    const HEADER_VALUE: &str = "Bearer hdr-5ecret-4711";
    const COOKIE_VALUE: &str = "ck-5ecret-0815";
    const PASSWORD: &str = "pw-5ecret-2342";
    // Another origin (same host, another port): the page embeds it; it must not get the header.
    let other = PageServer::start(json!({ "watch": [HEADER_VALUE] }));
    let embed = format!("http://127.0.0.1:{}/pixel", other.port);

    let check = |server: &PageServer, input: serde_json::Value, secrets: &[&str]| {
        let (_dir, file) = out_dir();
        // The file begins before the page is loaded (as for any page): look at its end.
        let config = json!({ "input": input, "output": { "file": file }, "max_duration": "4s" });
        let (run, code) = record_from_file(&config, |run| {
            for secret in secrets {
                assert_not_in_any_process(run, secret);
            }
        });
        assert_eq!(code, 0, "{}", run.stderr());
        let stderr = run.stderr();
        for secret in secrets {
            assert!(
                !stderr.contains(secret),
                "a secret reached the log:\n{stderr}"
            );
        }
        let p = probe(&file);
        assert!(p.frames() >= 90, "frames {}", p.frames());
        let green = frame_rgb(&file, p.duration() - 0.5, 32, 18).share(is_green);
        assert!(green > 0.95, "not the logged-in page: {green} green");
        assert!(
            server
                .requests()
                .iter()
                .any(|r| r.path == "/" && r.secret_seen),
            "{:?}",
            server.requests()
        );
    };

    let header =
        PageServer::start(json!({ "header": ["Authorization", HEADER_VALUE], "embed": embed }));
    let with_header = json!({ "url": header.url(), "width": 640, "height": 360,
                              "headers": { "Authorization": HEADER_VALUE } });
    check(&header, with_header.clone(), &[HEADER_VALUE]);
    let embedded = other.requests();
    assert!(
        embedded.iter().any(|r| r.path == "/pixel"),
        "the page did not load the other origin: {embedded:?}"
    );
    assert!(
        embedded.iter().all(|r| !r.secret_seen),
        "the header went to another origin: {embedded:?}"
    );

    // Without it the server refuses the page: exit 4, nothing recorded.
    let (_dir, file) = out_dir();
    let mut without = with_header;
    without.as_object_mut().unwrap().remove("headers");
    let (run, code) = record_from_file(
        &json!({ "input": without, "output": { "file": file }, "max_duration": "60s" }),
        |_| {},
    );
    assert_eq!(code, 4, "{}", run.stderr());
    assert!(
        run.stderr().contains("the server answered HTTP 401"),
        "{}",
        run.stderr()
    );
    assert!(!file.exists());

    let cookie = PageServer::start(json!({ "cookie": ["session", COOKIE_VALUE] }));
    check(
        &cookie,
        json!({ "url": cookie.url(), "width": 640, "height": 360,
                "cookies": [{ "name": "session", "value": COOKIE_VALUE, "http_only": true }] }),
        &[COOKIE_VALUE],
    );
    assert!(cookie.requests().iter().any(|r| r.path == "/" && r.cookie));

    let basic = PageServer::start(json!({ "basic": ["rec", PASSWORD] }));
    let url = basic
        .url()
        .replace("http://", &format!("http://rec:{PASSWORD}@"));
    check(
        &basic,
        json!({ "url": url, "width": 640, "height": 360 }),
        &[PASSWORD],
    );
}

#[test]
fn a_self_signed_https_page_is_refused_by_default_and_recorded_with_insecure() {
    let _heavy = heavy();
    let server = PageServer::start(json!({ "tls": true }));
    let (_dir, file) = out_dir();
    let config = |insecure: bool| {
        json!({ "input": { "url": server.url(), "width": 640, "height": 360, "insecure": insecure },
                "output": { "file": file }, "max_duration": if insecure { "4s" } else { "60s" } })
    };
    let mut run = Run::start(&config(false), &[]);
    let (status, _) = run.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(4), "{}", run.stderr());
    let stderr = run.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "pagecast: browser failed: could not load {}",
            server.url()
        )) && last.contains("ERR_CERT_")
            && last.contains("input.insecure: true accepts it"),
        "{last}"
    );
    assert!(!file.exists(), "a refused page left a file");
    assert!(!stderr.contains("TLS certificate is not checked"));

    let mut run = Run::start(&config(true), &[]);
    let (status, _) = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    assert!(
        run.stderr()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("TLS certificate is not checked")),
        "{}",
        run.stderr()
    );
    let p = probe(&file);
    assert!(p.frames() >= 90, "frames {}", p.frames());
    let green = frame_rgb(&file, p.duration() - 0.5, 32, 18).share(is_green);
    assert!(green > 0.95, "not the HTTPS page: {green} green");
}

/// A page whose load event never fires (an image that never arrives: ad and tracker requests
/// that hang are common) is on screen all the same, and counts as there once its document is
/// parsed: long before the page-load timeout (30 s). So a recording of it that then fails (here
/// ffmpeg killed with no restart allowed) is kept and named, never removed as "nothing of the
/// page".
#[test]
fn a_page_whose_load_never_ends_is_there_at_once_and_its_recording_kept() {
    let _heavy = heavy();
    let server = PageServer::start(json!({ "embed": "/hang" }));
    let (_dir, file) = out_dir();
    let config = json!({ "input": { "url": server.url(), "width": 640, "height": 360 },
                         "output": { "file": file },
                         "supervision": { "max_restarts": 0, "within": "60s" } });
    let mut run = Run::start(&config, &[]);
    run.wait_for(events::PAGE_LOADED, Duration::from_secs(20));
    assert!(
        server.requests().iter().any(|r| r.path == "/hang"),
        "the page never asked for the hanging image: {:?}",
        server.requests()
    );
    run.wait_for(events::ENCODER_RUNNING, Duration::from_secs(20));
    // Record for a while: this sleep is the recording's length, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(6));
    pagecast_testkit::kill_descendant(run.child.id(), "ffmpeg");
    let (status, _) = run.wait(Duration::from_secs(60));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("is in {}", file.display())),
        "the failure does not name the recording: {last}"
    );
    let p = probe(&file);
    assert!(p.duration() >= 3.0, "duration {}", p.duration());
    assert_eq!(p.dimensions(), (640, 360));
    let green = frame_rgb(&file, p.duration() - 0.5, 32, 18).share(is_green);
    assert!(green > 0.95, "not the page: {green} green");
}

/// The same kind of page, failing before its document is parsed: what it showed before the script
/// is the page, so once it painted the recording is kept and named (it was once removed as
/// "nothing of the page" by a failure within the page-load timeout's 30 s).
#[test]
fn a_page_waiting_for_a_script_is_kept_from_its_first_paint_when_the_run_fails() {
    let _heavy = heavy();
    let server = PageServer::start(json!({ "script": "/hang" }));
    let (_dir, file) = out_dir();
    let config = json!({ "input": { "url": server.url(), "width": 640, "height": 360 },
                         "output": { "file": file },
                         "supervision": { "max_restarts": 0, "within": "60s" } });
    let mut run = Run::start(&config, &[]);
    let painted = run.wait_for(events::PAGE_PAINTED, Duration::from_secs(20));
    pagecast_testkit::wait_until("4 s of the painted page", Duration::from_secs(10), || {
        painted.elapsed() >= Duration::from_secs(4)
    });
    pagecast_testkit::kill_descendant(run.child.id(), "ffmpeg");
    let (status, _) = run.wait(Duration::from_secs(60));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    // Still within the page-load timeout: the document was never parsed.
    assert!(!stderr.contains(events::PAGE_LOADED), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("is in {}", file.display())),
        "the failure does not name the recording: {last}"
    );
    let p = probe(&file);
    assert!(p.duration() >= 3.0, "duration {}", p.duration());
    assert_eq!(p.dimensions(), (640, 360));
    assert!(p.has_audio());
    let green = frame_rgb(&file, p.duration() - 0.5, 32, 18).share(is_green);
    assert!(green > 0.95, "not the page: {green} green");
}

/// A page whose parser waits for a script that never arrives shows what came before it, but its
/// document is never parsed: its load runs to the page-load timeout (30 s). Meanwhile chromedriver
/// answers nothing, BiDi included, which once counted as a lost browser: restarted every ~12 s,
/// reloaded into the same wait, until the restart intensity ended the run and removed the file.
/// Now the wait is no failure; at the timeout the load is stopped and the page is recorded as it
/// is, with no restart, to its max_duration.
#[test]
fn a_page_waiting_forever_for_a_script_is_recorded_without_restarts() {
    let _heavy = heavy();
    let server = PageServer::start(json!({ "script": "/hang" }));
    let (_dir, file) = out_dir();
    let config = json!({ "input": { "url": server.url(), "width": 640, "height": 360 },
                         "output": { "file": file }, "max_duration": "40s",
                         "supervision": { "max_restarts": 1, "within": "60s" } });
    let mut run = Run::start(&config, &[]);
    let (status, _) = run.wait(Duration::from_secs(90));
    let stderr = run.stderr();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(
        server.requests().iter().any(|r| r.path == "/hang"),
        "the page never asked for the script: {:?}",
        server.requests()
    );
    assert_eq!(run.count(events::RESTARTING), 0, "{stderr}");
    assert!(
        stderr.contains("did not arrive in time") && stderr.contains(events::PAGE_LOADED),
        "{stderr}"
    );
    let p = probe(&file);
    assert!(p.duration() >= 35.0, "duration {}", p.duration());
    assert_eq!(p.dimensions(), (640, 360));
    assert!(p.has_audio());
    for at in [5.0, p.duration() - 1.0] {
        let green = frame_rgb(&file, at, 32, 18).share(is_green);
        assert!(green > 0.95, "not the page at {at} s: {green} green");
    }
}
