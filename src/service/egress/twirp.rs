//! Twirp, the wire protocol of LiveKit's server APIs: a method is a `POST` to
//! `/twirp/livekit.Egress/<Method>` whose body is the request message in `application/protobuf`
//! (what the SDKs send) or `application/json` (protobuf's JSON mapping, what `curl` users send);
//! the answer is the response message in the same encoding, or a Twirp error: JSON
//! `{"code", "msg", "meta"}` with the HTTP status Twirp gives that code.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The path prefix of the Egress service.
pub const PREFIX: &str = "/twirp/livekit.Egress/";

/// Twirp's error codes (the ones this service answers with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    Malformed,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    BadRoute,
    FailedPrecondition,
    Unimplemented,
    ResourceExhausted,
    Internal,
    Unavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::Malformed => "malformed",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::NotFound => "not_found",
            Code::BadRoute => "bad_route",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        }
    }

    /// The HTTP status Twirp's specification gives the code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::Malformed => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound | Code::BadRoute => StatusCode::NOT_FOUND,
            Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A Twirp error: a code and one line for the caller (naming the field when a request is
/// refused; never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {msg}", code.as_str())]
pub struct TwirpError {
    pub code: Code,
    pub msg: String,
}

impl TwirpError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }
    pub fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(Code::InvalidArgument, format!("{field}: {why}"))
    }
    pub fn unimplemented(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(Code::Unimplemented, format!("{field}: {why}"))
    }
    pub fn internal(why: impl std::fmt::Display) -> Self {
        Self::new(Code::Internal, why.to_string())
    }

    pub fn response(&self) -> HttpResponse {
        let mut body = serde_json::json!({ "code": self.code.as_str(), "msg": self.msg });
        if let Some(field) = self.field() {
            body["meta"] = serde_json::json!({ "argument": field });
        }
        HttpResponse::build(self.code.status())
            .content_type("application/json")
            .body(body.to_string())
    }

    /// The field a refused argument names (the text before the first ": ").
    fn field(&self) -> Option<&str> {
        matches!(self.code, Code::InvalidArgument | Code::Unimplemented)
            .then(|| self.msg.split_once(": ").map(|(f, _)| f))
            .flatten()
            .filter(|f| !f.contains(' '))
    }
}

/// How a request's body is encoded (and so its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From the `Content-Type` header (parameters such as `; charset=utf-8` ignored).
    pub fn of(content_type: Option<&str>) -> Result<Encoding, TwirpError> {
        let ct = content_type.unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        match mime {
            "application/protobuf" | "application/x-protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(TwirpError::new(
                Code::BadRoute,
                format!("unexpected Content-Type {ct:?}: application/protobuf or application/json"),
            )),
        }
    }

    pub fn decode<M>(self, body: &[u8]) -> Result<M, TwirpError>
    where
        M: prost::Message + Default + DeserializeOwned,
    {
        match self {
            Encoding::Protobuf => M::decode(body).map_err(|e| {
                TwirpError::new(Code::Malformed, format!("the body is not the request: {e}"))
            }),
            Encoding::Json if body.iter().all(u8::is_ascii_whitespace) => Ok(M::default()),
            Encoding::Json => serde_json::from_slice(body).map_err(|e| {
                TwirpError::new(Code::Malformed, format!("the body is not the request: {e}"))
            }),
        }
    }

    pub fn encode<M>(self, message: &M) -> HttpResponse
    where
        M: prost::Message + Serialize,
    {
        match self {
            Encoding::Protobuf => HttpResponse::Ok()
                .content_type("application/protobuf")
                .body(message.encode_to_vec()),
            Encoding::Json => match serde_json::to_vec(message) {
                Ok(body) => HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body),
                Err(e) => TwirpError::internal(format!("cannot encode the answer: {e}")).response(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol::StopEgressRequest;

    #[test]
    fn both_encodings_of_a_request_are_read_and_anything_else_is_a_bad_route() {
        let req = StopEgressRequest {
            egress_id: "EG_abc".into(),
        };
        let pb = prost::Message::encode_to_vec(&req);
        let enc = Encoding::of(Some("application/protobuf")).unwrap();
        assert_eq!(enc.decode::<StopEgressRequest>(&pb).unwrap(), req);
        let enc = Encoding::of(Some("application/json; charset=utf-8")).unwrap();
        // protobuf's JSON mapping: both the proto and the camelCase names.
        for body in [r#"{"egress_id":"EG_abc"}"#, r#"{"egressId":"EG_abc"}"#] {
            assert_eq!(
                enc.decode::<StopEgressRequest>(body.as_bytes()).unwrap(),
                req
            );
        }
        assert_eq!(
            enc.decode::<StopEgressRequest>(b"{").unwrap_err().code,
            Code::Malformed
        );
        assert_eq!(
            Encoding::of(Some("text/plain")).unwrap_err().code,
            Code::BadRoute
        );
    }

    #[test]
    fn an_error_carries_twirp_s_status_and_the_field_it_names() {
        let e = TwirpError::unimplemented("segment_outputs", "HLS segments are not recorded");
        assert_eq!(e.code.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(e.field(), Some("segment_outputs"));
        let e = TwirpError::new(Code::Unauthenticated, "no token");
        assert_eq!(e.code.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.field(), None);
    }
}
