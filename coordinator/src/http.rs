//! The HTTPS endpoint detectors download models from, usable with curl:
//!
//! - `GET /v1/models/latest`: the current version's weights (safetensors);
//! - `GET /v1/models/{version}`: one version's weights;
//! - `GET /v1/models/{version}/card`: its model card (JSON);
//! - `GET /v1/status`: the coordinator's status (JSON, [`crate::status`]);
//! - `GET /metrics`: Prometheus metrics ([`crate::metrics`]);
//! - `GET /dashboard`: the live dashboard, a page that renders `/v1/status`
//!   every two seconds (its script and style sheet, under `/dashboard/`, are
//!   public; all else needs a credential).
//!
//! Weights carry `ETag` (the sha256 of the parameters, as in the card),
//! `X-Fedshield-Sha256` and `X-Fedshield-Version`; `If-None-Match` with the
//! current tag answers `304 Not Modified`. Every file is checked against its
//! card's sha256 before it is served; a corrupted one is refused with `500`
//! and the reason, never served.
//!
//! Credentials: a client certificate of the participant CA whose subject the
//! participant registry allows, or `Authorization: Bearer <token>` with a
//! token the coordinator issued (`fedshield coordinator issue-token`; only
//! its sha256 is stored, in the API token file). Every download and every
//! refusal is logged with who asked.
//!
//! Browsers log in to the dashboard once with `/dashboard?token=<token>`:
//! the token is checked, set as an `HttpOnly; Secure; SameSite=Strict`
//! cookie, and the browser is redirected to `/dashboard`, so the token
//! leaves the address bar. The cookie is accepted wherever a bearer token
//! is; the server still stores only the token's sha256. A browser with a
//! registered client certificate needs no token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fedshield_core::ModelVersion;
use fedshield_proto::https_connection::spawn_https_connection;
use fedshield_proto::tls::{ConnectionTracker, PeerIdentity, serve_tls_incoming};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::metrics::OPENMETRICS_CONTENT_TYPE;
use crate::participants::SharedRegistry;
use crate::registry::ModelRegistry;
use crate::status::{CardCache, build_status};

/// File name of the API tokens in the coordinator's data directory.
pub const API_TOKENS_FILE_NAME: &str = "api-tokens.toml";

/// An issued bearer token, as stored: its name and the sha256 of the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenEntry {
    pub name: String,
    pub sha256: String,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiTokenFile {
    #[serde(default)]
    token: Vec<ApiTokenEntry>,
}

fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn read_tokens(path: &Path) -> Result<Vec<ApiTokenEntry>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str::<ApiTokenFile>(&text)
            .map(|file| file.token)
            .map_err(|error| format!("{}: {error}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Issues a new bearer token named `name`: appends its sha256 to the token
/// file at `path` (written atomically) and returns the secret, which is shown
/// once and stored nowhere.
///
/// # Errors
/// The file cannot be read or written, or `name` is empty or taken.
pub fn issue_token(path: &Path, name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("token name {name:?} must have 1 to 128 characters"));
    }
    let mut tokens = read_tokens(path)?;
    if tokens.iter().any(|entry| entry.name == name) {
        return Err(format!(
            "a token named {name:?} exists already in {}",
            path.display()
        ));
    }
    let secret = {
        use rand::RngExt;
        let bytes: [u8; 32] = rand::rng().random();
        format!("fst_{}", hex::encode(bytes))
    };
    tokens.push(ApiTokenEntry {
        name: name.to_string(),
        sha256: token_sha256(&secret),
        revoked: false,
    });
    let text = toml::to_string(&ApiTokenFile { token: tokens })
        .map_err(|error| format!("cannot encode the token file: {error}"))?;
    fedshield_core::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|error| error.to_string())?;
    Ok(secret)
}

/// Name of the cookie that holds a dashboard user's token.
pub const TOKEN_COOKIE_NAME: &str = "fedshield_token";

/// How long a dashboard login cookie lasts.
const TOKEN_COOKIE_MAX_AGE_SECS: u64 = 12 * 60 * 60;

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
}

/// The client certificate of one HTTPS connection, if it presented one.
#[derive(Clone)]
struct ConnectionPeer(Option<PeerIdentity>);

/// Returns who is asking, or the refusal.
fn authorize(
    state: &HttpState,
    peer: &ConnectionPeer,
    headers: &HeaderMap,
) -> Result<String, (StatusCode, String)> {
    if let (Some(identity), Some(participants)) = (&peer.0, &state.participants) {
        return participants
            .get()
            .authorize(&identity.common_name, &identity.sha256_fingerprint)
            .map(|participant| format!("participant {participant}"))
            .map_err(|denied| (StatusCode::FORBIDDEN, denied.to_string()));
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return match cookie_token(headers) {
            Some(token) => check_token(state, token),
            None => Err((
                StatusCode::UNAUTHORIZED,
                "a client certificate or an Authorization: Bearer token is required".to_string(),
            )),
        };
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                "the Authorization header must be `Bearer <token>`".to_string(),
            )
        })?;
    check_token(state, token)
}

/// Returns the token of the dashboard cookie, if the request carries one.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE_NAME)
        .map(|(_, token)| token.trim())
}

/// Returns the name of the issued token `token`, or the refusal.
fn check_token(state: &HttpState, token: &str) -> Result<String, (StatusCode, String)> {
    let tokens = read_tokens(&state.tokens_path)
        .map_err(|error| (StatusCode::INTERNAL_SERVER_ERROR, error))?;
    let digest = token_sha256(token);
    match tokens.iter().find(|entry| entry.sha256 == digest) {
        Some(entry) if entry.revoked => Err((
            StatusCode::FORBIDDEN,
            format!("token {:?} is revoked", entry.name),
        )),
        Some(entry) => Ok(format!("token {}", entry.name)),
        None => Err((StatusCode::UNAUTHORIZED, "unknown token".to_string())),
    }
}

fn refusal(what: &str, client: Option<&str>, status: StatusCode, reason: String) -> Response {
    warn!(request = what, client = client.unwrap_or("-"), status = status.as_u16(), reason = %reason, "download refused");
    (status, format!("{reason}\n")).into_response()
}

fn parse_version(text: &str) -> Result<ModelVersion, (StatusCode, String)> {
    text.parse::<u64>().map(ModelVersion).map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            format!("model version {text:?} is not a number"),
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
        Err((status, reason)) => refusal("weights", None, status, reason),
    }
}

async fn serve_weights(
    state: HttpState,
    peer: ConnectionPeer,
    headers: HeaderMap,
    version: ModelVersion,
) -> Response {
    let client = match authorize(&state, &peer, &headers) {
        Ok(client) => client,
        Err((status, reason)) => return refusal("weights", None, status, reason),
    };
    let model = match state.engine.model(version).await {
        Ok(model) => model,
        Err(error) => {
            let status = match error {
                crate::CoordinatorError::UnknownModelVersion(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return refusal("weights", Some(&client), status, error.to_string());
        }
    };
    let etag = format!("\"{}\"", model.card.sha256);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    // Serve the stored object, after checking it still holds what the card says.
    let bytes = match state.registry.load_verified(version).await {
        Ok((_, _, bytes)) => bytes,
        Err(error) => {
            return refusal(
                "weights",
                Some(&client),
                StatusCode::INTERNAL_SERVER_ERROR,
                error.to_string(),
            );
        }
    };
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
        ("x-fedshield-sha256", model.card.sha256.clone()),
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

async fn version_card(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    UrlPath(version): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let client = match authorize(&state, &peer, &headers) {
        Ok(client) => client,
        Err((status, reason)) => return refusal("card", None, status, reason),
    };
    let version = match parse_version(&version) {
        Ok(version) => version,
        Err((status, reason)) => return refusal("card", Some(&client), status, reason),
    };
    match state.engine.model(version).await {
        Ok(model) => {
            info!(client = %client, version = %version, "model card downloaded over https");
            (
                [(header::ETAG, format!("\"{}-card\"", model.card.sha256))],
                axum::Json(model.card.clone()),
            )
                .into_response()
        }
        Err(crate::CoordinatorError::UnknownModelVersion(_)) => refusal(
            "card",
            Some(&client),
            StatusCode::NOT_FOUND,
            format!("model version {version} does not exist"),
        ),
        Err(error) => refusal(
            "card",
            Some(&client),
            StatusCode::INTERNAL_SERVER_ERROR,
            error.to_string(),
        ),
    }
}

async fn status(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    headers: HeaderMap,
) -> Response {
    if let Err((status, reason)) = authorize(&state, &peer, &headers) {
        return refusal("status", None, status, reason);
    }
    let report = build_status(&state.engine, &state.registry, &state.cards).await;
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(report)).into_response()
}

async fn metrics(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    headers: HeaderMap,
) -> Response {
    if let Err((status, reason)) = authorize(&state, &peer, &headers) {
        return refusal("metrics", None, status, reason);
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
/// framing, no referrer (the login address carries a token).
fn dashboard_headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 5] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
}

/// Returns the `token` query parameter of `uri`, if any.
fn query_token(uri: &Uri) -> Option<&str> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .map(|(_, token)| token)
}

fn login_page(status: StatusCode, reason: &str) -> Response {
    let reason = reason
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>fedshield: sign in</title></head>\
         <body><h1>fedshield dashboard</h1><p>{reason}</p><p>Open <code>/dashboard?token=&lt;token&gt;</code> \
         with a token from <code>fedshield coordinator issue-token</code>, or use a registered client certificate.</p></body></html>\n"
    );
    (status, dashboard_headers("text/html; charset=utf-8"), body).into_response()
}

async fn dashboard(
    State(state): State<HttpState>,
    Extension(peer): Extension<ConnectionPeer>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = query_token(&uri) {
        return match check_token(&state, token) {
            Ok(client) => {
                info!(client = %client, "dashboard login");
                let cookie = format!(
                    "{TOKEN_COOKIE_NAME}={token}; Path=/; Max-Age={TOKEN_COOKIE_MAX_AGE_SECS}; HttpOnly; Secure; SameSite=Strict"
                );
                let mut response = (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, "/dashboard"),
                        (header::CACHE_CONTROL, "no-store"),
                        (header::REFERRER_POLICY, "no-referrer"),
                    ],
                )
                    .into_response();
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().insert(header::SET_COOKIE, value);
                }
                response
            }
            Err((status, reason)) => {
                warn!(request = "dashboard", status = status.as_u16(), reason = %reason, "dashboard login refused");
                login_page(status, &reason)
            }
        };
    }
    match authorize(&state, &peer, &headers) {
        Ok(_) => (
            dashboard_headers("text/html; charset=utf-8"),
            DASHBOARD_HTML,
        )
            .into_response(),
        Err((status, reason)) => login_page(status, &reason),
    }
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
#[allow(clippy::too_many_arguments)]
pub fn serve_https(
    listener: TcpListener,
    tls: Arc<fedshield_proto::tls::rustls::ServerConfig>,
    engine: Engine,
    registry: ModelRegistry,
    participants: Option<SharedRegistry>,
    tokens_path: PathBuf,
    connection_tracker: Arc<ConnectionTracker>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let state = HttpState {
        engine,
        registry,
        participants,
        tokens_path,
        cards: CardCache::default(),
    };
    let router = Router::new()
        .route("/v1/models/latest", get(latest_weights))
        .route("/v1/models/{version}", get(version_weights))
        .route("/v1/models/{version}/card", get(version_card))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(dashboard))
        .route("/dashboard/app.js", get(dashboard_script))
        .route("/dashboard/style.css", get(dashboard_style))
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
