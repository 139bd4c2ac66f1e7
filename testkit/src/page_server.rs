//! A page server on 127.0.0.1 for pages behind a login and self-signed HTTPS
//! (`tests/support/page_server.py`, run with the project venv's python, which has `cryptography`
//! for the certificate). Its settings, secrets included, go in on stdin, so they are in no command
//! line or environment. It answers a green page when its requirements are met and a red 401 page
//! otherwise, and reports every request it gets.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{repo_root, wait_until};

/// One request the server got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    /// One of the watched secret values arrived in one of its headers.
    pub secret_seen: bool,
    /// The required cookie arrived.
    pub cookie: bool,
}

pub struct PageServer {
    pub port: u16,
    tls: bool,
    child: Child,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl PageServer {
    /// Starts the server with `settings` (see the script's header for the fields).
    pub fn start(settings: serde_json::Value) -> PageServer {
        let python = repo_root().join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup.sh",
            python.display()
        );
        let tls = settings.get("tls") == Some(&serde_json::Value::Bool(true));
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/support/page_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/support/page_server.py");
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(settings.to_string().as_bytes())
            .expect("write the page server's settings");
        drop(stdin);
        let stdout = child.stdout.take().expect("piped");
        let port = Arc::new(Mutex::new(None));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (port_in, requests_in) = (port.clone(), requests.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(p) = line.strip_prefix("PORT ") {
                    *port_in.lock().unwrap() = p.trim().parse::<u16>().ok();
                } else if let Some(rest) = line.strip_prefix("REQ ") {
                    let mut parts = rest.split(' ');
                    let path = parts.next().unwrap_or_default().to_owned();
                    let flag = |name: &str| rest.contains(&format!("{name}=true"));
                    requests_in.lock().unwrap().push(Request {
                        path,
                        secret_seen: flag("secret_seen"),
                        cookie: flag("cookie"),
                    });
                }
            }
        });
        wait_until("the page server to listen", Duration::from_secs(30), || {
            port.lock().unwrap().is_some()
        });
        let port = port.lock().unwrap().expect("a port");
        PageServer {
            port,
            tls,
            child,
            requests,
        }
    }

    /// The server's page, `http(s)://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
