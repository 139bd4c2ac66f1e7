//! EncoderActor: turns the display and the sink into an MP4.
//!
//! Owns: one ffmpeg process (own process group, dies with the actor) grabbing the X display
//! (x11grab) and the sink's monitor (pulse), writing H.264 + AAC as fragmented MP4, so a recording
//! cut short by SIGKILL or power loss still plays up to its last fragment (at most 1 s). With live
//! outputs it encodes once and fans out with the tee muxer: the file, plus one MPEG-TS stream per
//! live output to a loopback UDP port, where a relay picks it up. A live leg that fails is dropped
//! (`onfail=ignore`) and never takes the file with it.
//! With a pause switch it follows the recording's pause: a pause ends the running part as a stop
//! would (`q`: the file finished) and leaves the actor with nothing running; a resume starts the
//! next part (the recording joins the parts at the end, so the paused time is cut out).
//! Accepts: [`Shutdown`] (finalize the file: `q` on stdin), [`Kill`]; changes of its pause switch.
//! Sends: [`EncoderProgress`] to its progress recipient (frames, fps, drops, size, speed, every
//! half second); [`ChildExited`](crate::supervision::ChildExited) through its link when ffmpeg
//! dies on its own (a crash) or after it was stopped.
//! Stops: on `Shutdown`, once ffmpeg has encoded what it captured before the stop (its backlog,
//! bounded), written the end of the file and exited (SIGINT, then SIGKILL, if it takes too
//! long), at once when paused; or when ffmpeg exits on its own.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

use crate::audio::AudioInfo;
use crate::display::DisplayInfo;
use crate::events;
use crate::pace::{Change, Pace};
use crate::process::{ChildProcess, Stdout};
use crate::supervision::{ChildLink, ExitReason, Failure, FailureKind, Kill, Shutdown};

/// ffmpeg needs a moment to open its inputs; a first frame later than this is a failure.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Time to write the end of the file after `q`.
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(8);
/// The longest a stop waits for the encoder to finish what it captured before the stop (its
/// backlog, see [`Pace::backlog`]); `q` at once would lose it.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);
/// ffmpeg's `-stats_period`: a progress report every half second.
const REPORT_PERIOD: Duration = Duration::from_millis(500);

/// What and how to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSpec {
    /// The MP4 file, if the recording has one.
    pub output: Option<PathBuf>,
    /// Loopback UDP ports of the relays, one per live output.
    pub relays: Vec<u16>,
    pub width: u32,
    pub height: u32,
    pub framerate: u32,
    /// Scale the output to this size; None keeps the input size.
    pub output_size: Option<(u32, u32)>,
    /// Bits per second.
    pub video_bitrate: u32,
    /// Bits.
    pub video_buffer: u32,
    /// Bits per second.
    pub audio_bitrate: u32,
    pub audio_frequency: u32,
    /// x264 preset.
    pub preset: String,
    /// Snapshots taken from the same capture, beside the encode.
    pub images: Option<ImagesSpec>,
    /// HLS from the same encode.
    pub hls: Option<HlsSpec>,
    /// The page's sound and picture, or one of them.
    pub tracks: Tracks,
}

/// What of the page a recording keeps (`output.audio_only`, `output.video_only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tracks {
    /// Sound and picture.
    #[default]
    Both,
    /// The sound alone. The display is still read, a corner of [`CLOCK_SIZE`] pixels into
    /// ffmpeg's null muxer: its frames remain the encoder's clock (the first frame, the pace, the
    /// backlog at a stop) as in every recording, and no picture is encoded.
    AudioOnly,
    /// The picture alone: the sink's monitor is not read.
    VideoOnly,
}

impl Tracks {
    pub fn video(self) -> bool {
        self != Tracks::AudioOnly
    }

    pub fn audio(self) -> bool {
        self != Tracks::VideoOnly
    }
}

/// The side of the display's corner an audio-only recording reads as its clock.
pub const CLOCK_SIZE: u32 = 16;

/// HLS from the same encode: segments of about `segment` (cut on keyframes) into `directory`.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsSpec {
    pub directory: PathBuf,
    pub segment: Duration,
    pub naming: Naming,
}

/// How written files (HLS segments, snapshots) are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Naming {
    /// Numbered on: `segment-00000.ts`, ...
    #[default]
    Index,
    /// The local time the file was started, to the second, then its index (two segments started
    /// in one second, across an encoder restart, never share a name): `segment-20260131T142501-00007.ts`.
    Timestamp,
}

impl HlsSpec {
    /// The segments' file name pattern (ffmpeg's hls muxer; with `strftime` for timestamps).
    pub fn segment_pattern(&self) -> &'static str {
        match self.naming {
            Naming::Index => "segment-%05d.ts",
            Naming::Timestamp => "segment-%Y%m%dT%H%M%S-%%05d.ts",
        }
    }
}

/// The HLS playlist's name in its directory: an event playlist, closed at the end (VOD).
pub const HLS_PLAYLIST: &str = "index.m3u8";

/// Snapshots of the recorded display: one every `every`, into `directory`, named by `naming`
/// (see [`ImagesSpec::pattern`]), never over an earlier one across encoder restarts and pauses.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagesSpec {
    pub directory: PathBuf,
    pub every: Duration,
    /// A missing side keeps the aspect ratio; both missing: the recorded size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Index naming: the number of the first image this ffmpeg writes. Timestamp naming: the
    /// number of this ffmpeg start. Filled in at each start ([`ImagesSpec::next_number`]).
    pub start_number: u64,
    pub format: ImageFormat,
    pub naming: Naming,
}

/// The snapshots' file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    #[default]
    Jpeg,
    Png,
}

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
        }
    }
}

impl ImagesSpec {
    /// The file name pattern of ffmpeg's image2 muxer for a part whose ffmpeg starts at
    /// `origin`. Index: `image-000001.jpg`, numbered on. Timestamp:
    /// `image-20260131T142501-1-000003.jpg`, the local time the part began (to the second), the
    /// number of the ffmpeg start (1, 2 after a restart or a resume...), then the image's index in
    /// the part: no two images ever share a name. (image2's own `-strftime` named each image by
    /// the second it was written, and wrote over the image before when two were written in one
    /// second, as the last one at a stop often was.)
    pub fn pattern(&self, origin: SystemTime) -> String {
        let ext = self.format.extension();
        match self.naming {
            Naming::Index => format!("image-%06d.{ext}"),
            Naming::Timestamp => format!(
                "image-{}-{}-%06d.{ext}",
                local_stamp(origin),
                self.start_number
            ),
        }
    }

    /// The file name of image `number` with index naming, as [`ImagesSpec::pattern`] makes it
    /// (None with timestamp naming, whose names hold the time of their part's start).
    pub fn index_name(&self, number: u64) -> Option<String> {
        matches!(self.naming, Naming::Index)
            .then(|| format!("image-{number:06}.{}", self.format.extension()))
    }

    /// The number (see `start_number`) that a file name in the directory carries, if it is one
    /// of these images.
    fn number_of(&self, name: &str) -> Option<u64> {
        let stem = name
            .strip_prefix("image-")?
            .strip_suffix(self.format.extension())?
            .strip_suffix('.')?;
        let number = match self.naming {
            Naming::Index => stem,
            Naming::Timestamp => {
                let (rest, index) = stem.rsplit_once('-')?;
                let (stamp, start) = rest.rsplit_once('-')?;
                if stamp.len() != 15
                    || stamp.as_bytes()[8] != b'T'
                    || index.is_empty()
                    || !index.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                start
            }
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        number.parse().ok()
    }

    /// The number after the highest one in the directory (1 if none): the next `start_number`.
    pub fn next_number(&self) -> u64 {
        self.written()
            .into_iter()
            .map(|(n, _)| n)
            .max()
            .map_or(1, |n| n + 1)
    }

    /// The images in the directory with their numbers.
    fn written(&self) -> Vec<(u64, PathBuf)> {
        std::fs::read_dir(&self.directory)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let number = self.number_of(&e.file_name().to_string_lossy())?;
                Some((number, e.path()))
            })
            .collect()
    }

    /// The images numbered `first` or later: this run's, when `first` was
    /// [`next_number`](Self::next_number) at its start.
    pub fn written_since(&self, first: u64) -> Vec<PathBuf> {
        self.written()
            .into_iter()
            .filter(|(n, _)| *n >= first)
            .map(|(_, p)| p)
            .collect()
    }
}

/// Fragmented MP4 (with fragments of 1 s, cut mid-GOP if need be): the most a crash can lose.
pub const MOVFLAGS: &str = "+frag_keyframe+empty_moov+default_base_moof";

/// Message: the encoder's counters, from ffmpeg's `-progress` output.
#[derive(Debug, Clone, Default, PartialEq, Message)]
#[rtype(result = "()")]
pub struct EncoderProgress {
    pub frame: u64,
    pub fps: f64,
    pub drop_frames: u64,
    pub dup_frames: u64,
    pub total_size: u64,
    pub out_time: Duration,
    pub speed: Option<f64>,
    /// The recording is paused: nothing is encoded (the counters are the recording's so far).
    pub paused: bool,
}

/// The full ffmpeg command line (without the program name). `origin`: an instant just before
/// ffmpeg starts, the zero of both inputs' timestamps (see [`input_clock`]).
pub fn ffmpeg_args(
    spec: &EncoderSpec,
    display: &DisplayInfo,
    audio: &AudioInfo,
    origin: SystemTime,
) -> Vec<String> {
    let mut args = crate::process::ffmpeg_prologue(&REPORT_PERIOD.as_secs_f64().to_string());
    let offset = input_clock(origin);
    // Both inputs keep their own timestamps (see `input_clock`).
    args.push("-copyts".into());
    args.extend(["-itsoffset".to_owned(), offset.clone()]);
    args.extend(
        [
            // Bounded input queues: a raw 1080p frame is 8 MiB; a deep queue hides a slow encoder
            // and silently drops its tail at stop.
            "-thread_queue_size",
            "32",
            // The display's probe reads one frame, not 5 MB of them (six at 640x360, two at
            // 720p): with those in the probe's buffer, the first second after a resume (an
            // encoder start) had its sound 93-160 ms early, and within a part sound and picture
            // could move apart by a frame. The pause A/V test (record.rs), alternating: 5 and 3
            // of 9 runs without it, 0 of 7 with it (BENCHMARKS.md).
            "-probesize",
            "32",
            "-f",
            "x11grab",
            "-draw_mouse",
            "0",
            "-framerate",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.push(spec.framerate.to_string());
    args.push("-video_size".into());
    args.push(match spec.tracks {
        Tracks::AudioOnly => format!("{CLOCK_SIZE}x{CLOCK_SIZE}"),
        _ => format!("{}x{}", spec.width, spec.height),
    });
    args.push("-i".into());
    args.push(format!("{}.0+0,0", display.env()));
    if spec.tracks.audio() {
        args.extend(["-itsoffset".to_owned(), offset]);
        args.extend(
            ["-thread_queue_size", "512", "-f", "pulse", "-ac", "2"]
                .iter()
                .map(|s| s.to_string()),
        );
        // The sink's own rate: ffmpeg's pulse input asks for 48 kHz unless told, and PulseAudio
        // then resampled the 44.1 kHz monitor up for ffmpeg to resample it back down (`-ar`),
        // both on the recording's cores.
        args.extend(["-sample_rate".to_owned(), audio.sample_rate.to_string()]);
        args.extend(["-i".to_owned(), audio.monitor()]);
    }
    // Each kept input: its stream, then its encoder's options (the picture first).
    if spec.tracks.video() {
        args.extend(["-map".to_owned(), "0:v".to_owned()]);
        args.extend(video_codec(spec));
    }
    if spec.tracks.audio() {
        args.extend(
            [
                "-map",
                "1:a",
                "-c:a",
                "aac",
                "-b:a",
                &kbit(spec.audio_bitrate),
                "-ar",
                &spec.audio_frequency.to_string(),
                "-af",
                "aresample=async=1",
            ]
            .map(str::to_owned),
        );
    }
    args.extend(
        [
            "-flush_packets",
            "1",
            // The file starts at 0: the first packet's time is taken off every stream alike, so
            // the inputs' offset (`input_clock`) stays.
            "-avoid_negative_ts",
            "make_zero",
        ]
        .map(str::to_owned),
    );
    main_outputs(spec, &mut args);
    if let Some(images) = spec.images.as_ref().filter(|_| spec.tracks.video()) {
        images_output(images, origin, &mut args);
    }
    if spec.tracks == Tracks::AudioOnly {
        // The clock: the display's frames, counted (ffmpeg's reports count the first video
        // stream's frames) and thrown away.
        args.extend(["-map", "0:v", "-c:v", "rawvideo", "-f", "null", "-"].map(str::to_owned));
    }
    args
}

/// A bitrate as ffmpeg takes it: `2976k`.
fn kbit(bits: u32) -> String {
    format!("{}k", bits / 1000)
}

/// The picture's encoder options.
fn video_codec(spec: &EncoderSpec) -> Vec<String> {
    let gop = (spec.framerate * 2).to_string();
    let mut args = Vec::new();
    if let Some((w, h)) = spec.output_size {
        args.push("-vf".into());
        args.push(format!("scale={w}:{h}:flags=bicubic"));
    }
    args.extend(
        [
            "-c:v",
            "libx264",
            "-preset",
            &spec.preset,
            // No lookahead, no B-frames, sliced threads: x264 then holds no frames back. With
            // its default ~0.5 s of delay, ffmpeg reads the sink's audio only as far as the
            // video is encoded, and `q` dropped the last 0.5 s of audio (the audio track was
            // that much shorter). Measured at 1080p30 (BENCHMARKS.md): 13% less CPU for the
            // whole recording, SSIM within 0.002.
            "-tune",
            "zerolatency",
            // 4:2:0: what every player and browser can decode (x11grab's default would be 4:4:4).
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            &kbit(spec.video_bitrate),
            "-maxrate",
            &kbit(spec.video_bitrate),
            "-bufsize",
            &kbit(spec.video_buffer),
            // A keyframe every 2 s: what live ingest servers expect, and where a joined stream can start.
            "-g",
            &gop,
            "-keyint_min",
            &gop,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args
}

/// The file, the live legs and HLS: one output, or a tee of them.
fn main_outputs(spec: &EncoderSpec, args: &mut Vec<String>) {
    // One video time scale for every part of a recording: the join (ffmpeg's concat demuxer)
    // needs the parts' time bases equal, and left to itself the muxer picked 1/15360 for one
    // part and 1/30000 for the next (a joined part then played 1000 times too fast).
    let timescale = (spec.framerate * 1000).to_string();
    match (&spec.output, spec.relays.is_empty() && spec.hls.is_none()) {
        (Some(file), true) => {
            args.extend(
                [
                    "-movflags",
                    MOVFLAGS,
                    "-frag_duration",
                    "1000000",
                    "-video_track_timescale",
                    &timescale,
                    "-f",
                    "mp4",
                    "-y",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            args.push(file_url(file));
        }
        (file, _) => {
            let mut legs = Vec::new();
            if let Some(file) = file {
                // MP4 keeps codec headers out of band; the TS legs get them in band anyway.
                args.extend(["-flags".to_owned(), "+global_header".to_owned()]);
                legs.push(format!(
                    "[f=mp4:movflags={MOVFLAGS}:frag_duration=1000000:video_track_timescale={timescale}:flush_packets=1]{}",
                    tee_escape(&file_url(file))
                ));
            }
            for port in &spec.relays {
                // dump_extra repeats the codec headers at every keyframe: with global headers
                // they are otherwise only at the start, and a relay that reconnects mid-stream
                // could never decode it. localaddr: the sending socket is bound to loopback too
                // (ffmpeg's default is every interface).
                legs.push(format!(
                    "[f=mpegts:onfail=ignore:bsfs/v=dump_extra]udp://127.0.0.1:{port}?pkt_size=1316&localaddr=127.0.0.1"
                ));
            }
            if let Some(hls) = &spec.hls {
                let dir = &hls.directory;
                // An event playlist: players read it live while it grows; `q` closes it with
                // ENDLIST (the VOD playlist). An encoder restarted (or resumed) finds the
                // playlist there and carries it on (append_list: the numbering goes on too)
                // after a discontinuity tag (discont_start).
                // dump_extra: each segment starts with the codec headers.
                let carry_on = if dir.join(HLS_PLAYLIST).exists() {
                    "+append_list+discont_start"
                } else {
                    ""
                };
                // strftime: segments named by the time they start, then their index (`%%05d`,
                // second_level_segment_index), Naming::Timestamp.
                let strftime = match hls.naming {
                    Naming::Index => "",
                    Naming::Timestamp => "+second_level_segment_index:strftime=1",
                };
                legs.push(format!(
                    "[f=hls:hls_time={}:hls_playlist_type=event:hls_flags=independent_segments{carry_on}{strftime}:hls_segment_filename={}:bsfs/v=dump_extra]{}",
                    hls.segment.as_secs_f64(),
                    tee_escape(&dir.join(hls.segment_pattern()).to_string_lossy()),
                    tee_escape(&dir.join(HLS_PLAYLIST).to_string_lossy()),
                ));
            }
            args.extend(["-f".to_owned(), "tee".to_owned(), legs.join("|")]);
        }
    }
}

/// The snapshots: a second output of the same ffmpeg, the same capture, its own (JPEG) encoder.
fn images_output(images: &ImagesSpec, origin: SystemTime, args: &mut Vec<String>) {
    let mut filter = format!("fps=1/{}", images.every.as_secs_f64());
    if images.width.is_some() || images.height.is_some() {
        let side = |v: Option<u32>| v.map_or("-2".to_owned(), |v| v.to_string());
        filter.push_str(&format!(
            ",scale={}:{}:flags=bicubic",
            side(images.width),
            side(images.height)
        ));
    }
    args.extend(["-map", "0:v", "-vf", &filter].map(str::to_owned));
    match images.format {
        // Full-range YUV, as JPEG viewers expect.
        ImageFormat::Jpeg => {
            args.extend(["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"].map(str::to_owned))
        }
        ImageFormat::Png => args.extend(["-c:v", "png", "-pix_fmt", "rgb24"].map(str::to_owned)),
    }
    // Atomic: each image appears under its name complete (the S3 copy relies on it).
    args.extend(["-f", "image2", "-atomic_writing", "1"].map(str::to_owned));
    // Index: numbered on from the part's number. Timestamp: the part's images from 1.
    let first = match images.naming {
        Naming::Index => images.start_number,
        Naming::Timestamp => 1,
    };
    args.extend(["-start_number".to_owned(), first.to_string()]);
    args.push(file_url(&images.directory.join(images.pattern(origin))));
}

/// `at` in local time to the second, `20260131T142501` (UTC if the local time is unknown).
fn local_stamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    crate::civil::format(&crate::civil::local(secs), "", "T")
}

/// The `-itsoffset` of both inputs: minus `origin`, in seconds since the epoch.
///
/// x11grab and pulse both stamp what they capture with the wall clock (pulse minus the source's
/// latency). Left to itself ffmpeg moves each input to start at 0 on its own, so the sound was
/// shifted by the time between the first frame and the first audio packet: ffmpeg opens pulse
/// only after it has probed x11grab, which read frames until it had 5 MB (the default
/// probesize), i.e. six frames at 640x360 and one at 1080p (now one at every size:
/// `-probesize`). Measured with the benchmark's A/V page: the sound came
/// 190 ms early at 640x360 and 35-68 ms at 1080p; with both inputs on one clock (`-copyts`,
/// this offset on each, and the muxer's `make_zero`), 38 ms at 640x360 and mostly 40 ms at
/// 1080p, up to 97 ms on a loaded machine (BENCHMARKS.md).
pub fn input_clock(origin: SystemTime) -> String {
    let since = origin
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("-{}.{:06}", since.as_secs(), since.subsec_micros())
}

/// Why ffmpeg could not write `output`, if that is why it stopped: the disk is full or
/// read-only, writing is forbidden, or the directory is gone. Decided by writing a little into the
/// output's directory (the file system's own answer), else by what ffmpeg said (`report`): the
/// disk may have been freed since.
pub fn output_failure(output: &Path, report: &str) -> Option<Failure> {
    use std::io::{ErrorKind, Write as _};
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let written = tempfile::Builder::new()
        .prefix(".pagecast-check-")
        .tempfile_in(dir)
        .and_then(|mut f| {
            f.as_file_mut().write_all(&[0; 64 * 1024])?;
            f.as_file().sync_all()
        });
    let cause = match written.err().map(|e| e.kind()) {
        Some(ErrorKind::StorageFull) => "no space left on device".to_owned(),
        Some(ErrorKind::ReadOnlyFilesystem) => "read-only file system".to_owned(),
        Some(ErrorKind::PermissionDenied) => "permission denied".to_owned(),
        Some(ErrorKind::NotFound) => format!("{} is gone", dir.display()),
        _ => [
            ("No space left on device", "no space left on device"),
            ("Read-only file system", "read-only file system"),
        ]
        .into_iter()
        .find(|(text, _)| report.contains(text))?
        .1
        .to_owned(),
    };
    Some(Failure::new(
        FailureKind::Output,
        format!("cannot write {}: {cause}", output.display()),
    ))
}

/// A file name as ffmpeg must read it: through the `file:` protocol, so that no name is ever taken
/// for another protocol (`http:…`, `tcp:…`).
pub fn file_url(path: &std::path::Path) -> String {
    format!("file:{}", path.to_string_lossy())
}

/// Escapes what the tee muxer reads as syntax in a file name.
fn tee_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '|' | '[' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Where an encoder tells what it encoded.
#[derive(Clone, Default)]
pub struct EncoderReports {
    /// Its counters, at each report.
    pub progress: Option<Recipient<EncoderProgress>>,
    /// The recording's first frame: set at the first report with a frame, then moved earlier
    /// while later reports tell it more exactly (see [`first_frame_at`]). An encoder restarted or
    /// resumed later never moves it: its own frames all come after.
    pub first_frame: Option<watch::Sender<Option<Instant>>>,
}

impl EncoderReports {
    /// Only counters: an encoder on its own, not part of a recording.
    pub fn progress(to: Option<Recipient<EncoderProgress>>) -> Self {
        EncoderReports {
            progress: to,
            first_frame: None,
        }
    }
}

/// How an encoder follows its recording's pause switch ([`PauseSwitch`](crate::pause::PauseSwitch)).
#[derive(Clone)]
pub struct PauseControl {
    /// `true` while the recording is paused.
    pub paused: watch::Receiver<bool>,
    /// The file of the next part (the recording's next segment), asked for at each resume.
    pub next_part: Rc<dyn Fn() -> Option<PathBuf>>,
}

impl std::fmt::Debug for PauseControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PauseControl")
            .field("paused", &*self.paused.borrow())
            .finish()
    }
}

impl PauseControl {
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }
}

/// A change of the pause switch (stream item).
struct PauseChanged;

/// Progress of one ffmpeg run (stream item), tagged with the run it came from.
/// A run's progress report; None: its reports ended (ffmpeg closed its stdout, after the last).
struct RunProgress(u64, Option<EncoderProgress>);

pub struct EncoderActor {
    link: ChildLink,
    spec: EncoderSpec,
    display: DisplayInfo,
    audio: AudioInfo,
    /// The file the running ffmpeg writes, if any.
    output: Option<PathBuf>,
    /// None while paused.
    ffmpeg: Option<ChildProcess>,
    stdin: Option<ChildStdin>,
    /// Which ffmpeg run is current: an exit or progress of an earlier run (ended by a pause) is
    /// ignored.
    run: u64,
    pause: Option<PauseControl>,
    /// A resumed ffmpeg has not encoded its first frame yet.
    resuming: bool,
    progress_to: Option<Recipient<EncoderProgress>>,
    /// The recording's first frame (see [`EncoderReports`]).
    first_frame: Option<watch::Sender<Option<Instant>>>,
    /// Given the first frame's instant once it is encoded (see [`first_frame_at`]).
    ready: Option<oneshot::Sender<Instant>>,
    /// The current run's last counters.
    last: EncoderProgress,
    /// The counters of the runs this actor ended on pause: the status counts the whole recording.
    before: EncoderProgress,
    /// Whether it keeps up with real time.
    pace: Pace,
    /// (when, encoded time) of the current run's last report with a frame, for a stop's drain.
    encoded: watch::Sender<(Instant, Duration)>,
    /// The last run whose reports have all come (its final counters are in `last`).
    reported: watch::Sender<u64>,
    /// A pause waits for the encoder's backlog (see [`Drain`]) before it ends the part.
    draining: bool,
    stopping: bool,
}

fn spawn_ffmpeg(
    spec: &EncoderSpec,
    display: &DisplayInfo,
    audio: &AudioInfo,
) -> Result<(ChildProcess, Option<ChildStdout>), Failure> {
    let mut spec = spec.clone();
    if let Some(images) = &mut spec.images {
        images.start_number = images.next_number();
    }
    let mut cmd = Command::new("ffmpeg");
    cmd.args(ffmpeg_args(&spec, display, audio, SystemTime::now()))
        .env("PULSE_SERVER", &audio.server)
        // Ask the sink's monitor for small fragments: ffmpeg's audio then starts at once.
        .env("PULSE_LATENCY_MSEC", "20")
        .env("DISPLAY", display.env());
    ChildProcess::spawn("ffmpeg", cmd, true, Stdout::Capture).map_err(|e| e.into_failure())
}

/// A stop's wait for the encoder's backlog: `q` drops ffmpeg's input queues, so what they hold
/// is lost unless it is encoded first.
struct Drain {
    /// The encoded time that holds everything captured before the stop.
    target: Duration,
    /// The longest it waits ([`DRAIN_LIMIT`]).
    limit: Duration,
    /// (when, encoded time) of the run's last progress report.
    encoded: watch::Receiver<(Instant, Duration)>,
}

impl Drain {
    /// Waits until the encoder has (about) reached the target, at most `limit`; what was still
    /// not encoded then (at least: as if it encoded at real time since its last report).
    async fn wait(mut self) -> Duration {
        let deadline = tokio::time::Instant::now() + self.limit;
        let target = self.target;
        // Reports come every half second: from the one within half a second of the target, the
        // rest is waited out on the clock (the encoder runs at about real time when it is not
        // far behind).
        let near = self.encoded.wait_for(|(_, t)| *t + REPORT_PERIOD >= target);
        let _ = tokio::time::timeout_at(deadline, near).await;
        let rest = |encoded: &watch::Receiver<(Instant, Duration)>| {
            let (at, encoded) = *encoded.borrow();
            target.saturating_sub(encoded + at.elapsed())
        };
        let until = (tokio::time::Instant::now() + rest(&self.encoded)).min(deadline);
        tokio::time::sleep_until(until).await;
        rest(&self.encoded)
    }
}

/// What a drain did not get to, if anything.
fn say_tail_lost(lost: Duration) {
    if !lost.is_zero() {
        tracing::warn!(
            lost_ms = lost.as_millis() as u64,
            advice = "the encoder was this far behind the page when it stopped: lower the \
                      resolution or frame rate, or use a faster preset",
            "{}",
            events::ENCODER_TAIL_LOST
        );
    }
}

/// `q` on ffmpeg's stdin: it stops reading, flushes the encoder and writes the end of the file.
/// First the `drain`, if the encoder is behind: `q` drops its input queues. SIGINT if it has not
/// exited within [`FINALIZE_TIMEOUT`] of the `q`, SIGKILL 2 s later.
fn finish_ffmpeg(
    ffmpeg: &ChildProcess,
    stdin: Option<ChildStdin>,
    drain: Option<Drain>,
) -> impl std::future::Future<Output = std::process::ExitStatus> + 'static {
    let exited = ffmpeg.exited();
    let died = ffmpeg.exited();
    let pid = ffmpeg.pid();
    let kill_after = ffmpeg.wait_or_kill(Duration::from_secs(2));
    async move {
        if let Some(drain) = drain {
            tokio::select! {
                lost = drain.wait() => say_tail_lost(lost),
                _ = died => {}
            }
        }
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(b"q").await;
            let _ = stdin.flush().await;
        }
        match tokio::time::timeout(FINALIZE_TIMEOUT, exited).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(pid, "ffmpeg did not finish after q; interrupting it");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGINT,
                );
                kill_after.await
            }
        }
    }
}

impl EncoderProgress {
    /// These counters after `before`'s (speed and fps are the current run's).
    fn after(&self, before: &EncoderProgress) -> EncoderProgress {
        EncoderProgress {
            frame: before.frame + self.frame,
            drop_frames: before.drop_frames + self.drop_frames,
            dup_frames: before.dup_frames + self.dup_frames,
            total_size: before.total_size + self.total_size,
            out_time: before.out_time + self.out_time,
            ..self.clone()
        }
    }
}

impl EncoderActor {
    /// Starts ffmpeg; resolves once the first frame has been encoded.
    pub async fn start(
        spec: &EncoderSpec,
        display: &DisplayInfo,
        audio: &AudioInfo,
        progress_to: Option<Recipient<EncoderProgress>>,
        link: ChildLink,
    ) -> Result<Addr<EncoderActor>, Failure> {
        let reports = EncoderReports::progress(progress_to);
        let (addr, _) = Self::start_pausable(spec, display, audio, reports, None, link).await?;
        Ok(addr)
    }

    /// Like [`start`](Self::start), following a pause switch: while it says paused, no ffmpeg
    /// runs (an encoder started while paused is ready at once, with nothing running).
    /// `spec.output` is the first part's file; the next ones come from `pause.next_part`.
    /// Also gives the instant of the first frame (see [`first_frame_at`]; the start's when
    /// nothing runs).
    pub async fn start_pausable(
        spec: &EncoderSpec,
        display: &DisplayInfo,
        audio: &AudioInfo,
        reports: EncoderReports,
        pause: Option<PauseControl>,
        link: ChildLink,
    ) -> Result<(Addr<EncoderActor>, Instant), Failure> {
        let paused = pause.as_ref().is_some_and(PauseControl::is_paused);
        let (ready_tx, ready_rx) = oneshot::channel();
        let mut actor = EncoderActor {
            link,
            spec: spec.clone(),
            display: *display,
            audio: audio.clone(),
            output: None,
            ffmpeg: None,
            stdin: None,
            run: 0,
            pause,
            resuming: false,
            progress_to: reports.progress,
            first_frame: reports.first_frame,
            ready: Some(ready_tx),
            last: EncoderProgress::default(),
            before: EncoderProgress::default(),
            pace: Pace::default(),
            encoded: watch::channel((Instant::now(), Duration::ZERO)).0,
            reported: watch::channel(0).0,
            draining: false,
            stopping: false,
        };
        if paused {
            actor.ready = None;
            tracing::info!("encoder started while the recording is paused: nothing is encoded until it resumes");
            return Ok((EncoderActor::create(|_| actor), Instant::now()));
        }
        let (ffmpeg, stdout) = spawn_ffmpeg(spec, display, audio)?;
        let report = ffmpeg.exit_report();
        let addr = EncoderActor::create(|ctx| {
            actor.attach(ctx, ffmpeg, stdout, spec.output.clone());
            actor
        });
        let failure = tokio::select! {
            ready = ready_rx => match ready {
                Ok(first_frame) => {
                    tracing::info!(
                        output = %spec.output.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                        live_outputs = spec.relays.len(),
                        first_frame_ms_ago = first_frame.elapsed().as_millis() as u64,
                        message = crate::events::ENCODER_RUNNING
                    );
                    return Ok((addr, first_frame));
                }
                // The actor stopped before the first frame because ffmpeg exited.
                Err(_) => {
                    let report = report.await.1;
                    spec.output
                        .as_deref()
                        .and_then(|o| output_failure(o, &report))
                        .unwrap_or_else(|| Failure::crashed(format!("encoder failed to start: {report}")))
                }
            },
            _ = tokio::time::sleep(READY_TIMEOUT) => Failure::new(
                FailureKind::Timeout,
                format!("encoder: ffmpeg encoded no frame within {READY_TIMEOUT:?}"),
            ),
        };
        addr.do_send(Kill);
        Err(failure)
    }

    /// Makes `ffmpeg` (writing `output`) the current run: its progress and its exit are followed.
    fn attach(
        &mut self,
        ctx: &mut Context<Self>,
        mut ffmpeg: ChildProcess,
        stdout: Option<ChildStdout>,
        output: Option<PathBuf>,
    ) {
        self.run += 1;
        let run = self.run;
        self.stdin = ffmpeg.take_stdin();
        if let Some(stdout) = stdout {
            let end = futures_util::stream::once(std::future::ready(RunProgress(run, None)));
            ctx.add_stream(
                progress_stream(stdout)
                    .map(move |p| RunProgress(run, Some(p)))
                    .chain(end),
            );
        }
        ctx.spawn(actix::fut::wrap_future(ffmpeg.exit_report()).map(
            move |(_, report), act: &mut Self, ctx| {
                if act.run == run && !act.stopping {
                    // A file that cannot be written is not fixed by a restart (which would only
                    // make empty segments): an output failure, at once.
                    let failure = act
                        .output
                        .as_deref()
                        .and_then(|o| output_failure(o, &report))
                        .unwrap_or_else(|| Failure::crashed(format!("encoder lost: {report}")));
                    act.link.set_exit(ExitReason::Failed(failure));
                    ctx.stop();
                }
            },
        ));
        self.ffmpeg = Some(ffmpeg);
        self.output = output;
    }

    /// Brings the encoder to what the pause switch says: ends the running part, or starts the next.
    fn follow_switch(&mut self, ctx: &mut Context<Self>) {
        let Some(paused) = self.pause.as_ref().map(PauseControl::is_paused) else {
            return;
        };
        if self.stopping {
            return;
        }
        match (paused, self.ffmpeg.is_some()) {
            (true, true) => self.pause(ctx),
            (false, false) => self.resume(ctx),
            _ => {}
        }
    }

    /// Ends the running part as a stop would (the file finished); the actor stays, with nothing
    /// running, until the recording resumes or stops.
    fn pause(&mut self, ctx: &mut Context<Self>) {
        if self.ffmpeg.is_none() || self.draining {
            return;
        }
        let Some(drain) = self.drain() else {
            return self.pause_now(ctx);
        };
        // First the backlog, with this run's reports still coming in (the part must hold what
        // was shown up to the pause); the switch may have changed, or a stop come, meanwhile.
        self.draining = true;
        ctx.spawn(
            actix::fut::wrap_future(drain.wait()).map(|lost, act: &mut Self, ctx| {
                act.draining = false;
                say_tail_lost(lost);
                let paused = act.pause.as_ref().is_some_and(PauseControl::is_paused);
                if paused && !act.stopping {
                    act.pause_now(ctx);
                }
            }),
        );
    }

    /// The pause itself: `q`, the part finished.
    fn pause_now(&mut self, ctx: &mut Context<Self>) {
        let Some(ffmpeg) = self.ffmpeg.take() else {
            return;
        };
        // Its exit is expected now: the exit watcher of this run must not report it.
        self.run += 1;
        self.resuming = false;
        // A pause during the start: the start is over, with nothing running.
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Instant::now());
        }
        let finish = finish_ffmpeg(&ffmpeg, self.stdin.take(), None);
        let part = self.output.take();
        // `wait`: nothing else (a stop, a resume) is handled before the part is finished.
        ctx.wait(
            actix::fut::wrap_future(async move {
                let status = finish.await;
                (status, ffmpeg.describe_exit(status))
            })
            .map(move |(status, described), act: &mut Self, ctx| {
                act.before = act.last.after(&act.before);
                act.last = EncoderProgress::default();
                let part = part.map(|p| p.display().to_string()).unwrap_or_default();
                if !status.success() {
                    tracing::warn!(
                        part = %part,
                        "the part ended by the pause was not finished cleanly ({described}); it plays up to its last fragment"
                    );
                }
                tracing::info!(
                    part = %part,
                    recorded = ?act.before.out_time,
                    message = crate::events::RECORDING_PAUSED
                );
                if let Some(to) = &act.progress_to {
                    to.do_send(EncoderProgress {
                        paused: true,
                        fps: 0.0,
                        speed: None,
                        ..act.before.clone()
                    });
                }
                act.follow_switch(ctx);
            }),
        );
    }

    /// Starts the next part; the resume is logged at its first frame.
    fn resume(&mut self, ctx: &mut Context<Self>) {
        let output = self.pause.as_ref().and_then(|p| (p.next_part)());
        let mut spec = self.spec.clone();
        spec.output = output.clone();
        match spawn_ffmpeg(&spec, &self.display, &self.audio) {
            Ok((ffmpeg, stdout)) => {
                self.attach(ctx, ffmpeg, stdout, output);
                self.pace.new_run();
                self.encoded.send_replace((Instant::now(), Duration::ZERO));
                self.resuming = true;
                let run = self.run;
                ctx.run_later(READY_TIMEOUT, move |act, ctx| {
                    if act.run == run && act.resuming && !act.stopping {
                        act.link.set_exit(ExitReason::Failed(Failure::new(
                            FailureKind::Timeout,
                            format!("encoder: ffmpeg encoded no frame within {READY_TIMEOUT:?} after the resume"),
                        )));
                        ctx.stop();
                    }
                });
            }
            Err(failure) => {
                self.link.set_exit(ExitReason::Failed(failure));
                ctx.stop();
            }
        }
    }

    /// What a stop (or pause) now waits for before `q`: the encoder to have encoded all it
    /// captured before now (None: it is not behind by a frame).
    fn drain(&self) -> Option<Drain> {
        let backlog = self.pace.backlog();
        if backlog.as_secs_f64() * f64::from(self.spec.framerate) < 1.0 {
            return None;
        }
        let target = self.pace.encoded_by(Instant::now())?;
        tracing::info!(
            backlog_ms = backlog.as_millis() as u64,
            "{}",
            events::ENCODER_DRAINING
        );
        Some(Drain {
            target,
            limit: DRAIN_LIMIT,
            encoded: self.encoded.subscribe(),
        })
    }

    fn on_progress(&mut self, p: EncoderProgress) {
        if p.frame > 0 {
            // The main output's video, by its frames: constant frame rate, so frame n is at
            // n / rate. (`out_time` is the furthest of every output's streams: the snapshots'
            // output, one image a second, ran up to a second ahead of the file and made a
            // backlog that was not there.)
            let now = Instant::now();
            let encoded = Duration::from_secs_f64(p.frame as f64 / f64::from(self.spec.framerate));
            self.pace.encoded(now, encoded);
            self.encoded.send_replace((now, encoded));
            let first = first_frame_at(now, p.frame, self.spec.framerate);
            if let Some(recording) = &self.first_frame {
                recording.send_if_modified(|at| match at {
                    Some(at) if *at <= first => false,
                    _ => {
                        if let Some(was) = at.replace(first) {
                            tracing::debug!(
                                earlier_ms = (was - first).as_millis() as u64,
                                "the recording's first frame dated back by a later report"
                            );
                        }
                        true
                    }
                });
            }
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(first);
            }
            if self.resuming {
                self.resuming = false;
                tracing::info!(
                    part = %self.output.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                    message = crate::events::RECORDING_RESUMED
                );
            }
        }
        match self.pace.report(Instant::now(), p.out_time, p.drop_frames) {
            Some(Change::Behind {
                speed,
                dropped,
                backlog,
            }) => tracing::warn!(
                speed,
                dropped,
                backlog_ms = backlog.as_millis() as u64,
                advice = "the recording will be shorter than the wall time: lower the resolution \
                          or frame rate, or use a faster preset",
                "{}",
                events::ENCODER_FALLING_BEHIND
            ),
            Some(Change::CaughtUp { speed }) => {
                tracing::info!(speed, "{}", events::ENCODER_CAUGHT_UP)
            }
            None => {}
        }
        if let Some(to) = &self.progress_to {
            to.do_send(p.after(&self.before));
        }
        self.last = p;
    }
}

/// When the first frame was captured, from a report: `frames` frames encoded by `now`. Frame n
/// is captured (n − 1) / rate after the first, and encoded after its capture, so
/// `now − (frames − 1) / rate` is never before the first frame, and later by the encoder's
/// backlog at `now` only: the least over the reports is the best. (The first report comes up to
/// a report period after the first frame, and more while x264 warms up, with a frame or two
/// encoded and the capture queued: counting from it made `max_duration` files that long too.)
fn first_frame_at(now: Instant, frames: u64, framerate: u32) -> Instant {
    let since = Duration::from_secs(frames.saturating_sub(1)) / framerate.max(1);
    now.checked_sub(since).unwrap_or(now)
}

/// Parses ffmpeg's `-progress` key=value blocks into one message per block.
fn progress_stream(stdout: ChildStdout) -> impl futures_util::Stream<Item = EncoderProgress> {
    let lines = BufReader::new(stdout).lines();
    futures_util::stream::unfold(
        (lines, EncoderProgress::default()),
        |(mut lines, mut p)| async move {
            loop {
                let line = lines.next_line().await.ok()??;
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let value = value.trim();
                match key {
                    "frame" => p.frame = value.parse().unwrap_or(p.frame),
                    "fps" => p.fps = value.parse().unwrap_or(p.fps),
                    "drop_frames" => p.drop_frames = value.parse().unwrap_or(p.drop_frames),
                    "dup_frames" => p.dup_frames = value.parse().unwrap_or(p.dup_frames),
                    "total_size" => p.total_size = value.parse().unwrap_or(p.total_size),
                    "out_time_us" => {
                        if let Ok(us) = value.parse::<u64>() {
                            p.out_time = Duration::from_micros(us);
                        }
                    }
                    "speed" => p.speed = value.trim_end_matches('x').trim().parse().ok(),
                    "progress" => {
                        let block = p.clone();
                        return Some((block, (lines, p)));
                    }
                    _ => {}
                }
            }
        },
    )
}

impl StreamHandler<RunProgress> for EncoderActor {
    fn handle(&mut self, RunProgress(run, p): RunProgress, _: &mut Context<Self>) {
        match p {
            Some(p) if run == self.run => self.on_progress(p),
            Some(_) => {}
            None => {
                self.reported.send_replace(run);
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // stdout closes when ffmpeg exits; the exit watcher reports it.
    }
}

impl StreamHandler<PauseChanged> for EncoderActor {
    fn handle(&mut self, _: PauseChanged, ctx: &mut Context<Self>) {
        self.follow_switch(ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The switch was dropped with its recording: nothing more to follow.
    }
}

impl Actor for EncoderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(pause) = &self.pause {
            let changes = futures_util::stream::unfold(pause.paused.clone(), |mut rx| async move {
                rx.changed().await.ok()?;
                Some((PauseChanged, rx))
            });
            ctx.add_stream(changes);
            // A pause that came while this encoder was starting.
            self.follow_switch(ctx);
        }
    }
}

impl Handler<Shutdown> for EncoderActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let Some(ffmpeg) = &self.ffmpeg else {
            // Paused: every part is finished already.
            tracing::info!(
                frames = self.before.frame,
                duration = ?self.before.out_time,
                "encoder stopped while paused; every part is finished"
            );
            self.link.set_exit(ExitReason::Shutdown);
            ctx.stop();
            return Box::pin(actix::fut::ready(Ok(())));
        };
        let stop = finish_ffmpeg(ffmpeg, self.stdin.take(), self.drain());
        // ffmpeg's last report (the file's whole length, every dropped frame) comes as it exits.
        let (run, mut reported) = (self.run, self.reported.subscribe());
        let stop = async move {
            let status = stop.await;
            let last = reported.wait_for(|r| *r >= run);
            let _ = tokio::time::timeout(Duration::from_millis(500), last).await;
            status
        };
        Box::pin(
            actix::fut::wrap_future(stop).map(|status, act: &mut Self, ctx| {
                let total = act.last.after(&act.before);
                let result = if status.success() {
                    tracing::info!(
                        frames = total.frame,
                        dropped = total.drop_frames,
                        duplicated = total.dup_frames,
                        bytes = total.total_size,
                        // The main output's video, by its frames (constant rate): `out_time` is
                        // the furthest of every output's streams, and read 3.47 s of a 4.09 s
                        // file with a snapshots output.
                        duration = ?(Duration::from_secs(total.frame)
                            / act.spec.framerate.max(1)),
                        message = crate::events::ENCODER_FINISHED
                    );
                    act.link.set_exit(ExitReason::Shutdown);
                    Ok(())
                } else {
                    let described = act
                        .ffmpeg
                        .as_ref()
                        .map(|f| f.describe_exit(status))
                        .unwrap_or_default();
                    let failure = Failure::new(
                        FailureKind::Output,
                        format!("encoder did not finish the file: {described}"),
                    );
                    act.link.set_exit(ExitReason::Failed(failure.clone()));
                    Err(failure)
                };
                ctx.stop();
                result
            }),
        )
    }
}

impl Handler<Kill> for EncoderActor {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.stopping = true;
        self.link.set_exit(ExitReason::Shutdown);
        if let Some(ffmpeg) = &self.ffmpeg {
            ffmpeg.signal(nix::sys::signal::Signal::SIGKILL);
        }
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_name_is_the_pattern_s_and_reads_back_as_its_number() {
        let mut images = ImagesSpec {
            directory: "/shots".into(),
            every: Duration::from_secs(2),
            width: None,
            height: None,
            start_number: 1,
            format: ImageFormat::Png,
            naming: Naming::Index,
        };
        let name = images.index_name(7).unwrap();
        assert_eq!(name, "image-000007.png");
        assert_eq!(images.pattern(origin()).replace("%06d", "000007"), name);
        assert_eq!(images.number_of(&name), Some(7));
        images.naming = Naming::Timestamp;
        assert_eq!(images.index_name(7), None);
    }

    #[test]
    fn the_first_frame_is_dated_back_by_the_frames_of_the_first_report() {
        let now = Instant::now() + Duration::from_secs(10);
        // 7 frames at 10 fps by now: the first was captured 0.6 s before.
        assert_eq!(first_frame_at(now, 7, 10), now - Duration::from_millis(600));
        // One frame: it is the first.
        assert_eq!(first_frame_at(now, 1, 30), now);
        assert_eq!(first_frame_at(now, 0, 30), now);
        // 31 at 30 fps: one second.
        assert_eq!(first_frame_at(now, 31, 30), now - Duration::from_secs(1));
    }

    /// Reports from a task: every 50 ms, `speed` encoded seconds per second from `from`.
    fn reporting(from: Duration, speed: f64) -> watch::Receiver<(Instant, Duration)> {
        let (tx, rx) = watch::channel((Instant::now(), from));
        tokio::spawn(async move {
            let start = Instant::now();
            while !tx.is_closed() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let t = from + start.elapsed().mul_f64(speed);
                tx.send_replace((Instant::now(), t));
            }
        });
        rx
    }

    #[actix_rt::test]
    async fn a_stop_waits_until_the_encoder_has_what_was_captured_before_it() {
        let start = Instant::now();
        let drain = Drain {
            target: Duration::from_secs(5),
            limit: Duration::from_secs(30),
            // Half a second behind, at real time: half a second to wait.
            encoded: reporting(Duration::from_millis(4500), 1.0),
        };
        let lost = drain.wait().await;
        let waited = start.elapsed();
        assert!(lost.is_zero(), "lost {lost:?}");
        assert!(
            waited >= Duration::from_millis(450) && waited < Duration::from_secs(10),
            "waited {waited:?} for half a second of backlog"
        );
    }

    #[actix_rt::test]
    async fn a_stop_waits_no_longer_than_its_limit_and_says_what_is_lost() {
        let start = Instant::now();
        let drain = Drain {
            target: Duration::from_secs(5),
            limit: Duration::from_millis(300),
            // 2 s behind, at a tenth of real time: it will not get there.
            encoded: reporting(Duration::from_secs(3), 0.1),
        };
        let lost = drain.wait().await;
        assert!(start.elapsed() >= Duration::from_millis(300));
        // At most the 2 s it was behind, at least what a real-time encoder would have left.
        assert!(
            lost > Duration::from_millis(1500) && lost <= Duration::from_secs(2),
            "lost {lost:?}"
        );
    }

    fn spec() -> EncoderSpec {
        EncoderSpec {
            output: Some("/out/x.mp4".into()),
            relays: vec![],
            width: 1280,
            height: 720,
            framerate: 30,
            output_size: Some((640, 360)),
            video_bitrate: 2_976_000,
            video_buffer: 5_952_000,
            audio_bitrate: 128_000,
            audio_frequency: 44_100,
            preset: "veryfast".into(),
            images: None,
            hls: None,
            tracks: Tracks::Both,
        }
    }

    #[test]
    fn the_local_stamp_is_a_date_and_a_time_to_the_second() {
        let stamp = local_stamp(origin());
        assert_eq!(stamp.len(), 15, "{stamp}");
        assert!(
            stamp
                .char_indices()
                .all(|(i, c)| if i == 8 { c == 'T' } else { c.is_ascii_digit() }),
            "{stamp}"
        );
        // 2026-11-30 00:53 UTC: November in any time zone.
        assert!(stamp.starts_with("202611"), "{stamp}");
        assert_ne!(local_stamp(origin() + Duration::from_secs(1)), stamp);
    }

    fn origin() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_000_000_000_042)
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn the_sound_alone_or_the_picture_alone_is_encoded() {
        let audio = AudioInfo {
            server: "unix:/x/native".into(),
            sink: "pagecast_1".into(),
            sample_rate: 44_100,
        };
        let display = DisplayInfo { number: 7 };
        let mut sound = spec();
        sound.tracks = Tracks::AudioOnly;
        sound.hls = Some(HlsSpec {
            directory: "/out/hls".into(),
            segment: Duration::from_secs(4),
            naming: Naming::Index,
        });
        let args = ffmpeg_args(&sound, &display, &audio, origin());
        // The display is read as the clock, a corner of it, into the null muxer; the outputs
        // get the sound alone.
        assert_eq!(after(&args, "-i"), [":7.0+0,0", "pagecast_1.monitor"]);
        assert_eq!(after(&args, "-video_size"), ["16x16"]);
        assert_eq!(after(&args, "-map"), ["1:a", "0:v"]);
        assert_eq!(after(&args, "-c:a"), ["aac"]);
        assert_eq!(after(&args, "-c:v"), ["rawvideo"]);
        for picture in ["-vf", "-b:v", "-preset", "-g"] {
            assert!(after(&args, picture).is_empty(), "{picture} in {args:?}");
        }
        assert!(args.ends_with(&["-f", "null", "-"].map(str::to_owned)));
        let tee = args.iter().position(|a| a == "tee").unwrap();
        assert!(tee < args.iter().position(|a| a == "null").unwrap());

        let mut picture = spec();
        picture.tracks = Tracks::VideoOnly;
        let args = ffmpeg_args(&picture, &display, &audio, origin());
        assert_eq!(after(&args, "-i"), [":7.0+0,0"]);
        assert_eq!(after(&args, "-map"), ["0:v"]);
        assert_eq!(after(&args, "-itsoffset"), ["-1796000000.000042"]);
        for sound in ["-c:a", "-b:a", "-af", "pulse"] {
            assert!(!args.iter().any(|a| a == sound), "{sound} in {args:?}");
        }
        assert_eq!(after(&args, "-video_size"), ["1280x720"]);
        assert_eq!(args.last().unwrap(), "file:/out/x.mp4");
    }

    #[test]
    fn ffmpeg_arguments_follow_the_spec() {
        let audio = AudioInfo {
            server: "unix:/x/native".into(),
            sink: "pagecast_1".into(),
            sample_rate: 44_100,
        };
        let args = ffmpeg_args(&spec(), &DisplayInfo { number: 7 }, &audio, origin());
        assert_eq!(after(&args, "-i"), [":7.0+0,0", "pagecast_1.monitor"]);
        assert_eq!(after(&args, "-video_size"), ["1280x720"]);
        assert_eq!(after(&args, "-framerate"), ["30"]);
        assert_eq!(after(&args, "-vf"), ["scale=640:360:flags=bicubic"]);
        assert_eq!(after(&args, "-pix_fmt"), ["yuv420p"]);
        assert_eq!(after(&args, "-tune"), ["zerolatency"]);
        assert_eq!(after(&args, "-b:v"), ["2976k"]);
        assert_eq!(after(&args, "-maxrate"), ["2976k"]);
        assert_eq!(after(&args, "-bufsize"), ["5952k"]);
        assert_eq!(after(&args, "-b:a"), ["128k"]);
        assert_eq!(after(&args, "-ar"), ["44100"]);
        assert_eq!(after(&args, "-sample_rate"), ["44100"]);
        assert_eq!(after(&args, "-g"), ["60"]);
        assert_eq!(after(&args, "-thread_queue_size"), ["32", "512"]);
        // The display's probe reads one frame; the option is the display input's, not pulse's.
        assert_eq!(after(&args, "-probesize"), ["32"]);
        let first_input = args.iter().position(|a| a == "-i").unwrap();
        let probe = args.iter().position(|a| a == "-probesize").unwrap();
        let x11grab = args.iter().position(|a| a == "x11grab").unwrap();
        assert!(probe < x11grab && x11grab < first_input);
        // Both inputs on one clock: the same offset before each, timestamps kept, zero at the
        // first packet.
        assert!(args.contains(&"-copyts".to_owned()));
        assert_eq!(
            after(&args, "-itsoffset"),
            ["-1796000000.000042", "-1796000000.000042"]
        );
        let second_offset = args.iter().rposition(|a| a == "-itsoffset").unwrap();
        assert!(
            first_input < second_offset
                && second_offset < args.iter().rposition(|a| a == "-i").unwrap()
        );
        assert_eq!(after(&args, "-avoid_negative_ts"), ["make_zero"]);
        assert!(after(&args, "-movflags")[0].contains("frag_keyframe"));
        assert_eq!(after(&args, "-video_track_timescale"), ["30000"]);
        assert_eq!(args.last().unwrap(), "file:/out/x.mp4");

        let mut live = spec();
        live.relays = vec![5000, 5001];
        live.output = Some("/out/a|b.mp4".into());
        let args = ffmpeg_args(&live, &DisplayInfo { number: 7 }, &audio, origin());
        assert_eq!(after(&args, "-f")[2..], ["tee"]);
        assert_eq!(
            args.last().unwrap(),
            "[f=mp4:movflags=+frag_keyframe+empty_moov+default_base_moof:frag_duration=1000000:video_track_timescale=30000:flush_packets=1]file:/out/a\\|b.mp4\
             |[f=mpegts:onfail=ignore:bsfs/v=dump_extra]udp://127.0.0.1:5000?pkt_size=1316&localaddr=127.0.0.1\
             |[f=mpegts:onfail=ignore:bsfs/v=dump_extra]udp://127.0.0.1:5001?pkt_size=1316&localaddr=127.0.0.1"
        );
        assert_eq!(after(&args, "-flags"), ["+global_header"]);
        live.output = None;
        let args = ffmpeg_args(&live, &DisplayInfo { number: 7 }, &audio, origin());
        assert!(after(&args, "-flags").is_empty());
        assert!(!args.last().unwrap().contains("mp4"));

        let mut hls = spec();
        let hls_dir = tempfile::tempdir().unwrap();
        hls.hls = Some(HlsSpec {
            directory: hls_dir.path().to_owned(),
            segment: Duration::from_secs(2),
            naming: Naming::Index,
        });
        let last = |spec: &EncoderSpec| {
            ffmpeg_args(spec, &DisplayInfo { number: 7 }, &audio, origin())
                .last()
                .unwrap()
                .clone()
        };
        let leg = last(&hls);
        assert!(
            leg.contains(
                "|[f=hls:hls_time=2:hls_playlist_type=event:hls_flags=independent_segments:"
            ),
            "{leg}"
        );
        assert!(leg.ends_with("/index.m3u8"), "{leg}");
        // A restarted encoder finds its playlist and carries it on.
        std::fs::write(hls_dir.path().join(HLS_PLAYLIST), "#EXTM3U\n").unwrap();
        assert!(last(&hls).contains("hls_flags=independent_segments+append_list+discont_start:"));
        // Named by time: strftime patterns.
        hls.hls.as_mut().unwrap().naming = Naming::Timestamp;
        let leg = last(&hls);
        assert!(
            leg.contains(
                "+discont_start+second_level_segment_index:strftime=1:hls_segment_filename="
            ) && leg.contains("/segment-%Y%m%dT%H%M%S-%%05d.ts:"),
            "{leg}"
        );

        let mut shots = spec();
        shots.images = Some(ImagesSpec {
            directory: "/shots".into(),
            every: Duration::from_secs(2),
            width: Some(320),
            height: None,
            start_number: 7,
            format: ImageFormat::Jpeg,
            naming: Naming::Index,
        });
        let args = ffmpeg_args(&shots, &DisplayInfo { number: 7 }, &audio, origin());
        assert_eq!(
            after(&args, "-vf"),
            [
                "scale=640:360:flags=bicubic",
                "fps=1/2,scale=320:-2:flags=bicubic"
            ]
        );
        assert_eq!(after(&args, "-start_number"), ["7"]);
        assert_eq!(args.last().unwrap(), "file:/shots/image-%06d.jpg");
        assert_eq!(after(&args, "-c:v")[1], "mjpeg");
        let dir = tempfile::tempdir().unwrap();
        let mut images = shots.images.clone().unwrap();
        images.directory = dir.path().to_owned();
        assert_eq!(images.next_number(), 1);
        std::fs::write(dir.path().join("image-000009.jpg"), b"").unwrap();
        std::fs::write(dir.path().join("image-x.jpg"), b"").unwrap();
        std::fs::write(dir.path().join("image-000012.png"), b"").unwrap();
        assert_eq!(images.next_number(), 10);
        // PNG, named by the part's start time, the number of the ffmpeg start, then the index.
        images.format = ImageFormat::Png;
        images.naming = Naming::Timestamp;
        assert_eq!(images.next_number(), 1);
        images.start_number = 3;
        shots.images = Some(images.clone());
        let args = ffmpeg_args(&shots, &DisplayInfo { number: 7 }, &audio, origin());
        assert_eq!(after(&args, "-c:v")[1], "png");
        assert!(after(&args, "-strftime").is_empty());
        assert_eq!(after(&args, "-start_number"), ["1"]);
        assert_eq!(
            args.last().unwrap(),
            &format!(
                "file:{}/image-{}-3-%06d.png",
                dir.path().display(),
                local_stamp(origin())
            )
        );
        for name in [
            "image-20260131T142501-2-000001.png",
            "image-20260131T142501-2-000002.png",
            "image-20260131T142509-4-000001.png",
            "image-20260131T142509-4-000001.jpg",
            "image-20260131-142509-9-000001.png",
            "image-20260131T142509-9.png",
            "image-20260131T142509-9-x.png",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(images.next_number(), 5);
        let mut since = images.written_since(3);
        since.sort();
        assert_eq!(
            since,
            [dir.path().join("image-20260131T142509-4-000001.png")]
        );
        assert_eq!(images.written_since(1).len(), 3);

        let mut same_size = spec();
        same_size.output_size = None;
        assert!(after(
            &ffmpeg_args(&same_size, &DisplayInfo { number: 7 }, &audio, origin()),
            "-vf"
        )
        .is_empty());
    }
}
