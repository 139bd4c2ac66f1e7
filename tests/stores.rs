//! GCS and Azure Blob outputs against their emulators (fake-gcs-server, Azurite; on loopback):
//! the object is uploaded while recording and plays; a store that goes away and comes back
//! (losing the open upload) loses nothing; a store gone for good hands the whole recording to the
//! backup store, and the run says so.
mod common;

use std::time::Duration;

use common::*;
use pagecast_actors::events;
use pagecast_testkit::stores::{Azurite, FakeGcs, AZURITE_KEY};
use pagecast_testkit::{heavy, probe};
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

/// GCS goes away after the first part (and forgets the open upload); it is back before the stop;
/// the object is complete all the same.
#[test]
fn a_gcs_upload_survives_the_server_going_away_and_losing_the_upload() {
    let _heavy = heavy();
    let mut gcs = FakeGcs::start();
    gcs.make_bucket("recordings");
    let mut run = Run::start(&config(json!({ "gcs": gcs_block(&gcs) })), &[]);
    run.wait_for(events::UPLOADED_PART, Duration::from_secs(60));
    gcs.kill();
    run.wait_for(events::UPLOAD_RETRYING, Duration::from_secs(30));
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
}

/// Azure goes away after the first block; it is back before the stop; the blob is complete.
#[test]
fn an_azure_upload_survives_the_server_going_away() {
    let _heavy = heavy();
    let mut azurite = Azurite::start();
    azurite.blob(&["mkcontainer", "recordings"]);
    let mut run = Run::start(&config(json!({ "azure": azure_block(&azurite) })), &[]);
    run.wait_for(events::UPLOADED_PART, Duration::from_secs(60));
    azurite.stop();
    run.wait_for(events::UPLOAD_RETRYING, Duration::from_secs(30));
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
