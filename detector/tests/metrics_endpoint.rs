//! The detector's metrics listener over real sockets: `GET /metrics` in
//! OpenMetrics text with the values recorded, `GET /healthz`, `404` for
//! anything else, the connection limits, and shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedshield_core::ModelVersion;
use fedshield_detector::http::{MetricsServerLimits, serve_metrics, serve_metrics_with};
use fedshield_detector::metrics::DetectorMetrics;
use fedshield_detector::sinks::SinkStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the server may take to stop after its shutdown token.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A metrics listener on 127.0.0.1:0 and what stops it.
struct Server {
    address: SocketAddr,
    metrics: Arc<DetectorMetrics>,
    shutdown: CancellationToken,
    task: JoinHandle<fedshield_detector::Result<()>>,
}

impl Server {
    async fn start(limits: Option<MetricsServerLimits>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let metrics = Arc::new(DetectorMetrics::new());
        let shutdown = CancellationToken::new();
        let task = match limits {
            None => tokio::spawn(serve_metrics(
                listener,
                Arc::clone(&metrics),
                shutdown.clone(),
            )),
            Some(limits) => tokio::spawn(serve_metrics_with(
                listener,
                Arc::clone(&metrics),
                limits,
                shutdown.clone(),
            )),
        };
        Server {
            address,
            metrics,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(STOP_DEADLINE, self.task)
            .await
            .expect("the server stops within the deadline");
        stopped.unwrap().unwrap();
    }
}

/// A parsed HTTP/1.1 response.
struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Sends `request` (the request line and headers, without the blank line)
/// with `Connection: close` and reads the whole response.
async fn send(address: SocketAddr, request_head: &str) -> Response {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("{request_head}\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the response arrives")
        .unwrap();
    let text = String::from_utf8(raw).expect("the response is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers: BTreeMap<String, String> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header line");
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    if let Some(length) = headers.get("content-length") {
        assert_eq!(
            body.len(),
            length.parse::<usize>().unwrap(),
            "content-length"
        );
    }
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Returns each sample of an OpenMetrics exposition, `name{labels}` → value,
/// checking the syntax of every line and the final `# EOF`.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "the exposition ends with # EOF"
    );
    assert!(text.ends_with("# EOF\n"));
    let mut samples = BTreeMap::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap();
            assert!(
                matches!(kind, "HELP" | "TYPE" | "UNIT"),
                "unexpected comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line without a value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("sample value is not a number: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, Some(labels)),
            None => (series, None),
        };
        let valid_name = name.chars().enumerate().all(|(index, character)| {
            character.is_ascii_alphabetic()
                || character == '_'
                || character == ':'
                || (index > 0 && character.is_ascii_digit())
        });
        assert!(
            valid_name && !name.is_empty(),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = labels {
            let labels = labels
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
            for pair in labels.split(',') {
                let (label, quoted) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(
                    label
                        .chars()
                        .all(|character| character.is_ascii_alphanumeric() || character == '_'),
                    "bad label name in {line:?}"
                );
                assert!(
                    quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                    "unquoted label value in {line:?}"
                );
            }
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

#[tokio::test]
async fn metrics_endpoint_serves_the_recorded_counts_as_openmetrics_text() {
    let server = Server::start(None).await;
    let metrics = &server.metrics;
    metrics.set_model_version(ModelVersion(7));
    metrics.events_scored(1_024);
    metrics.events_scored(976);
    metrics.events_malformed(3);
    metrics.alerts_raised("attack", 5);
    metrics.alerts_raised("DDoS", 2);
    metrics.alerts_raised("DDoS", 1);
    metrics.alerts_suppressed(9);
    metrics.record_sink_stats(
        "webhook",
        SinkStats {
            num_submitted: 8,
            num_delivered: 5,
            num_dropped: 2,
            queue_depth: 1,
            ..SinkStats::default()
        },
    );
    metrics.record_sink_stats(
        "webhook",
        SinkStats {
            num_submitted: 12,
            num_delivered: 8,
            num_dropped: 3,
            queue_depth: 1,
            ..SinkStats::default()
        },
    );

    let response = send(server.address, "GET /metrics HTTP/1.1").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let samples = parse_exposition(&response.body);
    for (series, expected) in [
        ("fedshield_detector_events_total", 2_000.0),
        ("fedshield_detector_malformed_events_total", 3.0),
        ("fedshield_detector_alerts_total{class=\"attack\"}", 5.0),
        ("fedshield_detector_alerts_total{class=\"DDoS\"}", 3.0),
        ("fedshield_detector_alerts_suppressed_total", 9.0),
        (
            "fedshield_detector_sink_submitted_total{sink=\"webhook\"}",
            12.0,
        ),
        (
            "fedshield_detector_sink_delivered_total{sink=\"webhook\"}",
            8.0,
        ),
        (
            "fedshield_detector_sink_dropped_total{sink=\"webhook\"}",
            3.0,
        ),
        ("fedshield_detector_sink_queue_depth{sink=\"webhook\"}", 1.0),
        ("fedshield_detector_model_version", 7.0),
        // No 10 s window has completed yet.
        ("fedshield_detector_events_per_second", 0.0),
    ] {
        assert_eq!(samples.get(series), Some(&expected), "{series}");
    }
    let build_info = samples
        .iter()
        .find(|(series, _)| series.starts_with("fedshield_detector_build_info{version=\""))
        .expect("build info");
    assert_eq!(*build_info.1, 1.0);

    // A second scrape sees later updates.
    metrics.events_scored(10);
    metrics.set_model_version(ModelVersion(8));
    let samples = parse_exposition(&send(server.address, "GET /metrics HTTP/1.1").await.body);
    assert_eq!(
        samples.get("fedshield_detector_events_total"),
        Some(&2_010.0)
    );
    assert_eq!(samples.get("fedshield_detector_model_version"), Some(&8.0));
    server.stop().await;
}

#[tokio::test]
async fn healthz_answers_ok_and_every_other_request_is_not_found() {
    let server = Server::start(None).await;
    let health = send(server.address, "GET /healthz HTTP/1.1").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, "ok");
    for request in [
        "GET / HTTP/1.1",
        "GET /metrics/extra HTTP/1.1",
        "GET /debug HTTP/1.1",
        "POST /metrics HTTP/1.1",
        "DELETE /healthz HTTP/1.1",
    ] {
        let response = send(server.address, request).await;
        assert_eq!(response.status, 404, "{request}");
        assert!(!response.body.contains("fedshield_detector"), "{request}");
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_the_server_and_closes_its_port_and_open_connections() {
    let server = Server::start(None).await;
    let address = server.address;
    // A keep-alive connection that has sent nothing yet.
    let mut idle = TcpStream::connect(address).await.unwrap();
    assert_eq!(send(address, "GET /healthz HTTP/1.1").await.status, 200);
    let started = Instant::now();
    server.stop().await;
    assert!(started.elapsed() < STOP_DEADLINE);
    let mut buffer = [0_u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buffer))
        .await
        .expect("the open connection is closed at shutdown");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected_after_the_header_timeout() {
    let header_read_timeout = Duration::from_millis(300);
    let server = Server::start(Some(MetricsServerLimits {
        header_read_timeout,
        ..MetricsServerLimits::default()
    }))
    .await;
    let silent = TcpStream::connect(server.address).await.unwrap();
    let mut slow = TcpStream::connect(server.address).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for (what, mut stream) in [("silent", silent), ("slow", slow)] {
        let mut buffer = [0_u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection stays open"));
        // hyper may answer 408 before closing; either way no metrics.
        if let Ok(num_bytes) = read {
            let text = String::from_utf8_lossy(&buffer[..num_bytes]);
            assert!(!text.contains("fedshield_detector"), "{what}: {text}");
        }
    }
    assert!(started.elapsed() >= header_read_timeout);
    // The listener still serves.
    assert_eq!(
        send(server.address, "GET /healthz HTTP/1.1").await.status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_a_freed_slot_serves_again() {
    let server = Server::start(Some(MetricsServerLimits {
        max_connections: 2,
        ..MetricsServerLimits::default()
    }))
    .await;
    let first = TcpStream::connect(server.address).await.unwrap();
    let second = TcpStream::connect(server.address).await.unwrap();
    // The listener accepts in connection order: the third is over the cap.
    let mut third = TcpStream::connect(server.address).await.unwrap();
    let mut buffer = [0_u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buffer))
        .await
        .expect("a connection over the cap is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop(first);
    drop(second);
    // The slots free once the server sees the closes: poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        let request = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let written = stream.write_all(request.as_bytes()).await;
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw).await;
        if written.is_ok() && read.is_ok() && raw.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
