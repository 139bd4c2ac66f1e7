//! Directory uploads: HLS segments and playlists, or snapshots, copied to the recording's store
//! (S3, GCS or Azure) as each file closes, one object per file.
//!
//! Owns: one task that looks at a directory every [`LOOK`], with the store's [`Objects`] (the
//! upload's own client: its bounded retries and timeouts, its credentials).
//! HLS: the playlists are read first (the live one, then the event one: the live one is made from
//! an earlier event playlist, so it names no segment the event one does not); every segment the
//! event playlist names that is not up yet is uploaded, and only then the playlists, as they were
//! read. A player reading the bucket never sees a segment named before it is there.
//! Snapshots: ffmpeg writes each image under a temporary name and renames it
//! (`-atomic_writing`), so every image seen under its name is complete.
//! Faults: a failed put is tried again at the next look (the files stay on disk). The store
//! failing for longer than `give_up_after` ends the upload with an `Output` failure naming the
//! directory, whose files are all kept.
//! No overwriting: with a `mark`, segments and images are created only where their name is free
//! ([`Objects::create`]); one another writer stored (another run copying to the same prefix)
//! ends the upload at once, naming it, and is left as it is. Playlists are rewritten as they
//! grow; a run whose first segment was refused never puts its playlists.
//! Accepts: [`DirUpload::finish`] (one last look, retried until it succeeds or gives up, so the
//! closed playlist and the last image go up), [`DirUpload::discard`] (stops, and deletes what it
//! uploaded).
//! Stops: on either, or when dropped (the task is aborted).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::encoder::ImagesSpec;
use crate::events::DIRECTORY_UPLOAD_RETRYING;
use crate::store::{Fault, Objects};
use crate::supervision::{Failure, FailureKind};

/// How often the directory is looked at.
pub const LOOK: Duration = Duration::from_millis(500);

/// What a directory holds.
#[derive(Debug, Clone)]
pub enum DirKind {
    /// HLS: the playlists' file names, the live one (if any) first, the event one last.
    Hls { playlists: Vec<String> },
    /// Snapshots numbered `first` or later (this run's).
    Images { spec: ImagesSpec, first: u64 },
}

/// One directory to copy to `<prefix><file name>` in the store's bucket or container.
#[derive(Debug, Clone)]
pub struct DirUploadSpec {
    pub prefix: String,
    pub directory: PathBuf,
    pub kind: DirKind,
    pub give_up_after: Duration,
    /// The config field it comes from (`output.hls.prefix`), for messages.
    pub field: &'static str,
    /// This run's mark: segments and images are created only where their name is free (None:
    /// they replace what is there, `--overwrite`).
    pub mark: Option<String>,
}

/// A running directory upload. Dropping it aborts the task.
pub struct DirUpload {
    finish: Option<watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<Result<usize, Failure>>>,
    uploaded: Arc<Mutex<Vec<String>>>,
    objects: Arc<dyn Objects>,
    spec: DirUploadSpec,
}

impl Drop for DirUpload {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl DirUpload {
    pub fn start(spec: DirUploadSpec, objects: Arc<dyn Objects>) -> DirUpload {
        let (finish_tx, finish_rx) = watch::channel(false);
        let uploaded = Arc::new(Mutex::new(Vec::new()));
        let mut copier = Copier {
            objects: objects.clone(),
            spec: spec.clone(),
            done: HashSet::new(),
            sent: HashMap::new(),
            uploaded: uploaded.clone(),
            down_since: None,
            last_error: None,
        };
        let task = tokio::spawn(async move { copier.run(finish_rx).await });
        DirUpload {
            finish: Some(finish_tx),
            task: Some(task),
            uploaded,
            objects,
            spec,
        }
    }

    /// The last look, after the encoder stopped: Ok(objects uploaded) once all are up.
    pub async fn finish(mut self) -> Result<usize, Failure> {
        if let Some(finish) = self.finish.take() {
            let _ = finish.send(true);
        }
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|_| Err(Failure::crashed("the directory upload task died"))),
            None => Err(Failure::crashed("finished twice")),
        }
    }

    /// Stops, and deletes every object it uploaded (best effort). Returns how many went.
    pub async fn discard(mut self) -> usize {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let keys = std::mem::take(&mut *self.uploaded.lock().unwrap());
        let mut deleted = 0;
        for key in keys {
            let delete = self.objects.delete(&key);
            if matches!(
                tokio::time::timeout(Duration::from_secs(10), delete).await,
                Ok(Ok(_))
            ) {
                deleted += 1;
            }
        }
        deleted
    }

    /// The config field it comes from.
    pub fn field(&self) -> &'static str {
        self.spec.field
    }

    /// `s3://bucket/prefix` (or `gs://`, `azure://`), for messages.
    pub fn describe(&self) -> String {
        self.objects.url(&self.spec.prefix)
    }
}

/// The segment URIs an HLS playlist names.
pub fn playlist_segments(playlist: &str) -> Vec<&str> {
    playlist
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The task's state.
struct Copier {
    objects: Arc<dyn Objects>,
    spec: DirUploadSpec,
    /// Files already up (segments, images): never uploaded twice.
    done: HashSet<String>,
    /// The playlists as last uploaded.
    sent: HashMap<String, Vec<u8>>,
    uploaded: Arc<Mutex<Vec<String>>>,
    down_since: Option<Instant>,
    last_error: Option<String>,
}

impl Copier {
    async fn run(&mut self, mut finish: watch::Receiver<bool>) -> Result<usize, Failure> {
        loop {
            let finishing = tokio::select! {
                changed = finish.changed() => match changed {
                    Ok(()) => *finish.borrow(),
                    Err(_) => return Err(self.failure("the recording stopped without finishing")),
                },
                _ = tokio::time::sleep(LOOK) => false,
            };
            if finishing {
                break;
            }
            let looked = self.look().await;
            self.note(looked)?;
        }
        // The last look must succeed: retried until it does, or until the give-up limit.
        let mut backoff = Backoff::fixed(Duration::from_secs(1));
        loop {
            match self.look().await {
                Ok(()) => return Ok(self.uploaded.lock().unwrap().len()),
                Err(why) => {
                    self.note(Err(why))?;
                    backoff.wait().await;
                }
            }
        }
    }

    /// Records the outcome of a look: a failure starts (or continues) the time the store is down;
    /// a name another writer took ends the upload at once (retrying cannot free it).
    fn note(&mut self, looked: Result<(), Fault>) -> Result<(), Failure> {
        match looked {
            Ok(()) => {
                self.down_since = None;
                Ok(())
            }
            Err(fault) if fault.taken => Err(self.failure(&fault.message)),
            Err(Fault { message: why, .. }) => {
                if self.down_since.is_none() {
                    tracing::warn!(target_dir = %self.describe(), error = %why, "{DIRECTORY_UPLOAD_RETRYING}");
                }
                self.down_since.get_or_insert_with(Instant::now);
                self.last_error = Some(why);
                self.check_give_up()
            }
        }
    }

    fn check_give_up(&self) -> Result<(), Failure> {
        match self.down_since {
            Some(since) if since.elapsed() > self.spec.give_up_after => {
                Err(self.failure(&format!(
                    "the store has failed for longer than {:?} ({})",
                    self.spec.give_up_after,
                    self.last_error.as_deref().unwrap_or("no answer")
                )))
            }
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        self.objects.url(&self.spec.prefix)
    }

    fn failure(&self, why: &str) -> Failure {
        Failure::new(
            FailureKind::Output,
            format!(
                "{}: upload to {} failed: {why}; the files are kept in {}",
                self.spec.field,
                self.describe(),
                self.spec.directory.display()
            ),
        )
    }

    /// One look at the directory: uploads what is new.
    async fn look(&mut self) -> Result<(), Fault> {
        match self.spec.kind.clone() {
            DirKind::Hls { playlists } => {
                let read: Vec<(String, Option<Vec<u8>>)> = playlists
                    .iter()
                    .map(|name| {
                        (
                            name.clone(),
                            std::fs::read(self.spec.directory.join(name)).ok(),
                        )
                    })
                    .collect();
                let Some((_, Some(event))) = read.last() else {
                    return Ok(()); // no playlist yet
                };
                let event = String::from_utf8_lossy(event).into_owned();
                for segment in playlist_segments(&event) {
                    if !self.done.contains(segment) {
                        self.put_file(segment).await?;
                    }
                }
                for (name, text) in read {
                    let Some(text) = text else { continue };
                    if self.sent.get(&name) != Some(&text) {
                        self.put(&name, text.clone(), "application/vnd.apple.mpegurl", None)
                            .await?;
                        self.sent.insert(name, text);
                    }
                }
            }
            DirKind::Images { spec, first } => {
                let mut images = spec.written_since(first);
                images.sort();
                for image in images {
                    let name = image
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if !self.done.contains(&name) {
                        self.put_file(&name).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies the file `name` (a segment, an image): created where its name is free, with this
    /// run's mark, or (without one) in place of what is there.
    async fn put_file(&mut self, name: &str) -> Result<(), Fault> {
        let path = self.spec.directory.join(name);
        let body = tokio::fs::read(&path)
            .await
            .map_err(|e| Fault::new(format!("cannot read {}: {e}", path.display())))?;
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some("ts") => "video/mp2t",
            Some("png") => "image/png",
            _ => "image/jpeg",
        };
        self.put(name, body, kind, self.spec.mark.clone()).await?;
        self.done.insert(name.to_owned());
        Ok(())
    }

    /// Puts `body` as `<prefix><name>`: created only where the name is free with `mark`, else in
    /// place of what is there (playlists, which grow).
    async fn put(
        &mut self,
        name: &str,
        body: Vec<u8>,
        content_type: &'static str,
        mark: Option<String>,
    ) -> Result<(), Fault> {
        let key = format!("{}{name}", self.spec.prefix);
        let put = match &mark {
            Some(mark) => self.objects.create(&key, body, content_type, mark),
            None => self.objects.put(&key, body, content_type),
        };
        put.await.map_err(|fault| {
            if fault.taken {
                fault
            } else {
                Fault::new(format!("{key}: {}", fault.message))
            }
        })?;
        let mut uploaded = self.uploaded.lock().unwrap();
        if !uploaded.contains(&key) {
            uploaded.push(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_playlist_names_its_segments() {
        let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nsegment-00000.ts\n\
                        #EXT-X-DISCONTINUITY\n#EXTINF:1.5,\nsegment-00001.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(
            playlist_segments(playlist),
            ["segment-00000.ts", "segment-00001.ts"]
        );
    }
}
