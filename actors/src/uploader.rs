//! UploaderActor: the recording's S3 object, uploaded while it is recorded.
//!
//! Owns: an S3 client and one upload task that follows the growing local file (fragmented MP4 is
//! only ever appended to) and uploads each full part (`part_size`, at least 5 MiB) as soon as it
//! exists, so the object is complete seconds after the stop whatever the length, with at most
//! one part in memory. A recording shorter than one part is a single PUT.
//! Faults: a failed part is retried every second; an endpoint that is away for a while loses
//! nothing (the file keeps growing locally and the upload catches up). Away longer than
//! `give_up_after`, the upload is abandoned: the multipart upload is aborted (best effort) and the
//! local file kept; the failure names it.
//! Accepts: [`Finish`] (the file is final: upload the rest, complete, verify the size; replies
//! with the outcome), [`Shutdown`] (without Finish: abort), [`Kill`].
//! Sends: [`ChildExited`](crate::supervision::ChildExited) through its link when it stops.
//! Stops: after `Finish`'s reply, or on `Shutdown`/`Kill`.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use tokio::sync::{oneshot, watch};

use crate::backoff::Backoff;
use crate::secret::Secret;
use crate::supervision::{ChildLink, ExitReason, Failure, FailureKind, Kill, Shutdown};

/// S3's smallest part (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const TICK: Duration = Duration::from_secs(1);

/// Where and how to upload.
#[derive(Debug, Clone)]
pub struct S3Target {
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

impl S3Target {
    /// `s3://bucket/key at <endpoint>` for messages (no secrets in it).
    pub fn describe(&self) -> String {
        format!(
            "s3://{}/{} at {}",
            self.bucket,
            self.key,
            self.endpoint.as_deref().unwrap_or("AWS")
        )
    }
}

/// One upload: the target, the local file it follows, how.
#[derive(Debug, Clone)]
pub struct UploadSpec {
    pub target: S3Target,
    pub file: PathBuf,
    pub part_size: u64,
    pub give_up_after: Duration,
}

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
        // upload past its give-up limit. Our own loop retries after these.
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(Duration::from_secs(45))
                .build(),
        )
        .build();
    Client::from_conf(conf)
}

/// One line for an SDK error, with the HTTP status when there is one. Never holds a secret (the
/// SDK does not print credentials).
fn explain<E: std::error::Error + 'static>(err: &SdkError<E>) -> String {
    let status = err.raw_response().map(|r| r.status().as_u16());
    match (err, status) {
        (SdkError::DispatchFailure(_), _) | (SdkError::TimeoutError(_), _) => {
            format!("endpoint unreachable ({})", DisplayErrorContext(err))
        }
        (_, Some(403)) => {
            "access denied (HTTP 403): check output.s3.access_key and secret".to_owned()
        }
        (_, Some(404)) => "no such bucket (HTTP 404)".to_owned(),
        (_, Some(code)) => format!("HTTP {code}: {}", DisplayErrorContext(err)),
        _ => DisplayErrorContext(err).to_string(),
    }
}

/// Checks, before anything starts, that the bucket exists and the credentials may use it, and
/// (unless `overwrite`) that no recording is already stored under the key: an upload would
/// replace it.
pub async fn preflight(target: &S3Target, overwrite: bool) -> Result<Client, Failure> {
    let client = client(target).await;
    let head = client.head_bucket().bucket(&target.bucket).send();
    match tokio::time::timeout(Duration::from_secs(15), head).await {
        Ok(Ok(_)) if overwrite => Ok(client),
        Ok(Ok(_)) => {
            refuse_existing_object(&client, target).await?;
            Ok(client)
        }
        Ok(Err(e)) => Err(Failure::new(
            FailureKind::Output,
            format!(
                "output.s3: cannot use {}: {}",
                target.describe(),
                explain(&e)
            ),
        )),
        Err(_) => Err(Failure::new(
            FailureKind::Output,
            format!("output.s3: {} did not answer within 15s", target.describe()),
        )),
    }
}

/// Fails if the key already holds a non-empty object. Credentials that may write but not read
/// (HTTP 403 on HEAD) cannot tell: that is said in the log, and the recording goes ahead.
async fn refuse_existing_object(client: &Client, target: &S3Target) -> Result<(), Failure> {
    let head = client
        .head_object()
        .bucket(&target.bucket)
        .key(&target.key)
        .send();
    match tokio::time::timeout(Duration::from_secs(15), head).await {
        Ok(Ok(object)) if object.content_length().unwrap_or(0) > 0 => Err(Failure::new(
            FailureKind::Output,
            format!(
                "output.s3: {} already holds a recording ({} bytes); remove it, give \
                 --overwrite, or put {{time}} or {{utc}} in output.s3.key for a fresh name each run",
                target.describe(),
                object.content_length().unwrap_or(0)
            ),
        )),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(
                object = %target.describe(),
                error = %explain(&e),
                "cannot tell whether the object already exists; recording anyway"
            );
            Ok(())
        }
        Err(_) => Err(Failure::new(
            FailureKind::Output,
            format!("output.s3: {} did not answer within 15s", target.describe()),
        )),
    }
}

/// Message: the file is final. `rewritten`: it was replaced since the upload began (segments
/// joined), so what was uploaded of it is void.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, Failure>")]
pub struct Finish {
    pub rewritten: bool,
}

pub struct UploaderActor {
    link: ChildLink,
    finish: Option<watch::Sender<Option<bool>>>,
    result: Option<oneshot::Receiver<Result<u64, Failure>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl UploaderActor {
    pub fn start(spec: UploadSpec, client: Client, link: ChildLink) -> Addr<UploaderActor> {
        let (finish_tx, finish_rx) = watch::channel(None);
        let (result_tx, result_rx) = oneshot::channel();
        let task = actix::spawn(async move {
            let mut upload = Upload {
                client,
                spec,
                upload_id: None,
                parts: Vec::new(),
                uploaded: 0,
                down_since: None,
            };
            let result = upload.run(finish_rx).await;
            if result.is_err() {
                upload.abort().await;
            }
            let _ = result_tx.send(result);
        });
        UploaderActor {
            link,
            finish: Some(finish_tx),
            result: Some(result_rx),
            task: Some(task),
        }
        .start()
    }
}

impl Actor for UploaderActor {
    type Context = Context<Self>;
}

impl Drop for UploaderActor {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Handler<Finish> for UploaderActor {
    type Result = ResponseActFuture<Self, Result<u64, Failure>>;

    fn handle(&mut self, msg: Finish, _: &mut Context<Self>) -> Self::Result {
        if let Some(finish) = self.finish.take() {
            let _ = finish.send(Some(msg.rewritten));
        }
        let result = self.result.take();
        Box::pin(
            actix::fut::wrap_future(async move {
                match result {
                    Some(rx) => rx
                        .await
                        .unwrap_or_else(|_| Err(Failure::crashed("the upload task died"))),
                    None => Err(Failure::crashed("Finish sent twice")),
                }
            })
            .map(|result, act: &mut Self, ctx: &mut Context<Self>| {
                act.task = None;
                act.link.set_exit(ExitReason::Normal);
                ctx.stop();
                result
            }),
        )
    }
}

impl Handler<Shutdown> for UploaderActor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        // Stopped without Finish: the recording failed; the task aborts the multipart upload.
        self.link.set_exit(ExitReason::Shutdown);
        self.finish = None; // a closed channel tells the task to give up
        let result = self.result.take();
        // Out of the actor, whose drop would cancel it. And the actor stops only once the task
        // has aborted the multipart upload: stopped at once, it dropped this wait and the run
        // ended before the abort was sent (the multipart upload was left open).
        let task = self.task.take();
        Box::pin(
            actix::fut::wrap_future(async move {
                if let Some(rx) = result {
                    if tokio::time::timeout(Duration::from_secs(10), rx)
                        .await
                        .is_err()
                    {
                        if let Some(task) = task {
                            task.abort();
                        }
                    }
                }
                Ok(())
            })
            .map(|result, _: &mut Self, ctx: &mut Context<Self>| {
                ctx.stop();
                result
            }),
        )
    }
}

impl Handler<Kill> for UploaderActor {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.link.set_exit(ExitReason::Shutdown);
        ctx.stop();
    }
}

/// The upload task's state.
struct Upload {
    client: Client,
    spec: UploadSpec,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    uploaded: u64,
    down_since: Option<Instant>,
}

impl Upload {
    /// Follows the file until Finish, then completes. Ok(bytes) once the object is complete.
    async fn run(&mut self, mut finish: watch::Receiver<Option<bool>>) -> Result<u64, Failure> {
        let rewritten = loop {
            tokio::select! {
                changed = finish.changed() => match changed {
                    Ok(()) => break finish.borrow().unwrap_or(false),
                    Err(_) => return Err(self.failure("the recording stopped without finishing")),
                },
                _ = tokio::time::sleep(TICK) => {}
            }
            // While recording, only full parts go up; errors are retried at the next tick. The
            // encoder may not have created the file yet: nothing to upload then.
            while std::fs::metadata(&self.spec.file).map_or(0, |m| m.len())
                >= self.uploaded + self.spec.part_size
            {
                if self.upload_next(self.spec.part_size).await.is_err() {
                    break;
                }
            }
            self.check_give_up()?;
        };
        if rewritten && self.uploaded > 0 {
            tracing::info!("the file was rewritten (segments joined); uploading it again");
            self.abort().await;
            self.parts.clear();
            self.uploaded = 0;
        }
        let total = self.file_len()?;
        if self.upload_id.is_none() && total <= self.spec.part_size {
            self.retry(|u| Box::pin(u.put_whole(total))).await?;
        } else {
            while self.uploaded < total {
                let size = (total - self.uploaded).min(self.spec.part_size);
                self.retry(move |u| Box::pin(u.upload_next(size))).await?;
            }
            self.retry(|u| Box::pin(u.complete())).await?;
        }
        self.verify(total).await?;
        Ok(total)
    }

    fn failure(&self, why: &str) -> Failure {
        Failure::new(
            FailureKind::Output,
            format!(
                "upload to {} failed: {why}; the recording is kept at {}",
                self.spec.target.describe(),
                self.spec.file.display()
            ),
        )
    }

    fn file_len(&self) -> Result<u64, Failure> {
        std::fs::metadata(&self.spec.file)
            .map(|m| m.len())
            .map_err(|e| self.failure(&format!("cannot read the local file: {e}")))
    }

    fn check_give_up(&self) -> Result<(), Failure> {
        match self.down_since {
            Some(since) if since.elapsed() > self.spec.give_up_after => {
                Err(self.failure(&format!(
                    "S3 has failed for longer than {:?}",
                    self.spec.give_up_after
                )))
            }
            _ => Ok(()),
        }
    }

    /// Runs `op` until it succeeds, once a second, until the give-up limit.
    async fn retry<F>(&mut self, mut op: F) -> Result<(), Failure>
    where
        F: for<'a> FnMut(
            &'a mut Upload,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), String>> + 'a>,
        >,
    {
        let mut backoff = Backoff::fixed(TICK);
        loop {
            match op(self).await {
                Ok(()) => return Ok(()),
                Err(_) => {
                    self.check_give_up()?;
                    backoff.wait().await;
                }
            }
        }
    }

    fn note(&mut self, result: Result<(), String>, what: &str) -> Result<(), String> {
        match &result {
            Ok(()) => {
                if self.down_since.take().is_some() {
                    tracing::info!("S3 answers again; the upload catches up");
                }
            }
            Err(e) => {
                if self.down_since.is_none() {
                    self.down_since = Some(Instant::now());
                }
                tracing::warn!(target = %self.spec.target.describe(), error = %e, "{what} failed; retrying");
            }
        }
        result
    }

    /// Uploads the next `size` bytes of the file as the next part.
    async fn upload_next(&mut self, size: u64) -> Result<(), String> {
        let result = self.try_upload_next(size).await;
        self.note(result, "uploading a part")
    }

    async fn try_upload_next(&mut self, size: u64) -> Result<(), String> {
        let t = &self.spec.target;
        if self.upload_id.is_none() {
            let created = self
                .client
                .create_multipart_upload()
                .bucket(&t.bucket)
                .key(&t.key)
                .content_type("video/mp4")
                .send()
                .await
                .map_err(|e| explain(&e))?;
            self.upload_id = created.upload_id().map(str::to_owned);
            tracing::info!(target = %t.describe(), "multipart upload started");
        }
        let bytes = read_range(&self.spec.file, self.uploaded, size).map_err(|e| e.to_string())?;
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
            .map_err(|e| explain(&e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .build(),
        );
        self.uploaded += size;
        tracing::info!(
            part = number,
            bytes = size,
            uploaded = self.uploaded,
            "uploaded part"
        );
        Ok(())
    }

    async fn put_whole(&mut self, total: u64) -> Result<(), String> {
        let t = &self.spec.target;
        let result = async {
            let bytes = read_range(&self.spec.file, 0, total).map_err(|e| e.to_string())?;
            self.client
                .put_object()
                .bucket(&t.bucket)
                .key(&t.key)
                .content_type("video/mp4")
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map_err(|e| explain(&e))?;
            Ok(())
        }
        .await;
        self.note(result, "uploading the object")
    }

    async fn complete(&mut self) -> Result<(), String> {
        let t = &self.spec.target;
        let result = self
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
            .send()
            .await
            .map(|_| ())
            .map_err(|e| explain(&e));
        if result.is_ok() {
            self.upload_id = None;
        }
        self.note(result, "completing the upload")
    }

    /// The object's size must be the file's.
    async fn verify(&self, total: u64) -> Result<(), Failure> {
        let t = &self.spec.target;
        let head = self
            .client
            .head_object()
            .bucket(&t.bucket)
            .key(&t.key)
            .send()
            .await
            .map_err(|e| self.failure(&format!("cannot check the object: {}", explain(&e))))?;
        let size = head.content_length().unwrap_or(-1);
        if size != total as i64 {
            return Err(self.failure(&format!("the object has {size} bytes, the file {total}")));
        }
        tracing::info!(target = %t.describe(), bytes = total, parts = self.parts.len(), "upload complete");
        Ok(())
    }

    /// Aborts the multipart upload, if one is open (best effort: S3 may be the problem).
    async fn abort(&mut self) {
        let Some(id) = self.upload_id.take() else {
            return;
        };
        let t = &self.spec.target;
        let abort = self
            .client
            .abort_multipart_upload()
            .bucket(&t.bucket)
            .key(&t.key)
            .upload_id(id)
            .send();
        match tokio::time::timeout(Duration::from_secs(10), abort).await {
            Ok(Ok(_)) => {
                tracing::info!(target = %t.describe(), "incomplete multipart upload aborted")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %explain(&e), "could not abort the multipart upload")
            }
            Err(_) => tracing::warn!("could not abort the multipart upload: no answer"),
        }
    }
}

fn read_range(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len as usize];
    file.read_exact(&mut buf)?;
    Ok(buf)
}
