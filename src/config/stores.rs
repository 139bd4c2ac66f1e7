//! `output.gcs`, `output.azure` and `output.backup`: the raw fields and their validated form;
//! the HLS and snapshot copies' `prefix`, checked against the store they go to.
//! (`output.s3` is in config.rs; a backup's `s3` is read by its function.)

use std::path::PathBuf;
use std::time::Duration;

use pagecast_actors::secret::Secret;
use serde::Deserialize;

use super::{
    duration, field, parse_size, secret, shown_url, Amount, ConfigError, Obj, RawS3, S3Output, Size,
};

/// `output.gcs`: a Google Cloud Storage object.
#[derive(Debug, Clone)]
pub struct GcsOutput {
    pub bucket: String,
    pub key: String,
    /// The JSON API's base URL (an emulator such as fake-gcs-server); None: Google's.
    pub endpoint: Option<url::Url>,
    pub auth: GcsAuth,
    /// Bytes per uploaded chunk (a multiple of 256 KiB, GCS's rule for resumable uploads).
    pub part_size: u64,
    /// How long GCS may fail before the upload is abandoned.
    pub give_up_after: Duration,
}

#[derive(Debug, Clone)]
pub enum GcsAuth {
    /// A service-account key, its JSON given inline (`credentials`).
    Key(Secret),
    /// A service-account key file (`credentials_file`).
    File(PathBuf),
    /// Neither: the standard Google chain, or none at all with an `endpoint` (an emulator).
    Default,
}

/// `output.azure`: an Azure Blob Storage block blob.
#[derive(Debug, Clone)]
pub struct AzureOutput {
    pub account: String,
    pub container: String,
    pub blob: String,
    /// The account's blob endpoint (an emulator such as Azurite:
    /// `http://127.0.0.1:10000/devstoreaccount1`); None: `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<url::Url>,
    pub auth: AzureAuth,
    /// Bytes per uploaded block.
    pub part_size: u64,
    /// How long Azure may fail before the upload is abandoned.
    pub give_up_after: Duration,
}

#[derive(Debug, Clone)]
pub enum AzureAuth {
    /// The account's access key (`key`).
    Key(Secret),
    /// A shared access signature (`sas`).
    Sas(Secret),
    /// Neither: Azure's own chain (environment, managed identity, Azure CLI).
    Default,
}

/// `output.backup`: the one store a recording goes to when its primary upload gives up.
#[derive(Debug, Clone)]
pub enum Backup {
    S3(S3Output),
    Gcs(GcsOutput),
    Azure(AzureOutput),
}

impl Backup {
    /// The backup's object name (key or blob), for the placeholders.
    pub fn name_mut(&mut self) -> &mut String {
        match self {
            Backup::S3(s3) => &mut s3.key,
            Backup::Gcs(gcs) => &mut gcs.key,
            Backup::Azure(azure) => &mut azure.blob,
        }
    }

    /// `output.backup.s3` etc.
    pub fn field(&self) -> &'static str {
        match self {
            Backup::S3(_) => "output.backup.s3",
            Backup::Gcs(_) => "output.backup.gcs",
            Backup::Azure(_) => "output.backup.azure",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGcs {
    bucket: Option<String>,
    key: Option<String>,
    /// A JSON object, or a string holding one. Read as a value so that no error echoes it.
    credentials: Option<serde_json::Value>,
    credentials_file: Option<String>,
    endpoint: Option<String>,
    part_size: Option<Size>,
    #[serde(default, deserialize_with = "duration")]
    give_up_after: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAzure {
    account: Option<String>,
    container: Option<String>,
    blob: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    key: Option<Secret>,
    #[serde(default, deserialize_with = "secret")]
    sas: Option<Secret>,
    endpoint: Option<String>,
    part_size: Option<Size>,
    #[serde(default, deserialize_with = "duration")]
    give_up_after: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    s3: Option<Obj<RawS3>>,
    gcs: Option<Obj<RawGcs>>,
    azure: Option<Obj<RawAzure>>,
}

const KIB: u64 = 1024;

pub(super) fn gcs_output(raw: RawGcs, at: &str) -> Result<GcsOutput, ConfigError> {
    let path = |name: &str| format!("{at}.{name}");
    let bucket = required(raw.bucket, &path("bucket"))?;
    if let Some(bad) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(field(
            &path("bucket"),
            format!("{bucket:?} is not a bucket name ({bad:?}: use lowercase letters, digits, '.', '-', '_')"),
        ));
    }
    let key = required(raw.key, &path("key"))?;
    let auth = match (raw.credentials, raw.credentials_file) {
        (Some(_), Some(_)) => {
            return Err(field(
                &path("credentials"),
                "give credentials or credentials_file, not both",
            ))
        }
        (Some(json), None) => GcsAuth::Key(service_account_key(json, &path("credentials"))?),
        (None, Some(file)) if file.trim().is_empty() => {
            return Err(field(&path("credentials_file"), "must not be empty"))
        }
        (None, Some(file)) => GcsAuth::File(PathBuf::from(file)),
        (None, None) => GcsAuth::Default,
    };
    Ok(GcsOutput {
        bucket,
        key,
        endpoint: endpoint(raw.endpoint, &path("endpoint"))?,
        auth,
        part_size: part_size(raw.part_size, &path("part_size"), 256 * KIB, 5 << 30)?,
        give_up_after: give_up_after(raw.give_up_after, &path("give_up_after"))?,
    })
}

/// The key's JSON text, once it looks like a service-account key. Nothing of it is ever shown.
fn service_account_key(json: serde_json::Value, path: &str) -> Result<Secret, ConfigError> {
    let object = match json {
        serde_json::Value::String(text) => serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|_| field(path, "is not JSON (value not shown: this field is secret)"))?,
        other => other,
    };
    let usable = object.is_object()
        && ["client_email", "private_key"]
            .iter()
            .all(|k| object[k].as_str().is_some_and(|v| !v.is_empty()));
    if !usable {
        return Err(field(
            path,
            "is not a service-account key (a JSON object with client_email and private_key; \
             value not shown: this field is secret)",
        ));
    }
    Ok(Secret::new(object.to_string()))
}

pub(super) fn azure_output(raw: RawAzure, at: &str) -> Result<AzureOutput, ConfigError> {
    let path = |name: &str| format!("{at}.{name}");
    let account = required(raw.account, &path("account"))?;
    if !account
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(field(
            &path("account"),
            format!("{account:?} is not a storage account name (lowercase letters and digits)"),
        ));
    }
    let container = required(raw.container, &path("container"))?;
    if !container
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(field(
            &path("container"),
            format!("{container:?} is not a container name (lowercase letters, digits, '-')"),
        ));
    }
    let blob = required(raw.blob, &path("blob"))?;
    if blob
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(field(
            &path("blob"),
            format!("{blob:?} has an empty, '.' or '..' part between its '/'"),
        ));
    }
    let auth = match (raw.key, raw.sas) {
        (Some(_), Some(_)) => return Err(field(&path("key"), "give key or sas, not both")),
        (Some(key), None) if key.is_empty() => {
            return Err(field(&path("key"), "must not be empty"))
        }
        (None, Some(sas)) if sas.is_empty() => {
            return Err(field(&path("sas"), "must not be empty"))
        }
        (Some(key), None) => AzureAuth::Key(key),
        (None, Some(sas)) => AzureAuth::Sas(sas),
        (None, None) => AzureAuth::Default,
    };
    Ok(AzureOutput {
        account,
        container,
        blob,
        endpoint: endpoint(raw.endpoint, &path("endpoint"))?,
        auth,
        part_size: part_size(raw.part_size, &path("part_size"), 256 * KIB, 4000 << 20)?,
        give_up_after: give_up_after(raw.give_up_after, &path("give_up_after"))?,
    })
}

pub(super) fn backup(raw: RawBackup) -> Result<Backup, ConfigError> {
    match (raw.s3, raw.gcs, raw.azure) {
        (Some(Obj(s3)), None, None) => Ok(Backup::S3(super::s3_output(s3, "output.backup.s3")?)),
        (None, Some(Obj(gcs)), None) => Ok(Backup::Gcs(gcs_output(gcs, "output.backup.gcs")?)),
        (None, None, Some(Obj(azure))) => {
            Ok(Backup::Azure(azure_output(azure, "output.backup.azure")?))
        }
        (None, None, None) => Err(field("output.backup", "give one of s3, gcs or azure")),
        _ => Err(field(
            "output.backup",
            "give one store (s3, gcs or azure), not several",
        )),
    }
}

/// The primary store (the one the directory copies go to): its field and the MP4's name in it.
pub(super) struct Primary<'a> {
    field: &'static str,
    name_field: &'static str,
    name: &'a str,
}

impl<'a> Primary<'a> {
    pub(super) fn of(
        s3: Option<&'a S3Output>,
        gcs: Option<&'a GcsOutput>,
        azure: Option<&'a AzureOutput>,
    ) -> Option<Primary<'a>> {
        let (field, name_field, name) = match (s3, gcs, azure) {
            (Some(s3), _, _) => ("output.s3", "output.s3.key", s3.key.as_str()),
            (_, Some(gcs), _) => ("output.gcs", "output.gcs.key", gcs.key.as_str()),
            (_, _, Some(azure)) => ("output.azure", "output.azure.blob", azure.blob.as_str()),
            _ => return None,
        };
        Some(Primary {
            field,
            name_field,
            name,
        })
    }
}

/// `output.hls.prefix` and `output.images.prefix` (each as given: `prefix`, `s3_prefix`), checked:
/// a store to copy to, a relative folder-like prefix that does not hold the MP4, and not the same
/// for both. `s3_prefix`, the older name, still works with output.s3 only.
pub(super) fn dir_prefixes(
    given: [Option<(Option<String>, Option<String>)>; 2],
    store: Option<&Primary>,
) -> Result<[Option<String>; 2], ConfigError> {
    let mut checked: [Option<(String, String)>; 2] = [None, None];
    for (i, (at, given)) in ["output.hls", "output.images"]
        .into_iter()
        .zip(given)
        .enumerate()
    {
        let (name, prefix) = match given {
            None | Some((None, None)) => continue,
            Some((Some(_), Some(_))) => {
                return Err(field(
                    &format!("{at}.s3_prefix"),
                    "give prefix or s3_prefix (its older name), not both",
                ))
            }
            Some((Some(prefix), None)) => (format!("{at}.prefix"), prefix),
            Some((None, Some(prefix))) => (format!("{at}.s3_prefix"), prefix),
        };
        let Some(store) = store else {
            return Err(field(
                &name,
                "needs a store (output.s3, output.gcs or output.azure): the files are copied to \
                 its bucket or container",
            ));
        };
        if name.ends_with(".s3_prefix") && store.field != "output.s3" {
            return Err(field(
                &name,
                format!("the store is {}: write {at}.prefix", store.field),
            ));
        }
        if prefix.starts_with('/') || prefix.split('/').any(|p| p == "..") {
            return Err(field(
                &name,
                format!("{prefix:?} must not start with '/' or hold \"..\""),
            ));
        }
        if !prefix.is_empty()
            && !prefix.ends_with('/')
            && !prefix.ends_with('-')
            && !prefix.ends_with('_')
        {
            return Err(field(
                &name,
                format!(
                    "{prefix:?} should end with '/' (a folder), '-' or '_': file names follow it"
                ),
            ));
        }
        if store.name.starts_with(&prefix) && !store.name[prefix.len()..].contains('/') {
            return Err(field(
                &name,
                format!(
                    "holds {} {:?}: give the MP4 a name outside it",
                    store.name_field, store.name
                ),
            ));
        }
        checked[i] = Some((name, prefix));
    }
    if let [Some((hls, a)), Some((images, b))] = &checked {
        if a == b {
            return Err(field(images, format!("is {hls} too: give each its own")));
        }
    }
    Ok(checked.map(|c| c.map(|(_, prefix)| prefix)))
}

fn required(value: Option<String>, path: &str) -> Result<String, ConfigError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| field(path, "required"))
}

fn endpoint(raw: Option<String>, path: &str) -> Result<Option<url::Url>, ConfigError> {
    raw.map(|e| {
        url::Url::parse(&e)
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && u.password().is_none()
                    && u.query().is_none()
            })
            .ok_or_else(|| {
                field(
                    path,
                    format!(
                        "{} is not an http(s) URL without credentials or query",
                        shown_url(&e)
                    ),
                )
            })
    })
    .transpose()
}

fn part_size(raw: Option<Size>, path: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let size = match raw {
        None => 8 << 20,
        Some(Size(Amount::Number(n))) => n,
        Some(Size(Amount::Text(t))) => parse_size(&t)
            .ok_or_else(|| field(path, format!("{t:?} is not a size; write it like \"8MiB\"")))?,
    };
    if !(min..=max).contains(&size) || size % (256 * KIB) != 0 {
        return Err(field(
            path,
            format!(
                "must be a multiple of 256KiB between {}KiB and {}MiB, got {size} bytes",
                min / KIB,
                max >> 20
            ),
        ));
    }
    Ok(size)
}

fn give_up_after(raw: Option<Duration>, path: &str) -> Result<Duration, ConfigError> {
    let value = raw.unwrap_or(Duration::from_secs(300));
    if value.is_zero() {
        return Err(field(path, "must be longer than 0s"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn err(output: serde_json::Value) -> String {
        let config = json!({ "input": { "url": "https://example.com" }, "output": output });
        crate::config::parse(&config.to_string())
            .unwrap_err()
            .to_string()
    }

    fn ok(output: serde_json::Value) -> crate::config::Config {
        let config = json!({ "input": { "url": "https://example.com" }, "output": output });
        crate::config::parse(&config.to_string()).unwrap()
    }

    const KEY: &str = "-----BEGIN PRIVATE KEY-----SECRETKEYBYTES";

    #[test]
    fn gcs_fields_are_checked_and_the_key_never_shown() {
        let c = ok(json!({ "gcs": { "bucket": "recs", "key": "a/{utc}.mp4",
            "credentials": { "type": "service_account", "client_email": "r@p.iam", "private_key": KEY } } }));
        let gcs = c.output.gcs.unwrap();
        assert_eq!((gcs.bucket.as_str(), gcs.part_size), ("recs", 8 << 20));
        assert!(!format!("{gcs:?}").contains("SECRETKEYBYTES"));
        assert_eq!(
            err(json!({ "gcs": { "key": "k" } })),
            "config: output.gcs.bucket: required"
        );
        assert_eq!(
            err(json!({ "gcs": { "bucket": "b" } })),
            "config: output.gcs.key: required"
        );
        for bad in [
            json!("{not json SECRETKEYBYTES"),
            json!({ "private_key": KEY }),
            json!(42),
        ] {
            let e = err(json!({ "gcs": { "bucket": "b", "key": "k", "credentials": bad } }));
            assert!(
                e.starts_with("config: output.gcs.credentials: is not"),
                "{e}"
            );
            assert!(!e.contains("SECRETKEYBYTES"), "{e}");
        }
        let e = err(json!({ "gcs": { "bucket": "b", "key": "k", "part_size": "300KiB" } }));
        assert!(
            e.starts_with("config: output.gcs.part_size: must be a multiple of 256KiB"),
            "{e}"
        );
        let e = err(json!({ "gcs": { "bucket": "B", "key": "k" } }));
        assert!(e.starts_with("config: output.gcs.bucket:"), "{e}");
        let e = err(
            json!({ "gcs": { "bucket": "b", "key": "k", "credentials": {}, "credentials_file": "/k.json" } }),
        );
        assert!(
            e.starts_with("config: output.gcs.credentials: give credentials or credentials_file"),
            "{e}"
        );
    }

    #[test]
    fn azure_fields_are_checked_and_secrets_never_shown() {
        let c = ok(
            json!({ "azure": { "account": "acct", "container": "recs", "blob": "x/y.mp4",
            "sas": "sv=1&sig=SASSECRET", "endpoint": "http://127.0.0.1:10000/acct" } }),
        );
        let azure = c.output.azure.unwrap();
        assert!(!format!("{azure:?}").contains("SASSECRET"));
        assert_eq!(
            err(json!({ "azure": { "container": "c", "blob": "b" } })),
            "config: output.azure.account: required"
        );
        let e = err(
            json!({ "azure": { "account": "a", "container": "c", "blob": "b", "key": "K1", "sas": "S1" } }),
        );
        assert_eq!(e, "config: output.azure.key: give key or sas, not both");
        let e =
            err(json!({ "azure": { "account": "a", "container": "c", "blob": "b", "key": 7 } }));
        assert!(
            e.starts_with("config: output.azure.key:") && e.contains("value not shown"),
            "{e}"
        );
        let e = err(json!({ "azure": { "account": "a", "container": "c", "blob": "x//y" } }));
        assert!(e.starts_with("config: output.azure.blob:"), "{e}");
        let e = err(
            json!({ "azure": { "account": "a", "container": "c", "blob": "b", "endpoint": "http://h/?sig=SASSECRET" } }),
        );
        assert!(
            e.starts_with("config: output.azure.endpoint:") && !e.contains("SASSECRET"),
            "{e}"
        );
    }

    #[test]
    fn one_primary_store_and_one_backup_store() {
        let s3 = json!({ "bucket": "b", "key": "k" });
        let gcs = json!({ "bucket": "b", "key": "k" });
        let azure = json!({ "account": "a", "container": "c", "blob": "b" });
        let e = err(json!({ "s3": s3, "gcs": gcs }));
        assert!(
            e.starts_with("config: output: give one of s3, gcs or azure"),
            "{e}"
        );
        let c = ok(json!({ "gcs": gcs, "backup": { "azure": azure } }));
        assert!(matches!(c.output.backup, Some(super::Backup::Azure(_))));
        let e = err(json!({ "gcs": gcs, "backup": { "azure": azure, "s3": s3 } }));
        assert_eq!(
            e,
            "config: output.backup: give one store (s3, gcs or azure), not several"
        );
        let e = err(json!({ "file": "a.mp4", "backup": { "s3": s3 } }));
        assert!(
            e.starts_with("config: output.backup: needs a store to back up"),
            "{e}"
        );
        let e = err(json!({ "s3": s3, "backup": { "s3": { "bucket": "b" } } }));
        assert_eq!(e, "config: output.backup.s3.key: required");
    }
}
