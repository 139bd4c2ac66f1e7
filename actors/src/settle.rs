//! A value that settles once: waiting, then given, or closed with the failure that ended the
//! wait. The start gate (`gate.rs`: given when the page signals its start) and a warm tree's job
//! (`warm.rs`: given when the job's config comes) are both this cell.
//!
//! Owns: one state, Waiting → Given(value), or Waiting → Closed(why). It changes once; whoever
//! comes second is told so (false) and changes nothing.
//! Read by: any number of waiters, before or after it settled (a late waiter gets the outcome at
//! once).
//!
//! Why not a message: a supervisor holds back every message while one of its children starts
//! (that is what keeps starts in order), and a child's start is what waits here; a stop meant to
//! end that wait would queue behind it.

use tokio::sync::watch;

use crate::supervision::Failure;

#[derive(Debug, Clone)]
enum State<T> {
    Waiting,
    Given(T),
    Closed(Failure),
}

/// Shared by who settles it and who waits on it; cheap to clone (the value is cloned for each
/// reader: keep it small or boxed).
#[derive(Debug)]
pub struct Settle<T>(watch::Sender<State<T>>);

impl<T> Clone for Settle<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Clone> Default for Settle<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> Settle<T> {
    pub fn new() -> Self {
        Self(watch::Sender::new(State::Waiting))
    }

    /// Settles it with `value`; false if it had settled already.
    pub fn give(&self, value: T) -> bool {
        self.settle(State::Given(value))
    }

    /// Settles it with the failure `why`; false if it had settled already.
    pub fn close(&self, why: Failure) -> bool {
        self.settle(State::Closed(why))
    }

    fn settle(&self, to: State<T>) -> bool {
        let mut to = Some(to);
        self.0.send_if_modified(|s| match s {
            State::Waiting => {
                *s = to.take().expect("settled once");
                true
            }
            _ => false,
        })
    }

    pub fn is_waiting(&self) -> bool {
        matches!(*self.0.borrow(), State::Waiting)
    }

    /// The value, once given.
    pub fn get(&self) -> Option<T> {
        match &*self.0.borrow() {
            State::Given(value) => Some(value.clone()),
            _ => None,
        }
    }

    /// Resolves when it settles (at once if it has): the value, or the failure it closed with.
    pub async fn wait(&self) -> Result<T, Failure> {
        let mut rx = self.0.subscribe();
        // The sender lives in self: it cannot be dropped while we wait.
        let state = rx
            .wait_for(|s| !matches!(s, State::Waiting))
            .await
            .map_err(|_| Failure::crashed("a settle-once value vanished"))?;
        match &*state {
            State::Given(value) => Ok(value.clone()),
            State::Closed(why) => Err(why.clone()),
            State::Waiting => unreachable!("waited for a change"),
        }
    }

    /// Resolves with the failure when it closes; never if it is given a value.
    pub async fn closed(&self) -> Failure {
        match self.wait().await {
            Err(why) => why,
            Ok(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervision::FailureKind;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn it_settles_once_and_every_waiter_before_and_after_gets_the_value() {
        let cell: Settle<u32> = Settle::new();
        let early = {
            let cell = cell.clone();
            tokio::spawn(async move { cell.wait().await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(cell.is_waiting());
        assert_eq!(cell.get(), None);
        assert!(cell.give(7));
        assert!(!cell.give(8), "given once");
        assert!(
            !cell.close(Failure::crashed("late")),
            "a close after it changes nothing"
        );
        assert_eq!(early.await.unwrap(), Ok(7));
        assert_eq!(cell.wait().await, Ok(7), "a late waiter: at once");
        assert_eq!(cell.get(), Some(7));
        assert!(!cell.is_waiting());
        // Given: `closed` never resolves.
        let never = tokio::time::timeout(Duration::from_secs(3600), cell.closed()).await;
        assert!(never.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_ends_every_wait_with_its_reason_and_nothing_is_given_after() {
        let cell: Settle<String> = Settle::default();
        let closed = {
            let cell = cell.clone();
            tokio::spawn(async move { cell.closed().await })
        };
        tokio::task::yield_now().await;
        assert!(cell.close(Failure::new(FailureKind::Input, "no job")));
        assert!(!cell.close(Failure::crashed("second")), "closed once");
        assert!(!cell.give("too late".into()));
        assert_eq!(closed.await.unwrap().message, "no job");
        let e = cell.wait().await.unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (FailureKind::Input, "no job"));
        assert_eq!(cell.get(), None);
    }
}
