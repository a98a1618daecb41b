//! Static files, embedded in the binary. URLs carry a fingerprint of the content, so browsers may
//! cache them for a year and still see a new version the moment it ships.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// htmx 2.0.11 from the npm package `htmx.org` (dist/htmx.min.js), unmodified.
pub const HTMX_FILE: &str = "htmx-2.0.11.min.js";
/// idiomorph 0.8.0 with its htmx extension, from the npm package `idiomorph`
/// (dist/idiomorph-ext.min.js), unmodified: live lists morph in place, so focus and scroll stay.
pub const IDIOMORPH_FILE: &str = "idiomorph-ext-0.8.0.min.js";

const ASSETS: &[Asset] = &[
    Asset {
        name: HTMX_FILE,
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/htmx-2.0.11.min.js"),
    },
    Asset {
        name: IDIOMORPH_FILE,
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/idiomorph-ext-0.8.0.min.js"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../static/favicon.svg"),
    },
];

/// Each asset's fingerprint: the start of the SHA-256 of its bytes, computed once.
static FINGERPRINTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| hex::encode(Sha256::digest(asset.bytes))[..12].to_owned())
        .collect()
});

fn find(name: &str) -> Option<(&'static Asset, &'static str)> {
    let index = ASSETS.iter().position(|a| a.name == name)?;
    Some((&ASSETS[index], FINGERPRINTS[index].as_str()))
}

/// The fingerprinted URL of each asset, for templates.
pub struct AssetUrls {
    pub htmx: String,
    pub idiomorph: String,
    pub app_js: String,
    pub app_css: String,
    pub favicon: String,
}

pub static URLS: LazyLock<AssetUrls> = LazyLock::new(|| AssetUrls {
    htmx: url(HTMX_FILE),
    idiomorph: url(IDIOMORPH_FILE),
    app_js: url("app.js"),
    app_css: url("app.css"),
    favicon: url("favicon.svg"),
});

/// Fingerprints every asset now, at start, rather than on the first request.
pub fn fingerprint_all() {
    LazyLock::force(&URLS);
}

fn url(name: &str) -> String {
    let (asset, fingerprint) = find(name).expect("asset is embedded");
    format!("/static/{}?v={fingerprint}", asset.name)
}

pub async fn serve(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    let Some((asset, fingerprint)) = find(name.as_str()) else {
        return HttpResponse::NotFound().finish();
    };
    // Only the current fingerprint is immutable; any other URL must revalidate.
    let current = req
        .query_string()
        .strip_prefix("v=")
        .is_some_and(|v| v == fingerprint);
    let cache = if current {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, cache))
        .body(asset.bytes)
}
