//! Warm trees: what a recording tree started before its job is (`record --warm`, kept ready by
//! `serve --warm N`), and which jobs it can take.
//!
//! A warm tree has its display, its sink and its browser (Chromium on a blank page, its requests
//! through the page proxy of the service policy) up before any job exists; only the encoder
//! waits, for the job's config. So what those processes were started with must be what the job
//! asks for, or the job starts cold: the size and frame rate (the display's mode, Chromium's
//! window), the colour depth, the audio rate (the sink's), the browser's flags and capabilities
//! (WebGL, invalid certificates, a login's cookies and headers), the restart intensity (the
//! supervisors'), a page without a start signal, and no live outputs (their relays are children
//! started before the encoder). A LiveKit layout starts cold too (pagecast's own page, with a
//! token made for the job, and no page proxy). Everything else (the page and its pins, the
//! outputs, the time limit) is the job's, given when it comes.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use pagecast_actors::browser::PageOptions;
use pagecast_actors::display::DisplaySpec;
use pagecast_actors::encoder::EncoderSpec;
use pagecast_actors::recording::RecordingSpec;
use pagecast_actors::supervision::Intensity;
use pagecast_actors::warm::LateJob;

use crate::config::{Config, Source, Supervision};

/// A warm tree's colour depth and audio rate: the config's defaults.
const DEPTH: u8 = 24;
const AUDIO_FREQUENCY: u32 = 44_100;

/// The size a warm tree is ready for: `WIDTHxHEIGHT`, optionally `@FPS` (default 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmSize {
    pub width: u32,
    pub height: u32,
    pub framerate: u32,
}

impl Default for WarmSize {
    fn default() -> Self {
        Self {
            width: 1920,
            height: 1080,
            framerate: 30,
        }
    }
}

impl std::fmt::Display for WarmSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}@{}", self.width, self.height, self.framerate)
    }
}

impl FromStr for WarmSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?}: expected WIDTHxHEIGHT or WIDTHxHEIGHT@FPS, e.g. 1280x720");
        let (size, framerate) = match text.split_once('@') {
            Some((size, fps)) => (size, fps.parse::<u32>().map_err(|_| bad())?),
            None => (text, 30),
        };
        let (w, h) = size.split_once('x').ok_or_else(bad)?;
        let (width, height) = (
            w.parse::<u32>().map_err(|_| bad())?,
            h.parse::<u32>().map_err(|_| bad())?,
        );
        // The same bounds as a config's input (config.rs).
        if !(16..=7680).contains(&width) || !(16..=4320).contains(&height) {
            return Err(format!(
                "{text:?}: the size must be within 16x16 and 7680x4320"
            ));
        }
        if !(1..=60).contains(&framerate) {
            return Err(format!("{text:?}: the frame rate must be within 1 and 60"));
        }
        Ok(Self {
            width,
            height,
            framerate,
        })
    }
}

/// Why the job of `config` cannot take a warm tree of `size` (None: it can).
pub fn misfit(config: &Config, size: &WarmSize) -> Option<String> {
    let input = &config.input;
    let why = if !matches!(input.source, Source::Url(_)) {
        "input.template: a LiveKit layout starts its own tree".to_owned()
    } else if (input.width, input.height, input.framerate)
        != (size.width, size.height, size.framerate)
    {
        format!(
            "input: {}x{}@{}, the pool's trees are {size}",
            input.width, input.height, input.framerate
        )
    } else if input.depth != DEPTH {
        format!("input.depth: {}, the pool's trees are {DEPTH}", input.depth)
    } else if config.output.audio_frequency != AUDIO_FREQUENCY {
        format!(
            "output.audio_frequency: {}, the pool's sinks run at {AUDIO_FREQUENCY}",
            config.output.audio_frequency
        )
    } else if input.webgl != PageOptions::default().webgl {
        "input.webgl: off, the pool's browsers have it on".to_owned()
    } else if input.insecure {
        "input.insecure: the pool's browsers check certificates".to_owned()
    } else if !input.login.is_empty() {
        "input.login: set before the browser starts".to_owned()
    } else if input.await_start_signal {
        "input.await_start_signal: the page is loaded before the encoder starts".to_owned()
    } else if !config.output.rtmp.is_empty() {
        "output.rtmp: its relays start before the encoder".to_owned()
    } else if !config.output.srt.is_empty() {
        "output.srt: its relays start before the encoder".to_owned()
    } else if config.output.hls.as_ref().is_some_and(|h| h.live.is_some()) {
        "output.hls.live_playlist: its writer starts with the tree".to_owned()
    } else if config.supervision != Supervision::default() {
        "supervision: the pool's trees use the default".to_owned()
    } else {
        return None;
    };
    Some(why)
}

/// The tree of a warm recording of `size`: its job (`late`) brings the page and the outputs.
pub fn spec(
    size: &WarmSize,
    id: &str,
    work_dir: &Path,
    chromium: std::path::PathBuf,
    no_sandbox: bool,
    proxy_port: u16,
    late: LateJob,
) -> RecordingSpec {
    let supervision = Supervision::default();
    RecordingSpec {
        id: id.to_owned(),
        work_dir: work_dir.to_path_buf(),
        display: DisplaySpec {
            width: size.width,
            height: size.height,
            depth: DEPTH,
            refresh_hz: size.framerate,
        },
        url: url::Url::parse("about:blank").expect("a valid URL"),
        chromium,
        no_sandbox,
        // The job's page host is pinned in the page proxy when the job comes.
        host_resolver_rules: None,
        proxy_port: Some(proxy_port),
        // Only the size, the frame rate and the audio rate count before the job.
        encoder: EncoderSpec {
            output: None,
            relays: Vec::new(),
            width: size.width,
            height: size.height,
            framerate: size.framerate,
            output_size: None,
            video_bitrate: 0,
            video_buffer: 0,
            audio_bitrate: 0,
            audio_frequency: AUDIO_FREQUENCY,
            preset: String::new(),
            images: None,
            hls: None,
            tracks: Default::default(),
        },
        streams: Vec::new(),
        stream_retry_for: Duration::ZERO,
        // A job with a live playlist does not fit (see `misfit`).
        hls_live: None,
        max_duration: None,
        intensity: Intensity {
            max_restarts: supervision.max_restarts,
            period: supervision.within,
        },
        await_start: None,
        secrets: Vec::new(),
        page: PageOptions::default(),
        fresh_url: None,
        late: Some(late),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(input: &str, output: &str) -> Config {
        crate::config::parse(&format!(
            r#"{{"input":{{"url":"https://example.com/",{input}}},"output":{{"file":"/tmp/a.mp4"{output}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn sizes_parse_with_an_optional_frame_rate_and_bad_ones_are_named() {
        assert_eq!(
            "1280x720".parse::<WarmSize>().unwrap(),
            WarmSize {
                width: 1280,
                height: 720,
                framerate: 30
            }
        );
        assert_eq!("640x360@25".parse::<WarmSize>().unwrap().framerate, 25);
        assert_eq!(WarmSize::default().to_string(), "1920x1080@30");
        for bad in ["1280", "x720", "1280x720@", "0x0", "1280x720@0", "99999x10"] {
            assert!(bad.parse::<WarmSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_job_fits_only_when_what_its_processes_started_with_is_what_it_asks_for() {
        let size: WarmSize = "640x360".parse().unwrap();
        assert_eq!(
            misfit(&config(r#""width":640,"height":360"#, ""), &size),
            None
        );
        let cases = [
            (
                config(r#""width":1280,"height":720"#, ""),
                "input: 1280x720@30",
            ),
            (
                config(r#""width":640,"height":360,"framerate":25"#, ""),
                "input: 640x360@25",
            ),
            (
                config(r#""width":640,"height":360,"webgl":false"#, ""),
                "input.webgl",
            ),
            (
                config(r#""width":640,"height":360,"insecure":true"#, ""),
                "input.insecure",
            ),
            (
                config(r#""width":640,"height":360,"await_start_signal":true"#, ""),
                "input.await_start_signal",
            ),
            (
                config(r#""width":640,"height":360"#, r#","audio_frequency":48000"#),
                "output.audio_frequency",
            ),
            (
                config(
                    r#""width":640,"height":360"#,
                    r#","rtmp":"rtmp://127.0.0.1/live/k""#,
                ),
                "output.rtmp",
            ),
            (
                config(
                    r#""width":640,"height":360"#,
                    r#","srt":"srt://127.0.0.1:9000""#,
                ),
                "output.srt",
            ),
            (
                config(
                    r#""width":640,"height":360"#,
                    r#","hls":{"directory":"/tmp/h","live_playlist":{"name":"live.m3u8"}}"#,
                ),
                "output.hls.live_playlist",
            ),
        ];
        for (config, field) in cases {
            let why = misfit(&config, &size).expect(field);
            assert!(why.starts_with(field), "{why}");
        }
    }
}
