//! What names a sink ([`SinkSpec`], parsed from `--sink` strings) and what
//! tunes it ([`SinkOptions`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::SinkError;

/// One sink, as a `--sink` string names it.
///
/// | string | sink |
/// |---|---|
/// | `stdout` | one JSON line per alert on standard output |
/// | `file:PATH` | JSON lines appended to `PATH`, rotated by size |
/// | `syslog+udp://HOST:PORT` | RFC 5424 over UDP (RFC 5426), one datagram per alert |
/// | `syslog+tcp://HOST:PORT` | RFC 5424 over TCP, octet-counted (RFC 6587 §3.4.1) |
/// | `syslog+tls://HOST:PORT` | RFC 5424 over TLS, octet-counted (RFC 5425) |
/// | `https://…`, `http://…` | webhook: batches POSTed as a JSON array, HMAC-signed |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    Stdout,
    File {
        path: PathBuf,
    },
    Syslog {
        transport: SyslogTransport,
        host: String,
        port: u16,
    },
    Webhook {
        url: String,
    },
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Tls,
}

impl SyslogTransport {
    /// Returns the sink name of this transport (`syslog-udp`, …).
    pub fn sink_name(self) -> &'static str {
        match self {
            SyslogTransport::Udp => "syslog-udp",
            SyslogTransport::Tcp => "syslog-tcp",
            SyslogTransport::Tls => "syslog-tls",
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            SyslogTransport::Udp => "syslog+udp",
            SyslogTransport::Tcp => "syslog+tcp",
            SyslogTransport::Tls => "syslog+tls",
        }
    }
}

impl SinkSpec {
    /// Returns the sink name metrics and logs use (`stdout`, `file`,
    /// `syslog-udp`, `syslog-tcp`, `syslog-tls`, `webhook`).
    pub fn sink_name(&self) -> &'static str {
        match self {
            SinkSpec::Stdout => "stdout",
            SinkSpec::File { .. } => "file",
            SinkSpec::Syslog { transport, .. } => transport.sink_name(),
            SinkSpec::Webhook { .. } => "webhook",
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Stdout => formatter.write_str("stdout"),
            SinkSpec::File { path } => write!(formatter, "file:{}", path.display()),
            SinkSpec::Syslog {
                transport,
                host,
                port,
            } => {
                if host.contains(':') {
                    write!(formatter, "{}://[{host}]:{port}", transport.scheme())
                } else {
                    write!(formatter, "{}://{host}:{port}", transport.scheme())
                }
            }
            SinkSpec::Webhook { url } => formatter.write_str(url),
        }
    }
}

impl FromStr for SinkSpec {
    type Err = SinkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| SinkError::InvalidSpec {
            spec: text.to_string(),
            reason: reason.to_string(),
        };
        if text == "stdout" {
            return Ok(SinkSpec::Stdout);
        }
        if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err(invalid("file: needs a path (file:PATH)"));
            }
            return Ok(SinkSpec::File {
                path: PathBuf::from(path),
            });
        }
        let transports = [
            ("syslog+udp://", SyslogTransport::Udp),
            ("syslog+tcp://", SyslogTransport::Tcp),
            ("syslog+tls://", SyslogTransport::Tls),
        ];
        for (prefix, transport) in transports {
            if let Some(address) = text.strip_prefix(prefix) {
                let (host, port) = parse_host_port(address).map_err(|reason| invalid(&reason))?;
                return Ok(SinkSpec::Syslog {
                    transport,
                    host,
                    port,
                });
            }
        }
        if text.starts_with("syslog") {
            return Err(invalid(
                "a syslog sink is syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT or syslog+tls://HOST:PORT",
            ));
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            let url = reqwest::Url::parse(text)
                .map_err(|error| invalid(&format!("not a valid URL: {error}")))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid("the webhook URL has no host"));
            }
            return Ok(SinkSpec::Webhook {
                url: text.to_string(),
            });
        }
        Err(invalid(
            "expected stdout, file:PATH, syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT, syslog+tls://HOST:PORT, https://URL or http://URL",
        ))
    }
}

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6) into its parts.
fn parse_host_port(address: &str) -> Result<(String, u16), String> {
    let address = address.strip_suffix('/').unwrap_or(address);
    let (host, port_text) = if let Some(bracketed) = address.strip_prefix('[') {
        let (host, rest) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address needs its closing ]")?;
        let port_text = rest.strip_prefix(':').ok_or("the address needs a :PORT")?;
        (host, port_text)
    } else {
        address
            .rsplit_once(':')
            .ok_or("the address needs a :PORT")?
    };
    if host.is_empty() {
        return Err("the address has no host".to_string());
    }
    if host.contains('/') || port_text.contains('/') {
        return Err("a syslog address is HOST:PORT, without a path".to_string());
    }
    let port = port_text
        .parse::<u16>()
        .map_err(|_| format!("port {port_text:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err("port 0 is not a destination".to_string());
    }
    Ok((host.to_string(), port))
}

/// Exponential backoff with jitter between delivery attempts.
///
/// Attempt `n` (0-based) waits a random time in `[d/2, d]` with
/// `d = min(cap, base × 2^n)` ("equal jitter"): attempts spread out
/// without ever retrying at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Returns the wait before retry number `attempt` (0 for the first
    /// retry), with `unit_random` in `[0, 1)` as the jitter.
    pub fn delay(&self, attempt: u32, unit_random: f64) -> Duration {
        let factor = 2f64.powi(attempt.min(30) as i32);
        let ceiling = self.base.mul_f64(factor).min(self.cap);
        let jitter = unit_random.clamp(0.0, 1.0);
        ceiling.mul_f64(0.5 + 0.5 * jitter)
    }
}

/// The syslog facility alerts are sent with: `local0` (16) unless set.
pub const DEFAULT_SYSLOG_FACILITY: u8 = 16;

/// Returns the code of a syslog facility name (`kern` … `local7`, RFC 5424
/// table 1), if it is one.
pub fn syslog_facility_code(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];
    NAMES
        .iter()
        .position(|candidate| *candidate == name)
        .and_then(|position| u8::try_from(position).ok())
}

/// What tunes the sinks. [`SinkOptions::default`] gives the documented
/// defaults; every sink reads only its own fields.
#[derive(Clone, PartialEq, Eq)]
pub struct SinkOptions {
    /// Records a network sink's queue holds before it drops (10,000).
    pub queue_capacity_records: usize,
    /// The alert file's size past which it rotates (100 MiB).
    pub file_max_bytes: u64,
    /// Rotated files kept beside the alert file: `PATH.1` … `PATH.N` (5).
    pub file_num_kept: usize,
    /// The syslog facility code, 0 to 23 (16, `local0`).
    pub syslog_facility: u8,
    /// The syslog APP-NAME (`fedshield`).
    pub syslog_app_name: String,
    /// The syslog HOSTNAME (this machine's host name, or `-` when unknown).
    pub syslog_hostname: String,
    /// The CA certificates (PEM) a syslog TLS server's certificate must
    /// chain to; required by `syslog+tls` (pass the system bundle for a
    /// public CA).
    pub syslog_tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for syslog servers that require one.
    pub syslog_tls_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub syslog_tls_client_key_file: Option<PathBuf>,
    /// The secret of the webhook's HMAC-SHA256 signature; required by the
    /// webhook sink. The caller reads it from a file.
    pub webhook_secret: Option<Vec<u8>>,
    /// Records per webhook request, at most (500).
    pub webhook_max_batch_records: usize,
    /// How long a partial batch waits for more records (200 ms: with the
    /// follow loop's rest, an alert reaches the receiver well within a second).
    pub webhook_max_batch_wait: Duration,
    /// One webhook request's time limit, connection included (10 s).
    pub webhook_request_timeout: Duration,
    /// The CA certificates (PEM) the webhook server's certificate must chain
    /// to; without it, the platform's trusted roots.
    pub webhook_tls_ca_file: Option<PathBuf>,
    /// A TCP or TLS connection attempt's time limit (10 s).
    pub connect_timeout: Duration,
    /// Backoff between attempts (base 200 ms, cap 30 s).
    pub retry: RetryPolicy,
}

impl fmt::Debug for SinkOptions {
    /// Shows everything but the webhook secret's bytes.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SinkOptions")
            .field("queue_capacity_records", &self.queue_capacity_records)
            .field("file_max_bytes", &self.file_max_bytes)
            .field("file_num_kept", &self.file_num_kept)
            .field("syslog_facility", &self.syslog_facility)
            .field("syslog_app_name", &self.syslog_app_name)
            .field("syslog_hostname", &self.syslog_hostname)
            .field("syslog_tls_ca_file", &self.syslog_tls_ca_file)
            .field(
                "syslog_tls_client_cert_file",
                &self.syslog_tls_client_cert_file,
            )
            .field(
                "syslog_tls_client_key_file",
                &self.syslog_tls_client_key_file,
            )
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_max_batch_records", &self.webhook_max_batch_records)
            .field("webhook_max_batch_wait", &self.webhook_max_batch_wait)
            .field("webhook_request_timeout", &self.webhook_request_timeout)
            .field("webhook_tls_ca_file", &self.webhook_tls_ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            queue_capacity_records: 10_000,
            file_max_bytes: 100 * 1024 * 1024,
            file_num_kept: 5,
            syslog_facility: DEFAULT_SYSLOG_FACILITY,
            syslog_app_name: "fedshield".to_string(),
            syslog_hostname: local_hostname(),
            syslog_tls_ca_file: None,
            syslog_tls_client_cert_file: None,
            syslog_tls_client_key_file: None,
            webhook_secret: None,
            webhook_max_batch_records: 500,
            webhook_max_batch_wait: Duration::from_millis(200),
            webhook_request_timeout: Duration::from_secs(10),
            webhook_tls_ca_file: None,
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

impl SinkOptions {
    /// Returns options for tests: a small queue (1,000), small files
    /// (64 KiB, 3 kept), short waits (batch 50 ms, backoff 10 ms to 200 ms,
    /// requests 5 s) and the secret `test-secret`.
    pub fn for_test() -> Self {
        SinkOptions {
            queue_capacity_records: 1_000,
            file_max_bytes: 64 * 1024,
            file_num_kept: 3,
            webhook_secret: Some(b"test-secret".to_vec()),
            webhook_max_batch_wait: Duration::from_millis(50),
            webhook_request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(200),
            },
            ..SinkOptions::default()
        }
    }

    /// Returns every problem of these options, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.queue_capacity_records == 0 {
            problems.push("queue_capacity_records must be at least 1".to_string());
        }
        if self.file_max_bytes == 0 {
            problems.push("file_max_bytes must be at least 1".to_string());
        }
        if self.syslog_facility > 23 {
            problems.push(format!(
                "syslog_facility {} is not a facility code (0 to 23)",
                self.syslog_facility
            ));
        }
        if self.webhook_max_batch_records == 0 {
            problems.push("webhook_max_batch_records must be at least 1".to_string());
        }
        if self.syslog_tls_client_cert_file.is_some() != self.syslog_tls_client_key_file.is_some() {
            problems.push(
                "syslog_tls_client_cert_file and syslog_tls_client_key_file go together"
                    .to_string(),
            );
        }
        problems
    }
}

/// Returns this machine's host name as the kernel reports it, or `-` (the
/// syslog NILVALUE).
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_spec_string_parses() {
        assert_eq!("stdout".parse::<SinkSpec>().ok(), Some(SinkSpec::Stdout));
        assert_eq!(
            "file:/var/log/alerts.jsonl".parse::<SinkSpec>().ok(),
            Some(SinkSpec::File {
                path: PathBuf::from("/var/log/alerts.jsonl")
            })
        );
        assert_eq!(
            "syslog+tls://[::1]:6514".parse::<SinkSpec>().ok(),
            Some(SinkSpec::Syslog {
                transport: SyslogTransport::Tls,
                host: "::1".to_string(),
                port: 6514
            })
        );
        assert_eq!(
            "syslog+udp://siem.example:514"
                .parse::<SinkSpec>()
                .ok()
                .map(|spec| spec.to_string()),
            Some("syslog+udp://siem.example:514".to_string())
        );
        assert!(matches!(
            "https://hooks.example/fedshield".parse::<SinkSpec>(),
            Ok(SinkSpec::Webhook { .. })
        ));
    }

    #[test]
    fn a_bad_spec_is_refused_naming_the_string_and_the_problem() {
        let cases = [
            ("ftp://x", "expected stdout"),
            ("file:", "needs a path"),
            ("syslog+udp://host", "needs a :PORT"),
            ("syslog+tcp://host:99999", "not a number"),
            ("syslog://host:514", "syslog+udp://"),
            ("https://", "not a valid URL"),
        ];
        for (text, expected) in cases {
            let message = match text.parse::<SinkSpec>() {
                Ok(spec) => panic!("{text} parsed as {spec:?}"),
                Err(error) => error.to_string(),
            };
            assert!(message.contains(text), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_and_stays_within_jitter_bounds() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(0, 1.0), Duration::from_millis(200));
        assert_eq!(policy.delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(policy.delay(3, 1.0), Duration::from_millis(1600));
        assert_eq!(policy.delay(40, 1.0), Duration::from_secs(30));
        assert_eq!(policy.delay(40, 0.0), Duration::from_secs(15));
    }

    #[test]
    fn facility_names_map_to_their_codes() {
        assert_eq!(syslog_facility_code("kern"), Some(0));
        assert_eq!(syslog_facility_code("local0"), Some(16));
        assert_eq!(syslog_facility_code("local7"), Some(23));
        assert_eq!(syslog_facility_code("nope"), None);
    }
}
