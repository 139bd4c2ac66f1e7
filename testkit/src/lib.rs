//! Helpers shared by pagecast's test suites.
//!
//! - [`heavy`]: a lock across every test binary, so tests that run real Xvfb/Chromium/ffmpeg run
//!   one at a time (frame rates and deadlines hold on 2 cores) while unit tests stay parallel.
//! - [`wait_until`]: wait on a condition with a deadline, never a fixed sleep.
//! - [`probe`]: what ffprobe says of a recording (streams, size, duration, frame count, loudness).
//! - [`descendants`] / [`alive`]: the process tree, to prove nothing of a run survives it.
//! - [`container`]: the container image under podman.
//! - [`srt::SrtListener`]: an SRT listener (srt-live-transmit) receiving into files.
//! - [`stores`]: the GCS and Azure Blob emulators.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

pub mod container;
pub mod fault;
pub mod livekit;
pub mod page_server;
pub mod srt;
pub mod stores;

/// One video frame as RGB pixels, scaled to `width` x `height`.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<[u8; 3]>,
}

impl Frame {
    pub fn at(&self, x: usize, y: usize) -> [u8; 3] {
        self.rgb[y * self.width + x]
    }

    /// The share of pixels (0..=1) for which `pred` holds.
    pub fn share(&self, pred: impl Fn([u8; 3]) -> bool) -> f64 {
        self.rgb.iter().filter(|p| pred(**p)).count() as f64 / self.rgb.len() as f64
    }

    /// The share of pixels in the rectangle [x0, x1) x [y0, y1) for which `pred` holds.
    pub fn share_in(
        &self,
        (x0, y0, x1, y1): (usize, usize, usize, usize),
        pred: impl Fn([u8; 3]) -> bool,
    ) -> f64 {
        let mut hits = 0;
        let mut all = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                all += 1;
                if pred(self.at(x, y)) {
                    hits += 1;
                }
            }
        }
        hits as f64 / all.max(1) as f64
    }
}

/// Reddish, bluish, greenish: one channel clearly above the other two (video codecs shift colours a
/// little, so no exact values).
pub fn is_red(p: [u8; 3]) -> bool {
    p[0] > 150 && p[1] < 90 && p[2] < 90
}
pub fn is_green(p: [u8; 3]) -> bool {
    p[1] > 150 && p[0] < 90 && p[2] < 90
}
pub fn is_blue(p: [u8; 3]) -> bool {
    p[2] > 150 && p[0] < 90 && p[1] < 90
}
/// Near black / near white.
pub fn is_dark(p: [u8; 3]) -> bool {
    p.iter().all(|c| *c < 48)
}
pub fn is_light(p: [u8; 3]) -> bool {
    p.iter().all(|c| *c > 200)
}

/// The frame of `path` at `at_secs`, scaled to `width` x `height` (ffmpeg, raw RGB).
pub fn frame_rgb(path: &Path, at_secs: f64, width: usize, height: usize) -> Frame {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &format!("{at_secs:.3}"), "-i"])
        .arg(path)
        .args([
            "-frames:v",
            "1",
            "-vf",
            &format!("scale={width}:{height}:flags=area"),
        ])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success() && out.stdout.len() == width * height * 3,
        "no frame at {at_secs}s of {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Frame {
        width,
        height,
        rgb: out.stdout.chunks(3).map(|c| [c[0], c[1], c[2]]).collect(),
    }
}

/// The mean grey level (0-255) of every frame of `path`, in order (ffmpeg: each frame scaled
/// to one pixel).
pub fn frame_levels(path: &Path) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-vf", "scale=1:1:flags=area,format=gray"])
        .args(["-fps_mode", "passthrough", "-f", "rawvideo", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "cannot read the frames of {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Held while a heavy test runs; released on drop.
///
/// With `PAGECAST_TEST_TIMES=<file>` set, each guard appends one line to that file when it is
/// released: the test's name, the seconds it held the lock and the seconds it waited for it
/// (scripts/test.sh prints the longest, so the suite's time budget shows where it goes).
pub struct HeavyGuard {
    _lock: Flock<File>,
    waited: Duration,
    taken: Instant,
}

impl Drop for HeavyGuard {
    fn drop(&mut self) {
        let Some(path) = std::env::var_os("PAGECAST_TEST_TIMES") else {
            return;
        };
        // The test binary (its name without cargo's hash) and the test (libtest's thread name).
        let binary = std::env::args()
            .next()
            .and_then(|a| Some(Path::new(&a).file_name()?.to_str()?.to_owned()))
            .map(|n| n.rsplit_once('-').map_or(n.clone(), |(b, _)| b.to_owned()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let line = format!(
            "{:.1}\t{:.1}\t{binary}::{}\n",
            self.taken.elapsed().as_secs_f64(),
            self.waited.as_secs_f64(),
            thread.name().unwrap_or("?")
        );
        // One short append per test: lines from parallel tests do not interleave.
        if let Ok(mut f) = File::options().create(true).append(true).open(path) {
            let _ = std::io::Write::write_all(&mut f, line.as_bytes());
        }
    }
}

/// Takes the machine-wide lock for heavy tests (blocking until it is free).
pub fn heavy() -> HeavyGuard {
    let path = std::env::temp_dir().join("pagecast-heavy-tests.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("open the heavy-test lock file");
    let asked = Instant::now();
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the heavy-test lock file");
    HeavyGuard {
        _lock: lock,
        waited: asked.elapsed(),
        taken: Instant::now(),
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now (for a test server, or as a closed port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `cond` every 20 ms until it is true; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

/// A `file://` URL of a test page under `tests/pages/`, with an optional query.
pub fn test_page(name: &str, query: &str) -> String {
    let path = repo_root().join("tests/pages").join(name);
    assert!(path.is_file(), "missing test page {}", path.display());
    if query.is_empty() {
        format!("file://{}", path.display())
    } else {
        format!("file://{}?{query}", path.display())
    }
}

/// What ffprobe says of a media file.
#[derive(Debug, Clone)]
pub struct Probe {
    pub json: Value,
}

/// Seconds of media in a recording being written (its complete fragments), by a quick ffprobe
/// of the container; 0 if it cannot be read (yet).
pub fn seconds_written(path: &Path) -> f64 {
    Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs ffprobe (counting frames) on `path`; panics with ffprobe's error if it can't read it.
pub fn probe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_format",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe rejects {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Probe {
        json: serde_json::from_slice(&out.stdout).expect("ffprobe json"),
    }
}

impl Probe {
    fn stream(&self, kind: &str) -> Option<&Value> {
        self.json["streams"]
            .as_array()?
            .iter()
            .find(|s| s["codec_type"] == kind)
    }

    pub fn video(&self) -> &Value {
        self.stream("video").expect("no video stream")
    }

    pub fn audio(&self) -> &Value {
        self.stream("audio").expect("no audio stream")
    }

    pub fn has_audio(&self) -> bool {
        self.stream("audio").is_some()
    }

    pub fn has_video(&self) -> bool {
        self.stream("video").is_some()
    }

    /// Container duration in seconds.
    pub fn duration(&self) -> f64 {
        self.json["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .expect("no duration")
    }

    pub fn size(&self) -> u64 {
        self.json["format"]["size"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .expect("no size")
    }

    pub fn dimensions(&self) -> (u64, u64) {
        let v = self.video();
        (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap())
    }

    /// Frames actually decoded in the video stream.
    pub fn frames(&self) -> u64 {
        self.video()["nb_read_frames"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .expect("no frame count")
    }

    /// Frames per second from the stream's average rate.
    pub fn avg_fps(&self) -> f64 {
        let rate = self.video()["avg_frame_rate"].as_str().unwrap_or("0/1");
        let (n, d) = rate.split_once('/').unwrap_or((rate, "1"));
        let (n, d): (f64, f64) = (n.parse().unwrap_or(0.0), d.parse().unwrap_or(1.0));
        if d == 0.0 {
            0.0
        } else {
            n / d
        }
    }

    pub fn video_codec(&self) -> &str {
        self.video()["codec_name"].as_str().unwrap_or("")
    }

    pub fn audio_codec(&self) -> &str {
        self.audio()["codec_name"].as_str().unwrap_or("")
    }

    pub fn pix_fmt(&self) -> &str {
        self.video()["pix_fmt"].as_str().unwrap_or("")
    }
}

/// The mean volume of the audio in dB (ffmpeg's volumedetect); -91 is digital silence.
pub fn mean_volume_db(path: &Path) -> f64 {
    volume_db(path, "volumedetect")
}

/// The mean volume in dB of the audio within 30 Hz of `hz` (a band-pass before volumedetect):
/// which test tone a recording holds.
pub fn tone_volume_db(path: &Path, hz: u32) -> f64 {
    volume_db(
        path,
        &format!(
            "bandpass=f={hz}:width_type=h:w=30,bandpass=f={hz}:width_type=h:w=30,volumedetect"
        ),
    )
}

fn volume_db(path: &Path, filter: &str) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(path)
        .args(["-map", "0:a", "-af", filter, "-f", "null", "-"])
        .output()
        .expect("run ffmpeg volumedetect");
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.split("mean_volume:").nth(1))
        .and_then(|v| v.trim().trim_end_matches("dB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no mean_volume in ffmpeg output: {err}"))
}

/// Kills (SIGKILL) the first process named `name` below `pid`, as a crash would; returns its
/// pid. Panics when there is none.
pub fn kill_descendant(pid: u32, name: &str) -> u32 {
    let victim = descendants(pid)
        .into_iter()
        .find(|(_, n)| n == name)
        .unwrap_or_else(|| panic!("no {name} runs below {pid}"))
        .0;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    victim
}

/// Every process below `pid` (children, grandchildren, ...), from /proc.
pub fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut parents: Vec<(u32, u32, String)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = stat[open + 1..close].to_owned();
            let ppid = stat[close + 2..]
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            parents.push((p, ppid, name));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, ppid, name) in &parents {
            if *ppid == parent {
                out.push((*p, name.clone()));
                frontier.push(*p);
            }
        }
    }
    out
}

/// Each thread of process `pid`, from /proc/PID/task: its id, its name and its `nice`. Empty when
/// the process is gone.
pub fn threads(pid: u32) -> Vec<(u32, String, i64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            // After the name: state (field 3) ... nice (field 19).
            let nice = stat[close + 2..].split_whitespace().nth(16)?.parse().ok()?;
            Some((tid, stat[open + 1..close].to_owned(), nice))
        })
        .collect()
}

/// Alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A real nginx with its RTMP module on 127.0.0.1, recording every stream (FLV) into its
/// directory. Started from a config the test writes; stopped on drop.
pub struct Nginx {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Nginx {
    pub fn start() -> Nginx {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rec")).unwrap();
        let module = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
        assert!(
            Path::new(module).exists(),
            "nginx's RTMP module is missing: run scripts/setup.sh"
        );
        let conf = format!(
            "load_module {module};\n\
             daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{\n\
               live on; record all; record_path {d}/rec; record_unique on; }} }} }}\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut nginx = Nginx {
            port,
            dir,
            child: None,
        };
        nginx.run();
        nginx
    }

    /// Starts (again) on the same port.
    pub fn run(&mut self) {
        let child = Command::new("nginx")
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx (run scripts/setup.sh)");
        self.child = Some(child);
        let port = self.port;
        wait_until("nginx to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self, app: &str, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{key}", self.port)
    }

    /// The recorded FLV files, oldest first.
    pub fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("rec"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

/// moto's S3 server (from the project's venv) on 127.0.0.1, started by the test, stopped on drop.
/// A test server's process: frozen and thawed to play an outage, killed (and reaped) on drop.
pub struct ServerProcess(std::process::Child);

impl ServerProcess {
    pub fn new(child: std::process::Child) -> Self {
        Self(child)
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), signal);
    }

    /// Freezes the server (SIGSTOP): connections are accepted but nothing is answered.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// Waits for the server to exit (after a signal that ends it).
    pub fn wait(&mut self) {
        let _ = self.0.wait();
    }

    /// Waits up to `limit` for the server to exit; true if it has.
    pub fn wait_up_to(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            match self.0.try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) if Instant::now() >= deadline => return false,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Kills the server for good (thawed first, so that it can die): connections are refused
    /// from now on.
    pub fn kill(&mut self) {
        self.resume();
        let _ = self.0.kill();
        self.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Moto {
    pub port: u16,
    server: ServerProcess,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_with(&[])
    }

    /// With authentication: moto lets the first `free_requests` requests through unchecked, then
    /// checks every signature (spend them on [`Moto::s3`] `iam-user`).
    pub fn start_authenticating(free_requests: u32) -> Moto {
        Self::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", free_requests.to_string())])
    }

    fn start_with(env: &[(&str, String)]) -> Moto {
        let port = free_port();
        let server = repo_root().join(".venv/bin/moto_server");
        assert!(
            server.exists(),
            "{} is missing: run scripts/setup.sh",
            server.display()
        );
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        // A TCP connect, not an HTTP probe: moto counts requests (see INITIAL_NO_AUTH_ACTION_COUNT).
        wait_until("moto to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Moto {
            port,
            server: ServerProcess::new(child),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs tests/support/s3.py with the venv's python; returns its stdout.
    pub fn s3(&self, args: &[&str]) -> String {
        let out = Command::new(repo_root().join(".venv/bin/python"))
            .arg(repo_root().join("tests/support/s3.py"))
            .arg(self.endpoint())
            .args(args)
            .output()
            .expect("run tests/support/s3.py");
        assert!(
            out.status.success(),
            "s3.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Freezes the server (SIGSTOP): connections are accepted but nothing is answered.
    pub fn pause(&self) {
        self.server.pause();
    }

    pub fn resume(&self) {
        self.server.resume();
    }
}

/// redis-server (Debian's) on a free loopback port, without persistence, in a directory of its
/// own; killed on drop.
pub struct Redis {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Self::spawn(port, dir.path());
        let redis = Redis {
            port,
            _dir: dir,
            child,
        };
        redis.wait_ready();
        redis
    }

    fn spawn(port: u16, dir: &Path) -> std::process::Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server (run scripts/setup.sh)")
    }

    fn wait_ready(&self) {
        wait_until("redis-server to answer", Duration::from_secs(10), || {
            self.try_cli(&["PING"]).is_some_and(|r| r == "PONG")
        });
    }

    /// Kills the server (every connection drops, every key is lost: there is no persistence).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, self._dir.path());
        self.wait_ready();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A redis-cli command; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {} failed", args.join(" ")))
    }

    /// Every key and everything it holds, as text (each read by its type), to look for what must
    /// never be stored.
    pub fn everything(&self) -> String {
        let keys = self.cli(&["--raw", "KEYS", "*"]);
        let mut all = String::new();
        for key in keys.lines().filter(|k| !k.is_empty()) {
            let read: &[&str] = match self.cli(&["TYPE", key]).as_str() {
                "string" => &["GET"],
                "hash" => &["HGETALL"],
                "list" => &["LRANGE", "0", "-1"],
                "set" => &["SMEMBERS"],
                "zset" => &["ZRANGE", "0", "-1"],
                "stream" => &["XRANGE", "-", "+"],
                other => panic!("key {key} of type {other}"),
            };
            let mut args = vec!["--raw", read[0], key];
            args.extend(&read[1..]);
            all.push_str(key);
            all.push('\n');
            all.push_str(&self.cli(&args));
            all.push('\n');
        }
        all
    }

    /// Follows a pub/sub channel (a `redis-cli SUBSCRIBE` of its own) until dropped.
    pub fn subscribe(&self, channel: &str) -> Subscription {
        let mut child = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "SUBSCRIBE", channel])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-cli");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        let sub = Subscription { child, lines };
        // Subscribed once the server counts it.
        wait_until("the subscription", Duration::from_secs(10), || {
            self.cli(&["PUBSUB", "NUMSUB", channel])
                .lines()
                .nth(1)
                .is_some_and(|n| n.trim() != "0")
        });
        sub
    }

    /// One field of a hash ("" if missing).
    pub fn hget(&self, key: &str, field: &str) -> String {
        self.cli(&["HGET", key, field])
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Messages on a Redis channel, as they arrive; stops following on drop.
pub struct Subscription {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Subscription {
    /// The JSON messages received so far.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP proxy to `127.0.0.1:<port>` that a test can cut: a network partition between
/// one client and its server (the server stays up for everyone else). Stops on drop.
pub struct TcpProxy {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl TcpProxy {
    pub fn start(upstream: u16) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is reset
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut list = o.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        TcpProxy { port, cut, open }
    }

    /// `redis://127.0.0.1:<port>`: a Redis URL through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// redis-server speaking only TLS on a free loopback port, with a certificate for 127.0.0.1 from
/// a CA of its own (made with openssl); killed on drop. Clients trust it through `ca`.
pub struct RedisTls {
    pub port: u16,
    /// The CA certificate (PEM) to trust.
    pub ca: PathBuf,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl RedisTls {
    pub fn start() -> RedisTls {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl (run scripts/setup.sh)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=pagecast test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1",
            "-extfile",
            "ext",
        ]);
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--tls-cert-file", "leaf.pem", "--tls-key-file", "leaf.key"])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server (run scripts/setup.sh)");
        let redis = RedisTls {
            port,
            ca: d.join("ca.pem"),
            dir,
            child,
        };
        wait_until(
            "redis-server (TLS) to answer",
            Duration::from_secs(10),
            || redis.cli(&["PING"]) == "PONG",
        );
        redis
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// A redis-cli command over TLS; its output, trimmed ("" if it failed).
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&self.ca)
            .args(["-p", &self.port.to_string()])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for RedisTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP server of a directory on 127.0.0.1 (Python's `http.server`), e.g. to play an HLS
/// playlist while it is written. Killed on drop.
pub struct StaticServer {
    pub port: u16,
    child: std::process::Child,
}

impl StaticServer {
    pub fn start(dir: &Path) -> StaticServer {
        let port = free_port();
        let child = Command::new(repo_root().join(".venv/bin/python"))
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start python -m http.server (run scripts/setup.sh)");
        wait_until("the HTTP server", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        StaticServer { port, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
