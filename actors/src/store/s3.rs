//! S3 (and S3-compatible servers): a multipart upload, one part per [`Store::put_part`].
//! Unless it replaces the object, the upload completes (or puts) with `If-None-Match: *`: an
//! object stored under the name meanwhile is refused with 412 and left as it is.

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use std::sync::Arc;

use futures_util::future::{BoxFuture, LocalBoxFuture};

use super::{Call, Fault, Objects, Store, MARK};
use crate::secret::Secret;

/// S3's smallest part (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// Where and how to upload.
#[derive(Debug, Clone)]
pub struct S3Target {
    /// The config field (`output.s3`, `output.backup.s3`), for messages.
    pub field: String,
    pub bucket: String,
    pub key: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: Option<bool>,
    /// None: the standard AWS credential chain (environment, profile).
    pub access_key: Option<String>,
    pub secret: Option<Secret>,
    pub session_token: Option<Secret>,
}

/// How long one call to the server may take: longer is a server that does not answer (a part of
/// the default 8 MiB needs 0.4 MB/s).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds the S3 client. With an endpoint (any S3-compatible server) path-style addressing is the
/// default, and checksums are only sent when required: the current SDK defaults send checksums
/// many S3-compatible servers reject.
pub async fn client(target: &S3Target) -> Client {
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).region(Region::new(
            target
                .region
                .clone()
                .unwrap_or_else(|| "us-east-1".to_owned()),
        ));
    if let (Some(key), Some(secret)) = (&target.access_key, &target.secret) {
        loader = loader.credentials_provider(Credentials::new(
            key,
            secret.expose(),
            target.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "pagecast-config",
        ));
    }
    if let Some(endpoint) = &target.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(target.force_path_style.unwrap_or(target.endpoint.is_some()))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        // Bounded calls: a server that accepts connections but never answers must not hold the
        // upload past its give-up limit. One attempt per call: the uploader retries every second
        // and keeps the give-up clock itself. (The SDK's second attempt after a 20 s timeout made
        // a store that stopped answering hold a run 40 s, whatever its `give_up_after`.)
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(CALL_TIMEOUT)
                .operation_timeout(CALL_TIMEOUT)
                .build(),
        )
        .build();
    Client::from_conf(conf)
}

/// One line for an SDK error, with the HTTP status when there is one. Never holds a secret (the
/// SDK does not print credentials).
fn explain<E: std::error::Error + 'static>(err: &SdkError<E>, field: &str) -> String {
    match (err, status(err)) {
        (SdkError::DispatchFailure(_), _) | (SdkError::TimeoutError(_), _) => {
            format!("endpoint unreachable ({})", DisplayErrorContext(err))
        }
        (_, Some(403)) => {
            format!("access denied (HTTP 403): check {field}.access_key and secret")
        }
        (_, Some(404)) => "no such bucket (HTTP 404)".to_owned(),
        (_, Some(code)) => format!("HTTP {code}: {}", DisplayErrorContext(err)),
        _ => DisplayErrorContext(err).to_string(),
    }
}

pub struct S3Store {
    client: Client,
    target: S3Target,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    /// Whether the calls that make the object carry `If-None-Match` (not when it may replace
    /// one, nor once the server refused conditions).
    conditional: Conditions,
    /// This upload's mark, in its object's metadata.
    mark: String,
}

/// Whether the calls that make objects carry `If-None-Match: *`. A server without conditional
/// writes (501) is written to without them from then on, and the log says so once: the
/// recording is worth more than the guard.
struct Conditions(std::sync::atomic::AtomicBool);

impl Conditions {
    fn new(on: bool) -> Conditions {
        Conditions(std::sync::atomic::AtomicBool::new(on))
    }

    /// The condition a call that makes an object carries now.
    fn if_none_match(&self) -> Option<String> {
        self.0
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| "*".to_owned())
    }

    /// Whether `err` was the server refusing the condition a call carried: then conditions are
    /// off from now on (the caller tries again without).
    fn refused_by<E>(&self, err: &SdkError<E>, bucket: &str) -> bool {
        if status(err) != Some(501) || !self.0.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        tracing::warn!(
            bucket = %bucket,
            "the S3 server does not take conditional writes (HTTP 501); what another writer \
             stores under these names meanwhile would be written over"
        );
        true
    }
}

/// The HTTP status of a failed call, if the server answered.
fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

impl S3Store {
    /// The client, once the bucket answered (it exists and the credentials may use it).
    /// `replace`: the upload may replace an object of its name.
    pub async fn connect(target: &S3Target, replace: bool) -> Result<S3Store, Fault> {
        let client = client(target).await;
        // Before anything starts nothing retries for it: a passing error (a 503) is tried again
        // here, within the pre-flight's own limit.
        client
            .head_bucket()
            .bucket(&target.bucket)
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default()
                    .retry_config(RetryConfig::standard().with_max_attempts(3)),
            )
            .send()
            .await
            .map_err(|e| Fault::new(explain(&e, &target.field)))?;
        Ok(S3Store {
            client,
            target: target.clone(),
            upload_id: None,
            parts: Vec::new(),
            conditional: Conditions::new(!replace),
            mark: super::upload_mark(),
        })
    }

    /// The object was refused (412: there is one of its name): see [`Marked::refused`].
    async fn refused(&self) -> Result<(), Fault> {
        let t = &self.target;
        Marked {
            client: &self.client,
            bucket: &t.bucket,
            key: &t.key,
            mark: &self.mark,
            field: &t.field,
        }
        .refused()
        .await
    }

    fn explain<E: std::error::Error + 'static>(&self, err: &SdkError<E>) -> String {
        explain(err, &self.target.field)
    }

    async fn try_put_part(&mut self, bytes: Vec<u8>) -> Result<(), Fault> {
        let t = &self.target;
        if self.upload_id.is_none() {
            let created = self
                .client
                .create_multipart_upload()
                .bucket(&t.bucket)
                .key(&t.key)
                .content_type("video/mp4")
                .metadata(MARK, &self.mark)
                .send()
                .await
                .map_err(|e| Fault::new(self.explain(&e)))?;
            self.upload_id = created.upload_id().map(str::to_owned);
            self.parts.clear();
            tracing::info!(target = %t.bucket, key = %t.key, "multipart upload started");
        }
        let number = self.parts.len() as i32 + 1;
        let part = self
            .client
            .upload_part()
            .bucket(&t.bucket)
            .key(&t.key)
            .upload_id(self.upload_id.clone().unwrap_or_default())
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.fault(&e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    /// NoSuchUpload: the multipart upload is gone (aborted, expired by a lifecycle rule).
    fn fault<E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static>(
        &self,
        err: &SdkError<E>,
    ) -> Fault {
        let lost = err
            .as_service_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code == "NoSuchUpload");
        if lost {
            Fault::upload_lost(self.explain(err))
        } else {
            Fault::new(self.explain(err))
        }
    }
}

impl Store for S3Store {
    fn put_part(&mut self, _offset: u64, bytes: Vec<u8>) -> Call<'_, ()> {
        Box::pin(self.try_put_part(bytes))
    }

    fn complete(&mut self, _total: u64) -> Call<'_, ()> {
        Box::pin(async move {
            let t = &self.target;
            let completed = self
                .client
                .complete_multipart_upload()
                .bucket(&t.bucket)
                .key(&t.key)
                .upload_id(self.upload_id.clone().unwrap_or_default())
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(self.parts.clone()))
                        .build(),
                )
                .set_if_none_match(self.conditional.if_none_match())
                .send()
                .await;
            match completed {
                Ok(_) => {}
                Err(e) if status(&e) == Some(412) => self.refused().await?,
                Err(e) if self.conditional.refused_by(&e, &t.bucket) => {
                    return Err(Fault::new("HTTP 501: conditional writes not implemented"))
                }
                Err(e) => return Err(self.fault(&e)),
            }
            self.upload_id = None;
            Ok(())
        })
    }

    fn put_whole(&mut self, bytes: Vec<u8>) -> Call<'_, ()> {
        let t = &self.target;
        let object = Marked {
            client: &self.client,
            bucket: &t.bucket,
            key: &t.key,
            mark: &self.mark,
            field: &t.field,
        };
        Box::pin(object.put(bytes, "video/mp4", &self.conditional))
    }

    fn size(&self) -> Call<'_, Option<u64>> {
        Box::pin(async move {
            let t = &self.target;
            match self
                .client
                .head_object()
                .bucket(&t.bucket)
                .key(&t.key)
                .send()
                .await
            {
                Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
                Err(e) if status(&e) == Some(404) => Ok(None),
                Err(e) => Err(Fault::new(self.explain(&e))),
            }
        })
    }

    fn abort(&mut self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(id) = self.upload_id.take() else {
                return;
            };
            let t = &self.target;
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&t.bucket)
                .key(&t.key)
                .upload_id(id)
                .send();
            match tokio::time::timeout(Duration::from_secs(10), abort).await {
                Ok(Ok(_)) => tracing::info!("incomplete multipart upload aborted"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %self.explain(&e), "could not abort the multipart upload")
                }
                Err(_) => tracing::warn!("could not abort the multipart upload: no answer"),
            }
        })
    }

    fn forget(&mut self) {
        self.upload_id = None;
        self.parts.clear();
    }

    fn is_open(&self) -> bool {
        self.upload_id.is_some()
    }

    fn objects(&self) -> Arc<dyn Objects> {
        Arc::new(S3Objects {
            client: self.client.clone(),
            bucket: self.target.bucket.clone(),
            field: self.target.field.clone(),
            conditional: Conditions::new(true),
        })
    }
}

/// An object made with this upload's mark: `key` in `bucket`, through `client`.
struct Marked<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    mark: &'a str,
    field: &'a str,
}

impl Marked<'_> {
    /// Puts `bytes` as the object, carrying the mark, and (while `conditional` says so) only if
    /// there is none of its name.
    async fn put(
        self,
        bytes: Vec<u8>,
        content_type: &'static str,
        conditional: &Conditions,
    ) -> Result<(), Fault> {
        let put = self
            .client
            .put_object()
            .bucket(self.bucket)
            .key(self.key)
            .content_type(content_type)
            .metadata(MARK, self.mark)
            .set_if_none_match(conditional.if_none_match())
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(412) => self.refused().await,
            Err(e) if conditional.refused_by(&e, self.bucket) => {
                Err(Fault::new("HTTP 501: conditional writes not implemented"))
            }
            Err(e) => Err(Fault::new(explain(&e, self.field))),
        }
    }

    /// The object was refused (412: there is one of its name). Ours (it carries the mark), when
    /// a retried call's first answer was lost; else another writer's, which is left as it is.
    async fn refused(&self) -> Result<(), Fault> {
        let head = self
            .client
            .head_object()
            .bucket(self.bucket)
            .key(self.key)
            .send()
            .await
            .map_err(|e| Fault::new(explain(&e, self.field)))?;
        let stored = head.metadata().and_then(|m| m.get(MARK));
        super::ours_or_taken(
            stored.map(String::as_str),
            self.mark,
            &format!("s3://{}/{}", self.bucket, self.key),
        )
    }
}

/// Whole objects in the upload's bucket, through its client.
struct S3Objects {
    client: Client,
    bucket: String,
    field: String,
    /// Whether creates carry `If-None-Match` (see [`Conditions`]).
    conditional: Conditions,
}

impl Objects for S3Objects {
    fn put(
        &self,
        name: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> BoxFuture<'_, Result<(), Fault>> {
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(name)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send();
        Box::pin(async move {
            put.await
                .map(|_| ())
                .map_err(|e| Fault::new(explain(&e, &self.field)))
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
            object.put(bytes, content_type, &self.conditional).await
        })
    }

    fn delete(&self, name: &str) -> BoxFuture<'_, Result<(), Fault>> {
        let delete = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(name)
            .send();
        Box::pin(async move {
            delete
                .await
                .map(|_| ())
                .map_err(|e| Fault::new(explain(&e, &self.field)))
        })
    }

    fn exists(&self, name: &str) -> BoxFuture<'_, Result<bool, Fault>> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(name)
            .send();
        Box::pin(async move {
            match head.await {
                Ok(_) => Ok(true),
                Err(e) if status(&e) == Some(404) => Ok(false),
                Err(e) => Err(Fault::new(explain(&e, &self.field))),
            }
        })
    }

    fn url(&self, name: &str) -> String {
        format!("s3://{}/{name}", self.bucket)
    }
}
