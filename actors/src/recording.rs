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
//! Owns: the root supervisor of one recording, and the channels between the recording's owner and
//! its children.
//! Wiring: siblings never share a cell. The display, the audio and the browser publish what the
//! children after them use (their address, the display and the sink); their supervisor hands it to
//! each later child at its start (`ChildLink::wired`, see `supervision.rs`), so a restarted
//! encoder gets the browser running now, and a new display restarts everything after it with it.
//! What goes to the owner travels on one-way channels the children only write: the first frame,
//! each part's file (for the join), the browser's address (to switch the layout), the page's load,
//! each live stream given up.
//! What the owner decides travels the other way, read by the children: the pause, the layout, a
//! warm tree's job.
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

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

use crate::audio::{AudioActor, AudioInfo, AudioSpec};
use crate::browser::{BrowserActor, BrowserSpec, Load, Navigate, PageOptions, SetLayout};
use crate::display::{DisplayActor, DisplayInfo, DisplaySpec};
use crate::encoder::{EncoderActor, EncoderProgress, EncoderReports, EncoderSpec, PauseControl};
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

/// The children's names, by which the children after them ask their supervisor for what they
/// published.
const DISPLAY: &str = "display";
const AUDIO: &str = "audio";
const BROWSER: &str = "browser";

/// What the display publishes: its actor (a warm tree's encoder start watches it while it waits:
/// its supervisor cannot restart it then) and the display the later children use.
type DisplayUp = (Addr<DisplayActor>, DisplayInfo);
/// What the audio publishes, as the display.
type AudioUp = (Addr<AudioActor>, AudioInfo);

/// What the recording's children tell its owner, each on a channel of its own; cheap to clone.
#[derive(Clone)]
struct Reports {
    /// The first encoded frame: set at the first report, then only moved earlier (see
    /// [`EncoderReports`]).
    first_frame: watch::Sender<Option<Instant>>,
    /// The browser running now, at each (re)start: where a layout switch goes.
    browser: watch::Sender<Option<Addr<BrowserActor>>>,
    /// The page loaded at least once (see [`BrowserSpec`]'s `page_loaded`).
    page_loaded: watch::Sender<bool>,
}

/// The files of the recording's parts (the requested file, then hidden siblings), handed out in
/// order to the encoder (at each start and at each resume) and each reported to the owner for the
/// join.
struct Parts {
    id: String,
    handed: Cell<usize>,
    report: mpsc::UnboundedSender<PathBuf>,
}

impl Parts {
    /// The next part's file of `output` (a warm tree's comes with its job); None when the
    /// recording has no file.
    fn next(&self, output: Option<&PathBuf>) -> Option<PathBuf> {
        let output = output?;
        let path = segment_path(output, &self.id, self.handed.get());
        self.handed.set(self.handed.get() + 1);
        let _ = self.report.send(path.clone());
        Some(path)
    }
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
    first_frame: watch::Receiver<Option<Instant>>,
    /// The files the encoder wrote, one per part, in order.
    parts: mpsc::UnboundedReceiver<PathBuf>,
    layout: LayoutSwitch,
    output: Option<PathBuf>,
    id: String,
    framerate: u32,
    /// Live streams given up, as their relays report them.
    lost_streams: mpsc::UnboundedReceiver<String>,
    page_loaded: watch::Receiver<bool>,
    live: Option<LiveOutputs>,
}

/// How long a layout switch waits for a browser that is not up yet.
pub const LAYOUT_WAIT: Duration = Duration::from_secs(60);

/// Switches the layout of the recording's LiveKit layout page in place (see [`SetLayout`]).
/// A browser restarted later loads the page with the layout switched to.
#[derive(Clone)]
pub struct LayoutSwitch {
    /// The browser running now, as its start reports it.
    browser: watch::Receiver<Option<Addr<BrowserActor>>>,
    /// The layout switched to, read by every browser start.
    layout: watch::Sender<Option<String>>,
}

impl LayoutSwitch {
    /// Switches to `layout`, waiting for the browser if it is not up yet (a switch asked as a
    /// recording starts, or while its browser restarts), for [`LAYOUT_WAIT`] at most.
    pub async fn set(&self, layout: &str) -> Result<(), String> {
        let mut browser = self.browser.clone();
        let up = tokio::time::timeout(LAYOUT_WAIT, browser.wait_for(Option::is_some)).await;
        let browser = match up {
            Ok(Ok(up)) => up.clone(),
            Ok(Err(_)) => return Err("the recording has ended".to_owned()),
            Err(_) => return Err(format!("the browser was not up within {LAYOUT_WAIT:?}")),
        };
        let browser = browser.ok_or("the browser is not running")?;
        browser
            .send(SetLayout(layout.to_owned()))
            .await
            .map_err(|_| "the browser stopped".to_owned())??;
        self.layout.send_replace(Some(layout.to_owned()));
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
        let (lost_tx, lost_streams) = mpsc::unbounded_channel();
        // The encoder sends one live leg, to the fan-out; the relays can change while it runs.
        let live = if spec.streams.is_empty() {
            None
        } else {
            let live = LiveOutputs::new(
                &spec.streams,
                spec.stream_retry_for,
                spec.encoder.output.is_some(),
                lost_tx,
            )?;
            spec.encoder.relays = vec![live.port()?];
            Some(live)
        };
        let (first_tx, first_frame) = watch::channel(None);
        let (browser_tx, browser_rx) = watch::channel(None);
        let (page_loaded_tx, page_loaded) = watch::channel(false);
        let reports = Reports {
            first_frame: first_tx,
            browser: browser_tx,
            page_loaded: page_loaded_tx,
        };
        let (parts_tx, parts) = mpsc::unbounded_channel();
        let part_files = Rc::new(Parts {
            id: spec.id.clone(),
            handed: Cell::new(0),
            report: parts_tx,
        });
        let (layout_tx, layout_rx) = watch::channel(None);
        let layout = LayoutSwitch {
            browser: browser_rx,
            layout: layout_tx,
        };
        // A warm tree has one too, never opened: its browser closes it when it fails while the
        // encoder's start waits for the job (the supervisor could not restart the browser then).
        let gate = (spec.await_start.is_some() || spec.late.is_some()).then(StartGate::new);
        let pause = PauseSwitch::new();
        let media = Media {
            gate: gate.clone(),
            pause: pause.clone(),
            progress,
            live: live.clone(),
            layout: layout_rx,
            reports,
            parts: part_files,
        };
        let children = vec![
            display_child(&spec),
            audio_child(&spec),
            media_child(&spec, media),
        ];
        let config = SupervisorConfig {
            name: "recording".into(),
            strategy: Strategy::RestForOne,
            intensity: spec.intensity,
        };
        let (supervisor, exit) = Supervisor::start(config, children);
        let mut first = first_frame.clone();
        let sup = supervisor.clone();
        let max_duration = spec.max_duration;
        let switch = pause.clone();
        let late = spec.late.clone();
        actix::spawn(async move {
            let Ok(at) = first.wait_for(Option::is_some).await.map(|at| *at) else {
                return;
            };
            let Some(at) = at else { return };
            switch.started(at);
            // A warm tree's first frame comes after its job: the job's limit.
            let max_duration = match &late {
                Some(late) => late.get().and_then(|l| l.max_duration),
                None => max_duration,
            };
            let Some(limit) = max_duration else { return };
            // Recorded time: a pause holds the limit back. The first frame moves earlier while
            // the encoder's first reports tell it better: the limit with it.
            loop {
                tokio::select! {
                    () = switch.recorded_for(limit) => break,
                    changed = first.changed() => match changed {
                        Ok(()) => {
                            if let Some(at) = *first.borrow_and_update() {
                                switch.started(at);
                            }
                        }
                        Err(_) => {
                            switch.recorded_for(limit).await;
                            break;
                        }
                    },
                }
            }
            sup.do_send(StopTree {
                cause: format!("max_duration {} reached", humanize(limit)),
            });
        });
        Ok(Recording {
            supervisor,
            pause,
            gate,
            late: spec.late,
            exit,
            first_frame,
            parts,
            layout,
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
        self.layout.clone()
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
    pub async fn finished(mut self) -> RecordingReport {
        let exit = self.exit.await.unwrap_or(TreeExit::Stopped {
            cause: "supervisor vanished".into(),
            failures: Vec::new(),
        });
        let first_frame = *self.first_frame.borrow();
        let mut segments = Vec::new();
        while let Ok(part) = self.parts.try_recv() {
            segments.push(part);
        }
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
        let mut lost_streams = Vec::new();
        while let Ok(lost) = self.lost_streams.try_recv() {
            lost_streams.push(lost);
        }
        RecordingReport {
            exit,
            first_frame,
            segments: segments.len(),
            join_error,
            lost_streams,
            page_loaded: *self.page_loaded.borrow(),
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

fn display_child(spec: &RecordingSpec) -> ChildSpec {
    let display = spec.display;
    ChildSpec::publishing(
        DISPLAY,
        Restart::Permanent,
        Duration::from_secs(5),
        move |link| async move {
            let (addr, info) = DisplayActor::start(display, link).await?;
            Ok((addr.clone(), (addr, info)))
        },
    )
}

fn audio_child(spec: &RecordingSpec) -> ChildSpec {
    let audio = AudioSpec {
        runtime_dir: spec.work_dir.join("pulse"),
        sink: format!("pagecast_{}", spec.id),
        sample_rate: spec.encoder.audio_frequency,
    };
    ChildSpec::publishing(
        AUDIO,
        Restart::Permanent,
        Duration::from_secs(5),
        move |link| {
            let audio = audio.clone();
            async move {
                let (addr, info) = AudioActor::start(audio, link).await?;
                Ok((addr.clone(), (addr, info)))
            }
        },
    )
}

/// What the recording's owner hands the media subtree's children, and where they report back.
#[derive(Clone)]
struct Media {
    gate: Option<StartGate>,
    pause: PauseSwitch,
    progress: Option<Recipient<EncoderProgress>>,
    live: Option<LiveOutputs>,
    /// The layout a LiveKit layout page was switched to while recording (see [`LayoutSwitch`]).
    layout: watch::Receiver<Option<String>>,
    reports: Reports,
    parts: Rc<Parts>,
}

/// The browser, the live outputs and the encoder: one-for-one, so each restarts without touching
/// the others. The encoder starts last and so stops first: the file is finished, and the relays
/// get the stream's last packets before they stop.
fn media_child(spec: &RecordingSpec, media: Media) -> ChildSpec {
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
            let mut children = vec![browser_child(&spec, &media)];
            if let Some(live) = &media.live {
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
            children.push(encoder_child(&spec, &media));
            Supervisor::start_linked(config, children, link)
        },
    )
}

fn browser_child(spec: &RecordingSpec, media: &Media) -> ChildSpec {
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
        page_loaded: media.reports.page_loaded.clone(),
        page: spec.page.clone(),
        audio_ahead: false,
    };
    let awaits_start = spec.await_start.is_some();
    let fresh_url = spec.fresh_url.clone();
    let late = spec.late.clone();
    let (gate, layout, running) = (
        media.gate.clone(),
        media.layout.clone(),
        media.reports.browser.clone(),
    );
    ChildSpec::publishing(
        BROWSER,
        Restart::Permanent,
        Duration::from_secs(10),
        move |link| {
            let (mut browser, gate, running) = (browser.clone(), gate.clone(), running.clone());
            let fresh = fresh_url.as_ref().map(|f| (f.0)());
            // A warm tree's browser shows the job's page once the job came; before, the blank one.
            let job = late.as_ref().map(|l| l.get());
            if let Some(Some(job)) = &job {
                browser.url = job.url.clone();
            }
            let layout = layout.borrow().clone();
            async move {
                if let Some(fresh) = fresh {
                    let (url, secret) = fresh?;
                    browser.url = url;
                    browser.secrets.push(secret);
                }
                // A layout switched while recording survives a browser restart.
                if let Some(layout) = layout {
                    browser.url = with_layout(&browser.url, &layout);
                }
                let (_, display) = link.needs::<DisplayUp>(DISPLAY)?;
                let (_, audio) = link.needs::<AudioUp>(AUDIO)?;
                // A restarted browser loads the page at once: its encoder is already recording.
                // So does a page the encoder waits for.
                // (A warm browser restarted before its job has no page to load yet.)
                let restart = link.is_restart() && !matches!(job, Some(None));
                if restart {
                    tracing::warn!("browser restarted: reloading the page");
                }
                browser.audio_ahead = !restart;
                let addr = BrowserActor::start(
                    &browser,
                    &display,
                    &audio,
                    restart || awaits_start,
                    gate,
                    link,
                )
                .await?;
                running.send_replace(Some(addr.clone()));
                Ok((addr.clone(), addr))
            }
        },
    )
}

fn encoder_child(spec: &RecordingSpec, media: &Media) -> ChildSpec {
    let encoder = spec.encoder.clone();
    let await_start = spec.await_start.clone();
    let late = spec.late.clone();
    let media = media.clone();
    // The finalize timeout of the encoder plus its SIGINT/SIGKILL steps fit in this.
    ChildSpec::new(
        "encoder",
        Restart::Permanent,
        Duration::from_secs(15),
        move |link| {
            let (mut encoder, await_start, late, media) = (
                encoder.clone(),
                await_start.clone(),
                late.clone(),
                media.clone(),
            );
            async move {
                let (display_actor, display) = link.needs::<DisplayUp>(DISPLAY)?;
                let (audio_actor, audio) = link.needs::<AudioUp>(AUDIO)?;
                let browser = link.wired::<Addr<BrowserActor>>(BROWSER);
                // A warm tree: everything before the encoder is up; the job brings the rest.
                let mut page = None;
                if let Some(late) = &late {
                    if late.get().is_none() {
                        tracing::info!("{}", crate::events::WARM_TREE_READY);
                    }
                    let gate = media.gate.clone().unwrap_or_default();
                    let job = tokio::select! {
                        biased;
                        job = late.wait() => job?,
                        why = gate.closed() => return Err(why),
                        why = lost_while_warm(&display_actor, &audio_actor) => return Err(why),
                    };
                    encoder = EncoderSpec {
                        width: encoder.width,
                        height: encoder.height,
                        framerate: encoder.framerate,
                        ..job.encoder
                    };
                    page = Some(job.url);
                }
                let (parts, output) = (media.parts.clone(), encoder.output.clone());
                let control = PauseControl {
                    paused: media.pause.follow(),
                    next_part: Rc::new(move || parts.next(output.as_ref())),
                };
                if let (Some(gate), Some(wait)) = (&media.gate, await_start) {
                    if gate.is_waiting() {
                        tracing::info!(limit = ?wait.limit, "waiting for the page's START_RECORDING");
                    }
                    // Open at once on a restart: the page started long ago.
                    gate.wait(wait.limit, &wait.missing).await?;
                }
                // Paused (a restart during a pause): the next part begins at the resume.
                if !control.is_paused() {
                    encoder.output = (control.next_part)();
                    if let Some(path) = &encoder.output {
                        let n = media.parts.handed.get() - 1;
                        if n > 0 {
                            tracing::warn!(segment = n, path = %path.display(), "encoder restarted: recording the next segment");
                        }
                    }
                }
                let reports = EncoderReports {
                    progress: media.progress,
                    first_frame: Some(media.reports.first_frame.clone()),
                };
                let (addr, first_frame) = EncoderActor::start_pausable(
                    &encoder,
                    &display,
                    &audio,
                    reports,
                    Some(control),
                    link,
                )
                .await?;
                // Set by the encoder's reports, unless it started paused (nothing encoded).
                media.reports.first_frame.send_if_modified(|first| {
                    let unset = first.is_none();
                    first.get_or_insert(first_frame);
                    unset
                });
                // Loads the page if this browser has not yet (it ignores a second Navigate).
                if let Some(browser) = &browser {
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

/// How often a warm tree's encoder start looks at the display and the audio while it waits.
const WARM_WATCH_EVERY: Duration = Duration::from_millis(250);

/// Resolves when the display or the audio stopped while a warm tree waits for its job: its
/// supervisor is busy with the encoder's start and cannot restart them, and a job handed to the
/// tree would fail. Ending the start ends the tree, and the pool replaces it.
async fn lost_while_warm(display: &Addr<DisplayActor>, audio: &Addr<AudioActor>) -> Failure {
    let mut every = tokio::time::interval(WARM_WATCH_EVERY);
    loop {
        every.tick().await;
        let lost = if !display.connected() {
            "display"
        } else if !audio.connected() {
            "audio"
        } else {
            continue;
        };
        return Failure::crashed(format!("{lost} lost while the warm tree waited for a job"));
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
