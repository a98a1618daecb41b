//! `X-Granite-API-Key` authentication for every public route: checksum first (no database work for a
//! malformed key), then the key remembered by its hash ([`VerifiedKeys`]), else one indexed lookup.
//! Usage is tallied in memory, never written per call.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::error::ApiError;
use crate::api_keys::cache::VerifiedKeys;
use crate::api_keys::usage::UsageRecorder;
use crate::api_keys::{self, AuthenticatedKey, Rejection};
use crate::db::Pool;
use crate::secret::{Secret, SecretKind};

pub const HEADER: &str = "X-Granite-API-Key";

/// The caller of a public API route: a live key and its organization.
pub struct ApiCaller(pub AuthenticatedKey);

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
        let ip = crate::ops::client_address::client_ip(req).map(|ip| ip.to_string());
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
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
                    usage.record_success(key.key.id, now, ip, user_agent.as_deref());
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
