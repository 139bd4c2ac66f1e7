//! DisplayActor: the virtual X display the page is drawn on.
//!
//! Owns: one Xvfb process (own process group, dies with the actor) on a display number Xvfb picks
//! itself with `-displayfd`, so two recordings on one host never collide.
//! Accepts: [`Shutdown`], [`Kill`] (supervision).
//! Sends: [`ChildExited`](crate::supervision::ChildExited) through its link when Xvfb dies on its
//! own (a crash) or after it was stopped.
//! Stops: on `Shutdown` (SIGTERM, then SIGKILL after a grace period) or when Xvfb exits.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use actix::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::process::{ChildProcess, Stdout};
use crate::supervision::{ChildLink, ExitReason, Failure, FailureKind, Kill, Shutdown};

/// How long Xvfb gets to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The screen is this much wider and taller than the recorded area. Why: Chromium shrinks a window
/// exactly the size of the screen by one pixel (leaving a black line at the right and bottom of
/// every frame); on a slightly larger screen its window is exactly the size asked for. Only the
/// top-left `width` x `height` is recorded.
pub const SCREEN_MARGIN: u32 = 16;

/// The area to record (the screen is [`SCREEN_MARGIN`] larger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplaySpec {
    pub width: u32,
    pub height: u32,
    pub depth: u8,
    /// The refresh rate the screen reports (the recording's frame rate): Chromium paces its
    /// frames to it. 0 leaves Xvfb's default (which reports none, so Chromium draws at 60 Hz).
    pub refresh_hz: u32,
}

/// A running display, as other actors need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayInfo {
    pub number: u32,
}

impl DisplayInfo {
    /// The `DISPLAY` value, e.g. `:99`.
    pub fn env(&self) -> String {
        format!(":{}", self.number)
    }
}

pub struct DisplayActor {
    link: ChildLink,
    xvfb: ChildProcess,
    info: DisplayInfo,
}

impl DisplayActor {
    /// Starts Xvfb and resolves once the display accepts connections.
    pub async fn start(
        spec: DisplaySpec,
        link: ChildLink,
    ) -> Result<(Addr<DisplayActor>, DisplayInfo), Failure> {
        let (read_end, write_end) = nix::unistd::pipe()
            .map_err(|e| Failure::crashed(format!("Xvfb: cannot create a pipe: {e}")))?;
        let mut cmd = Command::new("Xvfb");
        cmd.arg("-displayfd")
            .arg(write_end.as_raw_fd().to_string())
            .arg("-screen")
            .arg("0")
            .arg(format!(
                "{}x{}x{}",
                spec.width + SCREEN_MARGIN,
                spec.height + SCREEN_MARGIN,
                spec.depth
            ))
            .args(["-nolisten", "tcp", "-noreset", "-nocursor"]);
        let fd = write_end.as_raw_fd();
        // SAFETY: fcntl is async-signal-safe. Why: pipe() sets close-on-exec; Xvfb must inherit
        // the write end to report its display number.
        unsafe {
            cmd.pre_exec(move || {
                let flags = libc_fcntl_getfd(fd)?;
                libc_fcntl_setfd(fd, flags & !nix::libc::FD_CLOEXEC)
            });
        }
        let (xvfb, _) =
            ChildProcess::spawn("Xvfb", cmd, false, Stdout::Log).map_err(|e| e.into_failure())?;
        drop(write_end);
        let number = match tokio::time::timeout(READY_TIMEOUT, read_display_number(read_end)).await
        {
            Ok(Ok(n)) => n,
            Ok(Err(())) => {
                let status = xvfb.wait_or_kill(STOP_GRACE).await;
                return Err(Failure::crashed(format!(
                    "display failed to start: {}",
                    xvfb.describe_exit(status)
                )));
            }
            Err(_) => {
                return Err(Failure::new(
                    FailureKind::Timeout,
                    format!("display: Xvfb did not come up within {READY_TIMEOUT:?}"),
                ))
            }
        };
        // -displayfd is written once the server listens; confirm it answers before going on.
        let socket = format!("/tmp/.X11-unix/X{number}");
        tokio::net::UnixStream::connect(&socket)
            .await
            .map_err(|e| Failure::crashed(format!("display :{number} does not answer: {e}")))?;
        let info = DisplayInfo { number };
        if spec.refresh_hz > 0 {
            // Best effort: without it the recording is the same, only dearer.
            if let Err(e) = set_refresh_rate(&info, &spec).await {
                tracing::warn!(display = %info.env(), error = %e, "cannot set the display's refresh rate; Chromium will draw at 60 Hz");
            }
        }
        tracing::info!(display = %info.env(), width = spec.width, height = spec.height, depth = spec.depth, pid = xvfb.pid(), "display ready");
        let addr = DisplayActor { link, xvfb, info }.start();
        Ok((addr, info))
    }
}

/// Makes the screen report `spec.refresh_hz` (a RandR mode of the screen's own size, through
/// `xrandr`). Why: Xvfb reports no refresh rate, so Chromium draws at 60 Hz; at the recording's
/// frame rate it draws only the frames that are recorded (measured at 1080p30: 12% less CPU for
/// the whole recording, BENCHMARKS.md).
async fn set_refresh_rate(display: &DisplayInfo, spec: &DisplaySpec) -> Result<(), String> {
    let (w, h) = (spec.width + SCREEN_MARGIN, spec.height + SCREEN_MARGIN);
    // Xvfb only uses the ratio of the pixel clock to the totals: refresh = clock / (htotal * vtotal).
    let (htotal, vtotal) = (w + 160, h + 30);
    let clock_mhz = f64::from(htotal) * f64::from(vtotal) * f64::from(spec.refresh_hz) / 1e6;
    let name = format!("pagecast{}", spec.refresh_hz);
    let timings = [
        format!("{clock_mhz:.3}"),
        w.to_string(),
        (w + 48).to_string(),
        (w + 80).to_string(),
        htotal.to_string(),
        h.to_string(),
        (h + 3).to_string(),
        (h + 8).to_string(),
        vtotal.to_string(),
    ];
    let screens = xrandr(display, &[]).await?;
    let output = screens
        .lines()
        .find_map(|l| l.split_once(" connected").map(|(output, _)| output))
        .ok_or_else(|| format!("no connected output in: {}", screens.trim()))?
        .to_owned();
    let mut newmode = vec!["--newmode", name.as_str()];
    newmode.extend(timings.iter().map(String::as_str));
    xrandr(display, &newmode).await?;
    xrandr(display, &["--addmode", &output, &name]).await?;
    xrandr(display, &["--output", &output, "--mode", &name]).await?;
    Ok(())
}

async fn xrandr(display: &DisplayInfo, args: &[&str]) -> Result<String, String> {
    let out = crate::process::one_shot("xrandr")
        .env("DISPLAY", display.env())
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("xrandr: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "xrandr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn libc_fcntl_getfd(fd: i32) -> std::io::Result<i32> {
    // SAFETY: plain fcntl on a descriptor we own.
    let flags = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) };
    if flags < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(flags)
    }
}

fn libc_fcntl_setfd(fd: i32, flags: i32) -> std::io::Result<()> {
    // SAFETY: plain fcntl on a descriptor we own.
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, flags) } < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads "N\n" from the -displayfd pipe. Err if Xvfb closed it without writing (it died).
async fn read_display_number(read_end: OwnedFd) -> Result<u32, ()> {
    let file = std::fs::File::from(read_end);
    let mut pipe = tokio::net::unix::pipe::Receiver::from_file_unchecked(file).map_err(|_| ())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16];
    loop {
        let n = pipe.read(&mut chunk).await.map_err(|_| ())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.contains(&b'\n') {
            break;
        }
    }
    std::str::from_utf8(&buf)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(())
}

impl Actor for DisplayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(actix::fut::wrap_future(self.xvfb.exit_report()).map(
            |(_, report), act: &mut Self, ctx| {
                let message = format!("display :{} lost: {report}", act.info.number);
                act.link
                    .set_exit(ExitReason::Failed(Failure::crashed(message)));
                ctx.stop();
            },
        ));
    }
}

impl Handler<Shutdown> for DisplayActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.link.set_exit(ExitReason::Shutdown);
        let number = self.info.number;
        let stop = {
            let status = self.xvfb.terminate(STOP_GRACE);
            async move {
                let status = status.await;
                tracing::debug!(display = number, status = %crate::process::describe_status(status), "display stopped");
            }
        };
        Box::pin(
            actix::fut::wrap_future(stop).map(|(), _, ctx: &mut Context<Self>| {
                ctx.stop();
                Ok(())
            }),
        )
    }
}

impl Handler<Kill> for DisplayActor {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.link.set_exit(ExitReason::Shutdown);
        self.xvfb.signal(nix::sys::signal::Signal::SIGKILL);
        ctx.stop();
    }
}
