//! The frame every page shares, its assets, and how a page is answered.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::{CSRF_COOKIE, SESSION_MS, Viewer, set_cookie};

/// The sections, in the navigation's order: (path, name).
const SECTIONS: [(&str, &str); 7] = [
    ("/console/", "Overview"),
    ("/console/applications", "Applications"),
    ("/console/actions", "Actions"),
    ("/console/subscriptions", "Subscriptions"),
    ("/console/events", "Events"),
    ("/console/dead-letters", "Dead letters"),
    ("/console/queues", "Queues"),
];

const CSS: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// What every console answer carries: no caching, no framing, and only its
/// own scripts and styles.
fn guard(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An HTML answer with the console's headers, setting the CSRF cookie if
/// the browser had none.
pub fn answer(
    status: StatusCode,
    markup: Markup,
    new_csrf: Option<&str>,
    secure: bool,
) -> Response {
    let mut response = (status, axum::response::Html(markup.into_string())).into_response();
    guard(&mut response);
    if let Some(value) = new_csrf {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(CSRF_COOKIE, value, SESSION_MS / 1000 * 3, secure),
        );
    }
    response
}

/// A whole page for `viewer`: the frame, the navigation with `section`
/// marked, and `body`.
pub fn render(viewer: &Viewer, section: &str, title: &str, body: Markup) -> Response {
    render_with(viewer, StatusCode::OK, section, title, body)
}

/// [`render`] with another status (a form sent back with its errors).
pub fn render_with(
    viewer: &Viewer,
    status: StatusCode,
    section: &str,
    title: &str,
    body: Markup,
) -> Response {
    let who = match viewer.application() {
        Some(app) => format!("application {app}"),
        None => "admin".to_owned(),
    };
    let markup = frame(
        title,
        html! {
            header.top {
                a.brand href="/console/" { "Tidings" }
                nav aria-label="Sections" {
                    ul {
                        @for (path, name) in SECTIONS {
                            li {
                                @if name == section {
                                    a href=(path) aria-current="page" { (name) }
                                } @else {
                                    a href=(path) { (name) }
                                }
                            }
                        }
                    }
                }
                div.who {
                    span { "Signed in as " strong { (who) } }
                    @if viewer.signed_in {
                        form method="post" action="/console/sign-out" {
                            (csrf_field(&viewer.csrf))
                            button.link type="submit" { "Sign out" }
                        }
                    } @else {
                        span.hint title="No admin key is set: callers on this host are the admin" { " (protected mode)" }
                    }
                }
            }
            main id="main" { h1 { (title) } (body) }
        },
    );
    answer(
        status,
        markup,
        viewer.new_csrf_cookie.as_deref(),
        viewer.secure,
    )
}

/// The document around a page's content.
pub fn frame(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Tidings" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                (content)
            }
        }
    }
}

/// The hidden field every form carries.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A page saying what went wrong, with a way back.
pub fn error(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let markup = frame(
        title,
        html! {
            main id="main" .narrow {
                h1 { (title) }
                p.error role="alert" { (message) }
                p { a href="/console/" { "Back to the console" } }
            }
        },
    );
    answer(status, markup, None, false)
}

/// `GET /console/assets/{file}`: the stylesheet and the script, compiled in.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return error(StatusCode::NOT_FOUND, "No such file"),
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    guard(&mut response);
    // Assets change only with the binary: an hour in the browser's cache.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    response
}

/// An empty state: what is missing and what to do about it.
pub fn empty(what: &str, next: Markup) -> Markup {
    html! {
        div.empty {
            p { strong { (what) } }
            (next)
        }
    }
}

/// A notice at the top of a page (the result of a form).
pub fn notice(kind: &str, content: Markup) -> Markup {
    html! { div class={"notice " (kind)} role="status" { (content) } }
}
