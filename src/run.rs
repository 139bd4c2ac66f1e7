//! One recording, from a validated config to an exit code.
//!
//! Checks what can be checked before anything starts (outputs this version can write, programs
//! on PATH, a writable output directory), starts the recording tree with its controls (signals,
//! control lines: `controls.rs`), and turns how the tree ended into one line
//! for the user and an [`Exit`] code. Success means a finished, non-empty file.
//! A warm tree ([`record_warm`]) starts its processes first and reads its config after; from
//! the config on, it goes through the same steps (`prepare`, then `run_tree`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use pagecast_actors::dir_upload::{DirKind, DirUpload, DirUploadSpec};
use pagecast_actors::display::DisplaySpec;
use pagecast_actors::encoder::{EncoderSpec, ImagesSpec};
use pagecast_actors::events::RECORDING_DISCARDED;
use pagecast_actors::join::Probe;
use pagecast_actors::page_proxy::PageProxy;
use pagecast_actors::process::find_program;
use pagecast_actors::recording::{AwaitStart, FreshUrl, Recording, RecordingReport, RecordingSpec};
use pagecast_actors::secret::Secret;
use pagecast_actors::secret::StreamUrl;
use pagecast_actors::store::Store;
use pagecast_actors::supervision::{
    ChildSpec, Failure, Intensity, Published, Restart, StopTree, Strategy, Supervisor,
    SupervisorConfig,
};
use pagecast_actors::supervision::{ExitReason, FailureKind, TreeExit};
use pagecast_actors::uploader::{Finish, UploadSpec, Uploaded, UploaderActor};
use pagecast_actors::warm::{Late, LateJob};
use std::cell::RefCell;
use std::rc::Rc;

use crate::claim::{Claim, ClaimError};
use crate::cli::Keep;
use crate::config::{Config, Focus, Source, TemplateAuth};
use crate::exit::Exit;
use crate::logging::{clear_status_line, status_line, LogFormat};
use crate::policy::{host_resolver_rules, Pin, Policy};
use crate::shutdown::{Level, Shutdown, SECOND_SIGNAL_RECORDING};
use crate::status::StatusActor;
use crate::warm::WarmSize;

/// Programs a recording runs. Chromium is looked up separately (its name varies).
const PROGRAMS: &[&str] = &[
    "Xvfb",
    "pulseaudio",
    "pactl",
    "chromedriver",
    "ffmpeg",
    "ffprobe",
    "setpriv",
];
const CHROMIUM_NAMES: &[&str] = &["chromium", "chromium-browser", "google-chrome"];

/// The user-facing end of a run: an exit code and, unless it is a success, one line saying why.
#[derive(Debug)]
pub struct Outcome {
    pub exit: Exit,
    pub message: String,
}

impl Outcome {
    pub(crate) fn fail(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    pub(crate) fn ok() -> Self {
        Self {
            exit: Exit::Ok,
            message: String::new(),
        }
    }
}

/// The log event naming what a run kept (file or object, seconds): the service reads it.
pub const RECORDING_KEPT: &str = "recording kept";
/// The log event of a completed object (fields: bytes, object, backup): the service reads it.
pub const OBJECT_COMPLETE: &str = "object complete";
/// The config fields of the directory copies: the `field` of their `DIRECTORY_UPLOADED` event,
/// by which the service tells the HLS copy from the snapshots' (`service/attempt.rs`).
pub const HLS_PREFIX_FIELD: &str = "output.hls.prefix";
pub const IMAGES_PREFIX_FIELD: &str = "output.images.prefix";

/// Records what `config` says. Runs inside an actix system.
/// `pins`: host names Chromium must resolve to the address the service policy checked.
/// `policy`: the service policy the config was held to, if any: then a page's every request
/// goes through the page proxy, which refuses the addresses the policy refuses for pages.
pub async fn record(
    config: Config,
    pins: Vec<Pin>,
    policy: Option<&Policy>,
    log_format: LogFormat,
    keep: Keep,
) -> Outcome {
    // Listened for at once: a pause asked for during the pre-flight must not end the run
    // (SIGUSR1's default action); it is refused once the recording runs, before its first frame.
    let early_signals = crate::controls::EarlySignals::listen();
    let id = recording_id();
    let prepared = match prepare(config, &id, keep.overwrite).await {
        Ok(prepared) => prepared,
        Err(outcome) => return outcome,
    };
    let chromium = match chromium() {
        Ok(path) => path,
        Err(outcome) => return outcome,
    };
    // An untrusted page's subresources, frames, fetches and sockets name any host they like:
    // they reach only what the policy lets a page reach. (A LiveKit layout is pagecast's own page.)
    let proxy = match (policy, &prepared.config.input.source) {
        (Some(policy), Source::Url(_)) => match PageProxy::start(policy.page_allow()).await {
            Ok(proxy) => Some(proxy),
            Err(e) => {
                return Outcome::fail(Exit::Failed, format!("cannot start the page proxy: {e}"))
            }
        },
        _ => None,
    };
    let work_dir = match work_dir() {
        Ok(dir) => dir,
        Err(outcome) => return outcome,
    };
    let tree = Tree {
        id,
        chromium,
        host_resolver_rules: host_resolver_rules(&pins),
        proxy,
        work_dir,
        status: StatusActor::new(status_line(log_format)).start(),
        warm: None,
        policy: policy.cloned(),
    };
    run_tree(prepared, tree, early_signals, keep).await
}

/// What a recording needs decided from its config before any of its processes start.
struct Prepared {
    config: Config,
    /// The file the encoder writes (an S3-only recording's local file included).
    output: Option<PathBuf>,
    /// The output already held a recording (--overwrite): a run that records nothing keeps it.
    replaces: bool,
    /// The output is the user's file, not only the upload's.
    keep_local: bool,
    page: Page,
    /// The upload's spec and its stores (the primary's and the backup's), checked.
    store: Option<(UploadSpec, Stores)>,
    /// This run's claims on its outputs (see [`check_before_start`]), held until it ends.
    claims: Vec<Claim>,
    /// `--overwrite`: the directory copies may replace objects of their names.
    overwrite: bool,
}

/// The primary store and the backup, from the pre-flight.
type Stores = (Box<dyn Store>, Option<Box<dyn Store>>);

/// The checks and pre-flights of `config`, before the recording starts (or, for a warm tree,
/// before it is handed the job): names filled in, outputs writable, servers reachable, a
/// LiveKit token accepted, S3 answering.
async fn prepare(config: Config, id: &str, overwrite: bool) -> Result<Prepared, Outcome> {
    // {time}, {utc}, {room_name} in the names: filled in once, at the start.
    let config = crate::naming::resolve(config, std::time::SystemTime::now());
    let (output, claims) = check_before_start(&config, overwrite)?;
    // With --overwrite, a run that records nothing must not take the old file with it either.
    let replaces = output
        .as_deref()
        .is_some_and(crate::naming::holds_a_recording);
    reach_stream_servers(&config.output.rtmp).await?;
    // A LiveKit room: the token, then the server's word on it, before anything starts.
    let page = page_to_record(&config, id).await?;
    // The stores are checked before anything starts: a wrong key or bucket must not cost a
    // recording.
    let store = match crate::stores::upload_spec(&config.output) {
        Some(spec) => match crate::stores::preflight(&spec, overwrite).await {
            Ok(stores) => Some((spec, stores)),
            Err(message) => return Err(Outcome::fail(Exit::Output, message)),
        },
        None => None,
    };
    if let (Some((_, (primary, _))), false) = (&store, overwrite) {
        check_copy_prefixes(&config, primary.objects().as_ref()).await?;
    }
    Ok(Prepared {
        config,
        keep_local: output.is_some(),
        output,
        replaces,
        page,
        store,
        claims,
        overwrite,
    })
}

/// A directory copy's prefix that already holds a copy is refused (exit 5) like an object under
/// the recording's name: this run's names would be the same (its HLS playlist; its first
/// snapshot, numbered on from the local directory) and write over it. A store that cannot
/// tell (write-only credentials) is said, and the recording goes ahead.
async fn check_copy_prefixes(
    config: &Config,
    objects: &dyn pagecast_actors::store::Objects,
) -> Result<(), Outcome> {
    let mut names = Vec::new();
    if let Some(prefix) = config.output.hls.as_ref().and_then(|h| h.prefix.as_ref()) {
        let playlist = pagecast_actors::encoder::HLS_PLAYLIST;
        names.push((
            HLS_PREFIX_FIELD,
            format!("{prefix}{playlist}"),
            "a playlist",
        ));
    }
    if let Some(images) = &config.output.images {
        let spec = images_spec(images);
        if let (Some(prefix), Some(first)) = (&images.prefix, spec.index_name(spec.next_number())) {
            names.push((
                IMAGES_PREFIX_FIELD,
                format!("{prefix}{first}"),
                "a snapshot",
            ));
        }
    }
    for (field, name, what) in names {
        let checked = tokio::time::timeout(
            pagecast_actors::store::PREFLIGHT_TIMEOUT,
            objects.exists(&name),
        )
        .await;
        match checked {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => {
                return Err(Outcome::fail(
                    Exit::Output,
                    format!(
                        "{field}: {} already holds {what} of an earlier copy; give a fresh \
                         prefix, or --overwrite",
                        objects.url(&name)
                    ),
                ))
            }
            Ok(Err(fault)) => tracing::warn!(
                field,
                error = %fault.message,
                "cannot tell whether the prefix already holds a copy; copying anyway"
            ),
            Err(_) => tracing::warn!(
                field,
                "the store did not say whether the prefix already holds a copy; copying anyway"
            ),
        }
    }
    Ok(())
}

/// The working directory of one recording (its pulse runtime, Chromium's profile and TMPDIR),
/// marked so that a killed run's is reaped by the next one.
fn work_dir() -> Result<tempfile::TempDir, Outcome> {
    crate::reaper::reap(&std::env::temp_dir());
    let work_dir = match tempfile::Builder::new().prefix("pagecast-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            return Err(Outcome::fail(
                Exit::Failed,
                format!("cannot create a working directory: {e}"),
            ))
        }
    };
    if let Err(e) = crate::reaper::mark(work_dir.path()) {
        tracing::warn!(error = %e, "cannot mark the working directory; a kill would leave it behind");
    }
    Ok(work_dir)
}

/// The processes' side of a recording, decided without its config (a warm tree's) or with it.
struct Tree {
    id: String,
    chromium: PathBuf,
    /// Chromium's pins (a warm tree's are the page proxy's instead).
    host_resolver_rules: Option<String>,
    proxy: Option<PageProxy>,
    work_dir: tempfile::TempDir,
    status: Addr<StatusActor>,
    /// A warm tree already running, waiting for its job.
    warm: Option<(Recording, LateJob)>,
    /// The service policy the job is held to: live outputs added while recording are too.
    policy: Option<Policy>,
}

/// Starts the recording of `prepared` (or hands it to the warm tree), follows it to its end and
/// says how it went.
async fn run_tree(
    prepared: Prepared,
    tree: Tree,
    early_signals: crate::controls::EarlySignals,
    keep: Keep,
) -> Outcome {
    let Prepared {
        config,
        output,
        replaces,
        keep_local,
        page,
        store,
        claims: _claims,
        overwrite,
    } = prepared;
    // Without a file output, the upload follows a local file of its own, removed once the
    // object is complete (kept, and named, if the upload fails). In --keep-dir, not in the
    // working directory: that one goes.
    let output = match (output, &store) {
        (Some(file), _) => Some(file),
        (None, Some(_)) => match upload_file(keep.keep_dir.as_deref()) {
            Ok(file) => Some(file),
            Err(outcome) => return tree.stop_warm(outcome).await,
        },
        (None, None) => None,
    };
    let id = tree.id.clone();
    let work_dir = tree.work_dir;
    let proxy = tree.proxy;
    let chromium = tree.chromium;
    let status = tree.status;
    let policy = tree.policy;
    // What a job's page may use of the machine (a service's recording only).
    let limits = policy.as_ref().map(|p| crate::limits::Limits {
        memory: p.max_job_memory,
        storage: p.max_page_storage,
    });
    let url = &page.url;
    let spec = RecordingSpec {
        id: id.clone(),
        work_dir: work_dir.path().to_path_buf(),
        display: DisplaySpec {
            width: config.input.width,
            height: config.input.height,
            depth: config.input.depth,
            refresh_hz: config.input.framerate,
        },
        url: url.clone(),
        chromium,
        no_sandbox: no_sandbox(),
        host_resolver_rules: tree.host_resolver_rules,
        proxy_port: proxy.as_ref().map(PageProxy::port),
        encoder: EncoderSpec {
            output: output.clone(),
            relays: Vec::new(),
            width: config.input.width,
            height: config.input.height,
            framerate: config.input.framerate,
            output_size: config.output.size,
            video_bitrate: config.output.video_bitrate,
            video_buffer: config.output.video_buffer,
            audio_bitrate: config.output.audio_bitrate,
            audio_frequency: config.output.audio_frequency,
            preset: config.output.video_preset.into(),
            hls: config
                .output
                .hls
                .as_ref()
                .map(|h| pagecast_actors::encoder::HlsSpec {
                    directory: h.directory.clone(),
                    segment: h.segment,
                    naming: h.naming,
                }),
            images: config.output.images.as_ref().map(images_spec),
            tracks: config.output.tracks,
        },
        streams: config
            .output
            .rtmp
            .iter()
            .chain(&config.output.srt)
            .cloned()
            .collect(),
        stream_retry_for: config.output.rtmp_retry_for,
        hls_live: config.output.hls.as_ref().and_then(|h| {
            let live = h.live.as_ref()?;
            Some(pagecast_actors::hls_live::LiveSpec {
                event_playlist: h.directory.join(pagecast_actors::encoder::HLS_PLAYLIST),
                live_playlist: h.directory.join(&live.name),
                window: live.window,
            })
        }),
        max_duration: config.max_duration,
        intensity: pagecast_actors::supervision::Intensity {
            max_restarts: config.supervision.max_restarts,
            period: config.supervision.within,
        },
        await_start: page.await_start.clone(),
        secrets: page.secrets.clone(),
        fresh_url: page.fresh_url.clone(),
        page: pagecast_actors::browser::PageOptions {
            webgl: config.input.webgl,
            insecure: config.input.insecure,
            login: config.input.login.clone(),
        },
        late: None,
    };
    if config.input.insecure {
        tracing::warn!(
            "input.insecure: the page's TLS certificate is not checked (anyone between here and the server can read and change the page)"
        );
    }
    tracing::info!(
        id = %id,
        url = %pagecast_actors::secret::mask_url(url.as_str()),
        output = %output.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        live_outputs = %config.output.rtmp.iter().chain(&config.output.srt).map(ToString::to_string).collect::<Vec<_>>().join(" "),
        size = %format!("{}x{}", config.input.width, config.input.height),
        fps = config.input.framerate,
        "recording"
    );
    let launched = Instant::now();
    // What this run writes into a directory it shares (HLS) is what is at least this new.
    let started_at = std::time::SystemTime::now();
    // This run's snapshots are numbered from here (after an earlier run's in the same directory).
    let first_image = config
        .output
        .images
        .as_ref()
        .map_or(1, |i| images_spec(i).next_number());
    let recording = match tree.warm {
        // The warm tree's encoder starts now, and its browser loads the job's page.
        Some((recording, late)) => {
            late.give(Late {
                url: spec.url.clone(),
                encoder: spec.encoder.clone(),
                max_duration: spec.max_duration,
            });
            recording
        }
        None => match Recording::start(spec, Some(status.recipient())) {
            Ok(recording) => recording,
            Err(failure) => return Outcome::fail(Exit::Failed, failure.message),
        },
    };
    // The directory copies go to the primary store, through its client.
    let dir_store = store
        .as_ref()
        .map(|(spec, (primary, _))| (primary.objects(), spec.give_up_after));
    let upload = match (store, &output) {
        (Some((spec, stores)), Some(file)) => Some(start_upload(spec, stores, file)),
        _ => None,
    };
    let dir_uploads = match dir_store {
        Some((objects, give_up_after)) => {
            start_dir_uploads(&config, objects, give_up_after, first_image, overwrite)
        }
        None => Vec::new(),
    };
    let watch_limits = limits.map(|limits| {
        actix::spawn(crate::limits::watch(
            limits,
            std::process::id(),
            work_dir.path().to_path_buf(),
            recording.stopper(),
        ))
    });
    let discard = crate::controls::Discard::default();
    let shutdown = Shutdown::default();
    let signals = actix::spawn(crate::controls::follow(
        recording.stopper(),
        recording.pause_switch(),
        early_signals,
        discard.clone(),
        keep.stdin_control,
        crate::controls::Changes {
            live: recording.live_outputs(),
            policy,
            layout: matches!(config.input.source, Source::Template(_))
                .then(|| recording.layout_switch()),
        },
        shutdown.clone(),
    ));
    let report = tokio::select! {
        report = recording.finished() => report,
        // A second signal: leave now; the tree dropped with this run kills its processes.
        () = shutdown.reached(Level::Now) => {
            return Outcome::fail(Exit::Interrupted, SECOND_SIGNAL_RECORDING);
        }
    };
    let stopped = Instant::now();
    signals.abort();
    // A limit passed stopped the recording (the watcher returned as it asked for the stop).
    let passed = match watch_limits {
        Some(watcher) if watcher.is_finished() => watcher.await.ok(),
        Some(watcher) => {
            watcher.abort();
            None
        }
        None => None,
    };
    clear_status_line();
    if discard.get() {
        let images = config
            .output
            .images
            .as_ref()
            .map(|i| (images_spec(i), first_image));
        let hls = config.output.hls.as_ref().map(|h| (h, started_at));
        return discard_all(upload, dir_uploads, output.as_deref(), images, hls, &id).await;
    }
    // `unchecked`: ffprobe could not tell (it failed, or timed out on a large file on a slow
    // disk). The file is not called a recording then, but what it holds is kept and uploaded.
    let (playable, unchecked) = match &output {
        Some(path) => match pagecast_actors::join::probe(path).await {
            Probe::Plays(seconds) => (Some(seconds), None),
            Probe::NoFrame => (None, None),
            Probe::Unknown(why) => {
                tracing::warn!(output = %path.display(), reason = %why, "cannot probe the recording");
                (None, Some(why))
            }
        },
        None => (None, None),
    };
    let mut outcome = judge(
        &report,
        output.as_deref(),
        playable,
        unchecked.as_deref(),
        launched,
    );
    if let Some(passed) = passed {
        if outcome.exit == Exit::Ok {
            outcome = Outcome::fail(Exit::Input, passed.message());
        }
    }
    // Where the recording is, for the user: the object, else the local file.
    let mut kept = output
        .as_ref()
        .filter(|_| keep_local)
        .map(|f| f.display().to_string());
    if let (Some(upload), Some(file)) = (upload, &output) {
        // Completed whenever frames may be in it: an upload stopped without it is aborted, and
        // its parts in the bucket go.
        let frames = playable.is_some() || (unchecked.is_some() && report.first_frame.is_some());
        let uploaded = finish_upload(upload, frames, report.segments > 1).await;
        match uploaded {
            Ok(Uploaded {
                bytes,
                object,
                on_backup,
            }) => {
                tracing::info!(bytes, object = %object, backup = on_backup, stop_to_complete = ?stopped.elapsed(), "{OBJECT_COMPLETE}");
                let object = if on_backup {
                    format!("{object} (the backup store)")
                } else {
                    object
                };
                kept = match kept {
                    Some(file) => Some(format!("{file} and {object}")),
                    None => Some(object),
                };
                if !keep_local {
                    let _ = std::fs::remove_file(file);
                }
            }
            Err(failure) => {
                tracing::error!(error = %failure, "upload failed");
                if recorded(&report) {
                    kept = Some(file.display().to_string());
                }
                if outcome.exit == Exit::Ok {
                    outcome = Outcome::fail(Exit::Output, failure.message);
                } else {
                    outcome.message = format!("{}; the upload failed too", outcome.message);
                }
            }
        }
    }
    for dir in dir_uploads {
        let to = dir.describe();
        let field = dir.field();
        match dir.finish().await {
            Ok(objects) => {
                tracing::info!(field, objects, to = %to, message = pagecast_actors::events::DIRECTORY_UPLOADED);
            }
            Err(failure) => {
                tracing::error!(error = %failure, "upload of a directory failed");
                if outcome.exit == Exit::Ok {
                    outcome = Outcome::fail(Exit::Output, failure.message);
                } else {
                    outcome.message = format!("{}; {}", outcome.message, failure.message);
                }
            }
        }
    }
    if let Some(output) = &output {
        if outcome.exit != Exit::Ok && !recorded(&report) && !replaces {
            // Nothing of the page was encoded (no frame, or the page never loaded: blank
            // frames). Only then may the file go.
            if std::fs::remove_file(output).is_ok() {
                tracing::info!(output = %output.display(), "removed the unusable output file");
            }
        }
    }
    if let (Exit::Input, Source::Template(template)) = (outcome.exit, &config.input.source) {
        if let Some(expired) = match &template.auth {
            TemplateAuth::Token(given) => crate::livekit::expired(given),
            TemplateAuth::ApiKey { .. } => None,
        } {
            outcome.message = format!("{} ({expired})", outcome.message);
        }
    }
    if let (Some(kept), true) = (&kept, recorded(&report)) {
        tracing::info!(
            kept = %kept,
            seconds = playable.unwrap_or(0.0),
            "{RECORDING_KEPT}"
        );
        // A failure after the first frame says where the recording is, and how long it is.
        if outcome.exit != Exit::Ok && !outcome.message.contains(kept.as_str()) {
            outcome.message = match playable {
                Some(s) => format!(
                    "{}; the recording so far ({s:.1} s) is in {kept}",
                    outcome.message
                ),
                None => format!("{}; what was recorded is in {kept}", outcome.message),
            };
        }
    }
    drop(work_dir);
    drop(page);
    outcome
}

impl Tree {
    /// A warm tree's job was refused before the tree was handed it: the tree stops (nothing was
    /// recorded) and the run ends with `outcome`.
    async fn stop_warm(self, outcome: Outcome) -> Outcome {
        if let Some((recording, _)) = self.warm {
            recording.stop("the job was refused");
            let _ = recording.finished().await;
        }
        outcome
    }
}

/// A warm tree (`record --warm`, one of `serve --warm`'s pool): display, sink and Chromium on a
/// blank page at `size` start now, under `policy` (the page proxy too); [`WARM_TREE_READY`] is
/// logged; then the job's config is read from standard input, checked as a cold job's is
/// (the policy, then whether it fits this tree: `warm.rs`), and recorded by this tree. Empty
/// input, SIGTERM or SIGINT before a job: the tree stops, exit 0, nothing recorded.
///
/// [`WARM_TREE_READY`]: pagecast_actors::events::WARM_TREE_READY
pub async fn record_warm(
    size: WarmSize,
    policy: &Policy,
    log_format: LogFormat,
    keep: Keep,
) -> Outcome {
    use tokio::signal::unix::{signal, SignalKind};
    let early_signals = crate::controls::EarlySignals::listen();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return Outcome::fail(Exit::Failed, "cannot watch SIGTERM and SIGINT");
    };
    if let Err(outcome) = check_programs() {
        return outcome;
    }
    let chromium = match chromium() {
        Ok(path) => path,
        Err(outcome) => return outcome,
    };
    // Every warm tree's page is an untrusted one under the policy: its requests go through the
    // proxy from the start, and the job's page host is pinned there when the job comes.
    let proxy = match PageProxy::start(policy.page_allow()).await {
        Ok(proxy) => proxy,
        Err(e) => return Outcome::fail(Exit::Failed, format!("cannot start the page proxy: {e}")),
    };
    let work_dir = match work_dir() {
        Ok(dir) => dir,
        Err(outcome) => return outcome,
    };
    let id = recording_id();
    let late = LateJob::default();
    let status = StatusActor::new(status_line(log_format)).start();
    let spec = crate::warm::spec(
        &size,
        &id,
        work_dir.path(),
        chromium,
        no_sandbox(),
        proxy.port(),
        late.clone(),
    );
    let mut recording = match Recording::start(spec, Some(status.clone().recipient())) {
        Ok(recording) => recording,
        Err(failure) => return Outcome::fail(Exit::Failed, failure.message),
    };
    // A blocking read on a thread of its own, not the runtime's blocking pool: the job may never
    // come, and the runtime would wait for that read at its end.
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The job's config is the first JSON value; control lines follow it (`--stdin-control`).
    std::thread::spawn(move || {
        let read = crate::controls::config_from_stdin()
            .map(Option::unwrap_or_default)
            .map_err(std::io::Error::other);
        let _ = tx.send(read);
    });
    let read = async {
        rx.await
            .unwrap_or_else(|_| Err(std::io::Error::other("the reader stopped")))
    };
    let stop = |recording: Recording, cause: &'static str, outcome: Outcome| async move {
        recording.stop(cause);
        let _ = recording.finished().await;
        outcome
    };
    let json = tokio::select! {
        // A job already there goes first: a stop of that job arriving with it stops it (below).
        biased;
        json = read => json,
        exit = recording.ended() => {
            let why = match exit {
                TreeExit::StartFailed { child, failure } => format!(
                    "{} could not start: {failure}",
                    failure.origin.as_ref().unwrap_or(&child)
                ),
                TreeExit::GaveUp { child, reason } => format!("{child} failed: {reason}"),
                TreeExit::Stopped { cause, .. } => cause,
            };
            return Outcome::fail(Exit::Failed, format!("the warm tree stopped before a job came: {why}"));
        }
        _ = term.recv() => return stop(recording, "SIGTERM", Outcome::ok()).await,
        _ = int.recv() => return stop(recording, "SIGINT", Outcome::ok()).await,
    };
    let json = match json {
        Ok(json) if json.trim().is_empty() => {
            return stop(recording, "no job came", Outcome::ok()).await
        }
        Ok(json) => json,
        Err(e) => {
            let outcome = Outcome::fail(
                Exit::Config,
                format!("config: cannot read standard input: {e}"),
            );
            return stop(recording, "no job came", outcome).await;
        }
    };
    let mut config = match crate::config::parse(&json) {
        Ok(config) => config,
        Err(e) => {
            let outcome = Outcome::fail(Exit::Config, e.to_string());
            return stop(recording, "the job was refused", outcome).await;
        }
    };
    let pins = match policy.apply(&mut config).await {
        Ok(pins) => pins,
        Err(e) => {
            let outcome = Outcome::fail(e.exit(), e.to_string());
            return stop(recording, "the job was refused", outcome).await;
        }
    };
    if let Some(why) = crate::warm::misfit(&config, &size) {
        let outcome = Outcome::fail(
            Exit::Config,
            format!("this warm tree ({size}) does not fit the job: {why}"),
        );
        return stop(recording, "the job was refused", outcome).await;
    }
    let prepared = match prepare(config, &id, keep.overwrite).await {
        Ok(prepared) => prepared,
        Err(outcome) => return stop(recording, "the job was refused", outcome).await,
    };
    for pin in &pins {
        proxy.pin(&pin.host, pin.addr);
    }
    let tree = Tree {
        id,
        chromium: PathBuf::new(),
        host_resolver_rules: None,
        proxy: Some(proxy),
        work_dir,
        status,
        warm: Some((recording, late)),
        policy: Some(policy.clone()),
    };
    run_tree(prepared, tree, early_signals.with_stop(term, int), keep).await
}

/// The local file an S3-only recording is written to first: in `keep_dir` (created if need be),
/// else in the temp directory.
fn upload_file(keep_dir: Option<&Path>) -> Result<PathBuf, Outcome> {
    let dir = keep_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let fail = |e: std::io::Error| {
        Outcome::fail(
            Exit::Output,
            format!("--keep-dir: cannot write {}: {e}", dir.display()),
        )
    };
    std::fs::create_dir_all(&dir).map_err(fail)?;
    tempfile::Builder::new()
        .prefix(".pagecast-check-")
        .tempfile_in(&dir)
        .map_err(fail)?;
    // A file of that name is an earlier run's kept recording (process ids are reused): never
    // write over it.
    let mut file = dir.join(upload_file_name(std::process::id()));
    let mut n = 1;
    while file.exists() {
        n += 1;
        file = dir.join(format!("pagecast-upload-{}-{n}.mp4", std::process::id()));
    }
    Ok(file)
}

/// The name of the S3-only recording's local file of the process `pid` (the service finds it
/// by this name).
pub fn upload_file_name(pid: u32) -> String {
    format!("pagecast-upload-{pid}.mp4")
}

/// The page a recording shows, and how it starts.
struct Page {
    url: url::Url,
    await_start: Option<AwaitStart>,
    /// What the page's address carries that must not be logged.
    secrets: Vec<Secret>,
    /// The address anew for each browser start (a fresh token), when pagecast signs tokens.
    fresh_url: Option<FreshUrl>,
    /// Serves the built-in layouts for the length of the run.
    _server: Option<crate::layouts::LayoutServer>,
}

/// The page of `config`: its URL as given, or a LiveKit layout's address with a token that the
/// server has accepted.
async fn page_to_record(config: &Config, id: &str) -> Result<Page, Outcome> {
    let template = match &config.input.source {
        Source::Url(url) => {
            return Ok(Page {
                url: url.clone(),
                await_start: config.input.await_start_signal.then(|| AwaitStart {
                    limit: config.input.start_timeout,
                    missing: "the page did not log START_RECORDING".into(),
                }),
                secrets: Vec::new(),
                fresh_url: None,
                _server: None,
            })
        }
        Source::Template(template) => template,
    };
    let tracks = config.output.tracks;
    let valid_for = config.max_duration.unwrap_or_default() + config.input.start_timeout;
    let identity = format!("pagecast-{id}");
    let token = crate::livekit::token_for(template, &identity, valid_for)
        .map_err(|e| Outcome::fail(Exit::Config, e))?;
    if let TemplateAuth::Token(given) = &template.auth {
        if let Some(expired) = crate::livekit::expired(given) {
            return Err(Outcome::fail(
                Exit::Input,
                format!("{expired}; give a fresh one"),
            ));
        }
    }
    crate::livekit::preflight(template, &token, config.input.start_timeout)
        .await
        .map_err(|e| Outcome::fail(Exit::Input, e))?;
    let (base, server) = match &template.base_url {
        Some(base) => (base.clone(), None),
        None => {
            let server = crate::layouts::LayoutServer::start().await.map_err(|e| {
                Outcome::fail(
                    Exit::Failed,
                    format!("cannot serve the layouts on 127.0.0.1: {e}"),
                )
            })?;
            (server.base().clone(), Some(server))
        }
    };
    tracing::info!(
        server = %crate::livekit::server_name(&template.ws_url),
        layout = template.layout.as_str(),
        "the LiveKit server accepted the token"
    );
    // Signing anew at every browser start: a restart late in a long recording must not join with
    // an expired token. A given token is what it is.
    let fresh_url = match &template.auth {
        TemplateAuth::ApiKey { .. } => {
            let (template, base) = (template.clone(), base.clone());
            Some(FreshUrl(Rc::new(move || {
                let token = crate::livekit::token_for(&template, &identity, valid_for)
                    .map_err(Failure::crashed)?;
                Ok((
                    crate::livekit::page_url(&base, &template, tracks, &token),
                    token,
                ))
            })))
        }
        TemplateAuth::Token(_) => None,
    };
    Ok(Page {
        fresh_url,
        url: crate::livekit::page_url(&base, template, tracks, &token),
        await_start: Some(AwaitStart {
            limit: config.input.start_timeout,
            missing: missing_media(template),
        }),
        secrets: vec![token],
        _server: server,
    })
}

/// Why a layout's recording never started: nobody in the room, or not the participant or the
/// tracks it records.
fn missing_media(template: &crate::config::Template) -> String {
    let server = crate::livekit::server_name(&template.ws_url);
    match &template.focus {
        None => {
            format!("nobody joined the room (the layout saw no participant's media at {server})")
        }
        Some(Focus::Participant {
            identity,
            screen_share: false,
        }) => format!(
            "participant {identity:?} did not join the room (the layout saw no media of theirs at {server})"
        ),
        Some(Focus::Participant { identity, .. }) => format!(
            "participant {identity:?} shared no screen (the layout saw no screen share of theirs at {server})"
        ),
        Some(Focus::Tracks { .. }) => format!(
            "the tracks asked for were not published (the layout saw neither at {server})"
        ),
    }
}

/// What the tree's end means for the user.
fn judge(
    report: &RecordingReport,
    output: Option<&Path>,
    playable: Option<f64>,
    unchecked: Option<&str>,
    launched: Instant,
) -> Outcome {
    if let Some(failure) = &report.join_error {
        return Outcome::fail(Exit::Output, failure.message.clone());
    }
    if report.segments > 1 {
        tracing::warn!(
            segments = report.segments,
            "the output joins its segments (the encoder restarted, or the recording was paused)"
        );
    }
    match &report.exit {
        TreeExit::Stopped { cause, failures } => {
            if let Some((child, failure)) = failures.first() {
                return Outcome::fail(
                    Exit::for_failure(failure.kind),
                    format!("{child} failed while stopping: {failure}"),
                );
            }
            let Some(first_frame) = report.first_frame else {
                return Outcome::fail(
                    Exit::Failed,
                    format!("stopped ({cause}) before the recording began"),
                );
            };
            let size = output.map(|o| std::fs::metadata(o).map(|m| m.len()).unwrap_or(0));
            if let (Some(output), Some(0)) = (output, size) {
                return Outcome::fail(
                    Exit::Output,
                    format!("{} is missing or empty", output.display()),
                );
            }
            // Never call a file a recording unless a player can read one.
            if let (Some(output), Some(why)) = (output, unchecked) {
                return Outcome::fail(
                    Exit::Output,
                    format!(
                        "cannot check that {} plays ({why}); it is kept as recorded",
                        output.display()
                    ),
                );
            }
            if let (Some(output), false) = (output, playable.is_some_and(|d| d > 0.0)) {
                return Outcome::fail(
                    Exit::Output,
                    format!("{} is not a playable recording", output.display()),
                );
            }
            if let Some(lost) = report.lost_streams.first() {
                let kept = output
                    .map(|o| format!("; the file {} is complete", o.display()))
                    .unwrap_or_default();
                return Outcome::fail(Exit::Output, format!("{lost}{kept}"));
            }
            tracing::info!(
                cause = %cause,
                output = %output.map(|o| o.display().to_string()).unwrap_or_default(),
                bytes = size.unwrap_or(0),
                // The file's length where there is a file (a stop's drain and the finishing
                // are wall time, not recording); else the time since the first frame.
                recorded = ?whole_millis(
                    playable
                        .map(Duration::from_secs_f64)
                        .unwrap_or_else(|| first_frame.elapsed())
                ),
                since_first_frame = ?whole_millis(first_frame.elapsed()),
                started_after = ?first_frame.duration_since(launched),
                "recording complete"
            );
            Outcome {
                exit: Exit::Ok,
                message: String::new(),
            }
        }
        TreeExit::GaveUp { child, reason } => {
            let (exit, child) = match reason {
                // A failure that came up through a subtree names the child it began in.
                ExitReason::Failed(f) => (
                    Exit::for_failure(f.kind),
                    f.origin.as_ref().unwrap_or(child),
                ),
                _ => (Exit::Failed, child),
            };
            Outcome::fail(exit, format!("{child} failed: {reason}"))
        }
        // Waiting for the page's start signal ended without it: the reason says it all
        // ("nobody joined the room", "the page reported: ..."), whichever child was waiting.
        TreeExit::StartFailed { failure, .. } if failure.kind == FailureKind::Input => {
            Outcome::fail(Exit::Input, failure.message.clone())
        }
        TreeExit::StartFailed { child, failure } => Outcome::fail(
            Exit::for_failure(failure.kind),
            format!(
                "{} could not start: {failure}",
                failure.origin.as_ref().unwrap_or(child)
            ),
        ),
    }
}

/// `d` to the millisecond, for a log.
fn whole_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Whether the run recorded something of the page: a frame was encoded, and the page (or, with a
/// start signal, the content it signalled) was there. Such a recording is never removed.
fn recorded(report: &RecordingReport) -> bool {
    report.first_frame.is_some() && report.page_loaded
}

/// Everything that can be refused before a process starts. Returns the output file and this
/// run's claims on its outputs (the file, the HLS and snapshot directories).
fn check_before_start(
    config: &Config,
    overwrite: bool,
) -> Result<(Option<PathBuf>, Vec<Claim>), Outcome> {
    let output = config.output.file.clone();
    check_programs()?;
    let mut claims = Vec::new();
    if let Some(hls) = &config.output.hls {
        if let Err(e) = std::fs::create_dir_all(&hls.directory) {
            return Err(Outcome::fail(
                Exit::Output,
                format!(
                    "output.hls.directory: cannot create {}: {e}",
                    hls.directory.display()
                ),
            ));
        }
        // Segment and playlist names are the same in every run: a directory is one run's.
        claims.extend(claimed(
            Claim::directory(&hls.directory),
            &hls.directory,
            "output.hls.directory",
            "give a fresh directory",
        )?);
        let playlist = hls.directory.join(pagecast_actors::encoder::HLS_PLAYLIST);
        if playlist.exists() {
            return Err(Outcome::fail(
                Exit::Output,
                format!(
                    "output.hls.directory: {} already holds a playlist ({}); give a fresh directory",
                    hls.directory.display(),
                    playlist.display()
                ),
            ));
        }
    }
    if let Some(images) = &config.output.images {
        if let Err(e) = std::fs::create_dir_all(&images.directory) {
            return Err(Outcome::fail(
                Exit::Output,
                format!(
                    "output.images.directory: cannot create {}: {e}",
                    images.directory.display()
                ),
            ));
        }
        // A snapshot's number (both namings) continues from the directory's highest: two runs
        // at once would number into the same range, and one's discard would take the other's
        // images. (The HLS directory's claim covers it when they are one.)
        let same_as_hls = config.output.hls.as_ref().is_some_and(|hls| {
            hls.directory.canonicalize().ok() == images.directory.canonicalize().ok()
        });
        if !same_as_hls {
            claims.extend(claimed(
                Claim::directory(&images.directory),
                &images.directory,
                "output.images.directory",
                "give a fresh directory",
            )?);
        }
    }
    if let Some(output) = &output {
        warn_of_leftovers(output);
        check_output(output)?;
        // Before the check for a finished recording: --overwrite never takes a file that
        // another run is recording right now.
        claims.extend(claimed(
            Claim::file(output),
            output,
            "output.file",
            "give another name, or put {time} or {utc} in output.file for a fresh name each run",
        )?);
        if !overwrite && crate::naming::holds_a_recording(output) {
            return Err(Outcome::fail(
                Exit::Output,
                format!(
                    "output.file: {} already holds a recording; move it away, give --overwrite, \
                     or put {{time}} or {{utc}} in output.file for a fresh name each run",
                    output.display()
                ),
            ));
        }
    }
    Ok((output, claims))
}

/// `taken`, this run's claim on `path`, the output of config `field` (see [`crate::claim`]), or
/// the one-line refusal; `hint` ends it when another run holds the output.
fn claimed(
    taken: Result<Claim, ClaimError>,
    path: &Path,
    field: &str,
    hint: &str,
) -> Result<Option<Claim>, Outcome> {
    match taken {
        Ok(claim) => Ok(Some(claim)),
        // Said, and the recording goes ahead: refusing would make such a filesystem unusable.
        Err(ClaimError::Unsupported(errno)) => {
            tracing::warn!(
                path = %path.display(),
                error = %errno,
                "{field}: the filesystem cannot lock files; another run given the same output at \
                 the same time would not be refused"
            );
            Ok(None)
        }
        Err(ClaimError::Busy) => Err(Outcome::fail(
            Exit::Output,
            format!(
                "{field}: {} is being recorded by another run right now; {hint}",
                path.display()
            ),
        )),
        Err(ClaimError::Io(e)) => Err(Outcome::fail(
            Exit::Output,
            format!("{field}: cannot claim {} for this run: {e}", path.display()),
        )),
    }
}

/// Every program a recording runs is on PATH.
fn check_programs() -> Result<(), Outcome> {
    let missing: Vec<&str> = PROGRAMS
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Outcome::fail(
        Exit::MissingProgram,
        format!(
            "missing programs: {} (install them, e.g. with scripts/setup.sh)",
            missing.join(", ")
        ),
    ))
}

/// The upload supervisor's one child.
const UPLOADER: &str = "uploader";

/// The upload: a one-for-one supervisor over the uploader, beside the recording tree (so the
/// encoder finishes, and segments are joined, before the upload completes). The uploader
/// publishes its address: `finish_upload` asks the supervisor for the one running then.
struct Upload {
    supervisor: Addr<Supervisor>,
    exit: tokio::sync::oneshot::Receiver<TreeExit>,
}

/// `stores`: the primary's and the backup's, from the pre-flight. A restart of the uploader
/// (never: `Intensity::NEVER`) would have none.
fn start_upload(
    mut spec: UploadSpec,
    stores: (Box<dyn Store>, Option<Box<dyn Store>>),
    file: &Path,
) -> Upload {
    spec.file = file.to_path_buf();
    let stores = RefCell::new(Some(stores));
    let child = ChildSpec::publishing(
        UPLOADER,
        Restart::Transient,
        Duration::from_secs(15),
        move |link| {
            let Some((store, backup)) = stores.borrow_mut().take() else {
                return std::future::ready(Err(Failure::crashed("the uploader cannot restart")));
            };
            let addr = UploaderActor::start(spec.clone(), store, backup, link);
            std::future::ready(Ok((addr.clone(), addr)))
        },
    );
    let config = SupervisorConfig {
        name: "upload".into(),
        strategy: Strategy::OneForOne,
        intensity: Intensity::NEVER,
    };
    let (supervisor, exit) = Supervisor::start(config, vec![child]);
    Upload { supervisor, exit }
}

/// A discard: the upload aborted (nothing is completed before `Finish`, so no object was made),
/// the output file and every part of this run beside it removed.
/// `images`: the snapshots' directory and the number of this run's first one (earlier runs'
/// images in the same directory are not this run's to delete).
/// `hls`: the HLS directory and when this run started: its playlists (a run refuses a directory
/// that already holds one, so they are this run's) and the segments written since.
async fn discard_all(
    upload: Option<Upload>,
    dir_uploads: Vec<DirUpload>,
    output: Option<&Path>,
    images: Option<(ImagesSpec, u64)>,
    hls: Option<(&crate::config::Hls, std::time::SystemTime)>,
    id: &str,
) -> Outcome {
    let mut removed = Vec::new();
    if let Some(upload) = upload {
        // Not recorded: the uploader is stopped without Finish and aborts the multipart upload.
        let _ = finish_upload(upload, false, false).await;
        removed.push("the upload (aborted)".to_owned());
    }
    for dir in dir_uploads {
        let to = dir.describe();
        let deleted = dir.discard().await;
        if deleted > 0 {
            removed.push(format!("{deleted} objects under {to}"));
        }
    }
    if let Some(output) = output {
        if std::fs::remove_file(output).is_ok() {
            removed.push(output.display().to_string());
        }
        // Parts of this run (`.<name>.<id>.partN.mp4`) and a join's temporary files.
        let prefix = format!(
            ".{}.{id}.",
            output.file_name().unwrap_or_default().to_string_lossy()
        );
        let dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed.push(entry.path().display().to_string());
            }
        }
    }
    if let Some((images, first)) = images {
        let count = images
            .written_since(first)
            .iter()
            .filter(|path| std::fs::remove_file(path).is_ok())
            .count();
        if count > 0 {
            removed.push(format!("{count} images in {}", images.directory.display()));
        }
    }
    if let Some((hls, since)) = hls {
        let count = hls_files_since(hls, since)
            .iter()
            .filter(|path| std::fs::remove_file(path).is_ok())
            .count();
        if count > 0 {
            removed.push(format!("{count} HLS files in {}", hls.directory.display()));
        }
    }
    let removed = if removed.is_empty() {
        "nothing had been written".to_owned()
    } else {
        format!("removed {}", removed.join(", "))
    };
    tracing::warn!(removed = %removed, message = RECORDING_DISCARDED);
    Outcome::fail(
        Exit::Discarded,
        format!("the recording was discarded on request: {removed}"),
    )
}

/// This run's HLS files: its playlists, and the segments (and the muxer's temporary files)
/// written since `since`.
fn hls_files_since(hls: &crate::config::Hls, since: std::time::SystemTime) -> Vec<PathBuf> {
    let mut playlists = vec![pagecast_actors::encoder::HLS_PLAYLIST.to_owned()];
    playlists.extend(hls.live.iter().map(|l| l.name.clone()));
    let ours = |entry: &std::fs::DirEntry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_segment =
            name.starts_with("segment-") && (name.ends_with(".ts") || name.ends_with(".ts.tmp"));
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified >= since);
        playlists
            .iter()
            .any(|p| name == *p || name == format!("{p}.tmp"))
            || (is_segment && recent)
    };
    std::fs::read_dir(&hls.directory)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| ours(e))
        .map(|e| e.path())
        .collect()
}

/// The copies of the HLS and snapshot directories (`prefix`) into the primary store's bucket or
/// container, with its client; they give up after its `give_up_after`.
fn start_dir_uploads(
    config: &Config,
    objects: std::sync::Arc<dyn pagecast_actors::store::Objects>,
    give_up_after: Duration,
    first_image: u64,
    overwrite: bool,
) -> Vec<DirUpload> {
    let mut uploads = Vec::new();
    // One mark for the run's copies: a segment or image under it is this run's own.
    let mark = (!overwrite).then(pagecast_actors::store::upload_mark);
    let spec = |field, prefix: &str, directory: &Path, kind| DirUploadSpec {
        prefix: prefix.to_owned(),
        directory: directory.to_owned(),
        kind,
        give_up_after,
        field,
        mark: mark.clone(),
    };
    if let Some(hls) = &config.output.hls {
        if let Some(prefix) = &hls.prefix {
            // The live playlist first: see dir_upload.rs.
            let mut playlists: Vec<String> = hls.live.iter().map(|l| l.name.clone()).collect();
            playlists.push(pagecast_actors::encoder::HLS_PLAYLIST.to_owned());
            let kind = DirKind::Hls { playlists };
            uploads.push(DirUpload::start(
                spec(HLS_PREFIX_FIELD, prefix, &hls.directory, kind),
                objects.clone(),
            ));
        }
    }
    if let Some(images) = &config.output.images {
        if let Some(prefix) = &images.prefix {
            let kind = DirKind::Images {
                spec: images_spec(images),
                first: first_image,
            };
            uploads.push(DirUpload::start(
                spec(IMAGES_PREFIX_FIELD, prefix, &images.directory, kind),
                objects.clone(),
            ));
        }
    }
    uploads
}

/// What the encoder is told of `output.images` (its start number is filled in at each start).
fn images_spec(images: &crate::config::Images) -> ImagesSpec {
    ImagesSpec {
        directory: images.directory.clone(),
        every: images.every,
        width: images.width,
        height: images.height,
        start_number: 1,
        format: images.format,
        naming: images.naming,
    }
}

/// Completes the upload if there is a recording to upload, else aborts it.
async fn finish_upload(
    upload: Upload,
    recorded: bool,
    rewritten: bool,
) -> Result<Uploaded, Failure> {
    let result = if recorded {
        // None: no uploader runs (one that stopped is not restarted, and its supervisor, with
        // `Intensity::NEVER`, gives up and is gone too).
        let uploader = upload
            .supervisor
            .send(Published::<Addr<UploaderActor>>::new(UPLOADER))
            .await
            .ok()
            .flatten();
        let finished = match uploader {
            Some(uploader) => uploader.send(Finish { rewritten }).await.ok(),
            None => None,
        };
        finished.unwrap_or_else(|| Err(Failure::crashed("the uploader stopped")))
    } else {
        Err(Failure::crashed("nothing was recorded to upload"))
    };
    upload.supervisor.do_send(StopTree {
        cause: "the upload is over".into(),
    });
    let _ = upload.exit.await;
    result
}

/// Each live output's server accepts a TCP connection, so a wrong host or port is a clear error
/// before anything starts (naming the host, never the key).
async fn reach_stream_servers(streams: &[StreamUrl]) -> Result<(), Outcome> {
    for stream in streams {
        let Ok(url) = url::Url::parse(stream.expose()) else {
            continue; // validated with the config
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url
            .port()
            .unwrap_or(if url.scheme() == "rtmps" { 443 } else { 1935 });
        let connect = tokio::net::TcpStream::connect((host.as_str(), port));
        let error = match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5s".to_owned(),
        };
        return Err(Outcome::fail(
            Exit::Output,
            format!("output.rtmp: cannot reach {host}:{port} for {stream}: {error}"),
        ));
    }
    Ok(())
}

/// The log event naming the parts a killed join left behind.
pub const LEFTOVER_PARTS: &str = "parts of an earlier recording were left here";

/// Parts of an earlier run's recording (a join cut short) are named in one line, never deleted.
fn warn_of_leftovers(output: &Path) {
    let parts = pagecast_actors::join::leftovers(output);
    if !parts.is_empty() {
        let parts: Vec<String> = parts.iter().map(|p| p.display().to_string()).collect();
        tracing::warn!(
            parts = %parts.join(" "),
            "{LEFTOVER_PARTS} (a run killed before joining them): they are kept; join them with \
             ffmpeg's concat demuxer, or move them away"
        );
    }
}

/// The output's directory exists (created if need be) and a file can be created in it.
fn check_output(output: &Path) -> Result<(), Outcome> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let fail = |e: std::io::Error| {
        Outcome::fail(
            Exit::Output,
            format!("output.file: cannot write {}: {e}", output.display()),
        )
    };
    std::fs::create_dir_all(&dir).map_err(fail)?;
    tempfile::Builder::new()
        .prefix(".pagecast-check-")
        .tempfile_in(&dir)
        .map_err(fail)?;
    if output.is_dir() {
        return Err(Outcome::fail(
            Exit::Output,
            format!("output.file: {} is a directory", output.display()),
        ));
    }
    Ok(())
}

fn chromium() -> Result<PathBuf, Outcome> {
    if let Some(path) = std::env::var_os("PAGECAST_CHROMIUM") {
        let path = PathBuf::from(path);
        return find_program(&path.to_string_lossy()).ok_or_else(|| {
            Outcome::fail(
                Exit::MissingProgram,
                format!("PAGECAST_CHROMIUM: {} is not an executable", path.display()),
            )
        });
    }
    CHROMIUM_NAMES
        .iter()
        .find_map(|name| find_program(name))
        .ok_or_else(|| {
            Outcome::fail(
                Exit::MissingProgram,
                "missing programs: chromium (install it, e.g. with scripts/setup.sh)",
            )
        })
}

/// Chromium's sandbox needs user namespaces: unavailable as root and in most containers.
fn no_sandbox() -> bool {
    nix::unistd::geteuid().is_root()
        || std::env::var("PAGECAST_CHROMIUM_NO_SANDBOX").is_ok_and(|v| v == "1" || v == "true")
}

/// Short, unique on this host: process id and a clock reading.
fn recording_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}_{:x}", std::process::id(), nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_refused_by_another_run_fails_and_one_the_filesystem_cannot_take_is_waived() {
        let path = Path::new("/out/rec.mp4");
        let unsupported = Err(ClaimError::Unsupported(nix::errno::Errno::ENOLCK));
        assert!(matches!(
            claimed(unsupported, path, "output.file", "hint"),
            Ok(None)
        ));
        match claimed(
            Err(ClaimError::Busy),
            path,
            "output.file",
            "give another name",
        ) {
            Err(outcome) => {
                assert_eq!(outcome.exit, Exit::Output);
                assert_eq!(
                    outcome.message,
                    "output.file: /out/rec.mp4 is being recorded by another run right now; \
                     give another name"
                );
            }
            Ok(_) => panic!("a busy output was taken"),
        }
    }
}
