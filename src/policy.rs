//! The recording service's policy: what a job, which is untrusted input, may do.
//!
//! `pagecast serve` runs jobs other people write. Before anything of a job starts, its recording
//! (`pagecast record --policy`, which the service runs for every job) checks its config against
//! this policy and refuses it (exit 2, naming the field and the rule) when it would
//! - read the worker's files (`file://` pages) or internal addresses: a page's host resolving to
//!   a loopback, link-local (cloud metadata), private or unspecified address; a service endpoint
//!   (LiveKit `ws_url`, S3 endpoint, RTMP host) resolving to a loopback, link-local or
//!   unspecified one. Named hosts and networks can be allowed. A page's host is resolved once and
//!   Chromium is pinned to the address that was checked (`--host-resolver-rules`), so DNS cannot
//!   swap it for another between the check and the load;
//! - write outside `--output-root` (relative paths go under it; `..`, paths outside and symlinks
//!   leading out are refused), or use the worker's own AWS identity;
//! - exceed a limit: recording time (a default also given to a job that sets none), pixels × frame
//!   rate, live outputs, S3 part size.
//!
//! While it records, it is held to the memory and disk limits (`limits.rs`), and in a service a
//! recording that uses more CPU than it was admitted for runs last (`service/cpu_share.rs`).
//!
//! The policy travels from `serve` to each recording as command-line flags ([`Policy::to_args`]):
//! it holds no secret.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{Config, Source};

/// The largest job config the service takes (bytes of JSON), checked when a job is submitted or
/// taken: well below what an environment variable or a command line could hold.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Defaults of the limits.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(6 * 3600);
/// 3840 × 2160 at 30 fps.
pub const DEFAULT_MAX_PIXEL_RATE: u64 = 3840 * 2160 * 30;
pub const DEFAULT_MAX_RTMP_OUTPUTS: usize = 4;
/// A part is held in memory while it is uploaded.
pub const DEFAULT_MAX_PART_SIZE: u64 = 64 * 1024 * 1024;
/// A recording's whole process tree (Chromium, ffmpeg, Xvfb, PulseAudio, pagecast): about 10
/// times what a 1080p recording of a busy page uses (capacity.rs's model: 250 MiB + 77 B/px).
pub const DEFAULT_MAX_JOB_MEMORY: u64 = 4 << 30;
/// What a page may store in its browser profile (IndexedDB, Cache Storage, its HTTP cache...).
pub const DEFAULT_MAX_PAGE_STORAGE: u64 = 1 << 30;

/// A host or network a job may use although the policy would refuse its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// A host name, as written in the job (case-insensitive): not resolved, not pinned.
    Name(String),
    /// Any address in this network (a single address is a /32 or /128).
    Net(IpNet),
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty host".into());
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(HostRule::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(HostRule::Net(IpNet::from(ip)));
        }
        if s.contains('/') || s.contains(':') {
            return Err(format!(
                "{s:?} is neither a host name nor an address or network like 10.0.0.0/8"
            ));
        }
        Ok(HostRule::Name(s.trim_end_matches('.').to_ascii_lowercase()))
    }
}

impl std::fmt::Display for HostRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostRule::Name(name) => f.write_str(name),
            HostRule::Net(net) => write!(f, "{net}"),
        }
    }
}

/// What a job may do. See the module docs; the defaults are the safe ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `file://` pages (and layout base URLs) read the worker's files: refused unless true.
    pub allow_file_urls: bool,
    /// Page hosts allowed although their address is internal.
    pub page_hosts: Vec<HostRule>,
    /// Service endpoints (LiveKit, S3, RTMP) allowed although their address is loopback or
    /// link-local.
    pub endpoint_hosts: Vec<HostRule>,
    /// Where `output.file` is written; None: jobs may not write local files.
    pub output_root: Option<PathBuf>,
    /// The longest recording, also given to a job that sets no `max_duration`.
    pub max_duration: Duration,
    /// The most pixels per second to capture or encode (width × height × frame rate).
    pub max_pixel_rate: u64,
    pub max_rtmp_outputs: usize,
    pub max_part_size: u64,
    /// The most memory a recording's process tree may use (PSS, bytes): past it the recording is
    /// stopped, its file kept (`limits.rs`).
    pub max_job_memory: u64,
    /// The most disk a recording's browser profile may take (bytes): past it, likewise.
    pub max_page_storage: u64,
    /// An S3 output without credentials uses the worker's own AWS identity (environment,
    /// profile, instance role): refused unless true.
    pub worker_aws_identity: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow_file_urls: false,
            page_hosts: Vec::new(),
            endpoint_hosts: Vec::new(),
            output_root: None,
            max_duration: DEFAULT_MAX_DURATION,
            max_pixel_rate: DEFAULT_MAX_PIXEL_RATE,
            max_rtmp_outputs: DEFAULT_MAX_RTMP_OUTPUTS,
            max_part_size: DEFAULT_MAX_PART_SIZE,
            max_job_memory: DEFAULT_MAX_JOB_MEMORY,
            max_page_storage: DEFAULT_MAX_PAGE_STORAGE,
            worker_aws_identity: false,
        }
    }
}

/// A job the policy refuses (exit 2), or whose host cannot be resolved to be checked (exit 4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy: {field}: {message}")]
    Refused { field: String, message: String },
    #[error("policy: {field}: cannot resolve {host}: {message}")]
    Unresolvable {
        field: String,
        host: String,
        message: String,
    },
}

impl PolicyError {
    /// A refused job is a bad config (2); a host that cannot be resolved is an input that
    /// failed (4).
    pub fn exit(&self) -> crate::exit::Exit {
        match self {
            PolicyError::Refused { .. } => crate::exit::Exit::Config,
            PolicyError::Unresolvable { .. } => crate::exit::Exit::Input,
        }
    }
}

fn refused(field: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::Refused {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A host name the checked address is pinned to in Chromium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub host: String,
    pub addr: IpAddr,
}

/// Chromium's `--host-resolver-rules` value for `pins` (None without any).
pub fn host_resolver_rules(pins: &[Pin]) -> Option<String> {
    if pins.is_empty() {
        return None;
    }
    let rules: Vec<String> = pins
        .iter()
        .map(|p| match p.addr {
            IpAddr::V4(a) => format!("MAP {} {a}", p.host),
            IpAddr::V6(a) => format!("MAP {} [{a}]", p.host),
        })
        .collect();
    Some(rules.join(", "))
}

impl Policy {
    /// The page proxy's rule: may a page's request for `host` go to `addr`? As for the page's
    /// own host: a host or network allowed by `--allow-page-host`, or a public address.
    pub fn page_allow(&self) -> pagecast_actors::page_proxy::Allow {
        let rules = self.page_hosts.clone();
        std::sync::Arc::new(move |host: &str, addr: IpAddr| {
            rules.contains(&HostRule::Name(host.to_owned()))
                || in_allowed_net(&rules, addr)
                || forbidden(Kind::Page, addr).is_none()
        })
    }
}

/// Which set of address rules a host is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A page Chromium loads: only public addresses.
    Page,
    /// A server the recording talks to (often on a private network): not loopback, not
    /// link-local, not unspecified.
    Endpoint,
}

impl Policy {
    /// The command-line flags that give this policy to `pagecast record` (or `serve`).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["--policy".to_owned()];
        if self.allow_file_urls {
            args.push("--allow-file-urls".into());
        }
        for h in &self.page_hosts {
            args.push(format!("--allow-page-host={h}"));
        }
        for h in &self.endpoint_hosts {
            args.push(format!("--allow-endpoint-host={h}"));
        }
        if let Some(root) = &self.output_root {
            args.push(format!("--output-root={}", root.display()));
        }
        args.push(format!(
            "--max-duration={}",
            humantime::format_duration(self.max_duration)
        ));
        args.push(format!("--max-pixel-rate={}", self.max_pixel_rate));
        args.push(format!("--max-rtmp-outputs={}", self.max_rtmp_outputs));
        args.push(format!("--max-part-size={}", self.max_part_size));
        args.push(format!("--max-job-memory={}", self.max_job_memory));
        args.push(format!("--max-page-storage={}", self.max_page_storage));
        if self.worker_aws_identity {
            args.push("--allow-worker-aws-identity".into());
        }
        args
    }

    /// Checks `config` and fits it to the policy: `max_duration` set when missing, `output.file`
    /// made the absolute path inside the output root. Returns the page hosts to pin in Chromium.
    pub async fn apply(&self, config: &mut Config) -> Result<Vec<Pin>, PolicyError> {
        self.limits(config)?;
        if let Some(file) = &config.output.file {
            let root = self.output_root.as_deref().ok_or_else(|| {
                refused(
                    "output.file",
                    "this service writes no local files (it was started without --output-root)",
                )
            })?;
            config.output.file = Some(inside_root(root, file)?);
        }
        if let Some(hls) = &mut config.output.hls {
            let root = self.output_root.as_deref().ok_or_else(|| {
                refused(
                    "output.hls",
                    "this service writes no local files (it was started without --output-root)",
                )
            })?;
            hls.directory = inside_root_as("output.hls.directory", root, &hls.directory)?;
        }
        if let Some(images) = &mut config.output.images {
            let root = self.output_root.as_deref().ok_or_else(|| {
                refused(
                    "output.images",
                    "this service writes no local files (it was started without --output-root)",
                )
            })?;
            images.directory = inside_root_as("output.images.directory", root, &images.directory)?;
        }
        if let Some(s3) = &config.output.s3 {
            if s3.access_key.is_none() && !self.worker_aws_identity {
                return Err(refused(
                    "output.s3",
                    "has no access_key and secret, and this service does not lend its own AWS \
                     identity (--allow-worker-aws-identity)",
                ));
            }
            if let Some(endpoint) = &s3.endpoint {
                self.check_url("output.s3.endpoint", endpoint, Kind::Endpoint)
                    .await?;
            }
        }
        self.check_other_stores(config).await?;
        for (name, streams) in [
            ("output.rtmp", &config.output.rtmp),
            ("output.srt", &config.output.srt),
        ] {
            for (i, stream) in streams.iter().enumerate() {
                let field = if streams.len() == 1 {
                    name.to_owned()
                } else {
                    format!("{name}[{i}]")
                };
                // The key is in the path (RTMP) or the query (SRT); only the host is looked at
                // (and shown).
                let url = url::Url::parse(stream.expose())
                    .map_err(|_| refused(&field, "is not a URL"))?;
                self.check_url(&field, &url, Kind::Endpoint).await?;
            }
        }
        let mut pins = Vec::new();
        match &config.input.source {
            Source::Url(url) => pins.extend(self.check_page("input.url", url).await?),
            Source::Template(t) => {
                // The layout page connects to the server from Chromium: pinned too.
                pins.extend(
                    self.check_url("input.template.ws_url", &t.ws_url, Kind::Endpoint)
                        .await?,
                );
                if let Some(base) = &t.base_url {
                    pins.extend(self.check_page("input.template.base_url", base).await?);
                }
            }
        }
        Ok(pins)
    }

    /// Checks a webhook URL an egress request gives (`field` names it in the refusal): http or
    /// https, to a host an endpoint may be on. Returns the pin for a name: the sender connects
    /// to that address only, so DNS cannot move the host after the check.
    pub async fn check_webhook(&self, field: &str, raw: &str) -> Result<Option<Pin>, PolicyError> {
        let url = url::Url::parse(raw).map_err(|_| refused(field, "is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused(
                field,
                format!("scheme {}: is refused (http or https only)", url.scheme()),
            ));
        }
        self.check_url(field, &url, Kind::Endpoint).await
    }

    /// Checks a live output added while recording (`field` names it in the refusal), where
    /// `streaming` outputs are live already: the same host rules and limit as at the start.
    pub async fn check_added_stream(
        &self,
        field: &str,
        raw: &str,
        streaming: usize,
    ) -> Result<(), PolicyError> {
        if streaming + 1 > self.max_rtmp_outputs {
            return Err(refused(
                field,
                format!(
                    "{} live outputs, more than this service allows ({}, --max-rtmp-outputs)",
                    streaming + 1,
                    self.max_rtmp_outputs
                ),
            ));
        }
        let url = url::Url::parse(raw).map_err(|_| refused(field, "is not a URL"))?;
        self.check_url(field, &url, Kind::Endpoint).await?;
        Ok(())
    }

    fn limits(&self, config: &mut Config) -> Result<(), PolicyError> {
        let max = self.max_duration;
        match config.max_duration {
            None => config.max_duration = Some(max),
            Some(d) if d > max => {
                return Err(refused(
                    "max_duration",
                    format!(
                        "{} is longer than this service allows ({}, --max-duration)",
                        humantime::format_duration(d),
                        humantime::format_duration(max)
                    ),
                ))
            }
            Some(_) => {}
        }
        let input = &config.input;
        let fps = u64::from(input.framerate);
        let captured = u64::from(input.width) * u64::from(input.height) * fps;
        if captured > self.max_pixel_rate {
            return Err(refused(
                "input",
                format!(
                    "{}x{} at {} fps is {captured} pixels a second, more than this service allows \
                     ({}, --max-pixel-rate)",
                    input.width, input.height, input.framerate, self.max_pixel_rate
                ),
            ));
        }
        if let Some((w, h)) = config.output.size {
            let encoded = u64::from(w) * u64::from(h) * fps;
            if encoded > self.max_pixel_rate {
                return Err(refused(
                    "output",
                    format!(
                        "{w}x{h} at {} fps is {encoded} pixels a second, more than this service \
                         allows ({}, --max-pixel-rate)",
                        input.framerate, self.max_pixel_rate
                    ),
                ));
            }
        }
        let streams = config.output.rtmp.len() + config.output.srt.len();
        if streams > self.max_rtmp_outputs {
            // RTMP and SRT outputs are counted together: each is a relay process.
            return Err(refused(
                match (config.output.rtmp.is_empty(), config.output.srt.is_empty()) {
                    (false, false) => "output.rtmp + output.srt",
                    (true, _) => "output.srt",
                    (false, true) => "output.rtmp",
                },
                format!(
                    "{streams} live outputs, more than this service allows ({}, --max-rtmp-outputs)",
                    self.max_rtmp_outputs
                ),
            ));
        }
        if let Some(s3) = &config.output.s3 {
            if s3.part_size > self.max_part_size {
                return Err(refused(
                    "output.s3.part_size",
                    format!(
                        "{} bytes, more than this service allows ({}, --max-part-size)",
                        s3.part_size, self.max_part_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `output.gcs`, `output.azure` and `output.backup`: endpoints on allowed hosts, credentials
    /// of the job's own (a key file or the worker's Google or Azure identity would be the
    /// worker's), parts no larger than allowed.
    async fn check_other_stores(&self, config: &Config) -> Result<(), PolicyError> {
        use crate::config::{AzureAuth, Backup, GcsAuth};
        let mut stores = Vec::new();
        if let Some(gcs) = &config.output.gcs {
            stores.push(("output.gcs", Backup::Gcs(gcs.clone())));
        }
        if let Some(azure) = &config.output.azure {
            stores.push(("output.azure", Backup::Azure(azure.clone())));
        }
        if let Some(backup) = &config.output.backup {
            stores.push((backup.field(), backup.clone()));
        }
        for (field, store) in stores {
            let (endpoint, part_size, own_credentials) = match &store {
                Backup::S3(s3) => (
                    &s3.endpoint,
                    s3.part_size,
                    s3.access_key.is_some() || self.worker_aws_identity,
                ),
                Backup::Gcs(gcs) => {
                    if matches!(gcs.auth, GcsAuth::File(_)) {
                        return Err(refused(
                            &format!("{field}.credentials_file"),
                            "reads a file of the worker's; give the key itself in credentials",
                        ));
                    }
                    // Without credentials only an emulator is usable (no token is sent then).
                    let own = matches!(gcs.auth, GcsAuth::Key(_)) || gcs.endpoint.is_some();
                    (&gcs.endpoint, gcs.part_size, own)
                }
                Backup::Azure(a) => (
                    &a.endpoint,
                    a.part_size,
                    !matches!(a.auth, AzureAuth::Default),
                ),
            };
            if !own_credentials {
                return Err(refused(
                    field,
                    "has no credentials of its own, and this service does not lend its identity",
                ));
            }
            if let Some(endpoint) = endpoint {
                self.check_url(&format!("{field}.endpoint"), endpoint, Kind::Endpoint)
                    .await?;
            }
            if part_size > self.max_part_size {
                return Err(refused(
                    &format!("{field}.part_size"),
                    format!(
                        "{part_size} bytes, more than this service allows ({}, --max-part-size)",
                        self.max_part_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A page URL: http(s) on a public address, or file:// if allowed.
    async fn check_page(&self, field: &str, url: &url::Url) -> Result<Option<Pin>, PolicyError> {
        match url.scheme() {
            "file" if self.allow_file_urls => Ok(None),
            "file" => Err(refused(
                field,
                "file:// pages read the worker's own files; this service refuses them \
                 (--allow-file-urls)",
            )),
            "http" | "https" => self.check_url(field, url, Kind::Page).await,
            other => Err(refused(
                field,
                format!("scheme {other}: is refused (http or https only)"),
            )),
        }
    }

    /// Resolves the host of `url` and checks every address it has. Returns the pin for a name
    /// (None for an address, or a host allowed by name).
    async fn check_url(
        &self,
        field: &str,
        url: &url::Url,
        kind: Kind,
    ) -> Result<Option<Pin>, PolicyError> {
        let rules = match kind {
            Kind::Page => &self.page_hosts,
            Kind::Endpoint => &self.endpoint_hosts,
        };
        let flag = match kind {
            Kind::Page => "--allow-page-host",
            Kind::Endpoint => "--allow-endpoint-host",
        };
        let Some(host) = url.host() else {
            return Err(refused(field, "has no host"));
        };
        let (name, addrs) = match host {
            url::Host::Ipv4(a) => (None, vec![IpAddr::V4(a)]),
            url::Host::Ipv6(a) => (None, vec![IpAddr::V6(a)]),
            // rtmp:// is not a scheme the url crate knows: its host stays text, addresses too.
            url::Host::Domain(d) if d.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() => {
                let addr = d
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                (None, vec![addr])
            }
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if rules.contains(&HostRule::Name(d.clone())) {
                    return Ok(None);
                }
                let port = url.port_or_known_default().unwrap_or(443);
                let addrs: Vec<IpAddr> = tokio::net::lookup_host((d.as_str(), port))
                    .await
                    .map_err(|e| PolicyError::Unresolvable {
                        field: field.to_owned(),
                        host: d.clone(),
                        message: e.to_string(),
                    })?
                    .map(|a| a.ip())
                    .collect();
                if addrs.is_empty() {
                    return Err(PolicyError::Unresolvable {
                        field: field.to_owned(),
                        host: d,
                        message: "no address".into(),
                    });
                }
                (Some(d), addrs)
            }
        };
        let shown = name.clone().unwrap_or_else(|| addrs[0].to_string());
        for addr in &addrs {
            if in_allowed_net(rules, *addr) {
                continue;
            }
            if let Some(class) = forbidden(kind, *addr) {
                let what = match kind {
                    Kind::Page => "pages on loopback, link-local, private or unspecified addresses",
                    Kind::Endpoint => "endpoints on loopback, link-local or unspecified addresses",
                };
                let at = if name.is_some() {
                    format!("{shown} resolves to {addr}, a {class} address")
                } else {
                    format!("{shown} is a {class} address")
                };
                return Err(refused(
                    field,
                    format!("{at}; this service refuses {what} ({flag} allows a host or network)"),
                ));
            }
        }
        Ok(name.map(|host| Pin {
            host,
            addr: addrs[0],
        }))
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4 address.
/// Whether `addr` is in a network one of `rules` allows.
fn in_allowed_net(rules: &[HostRule], addr: IpAddr) -> bool {
    rules
        .iter()
        .any(|r| matches!(r, HostRule::Net(net) if net.contains(&canonical(addr))))
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Why `kind` may not use `addr` by default (None: it may).
fn forbidden(kind: Kind, addr: IpAddr) -> Option<&'static str> {
    let class = match canonical(addr) {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_loopback() {
                "loopback"
            } else if a.is_link_local() {
                "link-local"
            } else if o[0] == 0 {
                // 0.0.0.0/8: "this host"; connecting to it reaches the loopback interface.
                "unspecified"
            } else if a.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
                "private"
            } else {
                return None;
            }
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            if a.is_loopback() {
                "loopback"
            } else if a.is_unspecified() {
                "unspecified"
            } else if first & 0xffc0 == 0xfe80 {
                "link-local"
            } else if first & 0xfe00 == 0xfc00 {
                "private"
            } else {
                return None;
            }
        }
    };
    match (kind, class) {
        (Kind::Endpoint, "private") => None,
        _ => Some(class),
    }
}

/// `file` as an absolute path inside `root`: relative paths are taken under it; `..` anywhere,
/// a path outside it, or a symlink (of a directory or of the file itself) leading out is refused.
pub fn inside_root(root: &Path, file: &Path) -> Result<PathBuf, PolicyError> {
    inside_root_as("output.file", root, file)
}

/// [`inside_root`] for the path given in `field`.
pub fn inside_root_as(field: &str, root: &Path, file: &Path) -> Result<PathBuf, PolicyError> {
    let root = root.canonicalize().map_err(|e| {
        refused(
            field,
            format!("the output root {} is unusable: {e}", root.display()),
        )
    })?;
    if file.components().any(|c| c == Component::ParentDir) {
        return Err(refused(
            field,
            format!(
                "{} contains \"..\"; this service writes only inside its output root",
                file.display()
            ),
        ));
    }
    let joined = root.join(file);
    // The deepest part that exists, with its symlinks resolved, must be inside the root; what is
    // below it does not exist yet and has no "..", so it stays inside.
    let mut existing = joined.as_path();
    let mut rest = Vec::new();
    loop {
        if existing.symlink_metadata().is_ok() {
            break;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => break,
        }
    }
    let real = existing
        .canonicalize()
        .map_err(|e| refused(field, format!("cannot resolve {}: {e}", existing.display())))?;
    if !real.starts_with(&root) {
        return Err(refused(
            field,
            format!(
                "{} is outside this service's output root {} (--output-root)",
                file.display(),
                root.display()
            ),
        ));
    }
    let mut path = real;
    for name in rest.into_iter().rev() {
        path.push(name);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_for_pages_and_fewer_for_endpoints() {
        for (addr, class) in [
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "private"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
        ] {
            assert_eq!(forbidden(Kind::Page, v4(addr)), Some(class), "{addr}");
            let endpoint = forbidden(Kind::Endpoint, v4(addr));
            if class == "private" {
                assert_eq!(endpoint, None, "{addr}");
            } else {
                assert_eq!(endpoint, Some(class), "{addr}");
            }
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:2800:220:1::1"] {
            assert_eq!(forbidden(Kind::Page, v4(public)), None, "{public}");
        }
    }

    /// A job's GCS, Azure or backup store brings its own credentials, on an allowed endpoint,
    /// with parts no larger than allowed.
    #[actix_rt::test]
    async fn a_job_s_other_stores_use_no_worker_file_identity_or_internal_host() {
        let refusal = |output: serde_json::Value| async move {
            let json = serde_json::json!({ "input": { "url": "https://93.184.216.34/" }, "output": output });
            let config = crate::config::parse(&json.to_string()).unwrap();
            match Policy::default().check_other_stores(&config).await {
                Ok(()) => "ok".to_owned(),
                Err(PolicyError::Refused { field, .. }) => field,
                Err(e) => e.to_string(),
            }
        };
        let key = serde_json::json!({ "client_email": "r@p.iam", "private_key": "k" });
        let gcs = |extra: serde_json::Value| {
            let mut g = serde_json::json!({ "bucket": "b", "key": "k.mp4" });
            g.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::json!({ "gcs": g })
        };
        assert_eq!(
            refusal(gcs(serde_json::json!({ "credentials": key }))).await,
            "ok"
        );
        assert_eq!(
            refusal(gcs(
                serde_json::json!({ "credentials_file": "/etc/key.json" })
            ))
            .await,
            "output.gcs.credentials_file"
        );
        assert_eq!(refusal(gcs(serde_json::json!({}))).await, "output.gcs");
        assert_eq!(
            refusal(gcs(
                serde_json::json!({ "endpoint": "http://127.0.0.1:4443" })
            ))
            .await,
            "output.gcs.endpoint"
        );
        assert_eq!(
            refusal(gcs(
                serde_json::json!({ "credentials": key, "part_size": "128MiB" })
            ))
            .await,
            "output.gcs.part_size"
        );
        let azure = serde_json::json!({ "account": "a", "container": "c", "blob": "b" });
        let output = serde_json::json!({ "gcs": { "bucket": "b", "key": "k", "credentials": key },
            "backup": { "azure": azure } });
        assert_eq!(refusal(output).await, "output.backup.azure");
    }

    #[test]
    fn host_rules_are_names_addresses_or_networks() {
        assert_eq!(
            "Example.COM.".parse::<HostRule>().unwrap(),
            HostRule::Name("example.com".into())
        );
        assert_eq!(
            "127.0.0.1".parse::<HostRule>().unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            "10.1.0.0/8".parse::<HostRule>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!("http://x".parse::<HostRule>().is_err());
        assert!("".parse::<HostRule>().is_err());
    }

    #[test]
    fn pins_become_chromium_host_resolver_rules() {
        let pins = vec![
            Pin {
                host: "a.example".into(),
                addr: v4("93.184.216.34"),
            },
            Pin {
                host: "b.example".into(),
                addr: v4("2606:2800:220:1::1"),
            },
        ];
        assert_eq!(
            host_resolver_rules(&pins).unwrap(),
            "MAP a.example 93.184.216.34, MAP b.example [2606:2800:220:1::1]"
        );
        assert_eq!(host_resolver_rules(&[]), None);
    }

    #[test]
    fn output_files_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let real_root = root.canonicalize().unwrap();
        assert_eq!(
            inside_root(&root, Path::new("a.mp4")).unwrap(),
            real_root.join("a.mp4")
        );
        assert_eq!(
            inside_root(&root, Path::new("new/dir/a.mp4")).unwrap(),
            real_root.join("new/dir/a.mp4")
        );
        assert_eq!(
            inside_root(&root, &root.join("sub/a.mp4")).unwrap(),
            real_root.join("sub/a.mp4")
        );
        let err = |p: &Path| inside_root(&root, p).unwrap_err().to_string();
        assert!(err(Path::new("../../etc/x.mp4")).contains("contains \"..\""));
        assert!(err(Path::new("sub/../a.mp4")).contains("contains \"..\""));
        assert!(err(Path::new("/etc/x.mp4")).contains("outside this service's output root"));
        // A symlinked directory, or the file itself a symlink, leading out.
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        assert!(err(Path::new("out/x.mp4")).contains("outside"));
        std::os::unix::fs::symlink(dir.path().join("victim.mp4"), root.join("v.mp4")).unwrap();
        std::fs::write(dir.path().join("victim.mp4"), b"x").unwrap();
        assert!(err(Path::new("v.mp4")).contains("outside"));
        // A dangling symlink would be created through: refused too.
        std::os::unix::fs::symlink("/nonexistent/x.mp4", root.join("d.mp4")).unwrap();
        assert!(inside_root(&root, Path::new("d.mp4")).is_err());
        // The snapshots' directory is held to the same root, its error naming its field.
        let e = inside_root_as("output.images.directory", &root, Path::new("/etc"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("output.images.directory") && e.contains("outside"),
            "{e}"
        );
        assert_eq!(
            inside_root_as("output.images.directory", &root, Path::new("shots")).unwrap(),
            real_root.join("shots")
        );
    }

    /// A live output added while recording meets the start's rules: the host check and the
    /// limit on live outputs, named by the field given.
    #[tokio::test]
    async fn an_added_stream_is_held_to_the_host_rules_and_the_limit() {
        let policy = Policy {
            max_rtmp_outputs: 2,
            ..Policy::default()
        };
        let refused_field = |r: Result<(), PolicyError>| match r {
            Err(PolicyError::Refused { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        // Loopback is refused for endpoints unless allowed.
        let loopback = policy
            .check_added_stream("add_output_urls[0]", "rtmp://127.0.0.1:1935/live/k", 1)
            .await;
        assert_eq!(refused_field(loopback), "add_output_urls[0]");
        let allowed = Policy {
            endpoint_hosts: vec!["127.0.0.1".parse().unwrap()],
            ..policy.clone()
        };
        allowed
            .check_added_stream("f", "rtmp://127.0.0.1:1935/live/k", 1)
            .await
            .unwrap();
        let over = allowed
            .check_added_stream("f", "rtmp://127.0.0.1:1935/live/k", 2)
            .await;
        assert_eq!(refused_field(over), "f");
        let not_a_url = allowed.check_added_stream("f", "rtmp://", 0).await;
        assert_eq!(refused_field(not_a_url), "f");
    }

    /// A request's webhook is an endpoint: loopback, link-local and unspecified addresses are
    /// refused unless allowed; only http and https.
    #[tokio::test]
    async fn a_request_s_webhook_is_held_to_the_endpoint_rules() {
        let policy = Policy::default();
        let refused = |r: Result<Option<Pin>, PolicyError>| match r {
            Err(PolicyError::Refused { field, message }) => format!("{field}: {message}"),
            other => panic!("{other:?}"),
        };
        for url in [
            "http://127.0.0.1:9/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://0.0.0.0/hook",
        ] {
            let e = refused(policy.check_webhook("webhooks[0].url", url).await);
            assert!(e.starts_with("webhooks[0].url: "), "{url}: {e}");
        }
        let e = refused(policy.check_webhook("w", "ftp://10.0.0.1/hook").await);
        assert!(e.contains("http or https only"), "{e}");
        assert_eq!(
            policy
                .check_webhook("w", "http://10.1.2.3:8080/hook")
                .await
                .unwrap(),
            None
        );
        let allowed = Policy {
            endpoint_hosts: vec!["127.0.0.1".parse().unwrap()],
            ..Policy::default()
        };
        assert_eq!(
            allowed
                .check_webhook("w", "http://127.0.0.1:9/hook")
                .await
                .unwrap(),
            None
        );
        let e = refused(allowed.check_webhook("w", "http://127.0.0.2:9/hook").await);
        assert!(e.starts_with("w: "), "{e}");
    }

    #[test]
    fn the_policy_travels_as_flags() {
        let policy = Policy {
            allow_file_urls: true,
            page_hosts: vec!["127.0.0.1".parse().unwrap()],
            endpoint_hosts: vec!["lk.internal".parse().unwrap()],
            output_root: Some("/srv/out".into()),
            max_duration: Duration::from_secs(90),
            max_pixel_rate: 1000,
            max_rtmp_outputs: 2,
            max_part_size: 6 << 20,
            max_job_memory: 1 << 30,
            max_page_storage: 64 << 20,
            worker_aws_identity: true,
        };
        assert_eq!(
            policy.to_args(),
            [
                "--policy",
                "--allow-file-urls",
                "--allow-page-host=127.0.0.1/32",
                "--allow-endpoint-host=lk.internal",
                "--output-root=/srv/out",
                "--max-duration=1m 30s",
                "--max-pixel-rate=1000",
                "--max-rtmp-outputs=2",
                "--max-part-size=6291456",
                "--max-job-memory=1073741824",
                "--max-page-storage=67108864",
                "--allow-worker-aws-identity",
            ]
        );
    }
}
