//! What each running recording uses, measured: the CPU and memory of its whole process tree
//! (the `pagecast record` process and every descendant: Xvfb, PulseAudio, chromedriver,
//! Chromium's processes, ffmpeg), read from /proc.
//!
//! CPU is the ticks (utime + stime) the tree's processes used between two measurements, per
//! wall second; a process born in between counts all its ticks. Memory is the tree's
//! proportional set size (PSS: a page shared by N processes counts 1/N to each, so Chromium's
//! shared code is counted once), or its resident size where PSS cannot be read. PSS is read at
//! most every [`PSS_EVERY`]: reading a recording's 16 or so `smaps_rollup` files costs about
//! 22 ms of CPU (measured on a 720p recording), 2 % of a core a second per recording if read every
//! second; between two reads a tree counts its last PSS. No actor: the
//! runner measures (off its thread) and hands the figures to admission (`capacity.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::capacity::Cost;

/// How often a tree's PSS is read (its CPU is measured at every measurement).
pub const PSS_EVERY: Duration = Duration::from_secs(10);

/// Measures process trees, remembering each process's ticks between two measurements.
#[derive(Debug, Default)]
pub struct TreeMeter {
    /// (pid, start time) -> ticks used at the last measurement.
    ticks: HashMap<(i32, u64), u64>,
    at: Option<Instant>,
    /// By tree: its memory at the last PSS read, and when.
    memory: HashMap<String, (u64, Instant)>,
    /// A tree whose resident size (which counts shared pages once per process: more than its
    /// PSS) is above this has its PSS read at once, whenever it was read last (see
    /// [`TreeMeter::reading_pss_above`]).
    pss_above: Option<u64>,
    /// By tree: its processes at the last measurement, root first.
    trees: HashMap<String, Vec<i32>>,
}

struct Proc {
    ppid: i32,
    start: u64,
    ticks: u64,
    rss_pages: u64,
}

impl TreeMeter {
    /// A meter that reads a tree's PSS at once when its resident size passes `limit`: a limit on
    /// memory is then checked on a fresh figure, not one up to [`PSS_EVERY`] old.
    pub fn reading_pss_above(limit: u64) -> TreeMeter {
        TreeMeter {
            pss_above: Some(limit),
            ..TreeMeter::default()
        }
    }

    /// What each tree (named, by its root's pid) uses now. The first measurement gives memory
    /// only (its CPU figure is 0: there is no interval yet).
    pub fn measure(&mut self, roots: &[(String, u32)]) -> HashMap<String, Cost> {
        let now = Instant::now();
        let procs: HashMap<i32, Proc> = procfs::process::all_processes()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let stat = p.ok()?.stat().ok()?;
                Some((
                    stat.pid,
                    Proc {
                        ppid: stat.ppid,
                        start: stat.starttime,
                        ticks: stat.utime + stat.stime,
                        rss_pages: stat.rss,
                    },
                ))
            })
            .collect();
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for (pid, p) in &procs {
            children.entry(p.ppid).or_default().push(*pid);
        }
        let seconds = self
            .at
            .map(|at| now.duration_since(at).as_secs_f64())
            .filter(|s| *s > 0.0);
        let tps = procfs::ticks_per_second() as f64;
        let page = procfs::page_size();
        let mut ticks = HashMap::new();
        let mut out = HashMap::new();
        let mut trees = HashMap::new();
        for (name, root) in roots {
            let mut tree = vec![*root as i32];
            let mut i = 0;
            while i < tree.len() {
                if let Some(kids) = children.get(&tree[i]) {
                    tree.extend(kids);
                }
                i += 1;
            }
            let (mut used, mut resident) = (0u64, 0u64);
            for pid in &tree {
                let Some(p) = procs.get(pid) else { continue };
                let key = (*pid, p.start);
                used += p.ticks - self.ticks.get(&key).copied().unwrap_or(0).min(p.ticks);
                ticks.insert(key, p.ticks);
                resident += p.rss_pages * page;
            }
            let read_pss = self
                .memory
                .get(name)
                .is_none_or(|(_, at)| now.duration_since(*at) >= PSS_EVERY)
                || self.pss_above.is_some_and(|limit| resident > limit);
            let memory: u64 = if read_pss {
                tree.iter()
                    .filter_map(|pid| Some((*pid, procs.get(pid)?)))
                    .map(|(pid, p)| pss(pid).unwrap_or(p.rss_pages * page))
                    .sum()
            } else {
                0
            };
            let memory = if read_pss {
                self.memory.insert(name.clone(), (memory, now));
                memory
            } else {
                self.memory.get(name).map_or(0, |(m, _)| *m)
            };
            let cores = seconds.map_or(0.0, |s| used as f64 / tps / s);
            out.insert(name.clone(), Cost { cores, memory });
            trees.insert(name.clone(), tree);
        }
        self.ticks = ticks;
        self.trees = trees;
        self.at = Some(now);
        self.memory
            .retain(|name, _| roots.iter().any(|(n, _)| n == name));
        out
    }

    /// The processes of the tree named `name` at the last measurement (its root first; a root
    /// that had exited alone, none if it was not measured).
    pub fn tree(&self, name: &str) -> &[i32] {
        self.trees.get(name).map_or(&[], Vec::as_slice)
    }
}

/// A process's PSS in bytes (`/proc/PID/smaps_rollup`).
fn pss(pid: i32) -> Option<u64> {
    let rollup = procfs::process::Process::new(pid)
        .ok()?
        .smaps_rollup()
        .ok()?;
    rollup
        .memory_map_rollup
        .0
        .iter()
        .filter_map(|m| m.extension.map.get("Pss"))
        .copied()
        .reduce(|a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell whose child burns a core for a while: the tree (both) is measured at about one
    /// core, and the child's memory is counted.
    #[test]
    fn a_tree_s_cpu_and_memory_are_its_descendants_too() {
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "timeout 3 sh -c 'while :; do :; done' & wait"])
            .spawn()
            .unwrap();
        let mut meter = TreeMeter::default();
        let roots = [("burn".to_owned(), shell.id())];
        let first = meter.measure(&roots)["burn"];
        assert!(first.memory > 0, "{first:?}");
        // Measured over successive intervals until the burn shows (a share of a core at least,
        // on a loaded machine), within a deadline.
        let deadline = Instant::now() + std::time::Duration::from_secs(3);
        let burning = loop {
            std::thread::sleep(std::time::Duration::from_millis(250));
            let now = meter.measure(&roots)["burn"];
            if now.cores > 0.2 || Instant::now() > deadline {
                break now;
            }
        };
        let _ = shell.kill();
        let _ = shell.wait();
        assert!(burning.cores > 0.2 && burning.cores < 1.5, "{burning:?}");
        let idle = meter.measure(&[("me".to_owned(), std::process::id())])["me"];
        assert!(idle.memory > 0);
    }
}
