//! StatusActor: what the user sees of a running recording.
//!
//! Owns: the status line (on a terminal) and the periodic progress log line (elsewhere).
//! Accepts: [`EncoderProgress`] from the encoder.
//! Sends: nothing. Stops with the actor system.

use std::time::{Duration, Instant};

use actix::prelude::*;
use indicatif::ProgressBar;
use pagecast_actors::encoder::EncoderProgress;

/// How often progress is logged when there is no status line.
const LOG_EVERY: Duration = Duration::from_secs(30);

pub struct StatusActor {
    bar: Option<ProgressBar>,
    last_log: Instant,
}

impl StatusActor {
    pub fn new(bar: Option<ProgressBar>) -> Self {
        Self {
            bar,
            last_log: Instant::now(),
        }
    }
}

impl Actor for StatusActor {
    type Context = Context<Self>;
}

/// "00:01:23 | 30.0 fps | 0 dropped | 12.3 MiB | 1.00x"
pub fn format_status(p: &EncoderProgress) -> String {
    let secs = p.out_time.as_secs();
    let speed = match p.speed {
        // The encoder warns in the log too; the mark stays while it lasts.
        Some(s) if s < pagecast_actors::pace::SLOW_SPEED && p.out_time > Duration::from_secs(3) => {
            format!("{s:.2}x FALLING BEHIND")
        }
        Some(s) => format!("{s:.2}x"),
        None => "-".into(),
    };
    if p.paused {
        return format!(
            "PAUSED {:02}:{:02}:{:02} recorded | {:.1} MiB",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            p.total_size as f64 / (1024.0 * 1024.0),
        );
    }
    format!(
        "REC {:02}:{:02}:{:02} | {:.1} fps | {} dropped | {:.1} MiB | speed {speed}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        p.fps,
        p.drop_frames,
        p.total_size as f64 / (1024.0 * 1024.0),
    )
}

impl Handler<EncoderProgress> for StatusActor {
    type Result = ();

    fn handle(&mut self, p: EncoderProgress, _: &mut Context<Self>) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(format_status(&p));
                bar.tick();
            }
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                tracing::info!(
                    paused = p.paused,
                    recorded = ?Duration::from_secs(p.out_time.as_secs()),
                    fps = p.fps,
                    dropped = p.drop_frames,
                    bytes = p.total_size,
                    speed = p.speed,
                    "recording"
                );
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_reads_well() {
        let p = EncoderProgress {
            frame: 2500,
            fps: 29.97,
            drop_frames: 2,
            dup_frames: 0,
            total_size: 13 * 1024 * 1024,
            out_time: Duration::from_secs(3723),
            speed: Some(1.0),
            paused: false,
        };
        assert_eq!(
            format_status(&p),
            "REC 01:02:03 | 30.0 fps | 2 dropped | 13.0 MiB | speed 1.00x"
        );
        let slow = EncoderProgress {
            speed: Some(0.8),
            ..p
        };
        assert!(format_status(&slow).ends_with("speed 0.80x FALLING BEHIND"));
        let paused = EncoderProgress { paused: true, ..p };
        assert_eq!(
            format_status(&paused),
            "PAUSED 01:02:03 recorded | 13.0 MiB"
        );
    }
}
