//! The controls of one running recording: signals and control lines turned into its ordered stop,
//! its pause and its resume.
//!
//! SIGTERM / SIGINT stop in order (a second one leaves at once, 130, without finishing the file);
//! SIGUSR1 pauses, SIGUSR2 resumes; SIGRTMIN discards (stops, and everything recorded is
//! deleted: the file, its parts, the S3 upload). With `record --stdin-control`, lines on
//! standard input do the same: `pause`, `resume`, `stop`, `discard`. Opt-in: a recording started in the background of a shell
//! would be stopped by the terminal (SIGTTIN) if it read a terminal it does not own.

use std::io::BufRead;

use pagecast_actors::pause::PauseSwitch;
use pagecast_actors::recording::Stopper;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::exit::Exit;
use crate::logging::clear_status_line;

/// What a signal or a control line asks for, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Stop(&'static str),
    Pause(&'static str),
    Resume(&'static str),
    Discard(&'static str),
}

/// A control line: `pause`, `resume` or `stop` (case and surrounding blanks ignored).
fn parse_line(line: &str) -> Option<Control> {
    match line.trim().to_ascii_lowercase().as_str() {
        "pause" => Some(Control::Pause("control line")),
        "resume" => Some(Control::Resume("control line")),
        "stop" => Some(Control::Stop("control line")),
        "discard" => Some(Control::Discard("control line")),
        _ => None,
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

/// Follows the controls until the recording ends (the task is aborted then).
pub async fn follow(
    recording: Stopper,
    pause: PauseSwitch,
    early: EarlySignals,
    discard: Discard,
    stdin_control: bool,
) {
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
    let mut stopping = false;
    loop {
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
                    None => {
                        tracing::warn!(line = %line.chars().take(40).collect::<String>(), "ignored a control line that is not pause, resume, stop or discard");
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
                clear_status_line();
                eprintln!("pagecast: second signal, stopping without finishing the file");
                std::process::exit(Exit::Interrupted.code().into());
            }
            Control::Stop(from) => {
                stopping = true;
                tracing::info!(signal = from, "stopping: finishing the file");
                recording.stop(format!("{from} received"));
            }
            Control::Discard(from) => {
                if !discard.replace(true) {
                    tracing::warn!(
                        signal = from,
                        "discarding: stopping, then deleting everything recorded"
                    );
                    stopping = true;
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
    }
}
