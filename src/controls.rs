//! The controls of one running recording: signals and control lines turned into its ordered stop,
//! its pause and its resume.
//!
//! SIGTERM / SIGINT stop in order (a second one raises the [`Shutdown`] to [`Level::Now`]: the run
//! leaves at once, 130, without finishing the file);
//! SIGUSR1 pauses, SIGUSR2 resumes; SIGRTMIN discards (stops, and everything recorded is
//! deleted: the file, its parts, the S3 upload). With `record --stdin-control`, lines on
//! standard input do the same: `pause`, `resume`, `stop`, `discard`; and two have no signal:
//! `add-stream <rtmp URL>` and `remove-stream <rtmp URL>` add and remove a live output while it
//! records (a recording that has live outputs; an added URL is held to the service policy), and
//! `layout <name>` switches a LiveKit layout in place (`grid-dark`, `speaker-light`, ...).
//! The URL travels only over this pipe and is logged masked. Opt-in: a recording started in the
//! background of a shell would be stopped by the terminal (SIGTTIN) if it read a terminal it
//! does not own.

use std::io::BufRead;

use pagecast_actors::events::{LAYOUT_SWITCHED, LIVE_STREAM_ADDED, LIVE_STREAM_REMOVED};
use pagecast_actors::live::LiveOutputs;
use pagecast_actors::pause::PauseSwitch;
use pagecast_actors::recording::{LayoutSwitch, Stopper};
use pagecast_actors::secret::StreamUrl;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::policy::Policy;
use crate::shutdown::{Level, Shutdown};

/// What a signal or a control line asks for, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Control {
    Stop(&'static str),
    Pause(&'static str),
    Resume(&'static str),
    Discard(&'static str),
    AddStream(StreamUrl),
    RemoveStream(StreamUrl),
    Layout(String),
}

/// A control line: `pause`, `resume`, `stop`, `discard` (case and surrounding blanks ignored),
/// `add-stream <URL>`, `remove-stream <URL>` (the URL as given).
fn parse_line(line: &str) -> Option<Control> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let url = rest.trim();
    match (word.to_ascii_lowercase().as_str(), url.is_empty()) {
        ("pause", true) => Some(Control::Pause("control line")),
        ("resume", true) => Some(Control::Resume("control line")),
        ("stop", true) => Some(Control::Stop("control line")),
        ("discard", true) => Some(Control::Discard("control line")),
        ("add-stream", false) => Some(Control::AddStream(StreamUrl::new(url))),
        ("remove-stream", false) => Some(Control::RemoveStream(StreamUrl::new(url))),
        ("layout", false) => Some(Control::Layout(url.to_owned())),
        _ => None,
    }
}

/// Adds or removes a live output, on a task of its own (a relay takes a moment to start or to
/// end its stream; the controls go on meanwhile).
fn change_streams(control: Control, live: Option<LiveOutputs>, policy: Option<Policy>) {
    let Some(live) = live else {
        tracing::warn!("{control:?} ignored: this recording has no live outputs");
        return;
    };
    actix::spawn(async move {
        match control {
            Control::AddStream(url) => {
                if let Err(problem) = pagecast_actors::key_proxy::check_url(url.expose()) {
                    tracing::warn!(url = %url, "add-stream refused: the URL {problem}");
                    return;
                }
                if let Some(policy) = &policy {
                    let checked = policy
                        .check_added_stream("add-stream", url.expose(), live.urls().len())
                        .await;
                    if let Err(e) = checked {
                        tracing::warn!(url = %url, "add-stream refused: {e}");
                        return;
                    }
                }
                match live.add(url.clone()).await {
                    Ok(()) => tracing::info!(url = %url, message = LIVE_STREAM_ADDED),
                    Err(e) => tracing::warn!("add-stream failed: {e}"),
                }
            }
            Control::RemoveStream(url) => match live.remove(url.expose()).await {
                Ok(()) => tracing::info!(url = %url, message = LIVE_STREAM_REMOVED),
                Err(e) => tracing::warn!("remove-stream failed: {e}"),
            },
            _ => {}
        }
    });
}

/// The config as the first JSON value on standard input (`--config -` with `--stdin-control`,
/// how the recording service hands a job over); the control lines that follow it are left
/// unread for [`follow`]. serde_json reads the locked stdin byte by byte through its buffer, so
/// what follows the value stays in that buffer.
/// None: standard input closed without a value.
pub fn config_from_stdin() -> Result<Option<String>, String> {
    let stdin = std::io::stdin().lock();
    let mut values = serde_json::Deserializer::from_reader(stdin).into_iter::<serde_json::Value>();
    match values.next() {
        Some(Ok(value)) => Ok(Some(value.to_string())),
        Some(Err(e)) => Err(format!("config: standard input: {e}")),
        None => Ok(None),
    }
}

/// Standard input's lines, read on a thread of their own: a blocking read cannot be cancelled,
/// and a tokio task blocked in it would hold up the runtime's end. The thread dies with the process.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("stdin-control".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot read control lines from standard input");
    }
    rx
}

/// SIGUSR1, SIGUSR2 and SIGRTMIN, listened for from the start of a run: their default action
/// would end it.
pub struct EarlySignals(Option<(Signal, Signal, Signal)>, Option<(Signal, Signal)>);

/// The signal that discards a recording (`kill -s RTMIN <pid>`): one of the first real-time
/// signals, which nothing else sends by accident (unlike SIGHUP or SIGQUIT from a terminal).
pub fn discard_signal() -> nix::libc::c_int {
    nix::libc::SIGRTMIN()
}

/// Sends the discard signal to `pid` alone (nix's `Signal` has no real-time signals).
pub fn send_discard(pid: u32) -> std::io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    if unsafe { nix::libc::kill(pid as nix::libc::pid_t, discard_signal()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl EarlySignals {
    pub fn listen() -> Self {
        match (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
            signal(SignalKind::from_raw(discard_signal())),
        ) {
            (Ok(usr1), Ok(usr2), Ok(rtmin)) => Self(Some((usr1, usr2, rtmin)), None),
            _ => {
                tracing::warn!(
                    "cannot watch SIGUSR1, SIGUSR2 and SIGRTMIN; pausing and discarding by signal will not work"
                );
                Self(None, None)
            }
        }
    }

    /// SIGTERM and SIGINT, already listened for (a warm tree's, from before its job): one that
    /// came between then and the recording's start stops the recording at once.
    pub fn with_stop(mut self, term: Signal, int: Signal) -> Self {
        self.1 = Some((term, int));
        self
    }
}

/// Set once a discard was asked for: the run deletes what it produced when the recording ends.
pub type Discard = std::rc::Rc<std::cell::Cell<bool>>;

/// The next signal of `s`, or never.
async fn next(s: Option<&mut Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// What control lines may change in a running recording (beside stopping and pausing it).
pub struct Changes {
    /// Its live outputs (None: it has none).
    pub live: Option<LiveOutputs>,
    /// The service policy an added stream is held to.
    pub policy: Option<Policy>,
    /// Its LiveKit layout (None: not a layout page).
    pub layout: Option<LayoutSwitch>,
}

/// Follows the controls until the recording ends (the task is aborted then) or a second signal
/// raised `shutdown` to [`Level::Now`] (the run leaves then).
pub async fn follow(
    recording: Stopper,
    pause: PauseSwitch,
    early: EarlySignals,
    discard: Discard,
    stdin_control: bool,
    changes: Changes,
    shutdown: Shutdown,
) {
    let Changes {
        live,
        policy,
        layout,
    } = changes;
    let (mut term, mut int) = match early.1 {
        Some(stop) => stop,
        None => {
            let (Ok(term), Ok(int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::warn!("cannot watch signals; SIGTERM will not finish the file");
                return;
            };
            (term, int)
        }
    };
    let (mut usr1, mut usr2, mut rtmin) = match early.0 {
        Some((a, b, c)) => (Some(a), Some(b), Some(c)),
        None => (None, None, None),
    };
    let mut lines = stdin_control.then(stdin_lines);
    loop {
        let stopping = shutdown.level() >= Level::Orderly;
        let next_line = async {
            match lines.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let control = tokio::select! {
            _ = term.recv() => Control::Stop("SIGTERM"),
            _ = int.recv() => Control::Stop("SIGINT"),
            _ = next(usr1.as_mut()) => Control::Pause("SIGUSR1"),
            _ = next(usr2.as_mut()) => Control::Resume("SIGUSR2"),
            _ = next(rtmin.as_mut()) => Control::Discard("SIGRTMIN"),
            line = next_line => match line {
                Some(line) => match parse_line(&line) {
                    Some(control) => control,
                    // Blank lines are nothing; the rest of a line may hold a stream key: not shown.
                    None if line.trim().is_empty() => continue,
                    None => {
                        let word = line.split_whitespace().next().unwrap_or_default();
                        tracing::warn!(word = %word.chars().take(20).collect::<String>(), "ignored a control line that is not pause, resume, stop, discard, add-stream URL or remove-stream URL");
                        continue;
                    }
                },
                // Standard input closed: only signals from now on.
                None => {
                    lines = None;
                    continue;
                }
            },
        };
        match control {
            Control::Stop(from) if stopping => {
                if from == "control line" {
                    continue;
                }
                shutdown.raise(Level::Now);
                return;
            }
            Control::Stop(from) => {
                shutdown.raise(Level::Orderly);
                tracing::info!(signal = from, "stopping: finishing the file");
                recording.stop(format!("{from} received"));
            }
            Control::Discard(from) => {
                if !discard.replace(true) {
                    tracing::warn!(
                        signal = from,
                        "discarding: stopping, then deleting everything recorded"
                    );
                    shutdown.raise(Level::Orderly);
                    recording.stop(format!("discard ({from}) received"));
                }
            }
            Control::Pause(from) => match pause.pause() {
                Ok(()) => tracing::info!(signal = from, "pausing: finishing the current part"),
                Err(e) => tracing::warn!(signal = from, "pause ignored: {e}"),
            },
            Control::Resume(from) => match pause.resume() {
                Ok(()) => tracing::info!(signal = from, "resuming: starting the next part"),
                Err(e) => tracing::warn!(signal = from, "resume ignored: {e}"),
            },
            Control::Layout(name) => match layout.clone() {
                Some(switch) => {
                    actix::spawn(async move {
                        let name = name.chars().take(40).collect::<String>();
                        match switch.set(&name).await {
                            Ok(()) => tracing::info!(layout = %name, message = LAYOUT_SWITCHED),
                            Err(e) => tracing::warn!(layout = %name, "layout not switched: {e}"),
                        }
                    });
                }
                None => tracing::warn!("layout ignored: this recording is not a LiveKit layout"),
            },
            Control::AddStream(_) | Control::RemoveStream(_) if stopping => {}
            change @ (Control::AddStream(_) | Control::RemoveStream(_)) => {
                change_streams(change, live.clone(), policy.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_are_read_strictly() {
        assert_eq!(parse_line("pause\n"), Some(Control::Pause("control line")));
        assert_eq!(
            parse_line(" Resume "),
            Some(Control::Resume("control line"))
        );
        assert_eq!(parse_line("STOP"), Some(Control::Stop("control line")));
        assert_eq!(
            parse_line("discard"),
            Some(Control::Discard("control line"))
        );
        assert_eq!(parse_line("pause now"), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(
            parse_line("add-stream  rtmp://h/app/KEY \n"),
            Some(Control::AddStream(StreamUrl::new("rtmp://h/app/KEY")))
        );
        assert_eq!(
            parse_line("remove-stream rtmp://h/app/KEY"),
            Some(Control::RemoveStream(StreamUrl::new("rtmp://h/app/KEY")))
        );
        assert_eq!(parse_line("add-stream"), None);
        assert_eq!(
            parse_line("layout grid-light"),
            Some(Control::Layout("grid-light".into()))
        );
        // A control's Debug (what a log would show) keeps the key out.
        assert!(!format!("{:?}", parse_line("add-stream rtmp://h/app/KEY")).contains("KEY"));
    }
}
