//! The recording config, in two layers.
//!
//! 1. Raw: serde structs that mirror the JSON of the LiveKit recorder exactly (plus pagecast's
//!    additions). Unknown fields are errors, and `serde_path_to_error` names the failing field.
//! 2. Validated: [`Config`], a typed value the rest of the program trusts: defaults applied,
//!    ranges checked, URLs parsed, secrets wrapped so they never print.
//!
//! Every error is one line, `config: <field path>: <what is wrong>`, and never contains a secret.

use std::path::PathBuf;
use std::time::Duration;

use pagecast_actors::secret::{mask_stream_url, Secret, StreamUrl};
use serde::Deserialize;

/// The environment variable the config is read from.
pub const ENV_VAR: &str = "LIVEKIT_RECORDER_CONFIG";

#[derive(Debug, Clone)]
pub struct Config {
    pub input: Input,
    pub output: Output,
    pub max_duration: Option<Duration>,
    pub supervision: Supervision,
}

/// How often crashed parts are restarted: at most `max_restarts` within `within`, per supervisor;
/// one more and the recording stops, keeping what it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervision {
    pub max_restarts: u32,
    pub within: Duration,
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            within: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Input {
    pub source: Source,
    pub width: u32,
    pub height: u32,
    pub depth: u8,
    pub framerate: u32,
}

#[derive(Debug, Clone)]
pub enum Source {
    Url(url::Url),
    Template(Template),
}

#[derive(Debug, Clone)]
pub struct Template {
    pub layout: Layout,
    pub ws_url: url::Url,
    pub auth: TemplateAuth,
    /// A layout page of the user's own, taking `url` and `token` like the built-in ones.
    pub base_url: Option<url::Url>,
}

#[derive(Debug, Clone)]
pub enum TemplateAuth {
    Token(Secret),
    ApiKey {
        api_key: String,
        api_secret: Secret,
        room_name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    GridLight,
    GridDark,
    SpeakerLight,
    SpeakerDark,
}

impl Layout {
    pub const ALL: [Layout; 4] = [
        Layout::GridLight,
        Layout::GridDark,
        Layout::SpeakerLight,
        Layout::SpeakerDark,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Layout::GridLight => "grid-light",
            Layout::GridDark => "grid-dark",
            Layout::SpeakerLight => "speaker-light",
            Layout::SpeakerDark => "speaker-dark",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Output {
    pub file: Option<PathBuf>,
    /// Stream URLs; they print with the key masked.
    pub rtmp: Vec<StreamUrl>,
    pub s3: Option<S3Output>,
    /// Output scaling; None keeps the input size.
    pub size: Option<(u32, u32)>,
    /// Bits per second.
    pub audio_bitrate: u32,
    /// Hz.
    pub audio_frequency: u32,
    /// Bits per second.
    pub video_bitrate: u32,
    /// Bits.
    pub video_buffer: u32,
    /// How long a live stream keeps reconnecting after its server went away.
    pub rtmp_retry_for: Duration,
}

#[derive(Debug, Clone)]
pub struct S3Output {
    pub access_key: Option<String>,
    pub secret: Option<Secret>,
    pub session_token: Option<Secret>,
    pub bucket: String,
    pub key: String,
    pub region: Option<String>,
    pub endpoint: Option<url::Url>,
    pub force_path_style: Option<bool>,
    /// Bytes per uploaded part (at least 5 MiB, S3's minimum).
    pub part_size: u64,
    /// How long S3 may fail before the upload is abandoned (the local file is kept).
    pub give_up_after: Duration,
}

/// A config error: one line naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {path}: {message}")]
    Field { path: String, message: String },
    #[error("config: invalid JSON at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
}

fn field(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        path: path.to_owned(),
        message: message.into(),
    }
}

// ---- raw layer -------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    api_key: Option<String>,
    api_secret: Option<Secret>,
    #[serde(default)]
    input: Option<RawInput>,
    #[serde(default)]
    output: Option<RawOutput>,
    #[serde(default, with = "humantime_serde")]
    max_duration: Option<Duration>,
    supervision: Option<RawSupervision>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervision {
    max_restarts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    within: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    url: Option<String>,
    template: Option<RawTemplate>,
    width: Option<u32>,
    height: Option<u32>,
    depth: Option<u8>,
    framerate: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    layout: Option<String>,
    ws_url: Option<String>,
    token: Option<Secret>,
    room_name: Option<String>,
    base_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    file: Option<String>,
    rtmp: Option<OneOrMany>,
    #[serde(alias = "S3")]
    s3: Option<RawS3>,
    width: Option<u32>,
    height: Option<u32>,
    audio_bitrate: Option<Bitrate>,
    audio_frequency: Option<u32>,
    video_bitrate: Option<Bitrate>,
    video_buffer: Option<Bitrate>,
    #[serde(default, with = "humantime_serde")]
    rtmp_retry_for: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    access_key: Option<String>,
    secret: Option<Secret>,
    session_token: Option<Secret>,
    bucket: Option<String>,
    key: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    force_path_style: Option<bool>,
    part_size: Option<Size>,
    #[serde(default, with = "humantime_serde")]
    give_up_after: Option<Duration>,
}

/// A size: a number of bytes, or a string like "8MiB", "5MB", "16777216".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Number(u64),
    Text(String),
}

fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// "128k", "6M", "128000" or a number (bits per second).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Bitrate {
    Number(u64),
    Text(String),
}

// ---- validation --------------------------------------------------------------------------------

/// Parses and validates a config.
pub fn parse(json: &str) -> Result<Config, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ConfigError::Syntax {
                line: inner.line(),
                column: inner.column(),
                message: strip_position(&inner.to_string()),
            };
        }
        let path = e.path().to_string();
        let path = if path == "." {
            "config".to_owned()
        } else {
            path
        };
        field(&path, strip_position(&inner.to_string()))
    })?;
    validate(raw)
}

/// serde_json appends " at line L column C", which is noise next to a field path.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let input = raw
        .input
        .ok_or_else(|| field("input", "required (a url or a template)"))?;
    let width = input.width.unwrap_or(1920);
    let height = input.height.unwrap_or(1080);
    check_dimension("input.width", width, 7680)?;
    check_dimension("input.height", height, 4320)?;
    let depth = input.depth.unwrap_or(24);
    if depth != 16 && depth != 24 {
        return Err(field(
            "input.depth",
            format!("must be 16 or 24, got {depth}"),
        ));
    }
    let framerate = input.framerate.unwrap_or(30);
    if !(1..=60).contains(&framerate) {
        return Err(field(
            "input.framerate",
            format!("must be between 1 and 60, got {framerate}"),
        ));
    }
    let source = match (input.url, input.template) {
        (Some(_), Some(_)) => {
            return Err(field("input", "give either url or template, not both"));
        }
        (None, None) => return Err(field("input", "required: url or template")),
        (Some(url), None) => Source::Url(page_url(&url)?),
        (None, Some(t)) => Source::Template(template(t, raw.api_key, raw.api_secret)?),
    };
    let output = output(raw.output.unwrap_or_default(), width, height)?;
    if raw.max_duration == Some(Duration::ZERO) {
        return Err(field("max_duration", "must be longer than 0s"));
    }
    let defaults = Supervision::default();
    let supervision = match raw.supervision {
        None => defaults,
        Some(s) => {
            let max_restarts = s.max_restarts.unwrap_or(defaults.max_restarts);
            if max_restarts > 100 {
                return Err(field(
                    "supervision.max_restarts",
                    format!("must be at most 100, got {max_restarts}"),
                ));
            }
            let within = s.within.unwrap_or(defaults.within);
            if within.is_zero() {
                return Err(field("supervision.within", "must be longer than 0s"));
            }
            Supervision {
                max_restarts,
                within,
            }
        }
    };
    Ok(Config {
        input: Input {
            source,
            width,
            height,
            depth,
            framerate,
        },
        output,
        max_duration: raw.max_duration,
        supervision,
    })
}

fn check_dimension(path: &str, value: u32, max: u32) -> Result<(), ConfigError> {
    if !(64..=max).contains(&value) {
        return Err(field(
            path,
            format!("must be between 64 and {max}, got {value}"),
        ));
    }
    if value % 2 != 0 {
        return Err(field(path, format!("must be even, got {value}")));
    }
    Ok(())
}

/// A page URL: https:// is assumed without a scheme; http, https and file are allowed.
fn page_url(raw: &str) -> Result<url::Url, ConfigError> {
    const PATH: &str = "input.url";
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(field(PATH, "must not be empty"));
    }
    let with_scheme =
        if raw.contains("://") || raw.starts_with("javascript:") || raw.starts_with("data:") {
            raw.to_owned()
        } else {
            format!("https://{raw}")
        };
    let url =
        url::Url::parse(&with_scheme).map_err(|e| field(PATH, format!("not a valid URL ({e})")))?;
    match url.scheme() {
        "http" | "https" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(field(PATH, "has no host"));
            }
        }
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|()| field(PATH, "is not a valid file URL"))?;
            if !path.exists() {
                return Err(field(PATH, format!("{} does not exist", path.display())));
            }
        }
        other => {
            return Err(field(
                PATH,
                format!("scheme {other}: is not supported (use http, https or file)"),
            ))
        }
    }
    Ok(url)
}

fn template(
    raw: RawTemplate,
    api_key: Option<String>,
    api_secret: Option<Secret>,
) -> Result<Template, ConfigError> {
    let layout_raw = raw
        .layout
        .ok_or_else(|| field("input.template.layout", "required"))?;
    let layout = Layout::ALL
        .into_iter()
        .find(|l| l.as_str() == layout_raw)
        .ok_or_else(|| {
            field(
                "input.template.layout",
                format!(
                    "unknown layout {layout_raw:?}; expected one of grid-light, grid-dark, speaker-light, speaker-dark"
                ),
            )
        })?;
    let ws_raw = raw
        .ws_url
        .ok_or_else(|| field("input.template.ws_url", "required"))?;
    let ws_url = url::Url::parse(&ws_raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "ws" | "wss" | "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            field(
                "input.template.ws_url",
                format!("{ws_raw:?} is not a ws://, wss://, http:// or https:// URL"),
            )
        })?;
    let base_url = raw
        .base_url
        .map(|b| {
            url::Url::parse(&b)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https" | "file"))
                .ok_or_else(|| {
                    field(
                        "input.template.base_url",
                        format!("{b:?} is not an http(s) or file URL"),
                    )
                })
        })
        .transpose()?;
    // A token given explicitly wins: it is what the user made for this recording, and the api
    // key/secret may be there for other uses of the same config.
    let auth = match raw.token {
        Some(token) if token.is_empty() => {
            return Err(field("input.template.token", "must not be empty"))
        }
        Some(token) => TemplateAuth::Token(token),
        None => {
            let mut missing = Vec::new();
            if api_key.as_deref().is_none_or(str::is_empty) {
                missing.push("api_key");
            }
            if api_secret.as_ref().is_none_or(Secret::is_empty) {
                missing.push("api_secret");
            }
            if raw.room_name.as_deref().is_none_or(str::is_empty) {
                missing.push("input.template.room_name");
            }
            if !missing.is_empty() {
                return Err(field(
                    "input.template",
                    format!(
                        "needs a token, or api_key + api_secret + room_name (missing: {})",
                        missing.join(", ")
                    ),
                ));
            }
            TemplateAuth::ApiKey {
                api_key: api_key.unwrap_or_default(),
                api_secret: api_secret.unwrap_or_else(|| Secret::new("")),
                room_name: raw.room_name.unwrap_or_default(),
            }
        }
    };
    Ok(Template {
        layout,
        ws_url,
        auth,
        base_url,
    })
}

fn output(raw: RawOutput, in_width: u32, in_height: u32) -> Result<Output, ConfigError> {
    let file = raw.file.map(|f| output_file(&f)).transpose()?;
    let rtmp = match raw.rtmp {
        None => Vec::new(),
        Some(OneOrMany::One(url)) => vec![url],
        Some(OneOrMany::Many(urls)) => urls,
    };
    for (i, url) in rtmp.iter().enumerate() {
        let path = if rtmp.len() == 1 {
            "output.rtmp".to_owned()
        } else {
            format!("output.rtmp[{i}]")
        };
        let ok = url::Url::parse(url).ok().is_some_and(|u| {
            matches!(u.scheme(), "rtmp" | "rtmps") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if !ok {
            return Err(field(
                &path,
                format!(
                    "{} is not an rtmp:// or rtmps:// URL with a host",
                    mask_stream_url(url)
                ),
            ));
        }
    }
    let s3 = raw.s3.map(s3_output).transpose()?;
    if file.is_none() && rtmp.is_empty() && s3.is_none() {
        return Err(field(
            "output",
            "at least one of file, rtmp or s3 is required",
        ));
    }
    let size = match (raw.width, raw.height) {
        (None, None) => None,
        (w, h) => {
            let scaled =
                |known: u32, from: u32, to: u32| even(known as f64 * to as f64 / from as f64);
            let width = w.unwrap_or_else(|| scaled(h.unwrap_or(0), in_height, in_width));
            let height = h.unwrap_or_else(|| scaled(w.unwrap_or(0), in_width, in_height));
            check_dimension("output.width", width, 7680)?;
            check_dimension("output.height", height, 4320)?;
            ((width, height) != (in_width, in_height)).then_some((width, height))
        }
    };
    let audio_bitrate = bitrate(
        "output.audio_bitrate",
        raw.audio_bitrate,
        128_000,
        8_000,
        512_000,
    )?;
    let video_bitrate = bitrate(
        "output.video_bitrate",
        raw.video_bitrate,
        2_976_000,
        100_000,
        100_000_000,
    )?;
    let video_buffer = bitrate(
        "output.video_buffer",
        raw.video_buffer,
        5_952_000,
        100_000,
        200_000_000,
    )?;
    const FREQUENCIES: [u32; 8] = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000];
    let audio_frequency = raw.audio_frequency.unwrap_or(44_100);
    if !FREQUENCIES.contains(&audio_frequency) {
        return Err(field(
            "output.audio_frequency",
            format!("must be one of {FREQUENCIES:?}, got {audio_frequency}"),
        ));
    }
    let rtmp_retry_for = raw.rtmp_retry_for.unwrap_or(Duration::from_secs(60));
    if rtmp_retry_for.is_zero() {
        return Err(field("output.rtmp_retry_for", "must be longer than 0s"));
    }
    Ok(Output {
        rtmp_retry_for,
        file,
        rtmp: rtmp.into_iter().map(StreamUrl::new).collect(),
        s3,
        size,
        audio_bitrate,
        audio_frequency,
        video_bitrate,
        video_buffer,
    })
}

/// Rounds to the nearest even number.
fn even(v: f64) -> u32 {
    ((v / 2.0).round() * 2.0) as u32
}

fn output_file(raw: &str) -> Result<PathBuf, ConfigError> {
    const PATH: &str = "output.file";
    if raw.trim().is_empty() {
        return Err(field(PATH, "must not be empty"));
    }
    if raw.ends_with('/') {
        return Err(field(
            PATH,
            format!("{raw} is a directory; name the file, e.g. {raw}recording.mp4"),
        ));
    }
    let path = PathBuf::from(raw);
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("mp4") => Ok(path),
        Some(ext) => Err(field(PATH, format!("must end in .mp4, not .{ext}"))),
        None => Err(field(PATH, format!("must end in .mp4, e.g. {raw}.mp4"))),
    }
}

fn s3_output(raw: RawS3) -> Result<S3Output, ConfigError> {
    let bucket = raw
        .bucket
        .filter(|b| !b.is_empty())
        .ok_or_else(|| field("output.s3.bucket", "required"))?;
    let key = raw
        .key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| field("output.s3.key", "required"))?;
    match (&raw.access_key, &raw.secret) {
        (Some(_), None) => return Err(field("output.s3.secret", "required with access_key")),
        (None, Some(_)) => return Err(field("output.s3.access_key", "required with secret")),
        _ => {}
    }
    let endpoint = raw
        .endpoint
        .map(|e| {
            url::Url::parse(&e)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| field("output.s3.endpoint", format!("{e:?} is not an http(s) URL")))
        })
        .transpose()?;
    const MIN_PART: u64 = 5 * 1024 * 1024;
    let part_size = match raw.part_size {
        None => 8 * 1024 * 1024,
        Some(Size::Number(n)) => n,
        Some(Size::Text(t)) => parse_size(&t).ok_or_else(|| {
            field(
                "output.s3.part_size",
                format!("{t:?} is not a size; write it like \"8MiB\""),
            )
        })?,
    };
    if !(MIN_PART..=(5u64 << 30)).contains(&part_size) {
        return Err(field(
            "output.s3.part_size",
            format!("must be between 5MiB (S3's minimum) and 5GiB, got {part_size} bytes"),
        ));
    }
    let give_up_after = raw.give_up_after.unwrap_or(Duration::from_secs(300));
    if give_up_after.is_zero() {
        return Err(field("output.s3.give_up_after", "must be longer than 0s"));
    }
    Ok(S3Output {
        part_size,
        give_up_after,
        access_key: raw.access_key,
        secret: raw.secret,
        session_token: raw.session_token,
        bucket,
        key,
        region: raw.region,
        endpoint,
        force_path_style: raw.force_path_style,
    })
}

fn bitrate(
    path: &str,
    raw: Option<Bitrate>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let value: u64 = match raw {
        None => return Ok(default),
        Some(Bitrate::Number(n)) => n,
        Some(Bitrate::Text(text)) => parse_bitrate(&text).ok_or_else(|| {
            field(
                path,
                format!("{text:?} is not a bitrate; write it like \"128k\", \"6M\" or 128000"),
            )
        })?,
    };
    if value < 1000 {
        return Err(field(
            path,
            format!("{value} bit/s is too low; did you mean \"{value}k\"?"),
        ));
    }
    if value < min as u64 || value > max as u64 {
        return Err(field(
            path,
            format!(
                "must be between {}k and {}k, got {}k",
                min / 1000,
                max / 1000,
                value / 1000
            ),
        ));
    }
    Ok(value as u32)
}

fn parse_bitrate(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, factor) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1_000),
        'm' | 'M' => (&text[..text.len() - 1], 1_000_000),
        _ => (text, 1),
    };
    let digits = digits.trim();
    if let Ok(n) = digits.parse::<u64>() {
        return n.checked_mul(factor);
    }
    let f: f64 = digits.parse().ok()?;
    (f.is_finite() && f > 0.0).then(|| (f * factor as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: serde_json::Value) -> Config {
        parse(&v.to_string()).unwrap_or_else(|e| panic!("{v} rejected: {e}"))
    }

    fn err(v: serde_json::Value) -> String {
        let e = parse(&v.to_string()).expect_err(&format!("{v} accepted"));
        let s = e.to_string();
        assert_eq!(s.lines().count(), 1, "not one line: {s}");
        s
    }

    fn with_input(input: serde_json::Value) -> serde_json::Value {
        json!({ "input": input, "output": { "file": "/app/out/recording.mp4" } })
    }

    fn with_output(output: serde_json::Value) -> serde_json::Value {
        json!({ "input": { "url": "https://example.com" }, "output": output })
    }

    fn example(name: &str) -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn defaults() {
        let c = ok(with_input(json!({ "url": "https://example.com" })));
        assert_eq!(
            (
                c.input.width,
                c.input.height,
                c.input.depth,
                c.input.framerate
            ),
            (1920, 1080, 24, 30)
        );
        assert_eq!(c.output.audio_bitrate, 128_000);
        assert_eq!(c.output.audio_frequency, 44_100);
        assert_eq!(c.output.video_bitrate, 2_976_000);
        assert_eq!(c.output.video_buffer, 5_952_000);
        assert_eq!(c.output.size, None);
        assert_eq!(c.max_duration, None);
        assert_eq!(c.supervision, Supervision::default());
    }

    #[test]
    fn supervision_settings() {
        let mut v = with_input(json!({ "url": "https://e.com" }));
        v["supervision"] = json!({ "max_restarts": 0 });
        assert_eq!(ok(v.clone()).supervision.max_restarts, 0);
        v["supervision"] = json!({ "max_restarts": 3, "within": "10s" });
        assert_eq!(
            ok(v.clone()).supervision,
            Supervision {
                max_restarts: 3,
                within: Duration::from_secs(10)
            }
        );
        v["supervision"] = json!({ "within": "0s" });
        assert!(err(v.clone()).starts_with("config: supervision.within:"));
        v["supervision"] = json!({ "max_restart": 3 });
        assert!(err(v).starts_with("config: supervision.max_restart: unknown field"));
    }

    #[test]
    fn seed_examples_parse() {
        let basic = example("seed-basic.json");
        match basic.input.source {
            Source::Template(t) => {
                assert_eq!(t.layout, Layout::SpeakerDark);
                assert!(
                    matches!(t.auth, TemplateAuth::ApiKey { ref room_name, .. } if !room_name.is_empty())
                );
            }
            other => panic!("{other:?}"),
        }
        let s3 = example("seed-s3.json");
        assert_eq!(
            (s3.input.width, s3.input.height, s3.input.framerate),
            (1280, 720, 60)
        );
        assert!(s3.output.s3.is_some(), "capital S3 key");
        let twitch = example("seed-twitch.json");
        assert_eq!(twitch.output.size, Some((1280, 720)));
        assert_eq!(twitch.output.rtmp.len(), 1);
        assert!(matches!(
            twitch.input.source,
            Source::Template(Template {
                auth: TemplateAuth::Token(_),
                ..
            })
        ));
        let url = example("seed-url.json");
        match url.input.source {
            Source::Url(u) => assert_eq!(u.as_str(), "https://recording.example.com/"),
            other => panic!("{other:?}"),
        }
        for name in [
            "file.json",
            "seed-file.json",
            "seed-s3-output.json",
            "seed-rtmp-output.json",
            "seed-template-apikey.json",
            "seed-template-token.json",
        ] {
            example(name);
        }
    }

    #[test]
    fn the_seeds_input_only_snippet_needs_an_output() {
        let e = err(json!({ "input": { "url": "https://example.com" } }));
        assert_eq!(
            e,
            "config: output: at least one of file, rtmp or s3 is required"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        assert!(err(with_input(
            json!({ "url": "https://example.com", "widht": 1280 })
        ))
        .starts_with("config: input.widht: unknown field `widht`, expected one of `url`"));
        assert!(err(json!({ "input": { "url": "x.com" }, "output": { "file": "a.mp4", "S3": { "bucket": "b", "key": "k", "secert": "x" } } }))
            .starts_with("config: output.S3.secert: unknown field `secert`"));
        assert!(err(json!({ "inputs": {} })).starts_with("config: inputs: unknown field `inputs`"));
    }

    #[test]
    fn input_checks() {
        assert!(
            err(with_input(json!({ "url": "https://e.com", "width": 1281 })))
                .starts_with("config: input.width: must be even")
        );
        assert!(
            err(with_input(json!({ "url": "https://e.com", "height": 10 })))
                .starts_with("config: input.height: must be between")
        );
        assert!(err(with_input(
            json!({ "url": "https://e.com", "framerate": 61 })
        ))
        .starts_with("config: input.framerate:"));
        assert!(err(with_input(
            json!({ "url": "https://e.com", "framerate": 0 })
        ))
        .starts_with("config: input.framerate:"));
        assert!(
            err(with_input(json!({ "url": "https://e.com", "depth": 8 })))
                .starts_with("config: input.depth:")
        );
        assert!(err(with_input(json!({}))).starts_with("config: input: required"));
        assert!(
            err(json!({ "output": { "file": "a.mp4" } })).starts_with("config: input: required")
        );
        assert!(err(with_input(
            json!({ "url": "https://e.com", "template": { "layout": "grid-dark" } })
        ))
        .starts_with("config: input: give either url or template"));
    }

    #[test]
    fn urls() {
        let url = |u: &str| match ok(with_input(json!({ "url": u }))).input.source {
            Source::Url(u) => u.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            url("your-recording-domain.com"),
            "https://your-recording-domain.com/"
        );
        assert_eq!(
            url("http://127.0.0.1:8080/x?y=1"),
            "http://127.0.0.1:8080/x?y=1"
        );
        let page = tempfile::NamedTempFile::new().unwrap();
        url(&format!("file://{}", page.path().display()));
        assert!(
            err(with_input(json!({ "url": "file:///no/such/page.html" })))
                .contains("input.url: /no/such/page.html does not exist")
        );
        assert!(err(with_input(json!({ "url": "ftp://example.com" })))
            .starts_with("config: input.url: scheme ftp"));
        assert!(err(with_input(json!({ "url": "javascript:alert(1)" })))
            .starts_with("config: input.url:"));
        assert!(err(with_input(json!({ "url": "" })))
            .starts_with("config: input.url: must not be empty"));
    }

    #[test]
    fn templates() {
        let t = |template: serde_json::Value, extra: serde_json::Value| {
            let mut v = with_input(json!({ "template": template }));
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            v
        };
        let good =
            json!({ "layout": "grid-light", "ws_url": "wss://lk.example.com", "room_name": "r" });
        let keys = json!({ "api_key": "key", "api_secret": "very-secret" });
        ok(t(good.clone(), keys.clone()));
        // Missing secret: named, and nothing secret printed.
        let e = err(t(good.clone(), json!({ "api_key": "key" })));
        assert!(e.contains("missing: api_secret"), "{e}");
        let e = err(t(
            json!({ "layout": "grid-light", "ws_url": "wss://lk.example.com" }),
            keys.clone(),
        ));
        assert!(
            e.contains("input.template.room_name") && !e.contains("very-secret"),
            "{e}"
        );
        let e = err(t(
            json!({ "layout": "mosaic", "ws_url": "wss://x.example.com", "token": "t" }),
            json!({}),
        ));
        assert!(
            e.starts_with("config: input.template.layout: unknown layout \"mosaic\"")
                && e.contains("speaker-dark"),
            "{e}"
        );
        let e = err(t(
            json!({ "layout": "grid-dark", "ws_url": "<wss://livekit.your-domain.com>", "token": "t" }),
            json!({}),
        ));
        assert!(e.starts_with("config: input.template.ws_url:"), "{e}");
        // Token and api key both: the token wins.
        let c = ok(t(
            json!({ "layout": "grid-dark", "ws_url": "wss://x.example.com", "token": "tok", "room_name": "r" }),
            keys,
        ));
        assert!(matches!(
            c.input.source,
            Source::Template(Template {
                auth: TemplateAuth::Token(_),
                ..
            })
        ));
        // Secrets never print.
        assert!(!format!("{c:?}").contains("tok\""));
    }

    #[test]
    fn outputs() {
        assert!(err(with_output(json!({}))).starts_with("config: output: at least one"));
        assert!(err(with_output(json!({ "file": "out/" }))).starts_with("config: output.file:"));
        assert!(err(with_output(json!({ "file": "out.mkv" }))).contains("must end in .mp4"));
        assert!(err(with_output(json!({ "file": "out" }))).contains("out.mp4"));
        ok(with_output(json!({ "file": "OUT.MP4" })));
        let e = err(with_output(
            json!({ "rtmp": "http://live.example.com/app/sk_live_123" }),
        ));
        assert!(
            e.starts_with("config: output.rtmp:") && !e.contains("sk_live_123"),
            "{e}"
        );
        let e = err(with_output(
            json!({ "rtmp": ["rtmp://a.example.com/app/k1", "udp://b/app/k2"] }),
        ));
        assert!(
            e.starts_with("config: output.rtmp[1]:") && !e.contains("k2"),
            "{e}"
        );
        assert_eq!(
            ok(with_output(
                json!({ "rtmp": ["rtmp://a/app/k1", "rtmps://b/app/k2"] })
            ))
            .output
            .rtmp
            .len(),
            2
        );
        let e = err(with_output(
            json!({ "s3": { "access_key": "AK", "bucket": "b", "key": "k" } }),
        ));
        assert!(e.starts_with("config: output.s3.secret:"), "{e}");
        let e = err(with_output(
            json!({ "s3": { "secret": "shh-secret", "bucket": "b", "key": "k" } }),
        ));
        assert!(
            e.starts_with("config: output.s3.access_key:") && !e.contains("shh-secret"),
            "{e}"
        );
        assert!(err(with_output(json!({ "s3": { "key": "k" } })))
            .starts_with("config: output.s3.bucket:"));
        assert!(err(with_output(
            json!({ "s3": { "bucket": "b", "key": "k", "endpoint": "ftp://x" } })
        ))
        .starts_with("config: output.s3.endpoint:"));
        let sized = |size: serde_json::Value| {
            with_output(json!({ "s3": { "bucket": "b", "key": "k", "part_size": size } }))
        };
        assert_eq!(
            ok(sized(json!("8MiB"))).output.s3.unwrap().part_size,
            8 << 20
        );
        assert_eq!(
            ok(sized(json!(6_000_000))).output.s3.unwrap().part_size,
            6_000_000
        );
        assert!(err(sized(json!("1MiB")))
            .starts_with("config: output.s3.part_size: must be between 5MiB"));
        assert!(err(sized(json!("big"))).starts_with("config: output.s3.part_size:"));
        // No keys: the standard credential chain applies later.
        let s3 = ok(with_output(
            json!({ "s3": { "bucket": "b", "key": "k", "endpoint": "http://127.0.0.1:9000" } }),
        ))
        .output
        .s3
        .unwrap();
        assert!(s3.access_key.is_none() && s3.endpoint.is_some());
    }

    #[test]
    fn scaling() {
        let size = |out: serde_json::Value| ok(with_output(out)).output.size;
        assert_eq!(
            size(json!({ "file": "a.mp4", "width": 1280, "height": 720 })),
            Some((1280, 720))
        );
        assert_eq!(
            size(json!({ "file": "a.mp4", "width": 1280 })),
            Some((1280, 720))
        );
        assert_eq!(
            size(json!({ "file": "a.mp4", "height": 480 })),
            Some((854, 480))
        );
        assert_eq!(
            size(json!({ "file": "a.mp4", "width": 1920, "height": 1080 })),
            None
        );
        assert!(err(with_output(
            json!({ "file": "a.mp4", "width": 641, "height": 360 })
        ))
        .starts_with("config: output.width: must be even"));
    }

    #[test]
    fn bitrates() {
        let out = |v: serde_json::Value| ok(with_output(v)).output;
        let o = out(
            json!({ "file": "a.mp4", "audio_bitrate": "96K", "video_bitrate": "6M", "video_buffer": 12000000 }),
        );
        assert_eq!(
            (o.audio_bitrate, o.video_bitrate, o.video_buffer),
            (96_000, 6_000_000, 12_000_000)
        );
        assert_eq!(
            out(json!({ "file": "a.mp4", "video_bitrate": "2.5M" })).video_bitrate,
            2_500_000
        );
        let e = err(with_output(
            json!({ "file": "a.mp4", "audio_bitrate": 128 }),
        ));
        assert!(
            e.contains("output.audio_bitrate") && e.contains("\"128k\""),
            "{e}"
        );
        assert!(err(with_output(
            json!({ "file": "a.mp4", "video_bitrate": "lots" })
        ))
        .starts_with("config: output.video_bitrate:"));
        assert!(err(with_output(
            json!({ "file": "a.mp4", "audio_bitrate": "1M" })
        ))
        .starts_with("config: output.audio_bitrate: must be between"));
        assert!(err(with_output(
            json!({ "file": "a.mp4", "audio_frequency": 44000 })
        ))
        .starts_with("config: output.audio_frequency:"));
        assert_eq!(
            out(json!({ "file": "a.mp4", "audio_frequency": 48000 })).audio_frequency,
            48_000
        );
    }

    #[test]
    fn durations_and_syntax() {
        let mut v = with_input(json!({ "url": "https://e.com" }));
        v["max_duration"] = json!("2h");
        assert_eq!(ok(v.clone()).max_duration, Some(Duration::from_secs(7200)));
        v["max_duration"] = json!("soon");
        assert!(err(v.clone()).starts_with("config: max_duration:"));
        v["max_duration"] = json!("0s");
        assert!(err(v).starts_with("config: max_duration: must be longer"));
        let e = parse("{ \"input\": ").unwrap_err().to_string();
        assert!(e.starts_with("config: invalid JSON at line 1"), "{e}");
    }
}
