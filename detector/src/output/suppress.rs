//! The suppression window: repeats of one key (a source address, say)
//! rolled into one alert with a count.
//!
//! The first attack of a key goes out at once, so suppression never delays
//! the first word of an incident. Further attacks of that key within
//! `window` of it are held back and counted; when the window has passed, one
//! roll-up alert goes out (the last repeat, with `count` = the number of
//! repeats), and the next attack of the key opens a new window. Events
//! without a value for the key are never suppressed.
//!
//! At most [`MAX_SUPPRESSED_KEYS`] keys are tracked: past that, every
//! pending roll-up is released and tracking starts over, so an attacker who
//! sprays source addresses costs memory bounded by that number, not by the
//! traffic.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::alert::{Alert, IdentityRole};

/// Keys tracked at once before every pending roll-up is released.
pub const MAX_SUPPRESSED_KEYS: usize = 100_000;

/// What a suppression window rolls up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionSettings {
    /// The echoed field whose value keys the window: a column name, or a
    /// role's ECS name (`source.ip`).
    pub key: String,
    pub window: Duration,
}

/// One key's open window.
struct Window {
    opened: Instant,
    /// The last attack held back in this window, and how many were.
    last_repeat: Option<Alert>,
    num_repeats: u64,
}

/// Tracks open windows by key.
pub struct Suppressor {
    settings: SuppressionSettings,
    key_role: Option<IdentityRole>,
    windows: HashMap<String, Window>,
}

impl Suppressor {
    /// Returns a suppressor with no open window.
    pub fn new(settings: SuppressionSettings) -> Self {
        let key_role = IdentityRole::from_ecs_field(&settings.key);
        Suppressor {
            settings,
            key_role,
            windows: HashMap::new(),
        }
    }

    /// Returns `alert`'s key value, if it has one.
    fn key_of(&self, alert: &Alert) -> Option<String> {
        alert
            .fields
            .iter()
            .find(|field| {
                field.column == self.settings.key
                    || (self.key_role.is_some() && field.role == self.key_role)
            })
            .and_then(|field| field.value.clone())
    }

    /// Offers attack `alert` at `now`; returns what goes out now: nothing
    /// (held back as a repeat), the alert, or a passed window's roll-up and
    /// the alert.
    pub fn offer(&mut self, alert: Alert, now: Instant) -> Vec<Alert> {
        let Some(key) = self.key_of(&alert) else {
            return vec![alert];
        };
        let mut released = Vec::new();
        if let Some(window) = self.windows.get_mut(&key) {
            if now.duration_since(window.opened) < self.settings.window {
                window.num_repeats += 1;
                window.last_repeat = Some(alert);
                return released;
            }
            if let Some(roll_up) = roll_up(window) {
                released.push(roll_up);
            }
            self.windows.remove(&key);
        }
        if self.windows.len() >= MAX_SUPPRESSED_KEYS {
            released.extend(self.drain());
        }
        self.windows.insert(
            key,
            Window {
                opened: now,
                last_repeat: None,
                num_repeats: 0,
            },
        );
        released.push(alert);
        released
    }

    /// Closes the windows that have passed at `now`; returns their roll-ups.
    pub fn expire(&mut self, now: Instant) -> Vec<Alert> {
        let window_length = self.settings.window;
        let mut released = Vec::new();
        self.windows.retain(|_, window| {
            if now.duration_since(window.opened) < window_length {
                return true;
            }
            released.extend(roll_up(window));
            false
        });
        released
    }

    /// Closes every window; returns the roll-ups.
    pub fn drain(&mut self) -> Vec<Alert> {
        self.windows
            .drain()
            .filter_map(|(_, mut window)| roll_up(&mut window))
            .collect()
    }
}

/// Returns a window's roll-up: its last repeat, counting every repeat.
fn roll_up(window: &mut Window) -> Option<Alert> {
    let mut alert = window.last_repeat.take()?;
    alert.count = window.num_repeats;
    Some(alert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{EchoedField, ModelKindName};

    fn attack(line: u64, source: &str) -> Alert {
        Alert {
            source: "conn.log".to_string(),
            line,
            score: 3.0,
            threshold: 0.0,
            alert_fpr: None,
            is_attack: true,
            category: None,
            model_version: 1,
            model_sha256: String::new(),
            model_kind: ModelKindName::BinaryClassifier,
            fields: vec![EchoedField {
                column: "id.orig_h".to_string(),
                role: Some(IdentityRole::SourceIp),
                value: Some(source.to_string()),
            }],
            explanation: Vec::new(),
            count: 1,
            detected_unix_ms: 0,
        }
    }

    #[test]
    fn repeats_within_the_window_roll_into_one_alert_with_their_count() {
        let mut suppressor = Suppressor::new(SuppressionSettings {
            key: "source.ip".to_string(),
            window: Duration::from_secs(60),
        });
        let start = Instant::now();
        assert_eq!(suppressor.offer(attack(1, "10.0.0.1"), start).len(), 1);
        for line in 2..=5 {
            let held =
                suppressor.offer(attack(line, "10.0.0.1"), start + Duration::from_secs(line));
            assert!(held.is_empty(), "line {line} is a repeat");
        }
        // Another key is not held back by this one's window.
        assert_eq!(suppressor.offer(attack(6, "10.0.0.2"), start).len(), 1);
        assert!(
            suppressor
                .expire(start + Duration::from_secs(59))
                .is_empty()
        );
        let rolled = suppressor.expire(start + Duration::from_secs(61));
        assert_eq!(rolled.len(), 1, "only the key with repeats rolls up");
        assert_eq!((rolled[0].line, rolled[0].count), (5, 4));
        // The window is closed: the next attack goes out at once.
        assert_eq!(
            suppressor
                .offer(attack(7, "10.0.0.1"), start + Duration::from_secs(62))
                .len(),
            1
        );
    }

    #[test]
    fn an_attack_after_the_window_releases_the_roll_up_with_it() {
        let mut suppressor = Suppressor::new(SuppressionSettings {
            key: "id.orig_h".to_string(),
            window: Duration::from_secs(10),
        });
        let start = Instant::now();
        suppressor.offer(attack(1, "10.0.0.1"), start);
        assert!(suppressor.offer(attack(2, "10.0.0.1"), start).is_empty());
        let released = suppressor.offer(attack(3, "10.0.0.1"), start + Duration::from_secs(11));
        let lines: Vec<(u64, u64)> = released
            .iter()
            .map(|alert| (alert.line, alert.count))
            .collect();
        assert_eq!(lines, [(2, 1), (3, 1)]);
        assert!(suppressor.drain().is_empty());
    }
}
