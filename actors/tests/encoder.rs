//! EncoderActor against a real ffmpeg, grabbing a real display and sink.
mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use common::*;
use pagecast_actors::audio::pactl;
use pagecast_actors::encoder::{EncoderActor, EncoderProgress, EncoderSpec};
use pagecast_actors::supervision::{ChildSpec, Restart, Supervisor};

/// Collects progress reports.
struct Collector(Rc<RefCell<Vec<EncoderProgress>>>);
impl Actor for Collector {
    type Context = Context<Self>;
}
impl Handler<EncoderProgress> for Collector {
    type Result = ();
    fn handle(&mut self, p: EncoderProgress, _: &mut Context<Self>) {
        self.0.borrow_mut().push(p);
    }
}

#[actix_rt::test]
async fn ffmpeg_writes_a_file_that_ffprobe_accepts() {
    let _heavy = pagecast_testkit::heavy();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.mp4");
    let spec = EncoderSpec {
        output: Some(output.clone()),
        relays: vec![],
        width: 640,
        height: 360,
        framerate: 30,
        output_size: None,
        video_bitrate: 1_000_000,
        video_buffer: 2_000_000,
        audio_bitrate: 128_000,
        audio_frequency: 44_100,
        preset: "veryfast".into(),
        images: None,
        hls: None,
        tracks: Default::default(),
    };
    let reports = Rc::new(RefCell::new(Vec::new()));
    let collector = Collector(reports.clone()).start().recipient();
    let (display, audio): (Cell<_>, Cell<_>) = Default::default();
    let (d, a) = (display.clone(), audio.clone());
    let encoder = ChildSpec::new(
        "encoder",
        Restart::Permanent,
        Duration::from_secs(15),
        move |link| {
            let (spec, d, a, to) = (spec.clone(), d.clone(), a.clone(), collector.clone());
            async move { EncoderActor::start(&spec, &get(&d)?, &get(&a)?, Some(to), link).await }
        },
    );
    let children = vec![
        display_child(SMALL, display),
        audio_child(dir.path(), "pagecast_encoder_test", audio.clone()),
        encoder,
    ];
    let (sup, exit) = Supervisor::start(config("encoder"), children);
    until("60 encoded frames", Duration::from_secs(30), || {
        reports.borrow().last().is_some_and(|p| p.frame >= 60)
    })
    .await;
    // ffmpeg records the sink's monitor at the sink's own rate: PulseAudio resamples nothing for
    // it (ffmpeg's pulse input asks for 48 kHz unless told).
    let sink = get(&audio).unwrap();
    let outputs = pactl(&sink.server, &["list", "short", "source-outputs"])
        .await
        .unwrap();
    let ffmpeg: Vec<&str> = outputs
        .lines()
        .filter(|l| l.contains("protocol-native.c"))
        .collect();
    assert_eq!(ffmpeg.len(), 1, "source outputs: {outputs}");
    assert!(
        ffmpeg[0].ends_with(&format!("{}Hz", sink.sample_rate)),
        "{} Hz sink, {}",
        sink.sample_rate,
        ffmpeg[0]
    );
    stop_cleanly(&sup, exit).await;

    let probe = pagecast_testkit::probe(&output);
    assert_eq!(probe.video_codec(), "h264");
    assert_eq!(probe.pix_fmt(), "yuv420p");
    assert_eq!(probe.dimensions(), (640, 360));
    assert_eq!(probe.audio_codec(), "aac");
    assert!(probe.duration() >= 1.8, "duration {}", probe.duration());
    assert!(probe.frames() >= 55, "frames {}", probe.frames());
    let last = reports.borrow().last().cloned().unwrap();
    assert!(
        last.total_size > 0 && last.out_time >= Duration::from_secs(1),
        "{last:?}"
    );
}
