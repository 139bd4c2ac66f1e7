//! BrowserActor against real chromedriver + Chromium.
mod common;

use std::time::{Duration, Instant};

use common::*;
use pagecast_actors::browser::{BrowserActor, BrowserSpec, Navigate};
use pagecast_actors::supervision::{
    ChildSpec, ExitReason, FailureKind, Restart, Supervisor, TreeExit,
};

fn browser_tree(
    url: &str,
    dir: &std::path::Path,
) -> (
    actix::Addr<Supervisor>,
    tokio::sync::oneshot::Receiver<TreeExit>,
    Cell<actix::Addr<BrowserActor>>,
) {
    let display: Cell<_> = Default::default();
    let audio: Cell<_> = Default::default();
    let browser: Cell<actix::Addr<BrowserActor>> = Default::default();
    let spec = BrowserSpec {
        url: url.parse().unwrap(),
        width: 640,
        height: 360,
        work_dir: dir.join("browser"),
        chromium: "/usr/bin/chromium".into(),
        no_sandbox: nix::unistd::geteuid().is_root(),
        host_resolver_rules: None,
        proxy_port: None,
        secrets: Vec::new(),
        page_loaded: Default::default(),
        page: Default::default(),
        audio_ahead: false,
    };
    let (d, a, b) = (display.clone(), audio.clone(), browser.clone());
    let browser_child = ChildSpec::new(
        "browser",
        Restart::Permanent,
        Duration::from_secs(10),
        move |link| {
            let (spec, d, a, b) = (spec.clone(), d.clone(), a.clone(), b.clone());
            async move {
                let addr =
                    BrowserActor::start(&spec, &get(&d)?, &get(&a)?, false, None, link).await?;
                *b.borrow_mut() = Some(addr.clone());
                Ok(addr)
            }
        },
    );
    let children = vec![
        display_child(SMALL, display),
        audio_child(dir, "pagecast_browser_test", audio),
        browser_child,
    ];
    let (sup, exit) = Supervisor::start(config("browser"), children);
    (sup, exit, browser)
}

#[actix_rt::test]
async fn the_pages_end_recording_reaches_the_supervisor_and_only_the_exact_text_counts() {
    let _heavy = pagecast_testkit::heavy();
    let dir = tempfile::tempdir().unwrap();
    // The page logs "END_RECORDING " (trailing space) at 1 s and "END_RECORDING" at 2 s.
    let url = pagecast_testkit::test_page("end.html", "ms=2000");
    let (_sup, exit, browser) = browser_tree(&url, dir.path());
    until("the browser", Duration::from_secs(30), || {
        browser.borrow().is_some()
    })
    .await;
    let loading = Instant::now();
    browser.borrow().as_ref().unwrap().do_send(Navigate);
    let exit = tokio::time::timeout(Duration::from_secs(20), exit)
        .await
        .expect("no END_RECORDING")
        .unwrap();
    let after = loading.elapsed();
    assert_eq!(
        exit,
        TreeExit::Stopped {
            cause: "the page logged END_RECORDING".into(),
            failures: vec![]
        }
    );
    assert!(
        after >= Duration::from_millis(1900),
        "stopped after {after:?}: a near-miss text ended it"
    );
    // The profile directory is removed with the browser.
    assert!(!dir.path().join("browser").exists());
}

#[actix_rt::test]
async fn an_unreachable_page_is_an_input_failure() {
    let _heavy = pagecast_testkit::heavy();
    let dir = tempfile::tempdir().unwrap();
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_sup, exit, browser) = browser_tree(&format!("http://127.0.0.1:{port}/"), dir.path());
    until("the browser", Duration::from_secs(30), || {
        browser.borrow().is_some()
    })
    .await;
    browser.borrow().as_ref().unwrap().do_send(Navigate);
    let exit = tokio::time::timeout(Duration::from_secs(30), exit)
        .await
        .unwrap()
        .unwrap();
    match exit {
        TreeExit::GaveUp {
            child,
            reason: ExitReason::Failed(f),
        } => {
            assert_eq!(child, "browser");
            assert_eq!(f.kind, FailureKind::Input);
            assert!(
                f.message.contains(&format!("127.0.0.1:{port}"))
                    && f.message.contains("ERR_CONNECTION_REFUSED"),
                "{}",
                f.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}
