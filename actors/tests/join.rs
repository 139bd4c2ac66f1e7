//! The segment join against real ffmpeg and ffprobe, run in a child process (this test binary
//! again) so that it can be SIGKILLed at any moment, as a killed pagecast would be.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pagecast_actors::join::{join_segments, leftovers};
use pagecast_testkit::fault::Seeded;
use pagecast_testkit::{alive, descendants, heavy, probe};

const PARTS: usize = 4;
/// The environment variable that makes `join_in_a_child_process` join: `<output>|<part>|...`.
const JOIN_ENV: &str = "PAGECAST_TEST_JOIN";

/// Not a test of its own: the child process the other tests start and kill.
#[test]
#[ignore]
fn join_in_a_child_process() {
    let Ok(spec) = std::env::var(JOIN_ENV) else {
        return;
    };
    let paths: Vec<PathBuf> = spec.split('|').map(PathBuf::from).collect();
    let output = paths[0].clone();
    let result = actix_rt::System::new().block_on(join_segments(&output, "t", &paths, 30));
    match result {
        Ok(joined) => println!("JOINED {joined:?}"),
        Err(failure) => println!("FAILED {failure}"),
    }
}

/// A segment as the encoder writes it (fragmented MP4, H.264 + AAC), large so that a join of a
/// few of them takes a while: noise, losslessly encoded.
fn make_segment(dir: &Path) -> PathBuf {
    let seg = dir.join("segment.mp4");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", "4", "-vf", "noise=alls=60:allf=t"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-qp",
            "0",
            "-g",
            "60",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
        .args(["-movflags", "+frag_keyframe+empty_moov+default_base_moof"])
        .args(["-frag_duration", "1000000", "-f", "mp4"])
        .arg(&seg)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    seg
}

/// The output and its parts, fresh copies of `segment`, as a recording with restarts leaves them.
fn lay_out(dir: &Path, segment: &Path) -> Vec<PathBuf> {
    let output = dir.join("rec.mp4");
    let mut paths = vec![output.clone()];
    for n in 1..PARTS {
        paths.push(pagecast_actors::join::segment_path(&output, "t", n));
    }
    for p in &paths {
        std::fs::copy(segment, p).unwrap();
    }
    paths
}

fn start_join(paths: &[PathBuf], path_env: Option<String>) -> std::process::Child {
    let spec: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "join_in_a_child_process",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(JOIN_ENV, spec.join("|"))
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(path) = path_env {
        cmd.env("PATH", path);
    }
    cmd.spawn().unwrap()
}

fn output_of(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn duration(path: &Path) -> f64 {
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        return 0.0;
    }
    probe(path).duration()
}

/// Whether the file is fragmented MP4 (has a movie fragment box): it survives a cut.
fn fragmented(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(4).any(|w| w == b"moof")
}

#[test]
fn a_join_killed_at_any_moment_leaves_the_recording_playable_or_its_parts_named() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let segment = make_segment(dir.path());
    let one = duration(&segment);
    let work = dir.path().join("rec");
    std::fs::create_dir(&work).unwrap();

    // An undisturbed join first: one fragmented file as long as the parts, the parts gone.
    let paths = lay_out(&work, &segment);
    let began = Instant::now();
    let out = output_of(start_join(&paths, None));
    let took = began.elapsed();
    assert!(out.contains("JOINED"), "{out}");
    let joined = duration(&paths[0]);
    assert!(
        (joined - one * PARTS as f64).abs() < 0.2,
        "joined {joined} s, parts {} s",
        one * PARTS as f64
    );
    assert!(fragmented(&paths[0]), "the joined file is not fragmented");
    assert!(
        leftovers(&paths[0]).is_empty(),
        "{:?}",
        leftovers(&paths[0])
    );
    std::fs::remove_file(&paths[0]).unwrap();

    let mut seed = Seeded::new(&format!("kill moments (join took {took:?})"));
    const MOMENTS: usize = 6;
    for i in 0..MOMENTS {
        // One moment in each sixth of the join (and a little past it).
        let at = took.mul_f64((i as f64 + seed.fraction()) / MOMENTS as f64 * 1.1);
        for p in std::fs::read_dir(&work).unwrap() {
            std::fs::remove_file(p.unwrap().path()).unwrap();
        }
        let paths = lay_out(&work, &segment);
        let mut child = start_join(&paths, None);
        let started = Instant::now();
        let mut helpers = std::collections::BTreeMap::new();
        while started.elapsed() < at && child.try_wait().unwrap().is_none() {
            helpers.extend(descendants(child.id()));
            std::thread::sleep(Duration::from_millis(20));
        }
        helpers.extend(descendants(child.id()));
        let _ = child.kill();
        let _ = child.wait();
        // The helpers die with it (parent-death signal).
        let deadline = Instant::now() + Duration::from_secs(10);
        while helpers.keys().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let survivors: Vec<_> = helpers.iter().filter(|(p, _)| alive(**p)).collect();
        assert!(
            survivors.is_empty(),
            "killed at {at:?}: {survivors:?} outlived the join"
        );
        let now = duration(&paths[0]);
        assert!(
            now >= one - 0.05,
            "killed at {at:?}: the output plays {now} s, it played {one} s before the join"
        );
        if now < one * PARTS as f64 - 0.2 {
            // Not joined yet: every part is intact, and the next run names them.
            let named = leftovers(&paths[0]);
            for part in &paths[1..] {
                assert_eq!(
                    std::fs::metadata(part).map(|m| m.len()).ok(),
                    std::fs::metadata(&segment).map(|m| m.len()).ok(),
                    "killed at {at:?}: {} is not intact",
                    part.display()
                );
                assert!(named.contains(part), "killed at {at:?}: {named:?}");
            }
        }
        println!(
            "killed at {at:>12?}: output plays {now:.2} s ({})",
            if now > one + 0.2 {
                "joined"
            } else {
                "first segment, parts kept"
            }
        );
    }
}

#[test]
fn a_part_that_cannot_be_probed_is_kept_and_named() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let segment = make_segment(dir.path());
    let work = dir.path().join("rec");
    std::fs::create_dir(&work).unwrap();
    let paths = lay_out(&work, &segment);
    // An ffprobe that cannot run to an answer: killed by a signal.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("ffprobe");
    std::fs::write(&fake, "#!/bin/sh\nkill -9 $$\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = output_of(start_join(&paths, Some(path)));
    // Nothing can be checked, so nothing is replaced or removed, and the error names every part.
    assert!(out.contains("FAILED"), "{out}");
    for p in &paths {
        assert_eq!(
            std::fs::metadata(p).map(|m| m.len()).ok(),
            std::fs::metadata(&segment).map(|m| m.len()).ok(),
            "{} was not kept intact: {out}",
            p.display()
        );
        assert!(out.contains(&p.display().to_string()), "{out}");
    }
}
