//! Reading request bodies of the public API: JSON only, at most 1 MiB, an empty body meaning `{}`.

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web::{BytesMut, Payload};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::MAX_BODY_BYTES;
use super::error::{ApiError, from_json_error};

/// The body as JSON; an empty body reads as `{}`.
pub async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: Payload,
) -> Result<T, ApiError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::InvalidRequest("The body could not be read.".into()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_value(Value::Object(Default::default()))
            .map_err(|e| from_json_error(actix_web::error::JsonPayloadError::Deserialize(e)));
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(&body)
        .map_err(|e| from_json_error(actix_web::error::JsonPayloadError::Deserialize(e)))
}
