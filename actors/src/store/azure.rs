//! Azure Blob Storage: a block blob, one block per [`Store::put_part`], committed by the block
//! list at the end (through `object_store`'s multipart interface). Blocks never committed are
//! dropped by Azure after a week; nothing has to be aborted.
//!
//! Unless it replaces the blob, a single put carries `If-None-Match: *` (a blob stored under the
//! name meanwhile is refused and left as it is). The block-list commit cannot carry a condition
//! through `object_store`, so the name is looked at just before the first commit instead: a blob
//! there then is left as it is; one stored between that look and the commit (a few milliseconds)
//! would be replaced.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, LocalBoxFuture};
use futures_util::StreamExt;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, RetryConfig,
};

use super::{Call, Fault, Objects, Store, MARK};
use crate::secret::Secret;

/// How the uploads authenticate.
#[derive(Debug, Clone)]
pub enum AzureCredentials {
    /// The storage account's access key.
    Key(Secret),
    /// A shared access signature (the query string, with or without its '?').
    Sas(Secret),
    /// Azure's own chain (environment, managed identity, Azure CLI).
    Chain,
}

#[derive(Debug, Clone)]
pub struct AzureTarget {
    /// The config field (`output.azure`, `output.backup.azure`), for messages.
    pub field: String,
    pub account: String,
    pub container: String,
    pub blob: String,
    /// The account's blob endpoint (an emulator: `http://127.0.0.1:10000/devstoreaccount1`);
    /// None: `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    pub credentials: AzureCredentials,
}

pub struct AzureStore {
    store: MicrosoftAzure,
    path: Path,
    field: String,
    /// `account/container`, for messages.
    at: String,
    parts: Option<Vec<PartId>>,
    /// Whether the upload may replace a blob of its name.
    replace: bool,
    /// The name was found free just before a commit of this upload (a retried commit is not
    /// looked at again: its first try may have made the blob).
    checked: bool,
    /// This upload's mark, in its blob's metadata.
    mark: String,
}

impl AzureStore {
    /// The store, once the container answered (it exists and the credentials may list it).
    /// `replace`: the upload may replace a blob of its name.
    pub async fn connect(target: &AzureTarget, replace: bool) -> Result<AzureStore, Fault> {
        let options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(30))
            .with_allow_http(
                target
                    .endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            );
        // Bounded calls: the uploader retries, and gives up by its own rule.
        let retry = RetryConfig {
            max_retries: 1,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        };
        let mut builder = MicrosoftAzureBuilder::new()
            .with_account(&target.account)
            .with_container_name(&target.container)
            .with_client_options(options)
            .with_retry(retry);
        if let Some(endpoint) = &target.endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_owned());
        }
        builder = match &target.credentials {
            AzureCredentials::Key(key) => builder.with_access_key(key.expose()),
            AzureCredentials::Sas(sas) => {
                let pairs = object_store::azure::split_sas(sas.expose().trim_start_matches('?'))
                    .map_err(|_| {
                        Fault::new(format!(
                            "{}.sas is not a shared access signature",
                            target.field
                        ))
                    })?;
                builder.with_sas_authorization(pairs)
            }
            AzureCredentials::Chain => builder,
        };
        // The builder's errors may quote a key: only the kind of failure is said.
        let store = builder.build().map_err(|_| {
            Fault::new(format!(
                "{}: the account, endpoint or credentials are not usable",
                target.field
            ))
        })?;
        let path = Path::from(target.blob.as_str());
        let parent: Path = match target.blob.rfind('/') {
            Some(i) => Path::from(&target.blob[..i]),
            None => Path::default(),
        };
        // The first page of a listing beside the blob: fails on a missing container or
        // credentials that may not use it.
        let prefix = target.blob.contains('/').then_some(&parent);
        match store.list(prefix).next().await {
            Some(Err(object_store::Error::NotFound { .. })) => {
                return Err(Fault::new("no such container (HTTP 404)"))
            }
            Some(Err(e)) => return Err(fault(&e, &target.field)),
            _ => {}
        }
        Ok(AzureStore {
            store,
            path,
            field: target.field.clone(),
            at: format!("{}/{}", target.account, target.container),
            parts: None,
            replace,
            checked: false,
            mark: super::upload_mark(),
        })
    }

    fn url(&self) -> String {
        format!("azure://{}/{}", self.at, self.path)
    }

    /// The blob's mark, if there is a blob of the name (None: no blob).
    async fn stored_mark(&self) -> Result<Option<String>, Fault> {
        stored_mark(&self.store, &self.path, &self.field).await
    }
}

/// A blob made with an upload's mark: `path` (shown as `url`) through `store`.
struct Marked<'a> {
    store: &'a MicrosoftAzure,
    path: &'a Path,
    mark: &'a str,
    field: &'a str,
    url: String,
}

impl Marked<'_> {
    /// Puts `bytes` as the blob with `attributes` and the mark; with `create`, only if there is
    /// none of its name. One there already is ours when it carries the mark (a retried put whose
    /// first answer was lost); else another writer's, left as it is.
    async fn put(
        self,
        bytes: Vec<u8>,
        mut attributes: Attributes,
        create: bool,
    ) -> Result<(), Fault> {
        attributes.insert(
            Attribute::Metadata(MARK.into()),
            self.mark.to_owned().into(),
        );
        let options = PutOptions {
            mode: if create {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            attributes,
            ..PutOptions::default()
        };
        match self.store.put_opts(self.path, bytes.into(), options).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let stored = stored_mark(self.store, self.path, self.field).await?;
                super::ours_or_taken(stored.as_deref(), self.mark, &self.url)
            }
            Err(e) => Err(fault(&e, self.field)),
        }
    }
}

/// The mark of the blob `path`, if there is one ("" when it carries none; None: no blob).
async fn stored_mark(
    store: &MicrosoftAzure,
    path: &Path,
    field: &str,
) -> Result<Option<String>, Fault> {
    let head = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    match store.get_opts(path, head).await {
        Ok(found) => Ok(Some(
            found
                .attributes
                .get(&Attribute::Metadata(MARK.into()))
                .map(|v| v.as_ref().to_owned())
                .unwrap_or_default(),
        )),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(fault(&e, field)),
    }
}

impl Store for AzureStore {
    fn put_part(&mut self, _offset: u64, bytes: Vec<u8>) -> Call<'_, ()> {
        Box::pin(async move {
            let part = self
                .store
                .put_part(&self.path, &String::new(), 0, bytes.into())
                .await
                .map_err(|e| fault(&e, &self.field))?;
            self.parts.get_or_insert_with(Vec::new).push(part);
            Ok(())
        })
    }

    fn complete(&mut self, _total: u64) -> Call<'_, ()> {
        Box::pin(async move {
            if !self.replace && !self.checked {
                if self.stored_mark().await?.is_some() {
                    return Err(Fault::taken(&self.url()));
                }
                self.checked = true;
            }
            let parts = self.parts.clone().unwrap_or_default();
            match self
                .store
                .complete_multipart(&self.path, &String::new(), parts)
                .await
            {
                Ok(_) => {
                    self.parts = None;
                    Ok(())
                }
                // The blocks are gone (Azure drops uncommitted blocks after a week).
                Err(e) if e.to_string().contains("InvalidBlockList") => {
                    self.parts = None;
                    Err(Fault::upload_lost(fault(&e, &self.field).message))
                }
                Err(e) => Err(fault(&e, &self.field)),
            }
        })
    }

    fn put_whole(&mut self, bytes: Vec<u8>) -> Call<'_, ()> {
        let blob = Marked {
            store: &self.store,
            path: &self.path,
            mark: &self.mark,
            field: &self.field,
            url: self.url(),
        };
        Box::pin(blob.put(bytes, Attributes::new(), !self.replace))
    }

    fn size(&self) -> Call<'_, Option<u64>> {
        Box::pin(async move {
            match self.store.head(&self.path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(fault(&e, &self.field)),
            }
        })
    }

    fn abort(&mut self) -> LocalBoxFuture<'_, ()> {
        // Uncommitted blocks cannot be deleted; they are no blob, and Azure drops them.
        self.parts = None;
        Box::pin(std::future::ready(()))
    }

    fn forget(&mut self) {
        self.parts = None;
    }

    fn is_open(&self) -> bool {
        self.parts.is_some()
    }

    fn objects(&self) -> Arc<dyn Objects> {
        Arc::new(AzureObjects {
            store: self.store.clone(),
            field: self.field.clone(),
            at: self.at.clone(),
        })
    }
}

/// Whole blobs in the upload's container, through its client.
struct AzureObjects {
    store: MicrosoftAzure,
    field: String,
    at: String,
}

impl Objects for AzureObjects {
    fn put(
        &self,
        name: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> BoxFuture<'_, Result<(), Fault>> {
        let path = Path::from(name);
        let options = PutOptions {
            attributes: Attributes::from_iter([(Attribute::ContentType, content_type)]),
            ..PutOptions::default()
        };
        Box::pin(async move {
            self.store
                .put_opts(&path, bytes.into(), options)
                .await
                .map(|_| ())
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
        let path = Path::from(name);
        let attributes = Attributes::from_iter([(Attribute::ContentType, content_type)]);
        let (mark, url) = (mark.to_owned(), self.url(name));
        Box::pin(async move {
            let blob = Marked {
                store: &self.store,
                path: &path,
                mark: &mark,
                field: &self.field,
                url,
            };
            blob.put(bytes, attributes, true).await
        })
    }

    fn delete(&self, name: &str) -> BoxFuture<'_, Result<(), Fault>> {
        let path = Path::from(name);
        Box::pin(async move {
            self.store
                .delete(&path)
                .await
                .map_err(|e| fault(&e, &self.field))
        })
    }

    fn exists(&self, name: &str) -> BoxFuture<'_, Result<bool, Fault>> {
        let path = Path::from(name);
        Box::pin(async move {
            match self.store.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(fault(&e, &self.field)),
            }
        })
    }

    fn url(&self, name: &str) -> String {
        format!("azure://{}/{name}", self.at)
    }
}

/// One line for an `object_store` error: its kind, the HTTP status and Azure's error code, never
/// a URL's query (a shared access signature travels in it).
fn fault(e: &object_store::Error, field: &str) -> Fault {
    match e {
        object_store::Error::NotFound { .. } => Fault::new("not found (HTTP 404)"),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            Fault::new(format!("access denied: check {field}'s credentials"))
        }
        other => {
            let text = other.to_string();
            let code = between(&text, "<Code>", "</Code>");
            let status = between(&text, "status code: ", " ");
            match (status, code) {
                (_, Some("ContainerNotFound")) => Fault::new("no such container (HTTP 404)"),
                (Some(status), Some(code)) => Fault::new(format!("HTTP {status}: {code}")),
                _ => Fault::new(without_queries(&text)),
            }
        }
    }
}

/// The text between `start` and the next `end` in `text`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// `text` with every URL's query cut off, on one line.
fn without_queries(text: &str) -> String {
    text.split_whitespace()
        .map(|word| match (word.contains("://"), word.find('?')) {
            (true, Some(q)) => format!("{}?…", &word[..q]),
            _ => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_query_never_reaches_a_message() {
        let text = "Error performing PUT http://127.0.0.1:1/acct/c/b?comp=block&sig=SECRET in 1ms\n - status 403";
        let shown = without_queries(text);
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:1/acct/c/b?…") && shown.contains("status 403"));
    }

    #[test]
    fn azure_s_error_code_is_the_message() {
        let text = "Error performing GET http://h/a/c?sig=SECRET in 4ms - Server returned non-2xx status code: 404 Not Found: <?xml?> <Error> <Code>ContainerNotFound</Code> <Message>..</Message>";
        assert_eq!(
            between(text, "<Code>", "</Code>"),
            Some("ContainerNotFound")
        );
        assert_eq!(between(text, "status code: ", " "), Some("404"));
    }
}
