//! The webhook sink: alerts POSTed in batches, as a JSON array, signed with
//! HMAC-SHA256.
//!
//! A task on the runtime takes records from the queue into a batch of up to
//! `webhook_max_batch_records`, sent when full, when the first record waited
//! `webhook_max_batch_wait`, or at once when the scoring thread flushes. Each
//! request carries:
//! - `Content-Type: application/json`, the body `[record,record,…]`;
//! - `X-Fedshield-Signature: sha256=<hex HMAC-SHA256 of the exact body>`
//!   with the webhook secret;
//! - `X-Fedshield-Batch-Id`: the sink instance and the batch's first record
//!   number, the same on every retry of the batch, so a receiver can drop
//!   a batch it already has (delivery is at least once).
//!
//! A connection error, a timeout, 408, 429 or a 5xx is retried with
//! exponential backoff and jitter (a `Retry-After` of whole seconds is
//! honoured, up to the backoff cap); any other status outside 2xx drops the
//! batch, counted and logged with the status. A batch is retried until it
//! succeeds or a timed-out flush abandons it; meanwhile the queue fills and
//! new alerts are dropped and counted, never waited for.

use std::fmt::Write as _;
use std::sync::Once;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use sha2::Sha256;
use tokio::task::JoinHandle;
use tracing::warn;

use super::queue::{
    QueueReceiver, QueueSender, QueuedRecord, RateLimitedWarning, delivery_queue, unit_random,
};
use super::{AlertSink, RetryPolicy, SinkError, SinkOptions, SinkStats};
use crate::alert::Alert;
use crate::error::Result;

/// The signature header: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Fedshield-Signature";
/// The batch id header, stable across retries.
pub const BATCH_ID_HEADER: &str = "X-Fedshield-Batch-Id";

/// Returns the `X-Fedshield-Signature` value of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs batches of alerts to a URL.
pub struct WebhookSink {
    queue: QueueSender,
    task: JoinHandle<()>,
}

impl WebhookSink {
    /// Starts a webhook sink to `url`, its delivery on `runtime`.
    ///
    /// # Errors
    /// No secret in `options`, a CA file that cannot be read, or an HTTP
    /// client that cannot be built.
    pub fn open(
        url: &str,
        options: &SinkOptions,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self> {
        let setup_error = |reason: String| SinkError::Setup {
            sink: url.to_string(),
            reason,
        };
        let Some(secret) = options.webhook_secret.clone() else {
            return Err(
                setup_error("the webhook needs an HMAC secret (webhook_secret)".into()).into(),
            );
        };
        let target = reqwest::Url::parse(url)
            .map_err(|error| setup_error(format!("not a valid URL: {error}")))?;
        install_tls_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(options.webhook_request_timeout)
            .connect_timeout(options.connect_timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca_file) = &options.webhook_tls_ca_file {
            let pem = std::fs::read(ca_file).map_err(|error| {
                setup_error(format!(
                    "failed to read CA file {}: {error}",
                    ca_file.display()
                ))
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|error| setup_error(format!("CA file {}: {error}", ca_file.display())))?;
            if certificates.is_empty() {
                return Err(setup_error(format!(
                    "CA file {} holds no certificate",
                    ca_file.display()
                ))
                .into());
            }
            builder = builder.tls_certs_only(certificates);
        }
        let client = {
            let _entered = runtime.enter();
            builder
                .build()
                .map_err(|error| setup_error(format!("failed to build the HTTP client: {error}")))?
        };
        let (queue, receiver) = delivery_queue("webhook", options.queue_capacity_records);
        let delivery = Delivery {
            client,
            url: target,
            secret,
            instance: instance_id(),
            max_batch_records: options.webhook_max_batch_records,
            max_batch_wait: options.webhook_max_batch_wait,
            retry: options.retry,
            failure_warning: RateLimitedWarning::default(),
        };
        let task = runtime.spawn(delivery.run(receiver));
        Ok(WebhookSink { queue, task })
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    fn submit(&mut self, _alert: &Alert, record: &[u8]) -> Result<()> {
        self.queue.submit(record.to_vec());
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

/// rustls for HTTPS uses the process's default provider: ring, as
/// everywhere else in the binary.
fn install_tls_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Another component may have installed it already; either way ring
        // (the only provider compiled in) is the one in use.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Returns an id of this sink instance: the start time and process id, so
/// that batch ids of two runs do not collide.
fn instance_id() -> String {
    let started_unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("{started_unix_ns:x}-{:x}", std::process::id())
}

/// What the delivery task needs.
struct Delivery {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Vec<u8>,
    instance: String,
    max_batch_records: usize,
    max_batch_wait: Duration,
    retry: RetryPolicy,
    failure_warning: RateLimitedWarning,
}

/// What one attempt of a batch came to.
enum Outcome {
    Delivered,
    /// Worth retrying, after at least this long when the server said so.
    Retry {
        retry_after: Option<Duration>,
    },
    /// The server refused the batch for good.
    Refused(StatusCode),
}

impl Delivery {
    /// Sends batches until the sink goes away.
    async fn run(mut self, mut receiver: QueueReceiver) {
        let mut batch: Vec<QueuedRecord> = Vec::new();
        loop {
            let Some(first) = receiver.recv().await else {
                return;
            };
            batch.push(first);
            self.fill_batch(&mut receiver, &mut batch).await;
            self.send_batch(&receiver, &mut batch).await;
            batch.clear();
        }
    }

    /// Adds queued records to `batch` until it is full, its wait passed or
    /// a flush asks for it.
    async fn fill_batch(&self, receiver: &mut QueueReceiver, batch: &mut Vec<QueuedRecord>) {
        let deadline = tokio::time::Instant::now() + self.max_batch_wait;
        let state = receiver.state.clone();
        loop {
            receiver.take_ready(batch, self.max_batch_records);
            if batch.len() >= self.max_batch_records {
                return;
            }
            tokio::select! {
                record = receiver.recv() => match record {
                    Some(record) => batch.push(record),
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => return,
                () = state.woken() => {
                    receiver.take_ready(batch, self.max_batch_records);
                    return;
                }
            }
        }
    }

    /// Sends `batch` until it is delivered, refused or abandoned.
    async fn send_batch(&mut self, receiver: &QueueReceiver, batch: &mut Vec<QueuedRecord>) {
        let state = receiver.state.clone();
        let Some(first) = batch.first() else {
            return;
        };
        let batch_id = format!("{}-{}", self.instance, first.seq);
        let body = json_array(batch);
        let signature = signature(&self.secret, &body);
        let mut num_failures: u32 = 0;
        loop {
            // A timed-out flush abandoned the batch (it abandons every
            // record submitted before it, so all of this batch).
            if state.drop_abandoned(batch) > 0 {
                state.record_dropped(batch.len());
                return;
            }
            match self.attempt(&body, &batch_id, &signature).await {
                Outcome::Delivered => {
                    state.record_delivered(batch.len());
                    return;
                }
                Outcome::Refused(status) => {
                    state.record_failed_attempt();
                    state.record_dropped(batch.len());
                    warn!(
                        sink = "webhook",
                        status = status.as_u16(),
                        num_records = batch.len(),
                        batch_id,
                        "webhook refused a batch; dropped"
                    );
                    return;
                }
                Outcome::Retry { retry_after } => {
                    state.record_failed_attempt();
                    let backoff = self.retry.delay(num_failures, unit_random());
                    let delay = retry_after
                        .map_or(backoff, |asked| asked.max(backoff))
                        .min(self.retry.cap);
                    num_failures = num_failures.saturating_add(1);
                    state.sleep_unless_woken(delay).await;
                }
            }
        }
    }

    /// POSTs `body` once.
    async fn attempt(&mut self, body: &[u8], batch_id: &str, signature: &str) -> Outcome {
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(BATCH_ID_HEADER, batch_id)
            .body(body.to_vec())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                if let Some(num_failures_since) = self.failure_warning.note(1) {
                    warn!(sink = "webhook", num_failures_since, error = %error_chain(&error), "webhook request failed; retrying");
                }
                return Outcome::Retry { retry_after: None };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let retryable = status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error();
        if !retryable {
            return Outcome::Refused(status);
        }
        if let Some(num_failures_since) = self.failure_warning.note(1) {
            warn!(
                sink = "webhook",
                num_failures_since,
                status = status.as_u16(),
                "webhook answered with a retryable status; retrying"
            );
        }
        Outcome::Retry {
            retry_after: retry_after(response.headers()),
        }
    }
}

/// Returns a `Retry-After` of whole seconds (the HTTP-date form is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Returns `[record,record,…]`.
fn json_array(batch: &[QueuedRecord]) -> Vec<u8> {
    let num_bytes: usize = batch.iter().map(|record| record.payload.len() + 1).sum();
    let mut body = Vec::with_capacity(num_bytes + 2);
    body.push(b'[');
    for (index, record) in batch.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&record.payload);
    }
    body.push(b']');
    body
}

/// Returns an error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_batch_body_is_a_json_array_of_its_records() {
        let batch = vec![
            QueuedRecord {
                seq: 0,
                payload: br#"{"a":1}"#.to_vec(),
            },
            QueuedRecord {
                seq: 1,
                payload: br#"{"b":2}"#.to_vec(),
            },
        ];
        assert_eq!(json_array(&batch), br#"[{"a":1},{"b":2}]"#);
    }

    #[test]
    fn retry_after_reads_whole_seconds_only() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "3".parse().expect("a valid header value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT"
                .parse()
                .expect("a valid header value"),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
