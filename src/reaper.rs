//! Leftovers of earlier runs that were killed (SIGKILL, power loss) before they could clean up.
//!
//! Every process of a run dies with it (process groups, parent-death signals), but its working
//! directory stays: a Chromium profile, a PulseAudio runtime directory, the demo page. Each run
//! marks its directory with an owner file (pid and the process's start time, so a reused pid is
//! not mistaken for the owner); a new run removes the marked directories whose owner is gone.
//! Directories without a readable owner file are not ours to judge and are left alone.

use std::path::{Path, PathBuf};

const OWNER_FILE: &str = ".pagecast-owner";
const PREFIX: &str = "pagecast-";

/// This process, as written into an owner file: "<pid> <start time in clock ticks>".
fn me() -> String {
    let pid = std::process::id();
    format!("{pid} {}", start_time(pid).unwrap_or(0))
}

/// When `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself contain spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Marks `dir` as owned by this process.
pub fn mark(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join(OWNER_FILE), me())
}

/// Whether the owner written in `content` is still running.
fn owner_alive(content: &str) -> bool {
    let mut parts = content.split_whitespace();
    let (Some(pid), Some(started)) = (parts.next(), parts.next()) else {
        return true; // unreadable: not ours to judge
    };
    let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else {
        return true;
    };
    start_time(pid) == Some(started)
}

/// Removes the marked `pagecast-*` directories in `base` whose owner is gone; returns them.
pub fn reap(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry.file_name().to_string_lossy().starts_with(PREFIX)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_ours {
            continue;
        }
        let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        if !owner_alive(&owner) && std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(path = %path.display(), "removed the leftovers of a killed run");
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marked_directories_of_dead_owners_are_removed() {
        let base = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let p = base.path().join(name);
            std::fs::create_dir_all(p.join("profile")).unwrap();
            p
        };
        let dead = dir("pagecast-dead");
        // A pid that is running, but started at another time: a reused pid.
        std::fs::write(dead.join(OWNER_FILE), format!("{} 1", std::process::id())).unwrap();
        let alive = dir("pagecast-alive");
        mark(&alive).unwrap();
        let unmarked = dir("pagecast-unmarked");
        let other = dir("other-dead");
        std::fs::write(other.join(OWNER_FILE), "999999999 1").unwrap();

        assert_eq!(reap(base.path()), vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(alive.exists() && unmarked.exists() && other.exists());
    }
}
