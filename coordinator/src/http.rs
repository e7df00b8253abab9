//! The HTTPS endpoint detectors download models from, usable with curl:
//!
//! - `GET /v1/models/latest`: the current version's weights (safetensors);
//! - `GET /v1/models/{version}`: one version's weights;
//! - `GET /v1/models/{version}/card`, `GET /v1/models/latest/card`: a
//!   version's model card (JSON);
//! - `GET /v1/status`: the coordinator's status (JSON, [`crate::status`]);
//! - `GET /metrics`: Prometheus metrics ([`crate::metrics`]);
//! - `GET /dashboard`: the live dashboard, a page that renders `/v1/status`
//!   every two seconds (its script and style sheet, under `/dashboard/`, are
//!   public; all else needs a credential), or the sign-in form;
//! - `POST /dashboard/login`, `POST /dashboard/logout`: dashboard sessions.
//!
//! Weights carry two digests, named apart (docs/MODEL_FORMAT.md):
//! `ETag` and `X-Fedshield-Sha256` are the sha256 of the exact bytes served
//! (the safetensors file, what `sha256sum` of a download prints), and
//! `X-Fedshield-Weights-Sha256` is the sha256 of the parameters, the
//! card's `sha256` that identifies the version. `X-Fedshield-Version` names
//! the version; `If-None-Match` with the current tag answers `304 Not
//! Modified`. Every file is checked against its card's sha256 before it is
//! served; a corrupted one is refused with `500`, never served.
//!
//! Credentials: a client certificate of the participant CA (with the
//! clientAuth extended key usage) whose subject the participant registry
//! allows, or `Authorization: Bearer <token>` with an unexpired, unrevoked
//! token the coordinator issued (`fedshield coordinator tokens create`; only
//! its sha256 is stored, see [`crate::tokens`]), or a dashboard session
//! cookie. Every download and every refusal is logged with who asked.
//!
//! Browsers sign in to the dashboard with the form `GET /dashboard` shows,
//! which posts the token in the body to `/dashboard/login`; a cross-site
//! post is refused (login CSRF), and so is a token in the address
//! (`/dashboard?token=`, which only shows the form). A successful sign-in
//! opens a server-side session ([`crate::dashboard_sessions`]) whose random id, never
//! the token, is set as an `HttpOnly; Secure; SameSite=Strict` cookie. A
//! browser with a registered client certificate needs no token.
//!
//! Every response carries `X-Content-Type-Options: nosniff`; error bodies
//! are fixed texts and never repeat what the request sent.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fedshield_core::ModelVersion;
use fedshield_core::untrusted_text::escape_bounded;
use fedshield_proto::https_connection::spawn_https_connection;
use fedshield_proto::tls::{ConnectionTracker, PeerIdentity, serve_tls_incoming};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dashboard_sessions::{
    DashboardSessionSettings, DashboardSessions, SESSION_COOKIE_NAME, SessionRefusal,
};
use crate::engine::Engine;
use crate::error::{CoordinatorError, ErrorKind};
use crate::metrics::OPENMETRICS_CONTENT_TYPE;
use crate::participants::SharedRegistry;
use crate::registry::ModelRegistry;
use crate::roles::Operation;
use crate::status::{CardCache, build_status};
use crate::tokens::TokenRefusal;

pub use crate::tokens::{API_TOKENS_FILE_NAME, ApiTokenEntry, issue_token};

/// Longest form body `POST /dashboard/login` reads, in bytes.
const MAX_LOGIN_FORM_BYTES: usize = 4_096;

const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/app.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/style.css");

/// Who the HTTPS endpoint answers.
#[derive(Clone)]
struct HttpState {
    engine: Engine,
    registry: ModelRegistry,
    participants: Option<SharedRegistry>,
    tokens_path: PathBuf,
    cards: CardCache,
    /// The open dashboard sessions.
    sessions: Arc<DashboardSessions>,
}

/// The client certificate of one HTTPS connection, if it presented one.
#[derive(Clone)]
struct ConnectionPeer(Option<PeerIdentity>);

/// A refused request: its kind, which gives its status
/// ([`ErrorKind::http_status`]), and the fixed text of the response body.
struct Refusal {
    kind: ErrorKind,
    reason: String,
}

impl Refusal {
    fn new(kind: ErrorKind, reason: impl Into<String>) -> Self {
        Refusal {
            kind,
            reason: reason.into(),
        }
    }

    fn status(&self) -> StatusCode {
        http_status(self.kind)
    }
}

impl From<&CoordinatorError> for Refusal {
    fn from(error: &CoordinatorError) -> Self {
        Refusal::new(error.kind(), error.to_string())
    }
}

/// Returns the HTTP status of an error kind, from the one error table.
fn http_status(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).expect("the error table holds valid HTTP status codes")
}

/// Returns who is asking, or the refusal. A client certificate's role must
/// allow `operation` ([`Operation::allowed_roles`]); tokens are operators'.
fn authorize(
    state: &HttpState,
    peer: &ConnectionPeer,
    headers: &HeaderMap,
    operation: Operation,
) -> Result<String, Refusal> {
    if let (Some(identity), Some(participants)) = (&peer.0, &state.participants) {
        return participants
            .get()
            .authorize_for(
                &identity.common_name,
                &identity.sha256_fingerprint,
                operation,
            )
            .map(|member| format!("{} {}", member.role, member.id))
            .map_err(|denied| {
                let reason = denied.to_string();
                Refusal::new(CoordinatorError::AccessDenied(denied).kind(), reason)
            });
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return match session_cookie(headers) {
            Some(session_id) => check_session(state, session_id),
            None => Err(Refusal::new(
                ErrorKind::Unauthenticated,
                "a client certificate or an Authorization: Bearer token is required",
            )),
        };
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            Refusal::new(
                ErrorKind::Unauthenticated,
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
    check_token(state, token)
}

/// Returns the session id of the dashboard cookie, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE_NAME)
        .map(|(_, session_id)| session_id.trim())
}

impl From<&TokenRefusal> for Refusal {
    fn from(refusal: &TokenRefusal) -> Self {
        Refusal::new(refusal.kind(), refusal.to_string())
    }
}

impl From<&SessionRefusal> for Refusal {
    /// An unreadable token file is told as such, not as the session's end.
    fn from(refusal: &SessionRefusal) -> Self {
        match refusal {
            SessionRefusal::TokenRefused(TokenRefusal::Unreadable) => {
                Refusal::from(&TokenRefusal::Unreadable)
            }
            refusal => Refusal::new(refusal.kind(), refusal.to_string()),
        }
    }
}

/// Returns who the issued token `token` names, or the refusal.
fn check_token(state: &HttpState, token: &str) -> Result<String, Refusal> {
    crate::tokens::check_token(&state.tokens_path, token)
        .map(|valid| format!("token {}", valid.name))
        .map_err(|refusal| Refusal::from(&refusal))
}

/// Returns who the dashboard session `session_id` belongs to, or the refusal.
fn check_session(state: &HttpState, session_id: &str) -> Result<String, Refusal> {
    state
        .sessions
        .check(session_id, &state.tokens_path)
        .map(|name| format!("token {name} (dashboard session)"))
        .map_err(|refusal| Refusal::from(&refusal))
}

fn refusal(what: &str, client: Option<&str>, refusal: Refusal) -> Response {
    let status = refusal.status();
    let reason = refusal.reason;
    warn!(request = what, client = client.unwrap_or("-"), status = status.as_u16(), reason = %reason, "download refused");
    (status, format!("{reason}\n")).into_response()
}

/// Returns the version a path segment names. The refusal does not repeat
/// the segment (error bodies never echo the request); the log gets it
/// escaped and bounded.
fn parse_version(text: &str) -> Result<ModelVersion, Refusal> {
    text.parse::<u64>().map(ModelVersion).map_err(|_| {
        warn!(segment = %escape_bounded(text, 64), "model version in the path is not a number");
        Refusal::new(
            ErrorKind::InvalidArgument,
            "the model version in the path must be a number or `latest`",
        )
    })
}

async fn latest_weights(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    headers: HeaderMap,
) -> Response {
    let version = state.engine.current_model().version;
    serve_weights(state, peer, headers, version).await
}

async fn version_weights(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    UrlPath(version): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    match parse_version(&version) {
        Ok(version) => serve_weights(state, peer, headers, version).await,
        Err(denied) => refusal("weights", None, denied),
    }
}

async fn serve_weights(
    state: HttpState,
    peer: ConnectionPeer,
    headers: HeaderMap,
    version: ModelVersion,
) -> Response {
    let client = match authorize(&state, &peer, &headers, Operation::HttpsModelWeights) {
        Ok(client) => client,
        Err(denied) => return refusal("weights", None, denied),
    };
    let model = match state.engine.model(version).await {
        Ok(model) => model,
        Err(error) => return refusal("weights", Some(&client), Refusal::from(&error)),
    };
    // Serve the stored object, after checking it still holds what the card
    // says. The tag is the sha256 of these very bytes, so that `sha256sum`
    // of a download matches it.
    let bytes = match state.registry.load_verified(version).await {
        Ok((_, _, bytes)) => bytes,
        // Whatever the store's error, a version that cannot be served as
        // its card describes is the coordinator's failure.
        Err(error) => {
            return refusal(
                "weights",
                Some(&client),
                Refusal::new(ErrorKind::Internal, error.to_string()),
            );
        }
    };
    let file_sha256 = hex::encode(Sha256::digest(&bytes));
    let etag = format!("\"{file_sha256}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    state.engine.metrics().model_downloaded("https");
    info!(client = %client, version = %version, num_bytes = bytes.len(), "model downloaded over https");
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    for (name, value) in [
        (header::ETAG.as_str(), etag),
        ("x-fedshield-sha256", file_sha256),
        ("x-fedshield-weights-sha256", model.card.sha256.clone()),
        ("x-fedshield-version", version.0.to_string()),
        (
            header::CONTENT_DISPOSITION.as_str(),
            format!(
                "attachment; filename=\"model-v{:08}.safetensors\"",
                version.0
            ),
        ),
    ] {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    response
}

async fn latest_card(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    headers: HeaderMap,
) -> Response {
    let client = match authorize(&state, &peer, &headers, Operation::HttpsModelCard) {
        Ok(client) => client,
        Err(denied) => return refusal("card", None, denied),
    };
    let version = state.engine.current_model().version;
    serve_card(state, client, version).await
}

async fn version_card(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    UrlPath(version): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let client = match authorize(&state, &peer, &headers, Operation::HttpsModelCard) {
        Ok(client) => client,
        Err(denied) => return refusal("card", None, denied),
    };
    let version = match parse_version(&version) {
        Ok(version) => version,
        Err(denied) => return refusal("card", Some(&client), denied),
    };
    serve_card(state, client, version).await
}

/// Serves the model card of `version` to `client` (already authorized).
async fn serve_card(state: HttpState, client: String, version: ModelVersion) -> Response {
    match state.engine.model(version).await {
        Ok(model) => {
            info!(client = %client, version = %version, "model card downloaded over https");
            (
                [(header::ETAG, format!("\"{}-card\"", model.card.sha256))],
                axum::Json(model.card.clone()),
            )
                .into_response()
        }
        Err(error @ CoordinatorError::UnknownModelVersion(_)) => {
            refusal("card", Some(&client), Refusal::from(&error))
        }
        // Any other failure to load a version is the coordinator's.
        Err(error) => refusal(
            "card",
            Some(&client),
            Refusal::new(ErrorKind::Internal, error.to_string()),
        ),
    }
}

async fn status(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = authorize(&state, &peer, &headers, Operation::HttpsStatus) {
        return refusal("status", None, denied);
    }
    let report = build_status(&state.engine, &state.registry, &state.cards).await;
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(report)).into_response()
}

async fn metrics(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = authorize(&state, &peer, &headers, Operation::HttpsMetrics) {
        return refusal("metrics", None, denied);
    }
    (
        [
            (header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        state.engine.metrics().render(),
    )
        .into_response()
}

/// Headers of every dashboard response: nothing from other origins, no
/// framing, no referrer to other origins (same-origin requests keep theirs,
/// so that the sign-in form's post carries its `Origin`).
fn dashboard_headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 5] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ]
}

/// Returns whether `uri` has a `token` query parameter (the old sign-in
/// address, refused now: a link can carry anyone's token).
fn has_query_token(uri: &Uri) -> bool {
    uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("token"))
    })
}

/// Returns the sign-in page with the status of `kind` and the fixed text
/// `reason`.
fn login_page(kind: ErrorKind, reason: &str) -> Response {
    let status = http_status(kind);
    let reason = reason
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>fedshield: sign in</title></head>\
         <body><h1>fedshield dashboard</h1><p id=\"login-reason\">{reason}</p>\
         <form id=\"login\" method=\"post\" action=\"/dashboard/login\">\
         <label>Token <input type=\"password\" name=\"token\" autocomplete=\"off\" required></label> \
         <button type=\"submit\">Sign in</button></form>\
         <p>Use a token from <code>fedshield coordinator tokens create</code>, or a registered client certificate.</p></body></html>\n"
    );
    (status, dashboard_headers("text/html; charset=utf-8"), body).into_response()
}

async fn dashboard(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if has_query_token(&uri) {
        warn!(
            request = "dashboard",
            reason = "token in the address",
            "dashboard login refused"
        );
        return login_page(
            ErrorKind::Unauthenticated,
            "Signing in through the address is not accepted: enter the token in the form.",
        );
    }
    match authorize(&state, &peer, &headers, Operation::HttpsDashboard) {
        Ok(_) => (
            dashboard_headers("text/html; charset=utf-8"),
            DASHBOARD_HTML,
        )
            .into_response(),
        Err(denied) => login_page(denied.kind, &denied.reason),
    }
}

/// Returns why a state-changing dashboard request (sign-in, sign-out) comes
/// from another site, if it does. Browsers that send `Sec-Fetch-Site` are
/// judged by it: only `same-origin` and `none` (typed by the user) pass.
/// Older browsers are judged by `Origin`, which must be this endpoint.
/// Clients that send neither header (curl) are not browsers a forged form
/// could drive, and pass.
fn cross_site_reason(uri: &Uri, headers: &HeaderMap) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Some("the request comes from another site (Sec-Fetch-Site)");
        }
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| uri.authority().map(|authority| authority.as_str()));
    let same_origin = match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin
            .strip_prefix("https://")
            .is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host)),
        _ => false,
    };
    (!same_origin).then_some("the request comes from another origin (Origin)")
}

/// Returns the `token` field of an `application/x-www-form-urlencoded`
/// body. Tokens are `fst_` and hex digits, which forms send unencoded; an
/// encoded value is not a token and fails the check.
fn form_token(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .map(|(_, token)| token.trim())
}

/// Returns the `Set-Cookie` value of a session cookie; `max_age_secs` 0
/// deletes it.
fn session_cookie_header(session_id: &str, max_age_secs: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE_NAME}={session_id}; Path=/; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=Strict"
    ))
    .ok()
}

/// Returns a `303 See Other` to the dashboard, with `cookie` set if given.
fn redirect_to_dashboard(cookie: Option<HeaderValue>) -> Response {
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/dashboard"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
    )
        .into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn dashboard_login(
    State(state): State<HttpState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(reason) = cross_site_reason(&uri, &headers) {
        warn!(
            request = "dashboard login",
            reason, "dashboard login refused"
        );
        return login_page(
            ErrorKind::PermissionDenied,
            "Sign-in refused: the form was not sent from this dashboard.",
        );
    }
    if body.len() > MAX_LOGIN_FORM_BYTES {
        return login_page(ErrorKind::PayloadTooLarge, "The sign-in form is too large.");
    }
    let Some(token) = form_token(&body) else {
        return login_page(ErrorKind::InvalidArgument, "The sign-in form has no token.");
    };
    let valid = match crate::tokens::check_token(&state.tokens_path, token) {
        Ok(valid) => valid,
        Err(refusal) => {
            let refused = Refusal::from(&refusal);
            warn!(request = "dashboard login", status = refused.status().as_u16(), reason = %refused.reason, "dashboard login refused");
            return login_page(refused.kind, &refused.reason);
        }
    };
    let session_id = match state.sessions.open(&valid) {
        Ok(session_id) => session_id,
        Err(refusal) => {
            return login_page(refusal.kind(), &refusal.to_string());
        }
    };
    info!(client = %format!("token {}", valid.name), "dashboard login");
    let max_age_secs = state.sessions.settings().max_age.as_secs().max(1);
    redirect_to_dashboard(session_cookie_header(&session_id, max_age_secs))
}

async fn dashboard_logout(
    State(state): State<HttpState>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(reason) = cross_site_reason(&uri, &headers) {
        warn!(
            request = "dashboard logout",
            reason, "dashboard logout refused"
        );
        return login_page(
            ErrorKind::PermissionDenied,
            "Sign-out refused: the form was not sent from this dashboard.",
        );
    }
    if let Some(name) = session_cookie(&headers).and_then(|id| state.sessions.close(id)) {
        info!(client = %format!("token {name}"), "dashboard logout");
    }
    redirect_to_dashboard(session_cookie_header("", 0))
}

/// Answers requests no route matches, without repeating the path.
async fn not_found() -> Response {
    (http_status(ErrorKind::NotFound), "no such resource\n").into_response()
}

/// Adds the headers every response carries: `X-Content-Type-Options:
/// nosniff`, so browsers never guess a type other than the one declared.
async fn set_security_headers(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn dashboard_script() -> Response {
    (
        dashboard_headers("text/javascript; charset=utf-8"),
        DASHBOARD_JS,
    )
        .into_response()
}

async fn dashboard_style() -> Response {
    (dashboard_headers("text/css; charset=utf-8"), DASHBOARD_CSS).into_response()
}

/// Serves the HTTPS endpoint on `listener` until `shutdown`, within the
/// caps and timeouts of `connection_tracker` (shared with the gRPC port).
// One argument per part of the endpoint; the server wires them from
// `HttpsSettings` and its own state in one place.
#[allow(clippy::too_many_arguments)]
pub fn serve_https(
    listener: TcpListener,
    tls: Arc<fedshield_proto::tls::rustls::ServerConfig>,
    engine: Engine,
    registry: ModelRegistry,
    participants: Option<SharedRegistry>,
    tokens_path: PathBuf,
    dashboard_sessions: DashboardSessionSettings,
    connection_tracker: Arc<ConnectionTracker>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let state = HttpState {
        engine,
        registry,
        participants,
        tokens_path,
        cards: CardCache::default(),
        sessions: Arc::new(DashboardSessions::new(dashboard_sessions)),
    };
    let router = Router::new()
        .route("/v1/models/latest", get(latest_weights))
        .route("/v1/models/{version}", get(version_weights))
        .route("/v1/models/latest/card", get(latest_card))
        .route("/v1/models/{version}/card", get(version_card))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(dashboard))
        .route("/dashboard/app.js", get(dashboard_script))
        .route("/dashboard/style.css", get(dashboard_style))
        .route("/dashboard/login", post(dashboard_login))
        .route("/dashboard/logout", post(dashboard_logout))
        .fallback(not_found)
        .layer(axum::middleware::map_response(set_security_headers))
        .with_state(state);
    let header_read_timeout = connection_tracker.limits().header_read_timeout;
    let mut incoming = serve_tls_incoming(listener, tls, connection_tracker, shutdown.clone());
    tokio::spawn(async move {
        while let Some(accepted) = incoming.next().await {
            let Ok(stream) = accepted else { continue };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| PeerIdentity::from_der(leaf).ok());
            spawn_https_connection(
                stream,
                router.clone().layer(Extension(ConnectionPeer(peer))),
                header_read_timeout,
                shutdown.clone(),
            );
        }
    })
}
