//! What fault tests share: random moments that can be replayed, and small file systems of the
//! test's own to fill up.
//!
//! - [`Seeded`]: a seed from `PAGECAST_TEST_SEED` (to replay a failure) or the clock, printed
//!   before the first use, and numbers in [0, 1) from it (xorshift).
//! - [`Tmpfs`]: a tmpfs mounted on a fresh temporary directory (the test needs root), lazily
//!   unmounted on drop.

use std::path::Path;
use std::process::Command;

/// Random numbers from a seed the test prints, so any failing moment can be replayed with
/// `PAGECAST_TEST_SEED=<seed>`.
pub struct Seeded(u64);

impl Seeded {
    /// The seed from `PAGECAST_TEST_SEED`, or from the clock; printed with `what` it chooses.
    pub fn new(what: &str) -> Seeded {
        let seed = std::env::var("PAGECAST_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{what} from PAGECAST_TEST_SEED={seed}");
        // xorshift never leaves 0: make the state odd (the printed seed replays the same).
        Seeded(seed | 1)
    }

    /// A number in [0, 1).
    pub fn fraction(&mut self) -> f64 {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s % 10_000) as f64 / 10_000.0
    }

    /// A number in [lo, hi).
    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.fraction()
    }
}

/// A tmpfs of the test's own (`mount -t tmpfs -o <options>`), unmounted on drop.
pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// Mounts one with these options (e.g. `size=256k`, `size=1m,ro`); panics, saying the test
    /// needs root, when mounting fails.
    pub fn mount(options: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs (this test needs root)"
        );
        Tmpfs(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Bytes still free on it.
    pub fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(self.0.path()).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}
