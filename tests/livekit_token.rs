//! pagecast's LiveKit tokens, checked by LiveKit's own server SDK (`livekit-api`, in the
//! project's venv): the signature verifies with the right secret only, and the SDK reads the
//! grants pagecast means.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use pagecast_actors::secret::Secret;

fn verify(token: &str, key: &str, secret: &str) -> (bool, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = format!("{root}/.venv/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} missing: run scripts/setup.sh"
    );
    let mut child = Command::new(python)
        .arg(format!("{root}/tests/support/verify_token.py"))
        .env("LK_API_KEY", key)
        .env("LK_API_SECRET", secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the verifier");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

#[test]
fn livekit_s_verifier_accepts_the_recorder_token_and_reads_its_grants() {
    let secret = "a-test-secret-of-more-than-32-characters";
    let token = pagecast::livekit::recorder_token(
        "APItest",
        &Secret::new(secret),
        "standup",
        "pagecast-42",
        SystemTime::now(),
        Duration::from_secs(60),
    )
    .unwrap();
    let (ok, out) = verify(token.expose(), "APItest", secret);
    assert!(ok, "refused: {out}");
    let claims: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(claims["identity"], "pagecast-42");
    let video = &claims["video"];
    assert_eq!(video["room_join"], true);
    assert_eq!(video["room"], "standup");
    assert_eq!(video["can_subscribe"], true);
    assert_eq!(video["can_publish"], false);
    assert_eq!(video["can_publish_data"], false);
    assert_eq!(video["hidden"], true);
    assert_eq!(video["recorder"], true);
    for admin in ["room_admin", "room_create", "room_list", "room_record"] {
        assert_ne!(video[admin], true, "{admin}: nothing more than asked");
    }

    let (ok, out) = verify(
        token.expose(),
        "APItest",
        "another-secret-of-more-than-32-chars",
    );
    assert!(!ok, "a wrong secret must fail verification: {out}");
    let (ok, _) = verify(token.expose(), "APIother", secret);
    assert!(!ok, "another key's verifier must refuse it");
}

#[test]
fn an_expired_token_is_refused_by_the_verifier() {
    let secret = "a-test-secret-of-more-than-32-characters";
    let long_ago = SystemTime::now() - Duration::from_secs(7 * 3600);
    let token = pagecast::livekit::recorder_token(
        "APItest",
        &Secret::new(secret),
        "standup",
        "pagecast-42",
        long_ago,
        Duration::from_secs(60),
    )
    .unwrap();
    let (ok, out) = verify(token.expose(), "APItest", secret);
    assert!(!ok, "a token made 7 h ago for 6 h must be expired: {out}");
}
