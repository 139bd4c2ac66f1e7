//! Who may call the Egress API: LiveKit access tokens. A caller sends `Authorization: Bearer
//! <JWT>`, HS256-signed with the secret of one of the API keys this service is given (`iss` is
//! the key), not expired, carrying the `roomRecord` video grant (what LiveKit's SDKs put in the
//! tokens of their egress clients). The keys come from `--keys FILE` (LiveKit's `key: secret`
//! lines) or `LIVEKIT_API_KEY` / `LIVEKIT_API_SECRET`, never from the command line.

use std::collections::HashMap;
use std::path::Path;

use pagecast_actors::secret::Secret;

use super::twirp::{Code, TwirpError};

/// The variables holding one key pair.
pub const KEY_VAR: &str = "LIVEKIT_API_KEY";
pub const SECRET_VAR: &str = "LIVEKIT_API_SECRET";

/// The API keys and their secrets; the first one (of the file, or the environment's) signs
/// the webhooks.
#[derive(Clone)]
pub struct ApiKeys(HashMap<String, Secret>, String);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<_> = self.0.keys().collect();
        keys.sort();
        write!(f, "ApiKeys({keys:?})")
    }
}

impl ApiKeys {
    /// From a keys file (`key: secret` per line; `#` comments and blank lines skipped), else
    /// from the key pair of the environment (`from_env`: key, secret). None of them: an error
    /// naming both ways.
    pub fn load(file: Option<&Path>, from_env: Option<(String, Secret)>) -> Result<Self, String> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--keys: cannot read {}: {e}", path.display()))?;
            return Self::parse(&text).map_err(|e| format!("--keys: {}: {e}", path.display()));
        }
        match from_env {
            Some((key, secret)) if !key.is_empty() && !secret.is_empty() => {
                Ok(Self(HashMap::from([(key.clone(), secret)]), key))
            }
            _ => Err(format!(
                "--http: the API needs its keys: --keys FILE (LiveKit's `key: secret` lines) or \
                 {KEY_VAR} and {SECRET_VAR}"
            )),
        }
    }

    /// LiveKit's keys file: one `key: secret` per line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = HashMap::new();
        let mut first = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The secret is never echoed: only the line number.
            let (key, secret) = line
                .split_once(':')
                .map(|(k, s)| (k.trim(), s.trim().trim_matches(|c| c == '"' || c == '\'')))
                .filter(|(k, s)| !k.is_empty() && !s.is_empty())
                .ok_or_else(|| format!("line {}: not `key: secret`", n + 1))?;
            first.get_or_insert_with(|| key.to_owned());
            keys.insert(key.to_owned(), Secret::new(secret));
        }
        match first {
            Some(first) => Ok(Self(keys, first)),
            None => Err("no `key: secret` line".into()),
        }
    }

    /// The key that signs webhooks, and its secret.
    pub fn signing(&self) -> (&str, &Secret) {
        (&self.1, &self.0[&self.1])
    }

    /// The secret of the key `key`, if this service has it.
    pub fn secret_of(&self, key: &str) -> Option<&Secret> {
        self.0.get(key)
    }

    /// Checks the `Authorization` header: the token's key (`iss`), signature and time, then the
    /// `roomRecord` grant. The caller's API key; the errors say which check failed, never the
    /// token.
    pub fn authorize(&self, header: Option<&str>) -> Result<String, TwirpError> {
        let unauthenticated = |why: &str| TwirpError::new(Code::Unauthenticated, why);
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthenticated("no access token (Authorization: Bearer <token>)"))?;
        let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode(token)
            .map_err(|_| unauthenticated("the access token is not a JWT"))?
            .claims;
        let key = claims["iss"].as_str().unwrap_or_default();
        let secret = self
            .0
            .get(key)
            .ok_or_else(|| unauthenticated("the access token's API key (iss) is not known here"))?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.set_issuer(&[key]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        let verified = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes()),
            &validation,
        );
        let claims = match verified {
            Ok(data) => data.claims,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                return Err(unauthenticated(match e.kind() {
                    ErrorKind::ExpiredSignature => "the access token has expired",
                    ErrorKind::ImmatureSignature => "the access token is not valid yet (nbf)",
                    ErrorKind::InvalidSignature => {
                        "the access token's signature does not match its API key's secret"
                    }
                    _ => "the access token is invalid",
                }));
            }
        };
        if claims["video"]["roomRecord"].as_bool() != Some(true) {
            return Err(TwirpError::new(
                Code::PermissionDenied,
                "the access token lacks the roomRecord grant",
            ));
        }
        Ok(key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(secret: &str, exp_in: i64, video: serde_json::Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = serde_json::json!({
            "iss": "APIkey", "sub": "backend", "nbf": now - 10, "exp": now + exp_in, "video": video,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn only_a_live_token_signed_with_a_known_key_and_granting_room_record_passes() {
        let keys = ApiKeys::parse("# keys\nAPIkey: s3cr3t-of-the-key\nother: x\n").unwrap();
        let grant = serde_json::json!({ "roomRecord": true });
        let bearer = |t: String| format!("Bearer {t}");
        assert_eq!(
            keys.authorize(Some(&bearer(token("s3cr3t-of-the-key", 60, grant.clone())))),
            Ok("APIkey".to_owned())
        );
        let code = |h: Option<&str>| keys.authorize(h).unwrap_err().code;
        assert_eq!(code(None), Code::Unauthenticated);
        assert_eq!(code(Some("Bearer nonsense")), Code::Unauthenticated);
        let wrong = bearer(token("not-the-secret", 60, grant.clone()));
        assert_eq!(code(Some(&wrong)), Code::Unauthenticated);
        let expired = bearer(token("s3cr3t-of-the-key", -60, grant));
        assert_eq!(code(Some(&expired)), Code::Unauthenticated);
        let join_only = bearer(token(
            "s3cr3t-of-the-key",
            60,
            serde_json::json!({ "roomJoin": true }),
        ));
        assert_eq!(code(Some(&join_only)), Code::PermissionDenied);
    }

    #[test]
    fn a_keys_file_line_that_is_not_key_secret_is_refused_without_echoing_it() {
        let e = ApiKeys::parse("APIkey s3cr3t").unwrap_err();
        assert_eq!(e, "line 1: not `key: secret`");
        assert!(ApiKeys::load(None, None).unwrap_err().contains(KEY_VAR));
    }
}
