//! CSRF protection for every state-changing dashboard request: the request must come from our own origin
//! (`Origin`, or `Referer` when a browser sends no `Origin`) and carry the session's token, in the
//! `X-CSRF-Token` header (htmx adds it from `hx-headers` on `<body>`) or the `csrf_token` form field.
//! It also reads the body of every change, within 10 seconds and 64 KiB.

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;

pub const HEADER: &str = "X-CSRF-Token";
pub const FORM_FIELD: &str = "csrf_token";
const MAX_FORM_BYTES: usize = 64 * 1024;
/// The longest a form's body may take to arrive, as for the APIs' bodies.
const BODY_WITHIN: std::time::Duration = crate::api::body::BODY_WITHIN;

pub async fn protect(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if is_safe(req.method()) {
        return next.call(req).await;
    }
    if !same_origin(&req) {
        tracing::warn!(
            path = req.path(),
            "refused a cross-origin dashboard request"
        );
        return Err(WebError::CsrfRejected.into());
    }
    // The body is read here, within a deadline and a size limit, for every change: whatever reads
    // it later (the form extractors) reads it from memory, so a stalled body is let go in time.
    let body = read_body(req.take_payload()).await?;
    let expected = DashboardSession::of(&req).csrf_token();
    let presented = match req.headers().get(HEADER).and_then(|v| v.to_str().ok()) {
        Some(token) => Some(token.to_owned()),
        None if is_form(&req) => form_token(&body),
        None => None,
    };
    req.set_payload(Payload::from(body));
    match (expected, presented) {
        (Some(expected), Some(presented))
            if constant_time_eq(expected.as_bytes(), presented.as_bytes()) =>
        {
            next.call(req).await
        }
        _ => {
            tracing::warn!(
                path = req.path(),
                "refused a dashboard request without a valid CSRF token"
            );
            Err(WebError::CsrfRejected.into())
        }
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn same_origin(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    let source = headers
        .get(header::ORIGIN)
        .filter(|v| v.as_bytes() != b"null")
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source else { return false };
    let authority = source
        .strip_prefix("https://")
        .or_else(|| source.strip_prefix("http://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    let host = req.connection_info().host().to_owned();
    authority.is_some_and(|a| a.eq_ignore_ascii_case(&host))
}

fn is_form(req: &ServiceRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
}

async fn read_body(mut payload: Payload) -> Result<Bytes, actix_web::Error> {
    let mut body = BytesMut::new();
    let deadline = tokio::time::Instant::now() + BODY_WITHIN;
    loop {
        let next = tokio::time::timeout_at(deadline, payload.next())
            .await
            .map_err(|_| WebError::RequestTimeout)?;
        let Some(chunk) = next else { break };
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_FORM_BYTES {
            return Err(WebError::BadRequest("The form is too large.".into()).into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn form_token(body: &[u8]) -> Option<String> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    fields
        .into_iter()
        .find(|(name, _)| name == FORM_FIELD)
        .map(|(_, value)| value)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_token_among_form_fields() {
        assert_eq!(
            form_token(b"email=a%40b.c&csrf_token=abc123&password=x").as_deref(),
            Some("abc123")
        );
        assert_eq!(form_token(b"email=a%40b.c"), None);
    }

    #[test]
    fn compares_tokens_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
