//! LiveKit rooms: the recorder's access token, the layout page's address, and what is checked
//! before anything starts (the server answers, it accepts the token, the room exists).
//!
//! Secrets: the API secret only signs; tokens are [`Secret`]s; the LiveKit server echoes a token
//! it rejects, so its answers are cleaned before they reach an error message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use pagecast_actors::secret::Secret;
use serde::Serialize;

use crate::config::{Focus, Template, TemplateAuth, Tracks};

/// How long a generated token is valid at least. The page joins at once; the server refreshes the
/// token of a connected participant by itself, but a browser restarted late in a long recording
/// joins again with this one.
const MIN_TOKEN_VALIDITY: Duration = Duration::from_secs(6 * 3600);
/// Each pre-flight request.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// The JWT claims LiveKit reads. Every permission is written out, false ones included, so the
/// token says exactly what the recorder may do whatever the server's defaults are.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    name: &'a str,
    nbf: u64,
    exp: u64,
    video: VideoGrant<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VideoGrant<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    room_join: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_list: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    can_subscribe: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    can_publish: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    can_publish_data: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hidden: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorder: Option<bool>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sign(claims: &Claims<'_>, api_secret: &Secret) -> Result<Secret, String> {
    let key = jsonwebtoken::EncodingKey::from_secret(api_secret.expose().as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key)
        .map(Secret::new)
        .map_err(|e| format!("cannot sign a LiveKit token: {e}"))
}

/// A token that lets the recorder join `room` hidden, subscribe to everything and publish
/// nothing. Valid from a minute ago (clock skew) for `valid_for` (at least 6 hours).
pub fn recorder_token(
    api_key: &str,
    api_secret: &Secret,
    room: &str,
    identity: &str,
    now: SystemTime,
    valid_for: Duration,
) -> Result<Secret, String> {
    signed_for(
        api_key,
        api_secret,
        room,
        identity,
        now,
        valid_for.max(MIN_TOKEN_VALIDITY),
    )
}

/// [`recorder_token`] valid for exactly `lifetime`.
fn signed_for(
    api_key: &str,
    api_secret: &Secret,
    room: &str,
    identity: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<Secret, String> {
    let now = unix(now);
    let claims = Claims {
        iss: api_key,
        sub: identity,
        name: "pagecast recorder",
        nbf: now.saturating_sub(60),
        exp: now + lifetime.as_secs(),
        video: VideoGrant {
            room_join: Some(true),
            room: Some(room),
            room_list: None,
            can_subscribe: Some(true),
            can_publish: Some(false),
            can_publish_data: Some(false),
            hidden: Some(true),
            recorder: Some(true),
        },
    };
    sign(&claims, api_secret)
}

/// A short-lived token for the server API's ListRooms, for the pre-flight only.
fn list_rooms_token(api_key: &str, api_secret: &Secret, now: SystemTime) -> Result<Secret, String> {
    let now = unix(now);
    let claims = Claims {
        iss: api_key,
        sub: "pagecast-preflight",
        name: "pagecast pre-flight",
        nbf: now.saturating_sub(60),
        exp: now + 300,
        video: VideoGrant {
            room_join: None,
            room: None,
            room_list: Some(true),
            can_subscribe: None,
            can_publish: None,
            can_publish_data: None,
            hidden: None,
            recorder: None,
        },
    };
    sign(&claims, api_secret)
}

/// The layout page's address: `<base>#/<layout>?url=<ws_url>&token=<token>&grace=<seconds>`,
/// and `&participant=<identity>` (`&screen_share=1`) for one participant, `&audio_track=<sid>`
/// and `&video_track=<sid>` for tracks; `&audio_only=1` when the recording keeps the sound alone
/// (the page then subscribes to no video).
pub fn page_url(base: &url::Url, template: &Template, tracks: Tracks, token: &Secret) -> url::Url {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("url", template.ws_url.as_str())
        .append_pair("token", token.expose())
        .append_pair(
            "grace",
            &format!("{}", template.empty_room_timeout.as_secs_f64()),
        );
    match &template.focus {
        None => {}
        Some(Focus::Participant {
            identity,
            screen_share,
        }) => {
            query.append_pair("participant", identity);
            if *screen_share {
                query.append_pair("screen_share", "1");
            }
        }
        Some(Focus::Tracks { audio, video }) => {
            for (name, sid) in [("audio_track", audio), ("video_track", video)] {
                if let Some(sid) = sid {
                    query.append_pair(name, sid);
                }
            }
        }
    }
    if tracks == Tracks::AudioOnly {
        query.append_pair("audio_only", "1");
    }
    let query = query.finish();
    let mut url = base.clone();
    url.set_fragment(Some(&format!("/{}?{query}", template.layout.as_str())));
    url
}

/// The token the page joins with: the one given, or one signed now from the API key and secret
/// (valid for `template.token_lifetime`, else `valid_for` and at least 6 h). Called at every
/// browser start, so a browser restarted late in a long recording joins with a fresh token.
pub fn token_for(
    template: &Template,
    identity: &str,
    valid_for: Duration,
) -> Result<Secret, String> {
    match &template.auth {
        TemplateAuth::Token(token) => Ok(token.clone()),
        TemplateAuth::ApiKey {
            api_key,
            api_secret,
            room_name,
        } => signed_for(
            api_key,
            api_secret,
            room_name,
            identity,
            SystemTime::now(),
            template
                .token_lifetime
                .unwrap_or(valid_for.max(MIN_TOKEN_VALIDITY)),
        ),
    }
}

/// "the given token expired at <time>" if `token` (given in the config) has expired.
pub fn expired(token: &Secret) -> Option<String> {
    let at = token_expiry(token)?;
    (at <= SystemTime::now()).then(|| {
        format!(
            "input.template.token expired at {}",
            humantime::format_rfc3339_seconds(at)
        )
    })
}

/// The claims of a token, read without checking its signature (pagecast cannot: only the server
/// holds the secret of a given token). None if it is not a JWT.
pub fn token_claims(token: &Secret) -> Option<serde_json::Value> {
    jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token.expose())
        .ok()
        .map(|t| t.claims)
}

/// When a token expires, if it says.
pub fn token_expiry(token: &Secret) -> Option<SystemTime> {
    let exp = token_claims(token)?["exp"].as_u64()?;
    Some(UNIX_EPOCH + Duration::from_secs(exp))
}

/// `host:port` of the server, for messages.
pub fn server_name(ws_url: &url::Url) -> String {
    format!(
        "{}:{}",
        ws_url.host_str().unwrap_or_default(),
        ws_url.port_or_known_default().unwrap_or(0)
    )
}

/// The server's HTTP base for a ws(s):// or http(s):// URL.
fn http_base(ws_url: &url::Url) -> url::Url {
    let mut base = ws_url.clone();
    let scheme = match ws_url.scheme() {
        "ws" => "http",
        "wss" => "https",
        other => other,
    };
    // Only between special schemes, which always succeeds.
    let _ = base.set_scheme(scheme);
    base.set_query(None);
    base.set_fragment(None);
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base
}

/// The LiveKit server's text for a rejected token, without the token (it echoes it) and on one
/// line: "invalid token: <jwt>, error: token is expired" becomes "token is expired".
fn clean_reason(body: &str, token: &Secret) -> String {
    let body = body.replace(token.expose(), "****");
    let reason = match body.split_once(", error: ") {
        Some((_, why)) => why,
        None => body.as_str(),
    };
    let reason = reason.lines().next().unwrap_or_default().trim();
    // Any other JWT-shaped word (a token of another form) goes too.
    reason
        .split(' ')
        .map(|w| {
            if w.len() > 40 && w.matches('.').count() == 2 {
                "****"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

pub(crate) fn client() -> Result<Client, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("cannot load the system's TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// One request with a time limit: the status and the body (at most 64 KiB of it).
async fn request(
    client: &Client,
    req: hyper::Request<Full<Bytes>>,
    server: &str,
) -> Result<(hyper::StatusCode, String), String> {
    let call = async {
        let response = client.request(req).await.map_err(|e| {
            // The innermost cause ("Connection refused") says the most.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            format!("cannot reach the LiveKit server at {server}: {cause}")
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("the LiveKit server at {server} broke off its answer: {e}"))?
            .to_bytes();
        let body = String::from_utf8_lossy(&body[..body.len().min(65536)]).into_owned();
        Ok((status, body))
    };
    tokio::time::timeout(PREFLIGHT_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the LiveKit server at {server} did not answer within {}s",
                PREFLIGHT_TIMEOUT.as_secs()
            ))
        })
}

/// Before anything starts: the server answers, accepts `token` (its `/rtc/validate`), and, when
/// the recorder has the API key, the room exists: a room that does not exist yet is waited for
/// (asked again every second, `WAITING_FOR_ROOM` logged once) up to `wait_for_room`, as a
/// recorder started before the meeting must. Each error is one line naming the server and never
/// the token or secret.
pub async fn preflight(
    template: &Template,
    token: &Secret,
    wait_for_room: std::time::Duration,
) -> Result<(), String> {
    let server = server_name(&template.ws_url);
    let base = http_base(&template.ws_url);
    let client = client()?;

    let mut validate = base
        .join("rtc/validate")
        .map_err(|e| format!("input.template.ws_url: {e}"))?;
    validate
        .query_pairs_mut()
        .append_pair("access_token", token.expose());
    let req = hyper::Request::get(validate.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("cannot build a request to {server}: {e}"))?;
    let (status, body) = request(&client, req, &server).await?;
    match status.as_u16() {
        200 => {}
        401 | 403 => {
            return Err(format!(
                "the LiveKit server at {server} rejected the token: {}",
                clean_reason(&body, token)
            ))
        }
        404 => {
            return Err(format!(
                "{server} does not look like a LiveKit server (no /rtc/validate: HTTP 404)"
            ))
        }
        code => {
            return Err(format!(
            "the LiveKit server at {server} answered HTTP {code} when asked to check the token: {}",
            clean_reason(&body, token)
        ))
        }
    }

    let TemplateAuth::ApiKey {
        api_key,
        api_secret,
        room_name,
    } = &template.auth
    else {
        return Ok(()); // a given token can't list rooms
    };
    let list = base
        .join("twirp/livekit.RoomService/ListRooms")
        .map_err(|e| format!("input.template.ws_url: {e}"))?;
    let since = std::time::Instant::now();
    let mut backoff = pagecast_actors::backoff::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(1),
    );
    let mut said = false;
    loop {
        let admin = list_rooms_token(api_key, api_secret, SystemTime::now())?;
        let body = serde_json::json!({ "names": [room_name] }).to_string();
        let req = hyper::Request::post(list.as_str())
            .header("Authorization", format!("Bearer {}", admin.expose()))
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build a request to {server}: {e}"))?;
        let (status, body) = request(&client, req, &server).await?;
        if !status.is_success() {
            return Err(format!(
                "the LiveKit server at {server} refused to list rooms (HTTP {}): {}",
                status.as_u16(),
                clean_reason(&body, &admin)
            ));
        }
        let rooms: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let found = rooms["rooms"]
            .as_array()
            .is_some_and(|r| r.iter().any(|room| room["name"] == room_name.as_str()));
        if found {
            return Ok(());
        }
        if since.elapsed() >= wait_for_room {
            return Err(format!(
                "input.template.room_name: room {room_name:?} does not exist on the LiveKit server at {server} (waited {} s, input.start_timeout)",
                wait_for_room.as_secs()
            ));
        }
        if !said {
            said = true;
            tracing::info!(room = %room_name, server = %server, "{}", pagecast_actors::events::WAITING_FOR_ROOM);
        }
        backoff.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layout;
    use base64::Engine as _;

    fn claims(token: &Secret) -> serde_json::Value {
        let payload = token.expose().split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn the_recorder_token_grants_exactly_a_hidden_subscribe_only_join() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let token = recorder_token(
            "APIkey",
            &Secret::new("s3cr3t"),
            "standup",
            "pagecast-1",
            now,
            Duration::from_secs(60),
        )
        .unwrap();
        let c = claims(&token);
        assert_eq!(c["iss"], "APIkey");
        assert_eq!(c["sub"], "pagecast-1");
        assert_eq!(c["nbf"], 1_800_000_000 - 60);
        assert_eq!(c["exp"], 1_800_000_000 + 6 * 3600, "at least 6 hours");
        assert_eq!(
            c["video"],
            serde_json::json!({
                "roomJoin": true, "room": "standup", "canSubscribe": true,
                "canPublish": false, "canPublishData": false, "hidden": true, "recorder": true
            })
        );
        let header = token.expose().split('.').next().unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["alg"], "HS256");
        assert!(!token.expose().contains("s3cr3t"));
    }

    #[test]
    fn a_rejected_token_is_not_echoed() {
        let token =
            Secret::new("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ2aWRlbyI6e30.abcdefghijklmnop");
        let body = format!(
            "invalid token: {}, error: token signature is invalid: signature is invalid\n",
            token.expose()
        );
        assert_eq!(
            clean_reason(&body, &token),
            "token signature is invalid: signature is invalid"
        );
        let other = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJvdGhlciI6MX0.zzzzzzzzzzzzzzzzzzzz";
        assert_eq!(
            clean_reason(&format!("bad {other} here"), &token),
            "bad **** here"
        );
    }

    #[test]
    fn the_page_address_carries_url_token_and_grace_in_its_fragment() {
        let template = Template {
            layout: Layout::SpeakerLight,
            ws_url: url::Url::parse("wss://lk.example.com").unwrap(),
            auth: TemplateAuth::Token(Secret::new("x")),
            base_url: None,
            empty_room_timeout: Duration::from_millis(2500),
            token_lifetime: None,
            focus: None,
        };
        let base = url::Url::parse("http://127.0.0.1:4321/").unwrap();
        let url = page_url(&base, &template, Tracks::Both, &Secret::new("a.b.c"));
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:4321/#/speaker-light?url=wss%3A%2F%2Flk.example.com%2F&token=a.b.c&grace=2.5"
        );
        assert_eq!(
            pagecast_actors::secret::mask_url(url.as_str()),
            "http://127.0.0.1:4321/#/speaker-light?url=****&token=****&grace=****"
        );
    }

    #[test]
    fn the_page_address_names_the_one_participant_or_the_tracks() {
        let mut template = Template {
            layout: Layout::GridDark,
            ws_url: url::Url::parse("ws://127.0.0.1:7880").unwrap(),
            auth: TemplateAuth::Token(Secret::new("x")),
            base_url: None,
            empty_room_timeout: Duration::from_secs(5),
            token_lifetime: None,
            focus: Some(Focus::Participant {
                identity: "ana maría&co".into(),
                screen_share: false,
            }),
        };
        let base = url::Url::parse("http://127.0.0.1:4321/").unwrap();
        let fragment = |t: &Template| {
            page_url(&base, t, Tracks::Both, &Secret::new("a.b.c"))
                .fragment()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            fragment(&template),
            "/grid-dark?url=ws%3A%2F%2F127.0.0.1%3A7880%2F&token=a.b.c&grace=5&participant=ana+mar%C3%ADa%26co"
        );
        template.focus = Some(Focus::Participant {
            identity: "ana".into(),
            screen_share: true,
        });
        assert!(
            fragment(&template).ends_with("&grace=5&participant=ana&screen_share=1"),
            "{}",
            fragment(&template)
        );
        template.focus = Some(Focus::Tracks {
            audio: Some("TR_a".into()),
            video: None,
        });
        assert!(
            fragment(&template).ends_with("&grace=5&audio_track=TR_a"),
            "{}",
            fragment(&template)
        );
        // The sound alone: the page subscribes to no video.
        let base = url::Url::parse("http://127.0.0.1:4321/").unwrap();
        let url = page_url(&base, &template, Tracks::AudioOnly, &Secret::new("a.b.c"));
        assert!(
            url.fragment()
                .unwrap()
                .ends_with("&audio_track=TR_a&audio_only=1"),
            "{url}"
        );
    }

    #[test]
    fn http_base_follows_the_ws_scheme() {
        let b = |s: &str| http_base(&url::Url::parse(s).unwrap()).to_string();
        assert_eq!(b("ws://127.0.0.1:7880"), "http://127.0.0.1:7880/");
        assert_eq!(
            b("wss://lk.example.com/base"),
            "https://lk.example.com/base/"
        );
        assert_eq!(b("https://lk.example.com/"), "https://lk.example.com/");
    }
}
