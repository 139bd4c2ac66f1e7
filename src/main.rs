//! The `pagecast` binary: parses the command line, loads the config, runs one recording inside
//! an actix system and exits with a code that says how it went (see `exit.rs`).

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use pagecast::cli::{Cli, Command, Keep, PolicyArgs};
use pagecast::config::{self, Config, ENV_VAR};
use pagecast::exit::Exit;
use pagecast::logging;
use pagecast::policy::PolicyError;
use pagecast::run;
use pagecast::service::egress::ApiKeys;

/// The demo page, built into the binary so `pagecast demo` works anywhere (e.g. in the image).
const DEMO_PAGE: &str = include_str!("../assets/demo/index.html");

fn main() -> ExitCode {
    // Secrets of the service, read once and taken out of this process's environment, so no
    // child (a recording, Chromium, ffmpeg) inherits them.
    let redis_url = std::env::var(pagecast::cli::REDIS_URL_VAR).ok();
    let job_key = pagecast::service::sealed::JobKey::from_env();
    let api_key_pair = api_key_from_env();
    std::env::remove_var(pagecast::cli::REDIS_URL_VAR);
    std::env::remove_var(pagecast::service::sealed::KEY_VAR);
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    let command = match cli.command {
        Some(command) => command,
        None if std::env::var_os(ENV_VAR).is_some() => Command::Record {
            config: None,
            keep: Keep {
                overwrite: false,
                keep_dir: std::env::var_os("PAGECAST_KEEP_DIR").map(Into::into),
                stdin_control: false,
            },
            policy: false,
            limits: PolicyArgs::default(),
            warm: None,
        },
        None => {
            eprintln!(
                "pagecast: nothing to do: set {ENV_VAR} or give a command (see pagecast --help)"
            );
            return Exit::Config.into();
        }
    };
    // Held for the whole run: the demo page lives in it.
    let mut demo_dir = None;
    let mut keep = Keep::default();
    let mut policy = None;
    let config = match command {
        Command::Record {
            config: path,
            keep: given,
            policy: enforce,
            limits,
            warm,
        } => {
            if let Some(size) = warm {
                if path.as_deref() != Some(Path::new("-")) {
                    return fail(
                        Exit::Config,
                        "--warm: the job's config comes on standard input (--config -)",
                    );
                }
                let policy = limits.policy();
                let outcome = actix_rt::System::new().block_on(run::record_warm(
                    size,
                    &policy,
                    cli.log_format,
                    given,
                ));
                return if outcome.exit == Exit::Ok {
                    Exit::Ok.into()
                } else {
                    fail(outcome.exit, &outcome.message)
                };
            }
            // With --config - too: the config is the first JSON value on standard input, the
            // control lines follow it (how the recording service talks to its recordings).
            let one_value = given.stdin_control;
            keep = given;
            policy = enforce.then(|| limits.policy());
            read_config(path.as_deref(), one_value)
                .and_then(|json| config::parse(&json).map_err(|e| e.to_string()))
        }
        Command::Check {
            config: path,
            policy: enforce,
            limits,
        } => {
            let mut config = match load(path.as_deref()) {
                Ok(config) => config,
                Err(message) => return fail(Exit::Config, &message),
            };
            let mut pins = Vec::new();
            if enforce {
                let policy = limits.policy();
                let applied =
                    actix_rt::System::new().block_on(async { policy.apply(&mut config).await });
                match applied {
                    Ok(p) => pins = p,
                    Err(e) => return fail(policy_exit(&e), &e.to_string()),
                }
            }
            print!("{}", pagecast::check::describe(&config, &pins));
            return Exit::Ok.into();
        }
        Command::Serve {
            redis,
            queue,
            max_recordings,
            max_utilisation,
            concurrent_starts,
            cost_factor,
            recalibrate_every,
            warm,
            warm_size,
            worker_id,
            heartbeat_ttl,
            stop_grace,
            job_retention,
            trusted_redis,
            keep_dir,
            http,
            keys,
            webhook,
            livekit_url,
            policy,
        } => {
            let (redis, job_key) = match (redis.url(redis_url), job_key) {
                (Ok(redis), Ok(key)) => (redis, key),
                (Err(message), _) => return fail(Exit::Config, &message),
                (_, Err(e)) => return fail(Exit::Config, &e.to_string()),
            };
            let api = match http {
                None => None,
                Some(addr) => match ApiKeys::load(keys.as_deref(), api_key_pair) {
                    Ok(keys) => Some(pagecast::service::egress::ApiOptions {
                        addr,
                        keys,
                        webhooks: webhook,
                        livekit_url,
                    }),
                    Err(message) => return fail(Exit::Config, &message),
                },
            };
            let keep_dir = std::path::absolute(&keep_dir).unwrap_or(keep_dir);
            let policy = policy.policy();
            if let Some(root) = &policy.output_root {
                if !root.is_dir() {
                    return fail(
                        Exit::Config,
                        &format!("--output-root: {} is not a directory", root.display()),
                    );
                }
            }
            // The machine's size, or for tests the one they give (see capacity.rs): a test
            // machine is not calibrated.
            let (mut machine, mut calibrate) = match std::env::var(
                pagecast::service::capacity::TEST_MACHINE_VAR,
            ) {
                Ok(text) => match pagecast::service::capacity::Machine::parse(&text) {
                    Ok(machine) => {
                        tracing::warn!(cores = machine.cores, memory_mib = machine.memory >> 20, cost_factor = machine.cost_factor, "{}: admission counts with this machine's size, not the real one (for tests)", pagecast::service::capacity::TEST_MACHINE_VAR);
                        (machine, false)
                    }
                    Err(message) => return fail(Exit::Config, &message),
                },
                Err(_) => (pagecast::service::capacity::Machine::detect(), true),
            };
            if let pagecast::service::calibration::CostFactor::Fixed(factor) = cost_factor {
                (machine.cost_factor, calibrate) = (factor, false);
            }
            let options = pagecast::service::ServiceOptions {
                redis,
                queue,
                max_recordings: max_recordings
                    .map(|n| n as usize)
                    .unwrap_or_else(pagecast::service::default_max_recordings),
                worker_id: worker_id.unwrap_or_else(pagecast::service::default_worker_id),
                heartbeat_ttl,
                job_key: job_key.map(std::sync::Arc::new),
                trusted_redis,
                stop_grace,
                retention: job_retention,
                keep_dir,
                recorder: None,
                policy,
                machine,
                calibrate,
                recalibrate_every: (calibrate && !recalibrate_every.is_zero())
                    .then_some(recalibrate_every),
                max_utilisation,
                concurrent_starts,
                warm: pagecast::service::WarmPool {
                    count: warm as usize,
                    size: warm_size,
                },
                api,
            };
            let outcome = actix_rt::System::new().block_on(pagecast::service::serve(options));
            return if outcome.exit == Exit::Ok {
                Exit::Ok.into()
            } else {
                fail(outcome.exit, &outcome.message)
            };
        }
        Command::Submit {
            redis,
            queue,
            id,
            config: path,
        } => {
            let json = match read_config(path.as_deref(), false) {
                Ok(json) => json,
                Err(message) => return fail(Exit::Config, &message),
            };
            let (redis, job_key) = match (redis.url(redis_url), job_key) {
                (Ok(redis), Ok(key)) => (redis, key),
                (Err(message), _) => return fail(Exit::Config, &message),
                (_, Err(e)) => return fail(Exit::Config, &e.to_string()),
            };
            let outcome = actix_rt::System::new().block_on(pagecast::service::submit(
                &redis,
                &queue,
                id,
                &json,
                job_key.as_ref(),
            ));
            return match outcome {
                Ok(id) => {
                    println!("{id}");
                    Exit::Ok.into()
                }
                Err(outcome) => fail(outcome.exit, &outcome.message),
            };
        }
        Command::Calibrate { json } => {
            let found =
                actix_rt::System::new().block_on(pagecast::service::calibration::calibrate());
            return match found {
                Ok(found) if json => {
                    println!("{}", serde_json::json!(found));
                    Exit::Ok.into()
                }
                Ok(found) => {
                    println!(
                        "cost factor {:.2}{}: the probe took {:.3} CPU-seconds here, {:.3} on the cost model's machine",
                        found.cost_factor,
                        if found.clamped { " (held to its bound)" } else { "" },
                        found.cpu_seconds,
                        found.reference_cpu_seconds
                    );
                    Exit::Ok.into()
                }
                Err(message) => fail(Exit::MissingProgram, &message),
            };
        }
        Command::Demo {
            output,
            duration,
            width,
            height,
            framerate,
            overwrite,
        } => match demo_config(&output, duration, width, height, framerate) {
            Ok((config, dir)) => {
                keep.overwrite = overwrite;
                demo_dir = Some(dir);
                Ok(config)
            }
            Err(message) => Err(message),
        },
    };
    let config = match config {
        Ok(config) => config,
        Err(message) => return fail(Exit::Config, &message),
    };
    let outcome = actix_rt::System::new().block_on(async move {
        let mut config = config;
        let pins = match &policy {
            Some(policy) => match policy.apply(&mut config).await {
                Ok(pins) => pins,
                Err(e) => {
                    return run::Outcome {
                        exit: policy_exit(&e),
                        message: e.to_string(),
                    }
                }
            },
            None => Vec::new(),
        };
        run::record(config, pins, policy.as_ref(), cli.log_format, keep).await
    });
    drop(demo_dir);
    if outcome.exit == Exit::Ok {
        Exit::Ok.into()
    } else {
        fail(outcome.exit, &outcome.message)
    }
}

/// The API key pair of the environment (`serve --http` without `--keys`), taken out of it so no
/// recording inherits it. `record` reads its key from its config, never from there.
fn api_key_from_env() -> Option<(String, pagecast_actors::secret::Secret)> {
    use pagecast::service::egress::{KEY_VAR, SECRET_VAR};
    let pair = std::env::var(KEY_VAR)
        .ok()
        .zip(std::env::var(SECRET_VAR).ok())
        .map(|(k, s)| (k, pagecast_actors::secret::Secret::new(s)));
    std::env::remove_var(KEY_VAR);
    std::env::remove_var(SECRET_VAR);
    pair
}

fn fail(exit: Exit, message: &str) -> ExitCode {
    logging::clear_status_line();
    eprintln!("pagecast: {message}");
    exit.into()
}

/// A refused job is a bad config (2); a host that cannot be resolved is an input that failed (4).
fn policy_exit(e: &PolicyError) -> Exit {
    e.exit()
}

/// The config from `path`, or from the environment variable.
fn load(path: Option<&Path>) -> Result<Config, String> {
    config::parse(&read_config(path, false)?).map_err(|e| e.to_string())
}

/// The config's text, from `path` or from the environment variable. `one_value`: standard input
/// holds the config as its first JSON value and then control lines (`--stdin-control`), which
/// are left unread.
fn read_config(path: Option<&Path>, one_value: bool) -> Result<String, String> {
    match path {
        Some(path) if path == Path::new("-") && one_value => {
            pagecast::controls::config_from_stdin()?
                .ok_or_else(|| "config: standard input is empty".to_owned())
        }
        // `-`: standard input (how the recording service hands a job's config over: neither an
        // environment nor a command line keeps its secrets from other processes).
        Some(path) if path == Path::new("-") => {
            let mut json = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut json)
                .map_err(|e| format!("config: cannot read standard input: {e}"))?;
            Ok(json)
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("config: cannot read {}: {e}", path.display())),
        None => std::env::var(ENV_VAR).map_err(|_| {
            format!("config: {ENV_VAR} is not set (or not UTF-8) and no --config was given")
        }),
    }
}

/// A config that records the bundled demo page, written to a fresh directory.
fn demo_config(
    output: &Path,
    duration: std::time::Duration,
    width: u32,
    height: u32,
    framerate: u32,
) -> Result<(Config, tempfile::TempDir), String> {
    let dir = tempfile::Builder::new()
        .prefix("pagecast-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a directory for the demo page: {e}"))?;
    let page = dir.path().join("index.html");
    std::fs::write(&page, DEMO_PAGE).map_err(|e| format!("cannot write the demo page: {e}"))?;
    let _ = pagecast::reaper::mark(dir.path());
    let json = serde_json::json!({
        "input": {
            "url": format!("file://{}", page.display()),
            "width": width,
            "height": height,
            "framerate": framerate,
        },
        "output": { "file": output },
        "max_duration": humantime::format_duration(duration).to_string(),
    });
    let config = config::parse(&json.to_string()).map_err(|e| e.to_string())?;
    Ok((config, dir))
}
