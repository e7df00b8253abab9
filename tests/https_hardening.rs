//! The HTTPS endpoint and the gRPC service against hostile browsers, peers
//! and participants, over real TLS on 127.0.0.1 (curl for HTTPS, tonic for
//! gRPC): dashboard sessions instead of token cookies, login CSRF, token
//! expiry and revocation, client certificates without the clientAuth usage,
//! `nosniff` and error bodies that do not echo the request, the latest
//! model card, download digests that `sha256sum` reproduces, and log lines
//! that peers cannot forge.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fedshield_coordinator::dashboard_sessions::DashboardSessionSettings;
use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_coordinator::tokens::{TokenLifetime, create_token};
use fedshield_coordinator::{CoordinatorConfig, CoordinatorHandle};
use fedshield_core::ParticipantId;
use fedshield_proto::tls::client_tls_config;
use fedshield_proto::tls::pki::{CertificateAuthority, IssuedCertificate};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use common::{
    Fetched, coordinator_tls, curl, https_settings, localhost_certificate, start_coordinator,
    test_spec, tool_or_allowed_skip, wait_until,
};

/// The participants the registry of every test allows.
const REGISTERED: [&str; 2] = ["alice", "bob"];

/// A coordinator with mutual-TLS gRPC and the HTTPS endpoint, its CA, and
/// a token file.
struct Coordinator {
    work: tempfile::TempDir,
    authority: CertificateAuthority,
    tokens_path: PathBuf,
    shutdown: CancellationToken,
    handle: CoordinatorHandle,
}

impl Coordinator {
    /// Starts a coordinator whose dashboard sessions follow `sessions`.
    async fn start(sessions: DashboardSessionSettings) -> Coordinator {
        let work = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::generate("hardening test CA").unwrap();
        let server = localhost_certificate(&authority);
        std::fs::write(work.path().join("ca.pem"), authority.cert_pem()).unwrap();
        let tokens_path = work.path().join("api-tokens.toml");
        let registry =
            ParticipantRegistry::allowing(REGISTERED.map(|name| ParticipantId::new(name).unwrap()));
        let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
        config.tls = Some(coordinator_tls(&authority, &server, registry));
        let mut https = https_settings(&authority, &server, tokens_path.clone());
        https.dashboard_sessions = sessions;
        config.https = Some(https);
        let shutdown = CancellationToken::new();
        let handle = start_coordinator(config, shutdown.clone()).await;
        Coordinator {
            work,
            authority,
            tokens_path,
            shutdown,
            handle,
        }
    }

    /// Returns the HTTPS base address.
    fn base(&self) -> String {
        format!("https://{}", self.handle.https_addr().unwrap())
    }

    /// Fetches `path` with curl and `args` (off the async workers).
    async fn fetch(&self, path: &str, args: &[&str]) -> Fetched {
        let url = format!("{}{path}", self.base());
        let work = self.work.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&url, &work, &args)
        })
        .await
        .unwrap()
    }

    /// Posts the sign-in form with `token`, plus `args`.
    async fn sign_in(&self, token: &str, args: &[&str]) -> Fetched {
        let form = format!("token={token}");
        let mut all_args = vec!["--data", form.as_str()];
        all_args.extend_from_slice(args);
        self.fetch("/dashboard/login", &all_args).await
    }

    /// Fetches `/v1/status` with the dashboard session `session_id`.
    async fn status_with_session(&self, session_id: &str) -> Fetched {
        let cookie = format!("Cookie: fedshield_session={session_id}");
        self.fetch("/v1/status", &["-H", &cookie]).await
    }

    /// Fetches `path` with `Authorization: Bearer token`.
    async fn fetch_with_token(&self, path: &str, token: &str) -> Fetched {
        let bearer = format!("Authorization: Bearer {token}");
        self.fetch(path, &["-H", &bearer]).await
    }

    /// Writes `certificate` and its key into the work directory as
    /// `name.pem` and `name.key`; returns curl's arguments to present it.
    fn curl_certificate_args(&self, name: &str, certificate: &IssuedCertificate) -> Vec<String> {
        let cert_path = self.work.path().join(format!("{name}.pem"));
        let key_path = self.work.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, &certificate.cert_pem).unwrap();
        std::fs::write(&key_path, &certificate.key_pem).unwrap();
        vec![
            "--cert".to_string(),
            cert_path.display().to_string(),
            "--key".to_string(),
            key_path.display().to_string(),
        ]
    }

    /// Returns the client TLS settings presenting `certificate`.
    fn grpc_tls(&self, certificate: &IssuedCertificate) -> ClientTlsConfig {
        client_tls_config(
            self.authority.cert_pem(),
            &certificate.cert_pem,
            &certificate.key_pem,
            "localhost",
        )
    }

    /// Connects over gRPC with `tls`; `Err` names a failed connection.
    async fn grpc_client(&self, tls: ClientTlsConfig) -> Result<FederationClient<Channel>, String> {
        let channel = Endpoint::from_shared(format!("https://{}", self.handle.local_addr()))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            // A refused client certificate may surface only on the first
            // request (TLS 1.3 client auth ends after the client's Finished):
            // bound every request, so a silent server fails the test instead
            // of hanging it.
            .timeout(Duration::from_secs(10))
            .tls_config(tls)
            .map_err(|error| error.to_string())?
            .connect()
            .await
            .map_err(|error| format!("{error:?}"))?;
        Ok(FederationClient::new(channel))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.wait().await.unwrap();
    }
}

/// Returns the value of the response header `name` (lower case, as
/// [`curl`] stores headers), if present.
fn header(fetched: &Fetched, name: &str) -> Option<String> {
    let prefix = format!("{name}:");
    fetched
        .headers
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().to_string())
}

/// Returns the dashboard session id a sign-in response sets.
fn session_id_set_by(fetched: &Fetched) -> String {
    let cookie = header(fetched, "set-cookie")
        .unwrap_or_else(|| panic!("no cookie set: {}", fetched.headers));
    let value = cookie
        .split(';')
        .next()
        .and_then(|pair| pair.trim().strip_prefix("fedshield_session="))
        .unwrap_or_else(|| panic!("not a session cookie: {cookie}"));
    value.to_string()
}

fn body_text(fetched: &Fetched) -> String {
    String::from_utf8_lossy(&fetched.body).into_owned()
}

/// Returns whether curl runs; without it the calling test fails, unless
/// `FEDSHIELD_ALLOW_MISSING_TOOLS=curl` lets it skip.
fn curl_or_skip() -> bool {
    tool_or_allowed_skip("curl", "--version")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sign_in_sets_a_session_cookie_without_the_token_that_expires() {
    if !curl_or_skip() {
        return;
    }
    let session_lifetime = Duration::from_secs(3);
    let coordinator = Coordinator::start(DashboardSessionSettings {
        max_age: session_lifetime,
        idle_timeout: Duration::from_secs(3_600),
    })
    .await;
    let token = fedshield_coordinator::http::issue_token(&coordinator.tokens_path, "soc").unwrap();

    let signed_in = coordinator.sign_in(&token, &[]).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.headers);
    assert_eq!(
        header(&signed_in, "location").as_deref(),
        Some("/dashboard")
    );
    let cookie = header(&signed_in, "set-cookie").unwrap();
    assert!(
        !cookie.contains(&token) && !cookie.contains(&token[4..]),
        "the cookie holds the token: {cookie}"
    );
    let session_id = session_id_set_by(&signed_in);
    assert_eq!(session_id.len(), 64, "a 256-bit session id in hex");
    assert!(session_id.chars().all(|c| c.is_ascii_hexdigit()));
    for attribute in [
        "httponly",
        "secure",
        "samesite=strict",
        "path=/",
        "max-age=3",
    ] {
        assert!(
            cookie.split(';').any(|part| part.trim() == attribute),
            "{cookie} lacks {attribute}"
        );
    }
    let with_session = coordinator.status_with_session(&session_id).await;
    assert_eq!(with_session.status, 200, "{}", body_text(&with_session));
    let dashboard = coordinator
        .fetch(
            "/dashboard",
            &["-H", &format!("Cookie: fedshield_session={session_id}")],
        )
        .await;
    assert_eq!(dashboard.status, 200);
    assert!(body_text(&dashboard).contains("/dashboard/logout"));

    // A forged or guessed session id is refused.
    let forged = coordinator.status_with_session(&"0".repeat(64)).await;
    assert_eq!(forged.status, 401);

    // The session ends at its lifetime, however busy.
    tokio::time::sleep(session_lifetime + Duration::from_millis(500)).await;
    let expired = coordinator.status_with_session(&session_id).await;
    assert_eq!(expired.status, 401, "{}", body_text(&expired));
    assert!(
        body_text(&expired).contains("expired"),
        "{}",
        body_text(&expired)
    );

    // Signing out ends a session and deletes the cookie.
    let second = session_id_set_by(&coordinator.sign_in(&token, &[]).await);
    assert_eq!(coordinator.status_with_session(&second).await.status, 200);
    let signed_out = coordinator
        .fetch(
            "/dashboard/logout",
            &[
                "-X",
                "POST",
                "-H",
                &format!("Cookie: fedshield_session={second}"),
            ],
        )
        .await;
    assert_eq!(signed_out.status, 303);
    assert!(
        header(&signed_out, "set-cookie")
            .unwrap()
            .contains("max-age=0")
    );
    assert_eq!(coordinator.status_with_session(&second).await.status, 401);
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_through_the_address_or_from_another_site_is_refused() {
    if !curl_or_skip() {
        return;
    }
    let coordinator = Coordinator::start(DashboardSessionSettings::default()).await;
    let token = fedshield_coordinator::http::issue_token(&coordinator.tokens_path, "soc").unwrap();

    // A link carrying a token (login CSRF: the victim would be signed in as
    // the attacker) shows the sign-in form and sets nothing.
    let through_address = coordinator
        .fetch(&format!("/dashboard?token={token}"), &[])
        .await;
    assert_eq!(through_address.status, 401, "{}", through_address.headers);
    assert_eq!(header(&through_address, "set-cookie"), None);
    let page = body_text(&through_address);
    assert!(page.contains("action=\"/dashboard/login\""), "{page}");
    assert!(!page.contains(&token));

    // A form another site posts is refused, whichever header gives it away.
    for cross_site in [
        "Origin: https://attacker.example",
        "Sec-Fetch-Site: cross-site",
    ] {
        let forged = coordinator.sign_in(&token, &["-H", cross_site]).await;
        assert_eq!(forged.status, 403, "{cross_site}: {}", forged.headers);
        assert_eq!(header(&forged, "set-cookie"), None, "{cross_site}");
    }
    // The same form from the dashboard itself signs in.
    let origin = format!("Origin: {}", coordinator.base());
    let same_site = coordinator
        .sign_in(
            &token,
            &["-H", &origin, "-H", "Sec-Fetch-Site: same-origin"],
        )
        .await;
    assert_eq!(same_site.status, 303, "{}", same_site.headers);
    let wrong_token = coordinator.sign_in("fst_not-a-token", &[]).await;
    assert_eq!(wrong_token.status, 401);
    assert_eq!(header(&wrong_token, "set-cookie"), None);
    coordinator.stop().await;
}

/// Runs the `fedshield` binary with `args`; returns its stdout, after
/// checking it succeeded.
fn fedshield_cli(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedshield"))
        .args(args)
        .output()
        .expect("run fedshield");
    assert!(
        output.status.success(),
        "fedshield {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_are_refused_and_their_dashboard_sessions_end() {
    if !curl_or_skip() {
        return;
    }
    let coordinator = Coordinator::start(DashboardSessionSettings::default()).await;
    let tokens_file = coordinator.tokens_path.display().to_string();
    let short_lifetime = Duration::from_secs(2);
    let short_lived = create_token(
        &coordinator.tokens_path,
        "short-lived",
        TokenLifetime::Limited(short_lifetime),
    )
    .unwrap();
    let created = fedshield_cli(&[
        "coordinator",
        "tokens",
        "create",
        "detector-2",
        "--api-tokens",
        &tokens_file,
        "--expires-in-days",
        "30",
    ]);
    let revoked_later = created.trim().to_string();
    assert!(revoked_later.starts_with("fst_"), "{created}");

    let short_session = session_id_set_by(&coordinator.sign_in(&short_lived, &[]).await);
    let revoked_session = session_id_set_by(&coordinator.sign_in(&revoked_later, &[]).await);
    for (token, session) in [
        (&short_lived, &short_session),
        (&revoked_later, &revoked_session),
    ] {
        assert_eq!(
            coordinator
                .fetch_with_token("/v1/status", token)
                .await
                .status,
            200
        );
        assert_eq!(coordinator.status_with_session(session).await.status, 200);
    }

    // Revoking with the command line takes effect for the next request, on
    // the token and on the sessions it opened, without a restart.
    fedshield_cli(&[
        "coordinator",
        "tokens",
        "revoke",
        "detector-2",
        "--api-tokens",
        &tokens_file,
    ]);
    let revoked = coordinator
        .fetch_with_token("/v1/models/latest", &revoked_later)
        .await;
    assert_eq!(revoked.status, 403, "{}", body_text(&revoked));
    assert!(body_text(&revoked).contains("revoked"));
    let revoked_by_session = coordinator.status_with_session(&revoked_session).await;
    assert_eq!(revoked_by_session.status, 401);
    assert!(body_text(&revoked_by_session).contains("revoked"));
    assert!(coordinator.sign_in(&revoked_later, &[]).await.status >= 400);

    // The expired token is refused, and so is its session.
    tokio::time::sleep(short_lifetime + Duration::from_millis(1_100)).await;
    let expired = coordinator
        .fetch_with_token("/v1/models/latest", &short_lived)
        .await;
    assert_eq!(expired.status, 401, "{}", body_text(&expired));
    assert!(body_text(&expired).contains("expired"));
    let expired_session = coordinator.status_with_session(&short_session).await;
    assert_eq!(expired_session.status, 401);
    assert!(body_text(&expired_session).contains("expired"));

    // `tokens list` names every token and its state, never a secret.
    let listed = fedshield_cli(&[
        "coordinator",
        "tokens",
        "list",
        "--api-tokens",
        &tokens_file,
    ]);
    let line_of = |name: &str| {
        listed
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))
            .to_string()
    };
    assert!(line_of("short-lived").ends_with("expired"), "{listed}");
    assert!(line_of("detector-2").ends_with("revoked"), "{listed}");
    assert!(!listed.contains(&short_lived[4..]) && !listed.contains(&revoked_later[4..]));
    coordinator.stop().await;
}

/// Returns a certificate for `subject` signed by `authority` with exactly
/// the extended key usages `usages` (none: no EKU extension at all).
fn certificate_with_usages(
    authority: &CertificateAuthority,
    subject: &str,
    usages: Vec<rcgen::ExtendedKeyUsagePurpose>,
) -> IssuedCertificate {
    let (ca_cert_pem, ca_key_pem) = authority.to_pem();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, subject);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, &issuer).unwrap();
    IssuedCertificate {
        cert_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        sha256_fingerprint: fedshield_proto::tls::sha256_fingerprint(certificate.der()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_without_the_client_auth_usage_are_refused_at_the_handshake() {
    if !curl_or_skip() {
        return;
    }
    let coordinator = Coordinator::start(DashboardSessionSettings::default()).await;
    // Registered subjects, signed by the participant CA: only the usage differs.
    let proper = coordinator.authority.issue_client("alice", 1).unwrap();
    let without_usage = certificate_with_usages(&coordinator.authority, "alice", Vec::new());
    let server_only = certificate_with_usages(
        &coordinator.authority,
        "bob",
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth],
    );

    // gRPC: the proper certificate is served, the others fail the handshake.
    let mut client = coordinator
        .grpc_client(coordinator.grpc_tls(&proper))
        .await
        .unwrap();
    client.get_status(pb::GetStatusRequest {}).await.unwrap();
    for (what, certificate) in [
        ("no extended key usage", &without_usage),
        ("serverAuth only", &server_only),
    ] {
        let outcome = match coordinator
            .grpc_client(coordinator.grpc_tls(certificate))
            .await
        {
            Ok(mut client) => client
                .get_status(pb::GetStatusRequest {})
                .await
                .map(|_| ())
                .map_err(|status| format!("{status:?}")),
            Err(error) => Err(error),
        };
        let error = outcome.expect_err(what);
        assert!(
            !error.contains("PermissionDenied") && !error.contains("Unauthenticated"),
            "{what}: refused by the service, not at the handshake: {error}"
        );
    }

    // HTTPS: no response at all with those certificates.
    let proper_args = coordinator.curl_certificate_args("proper", &proper);
    let proper_args: Vec<&str> = proper_args.iter().map(String::as_str).collect();
    let served = coordinator.fetch("/v1/models/latest", &proper_args).await;
    assert_eq!(served.status, 200);
    for (what, certificate) in [
        ("no extended key usage", &without_usage),
        ("serverAuth only", &server_only),
    ] {
        let args = coordinator.curl_certificate_args("refused", certificate);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let refused = coordinator.fetch("/v1/models/latest", &args).await;
        assert_eq!(
            refused.status, 0,
            "{what}: got an HTTP response {}",
            refused.headers
        );
        assert!(refused.body.is_empty(), "{what}");
    }
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_says_nosniff_and_no_error_body_repeats_the_request() {
    if !curl_or_skip() {
        return;
    }
    let coordinator = Coordinator::start(DashboardSessionSettings::default()).await;
    let token = fedshield_coordinator::http::issue_token(&coordinator.tokens_path, "soc").unwrap();
    let bearer = format!("Authorization: Bearer {token}");
    let hostile = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let hostile_header = "Authorization: Basic <script>alert(1)</script>";
    let requests: Vec<(String, Vec<String>)> = vec![
        (
            "/v1/models/latest".into(),
            vec!["-H".into(), bearer.clone()],
        ),
        (
            "/v1/models/0/card".into(),
            vec!["-H".into(), bearer.clone()],
        ),
        ("/v1/status".into(), vec!["-H".into(), bearer.clone()]),
        ("/metrics".into(), vec!["-H".into(), bearer.clone()]),
        ("/dashboard".into(), vec![]),
        ("/dashboard/app.js".into(), vec![]),
        ("/dashboard/style.css".into(), vec![]),
        ("/v1/status".into(), vec![]),
        (
            "/v1/models/latest".into(),
            vec!["-H".into(), hostile_header.into()],
        ),
        (
            format!("/v1/models/{hostile}"),
            vec!["-H".into(), bearer.clone()],
        ),
        (
            format!("/v1/models/{hostile}/card"),
            vec!["-H".into(), bearer.clone()],
        ),
        (format!("/{hostile}?q={hostile}"), vec![]),
        (format!("/dashboard?token={hostile}"), vec![]),
        (
            "/dashboard/login".into(),
            vec!["--data".into(), "token=<script>alert(1)</script>".into()],
        ),
    ];
    let mut num_errors = 0;
    for (path, args) in &requests {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let fetched = coordinator.fetch(path, &args).await;
        assert_ne!(fetched.status, 0, "{path}: no response");
        assert_eq!(
            header(&fetched, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path} ({}): {}",
            fetched.status,
            fetched.headers
        );
        if fetched.status >= 400 {
            num_errors += 1;
            let body = body_text(&fetched).to_lowercase();
            for echoed in ["<script>", "%3cscript", "alert(1)"] {
                assert!(
                    !body.contains(echoed),
                    "{path} ({}) repeats the request: {body}",
                    fetched.status
                );
            }
        }
    }
    assert!(num_errors >= 6, "the hostile requests were refused");
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_model_card_is_served_like_a_numbered_one() {
    if !curl_or_skip() {
        return;
    }
    let coordinator = Coordinator::start(DashboardSessionSettings::default()).await;
    let token = fedshield_coordinator::http::issue_token(&coordinator.tokens_path, "soc").unwrap();
    let latest = coordinator
        .fetch_with_token("/v1/models/latest/card", &token)
        .await;
    let numbered = coordinator
        .fetch_with_token("/v1/models/0/card", &token)
        .await;
    assert_eq!(latest.status, 200, "{}", body_text(&latest));
    assert_eq!(numbered.status, 200);
    assert_eq!(latest.body, numbered.body);
    let card: serde_json::Value = serde_json::from_slice(&latest.body).unwrap();
    assert_eq!(card["version"], 0);
    assert_eq!(
        card["sha256"],
        coordinator
            .handle
            .engine()
            .current_model()
            .card
            .sha256
            .as_str()
    );
    let anonymous = coordinator.fetch("/v1/models/latest/card", &[]).await;
    assert_eq!(anonymous.status, 401);
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloads_sha256_equals_its_etag_and_sha256_header() {
    if !curl_or_skip() {
        return;
    }
    let coordinator = Coordinator::start(DashboardSessionSettings::default()).await;
    let token = fedshield_coordinator::http::issue_token(&coordinator.tokens_path, "soc").unwrap();
    let card_sha256 = coordinator
        .handle
        .engine()
        .current_model()
        .card
        .sha256
        .clone();
    for path in ["/v1/models/latest", "/v1/models/0"] {
        let downloaded = coordinator.fetch_with_token(path, &token).await;
        assert_eq!(downloaded.status, 200);
        // What `sha256sum` prints for the downloaded file.
        let file_sha256 = fedshield_proto::tls::sha256_fingerprint(&downloaded.body);
        assert_eq!(
            header(&downloaded, "etag"),
            Some(format!("\"{file_sha256}\"")),
            "{path}"
        );
        assert_eq!(
            header(&downloaded, "x-fedshield-sha256"),
            Some(file_sha256.clone()),
            "{path}"
        );
        // The parameters' digest, which identifies the version, is named apart.
        assert_eq!(
            header(&downloaded, "x-fedshield-weights-sha256"),
            Some(card_sha256.clone()),
            "{path}"
        );
        let weights =
            fedshield_core::model::weights::ModelWeights::from_safetensors(&downloaded.body)
                .unwrap();
        assert_eq!(weights.sha256(), card_sha256);
        // The tag works for conditional requests.
        let bearer = format!("Authorization: Bearer {token}");
        let if_none_match = format!("If-None-Match: \"{file_sha256}\"");
        let conditional = coordinator
            .fetch(path, &["-H", &bearer, "-H", &if_none_match])
            .await;
        assert_eq!(conditional.status, 304, "{path}");
    }
    coordinator.stop().await;
}

/// Everything the test process logged (INFO and above, as the binary's
/// text format writes it), captured once for the whole test binary.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer_logs = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            // Keep what the coordinator writes: the defence must not rely on
            // one subscriber's sanitizing.
            .with_ansi_sanitization(false)
            .with_writer(move || LogWriter(writer_logs.clone()))
            .init();
        logs
    })
    .clone()
}

/// Appends log output to the shared buffer.
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs_text(logs: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

/// A participant joined over gRPC by hand; keeps its `Join` stream open.
struct JoinedParticipant {
    client: FederationClient<Channel>,
    session_token: String,
    events: tonic::Streaming<pb::CoordinatorEvent>,
}

impl JoinedParticipant {
    async fn join(coordinator: &Coordinator, name: &str) -> JoinedParticipant {
        let certificate = coordinator.authority.issue_client(name, 1).unwrap();
        let mut client = coordinator
            .grpc_client(coordinator.grpc_tls(&certificate))
            .await
            .unwrap();
        let mut events = client
            .join(pb::JoinRequest {
                participant_id: name.to_string(),
                client_version: "hardening-test".to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let Some(pb::coordinator_event::Event::Welcome(welcome)) =
            events.message().await.unwrap().unwrap().event
        else {
            panic!("the first event is the welcome");
        };
        JoinedParticipant {
            client,
            session_token: welcome.session_token,
            events,
        }
    }

    /// Returns the id of the next announced round.
    async fn next_round(&mut self) -> u64 {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(20), self.events.message())
                .await
                .expect("a round is announced in time")
                .unwrap()
                .expect("the join stream is open")
                .event;
            if let Some(pb::coordinator_event::Event::RoundAnnouncement(announcement)) = event {
                return announcement.round_id;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_participant_ids_and_decline_reasons_reach_the_logs_escaped_and_bounded() {
    let logs = captured_logs();
    let coordinator = Coordinator::start(DashboardSessionSettings::default()).await;
    // A forged log record after a newline, and a long tail: 3,349 bytes.
    let forged_line = "2026-01-01T00:00:00.000000Z  INFO fedshield_coordinator: FORGED-ID-RECORD";
    let forged_id = format!(
        "alice\n{forged_line}\n{}",
        "A".repeat(3_349 - 7 - forged_line.len())
    );
    assert_eq!(forged_id.len(), 3_349);

    // From an unregistered certificate (refused before the id is checked)
    // and from a registered one claiming the forged id (impersonation).
    for name in ["mallory", "alice"] {
        let certificate = coordinator.authority.issue_client(name, 1).unwrap();
        let mut client = coordinator
            .grpc_client(coordinator.grpc_tls(&certificate))
            .await
            .unwrap();
        let refused = client
            .join(pb::JoinRequest {
                participant_id: forged_id.clone(),
                client_version: "hardening-test".to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}");
        assert!(
            refused.message().len() < 1_000 && !refused.message().contains('\n'),
            "{name}: the status repeats the forged id: {}",
            refused.message()
        );
    }

    // A selected participant declines with a reason that forges a record
    // and drives the operator's terminal.
    let mut alice = JoinedParticipant::join(&coordinator, "alice").await;
    let mut bob = JoinedParticipant::join(&coordinator, "bob").await;
    let round_id = alice.next_round().await;
    assert_eq!(bob.next_round().await, round_id);
    let reason = "disk full\n2026-01-01T00:00:00.000000Z  INFO fedshield_coordinator: FORGED-REASON-RECORD\u{1b}[2J\u{1b}[31m";
    alice
        .client
        .decline_round(pb::DeclineRoundRequest {
            round_id,
            participant_id: "alice".to_string(),
            session_token: alice.session_token.clone(),
            reason: reason.to_string(),
        })
        .await
        .unwrap();

    let expected_id = format!("({} bytes)", forged_id.len());
    wait_until(
        "the refusals and the decline are logged",
        Duration::from_secs(10),
        || {
            let text = logs_text(&logs);
            let found = text.contains("participant declined the round")
                && text.matches(expected_id.as_str()).count() >= 2;
            async move { found }
        },
    )
    .await;
    let text = logs_text(&logs);
    assert!(
        text.contains("disk full\\n2026-01-01"),
        "the reason is logged escaped"
    );
    assert!(text.contains("\\u{1b}[2J"), "ESC is logged as an escape");
    for line in text.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00.000000Z"),
            "a forged record: {line}"
        );
        assert!(!line.contains('\u{1b}'), "a raw terminal escape: {line:?}");
        assert!(
            !line.contains(&"A".repeat(200)),
            "an unbounded id: {}",
            line.len()
        );
    }
    drop(alice);
    drop(bob);
    coordinator.stop().await;
}
