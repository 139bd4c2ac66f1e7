//! From a LiveKit egress request to a pagecast job: the recorder config (JSON, as `pagecast
//! record` takes it) and the request as `EgressInfo` shows it (secrets dropped or masked).
//! Whatever pagecast cannot honour is refused here, naming the field: `unimplemented` for a
//! feature it does not have, `invalid_argument` for a value that is wrong.

use livekit_protocol as lk;
use pagecast_actors::secret::mask_stream_url;
use serde_json::{json, Value};

use super::twirp::TwirpError;

/// A request made into a job.
#[derive(Debug)]
pub struct Job {
    /// The recorder config.
    pub config: Value,
    /// The request as the egress's info carries it: no credentials, stream keys masked.
    pub shown: lk::egress_info::Request,
    /// The stream URLs, masked.
    pub streams: Vec<String>,
}

/// `StartWebEgress`.
#[allow(deprecated)]
pub fn web(req: &lk::WebEgressRequest) -> Result<Job, TwirpError> {
    use lk::web_egress_request::{Options, Output};
    if req.url.is_empty() {
        return Err(TwirpError::invalid("url", "is required"));
    }
    refuse_av(req.audio_only, req.video_only)?;
    refuse_unsupported(
        !req.segment_outputs.is_empty() || matches!(req.output, Some(Output::Segments(_))),
        !req.image_outputs.is_empty(),
        !req.webhooks.is_empty(),
    )?;
    let mut files: Vec<&lk::EncodedFileOutput> = req.file_outputs.iter().collect();
    let mut streams: Vec<&lk::StreamOutput> = req.stream_outputs.iter().collect();
    #[allow(deprecated)]
    match &req.output {
        Some(Output::File(f)) => files.push(f),
        Some(Output::Stream(s)) => streams.push(s),
        _ => {}
    }
    let mut config = json!({
        "input": { "url": req.url, "await_start_signal": req.await_start_signal },
        "output": {},
    });
    match &req.options {
        None => {}
        Some(Options::Preset(p)) => preset(&mut config, *p)?,
        Some(Options::Advanced(a)) => advanced(&mut config, a)?,
    }
    let shown_streams = outputs(&mut config, &files, &streams)?;
    let mut shown = req.clone();
    conceal(&mut shown.file_outputs, &mut shown.stream_outputs);
    #[allow(deprecated)]
    match &mut shown.output {
        Some(Output::File(f)) => drop_credentials(f),
        Some(Output::Stream(s)) => mask_stream(s),
        _ => {}
    }
    Ok(Job {
        config,
        shown: lk::egress_info::Request::Web(shown),
        streams: shown_streams,
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
#[allow(deprecated)]
pub fn room_composite(
    req: &lk::RoomCompositeEgressRequest,
    room: &Room<'_>,
) -> Result<Job, TwirpError> {
    use lk::room_composite_egress_request::{Options, Output};
    if req.room_name.is_empty() {
        return Err(TwirpError::invalid("room_name", "is required"));
    }
    refuse_av(req.audio_only, req.video_only)?;
    if req.audio_mixing != 0 {
        return Err(TwirpError::unimplemented(
            "audio_mixing",
            "pagecast records the room's mix as the layout plays it",
        ));
    }
    refuse_unsupported(
        !req.segment_outputs.is_empty() || matches!(req.output, Some(Output::Segments(_))),
        !req.image_outputs.is_empty(),
        !req.webhooks.is_empty(),
    )?;
    let layout = match req.layout.as_str() {
        "" | "speaker" | "speaker-dark" => "speaker-dark",
        "speaker-light" => "speaker-light",
        "grid" | "grid-dark" => "grid-dark",
        "grid-light" => "grid-light",
        other => {
            return Err(TwirpError::unimplemented(
                "layout",
                format!("{other:?}: pagecast has grid, grid-light, speaker, speaker-light"),
            ))
        }
    };
    let mut files: Vec<&lk::EncodedFileOutput> = req.file_outputs.iter().collect();
    let mut streams: Vec<&lk::StreamOutput> = req.stream_outputs.iter().collect();
    match &req.output {
        Some(Output::File(f)) => files.push(f),
        Some(Output::Stream(s)) => streams.push(s),
        _ => {}
    }
    let mut template = json!({
        "layout": layout, "ws_url": room.ws_url, "room_name": req.room_name,
    });
    if !req.custom_base_url.is_empty() {
        template["base_url"] = json!(req.custom_base_url);
    }
    let mut config = json!({
        "api_key": room.api_key,
        "api_secret": room.api_secret,
        "input": { "template": template },
        "output": {},
    });
    match &req.options {
        None => {}
        Some(Options::Preset(p)) => preset(&mut config, *p)?,
        Some(Options::Advanced(a)) => advanced(&mut config, a)?,
    }
    let shown_streams = outputs(&mut config, &files, &streams)?;
    let mut shown = req.clone();
    conceal(&mut shown.file_outputs, &mut shown.stream_outputs);
    match &mut shown.output {
        Some(Output::File(f)) => drop_credentials(f),
        Some(Output::Stream(s)) => mask_stream(s),
        _ => {}
    }
    Ok(Job {
        config,
        shown: lk::egress_info::Request::RoomComposite(shown),
        streams: shown_streams,
    })
}

/// Outputs pagecast does not produce for the Egress API: refused, naming the field.
fn refuse_unsupported(segments: bool, images: bool, webhooks: bool) -> Result<(), TwirpError> {
    if segments {
        return Err(TwirpError::unimplemented(
            "segment_outputs",
            "HLS segments are not recorded by pagecast; use file_outputs",
        ));
    }
    if images {
        return Err(TwirpError::unimplemented(
            "image_outputs",
            "image snapshots are not recorded by pagecast",
        ));
    }
    if webhooks {
        return Err(TwirpError::unimplemented(
            "webhooks",
            "per-request webhooks are not sent by pagecast",
        ));
    }
    Ok(())
}

/// What an answer may show of a request's outputs: no storage credential, stream keys masked.
fn conceal(files: &mut [lk::EncodedFileOutput], streams: &mut [lk::StreamOutput]) {
    files.iter_mut().for_each(drop_credentials);
    streams.iter_mut().for_each(mask_stream);
}

fn mask_stream(stream: &mut lk::StreamOutput) {
    stream.urls = stream.urls.iter().map(|u| mask_stream_url(u)).collect();
}

fn refuse_av(audio_only: bool, video_only: bool) -> Result<(), TwirpError> {
    if audio_only {
        return Err(TwirpError::unimplemented(
            "audio_only",
            "pagecast records video and audio together",
        ));
    }
    if video_only {
        return Err(TwirpError::unimplemented(
            "video_only",
            "pagecast records video and audio together",
        ));
    }
    Ok(())
}

/// Storage credentials never leave the request.
fn drop_credentials(f: &mut lk::EncodedFileOutput) {
    use lk::encoded_file_output::Output;
    match &mut f.output {
        Some(Output::S3(s3)) => {
            s3.access_key.clear();
            s3.secret.clear();
            s3.session_token.clear();
            s3.assume_role_external_id.clear();
            s3.proxy = None;
        }
        Some(Output::Gcp(gcp)) => {
            gcp.credentials.clear();
            gcp.proxy = None;
        }
        Some(Output::Azure(azure)) => azure.account_key.clear(),
        Some(Output::AliOss(oss)) => {
            oss.access_key.clear();
            oss.secret.clear();
        }
        None => {}
    }
}

/// `GCPUpload` as `output.gcs`: the filepath is the key; `credentials` is the service-account
/// key's JSON (empty: the worker's Google identity, which a service refuses to lend).
fn gcs_output(gcp: &lk::GcpUpload, path: &str) -> Result<Value, TwirpError> {
    if gcp.bucket.is_empty() {
        return Err(TwirpError::invalid(
            "file_outputs[0].gcp.bucket",
            "is required",
        ));
    }
    if gcp.proxy.is_some() {
        return Err(TwirpError::unimplemented(
            "file_outputs[0].gcp.proxy",
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
fn azure_output(azure: &lk::AzureBlobUpload, path: &str) -> Result<Value, TwirpError> {
    for (field, value) in [
        ("account_name", &azure.account_name),
        ("container_name", &azure.container_name),
    ] {
        if value.is_empty() {
            return Err(TwirpError::invalid(
                &format!("file_outputs[0].azure.{field}"),
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

/// The file and stream outputs into `config.output`; the masked stream URLs.
fn outputs(
    config: &mut Value,
    files: &[&lk::EncodedFileOutput],
    streams: &[&lk::StreamOutput],
) -> Result<Vec<String>, TwirpError> {
    if files.is_empty() && streams.is_empty() {
        return Err(TwirpError::invalid(
            "file_outputs",
            "no output: give file_outputs or stream_outputs",
        ));
    }
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
            "{time}.mp4".to_owned()
        } else {
            f.filepath.clone()
        };
        if path.ends_with('/') {
            path.push_str("{time}.mp4");
        }
        if !path.to_ascii_lowercase().ends_with(".mp4") {
            path.push_str(".mp4");
        }
        use lk::encoded_file_output::Output as Store;
        match &f.output {
            None => output["file"] = json!(path),
            Some(Store::S3(s3)) => {
                if s3.bucket.is_empty() {
                    return Err(TwirpError::invalid(
                        "file_outputs[0].s3.bucket",
                        "is required",
                    ));
                }
                if !s3.assume_role_arn.is_empty() {
                    return Err(TwirpError::unimplemented(
                        "file_outputs[0].s3.assume_role_arn",
                        "give access_key and secret",
                    ));
                }
                if s3.proxy.is_some() {
                    return Err(TwirpError::unimplemented(
                        "file_outputs[0].s3.proxy",
                        "not supported",
                    ));
                }
                if !s3.metadata.is_empty() || !s3.tagging.is_empty() {
                    return Err(TwirpError::unimplemented(
                        "file_outputs[0].s3.metadata",
                        "object metadata and tagging are not set by pagecast",
                    ));
                }
                if !s3.content_disposition.is_empty() {
                    return Err(TwirpError::unimplemented(
                        "file_outputs[0].s3.content_disposition",
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
                output["s3"] = s;
            }
            Some(Store::Gcp(gcp)) => output["gcs"] = gcs_output(gcp, &path)?,
            Some(Store::Azure(azure)) => output["azure"] = azure_output(azure, &path)?,
            Some(Store::AliOss(_)) => {
                return Err(TwirpError::unimplemented(
                    "file_outputs[0].aliOSS",
                    "pagecast uploads to S3, GCS and Azure Blob only",
                ))
            }
        }
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

    fn file(path: &str) -> lk::EncodedFileOutput {
        lk::EncodedFileOutput {
            filepath: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_web_request_becomes_a_recorder_config_with_no_secret_shown() {
        let req = lk::WebEgressRequest {
            url: "https://example.com/page".into(),
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
        for secret in ["S3CR3T", "AKIA", "STREAMKEY"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(job.streams, vec!["rtmp://live.example.com/app/****"]);
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

    #[test]
    fn a_room_composite_joins_the_room_with_the_service_s_key_and_a_pagecast_layout() {
        let room = Room {
            ws_url: "ws://10.0.0.1:7880",
            api_key: "APIk",
            api_secret: "SECRETofTheKey",
        };
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
        r.audio_only = true;
        assert_eq!(refused(r), (Unimplemented, "audio_only".into()));
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
        let mut r = base;
        r.segment_outputs.push(Default::default());
        assert_eq!(refused(r), (Unimplemented, "segment_outputs".into()));
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
}
