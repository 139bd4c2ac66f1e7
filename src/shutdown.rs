//! Shutdown as a value passed in, not a `process::exit` deep inside.
//!
//! The code that follows SIGTERM and SIGINT (`controls.rs` for a recording, the service's own)
//! raises the level; the top of the program (`run.rs`, `service::serve`) waits on it and acts:
//! a first signal asks for the ordered stop (the follower tells the tree), a second one is
//! [`Level::Now`]: the top returns at once with [`Exit::Interrupted`](crate::exit::Exit) and
//! [`SECOND_SIGNAL_RECORDING`] or [`SECOND_SIGNAL_SERVICE`] (`main.rs` prints it as every
//! failure), and the tree it drops takes its processes with it (each `ChildProcess` kills its
//! group on drop; a parent-death signal covers the rest).
//!
//! Owns: one level, Running → Orderly → Now; it only rises. Cheap to clone.

use tokio::sync::watch;

/// What the user last asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing yet.
    Running,
    /// Stop in order: files finished, uploads complete.
    Orderly,
    /// Leave now, without finishing (a second signal).
    Now,
}

/// Why a recording left at a second signal (the line `main.rs` prints after `pagecast: `).
pub const SECOND_SIGNAL_RECORDING: &str = "second signal, stopping without finishing the file";
/// Why the service left at a second signal.
pub const SECOND_SIGNAL_SERVICE: &str = "second signal, stopping without finishing the recordings";

/// The shutdown level, shared by the signal follower (raises it) and the top (waits on it).
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Sender<Level>);

impl Default for Shutdown {
    fn default() -> Self {
        Self(watch::Sender::new(Level::Running))
    }
}

impl Shutdown {
    /// Raises the level to `to`; returns whether it rose (false: it was there or above).
    pub fn raise(&self, to: Level) -> bool {
        self.0.send_if_modified(|level| {
            let rises = to > *level;
            if rises {
                *level = to;
            }
            rises
        })
    }

    pub fn level(&self) -> Level {
        *self.0.borrow()
    }

    /// Resolves once the level is `level` or above (at once if it is).
    pub async fn reached(&self, level: Level) {
        let mut rx = self.0.subscribe();
        // The sender lives in self: the wait cannot fail.
        let _ = rx.wait_for(|now| *now >= level).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_level_only_rises_and_waits_end_when_it_is_reached() {
        let shutdown = Shutdown::default();
        assert_eq!(shutdown.level(), Level::Running);
        let waiter = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.reached(Level::Now).await })
        };
        assert!(shutdown.raise(Level::Orderly), "first request");
        assert!(
            !shutdown.raise(Level::Orderly),
            "a second orderly request is nothing new"
        );
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "orderly is not now");
        assert!(shutdown.raise(Level::Now));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the wait for Now ended")
            .unwrap();
        assert!(!shutdown.raise(Level::Orderly), "it never falls back");
        assert_eq!(shutdown.level(), Level::Now);
        // Reached already: at once.
        tokio::time::timeout(Duration::from_secs(1), shutdown.reached(Level::Orderly))
            .await
            .expect("at once");
    }
}
