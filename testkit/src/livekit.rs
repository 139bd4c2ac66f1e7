//! A real LiveKit room for tests: a private network namespace, livekit-server in it, and real
//! participants (LiveKit's Python SDK) publishing known media.
//!
//! Why a namespace: WebRTC offers every interface address of the host as a candidate, and the
//! server would send connectivity checks to them. Inside a namespace the test creates, the only
//! interfaces are `lo` and a veth pair whose both ends stay inside, carrying one address of the
//! test's own ([`Netns::ADDR`]); the server binds only that address and announces only it, so
//! every packet of the test stays inside the namespace. Every process of a room test (server,
//! participants, pagecast with its Xvfb, PulseAudio, Chromium and ffmpeg) runs in it through
//! `ip netns exec`.

use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{repo_root, wait_until};

const PREFIX: &str = "pctest";

/// A network namespace of the test's own; deleted (with every process in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// The address the namespace's veth end carries, and the only one the server announces.
    pub const ADDR: &'static str = "10.213.0.1";

    pub fn create() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let name = format!(
            "{PREFIX}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ip = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("run ip (iproute2; run scripts/setup.sh)");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&[
            "-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/24", Self::ADDR),
            "dev",
            "v0",
        ]);
        ip(&["-n", n, "link", "set", "v0", "up"]);
        ip(&["-n", n, "link", "set", "v1", "up"]);
        ns
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Whether a TCP connection to `addr:port` inside the namespace succeeds (from a thread that
    /// joins the namespace for the attempt).
    pub fn can_connect(&self, addr: &str, port: u16) -> bool {
        let path = format!("/run/netns/{}", self.name);
        let addr = format!("{addr}:{port}");
        std::thread::spawn(move || {
            let Ok(file) = std::fs::File::open(&path) else {
                return false;
            };
            // Only this thread enters the namespace (network namespaces are per thread).
            if nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return false;
            }
            let Ok(addr) = addr.parse() else { return false };
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
        })
        .join()
        .unwrap_or(false)
    }

    /// The processes now in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Namespaces of earlier test runs that were killed before they could clean up.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&format!("{PREFIX}-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !crate::alive(pid) {
            let ns = Netns { name };
            drop(ns);
        }
    }
}

/// livekit-server (built by scripts/setup.sh into `.tools/bin`) in a namespace, in dev mode with
/// a key pair of the test's own; killed on drop.
pub struct LiveKitServer {
    pub api_key: String,
    pub api_secret: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl LiveKitServer {
    pub fn start(ns: &Netns) -> LiveKitServer {
        let bin = repo_root().join(".tools/bin/livekit-server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/setup.sh",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        // The namespace is the test's own: these ports are free in it by construction.
        let (port, tcp, udp) = (7880, 7881, 7882);
        let api_key = "APIpagecastTest".to_owned();
        let api_secret = format!(
            "pagecast-test-secret-{}-0123456789abcdef",
            std::process::id()
        );
        let config = format!(
            "port: {port}\n\
             bind_addresses: [\"{addr}\"]\n\
             keys:\n  {api_key}: {api_secret}\n\
             rtc:\n  tcp_port: {tcp}\n  udp_port: {udp}\n  use_external_ip: false\n  node_ip: {addr}\n  \
             enable_loopback_candidate: false\n  interfaces:\n    includes: [v0]\n\
             logging:\n  level: debug\n",
            addr = Netns::ADDR
        );
        let config_path = dir.path().join("livekit.yaml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = ns
            .command(&bin)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start livekit-server");
        let server = LiveKitServer {
            api_key,
            api_secret,
            port,
            dir,
            child,
        };
        wait_until("livekit-server to listen", Duration::from_secs(20), || {
            ns.can_connect(Netns::ADDR, port)
        });
        server
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}:{}", Netns::ADDR, self.port)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

impl Drop for LiveKitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test participant publishes.
#[derive(Debug, Clone)]
pub struct Media {
    pub identity: String,
    /// `RRGGBB`; None publishes no video.
    pub color: Option<String>,
    /// Hz of a sine tone; 0 publishes no audio.
    pub tone: u32,
    /// The camera's size (default 640x360).
    pub size: Option<(u32, u32)>,
    /// `RRGGBB`: also share a screen (1280x720) of this colour.
    pub screen: Option<String>,
    /// Hz of the screen share's own sine tone (a shared tab's audio); 0: none.
    pub screen_tone: u32,
}

/// A participant (tests/support/participant.py) in a room; leaves on drop.
pub struct Participant {
    pub identity: String,
    /// Its published tracks' sids: `video`, `audio`, `screen`, `screen audio`.
    pub tracks: std::collections::HashMap<String, String>,
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl Participant {
    /// Joins `room` and returns once its tracks are published.
    pub fn join(ns: &Netns, server: &LiveKitServer, room: &str, media: Media) -> Participant {
        let root = repo_root();
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup.sh",
            python.display()
        );
        let mut cmd = ns.command(&python);
        cmd.arg(root.join("tests/support/participant.py"))
            .args(["--url", &server.ws_url()])
            .args(["--api-key", &server.api_key])
            .args(["--api-secret", &server.api_secret])
            .args(["--room", room])
            .args(["--identity", &media.identity])
            .args(["--name", &media.identity])
            .args(["--tone", &media.tone.to_string()]);
        match &media.color {
            Some(color) => cmd.args(["--color", color]),
            None => cmd.arg("--no-video"),
        };
        if let Some(screen) = &media.screen {
            cmd.args(["--screen", screen]);
            cmd.args(["--screen-tone", &media.screen_tone.to_string()]);
        }
        if let Some((w, h)) = media.size {
            cmd.args(["--size", &format!("{w}x{h}")]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a participant");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut reader = stdout;
        // The TRACKS line comes just before JOINED: JOINED sends what it said.
        let handle = std::thread::spawn(move || {
            let mut line = String::new();
            let mut tracks = Default::default();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return reader;
                    }
                    Ok(_) if line.trim() == "JOINED" => {
                        let _ = tx.send(Some(std::mem::take(&mut tracks)));
                        return reader;
                    }
                    Ok(_) => {
                        if let Some(json) = line.trim().strip_prefix("TRACKS ") {
                            tracks = serde_json::from_str(json).expect("TRACKS {json}");
                        }
                    }
                }
            }
        });
        let Some(tracks) = rx.recv_timeout(Duration::from_secs(30)).ok().flatten() else {
            let _ = child.kill();
            panic!("participant {} did not join within 30s", media.identity);
        };
        stdout = handle.join().expect("reader thread");
        Participant {
            identity: media.identity,
            tracks,
            child,
            _stdout: stdout,
        }
    }

    /// Leaves the room (SIGTERM: the script disconnects cleanly) and waits for the process.
    pub fn leave(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
