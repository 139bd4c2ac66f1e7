//! The built-in LiveKit layout pages, served to the recording's own Chromium.
//!
//! Owns: the layout bundle (`assets/layouts/`, built from `layouts/` by
//! `scripts/build-layouts.sh` and embedded in the binary, so a recording needs no web server of
//! anyone's) and a small HTTP server on 127.0.0.1 (a free port) that serves it, read-only, for
//! the length of one run.
//! Not an actor: it has no process to watch and nothing that can crash apart from pagecast
//! itself; it is a task that ends when its [`LayoutServer`] is dropped.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use include_dir::{include_dir, Dir};

/// The bundle, as built. `build.rs` makes cargo rebuild when it changes.
static BUNDLE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/assets/layouts");

/// A file of the bundle by its request path (`/` is `index.html`).
pub fn file(path: &str) -> Option<&'static [u8]> {
    let path = path.trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    // include_dir paths never contain "..": a request for one finds nothing.
    BUNDLE.get_file(path).map(|f| f.contents())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

async fn serve(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, kind: &str, body: &'static [u8]| {
        Response::builder()
            .status(status)
            .header("Content-Type", kind)
            .header("Cache-Control", "no-store")
            .header("X-Content-Type-Options", "nosniff")
            .body(Full::new(Bytes::from_static(body)))
            .expect("static headers are valid")
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"GET only\n",
        ));
    }
    let path = req.uri().path();
    let path = if path == "/" { "/index.html" } else { path };
    Ok(match file(path) {
        Some(body) => reply(StatusCode::OK, content_type(path), body),
        None => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n"),
    })
}

/// The layout server of one run; stops when dropped.
pub struct LayoutServer {
    base: url::Url,
    task: tokio::task::JoinHandle<()>,
}

impl LayoutServer {
    /// Listens on 127.0.0.1 (a free port): only this machine's browser needs it.
    pub async fn start() -> std::io::Result<LayoutServer> {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let port = listener.local_addr()?.port();
        let base =
            url::Url::parse(&format!("http://127.0.0.1:{port}/")).expect("a loopback URL is valid");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let service = hyper::service::service_fn(serve);
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                    {
                        tracing::debug!(error = %e, "layout server: connection ended");
                    }
                });
            }
        });
        tracing::debug!(base = %base, "layout server listening");
        Ok(LayoutServer { base, task })
    }

    /// `http://127.0.0.1:<port>/`
    pub fn base(&self) -> &url::Url {
        &self.base
    }
}

impl Drop for LayoutServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_has_its_page_and_script() {
        let index = std::str::from_utf8(file("/").expect("index.html")).unwrap();
        assert!(
            index.contains("<html") || index.contains("<!doctype") || index.contains("<!DOCTYPE")
        );
        assert!(
            file("/layouts.js").is_some_and(|js| js.len() > 1000),
            "the bundled script"
        );
        assert!(file("/../Cargo.toml").is_none());
        assert!(file("/nope.js").is_none());
    }

    #[tokio::test]
    async fn it_serves_the_bundle_on_loopback() {
        let server = LayoutServer::start().await.unwrap();
        assert_eq!(server.base().host_str(), Some("127.0.0.1"));
        let port = server.base().port().unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out).into_owned()
        };
        let index = get("/").await;
        assert!(index.starts_with("HTTP/1.1 200"), "{index}");
        assert!(index.contains("text/html"));
        let js = get("/layouts.js").await;
        assert!(js.starts_with("HTTP/1.1 200") && js.contains("text/javascript"));
        assert!(get("/missing").await.starts_with("HTTP/1.1 404"));
        drop(server);
    }
}
