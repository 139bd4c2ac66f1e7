//! Admission by cost: what a job will cost this machine, and whether the machine has it free.
//!
//! No actor, no I/O but reading the machine's size: the queue's round asks [`Admission::admit`]
//! before it moves a job off the queue, with what each running recording holds (its reserved
//! cost, or what its process tree was measured to use if that is more: `usage.rs`).
//!
//! The rule: a job is taken only when `cores × max_utilisation − Σ max(reserved, measured)` covers
//! its cost in cores, and the same for memory; and never while a recording here is falling behind
//! real time (its encoder slower than 0.95×, or dropping frames): the machine is already short,
//! whatever the figures say. Nor while `--concurrent-starts` recordings here are still starting
//! (no frame encoded yet, for at most [`STARTING_LIMIT`]): recordings started together were set
//! further apart in sound and picture (BENCHMARKS.md, "A/V under load"). `--max-recordings`
//! stays an upper bound. A job whose cost is more
//! than the whole budget of an empty machine can never run here: it fails at once.
//!
//! The cost model (cores and memory of one recording, from its size and frame rate) comes from
//! the benchmark, see the constants and BENCHMARKS.md ("Admission figures"). Its cores are
//! multiplied by the machine's cost factor: how much slower (or faster) this machine ran the
//! calibration probe than the model's machine did (`calibration.rs`).

use crate::config::{Config, Source, Tracks};

/// `PAGECAST_TEST_MACHINE="cores=0.5,memory=2GiB"` (and optionally `,cost_factor=1.5`): the
/// machine's size as `serve` should see it, instead of its real one, and no calibration (its
/// cost factor 1 unless given). For tests only (so that they do not depend on the machine they run
/// on); documented in the README's service section; a worker started with it says so in its log.
pub const TEST_MACHINE_VAR: &str = "PAGECAST_TEST_MACHINE";

/// Default share of the machine recordings may use (`--max-utilisation`). On 2 cores, two 720p30
/// canvas recordings kept >= 99 % of their frames and three lost some on every day measured,
/// whatever share of the machine three used: 1.92 cores on a slow day (90-92 % kept), 1.55 on a
/// quiet one (94-98 %), 1.43-1.44 on a fast one (95-98 %, `bench/results/20261201-071209-full.json`;
/// BENCHMARKS.md, "Admission figures"). The CPU share is not the whole limit, so the cap is set
/// below the lowest share that lost frames (71.5 %), with room for the calibration's error:
/// 0.65 × 2 cores admits two 720p30 recordings (0.93 cores by the model on the fast day) and
/// not three (1.40). On a slow day it admits one where two would have kept up; the running
/// recordings' measured usage and `--max-utilisation` are the operator's knobs.
pub const DEFAULT_MAX_UTILISATION: f64 = 0.65;

/// The cores of a page recording that do not depend on its size (Xvfb, PulseAudio, Chromium's
/// processes, ffmpeg's audio, and the per-frame work that does not scale with pixels), and the
/// cores per million pixels per second drawn, grabbed and encoded: the line through one canvas
/// recording alone at 1280×720×30 (27.6 Mpx/s: 0.467 cores) and at 1920×1080×30 (62.2 Mpx/s:
/// 0.835 cores), everything in its cgroup, medians of 2 runs (BENCHMARKS.md, "Admission
/// figures", `bench/results/20261201-071209-full.json` and `-071315-full.json`): 0.172 + 0.01067
/// × Mpx/s. The same runs' calibration probe is `calibration::REFERENCE_CPU_SECONDS`: on another
/// machine (or day) the cores are scaled by how its probe compares.
const PAGE_FIXED_CORES: f64 = 0.172;
const CORES_PER_MPIXEL_PER_S: f64 = 0.01067;
/// A LiveKit room against the page model above (whose figures are the canvas page's, a page
/// that redraws its whole window every frame): a 1280×720×30 grid of two participants
/// publishing 640×360×30 video (every frame different) and audio cost 0.44-0.46 cores alone,
/// where the canvas page cost 0.51 on the same quiet machine in the same session (0.87×;
/// BENCHMARKS.md, "Density on a quiet machine", `bench/results/20261201-012452-full+room.json`).
/// More participants decode more video: not measured yet; what a running room uses is measured
/// anyway (usage.rs).
const ROOM_FACTOR: f64 = 0.9;
/// The figures above are the default x264 preset's (superfast). `output.video_preset`
/// `ultrafast`: a 720p30 canvas recording alone cost 0.76 cores against 0.85 with superfast in
/// the same session (0.89×; ffmpeg's part 0.33 against 0.44), a room 0.81 against 0.84 (0.96×),
/// and the earlier 720p30 tuning run 0.86× (BENCHMARKS.md, "The x264 preset: ultrafast",
/// `bench/results/20261202-142954-full.json` and `-143459-full.json`).
const ULTRAFAST_FACTOR: f64 = 0.9;
/// `output.audio_only`: no picture is encoded (the preset does not count), the page is still drawn.
/// The canvas page recorded whole and as its sound alone, alternating, 3 rounds, whole runs
/// (start-up included) in a cgroup each: at 720p30 0.90 cores against 0.62 (0.68–0.70× by round),
/// at 1080p30 1.43 against 0.82 (0.54–0.63×; BENCHMARKS.md, "The sound alone"). The larger
/// ratio, so a job is never priced below what it was seen to cost; a room's page decodes no video
/// then and costs less still (not measured).
const AUDIO_ONLY_FACTOR: f64 = 0.7;
/// `veryfast`: 1.12× superfast's cores for a whole 1080p30 recording (superfast measured 0.894×
/// veryfast, BENCHMARKS.md "Tuning", `bench/results/20261125-073238-tune.json`).
const VERYFAST_FACTOR: f64 = 1.12;
/// Memory of a recording that does not depend on its size: the processes' code and heaps.
const FIXED_MEMORY: u64 = 250 << 20;
/// Memory per pixel of the recorded area: Xvfb's framebuffer (4 B), Chromium's tiles and
/// compositor buffers, ffmpeg's frame queue. 1920×1080 at 76 B/px + 250 MiB = 400 MiB, the
/// 1080p30 run's peak (408 MiB, `bench/results/20261125-074758-full.json`); the density run
/// above confirms both (its line through the cgroups' peaks: 250 MiB + 77 B/px).
const MEMORY_PER_PIXEL: u64 = 76;

/// Default `--concurrent-starts`: one recording starting at a time. Two or three 720p30 recordings
/// started together kept their sound 7-86 ms ahead of their picture (medians per recording, 10
/// recordings); started one after the other's first frame, 12-44 ms (BENCHMARKS.md, "A/V under
/// load"). A start is about 1.5 s to the first frame, so a burst of jobs is taken at that pace.
pub const DEFAULT_CONCURRENT_STARTS: usize = 1;

/// How long a taken job counts as starting, at most: a recording that waits (for its LiveKit
/// room, or for the page's START_RECORDING) with its browser up is no longer a start in progress.
pub const STARTING_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a recording costs or uses: cores (CPU-seconds per second) and bytes of memory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    pub cores: f64,
    pub memory: u64,
}

impl Cost {
    /// The larger of the two, dimension by dimension.
    pub fn max(self, other: Cost) -> Cost {
        Cost {
            cores: self.cores.max(other.cores),
            memory: self.memory.max(other.memory),
        }
    }

    fn plus(self, other: Cost) -> Cost {
        Cost {
            cores: self.cores + other.cores,
            memory: self.memory + other.memory,
        }
    }

    fn fits_in(self, room: Cost) -> bool {
        self.cores <= room.cores + 1e-9 && self.memory <= room.memory
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} cores and {} MiB", self.cores, self.memory >> 20)
    }
}

/// What one recording of this config is expected to cost on the model's machine (see
/// [`Admission::cost_of`] for this one).
pub fn cost_of(config: &Config) -> Cost {
    let input = &config.input;
    let pixels = u64::from(input.width) * u64::from(input.height);
    let mpx_per_s = pixels as f64 * f64::from(input.framerate) / 1e6;
    let page = PAGE_FIXED_CORES + CORES_PER_MPIXEL_PER_S * mpx_per_s;
    let encoded = match config.output.tracks {
        Tracks::AudioOnly => AUDIO_ONLY_FACTOR,
        Tracks::Both | Tracks::VideoOnly => preset_factor(config.output.video_preset),
    };
    let cores = match input.source {
        Source::Url(_) => page,
        Source::Template(_) => page * ROOM_FACTOR,
    } * encoded;
    Cost {
        cores,
        memory: FIXED_MEMORY + MEMORY_PER_PIXEL * pixels,
    }
}

/// A recording's cores with this x264 preset against the default's, which the model's figures are
/// (see [`ULTRAFAST_FACTOR`]).
fn preset_factor(preset: &str) -> f64 {
    match preset {
        "ultrafast" => ULTRAFAST_FACTOR,
        "veryfast" => VERYFAST_FACTOR,
        _ => 1.0,
    }
}

/// What a warm tree (`serve --warm`) is reserved at until it is measured: Xvfb, PulseAudio and
/// Chromium on a blank page, idle, with nothing encoded. An estimate; its measured CPU and memory
/// count instead when they are more, as for a recording.
pub const WARM_TREE: Cost = Cost {
    cores: 0.05,
    memory: FIXED_MEMORY,
};

/// The machine the recordings share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Machine {
    pub cores: f64,
    /// Bytes.
    pub memory: u64,
    /// What a recording's cores by the model are multiplied by here: 1 on the model's machine,
    /// more on a slower one (`calibration.rs`, or `--cost-factor`).
    pub cost_factor: f64,
}

impl Machine {
    /// This machine: the cores this process may use (its CPU affinity and cgroup quota) and
    /// the memory it has (MemTotal); its cost factor 1 until it is calibrated.
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        let memory = procfs::Current::current()
            .map(|m: procfs::Meminfo| m.mem_total)
            .unwrap_or(u64::MAX);
        Machine {
            cores,
            memory,
            cost_factor: 1.0,
        }
    }

    /// `cores=<number>,memory=<size>[,cost_factor=<number>]` (a size as `2GiB`, `512MiB`, or
    /// bytes): see [`TEST_MACHINE_VAR`].
    pub fn parse(text: &str) -> Result<Machine, String> {
        let bad = |why: &str| format!("{TEST_MACHINE_VAR}: {why} (expected cores=N,memory=SIZE)");
        let (mut cores, mut memory, mut cost_factor) = (None, None, 1.0);
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("cores", n)) => {
                    cores = Some(positive(n).ok_or_else(|| bad("cores: not a positive number"))?)
                }
                Some(("memory", size)) => {
                    memory = Some(parse_size(size).ok_or_else(|| bad("memory: not a size"))?)
                }
                Some(("cost_factor", n)) => {
                    cost_factor =
                        positive(n).ok_or_else(|| bad("cost_factor: not a positive number"))?
                }
                _ => {
                    return Err(bad(&format!(
                        "{part:?} is not cores=, memory= or cost_factor="
                    )))
                }
            }
        }
        match (cores, memory) {
            (Some(cores), Some(memory)) => Ok(Machine {
                cores,
                memory,
                cost_factor,
            }),
            _ => Err(bad("both cores and memory are needed")),
        }
    }
}

/// A finite number above 0.
pub fn positive(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
}

fn parse_size(text: &str) -> Option<u64> {
    let units = [("GiB", 30), ("MiB", 20), ("KiB", 10), ("", 0)];
    units.iter().find_map(|(unit, shift)| {
        let n: u64 = text.strip_suffix(unit)?.trim().parse().ok()?;
        n.checked_mul(1 << shift).filter(|n| *n > 0)
    })
}

/// A recording running here, as admission sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Held {
    /// Its cost by the model, reserved when it was taken.
    pub reserved: Cost,
    /// What its process tree used at the last measurement (None: not measured yet).
    pub measured: Option<Cost>,
    /// Its encoder is falling behind real time.
    pub behind: bool,
    /// A warm tree waiting for a job (`serve --warm`): its cost counts, but it is not one of
    /// `--max-recordings`.
    pub warm: bool,
    /// Taken, and no frame encoded yet (for at most [`STARTING_LIMIT`]).
    pub starting: bool,
}

impl Held {
    /// What it counts for: the more of reserved and measured, in each dimension.
    pub fn counts(&self) -> Cost {
        self.measured
            .map_or(self.reserved, |measured| self.reserved.max(measured))
    }
}

/// `held` without its `n` largest warm trees (by what they count for, cores first).
pub fn without_warm(held: &[Held], n: usize) -> Vec<Held> {
    let mut rest = held.to_vec();
    for _ in 0..n {
        let largest = rest
            .iter()
            .enumerate()
            .filter(|(_, h)| h.warm)
            .max_by(|(_, a), (_, b)| {
                let (a, b) = (a.counts(), b.counts());
                a.cores.total_cmp(&b.cores).then(a.memory.cmp(&b.memory))
            })
            .map(|(i, _)| i);
        match largest {
            Some(i) => {
                rest.remove(i);
            }
            None => break,
        }
    }
    rest
}

/// Whether to take a job now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Take,
    /// Not now: it waits at the head of the queue (why, for the log).
    Wait(String),
    /// Not on this machine, ever (the job's failure message).
    Never(String),
}

/// What this worker's recordings hold and what is left, as the queue last counted it (after
/// each measurement of the recordings, every second): `/healthz` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Report {
    pub recordings: usize,
    pub max_recordings: usize,
    pub cores_used: f64,
    pub cores_left: f64,
    pub memory_used: u64,
    pub memory_left: u64,
    /// A recording here is falling behind real time: no job is taken.
    pub overloaded: bool,
    /// Recordings here that have not encoded a frame yet.
    pub starting: usize,
    /// What the model's cores are multiplied by on this machine (`calibration.rs`).
    pub cost_factor: f64,
}

/// Where the queue publishes its last [`Report`] (None until the first count), and where the
/// API's thread reads it: a watch channel the service's supervisor makes and hands out.
pub type ReportSender = tokio::sync::watch::Sender<Option<Report>>;
pub type ReportReceiver = tokio::sync::watch::Receiver<Option<Report>>;

/// The admission rule of one worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    pub machine: Machine,
    pub max_utilisation: f64,
    pub max_recordings: usize,
    /// Recordings that may be starting at once (`--concurrent-starts`).
    pub concurrent_starts: usize,
}

impl Admission {
    /// What one recording of this config is expected to cost here: the model's cost, its cores
    /// scaled by the machine's cost factor.
    pub fn cost_of(&self, config: &Config) -> Cost {
        self.scaled(cost_of(config))
    }

    /// What a warm tree is reserved at here ([`WARM_TREE`], scaled likewise).
    pub fn warm_tree(&self) -> Cost {
        self.scaled(WARM_TREE)
    }

    fn scaled(&self, cost: Cost) -> Cost {
        Cost {
            cores: cost.cores * self.machine.cost_factor,
            ..cost
        }
    }

    /// What all recordings together may use.
    pub fn budget(&self) -> Cost {
        Cost {
            cores: self.machine.cores * self.max_utilisation,
            memory: (self.machine.memory as f64 * self.max_utilisation) as u64,
        }
    }

    /// What the running recordings hold.
    pub fn used(held: &[Held]) -> Cost {
        held.iter()
            .fold(Cost::default(), |sum, h| sum.plus(h.counts()))
    }

    /// What is left for new recordings (never below zero).
    pub fn left(&self, held: &[Held]) -> Cost {
        let (budget, used) = (self.budget(), Self::used(held));
        Cost {
            cores: (budget.cores - used.cores).max(0.0),
            memory: budget.memory.saturating_sub(used.memory),
        }
    }

    /// As [`admit`](Self::admit) for a job that takes no warm tree, where warm trees give way:
    /// a job that waits only because of them is taken, with how many of them (the largest
    /// first, [`without_warm`]) must stop to make room for it.
    pub fn admit_shedding(&self, held: &[Held], job: Cost) -> (Verdict, usize) {
        let verdict = self.admit(held, job);
        if !matches!(verdict, Verdict::Wait(_)) {
            return (verdict, 0);
        }
        let warm = held.iter().filter(|h| h.warm).count();
        for n in 1..=warm {
            if self.admit(&without_warm(held, n), job) == Verdict::Take {
                return (Verdict::Take, n);
            }
        }
        (verdict, 0)
    }

    /// What `held` uses of this worker and what is left.
    pub fn report(&self, held: &[Held]) -> Report {
        let (used, left) = (Self::used(held), self.left(held));
        Report {
            recordings: held.len(),
            max_recordings: self.max_recordings,
            cores_used: (used.cores * 1000.0).round() / 1000.0,
            cores_left: (left.cores * 1000.0).round() / 1000.0,
            memory_used: used.memory,
            memory_left: left.memory,
            overloaded: held.iter().any(|h| h.behind),
            starting: held.iter().filter(|h| h.starting).count(),
            cost_factor: self.machine.cost_factor,
        }
    }

    /// Take a job costing `job` while `held` run here?
    pub fn admit(&self, held: &[Held], job: Cost) -> Verdict {
        let budget = self.budget();
        if !job.fits_in(budget) {
            return Verdict::Never(format!(
                "config: input.width x input.height at input.framerate needs about {job}; a \
                 worker of this size can give all its recordings together at most {budget} \
                 ({:.1} cores and {} MiB x --max-utilisation {}): it can never run here; make \
                 it smaller or run it on a larger worker",
                self.machine.cores,
                self.machine.memory >> 20,
                self.max_utilisation
            ));
        }
        let recordings = held.iter().filter(|h| !h.warm).count();
        if recordings >= self.max_recordings {
            return Verdict::Wait(format!("--max-recordings {recordings} running"));
        }
        if held.iter().any(|h| h.behind) {
            return Verdict::Wait("a recording here is falling behind real time".into());
        }
        let starting = held.iter().filter(|h| h.starting).count();
        if starting >= self.concurrent_starts {
            return Verdict::Wait(format!(
                "{starting} recording(s) here not recording yet (--concurrent-starts {})",
                self.concurrent_starts
            ));
        }
        let left = self.left(held);
        if !job.fits_in(left) {
            return Verdict::Wait(format!("it needs about {job}, {left} left"));
        }
        Verdict::Take
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn admission(cores: f64, memory: u64) -> Admission {
        Admission {
            machine: Machine {
                cores,
                memory,
                cost_factor: 1.0,
            },
            max_utilisation: 0.85,
            max_recordings: 10,
            concurrent_starts: 1,
        }
    }

    fn cost(cores: f64, memory_mib: u64) -> Cost {
        Cost {
            cores,
            memory: memory_mib << 20,
        }
    }

    fn held(reserved: Cost, measured: Option<Cost>) -> Held {
        Held {
            reserved,
            measured,
            behind: false,
            warm: false,
            starting: false,
        }
    }

    fn config(json: &str) -> Config {
        crate::config::parse(json).unwrap()
    }

    #[test]
    fn the_model_gives_the_benchmark_s_figures_at_1080p30_and_scales_with_pixels_and_rate() {
        let page = |w: u32, h: u32, fps: u32| {
            cost_of(&config(&format!(
                r#"{{"input":{{"url":"https://e.com","width":{w},"height":{h},"framerate":{fps}}},"output":{{"file":"/tmp/a.mp4"}}}}"#
            )))
        };
        // The density run's figures: one recording alone, 0.835 cores at 1080p30, 0.467 at
        // 720p30.
        let full_hd = page(1920, 1080, 30);
        assert!((full_hd.cores - 0.835).abs() < 0.005, "{full_hd}");
        assert_eq!(full_hd.memory >> 20, 400);
        let hd = page(1280, 720, 30);
        assert!((hd.cores - 0.467).abs() < 0.005, "{hd}");
        let half_rate = page(1920, 1080, 15);
        assert!((half_rate.cores - (0.172 + 0.01067 * 62.208 / 2.0)).abs() < 0.005);
        assert!(
            half_rate.memory == full_hd.memory,
            "memory follows pixels only"
        );
        let room = cost_of(&config(
            r#"{"input":{"width":1920,"height":1080,"template":{"layout":"grid-dark","ws_url":"ws://127.0.0.1:7880","token":"t"}},"output":{"file":"/tmp/a.mp4"}}"#,
        ));
        // A room of two costs 0.9 of the canvas page (the density section's room rows).
        assert!((room.cores - 0.9 * full_hd.cores).abs() < 1e-9, "{room}");
        assert_eq!(room.memory, full_hd.memory);
        // x264's preset: the default's figures, less with ultrafast, more with veryfast.
        let preset = |preset: &str| {
            cost_of(&config(&format!(
                r#"{{"input":{{"url":"https://e.com"}},"output":{{"file":"/tmp/a.mp4","video_preset":"{preset}"}}}}"#
            )))
        };
        assert_eq!(preset("superfast"), full_hd);
        assert!((preset("ultrafast").cores - 0.9 * full_hd.cores).abs() < 1e-9);
        assert!((preset("veryfast").cores - 1.12 * full_hd.cores).abs() < 1e-9);
        assert_eq!(preset("ultrafast").memory, full_hd.memory);
        // The sound alone: no picture encoded, whatever the preset.
        let sound = |preset: &str| {
            cost_of(&config(&format!(
                r#"{{"input":{{"url":"https://e.com"}},"output":{{"file":"/tmp/a.mp4","audio_only":true,"video_preset":"{preset}"}}}}"#
            )))
        };
        assert!((sound("superfast").cores - 0.7 * full_hd.cores).abs() < 1e-9);
        assert_eq!(sound("veryfast"), sound("ultrafast"));
        assert_eq!(sound("superfast").memory, full_hd.memory);
    }

    #[test]
    fn a_job_waits_while_as_many_recordings_as_may_start_at_once_are_starting() {
        let a = admission(8.0, 16 * GIB);
        let one = cost(0.5, 300);
        let starting = Held {
            starting: true,
            ..held(one, None)
        };
        match a.admit(&[starting], one) {
            Verdict::Wait(why) => assert!(why.contains("--concurrent-starts 1"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Once it has a frame, the next is taken; with room for two starts, at once.
        assert_eq!(a.admit(&[held(one, None)], one), Verdict::Take);
        let two = Admission {
            concurrent_starts: 2,
            ..a
        };
        assert_eq!(two.admit(&[starting], one), Verdict::Take);
        assert!(matches!(
            two.admit(&[starting, starting], one),
            Verdict::Wait(_)
        ));
        // A job too large for the machine is still refused at once, not kept waiting.
        assert!(matches!(
            a.admit(&[starting], cost(100.0, 300)),
            Verdict::Never(_)
        ));
        assert_eq!(a.report(&[starting, held(one, None)]).starting, 1);
    }

    #[test]
    fn the_machine_s_cost_factor_scales_the_cores_a_job_and_a_warm_tree_cost() {
        let job = config(
            r#"{"input":{"url":"https://e.com","width":1920,"height":1080,"framerate":30},"output":{"file":"/tmp/a.mp4"}}"#,
        );
        let model = cost_of(&job);
        let on = |cost_factor: f64| Admission {
            machine: Machine {
                cores: 2.0,
                memory: 8 * GIB,
                cost_factor,
            },
            max_utilisation: 0.85,
            max_recordings: 10,
            concurrent_starts: 1,
        };
        assert_eq!(on(1.0).cost_of(&job), model);
        let slower = on(1.5).cost_of(&job);
        assert!((slower.cores - 1.5 * model.cores).abs() < 1e-9, "{slower}");
        assert_eq!(slower.memory, model.memory, "memory does not scale");
        assert!((on(0.5).warm_tree().cores - 0.5 * WARM_TREE.cores).abs() < 1e-9);
        // 0.84 cores fits 0.85 x 2 cores; 2.5 on a machine 3x slower never can.
        assert_eq!(on(1.0).admit(&[], on(1.0).cost_of(&job)), Verdict::Take);
        assert!(matches!(
            on(3.0).admit(&[], on(3.0).cost_of(&job)),
            Verdict::Never(_)
        ));
        assert_eq!(on(1.5).report(&[]).cost_factor, 1.5);
    }

    #[test]
    fn a_recording_counts_for_the_more_of_reserved_and_measured_in_each_dimension() {
        let h = held(cost(0.5, 400), Some(cost(0.8, 300)));
        assert_eq!(h.counts(), cost(0.8, 400));
        assert_eq!(held(cost(0.5, 400), None).counts(), cost(0.5, 400));
        let used = Admission::used(&[h, held(cost(0.3, 100), Some(cost(0.1, 200)))]);
        assert!((used.cores - 1.1).abs() < 1e-9);
        assert_eq!(used.memory, 600 << 20);
    }

    #[test]
    fn a_job_is_taken_only_when_what_is_left_covers_it() {
        // 2 cores x 0.85 = 1.7 cores.
        let a = admission(2.0, 8 * GIB);
        let job = cost(0.6, 300);
        assert_eq!(a.admit(&[], job), Verdict::Take);
        let one = held(job, None);
        assert_eq!(a.admit(&[one], job), Verdict::Take);
        // 1.2 + 0.6 > 1.7.
        assert!(matches!(a.admit(&[one, one], job), Verdict::Wait(_)));
        // A recording measured above its reservation holds what it uses.
        let heavy = held(job, Some(cost(1.2, 100)));
        match a.admit(&[heavy], job) {
            Verdict::Wait(why) => assert!(why.contains("0.50 cores"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Below it, still its reservation (a recording starting up uses less than it will).
        let light = held(job, Some(cost(0.1, 10)));
        assert_eq!(a.admit(&[light, light], cost(0.5, 300)), Verdict::Take);
        assert!(matches!(
            a.admit(&[light, light], cost(0.51, 300)),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn memory_is_admitted_like_cores() {
        // 1 GiB x 0.85 = 870 MiB.
        let a = admission(8.0, GIB);
        let job = cost(0.1, 400);
        assert_eq!(a.admit(&[held(job, None)], job), Verdict::Take);
        assert!(matches!(
            a.admit(&[held(job, None), held(job, None)], job),
            Verdict::Wait(_)
        ));
        assert!(matches!(
            a.admit(&[held(job, Some(cost(0.1, 500)))], job),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn a_job_larger_than_the_empty_machine_can_never_run() {
        let a = admission(1.0, 8 * GIB);
        match a.admit(&[], cost(1.08, 400)) {
            Verdict::Never(message) => {
                assert!(message.starts_with("config: input.width x input.height"));
                assert!(message.contains("needs about 1.08 cores"), "{message}");
                assert!(message.contains("at most 0.85 cores"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Also while others run: it fails at once rather than waiting for them.
        assert!(matches!(
            a.admit(&[held(cost(0.5, 10), None)], cost(0.9, 10)),
            Verdict::Never(_)
        ));
        assert!(matches!(
            admission(8.0, GIB).admit(&[], cost(0.1, 900)),
            Verdict::Never(_)
        ));
    }

    #[test]
    fn max_recordings_stays_an_upper_bound_and_a_slow_recording_stops_admission() {
        let a = Admission {
            max_recordings: 1,
            ..admission(16.0, 64 * GIB)
        };
        let small = cost(0.1, 10);
        assert!(matches!(
            a.admit(&[held(small, None)], small),
            Verdict::Wait(_)
        ));
        let b = admission(16.0, 64 * GIB);
        let slow = Held {
            behind: true,
            ..held(small, None)
        };
        match b.admit(&[slow], small) {
            Verdict::Wait(why) => assert!(why.contains("falling behind"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_test_machine_is_read_with_both_sizes() {
        assert_eq!(
            Machine::parse("cores=0.5,memory=2GiB"),
            Ok(Machine {
                cores: 0.5,
                memory: 2 * GIB,
                cost_factor: 1.0,
            })
        );
        assert_eq!(
            Machine::parse("cores=2,memory=2GiB,cost_factor=1.5")
                .unwrap()
                .cost_factor,
            1.5
        );
        assert_eq!(
            Machine::parse("memory=512MiB, cores=3").unwrap().memory,
            512 << 20
        );
        for bad in [
            "cores=0,memory=1GiB",
            "cores=2",
            "cores=x,memory=1GiB",
            "cpu=2,memory=1",
        ] {
            let e = Machine::parse(bad).unwrap_err();
            assert!(e.starts_with(TEST_MACHINE_VAR), "{e}");
        }
        let here = Machine::detect();
        assert!(here.cores >= 1.0 && here.memory > 0);
    }

    #[test]
    fn warm_trees_count_by_cost_but_not_against_max_recordings() {
        let a = Admission {
            max_recordings: 1,
            ..admission(2.0, 8 * GIB)
        };
        let warm = Held {
            warm: true,
            ..held(WARM_TREE, Some(cost(0.9, 300)))
        };
        assert_eq!(a.admit(&[warm], cost(0.5, 400)), Verdict::Take);
        match a.admit(&[warm, warm], cost(0.5, 400)) {
            Verdict::Wait(why) => assert!(why.contains("left"), "{why}"),
            other => panic!("{other:?}"),
        }
        let recording = held(cost(0.1, 100), None);
        assert!(matches!(
            a.admit(&[recording], cost(0.1, 100)),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn warm_trees_give_way_to_a_job_that_waits_only_because_of_them() {
        let a = admission(1.0, 8 * GIB); // 0.85 cores for everything
        let warm = |cores| Held {
            warm: true,
            ..held(WARM_TREE, Some(cost(cores, 300)))
        };
        let held = [warm(0.1), warm(0.3), held(cost(0.2, 100), None)];
        // 0.85 - 0.6 = 0.25 left; without the 0.3 tree 0.55; without both 0.65.
        assert_eq!(a.admit_shedding(&held, cost(0.2, 100)), (Verdict::Take, 0));
        assert_eq!(a.admit_shedding(&held, cost(0.5, 100)), (Verdict::Take, 1));
        assert_eq!(a.admit_shedding(&held, cost(0.6, 100)), (Verdict::Take, 2));
        assert!(matches!(
            a.admit_shedding(&held, cost(0.7, 100)),
            (Verdict::Wait(_), 0)
        ));
        let rest = without_warm(&held, 1);
        assert_eq!(rest.len(), 2);
        assert!(rest
            .iter()
            .all(|h| !h.warm || h.measured.unwrap().cores < 0.2));
    }
}
