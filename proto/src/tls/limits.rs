//! Limits on the connections a coordinator's TLS listeners hold, and the
//! bookkeeping that enforces them.
//!
//! One [`ConnectionTracker`] is shared by every listener of a process (the
//! gRPC port and the HTTPS port), so the caps hold for the process as a
//! whole, and so does the file-descriptor budget they are fitted into.
//!
//! # Policy
//!
//! - **Handshakes.** Every accepted TCP connection gets a TLS handshake of its
//!   own, bounded by [`ListenerLimits::handshake_timeout`]; the accept loop
//!   never waits for a free slot. A source IP has at most
//!   [`ListenerLimits::max_handshakes_per_ip`] handshakes in flight: a new
//!   connection from an IP at its cap cancels that IP's *oldest* handshake.
//!   When [`ListenerLimits::max_handshakes`] are in flight in total, a new
//!   connection cancels the oldest handshake of the *busiest* IP (the one with
//!   the most handshakes in flight; among equals, the one whose oldest
//!   handshake is oldest). An honest handshake takes milliseconds, so the
//!   oldest handshakes are the stalled ones, and one IP (or a few) cannot keep
//!   a newcomer from another IP out: it only ever loses its own. A handshake
//!   younger than a quarter of the handshake timeout ([`EVICTION_GRACE_DIVISOR`])
//!   is never evicted, so a flood that reconnects fast cannot evict an honest
//!   handshake in progress; when only such young handshakes fill a cap, the
//!   newcomer is refused instead.
//! - **Established connections.** A source IP holds at most
//!   [`ListenerLimits::max_connections_per_ip`] TLS connections, and the
//!   process at most [`ListenerLimits::max_connections`]; a connection over
//!   either cap is closed before its handshake (and, if the count changed in
//!   between, after it). Established connections are never evicted: they may
//!   carry an honest participant's long-lived stream. Idle ones are closed
//!   by [`ListenerLimits::idle_timeout`] (and, on HTTPS, by
//!   [`ListenerLimits::header_read_timeout`]).
//! - **File descriptors.** At start, handshakes and connections together are
//!   fitted into the process's `RLIMIT_NOFILE` soft limit, minus
//!   [`RESERVED_DESCRIPTORS`] for everything else, so the listeners cannot
//!   exhaust the descriptor table on their own.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Descriptors left for everything that is not a listener connection (data
/// files, the model registry, the runtime, outgoing object-store
/// connections) when the caps are fitted into `RLIMIT_NOFILE`.
pub const RESERVED_DESCRIPTORS: usize = 64;

/// A handshake younger than `handshake_timeout / EVICTION_GRACE_DIVISOR` is
/// never evicted.
pub const EVICTION_GRACE_DIVISOR: u32 = 4;

/// How many connections the coordinator's listeners take, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Longest time a client may take from TCP accept to a completed TLS
    /// handshake; a slower one is closed.
    pub handshake_timeout: Duration,
    /// TLS handshakes in flight at once, over all source IPs.
    pub max_handshakes: usize,
    /// TLS handshakes in flight at once from one source IP.
    pub max_handshakes_per_ip: usize,
    /// Established TLS connections at once, over all source IPs.
    pub max_connections: usize,
    /// Established TLS connections at once from one source IP.
    pub max_connections_per_ip: usize,
    /// A connection that has neither read nor written a byte for this long
    /// is closed. gRPC pings idle connections more often than that, so a
    /// live client never reaches it.
    pub idle_timeout: Duration,
    /// HTTPS only: the time a client has to send the complete headers of a
    /// request, counted from the end of the TLS handshake for the first
    /// request and from the end of the previous response for the next ones.
    pub header_read_timeout: Duration,
}

impl Default for ListenerLimits {
    /// Returns limits for a coordinator serving hundreds of organizations:
    /// 5 s handshakes, 256 handshakes (8 per IP), 1024 connections (32 per
    /// IP), 120 s idle timeout and 10 s to send request headers.
    fn default() -> Self {
        ListenerLimits {
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 256,
            max_handshakes_per_ip: 8,
            max_connections: 1024,
            max_connections_per_ip: 32,
            idle_timeout: Duration::from_secs(120),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl ListenerLimits {
    /// Returns the default limits without per-IP caps (they equal the
    /// totals), for a federation whose participants all run on one host and
    /// connect at once (the demo, the benchmarks).
    pub fn single_host() -> Self {
        let defaults = ListenerLimits::default();
        ListenerLimits {
            max_handshakes_per_ip: defaults.max_handshakes,
            max_connections_per_ip: defaults.max_connections,
            ..defaults
        }
    }

    /// Checks the values against each other.
    ///
    /// # Errors
    /// Every problem found, each naming its setting (the coordinator's flag
    /// without dashes).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for (name, duration) in [
            ("handshake_timeout_secs", self.handshake_timeout),
            ("idle_timeout_secs", self.idle_timeout),
            ("header_read_timeout_secs", self.header_read_timeout),
        ] {
            if duration.is_zero() {
                problems.push(format!("{name} must be positive"));
            }
        }
        for (name, count) in [
            ("max_handshakes", self.max_handshakes),
            ("max_handshakes_per_ip", self.max_handshakes_per_ip),
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
        ] {
            if count == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        if self.max_handshakes_per_ip > self.max_handshakes {
            problems.push(format!(
                "max_handshakes_per_ip ({}) cannot exceed max_handshakes ({})",
                self.max_handshakes_per_ip, self.max_handshakes
            ));
        }
        if self.max_connections_per_ip > self.max_connections {
            problems.push(format!(
                "max_connections_per_ip ({}) cannot exceed max_connections ({})",
                self.max_connections_per_ip, self.max_connections
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Returns these limits with `max_handshakes + max_connections` lowered,
    /// in proportion, to fit `num_descriptors` (per-IP caps follow), or
    /// unchanged when they fit.
    pub fn fitted_to_descriptors(&self, num_descriptors: usize) -> ListenerLimits {
        let wanted = self.max_handshakes + self.max_connections;
        if wanted <= num_descriptors {
            return self.clone();
        }
        let scale = |count: usize| (count * num_descriptors / wanted).max(1);
        let max_handshakes = scale(self.max_handshakes);
        let max_connections = scale(self.max_connections);
        ListenerLimits {
            max_handshakes,
            max_handshakes_per_ip: self.max_handshakes_per_ip.min(max_handshakes),
            max_connections,
            max_connections_per_ip: self.max_connections_per_ip.min(max_connections),
            ..self.clone()
        }
    }
}

/// Returns the descriptors the listeners may use: the `RLIMIT_NOFILE` soft
/// limit minus [`RESERVED_DESCRIPTORS`], or `None` when it is unlimited or
/// unknown.
fn descriptor_budget() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own and reads nothing else.
        let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        if status != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        let soft_limit = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
        Some(soft_limit.saturating_sub(RESERVED_DESCRIPTORS).max(2))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Why a connection was closed before it could be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// Its source IP already holds `max_connections_per_ip` connections.
    PeerAtConnectionCap { max_connections_per_ip: usize },
    /// The process already holds `max_connections` connections.
    AtConnectionCap { max_connections: usize },
    /// Its handshake was cancelled to make room for a newer connection.
    Evicted,
    /// The handshake caps are full of handshakes too young to evict.
    AtHandshakeCap,
}

impl fmt::Display for ConnectionRefusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionRefusal::PeerAtConnectionCap {
                max_connections_per_ip,
            } => write!(
                formatter,
                "source IP already holds max_connections_per_ip ({max_connections_per_ip}) connections"
            ),
            ConnectionRefusal::AtConnectionCap { max_connections } => write!(
                formatter,
                "the coordinator already holds max_connections ({max_connections}) connections"
            ),
            ConnectionRefusal::AtHandshakeCap => write!(
                formatter,
                "handshake caps full of handshakes younger than the eviction grace period"
            ),
            ConnectionRefusal::Evicted => {
                write!(formatter, "handshake evicted to make room for a newer one")
            }
        }
    }
}

/// What the listeners hold now, and how many connections they shed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenerCounts {
    /// TLS handshakes in flight.
    pub num_handshakes: usize,
    /// Established TLS connections.
    pub num_connections: usize,
    /// Connections closed before their handshake because of a connection cap.
    pub num_refused: u64,
    /// Handshakes cancelled to make room for a newer connection.
    pub num_evicted: u64,
    /// Handshakes that did not complete within the handshake timeout.
    pub num_handshake_timeouts: u64,
    /// Established connections closed after the idle or header-read timeout.
    pub num_idle_closed: u64,
}

/// The connections of one source IP.
#[derive(Default)]
struct PeerConnections {
    /// Handshakes in flight, oldest first: their id and the token that
    /// cancels them.
    handshakes: VecDeque<(u64, Instant, CancellationToken)>,
    /// Established connections.
    num_connections: usize,
}

/// Everything [`ConnectionTracker`] counts, behind one lock.
#[derive(Default)]
struct TrackerState {
    /// Id of the next handshake; ids grow with age, so the smallest is the oldest.
    next_handshake_id: u64,
    num_handshakes: usize,
    num_connections: usize,
    /// Source IPs with at least one handshake or connection.
    peers: HashMap<IpAddr, PeerConnections>,
}

impl TrackerState {
    /// Cancels the oldest handshake of `address`, if any.
    fn evict_oldest_of(&mut self, address: IpAddr) -> bool {
        let Some(peer) = self.peers.get_mut(&address) else {
            return false;
        };
        let Some((_, _, cancel)) = peer.handshakes.pop_front() else {
            return false;
        };
        cancel.cancel();
        self.num_handshakes -= 1;
        self.forget_if_empty(address);
        true
    }

    /// Returns whether the oldest handshake of `address` is older than `grace`.
    fn oldest_is_older_than(&self, address: IpAddr, grace: Duration) -> bool {
        self.peers
            .get(&address)
            .and_then(|peer| peer.handshakes.front())
            .is_some_and(|(_, admitted, _)| admitted.elapsed() >= grace)
    }

    /// Returns the IP with the most handshakes in flight among those whose
    /// oldest handshake is older than `grace`; among equals, the one whose
    /// oldest handshake is oldest.
    fn busiest_peer(&self, grace: Duration) -> Option<IpAddr> {
        self.peers
            .iter()
            .filter_map(|(address, peer)| {
                let (oldest_id, admitted, _) = peer.handshakes.front()?;
                if admitted.elapsed() < grace {
                    return None;
                }
                Some((
                    peer.handshakes.len(),
                    std::cmp::Reverse(*oldest_id),
                    *address,
                ))
            })
            .max()
            .map(|(_, _, address)| address)
    }

    /// Drops the entry of `address` once it holds nothing.
    fn forget_if_empty(&mut self, address: IpAddr) {
        if self
            .peers
            .get(&address)
            .is_some_and(|peer| peer.handshakes.is_empty() && peer.num_connections == 0)
        {
            self.peers.remove(&address);
        }
    }

    /// Removes handshake `id` of `address`; returns whether it was still there
    /// (it is not once evicted).
    fn remove_handshake(&mut self, address: IpAddr, id: u64) -> bool {
        let Some(peer) = self.peers.get_mut(&address) else {
            return false;
        };
        let Some(position) = peer
            .handshakes
            .iter()
            .position(|(handshake_id, _, _)| *handshake_id == id)
        else {
            return false;
        };
        peer.handshakes.remove(position);
        self.num_handshakes -= 1;
        self.forget_if_empty(address);
        true
    }

    /// Returns why `address` may not hold one more connection, if it may not.
    fn connection_cap_reached(
        &self,
        address: IpAddr,
        limits: &ListenerLimits,
    ) -> Option<ConnectionRefusal> {
        let peer_connections = self
            .peers
            .get(&address)
            .map_or(0, |peer| peer.num_connections);
        if peer_connections >= limits.max_connections_per_ip {
            return Some(ConnectionRefusal::PeerAtConnectionCap {
                max_connections_per_ip: limits.max_connections_per_ip,
            });
        }
        if self.num_connections >= limits.max_connections {
            return Some(ConnectionRefusal::AtConnectionCap {
                max_connections: limits.max_connections,
            });
        }
        None
    }
}

/// A warning logged at most once per interval, with the number of times it
/// was held back since, so that a flood cannot flood the logs.
pub(crate) struct RateLimitedWarning {
    interval: Duration,
    /// When it was last logged, and how many times it was held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedWarning {
    pub(crate) fn new(interval: Duration) -> Self {
        RateLimitedWarning {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Returns `Some(num_suppressed)` when the warning should be logged now
    /// (with how many were held back since the last one), `None` otherwise.
    pub(crate) fn should_log(&self) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .expect("the warning lock is never poisoned");
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                state.1 += 1;
                None
            }
            _ => {
                let num_suppressed = state.1;
                *state = (Some(now), 0);
                Some(num_suppressed)
            }
        }
    }
}

/// How often the listeners warn that they shed connections.
const SHED_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Counts the handshakes and connections of every listener of a process and
/// decides, under one lock, which connection to admit, refuse or evict
/// (see the [module documentation](self) for the policy).
pub struct ConnectionTracker {
    /// The limits in force: the configured ones fitted to the descriptor budget.
    limits: ListenerLimits,
    state: Mutex<TrackerState>,
    num_refused: AtomicU64,
    num_evicted: AtomicU64,
    num_handshake_timeouts: AtomicU64,
    num_idle_closed: AtomicU64,
    /// "connections shed" warning, once per [`SHED_WARNING_INTERVAL`].
    shed_warning: RateLimitedWarning,
}

impl fmt::Debug for ConnectionTracker {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ConnectionTracker")
            .field("limits", &self.limits)
            .field("counts", &self.counts())
            .finish()
    }
}

impl ConnectionTracker {
    /// Returns a tracker enforcing `limits`, lowered to fit the process's
    /// descriptor limit (with a warning naming both) when they do not.
    pub fn new(limits: ListenerLimits) -> Arc<Self> {
        let limits = match descriptor_budget() {
            Some(budget) => {
                let fitted = limits.fitted_to_descriptors(budget);
                if fitted != limits {
                    warn!(
                        descriptor_budget = budget,
                        reserved_descriptors = RESERVED_DESCRIPTORS,
                        max_handshakes = fitted.max_handshakes,
                        max_connections = fitted.max_connections,
                        "connection caps lowered to fit the open-file limit (ulimit -n)"
                    );
                }
                fitted
            }
            None => limits,
        };
        Self::with_exact_limits(limits)
    }

    /// Returns a tracker enforcing exactly `limits`, whatever the descriptor limit.
    pub fn with_exact_limits(limits: ListenerLimits) -> Arc<Self> {
        Arc::new(ConnectionTracker {
            limits,
            state: Mutex::new(TrackerState::default()),
            num_refused: AtomicU64::new(0),
            num_evicted: AtomicU64::new(0),
            num_handshake_timeouts: AtomicU64::new(0),
            num_idle_closed: AtomicU64::new(0),
            shed_warning: RateLimitedWarning::new(SHED_WARNING_INTERVAL),
        })
    }

    /// Returns the limits in force.
    pub fn limits(&self) -> &ListenerLimits {
        &self.limits
    }

    /// Returns what the listeners hold now and what they shed so far.
    pub fn counts(&self) -> ListenerCounts {
        let state = self.lock();
        ListenerCounts {
            num_handshakes: state.num_handshakes,
            num_connections: state.num_connections,
            num_refused: self.num_refused.load(Ordering::Relaxed),
            num_evicted: self.num_evicted.load(Ordering::Relaxed),
            num_handshake_timeouts: self.num_handshake_timeouts.load(Ordering::Relaxed),
            num_idle_closed: self.num_idle_closed.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state
            .lock()
            .expect("the tracker lock is never held across a panic")
    }

    /// Admits a new TCP connection from `address` to a TLS handshake, after
    /// cancelling the handshake it displaces, if any.
    ///
    /// # Errors
    /// [`ConnectionRefusal`] when `address` or the process is at its
    /// connection cap: the caller closes the connection.
    pub fn admit_handshake(
        self: &Arc<Self>,
        address: IpAddr,
    ) -> Result<HandshakeTicket, ConnectionRefusal> {
        let mut state = self.lock();
        if let Some(refusal) = state.connection_cap_reached(address, &self.limits) {
            drop(state);
            self.record_shed(&self.num_refused, refusal);
            return Err(refusal);
        }
        let peer_handshakes = state
            .peers
            .get(&address)
            .map_or(0, |peer| peer.handshakes.len());
        // Handshakes younger than the grace period are never evicted, so a
        // flood that reconnects fast cannot evict an honest handshake still
        // in progress; when there is nothing to evict the newcomer is refused.
        let grace = self.limits.handshake_timeout / EVICTION_GRACE_DIVISOR;
        let evicted = if peer_handshakes >= self.limits.max_handshakes_per_ip {
            if !state.oldest_is_older_than(address, grace) {
                drop(state);
                let refusal = ConnectionRefusal::AtHandshakeCap;
                self.record_shed(&self.num_refused, refusal);
                return Err(refusal);
            }
            state.evict_oldest_of(address)
        } else if state.num_handshakes >= self.limits.max_handshakes {
            // A young handshake is still evicted when its IP holds more
            // handshakes than the newcomer's will: one IP cannot hide behind
            // fast reconnects.
            let busier_than_newcomer = state.busiest_peer(Duration::ZERO).filter(|busiest| {
                state
                    .peers
                    .get(busiest)
                    .is_some_and(|peer| peer.handshakes.len() > peer_handshakes + 1)
            });
            match state.busiest_peer(grace).or(busier_than_newcomer) {
                Some(busiest) => state.evict_oldest_of(busiest),
                None => {
                    drop(state);
                    let refusal = ConnectionRefusal::AtHandshakeCap;
                    self.record_shed(&self.num_refused, refusal);
                    return Err(refusal);
                }
            }
        } else {
            false
        };
        let id = state.next_handshake_id;
        state.next_handshake_id += 1;
        let cancel = CancellationToken::new();
        state
            .peers
            .entry(address)
            .or_default()
            .handshakes
            .push_back((id, Instant::now(), cancel.clone()));
        state.num_handshakes += 1;
        drop(state);
        if evicted {
            self.record_shed(&self.num_evicted, ConnectionRefusal::Evicted);
        }
        Ok(HandshakeTicket {
            tracker: Arc::clone(self),
            address,
            id,
            cancel,
        })
    }

    /// Counts one shed connection in `counter` and warns, at most once per
    /// [`SHED_WARNING_INTERVAL`], with the totals.
    fn record_shed(&self, counter: &AtomicU64, reason: ConnectionRefusal) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(num_suppressed) = self.shed_warning.should_log() {
            let counts = self.counts();
            warn!(
                reason = %reason,
                num_refused = counts.num_refused,
                num_evicted = counts.num_evicted,
                num_handshakes = counts.num_handshakes,
                num_connections = counts.num_connections,
                num_suppressed,
                "listener at its connection caps: connections shed"
            );
        }
    }

    /// Counts a handshake that ran out of time.
    pub(crate) fn record_handshake_timeout(&self) {
        self.num_handshake_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed by the idle or header-read timeout.
    pub fn record_idle_closed(&self) {
        self.num_idle_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A TLS handshake in flight, counted against its source IP until it is
/// dropped or turned into a [`ConnectionSlot`].
pub struct HandshakeTicket {
    tracker: Arc<ConnectionTracker>,
    address: IpAddr,
    id: u64,
    /// Cancelled when a newer connection evicts this handshake.
    cancel: CancellationToken,
}

impl HandshakeTicket {
    /// Returns the token cancelled when this handshake is evicted.
    pub fn eviction(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Turns the completed handshake into an established connection.
    ///
    /// # Errors
    /// [`ConnectionRefusal::Evicted`] if it was evicted meanwhile, or a cap
    /// that other handshakes filled meanwhile: the caller closes it.
    pub fn establish(self) -> Result<ConnectionSlot, ConnectionRefusal> {
        let tracker = Arc::clone(&self.tracker);
        let address = self.address;
        let mut state = tracker.lock();
        if !state.remove_handshake(address, self.id) {
            return Err(ConnectionRefusal::Evicted);
        }
        if let Some(refusal) = state.connection_cap_reached(address, &tracker.limits) {
            drop(state);
            tracker.record_shed(&tracker.num_refused, refusal);
            return Err(refusal);
        }
        state.num_connections += 1;
        state.peers.entry(address).or_default().num_connections += 1;
        drop(state);
        Ok(ConnectionSlot {
            tracker: Arc::clone(&self.tracker),
            address,
        })
    }
}

impl Drop for HandshakeTicket {
    fn drop(&mut self) {
        // Gone already when evicted or established; then this is a no-op.
        self.tracker.lock().remove_handshake(self.address, self.id);
    }
}

/// An established connection, counted against its source IP until dropped.
pub struct ConnectionSlot {
    tracker: Arc<ConnectionTracker>,
    address: IpAddr,
}

impl ConnectionSlot {
    /// Returns the tracker that counts this connection.
    pub fn tracker(&self) -> &Arc<ConnectionTracker> {
        &self.tracker
    }

    /// Returns the source IP of the connection.
    pub fn address(&self) -> IpAddr {
        self.address
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut state = self.tracker.lock();
        state.num_connections -= 1;
        if let Some(peer) = state.peers.get_mut(&self.address) {
            peer.num_connections -= 1;
        }
        state.forget_if_empty(self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_handshakes: usize, per_ip: usize) -> ListenerLimits {
        ListenerLimits {
            // No eviction grace period: handshakes are evictable at once.
            handshake_timeout: Duration::ZERO,
            max_handshakes,
            max_handshakes_per_ip: per_ip,
            max_connections: 4,
            max_connections_per_ip: 2,
            ..ListenerLimits::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_new_handshake_from_an_ip_at_its_cap_evicts_that_ips_oldest() {
        let tracker = ConnectionTracker::with_exact_limits(limits(16, 2));
        let first = tracker.admit_handshake(ip(2)).unwrap();
        let second = tracker.admit_handshake(ip(2)).unwrap();
        let third = tracker.admit_handshake(ip(2)).unwrap();
        assert!(first.eviction().is_cancelled());
        assert!(!second.eviction().is_cancelled());
        assert!(!third.eviction().is_cancelled());
        assert_eq!(tracker.counts().num_handshakes, 2);
        assert_eq!(tracker.counts().num_evicted, 1);
        assert_eq!(first.establish().err(), Some(ConnectionRefusal::Evicted));
        assert_eq!(tracker.counts().num_handshakes, 2);
    }

    #[test]
    fn at_the_total_cap_the_busiest_ip_loses_its_oldest_handshake_not_the_newcomer() {
        let tracker = ConnectionTracker::with_exact_limits(limits(4, 3));
        let busy: Vec<_> = (0..3)
            .map(|_| tracker.admit_handshake(ip(2)).unwrap())
            .collect();
        let other = tracker.admit_handshake(ip(3)).unwrap();
        let newcomer = tracker.admit_handshake(ip(1)).unwrap();
        assert!(busy[0].eviction().is_cancelled());
        assert!(!busy[1].eviction().is_cancelled());
        assert!(!other.eviction().is_cancelled());
        assert!(!newcomer.eviction().is_cancelled());
        assert_eq!(tracker.counts().num_handshakes, 4);
    }

    #[test]
    fn handshakes_younger_than_the_grace_period_are_not_evicted_and_the_newcomer_is_refused() {
        let tracker = ConnectionTracker::with_exact_limits(ListenerLimits {
            handshake_timeout: Duration::from_secs(60),
            ..limits(2, 1)
        });
        let honest = tracker.admit_handshake(ip(1)).unwrap();
        assert_eq!(
            tracker.admit_handshake(ip(1)).err(),
            Some(ConnectionRefusal::AtHandshakeCap)
        );
        let other = tracker.admit_handshake(ip(2)).unwrap();
        assert_eq!(
            tracker.admit_handshake(ip(3)).err(),
            Some(ConnectionRefusal::AtHandshakeCap)
        );
        assert!(!honest.eviction().is_cancelled());
        assert!(!other.eviction().is_cancelled());
    }

    #[test]
    fn connections_over_the_per_ip_or_total_cap_are_refused_and_slots_free_on_drop() {
        let tracker = ConnectionTracker::with_exact_limits(limits(16, 8));
        let first = tracker.admit_handshake(ip(2)).unwrap().establish().unwrap();
        let second = tracker.admit_handshake(ip(2)).unwrap().establish().unwrap();
        assert_eq!(
            tracker.admit_handshake(ip(2)).err(),
            Some(ConnectionRefusal::PeerAtConnectionCap {
                max_connections_per_ip: 2
            })
        );
        let third = tracker.admit_handshake(ip(3)).unwrap().establish().unwrap();
        let fourth = tracker.admit_handshake(ip(4)).unwrap().establish().unwrap();
        assert_eq!(
            tracker.admit_handshake(ip(5)).err(),
            Some(ConnectionRefusal::AtConnectionCap { max_connections: 4 })
        );
        assert_eq!(tracker.counts().num_refused, 2);
        drop((first, second, third, fourth));
        assert_eq!(tracker.counts().num_connections, 0);
        assert!(tracker.lock().peers.is_empty(), "no entry is left behind");
        tracker.admit_handshake(ip(2)).unwrap().establish().unwrap();
    }

    #[test]
    fn caps_are_lowered_in_proportion_to_fit_the_descriptor_budget() {
        let fitted = ListenerLimits::default().fitted_to_descriptors(192);
        assert_eq!(fitted.max_handshakes, 38);
        assert_eq!(fitted.max_connections, 153);
        assert_eq!(fitted.max_handshakes_per_ip, 8);
        assert_eq!(
            ListenerLimits::default().fitted_to_descriptors(100_000),
            ListenerLimits::default()
        );
    }

    #[test]
    fn invalid_limits_are_reported_with_their_names() {
        let problems = ListenerLimits {
            handshake_timeout: Duration::ZERO,
            max_connections_per_ip: 2000,
            ..ListenerLimits::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            problems
                .iter()
                .any(|problem| problem.contains("handshake_timeout"))
        );
        assert!(
            problems
                .iter()
                .any(|problem| problem.contains("max_connections_per_ip (2000)"))
        );
    }
}
