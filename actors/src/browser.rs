//! BrowserActor: the page being recorded.
//!
//! Owns: one chromedriver process (own process group, dies with the actor) and, through it and
//! fantoccini, one Chromium in kiosk mode on the recording's display, playing sound into the
//! recording's sink (`PULSE_SINK`), with a fresh profile directory removed on stop. Chromium is
//! started through `setpriv --pdeathsig KILL`, so it dies with chromedriver even on SIGKILL.
//! Accepts: [`Navigate`] (load the page, once; [`Load`] names the page first, for a warm tree;
//! the recording sends it once the encoder runs, so nothing of the page is missed; a restarted
//! browser loads the page by itself), [`SetLayout`] (a LiveKit layout page switches its layout in
//! place), [`Shutdown`], [`Kill`]; and its own `Painted`, from the page's load: the page painted
//! before its document was parsed (asked through DevTools: `devtools.rs`).
//! Sends: a stop request to its supervisor when the page logs exactly `END_RECORDING` to its
//! console (pushed by WebDriver BiDi `log.entryAdded`); opens the recording's [`StartGate`] when
//! the page logs exactly `START_RECORDING`, and closes it with the reason when the page logs
//! `PAGECAST_ERROR <reason>` (then the browser fails with an input failure: a page that can't do
//! its job is not fixed by a restart); [`ChildExited`](crate::supervision::ChildExited)
//! through its link when chromedriver dies, the BiDi socket closes (Chromium is gone), the page
//! stops answering a liveness probe (a crashed renderer) or the page can't be loaded.
//! For a page behind a login it also answers the requests it holds back (see [`crate::login`]):
//! each request to the page's origin goes on with the configured headers added.
//! Stops: on `Shutdown` (WebDriver session closed, which quits Chromium; then chromedriver).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::audio::AudioInfo;
use crate::devtools::{command, devtools_json, first_paint, stop_loading, Socket};
use crate::display::DisplayInfo;
use crate::gate::StartGate;
use crate::login::{HeldRequest, Login};
use crate::process::{ChildProcess, Redactor, Stdout};
use crate::secret::{mask_url, Secret};
use crate::supervision::{ChildLink, ExitReason, Failure, FailureKind, Kill, Shutdown};

/// The console text that ends a recording. Only an exact match counts.
pub const END_RECORDING: &str = "END_RECORDING";
/// The console text that says the page's content is there (see [`StartGate`]). Exact match.
pub const START_RECORDING: &str = "START_RECORDING";
/// The prefix of a console line by which a page reports that it cannot do its job (a LiveKit
/// layout that cannot join its room); the rest of the line is the reason.
pub const PAGE_ERROR_PREFIX: &str = "PAGECAST_ERROR";

const DRIVER_TIMEOUT: Duration = Duration::from_secs(10);
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long navigation may take to bring the page's document (see `pageLoadStrategy` below):
/// past it the page is recorded as it is.
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often a loaded page is asked whether it is alive, and how long it may take to answer.
/// A busy page still answers within seconds; a crashed renderer errors at once.
const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the browser shows and how.
#[derive(Debug, Clone)]
pub struct BrowserSpec {
    pub url: url::Url,
    pub width: u32,
    pub height: u32,
    /// A directory of this recording's own for the profile and the launcher script.
    pub work_dir: PathBuf,
    /// The Chromium binary.
    pub chromium: PathBuf,
    /// Run without Chromium's sandbox (needed as root, and in most containers).
    pub no_sandbox: bool,
    /// Chromium's `--host-resolver-rules` (`MAP host address, ...`): the service policy pins the
    /// page's host to the address it checked, so DNS cannot answer differently for the load.
    pub host_resolver_rules: Option<String>,
    /// The page proxy every request of the page goes through (an untrusted page under the
    /// service policy), if any.
    pub proxy_port: Option<u16>,
    /// Values the page's address carries that must not be logged (a LiveKit token): replaced by
    /// `****` in everything the page and chromedriver print.
    pub secrets: Vec<Secret>,
    /// Set once the page is there (its document parsed, or sooner its first paint, in any
    /// browser of the recording; its images and other subresources may still be arriving): from
    /// then on what was recorded holds the page, and is kept whatever happens.
    pub page_loaded: tokio::sync::watch::Sender<bool>,
    /// How the page is shown beyond its address.
    pub page: PageOptions,
    /// Start Chromium's audio output before the page is asked for (a browser's first start, not
    /// a restart, which loads its page at once): see [`AUDIO_AHEAD`].
    pub audio_ahead: bool,
}

/// Run on the blank page a browser starts with: an audio context opened and closed at once.
/// Chromium starts its audio service and asks PulseAudio for the output's parameters on a page's
/// first audio context, and the page's script (so its first paint) waits for that. Done ahead, while
/// the encoder starts (or a warm tree waits), a page that plays sound is on tape about 0.1 s
/// sooner, cold or warm (`bench/run.sh --start`, BENCHMARKS.md). Nothing plays, and the blank
/// page is gone with the page's navigation.
const AUDIO_AHEAD: &str =
    "const c = new AudioContext(); const state = c.state; c.close(); return state;";

/// What a page may need beyond its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageOptions {
    /// WebGL through software GL (SwiftShader); off: `webgl`/`webgl2` contexts are null.
    pub webgl: bool,
    /// Accept an invalid TLS certificate (self-signed, expired, wrong host).
    pub insecure: bool,
    /// Cookies and same-origin headers for a page behind a login.
    pub login: Login,
}

impl Default for PageOptions {
    fn default() -> Self {
        Self {
            webgl: true,
            insecure: false,
            login: Login::default(),
        }
    }
}

/// Message: load the page now.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Navigate;

/// Message: load this page now (a warm tree's browser, started on a blank page before its job
/// named the page); then as [`Navigate`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Load(pub url::Url);

/// Message: switch the layout page to another layout (`grid-dark`, ...) in place, without
/// reloading (the room stays connected): WebDriver calls the page's `pagecastSetLayout`.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct SetLayout(pub String);

/// The Chromium command-line flags for `spec`.
pub fn chromium_args(spec: &BrowserSpec, profile: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--kiosk".into(),
        "--window-position=0,0".into(),
        format!("--window-size={},{}", spec.width, spec.height),
        format!("--user-data-dir={}", profile.display()),
        "--force-device-scale-factor=1".into(),
        // Sound must play without a click: nobody clicks in a recording.
        "--autoplay-policy=no-user-gesture-required".into(),
        // A closed network: no background fetches, updates, sync or QUIC probes.
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--no-default-browser-check".into(),
        "--password-store=basic".into(),
        // Containers have a tiny /dev/shm.
        "--disable-dev-shm-usage".into(),
        // Keep rendering at full rate: nothing is "in the background" in a recording.
        "--disable-background-timer-throttling".into(),
        "--disable-backgrounding-occluded-windows".into(),
        "--disable-renderer-backgrounding".into(),
        "--hide-scrollbars".into(),
        "--noerrdialogs".into(),
        "--disable-session-crashed-bubble".into(),
        "--disable-features=Translate,MediaRouter,OptimizationHints,DialMediaRouteProvider".into(),
        // No GPU on a virtual display: software compositing, without GPU-process probing.
        "--disable-gpu".into(),
        // Hides the "unsupported flag" infobar --no-sandbox would show.
        "--test-type".into(),
    ];
    if spec.page.webgl {
        // WebGL and WebGL 2 on SwiftShader through ANGLE, as Chromium ships it: without a GPU,
        // --disable-gpu alone leaves every WebGL context null. Compositing stays in software;
        // the cost on a page without WebGL is measured in BENCHMARKS.md.
        args.push("--use-angle=swiftshader".into());
        args.push("--enable-unsafe-swiftshader".into());
    } else {
        args.push("--disable-webgl".into());
    }
    if spec.no_sandbox {
        args.push("--no-sandbox".into());
    }
    if let Some(rules) = &spec.host_resolver_rules {
        args.push(format!("--host-resolver-rules={rules}"));
    }
    if let Some(port) = spec.proxy_port {
        args.extend(crate::page_proxy::chromium_args(port));
    }
    args
}

pub struct BrowserActor {
    link: ChildLink,
    /// The viewport the page should get.
    size: (u32, u32),
    driver: ChildProcess,
    client: Option<fantoccini::Client>,
    /// Chromium's DevTools endpoint, host:port on loopback.
    debugger: String,
    url: url::Url,
    work_dir: PathBuf,
    stopping: bool,
    /// Navigate was handled (it is handled once).
    navigated: bool,
    /// The page loaded: from now on it is probed.
    loaded: bool,
    page_loaded: tokio::sync::watch::Sender<bool>,
    probing: bool,
    /// Load the page as soon as the actor runs (a restart: the encoder is already recording).
    navigate_at_start: bool,
    /// Start Chromium's audio output as soon as the actor runs (see [`AUDIO_AHEAD`]).
    audio_ahead: bool,
    /// Where BiDi liveness probes are sent; shared with the task sending one.
    bidi: Rc<tokio::sync::Mutex<BidiSink>>,
    /// The BiDi probe awaiting its answer: its id and when it was sent.
    bidi_probe: Option<(u64, Instant)>,
    next_id: u64,
    /// Opened by the page's START_RECORDING, when the recording waits for it.
    gate: Option<StartGate>,
    /// The headers added to every held-back request to the page's origin.
    headers: Vec<(String, Secret)>,
    /// Where held-back requests are answered (CDP on the browser target), with headers to add.
    cdp: Option<Rc<tokio::sync::Mutex<BidiSink>>>,
}

impl BrowserActor {
    /// Starts chromedriver and Chromium (on a blank page); resolves once the browser is up and its
    /// console is being watched. Send [`Navigate`] to load the page.
    pub async fn start(
        spec: &BrowserSpec,
        display: &DisplayInfo,
        audio: &AudioInfo,
        navigate_at_start: bool,
        gate: Option<StartGate>,
        link: ChildLink,
    ) -> Result<Addr<BrowserActor>, Failure> {
        // A restart starts from a fresh profile: a crashed one may be locked or corrupt.
        let _ = std::fs::remove_dir_all(&spec.work_dir);
        let profile = spec.work_dir.join("profile");
        std::fs::create_dir_all(&profile).map_err(|e| {
            Failure::crashed(format!("browser: cannot create {}: {e}", profile.display()))
        })?;
        let launcher = write_launcher(&spec.work_dir, &spec.chromium)?;
        // Chromium's own temporary files (its singleton socket directory among them, which a
        // killed Chromium never removes) stay inside the work directory, which goes with the run.
        let tmp = spec.work_dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| {
            Failure::crashed(format!("browser: cannot create {}: {e}", tmp.display()))
        })?;

        let command = || {
            let mut cmd = Command::new("chromedriver");
            cmd.args(["--port=0", "--log-level=WARNING"])
                .env("TMPDIR", &tmp)
                .env("DISPLAY", display.env())
                .env("PULSE_SERVER", &audio.server)
                .env("PULSE_SINK", &audio.sink);
            cmd
        };
        let secrets = redacted(spec);
        let (driver, port) = start_driver(command, &secrets).await?;

        let caps = json!({
            "browserName": "chrome",
            "webSocketUrl": true,
            // Navigation returns once the document is parsed (DOMContentLoaded), not at the load
            // event: a page shows itself long before its last image or tracker answers, and one
            // request that never answers would otherwise hold the load event (and so the page
            // counted as there, which keeps the recording) for the whole page-load timeout.
            "pageLoadStrategy": "eager",
            "unhandledPromptBehavior": "dismiss",
            "acceptInsecureCerts": spec.page.insecure,
            "timeouts": { "pageLoad": PAGE_LOAD_TIMEOUT.as_millis() as u64 },
            "goog:chromeOptions": {
                "binary": launcher,
                "args": chromium_args(spec, &profile),
                "excludeSwitches": ["enable-automation"],
            },
        });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = fantoccini::ClientBuilder::new(connector);
        builder.capabilities(caps);
        let webdriver = format!("http://127.0.0.1:{port}");
        let session = builder.connect(&webdriver);
        let client = match tokio::time::timeout(SESSION_TIMEOUT, session).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(Failure::crashed(format!(
                    "browser: Chromium did not start: {e}"
                )))
            }
            Err(_) => {
                return Err(Failure::new(
                    FailureKind::Timeout,
                    format!("browser: Chromium did not start within {SESSION_TIMEOUT:?}"),
                ))
            }
        };
        let ws_url = client
            .capabilities()
            .and_then(|c| c.get("webSocketUrl"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(ws_url) = ws_url else {
            let _ = client.close().await;
            return Err(Failure::crashed(
                "browser: chromedriver offers no WebDriver BiDi socket (webSocketUrl)",
            ));
        };
        let (bidi, events) = match open_bidi(&ws_url, &spec.page.login).await {
            Ok(socket) => socket,
            Err(e) => {
                let _ = client.close().await;
                return Err(Failure::crashed(format!(
                    "browser: WebDriver BiDi: {}",
                    driver.redactor().redact(&e)
                )));
            }
        };
        // Chromium's DevTools endpoint (loopback): for the page's headers, and to stop a load
        // that never ends.
        let debugger = client
            .capabilities()
            .and_then(|c| c.get("goog:chromeOptions"))
            .and_then(|o| o.get("debuggerAddress"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default();
        let held = if spec.page.login.headers.is_empty() {
            None
        } else {
            match open_fetch(&debugger, &spec.url).await {
                Ok(socket) => Some(socket),
                Err(e) => {
                    let _ = client.close().await;
                    return Err(Failure::crashed(format!(
                        "browser: cannot add the page's headers (CDP Fetch at {debugger}): {e}"
                    )));
                }
            }
        };
        let x_display = display.env();
        tracing::info!(pid = driver.pid(), display = %x_display, sink = %audio.sink, "browser ready");
        let actor = BrowserActor {
            link,
            size: (spec.width, spec.height),
            driver,
            client: Some(client),
            debugger,
            url: spec.url.clone(),
            work_dir: spec.work_dir.clone(),
            stopping: false,
            navigated: false,
            loaded: false,
            page_loaded: spec.page_loaded.clone(),
            probing: false,
            navigate_at_start,
            audio_ahead: spec.audio_ahead,
            bidi: Rc::new(tokio::sync::Mutex::new(bidi)),
            bidi_probe: None,
            next_id: 100,
            gate,
            headers: spec.page.login.headers.clone(),
            cdp: None,
        };
        Ok(BrowserActor::create(|ctx| {
            ctx.add_stream(events);
            let mut actor = actor;
            if let Some((sink, held)) = held {
                actor.cdp = Some(Rc::new(tokio::sync::Mutex::new(sink)));
                ctx.add_stream(held);
            }
            actor
        }))
    }

    /// Checks that the browser is alive: the BiDi socket must answer a `browsingContext.getTree` (the
    /// console is watched through it: a dead BiDi side would lose END_RECORDING silently), and
    /// the loaded page must answer a trivial script (a crashed renderer errors).
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        // While the page is being loaded chromedriver answers nothing else, BiDi included: a
        // load that takes long (a script that never arrives holds it up to the page-load
        // timeout) is not a lost browser. The load's own end, or its timeout, comes first.
        if self.navigated && !self.loaded {
            self.bidi_probe = None;
            return;
        }
        match self.bidi_probe {
            Some((_, sent)) if sent.elapsed() > PROBE_TIMEOUT => {
                let failure = Failure::crashed(format!(
                    "browser lost: WebDriver BiDi did not answer within {PROBE_TIMEOUT:?}"
                ));
                return self.fail(failure, ctx);
            }
            Some(_) => {}
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.bidi_probe = Some((id, Instant::now()));
                let bidi = self.bidi.clone();
                let msg = json!({ "id": id, "method": "browsingContext.getTree", "params": {} })
                    .to_string();
                // A failed send shows up as a missing answer or a closed socket.
                ctx.spawn(actix::fut::wrap_future(async move {
                    let _ = bidi.lock().await.send(WsMessage::text(msg)).await;
                }));
            }
        }
        if !self.loaded || self.probing {
            return;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        self.probing = true;
        let ask = async move {
            match tokio::time::timeout(PROBE_TIMEOUT, client.execute("return 1;", vec![])).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(first_line(&e.to_string()).to_owned()),
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            }
        };
        ctx.spawn(
            actix::fut::wrap_future(ask).map(|result, act: &mut Self, ctx| {
                tracing::trace!(?result, "page probe");
                act.probing = false;
                if let Err(e) = result {
                    act.fail(
                        Failure::crashed(format!("browser lost: the page does not answer ({e})")),
                        ctx,
                    );
                }
            }),
        );
    }

    fn fail(&mut self, failure: Failure, ctx: &mut Context<Self>) {
        if !self.stopping {
            self.stopping = true;
            // The encoder's start is waiting for this page: it won't come now. Tell it why rather
            // than let it wait out its limit (its supervisor can't restart us while it waits).
            if let Some(gate) = &self.gate {
                gate.close(failure.clone());
            }
            self.link.set_exit(ExitReason::Failed(failure));
            let close = self.close();
            ctx.wait(actix::fut::wrap_future(close));
            ctx.stop();
        }
    }

    /// Closes the session (Chromium quits), then stops chromedriver and removes the profile.
    fn close(&mut self) -> impl std::future::Future<Output = ()> + 'static {
        let client = self.client.take();
        let terminate = self.driver.terminate(STOP_GRACE);
        let work_dir = self.work_dir.clone();
        async move {
            if let Some(client) = client {
                if tokio::time::timeout(CLOSE_TIMEOUT, client.close())
                    .await
                    .is_err()
                {
                    tracing::warn!("browser did not close its session in time");
                }
            }
            terminate.await;
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work_dir)).await;
        }
    }
}

/// A script that starts Chromium with a parent-death signal: chromedriver is Chromium's parent,
/// and when it dies (even by SIGKILL) Chromium must die too rather than linger on the display.
fn write_launcher(dir: &Path, chromium: &Path) -> Result<PathBuf, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("chromium");
    let script = format!(
        "#!/bin/sh\nexec setpriv --pdeathsig KILL {} \"$@\"\n",
        shell_quote(&chromium.to_string_lossy())
    );
    std::fs::write(&path, script)
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| Failure::crashed(format!("browser: cannot write {}: {e}", path.display())))?;
    Ok(path)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Everything the page and chromedriver print is cleaned of: the address's secrets (a LiveKit
/// token; see [`url_secrets`]), header and cookie values.
fn redacted(spec: &BrowserSpec) -> Vec<Secret> {
    let mut secrets = spec.secrets.clone();
    secrets.extend(url_secrets(&spec.url));
    secrets.extend(spec.page.login.secrets());
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// The parts of a page address that may be credentials, as written and percent-decoded: the
/// basic-auth password, and the user name and the values in the query and fragment (each
/// `key=value`'s value, or a word without `=`) that look like tokens: at least [`TOKEN_LEN`]
/// long and without a blank once decoded. Shorter ones (`?layout=grid`, `#t=1`) would blank out
/// common words and numbers of every log line, and text (`?error=cannot%20join`) is what a page
/// may rightly say back.
fn url_secrets(url: &url::Url) -> Vec<Secret> {
    let mut secrets = Vec::new();
    let mut add = |part: &str, decoded: &str| {
        secrets.push(Secret::new(part));
        if decoded != part {
            secrets.push(Secret::new(decoded));
        }
    };
    // The password is a secret whatever it holds.
    if let Some(password) = url.password() {
        add(
            password,
            &percent_encoding::percent_decode_str(password).decode_utf8_lossy(),
        );
    }
    let mut words = vec![url.username()];
    for text in [url.query(), url.fragment()].into_iter().flatten() {
        let query = text.split_once('?').map_or(text, |(_, q)| q);
        words.extend(
            query
                .split('&')
                .map(|pair| pair.split_once('=').map_or(pair, |(_, v)| v)),
        );
    }
    for word in words.into_iter().filter(|w| w.len() >= TOKEN_LEN) {
        let decoded = percent_encoding::percent_decode_str(word).decode_utf8_lossy();
        if !decoded.contains(char::is_whitespace) {
            add(word, &decoded);
        }
    }
    secrets
}

/// The shortest query or fragment value [`url_secrets`] takes for a credential.
const TOKEN_LEN: usize = 8;

/// How often chromedriver is started when the port it picked was taken (see [`start_driver`]).
const DRIVER_TRIES: u32 = 3;

/// Starts chromedriver (`command()`) and reads the port it listens on. With `--port=0` it picks
/// a free port on one loopback address and then binds the same number on the other, which another
/// process may hold: it exits with "Address already in use", and is started again (a busy host,
/// or many recordings starting at once, saw it).
async fn start_driver(
    command: impl Fn() -> Command,
    secrets: &[Secret],
) -> Result<(ChildProcess, u16), Failure> {
    let mut tries = 0;
    loop {
        tries += 1;
        let (driver, stdout) = ChildProcess::spawn_redacting(
            "chromedriver",
            command(),
            false,
            Stdout::Capture,
            secrets.iter().map(|s| s.expose().to_owned()).collect(),
        )
        .map_err(|e| e.into_failure())?;
        let port = read_driver_port(stdout.expect("captured"), driver.redactor());
        match tokio::time::timeout(DRIVER_TIMEOUT, port).await {
            Ok(Some(port)) => return Ok((driver, port)),
            Ok(None) => {
                let (_, report) = driver.exit_report().await;
                if report.contains("Address already in use") && tries < DRIVER_TRIES {
                    tracing::warn!(error = %report, "chromedriver's port was taken; starting it again");
                    continue;
                }
                return Err(Failure::crashed(format!("browser: {report}")));
            }
            Err(_) => {
                return Err(Failure::new(
                    FailureKind::Timeout,
                    format!("browser: chromedriver did not start within {DRIVER_TIMEOUT:?}"),
                ))
            }
        }
    }
}

/// Reads chromedriver's stdout until it says which port it listens on; keeps logging the rest,
/// cleaned by `secrets` (chromedriver's own: a warm browser's page address is added at its Load).
async fn read_driver_port(stdout: tokio::process::ChildStdout, secrets: Redactor) -> Option<u16> {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = secrets.redact(&line);
        tracing::debug!(target: "pagecast::child", process = "chromedriver", "{line}");
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            let port = rest.trim_end_matches('.').trim().parse().ok();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = secrets.redact(&line);
                    tracing::debug!(target: "pagecast::child", process = "chromedriver", "{line}");
                }
            });
            return port;
        }
    }
    None
}

/// Connects to Chromium's DevTools endpoint (`debugger`, host:port, loopback: chromedriver opened
/// it) at the browser target and holds back every request to `page`'s origin; the stream yields
/// them, and the socket's end (Chromium gone).
async fn open_fetch(
    debugger: &str,
    page: &url::Url,
) -> Result<(BidiSink, impl futures_util::Stream<Item = PageEvent>), String> {
    let answer = devtools_json(debugger, "/json/version").await?;
    let ws_url = answer
        .get("webSocketDebuggerUrl")
        .and_then(Value::as_str)
        .ok_or("no webSocketDebuggerUrl in /json/version")?;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .map_err(|e| e.to_string())?;
    command(&mut ws, crate::login::fetch_enable(1, page), "Fetch.enable").await?;
    let (sink, stream) = ws.split();
    let events = stream.filter_map(|msg| async move {
        match msg {
            Ok(WsMessage::Text(text)) => {
                let v: Value = serde_json::from_str(&text).ok()?;
                if v.get("method")?.as_str()? != "Fetch.requestPaused" {
                    return None;
                }
                crate::login::held_request(v.get("params")?).map(PageEvent::Held)
            }
            Ok(WsMessage::Close(frame)) => Some(PageEvent::Closed(
                frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            )),
            Ok(_) => None,
            Err(e) => Some(PageEvent::Closed(e.to_string())),
        }
    });
    let events = events.chain(futures_util::stream::once(async {
        PageEvent::Closed("DevTools socket ended".into())
    }));
    Ok((sink, events))
}

/// What the BiDi socket tells the actor.
#[derive(Debug)]
enum PageEvent {
    Console {
        level: String,
        text: String,
    },
    /// The answer to a command we sent (a liveness probe).
    Reply {
        id: u64,
    },
    /// A request to the page's origin waits for its headers.
    Held(HeldRequest),
    /// The socket closed or failed: the browser is gone.
    Closed(String),
}

/// The sending half of the BiDi socket (or of the DevTools one).
type BidiSink = futures_util::stream::SplitSink<Socket, WsMessage>;

/// Connects to the BiDi socket, subscribes to console entries and sets the page's cookies. Every
/// command is answered before this returns, so nothing of the page can come before it.
async fn open_bidi(
    ws_url: &str,
    login: &Login,
) -> Result<(BidiSink, impl futures_util::Stream<Item = PageEvent>), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .map_err(|e| e.to_string())?;
    let subscribe = json!({
        "id": 1,
        "method": "session.subscribe",
        "params": { "events": ["log.entryAdded"] },
    });
    command(&mut ws, subscribe, "session.subscribe").await?;
    for (i, cookie) in login.cookies.iter().enumerate() {
        let set = crate::login::set_cookie(2 + i as u64, cookie);
        command(&mut ws, set, &format!("setting the cookie {}", cookie.name)).await?;
    }
    let (sink, stream) = ws.split();
    let events = stream.filter_map(|msg| async move {
        match msg {
            Ok(WsMessage::Text(text)) => parse_console(&text),
            Ok(WsMessage::Close(frame)) => Some(PageEvent::Closed(
                frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            )),
            Ok(_) => None,
            Err(e) => Some(PageEvent::Closed(e.to_string())),
        }
    });
    // A stream that ends without a close frame is a closed socket too.
    let events = events.chain(futures_util::stream::once(async {
        PageEvent::Closed("socket ended".into())
    }));
    Ok((sink, events))
}

/// What a console line means to the recording.
#[derive(Debug, PartialEq, Eq)]
enum PageSignal {
    Start,
    End,
    Error(String),
}

fn page_signal(text: &str) -> Option<PageSignal> {
    if text == END_RECORDING {
        return Some(PageSignal::End);
    }
    if text == START_RECORDING {
        return Some(PageSignal::Start);
    }
    let reason = text.strip_prefix(PAGE_ERROR_PREFIX)?;
    // "PAGECAST_ERRORS" is not ours; "PAGECAST_ERROR" alone or followed by a space or colon is.
    if !(reason.is_empty() || reason.starts_with([' ', ':'])) {
        return None;
    }
    let reason = reason.trim_start_matches(':').trim();
    let reason = reason.lines().next().unwrap_or_default();
    Some(PageSignal::Error(if reason.is_empty() {
        "an unspecified error".to_owned()
    } else {
        reason.to_owned()
    }))
}

fn parse_console(text: &str) -> Option<PageEvent> {
    let v: Value = serde_json::from_str(text).ok()?;
    if let Some(id) = v.get("id").and_then(Value::as_u64) {
        return Some(PageEvent::Reply { id });
    }
    if v.get("method")?.as_str()? != "log.entryAdded" {
        return None;
    }
    let params = v.get("params")?;
    Some(PageEvent::Console {
        level: params.get("level")?.as_str()?.to_owned(),
        text: params.get("text")?.as_str().unwrap_or_default().to_owned(),
    })
}

impl StreamHandler<PageEvent> for BrowserActor {
    fn handle(&mut self, event: PageEvent, ctx: &mut Context<Self>) {
        match event {
            PageEvent::Console { level, text } => {
                let text = self.driver.redactor().redact(&text);
                tracing::debug!(target: "pagecast::page", level = %level, "{text}");
                if self.stopping {
                    return;
                }
                match page_signal(&text) {
                    Some(PageSignal::End) => {
                        tracing::info!(message = crate::events::PAGE_ENDED);
                        if let Some(gate) = &self.gate {
                            gate.close(Failure::new(
                                FailureKind::Input,
                                "the page logged END_RECORDING before START_RECORDING: nothing to record",
                            ));
                        }
                        self.link.stop_tree(crate::events::PAGE_ENDED);
                    }
                    Some(PageSignal::Start) if self.gate.as_ref().is_some_and(StartGate::open) => {
                        tracing::info!(message = crate::events::PAGE_STARTED);
                    }
                    Some(PageSignal::Start) => {}
                    Some(PageSignal::Error(reason)) => {
                        let failure = Failure::new(
                            FailureKind::Input,
                            format!("the page reported: {reason}"),
                        );
                        self.fail(failure, ctx);
                    }
                    None => {}
                }
            }
            PageEvent::Reply { id } => {
                if self.bidi_probe.is_some_and(|(pending, _)| pending == id) {
                    self.bidi_probe = None;
                }
            }
            PageEvent::Held(held) => {
                let Some(cdp) = self.cdp.clone() else { return };
                let id = self.next_id;
                self.next_id += 1;
                let msg = crate::login::continue_request(id, &held, &self.url, &self.headers);
                // A request that went away meanwhile (a navigation) answers with an error: fine.
                ctx.spawn(actix::fut::wrap_future(async move {
                    let _ = cdp
                        .lock()
                        .await
                        .send(WsMessage::text(msg.to_string()))
                        .await;
                }));
            }
            PageEvent::Closed(reason) => {
                if !self.stopping {
                    let code = self.driver.status();
                    let detail = if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    };
                    let failure = Failure::crashed(format!(
                        "browser lost: the connection to Chromium closed{detail}{}",
                        code.map(|s| format!(
                            "; chromedriver {}",
                            crate::process::describe_status(s)
                        ))
                        .unwrap_or_default()
                    ));
                    self.fail(failure, ctx);
                }
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The stream ends with a Closed event (handled above); do not stop the actor here.
    }
}

impl Actor for BrowserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(actix::fut::wrap_future(self.driver.exit_report()).map(
            |(_, report), act: &mut Self, ctx| {
                act.fail(Failure::crashed(format!("browser lost: {report}")), ctx);
            },
        ));
        ctx.run_interval(PROBE_EVERY, |act, ctx| act.probe(ctx));
        if let Some(client) = self.client.clone().filter(|_| self.audio_ahead) {
            let secrets = self.driver.redactor();
            // Not awaited: it goes on while the encoder starts, and a Navigate queues behind it.
            // Best effort: a page without sound does not need it, one with sound starts it itself.
            ctx.spawn(actix::fut::wrap_future(async move {
                match client.execute(AUDIO_AHEAD, vec![]).await {
                    Ok(state) => tracing::info!(
                        state = state.as_str().unwrap_or_default(),
                        "{}",
                        crate::events::BROWSER_AUDIO_AHEAD
                    ),
                    // Cleaned like everything WebDriver says: it may name the page.
                    Err(e) => tracing::warn!(
                        error = %secrets.redact(first_line(&e.to_string())),
                        "could not start the browser's audio ahead of the page"
                    ),
                }
            }));
        }
        if self.navigate_at_start {
            ctx.notify(Navigate);
        }
    }
}

impl Handler<Load> for BrowserActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, Load(url): Load, ctx: &mut Context<Self>) -> Self::Result {
        if !self.navigated {
            // A warm tree's browser started on a blank page: what it, chromedriver and Chromium
            // print from now on is cleaned of this address's secrets too.
            self.driver
                .redactor()
                .add(url_secrets(&url).iter().map(|s| s.expose().to_owned()));
            self.url = url;
        }
        <Self as Handler<Navigate>>::handle(self, Navigate, ctx)
    }
}

impl Handler<Navigate> for BrowserActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Navigate, ctx: &mut Context<Self>) -> Self::Result {
        let Some(client) = self.client.clone().filter(|_| !self.navigated) else {
            return Box::pin(actix::fut::ready(()));
        };
        self.navigated = true;
        let url = self.url.clone();
        let size = self.size;
        let shown = mask_url(url.as_str());
        let secrets = self.driver.redactor();
        let debugger = self.debugger.clone();
        let actor = ctx.address();
        tracing::info!(url = %shown, "loading the page");
        let load = async move {
            // What the page shows before its document is parsed (a parser waiting for a slow
            // script) is the page too: once it paints, the recording holds it.
            let goto = client.goto(url.as_str());
            tokio::pin!(goto);
            let loaded = tokio::select! {
                loaded = &mut goto => loaded,
                () = first_paint(&debugger) => {
                    actor.do_send(Painted);
                    goto.await
                }
            };
            match loaded {
                Ok(()) => {}
                // A page whose document is slow to arrive still shows what has: record it. Its
                // load is stopped, as a user would press Esc: until then chromedriver would hold
                // every later command (the probes among them) for the load.
                Err(e) if e.to_string().contains("timeout") => {
                    tracing::warn!(url = %shown, "the page's document did not arrive in time; recording it as it is");
                    if let Err(e) = stop_loading(&debugger).await {
                        tracing::warn!(error = %e, "could not stop the page's load");
                    }
                }
                Err(e) => {
                    let error = secrets.redact(first_line(&e.to_string()));
                    return Err(load_failure(&shown, &error));
                }
            }
            // Chromium's own error page (an untrusted certificate's warning) loads fine as far as
            // WebDriver is concerned; it names the error.
            let error_page = client
                .execute(
                    "if (location.protocol !== 'chrome-error:') return null; const c = document.querySelector('#error-code'); return (c && c.textContent.trim()) || 'Chromium showed its error page';",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            if let Some(error) = error_page {
                return Err(load_failure(&shown, &secrets.redact(first_line(&error))));
            }
            // An HTTP error page loads fine as far as WebDriver is concerned.
            let status = client
                .execute(
                    "const e = performance.getEntriesByType('navigation')[0]; return e ? (e.responseStatus || 0) : 0;",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            if status >= 400 {
                return Err(Failure::new(
                    FailureKind::Input,
                    format!("could not load {shown}: the server answered HTTP {status}"),
                ));
            }
            let viewport = client
                .execute("return innerWidth + 'x' + innerHeight;", vec![])
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            tracing::info!(url = %shown, viewport = %viewport, message = crate::events::PAGE_LOADED);
            if viewport != format!("{}x{}", size.0, size.1) {
                tracing::warn!(viewport = %viewport, expected = %format!("{}x{}", size.0, size.1), "the page's viewport is not the recorded size");
            }
            Ok(())
        };
        Box::pin(
            actix::fut::wrap_future(load).map(|result, act: &mut Self, ctx| match result {
                Ok(()) => {
                    act.loaded = true;
                    act.page_loaded.send_replace(true);
                }
                Err(failure) => act.fail(failure, ctx),
            }),
        )
    }
}

/// Message (from the page's load to its actor): the page has shown its content while its
/// document is still arriving.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Painted;

impl Handler<Painted> for BrowserActor {
    type Result = ();

    fn handle(&mut self, _: Painted, _: &mut Context<Self>) {
        // Already there (loaded, or in an earlier browser of the recording): nothing to add.
        if !*self.page_loaded.borrow() {
            tracing::info!(url = %mask_url(self.url.as_str()), message = crate::events::PAGE_PAINTED);
            self.page_loaded.send_replace(true);
        }
    }
}

impl Handler<SetLayout> for BrowserActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, SetLayout(layout): SetLayout, _: &mut Context<Self>) -> Self::Result {
        let client = self.client.clone().filter(|_| self.loaded);
        Box::pin(async move {
            let client = client.ok_or("the page is not loaded yet")?;
            let answer = client
                .execute(
                    "return typeof window.pagecastSetLayout === 'function' \
                     ? window.pagecastSetLayout(arguments[0]) : 'the page is not a pagecast layout';",
                    vec![serde_json::json!(layout)],
                )
                .await
                .map_err(|e| first_line(&e.to_string()).to_owned())?;
            match answer.as_str() {
                Some("ok") => Ok(()),
                Some(other) => Err(other.to_owned()),
                None => Err(format!("the page answered {answer}")),
            }
        })
    }
}

/// The page could not be loaded: `error` (already redacted), and what would fix it when it is the
/// page's certificate.
fn load_failure(shown: &str, error: &str) -> Failure {
    let hint = if error.to_ascii_uppercase().contains("ERR_CERT_") {
        "; the page's TLS certificate is not trusted (input.insecure: true accepts it)"
    } else {
        ""
    };
    Failure::new(
        FailureKind::Input,
        format!("could not load {shown}: {error}{hint}"),
    )
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

impl Handler<Shutdown> for BrowserActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        self.link.set_exit(ExitReason::Shutdown);
        let close = self.close();
        Box::pin(
            actix::fut::wrap_future(close).map(|(), _, ctx: &mut Context<Self>| {
                ctx.stop();
                Ok(())
            }),
        )
    }
}

impl Handler<Kill> for BrowserActor {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.stopping = true;
        self.link.set_exit(ExitReason::Shutdown);
        self.driver.signal(nix::sys::signal::Signal::SIGKILL);
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// chromedriver exits when the port it picked is taken on its second loopback address: it is
    /// started again, up to DRIVER_TRIES times; any other exit is the failure it was.
    #[tokio::test]
    async fn a_driver_whose_port_was_taken_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("starts");
        let fake = |fail_first: u32| {
            let count = count.clone();
            move || {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(format!(
                    "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; \
                     if [ $n -le {fail_first} ]; then \
                       echo '[SEVERE]: bind() failed: Address already in use (98)' >&2; exit 1; \
                     fi; echo 'ChromeDriver was started successfully on port 4444.'; sleep 30",
                    c = count.display()
                ));
                cmd
            }
        };
        let (driver, port) = start_driver(fake(2), &[]).await.unwrap();
        assert_eq!(port, 4444);
        assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "3");
        drop(driver);
        std::fs::remove_file(&count).unwrap();
        let failure = start_driver(fake(3), &[]).await.err().unwrap();
        assert!(
            failure.message.contains("Address already in use"),
            "{failure:?}"
        );
        assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "3");
    }

    #[test]
    fn page_signals_are_exact() {
        assert_eq!(page_signal("START_RECORDING"), Some(PageSignal::Start));
        assert_eq!(page_signal("END_RECORDING"), Some(PageSignal::End));
        assert_eq!(page_signal("START_RECORDING now"), None);
        assert_eq!(page_signal(" END_RECORDING"), None);
        assert_eq!(
            page_signal("PAGECAST_ERROR could not connect to ws://127.0.0.1:7880: refused"),
            Some(PageSignal::Error(
                "could not connect to ws://127.0.0.1:7880: refused".into()
            ))
        );
        assert_eq!(
            page_signal("PAGECAST_ERROR: bad"),
            Some(PageSignal::Error("bad".into()))
        );
        assert_eq!(
            page_signal("PAGECAST_ERROR first\nsecond"),
            Some(PageSignal::Error("first".into()))
        );
        assert_eq!(
            page_signal("PAGECAST_ERROR"),
            Some(PageSignal::Error("an unspecified error".into()))
        );
        assert_eq!(page_signal("PAGECAST_ERRORS happen"), None);
        assert_eq!(page_signal("error PAGECAST_ERROR x"), None);
    }

    #[test]
    fn a_page_address_s_credentials_are_redacted_and_its_short_words_are_not() {
        let url = url::Url::parse(
            "https://userTOKEN1234:p%40ss@h/p?layout=grid&token=TOKEN%2F5678&BAREWORD99&e=cannot%20join%20here&b=A+B%2Fbase64#/x?t=FRAGTOKEN9",
        )
        .unwrap();
        let secrets: Vec<String> = url_secrets(&url)
            .iter()
            .map(|s| s.expose().to_owned())
            .collect();
        for part in [
            "p%40ss",
            "p@ss",
            "userTOKEN1234",
            "TOKEN%2F5678",
            "TOKEN/5678",
            "BAREWORD99",
            "FRAGTOKEN9",
            "A+B%2Fbase64",
        ] {
            assert!(
                secrets.iter().any(|s| s == part),
                "{part} missing: {secrets:?}"
            );
        }
        for word in ["grid", "cannot%20join%20here", "cannot join here"] {
            assert!(!secrets.iter().any(|s| s == word), "{word}: {secrets:?}");
        }
        let line = "page at https://h/p?token=TOKEN/5678 said BAREWORD99";
        let secrets = redactor(&url_secrets(&url));
        assert_eq!(
            secrets.redact(line),
            "page at https://h/p?token=**** said ****"
        );
    }

    fn redactor(secrets: &[Secret]) -> Redactor {
        Redactor::new(secrets.iter().map(|s| s.expose().to_owned()).collect())
    }

    #[test]
    fn console_text_is_redacted() {
        let secrets = redactor(&[Secret::new("tok.en.x"), Secret::new("")]);
        assert_eq!(
            secrets.redact("joining with tok.en.x (tok.en.x)"),
            "joining with **** (****)"
        );
    }

    #[test]
    fn only_console_entries_are_events() {
        let entry = r#"{"type":"event","method":"log.entryAdded","params":{"type":"console","level":"info","text":"END_RECORDING","method":"log"}}"#;
        match parse_console(entry) {
            Some(PageEvent::Console { level, text }) => {
                assert_eq!(level, "info");
                assert_eq!(text, END_RECORDING);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_console(r#"{"id":3,"type":"success","result":{}}"#),
            Some(PageEvent::Reply { id: 3 })
        ));
        assert!(
            parse_console(r#"{"type":"event","method":"browsingContext.load","params":{}}"#)
                .is_none()
        );
        assert!(parse_console("not json").is_none());
    }

    #[test]
    fn sandbox_flag_only_when_asked() {
        let mut spec = BrowserSpec {
            url: "https://example.com".parse().unwrap(),
            width: 1280,
            height: 720,
            work_dir: "/tmp/x".into(),
            chromium: "/usr/bin/chromium".into(),
            no_sandbox: false,
            host_resolver_rules: None,
            proxy_port: None,
            secrets: Vec::new(),
            page_loaded: Default::default(),
            page: PageOptions::default(),
            audio_ahead: false,
        };
        let args = chromium_args(&spec, Path::new("/tmp/x/profile"));
        assert!(!args.iter().any(|a| a.starts_with("--host-resolver-rules")));
        assert!(args.contains(&"--window-size=1280,720".to_owned()));
        assert!(args.contains(&"--autoplay-policy=no-user-gesture-required".to_owned()));
        assert!(!args.contains(&"--no-sandbox".to_owned()));
        spec.no_sandbox = true;
        assert!(chromium_args(&spec, Path::new("/p")).contains(&"--no-sandbox".to_owned()));
        spec.host_resolver_rules = Some("MAP a.example 93.184.216.34".into());
        assert!(chromium_args(&spec, Path::new("/p"))
            .contains(&"--host-resolver-rules=MAP a.example 93.184.216.34".to_owned()));
    }
}
