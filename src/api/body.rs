//! Reading requests of both APIs into their wire types: JSON bodies of at most 1 MiB (an empty body
//! reading as `{}`) and query strings. What does not fit its type is refused before any handler runs,
//! with the field named, so nothing is written.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::ops::in_flight::{InFlight, Slot as InFlightSlot};
use crate::text;

/// Request bodies: JSON only, at most 1 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest a body may take to arrive (a slow or stalled client is answered 408 and let go).
pub const BODY_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// A JSON body read into `T`.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move { read_json(&req, payload).await.map(Json) })
    }
}

/// A place among the requests one client may have in flight ([`crate::ops::in_flight`]), taken
/// before the body is read: put it first among a handler's arguments. Refused with 429 `rate_limited`.
pub struct ClientSlot {
    _held: Option<InFlightSlot>,
}

impl FromRequest for ClientSlot {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let owner = req
            .app_data::<actix_web::web::Data<InFlight>>()
            .expect("InFlight registered");
        std::future::ready(
            InFlight::enter(owner, req)
                .map(|held| Self { _held: held })
                .map_err(ApiError::from),
        )
    }
}

/// The `{run_id}` of a path, refused (400, the field named) when it holds text no run id can.
pub struct RunIdPath(pub String);

impl FromRequest for RunIdPath {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req.match_info().get("run_id").unwrap_or_default();
        std::future::ready(if text::storable(id) {
            Ok(Self(id.to_owned()))
        } else {
            Err(ApiError::invalid_field(
                "run_id",
                text::nul_refused("run_id"),
            ))
        })
    }
}

/// Reads the body into `T`. Handlers that must authenticate first (a key is checked in the database)
/// take the raw payload and call this afterwards, so an unauthenticated caller's body is never read.
pub async fn read_json<T, S>(req: &HttpRequest, mut payload: S) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let mut body = BytesMut::new();
    let deadline = tokio::time::Instant::now() + BODY_WITHIN;
    loop {
        let next = tokio::time::timeout_at(deadline, payload.next())
            .await
            .map_err(|_| ApiError::BodyTimeout)?;
        let Some(chunk) = next else { break };
        let chunk =
            chunk.map_err(|_| ApiError::InvalidRequest("The body could not be read.".into()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return parse_json(b"{}");
    }
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    parse_json(&body)
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
}

/// JSON text into `T`, or the error that names what was wrong. Every body of both APIs is a JSON
/// object (serde would also read a struct from an array).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidRequest(
            "The body must be a JSON object.".into(),
        ));
    }
    // Syntax first, then shape: serde reports a wrong type for an enum as a syntax error.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
        ApiError::InvalidRequest(format!(
            "The body is not valid JSON (line {}, column {}).",
            error.line(),
            error.column()
        ))
    })?;
    if let Some(field) = text::first_unstorable(&value) {
        return Err(ApiError::InvalidField {
            message: text::nul_refused(&field),
            field,
        });
    }
    serde_path_to_error::deserialize(value).map_err(ApiError::from_deserialize)
}

/// A query string read into `T`.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    if let Some((field, _)) = form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| !text::storable(name) || !text::storable(value))
    {
        let field = if text::storable(&field) {
            field.into_owned()
        } else {
            "query".into()
        };
        return Err(ApiError::InvalidField {
            message: text::nul_refused(&field),
            field,
        });
    }
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(ApiError::from_deserialize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::driver::{ClaimRequest, CompleteRequest, HeartbeatRequest};
    use crate::wire::public::StartRunQuery;

    fn field_of(error: ApiError) -> Option<String> {
        match error {
            ApiError::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    #[test]
    fn bad_bodies_name_their_field_and_never_echo_it() {
        let wrong_type = parse_json::<ClaimRequest>(br#"{"wait_seconds": "soon"}"#).unwrap_err();
        assert_eq!(field_of(wrong_type).as_deref(), Some("wait_seconds"));

        let missing = parse_json::<HeartbeatRequest>(b"{}").unwrap_err();
        assert_eq!(field_of(missing).as_deref(), Some("status"));

        let secret = "gk_live_0123456789abcdefghijABCDEFGHIJ012345";
        let echoed =
            parse_json::<HeartbeatRequest>(format!(r#"{{"status": "{secret}"}}"#).as_bytes())
                .unwrap_err();
        assert!(!echoed.to_string().contains(secret), "{echoed}");
        assert_eq!(field_of(echoed).as_deref(), Some("status"));

        let nested = parse_json::<CompleteRequest>(
            br#"{"status": "failed", "error": {"type": 5, "message": "x"}}"#,
        )
        .unwrap_err();
        assert_eq!(field_of(nested).as_deref(), Some("error.type"));

        let huge = parse_json::<ClaimRequest>(br#"{"wait_seconds": 1e400}"#).unwrap_err();
        assert!(matches!(
            huge,
            ApiError::InvalidRequest(_) | ApiError::InvalidField { .. }
        ));

        assert!(matches!(
            parse_json::<ClaimRequest>(b"{\"wait_seconds\": 1"),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse_json::<ClaimRequest>(b"[]"),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse_json::<ClaimRequest>(b"{} {}"),
            Err(ApiError::InvalidRequest(_))
        ));
        assert_eq!(
            parse_json::<ClaimRequest>(b"{\"wait_seconds\": 3, \"later\": 1}").unwrap(),
            ClaimRequest {
                wait_seconds: Some(3)
            },
            "unknown fields are ignored"
        );
    }

    #[test]
    fn queries_name_their_field() {
        let query: StartRunQuery = parse_query("priority=5&wait=true").unwrap();
        assert_eq!(query.priority, Some(5));
        assert_eq!(query.wait, Some(true));
        let error = parse_query::<StartRunQuery>("priority=high").unwrap_err();
        assert_eq!(field_of(error).as_deref(), Some("priority"));
        let error = parse_query::<StartRunQuery>("priority=99999999999999").unwrap_err();
        assert_eq!(field_of(error).as_deref(), Some("priority"));
    }
}
