//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

/// Record a live web page (with its sound) to an MP4 file.
///
/// The config is JSON, read from --config FILE or from the LIVEKIT_RECORDER_CONFIG environment
/// variable. With that variable set and no command, pagecast records (the container's default).
/// A recording ends on SIGTERM/SIGINT (docker stop, Ctrl-C), when the page logs exactly
/// END_RECORDING to its console, or after max_duration; the file is always finished first.
///
/// Exit codes: 0 recorded; 1 a part failed; 2 bad config or usage; 3 a program is missing;
/// 4 the input failed (page, LiveKit room, Redis); 5 the output could not be written;
/// 130 second signal.
#[derive(Debug, Parser)]
#[command(name = "pagecast", version, about, long_about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,

    /// Log filter, e.g. "info", "debug", "pagecast=debug" (PAGECAST_LOG overrides it).
    #[arg(long, default_value = "info", global = true)]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record what a config says.
    Record {
        /// The config file (JSON), or - for standard input; without it, LIVEKIT_RECORDER_CONFIG
        /// is read.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config and print what it would record, without starting anything.
    Check {
        /// The config file (JSON), or - for standard input; without it, LIVEKIT_RECORDER_CONFIG
        /// is read.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the recording service: take recording jobs from a Redis queue, several at once, each
    /// in a `pagecast record` process of its own; many machines can share one queue. SIGTERM
    /// stops taking jobs and finishes the running recordings. The job protocol is in the README.
    Serve {
        /// The Redis server.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// The queue's name: every key starts with it.
        #[arg(long, default_value = "pagecast")]
        queue: String,
        /// Recordings at once on this machine (default: one per two cores, at least one).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_recordings: Option<u32>,
        /// This worker's name (default: <hostname>-<pid>).
        #[arg(long)]
        worker_id: Option<String>,
        /// How long a worker may be silent before others take its jobs over.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, hide = true)]
        heartbeat_ttl: std::time::Duration,
    },
    /// Put a recording job on a service's queue (what `LPUSH <queue>:jobs` does, checked first):
    /// the config is validated as `check` does, the job's state set to `queued`, and its id
    /// printed.
    Submit {
        /// The Redis server.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// The queue's name.
        #[arg(long, default_value = "pagecast")]
        queue: String,
        /// The job's id (1 to 128 of A-Z a-z 0-9 . _ -); default: made up and printed.
        #[arg(long)]
        id: Option<String>,
        /// The config file (JSON), or - for standard input; without it, LIVEKIT_RECORDER_CONFIG
        /// is read.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Record the bundled demo page (motion and a tone) to a local MP4. Needs no server.
    Demo {
        /// Where to write the recording.
        #[arg(long, short, default_value = "recordings/demo.mp4")]
        output: PathBuf,
        /// How long to record, e.g. "10s", "1m".
        #[arg(long, short, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Page width in pixels.
        #[arg(long, default_value_t = 1280)]
        width: u32,
        /// Page height in pixels.
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Frames per second.
        #[arg(long, default_value_t = 30)]
        framerate: u32,
    },
}
