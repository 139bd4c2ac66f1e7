//! From a LiveKit egress request to a pagecast job: the recorder config (JSON, as `pagecast
//! record` takes it) and the request as `EgressInfo` shows it (secrets dropped or masked).
//! Whatever pagecast cannot honour is refused here, naming the field: `unimplemented` for a
//! feature it does not have, `invalid_argument` for a value that is wrong.

use livekit_protocol as lk;
use pagecast_actors::secret::{mask_stream_url, mask_url};
use serde_json::{json, Value};

use super::twirp::TwirpError;
use super::webhook::RequestHook;

/// The file name of an egress that gives none (or a folder): its start time, and its id, so two
/// egresses started in the same second never share an object or a file.
const DEFAULT_NAME: &str = "{time}-{egress_id}.mp4";

/// A file path's placeholder for the egress's id, filled in when the egress is started
/// (`super::with_egress_id`).
pub const EGRESS_ID: &str = "{egress_id}";

/// A request made into a job.
#[derive(Debug)]
pub struct Job {
    /// The recorder config.
    pub config: Value,
    /// The request as the egress's info carries it: no credentials, stream keys masked.
    pub shown: lk::egress_info::Request,
    /// The stream URLs, masked.
    pub streams: Vec<String>,
    /// The request's own webhooks, as given.
    pub webhooks: Vec<RequestHook>,
}

/// What every start request does alike, whatever its message type (`$module`, its prost
/// module): its encoding options (a preset or `advanced`) into `config`, and the outputs it asks
/// for (the repeated fields, and the deprecated single `$output` where it has one) into
/// `config.output`. Gives the request as the egress's info shows it (storage credentials dropped,
/// stream keys masked, webhook URLs masked) and the masked stream URLs.
macro_rules! shown_and_outputs {
    ($config:ident, $req:ident, $module:ident $(, $output:ident)?) => {{
        use lk::$module::Options;
        match &$req.options {
            None => {}
            Some(Options::Preset(p)) => preset(&mut $config, *p)?,
            Some(Options::Advanced(a)) => advanced(&mut $config, a)?,
        }
        #[allow(unused_mut)]
        let mut files: Vec<&lk::EncodedFileOutput> = $req.file_outputs.iter().collect();
        #[allow(unused_mut)]
        let mut streams: Vec<&lk::StreamOutput> = $req.stream_outputs.iter().collect();
        #[allow(unused_mut)]
        let mut segments: Vec<&lk::SegmentedFileOutput> = $req.segment_outputs.iter().collect();
        $(
            #[allow(deprecated)]
            match &$req.$output {
                Some(lk::$module::Output::File(f)) => files.push(f),
                Some(lk::$module::Output::Stream(s)) => streams.push(s),
                Some(lk::$module::Output::Segments(s)) => segments.push(s),
                None => {}
            }
        )?
        let asked = Outputs {
            files: &files,
            streams: &streams,
            segments: &segments,
            images: &$req.image_outputs,
        };
        let streams = outputs(&mut $config, &asked)?;
        let mut shown = $req.clone();
        conceal(&mut shown.file_outputs, &mut shown.stream_outputs);
        conceal_dirs(&mut shown.segment_outputs, &mut shown.image_outputs);
        for hook in &mut shown.webhooks {
            hook.url = mask_url(&hook.url);
        }
        $(
            #[allow(deprecated)]
            match &mut shown.$output {
                Some(lk::$module::Output::File(f)) => {
                    drop_credentials!(f.output, encoded_file_output)
                }
                Some(lk::$module::Output::Stream(s)) => mask_stream(s),
                Some(lk::$module::Output::Segments(s)) => {
                    drop_credentials!(s.output, segmented_file_output)
                }
                None => {}
            }
        )?
        (shown, streams, request_hooks(&$req.webhooks)?)
    }};
}

/// `StartWebEgress`.
pub fn web(req: &lk::WebEgressRequest) -> Result<Job, TwirpError> {
    if req.url.is_empty() {
        return Err(TwirpError::invalid("url", "is required"));
    }
    let mut config = json!({
        "input": { "url": req.url, "await_start_signal": req.await_start_signal },
        "output": {},
    });
    let (mut shown, streams, webhooks) =
        shown_and_outputs!(config, req, web_egress_request, output);
    only(&mut config, req.audio_only, req.video_only)?;
    // The page's address may carry its own credentials (user info, a token in the query or the
    // fragment): what Redis, the API's answers and webhooks show of it is masked.
    shown.url = mask_url(&req.url);
    Ok(Job {
        config,
        shown: lk::egress_info::Request::Web(shown),
        streams,
        webhooks,
    })
}

/// Where room composites join: the LiveKit server and the key pair that signs the recorder's
/// room token.
#[derive(Debug, Clone)]
pub struct Room<'a> {
    pub ws_url: &'a str,
    pub api_key: &'a str,
    pub api_secret: &'a str,
}

/// `StartRoomCompositeEgress`: one of pagecast's LiveKit layouts in the room.
pub fn room_composite(
    req: &lk::RoomCompositeEgressRequest,
    room: &Room<'_>,
) -> Result<Job, TwirpError> {
    if req.room_name.is_empty() {
        return Err(TwirpError::invalid("room_name", "is required"));
    }
    if req.audio_mixing != 0 {
        return Err(TwirpError::unimplemented(
            "audio_mixing",
            "pagecast records the room's mix as the layout plays it",
        ));
    }
    let layout = match req.layout.as_str() {
        "" => "speaker-dark",
        other => layout_of(other).ok_or_else(|| {
            TwirpError::unimplemented("layout", format!("{other:?}: {LAYOUTS_KNOWN}"))
        })?,
    };
    let mut template = json!({ "layout": layout });
    if !req.custom_base_url.is_empty() {
        template["base_url"] = json!(req.custom_base_url);
    }
    let mut config = room.config(&req.room_name, template);
    let (mut shown, streams, webhooks) =
        shown_and_outputs!(config, req, room_composite_egress_request, output);
    only(&mut config, req.audio_only, req.video_only)?;
    if !req.custom_base_url.is_empty() {
        shown.custom_base_url = mask_url(&req.custom_base_url);
    }
    Ok(Job {
        config,
        shown: lk::egress_info::Request::RoomComposite(shown),
        streams,
        webhooks,
    })
}

/// `StartParticipantEgress`: one participant of the room, their camera and microphone (or their
/// screen share and its sound), through the layout page (`input.template.participant`). It
/// starts when their media plays and ends once they have left, as LiveKit's does.
pub fn participant(req: &lk::ParticipantEgressRequest, room: &Room<'_>) -> Result<Job, TwirpError> {
    if req.room_name.is_empty() {
        return Err(TwirpError::invalid("room_name", "is required"));
    }
    if req.identity.is_empty() {
        return Err(TwirpError::invalid("identity", "is required"));
    }
    let template = json!({
        "layout": "grid-dark", "participant": req.identity, "screen_share": req.screen_share,
    });
    let mut config = room.config(&req.room_name, template);
    let (shown, streams, webhooks) = shown_and_outputs!(config, req, participant_egress_request);
    Ok(Job {
        config,
        shown: lk::egress_info::Request::Participant(shown),
        streams,
        webhooks,
    })
}

/// `StartTrackCompositeEgress`: a video track and an audio track (at least one), whoever
/// publishes them, through the layout page (`input.template.video_track`, `audio_track`): the
/// picture of the one with the sound of the other. It ends once neither is published. With one
/// track the recording holds that track alone, as LiveKit's does (`output.audio_only`,
/// `video_only`).
pub fn track_composite(
    req: &lk::TrackCompositeEgressRequest,
    room: &Room<'_>,
) -> Result<Job, TwirpError> {
    if req.room_name.is_empty() {
        return Err(TwirpError::invalid("room_name", "is required"));
    }
    if req.audio_track_id.is_empty() && req.video_track_id.is_empty() {
        return Err(TwirpError::invalid(
            "video_track_id",
            "a video track, an audio track (audio_track_id) or both are required",
        ));
    }
    let mut template = json!({ "layout": "grid-dark" });
    for (field, sid) in [
        ("audio_track", &req.audio_track_id),
        ("video_track", &req.video_track_id),
    ] {
        if !sid.is_empty() {
            template[field] = json!(sid);
        }
    }
    let mut config = room.config(&req.room_name, template);
    let (shown, streams, webhooks) =
        shown_and_outputs!(config, req, track_composite_egress_request, output);
    only(
        &mut config,
        req.video_track_id.is_empty(),
        req.audio_track_id.is_empty(),
    )?;
    Ok(Job {
        config,
        shown: lk::egress_info::Request::TrackComposite(shown),
        streams,
        webhooks,
    })
}

impl Room<'_> {
    /// A recorder config joining `room_name` on this server through the layout page: `template`
    /// gives the layout and the rest of `input.template`; no output yet.
    fn config(&self, room_name: &str, mut template: Value) -> Value {
        template["ws_url"] = json!(self.ws_url);
        template["room_name"] = json!(room_name);
        json!({
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "input": { "template": template },
            "output": {},
        })
    }
}

const LAYOUTS_KNOWN: &str = "pagecast has grid, grid-light, speaker, speaker-light";

/// A LiveKit layout name as pagecast's layout page knows it.
fn layout_of(name: &str) -> Option<&'static str> {
    match name {
        "speaker" | "speaker-dark" => Some("speaker-dark"),
        "speaker-light" => Some("speaker-light"),
        "grid" | "grid-dark" => Some("grid-dark"),
        "grid-light" => Some("grid-light"),
        _ => None,
    }
}

/// `UpdateLayout` on an egress's record: a room composite's layout becomes `layout` (the
/// record's request shows it); pagecast's name of it, for the recording.
pub fn layout_change(
    record: &mut lk::EgressInfo,
    layout: &str,
) -> Result<&'static str, TwirpError> {
    let Some(lk::egress_info::Request::RoomComposite(request)) = &mut record.request else {
        return Err(TwirpError::invalid(
            "egress_id",
            "not a room composite egress: it has no layout",
        ));
    };
    let mapped = layout_of(layout).ok_or_else(|| {
        TwirpError::invalid(
            "layout",
            format!(
                "{:?}: {LAYOUTS_KNOWN}",
                layout.chars().take(40).collect::<String>()
            ),
        )
    })?;
    request.layout = layout.to_owned();
    Ok(mapped)
}

/// What an `UpdateStream` does to an egress's stream results, checked.
#[derive(Debug)]
pub struct StreamChange {
    /// The URLs added, as given.
    added: Vec<String>,
    /// Which of the record's stream results end.
    removed: Vec<usize>,
    /// How many live outputs there are after it.
    pub streaming_after: usize,
}

impl StreamChange {
    /// Writes the change into the egress's record and its list of URLs as given (`raw`, one
    /// per stream result), at `now` (ns); `started` (ns) stands for a start the record lacks.
    pub fn apply(
        &self,
        record: &mut lk::EgressInfo,
        raw: &mut Vec<String>,
        now: i64,
        started: i64,
    ) {
        for &i in &self.removed {
            let s = &mut record.stream_results[i];
            s.status = lk::stream_info::Status::Finished as i32;
            if s.started_at == 0 {
                s.started_at = started;
            }
            s.ended_at = now;
            s.duration = (now - s.started_at).max(0);
        }
        record
            .stream_results
            .extend(self.added.iter().map(|url| lk::StreamInfo {
                url: mask_stream_url(url),
                started_at: now,
                status: lk::stream_info::Status::Active as i32,
                ..Default::default()
            }));
        raw.extend(self.added.iter().cloned());
    }
}

/// Whether an egress (as its record shows its request) records a file.
fn has_file(record: &lk::EgressInfo) -> bool {
    use lk::egress_info::Request;
    #[allow(deprecated)]
    match &record.request {
        Some(Request::Web(w)) => {
            !w.file_outputs.is_empty()
                || matches!(w.output, Some(lk::web_egress_request::Output::File(_)))
        }
        Some(Request::RoomComposite(r)) => {
            !r.file_outputs.is_empty()
                || matches!(
                    r.output,
                    Some(lk::room_composite_egress_request::Output::File(_))
                )
        }
        Some(Request::Participant(p)) => !p.file_outputs.is_empty(),
        Some(Request::TrackComposite(t)) => {
            !t.file_outputs.is_empty()
                || matches!(
                    t.output,
                    Some(lk::track_composite_egress_request::Output::File(_))
                )
        }
        _ => false,
    }
}

/// The sliding playlist's name an egress (as its record shows its request) asked for, or "".
pub fn live_playlist_name(record: &lk::EgressInfo) -> String {
    use lk::egress_info::Request;
    #[allow(deprecated)]
    let segments = match &record.request {
        Some(Request::Web(w)) => w.segment_outputs.first().or(match &w.output {
            Some(lk::web_egress_request::Output::Segments(s)) => Some(s),
            _ => None,
        }),
        Some(Request::RoomComposite(r)) => r.segment_outputs.first().or(match &r.output {
            Some(lk::room_composite_egress_request::Output::Segments(s)) => Some(s),
            _ => None,
        }),
        Some(Request::Participant(p)) => p.segment_outputs.first(),
        Some(Request::TrackComposite(t)) => t.segment_outputs.first().or(match &t.output {
            Some(lk::track_composite_egress_request::Output::Segments(s)) => Some(s),
            _ => None,
        }),
        _ => None,
    };
    segments
        .map(|s| s.live_playlist_name.clone())
        .unwrap_or_default()
}

/// `UpdateStream` checked against the egress's record and its URLs as given (`raw`, one per
/// stream result): an egress started with live outputs, RTMP URLs to add, live outputs of its
/// own to remove, and an output left after it.
pub fn stream_change(
    record: &lk::EgressInfo,
    raw: &[String],
    r: &lk::UpdateStreamRequest,
) -> Result<StreamChange, TwirpError> {
    if record.stream_results.is_empty() {
        return Err(TwirpError::invalid(
            "egress_id",
            "this egress was started without stream outputs: pagecast adds streams only to one \
             that has them",
        ));
    }
    if r.add_output_urls.is_empty() && r.remove_output_urls.is_empty() {
        return Err(TwirpError::invalid(
            "add_output_urls",
            "nothing to add or remove",
        ));
    }
    let live = |j: usize| {
        record
            .stream_results
            .get(j)
            .is_some_and(|s| s.ended_at == 0)
    };
    let mut removed = Vec::new();
    for (i, url) in r.remove_output_urls.iter().enumerate() {
        let found = (0..raw.len()).find(|&j| raw[j] == *url && live(j) && !removed.contains(&j));
        match found {
            Some(j) => removed.push(j),
            None => {
                return Err(TwirpError::invalid(
                    &format!("remove_output_urls[{i}]"),
                    "is not a live output of this egress",
                ))
            }
        }
    }
    for (i, url) in r.add_output_urls.iter().enumerate() {
        let field = format!("add_output_urls[{i}]");
        if let Err(problem) = pagecast_actors::key_proxy::check_url(url) {
            return Err(TwirpError::invalid(&field, format!("the URL {problem}")));
        }
        // It travels as one control line to the recording.
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TwirpError::invalid(
                &field,
                "holds a blank or a control character",
            ));
        }
        let streamed = (0..raw.len()).any(|j| raw[j] == *url && live(j) && !removed.contains(&j));
        if streamed || r.add_output_urls[..i].contains(url) {
            return Err(TwirpError::invalid(&field, "is streamed to already"));
        }
    }
    let streaming = (0..record.stream_results.len())
        .filter(|&j| live(j))
        .count();
    let streaming_after = streaming - removed.len() + r.add_output_urls.len();
    if streaming_after == 0 && !has_file(record) {
        return Err(TwirpError::invalid(
            "remove_output_urls",
            "would remove the last output of an egress without a file: stop it instead",
        ));
    }
    Ok(StreamChange {
        added: r.add_output_urls.clone(),
        removed,
        streaming_after,
    })
}

/// Outputs pagecast does not produce for the Egress API: refused, naming the field.
/// A request's own `webhooks`: http(s) URLs (the policy's host check and the signing key's are
/// the API's, at the start), each with the key that signs it (empty: the service's first).
fn request_hooks(webhooks: &[lk::WebhookConfig]) -> Result<Vec<RequestHook>, TwirpError> {
    webhooks
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let ok = url::Url::parse(&w.url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(TwirpError::invalid(
                    &format!("webhooks[{i}].url"),
                    "is not an http or https URL",
                ));
            }
            let filter = w.filter_params.clone().unwrap_or_default();
            Ok(RequestHook {
                url: w.url.clone(),
                key: w.signing_key.clone(),
                include: filter.include_events,
                exclude: filter.exclude_events,
            })
        })
        .collect()
}

/// What an answer may show of a request's outputs: no storage credential, stream keys masked.
fn conceal(files: &mut [lk::EncodedFileOutput], streams: &mut [lk::StreamOutput]) {
    for f in files {
        drop_credentials!(f.output, encoded_file_output);
    }
    streams.iter_mut().for_each(mask_stream);
}

/// No storage credential of the segment and image outputs' uploads either.
fn conceal_dirs(segments: &mut [lk::SegmentedFileOutput], images: &mut [lk::ImageOutput]) {
    for s in segments {
        drop_credentials!(s.output, segmented_file_output);
    }
    for i in images {
        drop_credentials!(i.output, image_output);
    }
}

fn mask_stream(stream: &mut lk::StreamOutput) {
    stream.urls = stream.urls.iter().map(|u| mask_stream_url(u)).collect();
}

/// `audio_only`, `video_only`: the recording keeps the page's sound or its picture alone
/// (`output.audio_only`, `output.video_only`). The sound alone goes to files and segments: a live
/// stream and snapshots need a picture.
fn only(config: &mut Value, audio_only: bool, video_only: bool) -> Result<(), TwirpError> {
    match (audio_only, video_only) {
        (true, true) => Err(TwirpError::invalid(
            "video_only",
            "give audio_only or video_only, not both",
        )),
        (true, false) => {
            let output = &config["output"];
            for (key, field) in [
                ("rtmp", "stream_outputs"),
                ("srt", "stream_outputs"),
                ("images", "image_outputs"),
            ] {
                if output.get(key).is_some() {
                    return Err(TwirpError::invalid(
                        field,
                        "needs a picture, and audio_only records the sound alone",
                    ));
                }
            }
            config["output"]["audio_only"] = json!(true);
            Ok(())
        }
        (false, true) => {
            config["output"]["video_only"] = json!(true);
            Ok(())
        }
        (false, false) => Ok(()),
    }
}

/// Storage credentials never leave the request: `$output` is a file's, segments' or images'
/// upload (`Option<lk::$module::Output>`; the three enums have the same variants).
macro_rules! drop_credentials {
    ($output:expr, $module:ident) => {{
        use lk::$module::Output as Upload;
        match &mut $output {
            Some(Upload::S3(s3)) => {
                s3.access_key.clear();
                s3.secret.clear();
                s3.session_token.clear();
                s3.assume_role_external_id.clear();
                s3.proxy = None;
            }
            Some(Upload::Gcp(gcp)) => {
                gcp.credentials.clear();
                gcp.proxy = None;
            }
            Some(Upload::Azure(azure)) => azure.account_key.clear(),
            Some(Upload::AliOss(oss)) => {
                oss.access_key.clear();
                oss.secret.clear();
            }
            None => {}
        }
    }};
}
use drop_credentials;

/// An output's upload, whichever output it belongs to (file, segments, images).
#[derive(Clone, Copy)]
enum Upload<'a> {
    S3(&'a lk::S3Upload),
    Gcp(&'a lk::GcpUpload),
    Azure(&'a lk::AzureBlobUpload),
    AliOss,
}

macro_rules! upload_of {
    ($output:expr, $module:ident) => {{
        use lk::$module::Output as O;
        $output.as_ref().map(|o| match o {
            O::S3(s3) => Upload::S3(s3),
            O::Gcp(gcp) => Upload::Gcp(gcp),
            O::Azure(azure) => Upload::Azure(azure),
            O::AliOss(_) => Upload::AliOss,
        })
    }};
}

/// `upload` as pagecast's store (`"s3"`, `"gcs"` or `"azure"`, and its block), the object named
/// `path`; `at` is the output's field (`file_outputs[0]`), for messages.
fn store_output(
    upload: Upload<'_>,
    path: &str,
    at: &str,
) -> Result<(&'static str, Value), TwirpError> {
    match upload {
        Upload::S3(s3) => Ok(("s3", s3_output(s3, path, at)?)),
        Upload::Gcp(gcp) => Ok(("gcs", gcs_output(gcp, path, at)?)),
        Upload::Azure(azure) => Ok(("azure", azure_output(azure, path, at)?)),
        Upload::AliOss => Err(TwirpError::unimplemented(
            &format!("{at}.aliOSS"),
            "pagecast uploads to S3, GCS and Azure Blob only",
        )),
    }
}

/// LiveKit's name of an upload's field (`s3`, `gcp`, `azure`, `aliOSS`).
fn upload_field(upload: Upload<'_>) -> &'static str {
    match upload {
        Upload::S3(_) => "s3",
        Upload::Gcp(_) => "gcp",
        Upload::Azure(_) => "azure",
        Upload::AliOss => "aliOSS",
    }
}

/// `S3Upload` as `output.s3`: the filepath is the key.
fn s3_output(s3: &lk::S3Upload, path: &str, at: &str) -> Result<Value, TwirpError> {
    let f = |name: &str| format!("{at}.s3.{name}");
    if s3.bucket.is_empty() {
        return Err(TwirpError::invalid(&f("bucket"), "is required"));
    }
    if !s3.assume_role_arn.is_empty() {
        return Err(TwirpError::unimplemented(
            &f("assume_role_arn"),
            "give access_key and secret",
        ));
    }
    if s3.proxy.is_some() {
        return Err(TwirpError::unimplemented(&f("proxy"), "not supported"));
    }
    if !s3.metadata.is_empty() || !s3.tagging.is_empty() {
        return Err(TwirpError::unimplemented(
            &f("metadata"),
            "object metadata and tagging are not set by pagecast",
        ));
    }
    if !s3.content_disposition.is_empty() {
        return Err(TwirpError::unimplemented(
            &f("content_disposition"),
            "not set by pagecast",
        ));
    }
    let mut s = json!({ "bucket": s3.bucket, "key": path.trim_start_matches('/') });
    let set = |s: &mut Value, k: &str, v: &str| {
        if !v.is_empty() {
            s[k] = json!(v);
        }
    };
    set(&mut s, "access_key", &s3.access_key);
    set(&mut s, "secret", &s3.secret);
    set(&mut s, "session_token", &s3.session_token);
    set(&mut s, "region", &s3.region);
    set(&mut s, "endpoint", &s3.endpoint);
    if s3.force_path_style {
        s["force_path_style"] = json!(true);
    }
    Ok(s)
}

/// `GCPUpload` as `output.gcs`: the filepath is the key; `credentials` is the service-account
/// key's JSON (empty: the worker's Google identity, which a service refuses to lend).
fn gcs_output(gcp: &lk::GcpUpload, path: &str, at: &str) -> Result<Value, TwirpError> {
    if gcp.bucket.is_empty() {
        return Err(TwirpError::invalid(
            &format!("{at}.gcp.bucket"),
            "is required",
        ));
    }
    if gcp.proxy.is_some() {
        return Err(TwirpError::unimplemented(
            &format!("{at}.gcp.proxy"),
            "not supported",
        ));
    }
    let mut gcs = json!({ "bucket": gcp.bucket, "key": path.trim_start_matches('/') });
    if !gcp.credentials.is_empty() {
        gcs["credentials"] = json!(gcp.credentials);
    }
    Ok(gcs)
}

/// `AzureBlobUpload` as `output.azure`: the filepath is the blob's name.
fn azure_output(azure: &lk::AzureBlobUpload, path: &str, at: &str) -> Result<Value, TwirpError> {
    for (field, value) in [
        ("account_name", &azure.account_name),
        ("container_name", &azure.container_name),
    ] {
        if value.is_empty() {
            return Err(TwirpError::invalid(
                &format!("{at}.azure.{field}"),
                "is required",
            ));
        }
    }
    let mut blob = json!({
        "account": azure.account_name,
        "container": azure.container_name,
        "blob": path.trim_start_matches('/'),
    });
    if !azure.account_key.is_empty() {
        blob["key"] = json!(azure.account_key);
    }
    Ok(blob)
}

/// The outputs a request asks for.
struct Outputs<'a> {
    files: &'a [&'a lk::EncodedFileOutput],
    streams: &'a [&'a lk::StreamOutput],
    segments: &'a [&'a lk::SegmentedFileOutput],
    images: &'a [lk::ImageOutput],
}

/// The outputs into `config.output`; the masked stream URLs.
fn outputs(config: &mut Value, asked: &Outputs<'_>) -> Result<Vec<String>, TwirpError> {
    let (files, streams) = (asked.files, asked.streams);
    if files.is_empty() && streams.is_empty() && asked.segments.is_empty() {
        return Err(TwirpError::invalid(
            "file_outputs",
            "no output: give file_outputs, stream_outputs or segment_outputs (pagecast records \
             no image_outputs alone)",
        ));
    }
    let hls = segments(asked.segments)?;
    let images = images(asked.images)?;
    if files.len() > 1 {
        return Err(TwirpError::unimplemented(
            "file_outputs",
            "pagecast records one file per egress",
        ));
    }
    if streams.len() > 1 {
        return Err(TwirpError::invalid(
            "stream_outputs",
            "give every URL in one StreamOutput",
        ));
    }
    let output = &mut config["output"];
    if let Some(f) = files.first() {
        match lk::EncodedFileType::try_from(f.file_type) {
            Ok(lk::EncodedFileType::DefaultFiletype | lk::EncodedFileType::Mp4) => {}
            _ => {
                return Err(TwirpError::unimplemented(
                    "file_outputs[0].file_type",
                    "pagecast records MP4 only",
                ))
            }
        }
        let mut path = if f.filepath.is_empty() {
            DEFAULT_NAME.to_owned()
        } else {
            f.filepath.clone()
        };
        if path.ends_with('/') {
            path.push_str(DEFAULT_NAME);
        }
        if !path.to_ascii_lowercase().ends_with(".mp4") {
            path.push_str(".mp4");
        }
        match upload_of!(f.output, encoded_file_output) {
            None => output["file"] = json!(path),
            Some(upload) => {
                let (store, block) = store_output(upload, &path, "file_outputs[0]")?;
                output[store] = block;
            }
        }
    }
    for (name, dir) in [("hls", hls), ("images", images)] {
        let Some((mut dir, upload)) = dir else {
            continue;
        };
        if let Some((at, upload)) = upload {
            dir["prefix"] = json!(copied_to(output, upload, at, &dir["directory"])?);
        }
        output[name] = dir;
    }
    let mut shown = Vec::new();
    if let Some(s) = streams.first() {
        // The default protocol is RTMP, or SRT when every URL says so (as LiveKit infers it).
        let srt = match lk::StreamProtocol::try_from(s.protocol) {
            Ok(lk::StreamProtocol::Rtmp) => false,
            Ok(lk::StreamProtocol::Srt) => true,
            Ok(lk::StreamProtocol::DefaultProtocol) => {
                !s.urls.is_empty() && s.urls.iter().all(|u| u.starts_with("srt://"))
            }
            _ => {
                return Err(TwirpError::unimplemented(
                    "stream_outputs[0].protocol",
                    "pagecast streams over RTMP and SRT only",
                ))
            }
        };
        if s.urls.is_empty() {
            return Err(TwirpError::invalid("stream_outputs[0].urls", "is empty"));
        }
        for (i, u) in s.urls.iter().enumerate() {
            let fits = if srt {
                u.starts_with("srt://")
            } else {
                u.starts_with("rtmp://") || u.starts_with("rtmps://")
            };
            if !fits {
                return Err(TwirpError::invalid(
                    &format!("stream_outputs[0].urls[{i}]"),
                    if srt {
                        "not an srt:// URL (protocol SRT)"
                    } else {
                        "not an rtmp:// or rtmps:// URL"
                    },
                ));
            }
            shown.push(mask_stream_url(u));
        }
        output[if srt { "srt" } else { "rtmp" }] = json!(s.urls);
    }
    Ok(shown)
}

/// The directory a segment or image output writes into: its `filename_prefix`, taken as a
/// directory (pagecast names the files in it itself).
fn directory_of(field: &str, prefix: &str) -> Result<String, TwirpError> {
    let dir = prefix.trim_end_matches('/');
    if dir.is_empty() {
        return Err(TwirpError::invalid(
            field,
            "is required: pagecast writes into this directory (inside its output root)",
        ));
    }
    if dir.contains('{') {
        return Err(TwirpError::unimplemented(
            field,
            "{time}, {room_name} and the like are filled in file paths only",
        ));
    }
    Ok(dir.to_owned())
}

/// A segment or image output's block (`output.hls`, `output.images`), and its upload with the
/// output's field, if it has one.
type Dir<'a> = (Value, Option<(&'static str, Upload<'a>)>);

/// Where a segment or image output's upload copies its directory: `output.<store>.prefix`, the
/// directory's name as a folder of the file output's store. pagecast copies directories to the
/// recording's one store, so the upload must be the file output's (same store, bucket and
/// credentials; its object name aside).
fn copied_to(
    output: &Value,
    upload: Upload<'_>,
    at: &str,
    directory: &Value,
) -> Result<String, TwirpError> {
    let field = format!("{at}.{}", upload_field(upload));
    let (store, mut asked) = store_output(upload, "", at)?;
    let name = if store == "azure" { "blob" } else { "key" };
    let Some(mut file) = output.get(store).filter(|v| v.is_object()).cloned() else {
        return Err(TwirpError::unimplemented(
            &field,
            "pagecast uploads segments and images beside a file output uploaded to the same \
             store: give a file_outputs entry with this upload",
        ));
    };
    for block in [&mut asked, &mut file] {
        if let Some(block) = block.as_object_mut() {
            block.remove(name);
        }
    }
    if asked != file {
        return Err(TwirpError::unimplemented(
            &field,
            "not the file output's store: pagecast uploads segments and images to the file \
             output's bucket or container, with its credentials",
        ));
    }
    Ok(format!("{}/", directory.as_str().unwrap_or_default()))
}

/// `segment_outputs` (at most one): HLS into a directory (`output.hls`), and its upload (with
/// its field) if it has one.
fn segments<'a>(outputs: &[&'a lk::SegmentedFileOutput]) -> Result<Option<Dir<'a>>, TwirpError> {
    let Some(s) = outputs.first() else {
        return Ok(None);
    };
    if outputs.len() > 1 {
        return Err(TwirpError::unimplemented(
            "segment_outputs",
            "pagecast writes one HLS output per egress",
        ));
    }
    let f = |name: &str| format!("segment_outputs[0].{name}");
    let upload = upload_of!(s.output, segmented_file_output).map(|u| ("segment_outputs[0]", u));
    match lk::SegmentedFileProtocol::try_from(s.protocol) {
        Ok(lk::SegmentedFileProtocol::DefaultSegmentedFileProtocol)
        | Ok(lk::SegmentedFileProtocol::HlsProtocol) => {}
        _ => return Err(TwirpError::unimplemented(&f("protocol"), "HLS only")),
    }
    let naming = match lk::SegmentedFileSuffix::try_from(s.filename_suffix) {
        Ok(lk::SegmentedFileSuffix::Index) => None,
        Ok(lk::SegmentedFileSuffix::Timestamp) => Some("timestamp"),
        Err(_) => return Err(TwirpError::invalid(&f("filename_suffix"), "unknown")),
    };
    if !s.playlist_name.is_empty() && s.playlist_name != crate_playlist() {
        return Err(TwirpError::unimplemented(
            &f("playlist_name"),
            format!("pagecast names its playlist {}", crate_playlist()),
        ));
    }
    let mut hls = json!({ "directory": directory_of(&f("filename_prefix"), &s.filename_prefix)? });
    if let Some(naming) = naming {
        hls["naming"] = json!(naming);
    }
    if !s.live_playlist_name.is_empty() {
        // A sliding playlist beside the event one; its name is checked with the config.
        hls["live_playlist"] = json!({ "name": s.live_playlist_name });
    }
    match s.segment_duration {
        0 => {}
        1..=60 => hls["segment_duration"] = json!(format!("{}s", s.segment_duration)),
        _ => {
            return Err(TwirpError::invalid(
                &f("segment_duration"),
                "must be between 1 and 60 seconds",
            ))
        }
    }
    Ok(Some((hls, upload)))
}

fn crate_playlist() -> &'static str {
    pagecast_actors::encoder::HLS_PLAYLIST
}

/// `image_outputs` (at most one): JPEG snapshots into a directory (`output.images`), and its
/// upload (with its field) if it has one.
fn images(outputs: &[lk::ImageOutput]) -> Result<Option<Dir<'_>>, TwirpError> {
    let Some(i) = outputs.first() else {
        return Ok(None);
    };
    if outputs.len() > 1 {
        return Err(TwirpError::unimplemented(
            "image_outputs",
            "pagecast takes one series of snapshots per egress",
        ));
    }
    let f = |name: &str| format!("image_outputs[0].{name}");
    let upload = upload_of!(i.output, image_output).map(|u| ("image_outputs[0]", u));
    match lk::ImageCodec::try_from(i.image_codec) {
        Ok(lk::ImageCodec::IcDefault | lk::ImageCodec::IcJpeg) => {}
        _ => return Err(TwirpError::unimplemented(&f("image_codec"), "JPEG only")),
    }
    let naming = match lk::ImageFileSuffix::try_from(i.filename_suffix) {
        Ok(lk::ImageFileSuffix::ImageSuffixIndex) => None,
        Ok(lk::ImageFileSuffix::ImageSuffixTimestamp) => Some("timestamp"),
        _ => {
            return Err(TwirpError::unimplemented(
                &f("filename_suffix"),
                "pagecast never overwrites an image: index or timestamp",
            ))
        }
    };
    if !(1..=3600).contains(&i.capture_interval) {
        return Err(TwirpError::invalid(
            &f("capture_interval"),
            "is required, between 1 and 3600 seconds",
        ));
    }
    let mut images = json!({
        "directory": directory_of(&f("filename_prefix"), &i.filename_prefix)?,
        "every": format!("{}s", i.capture_interval),
    });
    if let Some(naming) = naming {
        images["naming"] = json!(naming);
    }
    for (name, v) in [("width", i.width), ("height", i.height)] {
        match v {
            0 => {}
            v if v > 0 => images[name] = json!(v),
            _ => return Err(TwirpError::invalid(&f(name), "is negative")),
        }
    }
    Ok(Some((images, upload)))
}

/// LiveKit's presets: size, frame rate, video bitrate (kbps).
fn preset(config: &mut Value, p: i32) -> Result<(), TwirpError> {
    use lk::EncodingOptionsPreset as P;
    let (w, h, fps, kbps) = match P::try_from(p) {
        Ok(P::H264720p30) => (1280, 720, 30, 3000),
        Ok(P::H264720p60) => (1280, 720, 60, 4500),
        Ok(P::H2641080p30) => (1920, 1080, 30, 4500),
        Ok(P::H2641080p60) => (1920, 1080, 60, 6000),
        Ok(P::PortraitH264720p30) => (720, 1280, 30, 3000),
        Ok(P::PortraitH264720p60) => (720, 1280, 60, 4500),
        Ok(P::PortraitH2641080p30) => (1080, 1920, 30, 4500),
        Ok(P::PortraitH2641080p60) => (1080, 1920, 60, 6000),
        _ => {
            return Err(TwirpError::unimplemented(
                "preset",
                "pagecast encodes; only the H264 presets are supported",
            ))
        }
    };
    config["input"]["width"] = json!(w);
    config["input"]["height"] = json!(h);
    config["input"]["framerate"] = json!(fps);
    config["output"]["video_bitrate"] = json!(format!("{kbps}k"));
    Ok(())
}

/// `advanced`: what is 0 keeps pagecast's default.
fn advanced(config: &mut Value, a: &lk::EncodingOptions) -> Result<(), TwirpError> {
    let positive = |field: &str, v: i32| -> Result<Option<i32>, TwirpError> {
        match v {
            0 => Ok(None),
            v if v > 0 => Ok(Some(v)),
            _ => Err(TwirpError::invalid(
                &format!("advanced.{field}"),
                "is negative",
            )),
        }
    };
    if let Some(w) = positive("width", a.width)? {
        config["input"]["width"] = json!(w);
    }
    if let Some(h) = positive("height", a.height)? {
        config["input"]["height"] = json!(h);
    }
    if let Some(d) = positive("depth", a.depth)? {
        config["input"]["depth"] = json!(d);
    }
    if let Some(f) = positive("framerate", a.framerate)? {
        config["input"]["framerate"] = json!(f);
    }
    if let Some(k) = positive("video_bitrate", a.video_bitrate)? {
        config["output"]["video_bitrate"] = json!(format!("{k}k"));
    }
    if let Some(k) = positive("audio_bitrate", a.audio_bitrate)? {
        config["output"]["audio_bitrate"] = json!(format!("{k}k"));
    }
    if let Some(hz) = positive("audio_frequency", a.audio_frequency)? {
        config["output"]["audio_frequency"] = json!(hz);
    }
    use lk::{AudioCodec, VideoCodec};
    match VideoCodec::try_from(a.video_codec) {
        Ok(VideoCodec::DefaultVc | VideoCodec::H264Main | VideoCodec::H264High) => {}
        _ => {
            return Err(TwirpError::unimplemented(
                "advanced.video_codec",
                "pagecast encodes H.264 (main or high) only",
            ))
        }
    }
    match AudioCodec::try_from(a.audio_codec) {
        Ok(AudioCodec::DefaultAc | AudioCodec::Aac) => {}
        _ => {
            return Err(TwirpError::unimplemented(
                "advanced.audio_codec",
                "pagecast encodes AAC only",
            ))
        }
    }
    // pagecast's keyframes come every 2 s (its fragments are cut between them).
    if a.key_frame_interval != 0.0 && a.key_frame_interval != 2.0 {
        return Err(TwirpError::unimplemented(
            "advanced.key_frame_interval",
            "pagecast puts a keyframe every 2 s",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(path: &str) -> lk::EncodedFileOutput {
        lk::EncodedFileOutput {
            filepath: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_web_request_becomes_a_recorder_config_with_no_secret_shown() {
        let req = lk::WebEgressRequest {
            url: "https://u:PAGEPASS@example.com/page?token=PAGETOKEN#t=FRAGTOKEN".into(),
            file_outputs: vec![lk::EncodedFileOutput {
                filepath: "rec/{time}".into(),
                output: Some(lk::encoded_file_output::Output::S3(lk::S3Upload {
                    access_key: "AKIA".into(),
                    secret: "S3CR3T".into(),
                    bucket: "b".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            stream_outputs: vec![lk::StreamOutput {
                protocol: lk::StreamProtocol::Rtmp as i32,
                urls: vec!["rtmp://live.example.com/app/STREAMKEY".into()],
            }],
            options: Some(lk::web_egress_request::Options::Preset(
                lk::EncodingOptionsPreset::H264720p30 as i32,
            )),
            ..Default::default()
        };
        let job = web(&req).unwrap();
        assert_eq!(job.config["input"]["width"], 1280);
        assert_eq!(job.config["output"]["video_bitrate"], "3000k");
        assert_eq!(job.config["output"]["s3"]["key"], "rec/{time}.mp4");
        assert_eq!(job.config["output"]["s3"]["secret"], "S3CR3T");
        assert_eq!(
            job.config["output"]["rtmp"][0],
            "rtmp://live.example.com/app/STREAMKEY"
        );
        crate::config::parse(&job.config.to_string()).expect("a config pagecast takes");
        let shown = format!("{:?}", job.shown);
        for secret in [
            "S3CR3T",
            "AKIA",
            "STREAMKEY",
            "PAGEPASS",
            "PAGETOKEN",
            "FRAGTOKEN",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(job.streams, vec!["rtmp://live.example.com/app/****"]);
        // The recorder gets the page's address whole.
        assert_eq!(
            job.config["input"]["url"],
            "https://u:PAGEPASS@example.com/page?token=PAGETOKEN#t=FRAGTOKEN"
        );
    }

    #[test]
    fn a_file_output_without_a_name_is_named_by_its_time_and_the_egress_id() {
        for (given, named) in [
            ("", "{time}-{egress_id}.mp4"),
            ("recs/", "recs/{time}-{egress_id}.mp4"),
            ("recs/{time}", "recs/{time}.mp4"),
        ] {
            let req = lk::WebEgressRequest {
                url: "https://example.com/page".into(),
                file_outputs: vec![file(given)],
                ..Default::default()
            };
            assert_eq!(
                web(&req).unwrap().config["output"]["file"],
                named,
                "{given:?}"
            );
        }
    }

    #[test]
    fn an_srt_stream_output_becomes_output_srt_with_its_passphrase_concealed() {
        let srt = "srt://live.example.com:9000?passphrase=PASSPHRASE42&streamid=KEY42";
        let request = |protocol: lk::StreamProtocol, urls: Vec<&str>| lk::WebEgressRequest {
            url: "https://example.com/page".into(),
            stream_outputs: vec![lk::StreamOutput {
                protocol: protocol as i32,
                urls: urls.into_iter().map(str::to_owned).collect(),
            }],
            ..Default::default()
        };
        for protocol in [lk::StreamProtocol::Srt, lk::StreamProtocol::DefaultProtocol] {
            let job = web(&request(protocol, vec![srt])).unwrap();
            assert_eq!(job.config["output"]["srt"][0], srt);
            assert!(job.config["output"].get("rtmp").is_none());
            let config = crate::config::parse(&job.config.to_string()).expect("a config");
            assert_eq!(config.output.srt.len(), 1);
            assert_eq!(job.streams, vec!["srt://live.example.com:9000?****"]);
            let shown = format!("{:?}", job.shown);
            for secret in ["PASSPHRASE42", "KEY42"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
        }
        // Protocol and URLs must agree.
        let e = web(&request(
            lk::StreamProtocol::Srt,
            vec![srt, "rtmp://live.example.com/app/KEY"],
        ))
        .unwrap_err();
        assert!(e.msg.starts_with("stream_outputs[0].urls[1]:"), "{}", e.msg);
        let e = web(&request(lk::StreamProtocol::Rtmp, vec![srt])).unwrap_err();
        assert!(e.msg.starts_with("stream_outputs[0].urls[0]:"), "{}", e.msg);
        assert!(!e.msg.contains("PASSPHRASE42"), "{}", e.msg);
    }

    /// The server and key pair the room tests join with.
    const ROOM: Room<'static> = Room {
        ws_url: "ws://10.0.0.1:7880",
        api_key: "APIk",
        api_secret: "SECRETofTheKey",
    };

    #[test]
    fn a_room_composite_joins_the_room_with_the_service_s_key_and_a_pagecast_layout() {
        let room = ROOM;
        let req = lk::RoomCompositeEgressRequest {
            room_name: "standup".into(),
            layout: "grid".into(),
            file_outputs: vec![file("{room_name}-{time}.mp4")],
            ..Default::default()
        };
        let job = room_composite(&req, &room).unwrap();
        assert_eq!(job.config["input"]["template"]["layout"], "grid-dark");
        assert_eq!(job.config["input"]["template"]["room_name"], "standup");
        assert_eq!(job.config["output"]["file"], "{room_name}-{time}.mp4");
        crate::config::parse(&job.config.to_string()).expect("a config pagecast takes");
        assert!(!format!("{:?}", job.shown).contains("SECRETofTheKey"));
        let mut r = req.clone();
        r.layout = "single-speaker".into();
        assert_eq!(
            room_composite(&r, &room).unwrap_err().msg.split(':').next(),
            Some("layout")
        );
    }

    #[test]
    fn a_participant_egress_records_that_participant_through_the_layout_page() {
        let room = ROOM;
        let req = lk::ParticipantEgressRequest {
            room_name: "standup".into(),
            identity: "ana".into(),
            screen_share: true,
            file_outputs: vec![file("ana.mp4")],
            options: Some(lk::participant_egress_request::Options::Preset(
                lk::EncodingOptionsPreset::H264720p30 as i32,
            )),
            ..Default::default()
        };
        let job = participant(&req, &room).unwrap();
        let template = &job.config["input"]["template"];
        assert_eq!(template["room_name"], "standup");
        assert_eq!(template["ws_url"], "ws://10.0.0.1:7880");
        assert_eq!(template["participant"], "ana");
        assert_eq!(template["screen_share"], true);
        assert_eq!(job.config["api_key"], "APIk");
        assert_eq!(job.config["output"]["file"], "ana.mp4");
        assert_eq!(job.config["input"]["width"], 1280);
        let config = crate::config::parse(&job.config.to_string()).expect("a config");
        let crate::config::Source::Template(t) = &config.input.source else {
            panic!("not a room: {:?}", config.input.source);
        };
        assert_eq!(
            t.focus,
            Some(crate::config::Focus::Participant {
                identity: "ana".into(),
                screen_share: true
            })
        );
        let lk::egress_info::Request::Participant(shown) = &job.shown else {
            panic!("{:?}", job.shown);
        };
        assert_eq!(shown.identity, "ana");
        assert!(!format!("{:?}", job.shown).contains("SECRETofTheKey"));
        let record = lk::EgressInfo {
            request: Some(job.shown.clone()),
            ..Default::default()
        };
        assert!(has_file(&record));
        for (field, change) in [
            (
                "room_name",
                &(|r: &mut lk::ParticipantEgressRequest| r.room_name.clear()) as &dyn Fn(&mut _),
            ),
            ("identity", &|r: &mut lk::ParticipantEgressRequest| {
                r.identity.clear()
            }),
        ] {
            let mut r = req.clone();
            change(&mut r);
            let e = participant(&r, &room).unwrap_err();
            assert_eq!(e.msg.split(':').next(), Some(field), "{}", e.msg);
        }
    }

    #[test]
    #[allow(deprecated)]
    fn a_track_composite_records_its_two_tracks_through_the_layout_page() {
        let room = ROOM;
        let req = lk::TrackCompositeEgressRequest {
            room_name: "standup".into(),
            audio_track_id: "TR_audio".into(),
            video_track_id: "TR_video".into(),
            output: Some(lk::track_composite_egress_request::Output::File(file(
                "tracks.mp4",
            ))),
            ..Default::default()
        };
        let job = track_composite(&req, &room).unwrap();
        let template = &job.config["input"]["template"];
        assert_eq!(template["room_name"], "standup");
        assert_eq!(template["audio_track"], "TR_audio");
        assert_eq!(template["video_track"], "TR_video");
        assert_eq!(job.config["output"]["file"], "tracks.mp4");
        let config = crate::config::parse(&job.config.to_string()).expect("a config");
        let crate::config::Source::Template(t) = &config.input.source else {
            panic!("not a room: {:?}", config.input.source);
        };
        assert_eq!(
            t.focus,
            Some(crate::config::Focus::Tracks {
                audio: Some("TR_audio".into()),
                video: Some("TR_video".into())
            })
        );
        assert!(!format!("{:?}", job.shown).contains("SECRETofTheKey"));
        let record = lk::EgressInfo {
            request: Some(job.shown.clone()),
            ..Default::default()
        };
        assert!(has_file(&record));
        assert_eq!(config.output.tracks, crate::config::Tracks::Both);
        // One track: the recording holds it alone. Neither track is invalid.
        let tracks = |r: &lk::TrackCompositeEgressRequest| {
            let job = track_composite(r, &room).unwrap();
            crate::config::parse(&job.config.to_string())
                .expect("a config")
                .output
                .tracks
        };
        let mut r = req.clone();
        r.video_track_id.clear();
        assert_eq!(tracks(&r), crate::config::Tracks::AudioOnly);
        let job = track_composite(&r, &room).unwrap();
        assert!(job.config["input"]["template"].get("video_track").is_none());
        let mut picture = req.clone();
        picture.audio_track_id.clear();
        assert_eq!(tracks(&picture), crate::config::Tracks::VideoOnly);
        r.audio_track_id.clear();
        let e = track_composite(&r, &room).unwrap_err();
        assert_eq!(e.msg.split(':').next(), Some("video_track_id"), "{}", e.msg);
    }

    #[test]
    fn segment_and_image_outputs_become_hls_and_snapshots_in_directories() {
        let segments = lk::SegmentedFileOutput {
            filename_prefix: "live/hls/".into(),
            playlist_name: "index.m3u8".into(),
            segment_duration: 4,
            ..Default::default()
        };
        let images = lk::ImageOutput {
            capture_interval: 5,
            width: 320,
            filename_prefix: "shots".into(),
            image_codec: lk::ImageCodec::IcJpeg as i32,
            ..Default::default()
        };
        let base = lk::WebEgressRequest {
            url: "https://example.com".into(),
            segment_outputs: vec![segments.clone()],
            image_outputs: vec![images.clone()],
            ..Default::default()
        };
        let job = web(&base).unwrap();
        assert_eq!(
            job.config["output"],
            json!({
                "hls": { "directory": "live/hls", "segment_duration": "4s" },
                "images": { "directory": "shots", "every": "5s", "width": 320 },
            })
        );
        let config =
            crate::config::parse(&job.config.to_string()).expect("a config pagecast takes");
        assert_eq!(config.output.hls.unwrap().segment, Duration::from_secs(4));
        assert_eq!(config.output.images.unwrap().every, Duration::from_secs(5));

        let refused = |req: lk::WebEgressRequest| {
            let e = web(&req).unwrap_err();
            (e.code, e.msg.split(':').next().unwrap().to_owned())
        };
        use super::super::twirp::Code::*;
        let with_segments = |f: &dyn Fn(&mut lk::SegmentedFileOutput)| {
            let mut r = base.clone();
            f(&mut r.segment_outputs[0]);
            refused(r)
        };
        let with_images = |f: &dyn Fn(&mut lk::ImageOutput)| {
            let mut r = base.clone();
            f(&mut r.image_outputs[0]);
            refused(r)
        };
        assert_eq!(
            with_segments(&|s| s.playlist_name = "p.m3u8".into()),
            (Unimplemented, "segment_outputs[0].playlist_name".into())
        );
        // A live playlist and timestamp names are pagecast's own options.
        let mut r = base.clone();
        r.segment_outputs[0].live_playlist_name = "live.m3u8".into();
        r.segment_outputs[0].filename_suffix = lk::SegmentedFileSuffix::Timestamp as i32;
        r.image_outputs[0].filename_suffix = lk::ImageFileSuffix::ImageSuffixTimestamp as i32;
        let job = web(&r).unwrap();
        assert_eq!(
            (
                &job.config["output"]["hls"]["live_playlist"],
                &job.config["output"]["hls"]["naming"],
                &job.config["output"]["images"]["naming"]
            ),
            (
                &json!({ "name": "live.m3u8" }),
                &json!("timestamp"),
                &json!("timestamp")
            )
        );
        let config =
            crate::config::parse(&job.config.to_string()).expect("a config pagecast takes");
        assert_eq!(config.output.hls.unwrap().live.unwrap().name, "live.m3u8");
        // A bad name is refused by the config check the API runs on every job (invalid_argument).
        let mut r = base.clone();
        r.segment_outputs[0].live_playlist_name = "../live.m3u8".into();
        let e = crate::config::parse(&web(&r).unwrap().config.to_string()).unwrap_err();
        assert!(e.to_string().contains("output.hls.live_playlist"), "{e}");
        assert_eq!(
            with_images(
                &|i| i.filename_suffix = lk::ImageFileSuffix::ImageSuffixNoneOverwrite as i32
            ),
            (Unimplemented, "image_outputs[0].filename_suffix".into())
        );
        assert_eq!(
            with_segments(&|s| s.segment_duration = 90),
            (
                InvalidArgument,
                "segment_outputs[0].segment_duration".into()
            )
        );
        // An upload needs a file output uploaded to the same store (see the test below).
        assert_eq!(
            with_segments(&|s| s.output =
                Some(lk::segmented_file_output::Output::S3(lk::S3Upload {
                    bucket: "b".into(),
                    ..Default::default()
                }))),
            (Unimplemented, "segment_outputs[0].s3".into())
        );
        assert_eq!(
            with_segments(&|s| s.filename_prefix = "{room_name}/seg".into()),
            (Unimplemented, "segment_outputs[0].filename_prefix".into())
        );
        assert_eq!(
            with_images(&|i| i.image_codec = 7),
            (Unimplemented, "image_outputs[0].image_codec".into())
        );
        assert_eq!(
            with_images(&|i| i.capture_interval = 0),
            (InvalidArgument, "image_outputs[0].capture_interval".into())
        );
        assert_eq!(
            with_images(&|i| i.height = -1),
            (InvalidArgument, "image_outputs[0].height".into())
        );
        // Images alone are no recording.
        let mut r = base.clone();
        r.segment_outputs.clear();
        assert_eq!(refused(r), (InvalidArgument, "file_outputs".into()));
        let mut r = base;
        r.segment_outputs.push(segments);
        assert_eq!(refused(r), (Unimplemented, "segment_outputs".into()));
    }

    #[test]
    fn update_layout_takes_a_known_layout_of_a_room_composite_only() {
        let room = ROOM;
        let req = lk::RoomCompositeEgressRequest {
            room_name: "standup".into(),
            file_outputs: vec![file("a.mp4")],
            ..Default::default()
        };
        let job = room_composite(&req, &room).unwrap();
        assert_eq!(job.config["input"]["template"]["layout"], "speaker-dark");
        let mut record = lk::EgressInfo {
            request: Some(job.shown),
            ..Default::default()
        };
        assert_eq!(layout_change(&mut record, "grid"), Ok("grid-dark"));
        let Some(lk::egress_info::Request::RoomComposite(shown)) = &record.request else {
            panic!()
        };
        assert_eq!(shown.layout, "grid");
        let field = |e: TwirpError| (e.code, e.msg.split(':').next().unwrap().to_owned());
        use super::super::twirp::Code::InvalidArgument;
        for unknown in ["single-speaker", ""] {
            let e = layout_change(&mut record, unknown).unwrap_err();
            assert_eq!(field(e), (InvalidArgument, "layout".into()));
        }
        let mut web_record = lk::EgressInfo {
            request: Some(lk::egress_info::Request::Web(Default::default())),
            ..Default::default()
        };
        let e = layout_change(&mut web_record, "grid").unwrap_err();
        assert_eq!(field(e), (InvalidArgument, "egress_id".into()));
    }

    #[test]
    fn update_stream_adds_masked_urls_ends_removed_ones_and_keeps_an_output() {
        let req = lk::WebEgressRequest {
            url: "https://example.com".into(),
            stream_outputs: vec![lk::StreamOutput {
                protocol: lk::StreamProtocol::Rtmp as i32,
                urls: vec!["rtmp://a.example/live/KEY1".into()],
            }],
            ..Default::default()
        };
        let job = web(&req).unwrap();
        let mut raw = vec!["rtmp://a.example/live/KEY1".to_owned()];
        let mut record = lk::EgressInfo {
            stream_results: job
                .streams
                .iter()
                .map(|u| lk::StreamInfo {
                    url: u.clone(),
                    ..Default::default()
                })
                .collect(),
            request: Some(job.shown),
            ..Default::default()
        };
        let update = |add: &[&str], remove: &[&str]| lk::UpdateStreamRequest {
            egress_id: "EG_x".into(),
            add_output_urls: add.iter().map(|s| s.to_string()).collect(),
            remove_output_urls: remove.iter().map(|s| s.to_string()).collect(),
        };
        let field = |e: TwirpError| (e.code, e.msg.split(':').next().unwrap().to_owned());
        use super::super::twirp::Code::InvalidArgument;
        // A stream-only egress keeps an output.
        let e = stream_change(&record, &raw, &update(&[], &["rtmp://a.example/live/KEY1"]))
            .unwrap_err();
        assert_eq!(field(e), (InvalidArgument, "remove_output_urls".into()));
        let e = stream_change(
            &record,
            &raw,
            &update(&["rtmp://b.example/x\ndiscard"], &[]),
        )
        .unwrap_err();
        assert_eq!(field(e), (InvalidArgument, "add_output_urls[0]".into()));
        let e = stream_change(&record, &raw, &update(&["http://b.example/x"], &[])).unwrap_err();
        assert_eq!(field(e), (InvalidArgument, "add_output_urls[0]".into()));
        // Matched exactly: another key on the same server masks alike, and is not this one.
        let e = stream_change(&record, &raw, &update(&[], &["rtmp://a.example/live/KEY9"]))
            .unwrap_err();
        assert_eq!(field(e), (InvalidArgument, "remove_output_urls[0]".into()));
        let e = stream_change(&record, &raw, &update(&["rtmp://a.example/live/KEY1"], &[]))
            .unwrap_err();
        assert_eq!(field(e), (InvalidArgument, "add_output_urls[0]".into()));
        // Add one, then remove the first: the first ends, the new one is live, shown masked.
        let add =
            stream_change(&record, &raw, &update(&["rtmp://a.example/live/KEY2"], &[])).unwrap();
        assert_eq!(add.streaming_after, 2);
        add.apply(&mut record, &mut raw, 100, 5);
        let remove =
            stream_change(&record, &raw, &update(&[], &["rtmp://a.example/live/KEY1"])).unwrap();
        remove.apply(&mut record, &mut raw, 200, 5);
        let shown: Vec<_> = record
            .stream_results
            .iter()
            .map(|s| (s.url.as_str(), s.started_at, s.ended_at, s.duration))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("rtmp://a.example/live/****", 5, 200, 195),
                ("rtmp://a.example/live/****", 100, 0, 0),
            ]
        );
        assert_eq!(
            raw,
            ["rtmp://a.example/live/KEY1", "rtmp://a.example/live/KEY2"]
        );
        // The first is gone: removing it again is refused, the second can go (there is no
        // file: it is the last output, so not that either).
        let e = stream_change(&record, &raw, &update(&[], &["rtmp://a.example/live/KEY1"]))
            .unwrap_err();
        assert_eq!(field(e), (InvalidArgument, "remove_output_urls[0]".into()));
        let e = stream_change(&record, &raw, &update(&[], &["rtmp://a.example/live/KEY2"]))
            .unwrap_err();
        assert_eq!(field(e), (InvalidArgument, "remove_output_urls".into()));
        assert!(!format!("{record:?}").contains("KEY"));
        // An egress started without streams gets none.
        record.stream_results.clear();
        let e =
            stream_change(&record, &raw, &update(&["rtmp://b.example/live/K"], &[])).unwrap_err();
        assert_eq!(field(e), (InvalidArgument, "egress_id".into()));
    }

    #[test]
    fn audio_only_and_video_only_keep_the_sound_or_the_picture_alone() {
        let base = lk::WebEgressRequest {
            url: "https://example.com".into(),
            file_outputs: vec![file("a.mp4")],
            ..Default::default()
        };
        let tracks = |r: &lk::WebEgressRequest| {
            let job = web(r).unwrap();
            crate::config::parse(&job.config.to_string())
                .expect("a config")
                .output
                .tracks
        };
        use crate::config::Tracks;
        assert_eq!(tracks(&base), Tracks::Both);
        let mut sound = base.clone();
        sound.audio_only = true;
        assert_eq!(tracks(&sound), Tracks::AudioOnly);
        let mut picture = base.clone();
        picture.video_only = true;
        assert_eq!(tracks(&picture), Tracks::VideoOnly);
        // Not both; the sound alone is neither streamed live nor snapshotted.
        let refused = |r: lk::WebEgressRequest| {
            let e = web(&r).unwrap_err();
            (e.code, e.msg.split(':').next().unwrap().to_owned())
        };
        use super::super::twirp::Code::InvalidArgument;
        let mut both = sound.clone();
        both.video_only = true;
        assert_eq!(refused(both), (InvalidArgument, "video_only".into()));
        let mut live = sound.clone();
        live.stream_outputs = vec![lk::StreamOutput {
            urls: vec!["rtmp://a.example/live/KEY".into()],
            ..Default::default()
        }];
        assert_eq!(refused(live), (InvalidArgument, "stream_outputs".into()));
        let mut shots = sound.clone();
        shots.image_outputs = vec![lk::ImageOutput {
            capture_interval: 5,
            filename_prefix: "shots/".into(),
            ..Default::default()
        }];
        assert_eq!(refused(shots), (InvalidArgument, "image_outputs".into()));
        // A room's sound alone.
        let room = ROOM;
        let req = lk::RoomCompositeEgressRequest {
            room_name: "standup".into(),
            audio_only: true,
            file_outputs: vec![file("room.mp4")],
            ..Default::default()
        };
        let job = room_composite(&req, &room).unwrap();
        assert_eq!(job.config["output"]["audio_only"], true);
    }

    #[test]
    fn what_pagecast_cannot_do_is_refused_naming_the_field() {
        let base = lk::WebEgressRequest {
            url: "https://example.com".into(),
            file_outputs: vec![file("a.mp4")],
            ..Default::default()
        };
        let refused = |req: lk::WebEgressRequest| {
            let e = web(&req).unwrap_err();
            (e.code, e.msg.split(':').next().unwrap().to_owned())
        };
        use super::super::twirp::Code::*;
        let mut r = base.clone();
        r.file_outputs[0].file_type = lk::EncodedFileType::Ogg as i32;
        assert_eq!(
            refused(r),
            (Unimplemented, "file_outputs[0].file_type".into())
        );
        let mut r = base.clone();
        r.file_outputs.clear();
        assert_eq!(refused(r), (InvalidArgument, "file_outputs".into()));
        let mut r = base.clone();
        r.url.clear();
        assert_eq!(refused(r), (InvalidArgument, "url".into()));
        let mut r = base.clone();
        r.options = Some(lk::web_egress_request::Options::Advanced(
            lk::EncodingOptions {
                video_codec: lk::VideoCodec::Vp8 as i32,
                ..Default::default()
            },
        ));
        assert_eq!(refused(r), (Unimplemented, "advanced.video_codec".into()));
        let mut r = base.clone();
        r.segment_outputs.push(Default::default());
        assert_eq!(
            refused(r),
            (InvalidArgument, "segment_outputs[0].filename_prefix".into())
        );
        // A webhook that is no http(s) URL, named by its index.
        let mut r = base.clone();
        r.webhooks.push(lk::WebhookConfig {
            url: "https://hooks.example.com/a".into(),
            signing_key: String::new(),
            filter_params: None,
        });
        r.webhooks.push(lk::WebhookConfig {
            url: "ftp://hooks.example.com/b".into(),
            signing_key: String::new(),
            filter_params: None,
        });
        assert_eq!(refused(r), (InvalidArgument, "webhooks[1].url".into()));
    }

    /// A request's own webhooks are kept as given for the sender, and shown masked (their URLs
    /// may carry a token).
    #[test]
    fn a_request_s_webhooks_are_kept_for_the_sender_and_shown_masked() {
        let req = lk::WebEgressRequest {
            url: "https://example.com/page".into(),
            file_outputs: vec![file("a.mp4")],
            webhooks: vec![lk::WebhookConfig {
                url: "https://hooks.example.com/egress?token=HOOKTOKEN".into(),
                signing_key: "APIk".into(),
                filter_params: Some(lk::FilterParams {
                    include_events: vec![],
                    exclude_events: vec!["egress_updated".into()],
                }),
            }],
            ..Default::default()
        };
        let job = web(&req).unwrap();
        assert_eq!(
            job.webhooks,
            vec![RequestHook {
                url: "https://hooks.example.com/egress?token=HOOKTOKEN".into(),
                key: "APIk".into(),
                include: vec![],
                exclude: vec!["egress_updated".into()],
            }]
        );
        assert!(job.webhooks[0].wants("egress_ended"));
        assert!(!job.webhooks[0].wants("egress_updated"));
        let lk::egress_info::Request::Web(shown) = &job.shown else {
            panic!("{:?}", job.shown);
        };
        assert_eq!(shown.webhooks[0].signing_key, "APIk");
        assert!(!format!("{:?}", job.shown).contains("HOOKTOKEN"));
        assert!(!job.config.to_string().contains("hooks.example.com"));
    }

    #[test]
    fn gcp_and_azure_uploads_become_gcs_and_azure_outputs_with_no_credential_shown() {
        use lk::encoded_file_output::Output;
        let key =
            r#"{"type":"service_account","client_email":"r@p.iam","private_key":"GCPKEYSECRET"}"#;
        let request = |output: Output| lk::WebEgressRequest {
            url: "https://example.com".into(),
            file_outputs: vec![lk::EncodedFileOutput {
                filepath: "/rec/{time}".into(),
                output: Some(output),
                ..Default::default()
            }],
            ..Default::default()
        };
        let job = web(&request(Output::Gcp(lk::GcpUpload {
            credentials: key.into(),
            bucket: "recs".into(),
            proxy: None,
        })))
        .unwrap();
        let gcs = &job.config["output"]["gcs"];
        assert_eq!(
            (gcs["bucket"].as_str(), gcs["key"].as_str()),
            (Some("recs"), Some("rec/{time}.mp4"))
        );
        assert_eq!(gcs["credentials"], key);
        let config =
            crate::config::parse(&job.config.to_string()).expect("a config pagecast takes");
        assert!(matches!(
            config.output.gcs.unwrap().auth,
            crate::config::GcsAuth::Key(_)
        ));
        assert!(!format!("{:?}", job.shown).contains("GCPKEYSECRET"));

        let job = web(&request(Output::Azure(lk::AzureBlobUpload {
            account_name: "acct".into(),
            account_key: "AZUREKEYSECRET".into(),
            container_name: "recs".into(),
        })))
        .unwrap();
        let azure = &job.config["output"]["azure"];
        assert_eq!(azure["blob"], "rec/{time}.mp4");
        assert_eq!(
            (azure["account"].as_str(), azure["container"].as_str()),
            (Some("acct"), Some("recs"))
        );
        assert_eq!(azure["key"], "AZUREKEYSECRET");
        crate::config::parse(&job.config.to_string()).expect("a config pagecast takes");
        assert!(!format!("{:?}", job.shown).contains("AZUREKEYSECRET"));

        let e = web(&request(Output::Azure(lk::AzureBlobUpload {
            account_name: "acct".into(),
            ..Default::default()
        })))
        .unwrap_err();
        assert!(
            e.msg.starts_with("file_outputs[0].azure.container_name:"),
            "{}",
            e.msg
        );
        let e = web(&request(Output::Gcp(lk::GcpUpload::default()))).unwrap_err();
        assert!(
            e.msg.starts_with("file_outputs[0].gcp.bucket:"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn segment_and_image_uploads_copy_their_directories_to_the_file_output_s_store() {
        use lk::{
            encoded_file_output as file, image_output as image, segmented_file_output as seg,
        };
        let s3 = lk::S3Upload {
            access_key: "AKIA".into(),
            secret: "S3CR3T".into(),
            bucket: "recs".into(),
            endpoint: "http://127.0.0.1:9000".into(),
            ..Default::default()
        };
        let request =
            |f: Option<file::Output>, s: Option<seg::Output>, i: Option<image::Output>| {
                lk::WebEgressRequest {
                    url: "https://example.com".into(),
                    file_outputs: vec![lk::EncodedFileOutput {
                        filepath: "rec/a.mp4".into(),
                        output: f,
                        ..Default::default()
                    }],
                    segment_outputs: vec![lk::SegmentedFileOutput {
                        filename_prefix: "rec/hls/".into(),
                        output: s,
                        ..Default::default()
                    }],
                    image_outputs: vec![lk::ImageOutput {
                        capture_interval: 2,
                        filename_prefix: "rec/shots".into(),
                        output: i,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            };
        let job = web(&request(
            Some(file::Output::S3(s3.clone())),
            Some(seg::Output::S3(s3.clone())),
            Some(image::Output::S3(s3.clone())),
        ))
        .unwrap();
        let output = &job.config["output"];
        assert_eq!(output["s3"]["key"], "rec/a.mp4");
        assert_eq!(
            (&output["hls"]["prefix"], &output["images"]["prefix"]),
            (&json!("rec/hls/"), &json!("rec/shots/"))
        );
        let config =
            crate::config::parse(&job.config.to_string()).expect("a config pagecast takes");
        assert_eq!(
            config.output.hls.unwrap().prefix.as_deref(),
            Some("rec/hls/")
        );
        let shown = format!("{:?}", job.shown);
        assert!(
            !shown.contains("S3CR3T") && !shown.contains("AKIA"),
            "{shown}"
        );

        // GCS and Azure alike.
        let gcp = lk::GcpUpload {
            credentials: r#"{"type":"service_account","client_email":"r@p.iam","private_key":"GCPKEYSECRET"}"#.into(),
            bucket: "recs".into(),
            proxy: None,
        };
        let job = web(&request(
            Some(file::Output::Gcp(gcp.clone())),
            Some(seg::Output::Gcp(gcp.clone())),
            None,
        ))
        .unwrap();
        assert_eq!(job.config["output"]["hls"]["prefix"], "rec/hls/");
        crate::config::parse(&job.config.to_string()).expect("a config pagecast takes");
        assert!(!format!("{:?}", job.shown).contains("GCPKEYSECRET"));
        let azure = lk::AzureBlobUpload {
            account_name: "acct".into(),
            account_key: "AZUREKEYSECRET".into(),
            container_name: "recs".into(),
        };
        let job = web(&request(
            Some(file::Output::Azure(azure.clone())),
            None,
            Some(image::Output::Azure(azure.clone())),
        ))
        .unwrap();
        assert_eq!(job.config["output"]["images"]["prefix"], "rec/shots/");
        crate::config::parse(&job.config.to_string()).expect("a config pagecast takes");
        assert!(!format!("{:?}", job.shown).contains("AZUREKEYSECRET"));

        // Refused, naming the field: another bucket, other credentials, another kind of store,
        // no file output uploaded, an unsupported store.
        use super::super::twirp::Code::*;
        let refused = |r: lk::WebEgressRequest| {
            let e = web(&r).unwrap_err();
            (e.code, e.msg.split(':').next().unwrap().to_owned())
        };
        let other_bucket = lk::S3Upload {
            bucket: "other".into(),
            ..s3.clone()
        };
        let other_secret = lk::S3Upload {
            secret: "ANOTHER".into(),
            ..s3.clone()
        };
        for (r, field) in [
            (
                request(
                    Some(file::Output::S3(s3.clone())),
                    Some(seg::Output::S3(other_bucket)),
                    None,
                ),
                "segment_outputs[0].s3",
            ),
            (
                request(
                    Some(file::Output::S3(s3.clone())),
                    None,
                    Some(image::Output::S3(other_secret)),
                ),
                "image_outputs[0].s3",
            ),
            (
                request(
                    Some(file::Output::S3(s3.clone())),
                    Some(seg::Output::Gcp(gcp.clone())),
                    None,
                ),
                "segment_outputs[0].gcp",
            ),
            (
                request(None, Some(seg::Output::S3(s3.clone())), None),
                "segment_outputs[0].s3",
            ),
            (
                request(
                    Some(file::Output::S3(s3.clone())),
                    Some(seg::Output::AliOss(Default::default())),
                    None,
                ),
                "segment_outputs[0].aliOSS",
            ),
        ] {
            assert_eq!(refused(r), (Unimplemented, field.to_owned()));
        }
        // The segments' own fields are checked as a file's.
        let r = request(
            Some(file::Output::S3(s3.clone())),
            Some(seg::Output::S3(lk::S3Upload::default())),
            None,
        );
        assert_eq!(
            refused(r),
            (InvalidArgument, "segment_outputs[0].s3.bucket".into())
        );
    }
}
