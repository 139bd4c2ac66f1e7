//! Whether an encoder keeps up with real time, from its progress reports.
//!
//! ffmpeg's own `speed` is the average since it started, so a recording that fell behind an hour
//! in would show it (and its recovery) only after minutes. This looks at a window of the last
//! [`WINDOW`] reports instead: encoded time against wall time over the window, and frames dropped
//! in it. It is behind when the window's speed is under [`SLOW_SPEED`] or a frame was dropped in
//! it; it has caught up when the window is at speed again with no frame dropped.
//! No actor: the encoder feeds it and logs what it says (`events::ENCODER_FALLING_BEHIND`,
//! `events::ENCODER_CAUGHT_UP`), which the service reads to stop and resume taking jobs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Speed (encoded seconds per wall second) under which the encoder is falling behind.
pub const SLOW_SPEED: f64 = 0.95;
/// Reports in a window (ffmpeg reports every half second: 3 s).
pub const WINDOW: usize = 6;
/// The first seconds are not judged: ffmpeg's inputs start in bursts.
const SETTLING: Duration = Duration::from_secs(3);

/// A change of pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The window's speed (and whether frames were dropped in it).
    Behind {
        speed: f64,
        dropped: u64,
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
}

impl Pace {
    pub fn is_behind(&self) -> bool {
        self.behind
    }

    /// A new ffmpeg run (a resume after a pause): its counters start again at zero, so the
    /// window starts again; whether it is behind stays until the new window says otherwise.
    pub fn new_run(&mut self) {
        self.window.clear();
    }

    /// One progress report at `now`; a change, if this report makes one.
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
        let slow = speed < SLOW_SPEED || dropped > 0;
        let change = match (self.behind, slow) {
            (false, true) => Change::Behind { speed, dropped },
            (true, false) => Change::CaughtUp { speed },
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
    fn the_first_seconds_are_not_judged() {
        let mut pace = Pace::default();
        let mut at = (Instant::now(), Duration::ZERO, 0);
        // 0.5 speed for 5 s of wall time: 2.5 s encoded, all under the settling time.
        assert!(feed(&mut pace, &mut at, 10, 0.5, 3).is_empty());
    }
}
