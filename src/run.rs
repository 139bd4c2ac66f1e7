//! One recording, from a validated config to an exit code.
//!
//! Checks what can be checked before anything starts (outputs this version can write, programs
//! on PATH, a writable output directory), starts the recording tree with its controls (signals,
//! control lines: `controls.rs`), and turns how the tree ended into one line
//! for the user and an [`Exit`] code. Success means a finished, non-empty file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use pagecast_actors::display::DisplaySpec;
use pagecast_actors::encoder::EncoderSpec;
use pagecast_actors::events::RECORDING_DISCARDED;
use pagecast_actors::join::Probe;
use pagecast_actors::page_proxy::PageProxy;
use pagecast_actors::process::find_program;
use pagecast_actors::recording::{AwaitStart, FreshUrl, Recording, RecordingReport, RecordingSpec};
use pagecast_actors::secret::Secret;
use pagecast_actors::secret::StreamUrl;
use pagecast_actors::supervision::{
    ChildSpec, Failure, Intensity, Restart, StopTree, Strategy, Supervisor, SupervisorConfig,
};
use pagecast_actors::supervision::{ExitReason, FailureKind, TreeExit};
use pagecast_actors::uploader::{Finish, S3Target, UploadSpec, UploaderActor};
use std::cell::RefCell;
use std::rc::Rc;

use crate::cli::Keep;
use crate::config::{Config, Source, TemplateAuth};
use crate::exit::Exit;
use crate::logging::{clear_status_line, status_line, LogFormat};
use crate::policy::{host_resolver_rules, Pin, Policy};
use crate::status::StatusActor;

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
/// The log event of a completed S3 object (field: bytes): the service reads it.
pub const S3_OBJECT_COMPLETE: &str = "S3 object complete";

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
    // {time}, {utc}, {room_name} in the names: filled in once, at the start.
    let config = crate::naming::resolve(config, std::time::SystemTime::now());
    // Listened for at once: a pause asked for during the pre-flight must not end the run
    // (SIGUSR1's default action); it is refused once the recording runs, before its first frame.
    let early_signals = crate::controls::EarlySignals::listen();
    let output = match check_before_start(&config, keep.overwrite) {
        Ok(output) => output,
        Err(outcome) => return outcome,
    };
    // With --overwrite, a run that records nothing must not take the old file with it either.
    let replaces = output
        .as_deref()
        .is_some_and(crate::naming::holds_a_recording);
    if let Err(outcome) = reach_stream_servers(&config.output.rtmp).await {
        return outcome;
    }
    let id = recording_id();
    // A LiveKit room: the token, then the server's word on it, before anything starts.
    let page = match page_to_record(&config, &id).await {
        Ok(page) => page,
        Err(outcome) => return outcome,
    };
    // S3 is checked before anything starts: a wrong key or bucket must not cost a recording.
    let s3 = match &config.output.s3 {
        Some(s3) => {
            let target = s3_target(s3);
            match pagecast_actors::uploader::preflight(&target, keep.overwrite).await {
                Ok(client) => Some((s3.clone(), target, client)),
                Err(failure) => return Outcome::fail(Exit::Output, failure.message),
            }
        }
        None => None,
    };
    // Without a file output, S3 uploads a local file of its own, removed once the object is
    // complete (kept, and named, if the upload fails). In --keep-dir, not in the working
    // directory: that one goes.
    let keep_local = output.is_some();
    let output = match (output, &s3) {
        (Some(file), _) => Some(file),
        (None, Some(_)) => match upload_file(keep.keep_dir.as_deref()) {
            Ok(file) => Some(file),
            Err(outcome) => return outcome,
        },
        (None, None) => None,
    };
    let chromium = match chromium() {
        Ok(path) => path,
        Err(outcome) => return outcome,
    };
    // An untrusted page's subresources, frames, fetches and sockets name any host they like:
    // they reach only what the policy lets a page reach. (A LiveKit layout is pagecast's own page.)
    let proxy = match (policy, &config.input.source) {
        (Some(policy), Source::Url(_)) => match PageProxy::start(policy.page_allow()).await {
            Ok(proxy) => Some(proxy),
            Err(e) => {
                return Outcome::fail(Exit::Failed, format!("cannot start the page proxy: {e}"))
            }
        },
        _ => None,
    };
    crate::reaper::reap(&std::env::temp_dir());
    let work_dir = match tempfile::Builder::new().prefix("pagecast-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            return Outcome::fail(
                Exit::Failed,
                format!("cannot create a working directory: {e}"),
            )
        }
    };
    if let Err(e) = crate::reaper::mark(work_dir.path()) {
        tracing::warn!(error = %e, "cannot mark the working directory; a kill would leave it behind");
    }
    let url = &page.url;
    let spec =
        RecordingSpec {
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
            host_resolver_rules: host_resolver_rules(&pins),
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
                // superfast rather than veryfast: 11% less CPU for the whole recording at no lower
                // SSIM against a lossless reference, measured at 1080p30 (BENCHMARKS.md).
                preset: "superfast".into(),
                hls: config
                    .output
                    .hls
                    .as_ref()
                    .map(|h| (h.directory.clone(), h.segment)),
                images: config.output.images.as_ref().map(|i| {
                    pagecast_actors::encoder::ImagesSpec {
                        directory: i.directory.clone(),
                        every: i.every,
                        width: i.width,
                        height: i.height,
                        start_number: 1,
                    }
                }),
            },
            streams: config.output.rtmp.clone(),
            stream_retry_for: config.output.rtmp_retry_for,
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
        live_outputs = %config.output.rtmp.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
        size = %format!("{}x{}", config.input.width, config.input.height),
        fps = config.input.framerate,
        "recording"
    );
    let status = StatusActor::new(status_line(log_format)).start();
    let launched = Instant::now();
    // This run's snapshots are numbered from here (after an earlier run's in the same directory).
    let first_image = config.output.images.as_ref().map_or(1, |i| {
        pagecast_actors::encoder::next_image_number(&i.directory)
    });
    let recording = match Recording::start(spec, Some(status.recipient())) {
        Ok(recording) => recording,
        Err(failure) => return Outcome::fail(Exit::Failed, failure.message),
    };
    let upload = match (&s3, &output) {
        (Some((s3, target, client)), Some(file)) => Some(start_upload(s3, target, client, file)),
        _ => None,
    };
    let discard = crate::controls::Discard::default();
    let signals = actix::spawn(crate::controls::follow(
        recording.stopper(),
        recording.pause_switch(),
        early_signals,
        discard.clone(),
        keep.stdin_control,
        crate::controls::Changes {
            live: recording.live_outputs(),
            policy: policy.cloned(),
            layout: matches!(config.input.source, Source::Template(_))
                .then(|| recording.layout_switch()),
        },
    ));
    let report = recording.finished().await;
    let stopped = Instant::now();
    signals.abort();
    clear_status_line();
    if discard.get() {
        let images = config
            .output
            .images
            .as_ref()
            .map(|i| (i.directory.as_path(), first_image));
        return discard_all(upload, output.as_deref(), images, &id).await;
    }
    let playable = match &output {
        Some(path) => match pagecast_actors::join::probe(path).await {
            Probe::Plays(seconds) => Some(seconds),
            Probe::NoFrame => None,
            Probe::Unknown(why) => {
                tracing::warn!(output = %path.display(), reason = %why, "cannot probe the recording");
                None
            }
        },
        None => None,
    };
    let mut outcome = judge(&report, output.as_deref(), playable, launched);
    // Where the recording is, for the user: the object, else the local file.
    let mut kept = output
        .as_ref()
        .filter(|_| keep_local)
        .map(|f| f.display().to_string());
    if let (Some(upload), Some(file)) = (upload, &output) {
        let uploaded = finish_upload(upload, playable.is_some(), report.segments > 1).await;
        match uploaded {
            Ok(bytes) => {
                tracing::info!(bytes, stop_to_complete = ?stopped.elapsed(), "{S3_OBJECT_COMPLETE}");
                let object = s3
                    .as_ref()
                    .map(|(s3, ..)| format!("s3://{}/{}", s3.bucket, s3.key));
                kept = match kept {
                    Some(file) => Some(format!("{file} and {}", object.unwrap_or_default())),
                    None => object,
                };
                if !keep_local {
                    let _ = std::fs::remove_file(file);
                }
            }
            Err(failure) => {
                tracing::error!(error = %failure, "S3 upload failed");
                if recorded(&report) {
                    kept = Some(file.display().to_string());
                }
                if outcome.exit == Exit::Ok {
                    outcome = Outcome::fail(Exit::Output, failure.message);
                } else {
                    outcome.message = format!("{}; the S3 upload failed too", outcome.message);
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
                Ok((crate::livekit::page_url(&base, &template, &token), token))
            })))
        }
        TemplateAuth::Token(_) => None,
    };
    Ok(Page {
        fresh_url,
        url: crate::livekit::page_url(&base, template, &token),
        await_start: Some(AwaitStart {
            limit: config.input.start_timeout,
            missing: format!(
                "nobody joined the room (the layout saw no participant's media at {})",
                crate::livekit::server_name(&template.ws_url)
            ),
        }),
        secrets: vec![token],
        _server: server,
    })
}

/// What the tree's end means for the user.
fn judge(
    report: &RecordingReport,
    output: Option<&Path>,
    playable: Option<f64>,
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
                recorded = ?Duration::from_millis(first_frame.elapsed().as_millis() as u64),
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

/// Whether the run recorded something of the page: a frame was encoded, and the page (or, with a
/// start signal, the content it signalled) was there. Such a recording is never removed.
fn recorded(report: &RecordingReport) -> bool {
    report.first_frame.is_some() && report.page_loaded
}

/// Everything that can be refused before a process starts. Returns the output file.
fn check_before_start(config: &Config, overwrite: bool) -> Result<Option<PathBuf>, Outcome> {
    let output = config.output.file.clone();
    let missing: Vec<&str> = PROGRAMS
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(Outcome::fail(
            Exit::MissingProgram,
            format!(
                "missing programs: {} (install them, e.g. with scripts/setup.sh)",
                missing.join(", ")
            ),
        ));
    }
    if let Some(hls) = &config.output.hls {
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
        if let Err(e) = std::fs::create_dir_all(&hls.directory) {
            return Err(Outcome::fail(
                Exit::Output,
                format!(
                    "output.hls.directory: cannot create {}: {e}",
                    hls.directory.display()
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
    }
    if let Some(output) = &output {
        warn_of_leftovers(output);
        check_output(output)?;
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
    Ok(output)
}

fn s3_target(s3: &crate::config::S3Output) -> S3Target {
    S3Target {
        bucket: s3.bucket.clone(),
        key: s3.key.clone(),
        region: s3.region.clone(),
        endpoint: s3
            .endpoint
            .as_ref()
            .map(|e| e.as_str().trim_end_matches('/').to_owned()),
        force_path_style: s3.force_path_style,
        access_key: s3.access_key.clone(),
        secret: s3.secret.clone(),
        session_token: s3.session_token.clone(),
    }
}

/// The upload: a one-for-one supervisor over the uploader, beside the recording tree (so the
/// encoder finishes, and segments are joined, before the upload completes).
struct Upload {
    supervisor: Addr<Supervisor>,
    exit: tokio::sync::oneshot::Receiver<TreeExit>,
    uploader: Rc<RefCell<Option<Addr<UploaderActor>>>>,
}

fn start_upload(
    s3: &crate::config::S3Output,
    target: &S3Target,
    client: &aws_sdk_s3::Client,
    file: &Path,
) -> Upload {
    let spec = UploadSpec {
        target: target.clone(),
        file: file.to_path_buf(),
        part_size: s3.part_size,
        give_up_after: s3.give_up_after,
    };
    let uploader: Rc<RefCell<Option<Addr<UploaderActor>>>> = Rc::default();
    let cell = uploader.clone();
    let client = client.clone();
    let child = ChildSpec::new(
        "uploader",
        Restart::Transient,
        Duration::from_secs(15),
        move |link| {
            let addr = UploaderActor::start(spec.clone(), client.clone(), link);
            *cell.borrow_mut() = Some(addr.clone());
            std::future::ready(Ok(addr))
        },
    );
    let config = SupervisorConfig {
        name: "upload".into(),
        strategy: Strategy::OneForOne,
        intensity: Intensity::NEVER,
    };
    let (supervisor, exit) = Supervisor::start(config, vec![child]);
    Upload {
        supervisor,
        exit,
        uploader,
    }
}

/// A discard: the upload aborted (nothing is completed before `Finish`, so no object was made),
/// the output file and every part of this run beside it removed.
/// `images`: the snapshots' directory and the number of this run's first one (earlier runs'
/// images in the same directory are not this run's to delete).
async fn discard_all(
    upload: Option<Upload>,
    output: Option<&Path>,
    images: Option<(&Path, u64)>,
    id: &str,
) -> Outcome {
    let mut removed = Vec::new();
    if let Some(upload) = upload {
        // Not recorded: the uploader is stopped without Finish and aborts the multipart upload.
        let _ = finish_upload(upload, false, false).await;
        removed.push("the S3 upload (aborted)".to_owned());
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
    if let Some((dir, first)) = images {
        let last = pagecast_actors::encoder::next_image_number(dir);
        let count = (first..last)
            .filter(|n| std::fs::remove_file(dir.join(format!("image-{n:06}.jpg"))).is_ok())
            .count();
        if count > 0 {
            removed.push(format!("{count} images in {}", dir.display()));
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

/// Completes the upload if there is a recording to upload, else aborts it.
async fn finish_upload(upload: Upload, recorded: bool, rewritten: bool) -> Result<u64, Failure> {
    let uploader = upload.uploader.borrow().clone();
    let result = match (recorded, uploader) {
        (true, Some(uploader)) => uploader
            .send(Finish { rewritten })
            .await
            .unwrap_or_else(|_| Err(Failure::crashed("the uploader stopped"))),
        _ => Err(Failure::crashed("nothing was recorded to upload")),
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
