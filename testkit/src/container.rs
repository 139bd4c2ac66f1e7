//! pagecast's container image under podman, for the container tests: built once per test binary
//! by `scripts/container-image.sh` (a debootstrap-made Debian base, the binary under test put into
//! the Dockerfile's runtime stage), run with runc and with ulimits within the host's hard limits,
//! as the script builds it. Containers are named and removed on drop, so a failed test leaves
//! none running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::repo_root;

/// The image the tests build and run: `localhost/pagecast:test-<hash of the binary's path>`, so
/// test runs from two checkouts (each with its own binary) never run each other's image, while a
/// rerun from the same one replaces its own.
fn tag_for(binary: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::canonicalize(binary)
        .unwrap_or_else(|_| binary.to_path_buf())
        .hash(&mut hasher);
    format!("localhost/pagecast:test-{:016x}", hasher.finish())
}

/// `podman --runtime runc`: Debian's default runtime (crun) fails on hosts with hybrid cgroups.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc"]);
    cmd
}

/// Builds the image from `binary` once per test process (seconds when podman's cache holds it)
/// and returns its tag; panics with the script's output when the build fails.
pub fn image(binary: &Path) -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tag = tag_for(binary);
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/container-image.sh"))
            .arg("--binary")
            .arg(binary)
            .args(["--tag", &tag])
            .output()
            .expect("run scripts/container-image.sh (bash missing?)");
        assert!(
            out.status.success(),
            "scripts/container-image.sh failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tag
    })
}

/// `--ulimit` flags runc accepts: open files at the host's hard limit, processes at it too but at
/// most 32768 (podman runs with a lower process limit than the shell; scripts/container-image.sh
/// uses the same values for the build).
pub fn ulimit_flags() -> Vec<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let hard = |name: &str| -> Option<u64> {
        let line = limits.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().nth(1)?.parse().ok()
    };
    let mut flags = Vec::new();
    if let Some(nofile) = hard("Max open files") {
        flags.extend(["--ulimit".to_owned(), format!("nofile={nofile}:{nofile}")]);
    }
    let nproc = hard("Max processes").unwrap_or(u64::MAX).min(32768);
    flags.extend(["--ulimit".to_owned(), format!("nproc={nproc}:{nproc}")]);
    flags
}

/// The start of every test container's name: `pagecast-test-<what>-<pid>-<n>`.
const PREFIX: &str = "pagecast-test-";

/// A named container of the test's own; `podman rm --force` on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    pub fn named(what: &str) -> Container {
        static STALE_REMOVED: OnceLock<()> = OnceLock::new();
        STALE_REMOVED.get_or_init(remove_stale);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Container {
            name: format!("{PREFIX}{what}-{}-{n}", std::process::id()),
        }
    }

    /// `podman run --rm --name <name> --network none <ulimits> <options> <image> <args>`: no
    /// network unless `options` name one (a recording of a local page needs none, and nothing of
    /// the test leaves the machine); the container's output is podman's.
    pub fn run(&self, options: &[&str], image: &str, args: &[&str]) -> Command {
        let mut cmd = podman();
        cmd.args(["run", "--rm", "--name", &self.name]);
        if !options.contains(&"--network") {
            cmd.args(["--network", "none"]);
        }
        cmd.args(ulimit_flags()).args(options).arg(image).args(args);
        cmd
    }

    /// `podman <verb> <name>` (stop, kill, ...), waiting for it; its status and output.
    pub fn podman(&self, verb: &str, args: &[&str]) -> std::process::Output {
        podman()
            .arg(verb)
            .args(args)
            .arg(&self.name)
            .output()
            .expect("run podman")
    }

    /// `podman exec <name> <command>`, waiting for it; its status and output.
    pub fn exec(&self, command: &[&str]) -> std::process::Output {
        podman()
            .arg("exec")
            .arg(&self.name)
            .args(command)
            .output()
            .expect("run podman exec")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "0", &self.name])
            .output();
    }
}

/// Containers of earlier test runs that were killed before they could remove them (their test
/// process, whose pid is in the name, is gone).
fn remove_stale() {
    let Ok(out) = podman()
        .args(["ps", "--all", "--format", "{{.Names}}"])
        .output()
    else {
        return;
    };
    for name in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = podman()
                .args(["rm", "--force", "--time", "0", name])
                .output();
        }
    }
}

/// A host folder mounted as the image's `/app/out`, owned by the image's user (uid 1000).
pub struct OutDir {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl OutDir {
    pub fn new() -> OutDir {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().to_path_buf();
        nix::unistd::chown(
            &path,
            Some(nix::unistd::Uid::from_raw(1000)),
            Some(nix::unistd::Gid::from_raw(1000)),
        )
        .expect("chown the output folder to uid 1000");
        OutDir { _dir: dir, path }
    }

    /// `-v <path>:/app/out`
    pub fn volume(&self) -> String {
        format!("{}:/app/out", self.path.display())
    }
}

impl Default for OutDir {
    fn default() -> Self {
        OutDir::new()
    }
}

/// `-v <repo>/tests/pages:/pages:ro`: the test pages, as `file:///pages/<name>` inside.
pub fn pages_volume() -> String {
    format!("{}:/pages:ro", repo_root().join("tests/pages").display())
}
