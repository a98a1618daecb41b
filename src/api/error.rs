//! Errors of the public and driver APIs, as the contract spells them:
//! `{"error": "<code>", "message": "<human sentence>", "code": <HTTP status>}`.

use actix_web::error::JsonPayloadError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Send your API key in the X-Granite-API-Key header.")]
    MissingApiKey,
    #[error("The API key is malformed: it is not a gk_live_ key with a valid checksum.")]
    MalformedApiKey,
    #[error("The API key is not valid.")]
    InvalidApiKey,
    #[error("The API key has been revoked.")]
    RevokedApiKey,
    #[error(
        "The API key has expired: it was rolled and its grace period is over. Use its replacement."
    )]
    ExpiredApiKey,
    #[error("Not found.")]
    NotFound,
    #[error("The enrollment token is malformed: it is not an enroll_ token with a valid checksum.")]
    MalformedToken,
    #[error("The enrollment token is not valid.")]
    InvalidToken,
    #[error("The enrollment token has already been used. Ask an admin for a new one.")]
    TokenUsed,
    #[error("The enrollment token has expired. Ask an admin for a new one.")]
    TokenExpired,
    #[error("The enrollment token has been revoked. Ask an admin for a new one.")]
    TokenRevoked,
    #[error("Send the machine credential as Authorization: Bearer gd_….")]
    MissingCredential,
    #[error(
        "The machine credential is malformed: it is not a gd_ credential with a valid checksum."
    )]
    MalformedCredential,
    #[error("The machine credential is not valid.")]
    InvalidCredential,
    #[error(
        "This machine was removed by an admin. Enroll it again with a new token to bring it back."
    )]
    MachineRemoved,
    #[error("The run has already finished.")]
    RunFinished,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("The request body is larger than 1 MiB.")]
    PayloadTooLarge,
    #[error("Send the body as JSON (Content-Type: application/json).")]
    UnsupportedMediaType,
    #[error("The service is unavailable. Try again in a moment.")]
    Unavailable(#[from] DbError),
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Unavailable(DbError::Query(e))
    }
}

impl From<crate::runs::RunError> for ApiError {
    fn from(e: crate::runs::RunError) -> Self {
        match e {
            crate::runs::RunError::NotFound => Self::NotFound,
            crate::runs::RunError::AlreadyFinished => Self::RunFinished,
            crate::runs::RunError::Query(e) => e.into(),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingApiKey => "missing_api_key",
            Self::MalformedApiKey => "malformed_api_key",
            Self::InvalidApiKey => "invalid_api_key",
            Self::RevokedApiKey => "revoked_api_key",
            Self::ExpiredApiKey => "expired_api_key",
            Self::NotFound => "not_found",
            Self::MalformedToken => "malformed_token",
            Self::InvalidToken => "invalid_token",
            Self::TokenUsed => "token_used",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::MissingCredential => "missing_credential",
            Self::MalformedCredential => "malformed_credential",
            Self::InvalidCredential => "invalid_credential",
            Self::MachineRemoved => "machine_removed",
            Self::RunFinished => "run_finished",
            Self::InvalidRequest(_) => "invalid_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingApiKey
            | Self::MalformedApiKey
            | Self::InvalidApiKey
            | Self::RevokedApiKey
            | Self::ExpiredApiKey
            | Self::MalformedToken
            | Self::InvalidToken
            | Self::MissingCredential
            | Self::MalformedCredential
            | Self::InvalidCredential
            | Self::MachineRemoved => StatusCode::UNAUTHORIZED,
            Self::TokenUsed | Self::TokenExpired | Self::TokenRevoked => StatusCode::GONE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::RunFinished => StatusCode::CONFLICT,
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let Self::Unavailable(error) = self {
            tracing::error!(%error, "API request failed");
        }
        HttpResponse::build(status).json(serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
            "code": status.as_u16(),
        }))
    }
}

/// Bodies that do not parse: too large, not JSON, or not the shape the endpoint expects. The parser's
/// own message is only passed on where it cannot echo the body back (it could hold a secret).
pub fn from_json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) => {
            let message = e.to_string();
            if message.starts_with("missing field") || message.starts_with("unknown field") {
                let field = message.split(" at line").next().unwrap_or(&message);
                ApiError::InvalidRequest(format!("The body is not valid: {field}."))
            } else {
                ApiError::InvalidRequest(format!(
                    "The body is not the JSON this endpoint expects (line {}, column {}).",
                    e.line(),
                    e.column()
                ))
            }
        }
        _ => ApiError::InvalidRequest("The body could not be read.".into()),
    }
}

/// Unknown routes under `/api/` answer in JSON too.
pub async fn not_found() -> HttpResponse {
    ApiError::NotFound.error_response()
}
