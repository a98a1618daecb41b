//! The public API (API keys) and the driver API (enrollment tokens, then machine credentials). JSON in,
//! JSON out (the types are in [`crate::wire`]), errors per the contract.
//!
//! Every route is registered from its `#[utoipa::path]` attribute: the path and method a handler
//! answers are the ones the OpenAPI document states, so no route exists without its documentation.

pub mod auth;
pub mod body;
pub mod driver;
pub mod error;
pub mod me;
pub mod queue;
pub mod runs;

use actix_web::{FromRequest, Handler, HttpResponse, Responder, web};
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use body::MAX_BODY_BYTES;

/// The OpenAPI 3.1 document of both APIs. Its `paths` and the routes [`routes`] registers are the same
/// list (a unit test below holds them equal).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Granite API Management",
        description = "The public API that runs automations (X-Granite-API-Key) and the driver API that \
                       enrolls machines, takes heartbeats and hands out jobs. See docs/api.md."
    ),
    paths(
        me::show,
        runs::start,
        runs::show,
        runs::cancel,
        queue::show,
        driver::enroll,
        driver::heartbeat,
        driver::claim,
        driver::complete,
        driver::release,
        openapi_json,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "public", description = "For external callers, with an API key."),
        (name = "driver", description = "For driver machines, with an enrollment token, then their credential."),
    )
)]
pub struct ApiDoc;

/// Where each route of both APIs is registered; `T` is the actix scope, or a list in tests.
fn add_all<T: RouteTable>(table: &mut T) {
    table.add::<me::__path_show, _, _>(me::show);
    table.add::<runs::__path_start, _, _>(runs::start);
    table.add::<runs::__path_show, _, _>(runs::show);
    table.add::<runs::__path_cancel, _, _>(runs::cancel);
    table.add::<queue::__path_show, _, _>(queue::show);
    table.add::<driver::__path_enroll, _, _>(driver::enroll);
    table.add::<driver::__path_heartbeat, _, _>(driver::heartbeat);
    table.add::<driver::__path_claim, _, _>(driver::claim);
    table.add::<driver::__path_complete, _, _>(driver::complete);
    table.add::<driver::__path_release, _, _>(driver::release);
    table.add::<__path_openapi_json, _, _>(openapi_json);
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    let mut scope = ApiScope(Some(web::scope("/api")));
    add_all(&mut scope);
    cfg.service(
        scope
            .0
            .expect("scope is built")
            .default_service(web::to(error::not_found))
            .wrap(actix_web::middleware::from_fn(auth::count_usage)),
    );
}

/// `GET /api/openapi.json`: this document, without authentication.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "getOpenApi",
    tag = "public",
    responses((status = 200, description = "The OpenAPI 3.1 document of the public and driver APIs."))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

trait RouteTable {
    fn add<P, F, Args>(&mut self, handler: F)
    where
        P: utoipa::Path,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static;
}

/// The actix scope under `/api`.
struct ApiScope(Option<actix_web::Scope>);

impl RouteTable for ApiScope {
    fn add<P, F, Args>(&mut self, handler: F)
    where
        P: utoipa::Path,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let path = P::path();
        let relative = path
            .strip_prefix("/api")
            .expect("every API path starts with /api")
            .to_owned();
        let mut scope = self.0.take().expect("scope is built");
        for method in P::methods() {
            scope = scope.route(
                &relative,
                web::method(actix_method(&method)).to(handler.clone()),
            );
        }
        self.0 = Some(scope);
    }
}

fn actix_method(method: &HttpMethod) -> actix_web::http::Method {
    use actix_web::http::Method;
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

/// The two ways to authenticate, as the document's `securitySchemes`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                auth::HEADER,
                "An API key, gk_live_…, from the API Keys section of the dashboard.",
            ))),
        );
        components.add_security_scheme(
            "machine_credential",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The machine credential, gd_…, that enrollment returned.",
                    ))
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what [`add_all`] registers.
    #[derive(Default)]
    struct Listed(Vec<(String, String)>);

    impl RouteTable for Listed {
        fn add<P, F, Args>(&mut self, _handler: F)
        where
            P: utoipa::Path,
            F: Handler<Args>,
            Args: FromRequest + 'static,
            F::Output: Responder + 'static,
        {
            for method in P::methods() {
                self.0
                    .push((actix_method(&method).as_str().to_lowercase(), P::path()));
            }
        }
    }

    #[test]
    fn every_registered_route_is_documented_and_every_documented_one_registered() {
        let mut listed = Listed::default();
        add_all(&mut listed);
        let mut registered = listed.0;
        registered.sort();
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        documented.sort();
        assert_eq!(registered, documented);
    }
}
