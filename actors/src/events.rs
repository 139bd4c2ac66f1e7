//! The log events other code and tests wait on, named once.
//!
//! Each is the `message` of one log line; a test that waits for one uses the constant, so a
//! reworded message cannot leave a test waiting for a line that never comes.

/// The page is there in the browser: its document parsed (DOMContentLoaded), its subresources
/// perhaps still arriving (logged on every browser start).
pub const PAGE_LOADED: &str = "page loaded";
/// The page showed its content before its document was parsed (its parser waits for a slow
/// script): from here the recording holds the page and is kept, as after [`PAGE_LOADED`].
pub const PAGE_PAINTED: &str = "page painted before its document was parsed";
/// ffmpeg encoded its first frame (logged on every encoder start, restarts included).
pub const ENCODER_RUNNING: &str = "encoder running";
/// A child process asked to stop did not exit within its grace and was killed (fields: process,
/// grace). A clean stop never logs it.
pub const KILLED_AFTER_GRACE: &str = "did not exit in time, killing it";
/// An encoder run finished its file or part (fields: frames, dropped, duplicated, bytes,
/// duration).
pub const ENCODER_FINISHED: &str = "encoder finished the file";
/// A supervisor restarts a child (fields: supervisor, child, cause, strategy).
pub const RESTARTING: &str = "restarting";
/// A live output (RTMP) is connected.
pub const LIVE_STREAM_CONNECTED: &str = "live stream connected";
/// A live output dropped and is being reconnected.
pub const LIVE_STREAM_DROPPED: &str = "live stream dropped; reconnecting";
/// A directory (HLS, snapshots) is completely copied to the store (fields: field, objects, to).
pub const DIRECTORY_UPLOADED: &str = "directory uploaded";
/// A directory copy's put failed; it is tried again at the next look (fields: target_dir, error;
/// once per outage).
pub const DIRECTORY_UPLOAD_RETRYING: &str = "uploading a directory failed; retrying";
/// A live output was added while recording (field: url, masked).
pub const LIVE_STREAM_ADDED: &str = "live stream added";
/// A live output was removed while recording; its stream ended (field: url, masked).
pub const LIVE_STREAM_REMOVED: &str = "live stream removed";
/// A LiveKit layout page switched its layout while recording (field: layout).
pub const LAYOUT_SWITCHED: &str = "layout switched";
/// The page asked for the recording to end.
pub const PAGE_ENDED: &str = "the page logged END_RECORDING";
/// The page asked for the recording to start.
pub const PAGE_STARTED: &str = "the page logged START_RECORDING: recording starts";
/// A pause ended the running part: nothing is encoded until the resume (fields: part, recorded).
pub const RECORDING_PAUSED: &str = "recording paused";
/// The first frame after a resume was encoded, into the next part (field: part).
pub const RECORDING_RESUMED: &str = "recording resumed";
/// A discarded recording's output, parts and upload were deleted (field: removed).
pub const RECORDING_DISCARDED: &str = "recording discarded";
/// A part of the recording reached its store (fields: part, bytes, uploaded).
pub const UPLOADED_PART: &str = "uploaded part";
/// A call to the store failed; it is retried (fields: call, target, error).
pub const UPLOAD_RETRYING: &str = "a store call failed; retrying";
/// The upload to the recording's store gave up; the whole recording goes to the backup store
/// instead (fields: primary, backup, error).
pub const BACKUP_STORAGE_USED: &str = "upload gave up; the recording goes to the backup store";
/// The encoder is falling behind real time (fields: speed over the last seconds, frames dropped
/// in them); the service takes no job while one of its recordings is.
pub const ENCODER_FALLING_BEHIND: &str = "encoder is falling behind real time";
/// The encoder is back at real time after falling behind.
pub const ENCODER_CAUGHT_UP: &str = "encoder caught up with real time";
/// A stop or pause found the encoder behind the page (field: backlog_ms); it is given that long
/// (up to a limit) to encode what was captured before the stop.
pub const ENCODER_DRAINING: &str = "encoder finishes what it captured before stopping";
/// The encoder was further behind than a stop waits for: the end of the recording (field:
/// lost_ms) was never encoded.
pub const ENCODER_TAIL_LOST: &str = "encoder stopped before the end of what it captured";

/// A browser started its audio output ahead of its page, on its first start (field: state, the
/// audio context's, `running` when it played). See `AUDIO_AHEAD` in `browser.rs`.
pub const BROWSER_AUDIO_AHEAD: &str = "browser audio started ahead of the page";

/// A warm tree (`record --warm`) is up to its browser on a blank page and waits for its job's
/// config on standard input.
pub const WARM_TREE_READY: &str = "warm tree ready: waiting for a job";

// The recording service's own events.

/// The warm pool starts a warm tree (fields: pid, size). After a job started, only once its page
/// is loaded (or a few seconds later): see `src/service/runner.rs`, `REFILL_HOLD`.
pub const WARM_TREE_STARTING: &str = "warm tree starting";

/// A job was handed to a warm tree (fields: job, pid, waited: how long the tree had been ready).
pub const JOB_TOOK_WARM_TREE: &str = "job took a warm tree";
/// A job started a recording from nothing: no warm tree fitted or was ready (fields: job, why).
pub const JOB_COLD_START: &str = "job cold start";
/// A warm tree stops to make room for a job that does not take it (fields: pid, job); the pool
/// is that much smaller until the job ends.
pub const WARM_TREE_GAVE_WAY: &str = "a warm tree stops to make room for a job";
/// A warm tree of the pool died before a job took it; another is started (fields: pid, report).
pub const WARM_TREE_LOST: &str = "warm tree lost; starting another";

/// `serve` measured how fast this machine is against the cost model's (fields: cost_factor,
/// cpu_seconds, reference_cpu_seconds): every job's expected cores are scaled by the factor.
pub const MACHINE_CALIBRATED: &str = "machine calibrated: job costs scaled by its cost factor";
/// An idle worker measures its machine again (`serve --recalibrate-every`); no job is taken until
/// `MACHINE_CALIBRATED` (or a warning that it failed).
pub const MACHINE_CALIBRATING: &str = "measuring the machine again while no recording runs";
/// A job at the head of the queue does not fit in what is left of this worker (fields: job,
/// why); logged once per job while it waits.
pub const JOB_WAITS_FOR_CAPACITY: &str = "job waits for capacity";
/// A recording here fell behind real time: the worker takes no job until it catches up.
pub const WORKER_OVERLOADED: &str =
    "worker overloaded: taking no jobs until its recordings keep up";
/// Every recording here keeps up again: the worker takes jobs again.
pub const WORKER_RECOVERED: &str = "worker recovered: taking jobs again";
/// A recording's process tree used more CPU than its share (fields: job, pid, cores, allowed):
/// its browser's threads run at the lowest priority until it ends (`src/service/cpu_share.rs`).
pub const RECORDING_PUT_LAST: &str =
    "recording used more than its share of the CPU: its browser runs at the lowest priority now";
/// The service's egress API accepts requests (field: addr).
pub const API_LISTENING: &str = "egress API listening";
/// A LiveKit recording waits for its room to be created (fields: room, server).
pub const WAITING_FOR_ROOM: &str = "waiting for the room to exist";
