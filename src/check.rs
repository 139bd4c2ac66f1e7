//! `pagecast check`: what a config would record, in words, with every secret masked.
//!
//! Written out field by field rather than with `Debug`: a URL's `Debug` shows its password and
//! query, and a new field must be shown on purpose, not by accident.

use std::fmt::Write as _;

use pagecast_actors::secret::mask_url;

use crate::config::{Config, Source, TemplateAuth, Tracks};
use crate::policy::Pin;

/// A URL for display: credentials, query values and a fragment's query values masked.
fn shown(url: &url::Url) -> String {
    mask_url(url.as_str())
}

fn human(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// What `config` records, one setting a line. `pins` are the page hosts the policy checked.
pub fn describe(config: &Config, pins: &[Pin]) -> String {
    let mut out = String::new();
    let input = &config.input;
    match &input.source {
        Source::Url(url) => {
            let _ = writeln!(out, "input.url: {}", shown(url));
        }
        Source::Template(t) => {
            let _ = writeln!(out, "input.template.layout: {}", t.layout.as_str());
            let _ = writeln!(out, "input.template.ws_url: {}", shown(&t.ws_url));
            match &t.auth {
                TemplateAuth::Token(_) => {
                    let _ = writeln!(out, "input.template.token: ****");
                }
                TemplateAuth::ApiKey {
                    api_key, room_name, ..
                } => {
                    let _ = writeln!(
                        out,
                        "input.template: a token signed with api_key {api_key} (api_secret ****) \
                         for room {room_name}"
                    );
                }
            }
            if let Some(base) = &t.base_url {
                let _ = writeln!(out, "input.template.base_url: {}", shown(base));
            }
            let _ = writeln!(
                out,
                "input.template.empty_room_timeout: {}",
                human(t.empty_room_timeout)
            );
        }
    }
    let _ = writeln!(
        out,
        "input: {}x{}, {}-bit, {} fps",
        input.width, input.height, input.depth, input.framerate
    );
    if input.await_start_signal {
        let _ = writeln!(
            out,
            "input: waits for START_RECORDING up to {}",
            human(input.start_timeout)
        );
    }
    for pin in pins {
        let _ = writeln!(out, "policy: {} pinned to {}", pin.host, pin.addr);
    }
    let output = &config.output;
    if let Some(file) = &output.file {
        let _ = writeln!(out, "output.file: {}", file.display());
    }
    if let Some(hls) = &output.hls {
        let _ = writeln!(
            out,
            "output.hls: {} segments into {}",
            human(hls.segment),
            hls.directory.display()
        );
        if hls.naming == crate::config::Naming::Timestamp {
            let _ = writeln!(out, "output.hls.naming: timestamp");
        }
        if let Some(prefix) = &hls.prefix {
            let _ = writeln!(out, "output.hls.prefix: {prefix}");
        }
        if let Some(live) = &hls.live {
            let _ = writeln!(
                out,
                "output.hls.live_playlist: {} (the last {} segments)",
                live.name, live.window
            );
        }
    }
    if let Some(images) = &output.images {
        let _ = writeln!(
            out,
            "output.images: every {} into {}",
            human(images.every),
            images.directory.display()
        );
        if let Some(prefix) = &images.prefix {
            let _ = writeln!(out, "output.images.prefix: {prefix}");
        }
    }
    for stream in &output.rtmp {
        // StreamUrl prints with its key masked.
        let _ = writeln!(out, "output.rtmp: {stream}");
    }
    for stream in &output.srt {
        // Its query (passphrase, streamid) prints masked.
        let _ = writeln!(out, "output.srt: {stream}");
    }
    if !output.rtmp.is_empty() || !output.srt.is_empty() {
        let _ = writeln!(
            out,
            "output.rtmp_retry_for: {}",
            human(output.rtmp_retry_for)
        );
    }
    if let Some(s3) = &output.s3 {
        let _ = writeln!(out, "output.s3: bucket {}, key {}", s3.bucket, s3.key);
        if let Some(region) = &s3.region {
            let _ = writeln!(out, "output.s3.region: {region}");
        }
        if let Some(endpoint) = &s3.endpoint {
            let _ = writeln!(out, "output.s3.endpoint: {}", shown(endpoint));
        }
        let credentials = match (&s3.access_key, &s3.session_token) {
            (Some(_), Some(_)) => "access_key ****, secret ****, session_token ****",
            (Some(_), None) => "access_key ****, secret ****",
            (None, _) => "the standard AWS credential chain",
        };
        let _ = writeln!(out, "output.s3 credentials: {credentials}");
        let _ = writeln!(
            out,
            "output.s3: part_size {} bytes, give_up_after {}",
            s3.part_size,
            human(s3.give_up_after)
        );
    }
    if let Some(gcs) = &output.gcs {
        let credentials = match &gcs.auth {
            crate::config::GcsAuth::Key(_) => "a service-account key ****".to_owned(),
            crate::config::GcsAuth::File(f) => format!("the key file {}", f.display()),
            crate::config::GcsAuth::Default if gcs.endpoint.is_some() => {
                "none (an emulator)".to_owned()
            }
            crate::config::GcsAuth::Default => "the standard Google credential chain".to_owned(),
        };
        let _ = writeln!(
            out,
            "output.gcs: bucket {}, key {}, credentials: {credentials}",
            gcs.bucket, gcs.key
        );
    }
    if let Some(azure) = &output.azure {
        let credentials = match &azure.auth {
            crate::config::AzureAuth::Key(_) => "key ****",
            crate::config::AzureAuth::Sas(_) => "sas ****",
            crate::config::AzureAuth::Default => "Azure's credential chain",
        };
        let _ = writeln!(
            out,
            "output.azure: account {}, container {}, blob {}, credentials: {credentials}",
            azure.account, azure.container, azure.blob
        );
    }
    if let Some(backup) = &output.backup {
        let mut backup = backup.clone();
        let _ = writeln!(out, "{}: {}", backup.field(), backup.name_mut());
    }
    if let Some((w, h)) = output.size {
        let _ = writeln!(out, "output: scaled to {w}x{h}");
    }
    let video = format!(
        "video {} bit/s (buffer {} bits, x264 {})",
        output.video_bitrate, output.video_buffer, output.video_preset
    );
    let audio = format!(
        "audio {} bit/s at {} Hz",
        output.audio_bitrate, output.audio_frequency
    );
    let _ = match output.tracks {
        Tracks::Both => writeln!(out, "output: {video}, {audio}"),
        Tracks::AudioOnly => writeln!(out, "output: {audio} (audio only: no picture)"),
        Tracks::VideoOnly => writeln!(out, "output: {video} (video only: no sound)"),
    };
    match config.max_duration {
        Some(d) => {
            let _ = writeln!(out, "max_duration: {}", human(d));
        }
        None => {
            let _ = writeln!(out, "max_duration: none");
        }
    }
    let _ = writeln!(
        out,
        "supervision: at most {} restarts within {}",
        config.supervision.max_restarts,
        human(config.supervision.within)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secret_is_printed() {
        let json = serde_json::json!({
            "api_key": "APIkey1",
            "api_secret": "apisecret-XYZ",
            "input": { "template": {
                "layout": "grid-dark",
                "ws_url": "wss://user:wspass-XYZ@lk.example.com/?access_token=wstoken-XYZ",
                "room_name": "r",
                "base_url": "https://layout.example.com/?opaquetoken-XYZ#frag-XYZ",
            } },
            "output": {
                "file": "/tmp/a.mp4",
                "rtmp": ["rtmp://live.example.com/app/streamkey-XYZ", "rtmps://x.example.com/app/key2-XYZ?auth=q-XYZ"],
                "s3": {
                    "access_key": "AKIA-XYZ", "secret": "s3secret-XYZ", "session_token": "sess-XYZ",
                    "bucket": "b", "key": "k.mp4",
                    "endpoint": "https://e:endpass-XYZ@s3.example.com/?sig=sig-XYZ"
                }
            }
        });
        let config = crate::config::parse(&json.to_string()).unwrap();
        let text = describe(&config, &[]);
        assert!(!text.contains("XYZ"), "{text}");
        assert!(text.contains("output.rtmp: rtmp://live.example.com/app/****"));
        assert!(text.contains("input.template.layout: grid-dark"));
        let json = serde_json::json!({
            "input": { "template": {
                "layout": "grid-dark", "ws_url": "wss://lk.example.com", "token": "tok-XYZ",
            } },
            "output": { "file": "/tmp/a.mp4" },
        });
        let text = describe(&crate::config::parse(&json.to_string()).unwrap(), &[]);
        assert!(!text.contains("XYZ"), "{text}");
        assert!(text.contains("input.template.token: ****"));
        let json = serde_json::json!({
            "input": { "url": "https://u:pw-XYZ@example.com/p?token=t-XYZ" },
            "output": { "file": "/tmp/a.mp4" },
        });
        let text = describe(&crate::config::parse(&json.to_string()).unwrap(), &[]);
        assert!(!text.contains("XYZ"), "{text}");
    }
}
