//! Fault injection: real processes of a running recording are killed from outside, at a random
//! moment, and the recording must survive: exit 0, one playable file of about the wall time with
//! video and audio, the restart logged with its cause, and no process of the run left behind.
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pagecast_testkit::{alive, descendants, heavy, probe, wait_until};
use serde_json::json;

const RECORD_FOR: f64 = 12.0;

#[derive(Debug, Clone, Copy)]
enum Fault {
    ChromiumBrowser,
    ChromiumRenderer,
    Chromedriver,
    Ffmpeg,
    Xvfb,
    PulseAudio,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::ChromiumBrowser,
        Fault::ChromiumRenderer,
        Fault::Chromedriver,
        Fault::Ffmpeg,
        Fault::Xvfb,
        Fault::PulseAudio,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::ChromiumBrowser => "kill -9 Chromium browser process",
            Fault::ChromiumRenderer => "kill -9 Chromium renderer",
            Fault::Chromedriver => "kill -9 chromedriver",
            Fault::Ffmpeg => "kill -9 ffmpeg",
            Fault::Xvfb => "kill -9 Xvfb",
            Fault::PulseAudio => "kill -9 pulseaudio",
        }
    }

    /// The child the supervisor must restart, as named in its log.
    fn restarted(self) -> &'static str {
        match self {
            Fault::ChromiumBrowser | Fault::ChromiumRenderer | Fault::Chromedriver => "browser",
            Fault::Ffmpeg => "encoder",
            Fault::Xvfb => "display",
            Fault::PulseAudio => "audio",
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
                Fault::ChromiumBrowser => name == "chromium" && !cmdline(*pid).contains("--type="),
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

/// A number in [lo, hi) from the clock: each run picks other moments.
fn random_between(lo: f64, hi: f64) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    lo + (hi - lo) * (nanos % 10_000) as f64 / 10_000.0
}

struct Outcome {
    fault: Fault,
    at: f64,
    exit: Option<i32>,
    duration: Option<f64>,
    has_audio: bool,
    restart_logged: bool,
    survivors: Vec<(u32, String)>,
    error: Option<String>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.exit == Some(0)
            && self.duration.is_some_and(|d| (d - RECORD_FOR).abs() <= 2.0)
            && self.has_audio
            && self.restart_logged
            && self.survivors.is_empty()
            && self.error.is_none()
    }
}

fn run_fault(fault: Fault) -> Outcome {
    let (_dir, file) = out_dir();
    let config = json!({
        "input": { "url": demo_page(), "width": 1280, "height": 720 },
        "output": { "file": file },
        "max_duration": "12s",
    });
    let mut run = Run::start(&config, &[]);
    let loaded = run.wait_for("page loaded", Duration::from_secs(60));
    let at = random_between(2.0, 8.0);
    // Everything the run ever started, to check nothing survives it.
    let mut seen: BTreeMap<u32, String> = BTreeMap::new();
    let mut target = None;
    while loaded.elapsed().as_secs_f64() < at {
        let tree = descendants(run.child.id());
        target = fault.target(&tree).or(target);
        seen.extend(tree);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut error = None;
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
    seen.extend(tree);
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        seen.extend(descendants(run.child.id()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = run.wait(Duration::from_secs(30));
    let stderr = run.stderr();
    let restart_logged = stderr.lines().any(|l| {
        l.contains(r#""message":"restarting""#)
            && l.contains(&format!(r#""child":"{}""#, fault.restarted()))
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
    if status.code() != Some(0) && error.is_none() {
        error = Some(stderr.lines().last().unwrap_or_default().to_owned());
    }
    if !restart_logged && error.is_none() {
        error = Some(format!(
            "no restart of {} logged:\n{stderr}",
            fault.restarted()
        ));
    }
    Outcome {
        fault,
        at,
        exit: status.code(),
        duration,
        has_audio,
        restart_logged,
        survivors,
        error,
    }
}

#[test]
fn every_fault_is_survived() {
    let _heavy = heavy();
    let outcomes: Vec<Outcome> = Fault::ALL.into_iter().map(run_fault).collect();
    println!(
        "\n{:<36} {:>7} {:>5} {:>9} {:>6} {:>8} {:>10}  result",
        "fault", "at (s)", "exit", "duration", "audio", "restart", "survivors"
    );
    for o in &outcomes {
        println!(
            "{:<36} {:>7.1} {:>5} {:>9} {:>6} {:>8} {:>10}  {}",
            o.fault.name(),
            o.at,
            o.exit.map(|c| c.to_string()).unwrap_or("-".into()),
            o.duration
                .map(|d| format!("{d:.1} s"))
                .unwrap_or("-".into()),
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
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok()).collect();
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
fn crashes_beyond_the_restart_intensity_end_the_run_with_what_was_recorded() {
    let _heavy = heavy();
    let (_dir, file) = out_dir();
    let config = json!({
        "input": { "url": demo_page(), "width": 1280, "height": 720 },
        "output": { "file": file },
        "supervision": { "max_restarts": 1, "within": "60s" },
    });
    let mut run = Run::start(&config, &[]);
    run.wait_for("page loaded", Duration::from_secs(60));
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
        "max_duration": "6s",
    });
    let mut run = Run::start(&config, &[]);
    run.wait_for("page loaded", Duration::from_secs(60));
    let tree = descendants(run.child.id());
    let ffmpeg = Fault::Ffmpeg.target(&tree).expect("ffmpeg runs");
    kill(Pid::from_raw(ffmpeg as i32), Signal::SIGKILL).unwrap();
    let (status, _) = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", run.stderr());
    assert!(run.stderr().contains("leaving it out"), "{}", run.stderr());
    let p = probe(&file);
    assert!(p.duration() >= 4.5, "duration {}", p.duration());
    assert!(p.has_audio());
}
