//! Harness for the actor tests: a one-recording tree built from real actors.
#![allow(dead_code)]

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use pagecast_actors::audio::{AudioActor, AudioInfo, AudioSpec};
use pagecast_actors::display::{DisplayActor, DisplayInfo, DisplaySpec};
use pagecast_actors::supervision::{
    ChildSpec, Failure, Intensity, Restart, StopTree, Strategy, Supervisor, SupervisorConfig,
    TreeExit,
};
use tokio::sync::oneshot;

pub type Cell<T> = Rc<RefCell<Option<T>>>;

pub fn config(name: &str) -> SupervisorConfig {
    SupervisorConfig {
        name: name.into(),
        strategy: Strategy::RestForOne,
        intensity: Intensity::NEVER,
    }
}

/// The display most tests use: small, so a test costs little.
pub const SMALL: DisplaySpec = DisplaySpec {
    width: 640,
    height: 360,
    depth: 24,
    refresh_hz: 0,
};

/// Stops a tree and asserts it stopped in order, with no failure on the way.
pub async fn stop_cleanly(sup: &actix::Addr<Supervisor>, exit: oneshot::Receiver<TreeExit>) {
    sup.do_send(StopTree {
        cause: "test".into(),
    });
    let exit = exit.await.unwrap();
    assert!(
        matches!(exit, TreeExit::Stopped { ref failures, .. } if failures.is_empty()),
        "{exit:?}"
    );
}

pub fn display_child(spec: DisplaySpec, out: Cell<DisplayInfo>) -> ChildSpec {
    ChildSpec::new(
        "display",
        Restart::Permanent,
        Duration::from_secs(5),
        move |link| {
            let out = out.clone();
            async move {
                let (addr, info) = DisplayActor::start(spec, link).await?;
                *out.borrow_mut() = Some(info);
                Ok(addr)
            }
        },
    )
}

pub fn audio_child(dir: &Path, sink: &str, out: Cell<AudioInfo>) -> ChildSpec {
    let spec = AudioSpec {
        runtime_dir: dir.join("pulse"),
        sink: sink.into(),
        sample_rate: 44_100,
    };
    ChildSpec::new(
        "audio",
        Restart::Permanent,
        Duration::from_secs(5),
        move |link| {
            let (spec, out) = (spec.clone(), out.clone());
            async move {
                let (addr, info) = AudioActor::start(spec, link).await?;
                *out.borrow_mut() = Some(info);
                Ok(addr)
            }
        },
    )
}

pub fn get<T: Clone>(cell: &Cell<T>) -> Result<T, Failure> {
    cell.borrow()
        .clone()
        .ok_or_else(|| Failure::crashed("dependency not started"))
}

/// Polls `cond` without blocking the actor system, failing after `timeout`.
pub async fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
