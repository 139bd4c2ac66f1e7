//! Values that must never reach a log line or an error message.
//!
//! Owns: the [`Secret`] wrapper (API secrets, tokens, S3 keys) and [`mask_stream_url`], which hides
//! the stream key of an RTMP URL. `Debug` and `Display` of a secret print `****`; the real value is
//! only reachable through [`Secret::expose`], so every use of it is greppable.

use std::fmt;

/// A string that prints as `****`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value. Call only where it is handed to the program that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// An RTMP(S) or SRT URL: it carries a stream key (RTMP: the last path segment; SRT: the
/// passphrase and streamid in the query), so it prints masked (`rtmp://host/app/****`,
/// `srt://host:port?****`).
#[derive(Clone, PartialEq, Eq)]
pub struct StreamUrl(String);

impl StreamUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The real URL, key included. Call only where it is handed to the encoder.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamUrl({})", mask_stream_url(&self.0))
    }
}

impl fmt::Display for StreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_stream_url(&self.0))
    }
}

/// An RTMP(S) URL with its stream key (the last path segment) and any query or credentials
/// replaced by `****`, e.g. `rtmp://host/app/****`. Anything unparsable is masked whole.
pub fn mask_stream_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "****".to_owned();
    };
    if !url.username().is_empty() {
        let _ = url.set_username("****");
    }
    if url.password().is_some() {
        let _ = url.set_password(Some("****"));
    }
    if url.query().is_some() {
        url.set_query(Some("****"));
    }
    let path = url.path().to_owned();
    let mut segments: Vec<&str> = path.split('/').collect();
    // The key is the last non-empty segment; an URL with only an app segment has no key to hide.
    if segments.iter().filter(|s| !s.is_empty()).count() >= 2 {
        if let Some(last) = segments.iter_mut().rev().find(|s| !s.is_empty()) {
            *last = "****";
        }
        url.set_path(&segments.join("/"));
    }
    url.to_string()
}

/// A page URL fit for logs, errors and API answers: the user name and password, the values of
/// the query and of a query inside the fragment (`#/grid?url=…&token=…`, as layout pages take
/// them) become `****`; so does a query word without `=` (`?TOKEN`) and a fragment with no query
/// in it (`#access_token=…`, as sign-in pages hand tokens to scripts): any of them may be a token.
pub fn mask_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "****".to_owned();
    };
    if !url.username().is_empty() {
        let _ = url.set_username("****");
    }
    if url.password().is_some() {
        let _ = url.set_password(Some("****"));
    }
    if let Some(query) = url.query() {
        let masked = mask_query(query);
        url.set_query(Some(&masked));
    }
    if let Some(fragment) = url.fragment() {
        let masked = match fragment.split_once('?') {
            Some((path, query)) => format!("{path}?{}", mask_query(query)),
            None if fragment.is_empty() => String::new(),
            None => "****".to_owned(),
        };
        url.set_fragment(Some(&masked));
    }
    url.to_string()
}

fn mask_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) => format!("{key}=****"),
            None if pair.is_empty() => String::new(),
            None => "****".to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "****");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn page_url_values_are_masked() {
        assert_eq!(
            mask_url(
                "https://u:pw@rec.example.com/p?a=1&token=abc#/grid-dark?url=wss://x&token=eyJ"
            ),
            "https://****:****@rec.example.com/p?a=****&token=****#/grid-dark?url=****&token=****"
        );
        assert_eq!(mask_url("file:///tmp/page.html"), "file:///tmp/page.html");
        // A token as the user name, as a bare query word, as a fragment.
        assert_eq!(
            mask_url("https://TOKEN@h/p?SECRET&a=1#access_token=X&t=1"),
            "https://****@h/p?****&a=****#****"
        );
        assert_eq!(mask_url("https://h/p?#"), "https://h/p?#");
    }

    #[test]
    fn stream_key_is_masked() {
        assert_eq!(
            mask_stream_url("rtmp://live.twitch.tv/app/live_123_abc"),
            "rtmp://live.twitch.tv/app/****"
        );
        assert_eq!(
            mask_stream_url("rtmps://u:p@host:1935/app/key?token=x"),
            "rtmps://****:****@host:1935/app/****?****"
        );
        assert_eq!(mask_stream_url("rtmp://host/app"), "rtmp://host/app");
        assert_eq!(mask_stream_url("not a url key"), "****");
        let url = StreamUrl::new("rtmp://host/app/key123");
        assert_eq!(
            format!("{url} {url:?}"),
            "rtmp://host/app/**** StreamUrl(rtmp://host/app/****)"
        );
        assert_eq!(url.expose(), "rtmp://host/app/key123");
    }
}
