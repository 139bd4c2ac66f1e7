//! The recording config, in two layers.
//!
//! 1. Raw: serde structs that mirror the JSON of the LiveKit recorder exactly (plus pagecast's
//!    additions). Unknown fields are errors, and `serde_path_to_error` names the failing field.
//! 2. Validated: [`Config`], a typed value the rest of the program trusts: defaults applied,
//!    ranges checked, URLs parsed, secrets wrapped so they never print.
//!
//! Every error is one line, `config: <field path>: <what is wrong>`, and never contains a secret:
//! secret fields are read by [`secret`], which never echoes a value it rejects, stream URLs are
//! shown through [`mask_stream_url`], and a string given where an object belongs is not echoed.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

pub use pagecast_actors::encoder::{ImageFormat, Naming, Tracks};
use pagecast_actors::login::{Cookie, Login};
use pagecast_actors::secret::{mask_stream_url, mask_url, Secret, StreamUrl};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

mod stores;
pub use stores::{AzureAuth, AzureOutput, Backup, GcsAuth, GcsOutput};

/// The environment variable the config is read from.
pub const ENV_VAR: &str = "LIVEKIT_RECORDER_CONFIG";

const MAX_WIDTH: u32 = 7680;
const MAX_HEIGHT: u32 = 4320;

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
    /// Begin encoding only when the page logs START_RECORDING (always for LiveKit layouts; opt-in
    /// for custom URLs).
    pub await_start_signal: bool,
    /// How long to wait for START_RECORDING before giving up ("nobody joined").
    pub start_timeout: Duration,
    /// WebGL through software GL (default on).
    pub webgl: bool,
    /// Accept an invalid TLS certificate for the page.
    pub insecure: bool,
    /// Headers for the page's origin and cookies, for a page behind a login.
    pub login: Login,
}

/// Default of `input.start_timeout`.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `input.template.empty_room_timeout`.
pub const DEFAULT_EMPTY_ROOM_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub enum Source {
    Url(url::Url),
    Template(Box<Template>),
}

// A page URL may carry a basic-auth password: `check` prints the config, so never the raw URL.
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Url(url) => f.debug_tuple("Url").field(&mask_url(url.as_str())).finish(),
            Source::Template(t) => f.debug_tuple("Template").field(t).finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Template {
    pub layout: Layout,
    pub ws_url: url::Url,
    pub auth: TemplateAuth,
    /// A layout page of the user's own, taking `url` and `token` like the built-in ones.
    pub base_url: Option<url::Url>,
    /// How long the room may be empty (after someone was there) before the recording ends.
    pub empty_room_timeout: Duration,
    /// How long each token pagecast signs is valid (a fresh one at every browser start); None:
    /// the recording's length, at least 6 h. Short values are for tests.
    pub token_lifetime: Option<Duration>,
    /// Part of the room rather than all of it (LiveKit's participant and track composite
    /// egresses); None: the room.
    pub focus: Option<Focus>,
}

/// Part of a room, recorded alone. The layout page subscribes to nothing else, shows the picture
/// alone (no name label) and ends the recording once it is gone (after `empty_room_timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Focus {
    /// One participant: their camera and microphone, or (`screen_share`) their screen share and
    /// its sound.
    Participant {
        identity: String,
        screen_share: bool,
    },
    /// A video track and an audio track (their sids), at least one: the picture of the one, the
    /// sound of the other, whoever publishes them.
    Tracks {
        audio: Option<String>,
        video: Option<String>,
    },
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
    /// SRT caller URLs (`output.srt`); they print with their query (passphrase, streamid) masked.
    pub srt: Vec<StreamUrl>,
    pub s3: Option<S3Output>,
    /// `output.gcs` and `output.azure` (at most one of s3, gcs, azure).
    pub gcs: Option<GcsOutput>,
    pub azure: Option<AzureOutput>,
    /// Where the recording goes when the store's upload gives up.
    pub backup: Option<Backup>,
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
    /// x264's preset (`output.video_preset`): how much CPU each frame may take.
    pub video_preset: &'static str,
    /// How long a live stream (RTMP or SRT) keeps reconnecting after its server went away.
    pub rtmp_retry_for: Duration,
    /// Snapshots of the recording (`output.images`).
    pub images: Option<Images>,
    /// HLS from the same encode (`output.hls`).
    pub hls: Option<Hls>,
    /// The page's sound and picture, or one of them (`output.audio_only`, `output.video_only`).
    pub tracks: Tracks,
}

/// `output.hls`: MPEG-TS segments of about `segment` (cut on keyframes) and an event playlist
/// (`index.m3u8`, growing while recording, closed with `#EXT-X-ENDLIST` at the end: the VOD
/// playlist), in `directory`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hls {
    pub directory: PathBuf,
    pub segment: Duration,
    /// `output.hls.naming`: segments numbered (`index`, the default) or named by time.
    pub naming: Naming,
    /// `output.hls.live_playlist`: a sliding-window playlist beside the event one (default off).
    pub live: Option<LivePlaylist>,
    /// `output.hls.prefix`: segments and playlists copied under it to the store's bucket or
    /// container (output.s3, output.gcs or output.azure).
    pub prefix: Option<String>,
}

/// `output.hls.live_playlist`: the last `window` segments, in `name` (in the HLS directory).
#[derive(Debug, Clone, PartialEq)]
pub struct LivePlaylist {
    pub name: String,
    pub window: usize,
}

/// `output.images`: a JPEG (or PNG) of the page every `every`, into `directory`.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    pub directory: PathBuf,
    pub every: Duration,
    /// Width and height of the images; a missing one keeps the aspect ratio, both missing: the
    /// recorded size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// `output.images.format`: jpeg (the default) or png.
    pub format: ImageFormat,
    /// `output.images.naming`: numbered (`index`, the default) or named by time.
    pub naming: Naming,
    /// `output.images.prefix`: images copied under it to the store's bucket or container.
    pub prefix: Option<String>,
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

/// A config error: one line, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field is wrong: `config: input.width: must be even, got 1281`.
    #[error("config: {path}: {message}")]
    Field { path: String, message: String },
    /// The text is not JSON.
    #[error("config: invalid JSON at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// The document as a whole is wrong: empty, or not a JSON object.
    #[error("config: {0}")]
    Document(String),
}

fn field(path: &str, message: impl AsRef<str>) -> ConfigError {
    ConfigError::Field {
        path: one_line(path),
        message: one_line(message.as_ref()),
    }
}

/// Escapes line breaks and other control characters (a JSON key may hold any of them), so an
/// error stays on one line.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

// ---- raw layer -------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    api_key: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    api_secret: Option<Secret>,
    input: Option<Obj<RawInput>>,
    output: Option<Obj<RawOutput>>,
    #[serde(default, deserialize_with = "duration")]
    max_duration: Option<Duration>,
    supervision: Option<Obj<RawSupervision>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervision {
    max_restarts: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    within: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    url: Option<String>,
    template: Option<Obj<RawTemplate>>,
    width: Option<u32>,
    height: Option<u32>,
    depth: Option<u8>,
    framerate: Option<u32>,
    await_start_signal: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    start_timeout: Option<Duration>,
    webgl: Option<bool>,
    insecure: Option<bool>,
    headers: Option<Obj<Headers>>,
    cookies: Option<List<Obj<RawCookie>>>,
}

/// `input.headers`: header names and their (secret) values, in the order given.
struct Headers(Vec<(String, Secret)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;
        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of header names and values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut headers = Vec::new();
                while let Some((name, Required(value))) = map.next_entry::<String, Required>()? {
                    headers.push((name, value));
                }
                Ok(Headers(headers))
            }
        }
        deserializer.deserialize_map(HeadersVisitor)
    }
}

/// A secret that must be given: a string (null is refused, and nothing else is echoed).
struct Required(Secret);

impl<'de> Deserialize<'de> for Required {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        secret(deserializer)?
            .map(Required)
            .ok_or_else(|| de::Error::custom("must be a string, not null"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCookie {
    name: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    value: Option<Secret>,
    domain: Option<String>,
    path: Option<String>,
    secure: Option<bool>,
    http_only: Option<bool>,
}

/// A JSON array read into a `Vec<T>`; anything else is refused without echoing it (a string in
/// its place may be a secret: `"cookies": "session=..."`).
struct List<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(items)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<T>, E> {
                Err(E::invalid_type(de::Unexpected::Other("a string"), &self))
            }
        }
        deserializer
            .deserialize_any(ListVisitor(PhantomData))
            .map(List)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    layout: Option<String>,
    ws_url: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    token: Option<Secret>,
    room_name: Option<String>,
    base_url: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    empty_room_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    token_lifetime: Option<Duration>,
    participant: Option<String>,
    screen_share: Option<bool>,
    audio_track: Option<String>,
    video_track: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    file: Option<String>,
    rtmp: Option<Urls>,
    srt: Option<Urls>,
    /// `s3` and `S3` (the seed's spelling) are both accepted. They are two fields rather than an
    /// alias so that errors can name the key the user actually wrote.
    s3: Option<Obj<RawS3>>,
    #[serde(rename = "S3")]
    s3_capitalised: Option<Obj<RawS3>>,
    width: Option<u32>,
    height: Option<u32>,
    audio_bitrate: Option<Bitrate>,
    audio_frequency: Option<u32>,
    video_bitrate: Option<Bitrate>,
    video_buffer: Option<Bitrate>,
    video_preset: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    rtmp_retry_for: Option<Duration>,
    images: Option<Obj<RawImages>>,
    hls: Option<Obj<RawHls>>,
    audio_only: Option<bool>,
    video_only: Option<bool>,
    gcs: Option<Obj<stores::RawGcs>>,
    azure: Option<Obj<stores::RawAzure>>,
    backup: Option<Obj<stores::RawBackup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHls {
    directory: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    segment_duration: Option<Duration>,
    naming: Option<RawNaming>,
    live_playlist: Option<Obj<RawLivePlaylist>>,
    prefix: Option<String>,
    /// `prefix`'s older name (output.s3 only).
    s3_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawNaming {
    Index,
    Timestamp,
}

impl From<RawNaming> for Naming {
    fn from(raw: RawNaming) -> Naming {
        match raw {
            RawNaming::Index => Naming::Index,
            RawNaming::Timestamp => Naming::Timestamp,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLivePlaylist {
    name: Option<String>,
    window: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImages {
    directory: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    every: Option<Duration>,
    width: Option<u32>,
    height: Option<u32>,
    format: Option<RawImageFormat>,
    naming: Option<RawNaming>,
    prefix: Option<String>,
    /// `prefix`'s older name (output.s3 only).
    s3_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawImageFormat {
    #[serde(alias = "jpg")]
    Jpeg,
    Png,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    access_key: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    secret: Option<Secret>,
    #[serde(default, deserialize_with = "secret")]
    session_token: Option<Secret>,
    bucket: Option<String>,
    key: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    force_path_style: Option<bool>,
    part_size: Option<Size>,
    #[serde(default, deserialize_with = "duration")]
    give_up_after: Option<Duration>,
}

/// A JSON object read into `T`. A derived struct alone would also accept an array (filling the
/// fields by position) and would echo a string given in its place, which may be a secret
/// (`"output": "rtmp://host/app/<key>"`); this accepts only objects and echoes nothing.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<T, E> {
                Err(E::invalid_type(de::Unexpected::Other("a string"), &self))
            }
        }
        deserializer
            .deserialize_any(ObjVisitor(PhantomData))
            .map(Obj)
    }
}

/// Reads a secret field: a string, or null. Anything else is refused without showing the value.
fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Secret>, D::Error> {
    struct SecretVisitor;
    fn hidden<E: de::Error>(kind: &str) -> E {
        E::custom(format_args!(
            "invalid type: {kind}, expected a string (value not shown: this field is secret)"
        ))
    }
    impl<'de> Visitor<'de> for SecretVisitor {
        type Value = Option<Secret>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            // `deserialize_any`, not `deserialize_str`: serde_json would report a number given
            // to `deserialize_str` itself, value included, without asking this visitor.
            d.deserialize_any(SecretVisitor)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Secret::new(v)))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Secret::new(v)))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(hidden("boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(hidden("integer"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(hidden("integer"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(hidden("number"))
        }
    }
    deserializer.deserialize_option(SecretVisitor)
}

/// The longest duration any setting takes (366 days). A longer one ("584542046090y") would
/// overflow the clock arithmetic it goes into: a timer's deadline, a token's expiry.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration written like "30s", "90m" or "2h" (humantime), at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write it like \"30s\", \"90m\" or \"2h\"")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than the longest duration taken (366 days)"
        ));
    }
    Ok(d)
}

/// Reads a duration written like "30s", "90m" or "2h" (humantime), or null.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    struct DurationVisitor;
    impl<'de> Visitor<'de> for DurationVisitor {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration like \"30s\", \"90m\" or \"2h\"")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(DurationVisitor)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_duration(v).map(Some).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(E::custom(format_args!(
                "{v} has no unit; write it as a string like \"{v}s\""
            )))
        }
    }
    deserializer.deserialize_option(DurationVisitor)
}

/// `output.rtmp`, `output.srt`: one URL, or a list of them.
struct Urls(Vec<String>);

impl<'de> Deserialize<'de> for Urls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UrlsVisitor;
        impl<'de> Visitor<'de> for UrlsVisitor {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(vec![v.to_owned()])
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut urls = Vec::new();
                while let Some(url) = seq.next_element::<String>()? {
                    urls.push(url);
                }
                Ok(urls)
            }
        }
        deserializer.deserialize_any(UrlsVisitor).map(Urls)
    }
}

/// A quantity written as a JSON number or as a string with a unit.
enum Amount {
    Number(u64),
    Text(String),
}

struct AmountVisitor(&'static str);

impl<'de> Visitor<'de> for AmountVisitor {
    type Value = Amount;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
        Ok(Amount::Number(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
        u64::try_from(v)
            .map(Amount::Number)
            .map_err(|_| E::custom(format_args!("must not be negative, got {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 {
            Ok(Amount::Number(v as u64))
        } else {
            Err(E::custom(format_args!("must be a whole number, got {v}")))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
        Ok(Amount::Text(v.to_owned()))
    }
}

/// "128k", "6M", "128000" or a number (bits per second).
struct Bitrate(Amount);

impl<'de> Deserialize<'de> for Bitrate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(AmountVisitor("a bitrate like \"128k\", \"6M\" or 128000"))
            .map(Bitrate)
    }
}

/// A size: a number of bytes, or a string like "8MiB", "5MB", "16777216".
struct Size(Amount);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(AmountVisitor("a size like \"8MiB\" or 8388608"))
            .map(Size)
    }
}

/// A size: digits, then an optional unit (`B`, `kB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`,
/// case-insensitive).
pub fn parse_size(text: &str) -> Option<u64> {
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

/// A bitrate string: digits with at most one decimal point, then an optional `k` (1000) or `M`
/// (1 000 000), case-insensitive. Returns the bits per second and whether a unit was given.
fn parse_bitrate(text: &str) -> Option<(f64, bool)> {
    let text = text.trim();
    let (number, factor) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 1e3),
        (i, 'm' | 'M') => (&text[..i], 1e6),
        _ => (text, 1.0),
    };
    let number = number.trim();
    let well_formed = number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    if !well_formed {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    Some((value * factor, factor > 1.0))
}

// ---- validation --------------------------------------------------------------------------------

/// Parses and validates a config.
pub fn parse(json: &str) -> Result<Config, ConfigError> {
    if json.trim().is_empty() {
        return Err(ConfigError::Document(
            "is empty; expected a JSON object".to_owned(),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let raw: Obj<RawConfig> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at_top = e.path().iter().next().is_none();
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            syntax(&inner)
        } else if at_top {
            ConfigError::Document(one_line(&strip_position(&inner.to_string())))
        } else {
            field(&path, strip_position(&inner.to_string()))
        }
    })?;
    // Text after the object (a second object, a stray brace) is an error, not ignored.
    de.end().map_err(|e| syntax(&e))?;
    validate(raw.0)
}

fn syntax(e: &serde_json::Error) -> ConfigError {
    // serde_json's syntax messages ("expected `,` or `}`", "trailing comma") never quote the text.
    ConfigError::Syntax {
        line: e.line(),
        column: e.column(),
        message: one_line(&strip_position(&e.to_string())),
    }
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
        .ok_or_else(|| field("input", "required (a url or a template)"))?
        .0;
    let width = input.width.unwrap_or(1920);
    let height = input.height.unwrap_or(1080);
    check_dimension("input.width", width, MAX_WIDTH)?;
    check_dimension("input.height", height, MAX_HEIGHT)?;
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
        (None, Some(t)) => Source::Template(Box::new(template(t.0, raw.api_key, raw.api_secret)?)),
    };
    let await_start_signal = match (&source, input.await_start_signal) {
        (Source::Template(_), Some(false)) => {
            return Err(field(
                "input.await_start_signal",
                "LiveKit layouts always wait for their start signal; remove the field or set it to true",
            ))
        }
        (Source::Template(_), _) => true,
        (Source::Url(_), given) => given.unwrap_or(false),
    };
    let start_timeout = input.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT);
    if start_timeout.is_zero() {
        return Err(field("input.start_timeout", "must be longer than 0s"));
    }
    // The page the browser opens: a URL, or a layout page of the user's own.
    let page = match &source {
        Source::Url(url) => Some(url),
        Source::Template(t) => t.base_url.as_ref(),
    };
    let login = Login {
        headers: headers(input.headers.map(|h| h.0 .0).unwrap_or_default(), page)?,
        cookies: cookies(input.cookies.map(|c| c.0).unwrap_or_default(), page)?,
    };
    let output = output(raw.output.map(|o| o.0).unwrap_or_default(), width, height)?;
    check_placeholders(&output, matches!(source, Source::Template(_)))?;
    if raw.max_duration == Some(Duration::ZERO) {
        return Err(field("max_duration", "must be longer than 0s"));
    }
    let defaults = Supervision::default();
    let supervision = match raw.supervision {
        None => defaults,
        Some(Obj(s)) => {
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
            await_start_signal,
            start_timeout,
            webgl: input.webgl.unwrap_or(true),
            insecure: input.insecure.unwrap_or(false),
            login,
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

/// Whether `raw` starts with a URL scheme (`https:`, `file:`, `javascript:`), as opposed to a bare
/// host, possibly with a port (`localhost:8080/page`).
fn has_scheme(raw: &str) -> bool {
    let Some((scheme, rest)) = raw.split_once(':') else {
        return false;
    };
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let port = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let is_port = !port.is_empty() && port.chars().all(|c| c.is_ascii_digit());
    is_scheme && !is_port
}

/// A URL fit for an error message: masked if it parses, quoted as given if not (a typo or a
/// `<placeholder>` has to be visible to be fixed).
fn shown_url(raw: &str) -> String {
    if url::Url::parse(raw).is_ok() {
        mask_url(raw)
    } else {
        format!("{raw:?}")
    }
}

/// A page URL: https:// is assumed without a scheme; http, https and file are allowed.
fn page_url(raw: &str) -> Result<url::Url, ConfigError> {
    const PATH: &str = "input.url";
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(field(PATH, "must not be empty"));
    }
    let with_scheme = if has_scheme(raw) {
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

/// The page headers and cookies are for: an http(s) page. `what` is the field that needs it.
fn login_page<'a>(page: Option<&'a url::Url>, what: &str) -> Result<&'a url::Url, ConfigError> {
    match page {
        Some(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
        Some(_) => Err(field(what, "needs an http:// or https:// page, not a file")),
        None => Err(field(
            what,
            "needs input.url (or input.template.base_url): the built-in layouts need no login",
        )),
    }
}

/// An HTTP token (RFC 9110): what a header or cookie name may be made of.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// `input.headers`: names that are HTTP tokens, each once, none the browser must own; values on
/// one line. Values are never echoed.
fn headers(
    raw: Vec<(String, Secret)>,
    page: Option<&url::Url>,
) -> Result<Vec<(String, Secret)>, ConfigError> {
    const PATH: &str = "input.headers";
    if raw.is_empty() {
        return Ok(raw);
    }
    let page = login_page(page, PATH)?;
    // Framing and connection headers are the browser's; cookies have input.cookies.
    const OWNED: [&str; 9] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "cookie",
    ];
    for (i, (name, value)) in raw.iter().enumerate() {
        let at = format!("{PATH}.{name}");
        if !is_token(name) {
            return Err(field(&at, "is not a valid header name"));
        }
        if OWNED.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            let why = if name.eq_ignore_ascii_case("cookie") {
                "cannot be set here; give cookies in input.cookies"
            } else {
                "is set by the browser and cannot be given"
            };
            return Err(field(&at, why));
        }
        if raw[..i].iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(field(&at, "is given twice"));
        }
        if value
            .expose()
            .chars()
            .any(|c| matches!(c, '\r' | '\n' | '\0'))
        {
            return Err(field(
                &at,
                "must be one line without NUL (value not shown: this field is secret)",
            ));
        }
        if name.eq_ignore_ascii_case("authorization") && !page.username().is_empty() {
            return Err(field(
                &at,
                "give credentials either in input.url or here, not both",
            ));
        }
    }
    Ok(raw)
}

/// `input.cookies`: each with a name and a value, for the page's host or a parent domain of it.
fn cookies(raw: Vec<Obj<RawCookie>>, page: Option<&url::Url>) -> Result<Vec<Cookie>, ConfigError> {
    const PATH: &str = "input.cookies";
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let page = login_page(page, PATH)?;
    let host = page.host_str().unwrap_or_default().to_ascii_lowercase();
    let mut cookies: Vec<Cookie> = Vec::new();
    for (i, Obj(c)) in raw.into_iter().enumerate() {
        let at = |name: &str| format!("{PATH}[{i}].{name}");
        let name = c.name.ok_or_else(|| field(&at("name"), "required"))?;
        if !is_token(&name) {
            return Err(field(
                &at("name"),
                format!("{name:?} is not a valid cookie name"),
            ));
        }
        let value = c.value.ok_or_else(|| field(&at("value"), "required"))?;
        if value.expose().chars().any(|c| c == ';' || c.is_control()) {
            return Err(field(
                &at("value"),
                "must not contain ';' or control characters (value not shown: this field is secret)",
            ));
        }
        let domain = match c.domain {
            None => host.clone(),
            Some(d) => {
                let d = d.trim_start_matches('.').to_ascii_lowercase();
                let covers =
                    host == d || (page.domain().is_some() && host.ends_with(&format!(".{d}")));
                if d.is_empty() || !covers {
                    return Err(field(
                        &at("domain"),
                        format!(
                            "{d:?} is neither the page's host {host} nor a parent domain of it"
                        ),
                    ));
                }
                d
            }
        };
        let path = c.path.unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') || path.chars().any(|c| c == ';' || c.is_control()) {
            return Err(field(
                &at("path"),
                format!("{path:?} must be a path starting with /"),
            ));
        }
        if cookies
            .iter()
            .any(|o| o.name == name && o.domain == domain && o.path == path)
        {
            return Err(field(
                &at("name"),
                format!("{name:?} is given twice for {domain}{path}"),
            ));
        }
        cookies.push(Cookie {
            name,
            value,
            domain,
            path,
            // A cookie for an https page goes only over https, unless said otherwise.
            secure: c.secure.unwrap_or(page.scheme() == "https"),
            http_only: c.http_only.unwrap_or(false),
        });
    }
    Ok(cookies)
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
        .filter(|u| {
            matches!(u.scheme(), "ws" | "wss" | "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
        })
        .ok_or_else(|| {
            field(
                "input.template.ws_url",
                format!(
                    "{} is not a ws://, wss://, http:// or https:// URL",
                    shown_url(&ws_raw)
                ),
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
                        format!("{} is not an http(s) or file URL", shown_url(&b)),
                    )
                })
        })
        .transpose()?;
    // A token given explicitly wins over api_key + api_secret + room_name (which are then not
    // needed and not checked): the token is what the user made for this recording, and the api
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
    let empty_room_timeout = raw.empty_room_timeout.unwrap_or(DEFAULT_EMPTY_ROOM_TIMEOUT);
    if empty_room_timeout > Duration::from_secs(3600) {
        return Err(field(
            "input.template.empty_room_timeout",
            "must be at most 1h",
        ));
    }
    let token_lifetime = match (raw.token_lifetime, &auth) {
        (Some(_), TemplateAuth::Token(_)) => {
            return Err(field(
                "input.template.token_lifetime",
                "pagecast signs tokens only from api_key and api_secret; a given token has its own lifetime",
            ))
        }
        (Some(l), _) if l < Duration::from_secs(1) => {
            return Err(field("input.template.token_lifetime", "must be at least 1s"))
        }
        (lifetime, _) => lifetime,
    };
    let focus = focus(
        raw.participant,
        raw.screen_share,
        raw.audio_track,
        raw.video_track,
    )?;
    Ok(Template {
        layout,
        ws_url,
        auth,
        base_url,
        empty_room_timeout,
        token_lifetime,
        focus,
    })
}

/// `input.template`'s `participant` and `screen_share`, or `audio_track` and `video_track`.
fn focus(
    participant: Option<String>,
    screen_share: Option<bool>,
    audio: Option<String>,
    video: Option<String>,
) -> Result<Option<Focus>, ConfigError> {
    for (name, value) in [
        ("participant", &participant),
        ("audio_track", &audio),
        ("video_track", &video),
    ] {
        if value.as_deref() == Some("") {
            return Err(field(
                &format!("input.template.{name}"),
                "must not be empty",
            ));
        }
    }
    let tracks = audio.is_some() || video.is_some();
    match participant {
        Some(_) if tracks => Err(field(
            "input.template.participant",
            "records one participant; audio_track and video_track record tracks: give one or the other",
        )),
        Some(identity) => Ok(Some(Focus::Participant {
            identity,
            screen_share: screen_share.unwrap_or(false),
        })),
        None if screen_share.is_some() => Err(field(
            "input.template.screen_share",
            "needs input.template.participant: whose screen share to record",
        )),
        None if tracks => Ok(Some(Focus::Tracks { audio, video })),
        None => Ok(None),
    }
}

fn output(mut raw: RawOutput, in_width: u32, in_height: u32) -> Result<Output, ConfigError> {
    let tracks = tracks(&raw)?;
    let file = raw.file.map(|f| output_file(&f)).transpose()?;
    let rtmp = raw.rtmp.map(|u| u.0).unwrap_or_default();
    for (i, url) in rtmp.iter().enumerate() {
        let path = if rtmp.len() == 1 {
            "output.rtmp".to_owned()
        } else {
            format!("output.rtmp[{i}]")
        };
        if let Err(problem) = pagecast_actors::key_proxy::check_url(url) {
            return Err(field(&path, format!("{} {problem}", mask_stream_url(url))));
        }
    }
    let srt = raw.srt.map(|u| u.0).unwrap_or_default();
    for (i, url) in srt.iter().enumerate() {
        let path = if srt.len() == 1 {
            "output.srt".to_owned()
        } else {
            format!("output.srt[{i}]")
        };
        srt_url(url).map_err(|problem| field(&path, problem))?;
    }
    let s3 = match (raw.s3, raw.s3_capitalised) {
        (Some(_), Some(_)) => return Err(field("output", "give s3 or S3, not both")),
        (Some(Obj(s3)), None) => Some(s3_output(s3, "output.s3")?),
        (None, Some(Obj(s3))) => Some(s3_output(s3, "output.S3")?),
        (None, None) => None,
    };
    let gcs = raw
        .gcs
        .map(|Obj(g)| stores::gcs_output(g, "output.gcs"))
        .transpose()?;
    let azure = raw
        .azure
        .map(|Obj(a)| stores::azure_output(a, "output.azure"))
        .transpose()?;
    if [s3.is_some(), gcs.is_some(), azure.is_some()]
        .iter()
        .filter(|&&given| given)
        .count()
        > 1
    {
        return Err(field(
            "output",
            "give one of s3, gcs or azure (a second store goes in output.backup)",
        ));
    }
    let backup = raw.backup.map(|Obj(b)| stores::backup(b)).transpose()?;
    if backup.is_some() && s3.is_none() && gcs.is_none() && azure.is_none() {
        return Err(field(
            "output.backup",
            "needs a store to back up (output.s3, output.gcs or output.azure)",
        ));
    }
    if file.is_none()
        && rtmp.is_empty()
        && srt.is_empty()
        && s3.is_none()
        && gcs.is_none()
        && azure.is_none()
        && raw.hls.is_none()
    {
        return Err(field(
            "output",
            "at least one of file, rtmp, srt, s3, gcs, azure or hls is required",
        ));
    }
    let size = output_size(raw.width, raw.height, in_width, in_height)?;
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
    let video_preset = video_preset(raw.video_preset.as_deref())?;
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
    // The directory copies' prefixes, checked against the store they go to.
    let store = stores::Primary::of(s3.as_ref(), gcs.as_ref(), azure.as_ref());
    let prefixes = [
        raw.hls
            .as_mut()
            .map(|Obj(h)| (h.prefix.take(), h.s3_prefix.take())),
        raw.images
            .as_mut()
            .map(|Obj(i)| (i.prefix.take(), i.s3_prefix.take())),
    ];
    let [hls_prefix, images_prefix] = stores::dir_prefixes(prefixes, store.as_ref())?;
    let images = raw
        .images
        .map(|Obj(i)| images(i))
        .transpose()?
        .map(|i| Images {
            prefix: images_prefix,
            ..i
        });
    let hls = raw.hls.map(|Obj(h)| hls(h)).transpose()?.map(|h| Hls {
        prefix: hls_prefix,
        ..h
    });
    Ok(Output {
        hls,
        images,
        rtmp_retry_for,
        file,
        rtmp: rtmp.into_iter().map(StreamUrl::new).collect(),
        srt: srt.into_iter().map(StreamUrl::new).collect(),
        s3,
        gcs,
        azure,
        backup,
        size,
        audio_bitrate,
        audio_frequency,
        video_bitrate,
        video_buffer,
        video_preset,
        tracks,
    })
}

/// `output.audio_only` and `output.video_only`: at most one, and a recording of the sound alone
/// has nothing to scale, snapshot or stream live (a live stream's servers and players expect a
/// picture).
fn tracks(raw: &RawOutput) -> Result<Tracks, ConfigError> {
    let given = |urls: &Option<Urls>| urls.as_ref().is_some_and(|u| !u.0.is_empty());
    match (raw.audio_only == Some(true), raw.video_only == Some(true)) {
        (true, true) => Err(field(
            "output.video_only",
            "give audio_only or video_only, not both",
        )),
        (false, true) => Ok(Tracks::VideoOnly),
        (false, false) => Ok(Tracks::Both),
        (true, false) => {
            let needs_picture = [
                ("output.images", raw.images.is_some()),
                ("output.rtmp", given(&raw.rtmp)),
                ("output.srt", given(&raw.srt)),
                ("output.width", raw.width.is_some()),
                ("output.height", raw.height.is_some()),
            ];
            match needs_picture.into_iter().find(|(_, given)| *given) {
                Some((path, _)) => Err(field(
                    path,
                    "needs a picture, and output.audio_only records the sound alone",
                )),
                None => Ok(Tracks::AudioOnly),
            }
        }
    }
}

/// The x264 presets a recording may use, fastest first: those whose cost was measured (the
/// service's admission counts with it, `service/capacity.rs`). The slower ones cost several
/// times more per frame, more than a live recording at 30 fps can afford on most machines.
pub const VIDEO_PRESETS: [&str; 3] = ["ultrafast", "superfast", "veryfast"];

/// The default: superfast rather than veryfast, 11 % less CPU for the whole recording at no
/// lower SSIM against a lossless reference, measured at 1080p30 (BENCHMARKS.md).
pub const DEFAULT_VIDEO_PRESET: &str = "superfast";

/// `output.video_preset`: one of [`VIDEO_PRESETS`].
fn video_preset(raw: Option<&str>) -> Result<&'static str, ConfigError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_VIDEO_PRESET);
    };
    VIDEO_PRESETS
        .into_iter()
        .find(|p| *p == raw)
        .ok_or_else(|| {
            field(
                "output.video_preset",
                format!("must be one of {}, got {raw:?}", VIDEO_PRESETS.join(", ")),
            )
        })
}

/// An `output.srt` URL: `srt://host:port`, pagecast the caller (it connects to a listener), a
/// passphrase of SRT's 10 to 79 characters. What is wrong is told without the URL's query, which
/// may hold the passphrase or a stream id carrying a key.
fn srt_url(raw: &str) -> Result<(), String> {
    let shown = mask_stream_url(raw);
    let url = url::Url::parse(raw).map_err(|_| format!("{shown} is not an srt:// URL"))?;
    if url.scheme() != "srt" || url.host_str().is_none_or(|h| h.is_empty()) {
        return Err(format!("{shown} is not an srt:// URL with a host"));
    }
    if url.port().is_none() {
        return Err(format!("{shown} has no port (SRT has no default one)"));
    }
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "mode" if value != "caller" => {
                return Err(format!(
                "{shown}: mode must be caller (pagecast connects to the SRT listener), got {value}"
            ))
            }
            "passphrase" if !(10..=79).contains(&value.chars().count()) => {
                return Err(format!(
                    "{shown}: the passphrase must be 10 to 79 characters long"
                ))
            }
            "streamid" if value.chars().count() > 512 => {
                return Err(format!(
                    "{shown}: the streamid must be at most 512 characters long"
                ))
            }
            // They reach ffmpeg as lines of a preset (see the relay).
            "passphrase" | "streamid" if value.contains(['\n', '\r']) => {
                return Err(format!("{shown}: the {key} must be on one line"))
            }
            _ => {}
        }
    }
    Ok(())
}

fn hls(raw: RawHls) -> Result<Hls, ConfigError> {
    let directory = match raw.directory.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => d,
        _ => return Err(field("output.hls.directory", "is required")),
    };
    // The directory goes into ffmpeg's tee muxer options, where these are syntax.
    if let Some(c) = directory.chars().find(|c| ":|[]\\'".contains(*c)) {
        return Err(field(
            "output.hls.directory",
            format!("must not contain {c:?}"),
        ));
    }
    let segment = raw.segment_duration.unwrap_or(Duration::from_secs(6));
    if segment < Duration::from_secs(1) || segment > Duration::from_secs(60) {
        return Err(field(
            "output.hls.segment_duration",
            "must be between 1s and 60s",
        ));
    }
    let live = raw
        .live_playlist
        .map(|Obj(live)| {
            let name = live.name.unwrap_or_else(|| "live.m3u8".to_owned());
            let plain = !name.starts_with('.')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !plain || !name.ends_with(".m3u8") {
                return Err(field(
                    "output.hls.live_playlist.name",
                    format!("{name:?} is not a file name like live.m3u8 (letters, digits, - _ .)"),
                ));
            }
            if name == pagecast_actors::encoder::HLS_PLAYLIST {
                return Err(field(
                    "output.hls.live_playlist.name",
                    format!("{name} is the event playlist's name"),
                ));
            }
            let window = live.window.unwrap_or(6);
            if !(2..=100).contains(&window) {
                return Err(field(
                    "output.hls.live_playlist.window",
                    format!("must be within 2..=100 segments, got {window}"),
                ));
            }
            Ok(LivePlaylist { name, window })
        })
        .transpose()?;
    Ok(Hls {
        directory: PathBuf::from(directory),
        segment,
        naming: raw.naming.map(Naming::from).unwrap_or_default(),
        live,
        prefix: None, // checked with the store: see output()
    })
}

fn images(raw: RawImages) -> Result<Images, ConfigError> {
    let directory = match raw.directory.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => return Err(field("output.images.directory", "is required")),
    };
    let every = raw.every.unwrap_or(Duration::from_secs(10));
    if every < Duration::from_secs(1) || every > Duration::from_secs(3600) {
        return Err(field("output.images.every", "must be between 1s and 1h"));
    }
    for (name, value) in [("width", raw.width), ("height", raw.height)] {
        if let Some(v) = value {
            if !(16..=7680).contains(&v) || v % 2 != 0 {
                return Err(field(
                    &format!("output.images.{name}"),
                    format!("must be even and within 16..=7680, got {v}"),
                ));
            }
        }
    }
    Ok(Images {
        directory,
        every,
        width: raw.width,
        height: raw.height,
        format: match raw.format {
            None | Some(RawImageFormat::Jpeg) => ImageFormat::Jpeg,
            Some(RawImageFormat::Png) => ImageFormat::Png,
        },
        naming: raw.naming.map(Naming::from).unwrap_or_default(),
        prefix: None, // checked with the store: see output()
    })
}

/// The output size: both given, or one given and the other following the input's aspect ratio
/// (rounded to the nearest even number). None when it equals the input size.
fn output_size(
    width: Option<u32>,
    height: Option<u32>,
    in_width: u32,
    in_height: u32,
) -> Result<Option<(u32, u32)>, ConfigError> {
    let computed = |given_path: &str, given: u32, other: &str, value: u32, max: u32| {
        if (64..=max).contains(&value) {
            Ok(value)
        } else {
            Err(field(
                given_path,
                format!(
                    "{given} makes the {other} {value} at the input's {in_width}x{in_height} \
                     aspect ratio, outside 64..={max}; give output.{other} too"
                ),
            ))
        }
    };
    let size = match (width, height) {
        (None, None) => return Ok(None),
        (Some(w), Some(h)) => {
            check_dimension("output.width", w, MAX_WIDTH)?;
            check_dimension("output.height", h, MAX_HEIGHT)?;
            (w, h)
        }
        (Some(w), None) => {
            check_dimension("output.width", w, MAX_WIDTH)?;
            let h = even(f64::from(w) * f64::from(in_height) / f64::from(in_width));
            (w, computed("output.width", w, "height", h, MAX_HEIGHT)?)
        }
        (None, Some(h)) => {
            check_dimension("output.height", h, MAX_HEIGHT)?;
            let w = even(f64::from(h) * f64::from(in_width) / f64::from(in_height));
            (computed("output.height", h, "width", w, MAX_WIDTH)?, h)
        }
    };
    Ok((size != (in_width, in_height)).then_some(size))
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
    if has_scheme(raw) {
        // ffmpeg would read "http:…", "tcp:…" as a protocol and send the recording there.
        return Err(field(
            PATH,
            format!(
                "{} looks like a URL; output.file is a local path (output.s3 and output.rtmp send \
                 elsewhere)",
                shown_url(raw)
            ),
        ));
    }
    let name = raw.rsplit('/').next().unwrap_or(raw);
    if name == "." || name == ".." {
        return Err(field(
            PATH,
            format!("{raw} is a directory; name the file, e.g. {raw}/recording.mp4"),
        ));
    }
    if name.eq_ignore_ascii_case(".mp4") {
        return Err(field(
            PATH,
            format!("{raw} has no name before .mp4, e.g. recording.mp4"),
        ));
    }
    let path = PathBuf::from(raw);
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("mp4") => Ok(path),
        Some(ext) => Err(field(PATH, format!("must end in .mp4, not .{ext}"))),
        None => Err(field(PATH, format!("must end in .mp4, e.g. {raw}.mp4"))),
    }
}

/// The names of the outputs hold only the placeholders of [`crate::naming`], and `{room_name}`
/// only when there is a room.
fn check_placeholders(output: &Output, has_room: bool) -> Result<(), ConfigError> {
    let mut names = Vec::new();
    if let Some(file) = &output.file {
        names.push(("output.file", file.to_string_lossy().into_owned()));
    }
    if let Some(s3) = &output.s3 {
        names.push(("output.s3.key", s3.key.clone()));
    }
    if let Some(gcs) = &output.gcs {
        names.push(("output.gcs.key", gcs.key.clone()));
    }
    if let Some(azure) = &output.azure {
        names.push(("output.azure.blob", azure.blob.clone()));
    }
    let mut backup = output.backup.clone();
    if let Some(b) = &mut backup {
        let field = match b {
            Backup::Azure(_) => "output.backup.azure.blob",
            Backup::Gcs(_) => "output.backup.gcs.key",
            Backup::S3(_) => "output.backup.s3.key",
        };
        names.push((field, b.name_mut().clone()));
    }
    for (path, name) in names {
        let mut rest = name.as_str();
        while let Some(open) = rest.find('{') {
            let Some(len) = rest[open..].find('}') else {
                return Err(field(path, format!("{name:?} has a '{{' without '}}'")));
            };
            let placeholder = &rest[open..=open + len];
            if !crate::naming::PLACEHOLDERS.contains(&placeholder) {
                return Err(field(
                    path,
                    format!(
                        "unknown placeholder {placeholder}; use {{time}}, {{utc}} or {{room_name}}"
                    ),
                ));
            }
            if placeholder == "{room_name}" && !has_room {
                return Err(field(
                    path,
                    "{room_name} needs a LiveKit room (input.template)",
                ));
            }
            rest = &rest[open + len + 1..];
        }
    }
    Ok(())
}

/// `at` is `output.s3` or `output.S3`, as the user wrote it.
fn s3_output(raw: RawS3, at: &str) -> Result<S3Output, ConfigError> {
    let path = |name: &str| format!("{at}.{name}");
    let bucket = raw
        .bucket
        .filter(|b| !b.is_empty())
        .ok_or_else(|| field(&path("bucket"), "required"))?;
    if let Some(bad) = bucket
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(field(
            &path("bucket"),
            format!("{bucket:?} is not a bucket name ({bad:?}: use letters, digits, '.', '-')"),
        ));
    }
    let key = raw
        .key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| field(&path("key"), "required"))?;
    if raw.access_key.as_deref() == Some("") {
        return Err(field(&path("access_key"), "must not be empty"));
    }
    if raw.secret.as_ref().is_some_and(Secret::is_empty) {
        return Err(field(&path("secret"), "must not be empty"));
    }
    match (&raw.access_key, &raw.secret) {
        (Some(_), None) => return Err(field(&path("secret"), "required with access_key")),
        (None, Some(_)) => return Err(field(&path("access_key"), "required with secret")),
        _ => {}
    }
    match &raw.session_token {
        Some(t) if t.is_empty() => {
            return Err(field(&path("session_token"), "must not be empty"));
        }
        Some(_) if raw.access_key.is_none() => {
            return Err(field(
                &path("session_token"),
                "needs access_key and secret (it belongs to temporary credentials)",
            ));
        }
        _ => {}
    }
    if raw.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(field(&path("region"), "must not be empty"));
    }
    let endpoint = raw
        .endpoint
        .map(|e| {
            url::Url::parse(&e)
                .ok()
                .filter(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some_and(|h| !h.is_empty())
                })
                .ok_or_else(|| {
                    field(
                        &path("endpoint"),
                        format!("{} is not an http(s) URL", shown_url(&e)),
                    )
                })
        })
        .transpose()?;
    const MIN_PART: u64 = 5 * 1024 * 1024;
    let part_size = match raw.part_size {
        None => 8 * 1024 * 1024,
        Some(Size(Amount::Number(n))) => n,
        Some(Size(Amount::Text(t))) => parse_size(&t).ok_or_else(|| {
            field(
                &path("part_size"),
                format!("{t:?} is not a size; write it like \"8MiB\""),
            )
        })?,
    };
    if !(MIN_PART..=(5u64 << 30)).contains(&part_size) {
        return Err(field(
            &path("part_size"),
            format!("must be between 5MiB (S3's minimum) and 5GiB, got {part_size} bytes"),
        ));
    }
    let give_up_after = raw.give_up_after.unwrap_or(Duration::from_secs(300));
    if give_up_after.is_zero() {
        return Err(field(&path("give_up_after"), "must be longer than 0s"));
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

/// A bitrate as written in errors: 128000 → "128k", 6000000 → "6M".
fn human_bitrate(bits: u32) -> String {
    if bits % 1_000_000 == 0 {
        format!("{}M", bits / 1_000_000)
    } else if bits % 1000 == 0 {
        format!("{}k", bits / 1000)
    } else {
        bits.to_string()
    }
}

fn bitrate(
    path: &str,
    raw: Option<Bitrate>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let Some(Bitrate(amount)) = raw else {
        return Ok(default);
    };
    let (bits, given, has_unit) = match amount {
        Amount::Number(n) => (n as f64, n.to_string(), false),
        Amount::Text(text) => {
            let (bits, has_unit) = parse_bitrate(&text).ok_or_else(|| {
                field(
                    path,
                    format!("{text:?} is not a bitrate; write it like \"128k\", \"6M\" or 128000"),
                )
            })?;
            (bits, text.trim().to_owned(), has_unit)
        }
    };
    if bits == 0.0 {
        return Err(field(path, "must be more than 0"));
    }
    // Nobody means a few hundred bits per second: "128" is "128k" with the k forgotten.
    if !has_unit && bits < 1000.0 {
        return Err(field(
            path,
            format!("{given} bit/s is far too low; did you mean \"{given}k\"?"),
        ));
    }
    let in_range = |bits: f64| (f64::from(min)..=f64::from(max)).contains(&bits);
    if !in_range(bits) {
        let hint = if !has_unit && in_range(bits * 1000.0) {
            format!("; did you mean \"{given}k\"?")
        } else {
            String::new()
        };
        return Err(field(
            path,
            format!(
                "must be between {} and {}, got {given}{hint}",
                human_bitrate(min),
                human_bitrate(max)
            ),
        ));
    }
    Ok(bits.round() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: serde_json::Value) -> Config {
        parse(&v.to_string()).unwrap_or_else(|e| panic!("{v} rejected: {e}"))
    }

    /// The error for a bad config, checked to be one line.
    fn err_text(text: &str) -> String {
        let e = parse(text).expect_err(&format!("{text} accepted"));
        let s = e.to_string();
        assert_eq!(s.lines().count(), 1, "not one line: {s}");
        assert!(s.starts_with("config: "), "{s}");
        s
    }

    fn err(v: serde_json::Value) -> String {
        err_text(&v.to_string())
    }

    fn with_input(input: serde_json::Value) -> serde_json::Value {
        json!({ "input": input, "output": { "file": "/app/out/recording.mp4" } })
    }

    fn with_output(output: serde_json::Value) -> serde_json::Value {
        json!({ "input": { "url": "https://example.com" }, "output": output })
    }

    fn template_of(c: &Config) -> &Template {
        match &c.input.source {
            Source::Template(t) => t,
            other => panic!("not a template: {other:?}"),
        }
    }

    fn url_of(c: &Config) -> String {
        match &c.input.source {
            Source::Url(u) => u.to_string(),
            other => panic!("not a url: {other:?}"),
        }
    }

    /// The seed README's examples, placeholders filled with realistic values (see config/README.md);
    /// built in at compile time, so the shipped examples cannot rot.
    fn example(text: &str) -> Config {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn assert_defaults(c: &Config) {
        assert_eq!(c.output.audio_bitrate, 128_000);
        assert_eq!(c.output.audio_frequency, 44_100);
        assert_eq!(c.output.video_bitrate, 2_976_000);
        assert_eq!(c.output.video_buffer, 5_952_000);
        assert_eq!(c.input.depth, 24);
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
        assert_defaults(&c);
        assert_eq!(c.output.size, None);
        assert_eq!(c.output.rtmp.len(), 0);
        assert!(c.output.s3.is_none());
        assert_eq!(c.max_duration, None);
        assert_eq!(c.supervision, Supervision::default());
        assert_eq!(c.output.rtmp_retry_for, Duration::from_secs(60));
    }

    #[test]
    fn seed_basic_example() {
        let c = example(include_str!("../config/seed-basic.json"));
        let t = template_of(&c);
        assert_eq!(t.layout, Layout::SpeakerDark);
        assert_eq!(t.layout.as_str(), "speaker-dark");
        assert_eq!(t.ws_url.as_str(), "wss://livekit.example.com/");
        assert!(t.base_url.is_none());
        match &t.auth {
            TemplateAuth::ApiKey {
                api_key,
                api_secret,
                room_name,
            } => {
                assert_eq!(api_key, "APIfake000000");
                assert_eq!(api_secret.expose(), "fake-secret-0000000000000000000000");
                assert_eq!(room_name, "my-room");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.output.file.as_deref(),
            Some(std::path::Path::new("/app/out/recording.mp4"))
        );
        assert_eq!(
            (c.input.width, c.input.height, c.input.framerate),
            (1920, 1080, 30)
        );
        assert_defaults(&c);
        assert!(!format!("{c:?}").contains("fake-secret"));
    }

    #[test]
    fn seed_s3_example_with_capital_key() {
        let c = example(include_str!("../config/seed-s3.json"));
        assert_eq!(url_of(&c), "https://recording.example.com/");
        assert_eq!(
            (c.input.width, c.input.height, c.input.framerate),
            (1280, 720, 60)
        );
        assert_eq!(c.output.size, None);
        assert!(c.output.file.is_none() && c.output.rtmp.is_empty());
        let s3 = c.output.s3.as_ref().expect("capital S3 key");
        assert_eq!(s3.bucket, "my-bucket");
        assert_eq!(s3.key, "recording.mp4");
        assert_eq!(s3.access_key.as_deref(), Some("AKIAFAKEEXAMPLE00000"));
        assert_eq!(
            s3.secret.as_ref().map(Secret::expose),
            Some("fake/secret/EXAMPLEKEY0000000000000000")
        );
        assert!(s3.session_token.is_none() && s3.endpoint.is_none() && s3.region.is_none());
        assert_eq!(s3.part_size, 8 << 20);
        assert_defaults(&c);
        assert!(!format!("{c:?}").contains("EXAMPLEKEY"));
    }

    #[test]
    fn seed_twitch_example_scales_to_720p() {
        let c = example(include_str!("../config/seed-twitch.json"));
        assert_eq!((c.input.width, c.input.height), (1920, 1080));
        assert_eq!(c.output.size, Some((1280, 720)));
        assert_eq!(c.output.rtmp.len(), 1);
        assert_eq!(
            c.output.rtmp[0].expose(),
            "rtmp://live.twitch.tv/app/live_000000_fakekey"
        );
        let t = template_of(&c);
        assert_eq!(t.layout, Layout::SpeakerDark);
        match &t.auth {
            TemplateAuth::Token(token) => assert_eq!(token.expose(), "fake.recording.token"),
            other => panic!("{other:?}"),
        }
        let debug = format!("{c:?}");
        assert!(!debug.contains("fakekey") && !debug.contains("fake.recording.token"));
    }

    #[test]
    fn seed_snippets() {
        // Input snippets, with a file output added.
        let c = example(include_str!("../config/seed-template-apikey.json"));
        let t = template_of(&c);
        assert_eq!(t.layout, Layout::GridLight);
        assert!(
            matches!(&t.auth, TemplateAuth::ApiKey { room_name, .. } if room_name == "room-to-record")
        );
        let c = example(include_str!("../config/seed-template-token.json"));
        assert!(matches!(template_of(&c).auth, TemplateAuth::Token(_)));
        assert_eq!(template_of(&c).layout, Layout::GridDark);
        let c = example(include_str!("../config/seed-url.json"));
        assert_eq!(url_of(&c), "https://recording.example.com/");
        // Output snippets, with a URL input added.
        let c = example(include_str!("../config/seed-file.json"));
        assert_eq!(
            c.output.file.as_deref(),
            Some(std::path::Path::new("/app/out/recording.mp4"))
        );
        let c = example(include_str!("../config/seed-s3-output.json"));
        assert_eq!(c.output.s3.unwrap().key, "recording.mp4");
        let c = example(include_str!("../config/seed-rtmp-output.json"));
        assert_eq!(
            c.output.rtmp[0].to_string(),
            "rtmp://stream.example.com/live/****"
        );
        let c = example(include_str!("../config/file.json"));
        assert_defaults(&c);
    }

    #[test]
    fn the_seeds_unfilled_placeholders_are_caught() {
        let e = err(json!({ "input": { "template": {
            "layout": "<grid|speaker>-<light|dark>", "ws_url": "wss://lk.example.com", "token": "t" } },
            "output": { "file": "a.mp4" } }));
        assert!(e.starts_with("config: input.template.layout:"), "{e}");
        let e = err(json!({ "input": { "template": {
            "layout": "speaker-dark", "ws_url": "<wss://livekit.your-domain.com>", "token": "t" } },
            "output": { "file": "a.mp4" } }));
        assert!(e.starts_with("config: input.template.ws_url:"), "{e}");
        let e = err(with_output(json!({ "rtmp": "<rtmp://stream-url.com>" })));
        assert!(e.starts_with("config: output.rtmp:"), "{e}");
        let e = err(with_output(
            json!({ "S3": { "bucket": "<bucket-name>", "key": "recording.mp4" } }),
        ));
        assert!(e.starts_with("config: output.S3.bucket:"), "{e}");
    }

    #[test]
    fn the_seeds_input_only_snippet_needs_an_output() {
        let e = err(json!({ "input": { "url": "https://example.com" } }));
        assert_eq!(
            e,
            "config: output: at least one of file, rtmp, srt, s3, gcs, azure or hls is required"
        );
        let e = err(json!({ "input": { "url": "https://example.com" }, "output": { "rtmp": [] } }));
        assert_eq!(
            e,
            "config: output: at least one of file, rtmp, srt, s3, gcs, azure or hls is required"
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
        let e = err(json!({ "input": { "template": { "layout": "grid-dark", "wsurl": "x" } } }));
        assert!(
            e.starts_with("config: input.template.wsurl: unknown field `wsurl`")
                && e.contains("`ws_url`"),
            "{e}"
        );
        let e = err(with_output(json!({ "file": "a.mp4", "s4": {} })));
        assert!(e.contains("`s3`") && e.contains("`S3`"), "{e}");
        // A key with a line break still makes a one-line error.
        let e = err(with_input(json!({ "url": "https://e.com", "wid\nth": 1 })));
        assert!(e.contains("wid\\nth"), "{e}");
    }

    #[test]
    fn json_shape_errors() {
        let e = err_text("{ \"input\": ");
        assert!(e.starts_with("config: invalid JSON at line 1"), "{e}");
        let e = err_text(
            "{\"input\": {\"url\": \"https://e.com\"},\n \"output\": {\"file\": \"a.mp4\",}}",
        );
        assert_eq!(
            e,
            "config: invalid JSON at line 2, column 29: trailing comma"
        );
        let valid = with_input(json!({ "url": "https://e.com" })).to_string();
        let e = err_text(&format!("{valid} {valid}"));
        assert!(
            e.starts_with("config: invalid JSON at line 1") && e.contains("trailing"),
            "{e}"
        );
        assert_eq!(err_text("  \n"), "config: is empty; expected a JSON object");
        let e = err_text("[]");
        assert!(e.contains("expected a JSON object"), "{e}");
        // serde would fill a struct from an array by position; objects only.
        let e = err(json!({ "input": ["https://e.com"], "output": { "file": "a.mp4" } }));
        assert!(
            e.starts_with("config: input: invalid type: sequence"),
            "{e}"
        );
        let e = err(json!({ "input": { "url": "https://e.com" }, "output": "a.mp4" }));
        assert!(
            e.starts_with("config: output: invalid type: a string"),
            "{e}"
        );
        let e = err(with_input(
            json!({ "url": "https://e.com", "width": "1280" }),
        ));
        assert!(e.starts_with("config: input.width: invalid type"), "{e}");
        let e = err(with_input(json!({ "url": "https://e.com", "depth": 300 })));
        assert!(e.starts_with("config: input.depth:"), "{e}");
        // null is the same as absent.
        ok(
            json!({ "api_key": null, "input": { "url": "https://e.com", "width": null, "template": null },
            "output": { "file": "a.mp4", "s3": null, "rtmp": null } }),
        );
    }

    #[test]
    fn input_checks() {
        let input_err = |extra: serde_json::Value| {
            let mut input = json!({ "url": "https://e.com" });
            for (k, v) in extra.as_object().unwrap() {
                input[k] = v.clone();
            }
            err(with_input(input))
        };
        assert_eq!(
            input_err(json!({ "width": 1281 })),
            "config: input.width: must be even, got 1281"
        );
        assert!(
            input_err(json!({ "height": 10 })).starts_with("config: input.height: must be between")
        );
        assert!(
            input_err(json!({ "width": 62 })).starts_with("config: input.width: must be between")
        );
        assert!(
            input_err(json!({ "width": 7682 })).starts_with("config: input.width: must be between")
        );
        assert!(input_err(json!({ "height": 4322 }))
            .starts_with("config: input.height: must be between"));
        assert!(
            input_err(json!({ "height": 1081 })).starts_with("config: input.height: must be even")
        );
        assert!(input_err(json!({ "framerate": 61 })).starts_with("config: input.framerate:"));
        assert!(input_err(json!({ "framerate": 0 })).starts_with("config: input.framerate:"));
        assert!(
            input_err(json!({ "depth": 8 })).starts_with("config: input.depth: must be 16 or 24")
        );
        let c = ok(with_input(
            json!({ "url": "https://e.com", "width": 7680, "height": 4320, "depth": 16, "framerate": 60 }),
        ));
        assert_eq!(
            (
                c.input.width,
                c.input.height,
                c.input.depth,
                c.input.framerate
            ),
            (7680, 4320, 16, 60)
        );
        let c = ok(with_input(
            json!({ "url": "https://e.com", "width": 64, "height": 64, "framerate": 1 }),
        ));
        assert_eq!(
            (c.input.width, c.input.height, c.input.framerate),
            (64, 64, 1)
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
        let url = |u: &str| url_of(&ok(with_input(json!({ "url": u }))));
        assert_eq!(
            url("your-recording-domain.com"),
            "https://your-recording-domain.com/"
        );
        assert_eq!(url("localhost:8080/page"), "https://localhost:8080/page");
        assert_eq!(url("example.com:8443"), "https://example.com:8443/");
        assert_eq!(
            url("http://127.0.0.1:8080/x?y=1"),
            "http://127.0.0.1:8080/x?y=1"
        );
        assert_eq!(url("HTTPS://Example.COM"), "https://example.com/");
        let page = tempfile::NamedTempFile::new().unwrap();
        let file_url = url::Url::from_file_path(page.path()).unwrap();
        assert_eq!(url(file_url.as_str()), file_url.as_str());
        assert_eq!(
            err(with_input(json!({ "url": "file:///no/such/page.html" }))),
            "config: input.url: /no/such/page.html does not exist"
        );
        for bad in [
            "ftp://example.com",
            "javascript:alert(1)",
            "mailto:a@b.example",
            "data:text/html,hi",
            "about:blank",
        ] {
            let e = err(with_input(json!({ "url": bad })));
            assert!(e.starts_with("config: input.url: scheme "), "{bad}: {e}");
        }
        assert!(err(with_input(json!({ "url": "" })))
            .starts_with("config: input.url: must not be empty"));
        assert!(err(with_input(json!({ "url": "   " })))
            .starts_with("config: input.url: must not be empty"));
        assert!(err(with_input(json!({ "url": "https://" }))).starts_with("config: input.url:"));
    }

    #[test]
    fn start_signal_fields() {
        let c = ok(with_input(json!({ "url": "https://e.com" })));
        assert!(!c.input.await_start_signal);
        assert_eq!(c.input.start_timeout, DEFAULT_START_TIMEOUT);
        let c = ok(with_input(
            json!({ "url": "https://e.com", "await_start_signal": true, "start_timeout": "2m" }),
        ));
        assert!(c.input.await_start_signal);
        assert_eq!(c.input.start_timeout, Duration::from_secs(120));
        let template =
            json!({ "layout": "grid-dark", "ws_url": "ws://127.0.0.1:7880", "token": "t" });
        let c = ok(with_input(json!({ "template": template })));
        assert!(c.input.await_start_signal, "layouts always wait");
        assert_eq!(
            template_of(&c).empty_room_timeout,
            DEFAULT_EMPTY_ROOM_TIMEOUT
        );
        let e = err(with_input(
            json!({ "template": template, "await_start_signal": false }),
        ));
        assert!(
            e.starts_with("config: input.await_start_signal: LiveKit layouts always wait"),
            "{e}"
        );
        let mut t = template.clone();
        t["empty_room_timeout"] = json!("12s");
        let c = ok(with_input(json!({ "template": t })));
        assert_eq!(template_of(&c).empty_room_timeout, Duration::from_secs(12));
        t["empty_room_timeout"] = json!("2h");
        assert!(err(with_input(json!({ "template": t })))
            .starts_with("config: input.template.empty_room_timeout: must be at most 1h"));
        assert!(err(with_input(
            json!({ "url": "https://e.com", "start_timeout": "0s" })
        ))
        .starts_with("config: input.start_timeout: must be longer than 0s"));
        assert!(err(with_input(
            json!({ "url": "https://e.com", "await_start_signal": "yes" })
        ))
        .starts_with("config: input.await_start_signal:"));
    }

    #[test]
    fn one_participant_of_a_room() {
        let template =
            json!({ "layout": "grid-dark", "ws_url": "ws://127.0.0.1:7880", "token": "t" });
        assert_eq!(
            template_of(&ok(with_input(json!({ "template": template })))).focus,
            None
        );
        let mut t = template.clone();
        t["participant"] = json!("ana");
        let c = ok(with_input(json!({ "template": t })));
        assert_eq!(
            template_of(&c).focus,
            Some(Focus::Participant {
                identity: "ana".into(),
                screen_share: false
            })
        );
        t["screen_share"] = json!(true);
        let c = ok(with_input(json!({ "template": t })));
        assert!(matches!(
            template_of(&c).focus,
            Some(Focus::Participant {
                screen_share: true,
                ..
            })
        ));
        t["participant"] = json!("");
        assert!(err(with_input(json!({ "template": t })))
            .starts_with("config: input.template.participant: must not be empty"));
        let mut t = template.clone();
        t["screen_share"] = json!(true);
        assert!(err(with_input(json!({ "template": t })))
            .starts_with("config: input.template.screen_share: needs input.template.participant"));
        t["screen_share"] = json!("yes");
        assert!(err(with_input(json!({ "template": t })))
            .starts_with("config: input.template.screen_share:"));
        // Tracks: a video, a sound, or both, by sid.
        let mut t = template.clone();
        t["video_track"] = json!("TR_v");
        let c = ok(with_input(json!({ "template": t })));
        assert_eq!(
            template_of(&c).focus,
            Some(Focus::Tracks {
                audio: None,
                video: Some("TR_v".into())
            })
        );
        t["audio_track"] = json!("TR_a");
        let c = ok(with_input(json!({ "template": t })));
        assert_eq!(
            template_of(&c).focus,
            Some(Focus::Tracks {
                audio: Some("TR_a".into()),
                video: Some("TR_v".into())
            })
        );
        t["participant"] = json!("ana");
        assert!(err(with_input(json!({ "template": t })))
            .starts_with("config: input.template.participant: records one participant"));
        let mut t = template.clone();
        t["audio_track"] = json!("");
        assert!(err(with_input(json!({ "template": t })))
            .starts_with("config: input.template.audio_track: must not be empty"));
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
        for layout in Layout::ALL {
            let mut g = good.clone();
            g["layout"] = json!(layout.as_str());
            assert_eq!(template_of(&ok(t(g, keys.clone()))).layout, layout);
        }
        // Missing pieces are named, and nothing secret printed.
        let e = err(t(good.clone(), json!({ "api_key": "key" })));
        assert_eq!(e, "config: input.template: needs a token, or api_key + api_secret + room_name (missing: api_secret)");
        let e = err(t(good.clone(), json!({ "api_secret": "very-secret" })));
        assert!(
            e.contains("(missing: api_key)") && !e.contains("very-secret"),
            "{e}"
        );
        let e = err(t(
            json!({ "layout": "grid-light", "ws_url": "wss://lk.example.com" }),
            keys.clone(),
        ));
        assert!(
            e.contains("(missing: input.template.room_name)") && !e.contains("very-secret"),
            "{e}"
        );
        let e = err(t(
            json!({ "layout": "grid-light", "ws_url": "wss://lk.example.com" }),
            json!({}),
        ));
        assert!(
            e.contains("missing: api_key, api_secret, input.template.room_name"),
            "{e}"
        );
        assert_eq!(
            err(t(
                json!({ "ws_url": "wss://lk.example.com", "token": "t" }),
                json!({})
            )),
            "config: input.template.layout: required"
        );
        assert_eq!(
            err(t(json!({ "layout": "grid-dark", "token": "t" }), json!({}))),
            "config: input.template.ws_url: required"
        );
        let e = err(t(
            json!({ "layout": "mosaic", "ws_url": "wss://x.example.com", "token": "t" }),
            json!({}),
        ));
        assert_eq!(e, "config: input.template.layout: unknown layout \"mosaic\"; expected one of grid-light, grid-dark, speaker-light, speaker-dark");
        for bad in [
            "<wss://livekit.your-domain.com>",
            "livekit.example.com",
            "ftp://x.example.com",
            "wss://",
        ] {
            let e = err(t(
                json!({ "layout": "grid-dark", "ws_url": bad, "token": "t" }),
                json!({}),
            ));
            assert!(
                e.starts_with("config: input.template.ws_url:"),
                "{bad}: {e}"
            );
        }
        for fine in ["ws://127.0.0.1:7880", "https://lk.example.com"] {
            ok(t(
                json!({ "layout": "grid-dark", "ws_url": fine, "token": "t" }),
                json!({}),
            ));
        }
        let e = err(t(
            json!({ "layout": "grid-dark", "ws_url": "wss://x.example.com", "token": "" }),
            json!({}),
        ));
        assert_eq!(e, "config: input.template.token: must not be empty");
        // base_url: http(s) or file.
        let c = ok(t(
            json!({ "layout": "grid-dark", "ws_url": "wss://x.example.com", "token": "t",
            "base_url": "https://layouts.example.com/room" }),
            json!({}),
        ));
        assert_eq!(
            template_of(&c).base_url.as_ref().unwrap().as_str(),
            "https://layouts.example.com/room"
        );
        let e = err(t(
            json!({ "layout": "grid-dark", "ws_url": "wss://x.example.com", "token": "t",
            "base_url": "ftp://x" }),
            json!({}),
        ));
        assert!(e.starts_with("config: input.template.base_url:"), "{e}");
        // Token and api key both: the token wins, the api key and room are not needed.
        let c = ok(t(
            json!({ "layout": "grid-dark", "ws_url": "wss://x.example.com", "token": "tok-value", "room_name": "r" }),
            keys.clone(),
        ));
        match &template_of(&c).auth {
            TemplateAuth::Token(token) => assert_eq!(token.expose(), "tok-value"),
            other => panic!("{other:?}"),
        }
        ok(t(
            json!({ "layout": "grid-dark", "ws_url": "wss://x.example.com", "token": "tok" }),
            json!({ "api_key": "key" }),
        ));
        // Secrets never print.
        assert!(!format!("{c:?}").contains("tok-value"));
        assert!(!format!("{c:?}").contains("very-secret"));
    }

    #[test]
    fn secrets_never_reach_an_error() {
        const SECRET: &str = "S3CR3T";
        let cases = [
            json!({ "api_secret": 123_456_789, "input": { "url": "https://e.com" }, "output": { "file": "a.mp4" } }),
            json!({ "input": { "template": { "layout": "grid-dark", "ws_url": "wss://a.example.com", "token": 987_654_321 } }, "output": { "file": "a.mp4" } }),
            json!({ "input": { "url": "https://e.com" }, "output": { "S3": { "bucket": "b", "key": "k", "session_token": 1_234_567 } } }),
            json!({ "input": { "url": "https://e.com" }, "output": { "s3": { "bucket": "b", "key": "k", "secret": true } } }),
            json!({ "input": { "url": "https://e.com" }, "output": "rtmp://live.example.com/app/S3CR3T" }),
            json!({ "input": "S3CR3T", "output": { "file": "a.mp4" } }),
            json!({ "input": { "url": "https://e.com" }, "output": { "rtmp": "http://live.example.com/app/S3CR3T" } }),
            json!({ "input": { "url": "https://e.com" }, "output": { "rtmp": "rtmp:///app/S3CR3T" } }),
            json!({ "input": { "url": "https://e.com" }, "output": { "rtmp": "S3CR3T" } }),
            json!({ "input": { "url": "https://e.com" }, "output": { "rtmp": ["rtmp://a.example.com/app/k1", "udp://b/app/S3CR3T"] } }),
            json!({ "input": { "url": "https://e.com" }, "output": { "s3": { "secret": "S3CR3T", "bucket": "b", "key": "k" } } }),
            json!({ "input": { "url": "https://e.com" }, "output": { "s3": { "access_key": "AK", "secret": "S3CR3T", "session_token": "", "bucket": "b", "key": "k" } } }),
            json!({ "input": { "url": "https://e.com" }, "output": { "s3": { "bucket": "b", "key": "k", "endpoint": "ftp://u:S3CR3T@minio.example.com" } } }),
            json!({ "api_key": "k", "api_secret": "S3CR3T", "input": { "template": { "layout": "grid-dark", "ws_url": "wss://a.example.com" } }, "output": { "file": "a.mp4" } }),
            json!({ "input": { "template": { "layout": "grid-dark", "ws_url": "ftp://a.example.com/?token=S3CR3T", "token": "t" } }, "output": { "file": "a.mp4" } }),
        ];
        for case in cases {
            let e = err(case.clone());
            assert!(!e.contains(SECRET), "{case} -> {e}");
            for number in ["123456789", "987654321", "1234567"] {
                assert!(!e.contains(number), "{case} -> {e}");
            }
        }
        let e = err(
            json!({ "api_secret": 123_456_789, "input": { "url": "https://e.com" }, "output": { "file": "a.mp4" } }),
        );
        assert_eq!(e, "config: api_secret: invalid type: integer, expected a string (value not shown: this field is secret)");
    }

    #[test]
    fn webgl_and_insecure() {
        let c = ok(with_input(json!({ "url": "https://e.com" })));
        assert!(c.input.webgl && !c.input.insecure);
        assert!(c.input.login.is_empty());
        let c = ok(with_input(
            json!({ "url": "https://e.com", "webgl": false, "insecure": true }),
        ));
        assert!(!c.input.webgl && c.input.insecure);
        assert_eq!(
            err(with_input(json!({ "url": "https://e.com", "webgl": "no" }))),
            "config: input.webgl: invalid type: string \"no\", expected a boolean"
        );
        assert!(
            err(with_input(json!({ "url": "https://e.com", "insecure": 1 })))
                .starts_with("config: input.insecure: invalid type")
        );
    }

    #[test]
    fn headers_and_cookies_for_a_page_behind_a_login() {
        let c = ok(with_input(json!({
            "url": "https://grafana.example.com/d/1",
            "headers": { "Authorization": "Bearer t0k", "X-Tenant": "a" },
            "cookies": [
                { "name": "session", "value": "c00kie" },
                { "name": "pref", "value": "x", "domain": ".example.com", "path": "/d",
                  "secure": false, "http_only": true },
            ],
        })));
        let login = &c.input.login;
        assert_eq!(
            login
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.expose()))
                .collect::<Vec<_>>(),
            [("Authorization", "Bearer t0k"), ("X-Tenant", "a")]
        );
        assert_eq!(
            login.cookies[0],
            Cookie {
                name: "session".into(),
                value: Secret::new("c00kie"),
                domain: "grafana.example.com".into(),
                path: "/".into(),
                secure: true,
                http_only: false,
            }
        );
        assert_eq!(login.cookies[1].domain, "example.com");
        assert_eq!(login.cookies[1].path, "/d");
        assert!(!login.cookies[1].secure && login.cookies[1].http_only);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("t0k") && !debug.contains("c00kie"),
            "{debug}"
        );
        // Over http a cookie is not secure unless said so.
        let c = ok(with_input(json!({ "url": "http://127.0.0.1:8080/",
            "cookies": [{ "name": "s", "value": "v" }] })));
        assert!(!c.input.login.cookies[0].secure);
        assert_eq!(c.input.login.cookies[0].domain, "127.0.0.1");
        // A layout page of the user's own may be behind a login too.
        let c = ok(json!({ "input": { "template": { "layout": "grid-dark",
            "ws_url": "wss://lk.example.com", "token": "t", "base_url": "https://rec.example.com/" },
            "headers": { "X-Key": "k" } }, "output": { "file": "a.mp4" } }));
        assert_eq!(c.input.login.headers.len(), 1);

        let login_err = |extra: serde_json::Value| {
            let mut input = json!({ "url": "https://app.example.com/" });
            for (k, v) in extra.as_object().unwrap() {
                input[k] = v.clone();
            }
            err(with_input(input))
        };
        assert_eq!(
            login_err(json!({ "headers": { "X Bad": "v" } })),
            "config: input.headers.X Bad: is not a valid header name"
        );
        assert_eq!(
            login_err(json!({ "headers": { "Host": "v" } })),
            "config: input.headers.Host: is set by the browser and cannot be given"
        );
        assert_eq!(
            login_err(json!({ "headers": { "Cookie": "a=b" } })),
            "config: input.headers.Cookie: cannot be set here; give cookies in input.cookies"
        );
        assert_eq!(
            login_err(json!({ "headers": { "X-A": "1", "x-a": "2" } })),
            "config: input.headers.x-a: is given twice"
        );
        assert_eq!(
            login_err(json!({ "headers": [] })),
            "config: input.headers: invalid type: sequence, expected a JSON object"
        );
        assert_eq!(
            login_err(json!({ "cookies": [{ "value": "v" }] })),
            "config: input.cookies[0].name: required"
        );
        assert_eq!(
            login_err(json!({ "cookies": [{ "name": "s" }] })),
            "config: input.cookies[0].value: required"
        );
        assert_eq!(
            login_err(json!({ "cookies": [{ "name": "a=b", "value": "v" }] })),
            "config: input.cookies[0].name: \"a=b\" is not a valid cookie name"
        );
        assert_eq!(
            login_err(json!({ "cookies": [{ "name": "s", "value": "v", "domain": "evil.com" }] })),
            "config: input.cookies[0].domain: \"evil.com\" is neither the page's host app.example.com nor a parent domain of it"
        );
        assert!(login_err(
            json!({ "cookies": [{ "name": "s", "value": "v", "domain": "ample.com" }] })
        )
        .starts_with("config: input.cookies[0].domain: \"ample.com\" is neither"));
        assert_eq!(
            login_err(json!({ "cookies": [{ "name": "s", "value": "v", "path": "d" }] })),
            "config: input.cookies[0].path: \"d\" must be a path starting with /"
        );
        assert_eq!(
            login_err(
                json!({ "cookies": [{ "name": "s", "value": "v" }, { "name": "s", "value": "w" }] })
            ),
            "config: input.cookies[1].name: \"s\" is given twice for app.example.com/"
        );
        assert!(
            login_err(json!({ "cookies": [{ "name": "s", "value": "v", "expiry": 1 }] }))
                .starts_with("config: input.cookies[0].expiry: unknown field `expiry`")
        );
        let page = tempfile::NamedTempFile::new().unwrap();
        let file_url = url::Url::from_file_path(page.path()).unwrap();
        assert_eq!(
            err(with_input(
                json!({ "url": file_url.as_str(), "headers": { "X-A": "1" } })
            )),
            "config: input.headers: needs an http:// or https:// page, not a file"
        );
        assert!(err(json!({ "input": { "template": { "layout": "grid-dark",
            "ws_url": "wss://lk.example.com", "token": "t" },
            "cookies": [{ "name": "s", "value": "v" }] }, "output": { "file": "a.mp4" } }))
        .starts_with("config: input.cookies: needs input.url (or input.template.base_url)"));
        assert_eq!(
            err(with_input(json!({ "url": "https://u:p@e.com/",
                "headers": { "authorization": "Basic x" } }))),
            "config: input.headers.authorization: give credentials either in input.url or here, not both"
        );
    }

    #[test]
    fn login_secrets_never_reach_an_error_or_the_printed_config() {
        const SECRET: &str = "S3CR3T";
        let cases = [
            json!({ "X-Token": "S3CR3T\nX-Other: 1" }),
            json!({ "X-Token": 123_456_789 }),
            json!({ "X-Token": ["S3CR3T"] }),
            json!({ "X-Token": null }),
        ];
        for headers in cases {
            let e = err(with_input(
                json!({ "url": "https://e.com", "headers": headers }),
            ));
            assert!(e.starts_with("config: input.headers.X-Token: "), "{e}");
            assert!(!e.contains(SECRET) && !e.contains("123456789"), "{e}");
        }
        for cookies in [
            json!("session=S3CR3T"),
            json!(["session=S3CR3T"]),
            json!([{ "name": "s", "value": "S3CR3T;x" }]),
            json!([{ "name": "s", "value": 123_456_789 }]),
        ] {
            let e = err(with_input(
                json!({ "url": "https://e.com", "cookies": cookies }),
            ));
            assert!(e.starts_with("config: input.cookies"), "{e}");
            assert!(!e.contains(SECRET) && !e.contains("123456789"), "{e}");
        }
        let e = err(with_input(
            json!({ "url": "https://e.com", "headers": "X-Token: S3CR3T" }),
        ));
        assert!(!e.contains(SECRET), "{e}");
        // What `check` prints: the basic-auth user and password of the URL are masked too.
        let c = ok(with_input(json!({ "url": "https://user:S3CR3T@e.com/",
            "headers": { "X-Token": "S3CR3T" }, "cookies": [{ "name": "s", "value": "S3CR3T" }] })));
        let printed = format!("{c:#?}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(printed.contains("https://****:****@e.com/"), "{printed}");
    }

    #[test]
    fn output_file() {
        assert!(err(with_output(json!({}))).starts_with("config: output: at least one"));
        assert!(err(with_output(json!({ "file": "" })))
            .starts_with("config: output.file: must not be empty"));
        assert_eq!(
            err(with_output(json!({ "file": "out/" }))),
            "config: output.file: out/ is a directory; name the file, e.g. out/recording.mp4"
        );
        for dir in ["/app/out/..", ".", "/app/out/."] {
            assert!(
                err(with_output(json!({ "file": dir }))).contains("is a directory"),
                "{dir}"
            );
        }
        assert_eq!(
            err(with_output(json!({ "file": "out.mkv" }))),
            "config: output.file: must end in .mp4, not .mkv"
        );
        assert_eq!(
            err(with_output(json!({ "file": "/app/out/recording" }))),
            "config: output.file: must end in .mp4, e.g. /app/out/recording.mp4"
        );
        assert!(err(with_output(json!({ "file": "/app/.mp4" }))).contains("no name before .mp4"));
        ok(with_output(json!({ "file": "OUT.MP4" })));
        ok(with_output(json!({ "file": "relative/dir/x.Mp4" })));
        // A name ffmpeg would read as a protocol is never passed to it.
        for url in [
            "http://evil.example/x.mp4",
            "http:x.mp4",
            "tcp://10.0.0.1:9/x.mp4",
        ] {
            let e = err(with_output(json!({ "file": url })));
            assert!(
                e.starts_with("config: output.file: ") && e.contains("looks like a URL"),
                "{e}"
            );
        }
        ok(with_output(json!({ "file": "dir/with:colon.mp4" })));
    }

    #[test]
    fn durations_too_long_for_the_clock_are_refused_not_a_panic() {
        let mut v = with_output(json!({ "file": "/tmp/a.mp4" }));
        v["max_duration"] = json!("584542046090y");
        let e = err(v.clone());
        assert!(
            e.starts_with("config: max_duration: \"584542046090y\"") && e.contains("366 days"),
            "{e}"
        );
        v["max_duration"] = json!("366d");
        assert!(ok(v.clone()).max_duration.is_some());
        v["max_duration"] = json!("367d");
        assert!(err(v.clone()).contains("longest duration"));
        for (block, field) in [
            ("input", "start_timeout"),
            ("output", "rtmp_retry_for"),
            ("supervision", "within"),
        ] {
            let mut v = with_output(json!({ "file": "/tmp/a.mp4" }));
            if v.get(block).is_none() {
                v[block] = json!({});
            }
            v[block][field] = json!("584542046090y");
            assert!(err(v).contains("longest duration"), "{block}.{field}");
        }
    }

    #[test]
    fn output_hls() {
        let v = with_output(json!({ "hls": { "directory": "/tmp/hls" } }));
        assert_eq!(
            ok(v).output.hls,
            Some(Hls {
                directory: "/tmp/hls".into(),
                segment: Duration::from_secs(6),
                naming: Naming::Index,
                live: None,
                prefix: None,
            })
        );
        let s3 = json!({ "bucket": "b", "key": "rec/a.mp4", "access_key": "a", "secret": "s" });
        let gcs = json!({ "bucket": "b", "key": "rec/a.mp4" });
        let azure = json!({ "account": "a", "container": "c", "blob": "rec/a.mp4" });
        // `prefix` with any store; `s3_prefix`, its older name, with output.s3.
        for (store, hls) in [
            ("s3", "s3_prefix"),
            ("s3", "prefix"),
            ("gcs", "prefix"),
            ("azure", "prefix"),
        ] {
            let stores = json!({ "s3": s3, "gcs": gcs, "azure": azure });
            let v = with_output(json!({ store: stores[store],
                "hls": { "directory": "h", hls: "rec/hls/" },
                "images": { "directory": "i", "prefix": "rec/shots/" } }));
            let output = ok(v).output;
            assert_eq!(output.hls.unwrap().prefix.as_deref(), Some("rec/hls/"));
            assert_eq!(output.images.unwrap().prefix.as_deref(), Some("rec/shots/"));
        }
        for (output, message) in [
            (
                json!({ "hls": { "directory": "h", "prefix": "rec/hls/" } }),
                "config: output.hls.prefix: needs a store (output.s3, output.gcs or output.azure)",
            ),
            (
                json!({ "file": "/tmp/a.mp4", "images": { "directory": "i", "s3_prefix": "rec/i/" } }),
                "config: output.images.s3_prefix: needs a store",
            ),
            (
                json!({ "gcs": gcs, "hls": { "directory": "h", "s3_prefix": "rec/hls/" } }),
                "config: output.hls.s3_prefix: the store is output.gcs: write output.hls.prefix",
            ),
            (
                json!({ "s3": s3, "hls": { "directory": "h", "s3_prefix": "a/", "prefix": "a/" } }),
                "config: output.hls.s3_prefix: give prefix or s3_prefix (its older name), not both",
            ),
            (
                json!({ "s3": s3, "hls": { "directory": "h", "s3_prefix": "/rec/" } }),
                "config: output.hls.s3_prefix: \"/rec/\" must not start with '/'",
            ),
            (
                json!({ "azure": azure, "hls": { "directory": "h", "prefix": "a/../b/" } }),
                "config: output.hls.prefix: \"a/../b/\" must not start with '/' or hold \"..\"",
            ),
            (
                json!({ "s3": s3, "images": { "directory": "i", "prefix": "rec/shots" } }),
                "config: output.images.prefix: \"rec/shots\" should end with '/'",
            ),
            (
                json!({ "s3": s3, "hls": { "directory": "h", "s3_prefix": "rec/" } }),
                "config: output.hls.s3_prefix: holds output.s3.key \"rec/a.mp4\"",
            ),
            (
                json!({ "azure": azure, "images": { "directory": "i", "prefix": "rec/" } }),
                "config: output.images.prefix: holds output.azure.blob \"rec/a.mp4\"",
            ),
            (
                json!({ "gcs": gcs, "hls": { "directory": "h", "prefix": "x/" },
                    "images": { "directory": "i", "prefix": "x/" } }),
                "config: output.images.prefix: is output.hls.prefix too",
            ),
        ] {
            let e = err(with_output(output));
            assert!(e.starts_with(message), "{e}");
        }
        let v = with_output(json!({ "hls": {
            "directory": "/tmp/hls", "naming": "timestamp", "live_playlist": {}
        } }));
        let hls = ok(v).output.hls.unwrap();
        assert_eq!(hls.naming, Naming::Timestamp);
        assert_eq!(
            hls.live,
            Some(LivePlaylist {
                name: "live.m3u8".into(),
                window: 6
            })
        );
        let v = with_output(json!({ "hls": {
            "directory": "/tmp/hls", "live_playlist": { "name": "sliding.m3u8", "window": 3 }
        } }));
        assert_eq!(
            ok(v).output.hls.unwrap().live,
            Some(LivePlaylist {
                name: "sliding.m3u8".into(),
                window: 3
            })
        );
        for (hls, message) in [
            (json!({}), "config: output.hls.directory: is required"),
            (
                json!({ "directory": "/a:b" }),
                "config: output.hls.directory: must not contain ':'",
            ),
            (
                json!({ "directory": "h", "segment_duration": "90s" }),
                "config: output.hls.segment_duration: must be between 1s and 60s",
            ),
            (
                json!({ "directory": "h", "live": true }),
                "config: output.hls",
            ),
            (
                json!({ "directory": "h", "naming": "date" }),
                "config: output.hls.naming: unknown variant `date`",
            ),
            (
                json!({ "directory": "h", "live_playlist": { "name": "../x.m3u8" } }),
                "config: output.hls.live_playlist.name: \"../x.m3u8\" is not a file name",
            ),
            (
                json!({ "directory": "h", "live_playlist": { "name": "index.m3u8" } }),
                "config: output.hls.live_playlist.name: index.m3u8 is the event playlist's name",
            ),
            (
                json!({ "directory": "h", "live_playlist": { "window": 1 } }),
                "config: output.hls.live_playlist.window: must be within 2..=100 segments, got 1",
            ),
            (
                json!({ "directory": "h", "live_playlist": true }),
                "config: output.hls.live_playlist:",
            ),
        ] {
            let e = err(with_output(json!({ "hls": hls })));
            assert!(e.starts_with(message), "{e}");
        }
    }

    #[test]
    fn output_images() {
        let v =
            with_output(json!({ "file": "/tmp/a.mp4", "images": { "directory": "/tmp/shots" } }));
        assert_eq!(
            ok(v).output.images,
            Some(Images {
                directory: "/tmp/shots".into(),
                every: Duration::from_secs(10),
                width: None,
                height: None,
                format: ImageFormat::Jpeg,
                naming: Naming::Index,
                prefix: None,
            })
        );
        let v = with_output(json!({ "file": "/tmp/a.mp4",
            "images": { "directory": "s", "format": "png", "naming": "timestamp" } }));
        let images = ok(v).output.images.unwrap();
        assert_eq!(
            (images.format, images.naming),
            (ImageFormat::Png, Naming::Timestamp)
        );
        let v = with_output(json!({ "file": "/tmp/a.mp4",
            "images": { "directory": "s", "every": "2s", "width": 320 } }));
        let images = ok(v).output.images.unwrap();
        assert_eq!(
            (images.every, images.width, images.height),
            (Duration::from_secs(2), Some(320), None)
        );
        for (images, message) in [
            (json!({}), "config: output.images.directory: is required"),
            (
                json!({ "directory": "s", "every": "500ms" }),
                "config: output.images.every: must be between 1s and 1h",
            ),
            (
                json!({ "directory": "s", "width": 321 }),
                "config: output.images.width: must be even",
            ),
            (
                json!({ "directory": "s", "height": 8 }),
                "config: output.images.height: must be even",
            ),
            (
                json!({ "directory": "s", "format": "gif" }),
                "config: output.images.format: unknown variant `gif`",
            ),
            (
                json!({ "directory": "s", "naming": "date" }),
                "config: output.images.naming: unknown variant `date`",
            ),
        ] {
            let e = err(with_output(
                json!({ "file": "/tmp/a.mp4", "images": images }),
            ));
            assert!(e.starts_with(message), "{e}");
        }
    }

    #[test]
    fn output_rtmp() {
        let e = err(with_output(
            json!({ "rtmp": "http://live.example.com/app/sk_live_123" }),
        ));
        assert_eq!(
            e,
            "config: output.rtmp: http://live.example.com/app/**** is not an rtmp:// or rtmps:// URL with a host"
        );
        // What the stream-key proxy cannot keep off ffmpeg's command line is refused.
        for url in [
            "rtmp://u:PASS@live.example.com/app/key",
            "rtmp://live.example.com/live?token=PASS",
        ] {
            let e = err(with_output(json!({ "rtmp": url })));
            assert!(
                e.starts_with("config: output.rtmp: ")
                    && e.contains("command line")
                    && !e.contains("PASS"),
                "{e}"
            );
        }
        let e = err(with_output(
            json!({ "rtmp": ["rtmp://a.example.com/app/k1", "udp://b/app/k2"] }),
        ));
        assert!(
            e.starts_with("config: output.rtmp[1]:") && !e.contains("k2"),
            "{e}"
        );
        let e = err(with_output(
            json!({ "rtmp": ["rtmp://a.example.com/app/k1", 5] }),
        ));
        assert!(
            e.starts_with("config: output.rtmp[1]: invalid type: integer"),
            "{e}"
        );
        let e = err(with_output(json!({ "rtmp": 5 })));
        assert!(
            e.starts_with("config: output.rtmp:") && e.contains("a URL or a list"),
            "{e}"
        );
        let c = ok(with_output(
            json!({ "rtmp": ["rtmp://a.example.com/app/k1", "rtmps://b.example.com:443/app/k2"] }),
        ));
        assert_eq!(c.output.rtmp.len(), 2);
        assert_eq!(
            c.output.rtmp[1].expose(),
            "rtmps://b.example.com:443/app/k2"
        );
        assert!(!format!("{:?}", c.output).contains("k2"));
    }

    #[test]
    fn output_srt() {
        let c = ok(with_output(json!({
            "srt": "srt://127.0.0.1:9000?passphrase=s3cr3tpassphrase&streamid=%23!%3A%3Ar%3Dlive%2Fkey42"
        })));
        assert_eq!(c.output.srt.len(), 1);
        assert_eq!(c.output.srt[0].to_string(), "srt://127.0.0.1:9000?****");
        let shown = format!("{:?}", c.output);
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("key42"),
            "{shown}"
        );
        let c = ok(with_output(
            json!({ "srt": ["srt://a.example.com:9000?mode=caller", "srt://b.example.com:9001"] }),
        ));
        assert_eq!(c.output.srt.len(), 2);
        for (srt, expected) in [
            (
                json!("srt://a.example.com:9000?mode=listener&passphrase=s3cr3tpassphrase"),
                "config: output.srt: srt://a.example.com:9000?****: mode must be caller (pagecast connects to the SRT listener), got listener",
            ),
            (
                json!("srt://a.example.com:9000?passphrase=short"),
                "config: output.srt: srt://a.example.com:9000?****: the passphrase must be 10 to 79 characters long",
            ),
            (
                json!("srt://a.example.com?passphrase=s3cr3tpassphrase"),
                "config: output.srt: srt://a.example.com?**** has no port (SRT has no default one)",
            ),
            (
                json!(["srt://a.example.com:9000", "rtmp://b.example.com:9000/app/s3cr3tkey"]),
                "config: output.srt[1]: rtmp://b.example.com:9000/app/**** is not an srt:// URL with a host",
            ),
            (
                json!("srt://:9000?passphrase=s3cr3tpassphrase"),
                "config: output.srt: **** is not an srt:// URL",
            ),
        ] {
            assert_eq!(err(with_output(json!({ "srt": srt }))), expected);
        }
        let e = err(with_output(json!({ "srt": 5 })));
        assert!(
            e.starts_with("config: output.srt:") && e.contains("a URL or a list"),
            "{e}"
        );
    }

    #[test]
    fn output_s3() {
        let s3 = |s3: serde_json::Value| with_output(json!({ "s3": s3 }));
        let e = err(s3(json!({ "access_key": "AK", "bucket": "b", "key": "k" })));
        assert_eq!(e, "config: output.s3.secret: required with access_key");
        let e = err(s3(
            json!({ "secret": "shh-secret", "bucket": "b", "key": "k" }),
        ));
        assert_eq!(e, "config: output.s3.access_key: required with secret");
        // The path follows the spelling used.
        let e = err(with_output(
            json!({ "S3": { "secret": "shh", "bucket": "b", "key": "k" } }),
        ));
        assert_eq!(e, "config: output.S3.access_key: required with secret");
        assert_eq!(
            err(s3(json!({ "key": "k" }))),
            "config: output.s3.bucket: required"
        );
        assert_eq!(
            err(s3(json!({ "bucket": "", "key": "k" }))),
            "config: output.s3.bucket: required"
        );
        assert_eq!(
            err(s3(json!({ "bucket": "b" }))),
            "config: output.s3.key: required"
        );
        assert_eq!(
            err(s3(json!({ "bucket": "b", "key": "" }))),
            "config: output.s3.key: required"
        );
        assert!(err(s3(json!({ "bucket": "my bucket", "key": "k" })))
            .starts_with("config: output.s3.bucket: "));
        assert_eq!(
            err(s3(
                json!({ "bucket": "b", "key": "k", "access_key": "", "secret": "x" })
            )),
            "config: output.s3.access_key: must not be empty"
        );
        assert_eq!(
            err(s3(
                json!({ "bucket": "b", "key": "k", "access_key": "AK", "secret": "" })
            )),
            "config: output.s3.secret: must not be empty"
        );
        assert!(err(s3(
            json!({ "bucket": "b", "key": "k", "session_token": "tok" })
        ))
        .starts_with("config: output.s3.session_token: needs access_key and secret"));
        assert!(err(s3(json!({ "bucket": "b", "key": "k", "region": "" })))
            .starts_with("config: output.s3.region:"));
        for bad in ["ftp://x", "minio:9000", "http://"] {
            assert!(
                err(s3(json!({ "bucket": "b", "key": "k", "endpoint": bad })))
                    .starts_with("config: output.s3.endpoint:"),
                "{bad}"
            );
        }
        let e = err(with_output(
            json!({ "s3": { "bucket": "b", "key": "k" }, "S3": { "bucket": "b", "key": "k" } }),
        ));
        assert_eq!(e, "config: output: give s3 or S3, not both");
        let sized =
            |size: serde_json::Value| s3(json!({ "bucket": "b", "key": "k", "part_size": size }));
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
        assert!(
            err(sized(json!(-1))).starts_with("config: output.s3.part_size: must not be negative")
        );
        // Everything given.
        let full = ok(s3(
            json!({ "access_key": "AK", "secret": "SK", "session_token": "ST",
            "bucket": "rec-bucket", "key": "rooms/a.mp4", "region": "eu-west-1",
            "endpoint": "http://127.0.0.1:9000", "force_path_style": true, "give_up_after": "2m" }),
        ))
        .output
        .s3
        .unwrap();
        assert_eq!(full.session_token.as_ref().map(Secret::expose), Some("ST"));
        assert_eq!(full.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            full.endpoint.as_ref().map(url::Url::as_str),
            Some("http://127.0.0.1:9000/")
        );
        assert_eq!(full.force_path_style, Some(true));
        assert_eq!(full.give_up_after, Duration::from_secs(120));
        // No keys: the standard credential chain applies later.
        let s3 = ok(s3(json!({ "bucket": "b", "key": "k" })))
            .output
            .s3
            .unwrap();
        assert!(s3.access_key.is_none() && s3.secret.is_none() && s3.endpoint.is_none());
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
        // 480 * 16 / 9 = 853.3: the nearest even number is 854.
        assert_eq!(
            size(json!({ "file": "a.mp4", "height": 480 })),
            Some((854, 480))
        );
        // 1000 * 9 / 16 = 562.5: the nearest even number is 562.
        assert_eq!(
            size(json!({ "file": "a.mp4", "width": 1000 })),
            Some((1000, 562))
        );
        assert_eq!(
            size(json!({ "file": "a.mp4", "width": 1920, "height": 1080 })),
            None
        );
        assert_eq!(size(json!({ "file": "a.mp4", "width": 1920 })), None);
        assert_eq!(size(json!({ "file": "a.mp4", "height": 1080 })), None);
        // Keeps a non-16:9 input's ratio.
        let c = ok(
            json!({ "input": { "url": "https://e.com", "width": 1080, "height": 1920 },
            "output": { "file": "a.mp4", "height": 1280 } }),
        );
        assert_eq!(c.output.size, Some((720, 1280)));
        assert_eq!(
            err(with_output(
                json!({ "file": "a.mp4", "width": 641, "height": 360 })
            )),
            "config: output.width: must be even, got 641"
        );
        assert!(err(with_output(
            json!({ "file": "a.mp4", "width": 1280, "height": 5000 })
        ))
        .starts_with("config: output.height: must be between 64 and 4320"));
        assert!(err(with_output(json!({ "file": "a.mp4", "height": 721 })))
            .starts_with("config: output.height: must be even"));
        let e = err(with_output(json!({ "file": "a.mp4", "width": 64 })));
        assert_eq!(e, "config: output.width: 64 makes the height 36 at the input's 1920x1080 aspect ratio, outside 64..=4320; give output.height too");
    }

    #[test]
    fn audio_only_or_video_only_keeps_the_sound_or_the_picture_alone() {
        let out = |v: serde_json::Value| ok(with_output(v)).output;
        assert_eq!(out(json!({ "file": "a.mp4" })).tracks, Tracks::Both);
        assert_eq!(
            out(json!({ "file": "a.mp4", "audio_only": true })).tracks,
            Tracks::AudioOnly
        );
        assert_eq!(
            out(json!({ "file": "a.mp4", "audio_only": false })).tracks,
            Tracks::Both
        );
        // The sound alone into segments and a store, the picture alone anywhere.
        assert_eq!(
            out(json!({ "hls": { "directory": "h" }, "audio_only": true })).tracks,
            Tracks::AudioOnly
        );
        assert_eq!(
            out(
                json!({ "file": "a.mp4", "video_only": true, "width": 640, "height": 360,
                "rtmp": "rtmp://live.example/app/KEY", "images": { "directory": "i" } })
            )
            .tracks,
            Tracks::VideoOnly
        );
        let bad = |extra: serde_json::Value| {
            let mut o = json!({ "file": "a.mp4", "audio_only": true });
            o.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            err(with_output(o))
        };
        assert_eq!(
            bad(json!({ "video_only": true })),
            "config: output.video_only: give audio_only or video_only, not both"
        );
        for (extra, path) in [
            (json!({ "images": { "directory": "i" } }), "output.images"),
            (
                json!({ "rtmp": "rtmp://live.example/app/KEY" }),
                "output.rtmp",
            ),
            (json!({ "srt": "srt://live.example:9000" }), "output.srt"),
            (json!({ "height": 360 }), "output.height"),
        ] {
            assert_eq!(
                bad(extra),
                format!("config: {path}: needs a picture, and output.audio_only records the sound alone")
            );
        }
        assert!(bad(json!({ "audio_only": "yes" })).contains("audio_only"));
    }

    #[test]
    fn the_video_preset_is_one_of_x264_s_and_superfast_by_default() {
        let out = |v: serde_json::Value| ok(with_output(v)).output;
        assert_eq!(out(json!({ "file": "a.mp4" })).video_preset, "superfast");
        assert_eq!(
            out(json!({ "file": "a.mp4", "video_preset": "ultrafast" })).video_preset,
            "ultrafast"
        );
        assert_eq!(
            out(json!({ "file": "a.mp4", "video_preset": "veryfast" })).video_preset,
            "veryfast"
        );
        let bad =
            |v: serde_json::Value| err(with_output(json!({ "file": "a.mp4", "video_preset": v })));
        assert_eq!(
            bad(json!("fastest")),
            "config: output.video_preset: must be one of ultrafast, superfast, veryfast, got \"fastest\""
        );
        // x264's slower presets, and x264 options smuggled in, are refused alike.
        assert!(bad(json!("medium")).starts_with("config: output.video_preset: must be one of"));
        assert!(bad(json!("ultrafast -x264-params a=b"))
            .starts_with("config: output.video_preset: must be one of"));
        assert!(
            bad(json!(3)).contains("output.video_preset"),
            "{}",
            bad(json!(3))
        );
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
        let o = out(
            json!({ "file": "a.mp4", "audio_bitrate": "128000", "video_bitrate": "2976k", "video_buffer": "5952K" }),
        );
        assert_eq!(
            (o.audio_bitrate, o.video_bitrate, o.video_buffer),
            (128_000, 2_976_000, 5_952_000)
        );
        assert_eq!(
            out(json!({ "file": "a.mp4", "video_bitrate": "2.5M" })).video_bitrate,
            2_500_000
        );
        assert_eq!(
            out(json!({ "file": "a.mp4", "video_bitrate": "8m" })).video_bitrate,
            8_000_000
        );
        assert_eq!(
            out(json!({ "file": "a.mp4", "video_bitrate": 2.5e6 })).video_bitrate,
            2_500_000
        );
        // Range ends.
        assert_eq!(
            out(json!({ "file": "a.mp4", "audio_bitrate": "8k" })).audio_bitrate,
            8_000
        );
        assert_eq!(
            out(json!({ "file": "a.mp4", "audio_bitrate": "512k" })).audio_bitrate,
            512_000
        );
        assert_eq!(
            out(json!({ "file": "a.mp4", "video_bitrate": "100M" })).video_bitrate,
            100_000_000
        );
        assert_eq!(
            out(json!({ "file": "a.mp4", "video_buffer": "200M" })).video_buffer,
            200_000_000
        );
        let bad =
            |k: &str, v: serde_json::Value| err(with_output(json!({ "file": "a.mp4", k: v })));
        assert_eq!(
            bad("audio_bitrate", json!(128)),
            "config: output.audio_bitrate: 128 bit/s is far too low; did you mean \"128k\"?"
        );
        assert_eq!(
            bad("video_bitrate", json!("2976")),
            "config: output.video_bitrate: must be between 100k and 100M, got 2976; did you mean \"2976k\"?"
        );
        assert!(bad("video_bitrate", json!(500)).contains("did you mean \"500k\"?"));
        assert_eq!(
            bad("audio_bitrate", json!("1M")),
            "config: output.audio_bitrate: must be between 8k and 512k, got 1M"
        );
        assert!(bad("audio_bitrate", json!("7k"))
            .starts_with("config: output.audio_bitrate: must be between"));
        assert_eq!(
            bad("video_bitrate", json!("101M")),
            "config: output.video_bitrate: must be between 100k and 100M, got 101M"
        );
        assert!(bad("video_bitrate", json!("99k"))
            .starts_with("config: output.video_bitrate: must be between"));
        assert_eq!(
            bad("video_buffer", json!("201M")),
            "config: output.video_buffer: must be between 100k and 200M, got 201M"
        );
        assert!(bad("video_buffer", json!(99_999_999_999_u64))
            .starts_with("config: output.video_buffer: must be between"));
        assert!(bad("video_bitrate", json!("99999999999999999999999M"))
            .starts_with("config: output.video_bitrate: must be between"));
        assert_eq!(
            bad("video_bitrate", json!(0)),
            "config: output.video_bitrate: must be more than 0"
        );
        for text in ["lots", "1e3k", "-5k", "1.2.3k", "k", "", "inf", "12 kbps"] {
            assert!(
                bad("video_bitrate", json!(text)).starts_with("config: output.video_bitrate: \""),
                "{text}"
            );
        }
        assert!(bad("audio_bitrate", json!(-5))
            .starts_with("config: output.audio_bitrate: must not be negative"));
        assert!(bad("audio_bitrate", json!(128.5))
            .starts_with("config: output.audio_bitrate: must be a whole number"));
        let e = bad("audio_bitrate", json!(true));
        assert!(
            e.starts_with("config: output.audio_bitrate: invalid type: boolean")
                && e.contains("\"128k\""),
            "{e}"
        );
        for f in [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000] {
            assert_eq!(
                out(json!({ "file": "a.mp4", "audio_frequency": f })).audio_frequency,
                f
            );
        }
        assert!(bad("audio_frequency", json!(44000))
            .starts_with("config: output.audio_frequency: must be one of"));
    }

    #[test]
    fn durations() {
        let mut v = with_input(json!({ "url": "https://e.com" }));
        v["max_duration"] = json!("2h");
        assert_eq!(ok(v.clone()).max_duration, Some(Duration::from_secs(7200)));
        v["max_duration"] = json!("30s");
        assert_eq!(ok(v.clone()).max_duration, Some(Duration::from_secs(30)));
        v["max_duration"] = json!("1h 30m");
        assert_eq!(ok(v.clone()).max_duration, Some(Duration::from_secs(5400)));
        v["max_duration"] = json!("soon");
        assert!(err(v.clone()).starts_with("config: max_duration: \"soon\" is not a duration"));
        v["max_duration"] = json!(30);
        assert_eq!(
            err(v.clone()),
            "config: max_duration: 30 has no unit; write it as a string like \"30s\""
        );
        v["max_duration"] = json!("0s");
        assert_eq!(
            err(v.clone()),
            "config: max_duration: must be longer than 0s"
        );
        v["max_duration"] = json!(null);
        assert_eq!(ok(v).max_duration, None);
        let mut v =
            with_output(json!({ "rtmp": "rtmp://a.example.com/app/k", "rtmp_retry_for": "5m" }));
        assert_eq!(
            ok(v.clone()).output.rtmp_retry_for,
            Duration::from_secs(300)
        );
        v["output"]["rtmp_retry_for"] = json!("0s");
        assert!(err(v).starts_with("config: output.rtmp_retry_for:"));
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
        v["supervision"] = json!({ "max_restarts": 101 });
        assert!(err(v.clone()).starts_with("config: supervision.max_restarts:"));
        v["supervision"] = json!({ "within": "0s" });
        assert!(err(v.clone()).starts_with("config: supervision.within:"));
        v["supervision"] = json!({ "max_restart": 3 });
        assert!(err(v).starts_with("config: supervision.max_restart: unknown field"));
    }
}
