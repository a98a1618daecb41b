//! `X-Granite-API-Key` authentication for every public route: checksum first (no database work for a
//! malformed key), then the key remembered by its hash ([`VerifiedKeys`]), else one indexed lookup.
//! Usage is tallied in memory, never written per call, once the answer is known ([`count_usage`]): a
//! call answered 2xx/3xx counts as successful, any error answer (404, 415, …) as refused.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::error::ApiError;
use crate::api_keys::cache::VerifiedKeys;
use crate::api_keys::rate_limit::{self, Allowance, RateLimiter};
use crate::api_keys::usage::{Outcome, UsageRecorder};
use crate::api_keys::{self, AuthenticatedKey, Rejection};
use crate::config::Settings;
use crate::db::Pool;
use crate::secret::{Secret, SecretKind};

pub const HEADER: &str = "X-Granite-API-Key";

/// The caller of a public API route: a live key and its organization.
pub struct ApiCaller(pub AuthenticatedKey);

/// Put on the request by [`ApiCaller`] once the key checks out; [`count_usage`] tallies it with the
/// answer's status.
struct KeyUse {
    key_id: i64,
    at: chrono::NaiveDateTime,
    ip: Option<String>,
    user_agent: Option<String>,
    /// Refused for being over the key's rate limit.
    limited: bool,
}

/// Counts each authenticated call by how it was answered, after the handler has answered, and puts
/// the key's rate limit on the answer (`X-RateLimit-*`), errors included.
pub async fn count_usage(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    let mut response = next.call(req).await?;
    let allowance = response.request().extensions_mut().remove::<Allowance>();
    if let Some(allowance) = allowance {
        let headers = response.headers_mut();
        for (name, value) in [
            ("x-ratelimit-limit", allowance.limit),
            ("x-ratelimit-remaining", allowance.remaining),
            ("x-ratelimit-reset", allowance.reset),
        ] {
            headers.insert(
                header::HeaderName::from_static(name),
                header::HeaderValue::from(value),
            );
        }
    }
    let used = response.request().extensions_mut().remove::<KeyUse>();
    if let Some(used) = used
        && let Some(usage) = response.request().app_data::<web::Data<UsageRecorder>>()
    {
        let outcome = if used.limited {
            Outcome::Limited
        } else if response.status().as_u16() < 400 {
            Outcome::Succeeded
        } else {
            Outcome::Refused
        };
        // The automation a run was started for, else the route: what a revocation would break.
        let request = response.request();
        let endpoint = request
            .match_info()
            .get("endpoint")
            .map(str::to_owned)
            .or_else(|| {
                request
                    .match_pattern()
                    .map(|pattern| format!("{} {pattern}", request.method()))
            });
        usage.record(
            used.key_id,
            used.at,
            used.ip,
            used.user_agent.as_deref(),
            endpoint.as_deref(),
            outcome,
        );
    }
    Ok(response)
}

impl FromRequest for ApiCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = req
            .headers()
            .get(HEADER)
            .map(|v| v.to_str().map(str::to_owned));
        let pool = req
            .app_data::<web::Data<Pool>>()
            .expect("Pool registered")
            .clone();
        let keys = req
            .app_data::<web::Data<VerifiedKeys>>()
            .expect("VerifiedKeys registered")
            .clone();
        let usage = req
            .app_data::<web::Data<UsageRecorder>>()
            .expect("UsageRecorder registered")
            .clone();
        let limiter = req
            .app_data::<web::Data<RateLimiter>>()
            .expect("RateLimiter registered")
            .clone();
        let default_limit = req
            .app_data::<web::Data<Settings>>()
            .expect("Settings registered")
            .rate_limit_per_minute;
        let ip = crate::ops::client_address::client_ip(req).map(|ip| ip.to_string());
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = req.clone();
        Box::pin(async move {
            let text = match presented {
                None => return Err(ApiError::MissingApiKey),
                Some(Err(_)) => return Err(ApiError::MalformedApiKey),
                Some(Ok(text)) => text,
            };
            let secret = Secret::parse(SecretKind::ApiKey, text.trim())
                .map_err(|_| ApiError::MalformedApiKey)?;
            let hash = secret.hash();
            let found = match keys.get(&hash) {
                Some(key) => Some(key),
                None => {
                    let ticket = keys.ticket();
                    let found = {
                        let hash = hash.clone();
                        pool.run(move |conn| api_keys::lookup(conn, &hash).map_err(ApiError::from))
                            .await?
                    };
                    if let Some(key) = &found {
                        keys.remember(ticket, hash, key.clone());
                    }
                    found
                }
            };
            let now = chrono::Utc::now().naive_utc();
            let Some(key) = found else {
                return Err(ApiError::InvalidApiKey);
            };
            match key.check(now) {
                Ok(()) => {
                    use actix_web::HttpMessage;
                    let limit = rate_limit::limit_of(key.key.rate_limit_per_minute, default_limit);
                    let allowance = limiter.check(key.key.id, limit).await?;
                    let limited = allowance.is_some_and(|a| !a.allowed);
                    let mut extensions = req.extensions_mut();
                    extensions.insert(KeyUse {
                        key_id: key.key.id,
                        at: now,
                        ip,
                        user_agent,
                        limited,
                    });
                    if let Some(allowance) = allowance {
                        extensions.insert(allowance);
                        if limited {
                            return Err(ApiError::RateLimited {
                                limit: allowance.limit,
                                retry_after: allowance.retry_after,
                            });
                        }
                    }
                    Ok(Self(key))
                }
                Err(rejection) => {
                    usage.record_rejected(key.key.id, now);
                    Err(match rejection {
                        Rejection::Revoked => ApiError::RevokedApiKey,
                        Rejection::Expired => ApiError::ExpiredApiKey,
                    })
                }
            }
        })
    }
}
