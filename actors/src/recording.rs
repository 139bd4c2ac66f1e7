//! The recording tree: display, audio and the media subtree (browser, encoder) under one root.
//!
//! ```text
//! recording (rest-for-one)
//! ├── display          Xvfb
//! ├── audio            PulseAudio daemon + sink
//! └── media (one-for-one)
//!     ├── browser      chromedriver + Chromium
//!     ├── relay N      ffmpeg: the encoder's stream to one RTMP server (one per live output)
//!     └── encoder      ffmpeg
//! ```
//!
//! Owns: the root supervisor of one recording and the wiring between its children (which display
//! and sink later children use, which browser to tell to load the page, which segment file the
//! encoder writes).
//! Start order: display, audio, browser (blank page), encoder; at the encoder's first frame the
//! browser loads the page, so the recording holds the page from its first moment.
//! With a start signal (`await_start`: LiveKit layouts, or pages that opt in) the browser loads
//! the page at once and the encoder's start waits on the [`StartGate`] until the page logs
//! `START_RECORDING`, so the recording begins with the room's media, not an empty page. A page
//! error, END_RECORDING, a dead browser or a stop request close the gate and end the wait; so does
//! the time limit, with an input failure ("nobody joined").
//! Stop order (reverse): encoder (file finished first), browser, audio, display.
//! Restarts: a dead display or audio takes the media subtree with it (rest-for-one: the browser
//! and the encoder use them). A dead browser restarts alone and reloads the page while the encoder
//! keeps recording the display: a short gap, not a second file. A dead encoder restarts alone and
//! writes the next segment; when the recording ends, the segments are joined without re-encoding
//! into the one file the user asked for. Past the restart intensity the tree stops in order,
//! keeping what was recorded.
//! Sends: [`StopTree`] to the root when `max_duration` has passed since the first frame.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::audio::{AudioActor, AudioInfo, AudioSpec};
use crate::browser::{BrowserActor, BrowserSpec, Navigate};
use crate::display::{DisplayActor, DisplayInfo, DisplaySpec};
use crate::encoder::{EncoderActor, EncoderProgress, EncoderSpec};
use crate::gate::StartGate;
use crate::relay::{RelayActor, RelaySpec};
use crate::secret::{Secret, StreamUrl};
use crate::supervision::{
    ChildSpec, Failure, FailureKind, Intensity, Restart, StopTree, Strategy, Supervisor,
    SupervisorConfig, TreeExit,
};

/// Everything one recording needs.
#[derive(Debug, Clone)]
pub struct RecordingSpec {
    /// Unique per recording; names the sink.
    pub id: String,
    /// A directory of this recording's own (pulse runtime, browser profile).
    pub work_dir: PathBuf,
    pub display: DisplaySpec,
    pub url: url::Url,
    pub chromium: PathBuf,
    pub no_sandbox: bool,
    /// Chromium's `--host-resolver-rules`, see [`BrowserSpec`](crate::browser::BrowserSpec).
    pub host_resolver_rules: Option<String>,
    /// `encoder.output` is the file the user asked for; its `relays` are filled in here.
    pub encoder: EncoderSpec,
    /// Live outputs.
    pub streams: Vec<StreamUrl>,
    /// How long a live output keeps reconnecting.
    pub stream_retry_for: Duration,
    pub max_duration: Option<Duration>,
    /// Restart intensity of each supervisor in the tree.
    pub intensity: Intensity,
    /// Wait (at most this long) for the page's START_RECORDING before encoding.
    pub await_start: Option<AwaitStart>,
    /// Values in `url` that must never be logged (a LiveKit token).
    pub secrets: Vec<Secret>,
}

/// How the recording waits for the page's START_RECORDING.
#[derive(Debug, Clone)]
pub struct AwaitStart {
    pub limit: Duration,
    /// The error when the limit passes, e.g. "nobody joined the room": " within 60s" is appended.
    pub missing: String,
}

/// What the children of one tree learn from each other as they start.
#[derive(Default)]
struct Wiring {
    display: Option<DisplayInfo>,
    audio: Option<AudioInfo>,
    browser: Option<Addr<BrowserActor>>,
    /// Fired at the first encoded frame.
    first_frame: Option<oneshot::Sender<Instant>>,
    /// The files the encoder wrote, one per start, in order.
    segments: Vec<PathBuf>,
    /// Set when the encoder waits for the page's START_RECORDING.
    gate: Option<StartGate>,
}

/// Stops a recording; cheap to clone, usable from signal handlers.
#[derive(Clone)]
pub struct Stopper {
    supervisor: Addr<Supervisor>,
    gate: Option<StartGate>,
}

impl Stopper {
    /// Asks the recording to stop in order; `cause` is logged. While the encoder still waits for
    /// the page's start signal, this ends the wait (nothing was recorded).
    pub fn stop(&self, cause: impl Into<String>) {
        let cause = cause.into();
        if let Some(gate) = &self.gate {
            gate.close(Failure::new(
                FailureKind::Input,
                format!("stopped before the page signalled START_RECORDING ({cause}): nothing was recorded"),
            ));
        }
        self.supervisor.do_send(StopTree { cause });
    }
}

/// A running recording.
pub struct Recording {
    supervisor: Addr<Supervisor>,
    gate: Option<StartGate>,
    exit: oneshot::Receiver<TreeExit>,
    first_frame: Rc<RefCell<Option<Instant>>>,
    wiring: Rc<RefCell<Wiring>>,
    output: Option<PathBuf>,
    lost_streams: Rc<RefCell<Vec<String>>>,
}

/// How a recording ended.
#[derive(Debug, Clone)]
pub struct RecordingReport {
    pub exit: TreeExit,
    /// When the first frame was encoded; None if the encoder never ran.
    pub first_frame: Option<Instant>,
    /// How many segments the encoder wrote (more than one after encoder restarts).
    pub segments: usize,
    /// Joining the segments into the output failed: why (the segments are kept).
    pub join_error: Option<Failure>,
    /// Live streams given up during the recording (beside a file that went on), and why.
    pub lost_streams: Vec<String>,
}

impl Recording {
    /// Starts the tree. `progress` receives the encoder's counters.
    pub fn start(
        mut spec: RecordingSpec,
        progress: Option<Recipient<EncoderProgress>>,
    ) -> Result<Recording, Failure> {
        spec.encoder.relays = spec
            .streams
            .iter()
            .map(|_| free_udp_port())
            .collect::<Result<_, _>>()?;
        let lost_streams = Rc::new(RefCell::new(Vec::new()));
        let (first_tx, first_rx) = oneshot::channel();
        let gate = spec.await_start.as_ref().map(|_| StartGate::new());
        let wiring = Rc::new(RefCell::new(Wiring {
            first_frame: Some(first_tx),
            gate: gate.clone(),
            ..Wiring::default()
        }));
        let children = vec![
            display_child(&spec, wiring.clone()),
            audio_child(&spec, wiring.clone()),
            media_child(&spec, wiring.clone(), progress, lost_streams.clone()),
        ];
        let config = SupervisorConfig {
            name: "recording".into(),
            strategy: Strategy::RestForOne,
            intensity: spec.intensity,
        };
        let (supervisor, exit) = Supervisor::start(config, children);
        let first_frame = Rc::new(RefCell::new(None));
        let seen = first_frame.clone();
        let sup = supervisor.clone();
        let max_duration = spec.max_duration;
        actix::spawn(async move {
            let Ok(at) = first_rx.await else { return };
            *seen.borrow_mut() = Some(at);
            if let Some(limit) = max_duration {
                tokio::time::sleep_until((at + limit).into()).await;
                sup.do_send(StopTree {
                    cause: format!("max_duration {} reached", humanize(limit)),
                });
            }
        });
        Ok(Recording {
            supervisor,
            gate,
            exit,
            first_frame,
            wiring,
            output: spec.encoder.output,
            lost_streams,
        })
    }

    /// Asks the recording to stop in order; `cause` is logged.
    pub fn stop(&self, cause: impl Into<String>) {
        self.stopper().stop(cause);
    }

    /// A handle that stops the recording, for signal handlers and the like.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            supervisor: self.supervisor.clone(),
            gate: self.gate.clone(),
        }
    }

    /// The root supervisor's address.
    pub fn supervisor(&self) -> Addr<Supervisor> {
        self.supervisor.clone()
    }

    /// Resolves once every child has stopped and the segments, if several, are joined.
    pub async fn finished(self) -> RecordingReport {
        let exit = self.exit.await.unwrap_or(TreeExit::Stopped {
            cause: "supervisor vanished".into(),
            failures: Vec::new(),
        });
        let first_frame = *self.first_frame.borrow();
        let segments = std::mem::take(&mut self.wiring.borrow_mut().segments);
        let join_error = match &self.output {
            Some(output) if segments.len() > 1 => join_segments(output, &segments).await.err(),
            _ => None,
        };
        let lost_streams = self.lost_streams.borrow().clone();
        RecordingReport {
            exit,
            first_frame,
            segments: segments.len(),
            join_error,
            lost_streams,
        }
    }
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 && secs > 0 {
        format!("{secs}s")
    } else {
        format!("{d:?}")
    }
}

/// Where segment `n` is written: the output itself for the first, a hidden sibling after that
/// (same directory, so the same file system and no copy at the end).
fn segment_path(output: &Path, n: usize) -> PathBuf {
    if n == 0 {
        return output.to_path_buf();
    }
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "recording.mp4".into());
    output.with_file_name(format!(".{name}.part{n}.mp4"))
}

/// Joins the segments into `output` without re-encoding (ffmpeg's concat demuxer). The first
/// segment is `output` itself, so it is moved aside first. Segments without a readable frame (an
/// encoder killed before its first fragment) are skipped. On success the parts are removed; on
/// failure they are kept and named in the error.
async fn join_segments(output: &Path, segments: &[PathBuf]) -> Result<(), Failure> {
    let first = segment_path(output, 0).with_file_name(format!(
        ".{}.part0.mp4",
        output.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut parts = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let path = if i == 0 {
            if segment.exists() {
                std::fs::rename(segment, &first).map_err(|e| {
                    Failure::new(
                        FailureKind::Output,
                        format!("cannot move {} aside: {e}", segment.display()),
                    )
                })?;
            }
            first.clone()
        } else {
            segment.clone()
        };
        if has_video(&path).await {
            parts.push(path);
        } else {
            tracing::warn!(segment = %path.display(), "segment has no readable video, leaving it out");
            let _ = std::fs::remove_file(&path);
        }
    }
    let keep_error = |msg: String| {
        Failure::new(
            FailureKind::Output,
            format!(
                "{msg}; the recording is in {}",
                parts
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    if parts.len() == 1 {
        return std::fs::rename(&parts[0], output)
            .map_err(|e| keep_error(format!("cannot rename: {e}")));
    }
    let list = output.with_file_name(format!(
        ".{}.parts.txt",
        output.file_name().unwrap_or_default().to_string_lossy()
    ));
    let text: String = parts
        .iter()
        .map(|p| {
            format!(
                "file '{}'\n",
                crate::encoder::file_url(p).replace('\'', r"'\''")
            )
        })
        .collect();
    std::fs::write(&list, text)
        .map_err(|e| keep_error(format!("cannot write {}: {e}", list.display())))?;
    tracing::info!(segments = parts.len(), output = %output.display(), "the encoder restarted during the recording; joining its segments");
    let out = crate::process::one_shot("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
        ])
        .arg(&list)
        .args(["-c", "copy", "-movflags", "+faststart", "-y"])
        .arg(crate::encoder::file_url(output))
        .kill_on_drop(true)
        .output()
        .await;
    let _ = std::fs::remove_file(&list);
    match out {
        Ok(out) if out.status.success() => {
            for part in &parts {
                let _ = std::fs::remove_file(part);
            }
            Ok(())
        }
        Ok(out) => Err(keep_error(format!(
            "joining the segments failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) => Err(keep_error(format!(
            "cannot run ffmpeg to join the segments: {e}"
        ))),
    }
}

/// Whether the segment holds at least one video frame. A segment whose encoder was killed before
/// its first fragment has a video track but no frame, and would spoil the join.
async fn has_video(path: &Path) -> bool {
    let out = crate::process::one_shot("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(crate::encoder::file_url(path))
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .trim()
            .trim_end_matches(',')
            .parse::<u64>()
            .is_ok_and(|n| n > 0),
        _ => false,
    }
}

fn display_child(spec: &RecordingSpec, wiring: Rc<RefCell<Wiring>>) -> ChildSpec {
    let display = spec.display;
    ChildSpec::new(
        "display",
        Restart::Permanent,
        Duration::from_secs(5),
        move |link| {
            let wiring = wiring.clone();
            async move {
                let (addr, info) = DisplayActor::start(display, link).await?;
                wiring.borrow_mut().display = Some(info);
                Ok(addr)
            }
        },
    )
}

fn audio_child(spec: &RecordingSpec, wiring: Rc<RefCell<Wiring>>) -> ChildSpec {
    let audio = AudioSpec {
        runtime_dir: spec.work_dir.join("pulse"),
        sink: format!("pagecast_{}", spec.id),
        sample_rate: spec.encoder.audio_frequency,
    };
    ChildSpec::new(
        "audio",
        Restart::Permanent,
        Duration::from_secs(5),
        move |link| {
            let (audio, wiring) = (audio.clone(), wiring.clone());
            async move {
                let (addr, info) = AudioActor::start(audio, link).await?;
                wiring.borrow_mut().audio = Some(info);
                Ok(addr)
            }
        },
    )
}

/// A UDP port on loopback that nothing uses now.
fn free_udp_port() -> Result<u16, Failure> {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::crashed(format!("no free loopback UDP port: {e}")))
}

/// The browser, the relays and the encoder: one-for-one, so each restarts without touching the
/// others. The encoder starts last and so stops first: the file is finished, and the relays get
/// the stream's last packets before they stop.
fn media_child(
    spec: &RecordingSpec,
    wiring: Rc<RefCell<Wiring>>,
    progress: Option<Recipient<EncoderProgress>>,
    lost_streams: Rc<RefCell<Vec<String>>>,
) -> ChildSpec {
    let spec = spec.clone();
    // Both children's timeouts fit in this.
    ChildSpec::new(
        "media",
        Restart::Permanent,
        Duration::from_secs(30),
        move |link| {
            let config = SupervisorConfig {
                name: "media".into(),
                strategy: Strategy::OneForOne,
                intensity: spec.intensity,
            };
            let mut children = vec![browser_child(&spec, wiring.clone())];
            for (url, port) in spec.streams.iter().zip(&spec.encoder.relays) {
                let relay = RelaySpec {
                    url: url.clone(),
                    port: *port,
                    retry_for: spec.stream_retry_for,
                    only_output: spec.encoder.output.is_none(),
                    lost: lost_streams.clone(),
                };
                children.push(relay_child(relay));
            }
            children.push(encoder_child(&spec, wiring.clone(), progress.clone()));
            Supervisor::start_linked(config, children, link)
        },
    )
}

fn browser_child(spec: &RecordingSpec, wiring: Rc<RefCell<Wiring>>) -> ChildSpec {
    let browser = BrowserSpec {
        url: spec.url.clone(),
        width: spec.display.width,
        height: spec.display.height,
        work_dir: spec.work_dir.join("browser"),
        chromium: spec.chromium.clone(),
        no_sandbox: spec.no_sandbox,
        host_resolver_rules: spec.host_resolver_rules.clone(),
        secrets: spec.secrets.clone(),
    };
    let awaits_start = spec.await_start.is_some();
    ChildSpec::new(
        "browser",
        Restart::Permanent,
        Duration::from_secs(10),
        move |link| {
            let (browser, wiring) = (browser.clone(), wiring.clone());
            async move {
                let (display, audio) = started_before(&wiring)?;
                // A restarted browser loads the page at once: its encoder is already recording.
                // So does a page the encoder waits for.
                let restart = link.is_restart();
                if restart {
                    tracing::warn!("browser restarted: reloading the page");
                }
                let gate = wiring.borrow().gate.clone();
                let addr = BrowserActor::start(
                    &browser,
                    &display,
                    &audio,
                    restart || awaits_start,
                    gate,
                    link,
                )
                .await?;
                wiring.borrow_mut().browser = Some(addr.clone());
                Ok(addr)
            }
        },
    )
}

fn relay_child(relay: RelaySpec) -> ChildSpec {
    // Transient: a relay that gave up beside a file stops normally and stays stopped.
    ChildSpec::new(
        "relay",
        Restart::Transient,
        Duration::from_secs(5),
        move |link| std::future::ready(RelayActor::start(relay.clone(), link)),
    )
}

fn encoder_child(
    spec: &RecordingSpec,
    wiring: Rc<RefCell<Wiring>>,
    progress: Option<Recipient<EncoderProgress>>,
) -> ChildSpec {
    let encoder = spec.encoder.clone();
    let await_start = spec.await_start.clone();
    // The finalize timeout of the encoder plus its SIGINT/SIGKILL steps fit in this.
    ChildSpec::new(
        "encoder",
        Restart::Permanent,
        Duration::from_secs(15),
        move |link| {
            let (mut encoder, wiring, progress, await_start) = (
                encoder.clone(),
                wiring.clone(),
                progress.clone(),
                await_start.clone(),
            );
            async move {
                let gate = wiring.borrow().gate.clone();
                if let (Some(gate), Some(wait)) = (gate, await_start) {
                    if gate.is_waiting() {
                        tracing::info!(limit = ?wait.limit, "waiting for the page's START_RECORDING");
                    }
                    // Open at once on a restart: the page started long ago.
                    gate.wait(wait.limit, &wait.missing).await?;
                }
                let (display, audio) = started_before(&wiring)?;
                if let Some(output) = &encoder.output {
                    let mut w = wiring.borrow_mut();
                    let n = w.segments.len();
                    let path = segment_path(output, n);
                    w.segments.push(path.clone());
                    if n > 0 {
                        tracing::warn!(segment = n, path = %path.display(), "encoder restarted: recording the next segment");
                    }
                    encoder.output = Some(path);
                }
                let addr = EncoderActor::start(&encoder, &display, &audio, progress, link).await?;
                let w = &mut *wiring.borrow_mut();
                if let Some(first) = w.first_frame.take() {
                    let _ = first.send(Instant::now());
                }
                // Loads the page if this browser has not yet (it ignores a second Navigate).
                if let Some(browser) = &w.browser {
                    browser.do_send(Navigate);
                }
                Ok(addr)
            }
        },
    )
}

fn started_before(wiring: &Rc<RefCell<Wiring>>) -> Result<(DisplayInfo, AudioInfo), Failure> {
    let w = wiring.borrow();
    match (&w.display, &w.audio) {
        (Some(d), Some(a)) => Ok((*d, a.clone())),
        _ => Err(Failure::crashed(
            "started before the display and audio were up",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_after_the_first_are_hidden_siblings() {
        let out = Path::new("/out/rec.mp4");
        assert_eq!(segment_path(out, 0), Path::new("/out/rec.mp4"));
        assert_eq!(segment_path(out, 2), Path::new("/out/.rec.mp4.part2.mp4"));
    }
}
