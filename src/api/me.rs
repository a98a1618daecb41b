//! `GET /api/me`: who this key is.

use actix_web::HttpResponse;

use super::auth::ApiCaller;

pub async fn show(ApiCaller(caller): ApiCaller) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "organization": {
            "id": caller.organization.id,
            "slug": caller.organization.slug,
            "name": caller.organization.name,
        },
        "key": { "id": caller.key.id, "name": caller.key.name, "hint": caller.key.hint },
    }))
}
