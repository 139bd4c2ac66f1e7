//! Whether an encoder keeps up with real time, from its progress reports.
//!
//! ffmpeg's own `speed` is the average since it started, so a recording that fell behind an hour
//! in would show it (and its recovery) only after minutes. This looks at a window of the last
//! [`WINDOW`] reports instead: encoded time against wall time over the window, and frames dropped
//! in it. It is behind when the window's speed is under [`SLOW_SPEED`] or a frame was dropped in
//! it, or when its backlog (below) is over [`BACKLOG_BEHIND`]; it has caught up when the window
//! is at speed again with no frame dropped and the backlog is under [`BACKLOG_CAUGHT_UP`].
//! No actor: the encoder feeds it and logs what it says (`events::ENCODER_FALLING_BEHIND`,
//! `events::ENCODER_CAUGHT_UP`), which the service reads to stop and resume taking jobs.
//!
//! It also knows the encoder's backlog: how far the last encoded frame is behind the wall clock.
//! A window's speed does not see it: an encoder slow for a moment at the start (x264 warming up
//! while the page loads) fills its input queue and then runs at 1.0 with the queue full, a
//! second behind, for the rest of the recording; a stop (`q`) then loses what is queued. The
//! frames' timestamps are the wall clock (x11grab stamps each frame as it grabs it), so a
//! report's `wall time − encoded time` is the first frame's instant plus the backlog then; its
//! least value over a run is the first frame's instant (a backlog is never negative), and the
//! backlog is how far a report is above it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Speed (encoded seconds per wall second) under which the encoder is falling behind.
pub const SLOW_SPEED: f64 = 0.95;
/// Reports in a window (ffmpeg reports every half second: 3 s).
pub const WINDOW: usize = 6;
/// A backlog over this is falling behind, whatever the window's speed: the encoder is at its
/// limit with its input queue full (at 1080p30 the queue holds about a second).
pub const BACKLOG_BEHIND: Duration = Duration::from_secs(1);
/// Caught up again only under this backlog.
pub const BACKLOG_CAUGHT_UP: Duration = Duration::from_millis(500);
/// The first seconds are not judged: ffmpeg's inputs start in bursts.
const SETTLING: Duration = Duration::from_secs(3);

/// A change of pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The window's speed (and whether frames were dropped in it).
    Behind {
        speed: f64,
        dropped: u64,
        backlog: Duration,
    },
    CaughtUp {
        speed: f64,
    },
}

#[derive(Debug, Default)]
pub struct Pace {
    /// (when, encoded time, dropped frames so far), oldest first.
    window: VecDeque<(Instant, Duration, u64)>,
    behind: bool,
    /// The run's first frame on the wall clock (the least `report time − encoded time`).
    zero: Option<Instant>,
    /// The run's last report with a frame: (when, encoded time).
    last: Option<(Instant, Duration)>,
}

impl Pace {
    pub fn is_behind(&self) -> bool {
        self.behind
    }

    /// A new ffmpeg run (a resume after a pause): its counters start again at zero, so the
    /// window starts again; whether it is behind stays until the new window says otherwise.
    pub fn new_run(&mut self) {
        self.window.clear();
        self.zero = None;
        self.last = None;
    }

    /// A report at `now` with at least one frame encoded: `encoded`, the main output's video
    /// time (its frames over its constant frame rate; not ffmpeg's `out_time`, see the encoder).
    pub fn encoded(&mut self, now: Instant, encoded: Duration) {
        let Some(start) = now.checked_sub(encoded) else {
            return;
        };
        self.zero = Some(self.zero.map_or(start, |z| z.min(start)));
        self.last = Some((now, encoded));
    }

    /// The encoded time that holds everything captured before `at` (None before the first frame).
    pub fn encoded_by(&self, at: Instant) -> Option<Duration> {
        Some(at.saturating_duration_since(self.zero?))
    }

    /// How far the last encoded frame was behind the wall clock at the last report: what a stop
    /// now would lose unless the encoder is given that long to finish it.
    pub fn backlog(&self) -> Duration {
        match (self.zero, self.last) {
            (Some(zero), Some((at, encoded))) => {
                at.saturating_duration_since(zero).saturating_sub(encoded)
            }
            _ => Duration::ZERO,
        }
    }

    /// One progress report at `now` (after its [`encoded`](Self::encoded), if it had a frame); a
    /// change, if this report makes one.
    pub fn report(
        &mut self,
        now: Instant,
        out_time: Duration,
        total_dropped: u64,
    ) -> Option<Change> {
        if out_time < SETTLING {
            return None;
        }
        self.window.push_back((now, out_time, total_dropped));
        if self.window.len() <= WINDOW {
            return None;
        }
        self.window.pop_front();
        let (t0, out0, drop0) = *self.window.front()?;
        let wall = now.saturating_duration_since(t0).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let speed = out_time.saturating_sub(out0).as_secs_f64() / wall;
        let dropped = total_dropped.saturating_sub(drop0);
        let backlog = self.backlog();
        let slow = speed < SLOW_SPEED || dropped > 0 || backlog > BACKLOG_BEHIND;
        let change = match (self.behind, slow) {
            (false, true) => Change::Behind {
                speed,
                dropped,
                backlog,
            },
            (true, false) if backlog < BACKLOG_CAUGHT_UP => Change::CaughtUp { speed },
            _ => return None,
        };
        self.behind = !self.behind;
        // The next change is judged on a window wholly after this one.
        self.window.clear();
        self.window.push_back((now, out_time, total_dropped));
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports every half second from `start`, encoding `speed` seconds per second, dropping
    /// `drops` frames per report.
    fn feed(
        pace: &mut Pace,
        at: &mut (Instant, Duration, u64),
        n: usize,
        speed: f64,
        drops: u64,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for _ in 0..n {
            at.0 += Duration::from_millis(500);
            at.1 += Duration::from_secs_f64(0.5 * speed);
            at.2 += drops;
            changes.extend(pace.report(at.0, at.1, at.2));
        }
        changes
    }

    #[test]
    fn a_slow_window_is_behind_and_a_whole_fast_window_after_it_caught_up() {
        let mut pace = Pace::default();
        let mut at = (Instant::now(), Duration::from_secs(3), 0);
        assert!(feed(&mut pace, &mut at, 20, 1.0, 0).is_empty());
        assert!(!pace.is_behind());
        let changes = feed(&mut pace, &mut at, 20, 0.8, 0);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(matches!(changes[0], Change::Behind { speed, .. } if speed < 0.95));
        assert!(pace.is_behind());
        // Not on the first fast reports: the window's speed must be back.
        assert!(feed(&mut pace, &mut at, 2, 1.0, 0).is_empty());
        let changes = feed(&mut pace, &mut at, WINDOW, 1.0, 0);
        assert!(
            matches!(changes[..], [Change::CaughtUp { speed }] if speed >= SLOW_SPEED),
            "{changes:?}"
        );
    }

    #[test]
    fn dropped_frames_are_falling_behind_at_full_speed() {
        let mut pace = Pace::default();
        let mut at = (Instant::now(), Duration::from_secs(3), 0);
        feed(&mut pace, &mut at, 10, 1.0, 0);
        let changes = feed(&mut pace, &mut at, 3, 1.0, 2);
        assert!(
            matches!(changes[..], [Change::Behind { dropped, .. }] if dropped > 0),
            "{changes:?}"
        );
        // Drops keep it behind.
        assert!(feed(&mut pace, &mut at, 20, 1.0, 1).is_empty());
        let changes = feed(&mut pace, &mut at, WINDOW + 1, 1.0, 0);
        assert!(
            matches!(changes[..], [Change::CaughtUp { .. }]),
            "{changes:?}"
        );
    }

    #[test]
    fn a_backlog_taken_at_the_start_stays_when_the_speed_is_back() {
        let mut pace = Pace::default();
        let start = Instant::now();
        assert_eq!(pace.backlog(), Duration::ZERO, "nothing encoded yet");
        // The first frame is reported at once; then 2 s at half speed, then 10 s at full speed.
        pace.encoded(start, Duration::ZERO);
        let mut at = (start, Duration::ZERO, 0);
        for (n, speed) in [(4, 0.5), (20, 1.0)] {
            for _ in 0..n {
                at.0 += Duration::from_millis(500);
                at.1 += Duration::from_secs_f64(0.5 * speed);
                pace.report(at.0, at.1, 0);
                pace.encoded(at.0, at.1);
            }
        }
        let backlog = pace.backlog().as_secs_f64();
        assert!((backlog - 1.0).abs() < 1e-6, "backlog {backlog}");
        // A stop at the last report waits for the second encoded 1 s later on the wall clock.
        let by = pace.encoded_by(at.0).unwrap();
        assert_eq!(by, at.1 + Duration::from_secs(1));
        // A new run starts with none.
        pace.new_run();
        assert_eq!(pace.backlog(), Duration::ZERO);
    }

    #[test]
    fn a_backlog_at_full_speed_is_falling_behind_until_it_is_worked_off() {
        let mut pace = Pace::default();
        let start = Instant::now();
        pace.encoded(start, Duration::ZERO);
        let mut at = (start, Duration::ZERO, 0u64);
        let mut step = |pace: &mut Pace, n: usize, speed: f64| {
            let mut changes = Vec::new();
            for _ in 0..n {
                at.0 += Duration::from_millis(500);
                at.1 += Duration::from_secs_f64(0.5 * speed);
                pace.encoded(at.0, at.1);
                changes.extend(pace.report(at.0, at.1, at.2));
            }
            changes
        };
        // 4 s at full speed, then 3 s at half speed (1.5 s behind), then full speed: still
        // behind, by its backlog, once the slow window has passed.
        assert!(step(&mut pace, 8, 1.0).is_empty());
        step(&mut pace, 6, 0.5);
        assert!(pace.is_behind());
        let changes = step(&mut pace, 12, 1.0);
        assert!(changes.is_empty(), "{changes:?}");
        assert!(pace.is_behind(), "1.5 s behind at full speed");
        // Faster than real time (its queue emptying): caught up once under half a second.
        let changes = step(&mut pace, 14, 1.2);
        assert!(
            matches!(changes[..], [Change::CaughtUp { .. }]),
            "{changes:?}"
        );
        assert!(pace.backlog() < BACKLOG_CAUGHT_UP);
    }

    #[test]
    fn an_encoder_at_speed_has_no_backlog() {
        let mut pace = Pace::default();
        let start = Instant::now();
        // Its first report comes late (the first frame took a while): later ones show it was not.
        pace.encoded(start + Duration::from_millis(400), Duration::ZERO);
        for i in 1..10u64 {
            let at = start + Duration::from_millis(500 * i);
            pace.encoded(at, Duration::from_millis(500 * i));
        }
        assert_eq!(pace.backlog(), Duration::ZERO);
    }

    #[test]
    fn the_first_seconds_are_not_judged() {
        let mut pace = Pace::default();
        let mut at = (Instant::now(), Duration::ZERO, 0);
        // 0.5 speed for 5 s of wall time: 2.5 s encoded, all under the settling time.
        assert!(feed(&mut pace, &mut at, 10, 0.5, 3).is_empty());
    }
}
