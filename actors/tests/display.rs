//! DisplayActor against a real Xvfb.
mod common;

use std::time::Duration;

use common::*;
use pagecast_actors::display::DisplaySpec;
use pagecast_actors::supervision::{Supervisor, TreeExit};

fn xdpyinfo_dimensions(display: &str) -> Option<String> {
    let out = std::process::Command::new("xdpyinfo")
        .args(["-display", display])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains("dimensions:"))
        .map(|l| l.trim().to_owned())
}

#[actix_rt::test]
async fn two_displays_at_once_get_different_numbers_and_go_away_on_stop() {
    let _heavy = pagecast_testkit::heavy();
    let spec = SMALL;
    let (a, b): (Cell<_>, Cell<_>) = (Default::default(), Default::default());
    let (sup_a, exit_a) = Supervisor::start(config("a"), vec![display_child(spec, a.clone())]);
    let (sup_b, exit_b) = Supervisor::start(config("b"), vec![display_child(spec, b.clone())]);
    until("both displays", Duration::from_secs(10), || {
        a.borrow().is_some() && b.borrow().is_some()
    })
    .await;
    let (a, b) = (a.borrow().unwrap(), b.borrow().unwrap());
    assert_ne!(
        a.number, b.number,
        "two recordings must not share a display"
    );
    for d in [a, b] {
        let dims = xdpyinfo_dimensions(&d.env()).expect("the display answers");
        assert!(
            dims.contains("656x376"),
            "the screen is the recorded area plus its margin: {dims}"
        );
    }
    stop_cleanly(&sup_a, exit_a).await;
    stop_cleanly(&sup_b, exit_b).await;
    for d in [a, b] {
        let socket = format!("/tmp/.X11-unix/X{}", d.number);
        until("the display socket to go", Duration::from_secs(5), || {
            !std::path::Path::new(&socket).exists()
        })
        .await;
        assert!(
            xdpyinfo_dimensions(&d.env()).is_none(),
            "display {} still answers",
            d.env()
        );
    }
}

#[actix_rt::test]
async fn a_display_that_dies_is_reported_as_a_crash() {
    let _heavy = pagecast_testkit::heavy();
    let info: Cell<_> = Default::default();
    let spec = DisplaySpec {
        width: 320,
        height: 240,
        depth: 24,
        refresh_hz: 0,
    };
    let (_sup, exit) = Supervisor::start(config("crash"), vec![display_child(spec, info.clone())]);
    until("the display", Duration::from_secs(10), || {
        info.borrow().is_some()
    })
    .await;
    let number = info.borrow().unwrap().number;
    // Find this display's Xvfb and kill it from outside, as a crash would.
    let pid = pagecast_testkit::descendants(std::process::id())
        .into_iter()
        .find(|(_, name)| name == "Xvfb")
        .expect("Xvfb is our child")
        .0;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), exit)
        .await
        .unwrap()
        .unwrap();
    match exit {
        TreeExit::GaveUp { child, reason } => {
            assert_eq!(child, "display");
            let text = reason.to_string();
            assert!(
                text.contains(&format!("display :{number} lost")) && text.contains("SIGKILL"),
                "{text}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}
