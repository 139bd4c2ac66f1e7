//! The job of a warm tree: what a recording tree started ahead of its job learns only when the
//! job's config arrives.
//!
//! A warm tree (`pagecast record --warm`, kept by `serve --warm N`) starts its display, its sink
//! and its browser on a blank page before any job exists; its encoder's start waits here. The
//! job brings what nothing before it may decide: the page's address, the encoder's outputs and
//! settings, the recording's time limit.
//!
//! Owns: one [`Settle`] cell, Waiting → Given(job), or Waiting → Closed(why). It changes once.
//! Written by: the run that reads the job's config ([`LateJob::give`]) and whoever stops the
//! recording first ([`LateJob::close`]: a stop while warm ends the wait, nothing was recorded).
//! Read by: the encoder's start (waits for it), the browser's start (a browser restarted after the
//! job came loads the job's page), the recording's end (the file to join).
//!
//! Why not a message: see `settle.rs`.

use std::path::PathBuf;
use std::time::Duration;

use crate::encoder::EncoderSpec;
use crate::settle::Settle;
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

/// Shared by the run, the encoder's and the browser's starts. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LateJob(Settle<Box<Late>>);

impl LateJob {
    /// Hands the job over; false if the wait had already ended.
    pub fn give(&self, late: Late) -> bool {
        self.0.give(Box::new(late))
    }

    /// Ends the wait for good with `why`, unless the job came already.
    pub fn close(&self, why: Failure) -> bool {
        self.0.close(why)
    }

    /// The job, once given.
    pub fn get(&self) -> Option<Late> {
        self.0.get().map(|late| *late)
    }

    /// The job's output file, once given.
    pub fn output(&self) -> Option<PathBuf> {
        self.get().and_then(|l| l.encoder.output)
    }

    /// Resolves with the job when it is given, or with the reason the wait was closed.
    pub async fn wait(&self) -> Result<Late, Failure> {
        self.0.wait().await.map(|late| *late)
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
                tracks: Default::default(),
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
