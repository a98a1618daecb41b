//! `GET /metrics`: the Prometheus registry of [`crate::metrics`], with the gauges read at scrape time.
//! Operators only: with `GRANITE_METRICS_TOKEN` set the scraper sends it as a bearer token; unset,
//! only a peer on this machine (loopback) is answered.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::config::Settings;
use crate::db::{DbError, Pool};
use crate::machines::fleet::Fleet;
use crate::secret::sha256_hex;

/// Whether a scrape may read the metrics: the configured token, or no token configured and a
/// loopback peer. Tokens are compared by their digests, so the comparison takes the same time
/// however much of a wrong token matches.
/// A request a proxy forwarded (it carries a forwarding header) is never "this machine", even when
/// the proxy runs here and is not listed in `GRANITE_TRUSTED_PROXIES`.
pub fn allowed(
    token: Option<&str>,
    bearer: Option<&str>,
    peer: Option<IpAddr>,
    forwarded: bool,
) -> bool {
    match token {
        Some(token) => bearer.is_some_and(|b| sha256_hex(b) == sha256_hex(token)),
        None => !forwarded && peer.is_some_and(|ip| ip.is_loopback()),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn show(
    req: HttpRequest,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    metrics: web::Data<crate::metrics::Metrics>,
    fleet: web::Data<Fleet>,
) -> HttpResponse {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Behind a proxy on this machine, the client it forwards for, not the proxy.
    let peer = super::client_address::client_ip(&req);
    let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip"]
        .iter()
        .any(|name| req.headers().contains_key(*name));
    if !allowed(settings.metrics_token.as_deref(), bearer, peer, forwarded) {
        let reason = if settings.metrics_token.is_some() {
            "Send the metrics token: Authorization: Bearer TOKEN (GRANITE_METRICS_TOKEN)."
        } else {
            "Metrics answer this machine only; set GRANITE_METRICS_TOKEN to scrape from elsewhere."
        };
        return HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .content_type("text/plain")
            .body(reason);
    }
    let gauges = pool
        .run(move |conn| {
            let now = chrono::Utc::now().naive_utc();
            let drivers = fleet.all(conn, now)?;
            crate::metrics::Gauges::load(conn, now, drivers, fleet.censuses_taken())
                .map_err(DbError::from)
        })
        .await;
    match gauges {
        Ok(gauges) => HttpResponse::Ok()
            .content_type(crate::metrics::CONTENT_TYPE)
            .body(metrics.render(&gauges)),
        Err(error) => {
            tracing::warn!(%error, "metrics unavailable");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("database unreachable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_or_this_machine() {
        let here: Option<IpAddr> = Some("127.0.0.1".parse().unwrap());
        let here6: Option<IpAddr> = Some("::1".parse().unwrap());
        let elsewhere: Option<IpAddr> = Some("10.1.2.3".parse().unwrap());
        assert!(allowed(None, None, here, false) && allowed(None, None, here6, false));
        assert!(
            !allowed(None, None, elsewhere, false),
            "no token: loopback only"
        );
        assert!(
            !allowed(None, None, here, true),
            "a proxy on this machine forwarding for anyone"
        );
        assert!(!allowed(None, Some("guess"), elsewhere, false));
        assert!(allowed(Some("s3cret"), Some("s3cret"), elsewhere, true));
        assert!(
            !allowed(Some("s3cret"), Some("s3cre"), here, false),
            "with a token, loopback needs it too"
        );
        assert!(!allowed(Some("s3cret"), None, here, false));
    }
}
