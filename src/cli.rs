//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;
use crate::policy::{
    HostRule, Policy, DEFAULT_MAX_JOB_MEMORY, DEFAULT_MAX_PAGE_STORAGE, DEFAULT_MAX_PART_SIZE,
    DEFAULT_MAX_PIXEL_RATE, DEFAULT_MAX_RTMP_OUTPUTS,
};

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

/// Where the Redis URL comes from: PAGECAST_REDIS_URL, a file, or (without a password) argv.
#[derive(Debug, clap::Args)]
pub struct RedisArgs {
    /// The Redis server, without a password (default redis://127.0.0.1:6379).
    #[arg(long, conflicts_with = "redis_file")]
    pub redis: Option<String>,
    /// A file holding the Redis URL (rediss:// for TLS).
    #[arg(long)]
    pub redis_file: Option<PathBuf>,
}

/// The variable holding the Redis URL.
pub const REDIS_URL_VAR: &str = "PAGECAST_REDIS_URL";

impl RedisArgs {
    /// The URL: --redis-file, else PAGECAST_REDIS_URL, else --redis (refused with a password,
    /// which `ps` would show), else the local default.
    pub fn url(&self, from_env: Option<String>) -> Result<String, String> {
        if let Some(path) = &self.redis_file {
            let url = std::fs::read_to_string(path)
                .map_err(|e| format!("--redis-file: cannot read {}: {e}", path.display()))?;
            return Ok(url.trim().to_owned());
        }
        if let Some(url) = &self.redis {
            if url::Url::parse(url).is_ok_and(|u| u.password().is_some()) {
                return Err(format!(
                    "--redis: a password on the command line is readable by every local user \
                     (ps); set {REDIS_URL_VAR} or use --redis-file"
                ));
            }
            return Ok(url.clone());
        }
        Ok(from_env.unwrap_or_else(|| "redis://127.0.0.1:6379".into()))
    }
}

// Parsed once per run: the size of its largest variant (`serve`'s many flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record what a config says.
    Record {
        /// The config file (JSON), or - for standard input; without it, LIVEKIT_RECORDER_CONFIG
        /// is read.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        keep: Keep,
        /// Hold the config to the service policy (the flags below), as `serve` does for every job.
        #[arg(long)]
        policy: bool,
        #[command(flatten)]
        limits: PolicyArgs,
        /// A warm tree (what `serve --warm` runs): start the display, the sink and Chromium on a
        /// blank page at this size (WIDTHxHEIGHT, or WIDTHxHEIGHT@FPS) now, then read the job's config from
        /// standard input (--config -) and record it if it fits. Needs --policy.
        #[arg(long, value_name = "SIZE", requires = "policy", requires = "config")]
        warm: Option<crate::warm::WarmSize>,
    },
    /// Check a config and print what it would record (secrets masked), without starting anything.
    Check {
        /// The config file (JSON), or - for standard input; without it, LIVEKIT_RECORDER_CONFIG
        /// is read.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Hold the config to the service policy (the flags below), as `serve` does for every job.
        #[arg(long)]
        policy: bool,
        #[command(flatten)]
        limits: PolicyArgs,
    },
    /// Run the recording service: take recording jobs from a Redis queue, several at once, each
    /// in a `pagecast record` process of its own; many machines can share one queue. SIGTERM
    /// stops taking jobs and finishes the running recordings. The job protocol is in the README.
    ///
    /// The Redis URL is read from PAGECAST_REDIS_URL or --redis-file (so a password is not in
    /// `ps`); --redis takes only a URL without password. Jobs are sealed in Redis with
    /// PAGECAST_JOB_KEY (64 hex characters, the same for every worker and submitter).
    Serve {
        #[command(flatten)]
        redis: RedisArgs,
        /// The queue's name: every key starts with it, as a hash tag (`{pagecast}:jobs`).
        #[arg(long, default_value = "pagecast")]
        queue: String,
        /// Recordings at once on this machine, at most (default: one per two cores, at least
        /// one). Within it, a job is taken only when what the running recordings hold leaves
        /// room for its cost (see --max-utilisation).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_recordings: Option<u32>,
        /// The share of the machine's cores and memory the recordings may use together (0 to 1):
        /// a job is taken only when its expected cost fits in what is left of it.
        #[arg(long, default_value_t = crate::service::capacity::DEFAULT_MAX_UTILISATION, value_parser = utilisation)]
        max_utilisation: f64,
        /// How many recordings may be starting at once (taken, no frame encoded yet; for at
        /// most 10 s each): the next job waits for a start to finish. Recordings started
        /// together keep their sound further ahead of their picture.
        #[arg(long, default_value_t = crate::service::capacity::DEFAULT_CONCURRENT_STARTS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        concurrent_starts: usize,
        /// What the cost model's cores are multiplied by on this machine: `auto` measures it
        /// before taking jobs (about 2 s: ffmpeg encodes a test picture, and its CPU time is
        /// compared with the model's machine's); a number sets it (1: as fast as that machine,
        /// 1.5: half as fast again).
        #[arg(long, default_value = "auto")]
        cost_factor: crate::service::calibration::CostFactor,
        /// With --cost-factor auto: measure the machine again this long after the last time,
        /// as soon as no recording runs here (its speed changes with the host's load); 0: never.
        #[arg(long, default_value = "1h", value_parser = duration)]
        recalibrate_every: std::time::Duration,
        /// Keep this many recording trees ready (display, sink, Chromium on a blank page) at
        /// --warm-size: a job of that size takes one and its page is on tape at once; the pool
        /// refills behind it. Warm trees count against the capacity.
        #[arg(long, default_value_t = 0)]
        warm: u32,
        /// The size (and frame rate) of the warm trees: WIDTHxHEIGHT, or WIDTHxHEIGHT@FPS.
        #[arg(long, default_value = "1920x1080@30")]
        warm_size: crate::warm::WarmSize,
        /// This worker's name (default: <hostname>-<pid>).
        #[arg(long)]
        worker_id: Option<String>,
        /// Where a recording whose S3 upload gave up is kept (each job's `kept` field names
        /// the file). Relative to the working directory.
        #[arg(long, default_value = "pagecast-kept")]
        keep_dir: PathBuf,
        /// The worker's lease: how long it may be silent before others take its jobs over. A
        /// worker that cannot renew it for a third of it stops its recordings (they must finish
        /// within the rest).
        #[arg(long, default_value = "30s", value_parser = duration)]
        heartbeat_ttl: std::time::Duration,
        /// How long a recording asked to stop has to finish its file and upload before it is
        /// killed.
        #[arg(long, default_value = "100s", value_parser = duration)]
        stop_grace: std::time::Duration,
        /// How long a finished job's hash stays in Redis.
        #[arg(long, default_value = "7days", value_parser = duration)]
        job_retention: std::time::Duration,
        /// Without PAGECAST_JOB_KEY, run jobs carrying secrets anyway: they rest in Redis in
        /// clear (only for a Redis nobody else can read).
        #[arg(long)]
        trusted_redis: bool,
        /// Serve LiveKit's Egress API (Twirp, what LiveKit's SDKs call) on this address, e.g.
        /// 127.0.0.1:7880. Needs PAGECAST_JOB_KEY and the API keys (--keys, or LIVEKIT_API_KEY
        /// and LIVEKIT_API_SECRET).
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// The API keys callers sign their access tokens with: LiveKit's keys file, one
        /// `key: secret` per line.
        #[arg(long, value_name = "FILE", requires = "http")]
        keys: Option<PathBuf>,
        /// Send LiveKit's egress webhooks (egress_started, egress_updated, egress_ended) to
        /// this URL, signed with the first API key; repeatable.
        #[arg(long, value_name = "URL", requires = "http")]
        webhook: Vec<url::Url>,
        /// The LiveKit server (ws:// or wss://) that StartRoomCompositeEgress records rooms of;
        /// the recorder's room tokens are signed with the first API key.
        #[arg(long, value_name = "URL", requires = "http")]
        livekit_url: Option<url::Url>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Put a recording job on a service's queue (what `LPUSH {<queue>}:jobs` does, checked first):
    /// the config is validated as `check` does, sealed with PAGECAST_JOB_KEY (required), the
    /// job's state set to `queued`, and its id printed.
    Submit {
        #[command(flatten)]
        redis: RedisArgs,
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
    /// Measure how fast this machine is against the one `serve`'s cost model was measured on
    /// (what `serve --cost-factor auto` does before taking jobs) and print the cost factor.
    Calibrate {
        /// Print one JSON object (cpu_seconds, reference_cpu_seconds, cost_factor, clamped).
        #[arg(long)]
        json: bool,
    },
    /// Record the bundled demo page (motion and a tone) to a local MP4. Needs no server.
    Demo {
        /// Where to write the recording.
        #[arg(long, short, default_value = "recordings/demo.mp4")]
        output: PathBuf,
        /// How long to record, e.g. "10s", "1m".
        #[arg(long, short, default_value = "10s", value_parser = duration)]
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
        /// Write over an existing recording at --output.
        #[arg(long)]
        overwrite: bool,
    },
}

/// What a recording may do to files already there, and where it keeps an upload's file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Keep {
    /// Write over a recording already at output.file or the S3 key (refused without it: a fresh
    /// name each run comes from {time} or {utc} in output.file or the key).
    #[arg(long)]
    pub overwrite: bool,
    /// Without output.file, an S3 upload records into a file here first; if the upload gives up,
    /// that file is the recording, and the error names it (default: the system's temp directory).
    #[arg(long, env = "PAGECAST_KEEP_DIR")]
    pub keep_dir: Option<PathBuf>,
    /// Read control lines on standard input while recording: `pause`, `resume`, `stop`,
    /// `discard` (as SIGUSR1, SIGUSR2, SIGTERM and SIGRTMIN do), `add-stream URL` and
    /// `remove-stream URL` (a live output, while recording). With --config -, the config is
    /// the first JSON value on standard input and the lines follow it.
    #[arg(long)]
    pub stdin_control: bool,
}

/// What a service job may do (see `policy.rs`); the defaults are the safe ones.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Service policy (what a job may do)")]
pub struct PolicyArgs {
    /// Let jobs record file:// pages (they read this machine's files).
    #[arg(long)]
    pub allow_file_urls: bool,
    /// A page host jobs may record although it resolves to a loopback, link-local, private or
    /// unspecified address: a name, an address, or a network like 10.0.0.0/8. Repeatable.
    #[arg(long = "allow-page-host", value_name = "HOST|NET")]
    pub allow_page_hosts: Vec<HostRule>,
    /// A LiveKit, S3 or RTMP host jobs may use although it resolves to a loopback, link-local or
    /// unspecified address (private ones are allowed anyway). Repeatable.
    #[arg(long = "allow-endpoint-host", value_name = "HOST|NET")]
    pub allow_endpoint_hosts: Vec<HostRule>,
    /// The directory every job's output.file is written in (relative paths go under it; paths
    /// leading out are refused). Without it, jobs may not write local files.
    #[arg(long, value_name = "DIR")]
    pub output_root: Option<PathBuf>,
    /// The longest recording a job may ask for; also the max_duration of a job that gives none.
    #[arg(long, default_value = "6h", value_parser = duration)]
    pub max_duration: Duration,
    /// The most pixels a second a job may capture or encode (width x height x frame rate;
    /// default 3840x2160 at 30 fps).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXEL_RATE)]
    pub max_pixel_rate: u64,
    /// The most live (RTMP) outputs of one job.
    #[arg(long, default_value_t = DEFAULT_MAX_RTMP_OUTPUTS)]
    pub max_rtmp_outputs: usize,
    /// The largest S3 part_size in bytes (a part is held in memory while it uploads).
    #[arg(long, default_value_t = DEFAULT_MAX_PART_SIZE)]
    pub max_part_size: u64,
    /// The most memory one recording may use, its whole process tree (Chromium, ffmpeg, ...)
    /// counted by PSS: past it the recording is stopped and kept, and it fails with exit 4. A
    /// size like 4GiB, or bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_JOB_MEMORY, value_parser = size)]
    pub max_job_memory: u64,
    /// The most disk a recording's page may fill in its browser profile (IndexedDB, Cache
    /// Storage, caches): past it, likewise. A size like 1GiB, or bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_PAGE_STORAGE, value_parser = size)]
    pub max_page_storage: u64,
    /// Let an S3 output without credentials use this machine's own AWS identity (environment,
    /// profile, instance role).
    #[arg(long)]
    pub allow_worker_aws_identity: bool,
}

impl Default for PolicyArgs {
    /// The flags' defaults (what `serve` applies when given none of them).
    fn default() -> Self {
        let p = Policy::default();
        Self {
            allow_file_urls: p.allow_file_urls,
            allow_page_hosts: p.page_hosts,
            allow_endpoint_hosts: p.endpoint_hosts,
            output_root: p.output_root,
            max_duration: p.max_duration,
            max_pixel_rate: p.max_pixel_rate,
            max_rtmp_outputs: p.max_rtmp_outputs,
            max_part_size: p.max_part_size,
            max_job_memory: p.max_job_memory,
            max_page_storage: p.max_page_storage,
            allow_worker_aws_identity: p.worker_aws_identity,
        }
    }
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            allow_file_urls: self.allow_file_urls,
            page_hosts: self.allow_page_hosts.clone(),
            endpoint_hosts: self.allow_endpoint_hosts.clone(),
            output_root: self.output_root.clone(),
            max_duration: self.max_duration,
            max_pixel_rate: self.max_pixel_rate,
            max_rtmp_outputs: self.max_rtmp_outputs,
            max_part_size: self.max_part_size,
            max_job_memory: self.max_job_memory,
            max_page_storage: self.max_page_storage,
            worker_aws_identity: self.allow_worker_aws_identity,
        }
    }
}

/// A size on the command line: bytes, or with a unit like "512MiB" or "4GiB"; more than 0.
fn size(text: &str) -> Result<u64, String> {
    crate::config::parse_size(text)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size like 512MiB, 4GiB or a number of bytes"))
}

/// A duration on the command line: like "30s" or "2h", at most [`crate::config::MAX_DURATION`]
/// (a longer one would overflow the clock arithmetic it goes into).
fn duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

fn utilisation(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|u| *u > 0.0 && *u <= 1.0)
        .ok_or_else(|| "a share of the machine, more than 0 and at most 1 (e.g. 0.85)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve` without policy flags applies the safe defaults of `Policy::default()`.
    #[test]
    fn serve_without_flags_applies_the_safe_policy() {
        let cli = Cli::try_parse_from(["pagecast", "serve"]).unwrap();
        let Some(Command::Serve { policy, .. }) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(policy.policy(), Policy::default());
        assert_eq!(PolicyArgs::default().policy(), Policy::default());
        // The flags a runner hands to a recording parse back into the same policy.
        let custom = Policy {
            allow_file_urls: true,
            page_hosts: vec!["10.0.0.0/8".parse().unwrap()],
            output_root: Some("/srv/out".into()),
            max_duration: Duration::from_secs(60),
            ..Policy::default()
        };
        let mut args = vec!["pagecast".to_owned(), "record".to_owned()];
        args.extend(custom.to_args());
        let cli = Cli::try_parse_from(args).unwrap();
        let Some(Command::Record { policy, limits, .. }) = cli.command else {
            panic!("not record");
        };
        assert!(policy);
        assert_eq!(limits.policy(), custom);
    }
}
