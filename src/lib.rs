//! pagecast: records a live web page to MP4 through a supervised tree of Xvfb, PulseAudio,
//! Chromium and ffmpeg. This crate is the binary's side: command line, config, wiring, what the
//! user sees. The actors and the supervision tree live in `pagecast-actors`.

pub mod check;
pub mod claim;
pub mod cli;
pub mod config;
pub mod controls;
pub mod exit;
pub mod layouts;
pub mod limits;
pub mod livekit;
pub mod logging;
pub mod naming;
pub mod policy;
pub mod reaper;
pub mod run;
pub mod service;
pub mod shutdown;
pub mod status;
pub mod stores;
pub mod warm;
