//! The web UI: plain HTML, CSS and JavaScript in `dashboard/ui/`, compiled
//! into the binary, served at `/`. Charts are drawn on `<canvas>` by the
//! script itself: no framework, no CDN, no fonts or anything else from
//! outside. The Content-Security-Policy forbids the page to load or contact
//! anything but this dashboard.
//!
//! The UI is a client of the JSON API like the CLI: it reads the overview,
//! stats, slots, groups and migrations, and sends changes with the admin
//! token the operator types once (kept in the tab's `sessionStorage`).

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub const INDEX_HTML: &str = include_str!("../ui/index.html");
pub const APP_JS: &str = include_str!("../ui/app.js");
pub const APP_CSS: &str = include_str!("../ui/app.css");

/// Nothing but this dashboard: scripts, styles, API calls.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page must not reach outside the dashboard: no absolute URLs in
    /// what it loads or calls.
    #[test]
    fn the_assets_load_nothing_from_outside() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            for needle in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(
                    !text.contains(needle),
                    "{name} contains {needle:?}: the UI must be self-contained"
                );
            }
        }
        assert!(INDEX_HTML.contains("/ui/app.js") && INDEX_HTML.contains("/ui/app.css"));
    }
}
