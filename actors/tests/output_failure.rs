//! Why ffmpeg could not write its file, told from the file system's own answer: a full disk, a
//! read-only one and a lost directory are output failures (never restarted); a healthy one is not.
//! Real file systems: small tmpfs mounts of the test's own (it needs root, like the fault suite).

use pagecast_actors::encoder::output_failure;
use pagecast_actors::supervision::FailureKind;
use pagecast_testkit::fault::Tmpfs;

#[test]
fn a_full_a_read_only_and_a_lost_directory_are_output_failures() {
    let full = Tmpfs::mount("size=256k");
    let file = full.path().join("rec.mp4");
    std::fs::write(&file, vec![1u8; 512 * 1024]).unwrap_err();
    let f = output_failure(&file, "").expect("a full disk");
    assert_eq!(f.kind, FailureKind::Output);
    assert_eq!(
        f.message,
        format!("cannot write {}: no space left on device", file.display())
    );

    let read_only = Tmpfs::mount("size=1m,ro");
    let file = read_only.path().join("rec.mp4");
    let f = output_failure(&file, "").expect("a read-only disk");
    assert_eq!(
        f.message,
        format!("cannot write {}: read-only file system", file.display())
    );

    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone");
    let file = gone.join("rec.mp4");
    let f = output_failure(&file, "").expect("a lost directory");
    assert_eq!(
        f.message,
        format!(
            "cannot write {}: {} is gone",
            file.display(),
            gone.display()
        )
    );

    // A healthy disk: ffmpeg died of something else (a crash a restart may fix).
    let file = dir.path().join("rec.mp4");
    assert!(output_failure(&file, "ffmpeg was killed by SIGKILL").is_none());
    // ... unless ffmpeg itself said the disk was full (it may have been freed since).
    assert!(output_failure(
        &file,
        "av_interleaved_write_frame(): No space left on device"
    )
    .is_some());
}
