//! Requests in flight per client on the routes anyone may call without a credential: sign-in, setup
//! and every other dashboard form, and machine enrollment. Head and body deadlines bound how long
//! one request can take; this bounds how many one client can hold at once, so a handful of addresses
//! cannot occupy the server with stalled requests. Beyond [`PER_CLIENT`] a request is answered 429 at
//! once, before its body is read.
//!
//! A client is its address as [`client_address`](super::client_address) sees it (behind a trusted
//! proxy, the forwarded one), and an IPv6 client its /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError, web};

use super::client_address::{client_ip, subscriber_block};

/// Requests one client may have in flight on these routes: more than a person signing in or a fleet
/// roll-out enrolling fifty machines at once through one address needs (each takes milliseconds), far
/// fewer than it takes to tie up the server.
pub const PER_CLIENT: u32 = 64;

#[derive(Default)]
pub struct InFlight {
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// One request's place; gives it back when dropped (the request answered or abandoned).
pub struct Slot {
    owner: web::Data<InFlight>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// A request turned away: its client has [`PER_CLIENT`] in flight already.
#[derive(Debug)]
pub struct TooMany;

impl InFlight {
    /// A place for `req`'s request, unless its client holds [`PER_CLIENT`] already. A request whose
    /// client is unknown (no peer address: not over TCP) is not counted.
    pub fn enter(owner: &web::Data<InFlight>, req: &HttpRequest) -> Result<Option<Slot>, TooMany> {
        let Some(client) = client_ip(req).map(subscriber_block) else {
            return Ok(None);
        };
        let mut counts = owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(client).or_insert(0);
        if *count >= PER_CLIENT {
            return Err(TooMany);
        }
        *count += 1;
        Ok(Some(Slot {
            owner: owner.clone(),
            client,
        }))
    }
}

/// The dashboard's middleware: every request that may change something (a form post: sign-in,
/// setup, the admin's actions) holds a place while it runs; `E` is how a refusal is answered.
pub async fn limit_changes<E: ResponseError + From<TooMany> + 'static>(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if req.method().is_safe() {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let owner = req
        .app_data::<web::Data<InFlight>>()
        .expect("InFlight registered")
        .clone();
    match InFlight::enter(&owner, req.request()) {
        Ok(slot) => {
            let response = next.call(req).await;
            drop(slot);
            Ok(response?.map_into_left_body())
        }
        Err(too_many) => {
            tracing::info!(
                path = req.path(),
                "too many requests in flight from one client"
            );
            let response = E::from(too_many).error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}
