//! The controls of one running recording: signals and control lines turned into its ordered stop,
//! its pause and its resume.
//!
//! SIGTERM / SIGINT stop in order (a second one leaves at once, 130, without finishing the file);
//! SIGUSR1 pauses, SIGUSR2 resumes. With `record --stdin-control`, lines on standard input do the
//! same: `pause`, `resume`, `stop`. Opt-in: a recording started in the background of a shell
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
}

/// A control line: `pause`, `resume` or `stop` (case and surrounding blanks ignored).
fn parse_line(line: &str) -> Option<Control> {
    match line.trim().to_ascii_lowercase().as_str() {
        "pause" => Some(Control::Pause("control line")),
        "resume" => Some(Control::Resume("control line")),
        "stop" => Some(Control::Stop("control line")),
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

/// SIGUSR1 and SIGUSR2, listened for from the start of a run: their default action would end it.
pub struct PauseSignals(Option<(Signal, Signal)>);

impl PauseSignals {
    pub fn listen() -> Self {
        match (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        ) {
            (Ok(usr1), Ok(usr2)) => Self(Some((usr1, usr2))),
            _ => {
                tracing::warn!("cannot watch SIGUSR1 and SIGUSR2; pausing by signal will not work");
                Self(None)
            }
        }
    }
}

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
    pause_signals: PauseSignals,
    stdin_control: bool,
) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot watch signals; SIGTERM will not finish the file");
        return;
    };
    let (mut usr1, mut usr2) = pause_signals.0.unzip();
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
            line = next_line => match line {
                Some(line) => match parse_line(&line) {
                    Some(control) => control,
                    None => {
                        tracing::warn!(line = %line.chars().take(40).collect::<String>(), "ignored a control line that is not pause, resume or stop");
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
        assert_eq!(parse_line("pause now"), None);
        assert_eq!(parse_line(""), None);
    }
}
