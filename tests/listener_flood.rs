//! Unauthenticated floods of the coordinator's TLS listeners, over real
//! sockets on 127.0.0.1: idle TCP connections, stalled TLS handshakes, TLS
//! connections that never send a request, and slowloris headers, from many
//! source addresses of 127.0.0.0/8 (Linux routes all of it to `lo`, so a
//! client can bind 127.0.0.x before connecting and per-IP caps apply).
//!
//! - In process: an honest round over mutual TLS completes, and curl
//!   downloads the model several times, while a bounded flood keeps ~640
//!   hostile connections open (each reopened 250 ms after the coordinator
//!   closes it).
//! - The real `fedshield coordinator` binary: its open-file limit is lowered
//!   (`prlimit`) under a flood until accept() fails with EMFILE; while the
//!   flood still holds every socket, both ports answer again.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_coordinator::{CoordinatorConfig, CoordinatorHandle};
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::telemetry::{OrgProfile, synthetic_dataset};
use fedshield_core::{ModelVersion, ParticipantId};
use fedshield_participant::{Participant, ParticipantConfig};
use fedshield_proto::tls::pki::{CertificateAuthority, IssuedCertificate};
use fedshield_proto::tls::rustls::pki_types::ServerName;
use fedshield_proto::tls::rustls::{ClientConfig, RootCertStore};
use fedshield_proto::tls::tokio_rustls::TlsConnector;
use fedshield_proto::tls::{
    ListenerLimits, client_tls_config, crypto_provider, load_certificates_pem,
};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use common::{
    coordinator_tls, curl_installed, free_port, https_settings, localhost_certificate,
    start_coordinator, test_spec, wait_until,
};

/// Longest time one curl download may take while the flood runs (curl's
/// `--max-time`): the bound this file documents for model downloads.
const DOWNLOAD_BOUND: Duration = Duration::from_secs(10);

/// Longest time the honest round may take while the flood runs, on a
/// loaded 2-core machine.
const ROUND_BOUND: Duration = Duration::from_secs(120);

/// How long a flood connection waits before reopening after the coordinator
/// closed it (the flood is bounded in rate as well as in count).
const REOPEN_DELAY: Duration = Duration::from_millis(250);

/// Interval between two header lines of a slowloris connection.
const SLOWLORIS_DRIP: Duration = Duration::from_millis(500);

/// The limits of the in-process coordinator: short timeouts so the test is
/// quick, caps well below the flood so that shedding must happen.
fn flood_test_limits() -> ListenerLimits {
    ListenerLimits {
        handshake_timeout: Duration::from_secs(2),
        max_handshakes: 96,
        max_handshakes_per_ip: 8,
        max_connections: 192,
        max_connections_per_ip: 16,
        idle_timeout: Duration::from_secs(20),
        header_read_timeout: Duration::from_secs(2),
    }
}

/// What one flood connection does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloodKind {
    /// Connects and sends nothing.
    IdleTcp,
    /// Sends the first bytes of a TLS ClientHello and stalls.
    StalledClientHello,
    /// Completes TLS (ALPN h2, no client certificate) and sends nothing.
    TlsWithoutRequest,
    /// Completes TLS (HTTP/1.1) and sends a request's headers one line every
    /// [`SLOWLORIS_DRIP`], never ending them.
    Slowloris,
}

/// Counts of the whole flood.
#[derive(Default)]
struct FloodCounts {
    /// Connections opened (TCP connected, and TLS completed where the kind needs it).
    num_opened: AtomicU64,
    /// Of those, the ones of the kinds that stall before TLS.
    num_stalled_opened: AtomicU64,
    /// Connections the coordinator closed while the flood held them.
    num_closed_by_server: AtomicU64,
}

/// A bounded flood: a fixed set of tasks, each holding at most one
/// connection, reopened [`REOPEN_DELAY`] after the coordinator closes it.
struct Flood {
    counts: Arc<FloodCounts>,
    num_tasks: usize,
    /// Tasks of the kinds that stall before TLS.
    num_stalled_tasks: usize,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Flood {
    fn new() -> Self {
        Flood {
            counts: Arc::default(),
            num_tasks: 0,
            num_stalled_tasks: 0,
            stop: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// Adds `count` connections of `kind` from `source` to `target`.
    fn add(
        &mut self,
        kind: FloodKind,
        source: IpAddr,
        target: SocketAddr,
        count: usize,
        tls: &Arc<ClientConfig>,
    ) {
        for _ in 0..count {
            let counts = Arc::clone(&self.counts);
            let stop = self.stop.clone();
            let tls = Arc::clone(tls);
            self.num_tasks += 1;
            if matches!(kind, FloodKind::IdleTcp | FloodKind::StalledClientHello) {
                self.num_stalled_tasks += 1;
            }
            self.tasks.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    if let Ok(connection) = open_flood_connection(kind, source, target, &tls).await
                    {
                        counts.num_opened.fetch_add(1, Ordering::Relaxed);
                        if matches!(kind, FloodKind::IdleTcp | FloodKind::StalledClientHello) {
                            counts.num_stalled_opened.fetch_add(1, Ordering::Relaxed);
                        }
                        let closed = tokio::select! {
                            () = stop.cancelled() => false,
                            () = hold(kind, connection) => true,
                        };
                        if closed {
                            counts.num_closed_by_server.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(REOPEN_DELAY) => {}
                    }
                }
            }));
        }
    }

    /// Waits until every task of a kind that stalls before TLS has opened
    /// its first connection (TLS ones may be starved by them: that is the
    /// attack).
    async fn wait_until_up(&self) {
        let counts = Arc::clone(&self.counts);
        let num_stalled_tasks = self.num_stalled_tasks as u64;
        wait_until(
            "every stalling flood connection opened",
            Duration::from_secs(60),
            || {
                let counts = Arc::clone(&counts);
                async move { counts.num_stalled_opened.load(Ordering::Relaxed) >= num_stalled_tasks }
            },
        )
        .await;
    }

    /// Closes every flood connection and waits for the tasks.
    async fn stop(self) -> Arc<FloodCounts> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
        self.counts
    }
}

/// A connected flood connection.
enum FloodConnection {
    Tcp(TcpStream),
    Tls(Box<fedshield_proto::tls::tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to `target` from `source` (port chosen by the kernel).
async fn connect_from(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// Opens one connection of `kind`.
async fn open_flood_connection(
    kind: FloodKind,
    source: IpAddr,
    target: SocketAddr,
    tls: &Arc<ClientConfig>,
) -> std::io::Result<FloodConnection> {
    let mut tcp_stream = connect_from(source, target).await?;
    match kind {
        FloodKind::IdleTcp => Ok(FloodConnection::Tcp(tcp_stream)),
        FloodKind::StalledClientHello => {
            // A handshake record header announcing 512 bytes, then the start
            // of a ClientHello, then nothing.
            tcp_stream
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
                .await?;
            Ok(FloodConnection::Tcp(tcp_stream))
        }
        FloodKind::TlsWithoutRequest | FloodKind::Slowloris => {
            let mut config = (**tls).clone();
            config.alpn_protocols = if kind == FloodKind::Slowloris {
                vec![b"http/1.1".to_vec()]
            } else {
                vec![b"h2".to_vec()]
            };
            let server_name = ServerName::try_from("localhost").unwrap();
            let handshake = TlsConnector::from(Arc::new(config)).connect(server_name, tcp_stream);
            let mut tls_stream = tokio::time::timeout(Duration::from_secs(30), handshake)
                .await
                .map_err(|_| std::io::Error::other("tls handshake timed out"))??;
            if kind == FloodKind::Slowloris {
                tls_stream
                    .write_all(b"GET /v1/models/latest HTTP/1.1\r\nHost: localhost\r\n")
                    .await?;
                tls_stream.flush().await?;
            }
            Ok(FloodConnection::Tls(Box::new(tls_stream)))
        }
    }
}

/// Holds `connection` as its kind does, until the coordinator closes it.
async fn hold(kind: FloodKind, connection: FloodConnection) {
    match connection {
        FloodConnection::Tcp(mut tcp_stream) => wait_for_close(&mut tcp_stream).await,
        FloodConnection::Tls(mut tls_stream) if kind == FloodKind::Slowloris => {
            let mut buffer = [0_u8; 512];
            let mut line = 0_u64;
            loop {
                tokio::select! {
                    read = tls_stream.read(&mut buffer) => {
                        if matches!(read, Ok(0) | Err(_)) {
                            return;
                        }
                    }
                    () = tokio::time::sleep(SLOWLORIS_DRIP) => {
                        line += 1;
                        let header = format!("X-Drip-{line}: x\r\n");
                        if tls_stream.write_all(header.as_bytes()).await.is_err()
                            || tls_stream.flush().await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
        FloodConnection::Tls(mut tls_stream) => wait_for_close(&mut *tls_stream).await,
    }
}

/// Reads (and discards) until the other end closes or fails.
async fn wait_for_close<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buffer = [0_u8; 512];
    while let Ok(num_read) = stream.read(&mut buffer).await {
        if num_read == 0 {
            return;
        }
    }
}

/// Returns a client configuration trusting only the test CA, without a
/// client certificate: what anyone on the network can do.
fn anonymous_tls(authority: &CertificateAuthority) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for root in load_certificates_pem(authority.cert_pem()).unwrap() {
        roots.add(root).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Returns 127.0.0.`last`.
fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Downloads the latest model with curl (`--max-time` = [`DOWNLOAD_BOUND`])
/// and a bearer token; returns the HTTP status (0 when curl got no answer)
/// and the body.
fn curl_download(base: &str, work: &Path, token: &str) -> (u16, Vec<u8>) {
    let body_path = work.join("downloaded.safetensors");
    let _ = std::fs::remove_file(&body_path);
    let output = Command::new("curl")
        .args(["-s", "--max-time", &DOWNLOAD_BOUND.as_secs().to_string()])
        .arg("--cacert")
        .arg(work.join("ca.pem"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code}"])
        .arg(format!("{base}/v1/models/latest"))
        .output()
        .expect("curl runs");
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (status, std::fs::read(&body_path).unwrap_or_default())
}

/// Starts a participant over mutual TLS with a certificate for `name`.
fn start_tls_participant(
    authority: &CertificateAuthority,
    url: &str,
    name: &str,
    org: usize,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> JoinHandle<fedshield_participant::error::Result<fedshield_participant::RunEnd>> {
    let certificate = authority.issue_client(name, 1).unwrap();
    let mut config = ParticipantConfig::for_test(
        url.to_string(),
        ParticipantId::new(name).unwrap(),
        data_dir.join(name),
    );
    config.tls = Some(client_tls_config(
        authority.cert_pem(),
        &certificate.cert_pem,
        &certificate.key_pem,
        "localhost",
    ));
    let data = synthetic_dataset(OrgProfile::for_org(org), 1200, 70 + org as u64);
    let participant = Participant::new(config, data).unwrap();
    tokio::spawn(participant.run(shutdown))
}

/// Writes the CA certificate as `ca.pem` in `work`, for curl.
fn write_ca(authority: &CertificateAuthority, work: &Path) {
    std::fs::write(work.join("ca.pem"), authority.cert_pem()).unwrap();
}

/// Starts the in-process coordinator of the flood test: mutual TLS for
/// alice and bob, HTTPS downloads with a bearer token.
async fn start_flooded_coordinator(
    authority: &CertificateAuthority,
    server: &IssuedCertificate,
    work: &Path,
    shutdown: CancellationToken,
) -> (CoordinatorHandle, String) {
    let tokens_path = work.join("api-tokens.toml");
    let token = fedshield_coordinator::http::issue_token(&tokens_path, "detector-1").unwrap();
    let mut config = CoordinatorConfig::for_test(work.join("coordinator"), test_spec());
    config.round.max_rounds = Some(1);
    config.tls = Some(coordinator_tls(
        authority,
        server,
        ParticipantRegistry::allowing([
            ParticipantId::new("alice").unwrap(),
            ParticipantId::new("bob").unwrap(),
        ]),
    ));
    config.https = Some(https_settings(authority, server, tokens_path));
    config.listener_limits = flood_test_limits();
    (start_coordinator(config, shutdown).await, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_round_and_curl_downloads_complete_during_a_flood_of_idle_and_slow_connections() {
    assert!(
        curl_installed(),
        "curl is required: this test downloads the model with it"
    );
    let work = tempfile::tempdir().unwrap();
    let authority = CertificateAuthority::generate("test participant CA").unwrap();
    let server = localhost_certificate(&authority);
    write_ca(&authority, work.path());
    let shutdown = CancellationToken::new();
    let (coordinator, token) =
        start_flooded_coordinator(&authority, &server, work.path(), shutdown.clone()).await;
    let grpc_address = coordinator.local_addr();
    let https_address = coordinator.https_addr().unwrap();

    // 64 hostile source addresses, 10 connections each (4 stalled at the
    // handshake on each port, 2 TLS connections without a full request on
    // HTTPS): 256 stalled handshakes per port, four times what the 64-slot
    // handshake pool of the past let wait.
    let anonymous = anonymous_tls(&authority);
    let mut flood = Flood::new();
    for last in 2..66 {
        let source = loopback(last);
        for target in [grpc_address, https_address] {
            flood.add(FloodKind::IdleTcp, source, target, 2, &anonymous);
            flood.add(FloodKind::StalledClientHello, source, target, 2, &anonymous);
        }
        flood.add(
            FloodKind::TlsWithoutRequest,
            source,
            https_address,
            1,
            &anonymous,
        );
        flood.add(FloodKind::Slowloris, source, https_address, 1, &anonymous);
    }
    assert_eq!(flood.num_tasks, 640);
    flood.wait_until_up().await;

    // Honest traffic while the flood holds its connections.
    let flood_started = Instant::now();
    let url = format!("https://{grpc_address}");
    let alice = start_tls_participant(&authority, &url, "alice", 0, work.path(), shutdown.clone());
    let bob = start_tls_participant(&authority, &url, "bob", 1, work.path(), shutdown.clone());
    let base = format!("https://{https_address}");
    let expected_sha256 = coordinator.engine().current_model().card.sha256.clone();
    for attempt in 0..3 {
        let (status, body) = tokio::task::spawn_blocking({
            let base = base.clone();
            let work = work.path().to_path_buf();
            let token = token.clone();
            move || curl_download(&base, &work, &token)
        })
        .await
        .unwrap();
        assert_eq!(
            status, 200,
            "download {attempt} during the flood got no answer within {DOWNLOAD_BOUND:?}"
        );
        let published_sha256 = coordinator.engine().current_model().card.sha256.clone();
        let body_sha256 = ModelWeights::from_safetensors(&body)
            .expect("the download is a safetensors model")
            .sha256();
        assert!(
            body_sha256 == expected_sha256 || body_sha256 == published_sha256,
            "download {attempt} is a published model"
        );
    }
    let engine = coordinator.engine().clone();
    wait_until("the honest round publishes version 1", ROUND_BOUND, || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    let honest_elapsed = flood_started.elapsed();

    // Keep the flood up until the coordinator has closed requestless and
    // slowloris connections by their header deadline, and download again.
    wait_until(
        "requestless and slowloris connections closed by the header deadline",
        Duration::from_secs(60),
        || {
            let num_idle_closed = coordinator.listener_counts().num_idle_closed;
            async move { num_idle_closed > 0 }
        },
    )
    .await;
    let (status, _) = tokio::task::spawn_blocking({
        let base = base.clone();
        let work = work.path().to_path_buf();
        let token = token.clone();
        move || curl_download(&base, &work, &token)
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "download after the header deadlines fired");

    // The flood was still running, and the coordinator shed it rather than
    // queueing the honest clients behind it.
    let counts = coordinator.listener_counts();
    let flood_counts = flood.stop().await;
    println!(
        "honest round and 3 downloads took {honest_elapsed:?} during the flood; \
         listener counts {counts:?}; flood opened {} connections, {} closed by the coordinator",
        flood_counts.num_opened.load(Ordering::Relaxed),
        flood_counts.num_closed_by_server.load(Ordering::Relaxed),
    );
    assert!(
        counts.num_evicted > 0,
        "stalled handshakes were evicted: {counts:?}"
    );
    assert!(
        counts.num_idle_closed > 0,
        "requestless and slowloris connections were closed: {counts:?}"
    );
    let mut contributors = coordinator
        .engine()
        .current_model()
        .card
        .contributors
        .clone();
    contributors.sort();
    assert_eq!(contributors, vec!["alice".to_string(), "bob".to_string()]);

    shutdown.cancel();
    alice
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    bob.await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    coordinator.wait().await.unwrap();
}

/// A `fedshield coordinator` child process, killed when dropped.
struct CoordinatorProcess {
    child: Child,
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns how many descriptors process `pid` has open.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Calls GetStatus over mutual TLS as alice; returns the current version.
async fn grpc_status(
    authority: &CertificateAuthority,
    alice: &IssuedCertificate,
    grpc_address: SocketAddr,
) -> Result<u64, String> {
    let endpoint = Endpoint::from_shared(format!("https://{grpc_address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .tls_config(client_tls_config(
            authority.cert_pem(),
            &alice.cert_pem,
            &alice.key_pem,
            "localhost",
        ))
        .unwrap();
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| format!("{error:?}"))?;
    let status = FederationClient::new(channel)
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|status| status.to_string())?;
    Ok(status.into_inner().current_model_version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ports_answer_again_after_descriptor_exhaustion_while_the_flood_still_holds_its_sockets()
 {
    assert!(
        curl_installed(),
        "curl is required: this test downloads the model with it"
    );
    let prlimit_available = Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        prlimit_available,
        "prlimit (util-linux) is required to lower the coordinator's open-file limit"
    );
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let authority = CertificateAuthority::generate("test participant CA").unwrap();
    let server = localhost_certificate(&authority);
    let alice = authority.issue_client("alice", 1).unwrap();
    write_ca(&authority, dir);
    std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
    std::fs::write(
        dir.join("participants.toml"),
        "[[participant]]\nid = \"alice\"\n",
    )
    .unwrap();
    let data_dir = dir.join("coordinator");
    std::fs::create_dir_all(&data_dir).unwrap();
    let tokens_path = data_dir.join("api-tokens.toml");
    let token = fedshield_coordinator::http::issue_token(&tokens_path, "detector-1").unwrap();
    let grpc_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let https_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let stderr_path = dir.join("coordinator.log");
    let child = Command::new(env!("CARGO_BIN_EXE_fedshield"))
        .arg("coordinator")
        .arg("--listen")
        .arg(grpc_address.to_string())
        .arg("--https-listen")
        .arg(https_address.to_string())
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--tls-cert")
        .arg(dir.join("server.pem"))
        .arg("--tls-key")
        .arg(dir.join("server.key"))
        .arg("--tls-client-ca")
        .arg(dir.join("ca.pem"))
        .arg("--participants")
        .arg(dir.join("participants.toml"))
        .args([
            "--handshake-timeout-secs",
            "2",
            "--header-read-timeout-secs",
            "2",
        ])
        .args([
            "--idle-timeout-secs",
            "10",
            "--min-participants",
            "1",
            "--quorum",
            "1",
        ])
        .env("RUST_LOG", "warn")
        .env_remove("FEDSHIELD_LOG_FORMAT")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("the fedshield binary starts");
    let coordinator = CoordinatorProcess { child };
    let pid = coordinator.child.id();
    let base = format!("https://{https_address}");
    let download = {
        let base = base.clone();
        let dir = dir.to_path_buf();
        let token = token.clone();
        move || curl_download(&base, &dir, &token).0
    };
    wait_until(
        "the coordinator serves downloads",
        Duration::from_secs(60),
        || {
            let download = download.clone();
            async move { tokio::task::spawn_blocking(download).await.unwrap() == 200 }
        },
    )
    .await;
    assert_eq!(grpc_status(&authority, &alice, grpc_address).await, Ok(0));

    // Leave the coordinator 48 descriptors beyond what it holds now, far
    // fewer than the flood below opens.
    let limit = open_descriptors(pid) + 48;
    let lowered = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(
        lowered.success(),
        "prlimit lowers the coordinator's open-file limit"
    );

    // 300 connections from 30 addresses, held open by the flood until the
    // end of the test (no reopening): idle TCP on both ports, and TLS
    // connections without a request on HTTPS.
    let anonymous = anonymous_tls(&authority);
    let mut held = Vec::new();
    for last in 2..32 {
        let source = loopback(last);
        for (kind, target, count) in [
            (FloodKind::IdleTcp, grpc_address, 3),
            (FloodKind::IdleTcp, https_address, 3),
            (FloodKind::TlsWithoutRequest, https_address, 4),
        ] {
            for _ in 0..count {
                let anonymous = Arc::clone(&anonymous);
                held.push(tokio::spawn(async move {
                    // A connection the coordinator never takes stays in its
                    // backlog; one it sheds reads end-of-file. Either way
                    // this end keeps its socket until the test ends.
                    let connection = open_flood_connection(kind, source, target, &anonymous).await;
                    std::future::pending::<()>().await;
                    drop(connection);
                }));
            }
        }
    }
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    wait_until(
        "the coordinator runs out of descriptors",
        Duration::from_secs(60),
        || {
            let text = log();
            async move { text.contains("Too many open files") }
        },
    )
    .await;

    // While every flood socket is still open on this side, the coordinator
    // sheds them (handshake and header timeouts) and serves again.
    let recovery_started = Instant::now();
    wait_until(
        "the HTTPS port serves downloads again",
        Duration::from_secs(90),
        || {
            let download = download.clone();
            async move { tokio::task::spawn_blocking(download).await.unwrap() == 200 }
        },
    )
    .await;
    wait_until(
        "the gRPC port answers again",
        Duration::from_secs(60),
        || {
            let authority = &authority;
            let alice = &alice;
            async move { grpc_status(authority, alice, grpc_address).await.is_ok() }
        },
    )
    .await;
    let recovery = recovery_started.elapsed();
    assert!(
        held.iter().all(|task| !task.is_finished()),
        "the flood still holds its sockets"
    );
    let text = log();
    let num_accept_warnings = text
        .lines()
        .filter(|line| line.contains("tcp accept failed"))
        .count();
    println!(
        "both ports answered again {recovery:?} after the first EMFILE; {num_accept_warnings} accept warnings"
    );
    // One warning per 10 s at most, not one per failed accept.
    assert!(
        (1..=12).contains(&num_accept_warnings),
        "accept failures are logged at most once per 10 s: {num_accept_warnings} lines"
    );
    for task in &held {
        task.abort();
    }
    drop(coordinator);
}
