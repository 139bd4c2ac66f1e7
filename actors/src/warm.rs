//! The job of a warm tree: what a recording tree started ahead of its job learns only when the
//! job's config arrives.
//!
//! A warm tree (`pagecast record --warm`, kept by `serve --warm N`) starts its display, its sink
//! and its browser on a blank page before any job exists; its encoder's start waits here. The
//! job brings what nothing before it may decide: the page's address, the encoder's outputs and
//! settings, the recording's time limit.
//!
//! Owns: one state, Waiting → Given(job), or Waiting → Closed(why). It changes once.
//! Written by: the run that reads the job's config ([`LateJob::give`]) and whoever stops the
//! recording first ([`LateJob::close`]: a stop while warm ends the wait, nothing was recorded).
//! Read by: the encoder's start (waits for it), the browser's start (a browser restarted after the
//! job came loads the job's page), the recording's end (the file to join).
//!
//! Why not a message: as for the start gate (`gate.rs`), a supervisor holds back every message
//! while a child starts, and the encoder's start is what waits.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::watch;

use crate::encoder::EncoderSpec;
use crate::supervision::Failure;

/// What a warm tree's job decides.
#[derive(Debug, Clone)]
pub struct Late {
    /// The page to load.
    pub url: url::Url,
    /// The encoder's outputs and settings (its size and frame rate are the tree's).
    pub encoder: EncoderSpec,
    pub max_duration: Option<Duration>,
}

#[derive(Debug, Clone)]
enum State {
    Waiting,
    Given(Box<Late>),
    Closed(Failure),
}

/// Shared by the run, the encoder's and the browser's starts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LateJob(Rc<watch::Sender<State>>);

impl Default for LateJob {
    fn default() -> Self {
        Self(Rc::new(watch::Sender::new(State::Waiting)))
    }
}

impl LateJob {
    /// Hands the job over; false if the wait had already ended.
    pub fn give(&self, late: Late) -> bool {
        self.0.send_if_modified(|s| match s {
            State::Waiting => {
                *s = State::Given(Box::new(late));
                true
            }
            _ => false,
        })
    }

    /// Ends the wait for good with `why`, unless the job came already.
    pub fn close(&self, why: Failure) -> bool {
        self.0.send_if_modified(|s| match s {
            State::Waiting => {
                *s = State::Closed(why);
                true
            }
            _ => false,
        })
    }

    /// The job, once given.
    pub fn get(&self) -> Option<Late> {
        match &*self.0.borrow() {
            State::Given(late) => Some((**late).clone()),
            _ => None,
        }
    }

    /// The job's output file, once given.
    pub fn output(&self) -> Option<PathBuf> {
        self.get().and_then(|l| l.encoder.output)
    }

    /// Resolves with the job when it is given, or with the reason the wait was closed.
    pub async fn wait(&self) -> Result<Late, Failure> {
        let mut rx = self.0.subscribe();
        let state = rx
            .wait_for(|s| !matches!(s, State::Waiting))
            .await
            .map_err(|_| Failure::crashed("the warm tree's job vanished"))?;
        match &*state {
            State::Given(late) => Ok((**late).clone()),
            State::Closed(why) => Err(why.clone()),
            State::Waiting => unreachable!("waited for a change"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervision::FailureKind;

    fn late() -> Late {
        Late {
            url: url::Url::parse("https://example.com/").unwrap(),
            encoder: EncoderSpec {
                output: Some("/tmp/x.mp4".into()),
                relays: Vec::new(),
                width: 640,
                height: 360,
                framerate: 30,
                output_size: None,
                video_bitrate: 1,
                video_buffer: 1,
                audio_bitrate: 1,
                audio_frequency: 44100,
                preset: "superfast".into(),
                hls: None,
                images: None,
            },
            max_duration: None,
        }
    }

    #[tokio::test]
    async fn the_job_is_given_once_and_a_close_after_it_changes_nothing() {
        let job = LateJob::default();
        assert!(job.get().is_none());
        assert!(job.give(late()));
        assert!(!job.give(late()), "given once");
        assert!(!job.close(Failure::crashed("late")));
        assert_eq!(
            job.wait().await.unwrap().url.as_str(),
            "https://example.com/"
        );
        assert_eq!(job.output(), Some(PathBuf::from("/tmp/x.mp4")));
    }

    #[tokio::test]
    async fn a_close_while_waiting_ends_the_wait_with_its_reason() {
        let job = LateJob::default();
        assert!(job.close(Failure::new(FailureKind::Input, "no job")));
        assert_eq!(job.wait().await.unwrap_err().message, "no job");
        assert!(!job.give(late()), "too late");
    }
}
