//! The page proxy: every request of an untrusted page goes through it, and none reaches an address
//! the service policy refuses.
//!
//! Owns: a listening socket on 127.0.0.1 and one task per connection Chromium opens to it.
//! Accepts: HTTP proxy requests from Chromium (`--proxy-server`): `CONNECT host:port` (HTTPS,
//! WebSockets) and absolute-form requests (`GET http://host/… HTTP/1.1`, plain HTTP).
//! Sends: each request on to the address it checked, or `403` when the policy refuses every
//! address the host resolves to (logged as [`REFUSED`], host and address, never the path).
//! Stops: when dropped (the listener and every connection end).
//! Pins ([`PageProxy::pin`]): a host the policy checked before the browser loads the page is
//! connected to the address that was checked, as Chromium's `--host-resolver-rules` would. A warm
//! tree's Chromium starts before its job names the page, so its pins can only be given here.
//!
//! The policy's check of the page URL covers the page's own host; the page's subresources, frames,
//! fetches and sockets name any host they like. The proxy resolves each host itself, checks the
//! addresses, and connects to the one it checked, so DNS cannot swap it between the check and the
//! connection. Plain HTTP is sent with `Connection: close`: one request per connection, so each
//! one's host is checked.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Logged for each request the policy refuses.
pub const REFUSED: &str = "page request refused by the policy";

/// Whether a page may reach `addr` (the host as the page named it, and one address it resolves
/// to).
pub type Allow = Arc<dyn Fn(&str, IpAddr) -> bool + Send + Sync>;

/// Host names (lower case) and the checked address each one goes to.
type Pins = Arc<std::sync::RwLock<std::collections::HashMap<String, IpAddr>>>;

/// The most a request head may take (Chromium's are a few KiB).
const MAX_HEAD: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

pub struct PageProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
    pins: Pins,
}

impl PageProxy {
    /// Listens on 127.0.0.1 (a free port) and serves until dropped.
    pub async fn start(allow: Allow) -> std::io::Result<PageProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let pins = Pins::default();
        let shared = pins.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => {
                            let (allow, pins) = (allow.clone(), shared.clone());
                            connections.spawn(async move {
                                if let Err(e) = serve(client, allow, pins).await {
                                    tracing::debug!(error = %e, "page proxy connection ended");
                                }
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "page proxy: accept failed"),
                    },
                    // Reap finished connections as they end.
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(PageProxy { port, task, pins })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, `host` is connected to `addr` (checked by the caller), not resolved anew.
    pub fn pin(&self, host: &str, addr: IpAddr) {
        if let Ok(mut pins) = self.pins.write() {
            pins.insert(host.trim_end_matches('.').to_ascii_lowercase(), addr);
        }
    }
}

/// Chromium's flags to send every request through the proxy on `port`: loopback too (Chromium
/// bypasses proxies for it by default), and WebRTC only over the proxy (no direct UDP).
pub fn chromium_args(port: u16) -> Vec<String> {
    vec![
        format!("--proxy-server=http://127.0.0.1:{port}"),
        "--proxy-bypass-list=<-loopback>".into(),
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp".into(),
    ]
}

impl Drop for PageProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

/// A request head: the method, the target and where the head ends in the buffer.
struct Head {
    method: String,
    target: String,
    len: usize,
    headers: Vec<(String, Vec<u8>)>,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(Head {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            len,
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
        })),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("bad request: {e}")),
    }
}

async fn read_head(client: &mut TcpStream) -> std::io::Result<(Head, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_head(&buf) {
            Ok(Some(head)) => return Ok((head, buf)),
            Ok(None) if buf.len() < MAX_HEAD => continue,
            Ok(None) => return Err(std::io::Error::other("request head too large")),
            Err(e) => return Err(std::io::Error::other(e)),
        }
    }
}

/// Splits `host:port` (IPv6 in brackets) of a CONNECT target or a URL's authority.
fn host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let authority = authority.rsplit('@').next()?;
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
}

/// Resolves `host` (a pinned one: its pin) and picks the first address the policy allows.
/// Err: why not.
async fn checked_address(
    host: &str,
    port: u16,
    allow: &Allow,
    pins: &Pins,
) -> Result<SocketAddr, String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pinned = pins.read().ok().and_then(|p| p.get(&host).copied());
    let addrs: Vec<SocketAddr> = match pinned.map_or_else(|| host.parse::<IpAddr>(), Ok) {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect(),
    };
    addrs
        .iter()
        .find(|a| allow(&host, a.ip()))
        .copied()
        .ok_or_else(|| {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            tracing::warn!(host = %host, addresses = %list.join(" "), message = REFUSED);
            format!("{host} resolves to an address this service refuses")
        })
}

async fn refuse(client: &mut TcpStream, status: &str, why: &str) -> std::io::Result<()> {
    let body = format!("pagecast: {why}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

async fn serve(mut client: TcpStream, allow: Allow, pins: Pins) -> std::io::Result<()> {
    let (head, buf) = read_head(&mut client).await?;
    if head.method.eq_ignore_ascii_case("CONNECT") {
        let Some((host, port)) = host_port(&head.target, 443) else {
            return refuse(&mut client, "400 Bad Request", "bad CONNECT target").await;
        };
        let addr = match checked_address(&host, port, &allow, &pins).await {
            Ok(addr) => addr,
            Err(why) => return refuse(&mut client, "403 Forbidden", &why).await,
        };
        let mut server = match connect(addr).await {
            Ok(server) => server,
            Err(e) => return refuse(&mut client, "502 Bad Gateway", &e.to_string()).await,
        };
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        // Whatever came after the head already belongs to the tunnel.
        server.write_all(&buf[head.len..]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        return Ok(());
    }
    // Absolute form: http://host[:port]/path. Anything else is not a proxy request.
    let Ok(url) = url::Url::parse(&head.target) else {
        return refuse(&mut client, "400 Bad Request", "not a proxy request").await;
    };
    if url.scheme() != "http" {
        return refuse(
            &mut client,
            "400 Bad Request",
            "only http:// goes unencrypted",
        )
        .await;
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return refuse(&mut client, "400 Bad Request", "no host").await;
    };
    let host = host.trim_matches(['[', ']']).to_owned();
    let addr = match checked_address(&host, port, &allow, &pins).await {
        Ok(addr) => addr,
        Err(why) => return refuse(&mut client, "403 Forbidden", &why).await,
    };
    let mut server = match connect(addr).await {
        Ok(server) => server,
        Err(e) => return refuse(&mut client, "502 Bad Gateway", &e.to_string()).await,
    };
    // The request in origin form, one per connection.
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let mut out = format!("{} {path} HTTP/1.1\r\n", head.method).into_bytes();
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        if lower == "connection" || lower == "proxy-connection" || lower == "keep-alive" {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&buf[head.len..]);
    server.write_all(&out).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{addr} did not answer within {CONNECT_TIMEOUT:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(
            host_port("a.example:8443", 443),
            Some(("a.example".into(), 8443))
        );
        assert_eq!(host_port("a.example", 443), Some(("a.example".into(), 443)));
        assert_eq!(host_port("[::1]:80", 443), Some(("::1".into(), 80)));
        assert_eq!(host_port("[::1]", 443), Some(("::1".into(), 443)));
        assert_eq!(host_port("a.example:x", 443), None);
    }

    async fn origin() -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await
                .unwrap();
            s.shutdown().await.unwrap();
            buf.truncate(n);
            buf
        });
        (addr, task)
    }

    async fn ask(proxy: &PageProxy, request: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_refused_address_gets_403_and_an_allowed_one_the_origin_in_origin_form() {
        let (addr, origin_task) = origin().await;
        // 127.0.0.1 allowed, the rest of loopback not.
        let allow: Allow = Arc::new(|_, ip| ip == IpAddr::from([127, 0, 0, 1]));
        let proxy = PageProxy::start(allow).await.unwrap();
        let refused = ask(
            &proxy,
            &format!(
                "GET http://127.0.0.2:{}/x HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n",
                addr.port()
            ),
        )
        .await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        let refused = ask(
            &proxy,
            &format!("CONNECT 127.0.0.2:{} HTTP/1.1\r\n\r\n", addr.port()),
        )
        .await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        let answer = ask(
            &proxy,
            &format!(
                "GET http://127.0.0.1:{}/p?q=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nProxy-Connection: keep-alive\r\n\r\n",
                addr.port()
            ),
        )
        .await;
        assert!(answer.ends_with("ok"), "{answer}");
        let seen = String::from_utf8(origin_task.await.unwrap()).unwrap();
        assert!(seen.starts_with("GET /p?q=1 HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("Connection: close\r\n"), "{seen}");
        assert!(
            !seen.to_ascii_lowercase().contains("proxy-connection"),
            "{seen}"
        );
    }

    #[tokio::test]
    async fn a_pinned_host_goes_to_its_pinned_address_without_being_resolved() {
        let (addr, origin_task) = origin().await;
        let allow: Allow = Arc::new(|_, ip| ip == IpAddr::from([127, 0, 0, 1]));
        let proxy = PageProxy::start(allow).await.unwrap();
        let request = format!(
            "GET http://pinned.invalid:{}/p HTTP/1.1\r\nHost: pinned.invalid\r\n\r\n",
            addr.port()
        );
        let unpinned = ask(&proxy, &request).await;
        assert!(unpinned.starts_with("HTTP/1.1 403"), "{unpinned}");
        proxy.pin("Pinned.invalid.", IpAddr::from([127, 0, 0, 1]));
        let answer = ask(&proxy, &request).await;
        assert!(answer.ends_with("ok"), "{answer}");
        let seen = String::from_utf8(origin_task.await.unwrap()).unwrap();
        assert!(seen.starts_with("GET /p HTTP/1.1\r\n"), "{seen}");
    }

    #[tokio::test]
    async fn connect_tunnels_to_the_checked_address() {
        let (addr, origin_task) = origin().await;
        let allow: Allow = Arc::new(|_, _| true);
        let proxy = PageProxy::start(allow).await.unwrap();
        let answer = ask(
            &proxy,
            &format!(
                "CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\nGET /t HTTP/1.1\r\n\r\n",
                addr.port()
            ),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200 Connection Established"),
            "{answer}"
        );
        assert!(answer.ends_with("ok"), "{answer}");
        let seen = String::from_utf8(origin_task.await.unwrap()).unwrap();
        assert!(seen.starts_with("GET /t"), "{seen}");
    }
}
