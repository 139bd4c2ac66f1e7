//! Exit codes: a script (or the recording service) can tell what went wrong from the code alone.

use pagecast_actors::supervision::FailureKind;

/// pagecast's exit codes. Documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The recording is complete.
    Ok = 0,
    /// A part of the pipeline failed (a crash, a timeout, an internal error).
    Failed = 1,
    /// The config or the command line is wrong; nothing was started.
    Config = 2,
    /// A required program is not installed; nothing was started.
    MissingProgram = 3,
    /// The input failed: the page could not be loaded (unreachable, refused, HTTP error), the
    /// LiveKit server refused the token or has no such room, or nobody joined in time.
    Input = 4,
    /// The output could not be written or finished.
    Output = 5,
    /// Discarded on request: everything the recording produced was deleted.
    Discarded = 6,
    /// Stopped by a second signal without finishing the file.
    Interrupted = 130,
}

impl Exit {
    pub fn for_failure(kind: FailureKind) -> Exit {
        match kind {
            FailureKind::Crashed | FailureKind::Timeout => Exit::Failed,
            FailureKind::MissingProgram => Exit::MissingProgram,
            FailureKind::Input => Exit::Input,
            FailureKind::Output => Exit::Output,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}
