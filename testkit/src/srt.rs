//! An SRT listener on 127.0.0.1 (Debian's `srt-live-transmit`), receiving what a caller sends to
//! one file per connection ("piece"). Restartable on the same port, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

pub struct SrtListener {
    pub port: u16,
    passphrase: Option<String>,
    dir: tempfile::TempDir,
    pieces: usize,
    child: Option<Child>,
}

/// A UDP port on 127.0.0.1 that nothing is bound to now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free loopback UDP port")
}

impl SrtListener {
    /// Listens on a free loopback port; with `passphrase`, only an encrypted caller that knows
    /// it is accepted.
    pub fn start(passphrase: Option<&str>) -> SrtListener {
        let mut listener = SrtListener {
            port: free_udp_port(),
            passphrase: passphrase.map(str::to_owned),
            dir: tempfile::tempdir().unwrap(),
            pieces: 0,
            child: None,
        };
        listener.run();
        listener
    }

    /// Starts (again) on the same port, receiving into a new piece.
    pub fn run(&mut self) {
        self.pieces += 1;
        let piece = std::fs::File::create(self.piece(self.pieces)).unwrap();
        let mut url = format!("srt://127.0.0.1:{}?mode=listener", self.port);
        if let Some(passphrase) = &self.passphrase {
            url.push_str(&format!("&passphrase={passphrase}"));
        }
        // -a:no: one connection, then it exits (flushing the piece) when the caller closes.
        let child = Command::new("srt-live-transmit")
            .args(["-q", "-a:no"])
            .arg(url)
            .arg("file://con")
            .stdout(piece)
            .stderr(Stdio::null())
            .spawn()
            .expect("start srt-live-transmit (run scripts/setup.sh: srt-tools)");
        self.child = Some(child);
        let port = self.port;
        // Bound: the port cannot be bound again.
        wait_until(
            "srt-live-transmit to listen",
            Duration::from_secs(10),
            || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
        );
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the listener to exit on its own (its caller closed).
    pub fn wait_exit(&mut self, timeout: Duration) {
        if let Some(child) = self.child.as_mut() {
            wait_until("srt-live-transmit to exit", timeout, || {
                child.try_wait().unwrap().is_some()
            });
        }
        self.child = None;
    }

    pub fn url(&self, query: &str) -> String {
        format!("srt://127.0.0.1:{}{query}", self.port)
    }

    /// The file of the `n`th connection (from 1).
    pub fn piece(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("piece-{n}.ts"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SrtListener {
    fn drop(&mut self) {
        self.kill();
    }
}
