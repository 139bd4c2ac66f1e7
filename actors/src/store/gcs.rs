//! Google Cloud Storage: a resumable upload, one chunk per [`Store::put_part`], through
//! `gcloud-storage` (a maintained client of GCS's JSON API: sessions, chunks, status queries,
//! media uploads).
//!
//! Why not `object_store`'s GCS client: it uploads in parts through the XML multipart API, which
//! the GCS emulator (fake-gcs-server) does not have, so nothing of it could be tested here; the
//! resumable upload is GCS's own way to stream an object of unknown length and the emulator has
//! it. `object_store` still provides the credentials (service-account key, the Google chain),
//! with their token exchange and refresh, handed to the client as its token source.
//!
//! A chunk whose fate is unknown (a timeout, a 5xx) is followed by a status query before the next
//! send, so bytes the server already holds are never sent twice.
//!
//! Unless it replaces the object, the upload (resumable or single) carries `ifGenerationMatch=0`:
//! GCS makes the object only if there is none of its name when the upload finishes, and answers
//! 412 otherwise; the object there is left as it is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, LocalBoxFuture};
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::resumable_upload_client::{
    ChunkSize, ResumableUploadClient, UploadStatus,
};
use gcloud_storage::http::Error;
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::CredentialProvider;

use super::{explain_status, Call, Fault, Objects, Store, MARK};
use crate::secret::Secret;

/// A resumable upload's chunks (except the last) are multiples of 256 KiB.
pub const CHUNK_MULTIPLE: u64 = 256 * 1024;
const GCS: &str = "https://storage.googleapis.com";

/// How the uploads authenticate.
#[derive(Debug, Clone)]
pub enum GcsCredentials {
    /// A service-account key (its JSON text).
    Key(Secret),
    /// A service-account key file.
    File(PathBuf),
    /// The standard Google chain: GOOGLE_APPLICATION_CREDENTIALS, gcloud's application default
    /// credentials, the metadata server.
    Chain,
    /// None (an emulator at `endpoint`).
    Anonymous,
}

#[derive(Debug, Clone)]
pub struct GcsTarget {
    /// The config field (`output.gcs`, `output.backup.gcs`), for messages.
    pub field: String,
    pub bucket: String,
    pub key: String,
    /// The JSON API's base URL (an emulator); None: Google's.
    pub endpoint: Option<String>,
    pub credentials: GcsCredentials,
}

type Token = Arc<dyn CredentialProvider<Credential = GcpCredential>>;

/// `object_store`'s credentials as the client's token source (`Bearer <token>`).
#[derive(Debug)]
struct Bearer(Token);

#[async_trait::async_trait]
impl token_source::TokenSource for Bearer {
    async fn token(&self) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let credential = self.0.get_credential().await?;
        Ok(format!("Bearer {}", credential.bearer))
    }
}

#[derive(Debug)]
struct BearerProvider(Arc<Bearer>);

impl token_source::TokenSourceProvider for BearerProvider {
    fn token_source(&self) -> Arc<dyn token_source::TokenSource> {
        self.0.clone()
    }
}

pub struct GcsStore {
    client: Client,
    target: GcsTarget,
    /// The open resumable upload (its URL is the upload's only credential: never logged).
    session: Option<ResumableUploadClient>,
    /// The last chunk may or may not have reached the server.
    uncertain: bool,
    /// Whether the upload may replace an object of its name.
    replace: bool,
    /// This upload's mark, in its object's metadata.
    mark: String,
}

impl GcsStore {
    /// The store, once the bucket answered (it exists and the credentials may list it).
    /// `replace`: the upload may replace an object of its name.
    pub async fn connect(target: &GcsTarget, replace: bool) -> Result<GcsStore, Fault> {
        let token = credentials(target)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Fault::new(format!("cannot make an HTTP client: {e}")))?;
        let config = ClientConfig {
            http: Some(reqwest_middleware::ClientBuilder::new(http).build()),
            storage_endpoint: target
                .endpoint
                .clone()
                .unwrap_or_else(|| GCS.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            token_source_provider: token.map(|t| {
                Box::new(BearerProvider(Arc::new(Bearer(t))))
                    as Box<dyn token_source::TokenSourceProvider>
            }),
            ..ClientConfig::default()
        };
        let client = Client::new(config);
        let list = ListObjectsRequest {
            bucket: target.bucket.clone(),
            prefix: Some(target.key.clone()),
            max_results: Some(1),
            ..Default::default()
        };
        match client.list_objects(&list).await {
            Ok(_) => {}
            Err(e) if status(&e) == Some(404) => {
                return Err(Fault::new("no such bucket (HTTP 404)"))
            }
            Err(e) => return Err(fault(&e, &target.field)),
        }
        Ok(GcsStore {
            client,
            target: target.clone(),
            session: None,
            uncertain: false,
            replace,
            mark: super::upload_mark(),
        })
    }

    fn fault(&self, e: &Error) -> Fault {
        fault(e, &self.target.field)
    }

    /// The object was refused (412: there is one of its name). Ours, when a retried call's first
    /// answer was lost; else another writer's, which is left as it is.
    async fn refused(&self) -> Result<(), Fault> {
        self.marked().refused().await
    }

    /// This upload's object.
    fn marked(&self) -> Marked<'_> {
        let t = &self.target;
        Marked {
            client: &self.client,
            bucket: &t.bucket,
            key: &t.key,
            mark: &self.mark,
            field: &t.field,
        }
    }

    async fn open(&mut self) -> Result<(), Fault> {
        let t = &self.target;
        let (request, metadata) = marked(&t.bucket, &t.key, "video/mp4", &self.mark, !self.replace);
        let session = self
            .client
            .prepare_resumable_upload(&request, &UploadType::Multipart(Box::new(metadata)))
            .await
            .map_err(|e| self.fault(&e))?;
        self.session = Some(session);
        self.uncertain = false;
        tracing::info!(target = %self.target.bucket, key = %self.target.key, "resumable upload started");
        Ok(())
    }

    fn lost(&mut self) -> Fault {
        self.session = None;
        Fault::upload_lost("the resumable upload is gone on the server")
    }

    /// How many bytes the server holds of the open upload (a status query).
    async fn persisted(&mut self) -> Result<u64, Fault> {
        let Some(session) = &self.session else {
            return Err(Fault::upload_lost("no upload is open"));
        };
        match session.status(None).await {
            Ok(UploadStatus::ResumeIncomplete(range)) => Ok(range.last_byte + 1),
            Ok(UploadStatus::NotStarted) => Ok(0),
            // The emulator finishes the object on a status query: the upload is over.
            Ok(UploadStatus::Ok(_)) => Err(self.lost()),
            Err(e) if matches!(status(&e), Some(404 | 410)) => Err(self.lost()),
            Err(e) => Err(self.fault(&e)),
        }
    }

    async fn try_put_part(&mut self, offset: u64, mut bytes: Vec<u8>) -> Result<(), Fault> {
        if self.session.is_none() {
            if offset > 0 {
                return Err(Fault::upload_lost("no upload is open"));
            }
            self.open().await?;
        }
        let mut start = offset;
        if self.uncertain {
            let held = self.persisted().await?;
            self.uncertain = false;
            if held >= offset + bytes.len() as u64 {
                return Ok(());
            }
            if held < offset {
                return Err(self.lost());
            }
            bytes.drain(..(held - offset) as usize);
            start = held;
        }
        let end = start + bytes.len() as u64 - 1;
        let Some(session) = &self.session else {
            return Err(Fault::upload_lost("no upload is open"));
        };
        match session
            .upload_multiple_chunk(bytes, &ChunkSize::new(start, end, None))
            .await
        {
            // GCS may keep less than it was sent: the rest goes again, after a status query.
            Ok(UploadStatus::ResumeIncomplete(range)) if range.last_byte < end => {
                self.uncertain = true;
                Err(Fault::new("the server kept only part of the chunk"))
            }
            Ok(UploadStatus::ResumeIncomplete(_)) => Ok(()),
            Ok(UploadStatus::NotStarted) => {
                self.uncertain = true;
                Err(Fault::new("the server kept none of the chunk"))
            }
            Ok(UploadStatus::Ok(_)) => {
                Err(Fault::new("the chunk was taken as the end of the object"))
            }
            Err(e) => match status(&e) {
                Some(404 | 410) => Err(self.lost()),
                // Other 4xx: refused, not lost in transit.
                Some(s) if s < 500 && s != 429 && s != 408 => Err(self.fault(&e)),
                // A 5xx, a 429, a timeout, a broken connection: it may have arrived.
                _ => {
                    self.uncertain = true;
                    Err(self.fault(&e))
                }
            },
        }
    }

    async fn try_complete(&mut self, total: u64) -> Result<(), Fault> {
        let Some(session) = &self.session else {
            return Err(Fault::upload_lost("no upload is open"));
        };
        match session.status(Some(total)).await {
            Ok(UploadStatus::Ok(_)) => {
                self.session = None;
                Ok(())
            }
            Ok(_) => Err(Fault::new("the upload was not finished")),
            Err(e) if status(&e) == Some(412) => {
                self.session = None;
                self.refused().await
            }
            Err(e) if matches!(status(&e), Some(404 | 410)) => Err(self.lost()),
            Err(e) => Err(self.fault(&e)),
        }
    }
}

impl Store for GcsStore {
    fn put_part(&mut self, offset: u64, bytes: Vec<u8>) -> Call<'_, ()> {
        Box::pin(self.try_put_part(offset, bytes))
    }

    fn complete(&mut self, total: u64) -> Call<'_, ()> {
        Box::pin(self.try_complete(total))
    }

    fn put_whole(&mut self, bytes: Vec<u8>) -> Call<'_, ()> {
        Box::pin(self.marked().put(bytes, "video/mp4", !self.replace))
    }

    fn size(&self) -> Call<'_, Option<u64>> {
        Box::pin(async move {
            let request = GetObjectRequest {
                bucket: self.target.bucket.clone(),
                object: self.target.key.clone(),
                ..Default::default()
            };
            match self.client.get_object(&request).await {
                Ok(object) => Ok(Some(object.size.max(0) as u64)),
                Err(e) if status(&e) == Some(404) => Ok(None),
                Err(e) => Err(self.fault(&e)),
            }
        })
    }

    fn abort(&mut self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(session) = self.session.take() else {
                return;
            };
            // Google answers a cancelled upload with 499, which the client takes as done.
            match tokio::time::timeout(Duration::from_secs(10), session.cancel()).await {
                Ok(Ok(())) => tracing::info!("incomplete resumable upload cancelled"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %self.fault(&e).message, "could not cancel the resumable upload")
                }
                Err(_) => tracing::warn!("could not cancel the resumable upload: no answer"),
            }
        })
    }

    fn forget(&mut self) {
        self.session = None;
        self.uncertain = false;
    }

    fn is_open(&self) -> bool {
        self.session.is_some()
    }

    fn objects(&self) -> Arc<dyn Objects> {
        Arc::new(GcsObjects {
            client: self.client.clone(),
            bucket: self.target.bucket.clone(),
            field: self.target.field.clone(),
        })
    }
}

/// The upload request and metadata of the object `key` carrying `mark`: with `create`, it is
/// made only if there is none of its name (`ifGenerationMatch=0`).
fn marked(
    bucket: &str,
    key: &str,
    content_type: &str,
    mark: &str,
    create: bool,
) -> (UploadObjectRequest, Object) {
    let request = UploadObjectRequest {
        bucket: bucket.to_owned(),
        if_generation_match: create.then_some(0),
        ..Default::default()
    };
    let metadata = Object {
        name: key.to_owned(),
        content_type: Some(content_type.to_owned()),
        metadata: Some([(MARK.to_owned(), mark.to_owned())].into_iter().collect()),
        ..Default::default()
    };
    (request, metadata)
}

/// An object made with an upload's mark: `key` in `bucket`, through `client`.
struct Marked<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    mark: &'a str,
    field: &'a str,
}

impl Marked<'_> {
    /// Puts `bytes` as the object carrying the mark (a multipart, metadata and media, upload: a
    /// simple one cannot carry it); with `create`, only if there is none of its name.
    async fn put(self, bytes: Vec<u8>, content_type: &str, create: bool) -> Result<(), Fault> {
        let (request, metadata) = marked(self.bucket, self.key, content_type, self.mark, create);
        let put = self
            .client
            .upload_object(&request, bytes, &UploadType::Multipart(Box::new(metadata)))
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(412) => self.refused().await,
            Err(e) => Err(fault(&e, self.field)),
        }
    }

    /// The object was refused (412: there is one of its name). Ours (it carries the mark), when
    /// a retried call's first answer was lost; else another writer's, which is left as it is.
    async fn refused(&self) -> Result<(), Fault> {
        let request = GetObjectRequest {
            bucket: self.bucket.to_owned(),
            object: self.key.to_owned(),
            ..Default::default()
        };
        let object = self
            .client
            .get_object(&request)
            .await
            .map_err(|e| fault(&e, self.field))?;
        let stored = object.metadata.as_ref().and_then(|m| m.get(MARK));
        super::ours_or_taken(
            stored.map(String::as_str),
            self.mark,
            &format!("gs://{}/{}", self.bucket, self.key),
        )
    }
}

/// `bytes` as the object `key`, in one media upload.
async fn put(
    client: &Client,
    bucket: &str,
    key: &str,
    bytes: Vec<u8>,
    content_type: &'static str,
) -> Result<(), Error> {
    let request = UploadObjectRequest {
        bucket: bucket.to_owned(),
        ..Default::default()
    };
    let media = Media {
        name: key.to_owned().into(),
        content_type: content_type.into(),
        content_length: Some(bytes.len() as u64),
    };
    client
        .upload_object(&request, bytes, &UploadType::Simple(media))
        .await?;
    Ok(())
}

/// Whole objects in the upload's bucket (one media upload each), through its client and
/// credentials.
struct GcsObjects {
    client: Client,
    bucket: String,
    field: String,
}

impl Objects for GcsObjects {
    fn put(
        &self,
        name: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> BoxFuture<'_, Result<(), Fault>> {
        let name = name.to_owned();
        Box::pin(async move {
            put(&self.client, &self.bucket, &name, bytes, content_type)
                .await
                .map_err(|e| fault(&e, &self.field))
        })
    }

    fn create(
        &self,
        name: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
        mark: &str,
    ) -> BoxFuture<'_, Result<(), Fault>> {
        let (name, mark) = (name.to_owned(), mark.to_owned());
        Box::pin(async move {
            let object = Marked {
                client: &self.client,
                bucket: &self.bucket,
                key: &name,
                mark: &mark,
                field: &self.field,
            };
            object.put(bytes, content_type, true).await
        })
    }

    fn delete(&self, name: &str) -> BoxFuture<'_, Result<(), Fault>> {
        let request = DeleteObjectRequest {
            bucket: self.bucket.clone(),
            object: name.to_owned(),
            ..Default::default()
        };
        Box::pin(async move {
            self.client
                .delete_object(&request)
                .await
                .map_err(|e| fault(&e, &self.field))
        })
    }

    fn exists(&self, name: &str) -> BoxFuture<'_, Result<bool, Fault>> {
        let request = GetObjectRequest {
            bucket: self.bucket.clone(),
            object: name.to_owned(),
            ..Default::default()
        };
        Box::pin(async move {
            match self.client.get_object(&request).await {
                Ok(_) => Ok(true),
                Err(e) if status(&e) == Some(404) => Ok(false),
                Err(e) => Err(fault(&e, &self.field)),
            }
        })
    }

    fn url(&self, name: &str) -> String {
        format!("gs://{}/{name}", self.bucket)
    }
}

/// The HTTP status of a failed call, if the server answered.
fn status(e: &Error) -> Option<u16> {
    match e {
        Error::Response(r) => Some(r.code),
        Error::HttpClient(e) | Error::RawResponse(e, _) => e.status().map(|s| s.as_u16()),
        _ => None,
    }
}

/// One line for a failed call: the HTTP status and the server's message, or what broke. Never a
/// URL (a session URL is the upload's credential): a transport error is told by its causes.
fn fault(e: &Error, field: &str) -> Fault {
    let message = match (e, status(e)) {
        (Error::Response(r), Some(code)) => explain_status(code, field, &r.message),
        (_, Some(code)) => explain_status(code, field, ""),
        (Error::HttpClient(e) | Error::RawResponse(e, _), None) => {
            format!("endpoint unreachable ({})", causes(e))
        }
        (Error::TokenSource(e), None) => format!(
            "cannot get a token for {field}'s credentials: {}",
            one_line(&e.to_string())
        ),
        (Error::HttpMiddleware(e), None) => {
            format!("endpoint unreachable ({})", causes(e.as_ref()))
        }
        (other, None) => one_line(&other.to_string()),
    };
    Fault::new(message)
}

/// The error's causes, without the error itself (whose text names the URL).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        return "no answer".to_owned();
    }
    one_line(&parts.join(": "))
}

/// The token source for `target`'s credentials (None: anonymous).
fn credentials(target: &GcsTarget) -> Result<Option<Token>, Fault> {
    let builder = match &target.credentials {
        GcsCredentials::Anonymous => return Ok(None),
        GcsCredentials::Key(key) => {
            GoogleCloudStorageBuilder::new().with_service_account_key(key.expose())
        }
        GcsCredentials::File(path) => {
            GoogleCloudStorageBuilder::new().with_service_account_path(path.to_string_lossy())
        }
        GcsCredentials::Chain => GoogleCloudStorageBuilder::from_env(),
    };
    // The builder's errors may quote what it read: only the kind of failure is said.
    let store = builder
        .with_bucket_name(&target.bucket)
        .build()
        .map_err(|_| {
            Fault::new(match &target.credentials {
                GcsCredentials::Key(_) => format!(
                    "{}.credentials is not a usable service-account key",
                    target.field
                ),
                GcsCredentials::File(path) => format!(
                    "{}.credentials_file {} is not a readable service-account key",
                    target.field,
                    path.display()
                ),
                _ => "no Google credentials found (GOOGLE_APPLICATION_CREDENTIALS, gcloud's \
                      application default credentials)"
                    .to_owned(),
            })
        })?;
    Ok(Some(Arc::clone(store.credentials())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
