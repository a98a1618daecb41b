//! `GET /api/me`: who this key is.

use actix_web::HttpResponse;

use super::auth::ApiCaller;
use crate::wire::ErrorBody;
use crate::wire::public::{KeyRef, MeResponse};

#[utoipa::path(
    get,
    path = "/api/me",
    operation_id = "getMe",
    tag = "public",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The key and its organization.", body = MeResponse),
        (status = 401, description = "No key, or a malformed, unknown, revoked or expired one.", body = ErrorBody),
    )
)]
pub async fn show(ApiCaller(caller): ApiCaller) -> HttpResponse {
    HttpResponse::Ok().json(MeResponse {
        organization: caller.organization.to_wire(),
        key: KeyRef {
            id: caller.key.id,
            name: caller.key.name,
            hint: caller.key.hint,
        },
    })
}
