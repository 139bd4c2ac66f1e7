//! The stream-key proxy: keeps an RTMP stream key out of every command line.
//!
//! /proc/<pid>/cmdline is readable by every user of the machine, so an RTMP URL among ffmpeg's
//! arguments would show its stream key to all of them. The relay's ffmpeg is given
//! `rtmp://127.0.0.1:<port>/<app>/<stand-in>` instead: a loopback listener of pagecast's own,
//! where the stand-in is a random string exactly as long as the key. Each connection is forwarded
//! to the real server, and in what ffmpeg sends, the stand-in is replaced by the key. The length
//! is the same, so the AMF strings and RTMP chunks around it stay valid. Only ffmpeg's commands
//! are looked at (after the 3073-byte handshake, within the first 16 KiB): media bytes pass
//! untouched. The real `tcUrl` is given to ffmpeg with `-rtmp_tcurl` (it holds no key). For
//! `rtmps://` the proxy speaks TLS to the server (the system's trusted roots, `SSL_CERT_FILE`
//! honoured) and ffmpeg plain RTMP to the proxy, on loopback.
//!
//! Owns: the listener and one forwarding task per connection; all end when it is dropped.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::secret::StreamUrl;

/// C0 + C1 + C2: the client's side of the RTMP handshake, random bytes a key could match.
const HANDSHAKE: usize = 1 + 1536 + 1536;
/// ffmpeg sends connect, releaseStream, FCPublish and publish (each naming the stream) right
/// after the handshake, before any media.
const COMMANDS_END: usize = 16 * 1024;

/// Whether `raw` is an RTMP URL the proxy can keep whole out of ffmpeg's command line: rtmp:// or
/// rtmps:// with a host, no user name or password (ffmpeg would be given them), and a query, if
/// any, only in the last path segment, which is the part the proxy stands in for (a token in
/// `rtmp://host/live?token=…` or `rtmp://host/live?token=…/stream` would be in the app). The
/// error is a sentence naming no part of the URL.
pub fn check_url(raw: &str) -> Result<(), &'static str> {
    let parsed =
        url::Url::parse(raw).map_err(|_| "is not an rtmp:// or rtmps:// URL with a host")?;
    if !matches!(parsed.scheme(), "rtmp" | "rtmps") || parsed.host_str().is_none_or(str::is_empty) {
        return Err("is not an rtmp:// or rtmps:// URL with a host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "carries a user name or password, which would be on ffmpeg's command line: \
                    give the stream key as the URL's last path segment",
        );
    }
    let query = |s: &str| s.contains(['?', '#']);
    let outside = match split_path(raw) {
        Some((app, _)) if !app.is_empty() => query(app),
        // One path segment: no key to stand in for, so nothing secret may be in it.
        Some((_, only)) => query(only),
        None => parsed.query().is_some() || parsed.fragment().is_some(),
    };
    if outside {
        return Err(
            "has a query outside its last path segment, which would be on ffmpeg's \
                    command line: give the stream key as the URL's last path segment",
        );
    }
    Ok(())
}

/// An RTMP URL's path split where the proxy splits it: the app (`/app`, up to the last `/`) and
/// the last segment (the key, with its query). The path begins at the first `/`, `?` or `#`
/// after the host; None without a `/` in it.
fn split_path(raw: &str) -> Option<(&str, &str)> {
    let rest = &raw[raw.find("://").map_or(0, |i| i + 3)..];
    let path = &rest[rest.find(['/', '?', '#'])?..];
    let slash = path.rfind('/')?;
    Some((&path[..slash], &path[slash + 1..]))
}

/// How long a tail that might begin a stand-in waits for the rest of it.
const HOLD_BACK: std::time::Duration = std::time::Duration::from_millis(200);

/// Where the proxy forwards to.
#[derive(Clone)]
struct Upstream {
    host: String,
    port: u16,
    /// rtmps: TLS to the server.
    tls: Option<tokio_rustls::TlsConnector>,
}

/// Either side of a forwarded connection.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Upstream {
    async fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Box::new(tls.connect(name, tcp).await?))
    }
}

/// A TLS client trusting the system's roots (and `SSL_CERT_FILE`).
fn tls_connector() -> std::io::Result<tokio_rustls::TlsConnector> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(std::io::Error::other(
            "no trusted TLS root certificates on this machine",
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A running proxy for one stream URL. Dropping it stops it.
#[derive(Debug)]
pub struct KeyProxy {
    /// What ffmpeg is given: no key in it.
    local_url: String,
    /// The real `tcUrl` (scheme, host, port, app): no key in it.
    tc_url: String,
    /// The last error reaching the real server, to explain ffmpeg's exit.
    last_error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KeyProxy {
    /// Starts a proxy for `url` (rtmp:// or rtmps:// with a key in its last path segment); None
    /// when the URL has no key to hide (or credentials before its host: given to ffmpeg whole).
    pub fn start(url: &StreamUrl) -> std::io::Result<Option<KeyProxy>> {
        let raw = url.expose();
        let Ok(parsed) = url::Url::parse(raw) else {
            return Ok(None);
        };
        let tls = match parsed.scheme() {
            "rtmp" => None,
            "rtmps" => Some(tls_connector()?),
            _ => return Ok(None),
        };
        if !parsed.username().is_empty() {
            return Ok(None);
        }
        let Some(host) = parsed.host_str().map(str::to_owned) else {
            return Ok(None);
        };
        let port = parsed
            .port()
            .unwrap_or(if tls.is_some() { 443 } else { 1935 });
        // The key is everything after the last '/' (a query included, as ffmpeg sends it).
        let Some((app, key)) =
            split_path(raw).filter(|(app, key)| !app.is_empty() && !key.is_empty())
        else {
            return Ok(None);
        };
        let stand_in = stand_in(key.len());
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let local_port = listener.local_addr()?.port();
        let listener = TcpListener::from_std(listener)?;
        let last_error = Arc::new(Mutex::new(None));
        let upstream = Upstream {
            host: host.clone(),
            port,
            tls,
        };
        let task = tokio::spawn(accept(
            listener,
            upstream,
            stand_in.clone().into_bytes(),
            key.as_bytes().to_vec(),
            last_error.clone(),
        ));
        let shown_host = match parsed.host() {
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            _ => host,
        };
        Ok(Some(KeyProxy {
            local_url: format!("rtmp://127.0.0.1:{local_port}{app}/{stand_in}"),
            tc_url: format!("{}://{shown_host}:{port}{app}", parsed.scheme()),
            last_error,
            task,
        }))
    }

    pub fn local_url(&self) -> &str {
        &self.local_url
    }

    pub fn tc_url(&self) -> &str {
        &self.tc_url
    }

    /// The last error reaching the real server, taken (so an old one is not reported twice).
    pub fn take_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// A random string of `len` letters and digits.
fn stand_in(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = vec![0u8; len];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        // Uniqueness is what matters here, not secrecy: the clock will do.
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        for b in &mut bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

async fn accept(
    listener: TcpListener,
    upstream: Upstream,
    stand_in: Vec<u8>,
    key: Vec<u8>,
    last_error: Arc<Mutex<Option<String>>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let (upstream, stand_in, key, last_error) = (
            upstream.clone(),
            stand_in.clone(),
            key.clone(),
            last_error.clone(),
        );
        tokio::spawn(async move {
            let server = match upstream.connect().await {
                Ok(server) => server,
                Err(e) => {
                    *last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("{}:{}: {e}", upstream.host, upstream.port));
                    return; // dropping the client ends ffmpeg's attempt
                }
            };
            let _ = client.set_nodelay(true);
            let (mut from_ffmpeg, mut to_ffmpeg) = client.into_split();
            let (mut from_server, mut to_server) = tokio::io::split(server);
            let up = async {
                let _ = copy_replacing(&mut from_ffmpeg, &mut to_server, &stand_in, &key).await;
                let _ = to_server.shutdown().await;
            };
            let down = async {
                let _ = tokio::io::copy(&mut from_server, &mut to_ffmpeg).await;
                let _ = to_ffmpeg.shutdown().await;
            };
            tokio::join!(up, down);
        });
    }
}

/// Copies `from` to `to`, replacing `stand_in` by `key` (same length) in the bytes between the
/// handshake and [`COMMANDS_END`]. A stand-in split across two reads is still found: a tail that
/// could begin one is held back until the next read.
async fn copy_replacing(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    stand_in: &[u8],
    key: &[u8],
) -> std::io::Result<()> {
    debug_assert_eq!(stand_in.len(), key.len());
    let mut offset = 0usize; // bytes of the stream before `pending`
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = if pending.is_empty() {
            from.read(&mut buf).await?
        } else {
            // A held-back tail that might begin a stand-in: ffmpeg writes a command in one go,
            // so a continuation comes at once. If none does, the tail was the end of a command
            // the server must answer before ffmpeg sends more (`publish` ends with "live": a
            // stand-in starting with "e" held its last byte back, and the stream hung forever,
            // about one start in 60): it goes now.
            match tokio::time::timeout(HOLD_BACK, from.read(&mut buf)).await {
                Ok(read) => read?,
                Err(_) => {
                    to.write_all(&pending).await?;
                    offset += pending.len();
                    pending.clear();
                    continue;
                }
            }
        };
        if n == 0 {
            to.write_all(&pending).await?;
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        if offset + pending.len() <= HANDSHAKE || offset >= COMMANDS_END {
            offset += pending.len();
            to.write_all(&pending).await?;
            pending.clear();
            continue;
        }
        let start = HANDSHAKE.saturating_sub(offset);
        let mut i = start;
        while let Some(at) = find(&pending[i..], stand_in) {
            let at = i + at;
            pending[at..at + key.len()].copy_from_slice(key);
            i = at + key.len();
        }
        // Hold back a tail that is the start of a stand-in (it may end in the next read).
        let keep = (1..stand_in.len())
            .rev()
            .find(|&k| k <= pending.len() - start && pending.ends_with(&stand_in[..k]))
            .unwrap_or(0);
        let send = pending.len() - keep;
        to.write_all(&pending[..send]).await?;
        offset += send;
        pending.drain(..send);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_the_proxy_cannot_keep_off_the_command_line_are_refused() {
        for ok in [
            "rtmp://live.example.com/app/KEY",
            "rtmps://live.example.com:443/app/inner/KEY?auth=TOKEN",
            "rtmp://127.0.0.1:1935/live",
            "rtmp://live.example.com",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("http://live.example.com/app/KEY", "is not an rtmp"),
            ("rtmp:///app/KEY", "is not an rtmp"),
            (
                "rtmp://user:PASS@live.example.com/app/KEY",
                "user name or password",
            ),
            (
                "rtmp://TOKEN@live.example.com/app/KEY",
                "user name or password",
            ),
            ("rtmp://live.example.com/live?token=TOKEN", "query outside"),
            (
                "rtmp://live.example.com/live?token=TOKEN/stream",
                "query outside",
            ),
            ("rtmp://live.example.com?token=TOKEN", "query outside"),
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("TOKEN") && !e.contains("PASS"), "{e}");
        }
    }

    async fn replaced(chunks: Vec<Vec<u8>>, stand_in: &[u8], key: &[u8]) -> Vec<u8> {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            for c in chunks {
                w.write_all(&c).await.unwrap();
                w.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut out = Vec::new();
        let mut r = r;
        let copy = copy_replacing(&mut r, &mut out, stand_in, key);
        let (copied, _) = tokio::join!(copy, writer);
        copied.unwrap();
        out
    }

    #[tokio::test]
    async fn the_stand_in_becomes_the_key_only_in_the_commands() {
        let stand_in = b"Xq7Zp2";
        let key = b"sk_123";
        // In the handshake: left alone. In the commands, even split across reads: replaced.
        // After the commands: left alone (media bytes).
        let mut handshake = vec![b'.'; HANDSHAKE - 3];
        handshake.extend_from_slice(stand_in);
        let commands = b"..publish..Xq7".to_vec();
        let rest = b"Zp2..live..Xq7Zp2".to_vec();
        let mut media = vec![b'm'; COMMANDS_END];
        media.extend_from_slice(stand_in);
        let out = replaced(
            vec![handshake.clone(), commands, rest, media.clone()],
            stand_in,
            key,
        )
        .await;
        let mut want = handshake;
        want.extend_from_slice(b"..publish..sk_123..live..sk_123");
        want.extend_from_slice(&media);
        assert_eq!(out.len(), want.len());
        assert!(out == want, "replaced wrongly");
    }

    /// A command whose last bytes happen to begin the stand-in reaches the server whole, while
    /// ffmpeg waits for the answer and sends nothing more: the tail used to be held back for
    /// good, and the stream never started.
    #[tokio::test]
    async fn a_command_ending_like_the_start_of_the_stand_in_is_not_held_back() {
        let stand_in = b"eQ7Zp2";
        let key = b"sk_123";
        let (mut ffmpeg, mut from) = tokio::io::duplex(1 << 20);
        let (mut to, mut server) = tokio::io::duplex(1 << 20);
        let copy =
            tokio::spawn(async move { copy_replacing(&mut from, &mut to, stand_in, key).await });
        let mut sent = vec![b'.'; HANDSHAKE];
        sent.extend_from_slice(b"..publish..eQ7Zp2..live");
        ffmpeg.write_all(&sent).await.unwrap();
        // Not closed: ffmpeg now waits for the server's answer.
        let mut got = vec![0u8; sent.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            server.read_exact(&mut got),
        )
        .await
        .expect("the whole command reaches the server")
        .unwrap();
        assert!(got.ends_with(b"..publish..sk_123..live"));
        drop(ffmpeg);
        copy.await.unwrap().unwrap();
    }

    #[test]
    fn urls_keep_their_app_and_lose_their_key() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let proxy = KeyProxy::start(&StreamUrl::new("rtmp://live.example.com/app/sk_live_1"))
                .unwrap()
                .unwrap();
            assert!(proxy.local_url().starts_with("rtmp://127.0.0.1:"));
            assert!(proxy.local_url().contains("/app/"));
            assert!(!proxy.local_url().contains("sk_live_1"));
            let stand_in = proxy.local_url().rsplit('/').next().unwrap();
            assert_eq!(stand_in.len(), "sk_live_1".len());
            assert_eq!(proxy.tc_url(), "rtmp://live.example.com:1935/app");
            assert!(KeyProxy::start(&StreamUrl::new("rtmp://h/app/"))
                .unwrap()
                .is_none());
            let tls = KeyProxy::start(&StreamUrl::new("rtmps://live.example.com/app/sk_2"))
                .unwrap()
                .unwrap();
            assert_eq!(tls.tc_url(), "rtmps://live.example.com:443/app");
            assert!(tls.local_url().starts_with("rtmp://127.0.0.1:"));
        });
    }
}
