//! The syslog sink against a real rsyslogd (UDP and TCP) and against a TLS
//! receiver written here (octet-counted frames over rustls), including a
//! receiver that drops the connection.
//!
//! rsyslogd comes from the Debian package `rsyslog`; without it these tests
//! print why and pass, unless `FEDSHIELD_REQUIRE_RSYSLOG=1` (set by CI)
//! makes its absence a failure.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fedshield_detector::alert::{Alert, EchoedField, IdentityRole, ModelKindName};
use fedshield_detector::sinks::{AlertSink, SinkOptions, SinkSpec, open_sink};
use fedshield_proto::tls::pki::CertificateAuthority;
use fedshield_proto::tls::{load_certificates_pem, load_private_key_pem};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a test waits for messages to arrive.
const ARRIVAL_DEADLINE: Duration = Duration::from_secs(20);

/// Returns alert `index`: every third one an attack, with a non-ASCII field.
fn alert(index: u64) -> Alert {
    Alert {
        source: "events.csv".to_string(),
        line: index + 1,
        score: index as f64 / 8.0 - 3.0,
        threshold: 0.5,
        alert_fpr: Some(0.001),
        is_attack: index.is_multiple_of(3),
        category: None,
        model_version: 12,
        model_sha256: "0123abcd".to_string(),
        model_kind: ModelKindName::BinaryClassifier,
        fields: vec![
            EchoedField {
                column: "src_ip".to_string(),
                role: Some(IdentityRole::SourceIp),
                value: Some(format!("10.0.{}.{}", index / 256, index % 256)),
            },
            EchoedField {
                column: "note".to_string(),
                role: None,
                value: Some(format!("café \"quoted\" ] {index}")),
            },
        ],
        explanation: Vec::new(),
        count: 1,
        detected_unix_ms: 1_796_283_581_000 + index,
    }
}

fn record(alert: &Alert) -> Result<Vec<u8>> {
    serde_json::to_vec(alert).context("failed to encode an alert")
}

/// Submits alerts `0..num_alerts` and flushes.
fn submit_all(sink: &mut dyn AlertSink, indices: std::ops::Range<u64>) -> Result<()> {
    for index in indices {
        let alert = alert(index);
        sink.submit(&alert, &record(&alert)?)
            .context("submit failed")?;
    }
    sink.flush(Duration::from_secs(10))
        .context("flush failed")?;
    Ok(())
}

/// One received RFC 5424 message, split into its parts.
#[derive(Debug)]
struct Received {
    priority: u16,
    timestamp: String,
    hostname: String,
    app_name: String,
    msgid: String,
    structured_data: String,
    body: serde_json::Value,
}

/// Parses `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] BOM MSG`.
fn parse_message(line: &str) -> Result<Received> {
    let rest = line.strip_prefix('<').context("no <PRI>")?;
    let (priority, rest) = rest.split_once(">1 ").context("no version 1")?;
    let mut parts = rest.splitn(6, ' ');
    let mut next = |what: &str| parts.next().with_context(|| format!("no {what} in {line}"));
    let timestamp = next("timestamp")?.to_string();
    let hostname = next("hostname")?.to_string();
    let app_name = next("app-name")?.to_string();
    let _procid = next("procid")?;
    let msgid = next("msgid")?.to_string();
    let rest = next("structured data")?;
    // The SD values of these alerts hold no "] ".
    let (structured_data, message) = rest.split_once("] ").context("no structured data")?;
    let message = message
        .strip_prefix('\u{feff}')
        .context("no BOM before MSG")?;
    Ok(Received {
        priority: priority.parse().context("PRI is not a number")?,
        timestamp,
        hostname,
        app_name,
        msgid,
        structured_data: format!("{structured_data}]"),
        body: serde_json::from_str(message)
            .with_context(|| format!("MSG is not JSON: {message}"))?,
    })
}

/// Checks that `messages` are alerts `indices` exactly once each, intact.
fn assert_alerts_arrived(
    messages: &[Received],
    indices: std::ops::Range<u64>,
    hostname: &str,
) -> Result<()> {
    let mut by_line: BTreeMap<u64, &Received> = BTreeMap::new();
    for message in messages
        .iter()
        .filter(|message| message.hostname == hostname)
    {
        let line = message.body["line"].as_u64().context("no line in body")?;
        ensure!(
            by_line.insert(line, message).is_none(),
            "alert of line {line} arrived twice"
        );
    }
    ensure!(
        by_line.len() as u64 == indices.end - indices.start,
        "{} of {} alerts from {hostname} arrived",
        by_line.len(),
        indices.end - indices.start
    );
    for index in indices {
        let sent = alert(index);
        let received = by_line
            .get(&(index + 1))
            .with_context(|| format!("alert {index} missing"))?;
        ensure!(
            received.body == serde_json::to_value(&sent)?,
            "alert {index} arrived changed"
        );
        let expected_severity = if sent.is_attack { 4 } else { 6 };
        ensure!(received.priority == 16 * 8 + expected_severity);
        ensure!(received.app_name == "fedshield");
        ensure!(received.msgid == "alert");
        ensure!(received.timestamp.starts_with("2026-12-03T07:39:41."));
        ensure!(
            received.structured_data
                == format!(
                    "[fedshield@32473 model_version=\"12\" score=\"{}\" is_attack=\"{}\"]",
                    sent.score, sent.is_attack
                ),
            "structured data {}",
            received.structured_data
        );
    }
    Ok(())
}

/// Returns rsyslogd's path, or `None` with the reason printed when it may
/// be missing.
fn rsyslogd_or_skip() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]);
    for directory in candidates {
        let candidate = directory.join("rsyslogd");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    if std::env::var("FEDSHIELD_REQUIRE_RSYSLOG").as_deref() == Ok("1") {
        panic!("rsyslogd not found and FEDSHIELD_REQUIRE_RSYSLOG=1: install the rsyslog package");
    }
    eprintln!("skipping: rsyslogd not found (install the rsyslog package)");
    None
}

/// An rsyslogd in the foreground, writing every message to `out_path`.
struct Rsyslog {
    child: Child,
    udp_port: u16,
    tcp_port: u16,
    out_path: PathBuf,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts rsyslogd in `directory`: imtcp on a port it picks itself (written
/// to a port file), imudp on a port freed just before; when another process
/// took that port meanwhile, it starts again on another.
fn start_rsyslog(rsyslogd: &Path, directory: &Path) -> Result<Rsyslog> {
    for attempt in 0..5 {
        let udp_port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let work = directory.join(format!("rsyslog-{attempt}"));
        std::fs::create_dir_all(&work)?;
        let port_file = work.join("tcp.port");
        let out_path = work.join("messages.log");
        let config = format!(
            r#"global(workDirectory="{work}" maxMessageSize="64k")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{port_file}")
action(type="omfile" file="{out}" template="RSYSLOG_SyslogProtocol23Format")
"#,
            work = work.display(),
            port_file = port_file.display(),
            out = out_path.display(),
        );
        let config_path = work.join("rsyslog.conf");
        std::fs::write(&config_path, config)?;
        let child = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&config_path)
            .arg("-i")
            .arg(work.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start rsyslogd")?;
        let mut rsyslog = Rsyslog {
            child,
            udp_port,
            tcp_port: 0,
            out_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = rsyslog.child.try_wait()? {
                bail!("rsyslogd exited at start with {status}");
            }
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse::<u16>()
                && port != 0
            {
                rsyslog.tcp_port = port;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        ensure!(rsyslog.tcp_port != 0, "rsyslogd wrote no tcp port file");
        // rsyslogd listens on its UDP port soon, unless another process
        // took it between our release and its bind: a bind of ours that
        // keeps succeeding says the port stayed free.
        let udp_deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < udp_deadline {
            if UdpSocket::bind(("127.0.0.1", udp_port)).is_err() {
                return Ok(rsyslog);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("rsyslogd did not get udp port {udp_port}; starting again");
    }
    bail!("rsyslogd could not bind a udp port in 5 attempts")
}

/// Polls `out_path` until `num_expected` messages from `hostname` are in it.
fn wait_for_messages(
    out_path: &Path,
    hostname: &str,
    num_expected: usize,
) -> Result<Vec<Received>> {
    let deadline = Instant::now() + ARRIVAL_DEADLINE;
    loop {
        let text = std::fs::read_to_string(out_path).unwrap_or_default();
        let messages = text
            .lines()
            .filter(|line| line.contains(" fedshield "))
            .map(parse_message)
            .collect::<Result<Vec<_>>>()?;
        let num_from_host = messages
            .iter()
            .filter(|message| message.hostname == hostname)
            .count();
        if num_from_host >= num_expected || Instant::now() >= deadline {
            return Ok(messages);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn alerts_sent_over_udp_and_tcp_arrive_intact_at_a_real_rsyslogd() -> Result<()> {
    let Some(rsyslogd) = rsyslogd_or_skip() else {
        return Ok(());
    };
    let directory = tempfile::tempdir()?;
    let rsyslog = start_rsyslog(&rsyslogd, directory.path())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let num_alerts = 300;

    let mut options = SinkOptions::for_test();
    options.syslog_hostname = "udp-sender".to_string();
    let udp_spec: SinkSpec = format!("syslog+udp://127.0.0.1:{}", rsyslog.udp_port).parse()?;
    let mut udp_sink = open_sink(&udp_spec, &options, runtime.handle())?;
    // Datagrams sent faster than rsyslogd reads may be lost in the kernel:
    // send in small groups.
    for start in (0..num_alerts).step_by(20) {
        submit_all(udp_sink.as_mut(), start..start + 20)?;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(udp_sink.name(), "syslog-udp");

    options.syslog_hostname = "tcp-sender".to_string();
    let tcp_spec: SinkSpec = format!("syslog+tcp://127.0.0.1:{}", rsyslog.tcp_port).parse()?;
    let mut tcp_sink = open_sink(&tcp_spec, &options, runtime.handle())?;
    submit_all(tcp_sink.as_mut(), 0..num_alerts)?;

    let udp_messages = wait_for_messages(&rsyslog.out_path, "udp-sender", num_alerts as usize)?;
    assert_alerts_arrived(&udp_messages, 0..num_alerts, "udp-sender")?;
    let tcp_messages = wait_for_messages(&rsyslog.out_path, "tcp-sender", num_alerts as usize)?;
    assert_alerts_arrived(&tcp_messages, 0..num_alerts, "tcp-sender")?;

    for sink in [&udp_sink, &tcp_sink] {
        let stats = sink.stats();
        assert_eq!(stats.num_submitted, num_alerts);
        assert_eq!(stats.num_delivered, num_alerts);
        assert_eq!(stats.num_dropped, 0);
        assert_eq!(stats.queue_depth, 0);
    }
    assert_eq!(tcp_sink.stats().num_connections, 1);
    Ok(())
}

/// A TLS syslog receiver: it keeps every octet-counted message, and closes
/// its first connection after `close_first_after` messages.
struct TlsReceiver {
    address: SocketAddr,
    messages: Arc<Mutex<Vec<String>>>,
    num_connections: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsReceiver {
    fn messages(&self) -> Vec<String> {
        self.messages
            .lock()
            .map(|list| list.clone())
            .unwrap_or_default()
    }

    fn wait_for(&self, num_expected: usize) -> Vec<String> {
        let deadline = Instant::now() + ARRIVAL_DEADLINE;
        loop {
            let messages = self.messages();
            if messages.len() >= num_expected || Instant::now() >= deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads `LEN SP MSG` frames from `stream` until it ends or `limit` frames
/// were read.
async fn read_frames<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    messages: &Mutex<Vec<String>>,
    limit: Option<usize>,
) -> Result<()> {
    let mut num_read = 0;
    loop {
        if limit.is_some_and(|limit| num_read >= limit) {
            return Ok(());
        }
        let mut length_text = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await? == 0 {
                return Ok(());
            }
            if byte[0] == b' ' {
                break;
            }
            ensure!(byte[0].is_ascii_digit(), "frame length holds {:?}", byte[0]);
            length_text.push(byte[0]);
        }
        let length: usize = String::from_utf8(length_text)?.parse()?;
        let mut message = vec![0u8; length];
        stream.read_exact(&mut message).await?;
        messages
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(String::from_utf8(message)?);
        num_read += 1;
    }
}

/// Starts a TLS receiver on 127.0.0.1 with a server certificate of `ca`.
async fn start_tls_receiver(
    ca: &CertificateAuthority,
    close_first_after: Option<usize>,
) -> Result<TlsReceiver> {
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
    let messages = Arc::new(Mutex::new(Vec::new()));
    let num_connections = Arc::new(Mutex::new(0u64));
    let task = {
        let messages = messages.clone();
        let num_connections = num_connections.clone();
        tokio::spawn(async move {
            let mut num_accepted = 0usize;
            while let Ok((tcp, _)) = listener.accept().await {
                num_accepted += 1;
                if let Ok(mut count) = num_connections.lock() {
                    *count += 1;
                }
                let limit = if num_accepted == 1 {
                    close_first_after
                } else {
                    None
                };
                let acceptor = acceptor.clone();
                let messages = messages.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = read_frames(&mut tls, &messages, limit).await;
                    }
                    // Dropping the stream closes the connection.
                });
            }
        })
    };
    Ok(TlsReceiver {
        address,
        messages,
        num_connections,
        task,
    })
}

/// Returns sink options trusting `ca`, whose PEM is written in `directory`.
fn tls_options(ca: &CertificateAuthority, directory: &Path) -> Result<SinkOptions> {
    let ca_file = directory.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let mut options = SinkOptions::for_test();
    options.syslog_hostname = "tls-sender".to_string();
    options.syslog_tls_ca_file = Some(ca_file);
    Ok(options)
}

#[test]
fn alerts_sent_over_tls_arrive_octet_counted_and_intact() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let directory = tempfile::tempdir()?;
    let ca = CertificateAuthority::generate("sink test CA")?;
    let receiver = runtime.block_on(start_tls_receiver(&ca, None))?;
    let options = tls_options(&ca, directory.path())?;
    let spec: SinkSpec = format!("syslog+tls://localhost:{}", receiver.address.port()).parse()?;
    let mut sink = open_sink(&spec, &options, runtime.handle())?;
    assert_eq!(sink.name(), "syslog-tls");
    submit_all(sink.as_mut(), 0..500)?;
    let lines = receiver.wait_for(500);
    let messages = lines
        .iter()
        .map(|line| parse_message(line))
        .collect::<Result<Vec<_>>>()?;
    assert_alerts_arrived(&messages, 0..500, "tls-sender")?;
    let stats = sink.stats();
    assert_eq!((stats.num_delivered, stats.num_dropped), (500, 0));
    Ok(())
}

#[test]
fn a_tls_sink_reconnects_after_the_receiver_drops_it_and_loses_nothing() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let directory = tempfile::tempdir()?;
    let ca = CertificateAuthority::generate("sink test CA")?;
    let receiver = runtime.block_on(start_tls_receiver(&ca, Some(100)))?;
    let options = tls_options(&ca, directory.path())?;
    let spec: SinkSpec = format!("syslog+tls://127.0.0.1:{}", receiver.address.port()).parse()?;
    let mut sink = open_sink(&spec, &options, runtime.handle())?;

    submit_all(sink.as_mut(), 0..100)?;
    assert_eq!(receiver.wait_for(100).len(), 100);
    // The receiver closed the first connection after 100 messages; the
    // sink sees it and reconnects.
    let deadline = Instant::now() + ARRIVAL_DEADLINE;
    while sink.stats().num_connections < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sink.stats().num_connections, 2);
    submit_all(sink.as_mut(), 100..250)?;

    let lines = receiver.wait_for(250);
    let messages = lines
        .iter()
        .map(|line| parse_message(line))
        .collect::<Result<Vec<_>>>()?;
    assert_alerts_arrived(&messages, 0..250, "tls-sender")?;
    assert_eq!(
        receiver.num_connections.lock().map(|count| *count).ok(),
        Some(2)
    );
    let stats = sink.stats();
    assert_eq!((stats.num_delivered, stats.num_dropped), (250, 0));
    Ok(())
}

/// Serves one plain TCP connection at a time on `listener`, keeping every
/// octet-counted message; aborting the task closes the listener and the
/// connection.
fn spawn_tcp_receiver(
    runtime: &tokio::runtime::Runtime,
    listener: TcpListener,
    messages: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = read_frames(&mut tcp, &messages, None).await;
        }
    })
}

fn wait_for_count(messages: &Mutex<Vec<String>>, num_expected: usize) -> Vec<String> {
    let deadline = Instant::now() + ARRIVAL_DEADLINE;
    loop {
        let received = messages.lock().map(|list| list.clone()).unwrap_or_default();
        if received.len() >= num_expected || Instant::now() >= deadline {
            return received;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_tcp_sink_keeps_what_it_queued_while_the_server_was_down() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    let messages = Arc::new(Mutex::new(Vec::new()));
    let first_server = spawn_tcp_receiver(&runtime, listener, messages.clone());
    let mut options = SinkOptions::for_test();
    options.syslog_hostname = "tcp-sender".to_string();
    let spec: SinkSpec = format!("syslog+tcp://{address}").parse()?;
    let mut sink = open_sink(&spec, &options, runtime.handle())?;
    submit_all(sink.as_mut(), 0..50)?;
    assert_eq!(wait_for_count(&messages, 50).len(), 50);

    // The server goes away: its listener and connection close.
    first_server.abort();
    let _ = runtime.block_on(first_server);
    for index in 50..150 {
        let alert = alert(index);
        sink.submit(&alert, &record(&alert)?)?;
    }
    let deadline = Instant::now() + ARRIVAL_DEADLINE;
    while sink.stats().num_failed_attempts < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let during_outage = sink.stats();
    assert!(during_outage.num_failed_attempts >= 3, "{during_outage:?}");
    assert_eq!(during_outage.num_delivered, 50);
    assert_eq!(during_outage.queue_depth, 100);

    // It comes back on the same address.
    let listener = runtime.block_on(TcpListener::bind(address))?;
    let _second_server = spawn_tcp_receiver(&runtime, listener, messages.clone());
    sink.flush(Duration::from_secs(20))?;
    let lines = wait_for_count(&messages, 150);
    let received = lines
        .iter()
        .map(|line| parse_message(line))
        .collect::<Result<Vec<_>>>()?;
    assert_alerts_arrived(&received, 0..150, "tcp-sender")?;
    let stats = sink.stats();
    assert_eq!((stats.num_delivered, stats.num_dropped), (150, 0));
    // It reconnected; a write that raced the outage may cost one more
    // connection, never a message.
    assert!((2..=3).contains(&stats.num_connections), "{stats:?}");
    Ok(())
}

#[test]
fn a_tls_sink_refuses_a_server_its_ca_did_not_sign() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let directory = tempfile::tempdir()?;
    let server_ca = CertificateAuthority::generate("server CA")?;
    let other_ca = CertificateAuthority::generate("other CA")?;
    let receiver = runtime.block_on(start_tls_receiver(&server_ca, None))?;
    let options = tls_options(&other_ca, directory.path())?;
    let spec: SinkSpec = format!("syslog+tls://localhost:{}", receiver.address.port()).parse()?;
    let mut sink = open_sink(&spec, &options, runtime.handle())?;
    for index in 0..10 {
        let alert = alert(index);
        sink.submit(&alert, &record(&alert)?)?;
    }
    sink.flush(Duration::from_millis(500))?;
    let stats = sink.stats();
    assert!(receiver.messages().is_empty());
    assert_eq!(stats.num_delivered, 0);
    assert!(stats.num_failed_attempts > 0);
    assert_eq!(
        stats.num_dropped, 10,
        "a timed-out flush drops what is queued"
    );
    Ok(())
}

#[test]
fn a_tls_sink_without_a_ca_file_is_refused_naming_the_sink() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let spec: SinkSpec = "syslog+tls://localhost:6514".parse()?;
    let message = match open_sink(&spec, &SinkOptions::for_test(), runtime.handle()) {
        Ok(_) => bail!("a TLS sink without a CA file opened"),
        Err(error) => error.to_string(),
    };
    assert!(message.contains("syslog+tls://localhost:6514"), "{message}");
    assert!(message.contains("CA file"), "{message}");
    Ok(())
}
