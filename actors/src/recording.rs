//! The recording tree: display, audio and the media subtree (browser, encoder) under one root.
//!
//! ```text
//! recording (rest-for-one)
//! ├── display          Xvfb
//! ├── audio            PulseAudio daemon + sink
//! └── media (one-for-one)
//!     ├── browser      chromedriver + Chromium
//!     ├── live         (with live outputs; `live.rs`) one-for-one:
//!     │   ├── fan-out  the encoder's one live leg, copied to every relay
//!     │   └── relay N  ffmpeg: that stream to one RTMP server (added and removed while recording)
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
//! A warm tree (`late`: `record --warm`) starts display, audio and browser (blank page) before
//! it has a job; the encoder's start waits on the [`LateJob`] (or on the browser's failure, which
//! closes the tree's gate), then runs as above with the job's encoder spec and page
//! ([`Load`]).
//! Stop order (reverse): encoder (file finished first), browser, audio, display.
//! Restarts: a dead display or audio takes the media subtree with it (rest-for-one: the browser
//! and the encoder use them). A dead browser restarts alone and reloads the page while the encoder
//! keeps recording the display: a short gap, not a second file. A dead encoder restarts alone and
//! writes the next segment; when the recording ends, the segments are joined without re-encoding
//! into the one file the user asked for. Past the restart intensity the tree stops in order,
//! keeping what was recorded.
//! Pause: the recording's [`PauseSwitch`] is followed by the encoder (a pause ends its part, a
//! resume starts the next; the parts are joined like restart segments), and `max_duration`
//! counts recorded time through it.
//! Sends: [`StopTree`] to the root when `max_duration` of recorded time has passed since the
//! first frame.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::audio::{AudioActor, AudioInfo, AudioSpec};
use crate::browser::{BrowserActor, BrowserSpec, Load, Navigate, PageOptions, SetLayout};
use crate::display::{DisplayActor, DisplayInfo, DisplaySpec};
use crate::encoder::{EncoderActor, EncoderProgress, EncoderSpec, PauseControl};
use crate::gate::StartGate;
use crate::hls_live::{HlsLiveActor, LiveSpec};
use crate::join::{join_segments, segment_path};
use crate::live::LiveOutputs;
use crate::pause::PauseSwitch;
use crate::secret::{Secret, StreamUrl};
use crate::supervision::{
    ChildSpec, Failure, FailureKind, Intensity, Restart, StopTree, Strategy, Supervisor,
    SupervisorConfig, TreeExit,
};
use crate::warm::LateJob;

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
    /// The page proxy's port, see [`BrowserSpec`](crate::browser::BrowserSpec).
    pub proxy_port: Option<u16>,
    /// `encoder.output` is the file the user asked for; its `relays` are filled in here.
    pub encoder: EncoderSpec,
    /// Live outputs.
    pub streams: Vec<StreamUrl>,
    /// How long a live output keeps reconnecting.
    pub stream_retry_for: Duration,
    /// The live HLS playlist, kept beside the encoder's event playlist (None: off).
    pub hls_live: Option<LiveSpec>,
    pub max_duration: Option<Duration>,
    /// Restart intensity of each supervisor in the tree.
    pub intensity: Intensity,
    /// Wait (at most this long) for the page's START_RECORDING before encoding.
    pub await_start: Option<AwaitStart>,
    /// Values in `url` that must never be logged (a LiveKit token).
    pub secrets: Vec<Secret>,
    /// WebGL, invalid certificates, a login: how the browser shows the page.
    pub page: PageOptions,
    /// Makes the page's address anew at every browser start (a LiveKit token signed now, so a
    /// browser restarted after the first token expired can still join); None: `url` always.
    pub fresh_url: Option<FreshUrl>,
    /// A warm tree (`record --warm`): display, audio and browser start now, on a blank page
    /// (`url`); the encoder's start waits for the job, which brings the page, the encoder's
    /// outputs and the time limit (`encoder` and `max_duration` here are ignored).
    pub late: Option<LateJob>,
}

/// The page's address made at a browser's start, and the secret it carries.
#[derive(Clone)]
pub struct FreshUrl(pub Rc<dyn Fn() -> Result<(url::Url, Secret), Failure>>);

impl std::fmt::Debug for FreshUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FreshUrl")
    }
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
    /// The display's and the audio's actors: a warm tree's encoder start watches them while it
    /// waits (their supervisor cannot restart them then).
    display_actor: Option<Addr<DisplayActor>>,
    audio_actor: Option<Addr<AudioActor>>,
    browser: Option<Addr<BrowserActor>>,
    /// Fired at the first encoded frame.
    first_frame: Option<oneshot::Sender<Instant>>,
    /// The files the encoder wrote, one per start, in order.
    segments: Vec<PathBuf>,
    /// Set when the encoder waits for the page's START_RECORDING.
    gate: Option<StartGate>,
    /// The layout a LiveKit layout page was switched to while recording (see [`LayoutSwitch`]).
    layout: Option<String>,
}

/// Stops a recording; cheap to clone, usable from signal handlers.
#[derive(Clone)]
pub struct Stopper {
    supervisor: Addr<Supervisor>,
    gate: Option<StartGate>,
    late: Option<LateJob>,
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
        if let Some(late) = &self.late {
            late.close(Failure::new(
                FailureKind::Input,
                format!("stopped while warm, before a job came ({cause}): nothing was recorded"),
            ));
        }
        self.supervisor.do_send(StopTree { cause });
    }
}

/// A running recording.
pub struct Recording {
    supervisor: Addr<Supervisor>,
    pause: PauseSwitch,
    gate: Option<StartGate>,
    late: Option<LateJob>,
    exit: oneshot::Receiver<TreeExit>,
    first_frame: Rc<RefCell<Option<Instant>>>,
    wiring: Rc<RefCell<Wiring>>,
    output: Option<PathBuf>,
    id: String,
    framerate: u32,
    lost_streams: Rc<RefCell<Vec<String>>>,
    page_loaded: Rc<Cell<bool>>,
    live: Option<LiveOutputs>,
}

/// Switches the layout of the recording's LiveKit layout page in place (see [`SetLayout`]).
/// A browser restarted later loads the page with the layout switched to.
#[derive(Clone)]
pub struct LayoutSwitch(Rc<RefCell<Wiring>>);

impl LayoutSwitch {
    pub async fn set(&self, layout: &str) -> Result<(), String> {
        let browser = self.0.borrow().browser.clone();
        let browser = browser.ok_or("the browser is not running")?;
        browser
            .send(SetLayout(layout.to_owned()))
            .await
            .map_err(|_| "the browser stopped".to_owned())??;
        self.0.borrow_mut().layout = Some(layout.to_owned());
        Ok(())
    }
}

/// A layout page's address (`…#/<layout>?…`) with another layout; any other address as it is.
fn with_layout(url: &url::Url, layout: &str) -> url::Url {
    let Some(fragment) = url.fragment() else {
        return url.clone();
    };
    let Some(rest) = fragment.strip_prefix('/') else {
        return url.clone();
    };
    let query = rest.find('?').map_or("", |i| &rest[i..]);
    let mut switched = url.clone();
    switched.set_fragment(Some(&format!("/{layout}{query}")));
    switched
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
    /// The page loaded at least once: the recording holds the page, not only a blank screen.
    pub page_loaded: bool,
}

impl Recording {
    /// Starts the tree. `progress` receives the encoder's counters.
    pub fn start(
        mut spec: RecordingSpec,
        progress: Option<Recipient<EncoderProgress>>,
    ) -> Result<Recording, Failure> {
        let lost_streams = Rc::new(RefCell::new(Vec::new()));
        // The encoder sends one live leg, to the fan-out; the relays can change while it runs.
        let live = if spec.streams.is_empty() {
            None
        } else {
            let live = LiveOutputs::new(
                &spec.streams,
                spec.stream_retry_for,
                spec.encoder.output.is_some(),
                lost_streams.clone(),
            )?;
            spec.encoder.relays = vec![live.port()?];
            Some(live)
        };
        let page_loaded = Rc::new(Cell::new(false));
        let (first_tx, first_rx) = oneshot::channel();
        // A warm tree has one too, never opened: its browser closes it when it fails while the
        // encoder's start waits for the job (the supervisor could not restart the browser then).
        let gate = (spec.await_start.is_some() || spec.late.is_some()).then(StartGate::new);
        let pause = PauseSwitch::new();
        let wiring = Rc::new(RefCell::new(Wiring {
            first_frame: Some(first_tx),
            gate: gate.clone(),
            ..Wiring::default()
        }));
        let children = vec![
            display_child(&spec, wiring.clone()),
            audio_child(&spec, wiring.clone()),
            media_child(
                &spec,
                wiring.clone(),
                pause.clone(),
                progress,
                live.clone(),
                page_loaded.clone(),
            ),
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
        let switch = pause.clone();
        let late = spec.late.clone();
        actix::spawn(async move {
            let Ok(at) = first_rx.await else { return };
            *seen.borrow_mut() = Some(at);
            switch.started(at);
            // A warm tree's first frame comes after its job: the job's limit.
            let max_duration = match &late {
                Some(late) => late.get().and_then(|l| l.max_duration),
                None => max_duration,
            };
            if let Some(limit) = max_duration {
                // Recorded time: a pause holds the limit back.
                switch.recorded_for(limit).await;
                sup.do_send(StopTree {
                    cause: format!("max_duration {} reached", humanize(limit)),
                });
            }
        });
        Ok(Recording {
            supervisor,
            pause,
            gate,
            late: spec.late,
            exit,
            first_frame,
            wiring,
            output: spec.encoder.output,
            id: spec.id,
            framerate: spec.encoder.framerate,
            lost_streams,
            page_loaded,
            live,
        })
    }

    /// Switches a LiveKit layout page's layout while recording.
    pub fn layout_switch(&self) -> LayoutSwitch {
        LayoutSwitch(self.wiring.clone())
    }

    /// The live outputs, to add and remove streams while recording (None: it has none).
    pub fn live_outputs(&self) -> Option<LiveOutputs> {
        self.live.clone()
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
            late: self.late.clone(),
        }
    }

    /// The switch that pauses and resumes the recording (see [`PauseSwitch`]).
    pub fn pause_switch(&self) -> PauseSwitch {
        self.pause.clone()
    }

    /// The root supervisor's address.
    pub fn supervisor(&self) -> Addr<Supervisor> {
        self.supervisor.clone()
    }

    /// Resolves when the tree has stopped by itself (a warm tree that gave up while it waited
    /// for its job), with how. After it resolved, [`Recording::finished`] has nothing to wait for:
    /// do not call it.
    pub async fn ended(&mut self) -> TreeExit {
        (&mut self.exit).await.unwrap_or(TreeExit::Stopped {
            cause: "supervisor vanished".into(),
            failures: Vec::new(),
        })
    }

    /// Resolves once every child has stopped and the segments, if several, are joined.
    pub async fn finished(self) -> RecordingReport {
        let exit = self.exit.await.unwrap_or(TreeExit::Stopped {
            cause: "supervisor vanished".into(),
            failures: Vec::new(),
        });
        let first_frame = *self.first_frame.borrow();
        let segments = std::mem::take(&mut self.wiring.borrow_mut().segments);
        // A warm tree's file is its job's.
        let output = match &self.late {
            Some(late) => late.output(),
            None => self.output.clone(),
        };
        let join_error = match &output {
            Some(output) if segments.len() > 1 => {
                join_segments(output, &self.id, &segments, self.framerate)
                    .await
                    .err()
            }
            _ => None,
        };
        let lost_streams = self.lost_streams.borrow().clone();
        RecordingReport {
            exit,
            first_frame,
            segments: segments.len(),
            join_error,
            lost_streams,
            page_loaded: self.page_loaded.get(),
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
                wiring.borrow_mut().display_actor = Some(addr.clone());
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
                wiring.borrow_mut().audio_actor = Some(addr.clone());
                Ok(addr)
            }
        },
    )
}

/// The browser, the live outputs and the encoder: one-for-one, so each restarts without touching
/// the others. The encoder starts last and so stops first: the file is finished, and the relays
/// get the stream's last packets before they stop.
fn media_child(
    spec: &RecordingSpec,
    wiring: Rc<RefCell<Wiring>>,
    pause: PauseSwitch,
    progress: Option<Recipient<EncoderProgress>>,
    live: Option<LiveOutputs>,
    page_loaded: Rc<Cell<bool>>,
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
            let mut children = vec![browser_child(&spec, wiring.clone(), page_loaded.clone())];
            if let Some(live) = &live {
                children.push(live.child(spec.intensity));
            }
            if let Some(live) = &spec.hls_live {
                // Before the encoder, so it stops after it: its last pass sees the closed playlist.
                let live = live.clone();
                children.push(ChildSpec::new(
                    "hls-live",
                    Restart::Permanent,
                    Duration::from_secs(5),
                    move |link| std::future::ready(Ok(HlsLiveActor::start(live.clone(), link))),
                ));
            }
            children.push(encoder_child(
                &spec,
                wiring.clone(),
                pause.clone(),
                progress.clone(),
            ));
            Supervisor::start_linked(config, children, link)
        },
    )
}

fn browser_child(
    spec: &RecordingSpec,
    wiring: Rc<RefCell<Wiring>>,
    page_loaded: Rc<Cell<bool>>,
) -> ChildSpec {
    let browser = BrowserSpec {
        url: spec.url.clone(),
        width: spec.display.width,
        height: spec.display.height,
        work_dir: spec.work_dir.join("browser"),
        chromium: spec.chromium.clone(),
        no_sandbox: spec.no_sandbox,
        host_resolver_rules: spec.host_resolver_rules.clone(),
        proxy_port: spec.proxy_port,
        secrets: spec.secrets.clone(),
        page_loaded: page_loaded.clone(),
        page: spec.page.clone(),
    };
    let awaits_start = spec.await_start.is_some();
    let fresh_url = spec.fresh_url.clone();
    let late = spec.late.clone();
    ChildSpec::new(
        "browser",
        Restart::Permanent,
        Duration::from_secs(10),
        move |link| {
            let (mut browser, wiring) = (browser.clone(), wiring.clone());
            let fresh = fresh_url.as_ref().map(|f| (f.0)());
            // A warm tree's browser shows the job's page once the job came; before, the blank one.
            let job = late.as_ref().map(|l| l.get());
            if let Some(Some(job)) = &job {
                browser.url = job.url.clone();
            }
            async move {
                if let Some(fresh) = fresh {
                    let (url, secret) = fresh?;
                    browser.url = url;
                    browser.secrets.push(secret);
                }
                // A layout switched while recording survives a browser restart.
                if let Some(layout) = wiring.borrow().layout.clone() {
                    browser.url = with_layout(&browser.url, &layout);
                }
                let (display, audio) = started_before(&wiring)?;
                // A restarted browser loads the page at once: its encoder is already recording.
                // So does a page the encoder waits for.
                // (A warm browser restarted before its job has no page to load yet.)
                let restart = link.is_restart() && !matches!(job, Some(None));
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

fn encoder_child(
    spec: &RecordingSpec,
    wiring: Rc<RefCell<Wiring>>,
    pause: PauseSwitch,
    progress: Option<Recipient<EncoderProgress>>,
) -> ChildSpec {
    let encoder = spec.encoder.clone();
    let await_start = spec.await_start.clone();
    let late = spec.late.clone();
    let id = spec.id.clone();
    // The finalize timeout of the encoder plus its SIGINT/SIGKILL steps fit in this.
    ChildSpec::new(
        "encoder",
        Restart::Permanent,
        Duration::from_secs(15),
        move |link| {
            let (mut encoder, wiring, progress, await_start, late, id, pause) = (
                encoder.clone(),
                wiring.clone(),
                progress.clone(),
                await_start.clone(),
                late.clone(),
                id.clone(),
                pause.clone(),
            );
            async move {
                // A warm tree: everything before the encoder is up; the job brings the rest.
                let mut page = None;
                if let Some(late) = &late {
                    if late.get().is_none() {
                        tracing::info!("{}", crate::events::WARM_TREE_READY);
                    }
                    let gate = wiring.borrow().gate.clone().unwrap_or_default();
                    let job = tokio::select! {
                        biased;
                        job = late.wait() => job?,
                        why = gate.closed() => return Err(why),
                        why = lost_while_warm(&wiring) => return Err(why),
                    };
                    encoder = EncoderSpec {
                        width: encoder.width,
                        height: encoder.height,
                        framerate: encoder.framerate,
                        ..job.encoder
                    };
                    page = Some(job.url);
                }
                let control = PauseControl {
                    paused: pause.follow(),
                    next_part: next_part(&encoder.output, &wiring, &id),
                };
                let gate = wiring.borrow().gate.clone();
                if let (Some(gate), Some(wait)) = (gate, await_start) {
                    if gate.is_waiting() {
                        tracing::info!(limit = ?wait.limit, "waiting for the page's START_RECORDING");
                    }
                    // Open at once on a restart: the page started long ago.
                    gate.wait(wait.limit, &wait.missing).await?;
                }
                let (display, audio) = started_before(&wiring)?;
                // Paused (a restart during a pause): the next part begins at the resume.
                if !control.is_paused() {
                    encoder.output = (control.next_part)();
                    if let Some(path) = &encoder.output {
                        let n = wiring.borrow().segments.len() - 1;
                        if n > 0 {
                            tracing::warn!(segment = n, path = %path.display(), "encoder restarted: recording the next segment");
                        }
                    }
                }
                let addr = EncoderActor::start_pausable(
                    &encoder,
                    &display,
                    &audio,
                    progress,
                    Some(control),
                    link,
                )
                .await?;
                let w = &mut *wiring.borrow_mut();
                if let Some(first) = w.first_frame.take() {
                    let _ = first.send(Instant::now());
                }
                // Loads the page if this browser has not yet (it ignores a second Navigate).
                if let Some(browser) = &w.browser {
                    match page {
                        Some(url) => browser.do_send(Load(url)),
                        None => browser.do_send(Navigate),
                    }
                }
                Ok(addr)
            }
        },
    )
}

/// Hands out the files of the recording's parts in order (the requested file, then hidden
/// siblings), each noted for the join; None when the recording has no file.
fn next_part(
    output: &Option<PathBuf>,
    wiring: &Rc<RefCell<Wiring>>,
    id: &str,
) -> Rc<dyn Fn() -> Option<PathBuf>> {
    let (output, wiring, id) = (output.clone(), wiring.clone(), id.to_owned());
    Rc::new(move || {
        let output = output.as_ref()?;
        let mut w = wiring.borrow_mut();
        let path = segment_path(output, &id, w.segments.len());
        w.segments.push(path.clone());
        Some(path)
    })
}

/// How often a warm tree's encoder start looks at the display and the audio while it waits.
const WARM_WATCH_EVERY: Duration = Duration::from_millis(250);

/// Resolves when the display or the audio stopped while a warm tree waits for its job: its
/// supervisor is busy with the encoder's start and cannot restart them, and a job handed to the
/// tree would fail. Ending the start ends the tree, and the pool replaces it.
async fn lost_while_warm(wiring: &Rc<RefCell<Wiring>>) -> Failure {
    let mut every = tokio::time::interval(WARM_WATCH_EVERY);
    loop {
        every.tick().await;
        let w = wiring.borrow();
        let lost = if !w.display_actor.as_ref().is_some_and(Addr::connected) {
            "display"
        } else if !w.audio_actor.as_ref().is_some_and(Addr::connected) {
            "audio"
        } else {
            continue;
        };
        return Failure::crashed(format!("{lost} lost while the warm tree waited for a job"));
    }
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
    fn a_switched_layout_replaces_the_one_in_the_page_address() {
        let page =
            url::Url::parse("http://127.0.0.1:5/index.html#/grid-dark?url=ws%3A%2F%2Fh&token=T")
                .unwrap();
        assert_eq!(
            with_layout(&page, "speaker-light").as_str(),
            "http://127.0.0.1:5/index.html#/speaker-light?url=ws%3A%2F%2Fh&token=T"
        );
        let other = url::Url::parse("https://example.com/page").unwrap();
        assert_eq!(with_layout(&other, "grid-dark"), other);
    }
}
