"""A test page server on 127.0.0.1 for pages behind a login and self-signed HTTPS.

Reads its settings as one JSON object on stdin (so the secrets it checks are in no command line
or environment), listens on a free port and prints `PORT <n>` on stdout, then one line per request
`REQ <path> secret_seen=<true|false> cookie=<true|false>`, where secret_seen says whether any of
the secret values (header value, cookie value, password) arrived in any header of that request.

Settings (all optional):
  "header": [name, value]   the page needs this request header
  "cookie": [name, value]   the page needs this cookie
  "basic":  [user, password] the page needs basic auth (401 with a challenge otherwise)
  "tls":    true             serve HTTPS with a fresh self-signed certificate
  "watch":  [values...]      more secret values to look for (a server that must NOT get them)
  "embed":  url              the page also loads this URL as an image (another origin, or a
                             path of this server such as /hang)
  "script": url              the page ends with a classic <script src> of this URL (after its
                             content: the parser waits for it, DOMContentLoaded too)

GET / answers a green page when every requirement is met, else a red 401 page. GET /hang never
answers (the connection is held until the client goes): a subresource that keeps the page's load
event from ever firing. Any other path answers 204 with no body.
"""

import base64
import datetime
import http.server
import json
import ssl
import sys
import tempfile

settings = json.loads(sys.stdin.read() or "{}")
header = settings.get("header")
cookie = settings.get("cookie")
basic = settings.get("basic")
embed = settings.get("embed")
script = settings.get("script")
secrets = [s for s in settings.get("watch", []) if s]
if header:
    secrets.append(header[1])
if cookie:
    secrets.append(cookie[1])
if basic:
    secrets.append(basic[1])
    secrets.append(base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode())


def page(colour: str, status: int) -> bytes:
    extra = f'<img src="{embed}" width="1" height="1">' if embed else ""
    if script:
        extra += f'<script src="{script}"></script>'
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{status}</title></head>'
        f'<body style="margin:0;background:{colour};height:100vh">{extra}</body></html>'
    ).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        raw = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        seen = any(s in raw for s in secrets)
        cookies = self.headers.get("Cookie", "")
        has_cookie = bool(cookie) and f"{cookie[0]}={cookie[1]}" in [c.strip() for c in cookies.split(";")]
        print(f"REQ {self.path} secret_seen={str(seen).lower()} cookie={str(has_cookie).lower()}", flush=True)
        if self.path == "/hang":
            while self.rfile.read(1):
                pass
            return
        if self.path != "/" and not self.path.startswith("/?"):
            self.reply(204, b"", None)
            return
        ok = True
        if header and self.headers.get(header[0]) != header[1]:
            ok = False
        if cookie and not has_cookie:
            ok = False
        challenge = None
        if basic:
            want = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            if self.headers.get("Authorization") != want:
                ok = False
                challenge = 'Basic realm="pagecast test"'
        if ok:
            self.reply(200, page("#00ff00", 200), None)
        else:
            self.reply(401, page("#ff0000", 401), challenge)

    def reply(self, status, body, challenge):
        self.send_response(status)
        if challenge:
            self.send_header("WWW-Authenticate", challenge)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def self_signed(directory: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
if settings.get("tls"):
    with tempfile.TemporaryDirectory() as d:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self_signed(d))
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
