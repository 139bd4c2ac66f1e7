//! The recording tree: one supervisor over display, audio, browser and encoder.
//!
//! Owns: the [`Supervisor`] of one recording and the wiring between its children (which display
//! and sink the later children use, which browser to tell to load the page).
//! Start order: display, audio, browser (blank page), encoder; once the encoder has its first
//! frame, the browser loads the page, so the recording holds the page from its first moment
//! without the seconds ffmpeg needs to open its inputs.
//! Stop order (reverse): encoder (the file is finalized first), browser, audio, display.
//! Strategy: rest-for-one (a dead display takes everything started after it).
//! Restarts: none yet ([`Intensity::NEVER`]): the first failure stops the tree in order and is
//! reported; restarts that keep one continuous recording need the recovery work of the
//! supervision issue and come with it.
//! Sends: [`StopTree`] to its supervisor when `max_duration` has passed since the first frame.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::audio::{AudioActor, AudioInfo, AudioSpec};
use crate::browser::{BrowserActor, BrowserSpec, Navigate};
use crate::display::{DisplayActor, DisplayInfo, DisplaySpec};
use crate::encoder::{EncoderActor, EncoderProgress, EncoderSpec};
use crate::supervision::{
    ChildSpec, Failure, Intensity, Restart, StopTree, Strategy, Supervisor, SupervisorConfig,
    TreeExit,
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
    pub encoder: EncoderSpec,
    pub max_duration: Option<Duration>,
}

/// What the children of one tree learn from each other as they start.
#[derive(Default)]
struct Wiring {
    display: Option<DisplayInfo>,
    audio: Option<AudioInfo>,
    browser: Option<Addr<BrowserActor>>,
    /// Fired at the first encoded frame.
    first_frame: Option<oneshot::Sender<Instant>>,
}

/// A running recording.
pub struct Recording {
    supervisor: Addr<Supervisor>,
    exit: oneshot::Receiver<TreeExit>,
    first_frame: Rc<RefCell<Option<Instant>>>,
}

/// How a recording ended.
#[derive(Debug, Clone)]
pub struct RecordingReport {
    pub exit: TreeExit,
    /// When the first frame was encoded; None if the encoder never ran.
    pub first_frame: Option<Instant>,
}

impl Recording {
    /// Starts the tree. `progress` receives the encoder's counters.
    pub fn start(spec: RecordingSpec, progress: Option<Recipient<EncoderProgress>>) -> Recording {
        let (first_tx, first_rx) = oneshot::channel();
        let wiring = Rc::new(RefCell::new(Wiring {
            first_frame: Some(first_tx),
            ..Wiring::default()
        }));
        let children = vec![
            display_child(&spec, wiring.clone()),
            audio_child(&spec, wiring.clone()),
            browser_child(&spec, wiring.clone()),
            encoder_child(&spec, wiring.clone(), progress),
        ];
        let config = SupervisorConfig {
            name: format!("recording {}", spec.id),
            strategy: Strategy::RestForOne,
            intensity: Intensity::NEVER,
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
        Recording {
            supervisor,
            exit,
            first_frame,
        }
    }

    /// Asks the recording to stop in order; `cause` is logged.
    pub fn stop(&self, cause: impl Into<String>) {
        self.supervisor.do_send(StopTree {
            cause: cause.into(),
        });
    }

    /// The supervisor's address, for stop requests from elsewhere.
    pub fn supervisor(&self) -> Addr<Supervisor> {
        self.supervisor.clone()
    }

    /// Resolves once every child has stopped.
    pub async fn finished(self) -> RecordingReport {
        let exit = self.exit.await.unwrap_or(TreeExit::Stopped {
            cause: "supervisor vanished".into(),
            failures: Vec::new(),
        });
        let first_frame = *self.first_frame.borrow();
        RecordingReport { exit, first_frame }
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

fn browser_child(spec: &RecordingSpec, wiring: Rc<RefCell<Wiring>>) -> ChildSpec {
    let browser = BrowserSpec {
        url: spec.url.clone(),
        width: spec.display.width,
        height: spec.display.height,
        work_dir: spec.work_dir.join("browser"),
        chromium: spec.chromium.clone(),
        no_sandbox: spec.no_sandbox,
    };
    ChildSpec::new(
        "browser",
        Restart::Permanent,
        Duration::from_secs(10),
        move |link| {
            let (browser, wiring) = (browser.clone(), wiring.clone());
            async move {
                let (display, audio) = started_before(&wiring)?;
                let addr = BrowserActor::start(&browser, &display, &audio, link).await?;
                wiring.borrow_mut().browser = Some(addr.clone());
                Ok(addr)
            }
        },
    )
}

fn encoder_child(
    spec: &RecordingSpec,
    wiring: Rc<RefCell<Wiring>>,
    progress: Option<Recipient<EncoderProgress>>,
) -> ChildSpec {
    let encoder = spec.encoder.clone();
    // The finalize timeout of the encoder plus its SIGINT/SIGKILL steps fit in this.
    ChildSpec::new(
        "encoder",
        Restart::Permanent,
        Duration::from_secs(15),
        move |link| {
            let (encoder, wiring, progress) = (encoder.clone(), wiring.clone(), progress.clone());
            async move {
                let (display, audio) = started_before(&wiring)?;
                let addr = EncoderActor::start(&encoder, &display, &audio, progress, link).await?;
                let mut w = wiring.borrow_mut();
                if let Some(first) = w.first_frame.take() {
                    let _ = first.send(Instant::now());
                    if let Some(browser) = &w.browser {
                        browser.do_send(Navigate);
                    }
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
