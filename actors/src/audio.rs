//! AudioActor: where the page's sound goes and where the encoder records it from.
//!
//! Owns: a PulseAudio daemon of its own (own process group, dies with the actor), with its own
//! runtime directory and socket, so no state is shared with other recordings or a desktop daemon
//! and a stale pid file of a killed daemon can't stop it from starting; and in it a null sink
//! named after the recording (`pagecast_<id>`), whose `.monitor` source the encoder records.
//! A silent source looped into the sink at 20 ms latency keeps the sink rendering in small blocks:
//! an idle null sink renders in blocks of up to 2 s, and then ffmpeg waits that long for its first
//! audio, delaying the whole recording's start (measured: 2 s without, 0.16 s with). A new null
//! sink arms its first render for 2 s before any stream asks for less, so the sink is suspended
//! and resumed once after the loopback is in: that re-arms it at 20 ms.
//! Accepts: [`Shutdown`], [`Kill`] (supervision).
//! Sends: [`ChildExited`](crate::supervision::ChildExited) through its link when the daemon dies.
//! Stops: on `Shutdown` (unloads the sink, SIGTERM to the daemon) or when the daemon exits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use tokio::process::Command;

use crate::process::{ChildProcess, Stdout};
use crate::supervision::{ChildLink, ExitReason, Failure, FailureKind, Kill, Shutdown};

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(2);
/// A pactl call answers in milliseconds; one that hangs must not hold the recording.
const PACTL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the audio actor sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpec {
    /// A directory of this recording's own; the daemon's socket and state go in it.
    pub runtime_dir: PathBuf,
    /// The sink's name, unique to the recording.
    pub sink: String,
    /// Sample rate of the sink.
    pub sample_rate: u32,
}

/// The silent loopback's latency: the sink renders in blocks no longer than this, so the first
/// sound reaches a starting encoder at once. It is also the loopback's wake-up period, and that
/// costs: at 50 ms PulseAudio took 0.02-0.03 cores less of a 720p30 recording on a slow day, but
/// the encoder's first frame came 30-40 ms later, which a warm start (0.46 s of its 0.5 s goal)
/// cannot give (BENCHMARKS.md, "PulseAudio's share").
const LOOPBACK_LATENCY: Duration = Duration::from_millis(20);

/// A running sink, as other actors need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInfo {
    /// The `PULSE_SERVER` value, e.g. `unix:/tmp/pagecast-x/pulse/native`.
    pub server: String,
    /// The sink the browser plays into (`PULSE_SINK`).
    pub sink: String,
    /// The sink's sample rate: the encoder records its monitor at this rate, so PulseAudio does
    /// not resample what it records.
    pub sample_rate: u32,
}

impl AudioInfo {
    /// The source the encoder records from.
    pub fn monitor(&self) -> String {
        format!("{}.monitor", self.sink)
    }
}

pub struct AudioActor {
    link: ChildLink,
    daemon: ChildProcess,
    info: AudioInfo,
    /// Loaded module indexes, in load order.
    modules: Vec<u32>,
}

impl AudioActor {
    /// Starts the daemon and the sink; resolves once the sink exists.
    pub async fn start(
        spec: AudioSpec,
        link: ChildLink,
    ) -> Result<(Addr<AudioActor>, AudioInfo), Failure> {
        // A restart reuses the directory: clear whatever a dead daemon left there.
        let _ = std::fs::remove_dir_all(&spec.runtime_dir);
        std::fs::create_dir_all(&spec.runtime_dir).map_err(|e| {
            Failure::crashed(format!(
                "audio: cannot create {}: {e}",
                spec.runtime_dir.display()
            ))
        })?;
        let socket = spec.runtime_dir.join("native");
        let server = format!("unix:{}", socket.display());
        let mut cmd = Command::new("pulseaudio");
        pulse_env(&mut cmd, &spec.runtime_dir);
        cmd.args([
            "--daemonize=no",
            "--use-pid-file=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--disable-shm=yes",
            "--log-target=stderr",
            "-n", // no default.pa: only what we load below
        ])
        .arg("-L")
        .arg(format!(
            "module-native-protocol-unix socket={} auth-anonymous=1",
            socket.display()
        ))
        .arg(format!("--log-level={}", "warning"));
        let (daemon, _) = ChildProcess::spawn("pulseaudio", cmd, false, Stdout::Log)
            .map_err(|e| e.into_failure())?;
        let ready = async {
            loop {
                if pactl(&server, &["info"]).await.is_ok() {
                    return;
                }
                if daemon.status().is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        };
        if tokio::time::timeout(READY_TIMEOUT, ready).await.is_err() {
            return Err(Failure::new(
                FailureKind::Timeout,
                format!("audio: PulseAudio did not answer within {READY_TIMEOUT:?}"),
            ));
        }
        if let Some(status) = daemon.status() {
            return Err(Failure::crashed(format!(
                "audio: {}",
                daemon.describe_exit(status)
            )));
        }
        let silence = format!("{}_silence", spec.sink);
        let mut modules = Vec::new();
        let loads = [
            vec![
                "module-null-sink".to_owned(),
                format!("sink_name={}", spec.sink),
                format!("rate={}", spec.sample_rate),
                "channels=2".to_owned(),
                "sink_properties=device.description=pagecast".to_owned(),
            ],
            vec![
                "module-null-source".to_owned(),
                format!("source_name={silence}"),
                format!("rate={}", spec.sample_rate),
                "channels=2".to_owned(),
            ],
            vec![
                "module-loopback".to_owned(),
                format!("source={silence}"),
                format!("sink={}", spec.sink),
                format!("latency_msec={}", LOOPBACK_LATENCY.as_millis()),
                "source_dont_move=true".to_owned(),
                "sink_dont_move=true".to_owned(),
            ],
        ];
        for load in loads {
            let mut args = vec!["load-module"];
            args.extend(load.iter().map(String::as_str));
            let index = pactl(&server, &args)
                .await
                .map_err(|e| Failure::crashed(format!("audio: cannot load {}: {e}", load[0])))?;
            let index: u32 = index.trim().parse().map_err(|_| {
                Failure::crashed(format!("audio: unexpected pactl answer {index:?}"))
            })?;
            modules.push(index);
        }
        for suspend in ["1", "0"] {
            pactl(&server, &["suspend-sink", &spec.sink, suspend])
                .await
                .map_err(|e| {
                    Failure::crashed(format!("audio: cannot restart sink {}: {e}", spec.sink))
                })?;
        }
        // PulseAudio renames a duplicate sink silently: make sure ours has the name we asked for.
        let sinks = pactl(&server, &["list", "short", "sinks"])
            .await
            .unwrap_or_default();
        if !sinks
            .lines()
            .any(|l| l.split('\t').nth(1) == Some(spec.sink.as_str()))
        {
            return Err(Failure::crashed(format!(
                "audio: sink {} missing after creating it (sinks: {})",
                spec.sink,
                sinks.trim()
            )));
        }
        let _ = pactl(&server, &["set-default-sink", &spec.sink]).await;
        let info = AudioInfo {
            server,
            sink: spec.sink,
            sample_rate: spec.sample_rate,
        };
        tracing::info!(sink = %info.sink, server = %info.server, pid = daemon.pid(), "audio sink ready");
        let addr = AudioActor {
            link,
            daemon,
            info: info.clone(),
            modules,
        }
        .start();
        Ok((addr, info))
    }
}

/// Points a PulseAudio program at the recording's own runtime directory.
fn pulse_env(cmd: &mut Command, runtime_dir: &Path) {
    cmd.env("PULSE_RUNTIME_PATH", runtime_dir)
        .env("PULSE_STATE_PATH", runtime_dir.join("state"))
        .env("HOME", runtime_dir)
        .env_remove("PULSE_SERVER")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
}

/// Runs `pactl` against `server`; Ok(stdout) on success.
pub async fn pactl(server: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("pactl");
    cmd.env("PULSE_SERVER", server).args(args);
    let done = crate::oneshot::run("pactl", cmd, PACTL_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if done.success() {
        Ok(done.stdout)
    } else {
        Err(done.report)
    }
}

impl Actor for AudioActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(actix::fut::wrap_future(self.daemon.exit_report()).map(
            |(_, report), act: &mut Self, ctx| {
                let message = format!("audio lost: {report}");
                act.link
                    .set_exit(ExitReason::Failed(Failure::crashed(message)));
                ctx.stop();
            },
        ));
    }
}

impl Handler<Shutdown> for AudioActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.link.set_exit(ExitReason::Shutdown);
        let server = self.info.server.clone();
        let modules = self.modules.clone();
        let sink = self.info.sink.clone();
        let terminate = self.daemon.terminate(STOP_GRACE);
        let stop = async move {
            for module in modules.iter().rev() {
                if let Err(e) = pactl(&server, &["unload-module", &module.to_string()]).await {
                    tracing::warn!(sink = %sink, module, error = %e, "could not unload an audio module");
                }
            }
            terminate.await;
        };
        Box::pin(
            actix::fut::wrap_future(stop).map(|(), _, ctx: &mut Context<Self>| {
                ctx.stop();
                Ok(())
            }),
        )
    }
}

impl Handler<Kill> for AudioActor {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.link.set_exit(ExitReason::Shutdown);
        self.daemon.signal(nix::sys::signal::Signal::SIGKILL);
        ctx.stop();
    }
}
