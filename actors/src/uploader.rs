//! UploaderActor: the recording's object (S3, GCS or Azure Blob), uploaded while it is recorded.
//!
//! Owns: a [`Store`] and one upload task that follows the growing local file (fragmented MP4 is
//! only ever appended to) and uploads each full part (`part_size`) as soon as it exists, so the
//! object is complete seconds after the stop whatever the length, with at most one part in
//! memory. A recording shorter than one part is a single put. The streaming, retries and give-up
//! rule are here, once; each store's protocol is in `store/`.
//! Faults: a failed part is retried every second; a store that is away for a while loses nothing
//! (the file keeps growing locally and the upload catches up); an upload the server lost is
//! started again from the file's first byte. Away longer than `give_up_after`, the upload is
//! abandoned: the open upload is aborted (best effort); with a backup store the whole recording
//! then goes there instead, from the local file's first byte ([`BACKUP_STORAGE_USED`]), else
//! the local file is kept and the failure names it. An object another writer stored under the
//! name while the upload ran is never replaced (see [`crate::store`]): the upload gives up at once
//! and goes to the backup, or fails naming the local file.
//! Accepts: [`Finish`] (the file is final: upload the rest, complete, verify the size; replies
//! with the object that holds the recording), [`Shutdown`] (without Finish: abort), [`Kill`].
//! Sends: [`ChildExited`](crate::supervision::ChildExited) through its link when it stops.
//! Stops: after `Finish`'s reply, or on `Shutdown`/`Kill`.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use crate::backoff::Backoff;
use crate::events::{BACKUP_STORAGE_USED, UPLOADED_PART, UPLOAD_RETRYING};
use crate::store::{Fault, Store, Target};
use crate::supervision::{ChildLink, ExitReason, Failure, FailureKind, Kill, Shutdown};

pub use crate::store::preflight;
pub use crate::store::s3::MIN_PART_SIZE;

const TICK: Duration = Duration::from_secs(1);
/// How many times the end of a recording starts an upload the store lost over again.
const MAX_LOST_UPLOADS: u32 = 3;

/// One upload: the target, the local file it follows, how.
#[derive(Debug, Clone)]
pub struct UploadSpec {
    pub target: Target,
    pub file: PathBuf,
    pub part_size: u64,
    pub give_up_after: Duration,
    /// Where the recording goes when the upload to `target` gives up (its own part size and
    /// give-up limit).
    pub backup: Option<BackupSpec>,
}

#[derive(Debug, Clone)]
pub struct BackupSpec {
    pub target: Target,
    pub part_size: u64,
    pub give_up_after: Duration,
}

/// A complete object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub bytes: u64,
    /// Its URL (`s3://…`, `gs://…`, `azure://…`).
    pub object: String,
    /// It is on the backup store (the upload to the first one gave up).
    pub on_backup: bool,
}

/// Message: the file is final. `rewritten`: it was replaced since the upload began (segments
/// joined), so what was uploaded of it is void.
#[derive(Debug, Message)]
#[rtype(result = "Result<Uploaded, Failure>")]
pub struct Finish {
    pub rewritten: bool,
}

pub struct UploaderActor {
    link: ChildLink,
    finish: Option<watch::Sender<Option<bool>>>,
    result: Option<oneshot::Receiver<Result<Uploaded, Failure>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl UploaderActor {
    /// `store`: from [`preflight`] of `spec.target`; `backup`: of the backup's target.
    pub fn start(
        spec: UploadSpec,
        store: Box<dyn Store>,
        backup: Option<Box<dyn Store>>,
        link: ChildLink,
    ) -> Addr<UploaderActor> {
        let (finish_tx, finish_rx) = watch::channel(None);
        let (result_tx, result_rx) = oneshot::channel();
        let task = actix::spawn(async move {
            let backup = spec.backup.clone().zip(backup);
            let mut upload = Upload {
                store,
                spec,
                backup,
                on_backup: false,
                parts: 0,
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
    type Result = ResponseActFuture<Self, Result<Uploaded, Failure>>;

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
        // Stopped without Finish: the recording failed; the task aborts the open upload.
        self.link.set_exit(ExitReason::Shutdown);
        self.finish = None; // a closed channel tells the task to give up
        let result = self.result.take();
        // Out of the actor, whose drop would cancel it. And the actor stops only once the task
        // has aborted the open upload: stopped at once, it dropped this wait and the run ended
        // before the abort was sent (the multipart upload was left open).
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
    store: Box<dyn Store>,
    /// The store's target, part size and give-up limit (the backup's once it is used).
    spec: UploadSpec,
    backup: Option<(BackupSpec, Box<dyn Store>)>,
    on_backup: bool,
    /// Parts sent in the open upload.
    parts: usize,
    uploaded: u64,
    down_since: Option<Instant>,
}

impl Upload {
    /// Follows the file until Finish, then completes. Ok once the object is complete.
    async fn run(
        &mut self,
        mut finish: watch::Receiver<Option<bool>>,
    ) -> Result<Uploaded, Failure> {
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
            if let Some(fault) = self.give_up() {
                self.fall_back(fault).await?;
            }
        };
        if rewritten && self.uploaded > 0 {
            tracing::info!("the file was rewritten (segments joined); uploading it again");
            self.start_over().await;
        }
        let total = self.file_len()?;
        // A store that loses every upload it is given would be fed the file forever.
        let mut lost = 0;
        loop {
            match self.finish(total).await {
                Ok(()) => break,
                Err(fault) if fault.upload_lost && lost < MAX_LOST_UPLOADS => {
                    lost += 1;
                    tracing::warn!(error = %fault.message, "the store lost the upload; uploading the file again");
                    self.start_over().await;
                }
                Err(fault) => self.fall_back(fault).await?,
            }
        }
        self.verify(total).await?;
        Ok(Uploaded {
            bytes: total,
            object: self.spec.target.url(),
            on_backup: self.on_backup,
        })
    }

    /// The upload gave up (`fault`): the backup store takes the whole recording, from the file's
    /// first byte; without one, the upload fails.
    async fn fall_back(&mut self, fault: Fault) -> Result<(), Failure> {
        let Some((backup, store)) = self.backup.take() else {
            return Err(self.failure(&fault.message));
        };
        tracing::warn!(
            primary = %self.spec.target.describe(),
            backup = %backup.target.describe(),
            error = %fault.message,
            "{BACKUP_STORAGE_USED}"
        );
        self.store.abort().await;
        self.store = store;
        self.spec.target = backup.target;
        self.spec.part_size = backup.part_size;
        self.spec.give_up_after = backup.give_up_after;
        self.on_backup = true;
        self.parts = 0;
        self.uploaded = 0;
        self.down_since = None;
        Ok(())
    }

    /// Uploads the rest of the file and completes the object; a lost upload is said as such.
    async fn finish(&mut self, total: u64) -> Result<(), Fault> {
        if !self.store.is_open() && self.uploaded == 0 && total <= self.spec.part_size {
            return self.retry(|u| Box::pin(u.put_whole(total))).await;
        }
        while self.uploaded < total {
            let size = (total - self.uploaded).min(self.spec.part_size);
            self.retry(move |u| Box::pin(u.upload_next(size))).await?;
        }
        self.retry(move |u| Box::pin(u.complete(total))).await
    }

    /// Drops what was uploaded: the next part is the file's first.
    async fn start_over(&mut self) {
        self.store.abort().await;
        self.store.forget();
        self.parts = 0;
        self.uploaded = 0;
    }

    fn failure(&self, why: &str) -> Failure {
        let backup = if self.on_backup {
            " (the backup store, after the first one gave up)"
        } else {
            ""
        };
        Failure::new(
            FailureKind::Output,
            format!(
                "upload to {}{backup} failed: {why}; the recording is kept at {}",
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

    fn give_up(&self) -> Option<Fault> {
        match self.down_since {
            Some(since) if since.elapsed() > self.spec.give_up_after => Some(Fault::new(format!(
                "{} has failed for longer than {:?}",
                self.spec.target.field(),
                self.spec.give_up_after
            ))),
            _ => None,
        }
    }

    /// Runs `op` until it succeeds, once a second, until the give-up limit. A lost upload is
    /// returned at once (the caller starts over), and so is a name another writer took
    /// (retrying cannot free it).
    async fn retry<F>(&mut self, mut op: F) -> Result<(), Fault>
    where
        F: for<'a> FnMut(
            &'a mut Upload,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), Fault>> + 'a>,
        >,
    {
        let mut backoff = Backoff::fixed(TICK);
        loop {
            match op(self).await {
                Ok(()) => return Ok(()),
                Err(fault) if fault.upload_lost || fault.taken => return Err(fault),
                Err(_) => {
                    if let Some(fault) = self.give_up() {
                        return Err(fault);
                    }
                    backoff.wait().await;
                }
            }
        }
    }

    /// Records how a store call that began at `began` ended. The give-up clock starts when the
    /// first failing call began, not when it timed out: a store that stops answering has been
    /// away since then (it used to start after the first timeout, so one more whole timeout ran
    /// past `give_up_after`: 80 s for a limit of 4 s).
    fn note(&mut self, result: Result<(), Fault>, what: &str, began: Instant) -> Result<(), Fault> {
        match &result {
            Ok(()) => {
                if self.down_since.take().is_some() {
                    tracing::info!(target = %self.spec.target.describe(), "the store answers again; the upload catches up");
                }
            }
            Err(fault) => {
                if self.down_since.is_none() {
                    self.down_since = Some(began);
                }
                tracing::warn!(call = what, target = %self.spec.target.describe(), error = %fault.message, "{UPLOAD_RETRYING}");
            }
        }
        result
    }

    /// Uploads the next `size` bytes of the file as the next part. While recording, a lost
    /// upload starts over at once (the next tick uploads the first part again).
    async fn upload_next(&mut self, size: u64) -> Result<(), Fault> {
        let began = Instant::now();
        let result = match read_range(&self.spec.file, self.uploaded, size) {
            Ok(bytes) => self.store.put_part(self.uploaded, bytes).await,
            Err(e) => Err(Fault::new(format!("cannot read the local file: {e}"))),
        };
        if result.is_ok() {
            self.parts += 1;
            self.uploaded += size;
            tracing::info!(
                part = self.parts,
                bytes = size,
                uploaded = self.uploaded,
                "{UPLOADED_PART}"
            );
        }
        if let Err(fault) = &result {
            if fault.upload_lost && self.uploaded > 0 {
                tracing::warn!(error = %fault.message, "the store lost the upload; uploading the file again");
                self.start_over().await;
            }
        }
        self.note(result, "uploading a part", began)
    }

    async fn put_whole(&mut self, total: u64) -> Result<(), Fault> {
        let began = Instant::now();
        let result = match read_range(&self.spec.file, 0, total) {
            Ok(bytes) => self.store.put_whole(bytes).await,
            Err(e) => Err(Fault::new(format!("cannot read the local file: {e}"))),
        };
        self.note(result, "uploading the object", began)
    }

    async fn complete(&mut self, total: u64) -> Result<(), Fault> {
        let began = Instant::now();
        let result = self.store.complete(total).await;
        self.note(result, "completing the upload", began)
    }

    /// The object's size must be the file's.
    async fn verify(&self, total: u64) -> Result<(), Failure> {
        let size = self
            .store
            .size()
            .await
            .map_err(|f| self.failure(&format!("cannot check the object: {}", f.message)))?;
        if size != Some(total) {
            let size = size.map_or("no".to_owned(), |s| s.to_string());
            return Err(self.failure(&format!("the object has {size} bytes, the file {total}")));
        }
        tracing::info!(target = %self.spec.target.describe(), bytes = total, parts = self.parts, "upload complete");
        Ok(())
    }

    /// Aborts the open upload, if one is open (best effort: the store may be the problem).
    async fn abort(&mut self) {
        self.store.abort().await;
    }
}

fn read_range(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len as usize];
    file.read_exact(&mut buf)?;
    Ok(buf)
}
