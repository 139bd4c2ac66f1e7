//! Fault injection: real processes of a running recording are killed from outside, at a random
//! moment, and the recording must survive: the restart logged with its cause, the recording going
//! on after it until the test stops it, exit 0, one playable file with video and audio holding what
//! was recorded before the fault and after the restart, and no process of the run left behind.
//! How long a restart takes is the benchmark's business, not this suite's: the rows hold on any
//! machine, however slow.
//! Faults a restart cannot fix (the page's server gone when the browser restarts, a full disk)
//! end the recording early with their own exit code, keeping what was recorded.
//! Every fault is a row of one table: seconds recorded (on disk, as the encoder wrote them) before
//! the fault and in all, seconds kept in the final file, and the wall time; every row must have
//! kept >= recorded - 2 s and kept <= wall + 1 s (nothing lost, nothing twice).
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pagecast_actors::events;
use pagecast_testkit::fault::{Seeded, Tmpfs};
use pagecast_testkit::{alive, descendants, heavy, probe, wait_until};
use serde_json::json;

/// How long a survived fault's recording goes on after its restart before the test stops it.
const AFTER_RESTART: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy)]
enum Fault {
    ChromiumBrowser,
    ChromiumRenderer,
    Chromedriver,
    Ffmpeg,
    Xvfb,
    PulseAudio,
    /// The page's server goes away and Chromium is killed: the reload fails.
    PageGone,
    /// The output's file system fills up.
    DiskFull,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::ChromiumBrowser,
        Fault::ChromiumRenderer,
        Fault::Chromedriver,
        Fault::Ffmpeg,
        Fault::Xvfb,
        Fault::PulseAudio,
        Fault::PageGone,
        Fault::DiskFull,
    ];

    /// The exit code this fault ends the run with.
    fn exit(self) -> i32 {
        match self {
            Fault::PageGone => 4,
            Fault::DiskFull => 5,
            _ => 0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::ChromiumBrowser => "kill -9 Chromium browser process",
            Fault::ChromiumRenderer => "kill -9 Chromium renderer",
            Fault::Chromedriver => "kill -9 chromedriver",
            Fault::Ffmpeg => "kill -9 ffmpeg",
            Fault::Xvfb => "kill -9 Xvfb",
            Fault::PulseAudio => "kill -9 pulseaudio",
            Fault::PageGone => "page server down, kill -9 Chromium",
            Fault::DiskFull => "output disk full",
        }
    }

    /// The child the supervisor must restart, as named in its log (None: nothing may restart).
    fn restarted(self) -> Option<&'static str> {
        match self {
            Fault::ChromiumBrowser
            | Fault::ChromiumRenderer
            | Fault::Chromedriver
            | Fault::PageGone => Some("browser"),
            Fault::Ffmpeg => Some("encoder"),
            Fault::Xvfb => Some("display"),
            Fault::PulseAudio => Some("audio"),
            Fault::DiskFull => None,
        }
    }

    /// Whether the fault restarts the encoder (a new segment: the time until its first frame is
    /// not recorded). A browser restarts alone while the encoder goes on recording the display.
    fn restarts_encoder(self) -> bool {
        matches!(self, Fault::Ffmpeg | Fault::Xvfb | Fault::PulseAudio)
    }

    /// The log event that shows the recording going on again after the fault.
    fn resumed_event(self) -> &'static str {
        if self.restarts_encoder() {
            events::ENCODER_RUNNING
        } else {
            events::PAGE_LOADED
        }
    }

    /// The process to kill among the run's processes.
    fn target(self, tree: &[(u32, String)]) -> Option<u32> {
        let cmdline = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default()
        };
        if let Fault::ChromiumRenderer = self {
            // The page's renderer is the busy one: the demo page animates all the time (another
            // renderer hosts chromedriver's BiDi mapper).
            // CPU used over the last half second, not in all: the BiDi mapper's renderer is busy
            // at start-up, then idle.
            let renderers: Vec<(u32, u64)> = tree
                .iter()
                .filter(|(pid, name)| {
                    name == "chromium" && cmdline(*pid).contains("--type=renderer")
                })
                .map(|(pid, _)| (*pid, cpu_ticks(*pid)))
                .collect();
            std::thread::sleep(Duration::from_millis(500));
            return renderers
                .into_iter()
                .max_by_key(|(pid, before)| cpu_ticks(*pid).saturating_sub(*before))
                .map(|(pid, _)| pid);
        }
        tree.iter()
            .find(|(pid, name)| match self {
                Fault::ChromiumBrowser | Fault::PageGone => {
                    name == "chromium" && !cmdline(*pid).contains("--type=")
                }
                Fault::DiskFull => false,
                Fault::ChromiumRenderer => unreachable!("handled above"),
                Fault::Chromedriver => name == "chromedriver",
                Fault::Ffmpeg => name == "ffmpeg",
                Fault::Xvfb => name == "Xvfb",
                Fault::PulseAudio => name == "pulseaudio",
            })
            .map(|(pid, _)| *pid)
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the name: state is field 0, utime 11, stime 12.
    field(11) + field(12)
}

struct Outcome {
    fault: Fault,
    at: f64,
    exit: Option<i32>,
    /// Seconds recorded before the fault: on disk in the segment being written at that moment.
    before: f64,
    /// Seconds recorded in all: before the fault, plus (for a survived fault) what the restarted
    /// encoder had written when the test stopped the run (the same file, when only the browser
    /// restarted).
    recorded: f64,
    /// Seconds recorded after the restart (survived faults).
    after: f64,
    /// Wall seconds from the first frame to the end (the stop, or the early exit).
    wall: f64,
    /// Seconds on disk afterwards.
    duration: Option<f64>,
    has_audio: bool,
    restart_logged: bool,
    survivors: Vec<(u32, String)>,
    error: Option<String>,
    /// The run's log, printed for a row that failed.
    log: String,
}

impl Outcome {
    fn ok(&self) -> bool {
        let kept = self.duration.unwrap_or(0.0);
        // Everything recorded is kept (within 2 s), nothing twice (never more than the wall), and
        // a survived fault's recording went on after the restart.
        self.exit == Some(self.fault.exit())
            && kept >= self.recorded - 2.0
            && kept <= self.wall + 1.0
            && (self.fault.exit() != 0 || self.after >= 0.5)
            && self.has_audio
            && self.restart_logged == self.fault.restarted().is_some()
            && self.survivors.is_empty()
            && self.error.is_none()
    }
}

/// Seconds of video on disk in the newest MP4 of `dir` (the output, or the part being written):
/// what the encoder has recorded so far. 0 if there is none, or it cannot be read yet.
fn written(dir: &std::path::Path) -> f64 {
    let newest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".mp4"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    let Some(newest) = newest else { return 0.0 };
    std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(newest.path())
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0.0)
}

/// A page on 127.0.0.1 (the demo page), served until stopped; then the port refuses.
struct PageServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PageServer {
    fn start() -> PageServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let page =
            std::fs::read(pagecast_testkit::repo_root().join("assets/demo/index.html")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut con, _)) => {
                        let _ = con.set_nonblocking(false);
                        let mut buf = [0u8; 4096];
                        let _ = con.read(&mut buf);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            page.len()
                        );
                        let _ = con.write_all(head.as_bytes());
                        let _ = con.write_all(&page);
                    }
                    // Polling the stop flag between connections.
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        PageServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops serving: the port is closed when this returns.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_fault(fault: Fault) -> Outcome {
    let (_dir, mut file) = out_dir();
    let mut server = None;
    let mut disk = None;
    let url = match fault {
        Fault::PageGone => {
            let s = PageServer::start();
            let url = format!("http://127.0.0.1:{}/", s.port);
            server = Some(s);
            url
        }
        _ => demo_page(),
    };
    if let Fault::DiskFull = fault {
        // About 4 to 10 s of the demo page at 1280x720.
        let d = Tmpfs::mount("size=1536k");
        file = d.path().join("rec.mp4");
        disk = Some(d);
    }
    let config = json!({
        "input": { "url": url, "width": 1280, "height": 720 },
        "output": { "file": file },
        // A survived fault's run is stopped by the test; the others end by themselves.
        "max_duration": if fault.exit() == 0 { "90s" } else { "40s" },
    });
    // The run's temporary files go to a directory of its own, which must be empty afterwards:
    // nothing is left behind, whatever was killed.
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--log-format", "json"])
        .env("LIVEKIT_RECORDER_CONFIG", config.to_string())
        .env("TMPDIR", tmp.path());
    let mut run = Run::spawn(cmd);
    let first_frame = run.wait_for(events::ENCODER_RUNNING, Duration::from_secs(60));
    let loaded = run.wait_for(events::PAGE_LOADED, Duration::from_secs(60));
    let mut at = Seeded::new("fault moment").between(2.0, 8.0);
    // Everything the run ever started, to check nothing survives it.
    let mut seen: BTreeMap<u32, String> = BTreeMap::new();
    let mut target = None;
    let mut error = None;
    let fault_at;
    let before;
    let mut resumed_before = 1;
    if let (Fault::DiskFull, Some(disk)) = (fault, &disk) {
        // The fault comes by itself: the moment the disk is full.
        let deadline = Instant::now() + Duration::from_secs(35);
        while disk.free() > 64 * 1024
            && run.child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            seen.extend(descendants(run.child.id()));
            std::thread::sleep(Duration::from_millis(20));
        }
        fault_at = Instant::now();
        before = written(file.parent().unwrap());
        at = fault_at.duration_since(loaded).as_secs_f64();
        if disk.free() > 64 * 1024 {
            error = Some("the disk did not fill".into());
        }
    } else {
        while loaded.elapsed().as_secs_f64() < at {
            let tree = descendants(run.child.id());
            target = fault.target(&tree).or(target);
            seen.extend(tree);
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(server) = &mut server {
            server.stop();
        }
        resumed_before = run.count(fault.resumed_event());
        before = written(file.parent().unwrap());
        let tree = descendants(run.child.id());
        match fault.target(&tree) {
            Some(pid) => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            None => {
                error = Some(format!(
                    "no process to kill among {tree:?} (seen before: {target:?})"
                ))
            }
        }
        fault_at = Instant::now();
        seen.extend(tree);
    }
    let mut recorded = before;
    let mut after = 0.0;
    if fault.exit() == 0 && error.is_none() {
        // Survived: the recording goes on (the restarted encoder's first frame, or the page
        // loaded again), a while of recording, then a stop.
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut resumed = None;
        while resumed.is_none()
            && run.child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            resumed = run.seen_nth(fault.resumed_event(), resumed_before + 1);
            seen.extend(descendants(run.child.id()));
            std::thread::sleep(Duration::from_millis(100));
        }
        match resumed {
            Some(resumed) => {
                while resumed.elapsed() < AFTER_RESTART && run.child.try_wait().unwrap().is_none() {
                    seen.extend(descendants(run.child.id()));
                    std::thread::sleep(Duration::from_millis(100));
                }
                let now = written(file.parent().unwrap());
                run.signal(Signal::SIGTERM);
                // A restarted encoder writes a new part; otherwise the same file grew.
                (after, recorded) = if fault.restarts_encoder() {
                    (now, before + now)
                } else {
                    (now - before, now)
                };
            }
            None => {
                error = Some(format!(
                    "no {:?} after the fault:\n{}",
                    fault.resumed_event(),
                    run.stderr()
                ))
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        seen.extend(descendants(run.child.id()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, exited) = run.wait(Duration::from_secs(30));
    let wall = exited.duration_since(first_frame).as_secs_f64();
    let stderr = run.stderr();
    let restart_logged = stderr.lines().any(|l| {
        l.contains(&format!(r#""message":"{}""#, events::RESTARTING))
            && fault
                .restarted()
                .is_none_or(|child| l.contains(&format!(r#""child":"{child}""#)))
            && l.contains(r#""cause""#)
    });
    // Children die with their parent, but reaping them takes a moment.
    let gone_by = Instant::now() + Duration::from_secs(10);
    while seen.keys().any(|p| alive(*p)) && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<(u32, String)> = seen.into_iter().filter(|(p, _)| alive(*p)).collect();
    let (duration, has_audio) = if file.exists() {
        let p = probe(&file);
        (Some(p.duration()), p.has_audio())
    } else {
        (None, false)
    };
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    if !left.is_empty() && error.is_none() {
        error = Some(format!("left behind in TMPDIR: {left:?}"));
    }
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    if status.code() != Some(fault.exit()) && error.is_none() {
        error = Some(last.clone());
    }
    if fault.exit() != 0 && error.is_none() {
        // Ended early: the one line says why and where the recording is.
        if !last.contains(&file.display().to_string()) {
            error = Some(format!("the error does not name the file: {last}"));
        }
        if let Fault::DiskFull = fault {
            let took = exited.duration_since(fault_at);
            if !last.contains("no space left on device") {
                error = Some(format!("the cause is not named: {last}"));
            } else if took > Duration::from_secs(5) {
                error = Some(format!("exit {took:?} after the disk filled"));
            }
        }
    }
    if restart_logged != fault.restarted().is_some() && error.is_none() {
        error = Some(match fault.restarted() {
            Some(child) => format!("no restart of {child} logged:\n{stderr}"),
            None => format!("a restart was logged:\n{stderr}"),
        });
    }
    drop(disk);
    Outcome {
        fault,
        at,
        exit: status.code(),
        before,
        recorded,
        after,
        wall,
        duration,
        has_audio,
        restart_logged,
        survivors,
        error,
        log: stderr,
    }
}

/// Prints the outcomes as one table: what was recorded before each fault and what was kept.
fn print_table(outcomes: &[Outcome]) {
    println!(
        "\n{:<36} {:>7} {:>5} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>10}  result",
        "fault",
        "at (s)",
        "exit",
        "before",
        "recorded",
        "kept",
        "wall",
        "audio",
        "restart",
        "survivors"
    );
    for o in outcomes {
        println!(
            "{:<36} {:>7.1} {:>5} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>10}  {}",
            o.fault.name(),
            o.at,
            o.exit.map(|c| c.to_string()).unwrap_or("-".into()),
            format!("{:.1} s", o.before),
            format!("{:.1} s", o.recorded),
            o.duration
                .map(|d| format!("{d:.1} s"))
                .unwrap_or("-".into()),
            format!("{:.1} s", o.wall),
            o.has_audio,
            o.restart_logged,
            o.survivors.len(),
            if o.ok() {
                "ok".to_owned()
            } else {
                format!("FAILED {}", o.error.clone().unwrap_or_default())
            }
        );
    }
}

fn assert_all_ok(outcomes: &[Outcome]) {
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok()).collect();
    for o in &failed {
        println!("\n---- log of the row {:?} ----\n{}", o.fault.name(), o.log);
    }
    assert!(
        failed.is_empty(),
        "{} of {} faults not survived: {:?}",
        failed.len(),
        outcomes.len(),
        failed
            .iter()
            .map(|o| (o.fault.name(), &o.error, &o.survivors))
            .collect::<Vec<_>>()
    );
}

#[test]
fn every_fault_is_survived() {
    let _heavy = heavy();
    // A row's fault moment is replayed with its printed seed; PAGECAST_TEST_FAULT (a part of the
    // row's name, e.g. "pulseaudio") runs that row alone.
    let only = std::env::var("PAGECAST_TEST_FAULT").unwrap_or_default();
    let outcomes: Vec<Outcome> = Fault::ALL
        .into_iter()
        .filter(|f| f.name().contains(&only))
        .map(run_fault)
        .collect();
    assert!(!outcomes.is_empty(), "no fault is named like {only:?}");
    if !only.is_empty() {
        for o in &outcomes {
            println!("\n---- log of the row {:?} ----\n{}", o.fault.name(), o.log);
        }
    }
    print_table(&outcomes);
    assert_all_ok(&outcomes);
}

#[test]
fn crashes_beyond_the_restart_intensity_end_the_run_with_what_was_recorded() {
    let _heavy = heavy();
    let (_dir, file) = out_dir();
    let config = json!({
        "input": { "url": demo_page(), "width": 1280, "height": 720 },
        "output": { "file": file },
        "supervision": { "max_restarts": 1, "within": "60s" },
    });
    let mut run = Run::start(&config, &[]);
    run.wait_for(events::PAGE_LOADED, Duration::from_secs(60));
    // Kill each new ffmpeg once it has recorded a while, until pagecast gives up.
    let mut kills = 0;
    let mut last = None;
    while run.child.try_wait().unwrap().is_none() && kills < 5 {
        std::thread::sleep(Duration::from_millis(200));
        let tree = descendants(run.child.id());
        if let Some(pid) = Fault::Ffmpeg.target(&tree) {
            if last != Some(pid) {
                // Let this segment get a few fragments first.
                std::thread::sleep(Duration::from_secs(3));
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                last = Some(pid);
                kills += 1;
            }
        }
    }
    let (status, _) = run.wait(Duration::from_secs(60));
    let stderr = run.stderr();
    assert_ne!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("restart intensity exceeded"), "{stderr}");
    let last_line = stderr.lines().last().unwrap();
    assert!(
        last_line
            .starts_with("pagecast: encoder failed: encoder lost: ffmpeg was killed by SIGKILL"),
        "{last_line}"
    );
    wait_until("the file", Duration::from_secs(1), || file.exists());
    let p = probe(&file);
    assert!(p.duration() >= 3.0, "only {} s kept", p.duration());
    assert!(p.has_audio());
}

/// Found by the random fault moments: an encoder killed before its first fragment leaves a
/// segment with a video track but no frame, which once spoiled the joined file (0 s, reported as
/// a success).
#[test]
fn an_encoder_killed_before_its_first_fragment_still_gives_one_playable_file() {
    let _heavy = heavy();
    let (_dir, file) = out_dir();
    let config = json!({
        "input": { "url": demo_page(), "width": 1280, "height": 720 },
        "output": { "file": file },
        "max_duration": "90s",
    });
    let mut run = Run::start(&config, &[]);
    // At its first frame ffmpeg has written no fragment yet (the first one closes at the second
    // keyframe, two seconds of video later), however slow the machine.
    run.wait_for(events::ENCODER_RUNNING, Duration::from_secs(60));
    let tree = descendants(run.child.id());
    let ffmpeg = Fault::Ffmpeg.target(&tree).expect("ffmpeg runs");
    kill(Pid::from_raw(ffmpeg as i32), Signal::SIGKILL).unwrap();
    let resumed = run.wait_for_nth(events::ENCODER_RUNNING, 2, Duration::from_secs(60));
    wait_until("5 s of the second segment", Duration::from_secs(10), || {
        resumed.elapsed() >= Duration::from_secs(5)
    });
    let recorded = written(file.parent().unwrap());
    run.signal(Signal::SIGTERM);
    let (status, _) = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", run.stderr());
    assert!(run.stderr().contains("leaving it out"), "{}", run.stderr());
    let p = probe(&file);
    assert!(
        p.duration() >= recorded - 2.0,
        "kept {} s of {recorded} s",
        p.duration()
    );
    assert!(p.has_audio());
}
