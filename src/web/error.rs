//! Errors of the dashboard, mapped to responses in one place. Messages are written for the admin reading
//! them; internal details go to the log only.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "This request was refused because it did not come from this page. Reload the page and try again."
    )]
    CsrfRejected,
    #[error("Only admins can do this.")]
    AdminOnly,
    #[error("Viewers see everything but change nothing. Ask an admin for the member role.")]
    ViewerOnly,
    /// Refused for this object: members change only what they created.
    #[error("{0}")]
    NotYours(String),
    #[error("Not found.")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("The form took too long to arrive. Try again.")]
    RequestTimeout,
    #[error("Too many requests from your address at once. Try again in a moment.")]
    TooManyAtOnce,
    #[error("The database is unavailable. Try again in a moment.")]
    Database(#[from] DbError),
    #[error("Something went wrong on our side. Try again in a moment.")]
    Internal(#[from] anyhow::Error),
}

impl From<diesel::result::Error> for WebError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Database(DbError::Query(e))
    }
}

impl From<crate::ops::in_flight::TooMany> for WebError {
    fn from(_: crate::ops::in_flight::TooMany) -> Self {
        Self::TooManyAtOnce
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(anyhow::anyhow!("template failed: {e}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: String,
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::CsrfRejected | Self::AdminOnly | Self::ViewerOnly | Self::NotYours(_) => {
                StatusCode::FORBIDDEN
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyAtOnce => StatusCode::TOO_MANY_REQUESTS,
            Self::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = ?self, "dashboard request failed");
        }
        let page = ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message: self.to_string(),
        };
        // A page rendered for a full navigation; htmx requests show the same text in the page's notice
        // area (static/app.js), so the markup stays small.
        let body = page.render().unwrap_or_else(|_| self.to_string());
        let mut response = HttpResponse::build(status);
        if let Self::TooManyAtOnce = self {
            response.insert_header((header::RETRY_AFTER, 1));
        }
        response.content_type(ContentType::html()).body(body)
    }
}
