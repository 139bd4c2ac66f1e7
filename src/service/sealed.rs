//! Job payloads encrypted at rest: what is in Redis is `{"id": "<id>", "sealed": "<base64>"}`,
//! the job `{"id", "config"}` sealed with AES-256-GCM under the key every worker and submitter
//! has (`PAGECAST_JOB_KEY`, 64 hex characters), a fresh random nonce per sealing, and the id as
//! associated data (a sealed config cannot be moved under another id).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine as _;

/// The environment variable holding the key.
pub const KEY_VAR: &str = "PAGECAST_JOB_KEY";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("{KEY_VAR}: must be 64 hex characters (32 bytes)")]
    BadKey,
    #[error("job: encrypted, but this worker has no {KEY_VAR}")]
    NoKey,
    #[error("job: cannot be decrypted with this worker's {KEY_VAR} (another key, or altered)")]
    Open,
    #[error("job: cannot encrypt it: {0}")]
    Seal(String),
}

/// The key jobs are sealed with. Prints as `****`.
pub struct JobKey(LessSafeKey);

impl std::fmt::Debug for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobKey(****)")
    }
}

impl JobKey {
    /// From 64 hex characters.
    pub fn from_hex(hex: &str) -> Result<JobKey, SealError> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(SealError::BadKey);
        }
        let bytes = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| SealError::BadKey)?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::BadKey)?;
        Ok(JobKey(LessSafeKey::new(key)))
    }

    /// The key from `PAGECAST_JOB_KEY`, if it is set.
    pub fn from_env() -> Result<Option<JobKey>, SealError> {
        match std::env::var(KEY_VAR) {
            Ok(hex) => JobKey::from_hex(&hex).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(SealError::BadKey),
        }
    }

    /// The job `clear` (`{"id", "config"}` JSON) as stored in Redis.
    pub fn seal(&self, id: &str, clear: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|e| SealError::Seal(e.to_string()))?;
        let mut data = clear.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut data,
            )
            .map_err(|e| SealError::Seal(e.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        let sealed = base64::engine::general_purpose::STANDARD.encode(out);
        Ok(serde_json::json!({ "id": id, "sealed": sealed }).to_string())
    }

    /// The clear job of a sealed one (`id` and `sealed` as read from the stored JSON).
    pub fn open(&self, id: &str, sealed: &str) -> Result<String, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SealError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut data = data.to_vec();
        let clear = self
            .0
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut data)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(clear.to_vec()).map_err(|_| SealError::Open)
    }
}

/// The fields of a config that hold secrets (empty: it can rest in Redis in clear).
pub fn secret_fields(config: &crate::config::Config) -> Vec<&'static str> {
    use crate::config::{Source, TemplateAuth};
    let mut fields = Vec::new();
    match &config.input.source {
        Source::Template(t) => {
            fields.push(match t.auth {
                TemplateAuth::Token(_) => "input.template.token",
                TemplateAuth::ApiKey { .. } => "input.template.api_secret",
            });
        }
        Source::Url(url) => {
            if !url.username().is_empty()
                || url.password().is_some()
                || url.query().is_some()
                || url.fragment().is_some()
            {
                fields.push("input.url");
            }
        }
    }
    // A login's values are what sign the recorder in to the page.
    if !config.input.login.headers.is_empty() {
        fields.push("input.headers");
    }
    if !config.input.login.cookies.is_empty() {
        fields.push("input.cookies");
    }
    if !config.output.rtmp.is_empty() {
        fields.push("output.rtmp");
    }
    if !config.output.srt.is_empty() {
        fields.push("output.srt");
    }
    if let Some(s3) = &config.output.s3 {
        if s3.secret.is_some() {
            fields.push("output.s3.secret");
        }
        if s3.session_token.is_some() {
            fields.push("output.s3.session_token");
        }
    }
    if let Some(gcs) = &config.output.gcs {
        if matches!(gcs.auth, crate::config::GcsAuth::Key(_)) {
            fields.push("output.gcs.credentials");
        }
    }
    if let Some(azure) = &config.output.azure {
        match azure.auth {
            crate::config::AzureAuth::Key(_) => fields.push("output.azure.key"),
            crate::config::AzureAuth::Sas(_) => fields.push("output.azure.sas"),
            crate::config::AzureAuth::Default => {}
        }
    }
    if let Some(backup) = &config.output.backup {
        let secret = match backup {
            crate::config::Backup::S3(s3) => s3.secret.is_some(),
            crate::config::Backup::Gcs(gcs) => matches!(gcs.auth, crate::config::GcsAuth::Key(_)),
            crate::config::Backup::Azure(a) => !matches!(a.auth, crate::config::AzureAuth::Default),
        };
        if secret {
            fields.push("output.backup");
        }
    }
    fields
}

/// A job as stored: sealed (`{"id", "sealed"}`) or in clear (anything else).
#[derive(Debug, PartialEq, Eq)]
pub enum Stored<'a> {
    Sealed { id: String, sealed: String },
    Clear(&'a str),
}

/// Tells a sealed job from one in clear.
pub fn stored(raw: &str) -> Stored<'_> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SealedJob {
        id: String,
        sealed: String,
    }
    match serde_json::from_str::<SealedJob>(raw) {
        Ok(SealedJob { id, sealed }) => Stored::Sealed { id, sealed },
        Err(_) => Stored::Clear(raw),
    }
}

/// The job's clear JSON: opened with `key` if it is sealed.
pub fn unseal(raw: &str, key: Option<&JobKey>) -> Result<String, SealError> {
    match stored(raw) {
        Stored::Clear(clear) => Ok(clear.to_owned()),
        Stored::Sealed { id, sealed } => key.ok_or(SealError::NoKey)?.open(&id, &sealed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_job_opens_only_with_its_key_and_its_id() {
        let key = JobKey::from_hex(HEX).unwrap();
        let clear = r#"{"id":"a","config":{"api_secret":"s3cr3t-value"}}"#;
        let sealed = key.seal("a", clear).unwrap();
        assert!(!sealed.contains("s3cr3t"), "{sealed}");
        assert_ne!(
            sealed,
            key.seal("a", clear).unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(unseal(&sealed, Some(&key)).unwrap(), clear);
        assert_eq!(unseal(&sealed, None), Err(SealError::NoKey));
        let other = JobKey::from_hex(&HEX.replace("1f", "20")).unwrap();
        assert_eq!(unseal(&sealed, Some(&other)), Err(SealError::Open));
        // The same ciphertext under another id does not open.
        let Stored::Sealed { sealed: body, .. } = stored(&sealed) else {
            panic!("{sealed}")
        };
        assert_eq!(key.open("b", &body), Err(SealError::Open));
        // A clear job passes through.
        assert_eq!(unseal(clear, None).unwrap(), clear);
    }

    #[test]
    fn a_page_s_login_and_user_name_are_secret_fields() {
        let config = serde_json::json!({
            "input": { "url": "https://TOKEN@example.com/",
                "headers": { "X-Token": "X" },
                "cookies": [{ "name": "s", "value": "X" }] },
            "output": { "file": "/tmp/a.mp4" },
        });
        let config = crate::config::parse(&config.to_string()).unwrap();
        assert_eq!(
            secret_fields(&config),
            vec!["input.url", "input.headers", "input.cookies"]
        );
        let plain = serde_json::json!({
            "input": { "url": "https://example.com/" },
            "output": { "file": "/tmp/a.mp4" },
        });
        let plain = crate::config::parse(&plain.to_string()).unwrap();
        assert!(secret_fields(&plain).is_empty());
    }

    #[test]
    fn the_other_stores_secrets_are_secret_fields() {
        let config = serde_json::json!({
            "input": { "url": "https://example.com" },
            "output": { "gcs": { "bucket": "b", "key": "k", "credentials": { "client_email": "e", "private_key": "p" } },
                "backup": { "azure": { "account": "a", "container": "c", "blob": "b", "sas": "sig=x" } } },
        });
        let config = crate::config::parse(&config.to_string()).unwrap();
        assert_eq!(
            secret_fields(&config),
            vec!["output.gcs.credentials", "output.backup"]
        );
    }

    #[test]
    fn a_key_is_64_hex_characters() {
        assert!(JobKey::from_hex(HEX).is_ok());
        for bad in [
            "",
            "00",
            &HEX[..62],
            &format!("{}zz", &HEX[..62]),
            &format!("{HEX}00"),
        ] {
            assert_eq!(
                JobKey::from_hex(bad).unwrap_err(),
                SealError::BadKey,
                "{bad}"
            );
        }
        assert_eq!(
            format!("{:?}", JobKey::from_hex(HEX).unwrap()),
            "JobKey(****)"
        );
    }
}
