//! Errors of the public and driver APIs, as the contract spells them:
//! `{"error": "<code>", "message": "<human sentence>", "code": <HTTP status>}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::db::DbError;
use crate::wire::ErrorBody;

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
    /// A request whose field `field` (of the body or the query) is missing or wrong.
    #[error("{message}")]
    InvalidField { field: String, message: String },
    #[error("The request body is larger than 1 MiB.")]
    PayloadTooLarge,
    #[error("This machine already has a claim waiting; wait for its answer before claiming again.")]
    ClaimInProgress,
    #[error("The request body did not arrive within 10 seconds.")]
    BodyTimeout,
    #[error("Too many requests from this address at once. Try again in a moment.")]
    TooManyAtOnce,
    #[error(
        "This API key has made {limit} requests this minute, its limit. Try again in {retry_after} seconds."
    )]
    RateLimited { limit: i64, retry_after: i64 },
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

impl From<crate::ops::in_flight::TooMany> for ApiError {
    fn from(_: crate::ops::in_flight::TooMany) -> Self {
        Self::TooManyAtOnce
    }
}

impl From<crate::machines::CredentialRejection> for ApiError {
    fn from(rejection: crate::machines::CredentialRejection) -> Self {
        match rejection {
            crate::machines::CredentialRejection::Unknown => Self::InvalidCredential,
            crate::machines::CredentialRejection::Removed => Self::MachineRemoved,
        }
    }
}

impl From<crate::runs::RunError> for ApiError {
    fn from(e: crate::runs::RunError) -> Self {
        match e {
            crate::runs::RunError::NotFound => Self::NotFound,
            crate::runs::RunError::AlreadyFinished => Self::RunFinished,
            crate::runs::RunError::NotRetryable => Self::InvalidRequest(e.to_string()),
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
            Self::InvalidRequest(_) | Self::InvalidField { .. } => "invalid_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ClaimInProgress => "claim_in_progress",
            Self::BodyTimeout => "request_timeout",
            Self::TooManyAtOnce | Self::RateLimited { .. } => "rate_limited",
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
            Self::RunFinished | Self::ClaimInProgress => StatusCode::CONFLICT,
            Self::InvalidRequest(_) | Self::InvalidField { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyAtOnce | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let Self::Unavailable(error) = self {
            tracing::error!(%error, "API request failed");
        }
        let mut response = HttpResponse::build(status);
        match self {
            Self::TooManyAtOnce => {
                response.insert_header((actix_web::http::header::RETRY_AFTER, 1));
            }
            Self::RateLimited { retry_after, .. } => {
                response.insert_header((actix_web::http::header::RETRY_AFTER, *retry_after));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
            code: status.as_u16(),
            field: match self {
                Self::InvalidField { field, .. } => Some(field.clone()),
                _ => None,
            },
        })
    }
}

impl ApiError {
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// A body or query that did not deserialize into its wire type, naming the field where it went
    /// wrong. The parser's own words are only passed on where they cannot echo the request back (a
    /// value could be a secret): what was expected, never what was found.
    pub fn from_deserialize(error: serde_path_to_error::Error<impl std::fmt::Display>) -> Self {
        let path = error.path().to_string();
        let inner = error.inner().to_string();
        let inner = inner.split(" at line ").next().unwrap_or(&inner);
        let at = |name: &str| match path.as_str() {
            "." | "" => name.to_owned(),
            parent => format!("{parent}.{name}"),
        };
        if let Some(name) = between(inner, "missing field `", "`") {
            let field = at(name);
            return Self::InvalidField {
                message: format!("{field} is required."),
                field,
            };
        }
        // The last ", expected": whatever stands before it may quote the caller's value.
        let expected = inner.rsplit_once(", expected ").map(|(_, e)| e);
        match (path.as_str(), expected) {
            ("." | "", _) => Self::InvalidRequest(match expected {
                Some(expected) => format!("The body must be {expected}."),
                None => "The body is not valid JSON.".into(),
            }),
            (field, Some(expected)) => Self::InvalidField {
                message: format!("{field}: expected {expected}."),
                field: field.to_owned(),
            },
            (field, None) => Self::InvalidField {
                message: format!("{field} is not valid."),
                field: field.to_owned(),
            },
        }
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(start)?;
    rest.split_once(end).map(|(inside, _)| inside)
}

/// Unknown routes under `/api/` answer in JSON too.
pub async fn not_found() -> HttpResponse {
    ApiError::NotFound.error_response()
}
