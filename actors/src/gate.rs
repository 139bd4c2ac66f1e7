//! The start gate: holds the encoder back until the page says its content is there.
//!
//! A LiveKit layout (or a custom page that opts in) logs `START_RECORDING` once the first
//! participant's media plays. Until then there is nothing worth recording, so the encoder's start
//! waits on this gate and the file begins with the page's content, not with seconds of an empty
//! room.
//!
//! Owns: one state, Waiting → Open, or Waiting → Closed(why). It changes once.
//! Written by: the browser (opens it on `START_RECORDING`; closes it when the page reports an
//! error, logs `END_RECORDING` first, or the browser dies while waiting) and by whoever stops the
//! recording (a signal while waiting closes it).
//! Read by: the encoder's start, which waits for it with a time limit.
//!
//! Why not a message: while a child starts, its supervisor holds back every message (that is what
//! makes starts ordered), so a stop request sent to the tree would wait behind the very start it
//! should end. The gate is read by the start itself.

use std::rc::Rc;
use std::time::Duration;

use tokio::sync::watch;

use crate::supervision::{Failure, FailureKind};

#[derive(Debug, Clone)]
enum State {
    Waiting,
    Open,
    Closed(Failure),
}

/// Shared by the browser, the encoder's start and the recording's owner. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StartGate(Rc<watch::Sender<State>>);

impl Default for StartGate {
    fn default() -> Self {
        Self::new()
    }
}

impl StartGate {
    pub fn new() -> Self {
        Self(Rc::new(watch::Sender::new(State::Waiting)))
    }

    /// Opens the gate; returns whether this call opened it (false if it had already changed).
    pub fn open(&self) -> bool {
        self.0.send_if_modified(|s| match s {
            State::Waiting => {
                *s = State::Open;
                true
            }
            _ => false,
        })
    }

    /// Closes the gate for good with `why`, unless it already changed.
    pub fn close(&self, why: Failure) -> bool {
        self.0.send_if_modified(|s| match s {
            State::Waiting => {
                *s = State::Closed(why);
                true
            }
            _ => false,
        })
    }

    pub fn is_waiting(&self) -> bool {
        matches!(*self.0.borrow(), State::Waiting)
    }

    pub fn is_open(&self) -> bool {
        matches!(*self.0.borrow(), State::Open)
    }

    /// Resolves with the reason when the gate closes; never if it opens. (A warm tree's encoder
    /// waits for its job and, through this, for its browser's failure: see `warm.rs`.)
    pub async fn closed(&self) -> Failure {
        let mut rx = self.0.subscribe();
        let closed =
            rx.wait_for(|s| matches!(s, State::Closed(_)))
                .await
                .map(|state| match &*state {
                    State::Closed(why) => why.clone(),
                    _ => unreachable!("waited for a close"),
                });
        match closed {
            Ok(why) => why,
            // The sender lives in self: it can't be dropped while we wait.
            Err(_) => Failure::crashed("the start gate vanished"),
        }
    }

    /// Resolves when the gate opens: Ok at once if it is open, the closing reason if it closes,
    /// and an input failure saying `what_is_missing` if `limit` passes first.
    pub async fn wait(&self, limit: Duration, what_is_missing: &str) -> Result<(), Failure> {
        let mut rx = self.0.subscribe();
        let outcome =
            tokio::time::timeout(limit, rx.wait_for(|s| !matches!(s, State::Waiting))).await;
        match outcome {
            Ok(Ok(state)) => match &*state {
                State::Open => Ok(()),
                State::Closed(why) => Err(why.clone()),
                State::Waiting => unreachable!("waited for a change"),
            },
            // The sender lives in self: it can't be dropped while we wait.
            Ok(Err(_)) => Err(Failure::crashed("the start gate vanished")),
            Err(_) => {
                let why = Failure::new(
                    FailureKind::Input,
                    format!(
                        "{what_is_missing} within {}",
                        humantime::format_duration(limit)
                    ),
                );
                self.close(why.clone());
                Err(why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_once_and_later_waits_pass_at_once() {
        let gate = StartGate::new();
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let g = gate.clone();
                let waiter = tokio::task::spawn_local(async move {
                    g.wait(Duration::from_secs(60), "nothing").await
                });
                tokio::time::sleep(Duration::from_secs(5)).await;
                assert!(gate.is_waiting());
                assert!(gate.open());
                assert!(!gate.open(), "a second open changes nothing");
                assert!(waiter.await.unwrap().is_ok());
                assert!(!gate.close(Failure::crashed("late")), "open stays open");
                assert!(gate.wait(Duration::ZERO, "x").await.is_ok());
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn closing_gives_the_reason_and_the_limit_gives_an_input_failure() {
        let gate = StartGate::new();
        gate.close(Failure::new(FailureKind::Input, "the page reported: no"));
        let e = gate.wait(Duration::from_secs(1), "x").await.unwrap_err();
        assert_eq!(e.message, "the page reported: no");

        let gate = StartGate::new();
        let e = gate
            .wait(Duration::from_secs(30), "nobody joined")
            .await
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::Input);
        assert_eq!(e.message, "nobody joined within 30s");
        assert!(
            !gate.is_waiting(),
            "a timed-out gate is closed for everyone"
        );
        assert!(!gate.open(), "and can't open afterwards");
    }
}
