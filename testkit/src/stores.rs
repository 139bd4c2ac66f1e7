//! The GCS and Azure Blob emulators the store tests upload to, each on a free loopback port,
//! started by the test and stopped on drop: fake-gcs-server (`.tools/bin`, built by
//! scripts/setup.sh) and Azurite (`.tools/azurite`, installed by scripts/setup.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, repo_root, wait_until, ServerProcess};

/// Azurite's well-known development account and key (public, documented by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn spawn(program: &Path, args: &[String], port: u16, what: &str) -> ServerProcess {
    assert!(
        program.exists(),
        "{} is missing: run scripts/setup.sh",
        program.display()
    );
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    wait_until(
        &format!("{what} to listen"),
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    ServerProcess::new(child)
}

/// Runs `program args`; its stdout, or a panic with its stderr.
fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// fake-gcs-server, its objects in a directory of its own (they outlive a restart; open
/// resumable uploads do not).
pub struct FakeGcs {
    pub port: u16,
    server: ServerProcess,
    dir: tempfile::TempDir,
}

impl FakeGcs {
    pub fn start() -> FakeGcs {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let server = Self::spawn(port, dir.path());
        FakeGcs { port, server, dir }
    }

    fn spawn(port: u16, dir: &Path) -> ServerProcess {
        let url = format!("http://127.0.0.1:{port}");
        let args = [
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
            "-backend",
            "filesystem",
            "-filesystem-root",
            dir.to_str().unwrap(),
            "-external-url",
            &url,
            "-public-host",
            &format!("127.0.0.1:{port}"),
            "-log-level",
            "error",
        ]
        .map(str::to_owned);
        spawn(
            &repo_root().join(".tools/bin/fake-gcs-server"),
            &args,
            port,
            "fake-gcs-server",
        )
    }

    /// Starts the server again after [`FakeGcs::kill`], on the same port and data. What the kill
    /// cut off in the middle of a write goes first (a temporary file, or an object's data without
    /// its `.metadata`): GCS never shows an upload it did not finish, and the emulator's
    /// filesystem backend fails a whole bucket's listing (404) on one such file.
    pub fn restart(&mut self) {
        self.kill();
        for bucket in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if bucket.path().is_dir() {
                remove_unfinished(&bucket.path());
            }
        }
        self.server = Self::spawn(self.port, self.dir.path());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn make_bucket(&self, bucket: &str) {
        let body = format!(r#"{{"name":"{bucket}"}}"#);
        let url = format!("{}/storage/v1/b", self.endpoint());
        run(
            Path::new("curl"),
            &[
                "-sfS",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
                &url,
            ],
        );
    }

    /// Uploads `file` as `bucket/key`.
    pub fn upload(&self, bucket: &str, key: &str, file: &Path) {
        let url = format!(
            "{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
            self.endpoint(),
            key.replace('/', "%2F")
        );
        let data = format!("@{}", file.display());
        run(
            Path::new("curl"),
            &["-sfS", "-X", "POST", "--data-binary", &data, &url],
        );
    }

    /// Downloads `bucket/key` to `out`.
    pub fn download(&self, bucket: &str, key: &str, out: &Path) {
        let url = format!(
            "{}/storage/v1/b/{bucket}/o/{}?alt=media",
            self.endpoint(),
            key.replace('/', "%2F")
        );
        run(
            Path::new("curl"),
            &["-sfS", "-o", out.to_str().unwrap(), &url],
        );
    }

    /// The names of the objects in `bucket`.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        let url = format!("{}/storage/v1/b/{bucket}/o", self.endpoint());
        let listing: serde_json::Value =
            serde_json::from_str(&run(Path::new("curl"), &["-sfS", &url])).unwrap();
        listing["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills the server for good: connections are refused from now on.
    pub fn kill(&mut self) {
        self.server.kill();
    }
}

/// Removes, below `dir`, every file without an object's metadata: the emulator keeps it in the
/// file's `user.metadata` extended attribute where the file system has them, else in a
/// `.metadata` file beside it.
fn remove_unfinished(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_unfinished(&path);
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let beside = PathBuf::from(format!("{}.metadata", path.display()));
        if !name.ends_with(".metadata") && !beside.exists() && !has_metadata_attribute(&path) {
            eprintln!(
                "fake-gcs-server: removing {} (a write the kill cut off)",
                path.display()
            );
            std::fs::remove_file(&path).unwrap();
        }
    }
}

fn has_metadata_attribute(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: both strings are NUL-terminated and outlive the call; a null buffer of size 0
    // only asks for the attribute's size.
    let size = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.metadata".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size >= 0
}

/// Azurite's blob service, its data in a directory of its own.
pub struct Azurite {
    pub port: u16,
    server: ServerProcess,
    dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let server = Self::spawn(port, dir.path());
        Azurite { port, server, dir }
    }

    fn spawn(port: u16, dir: &Path) -> ServerProcess {
        let args = [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
            dir.to_str().unwrap(),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ]
        .map(str::to_owned);
        spawn(
            &repo_root().join(".tools/azurite/node_modules/.bin/azurite-blob"),
            &args,
            port,
            "azurite",
        )
    }

    /// Stops the server as an operator would (SIGTERM: Azurite writes its metadata out; killed,
    /// it may lose a container made a moment before). Azurite stops taking connections at once
    /// but serves the open ones until their clients close them, and a client's idle connection
    /// can stay open a minute or more (a suite spent 100 s here): after 3 s it is killed.
    pub fn stop(&mut self) {
        self.server.resume();
        self.server.signal(nix::sys::signal::Signal::SIGTERM);
        if !self.server.wait_up_to(Duration::from_secs(3)) {
            self.server.kill();
        }
    }

    /// Starts the server again after [`Azurite::stop`], on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.server = Self::spawn(self.port, self.dir.path());
    }

    /// The account's blob endpoint (what `output.azure.endpoint` takes).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// Runs tests/support/blob.py with the venv's python; returns its stdout.
    pub fn blob(&self, args: &[&str]) -> String {
        let script = repo_root().join("tests/support/blob.py");
        let endpoint = self.endpoint();
        let mut all = vec![script.to_str().unwrap(), endpoint.as_str()];
        all.extend_from_slice(args);
        run(&python(), &all)
    }

    pub fn kill(&mut self) {
        self.server.kill();
    }
}

fn python() -> PathBuf {
    repo_root().join(".venv/bin/python")
}
