//! Real handshakes over 127.0.0.1: the accept loop, the client CA check, and
//! the identity tonic hands to a handler.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::pki::{CertificateAuthority, IssuedCertificate};
use super::*;
use crate::v1;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const TEST_DEADLINE: Duration = Duration::from_secs(10);

/// A CA and the coordinator's certificate for `localhost` and 127.0.0.1.
struct TestPki {
    authority: CertificateAuthority,
    server: IssuedCertificate,
}

impl TestPki {
    fn new() -> Self {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let server = authority
            .issue_server(
                &["localhost".to_string()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                30,
            )
            .unwrap();
        TestPki { authority, server }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        server_config_pem(
            &self.server.cert_pem,
            &self.server.key_pem,
            self.authority.cert_pem(),
        )
        .unwrap()
    }
}

/// A running accept loop.
struct TestServer {
    address: SocketAddr,
    incoming: TlsIncoming,
    shutdown: CancellationToken,
}

async fn start_server(
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    max_concurrent_handshakes: usize,
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let limits = ListenerLimits {
        handshake_timeout,
        max_handshakes: max_concurrent_handshakes,
        max_handshakes_per_ip: max_concurrent_handshakes,
        ..ListenerLimits::default()
    };
    let incoming = serve_tls_incoming(
        listener,
        config,
        ConnectionTracker::with_exact_limits(limits),
        shutdown.clone(),
    );
    TestServer {
        address,
        incoming,
        shutdown,
    }
}

/// Connects with the CA as trust root, presenting `identity` when given.
async fn connect(
    address: SocketAddr,
    ca_pem: &str,
    identity: Option<&IssuedCertificate>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    for root in load_certificates_pem(ca_pem).unwrap() {
        roots.add(root).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(issued) => builder
            .with_client_auth_cert(
                load_certificates_pem(&issued.cert_pem).unwrap(),
                load_private_key_pem(&issued.key_pem).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp_stream = TcpStream::connect(address).await?;
    let server_name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp_stream)
        .await
}

/// Asserts that the server refuses the connection: with TLS 1.3 the client's
/// handshake may complete before the server has checked its certificate, so
/// the refusal shows on the first read at the latest.
async fn assert_refused(address: SocketAddr, ca_pem: &str, identity: Option<&IssuedCertificate>) {
    let Ok(mut tls_stream) = connect(address, ca_pem, identity).await else {
        return;
    };
    let _ = tls_stream.write_all(b"ping").await;
    let mut buffer = [0_u8; 4];
    let read = tokio::time::timeout(TEST_DEADLINE, tls_stream.read(&mut buffer))
        .await
        .expect("the server answers a refused client within the deadline");
    assert!(
        matches!(read, Err(_) | Ok(0)),
        "the server accepted the connection: {read:?}"
    );
}

/// Returns the identity of the next connection the accept loop yields.
async fn next_identity(incoming: &mut TlsIncoming) -> PeerIdentity {
    let tls_stream = tokio::time::timeout(TEST_DEADLINE, incoming.next())
        .await
        .expect("a connection within the deadline")
        .expect("the stream is open")
        .expect("the stream yields no errors");
    let (_, session) = tls_stream.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    let leaf = &session.peer_certificates().expect("a client certificate")[0];
    PeerIdentity::from_der(leaf).unwrap()
}

/// Asserts that a good client is the next connection yielded, so the refused
/// ones before it were not.
async fn assert_next_yielded_is_a_good_client(pki: &TestPki, server: &mut TestServer) {
    let good = pki.authority.issue_client("good-participant", 1).unwrap();
    let client = connect(server.address, pki.authority.cert_pem(), Some(&good))
        .await
        .unwrap();
    let identity = next_identity(&mut server.incoming).await;
    assert_eq!(identity.common_name, "good-participant");
    drop(client);
}

/// Log lines written while it is installed on this thread (tests run on a
/// current-thread runtime, so the accept loop's tasks log here too).
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until a "tls handshake refused" line containing `reason` appears.
    async fn wait_for_refusal(&self, reason: &str) {
        let deadline = Instant::now() + TEST_DEADLINE;
        loop {
            let text = self.text();
            let found = text.lines().any(|line| {
                line.contains("tls handshake refused")
                    && line.to_lowercase().contains(&reason.to_lowercase())
            });
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no refusal mentioning {reason:?} in the logs:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn client_certificate_from_the_ca_is_accepted_and_identified() {
    let pki = TestPki::new();
    let mut server = start_server(pki.server_config(), HANDSHAKE_TIMEOUT, 8).await;
    let issued = pki.authority.issue_client("acme-soc", 30).unwrap();

    let mut client = connect(server.address, pki.authority.cert_pem(), Some(&issued))
        .await
        .unwrap();
    let tls_stream = tokio::time::timeout(TEST_DEADLINE, server.incoming.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (_, session) = tls_stream.get_ref();
    let leaf = &session.peer_certificates().unwrap()[0];
    let identity = PeerIdentity::from_der(leaf).unwrap();
    assert_eq!(identity.common_name, "acme-soc");
    assert_eq!(identity.sha256_fingerprint, issued.sha256_fingerprint);

    // Bytes flow both ways over the accepted stream.
    let mut server_stream = tls_stream;
    client.write_all(b"ping").await.unwrap();
    let mut buffer = [0_u8; 4];
    server_stream.read_exact(&mut buffer).await.unwrap();
    assert_eq!(&buffer, b"ping");
    server_stream.write_all(b"pong").await.unwrap();
    client.read_exact(&mut buffer).await.unwrap();
    assert_eq!(&buffer, b"pong");

    server.shutdown.cancel();
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let pki = TestPki::new();
    let mut server = start_server(pki.server_config(), HANDSHAKE_TIMEOUT, 8).await;

    assert_refused(server.address, pki.authority.cert_pem(), None).await;
    logs.wait_for_refusal("no certificates").await;
    assert_next_yielded_is_a_good_client(&pki, &mut server).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let pki = TestPki::new();
    let mut server = start_server(pki.server_config(), HANDSHAKE_TIMEOUT, 8).await;
    let other_authority = CertificateAuthority::generate("other CA").unwrap();
    let stranger = other_authority.issue_client("acme-soc", 30).unwrap();

    assert_refused(server.address, pki.authority.cert_pem(), Some(&stranger)).await;
    logs.wait_for_refusal("UnknownIssuer").await;
    assert_next_yielded_is_a_good_client(&pki, &mut server).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let pki = TestPki::new();
    let mut server = start_server(pki.server_config(), HANDSHAKE_TIMEOUT, 8).await;
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let expired = pki
        .authority
        .issue_client_with_validity("acme-soc", now - 30 * day, now - day)
        .unwrap();

    assert_refused(server.address, pki.authority.cert_pem(), Some(&expired)).await;
    logs.wait_for_refusal("expired").await;
    assert_next_yielded_is_a_good_client(&pki, &mut server).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn server_certificate_is_checked_by_the_client() {
    let pki = TestPki::new();
    let server = start_server(pki.server_config(), HANDSHAKE_TIMEOUT, 8).await;
    let other_authority = CertificateAuthority::generate("other CA").unwrap();
    let issued = pki.authority.issue_client("acme-soc", 30).unwrap();

    let error = connect(server.address, other_authority.cert_pem(), Some(&issued))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    server.shutdown.cancel();
}

#[tokio::test]
async fn stalled_handshake_times_out_and_frees_its_slot() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let pki = TestPki::new();
    // One slot: the stalled connection holds it until its timeout.
    let mut server = start_server(pki.server_config(), Duration::from_millis(200), 1).await;

    let _stalled = TcpStream::connect(server.address).await.unwrap();
    logs.wait_for_refusal("no handshake within 200 ms").await;
    assert_next_yielded_is_a_good_client(&pki, &mut server).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn shutdown_ends_the_incoming_stream() {
    let pki = TestPki::new();
    let mut server = start_server(pki.server_config(), HANDSHAKE_TIMEOUT, 8).await;
    server.shutdown.cancel();
    let end = tokio::time::timeout(TEST_DEADLINE, server.incoming.next())
        .await
        .unwrap();
    assert!(end.is_none());
}

/// A `Federation` service whose `GetStatus` records the caller's identity.
#[derive(Default)]
struct IdentityRecorder {
    seen: Mutex<Vec<(Option<PeerIdentity>, Option<SocketAddr>)>>,
}

type EmptyStream<T> = tokio_stream::Empty<Result<T, Status>>;

#[tonic::async_trait]
impl v1::federation_server::Federation for IdentityRecorder {
    type JoinStream = EmptyStream<v1::CoordinatorEvent>;
    type DownloadModelStream = EmptyStream<v1::ModelChunk>;

    async fn join(
        &self,
        _request: Request<v1::JoinRequest>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn download_model(
        &self,
        _request: Request<v1::DownloadModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn submit_update(
        &self,
        _request: Request<tonic::Streaming<v1::UpdateChunk>>,
    ) -> Result<Response<v1::SubmitUpdateResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn reserve_upload_slot(
        &self,
        _request: Request<v1::ReserveUploadSlotRequest>,
    ) -> Result<Response<v1::UploadSlot>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn decline_round(
        &self,
        _request: Request<v1::DeclineRoundRequest>,
    ) -> Result<Response<v1::DeclineRoundResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn advertise_keys(
        &self,
        _request: Request<v1::AdvertiseKeysRequest>,
    ) -> Result<Response<v1::SecureAggregationRoster>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn share_keys(
        &self,
        _request: Request<v1::ShareKeysRequest>,
    ) -> Result<Response<v1::SharesForParticipant>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn submit_masked_update(
        &self,
        _request: Request<tonic::Streaming<v1::MaskedUpdateChunk>>,
    ) -> Result<Response<v1::SubmitUpdateResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn await_unmask(
        &self,
        _request: Request<v1::AwaitUnmaskRequest>,
    ) -> Result<Response<v1::UnmaskRequest>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn reveal_shares(
        &self,
        _request: Request<v1::RevealSharesRequest>,
    ) -> Result<Response<v1::RevealSharesResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::CoordinatorStatus>, Status> {
        let identity = peer_identity(&request);
        self.seen
            .lock()
            .unwrap()
            .push((identity, request.remote_addr()));
        Ok(Response::new(v1::CoordinatorStatus::default()))
    }
}

#[tokio::test]
async fn tonic_handler_sees_the_participant_identity() {
    let pki = TestPki::new();
    let server = start_server(pki.server_config(), HANDSHAKE_TIMEOUT, 8).await;
    let recorder = Arc::new(IdentityRecorder::default());
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(v1::federation_server::FederationServer::from_arc(
                recorder.clone(),
            ))
            .serve_with_incoming_shutdown(
                server.incoming,
                server.shutdown.clone().cancelled_owned(),
            ),
    );
    let issued = pki.authority.issue_client("acme-soc", 30).unwrap();
    let client_config = client_tls_config(
        pki.authority.cert_pem(),
        &issued.cert_pem,
        &issued.key_pem,
        "localhost",
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", server.address))
        .unwrap()
        .tls_config(client_config)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = v1::federation_client::FederationClient::new(channel);
    client.get_status(v1::GetStatusRequest {}).await.unwrap();

    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (identity, remote_address) = &seen[0];
    let identity = identity.as_ref().expect("tonic passes the client chain");
    assert_eq!(identity.common_name, "acme-soc");
    assert_eq!(identity.sha256_fingerprint, issued.sha256_fingerprint);
    assert!(remote_address.is_some_and(|address| address.ip().is_loopback()));

    drop(client);
    server.shutdown.cancel();
    serving.await.unwrap().unwrap();
}

#[test]
fn server_and_client_files_load_and_bad_files_are_named() {
    let directory = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let issued = pki.authority.issue_client("acme-soc", 30).unwrap();
    let path = |name: &str| directory.path().join(name);
    std::fs::write(path("ca.pem"), pki.authority.cert_pem()).unwrap();
    std::fs::write(path("server.pem"), &pki.server.cert_pem).unwrap();
    std::fs::write(path("server.key"), &pki.server.key_pem).unwrap();
    std::fs::write(path("client.pem"), &issued.cert_pem).unwrap();
    std::fs::write(path("client.key"), &issued.key_pem).unwrap();

    let files = ServerTlsFiles {
        cert_chain: path("server.pem"),
        key: path("server.key"),
        client_ca: path("ca.pem"),
    };
    files.load().unwrap();
    let swapped = ServerTlsFiles {
        key: path("server.pem"),
        ..files.clone()
    };
    let message = swapped.load().unwrap_err().to_string();
    assert!(
        message.contains("server.pem") && message.contains("no PEM private key"),
        "{message}"
    );
    let foreign_key = ServerTlsFiles {
        key: path("client.key"),
        ..files
    };
    let message = foreign_key.load().unwrap_err().to_string();
    assert!(
        message.starts_with("invalid server TLS configuration"),
        "{message}"
    );

    client_tls_config_from_files(
        path("ca.pem"),
        path("client.pem"),
        path("client.key"),
        "localhost",
    )
    .unwrap();
    let message = client_tls_config_from_files(
        path("ca.pem"),
        path("client.pem"),
        path("missing.key"),
        "localhost",
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.starts_with("cannot read private key file "),
        "{message}"
    );
    assert!(message.contains("missing.key"), "{message}");
    let message = client_tls_config_from_files(
        path("ca.pem"),
        path("client.pem"),
        path("server.key"),
        "localhost",
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("server.key") && message.contains("does not fit certificate"),
        "{message}"
    );
}
