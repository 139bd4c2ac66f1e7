//! End to end against a real LiveKit server: rooms with real participants (LiveKit's Python SDK
//! publishing a solid colour and a tone each), recorded by the `pagecast` binary through its
//! built-in layouts. Everything runs in a network namespace of the test's own (see
//! `pagecast_testkit::livekit`), so no packet leaves it.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use pagecast_actors::events;
use pagecast_testkit::livekit::{LiveKitServer, Media, Netns, Participant};
use pagecast_testkit::{
    descendants, frame_rgb, heavy, is_blue, is_dark, is_green, is_light, is_red, mean_volume_db,
    probe, tone_volume_db,
};
use serde_json::json;

/// `pagecast` inside the namespace, configured by the env var.
fn record_in(ns: &Netns, config: &serde_json::Value) -> Run {
    let mut cmd = ns.command(BIN);
    cmd.args(["--log-format", "json", "--log-level", "debug"])
        .env("LIVEKIT_RECORDER_CONFIG", config.to_string());
    Run::spawn(cmd)
}

fn media(identity: &str, color: Option<&str>, tone: u32) -> Media {
    Media {
        identity: identity.into(),
        color: color.map(str::to_owned),
        tone,
        size: None,
        screen: None,
        screen_tone: 0,
    }
}

/// Neither the given secrets nor any JWT (pagecast's own tokens included: a JWT's header always
/// encodes to `eyJ`) appear anywhere in pagecast's output, at debug level.
fn assert_no_secret(run: &Run, secrets: &[&str]) {
    let out = run.stderr();
    for secret in secrets {
        assert!(
            !out.contains(secret),
            "a secret leaked into the output:\n{out}"
        );
    }
    assert!(
        !out.contains("eyJ"),
        "a token leaked into the output:\n{out}"
    );
}

/// The layout page's frame counters (`PAGECAST_FRAMES`, logged at debug level once a second),
/// in the order logged.
fn page_frames(run: &Run) -> Vec<serde_json::Value> {
    run.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|l| {
            let text = l
                .get("message")?
                .as_str()?
                .strip_prefix("PAGECAST_FRAMES ")?;
            serde_json::from_str(text).ok()
        })
        .collect()
}

/// Over the page's last 3 s of counters: each tile's mean wait in its jitter buffer, and the
/// least of the sounds' (jitter buffer and playout), in ms.
fn recent_waits(counters: &[serde_json::Value]) -> (Vec<f64>, f64) {
    let (last, since) = (
        &counters[counters.len() - 1],
        &counters[counters.len().saturating_sub(4)],
    );
    let waits = |group: &str, total: &str, count: &str| -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for (key, end) in last[group].as_object().expect(group) {
            let begin = &since[group][key];
            let d = |k: &str| end[k].as_f64().unwrap_or(0.0) - begin[k].as_f64().unwrap_or(0.0);
            if d(count) > 0.0 {
                out.push((key.clone(), d(total) / d(count) * 1000.0));
            }
        }
        assert!(!out.is_empty(), "no {group} counted since {since}:\n{last}");
        out
    };
    let pictures = waits("tiles", "delay", "emitted");
    let playout: std::collections::HashMap<_, _> =
        waits("sound", "playout_delay", "playout_samples")
            .into_iter()
            .collect();
    let least_sound = waits("sound", "delay", "emitted")
        .into_iter()
        .map(|(key, w)| w + playout.get(&key).copied().unwrap_or(0.0))
        .fold(f64::INFINITY, f64::min);
    (pictures.into_iter().map(|(_, w)| w).collect(), least_sound)
}

/// One of a frame-counter line's numbers (`key` in `counts`).
fn counter(counts: &serde_json::Value, key: &str) -> f64 {
    counts[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} in {counts}"))
}

/// The recording's middle frame, small: enough to tell colours and where they are.
const W: usize = 96;
const H: usize = 54;

#[test]
fn grid_dark_records_two_participants_side_by_side_and_ends_when_they_leave() {
    let _heavy = heavy();
    let ns = Netns::create();
    let server = LiveKitServer::start(&ns);
    let (_dir, file) = out_dir();
    let red = Participant::join(&ns, &server, "standup", media("red", Some("FF0000"), 440));
    let blue = Participant::join(&ns, &server, "standup", media("blue", Some("0000FF"), 660));
    let config = json!({
        "api_key": server.api_key,
        "api_secret": server.api_secret,
        "input": { "template": {
            "layout": "grid-dark", "ws_url": server.ws_url(), "room_name": "standup",
            "empty_room_timeout": "3s",
        } },
        "output": { "file": file },
    });
    let mut run = record_in(&ns, &config);
    let first_frame = run.wait_for(events::ENCODER_RUNNING, Duration::from_secs(60));
    // Record a while with both in the room.
    pagecast_testkit::wait_until("6 s of recording", Duration::from_secs(30), || {
        first_frame.elapsed() >= Duration::from_secs(6)
    });
    let left = Instant::now();
    red.leave();
    blue.leave();
    // Nobody left: the layout ends the recording after the grace (3 s) by itself.
    let (status, exited) = run.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    let took = exited.duration_since(left);
    assert!(
        took <= Duration::from_secs(3 + 5),
        "ended {took:?} after the last participant left (grace 3 s)"
    );
    assert!(run.stderr().contains(events::PAGE_ENDED));
    if let Ok(keep) = std::env::var("PAGECAST_KEEP_RECORDINGS") {
        let _ = std::fs::copy(&file, std::path::Path::new(&keep).join("grid-dark.mp4"));
        let _ = std::fs::write(
            std::path::Path::new(&keep).join("grid-dark.log"),
            run.stderr(),
        );
        let _ = std::fs::write(std::path::Path::new(&keep).join("server.log"), server.log());
    }
    assert_no_secret(&run, &[&server.api_secret]);
    // The page address is logged, with its token masked.
    assert!(run.stderr().contains("token=****"), "{}", run.stderr());
    // The page counted each tile's frames: both participants' 15 fps arrived, were decoded and
    // shown, for the 6 s and more recorded; the lines name no participant.
    let counters = page_frames(&run);
    let last = counters
        .last()
        .unwrap_or_else(|| panic!("the page logged no frame counters:\n{}", run.stderr()));
    let tiles = last["tiles"].as_object().expect("tiles");
    assert_eq!(tiles.len(), 2, "{last}");
    for counts in tiles.values() {
        let n = |k: &str| counter(counts, k);
        assert!(n("received") >= 60.0, "{last}");
        assert!(
            n("decoded") >= 60.0 && n("decoded") <= n("received"),
            "{last}"
        );
        assert!(
            n("presented") >= 60.0 && n("presented") <= n("decoded"),
            "{last}"
        );
        // The jitter buffer's wait: frames left it, and waited there some time in all.
        assert!(n("emitted") >= 60.0 && n("delay") > 0.0, "{last}");
    }
    assert!(last["shown"].as_u64().unwrap() >= 60, "{last}");
    // Each participant's tone: its wait in the jitter buffer and in the browser's playout.
    let sound = last["sound"].as_object().expect("sound");
    assert_eq!(sound.len(), 2, "{last}");
    for counts in sound.values() {
        let f = |k: &str| counter(counts, k);
        assert!(f("emitted") > 0.0 && f("delay") > 0.0, "{last}");
        assert!(
            f("playout_samples") > 0.0 && f("playout_delay") > 0.0,
            "{last}"
        );
    }
    // Lip sync: each picture is held back by what its sound waits (without it: 7-20 ms against
    // 86-218).
    let (pictures, least_sound) = recent_waits(&counters);
    assert!(
        pictures.iter().all(|&w| w >= least_sound / 2.0),
        "pictures wait {pictures:?} ms, the sounds at least {least_sound:.0} ms:\n{last}"
    );
    assert!(
        counters.len() >= 5,
        "{} counter lines in 6 s",
        counters.len()
    );
    let lines = counters.iter().map(|c| c.to_string()).collect::<String>();
    assert!(!lines.contains("red") && !lines.contains("blue"), "{lines}");

    let p = probe(&file);
    assert_eq!(p.video_codec(), "h264");
    assert_eq!(p.dimensions(), (1920, 1080));
    assert!(p.duration() >= 6.0, "duration {}", p.duration());
    assert!(p.has_audio());
    let volume = mean_volume_db(&file);
    assert!(
        volume > -45.0,
        "the participants' tones are missing: {volume} dB"
    );
    // The start is the room, not an empty page: the first second already shows both.
    for at in [0.5, 3.0] {
        let f = frame_rgb(&file, at, W, H);
        let left_half = (0, 0, W / 2, H);
        let right_half = (W / 2, 0, W, H);
        let (red_left, blue_right) = (
            f.share_in(left_half, is_red),
            f.share_in(right_half, is_blue),
        );
        let (blue_left, red_right) = (
            f.share_in(left_half, is_blue),
            f.share_in(right_half, is_red),
        );
        // Side by side, in either order; each tile fills a good part of its half.
        let side_by_side =
            (red_left > 0.3 && blue_right > 0.3) || (blue_left > 0.3 && red_right > 0.3);
        assert!(
            side_by_side,
            "at {at}s: red {red_left:.2}/{red_right:.2}, blue {blue_left:.2}/{blue_right:.2} (left/right)"
        );
        // The rest is the dark background.
        let rest = f.share(|p| !is_red(p) && !is_blue(p));
        let dark = f.share(is_dark);
        assert!(
            dark > rest * 0.8,
            "at {at}s: only {dark:.2} of the frame is dark, {rest:.2} is neither red nor blue"
        );
    }
    // Which addresses carried the media: the server only ever paired candidates of the namespace.
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("candidate") && l.contains(Netns::ADDR)),
        "the server log shows no candidates: the check below would prove nothing"
    );
    // Every IPv4 address anywhere in the server's debug log (candidates, client addresses, SDP).
    for line in log.lines() {
        for word in line.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
            let is_ipv4 = word.split('.').count() == 4
                && word
                    .split('.')
                    .all(|o| !o.is_empty() && o.parse::<u8>().is_ok());
            if is_ipv4 {
                assert!(
                    word == Netns::ADDR || word.starts_with("127.") || word == "0.0.0.0",
                    "a candidate outside the namespace: {word} in {line}"
                );
            }
        }
    }
}

#[test]
fn speaker_light_with_a_given_token_shows_the_speaker_large() {
    let _heavy = heavy();
    let ns = Netns::create();
    let server = LiveKitServer::start(&ns);
    let (_dir, file) = out_dir();
    // A 4:3 camera: the layout keeps its shape (a person is never cropped), so a 16:9 frame
    // shows the background beside it.
    let green = Participant::join(
        &ns,
        &server,
        "talk",
        Media {
            size: Some((640, 480)),
            ..media("green", Some("00FF00"), 500)
        },
    );
    // The seed's second form: a token made elsewhere (here by LiveKit's own SDK).
    let token = sdk_token(&server, "talk");
    let config = json!({
        "input": { "template": { "layout": "speaker-light", "ws_url": server.ws_url(), "token": token } },
        "output": { "file": file },
        "max_duration": "5s",
    });
    let mut run = record_in(&ns, &config);
    let (status, _) = run.wait(Duration::from_secs(90));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    assert_no_secret(&run, &[&token, &server.api_secret]);
    let p = probe(&file);
    assert!(
        (p.duration() - 5.0).abs() <= 0.6,
        "duration {}",
        p.duration()
    );
    assert!(
        mean_volume_db(&file) > -45.0,
        "the speaker's tone is missing"
    );
    let f = frame_rgb(&file, 2.5, W, H);
    let green_share = f.share(is_green);
    // 1440x1080 of 1920x1080 is 75%; a label or a margin takes a little.
    assert!(
        green_share > 0.6,
        "the speaker fills only {green_share:.2} of the frame"
    );
    let light = f.share(is_light);
    let rest = 1.0 - green_share;
    assert!(
        light > rest * 0.7,
        "the background is not light: {light:.2} light of {rest:.2} not green"
    );
    drop(green);
}

#[test]
fn speaker_dark_shows_a_screen_share_large_and_the_others_small() {
    let _heavy = heavy();
    let ns = Netns::create();
    let server = LiveKitServer::start(&ns);
    let (_dir, file) = out_dir();
    // The speaker (a tone) has a red camera; the presenter, with no microphone, shares a blue
    // screen with a sound of its own (a shared tab's audio).
    let _speaker = Participant::join(&ns, &server, "demo", media("speaker", Some("FF0000"), 440));
    let _presenter = Participant::join(
        &ns,
        &server,
        "demo",
        Media {
            screen: Some("0000FF".into()),
            screen_tone: 330,
            ..media("presenter", Some("00FF00"), 0)
        },
    );
    let config = json!({
        "api_key": server.api_key,
        "api_secret": server.api_secret,
        "input": { "template": { "layout": "speaker-dark", "ws_url": server.ws_url(), "room_name": "demo" } },
        "output": { "file": file },
        "max_duration": "6s",
    });
    let mut run = record_in(&ns, &config);
    let (status, _) = run.wait(Duration::from_secs(90));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    assert_no_secret(&run, &[&server.api_secret]);
    let p = probe(&file);
    assert_eq!(p.video_codec(), "h264");
    assert_eq!(p.dimensions(), (1920, 1080));
    assert!(p.duration() >= 5.0, "duration {}", p.duration());
    assert!(p.has_audio());
    // Lip sync: the speaker's camera is held to its microphone, the screen to its own sound; the
    // presenter's camera has no sound and is shown as it comes.
    let counters = page_frames(&run);
    assert!(counters.len() >= 4, "{} counter lines", counters.len());
    let (pictures, least_sound) = recent_waits(&counters);
    let held = pictures.iter().filter(|&&w| w >= least_sound / 2.0).count();
    assert_eq!(
        (pictures.len(), held),
        (3, 2),
        "pictures wait {pictures:?} ms, the sounds at least {least_sound:.0} ms"
    );
    let f = frame_rgb(&file, 3.0, W, H);
    let (blue, red, green) = (f.share(is_blue), f.share(is_red), f.share(is_green));
    assert!(
        blue > 0.4,
        "the screen share is not the main tile: blue {blue:.2}"
    );
    assert!(
        red > 0.005 && red < blue / 4.0 && green > 0.005 && green < blue / 4.0,
        "the cameras are not small tiles: red {red:.2}, green {green:.2}, blue {blue:.2}"
    );
    assert!(f.share(is_dark) > 0.05, "no dark background");
}

/// A token from LiveKit's Python server SDK, for the room, subscribe-only and hidden.
fn sdk_token(server: &LiveKitServer, room: &str) -> String {
    let python = pagecast_testkit::repo_root().join(".venv/bin/python");
    let out = Command::new(python)
        .args([
            "-c",
            "import sys; from livekit import api; \
             print(api.AccessToken(sys.argv[1], sys.argv[2]).with_identity('given-token-recorder')\
             .with_grants(api.VideoGrants(room_join=True, room=sys.argv[3], can_subscribe=True, \
             can_publish=False, hidden=True, recorder=True)).to_jwt())",
            &server.api_key,
            &server.api_secret,
            room,
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn wrong_secret_missing_room_and_nobody_joining_are_clear_errors() {
    let _heavy = heavy();
    let ns = Netns::create();
    let server = LiveKitServer::start(&ns);
    let (_dir, file) = out_dir();
    let config = |secret: &str, room: &str, extra: serde_json::Value| {
        let mut c = json!({
            "api_key": server.api_key,
            "api_secret": secret,
            "input": { "template": { "layout": "grid-light", "ws_url": server.ws_url(), "room_name": room } },
            "output": { "file": file },
        });
        if let Some(obj) = extra.as_object() {
            for (k, v) in obj {
                c["input"][k] = v.clone();
            }
        }
        c
    };

    // A wrong secret: refused by the server before anything starts.
    let wrong = "a-wrong-secret-that-is-long-enough-0123456789";
    let began = Instant::now();
    let mut run = record_in(&ns, &config(wrong, "standup", json!({})));
    let (status, _) = run.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(4), "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains("rejected the token") && err.contains(&format!("{}:7880", Netns::ADDR)),
        "{err}"
    );
    assert_no_secret(&run, &[wrong, &server.api_secret]);
    assert!(!file.exists(), "nothing recorded, nothing left");
    assert!(began.elapsed() < Duration::from_secs(15));

    // The room does not exist: the right key, a room nobody made. It is waited for up to
    // start_timeout, then refused.
    let began = Instant::now();
    let mut run = record_in(
        &ns,
        &config(
            &server.api_secret,
            "no-such-room",
            json!({ "start_timeout": "2s" }),
        ),
    );
    let (status, _) = run.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(4), "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("room \"no-such-room\" does not exist"),
        "{}",
        run.stderr()
    );
    assert!(began.elapsed() >= Duration::from_secs(2));
    assert!(!file.exists());

    // Started before the room exists: it waits for it (here a listener that publishes
    // nothing makes it), then for someone to publish: "nobody joined" after start_timeout.
    let began = Instant::now();
    let mut run = record_in(
        &ns,
        &config(
            &server.api_secret,
            "quiet",
            json!({ "start_timeout": "10s" }),
        ),
    );
    run.wait_for(events::WAITING_FOR_ROOM, Duration::from_secs(15));
    let _listener = Participant::join(&ns, &server, "quiet", media("listener", None, 0));
    let (status, _) = run.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(4), "{}", run.stderr());
    assert!(
        run.stderr().contains("nobody joined the room"),
        "{}",
        run.stderr()
    );
    assert!(!file.exists(), "no empty recording left behind");
    assert!(
        began.elapsed() < Duration::from_secs(40),
        "{:?}",
        began.elapsed()
    );
    assert_no_secret(&run, &[&server.api_secret]);
}

#[test]
fn an_unreachable_server_is_a_clear_error_before_anything_starts() {
    // No WebRTC here, only the pre-flight request: a closed port on loopback.
    let port = pagecast_testkit::free_port();
    let (_dir, file) = out_dir();
    let config = json!({
        "api_key": "APIkey",
        "api_secret": "an-api-secret-that-must-not-show-0123456789",
        "input": { "template": { "layout": "speaker-dark", "ws_url": format!("ws://127.0.0.1:{port}"), "room_name": "r" } },
        "output": { "file": file },
    });
    let began = Instant::now();
    let mut run = Run::start(&config, &["--log-level", "debug"]);
    let (status, _) = run.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(4), "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains(&format!(
            "cannot reach the LiveKit server at 127.0.0.1:{port}"
        )),
        "{err}"
    );
    assert!(!err.contains("an-api-secret-that-must-not-show"), "{err}");
    assert!(
        !err.contains("Xvfb") && !err.contains("chromedriver"),
        "nothing started: {err}"
    );
    assert!(began.elapsed() < Duration::from_secs(15));
    assert!(!file.exists());
}

/// The Chromium browser process (not a helper) among a run's processes.
fn chromium_browser(run: &Run) -> Option<u32> {
    descendants(run.child.id())
        .into_iter()
        .find_map(|(pid, name)| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            (name == "chromium" && !String::from_utf8_lossy(&cmdline).contains("--type="))
                .then_some(pid)
        })
}

/// `input.template.participant`: one participant recorded alone (LiveKit's participant egress).
/// First someone who never comes: the start times out naming them. Then a screen share
/// (`screen_share`): the shared screen fills the picture, and neither camera shows. Then a
/// camera: that participant's picture fills it, and only their video and sound are received
/// (the page subscribes to nothing else); the recording ends once they have left, although
/// another participant is still in the room.
#[test]
fn one_participant_is_recorded_alone_their_screen_share_or_their_camera_until_they_leave() {
    let _heavy = heavy();
    let ns = Netns::create();
    let server = LiveKitServer::start(&ns);
    let red = Participant::join(&ns, &server, "one", media("red", Some("FF0000"), 440));
    let _blue = Participant::join(
        &ns,
        &server,
        "one",
        Media {
            screen: Some("00FF00".into()),
            screen_tone: 330,
            ..media("blue", Some("0000FF"), 660)
        },
    );
    let config = |participant: &str, screen_share: bool, file: &std::path::Path| {
        json!({
            "api_key": server.api_key,
            "api_secret": server.api_secret,
            "input": { "template": {
                "layout": "grid-dark", "ws_url": server.ws_url(), "room_name": "one",
                "empty_room_timeout": "3s",
                "participant": participant, "screen_share": screen_share,
            }, "width": 640, "height": 360 },
            "output": { "file": file },
            "max_duration": "20s",
        })
    };
    // Someone who never comes: named when the start times out; nothing left.
    let (_dir, file) = out_dir();
    let mut absent = config("carol", false, &file);
    absent["input"]["start_timeout"] = json!("3s");
    let mut run = record_in(&ns, &absent);
    let (status, _) = run.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(4), "{}", run.stderr());
    let last = run.stderr().lines().last().unwrap_or_default().to_owned();
    assert!(
        last.contains("participant \"carol\" did not join the room"),
        "{last}"
    );
    assert!(!file.exists(), "no empty recording left behind");
    // Blue's screen share.
    let (_dir, file) = out_dir();
    let mut run = record_in(&ns, &config("blue", true, &file));
    let first_frame = run.wait_for(events::ENCODER_RUNNING, Duration::from_secs(60));
    pagecast_testkit::wait_until("4 s of recording", Duration::from_secs(30), || {
        first_frame.elapsed() >= Duration::from_secs(4)
    });
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _) = run.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    assert_no_secret(&run, &[&server.api_secret]);
    let p = probe(&file);
    assert_eq!(p.dimensions(), (640, 360));
    assert!(
        p.duration() >= 3.5,
        "duration {}:\n{}",
        p.duration(),
        run.stderr()
    );
    assert!(p.has_audio());
    // From its first frame: the start waits for the screen share's picture, not only its sound.
    for at in [0.0, 3.0] {
        let f = frame_rgb(&file, at, W, H);
        let (green, red, blue) = (f.share(is_green), f.share(is_red), f.share(is_blue));
        assert!(
            green > 0.8 && red < 0.01 && blue < 0.01,
            "at {at} s: green {green:.2}, red {red:.2}, blue {blue:.2}"
        );
    }
    let counters = page_frames(&run);
    let last = counters.last().expect("frame counters");
    assert_eq!(
        last["tiles"].as_object().map(|t| t.len()),
        Some(1),
        "{last}"
    );
    assert_eq!(
        last["sound"].as_object().map(|t| t.len()),
        Some(1),
        "{last}"
    );

    // Red's camera, until red leaves.
    let (_dir, file) = out_dir();
    let mut run = record_in(&ns, &config("red", false, &file));
    let first_frame = run.wait_for(events::ENCODER_RUNNING, Duration::from_secs(60));
    pagecast_testkit::wait_until("5 s of recording", Duration::from_secs(30), || {
        first_frame.elapsed() >= Duration::from_secs(5)
    });
    let counters = page_frames(&run);
    let left = Instant::now();
    red.leave();
    // Blue is still there: the recording ends after the grace (3 s) all the same.
    let (status, exited) = run.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    assert!(
        run.stderr().contains(events::PAGE_ENDED),
        "{}",
        run.stderr()
    );
    let took = exited.duration_since(left);
    assert!(
        took <= Duration::from_secs(3 + 5),
        "ended {took:?} after red left (grace 3 s)"
    );
    assert_no_secret(&run, &[&server.api_secret]);
    let p = probe(&file);
    assert_eq!(p.dimensions(), (640, 360));
    assert!(p.duration() >= 5.0, "duration {}", p.duration());
    assert!(p.has_audio());
    let volume = mean_volume_db(&file);
    assert!(volume > -45.0, "red's tone is missing: {volume} dB");
    for at in [0.5, 4.0] {
        let f = frame_rgb(&file, at, W, H);
        let (red, green, blue) = (f.share(is_red), f.share(is_green), f.share(is_blue));
        assert!(
            red > 0.8 && green < 0.01 && blue < 0.01,
            "at {at} s: red {red:.2}, green {green:.2}, blue {blue:.2}"
        );
    }
    // Only red's camera and microphone reached the page, for seconds: blue's camera, screen
    // and sounds were never received.
    let last = counters.last().expect("frame counters");
    let tiles = last["tiles"].as_object().expect("tiles");
    assert_eq!(tiles.len(), 1, "{last}");
    assert!(
        tiles.values().all(|t| counter(t, "received") >= 60.0),
        "{last}"
    );
    assert_eq!(
        last["sound"].as_object().map(|s| s.len()),
        Some(1),
        "{last}"
    );
}

/// A crashed browser (chromedriver killed, Chromium goes with it) is restarted, joins the room
/// again and the recording goes on in one file; the reloaded layout still ends the recording when
/// the room empties. pagecast signs a token at every browser start, so the restart comes after the
/// first token has expired (a lifetime of 5 s here, 6 h and more in real use): the new browser
/// joins with a fresh one. LiveKit accepts a token up to a minute past its expiry (its JWT
/// leeway), so the kill comes 70 s in: the first token would be refused by then. (One scenario for
/// both: the wait for the expiry is the suite's longest, a second recording for the crash alone
/// cost another 20 s; the room's sound alone is recorded beside it in that wait too.)
#[test]
fn a_crashed_browser_rejoins_with_a_fresh_token_and_the_recording_goes_on() {
    let _heavy = heavy();
    let ns = Netns::create();
    let server = LiveKitServer::start(&ns);
    let (_dir, file) = out_dir();
    let red = Participant::join(&ns, &server, "crash", media("red", Some("FF0000"), 440));
    let blue = Participant::join(&ns, &server, "crash", media("blue", Some("0000FF"), 660));
    let config = json!({
        "api_key": server.api_key,
        "api_secret": server.api_secret,
        "input": { "template": {
            "layout": "grid-dark", "ws_url": server.ws_url(), "room_name": "crash",
            "empty_room_timeout": "3s", "token_lifetime": "5s",
        }, "width": 640, "height": 360 },
        "output": { "file": file },
    });
    let mut run = record_in(&ns, &config);
    let started = run.wait_for(events::PAGE_STARTED, Duration::from_secs(60));
    // Meanwhile, beside it, the room's sound alone (`output.audio_only`): the page subscribes to
    // no video, and the file holds both tones and no picture.
    let (_sound_dir, sound_file) = out_dir();
    let mut sound = config.clone();
    sound["output"] = json!({ "file": sound_file, "audio_only": true });
    let mut alone = record_in(&ns, &sound);
    let first = alone.wait_for(events::ENCODER_RUNNING, Duration::from_secs(60));
    pagecast_testkit::wait_until("3 s of sound", Duration::from_secs(30), || {
        first.elapsed() >= Duration::from_secs(3)
    });
    alone.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _) = alone.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", alone.stderr());
    let p = probe(&sound_file);
    assert!(!p.has_video(), "a picture in {}", p.json);
    assert!(p.duration() >= 2.5, "{} s of sound", p.duration());
    let (red_tone, blue_tone) = (
        tone_volume_db(&sound_file, 440),
        tone_volume_db(&sound_file, 660),
    );
    assert!(
        red_tone > -50.0 && blue_tone > -50.0,
        "440 Hz at {red_tone} dB, 660 Hz at {blue_tone} dB"
    );
    let counters = page_frames(&alone);
    let last = counters.last().expect("frame counters");
    assert_eq!(
        last["tiles"].as_object().map_or(0, |t| t.len()),
        0,
        "{last}"
    );
    assert_eq!(
        last["sound"].as_object().map(|s| s.len()),
        Some(2),
        "{last}"
    );
    // Past the first token's lifetime and LiveKit's leeway.
    pagecast_testkit::wait_until("the first token to expire", Duration::from_secs(90), || {
        started.elapsed() >= Duration::from_secs(70)
    });
    // chromedriver takes Chromium with it: the whole browser is gone.
    let driver = descendants(run.child.id())
        .into_iter()
        .find(|(_, name)| name == "chromedriver")
        .expect("chromedriver runs");
    assert!(chromium_browser(&run).is_some(), "Chromium runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(driver.0 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = run.wait_for("browser restarted", Duration::from_secs(20));
    // The new browser joins: its page loads and the room shows again for a while.
    let reloaded = run.wait_for_nth(events::PAGE_LOADED, 2, Duration::from_secs(60));
    assert!(reloaded > restarted);
    pagecast_testkit::wait_until("5 s after the reload", Duration::from_secs(30), || {
        reloaded.elapsed() >= Duration::from_secs(5)
    });
    let left = Instant::now();
    red.leave();
    blue.leave();
    // The reloaded layout still ends the recording when the room empties.
    let (status, _) = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    assert!(run.stderr().contains(events::PAGE_ENDED));
    assert_no_secret(&run, &[&server.api_secret]);
    let p = probe(&file);
    let recorded = left.duration_since(started).as_secs_f64();
    assert!(
        p.duration() >= recorded - 2.0,
        "{} s kept of {recorded} s",
        p.duration()
    );
    // One file, and the room is shown again after the restart: 1.5 s before they left.
    let at = recorded - 1.5;
    let f = frame_rgb(&file, at, W, H);
    assert!(
        f.share(is_red) > 0.1 && f.share(is_blue) > 0.1,
        "at {at} s, after the restart, the room is not shown: red {:.2}, blue {:.2}\n{}",
        f.share(is_red),
        f.share(is_blue),
        run.stderr()
    );
}

/// A token given in the config that has expired is named as such before anything starts.
#[test]
fn an_expired_given_token_is_reported_as_such() {
    let _heavy = heavy();
    let ns = Netns::create();
    let server = LiveKitServer::start(&ns);
    let (_dir, file) = out_dir();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(10 * 3600);
    let token = pagecast::livekit::recorder_token(
        &server.api_key,
        &pagecast_actors::secret::Secret::new(&server.api_secret),
        "late",
        "someone",
        long_ago,
        Duration::from_secs(60),
    )
    .unwrap();
    let config = json!({
        "input": { "template": {
            "layout": "grid-dark", "ws_url": server.ws_url(), "token": token.expose(),
        } },
        "output": { "file": file },
    });
    let mut run = record_in(&ns, &config);
    let (status, _) = run.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(4), "{}", run.stderr());
    let stderr = run.stderr();
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("pagecast: input.template.token expired at "),
        "{last}"
    );
    assert!(!file.exists());
}
