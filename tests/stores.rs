//! GCS and Azure Blob outputs against their emulators (fake-gcs-server, Azurite; on loopback):
//! the object is uploaded while recording and plays, and so are the HLS and snapshot directory
//! copies (`prefix`); a store that goes away and comes back (losing the open upload) loses
//! nothing, of the MP4 or of the copies; a store gone for good hands the whole recording to the
//! backup store, and the run says so.
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use pagecast_actors::events;
use pagecast_testkit::stores::{Azurite, FakeGcs, AZURITE_KEY};
use pagecast_testkit::{heavy, probe, wait_until, Moto};
use serde_json::json;

/// A service-account key the emulator takes without a token exchange (`disable_oauth`).
const KEY_SECRET: &str = "PRIVATE-KEY-not-a-real-one-5f5f";

fn gcs_block(gcs: &FakeGcs) -> serde_json::Value {
    json!({
        "bucket": "recordings",
        "key": "rec/recording.mp4",
        "endpoint": gcs.endpoint(),
        "credentials": { "type": "service_account", "client_email": "rec@test.iam",
            "private_key": KEY_SECRET, "private_key_id": "k1", "disable_oauth": true },
        "part_size": "256KiB",
    })
}

fn azure_block(azurite: &Azurite) -> serde_json::Value {
    json!({
        "account": "devstoreaccount1",
        "container": "recordings",
        "blob": "rec/recording.mp4",
        "key": AZURITE_KEY,
        "endpoint": azurite.endpoint(),
        "part_size": "256KiB",
    })
}

fn config(output: serde_json::Value) -> serde_json::Value {
    json!({
        "input": { "url": demo_page(), "width": 640, "height": 360 },
        "output": output,
        "max_duration": "5s",
    })
}

fn parts_uploaded(stderr: &str) -> usize {
    stderr
        .matches(&format!(r#""message":"{}""#, events::UPLOADED_PART))
        .count()
}

/// The store holds under `prefix` exactly the files of `local`, byte for byte (`names`: the
/// store's object names; `fetch(name, to)`: downloads one). Returns where they were fetched to.
fn assert_copied(
    local: &Path,
    prefix: &str,
    names: Vec<String>,
    fetch: impl Fn(&str, &Path),
) -> tempfile::TempDir {
    let fetched = tempfile::tempdir().unwrap();
    let mut stored: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix).map(str::to_owned))
        .collect();
    stored.sort();
    let files = files_in(local);
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(stored, files, "under {prefix}");
    for name in files {
        let to = fetched.path().join(&name);
        fetch(&format!("{prefix}{name}"), &to);
        assert!(
            std::fs::read(&to).unwrap() == std::fs::read(local.join(&name)).unwrap(),
            "{prefix}{name} differs from the local file"
        );
    }
    fetched
}

/// The object plays for the recording's length, with both streams.
fn assert_plays(object: &std::path::Path) {
    let p = probe(object);
    assert!(
        (p.duration() - 5.0).abs() <= 1.0,
        "object holds {} s",
        p.duration()
    );
    assert!(p.has_audio());
    assert_eq!(p.dimensions(), (640, 360));
    assert!(p.frames() >= 100, "{} frames", p.frames());
}

/// GCS goes away once the first part and the first HLS segment are up (and forgets the open
/// upload); it comes back; the object is complete all the same, and so is the HLS copy (`prefix`)
/// that failed meanwhile: every segment and playlist, byte for byte, the playlist playing to the
/// end.
#[test]
fn a_gcs_upload_survives_the_server_going_away_and_losing_the_upload() {
    let _heavy = heavy();
    let mut gcs = FakeGcs::start();
    gcs.make_bucket("recordings");
    let hls = tempfile::tempdir().unwrap();
    let output = json!({ "gcs": gcs_block(&gcs),
        "hls": { "directory": hls.path(), "segment_duration": "1s", "prefix": "rec/hls/",
                 "live_playlist": { "window": 2 } } });
    let mut run = Run::start(&config(output), &[]);
    run.wait_for(events::UPLOADED_PART, Duration::from_secs(60));
    wait_until(
        "an HLS object in the bucket",
        Duration::from_secs(30),
        || {
            gcs.objects("recordings")
                .iter()
                .any(|n| n.starts_with("rec/hls/"))
        },
    );
    gcs.kill();
    run.wait_for(events::UPLOAD_RETRYING, Duration::from_secs(30));
    run.wait_for(events::DIRECTORY_UPLOAD_RETRYING, Duration::from_secs(30));
    gcs.restart();
    let (status, _) = run.wait(Duration::from_secs(90));
    let stderr = run.stderr();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(!stderr.contains(KEY_SECRET), "the key reached the output");
    assert!(parts_uploaded(&stderr) >= 3, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("object.mp4");
    gcs.download("recordings", "rec/recording.mp4", &object);
    assert_plays(&object);
    assert!(
        stderr.contains(r#""object":"gs://recordings/rec/recording.mp4""#),
        "{stderr}"
    );
    assert!(
        stderr.contains(events::DIRECTORY_UPLOADED)
            && stderr.contains(r#""to":"gs://recordings/rec/hls/""#),
        "{stderr}"
    );
    let fetched = assert_copied(
        hls.path(),
        "rec/hls/",
        gcs.objects("recordings"),
        |name, to| gcs.download("recordings", name, to),
    );
    let vod = probe(&fetched.path().join("index.m3u8")).duration();
    assert!((vod - 5.0).abs() <= 1.0, "the playlist holds {vod} s");
}

/// Azure goes away once the first block and the first image are up; it comes back; the blob is
/// complete, and so is the snapshot copy (`prefix`) that failed meanwhile: every image, byte for
/// byte.
#[test]
fn an_azure_upload_survives_the_server_going_away() {
    let _heavy = heavy();
    let mut azurite = Azurite::start();
    azurite.blob(&["mkcontainer", "recordings"]);
    let shots = tempfile::tempdir().unwrap();
    let output = json!({ "azure": azure_block(&azurite),
        "images": { "directory": shots.path(), "every": "1s", "prefix": "rec/shots/" } });
    let mut run = Run::start(&config(output), &[]);
    run.wait_for(events::UPLOADED_PART, Duration::from_secs(60));
    wait_until("an image in the container", Duration::from_secs(30), || {
        azurite
            .blob(&["blobs", "recordings"])
            .contains("rec/shots/")
    });
    azurite.stop();
    run.wait_for(events::UPLOAD_RETRYING, Duration::from_secs(30));
    run.wait_for(events::DIRECTORY_UPLOAD_RETRYING, Duration::from_secs(30));
    azurite.restart();
    let (status, _) = run.wait(Duration::from_secs(90));
    let stderr = run.stderr();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(!stderr.contains(AZURITE_KEY), "the key reached the output");
    assert!(parts_uploaded(&stderr) >= 3, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("object.mp4");
    azurite.blob(&[
        "get",
        "recordings",
        "rec/recording.mp4",
        object.to_str().unwrap(),
    ]);
    assert_plays(&object);
    assert!(
        stderr.contains(events::DIRECTORY_UPLOADED)
            && stderr.contains(r#""to":"azure://devstoreaccount1/recordings/rec/shots/""#),
        "{stderr}"
    );
    let blobs = azurite.blob(&["blobs", "recordings"]);
    let names = blobs.lines().map(str::to_owned).collect();
    assert_copied(shots.path(), "rec/shots/", names, |name, to| {
        azurite.blob(&["get", "recordings", name, to.to_str().unwrap()]);
    });
    // Each image decodes (4 or so, one a second of 5 s).
    for image in files_in(shots.path()) {
        assert_eq!(probe(&shots.path().join(image)).dimensions(), (640, 360));
    }
}

/// GCS is killed for good during the recording: after its give-up limit the whole recording goes
/// to the Azure backup, the run succeeds and names the backup's blob.
#[test]
fn a_store_gone_for_good_hands_the_whole_recording_to_the_backup() {
    let _heavy = heavy();
    let mut gcs = FakeGcs::start();
    gcs.make_bucket("recordings");
    let azurite = Azurite::start();
    azurite.blob(&["mkcontainer", "recordings"]);
    let mut primary = gcs_block(&gcs);
    primary["give_up_after"] = json!("2s");
    let output = json!({ "gcs": primary, "backup": { "azure": azure_block(&azurite) } });
    let mut run = Run::start(&config(output), &[]);
    run.wait_for(events::UPLOADED_PART, Duration::from_secs(60));
    gcs.kill();
    let (status, _) = run.wait(Duration::from_secs(90));
    let stderr = run.stderr();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(stderr.contains(events::BACKUP_STORAGE_USED), "{stderr}");
    assert!(!stderr.contains(AZURITE_KEY) && !stderr.contains(KEY_SECRET));
    let kept = stderr
        .lines()
        .find(|l| l.contains(pagecast::run::RECORDING_KEPT))
        .unwrap_or_else(|| panic!("nothing said where the recording is:\n{stderr}"));
    assert!(
        kept.contains("azure://devstoreaccount1/recordings/rec/recording.mp4 (the backup store)"),
        "{kept}"
    );
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("object.mp4");
    azurite.blob(&[
        "get",
        "recordings",
        "rec/recording.mp4",
        object.to_str().unwrap(),
    ]);
    assert_plays(&object);
}

/// Before anything starts: a missing bucket or container is refused naming it, and so is a
/// recording already at the name (without --overwrite); the object already there is untouched.
#[test]
fn a_missing_bucket_or_an_existing_object_is_refused_before_anything_starts() {
    let _heavy = heavy();
    let gcs = FakeGcs::start();
    let azurite = Azurite::start();
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("existing.mp4");
    std::fs::write(&existing, b"an earlier recording").unwrap();
    let refused = |output: serde_json::Value, expect: &str| {
        let mut run = Run::start(&config(output), &[]);
        let (status, _) = run.wait(Duration::from_secs(60));
        let stderr = run.stderr();
        assert_eq!(status.code(), Some(5), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains(expect), "{last}");
        assert!(
            !stderr.contains(events::PAGE_LOADED),
            "something started:\n{stderr}"
        );
        assert!(!stderr.contains(KEY_SECRET) && !stderr.contains(AZURITE_KEY));
    };
    refused(
        json!({ "gcs": gcs_block(&gcs) }),
        "output.gcs: cannot use gs://recordings/rec/recording.mp4",
    );
    refused(
        json!({ "azure": azure_block(&azurite) }),
        "no such container (HTTP 404)",
    );
    gcs.make_bucket("recordings");
    gcs.upload("recordings", "rec/recording.mp4", &existing);
    azurite.blob(&["mkcontainer", "recordings"]);
    azurite.blob(&[
        "put",
        "recordings",
        "rec/recording.mp4",
        existing.to_str().unwrap(),
    ]);
    refused(
        json!({ "gcs": gcs_block(&gcs) }),
        "already holds a recording (20 bytes)",
    );
    refused(
        json!({ "azure": azure_block(&azurite) }),
        "already holds a recording (20 bytes)",
    );
    let kept = dir.path().join("kept.mp4");
    gcs.download("recordings", "rec/recording.mp4", &kept);
    assert_eq!(std::fs::read(&kept).unwrap(), b"an earlier recording");
}

/// Another writer stores an object under the recording's name while it is recorded (after the
/// pre-flight found the name free): the upload never replaces it, on S3 (a single put: the
/// recording is shorter than a part), GCS and Azure (parts, then the commit). The run fails
/// (exit 5) saying so and naming the local file, which holds the whole recording; the other
/// writer's object is as they stored it.
#[test]
fn an_object_stored_under_the_name_meanwhile_is_never_replaced() {
    let _heavy = heavy();
    let moto = Moto::start();
    let gcs = FakeGcs::start();
    let azurite = Azurite::start();
    moto.s3(&["mkbucket", "recordings"]);
    gcs.make_bucket("recordings");
    azurite.blob(&["mkcontainer", "recordings"]);
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs.mp4");
    std::fs::write(&theirs, b"another writer's recording").unwrap();
    let s3 = json!({ "access_key": "AKIAPAGECASTTEST", "secret": "not-a-real-secret",
        "bucket": "recordings", "key": "rec/recording.mp4", "endpoint": moto.endpoint(),
        "part_size": "5MiB" });
    type Store<'a> = (
        &'a str,
        serde_json::Value,
        &'a str,
        Box<dyn Fn() + 'a>,
        Box<dyn Fn(&Path) + 'a>,
    );
    let key = "rec/recording.mp4";
    let stores: Vec<Store> = vec![
        (
            "S3",
            s3,
            "s3://recordings/rec/recording.mp4",
            Box::new(|| {
                moto.s3(&["put", "recordings", key, theirs.to_str().unwrap()]);
            }),
            Box::new(|to: &Path| {
                moto.s3(&["get", "recordings", key, to.to_str().unwrap()]);
            }),
        ),
        (
            "gcs",
            gcs_block(&gcs),
            "gs://recordings/rec/recording.mp4",
            Box::new(|| gcs.upload("recordings", key, &theirs)),
            Box::new(|to: &Path| gcs.download("recordings", key, to)),
        ),
        (
            "azure",
            azure_block(&azurite),
            "azure://devstoreaccount1/recordings/rec/recording.mp4",
            Box::new(|| {
                azurite.blob(&["put", "recordings", key, theirs.to_str().unwrap()]);
            }),
            Box::new(|to: &Path| {
                azurite.blob(&["get", "recordings", key, to.to_str().unwrap()]);
            }),
        ),
    ];
    for (field, block, url, store_theirs, fetch) in stores {
        let file = dir.path().join(format!("{field}.mp4"));
        let mut run = Run::start(&config(json!({ "file": file, field: block })), &[]);
        run.wait_for(events::ENCODER_RUNNING, Duration::from_secs(60));
        store_theirs();
        let (status, _) = run.wait(Duration::from_secs(90));
        let stderr = run.stderr();
        assert_eq!(status.code(), Some(5), "{field}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains(&format!(
                "another writer stored {url} while this recording was uploading"
            )) && last.contains(&format!("the recording is kept at {}", file.display())),
            "{field}: {last}"
        );
        let fetched = dir.path().join(format!("{field}-fetched"));
        fetch(&fetched);
        assert_eq!(
            std::fs::read(&fetched).unwrap(),
            b"another writer's recording",
            "{field}: their object was replaced"
        );
        assert_plays(&file);
    }
}
