//! pagecast's actors.
//!
//! The supervision module ([`supervision`]) and the child-process wrapper ([`process`]) are written
//! once and used by every tree; each managed process has one actor module of its own.

pub mod audio;
pub mod backoff;
pub mod browser;
pub mod civil;
mod devtools;
pub mod dir_upload;
pub mod display;
pub mod encoder;
pub mod events;
pub mod fanout;
pub mod gate;
pub mod hls_live;
pub mod join;
pub mod key_proxy;
pub mod live;
pub mod login;
pub mod oneshot;
pub mod pace;
pub mod page_proxy;
pub mod pause;
pub mod process;
pub mod recording;
pub mod relay;
pub mod secret;
pub mod settle;
pub mod store;
pub mod supervision;
pub mod uploader;
pub mod warm;
