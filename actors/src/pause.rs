//! Pausing a recording: the switch its controls flip, and the clock of recorded time.
//!
//! Owns: whether one recording is paused (a watch channel the encoder follows) and the time it
//! has spent paused, so `max_duration` counts recorded time only.
//! Accepts: `pause` / `resume` from the controls (SIGUSR1 / SIGUSR2, a control line, the service).
//! Sends: the new state to the encoder, which ends its part cleanly on pause (its file finished
//! as on a stop) and starts the next part on resume; the parts are joined into one file at the
//! end, so the paused time is cut out, not filled.
//! Stops: with the recording (dropped).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::watch;
// tokio's clock (the same as std's outside tests), so a test can let time pass at once.
use tokio::time::Instant;

/// Why a pause or resume request was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PauseError {
    #[error("nothing is recorded yet: there is nothing to pause")]
    NotStarted,
    #[error("the recording is already paused")]
    AlreadyPaused,
    #[error("the recording is not paused")]
    NotPaused,
}

#[derive(Debug, Default)]
struct Clock {
    first_frame: Option<Instant>,
    paused_since: Option<Instant>,
    paused_total: Duration,
}

/// The pause state of one recording; cheap to clone.
#[derive(Clone)]
pub struct PauseSwitch {
    tx: Rc<watch::Sender<bool>>,
    clock: Rc<RefCell<Clock>>,
}

impl Default for PauseSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PauseSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PauseSwitch")
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl PauseSwitch {
    pub fn new() -> Self {
        Self {
            tx: Rc::new(watch::channel(false).0),
            clock: Rc::default(),
        }
    }

    /// Pauses the recording. Only once something was recorded: before the first frame there is
    /// no part to end (and a recording waiting for its start signal is not recording yet).
    pub fn pause(&self) -> Result<(), PauseError> {
        let mut clock = self.clock.borrow_mut();
        if clock.first_frame.is_none() {
            return Err(PauseError::NotStarted);
        }
        if clock.paused_since.is_some() {
            return Err(PauseError::AlreadyPaused);
        }
        clock.paused_since = Some(Instant::now());
        self.tx.send_replace(true);
        Ok(())
    }

    /// Resumes a paused recording.
    pub fn resume(&self) -> Result<(), PauseError> {
        let mut clock = self.clock.borrow_mut();
        let Some(since) = clock.paused_since.take() else {
            return Err(PauseError::NotPaused);
        };
        clock.paused_total += since.elapsed();
        self.tx.send_replace(false);
        Ok(())
    }

    pub fn is_paused(&self) -> bool {
        *self.tx.borrow()
    }

    /// What the encoder follows: `true` while paused.
    pub fn follow(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// The first frame was encoded at `at`: from then on the recording can be paused. Called
    /// again with an earlier instant (a better estimate of the same frame), it takes that one.
    pub fn started(&self, at: std::time::Instant) {
        let at = Instant::from_std(at);
        let mut clock = self.clock.borrow_mut();
        clock.first_frame = Some(clock.first_frame.map_or(at, |first| first.min(at)));
    }

    /// Time recorded since the first frame, without the time spent paused (zero before it).
    pub fn recorded(&self) -> Duration {
        let clock = self.clock.borrow();
        let Some(first) = clock.first_frame else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let paused_now = clock.paused_since.map_or(Duration::ZERO, |s| now - s);
        (now - first).saturating_sub(clock.paused_total + paused_now)
    }

    /// Resolves once `limit` of recorded time has passed (from the first frame, which must have
    /// been encoded already): the paused time does not count.
    pub async fn recorded_for(&self, limit: Duration) {
        let mut changes = self.follow();
        loop {
            if *changes.borrow_and_update() {
                if changes.changed().await.is_err() {
                    return std::future::pending().await;
                }
                continue;
            }
            let remaining = limit.saturating_sub(self.recorded());
            if remaining.is_zero() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(remaining) => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::sleep;

    #[tokio::test(start_paused = true)]
    async fn max_duration_counts_recorded_time_only() {
        let switch = PauseSwitch::new();
        assert_eq!(switch.pause(), Err(PauseError::NotStarted));
        assert_eq!(switch.resume(), Err(PauseError::NotPaused));
        switch.started(Instant::now().into_std());
        let done = switch.recorded_for(Duration::from_secs(10));
        tokio::pin!(done);
        tokio::select! { _ = &mut done => panic!("early"), _ = sleep(Duration::from_secs(4)) => {} }
        switch.pause().unwrap();
        assert_eq!(switch.pause(), Err(PauseError::AlreadyPaused));
        assert!(switch.is_paused());
        tokio::select! { _ = &mut done => panic!("paused time counted"), _ = sleep(Duration::from_secs(30)) => {} }
        switch.resume().unwrap();
        tokio::select! { _ = &mut done => panic!("early"), _ = sleep(Duration::from_secs(5)) => {} }
        let before = Instant::now();
        tokio::select! { _ = &mut done => {}, _ = sleep(Duration::from_secs(5)) => panic!("late") }
        assert_eq!(Instant::now() - before, Duration::from_secs(1));
        assert_eq!(switch.recorded(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_better_estimate_of_the_first_frame_moves_it_earlier_never_later() {
        let switch = PauseSwitch::new();
        let now = Instant::now();
        switch.started((now - Duration::from_millis(100)).into_std());
        assert_eq!(switch.recorded(), Duration::from_millis(100));
        switch.started((now - Duration::from_millis(700)).into_std());
        assert_eq!(switch.recorded(), Duration::from_millis(700));
        // A later estimate (a restarted encoder's) changes nothing.
        switch.started(now.into_std());
        assert_eq!(switch.recorded(), Duration::from_millis(700));
    }
}
