//! The claim a run holds on its output file while it records: two runs given the same
//! `output.file` at once (two `docker run`s with one mounted directory, two service jobs with one
//! name) must not both write it. `--overwrite` replaces a finished recording, never one being
//! recorded.
//!
//! The claim is an advisory lock (`flock`) on a hidden file: beside an output file,
//! `.<name>.lock`; inside an output directory (the HLS one, whose names are the same in every
//! run), `.pagecast.lock`, so that a directory that is the service's output root itself is never
//! written outside of. The kernel drops it when the holder exits, however it exits, so a killed run
//! never leaves a claim behind; the lock file a kill leaves is taken over by the next run and
//! removed when that run ends.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// How often taking a claim is tried again when the lock file was replaced between opening and
/// locking it (its holder ended and removed it just then).
const TRIES: usize = 8;

/// Why a claim could not be taken.
#[derive(Debug)]
pub enum ClaimError {
    /// Another run holds the output now.
    Busy,
    /// The lock file could not be created or locked.
    Io(std::io::Error),
    /// The filesystem cannot lock files (some network and FUSE filesystems): no claim can be
    /// taken there, by this run or another.
    Unsupported(Errno),
}

/// A run's claim on its output; released (and the lock file removed) when dropped.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    /// Holds the lock: dropping it releases the claim.
    _lock: Flock<File>,
}

/// The lock file that claims the directory `dir`.
pub const DIRECTORY_LOCK: &str = ".pagecast.lock";

/// The lock file that claims the file `output`.
pub fn lock_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.lock"))
}

impl Claim {
    /// Claims the file `output` for this run, or says another run holds it. Never waits.
    pub fn file(output: &Path) -> Result<Claim, ClaimError> {
        Claim::take(lock_path(output))
    }

    /// Claims the directory `dir` (which exists) for this run, or says another run holds it.
    pub fn directory(dir: &Path) -> Result<Claim, ClaimError> {
        Claim::take(dir.join(DIRECTORY_LOCK))
    }

    fn take(path: PathBuf) -> Result<Claim, ClaimError> {
        for _ in 0..TRIES {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(ClaimError::Io)?;
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => locked,
                Err((_, Errno::EWOULDBLOCK)) => return Err(ClaimError::Busy),
                Err((_, errno @ (Errno::ENOLCK | Errno::EOPNOTSUPP | Errno::ENOSYS))) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(ClaimError::Unsupported(errno));
                }
                Err((_, errno)) => return Err(ClaimError::Io(errno.into())),
            };
            // The holder before us may have removed the file between our open and our lock:
            // then our lock is on a file no other run can find, and counts for nothing.
            let held = file.metadata().map_err(ClaimError::Io)?;
            match std::fs::metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Claim { path, _lock: file });
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ClaimError::Io(e)),
            }
        }
        Err(ClaimError::Busy)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Removed while still locked, so no run can lock this file after we let it go; a run
        // that opened it just before finds it gone and tries again.
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the output's lock file");
            }
        }
        // The lock goes with `_lock`, dropped next.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_on_the_same_output_is_refused_until_the_first_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("rec.mp4");
        let first = Claim::file(&output).unwrap();
        assert_eq!(first.path(), dir.path().join(".rec.mp4.lock"));
        assert!(matches!(Claim::file(&output), Err(ClaimError::Busy)));
        drop(first);
        assert!(!dir.path().join(".rec.mp4.lock").exists());
        let again = Claim::file(&output).unwrap();
        assert!(again.path().exists());
    }

    #[test]
    fn a_directory_is_claimed_from_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = Claim::directory(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join(DIRECTORY_LOCK));
        assert!(matches!(
            Claim::directory(dir.path()),
            Err(ClaimError::Busy)
        ));
        drop(first);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn another_output_in_the_same_directory_is_claimed_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Claim::file(&dir.path().join("a.mp4")).unwrap();
        let _b = Claim::file(&dir.path().join("b.mp4")).unwrap();
    }

    #[test]
    fn a_lock_file_left_by_a_killed_run_is_taken_over_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("rec.mp4");
        std::fs::write(lock_path(&output), b"").unwrap();
        let claim = Claim::file(&output).unwrap();
        drop(claim);
        assert!(!lock_path(&output).exists());
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_an_io_error() {
        let output = Path::new("/proc/pagecast-claim-test/rec.mp4");
        assert!(matches!(Claim::file(output), Err(ClaimError::Io(_))));
    }
}
