//! Wall-clock timestamps as the protocol and model cards carry them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Returns `time` in milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// Returns the current time in milliseconds since the Unix epoch.
pub fn unix_ms_now() -> u64 {
    unix_ms(SystemTime::now())
}
