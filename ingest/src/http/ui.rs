//! The web UI: three static files written for Argus (`ingest/ui/`), embedded in the binary
//! and served at `/`. They hold no data and need no token; every request they make goes to
//! the API with the user's token, under the API's own rules.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::response::ApiError;

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// The page's only sources are the server itself: no CDN, no outside request.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
    connect-src 'self'; frame-ancestors 'none'";

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary: revalidate rather than cache across upgrades.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `GET /`: the UI's page.
pub async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

/// `GET /ui/{file}`: its script and style sheet.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "app.js" => Ok(file(APP_JS, "text/javascript; charset=utf-8")),
        "app.css" => Ok(file(APP_CSS, "text/css; charset=utf-8")),
        _ => Err(ApiError::not_found(format!(
            "no UI file {name:?}: the UI is /, /ui/app.js and /ui/app.css"
        ))),
    }
}

/// Bytes of the whole UI, for the page-weight check.
pub fn weight() -> usize {
    INDEX.len() + APP_JS.len() + APP_CSS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_is_light_and_asks_nothing_of_other_hosts() {
        assert!(weight() <= 300 * 1024, "the UI weighs {} bytes", weight());
        for (name, text) in [
            ("index.html", INDEX),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(scheme), "{name} refers to {scheme}");
            }
        }
    }
}
