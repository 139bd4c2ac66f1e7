//! RelayActor: one live stream (RTMP, RTMPS or SRT) fed by the recording's single encode.
//!
//! Owns: an ffmpeg process (own process group, dies with the actor) that reads the encoder's
//! MPEG-TS stream from the relay's loopback UDP socket ([`RelayInput`], bound by pagecast and
//! handed to ffmpeg as fd 3) and sends it on without re-encoding: remuxed to FLV over RTMP, or as
//! it is (MPEG-TS) over SRT, pagecast the caller.
//! Everything it prints is redacted: the stream key, the SRT passphrase and stream id never reach
//! a log line or an error, nor a command line (RTMP: the key proxy; SRT: they are handed to
//! ffmpeg as a preset read from its stdin, see [`SrtTarget`]).
//! Reconnects: when the server drops the stream or restarts, the relay starts a new ffmpeg with
//! backoff (0.25 s doubling to 2 s), so it is back within seconds of the server, while the encoder
//! and the file are untouched. A server that refuses the very first connection (a wrong app, key,
//! passphrase or port) is an `Output` failure at once: retrying cannot fix it.
//! Accepts: [`Shutdown`] (RTMP: `q`, the FLV stream ends cleanly; SRT: SIGTERM, which ffmpeg
//! handles the same way), [`Kill`].
//! Sends: [`ChildExited`](crate::supervision::ChildExited) through its link when it gives up
//! (the server stayed away longer than `retry_for`, or refused the first connection), or when it
//! stopped. A relay that gives up beside a file output stops normally: the recording goes on, and
//! the lost stream is reported at the end; first it calls its owner's [`OnGiveUp`], which stops
//! sending it the stream.
//! Stops: on `Shutdown`, or on giving up.

use std::io::{self, ErrorKind};
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::backoff::Backoff;
use nix::sys::signal::Signal;

use crate::key_proxy::KeyProxy;
use crate::process::{ChildProcess, Stdout};
use crate::secret::StreamUrl;
use crate::supervision::{ChildLink, ExitReason, Failure, FailureKind, Kill, Shutdown};

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const STOP_GRACE: Duration = Duration::from_secs(3);
/// ffmpeg's `-rw_timeout` for the RTMP connection, in microseconds (10 s).
const RW_TIMEOUT_US: &str = "10000000";
/// How long a relay told to stop (`q`) may take to send what is still queued before SIGTERM.
const DRAIN: Duration = Duration::from_millis(500);
/// How long a first SIGTERM may take before the second one that interrupts a blocked read.
const SECOND_SIGNAL_AFTER: Duration = Duration::from_millis(200);
/// The file descriptor the relay's ffmpeg reads its input from (`-i pipe:3`).
const INPUT_FD: RawFd = 3;
/// The input socket's read timeout, which ffmpeg's reads share (one socket): a read on a quiet
/// input returns after this long (ffmpeg reads again), so a signal is seen between reads.
/// Measured: without it a quiet input held ffmpeg through both SIGTERMs until it was killed;
/// with it, it stops as ffmpeg's own `udp://` input did.
const QUIET_READ: Duration = Duration::from_millis(200);

/// A relay's loopback UDP socket: bound by pagecast when the live output is made, held for the
/// relay's whole life and handed to each of its ffmpegs (fd 3), so the port the fan-out sends to
/// is never free while it does. A port ffmpeg bound itself was free between being chosen and
/// being bound, and again whenever ffmpeg was not running: any process could have taken it, and
/// with it the stream.
#[derive(Debug, Clone)]
pub struct RelayInput {
    socket: Arc<UdpSocket>,
    port: u16,
}

impl RelayInput {
    /// A new socket on a free loopback port.
    pub fn bind() -> io::Result<RelayInput> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(QUIET_READ))?;
        let port = socket.local_addr()?.port();
        Ok(RelayInput {
            socket: Arc::new(socket),
            port,
        })
    }

    /// The loopback port the fan-out sends this relay's stream to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Throws away what arrived while no ffmpeg read (between a lost connection and the next),
    /// so the next one starts from the live stream, not from a second of old packets. Only
    /// while no ffmpeg of this relay runs: the socket's non-blocking flag is theirs too.
    fn drain(&self) {
        if self.socket.set_nonblocking(true).is_err() {
            return;
        }
        let mut buf = [0u8; 2048];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = self.socket.set_nonblocking(false);
    }
}

/// One live output.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    pub url: StreamUrl,
    /// The loopback UDP socket the encoder's stream arrives on (through the fan-out).
    pub input: RelayInput,
    /// How long to keep reconnecting once the server is gone.
    pub retry_for: Duration,
    /// Whether the recording has nothing else (no file): then giving up fails the recording.
    pub only_output: bool,
    /// Where a stream that was given up is reported (to the recording's owner).
    pub lost: tokio::sync::mpsc::UnboundedSender<String>,
    /// Added while the recording ran (`live.rs`): giving up on it never fails the recording,
    /// which went on without it until then.
    pub added: bool,
    /// Called when the relay gives up beside a file, before it stops for good.
    pub on_give_up: Option<OnGiveUp>,
}

/// What a relay's owner does when the relay gives up for good (it will not be restarted): stop
/// sending it the stream, forget it.
#[derive(Clone)]
pub struct OnGiveUp(pub Rc<dyn Fn()>);

impl std::fmt::Debug for OnGiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnGiveUp")
    }
}

pub struct RelayActor {
    link: ChildLink,
    spec: RelaySpec,
    /// Keeps the stream key out of ffmpeg's command line (None: no key to hide, or SRT).
    proxy: Option<KeyProxy>,
    /// The SRT URL taken apart (None: RTMP).
    srt: Option<SrtTarget>,
    ffmpeg: Option<ChildProcess>,
    /// The stream reached the server at least once.
    connected_once: bool,
    /// Frames sent by the current ffmpeg.
    streaming: bool,
    /// Since when the stream has been down (None while it is up).
    down_since: Option<Instant>,
    backoff: Backoff,
    stopping: bool,
}

/// Where a relay's ffmpeg sends the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Target<'a> {
    /// FLV over RTMP to `url` (the key proxy's loopback URL, or the stream URL itself when there
    /// is no key to hide), with `tc_url` as the RTMP `tcUrl`.
    Rtmp {
        url: &'a str,
        tc_url: Option<&'a str>,
    },
    /// MPEG-TS over SRT.
    Srt(&'a SrtTarget),
}

/// An SRT URL taken apart: what may be on ffmpeg's command line, and what may not.
#[derive(Debug, Clone, PartialEq)]
pub struct SrtTarget {
    /// `srt://host:port?…` without the passphrase and the stream id.
    pub url: String,
    /// `(option, value)`: the passphrase and the stream id (which may carry a key), decoded.
    pub secret_options: Vec<(String, String)>,
}

/// SRT options that are secrets: libsrt's passphrase, and the stream id, which ingest services
/// use to carry a stream key (`#!::r=live/<key>`).
const SRT_SECRET_OPTIONS: [&str; 2] = ["passphrase", "streamid"];

impl SrtTarget {
    /// Takes `url` (validated with the config: `srt://host:port?…`) apart.
    pub fn new(url: &StreamUrl) -> SrtTarget {
        let raw = url.expose();
        let Ok(mut parsed) = url::Url::parse(raw) else {
            return SrtTarget {
                url: raw.to_owned(),
                secret_options: Vec::new(),
            };
        };
        let (secret, public): (Vec<_>, Vec<_>) = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .partition(|(k, _)| SRT_SECRET_OPTIONS.contains(&k.as_str()));
        if public.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(public);
        }
        SrtTarget {
            url: parsed.to_string(),
            secret_options: secret,
        }
    }

    /// The preset ffmpeg reads (`-fpre`): one `option=value` line each. None without secrets.
    fn preset(&self) -> Option<String> {
        if self.secret_options.is_empty() {
            return None;
        }
        Some(
            self.secret_options
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect(),
        )
    }
}

/// ffmpeg's arguments for one relay, streaming to `target`.
pub fn relay_args(target: &Target) -> Vec<String> {
    let mut args = crate::process::ffmpeg_prologue("1");
    args.extend(
        [
            // A keyframe (with the codec headers) comes every 2 s: probing a little longer than
            // that is enough, and ffmpeg's default of 5 s would delay every (re)connection.
            "-analyzeduration",
            "2500000",
            "-f",
            "mpegts",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    // The relay's socket, inherited (RelayInput): each read takes one datagram, in order.
    args.push("-i".into());
    args.push(format!("pipe:{INPUT_FD}"));
    args.extend(["-map", "0", "-c", "copy"].iter().map(|s| s.to_string()));
    match target {
        Target::Rtmp { url, tc_url } => {
            args.extend(
                ["-f", "flv", "-flvflags", "no_duration_filesize"]
                    .iter()
                    .map(|s| s.to_string()),
            );
            if let Some(tc_url) = tc_url {
                args.push("-rtmp_tcurl".into());
                args.push((*tc_url).to_owned());
            }
            // A server that takes the connection and then answers nothing (or stops reading)
            // would hold ffmpeg forever, silently: after this long on one read or write it
            // fails, and the relay reconnects as for any drop.
            args.push("-rw_timeout".into());
            args.push(RW_TIMEOUT_US.into());
            args.push((*url).to_owned());
        }
        Target::Srt(srt) => {
            args.extend(["-f".to_owned(), "mpegts".to_owned()]);
            if srt.preset().is_some() {
                // ffmpeg 5.1 can read no option value from a file but a preset's: the output's
                // protocol options (libsrt's passphrase and streamid), here from its stdin,
                // written and closed by the relay at once. /proc/<pid>/cmdline is readable by
                // every user of the machine; stdin is not.
                args.extend(["-fpre".to_owned(), "/dev/stdin".to_owned()]);
            }
            args.push(srt.url.clone());
        }
    }
    args
}

impl RelayActor {
    /// Starts the relay; it connects once the encoder's stream arrives.
    pub fn start(spec: RelaySpec, link: ChildLink) -> Result<Addr<RelayActor>, Failure> {
        let srt = spec
            .url
            .expose()
            .starts_with("srt://")
            .then(|| SrtTarget::new(&spec.url));
        let proxy = KeyProxy::start(&spec.url).map_err(|e| {
            Failure::crashed(format!(
                "live stream to {}: cannot listen on 127.0.0.1 for the key proxy: {e}",
                spec.url
            ))
        })?;
        let mut actor = RelayActor {
            link,
            proxy,
            srt,
            spec,
            ffmpeg: None,
            connected_once: false,
            streaming: false,
            down_since: None,
            backoff: Backoff::new(BACKOFF_FIRST, BACKOFF_MAX),
            stopping: false,
        };
        let first = actor.spawn_ffmpeg()?;
        Ok(RelayActor::create(|ctx| {
            actor.watch(first, ctx);
            actor
        }))
    }

    /// Secrets to redact from what ffmpeg prints: the URL and its key (RTMP), or its passphrase
    /// and stream id (SRT).
    fn secrets(&self) -> Vec<String> {
        let raw = self.spec.url.expose().to_owned();
        let mut secrets = match &self.srt {
            Some(srt) => srt.secret_options.iter().map(|(_, v)| v.clone()).collect(),
            None => vec![raw.rsplit('/').next().unwrap_or_default().to_owned()],
        };
        secrets.retain(|s| s.len() >= 3);
        secrets.insert(0, raw);
        secrets
    }

    fn spawn_ffmpeg(&mut self) -> Result<(ChildProcess, tokio::process::ChildStdout), Failure> {
        let target = match (&self.srt, &self.proxy) {
            (Some(srt), _) => Target::Srt(srt),
            (None, Some(proxy)) => Target::Rtmp {
                url: proxy.local_url(),
                tc_url: Some(proxy.tc_url()),
            },
            (None, None) => Target::Rtmp {
                url: self.spec.url.expose(),
                tc_url: None,
            },
        };
        let preset = self.srt.as_ref().and_then(SrtTarget::preset);
        let mut cmd = Command::new("ffmpeg");
        cmd.args(relay_args(&target));
        self.spec.input.drain();
        let fd = self.spec.input.socket.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec. dup2 leaves
        // the copy without close-on-exec; fcntl clears it when the socket already is fd 3.
        unsafe {
            cmd.pre_exec(move || {
                if fd != INPUT_FD && nix::libc::dup2(fd, INPUT_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if nix::libc::fcntl(INPUT_FD, nix::libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (mut ffmpeg, stdout) = ChildProcess::spawn_redacting(
            "ffmpeg (relay)",
            cmd,
            true,
            Stdout::Capture,
            self.secrets(),
        )
        .map_err(|e| e.into_failure())?;
        if let (Some(preset), Some(mut stdin)) = (preset, ffmpeg.take_stdin()) {
            // A few hundred bytes: the pipe takes them at once. Dropping stdin then ends the
            // preset (ffmpeg reads it to its end before it opens the output).
            tokio::spawn(async move {
                let _ = stdin.write_all(preset.as_bytes()).await;
            });
        }
        Ok((ffmpeg, stdout.expect("captured")))
    }

    /// Follows a new ffmpeg: its progress (is it streaming?) and its exit.
    fn watch(
        &mut self,
        (ffmpeg, stdout): (ChildProcess, tokio::process::ChildStdout),
        ctx: &mut Context<Self>,
    ) {
        let report = ffmpeg.exit_report();
        self.ffmpeg = Some(ffmpeg);
        self.streaming = false;
        let frames =
            futures_util::stream::unfold(BufReader::new(stdout).lines(), |mut lines| async move {
                loop {
                    let line = lines.next_line().await.ok()??;
                    if let Some(n) = line.strip_prefix("frame=") {
                        return Some((n.trim().parse::<u64>().unwrap_or(0), lines));
                    }
                }
            });
        ctx.add_stream(frames);
        ctx.spawn(
            actix::fut::wrap_future(report).map(|(_, report), act: &mut Self, ctx| {
                act.on_exit(report, ctx);
            }),
        );
    }

    fn on_exit(&mut self, report: String, ctx: &mut Context<Self>) {
        self.ffmpeg = None;
        // ffmpeg only saw the proxy close; why is the proxy's to tell.
        let report = match self.proxy.as_ref().and_then(KeyProxy::take_error) {
            Some(upstream) => format!("{report} (server: {upstream})"),
            None => report,
        };
        if self.stopping {
            return;
        }
        let shown = self.spec.url.to_string();
        // A network-level failure is transient: the server was reachable a moment ago (the
        // preflight checked). A server that answered and refused the stream is not.
        let transient = [
            "Connection refused",
            "Connection timed out",
            "Connection reset",
            "No route to host",
        ]
        .iter()
        .any(|e| report.contains(e));
        if !self.connected_once && !transient {
            // The very first connection was refused: a wrong app, key or protocol. Retrying won't help.
            let failure = Failure::new(
                FailureKind::Output,
                format!("live stream to {shown} failed: {report}"),
            );
            return self.give_up(failure, ctx);
        }
        let down_since = *self.down_since.get_or_insert_with(Instant::now);
        if down_since.elapsed() > self.spec.retry_for {
            let failure = Failure::new(
                FailureKind::Output,
                format!(
                    "live stream to {shown} lost: the server did not come back within {:?} ({report})",
                    self.spec.retry_for
                ),
            );
            return self.give_up(failure, ctx);
        }
        let wait = self.backoff.next_delay();
        tracing::warn!(url = %shown, retry_in = ?wait, error = %report, message = crate::events::LIVE_STREAM_DROPPED);
        ctx.run_later(wait, |act, ctx| {
            if act.stopping {
                return;
            }
            match act.spawn_ffmpeg() {
                Ok(started) => act.watch(started, ctx),
                Err(failure) => act.give_up(failure, ctx),
            }
        });
    }

    fn give_up(&mut self, failure: Failure, ctx: &mut Context<Self>) {
        tracing::error!(error = %failure, "giving up on a live stream");
        self.stopping = true;
        // Refused or unreachable from the start is a configuration error: fail the recording.
        if !self.spec.added && (self.spec.only_output || !self.connected_once) {
            self.link.set_exit(ExitReason::Failed(failure));
        } else {
            // The file goes on; the lost stream is reported when the recording ends.
            if let Some(on_give_up) = &self.spec.on_give_up {
                (on_give_up.0)();
            }
            let _ = self.spec.lost.send(failure.message);
            self.link.set_exit(ExitReason::Normal);
        }
        ctx.stop();
    }
}

impl StreamHandler<u64> for RelayActor {
    fn handle(&mut self, frames: u64, _: &mut Context<Self>) {
        if frames > 0 && !self.streaming {
            self.streaming = true;
            self.connected_once = true;
            self.down_since = None;
            self.backoff.reset();
            tracing::info!(url = %self.spec.url, message = crate::events::LIVE_STREAM_CONNECTED);
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // stdout ends with the process; its exit is handled by the watcher.
    }
}

impl Actor for RelayActor {
    type Context = Context<Self>;
}

impl Handler<Shutdown> for RelayActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        self.link.set_exit(ExitReason::Shutdown);
        let Some(mut ffmpeg) = self.ffmpeg.take() else {
            return Box::pin(actix::fut::ready(Ok(())));
        };
        // SRT's stdin was its preset (already closed): SIGTERM ends it as cleanly as `q`.
        let stdin = ffmpeg.take_stdin();
        let stop = async move {
            // `q` ends the stream properly once the packets still queued on the UDP input are
            // out. ffmpeg looks at it, and at a first SIGTERM, only between packets: when none
            // comes (the encoder has stopped) it waits on its UDP input, which only a second
            // signal interrupts (measured: it sat there until the grace ran out and was killed,
            // 3 s added to every stop with a live output).
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(b"q").await;
                let _ = stdin.flush().await;
                let _ = tokio::time::timeout(DRAIN, ffmpeg.exited()).await;
            }
            if ffmpeg.status().is_none() {
                ffmpeg.signal(Signal::SIGTERM);
                let _ = tokio::time::timeout(SECOND_SIGNAL_AFTER, ffmpeg.exited()).await;
            }
            // The second SIGTERM (if it still runs), SIGKILL after the grace; reaps the group.
            ffmpeg.terminate(STOP_GRACE).await;
            drop(ffmpeg);
        };
        Box::pin(
            actix::fut::wrap_future(stop).map(|(), _, ctx: &mut Context<Self>| {
                ctx.stop();
                Ok(())
            }),
        )
    }
}

impl Handler<Kill> for RelayActor {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.stopping = true;
        self.link.set_exit(ExitReason::Shutdown);
        self.ffmpeg = None; // dropping it kills its group
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_copies_the_stream_to_flv() {
        let args = relay_args(&Target::Rtmp {
            url: "rtmp://127.0.0.1:1935/live/key",
            tc_url: None,
        });
        // The input is the relay's own socket, inherited: no port of ffmpeg's to take.
        assert!(args.windows(2).any(|w| w == ["-i", "pipe:3"]), "{args:?}");
        assert_eq!(args.last().unwrap(), "rtmp://127.0.0.1:1935/live/key");
        let timeout = args.iter().position(|a| a == "-rw_timeout").unwrap();
        assert_eq!(args[timeout + 1], "10000000");
        assert!(!args.contains(&"-rtmp_tcurl".to_owned()));
        let args = relay_args(&Target::Rtmp {
            url: "rtmp://127.0.0.1:4000/live/Xq7",
            tc_url: Some("rtmp://live.example.com:1935/live"),
        });
        assert_eq!(
            args[args.len() - 5..],
            [
                "-rtmp_tcurl",
                "rtmp://live.example.com:1935/live",
                "-rw_timeout",
                "10000000",
                "rtmp://127.0.0.1:4000/live/Xq7"
            ]
        );
        assert!(args.windows(2).any(|w| w == ["-c", "copy"]));
        assert!(args.windows(2).any(|w| w == ["-f", "flv"]));
    }

    #[test]
    fn srt_secrets_go_to_the_preset_not_the_command_line() {
        let url = StreamUrl::new(
            "srt://127.0.0.1:9000?mode=caller&passphrase=s3cr3t%26pass&latency=200000&streamid=%23!%3A%3Ar%3Dlive%2Fkey42",
        );
        let srt = SrtTarget::new(&url);
        assert_eq!(srt.url, "srt://127.0.0.1:9000?mode=caller&latency=200000");
        assert_eq!(
            srt.preset().as_deref(),
            Some("passphrase=s3cr3t&pass\nstreamid=#!::r=live/key42\n")
        );
        let args = relay_args(&Target::Srt(&srt));
        assert!(!args.join(" ").contains("s3cr3t") && !args.join(" ").contains("key42"));
        assert_eq!(
            args[args.len() - 5..],
            [
                "-f",
                "mpegts",
                "-fpre",
                "/dev/stdin",
                "srt://127.0.0.1:9000?mode=caller&latency=200000"
            ]
        );
        // Without secrets there is no preset, and the URL is left as it is.
        let plain = SrtTarget::new(&StreamUrl::new("srt://127.0.0.1:9000"));
        assert_eq!(plain.preset(), None);
        let args = relay_args(&Target::Srt(&plain));
        assert!(!args.contains(&"-fpre".to_owned()));
        assert_eq!(args.last().unwrap(), "srt://127.0.0.1:9000");
    }
}
