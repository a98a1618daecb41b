//! What every full page shares: the CSRF token htmx sends, the asset URLs, the signed-in user.

use actix_web::HttpResponse;
use actix_web::http::header::ContentType;
use askama::Template;

use crate::ops::assets::{AssetUrls, URLS};
use crate::web::error::WebError;

pub struct Layout {
    pub title: String,
    pub csrf_token: String,
    pub assets: &'static AssetUrls,
    /// What the action that led here did, announced once the page has loaded.
    pub flash: Option<String>,
}

impl Layout {
    pub fn new(title: impl Into<String>, csrf_token: String) -> Self {
        Self {
            title: title.into(),
            csrf_token,
            assets: &URLS,
            flash: None,
        }
    }

    /// The page with the session's flash message, if an action left one.
    pub fn with_flash(
        mut self,
        session: &crate::web::middleware::session::DashboardSession,
    ) -> Self {
        self.flash = session.take_flash();
        self
    }

    /// The value of `hx-headers` on `<body>`: every htmx request carries the CSRF token.
    pub fn hx_headers(&self) -> String {
        serde_json::json!({ crate::web::middleware::csrf::HEADER: self.csrf_token }).to_string()
    }
}

/// A secret just created, for its one showing (`templates/fragments/new_secret.html`).
pub struct NewSecret {
    /// Unique on the page, for the copy button.
    pub element_id: &'static str,
    /// What it is, for its copy button ("Copy key").
    pub label: &'static str,
    pub secret: String,
    pub note: String,
    /// A command that uses the secret, shown (and copyable) beside it.
    pub command: Option<String>,
}

/// Renders a page or fragment template as an HTML response.
pub fn render(template: &impl Template) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(template.render()?))
}

/// Same, with another status (a form shown again with its error).
pub fn render_with_status(
    status: actix_web::http::StatusCode,
    template: &impl Template,
) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::build(status)
        .content_type(ContentType::html())
        .body(template.render()?))
}
