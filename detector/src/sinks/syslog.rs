//! The syslog sink: one RFC 5424 message per alert, over UDP (RFC 5426),
//! TCP (RFC 6587 octet counting) or TLS (RFC 5425).
//!
//! A message is
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID alert [fedshield@32473 …] BOM JSON`:
//! PRI is facility × 8 + severity (warning, 4, for attacks; informational,
//! 6, otherwise), TIMESTAMP the detection time in UTC with milliseconds, and
//! the structured data element `fedshield@32473` carries `model_version`,
//! `score` and `is_attack` (32473 is the private enterprise number RFC 5612
//! reserves for documentation). MSG is the JSON record, UTF-8, preceded by
//! the byte order mark RFC 5424 §6.4 asks for.
//!
//! The message is framed on the scoring thread and queued; a task on the
//! runtime sends it:
//! - UDP: one datagram per message, sent from an unconnected socket;
//!   a message longer than [`MAX_UDP_MESSAGE_BYTES`] is cut there (at a
//!   UTF-8 boundary). A datagram handed to the kernel counts as delivered.
//! - TCP and TLS: `LEN SP MESSAGE` frames, written in groups; a group counts
//!   as delivered once written. A write error or the server closing the
//!   connection (seen by a task reading the connection) reconnects with
//!   backoff, and the group is written again on the new connection: queued
//!   messages are kept, and a message may arrive twice. Messages already in
//!   the kernel's buffers when the server goes away are lost, as with any
//!   syslog transport without application acknowledgements.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fedshield_proto::tls::{load_certificates, load_private_key};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use super::queue::{
    QueueReceiver, QueueSender, QueuedRecord, RateLimitedWarning, delivery_queue, unit_random,
};
use super::{AlertSink, RetryPolicy, SinkError, SinkOptions, SinkStats, SyslogTransport};
use crate::alert::Alert;
use crate::error::Result;

/// The longest message sent in one UDP datagram; longer ones are cut.
/// RFC 5426 §3.2 asks receivers for 2,048 octets at least and allows IPv4
/// datagrams up to 65,507: rsyslog takes up to its `maxMessageSize`.
pub const MAX_UDP_MESSAGE_BYTES: usize = 65_000;

/// The private enterprise number of the structured data ID (RFC 5612's
/// number reserved for documentation).
pub const ENTERPRISE_NUMBER: u32 = 32473;

/// Severity of an attack (RFC 5424 table 2: warning).
const SEVERITY_WARNING: u8 = 4;
/// Severity of a benign verdict (informational).
const SEVERITY_INFORMATIONAL: u8 = 6;

/// Messages written to a stream in one go, at most.
const MAX_GROUP_RECORDS: usize = 512;

/// How long one group's write may take before the connection counts as
/// dead (a server that stopped reading): it is closed and the group is
/// written again on a new one.
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The fixed parts of every message of one sink.
#[derive(Debug, Clone)]
pub struct SyslogHeader {
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
}

impl SyslogHeader {
    /// Returns the header of `options`, with this process's id; fields are
    /// cut to RFC 5424's lengths and printable US-ASCII.
    pub fn from_options(options: &SinkOptions) -> Self {
        SyslogHeader {
            facility: options.syslog_facility,
            hostname: header_field(&options.syslog_hostname, 255),
            app_name: header_field(&options.syslog_app_name, 48),
            procid: std::process::id().to_string(),
        }
    }

    /// Appends the RFC 5424 message of `alert`, whose encoding is `record`,
    /// to `out`.
    pub fn write_message(&self, alert: &Alert, record: &[u8], out: &mut Vec<u8>) {
        let severity = if alert.is_attack {
            SEVERITY_WARNING
        } else {
            SEVERITY_INFORMATIONAL
        };
        let priority = u16::from(self.facility) * 8 + u16::from(severity);
        let header = format!(
            "<{priority}>1 {} {} {} {} alert [fedshield@{ENTERPRISE_NUMBER} model_version=\"{}\" score=\"{}\" is_attack=\"{}\"] ",
            rfc3339_millis(alert.detected_unix_ms),
            self.hostname,
            self.app_name,
            self.procid,
            alert.model_version,
            escape_param_value(&alert.score.to_string()),
            alert.is_attack,
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice("\u{feff}".as_bytes());
        out.extend_from_slice(record);
    }
}

/// Returns `value` as an RFC 5424 header field: printable US-ASCII without
/// spaces, at most `max_len` characters, `-` when empty.
fn header_field(value: &str, max_len: usize) -> String {
    let cleaned: String = value
        .chars()
        .filter(|character| character.is_ascii_graphic())
        .take(max_len)
        .collect();
    if cleaned.is_empty() {
        "-".to_string()
    } else {
        cleaned
    }
}

/// Escapes `"`, `\` and `]` in an SD-PARAM value (RFC 5424 §6.3.3).
fn escape_param_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        if matches!(character, '"' | '\\' | ']') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Returns UNIX milliseconds as RFC 3339 UTC with milliseconds
/// (`2026-12-03T07:39:41.123Z`).
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.millisecond()
    )
}

/// Cuts `message` to `max_bytes`, at a UTF-8 character boundary of its
/// text after the header.
fn truncate_message(message: &mut Vec<u8>, max_bytes: usize) -> bool {
    if message.len() <= max_bytes {
        return false;
    }
    let mut end = max_bytes;
    // A UTF-8 continuation byte is 0b10xx_xxxx: back up to a character start.
    while end > 0 && (message[end] & 0b1100_0000) == 0b1000_0000 {
        end -= 1;
    }
    message.truncate(end);
    true
}

/// Sends alerts to a syslog server.
pub struct SyslogSink {
    name: &'static str,
    header: SyslogHeader,
    transport: SyslogTransport,
    queue: QueueSender,
    truncation_warning: RateLimitedWarning,
    /// Ends the delivery task when the sink goes away.
    task: JoinHandle<()>,
}

impl SyslogSink {
    /// Starts a syslog sink to `host:port` over `transport`, its delivery on
    /// `runtime`. Connecting happens in the task: an unreachable server is
    /// retried, never an error here.
    ///
    /// # Errors
    /// TLS without a CA file, or TLS files that cannot be loaded.
    pub fn open(
        transport: SyslogTransport,
        host: &str,
        port: u16,
        options: &SinkOptions,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self> {
        let name = transport.sink_name();
        let (queue, receiver) = delivery_queue(name, options.queue_capacity_records);
        let target = Target {
            host: host.to_string(),
            port,
        };
        let task = match transport {
            SyslogTransport::Udp => runtime.spawn(deliver_udp(target, receiver, options.retry)),
            SyslogTransport::Tcp => runtime.spawn(deliver_stream(
                target,
                None,
                receiver,
                options.retry,
                options.connect_timeout,
            )),
            SyslogTransport::Tls => {
                let connector = tls_connector(host, port, options)?;
                runtime.spawn(deliver_stream(
                    target,
                    Some(connector),
                    receiver,
                    options.retry,
                    options.connect_timeout,
                ))
            }
        };
        Ok(SyslogSink {
            name,
            header: SyslogHeader::from_options(options),
            transport,
            queue,
            truncation_warning: RateLimitedWarning::default(),
            task,
        })
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AlertSink for SyslogSink {
    fn name(&self) -> &str {
        self.name
    }

    fn submit(&mut self, alert: &Alert, record: &[u8]) -> Result<()> {
        let mut message = Vec::with_capacity(record.len() + 160);
        self.header.write_message(alert, record, &mut message);
        match self.transport {
            SyslogTransport::Udp => {
                if truncate_message(&mut message, MAX_UDP_MESSAGE_BYTES)
                    && let Some(num_truncated) = self.truncation_warning.note(1)
                {
                    warn!(
                        sink = self.name,
                        num_truncated,
                        max_bytes = MAX_UDP_MESSAGE_BYTES,
                        "syslog messages cut to fit a udp datagram"
                    );
                }
                self.queue.submit(message);
            }
            SyslogTransport::Tcp | SyslogTransport::Tls => {
                let mut frame = format!("{} ", message.len()).into_bytes();
                frame.extend_from_slice(&message);
                self.queue.submit(frame);
            }
        }
        Ok(())
    }

    fn end_batch(&mut self) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self, wait: Duration) -> Result<()> {
        self.queue.flush(wait);
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        self.queue.stats()
    }
}

/// Where messages go.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
}

impl Target {
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Returns a TLS connector that trusts only the CA file of `options`, with
/// its client certificate when one is set.
fn tls_connector(host: &str, port: u16, options: &SinkOptions) -> Result<TlsConnector> {
    let sink = format!("syslog+tls://{host}:{port}");
    let Some(ca_file) = &options.syslog_tls_ca_file else {
        return Err(SinkError::Setup {
            sink,
            reason: "syslog over TLS needs a CA file (syslog_tls_ca_file)".to_string(),
        }
        .into());
    };
    let tls_error = |source| SinkError::Tls {
        sink: sink.clone(),
        source,
    };
    let setup_error = |reason: String| SinkError::Setup {
        sink: sink.clone(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(ca_file).map_err(tls_error)? {
        roots.add(certificate).map_err(|error| {
            setup_error(format!(
                "CA file {}: unusable certificate: {error}",
                ca_file.display()
            ))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| setup_error(format!("TLS versions: {error}")))?
        .with_root_certificates(roots);
    let config = match (
        &options.syslog_tls_client_cert_file,
        &options.syslog_tls_client_key_file,
    ) {
        (Some(cert_file), Some(key_file)) => {
            let certificates = load_certificates(cert_file).map_err(tls_error)?;
            let key = load_private_key(key_file).map_err(tls_error)?;
            builder
                .with_client_auth_cert(certificates, key)
                .map_err(|error| setup_error(format!("client certificate: {error}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    ServerName::try_from(host.to_string())
        .map_err(|_| setup_error(format!("{host} is not a valid TLS server name")))?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Sends each queued message as one datagram until the sink goes away.
async fn deliver_udp(target: Target, mut receiver: QueueReceiver, retry: RetryPolicy) {
    let state = receiver.state.clone();
    let mut failure_warning = RateLimitedWarning::default();
    let mut socket: Option<(UdpSocket, std::net::SocketAddr)> = None;
    let mut num_failures: u32 = 0;
    while let Some(record) = receiver.recv().await {
        let mut pending = Some(record);
        while let Some(record) = pending.take() {
            if state.is_abandoned(record.seq) {
                state.record_dropped(1);
                break;
            }
            if socket.is_none() {
                match bind_udp(&target).await {
                    Ok(bound) => socket = Some(bound),
                    Err(reason) => {
                        state.record_failed_attempt();
                        if let Some(num_failures_since) = failure_warning.note(1) {
                            warn!(sink = "syslog-udp", address = %target.address(), num_failures_since, %reason, "syslog udp socket failed");
                        }
                        state
                            .sleep_unless_woken(retry.delay(num_failures, unit_random()))
                            .await;
                        num_failures = num_failures.saturating_add(1);
                        pending = Some(record);
                        continue;
                    }
                }
            }
            let Some((udp_socket, address)) = &socket else {
                continue;
            };
            match udp_socket.send_to(&record.payload, address).await {
                Ok(_) => {
                    num_failures = 0;
                    state.record_delivered(1);
                }
                Err(error) => {
                    // A datagram is not retried: count it and move on.
                    state.record_failed_attempt();
                    state.record_dropped(1);
                    if let Some(num_failures_since) = failure_warning.note(1) {
                        warn!(sink = "syslog-udp", address = %target.address(), num_failures_since, %error, "syslog datagram not sent");
                    }
                    socket = None;
                }
            }
        }
    }
}

/// Resolves the target and binds a socket of its address family.
async fn bind_udp(
    target: &Target,
) -> std::result::Result<(UdpSocket, std::net::SocketAddr), String> {
    let address = tokio::net::lookup_host(target.address())
        .await
        .map_err(|error| format!("failed to resolve {}: {error}", target.address()))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", target.address()))?;
    let local = if address.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|error| format!("failed to bind a udp socket: {error}"))?;
    Ok((socket, address))
}

/// A byte stream a syslog connection runs on (TCP, or TLS over TCP).
trait SyslogStream: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> SyslogStream for T {}

/// An open syslog connection: the write half, and a task reading the other
/// half, which a syslog server never writes to: its end of file (or error)
/// means the server closed the connection.
struct Connection {
    writer: WriteHalf<Box<dyn SyslogStream>>,
    closed: Arc<AtomicBool>,
    closed_notice: Arc<Notify>,
    reader: JoinHandle<()>,
}

impl Connection {
    fn new(stream: Box<dyn SyslogStream>) -> Self {
        let (mut read_half, writer) = tokio::io::split(stream);
        let closed = Arc::new(AtomicBool::new(false));
        let closed_notice = Arc::new(Notify::new());
        let reader = {
            let closed = closed.clone();
            let closed_notice = closed_notice.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 512];
                // TLS reads drive the session (tickets, close_notify); plain
                // TCP data from a syslog server is ignored.
                while let Ok(num_read) = read_half.read(&mut buffer).await {
                    if num_read == 0 {
                        break;
                    }
                }
                closed.store(true, Ordering::Release);
                closed_notice.notify_one();
            })
        };
        Connection {
            writer,
            closed,
            closed_notice,
            reader,
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until the server closes the connection.
    async fn closed(&self) {
        if self.is_closed() {
            return;
        }
        self.closed_notice.notified().await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens a TCP (or TLS, with `connector`) connection to `target`.
async fn connect(
    target: &Target,
    connector: Option<&TlsConnector>,
    connect_timeout: Duration,
) -> std::result::Result<Connection, String> {
    let attempt = async {
        let tcp = TcpStream::connect(target.address())
            .await
            .map_err(|error| format!("failed to connect: {error}"))?;
        // Alerts are written in groups: no need to wait for more bytes.
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn SyslogStream> = match connector {
            None => Box::new(tcp),
            Some(connector) => {
                let server_name = ServerName::try_from(target.host.clone())
                    .map_err(|_| format!("{} is not a valid TLS server name", target.host))?;
                let tls = connector
                    .connect(server_name, tcp)
                    .await
                    .map_err(|error| format!("TLS handshake failed: {error}"))?;
                Box::new(tls)
            }
        };
        Ok(Connection::new(stream))
    };
    tokio::time::timeout(connect_timeout, attempt)
        .await
        .map_err(|_| format!("no connection within {} ms", connect_timeout.as_millis()))?
}

/// Writes queued frames to a TCP or TLS connection until the sink goes
/// away, reconnecting with backoff; see the module documentation.
async fn deliver_stream(
    target: Target,
    connector: Option<TlsConnector>,
    mut receiver: QueueReceiver,
    retry: RetryPolicy,
    connect_timeout: Duration,
) {
    let state = receiver.state.clone();
    let sink = if connector.is_some() {
        "syslog-tls"
    } else {
        "syslog-tcp"
    };
    let mut failure_warning = RateLimitedWarning::default();
    let mut connection: Option<Connection> = None;
    let mut group: Vec<QueuedRecord> = Vec::new();
    let mut frames: Vec<u8> = Vec::new();
    let mut num_failures: u32 = 0;
    loop {
        if group.is_empty() {
            let next = tokio::select! {
                record = receiver.recv() => Some(record),
                () = closed_or_pending(connection.as_ref()) => None,
            };
            match next {
                Some(Some(record)) => group.push(record),
                Some(None) => return,
                None => {
                    // The server closed an idle connection: reconnect now,
                    // so the next alert does not wait for it.
                    debug!(sink, address = %target.address(), "syslog server closed the connection");
                    connection = None;
                    if let Ok(opened) = connect(&target, connector.as_ref(), connect_timeout).await
                    {
                        state.record_connection();
                        connection = Some(opened);
                    }
                    continue;
                }
            }
        }
        receiver.take_ready(&mut group, MAX_GROUP_RECORDS);
        state.drop_abandoned(&mut group);
        if group.is_empty() {
            continue;
        }
        if connection.as_ref().is_none_or(Connection::is_closed) {
            connection = None;
            match connect(&target, connector.as_ref(), connect_timeout).await {
                Ok(opened) => {
                    state.record_connection();
                    connection = Some(opened);
                }
                Err(reason) => {
                    state.record_failed_attempt();
                    if let Some(num_failures_since) = failure_warning.note(1) {
                        warn!(sink, address = %target.address(), num_failures_since, %reason, "syslog connection failed");
                    }
                    state
                        .sleep_unless_woken(retry.delay(num_failures, unit_random()))
                        .await;
                    num_failures = num_failures.saturating_add(1);
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else {
            continue;
        };
        frames.clear();
        for record in &group {
            frames.extend_from_slice(&record.payload);
        }
        let write = async {
            open.writer.write_all(&frames).await?;
            open.writer.flush().await
        };
        let written = tokio::time::timeout(STREAM_WRITE_TIMEOUT, write)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the server stopped reading",
                ))
            });
        match written {
            Ok(()) => {
                num_failures = 0;
                state.record_delivered(group.len());
                group.clear();
            }
            Err(error) => {
                // Keep the group: it goes again on the next connection.
                state.record_failed_attempt();
                connection = None;
                if let Some(num_failures_since) = failure_warning.note(1) {
                    warn!(sink, address = %target.address(), num_failures_since, %error, "syslog write failed; reconnecting");
                }
                state
                    .sleep_unless_woken(retry.delay(num_failures, unit_random()))
                    .await;
                num_failures = num_failures.saturating_add(1);
            }
        }
    }
}

/// Waits until `connection` is closed by the server; forever without one.
async fn closed_or_pending(connection: Option<&Connection>) {
    match connection {
        Some(open) => open.closed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::ModelKindName;

    fn alert(is_attack: bool) -> Alert {
        Alert {
            source: "-".to_string(),
            line: 1,
            score: 2.5,
            threshold: 0.0,
            alert_fpr: None,
            is_attack,
            category: None,
            model_version: 7,
            model_sha256: "ab".to_string(),
            model_kind: ModelKindName::BinaryClassifier,
            fields: Vec::new(),
            explanation: Vec::new(),
            count: 1,
            detected_unix_ms: 1_796_283_581_123,
        }
    }

    #[test]
    fn a_message_has_every_rfc_5424_part_in_order() {
        let header = SyslogHeader {
            facility: 16,
            hostname: "sensor-1".to_string(),
            app_name: "fedshield".to_string(),
            procid: "42".to_string(),
        };
        let mut out = Vec::new();
        header.write_message(&alert(true), br#"{"a":1}"#, &mut out);
        let expected = "<132>1 2026-12-03T07:39:41.123Z sensor-1 fedshield 42 alert [fedshield@32473 model_version=\"7\" score=\"2.5\" is_attack=\"true\"] \u{feff}{\"a\":1}";
        assert_eq!(String::from_utf8(out).ok().as_deref(), Some(expected));
        let mut benign = Vec::new();
        header.write_message(&alert(false), b"{}", &mut benign);
        assert!(benign.starts_with(b"<134>1 "));
    }

    #[test]
    fn header_fields_lose_spaces_and_keep_their_length_limit() {
        assert_eq!(header_field("my host", 255), "myhost");
        assert_eq!(header_field("", 255), "-");
        assert_eq!(header_field(&"x".repeat(60), 48).len(), 48);
        assert_eq!(escape_param_value(r#"a"b]c\"#), r#"a\"b\]c\\"#);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        let mut message = "aé".as_bytes().to_vec();
        assert!(truncate_message(&mut message, 2));
        assert_eq!(message, b"a");
        let mut short = b"abc".to_vec();
        assert!(!truncate_message(&mut short, 3));
    }
}
