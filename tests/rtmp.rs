//! Live streaming to a real RTMP server (nginx with its RTMP module, on loopback): the stream is
//! pulled back while it runs and nginx's own recording is checked with ffprobe. The stream key
//! never appears in pagecast's output, debug logs of its child processes included. SRT the same
//! way, to Debian's `srt-live-transmit` as the listener.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use pagecast_actors::events;
use pagecast_testkit::srt::SrtListener;
use pagecast_testkit::{heavy, probe, wait_until, Nginx};
use serde_json::json;

const KEY: &str = "sk_live_4f2a9c";

/// What ffprobe says of a live RTMP stream: "codec WxH" of video and the audio codec.
fn probe_live(url: &str) -> Option<(String, String)> {
    let out = Command::new("timeout")
        .args([
            "10",
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height",
            "-of",
            "json",
            url,
        ])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let streams = v["streams"].as_array()?;
    let video = streams.iter().find(|s| s["codec_type"] == "video")?;
    let audio = streams.iter().find(|s| s["codec_type"] == "audio")?;
    Some((
        format!(
            "{} {}x{}",
            video["codec_name"].as_str()?,
            video["width"],
            video["height"]
        ),
        audio["codec_name"].as_str()?.to_owned(),
    ))
}

fn assert_no_key(run: &Run) {
    let stderr = run.stderr();
    assert!(
        !stderr.contains(KEY),
        "the stream key reached pagecast's output:\n{stderr}"
    );
}

#[test]
fn streams_a_page_scaled_to_720p() {
    let _heavy = heavy();
    let nginx = Nginx::start();
    let config = json!({
        "input": { "url": demo_page(), "width": 1920, "height": 1080 },
        "output": { "rtmp": nginx.url("live", KEY), "width": 1280, "height": 720 },
        "max_duration": "10s",
    });
    let mut run = Run::start(&config, &["--log-level", "debug"]);
    run.wait_for(events::LIVE_STREAM_CONNECTED, Duration::from_secs(60));
    let live = probe_live(&nginx.url("live", KEY)).expect("the live stream can be played back");
    assert_eq!(live, ("h264 1280x720".to_owned(), "aac".to_owned()));
    let (status, _) = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    assert_no_key(&run);
    // The relay ends when told to, once the encoder has stopped feeding it (it used to be killed
    // after its grace: 3 s added to every stop).
    assert_eq!(
        run.count(events::KILLED_AFTER_GRACE),
        0,
        "a process had to be killed:\n{}",
        run.stderr()
    );
    let recorded = nginx.recordings();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let p = probe(&recorded[0]);
    assert_eq!(p.dimensions(), (1280, 720));
    assert!(
        (p.duration() - 10.0).abs() <= 1.5,
        "nginx recorded {} s",
        p.duration()
    );
    assert!(p.has_audio());
}

#[test]
fn file_and_stream_at_once_survive_a_restarting_server() {
    let _heavy = heavy();
    let mut nginx = Nginx::start();
    let (_dir, file) = out_dir();
    let config = json!({
        "input": { "url": demo_page(), "width": 1280, "height": 720 },
        "output": { "file": file, "rtmp": nginx.url("live", KEY) },
        "max_duration": "14s",
    });
    let mut run = Run::start(&config, &["--log-level", "debug"]);
    let connected = run.wait_for(events::LIVE_STREAM_CONNECTED, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3).saturating_sub(connected.elapsed()));
    nginx.kill();
    let before = nginx.recordings();
    run.wait_for(events::LIVE_STREAM_DROPPED, Duration::from_secs(10));
    // The server is away for a while, then back on the same port.
    std::thread::sleep(Duration::from_secs(3));
    let back = Instant::now();
    nginx.run();
    let new_stream = || {
        nginx
            .recordings()
            .into_iter()
            .find(|f| !before.contains(f) && std::fs::metadata(f).is_ok_and(|m| m.len() > 100_000))
    };
    wait_until(
        "a new recorded stream with content",
        Duration::from_secs(15),
        || new_stream().is_some(),
    );
    println!("stream back {:?} after the server", back.elapsed());
    let (status, _) = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    assert_no_key(&run);
    // The file never noticed.
    let p = probe(&file);
    assert!(
        (p.duration() - 14.0).abs() <= 1.0,
        "file {} s",
        p.duration()
    );
    assert!(p.frames() >= 14 * 30 - 45, "frames {}", p.frames());
    let second = new_stream().expect("the resumed stream");
    println!("recorded streams: before the restart {before:?}, after {second:?}");
    assert!(
        probe(&second).duration() >= 3.0,
        "resumed stream {} s",
        probe(&second).duration()
    );
}

#[test]
fn a_server_that_refuses_the_stream_is_a_clear_error() {
    let _heavy = heavy();
    let nginx = Nginx::start();
    let (_dir, file) = out_dir();
    let config = json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": { "file": file, "rtmp": nginx.url("nosuchapp", KEY) },
    });
    let started = Instant::now();
    let mut run = Run::start(&config, &["--log-level", "debug"]);
    let (status, _) = run.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(5), "{}", run.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let last = run.stderr().lines().last().unwrap().to_owned();
    assert!(
        last.contains(&format!(
            "live stream to rtmp://127.0.0.1:{}/nosuchapp/**** failed",
            nginx.port
        )),
        "{last}"
    );
    assert_no_key(&run);
}

#[test]
fn a_stream_only_recording_ends_when_the_server_stays_away() {
    let _heavy = heavy();
    let mut nginx = Nginx::start();
    let config = json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": { "rtmp": nginx.url("live", KEY), "rtmp_retry_for": "3s" },
    });
    let mut run = Run::start(&config, &["--log-level", "debug"]);
    run.wait_for(events::LIVE_STREAM_CONNECTED, Duration::from_secs(60));
    nginx.kill();
    let (status, _) = run.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(5), "{}", run.stderr());
    let last = run.stderr().lines().last().unwrap().to_owned();
    assert!(
        last.contains("the server did not come back within 3s"),
        "{last}"
    );
    assert_no_key(&run);
}

/// rtmps:// through a real TLS server (a TLS terminator in front of nginx-rtmp, its certificate
/// trusted through SSL_CERT_FILE): the stream arrives, and while it runs the key is on no
/// process's command line (the relay's ffmpeg streams plain RTMP to pagecast's loopback proxy,
/// which speaks TLS to the server).
#[test]
fn streams_over_rtmps_with_the_key_on_no_command_line() {
    let _heavy = heavy();
    let nginx = Nginx::start();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            // A server certificate, not a CA: rustls refuses a CA as the end entity.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    let tls_port = pagecast_testkit::free_port();
    /// Killed however the test ends, so a failed test leaves no server behind.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut terminator = Command::new(pagecast_testkit::repo_root().join(".venv/bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/tls_terminator.py"
        ))
        .args([tls_port.to_string(), nginx.port.to_string()])
        .arg(&cert)
        .arg(&key)
        .spawn()
        .map(KillOnDrop)
        .expect("start the TLS terminator");
    wait_until("the TLS terminator", Duration::from_secs(15), || {
        assert!(
            terminator.0.try_wait().unwrap().is_none(),
            "the TLS terminator exited"
        );
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    });
    let config = json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": { "rtmp": format!("rtmps://127.0.0.1:{tls_port}/live/{KEY}") },
        // Stopped by the test once the stream has run a while.
        "max_duration": "90s",
    });
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-format", "json", "--log-level", "debug", "record"])
        .env("LIVEKIT_RECORDER_CONFIG", config.to_string())
        .env("SSL_CERT_FILE", &cert);
    let mut run = Run::spawn(cmd);
    let connected = run.wait_for(events::LIVE_STREAM_CONNECTED, Duration::from_secs(60));
    let processes = pagecast_testkit::descendants(run.child.id());
    assert!(
        processes.iter().filter(|(_, n)| n == "ffmpeg").count() >= 2,
        "the encoder and the relay: {processes:?}"
    );
    for (pid, name) in &processes {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(KEY),
            "{name} ({pid}) has the key on its command line"
        );
    }
    wait_until("4 s of streaming", Duration::from_secs(10), || {
        connected.elapsed() >= Duration::from_secs(4)
    });
    run.signal(Signal::SIGTERM);
    // At most what was encoded since the first frame (the relay reports itself connected a
    // little after its first frames reach the server).
    let streamed = run
        .seen_nth(events::ENCODER_RUNNING, 1)
        .expect("the encoder ran")
        .elapsed()
        .as_secs_f64();
    let (status, _) = run.wait(Duration::from_secs(60));
    drop(terminator);
    assert!(status.success(), "{status}:\n{}", run.stderr());
    assert_no_key(&run);
    let recorded = nginx.recordings();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let p = probe(&recorded[0]);
    assert_eq!(p.dimensions(), (640, 360));
    assert!(
        p.duration() >= 3.0 && p.duration() <= streamed + 1.5,
        "nginx recorded {} s of {streamed} s encoded",
        p.duration()
    );
}

/// No process of the run has `secret` on its command line.
fn assert_on_no_command_line(run: &Run, secret: &str) {
    let processes = pagecast_testkit::descendants(run.child.id());
    assert!(
        processes.iter().filter(|(_, n)| n == "ffmpeg").count() >= 2,
        "the encoder and the relay: {processes:?}"
    );
    for (pid, name) in &processes {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(secret),
            "{name} ({pid}) has the secret on its command line"
        );
    }
}

/// SRT with a passphrase beside a file: the listener receives a stream that decodes; killed and
/// started again on the same port, it receives a second one (the relay reconnected) while the
/// file goes on. The passphrase is on no command line and in none of pagecast's output.
#[test]
fn streams_over_srt_and_reconnects_to_a_restarted_listener() {
    const PASSPHRASE: &str = "srt_pass_7c1e9b";
    let _heavy = heavy();
    let mut listener = SrtListener::start(Some(PASSPHRASE));
    let (_dir, file) = out_dir();
    let config = json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": { "file": file, "srt": listener.url(&format!("?passphrase={PASSPHRASE}")) },
        // Stopped by the test once the second stream has run a while.
        "max_duration": "90s",
    });
    let mut run = Run::start(&config, &["--log-level", "debug"]);
    let connected = run.wait_for(events::LIVE_STREAM_CONNECTED, Duration::from_secs(60));
    assert_on_no_command_line(&run, PASSPHRASE);
    wait_until("3 s of streaming", Duration::from_secs(10), || {
        connected.elapsed() >= Duration::from_secs(3)
    });
    listener.kill();
    let first = listener.piece(1);
    // The listener is back at once on the same port; the relay finds out that its connection is
    // gone (SRT's peer idle timeout, 5 s) and connects again.
    listener.run();
    run.wait_for(events::LIVE_STREAM_DROPPED, Duration::from_secs(15));
    let again = run.wait_for_nth(events::LIVE_STREAM_CONNECTED, 2, Duration::from_secs(15));
    wait_until("3 s of the second stream", Duration::from_secs(10), || {
        again.elapsed() >= Duration::from_secs(3)
    });
    run.signal(Signal::SIGTERM);
    let (status, _) = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", run.stderr());
    // The relay closed its connection: the listener wrote the second piece to its end.
    listener.wait_exit(Duration::from_secs(10));
    let stderr = run.stderr();
    assert!(
        !stderr.contains(PASSPHRASE),
        "the passphrase reached pagecast's output:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("srt://127.0.0.1:{}?****", listener.port)),
        "the stream is named, masked:\n{stderr}"
    );
    for piece in [first, listener.piece(2)] {
        let p = probe(&piece);
        assert_eq!(p.dimensions(), (640, 360), "{}", piece.display());
        assert!(p.has_audio(), "{}", piece.display());
        assert!(
            p.duration() >= 1.5,
            "{} holds {} s",
            piece.display(),
            p.duration()
        );
    }
    // The file never noticed.
    let p = probe(&file);
    let recorded = run
        .seen_nth(events::ENCODER_RUNNING, 1)
        .expect("the encoder ran")
        .elapsed()
        .as_secs_f64();
    assert!(
        p.duration() >= 9.0 && p.duration() <= recorded + 1.0,
        "file {} s of {recorded} s",
        p.duration()
    );
}

/// An SRT listener that refuses the caller (a wrong passphrase) ends an SRT-only recording with
/// exit 5 within seconds, naming the stream masked and never the passphrase.
#[test]
fn an_srt_listener_that_refuses_the_passphrase_is_a_clear_error() {
    const WRONG: &str = "not_the_listeners_one";
    let _heavy = heavy();
    let listener = SrtListener::start(Some("the_listeners_passphrase"));
    let config = json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": { "srt": listener.url(&format!("?passphrase={WRONG}")) },
    });
    let started = Instant::now();
    let mut run = Run::start(&config, &["--log-level", "debug"]);
    let (status, _) = run.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(5), "{}", run.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let stderr = run.stderr();
    let last = stderr.lines().last().unwrap().to_owned();
    assert!(
        last.contains(&format!(
            "live stream to srt://127.0.0.1:{}?**** failed",
            listener.port
        )),
        "{last}"
    );
    assert!(
        !stderr.contains(WRONG),
        "the passphrase reached the output:\n{stderr}"
    );
}
