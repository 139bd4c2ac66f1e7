//! Pages behind a login: cookies set before the first navigation (WebDriver BiDi
//! `storage.setCookie`, on the socket the browser watches the console on), and HTTP headers sent
//! with the requests to the page's own origin, never to another one (CDP `Fetch` on the browser
//! target, a connection of its own: chromedriver runs BiDi commands one at a time with its
//! WebDriver commands, so a request held back while a page loads would wait for the load, which
//! waits for the request). Nothing rewrites the page.
//!
//! Owns: the [`Login`] a page needs and the commands that give it: `storage.setCookie` per cookie,
//! `Fetch.enable` for requests to the page's origin (the only ones held back), and the
//! `Fetch.continueRequest` that lets a held request go on with the headers added.
//! Header and cookie values are [`Secret`]s: they print as `****`, and the browser redacts them
//! from everything the page and chromedriver print.

use serde_json::{json, Value};

use crate::secret::Secret;

/// A cookie the browser has before it loads the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: Secret,
    /// The page's host, or a parent domain of it.
    pub domain: String,
    pub path: String,
    pub secure: bool,
    pub http_only: bool,
}

/// What a page behind a login needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login {
    /// Sent with every request to the page's own origin (scheme, host and port).
    pub headers: Vec<(String, Secret)>,
    /// Set before the first navigation.
    pub cookies: Vec<Cookie>,
}

impl Login {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.cookies.is_empty()
    }

    /// Every value to keep out of logs.
    pub fn secrets(&self) -> Vec<Secret> {
        self.headers
            .iter()
            .map(|(_, v)| v.clone())
            .chain(self.cookies.iter().map(|c| c.value.clone()))
            .collect()
    }
}

/// `storage.setCookie` for `cookie`, in the browser's default partition.
pub fn set_cookie(id: u64, cookie: &Cookie) -> Value {
    json!({
        "id": id,
        "method": "storage.setCookie",
        "params": { "cookie": {
            "name": cookie.name,
            "value": { "type": "string", "value": cookie.value.expose() },
            "domain": cookie.domain,
            "path": cookie.path,
            "secure": cookie.secure,
            "httpOnly": cookie.http_only,
        } },
    })
}

/// CDP `Fetch.enable` on the browser target: hold back every request to `page`'s origin
/// (`<scheme>://<host>[:<port>]/*`; Chromium writes request URLs without a default port and without
/// credentials) before it is sent, in every tab, frame and worker.
pub fn fetch_enable(id: u64, page: &url::Url) -> Value {
    json!({
        "id": id,
        "method": "Fetch.enable",
        "params": { "patterns": [{ "urlPattern": format!("{}/*", origin(page)), "requestStage": "Request" }] },
    })
}

/// `scheme://host[:port]` of `url`, as Chromium writes it in a request's URL.
fn origin(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// A request held back by the intercept: its id, where it goes and the headers it would have been
/// sent with.
#[derive(Debug, PartialEq)]
pub struct HeldRequest {
    pub request: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// The held request in a CDP `Fetch.requestPaused` event's params.
pub fn held_request(params: &Value) -> Option<HeldRequest> {
    let request = params.get("request")?;
    Some(HeldRequest {
        request: params.get("requestId")?.as_str()?.to_owned(),
        url: request.get("url")?.as_str()?.to_owned(),
        headers: request
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// CDP `Fetch.continueRequest` for `held`: its own headers, those named in `extra` replaced by
/// `extra`'s values (names compare case-insensitively, as in HTTP), if it goes to `page`'s
/// origin; unchanged otherwise (the pattern already keeps other origins out; this makes sure).
pub fn continue_request(
    id: u64,
    held: &HeldRequest,
    page: &url::Url,
    extra: &[(String, Secret)],
) -> Value {
    let same_origin = url::Url::parse(&held.url).is_ok_and(|u| u.origin() == page.origin());
    if !same_origin {
        return json!({
            "id": id,
            "method": "Fetch.continueRequest",
            "params": { "requestId": held.request },
        });
    }
    let mut headers: Vec<Value> = held
        .headers
        .iter()
        .filter(|(name, _)| !extra.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    headers.extend(
        extra
            .iter()
            .map(|(name, value)| json!({ "name": name, "value": value.expose() })),
    );
    json!({
        "id": id,
        "method": "Fetch.continueRequest",
        "params": { "requestId": held.request, "headers": headers },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_intercept_covers_only_the_pages_origin() {
        let page: url::Url = "http://127.0.0.1:8080/dash?x=1".parse().unwrap();
        let cmd = fetch_enable(7, &page);
        assert_eq!(cmd["method"], "Fetch.enable");
        assert_eq!(
            cmd["params"]["patterns"],
            json!([{ "urlPattern": "http://127.0.0.1:8080/*", "requestStage": "Request" }])
        );
        let page: url::Url = "https://u:p@grafana.example.com:443/d/1".parse().unwrap();
        assert_eq!(
            fetch_enable(8, &page)["params"]["patterns"][0]["urlPattern"],
            "https://grafana.example.com/*"
        );
    }

    #[test]
    fn a_held_request_goes_on_with_the_headers_added() {
        let page: url::Url = "http://127.0.0.1:8080/".parse().unwrap();
        let event = json!({
            "requestId": "interception-42",
            "request": { "url": "http://127.0.0.1:8080/app.js", "method": "GET", "headers": {
                "User-Agent": "chromium", "authorization": "old",
            } },
        });
        let held = held_request(&event).expect("held");
        let extra = [("Authorization".to_owned(), Secret::new("Bearer t0k"))];
        let cmd = continue_request(9, &held, &page, &extra);
        assert_eq!(cmd["method"], "Fetch.continueRequest");
        assert_eq!(cmd["params"]["requestId"], "interception-42");
        assert_eq!(
            cmd["params"]["headers"],
            json!([
                { "name": "User-Agent", "value": "chromium" },
                { "name": "Authorization", "value": "Bearer t0k" },
            ])
        );
        // Another origin (a pattern is only a pattern): the request goes on as it was.
        let other = HeldRequest {
            url: "http://127.0.0.1:8081/".into(),
            ..held
        };
        let cmd = continue_request(10, &other, &page, &extra);
        assert_eq!(cmd["params"], json!({ "requestId": "interception-42" }));
    }

    #[test]
    fn cookies_and_their_secrets() {
        let login = Login {
            headers: vec![("X-Token".into(), Secret::new("h"))],
            cookies: vec![Cookie {
                name: "session".into(),
                value: Secret::new("c"),
                domain: "127.0.0.1".into(),
                path: "/".into(),
                secure: false,
                http_only: true,
            }],
        };
        assert_eq!(login.secrets(), vec![Secret::new("h"), Secret::new("c")]);
        let cmd = set_cookie(3, &login.cookies[0]);
        assert_eq!(cmd["params"]["cookie"]["value"]["value"], "c");
        assert_eq!(cmd["params"]["cookie"]["httpOnly"], true);
        assert!(!format!("{login:?}").contains("\"h\""));
    }
}
