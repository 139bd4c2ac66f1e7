//! The start gate: holds the encoder back until the page says its content is there.
//!
//! A LiveKit layout (or a custom page that opts in) logs `START_RECORDING` once the first
//! participant's media plays. Until then there is nothing worth recording, so the encoder's start
//! waits on this gate and the file begins with the page's content, not with seconds of an empty
//! room.
//!
//! Owns: one [`Settle`] cell: Waiting → Open, or Waiting → Closed(why). It changes once.
//! Written by: the browser (opens it on `START_RECORDING`; closes it when the page reports an
//! error, logs `END_RECORDING` first, or the browser dies while waiting) and by whoever stops the
//! recording (a signal while waiting closes it).
//! Read by: the encoder's start, which waits for it with a time limit.
//!
//! Why not a message: see `settle.rs`.

use std::time::Duration;

use crate::settle::Settle;
use crate::supervision::{Failure, FailureKind};

/// Shared by the browser, the encoder's start and the recording's owner. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StartGate(Settle<()>);

impl StartGate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the gate; returns whether this call opened it (false if it had already changed).
    pub fn open(&self) -> bool {
        self.0.give(())
    }

    /// Closes the gate for good with `why`, unless it already changed.
    pub fn close(&self, why: Failure) -> bool {
        self.0.close(why)
    }

    pub fn is_waiting(&self) -> bool {
        self.0.is_waiting()
    }

    pub fn is_open(&self) -> bool {
        self.0.get().is_some()
    }

    /// Resolves with the reason when the gate closes; never if it opens. (A warm tree's encoder
    /// waits for its job and, through this, for its browser's failure: see `warm.rs`.)
    pub async fn closed(&self) -> Failure {
        self.0.closed().await
    }

    /// Resolves when the gate opens: Ok at once if it is open, the closing reason if it closes,
    /// and an input failure saying `what_is_missing` if `limit` passes first.
    pub async fn wait(&self, limit: Duration, what_is_missing: &str) -> Result<(), Failure> {
        match tokio::time::timeout(limit, self.0.wait()).await {
            Ok(outcome) => outcome,
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
