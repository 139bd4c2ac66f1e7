//! Google Cloud Storage: a resumable upload (JSON API), one chunk per [`Store::put_part`].
//!
//! Why by hand over HTTP rather than through `object_store`'s GCS client: that client uploads in
//! parts through the XML multipart API, which the GCS emulator (fake-gcs-server) does not have,
//! so nothing of it could be tested here; the resumable upload is GCS's own way to stream an
//! object of unknown length and the emulator has it. `object_store` still provides the
//! credentials (service-account key, the Google chain), with their token exchange and refresh.
//!
//! A chunk whose fate is unknown (a timeout, a 5xx) is followed by a status query before the next
//! send, so bytes the server already holds are never sent twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, LocalBoxFuture};
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::CredentialProvider;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, RequestBuilder, StatusCode};

use super::{explain_status, Call, Fault, Objects, Store};
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

/// GCS's JSON API with the store's credentials: the resumable upload's and the directory copies'
/// one HTTP client.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    token: Option<Token>,
    /// The JSON API's base URL, without a trailing '/'.
    base: String,
    /// The config field, for messages.
    field: String,
}

impl Api {
    fn object_url(&self, bucket: &str, key: &str) -> String {
        format!("{}/storage/v1/b/{}/o/{}", self.base, enc(bucket), enc(key))
    }

    fn upload_url(&self, bucket: &str, key: &str, kind: &str) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={kind}&name={}",
            self.base,
            enc(bucket),
            enc(key)
        )
    }

    /// Sends `request` with the bearer token (when there are credentials).
    async fn send(&self, mut request: RequestBuilder) -> Result<reqwest::Response, Fault> {
        if let Some(token) = &self.token {
            let credential = token.get_credential().await.map_err(|e| {
                Fault::new(format!(
                    "cannot get a token for {}'s credentials: {}",
                    self.field,
                    one_line(&e.to_string())
                ))
            })?;
            request = request.bearer_auth(&credential.bearer);
        }
        request.send().await.map_err(|e| {
            // The error's URL may be a session URL: not printed.
            let e = e.without_url();
            Fault::new(format!(
                "endpoint unreachable ({})",
                one_line(&e.to_string())
            ))
        })
    }

    /// Ok for a 2xx answer, else a fault naming the status.
    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, Fault> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Err(Fault::new(explain_status(status, &self.field, &body)))
    }
}

pub struct GcsStore {
    api: Api,
    target: GcsTarget,
    /// The open resumable upload's URL (it is the upload's only credential: never logged).
    session: Option<Secret>,
    /// The last chunk may or may not have reached the server.
    uncertain: bool,
}

impl GcsStore {
    /// The store, once the bucket answered (it exists and the credentials may list it).
    pub async fn connect(target: &GcsTarget) -> Result<GcsStore, Fault> {
        let token = credentials(target)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Fault::new(format!("cannot make an HTTP client: {e}")))?;
        let api = Api {
            http,
            token,
            base: target
                .endpoint
                .clone()
                .unwrap_or_else(|| GCS.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            field: target.field.clone(),
        };
        let list = format!(
            "{}/storage/v1/b/{}/o?maxResults=1&prefix={}",
            api.base,
            enc(&target.bucket),
            enc(&target.key)
        );
        let response = api.send(api.http.get(list)).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(Fault::new("no such bucket (HTTP 404)"));
        }
        api.check(response).await?;
        Ok(GcsStore {
            api,
            target: target.clone(),
            session: None,
            uncertain: false,
        })
    }

    fn object_url(&self) -> String {
        self.api.object_url(&self.target.bucket, &self.target.key)
    }

    fn upload_url(&self, kind: &str) -> String {
        self.api
            .upload_url(&self.target.bucket, &self.target.key, kind)
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, Fault> {
        self.api.send(request).await
    }

    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, Fault> {
        self.api.check(response).await
    }

    async fn open(&mut self) -> Result<(), Fault> {
        let metadata = serde_json::json!({ "name": self.target.key, "contentType": "video/mp4" });
        let request = self
            .api
            .http
            .post(self.upload_url("resumable"))
            .header("X-Upload-Content-Type", "video/mp4")
            .json(&metadata);
        let response = self.check(self.send(request).await?).await?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| Fault::new("the resumable upload was started without a Location"))?;
        self.session = Some(Secret::new(location));
        self.uncertain = false;
        tracing::info!(target = %self.target.bucket, key = %self.target.key, "resumable upload started");
        Ok(())
    }

    /// A request to the open upload's URL.
    fn to_session(&self, content_range: String, body: Vec<u8>) -> Result<RequestBuilder, Fault> {
        let session = self
            .session
            .as_ref()
            .ok_or_else(|| Fault::upload_lost("no upload is open"))?;
        let mut request = self
            .api
            .http
            .request(Method::PUT, session.expose())
            .header(CONTENT_RANGE, content_range)
            .header(CONTENT_LENGTH, body.len());
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
        }
        Ok(request.body(body))
    }

    /// How many bytes the server holds of the open upload (a status query).
    async fn persisted(&mut self) -> Result<u64, Fault> {
        let request = self.to_session("bytes */*".to_owned(), Vec::new())?;
        let response = self.send(request).await?;
        match response.status().as_u16() {
            308 => Ok(held(&response)),
            404 | 410 => Err(self.lost()),
            // The emulator finishes the object on a status query: the upload is over.
            200 | 201 => Err(self.lost()),
            _ => Err(self
                .check(response)
                .await
                .err()
                .unwrap_or_else(|| Fault::new("unexpected answer to a status query"))),
        }
    }

    fn lost(&mut self) -> Fault {
        self.session = None;
        Fault::upload_lost("the resumable upload is gone on the server")
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
        let request = self.to_session(format!("bytes {start}-{end}/*"), bytes)?;
        let response = match self.send(request).await {
            Ok(response) => response,
            Err(fault) => {
                self.uncertain = true;
                return Err(fault);
            }
        };
        match response.status().as_u16() {
            // GCS may keep less than it was sent: the rest goes again, after a status query.
            308 if held(&response) <= end => {
                self.uncertain = true;
                Err(Fault::new("the server kept only part of the chunk"))
            }
            308 => Ok(()),
            404 | 410 => Err(self.lost()),
            s if s >= 500 || s == 429 || s == 408 => {
                self.uncertain = true;
                Err(self
                    .check(response)
                    .await
                    .err()
                    .unwrap_or_else(|| Fault::new("")))
            }
            _ => Err(self
                .check(response)
                .await
                .err()
                .unwrap_or_else(|| Fault::new("the chunk was taken as the end of the object"))),
        }
    }

    async fn try_complete(&mut self, total: u64) -> Result<(), Fault> {
        let request = self.to_session(format!("bytes */{total}"), Vec::new())?;
        let response = self.send(request).await?;
        match response.status().as_u16() {
            200 | 201 => {
                self.session = None;
                Ok(())
            }
            404 | 410 => Err(self.lost()),
            _ => Err(self
                .check(response)
                .await
                .err()
                .unwrap_or_else(|| Fault::new("the upload was not finished"))),
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
        Box::pin(async move {
            let request = self
                .api
                .http
                .post(self.upload_url("media"))
                .header(CONTENT_TYPE, "video/mp4")
                .body(bytes);
            self.check(self.send(request).await?).await?;
            Ok(())
        })
    }

    fn size(&self) -> Call<'_, Option<u64>> {
        Box::pin(async move {
            let response = self.send(self.api.http.get(self.object_url())).await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let response = self.check(response).await?;
            let object: serde_json::Value = response
                .json()
                .await
                .map_err(|e| Fault::new(format!("unreadable object metadata: {e}")))?;
            // The JSON API gives the size as a string of digits.
            let size = object["size"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| object["size"].as_u64());
            size.map(Some)
                .ok_or_else(|| Fault::new("the object metadata has no size"))
        })
    }

    fn abort(&mut self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(session) = self.session.take() else {
                return;
            };
            let cancel = self.send(self.api.http.delete(session.expose()));
            match tokio::time::timeout(Duration::from_secs(10), cancel).await {
                // 499: Google's answer to a cancelled upload.
                Ok(Ok(r)) if r.status().is_success() || r.status().as_u16() == 499 => {
                    tracing::info!("incomplete resumable upload cancelled")
                }
                Ok(Ok(r)) => {
                    tracing::warn!(
                        status = r.status().as_u16(),
                        "could not cancel the resumable upload"
                    )
                }
                Ok(Err(fault)) => {
                    tracing::warn!(error = %fault.message, "could not cancel the resumable upload")
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
            api: self.api.clone(),
            bucket: self.target.bucket.clone(),
        })
    }
}

/// Whole objects in the upload's bucket (one `uploadType=media` request each), through its
/// client and credentials.
struct GcsObjects {
    api: Api,
    bucket: String,
}

impl Objects for GcsObjects {
    fn put(
        &self,
        name: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> BoxFuture<'_, Result<(), Fault>> {
        let request = self
            .api
            .http
            .post(self.api.upload_url(&self.bucket, name, "media"))
            .header(CONTENT_TYPE, content_type)
            .body(bytes);
        Box::pin(async move {
            self.api.check(self.api.send(request).await?).await?;
            Ok(())
        })
    }

    fn delete(&self, name: &str) -> BoxFuture<'_, Result<(), Fault>> {
        let request = self
            .api
            .http
            .delete(self.api.object_url(&self.bucket, name));
        Box::pin(async move {
            self.api.check(self.api.send(request).await?).await?;
            Ok(())
        })
    }

    fn url(&self, name: &str) -> String {
        format!("gs://{}/{name}", self.bucket)
    }
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

/// How many bytes a 308 answer says the server holds (its `Range: bytes=0-N`; none: 0).
fn held(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get(RANGE)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes=0-"))
        .and_then(|end| end.parse::<u64>().ok())
        .map_or(0, |end| end + 1)
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
