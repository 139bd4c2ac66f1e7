//! What a recording under a service policy may use of the machine besides its share of the CPU
//! (which admission counts, and `service/cpu_share.rs` holds it to): the memory of its whole
//! process tree, and the disk its working directory takes (chiefly the page's browser profile:
//! IndexedDB, Cache Storage, caches). A job's page is untrusted: one that allocates or stores
//! without end would take the memory or the disk of every other recording on the worker, and a
//! full disk ends them all.
//!
//! [`watch`] measures both every [`CHECK_EVERY`] while the recording runs. Past a limit it logs
//! [`OVER_LIMIT`] and stops the recording the way a stop signal does (the file finished, kept and
//! uploaded); the run then fails with exit 4 naming the limit and the flag that sets it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pagecast_actors::recording::Stopper;

use crate::service::usage::TreeMeter;

/// How often the memory and the disk are measured.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Logged (fields: limit, used, allowed, in bytes) when a recording passes a limit and is
/// stopped.
pub const OVER_LIMIT: &str = "the recording passed a limit of the service policy; stopping it";

/// The limits of one recording, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Its process tree's memory (PSS).
    pub memory: u64,
    /// Its working directory's size on disk.
    pub storage: u64,
}

/// One of the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The process tree's memory.
    Memory,
    /// The working directory's size on disk.
    Storage,
}

impl Limit {
    pub const ALL: [Limit; 2] = [Limit::Memory, Limit::Storage];

    /// Its name in the log (`limit` field) and in the metric's `limit` label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::Storage => "storage",
        }
    }
}

/// Which limit a recording passed, with how much it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passed {
    pub limit: Limit,
    pub used: u64,
    pub allowed: u64,
}

impl Passed {
    /// The run's one-line failure.
    pub fn message(&self) -> String {
        let (what, flag) = match self.limit {
            Limit::Memory => ("memory (its processes together)", "--max-job-memory"),
            Limit::Storage => ("disk in its browser profile", "--max-page-storage"),
        };
        format!(
            "policy: the page used {} of {what}, more than this service allows ({}, {flag}); \
             the recording was stopped there",
            mib(self.used),
            mib(self.allowed)
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Watches the process tree of `root` (this process, for a recording) and the directory
/// `work_dir`; at the first limit passed, asks `stopper` to stop the recording and returns
/// which. Runs until then (abort it when the recording ends).
pub async fn watch(limits: Limits, root: u32, work_dir: PathBuf, stopper: Stopper) -> Passed {
    let mut meter = TreeMeter::reading_pss_above(limits.memory);
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // /proc and the directory are read off the actors' thread.
        let dir = work_dir.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let passed = check(&mut meter, limits, root, &dir);
            (meter, passed)
        })
        .await;
        let Ok((returned, passed)) = measured else {
            // The measuring task panicked: no figure this time, and no meter either.
            meter = TreeMeter::reading_pss_above(limits.memory);
            continue;
        };
        meter = returned;
        if let Some(passed) = passed {
            tracing::warn!(
                limit = passed.limit.name(),
                used = passed.used,
                allowed = passed.allowed,
                "{OVER_LIMIT}"
            );
            stopper.stop(passed.message());
            return passed;
        }
    }
}

/// The first limit the tree of `root` or the directory `work_dir` passes now, if any.
pub fn check(meter: &mut TreeMeter, limits: Limits, root: u32, work_dir: &Path) -> Option<Passed> {
    let memory = meter
        .measure(&[("recording".to_owned(), root)])
        .get("recording")
        .map_or(0, |cost| cost.memory);
    if memory > limits.memory {
        return Some(Passed {
            limit: Limit::Memory,
            used: memory,
            allowed: limits.memory,
        });
    }
    let storage = disk_usage(work_dir);
    (storage > limits.storage).then_some(Passed {
        limit: Limit::Storage,
        used: storage,
        allowed: limits.storage,
    })
}

/// The disk `dir` takes, everything under it (allocated blocks: a sparse file counts what it
/// holds). Symbolic links are not followed; what cannot be read counts nothing.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.blocks() * 512)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_counts_its_files_at_every_depth_and_not_what_links_lead_to() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(dir.path().join("top"), vec![1u8; 64 << 10]).unwrap();
        std::fs::write(deep.join("low"), vec![1u8; 192 << 10]).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 1 << 20]).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let used = disk_usage(dir.path());
        assert!(
            (256 << 10..(256 << 10) + (64 << 10)).contains(&used),
            "{used}"
        );
    }

    #[test]
    fn a_profile_over_its_storage_limit_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("indexeddb"), vec![1u8; 2 << 20]).unwrap();
        let mut meter = TreeMeter::default();
        let limits = Limits {
            memory: u64::MAX,
            storage: 1 << 20,
        };
        let passed = check(&mut meter, limits, std::process::id(), dir.path()).unwrap();
        assert_eq!((passed.limit, passed.allowed), (Limit::Storage, 1 << 20));
        assert!(passed.used >= 2 << 20, "{passed:?}");
        assert_eq!(
            passed.message(),
            format!(
                "policy: the page used {} of disk in its browser profile, more than this service \
                 allows (1.0 MiB, --max-page-storage); the recording was stopped there",
                mib(passed.used)
            )
        );
        let roomy = Limits {
            storage: 4 << 20,
            ..limits
        };
        assert_eq!(
            check(&mut meter, roomy, std::process::id(), dir.path()),
            None
        );
    }

    #[test]
    fn a_tree_over_its_memory_limit_is_named_first() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            memory: 1 << 20,
            storage: 0,
        };
        // This test process alone takes more than 1 MiB.
        let mut meter = TreeMeter::reading_pss_above(limits.memory);
        let passed = check(&mut meter, limits, std::process::id(), dir.path()).unwrap();
        assert_eq!(passed.limit, Limit::Memory);
        assert!(passed.used > 1 << 20);
        assert!(passed.message().contains("--max-job-memory"));
    }
}
