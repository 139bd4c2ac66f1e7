//! How fast this machine is against the one the cost model was measured on.
//!
//! The admission's cost model (`capacity.rs`) gives a recording's cores as measured by the
//! benchmark on one machine on one day. The same 720p30 recording has cost 0.47, 0.51, 0.685
//! and 0.82 cores on the same 2-core Intel Xeon machine type on different days (BENCHMARKS.md,
//! "Admission figures"): the host's other tenants, clock and cache vary, and another machine
//! type differs more. So before taking jobs, `serve` runs a fixed piece of a recording's own work (ffmpeg
//! encoding a moving 720p30 test picture with x264, as the encoder does) and compares the CPU
//! time it took with what it took beside the model's figures: the ratio, the cost factor, scales
//! every job's expected cores. The benchmark runs the same probe (`pagecast calibrate --json`)
//! at the start and end of each run, so each run's figures and its probe are kept together.
//!
//! What it does not see: a busy neighbour inside the same machine (a niced encoder on both
//! cores left the probe at 0.69 CPU-s and made a recording 7 % dearer). That, like any other
//! error of the model, shows in the running recordings' measured usage (`usage.rs`).
//!
//! I/O: runs ffmpeg (through `oneshot`, like every helper) three times; nothing else.

use std::time::Duration;

use pagecast_actors::oneshot;
use tokio::process::Command;

/// The probe's CPU time (user + system, median of its runs) on the machine and in the runs that
/// the cost model's constants come from (`capacity.rs`, BENCHMARKS.md "Admission figures"): the
/// median of the four probes at the start and end of `bench/results/20261201-071209-full.json`
/// and `-071315-full.json` (0.695, 0.701, 0.712, 0.721).
pub const REFERENCE_CPU_SECONDS: f64 = 0.7065;

/// How many times the probe runs; the median counts (one run disturbed by a neighbour does not).
const RUNS: usize = 3;
/// Seconds of test picture each run encodes (about 0.55 s of wall time on 2 cores).
const PROBE_SECONDS: u32 = 3;
/// A run that takes longer than this is not a machine that can record anyway.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// A factor outside these bounds is more likely a probe gone wrong (another ffmpeg build, an
/// emulated CPU) than a machine that much faster or slower: it is held to them, with a warning.
pub const FACTOR_BOUNDS: (f64, f64) = (0.25, 4.0);

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// The probe's CPU time here (median of its runs).
    pub cpu_seconds: f64,
    /// The same on the model's machine ([`REFERENCE_CPU_SECONDS`]).
    pub reference_cpu_seconds: f64,
    /// `cpu_seconds / reference_cpu_seconds`, held within [`FACTOR_BOUNDS`]: what a recording's
    /// cores by the model are multiplied by on this machine.
    pub cost_factor: f64,
    /// The ratio was outside [`FACTOR_BOUNDS`] and was held to them.
    pub clamped: bool,
}

impl Calibration {
    /// Says what was found (`MACHINE_CALIBRATED`), and warns when the ratio was held to a bound.
    pub fn log(&self) {
        if self.clamped {
            tracing::warn!(
                cost_factor = self.cost_factor,
                cpu_seconds = self.cpu_seconds,
                reference_cpu_seconds = self.reference_cpu_seconds,
                "the calibration probe's ratio is outside {:?}: held to the bound; give \
                 --cost-factor to set it",
                FACTOR_BOUNDS
            );
        }
        tracing::info!(
            cost_factor = self.cost_factor,
            cpu_seconds = self.cpu_seconds,
            reference_cpu_seconds = self.reference_cpu_seconds,
            "{}",
            pagecast_actors::events::MACHINE_CALIBRATED
        );
    }

    /// The factor for a probe that took `cpu_seconds` here.
    pub fn from_cpu_seconds(cpu_seconds: f64) -> Calibration {
        let ratio = cpu_seconds / REFERENCE_CPU_SECONDS;
        let cost_factor = ratio.clamp(FACTOR_BOUNDS.0, FACTOR_BOUNDS.1);
        Calibration {
            cpu_seconds,
            reference_cpu_seconds: REFERENCE_CPU_SECONDS,
            cost_factor,
            clamped: cost_factor != ratio,
        }
    }
}

/// `serve --cost-factor`: measured at start (`auto`), or given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CostFactor {
    Auto,
    Fixed(f64),
}

impl std::str::FromStr for CostFactor {
    type Err = String;

    fn from_str(text: &str) -> Result<CostFactor, String> {
        if text == "auto" {
            return Ok(CostFactor::Auto);
        }
        super::capacity::positive(text)
            .map(CostFactor::Fixed)
            .ok_or_else(|| "`auto` or a number above 0 (1: the cost model's machine)".into())
    }
}

/// Runs the probe and works out this machine's cost factor. Errors name what failed in one line.
pub async fn calibrate() -> Result<Calibration, String> {
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        runs.push(probe_once().await?);
    }
    runs.sort_by(f64::total_cmp);
    Ok(Calibration::from_cpu_seconds(runs[RUNS / 2]))
}

/// One run of the probe: its CPU time, as ffmpeg's `-benchmark` reports it.
async fn probe_once() -> Result<f64, String> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"])
        .arg("-benchmark")
        .args(["-f", "lavfi", "-i"])
        // bgr0 in, 4:2:0 out: the display's pixels converted as the encoder converts them.
        .arg("testsrc2=size=1280x720:rate=30,format=bgr0")
        .args(["-t", &PROBE_SECONDS.to_string()])
        // The encoder's x264 settings (encoder.rs), at a fixed thread count so that a machine
        // of many cores does not measure its threads' overhead.
        .args(["-threads", "2", "-c:v", "libx264", "-preset", "veryfast"])
        .args([
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "3000k",
        ])
        // x264's closing statistics would follow ffmpeg's `bench:` lines out of the kept tail.
        .args(["-x264-params", "log=-1"])
        .args(["-f", "null", "-"]);
    let done = oneshot::run("ffmpeg (calibration)", cmd, RUN_LIMIT)
        .await
        .map_err(|e| format!("calibration: {e}"))?;
    if !done.success() {
        return Err(format!("calibration: {}", done.report));
    }
    cpu_seconds(&done.stderr_tail).ok_or_else(|| {
        format!(
            "calibration: ffmpeg -benchmark gave no CPU time (its last lines: {})",
            done.stderr_tail
        )
    })
}

/// `bench: utime=0.684s stime=0.069s rtime=0.570s` → 0.753.
fn cpu_seconds(stderr: &str) -> Option<f64> {
    let line = stderr
        .split(" | ")
        .find(|line| line.trim_start().starts_with("bench: utime="))?;
    let field = |name: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name))?
            .strip_suffix('s')?
            .parse()
            .ok()
    };
    Some(field("utime=")? + field("stime=")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_line_gives_user_and_system_time() {
        let tail = "Output #0, null, to 'pipe:': | bench: utime=0.684s stime=0.069s rtime=0.570s \
                    | bench: maxrss=91356kB";
        let cpu = cpu_seconds(tail).unwrap();
        assert!((cpu - 0.753).abs() < 1e-9, "{cpu}");
        assert_eq!(cpu_seconds("bench: maxrss=91356kB"), None);
        assert_eq!(cpu_seconds("bench: utime=abcs stime=0.1s"), None);
    }

    #[test]
    fn the_option_is_auto_or_a_positive_number() {
        assert_eq!("auto".parse(), Ok(CostFactor::Auto));
        assert_eq!("1.5".parse(), Ok(CostFactor::Fixed(1.5)));
        for bad in ["0", "-1", "fast", "NaN", "inf", ""] {
            assert!(bad.parse::<CostFactor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_factor_is_the_ratio_held_to_its_bounds() {
        let same = Calibration::from_cpu_seconds(REFERENCE_CPU_SECONDS);
        assert!((same.cost_factor - 1.0).abs() < 1e-9);
        assert!(!same.clamped);
        let slower = Calibration::from_cpu_seconds(REFERENCE_CPU_SECONDS * 1.5);
        assert!((slower.cost_factor - 1.5).abs() < 1e-9);
        let absurd = Calibration::from_cpu_seconds(REFERENCE_CPU_SECONDS * 100.0);
        assert_eq!(absurd.cost_factor, FACTOR_BOUNDS.1);
        assert!(absurd.clamped);
        let tiny = Calibration::from_cpu_seconds(0.0);
        assert_eq!(tiny.cost_factor, FACTOR_BOUNDS.0);
    }
}
