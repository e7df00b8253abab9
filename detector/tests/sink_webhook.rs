//! The webhook sink against an HTTPS receiver written here (hyper over
//! rustls, certificates from rcgen) that checks every body's HMAC, counts
//! requests and batches, and fails or refuses on demand.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use fedshield_detector::alert::{Alert, EchoedField, IdentityRole, ModelKindName};
use fedshield_detector::sinks::{AlertSink, SinkOptions, SinkSpec, open_sink};
use fedshield_proto::tls::pki::CertificateAuthority;
use fedshield_proto::tls::{load_certificates_pem, load_private_key_pem};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn alert(index: u64) -> Alert {
    Alert {
        source: "events.csv".to_string(),
        line: index + 1,
        score: index as f64 / 4.0,
        threshold: 2.0,
        alert_fpr: None,
        is_attack: index.is_multiple_of(2),
        category: Some("scan".to_string()),
        model_version: 3,
        model_sha256: "feed".to_string(),
        model_kind: ModelKindName::MulticlassClassifier,
        fields: vec![EchoedField {
            column: "uid".to_string(),
            role: Some(IdentityRole::EventId),
            value: Some(format!("C{index}")),
        }],
        explanation: Vec::new(),
        count: 1,
        detected_unix_ms: 1_796_283_581_000 + index,
    }
}

/// Submits alerts `indices` without flushing.
fn submit_range(sink: &mut dyn AlertSink, indices: std::ops::Range<u64>) -> Result<()> {
    for index in indices {
        let alert = alert(index);
        let record = serde_json::to_vec(&alert)?;
        sink.submit(&alert, &record).context("submit failed")?;
    }
    Ok(())
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    num_requests: u64,
    num_bad_signatures: u64,
    /// Bodies by batch id, as first received with a good signature and
    /// answered 200.
    batches: BTreeMap<String, Vec<serde_json::Value>>,
    num_duplicate_batches: u64,
}

/// How the receiver answers.
#[derive(Clone)]
struct Behaviour {
    secret: Vec<u8>,
    /// Answer 503 to this many requests first.
    num_failures_first: u64,
    /// Answer this status to every request (after checking it).
    always: Option<StatusCode>,
}

struct Receiver {
    address: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/alerts", self.address.port())
    }

    fn with_seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> Result<T> {
        let seen = self
            .seen
            .lock()
            .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
        Ok(read(&seen))
    }

    /// Returns every received record, deduplicated by batch id, by line.
    fn records_by_line(&self) -> Result<BTreeMap<u64, serde_json::Value>> {
        let batches = self.with_seen(|seen| seen.batches.clone())?;
        let mut by_line = BTreeMap::new();
        for records in batches.values() {
            for record in records {
                let line = record["line"].as_u64().context("no line")?;
                ensure!(
                    by_line.insert(line, record.clone()).is_none(),
                    "line {line} arrived in two batches"
                );
            }
        }
        Ok(by_line)
    }
}

fn valid_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_signature) = header.and_then(|value| value.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_signature) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

async fn handle(
    request: Request<Incoming>,
    behaviour: Behaviour,
    seen: Arc<Mutex<Seen>>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let answer = |status: StatusCode| {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        Ok(response)
    };
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let signature = header("x-fedshield-signature");
    let batch_id = header("x-fedshield-batch-id");
    let content_type = header("content-type");
    let Ok(collected) = request.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let body = collected.to_bytes();
    let Ok(mut seen) = seen.lock() else {
        return answer(StatusCode::INTERNAL_SERVER_ERROR);
    };
    seen.num_requests += 1;
    if !valid_signature(&behaviour.secret, &body, signature.as_deref()) {
        seen.num_bad_signatures += 1;
        return answer(StatusCode::UNAUTHORIZED);
    }
    if let Some(status) = behaviour.always {
        return answer(status);
    }
    if seen.num_requests <= behaviour.num_failures_first {
        return answer(StatusCode::SERVICE_UNAVAILABLE);
    }
    let (Some(batch_id), Some("application/json")) = (batch_id, content_type.as_deref()) else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let Ok(records) = serde_json::from_slice::<Vec<serde_json::Value>>(&body) else {
        return answer(StatusCode::BAD_REQUEST);
    };
    match seen.batches.entry(batch_id) {
        std::collections::btree_map::Entry::Occupied(_) => seen.num_duplicate_batches += 1,
        std::collections::btree_map::Entry::Vacant(slot) => {
            slot.insert(records);
        }
    }
    answer(StatusCode::OK)
}

/// Starts an HTTPS receiver on 127.0.0.1 with a certificate of `ca`.
async fn start_receiver(ca: &CertificateAuthority, behaviour: Behaviour) -> Result<Receiver> {
    let issued = ca.issue_server(
        &["localhost".to_string()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        1,
    )?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            load_certificates_pem(&issued.cert_pem)?,
            load_private_key_pem(&issued.key_pem)?,
        )?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        handle(request, behaviour.clone(), seen.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        })
    };
    Ok(Receiver {
        address,
        seen,
        task,
    })
}

/// Returns test options trusting `ca` (its PEM written in `directory`).
fn options_trusting(ca: &CertificateAuthority, directory: &Path) -> Result<SinkOptions> {
    let ca_file = directory.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let mut options = SinkOptions::for_test();
    options.webhook_tls_ca_file = Some(ca_file);
    Ok(options)
}

fn behaviour(secret: &[u8]) -> Behaviour {
    Behaviour {
        secret: secret.to_vec(),
        num_failures_first: 0,
        always: None,
    }
}

/// Checks that the receiver holds alerts `0..num_alerts`, intact, once each.
fn assert_all_arrived_once(receiver: &Receiver, num_alerts: u64) -> Result<()> {
    let by_line = receiver.records_by_line()?;
    ensure!(
        by_line.len() as u64 == num_alerts,
        "{} of {num_alerts} alerts arrived",
        by_line.len()
    );
    for index in 0..num_alerts {
        let received = by_line
            .get(&(index + 1))
            .with_context(|| format!("alert {index} missing"))?;
        ensure!(
            *received == serde_json::to_value(alert(index))?,
            "alert {index} arrived changed"
        );
    }
    Ok(())
}

#[test]
fn a_thousand_alerts_arrive_signed_in_about_ten_batches() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let directory = tempfile::tempdir()?;
    let ca = CertificateAuthority::generate("webhook test CA")?;
    let receiver = runtime.block_on(start_receiver(&ca, behaviour(b"test-secret")))?;
    let mut options = options_trusting(&ca, directory.path())?;
    options.webhook_max_batch_records = 100;
    // Batches fill up even when this machine is slow; the flush sends
    // what is left at once.
    options.webhook_max_batch_wait = Duration::from_secs(5);
    let spec: SinkSpec = receiver.url().parse()?;
    let mut sink = open_sink(&spec, &options, runtime.handle())?;
    assert_eq!(sink.name(), "webhook");

    submit_range(sink.as_mut(), 0..1000)?;
    sink.flush(Duration::from_secs(20))?;

    assert_all_arrived_once(&receiver, 1000)?;
    let (num_requests, num_batches, num_bad) = receiver.with_seen(|seen| {
        (
            seen.num_requests,
            seen.batches.len(),
            seen.num_bad_signatures,
        )
    })?;
    assert_eq!(num_bad, 0, "every body's signature checks");
    assert!(
        (10..=12).contains(&num_batches),
        "{num_batches} batches for 1,000 alerts of at most 100"
    );
    assert_eq!(num_requests, num_batches as u64);
    let stats = sink.stats();
    assert_eq!(
        (stats.num_submitted, stats.num_delivered, stats.num_dropped),
        (1000, 1000, 0)
    );
    assert_eq!(stats.queue_depth, 0);
    Ok(())
}

#[test]
fn a_partial_batch_goes_out_on_flush_without_waiting_for_more() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let directory = tempfile::tempdir()?;
    let ca = CertificateAuthority::generate("webhook test CA")?;
    let receiver = runtime.block_on(start_receiver(&ca, behaviour(b"test-secret")))?;
    let mut options = options_trusting(&ca, directory.path())?;
    options.webhook_max_batch_wait = Duration::from_secs(60);
    let mut sink = open_sink(&receiver.url().parse()?, &options, runtime.handle())?;
    submit_range(sink.as_mut(), 0..7)?;
    let started = Instant::now();
    sink.flush(Duration::from_secs(20))?;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_all_arrived_once(&receiver, 7)?;
    assert_eq!(sink.stats().num_delivered, 7);
    Ok(())
}

#[test]
fn batches_refused_with_503_are_retried_until_delivered_once_each() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let directory = tempfile::tempdir()?;
    let ca = CertificateAuthority::generate("webhook test CA")?;
    let receiver = runtime.block_on(start_receiver(
        &ca,
        Behaviour {
            num_failures_first: 4,
            ..behaviour(b"test-secret")
        },
    ))?;
    let mut options = options_trusting(&ca, directory.path())?;
    options.webhook_max_batch_records = 50;
    let mut sink = open_sink(&receiver.url().parse()?, &options, runtime.handle())?;
    submit_range(sink.as_mut(), 0..300)?;
    sink.flush(Duration::from_secs(20))?;

    assert_all_arrived_once(&receiver, 300)?;
    let (num_requests, num_batches, num_duplicates) = receiver.with_seen(|seen| {
        (
            seen.num_requests,
            seen.batches.len() as u64,
            seen.num_duplicate_batches,
        )
    })?;
    assert_eq!(num_requests, num_batches + 4, "4 refused requests retried");
    assert_eq!(
        num_duplicates, 0,
        "a 503 answer means the batch was not taken"
    );
    let stats = sink.stats();
    assert_eq!((stats.num_delivered, stats.num_dropped), (300, 0));
    assert_eq!(stats.num_failed_attempts, 4);
    Ok(())
}

#[test]
fn a_wrong_secret_is_detected_by_the_receiver_and_the_batches_dropped() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let directory = tempfile::tempdir()?;
    let ca = CertificateAuthority::generate("webhook test CA")?;
    let receiver = runtime.block_on(start_receiver(&ca, behaviour(b"the receiver's secret")))?;
    let mut options = options_trusting(&ca, directory.path())?;
    options.webhook_secret = Some(b"another secret".to_vec());
    let mut sink = open_sink(&receiver.url().parse()?, &options, runtime.handle())?;
    submit_range(sink.as_mut(), 0..20)?;
    sink.flush(Duration::from_secs(20))?;

    let (num_requests, num_bad, num_batches) = receiver.with_seen(|seen| {
        (
            seen.num_requests,
            seen.num_bad_signatures,
            seen.batches.len(),
        )
    })?;
    assert!(num_requests >= 1);
    assert_eq!(num_bad, num_requests, "every request's signature is wrong");
    assert_eq!(num_batches, 0);
    // 401 is final: dropped and counted, not retried.
    let stats = sink.stats();
    assert_eq!((stats.num_delivered, stats.num_dropped), (0, 20));
    assert_eq!(stats.num_failed_attempts, num_requests);
    Ok(())
}

/// Submits 5,000 alerts to a queue of 100 while nothing gets through,
/// checks that submitting never waited and the accounting is exact.
fn check_overflow_accounting(url: &str, options: &mut SinkOptions) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    options.queue_capacity_records = 100;
    options.webhook_max_batch_records = 10;
    let mut sink = open_sink(&url.parse()?, options, runtime.handle())?;
    let started = Instant::now();
    submit_range(sink.as_mut(), 0..5000)?;
    let submit_time = started.elapsed();
    assert!(
        submit_time < Duration::from_secs(2),
        "5,000 submits took {submit_time:?}"
    );
    let before_flush = sink.stats();
    assert_eq!(before_flush.num_submitted, 5000);
    assert_eq!(before_flush.num_delivered, 0);
    // What is not dropped is queued or in the task's batch: at most the
    // queue's capacity and one batch.
    assert_eq!(
        before_flush.num_dropped + before_flush.queue_depth,
        5000,
        "{before_flush:?}"
    );
    assert!(before_flush.queue_depth <= 100 + 10, "{before_flush:?}");
    assert!(before_flush.num_dropped >= 5000 - 110, "{before_flush:?}");

    let started = Instant::now();
    sink.flush(Duration::from_millis(300))?;
    assert!(started.elapsed() < Duration::from_secs(3));
    let after_flush = sink.stats();
    assert_eq!(after_flush.num_delivered + after_flush.num_dropped, 5000);
    assert_eq!(after_flush.num_dropped, 5000);
    assert_eq!(after_flush.queue_depth, 0);
    assert!(after_flush.num_failed_attempts >= 1);
    Ok(())
}

#[test]
fn a_receiver_down_with_503_makes_submits_drop_and_count_never_wait() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let directory = tempfile::tempdir()?;
    let ca = CertificateAuthority::generate("webhook test CA")?;
    let receiver = runtime.block_on(start_receiver(
        &ca,
        Behaviour {
            always: Some(StatusCode::SERVICE_UNAVAILABLE),
            ..behaviour(b"test-secret")
        },
    ))?;
    let mut options = options_trusting(&ca, directory.path())?;
    check_overflow_accounting(&receiver.url(), &mut options)?;
    assert!(receiver.with_seen(|seen| seen.num_requests)? >= 1);
    Ok(())
}

#[test]
fn a_refused_connection_makes_submits_drop_and_count_never_wait() -> Result<()> {
    // A port that was just free: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut options = SinkOptions::for_test();
    check_overflow_accounting(&format!("https://127.0.0.1:{port}/alerts"), &mut options)
}

#[test]
fn a_client_error_drops_the_batch_without_retrying() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let directory = tempfile::tempdir()?;
    let ca = CertificateAuthority::generate("webhook test CA")?;
    let receiver = runtime.block_on(start_receiver(
        &ca,
        Behaviour {
            always: Some(StatusCode::UNPROCESSABLE_ENTITY),
            ..behaviour(b"test-secret")
        },
    ))?;
    let mut options = options_trusting(&ca, directory.path())?;
    options.webhook_max_batch_records = 10;
    let mut sink = open_sink(&receiver.url().parse()?, &options, runtime.handle())?;
    submit_range(sink.as_mut(), 0..30)?;
    sink.flush(Duration::from_secs(20))?;
    let num_requests = receiver.with_seen(|seen| seen.num_requests)?;
    assert_eq!(num_requests, 3, "one request per batch, no retries");
    let stats = sink.stats();
    assert_eq!((stats.num_delivered, stats.num_dropped), (0, 30));
    Ok(())
}

#[test]
fn ending_a_batch_neither_waits_for_nor_drops_what_is_queued() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let directory = tempfile::tempdir()?;
    let ca = CertificateAuthority::generate("webhook test CA")?;
    let receiver = runtime.block_on(start_receiver(
        &ca,
        Behaviour {
            always: Some(StatusCode::SERVICE_UNAVAILABLE),
            ..behaviour(b"test-secret")
        },
    ))?;
    let options = options_trusting(&ca, directory.path())?;
    let mut sink = open_sink(&receiver.url().parse()?, &options, runtime.handle())?;
    submit_range(sink.as_mut(), 0..10)?;
    let started = Instant::now();
    sink.end_batch()?;
    assert!(started.elapsed() < Duration::from_millis(100));
    let stats = sink.stats();
    assert_eq!((stats.num_dropped, stats.queue_depth), (0, 10));
    Ok(())
}

#[test]
fn a_webhook_without_a_secret_is_refused() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let mut options = SinkOptions::for_test();
    options.webhook_secret = None;
    let spec: SinkSpec = "https://hooks.example/alerts".parse()?;
    let message = match open_sink(&spec, &options, runtime.handle()) {
        Ok(_) => anyhow::bail!("a webhook without a secret opened"),
        Err(error) => error.to_string(),
    };
    assert!(
        message.contains("https://hooks.example/alerts"),
        "{message}"
    );
    assert!(message.contains("secret"), "{message}");
    Ok(())
}
