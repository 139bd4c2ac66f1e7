//! Object stores the recording is uploaded to while it is recorded: S3, GCS and Azure Blob.
//!
//! Owns: the [`Store`] trait, the one interface the uploader streams through (a part at a time,
//! then complete; a single put for a short recording), [`Objects`], whole objects by name beside
//! it through the same client (the HLS and snapshot directory copies), and [`preflight`], which
//! checks a target before anything starts and gives its store. Each store speaks its own protocol in its own
//! file: S3 multipart (`s3.rs`), GCS resumable uploads (`gcs.rs`), Azure block blobs (`azure.rs`).
//! No store ever puts a credential into a message: errors name the target and the HTTP status.
//!
//! No overwriting: unless the run was told to replace the object (`--overwrite`), the object is
//! created only if there is none of its name when it is made (S3's `If-None-Match: *`, GCS's
//! `ifGenerationMatch=0`, Azure's `If-None-Match: *` on a single put). The pre-flight already
//! refused a name that held a recording; this closes the window between that check and the end of
//! the upload, in which another writer (another run given the same name, a user) may store an
//! object there. Each upload's object carries its own mark ([`MARK`] metadata), so a retried
//! call whose first answer was lost tells its own object from another writer's.

pub mod azure;
pub mod gcs;
pub mod s3;

use std::time::Duration;

use std::sync::Arc;

use futures_util::future::{BoxFuture, LocalBoxFuture};

use crate::supervision::{Failure, FailureKind};

pub use azure::AzureTarget;
pub use gcs::GcsTarget;
pub use s3::S3Target;

/// How long a pre-flight call may take.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a recording is uploaded.
#[derive(Debug, Clone)]
pub enum Target {
    S3(S3Target),
    Gcs(GcsTarget),
    Azure(AzureTarget),
}

impl Target {
    /// The config field it comes from (`output.s3`, `output.gcs`, `output.azure`), with `backup`'s
    /// prefix when it is the backup store.
    pub fn field(&self) -> &str {
        match self {
            Target::S3(t) => &t.field,
            Target::Gcs(t) => &t.field,
            Target::Azure(t) => &t.field,
        }
    }

    /// The object as a URL: `s3://b/k`, `gs://b/k`, `azure://account/container/blob`.
    pub fn url(&self) -> String {
        match self {
            Target::S3(t) => format!("s3://{}/{}", t.bucket, t.key),
            Target::Gcs(t) => format!("gs://{}/{}", t.bucket, t.key),
            Target::Azure(t) => format!("azure://{}/{}/{}", t.account, t.container, t.blob),
        }
    }

    /// The object and where it is, for messages (no secrets in it).
    pub fn describe(&self) -> String {
        let at = match self {
            Target::S3(t) => t.endpoint.as_deref().unwrap_or("AWS"),
            Target::Gcs(t) => t.endpoint.as_deref().unwrap_or("Google Cloud Storage"),
            Target::Azure(t) => t.endpoint.as_deref().unwrap_or("Azure"),
        };
        format!("{} at {at}", self.url())
    }
}

/// A failed store call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// One line, naming the HTTP status when there is one; never a secret.
    pub message: String,
    /// The open upload is gone on the server (expired, aborted, or lost by a restarted server):
    /// the upload starts again from the file's first byte, which is still on disk.
    pub upload_lost: bool,
    /// Another writer stored an object under the name while this upload ran: it is left as it
    /// is, and retrying cannot help.
    pub taken: bool,
}

impl Fault {
    pub fn new(message: impl Into<String>) -> Fault {
        Fault {
            message: message.into(),
            upload_lost: false,
            taken: false,
        }
    }

    pub fn upload_lost(message: impl Into<String>) -> Fault {
        Fault {
            upload_lost: true,
            ..Fault::new(message)
        }
    }

    /// The object `url` was stored by another writer meanwhile.
    pub fn taken(url: &str) -> Fault {
        Fault {
            taken: true,
            ..Fault::new(format!(
                "another writer stored {url} while this recording was uploading; it is left as it is"
            ))
        }
    }
}

impl From<String> for Fault {
    fn from(message: String) -> Fault {
        Fault::new(message)
    }
}

pub type Call<'a, T> = LocalBoxFuture<'a, Result<T, Fault>>;

/// After a create was refused (there is an object of its name): `stored`, the mark that object
/// carries, decides. This upload's (`mark`): its own, made by a try whose answer was lost.
/// Another's, or none: [`Fault::taken`], the object at `url` left as it is.
pub(crate) fn ours_or_taken(stored: Option<&str>, mark: &str, url: &str) -> Result<(), Fault> {
    if stored == Some(mark) {
        Ok(())
    } else {
        Err(Fault::taken(url))
    }
}

/// The metadata name under which an object carries the mark of the upload that made it.
pub const MARK: &str = "pagecast_upload";

/// A mark no other upload has: this process, the time, and a count within the process.
pub fn upload_mark() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{nanos}-{count}", std::process::id())
}

/// One object being uploaded in parts. Calls are made one at a time, in order; a failed call is
/// retried by the uploader with the same arguments.
pub trait Store {
    /// Sends `bytes`, the file's bytes from `offset` on, as the next part of the upload (which is
    /// opened first if none is). Parts follow each other without gaps.
    fn put_part(&mut self, offset: u64, bytes: Vec<u8>) -> Call<'_, ()>;
    /// Makes the object of the parts sent, `total` bytes.
    fn complete(&mut self, total: u64) -> Call<'_, ()>;
    /// Stores `bytes` as the whole object in one request (a recording shorter than a part).
    fn put_whole(&mut self, bytes: Vec<u8>) -> Call<'_, ()>;
    /// The stored object's size; None when there is no object.
    fn size(&self) -> Call<'_, Option<u64>>;
    /// Drops the open upload, if any (best effort: the store may be the problem). Nothing
    /// completed is touched.
    fn abort(&mut self) -> LocalBoxFuture<'_, ()>;
    /// Forgets the open upload without a call (the server lost it).
    fn forget(&mut self);
    /// Whether an upload is open.
    fn is_open(&self) -> bool;
    /// Whole objects in the same bucket or container, through this store's client and
    /// credentials: a run builds one client per store.
    fn objects(&self) -> Arc<dyn Objects>;
}

/// Whole objects by name in one bucket or container (the directory copies: HLS segments and
/// playlists, snapshots). Each call is one bounded request; the caller retries. `Send`: the
/// copies run on tasks of their own.
pub trait Objects: Send + Sync {
    /// Stores `bytes` as the object `name` (in place of one of that name).
    fn put(
        &self,
        name: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> BoxFuture<'_, Result<(), Fault>>;
    /// Stores `bytes` as the object `name` only if there is none of that name, carrying `mark`
    /// ([`MARK`] metadata). One of that name with the same mark (a retry whose first answer was
    /// lost) is this call's own: Ok. Another is [`Fault::taken`] and left as it is.
    fn create(
        &self,
        name: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
        mark: &str,
    ) -> BoxFuture<'_, Result<(), Fault>>;
    /// Deletes the object `name`.
    fn delete(&self, name: &str) -> BoxFuture<'_, Result<(), Fault>>;
    /// Whether there is an object `name`.
    fn exists(&self, name: &str) -> BoxFuture<'_, Result<bool, Fault>>;
    /// The object `name` as a URL (`s3://b/name`, `gs://b/name`, `azure://account/c/name`), for
    /// messages.
    fn url(&self, name: &str) -> String;
}

/// Checks, before anything starts, that the bucket or container is there and the credentials may
/// use it, and (unless `overwrite`) that no recording is already stored under the name: an upload
/// would replace it. Gives the store to upload through, which (unless `overwrite`) creates the
/// object only if the name is still free when it is made.
pub async fn preflight(target: &Target, overwrite: bool) -> Result<Box<dyn Store>, Failure> {
    let field = target.field().to_owned();
    let fail = |why: String| {
        Failure::new(
            FailureKind::Output,
            format!("{field}: cannot use {}: {why}", target.describe()),
        )
    };
    let checked = async {
        let store: Box<dyn Store> = match target {
            Target::S3(t) => Box::new(
                s3::S3Store::connect(t, overwrite)
                    .await
                    .map_err(|f| f.message)?,
            ),
            Target::Gcs(t) => Box::new(
                gcs::GcsStore::connect(t, overwrite)
                    .await
                    .map_err(|f| f.message)?,
            ),
            Target::Azure(t) => Box::new(
                azure::AzureStore::connect(t, overwrite)
                    .await
                    .map_err(|f| f.message)?,
            ),
        };
        Ok::<_, String>(store)
    };
    let store = match tokio::time::timeout(PREFLIGHT_TIMEOUT, checked).await {
        Ok(Ok(store)) => store,
        Ok(Err(why)) => return Err(fail(why)),
        Err(_) => {
            return Err(Failure::new(
                FailureKind::Output,
                format!(
                    "{field}: {} did not answer within {}s",
                    target.describe(),
                    PREFLIGHT_TIMEOUT.as_secs()
                ),
            ))
        }
    };
    if overwrite {
        return Ok(store);
    }
    match tokio::time::timeout(PREFLIGHT_TIMEOUT, store.size()).await {
        Ok(Ok(Some(bytes))) if bytes > 0 => Err(Failure::new(
            FailureKind::Output,
            format!(
                "{field}: {} already holds a recording ({bytes} bytes); remove it, give \
                 --overwrite, or put {{time}} or {{utc}} in its name for a fresh name each run",
                target.describe(),
            ),
        )),
        Ok(Ok(_)) => Ok(store),
        Ok(Err(fault)) => {
            // Credentials that may write but not read cannot tell: said, and the recording goes
            // ahead.
            tracing::warn!(
                object = %target.describe(),
                error = %fault.message,
                "cannot tell whether the object already exists; recording anyway"
            );
            Ok(store)
        }
        Err(_) => Err(Failure::new(
            FailureKind::Output,
            format!(
                "{field}: {} did not answer within {}s",
                target.describe(),
                PREFLIGHT_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// One line for an HTTP status a store answered with.
pub(crate) fn explain_status(status: u16, field: &str, body: &str) -> String {
    match status {
        401 | 403 => format!("access denied (HTTP {status}): check {field}'s credentials"),
        404 => format!("not found (HTTP 404){}", detail(body)),
        _ => format!("HTTP {status}{}", detail(body)),
    }
}

/// The start of an error body, on one line (server error codes such as `ContainerNotFound`).
fn detail(body: &str) -> String {
    let line: String = body
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(160)
        .collect();
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_create_is_ours_only_under_our_own_mark() {
        let mine = upload_mark();
        assert_ne!(mine, upload_mark(), "two uploads share a mark");
        assert_eq!(ours_or_taken(Some(&mine), &mine, "s3://b/k"), Ok(()));
        for stored in [Some("another-mark"), Some(""), None] {
            let fault = ours_or_taken(stored, &mine, "s3://b/k").unwrap_err();
            assert!(fault.taken && !fault.upload_lost, "{fault:?}");
            assert_eq!(
                fault.message,
                "another writer stored s3://b/k while this recording was uploading; it is left as it is"
            );
        }
    }
}
