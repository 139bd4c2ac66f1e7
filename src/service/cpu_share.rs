//! A recording that uses more CPU than its share is put last.
//!
//! Admission reserves each job its cost in cores (`capacity.rs`) and counts what the job's
//! process tree is measured to use when that is more, so an overrunning recording keeps new jobs
//! off the worker. It does not help the recordings already running beside it: a page that keeps
//! its threads busy (a loop in a few web workers is enough) takes cores those recordings were
//! promised, and they drop frames. So a job's page is untrusted here too: when its tree has used
//! more than [`allowance`] of its reserved cores over the last [`WINDOW`] measurements, counted
//! once its encoder runs (a start's burst is no overrun), every thread of its browser (the
//! processes below chromedriver: where the page's scripts, workers and WebGL run,
//! [`browser_processes`]) is set to the lowest priority ([`LOWEST`], `nice` 19), and kept there
//! until the recording ends: threads and processes born later are set too, at each measurement.
//! The rest of the recording (pagecast, Xvfb, PulseAudio, ffmpeg) keeps its priority, so what the
//! screen shows is still captured and encoded as before: the recording is not stopped and nothing
//! of it is lost; its page runs on what the others leave. On a machine with cores to spare it
//! loses nothing.
//!
//! Admission then counts such a job for its allowance at most ([`ShareWatch::counted`]), not for
//! all it measures: what its browser takes beyond that it takes only from idle cores, so the
//! worker goes on taking jobs, which take the cores back.
//!
//! The priority is only ever lowered: raising it again takes a privilege a worker need not
//! have. Priorities weigh between processes of one scheduling group: the recordings share the
//! worker's session, and so its autogroup, so `nice` orders them against each other.

use std::collections::{HashMap, HashSet, VecDeque};

use super::capacity::Cost;

/// The `nice` value a recording over its share runs at (the lowest priority).
pub const LOWEST: i32 = 19;

/// How many of the last measurements (one a second) a recording's mean is taken over.
pub const WINDOW: usize = 10;

/// What a recording with `reserved` cores may use on average before it is put last: half as much
/// again, and a quarter of a core more. Its cost by the model is the canvas page's (a page that
/// redraws its whole window every frame) and rooms measure below it; a day's speed moves what a
/// recording uses by about as much as the calibration that scaled its cost (BENCHMARKS.md,
/// "Where a room's frames go"), so a recording at 1.5 times its cost is not one the model
/// priced. The quarter core keeps a small recording (640x360: 0.25 cores) from being put last for
/// a page load's burst; one busy page thread (a core) is past it at every size.
pub fn allowance(reserved: f64) -> f64 {
    reserved * 1.5 + 0.25
}

/// Watches each recording's measured cores against its share.
#[derive(Debug, Default)]
pub struct ShareWatch {
    /// By job: the cores it was measured at, the last [`WINDOW`] measurements since its encoder
    /// ran.
    samples: HashMap<String, VecDeque<f64>>,
    /// The jobs put last.
    over: HashSet<String>,
}

/// A job just found over its share: its mean over the window and its allowance.
#[derive(Debug, Clone, PartialEq)]
pub struct Over {
    pub job: String,
    pub cores: f64,
    pub allowed: f64,
}

impl ShareWatch {
    /// Takes one measurement of the running jobs (`measured`, by job) with each one's reserved
    /// cost (`reserved`; a job without one is not watched) and whether its encoder runs
    /// (`framed`). Returns the jobs that passed their allowance with this measurement; a job
    /// passes it once. Jobs no longer measured are forgotten.
    pub fn observe(
        &mut self,
        measured: &HashMap<String, Cost>,
        reserved: &HashMap<String, Cost>,
        framed: &HashSet<String>,
    ) -> Vec<Over> {
        self.samples.retain(|job, _| measured.contains_key(job));
        self.over.retain(|job| measured.contains_key(job));
        let mut newly = Vec::new();
        for (job, used) in measured {
            let Some(reserved) = reserved.get(job) else {
                continue;
            };
            if !framed.contains(job) || self.over.contains(job) {
                continue;
            }
            let samples = self.samples.entry(job.clone()).or_default();
            samples.push_back(used.cores);
            if samples.len() > WINDOW {
                samples.pop_front();
            }
            if samples.len() < WINDOW {
                continue;
            }
            let mean = samples.iter().sum::<f64>() / samples.len() as f64;
            let allowed = allowance(reserved.cores);
            if mean > allowed {
                self.samples.remove(job);
                self.over.insert(job.clone());
                newly.push(Over {
                    job: job.clone(),
                    cores: mean,
                    allowed,
                });
            }
        }
        newly.sort_by(|a, b| a.job.cmp(&b.job));
        newly
    }

    /// The jobs put last, still running.
    pub fn over(&self) -> impl Iterator<Item = &String> {
        self.over.iter()
    }

    /// What admission counts of `job` measured at `used`, with `reserved`: a job put last counts
    /// for its allowance at most, as its browser yields every core another recording wants;
    /// any other job, for what it used.
    pub fn counted(&self, job: &str, used: Cost, reserved: &Cost) -> Cost {
        if !self.over.contains(job) {
            return used;
        }
        Cost {
            cores: used.cores.min(allowance(reserved.cores)),
            ..used
        }
    }

    /// Forgets `job`, whose recording ended: a later attempt under its id starts afresh, even
    /// when no measurement fell between the two.
    pub fn forget(&mut self, job: &str) {
        self.samples.remove(job);
        self.over.remove(job);
    }
}

/// The processes of `tree` that are the browser: those below a `chromedriver` of the tree
/// (Chromium and every process it starts).
pub fn browser_processes(tree: &[i32]) -> Vec<i32> {
    let parents: HashMap<i32, (i32, String)> = tree
        .iter()
        .filter_map(|pid| {
            let stat = procfs::process::Process::new(*pid).ok()?.stat().ok()?;
            Some((*pid, (stat.ppid, stat.comm)))
        })
        .collect();
    let below_driver = |pid: i32| {
        let mut at = parents.get(&pid).map(|(ppid, _)| *ppid);
        while let Some(parent) = at {
            let Some((ppid, comm)) = parents.get(&parent) else {
                return false;
            };
            if comm == "chromedriver" {
                return true;
            }
            at = Some(*ppid);
        }
        false
    };
    tree.iter()
        .copied()
        .filter(|pid| below_driver(*pid))
        .collect()
}

/// Sets every thread of the processes `pids` to [`LOWEST`] (`nice` is a thread's: a process's
/// threads are set one by one, from `/proc/PID/task`). Processes and threads that are gone are
/// skipped. Returns how many threads were set (already there included).
pub fn put_last(pids: &[i32]) -> usize {
    let mut set = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            // SAFETY: setpriority reads its three integer arguments and touches no memory of ours.
            let done = unsafe {
                nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t, LOWEST)
            };
            if done == 0 {
                set += 1;
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(cores: f64) -> Cost {
        Cost { cores, memory: 0 }
    }

    fn one(job: &str, cost: f64) -> HashMap<String, Cost> {
        HashMap::from([(job.to_owned(), cores(cost))])
    }

    #[test]
    fn a_recording_is_put_last_once_its_mean_over_the_window_passes_its_allowance() {
        let mut watch = ShareWatch::default();
        let reserved = one("a", 0.5);
        let framed = HashSet::from(["a".to_owned()]);
        // Allowed 0.5 x 1.5 + 0.25 = 1.0: a mean of 0.9 is within it, however long.
        for _ in 0..3 * WINDOW {
            assert!(watch.observe(&one("a", 0.9), &reserved, &framed).is_empty());
        }
        // Then 1.1 a second: the mean passes 1.0 with the sixth such sample (0.9 x 4 + 1.1 x 6
        // = 10.2 over 10), not at the fifth (10.0).
        for _ in 0..5 {
            assert!(watch.observe(&one("a", 1.1), &reserved, &framed).is_empty());
        }
        let over = watch.observe(&one("a", 1.1), &reserved, &framed);
        assert_eq!(over.len(), 1, "{over:?}");
        assert_eq!(over[0].job, "a");
        assert_eq!(over[0].allowed, 1.0);
        assert!((over[0].cores - 1.02).abs() < 1e-9, "{over:?}");
        // Said once, kept as over while it runs, forgotten when it is no longer measured.
        assert!(watch.observe(&one("a", 3.0), &reserved, &framed).is_empty());
        assert_eq!(watch.over().collect::<Vec<_>>(), ["a"]);
        // Counted for admission at its allowance at most; another job for what it used.
        assert_eq!(watch.counted("a", cores(3.0), &cores(0.5)), cores(1.0));
        assert_eq!(watch.counted("a", cores(0.7), &cores(0.5)), cores(0.7));
        assert_eq!(watch.counted("b", cores(3.0), &cores(0.5)), cores(3.0));
        watch.observe(&HashMap::new(), &reserved, &framed);
        assert_eq!(watch.over().count(), 0);
        // A job's next attempt, its recording ended between two measurements, starts afresh.
        for _ in 0..WINDOW {
            watch.observe(&one("a", 3.0), &reserved, &framed);
        }
        assert_eq!(watch.over().count(), 1);
        watch.forget("a");
        for _ in 0..WINDOW - 1 {
            assert!(watch.observe(&one("a", 3.0), &reserved, &framed).is_empty());
        }
        assert_eq!(watch.over().count(), 0);
    }

    #[test]
    fn a_start_s_burst_and_a_short_spike_are_not_an_overrun() {
        let mut watch = ShareWatch::default();
        let reserved = one("a", 0.25);
        let mut framed = HashSet::new();
        // Before its encoder runs (Chromium starting, the page loading), nothing counts.
        for _ in 0..2 * WINDOW {
            assert!(watch.observe(&one("a", 2.0), &reserved, &framed).is_empty());
        }
        framed.insert("a".to_owned());
        // Then two seconds at two cores in ten at its cost: a mean of 0.6, allowed 0.625.
        for used in [2.0, 2.0, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25] {
            assert!(watch
                .observe(&one("a", used), &reserved, &framed)
                .is_empty());
        }
    }

    #[test]
    fn only_jobs_with_a_reserved_cost_are_watched_and_each_against_its_own() {
        let mut watch = ShareWatch::default();
        let reserved = HashMap::from([
            ("small".to_owned(), cores(0.25)),
            ("big".to_owned(), cores(1.0)),
        ]);
        let framed: HashSet<String> = ["small", "big", "warm"].map(str::to_owned).into();
        let measured = HashMap::from([
            ("small".to_owned(), cores(1.0)),
            ("big".to_owned(), cores(1.0)),
            ("warm".to_owned(), cores(5.0)),
        ]);
        let mut over = Vec::new();
        for _ in 0..WINDOW {
            over.extend(watch.observe(&measured, &reserved, &framed));
        }
        assert_eq!(
            over.iter().map(|o| o.job.as_str()).collect::<Vec<_>>(),
            ["small"]
        );
    }

    /// Every thread of the browser's processes is set, a process's other threads too, and
    /// nothing else of the tree: a shell, a script named `chromedriver` below it, and below that a
    /// python with three threads (the browser here).
    #[test]
    fn every_thread_of_the_browser_is_put_last_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let driver = dir.path().join("chromedriver");
        std::fs::write(
            &driver,
            format!(
                "#!/bin/sh\n\"{}\" -c \"$1\" &\nwait\n",
                pagecast_testkit::repo_root()
                    .join(".venv/bin/python")
                    .display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&driver, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let script = "import threading, time\n\
                      for _ in range(2): threading.Thread(target=time.sleep, args=(30,)).start()\n\
                      print('up', flush=True)\n\
                      time.sleep(30)";
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .process_group(0)
            .arg("-c")
            .arg("\"$0\" \"$1\" & wait")
            .arg(&driver)
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut up = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut up,
        )
        .unwrap();
        assert_eq!(up.trim(), "up");
        let root = child.id();
        let tree: Vec<i32> = std::iter::once(root)
            .chain(
                pagecast_testkit::descendants(root)
                    .into_iter()
                    .map(|(pid, _)| pid),
            )
            .map(|pid| pid as i32)
            .collect();
        let browser = browser_processes(&tree);
        let set = put_last(&browser);
        let niceness: Vec<(String, i64)> = tree
            .iter()
            .flat_map(|pid| pagecast_testkit::threads(*pid as u32))
            .map(|(tid, name, nice)| (format!("{name}/{tid}"), nice))
            .collect();
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(root as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(browser.len(), 1, "python alone: {niceness:?}");
        assert_eq!(set, 3, "python's three threads: {niceness:?}");
        let lowest = |name: &str| {
            niceness
                .iter()
                .filter(|(thread, _)| thread.starts_with(name))
                .map(|(_, nice)| *nice == i64::from(LOWEST))
                .collect::<Vec<_>>()
        };
        assert_eq!(lowest("python"), [true, true, true], "{niceness:?}");
        assert_eq!(lowest("sh/"), [false], "{niceness:?}");
        assert_eq!(lowest("chromedriver"), [false], "{niceness:?}");
    }
}
