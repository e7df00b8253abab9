//! The bounded queue between the scoring thread and a network sink's
//! delivery task, and the counters both sides keep.
//!
//! The scoring thread owns a [`QueueSender`]: [`QueueSender::submit`] is a
//! `try_send` that never waits; a record that does not fit is dropped,
//! counted and reported (a rate-limited warning with counts only). The
//! delivery task owns the [`QueueReceiver`] and counts what it delivered or
//! gave up on. Every record is numbered (`seq`, from 0) in submit order.
//!
//! Accounting: every submitted record ends up counted exactly once, as
//! delivered or dropped, so `num_submitted = num_delivered + num_dropped +
//! queue_depth` at any time. Only the submitting side counts submissions
//! and overflow; only the delivery task counts deliveries and drops of
//! queued records.
//!
//! Flush: [`QueueSender::flush`] wakes the delivery task (a partial webhook
//! batch goes out at once) and waits for the queue to drain. When `wait`
//! passes first, it marks every record submitted so far as abandoned
//! (`discard_below`); the task drops those instead of delivering or retrying
//! them, so a dead destination cannot hold records forever, and the flush
//! waits a little more for the task to count them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tracing::warn;

use super::SinkStats;

/// The least time between two warnings of one kind from one sink.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// How long a timed-out flush waits for the task to count abandoned records.
const ABANDON_GRACE: Duration = Duration::from_secs(1);

/// How often a flush looks at the counters.
const FLUSH_POLL: Duration = Duration::from_millis(2);

/// One encoded record (a framed syslog message, or a JSON object for the
/// webhook) and its submit number.
#[derive(Debug)]
pub struct QueuedRecord {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// The counters and signals a sink and its delivery task share.
#[derive(Debug, Default)]
pub struct DeliveryState {
    num_submitted: AtomicU64,
    num_delivered: AtomicU64,
    num_dropped: AtomicU64,
    num_failed_attempts: AtomicU64,
    num_connections: AtomicU64,
    /// Records numbered below this are abandoned: the task drops them.
    discard_below: AtomicU64,
    /// Wakes the task: a flush wants the partial batch out now, or records
    /// were abandoned (a retry waiting out its backoff gives up).
    wake: Notify,
}

impl DeliveryState {
    /// Counts `num_records` records the destination accepted.
    pub fn record_delivered(&self, num_records: usize) {
        self.num_delivered
            .fetch_add(num_records as u64, Ordering::AcqRel);
    }

    /// Counts `num_records` queued records the task gave up on.
    pub fn record_dropped(&self, num_records: usize) {
        self.num_dropped
            .fetch_add(num_records as u64, Ordering::AcqRel);
    }

    /// Counts one failed delivery attempt.
    pub fn record_failed_attempt(&self) {
        self.num_failed_attempts.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts one connection opened.
    pub fn record_connection(&self) {
        self.num_connections.fetch_add(1, Ordering::AcqRel);
    }

    /// Returns true when record `seq` was abandoned by a timed-out flush or
    /// by the sink going away.
    pub fn is_abandoned(&self, seq: u64) -> bool {
        seq < self.discard_below.load(Ordering::Acquire)
    }

    /// Drops the abandoned records of `records`, counting them; returns how
    /// many it dropped.
    pub fn drop_abandoned(&self, records: &mut Vec<QueuedRecord>) -> usize {
        let num_before = records.len();
        records.retain(|record| !self.is_abandoned(record.seq));
        let num_abandoned = num_before - records.len();
        self.record_dropped(num_abandoned);
        num_abandoned
    }

    /// Waits until a flush or an abandonment wakes the task.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Sleeps for `duration`, or less when woken; returns true when woken.
    pub async fn sleep_unless_woken(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => false,
            () = self.wake.notified() => true,
        }
    }

    fn num_pending(&self) -> u64 {
        let num_submitted = self.num_submitted.load(Ordering::Acquire);
        let num_settled =
            self.num_delivered.load(Ordering::Acquire) + self.num_dropped.load(Ordering::Acquire);
        num_submitted.saturating_sub(num_settled)
    }

    /// Returns the counts so far.
    pub fn stats(&self) -> SinkStats {
        SinkStats {
            num_submitted: self.num_submitted.load(Ordering::Acquire),
            num_delivered: self.num_delivered.load(Ordering::Acquire),
            num_dropped: self.num_dropped.load(Ordering::Acquire),
            queue_depth: self.num_pending(),
            num_failed_attempts: self.num_failed_attempts.load(Ordering::Acquire),
            num_connections: self.num_connections.load(Ordering::Acquire),
        }
    }
}

/// Returns a new queue of `capacity_records` records for sink `sink_name`.
pub fn delivery_queue(
    sink_name: &'static str,
    capacity_records: usize,
) -> (QueueSender, QueueReceiver) {
    let (sender, receiver) = mpsc::channel(capacity_records.max(1));
    let state = Arc::new(DeliveryState::default());
    let queue_sender = QueueSender {
        sink_name,
        sender,
        state: state.clone(),
        next_seq: 0,
        overflow_warning: RateLimitedWarning::default(),
    };
    (queue_sender, QueueReceiver { receiver, state })
}

/// The scoring thread's end of the queue.
#[derive(Debug)]
pub struct QueueSender {
    sink_name: &'static str,
    sender: mpsc::Sender<QueuedRecord>,
    state: Arc<DeliveryState>,
    next_seq: u64,
    overflow_warning: RateLimitedWarning,
}

impl QueueSender {
    /// Queues `payload` without waiting; drops and counts it when the queue
    /// is full or the delivery task is gone.
    pub fn submit(&mut self, payload: Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.state.num_submitted.fetch_add(1, Ordering::AcqRel);
        if self.sender.try_send(QueuedRecord { seq, payload }).is_err() {
            self.state.num_dropped.fetch_add(1, Ordering::AcqRel);
            if let Some(num_dropped_since) = self.overflow_warning.note(1) {
                warn!(
                    sink = self.sink_name,
                    num_dropped_since,
                    num_dropped = self.state.num_dropped.load(Ordering::Acquire),
                    capacity_records = self.sender.max_capacity(),
                    "sink queue full: alerts dropped"
                );
            }
        }
    }

    /// Waits until everything queued is delivered or dropped, or `wait`
    /// passed: then what is still queued is abandoned (counted as dropped by
    /// the delivery task) and reported. Blocks the calling thread: call it
    /// from the scoring thread, never from an async task.
    pub fn flush(&mut self, wait: Duration) {
        self.state.wake.notify_one();
        let deadline = Instant::now() + wait;
        if wait_until_settled(&self.state, deadline) {
            return;
        }
        let num_abandoned = self.state.num_pending();
        self.state
            .discard_below
            .fetch_max(self.next_seq, Ordering::AcqRel);
        self.state.wake.notify_one();
        let settled = wait_until_settled(&self.state, Instant::now() + ABANDON_GRACE);
        warn!(
            sink = self.sink_name,
            num_abandoned,
            wait_ms = wait.as_millis() as u64,
            settled,
            "sink flush timed out: queued alerts dropped"
        );
    }

    /// Returns the counts so far.
    pub fn stats(&self) -> SinkStats {
        self.state.stats()
    }
}

impl Drop for QueueSender {
    /// Abandons what is still queued, so that a task retrying a dead
    /// destination stops: flush first to deliver it.
    fn drop(&mut self) {
        self.state
            .discard_below
            .fetch_max(self.next_seq, Ordering::AcqRel);
        self.state.wake.notify_one();
    }
}

/// Returns true once nothing is pending, false when `deadline` passed first.
fn wait_until_settled(state: &DeliveryState, deadline: Instant) -> bool {
    loop {
        if state.num_pending() == 0 {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(FLUSH_POLL.min(deadline - now));
    }
}

/// The delivery task's end of the queue.
#[derive(Debug)]
pub struct QueueReceiver {
    receiver: mpsc::Receiver<QueuedRecord>,
    pub state: Arc<DeliveryState>,
}

impl QueueReceiver {
    /// Waits for the next record; `None` once the sink is gone and the
    /// queue is empty.
    pub async fn recv(&mut self) -> Option<QueuedRecord> {
        self.receiver.recv().await
    }

    /// Moves queued records into `records` without waiting, until it holds
    /// `max_records`.
    pub fn take_ready(&mut self, records: &mut Vec<QueuedRecord>, max_records: usize) {
        while records.len() < max_records {
            match self.receiver.try_recv() {
                Ok(record) => records.push(record),
                Err(_) => break,
            }
        }
    }
}

/// Counts events of one kind and says when to warn about them: at most once
/// per [`WARNING_INTERVAL`], with the number since the last warning.
#[derive(Debug, Default)]
pub struct RateLimitedWarning {
    last_warned: Option<Instant>,
    num_since_warned: u64,
}

impl RateLimitedWarning {
    /// Counts `num_events`; returns the number to report when a warning is
    /// due now.
    pub fn note(&mut self, num_events: u64) -> Option<u64> {
        self.num_since_warned += num_events;
        let now = Instant::now();
        let due = self
            .last_warned
            .is_none_or(|last| now.duration_since(last) >= WARNING_INTERVAL);
        if !due {
            return None;
        }
        self.last_warned = Some(now);
        Some(std::mem::take(&mut self.num_since_warned))
    }
}

/// Returns a random number in `[0, 1)` for backoff jitter (std's randomly
/// keyed hasher: no cryptographic quality needed).
pub fn unit_random() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (mut sender, _receiver) = delivery_queue("test", 3);
        let started = Instant::now();
        for _ in 0..10 {
            sender.submit(b"{}".to_vec());
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        let stats = sender.stats();
        assert_eq!(stats.num_submitted, 10);
        assert_eq!(stats.num_dropped, 7);
        assert_eq!(stats.queue_depth, 3);
    }

    #[test]
    fn warnings_are_rate_limited_and_carry_the_count_since_the_last() {
        let mut warning = RateLimitedWarning::default();
        assert_eq!(warning.note(1), Some(1));
        assert_eq!(warning.note(1), None);
        assert_eq!(warning.note(2), None);
        warning.last_warned = Instant::now().checked_sub(WARNING_INTERVAL);
        assert_eq!(warning.note(1), Some(4));
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let value = unit_random();
            assert!((0.0..1.0).contains(&value));
        }
    }
}
