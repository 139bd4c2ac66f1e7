//! AudioActor against a real PulseAudio daemon.
mod common;

use std::time::Duration;

use common::*;
use pagecast_actors::audio::pactl;
use pagecast_actors::supervision::{StopTree, Supervisor, TreeExit};

#[actix_rt::test]
async fn the_sink_exists_while_running_and_is_gone_after_stop() {
    let _heavy = pagecast_testkit::heavy();
    let dir = tempfile::tempdir().unwrap();
    let info: Cell<_> = Default::default();
    let (sup, exit) = Supervisor::start(
        config("audio"),
        vec![audio_child(dir.path(), "pagecast_test_sink", info.clone())],
    );
    until("the sink", Duration::from_secs(15), || {
        info.borrow().is_some()
    })
    .await;
    let info = info.borrow().clone().unwrap();
    let sinks = pactl(&info.server, &["list", "short", "sinks"])
        .await
        .unwrap();
    assert!(
        sinks
            .lines()
            .any(|l| l.split('\t').nth(1) == Some("pagecast_test_sink")),
        "{sinks}"
    );
    let sources = pactl(&info.server, &["list", "short", "sources"])
        .await
        .unwrap();
    assert!(sources.contains(&info.monitor()), "{sources}");

    stop_cleanly(&sup, exit).await;
    assert!(
        pactl(&info.server, &["list", "short", "sinks"])
            .await
            .is_err(),
        "the daemon still answers"
    );
}

#[actix_rt::test]
async fn a_stale_runtime_dir_does_not_stop_a_new_daemon() {
    let _heavy = pagecast_testkit::heavy();
    let dir = tempfile::tempdir().unwrap();
    // What a SIGKILLed daemon leaves behind: a pid file and a dead socket.
    let pulse = dir.path().join("pulse");
    std::fs::create_dir_all(&pulse).unwrap();
    std::fs::write(pulse.join("pid"), "999999\n").unwrap();
    std::fs::write(pulse.join("native"), "").unwrap();
    let info: Cell<_> = Default::default();
    let (sup, exit) = Supervisor::start(
        config("stale"),
        vec![audio_child(dir.path(), "pagecast_stale", info.clone())],
    );
    until("the sink", Duration::from_secs(15), || {
        info.borrow().is_some()
    })
    .await;
    sup.do_send(StopTree {
        cause: "test".into(),
    });
    assert!(matches!(exit.await.unwrap(), TreeExit::Stopped { .. }));
}
