//! Text that arrived from the network, made safe to log, store or show.
//!
//! A log line is one record: a newline in a logged value forges a second
//! record, an ANSI escape rewrites an operator's terminal, and a
//! megabyte-long value floods the log. Every value a peer chose (a claimed
//! participant id before it is checked, a free-text decline reason) goes
//! through [`escape_bounded`] or [`loggable_participant_id`] before it is
//! logged, stored or shown on the dashboard.

use crate::ids::ParticipantId;

/// Longest free text (e.g. a participant's decline reason) kept, in characters.
pub const MAX_FREE_TEXT_CHARS: usize = 200;

/// Characters of an invalid participant id kept in a log line.
const MAX_INVALID_ID_PREFIX_CHARS: usize = 32;

/// Returns whether `character` must not reach a log line as itself:
/// control characters (C0, DEL, C1, which covers newlines and ESC) and the
/// Unicode controls that reorder or hide text (bidirectional overrides and
/// isolates, zero-width characters, the line and paragraph separators).
fn must_escape(character: char) -> bool {
    character.is_control()
        || matches!(
            character,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Returns at most `max_chars` characters of `text` with every character
/// that could forge a log record or drive a terminal written as an escape:
/// `\n`, `\r`, `\t`, `\\` for a backslash, and `\u{..}` for the others (ESC
/// is `\u{1b}`). When `text` is longer, the kept prefix is followed by
/// `…(N chars)`, N being the length of the whole text.
///
/// The result holds no control character, so it is one line wherever it goes.
pub fn escape_bounded(text: &str, max_chars: usize) -> String {
    let mut escaped = String::with_capacity(text.len().min(max_chars * 2));
    let mut num_chars = 0usize;
    for character in text.chars() {
        num_chars += 1;
        if num_chars > max_chars {
            continue;
        }
        match character {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            '\\' => escaped.push_str("\\\\"),
            other if must_escape(other) => {
                escaped.extend(other.escape_unicode());
            }
            other => escaped.push(other),
        }
    }
    if num_chars > max_chars {
        escaped.push_str(&format!("…({num_chars} chars)"));
    }
    escaped
}

/// Returns how a participant id claimed by a peer appears in logs: the id
/// itself when it follows [`ParticipantId::new`]'s rules (1 to 128 of
/// `[A-Za-z0-9._-]`), otherwise an escaped prefix of at most 32 characters
/// and its length, e.g. `invalid id "evil\n…"(3349 bytes)`.
pub fn loggable_participant_id(claimed: &str) -> String {
    if ParticipantId::new(claimed).is_ok() {
        return claimed.to_string();
    }
    let prefix: String = claimed.chars().take(MAX_INVALID_ID_PREFIX_CHARS).collect();
    let ellipsis = if prefix.len() < claimed.len() {
        "…"
    } else {
        ""
    };
    format!(
        "invalid id \"{}{ellipsis}\"({} bytes)",
        escape_bounded(&prefix, MAX_INVALID_ID_PREFIX_CHARS),
        claimed.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_terminal_escapes_are_written_as_escapes() {
        let forged = "disk full\n2026-01-01T00:00:00Z INFO admin logged in\u{1b}[2J\r\t\\";
        let escaped = escape_bounded(forged, MAX_FREE_TEXT_CHARS);
        assert_eq!(
            escaped,
            "disk full\\n2026-01-01T00:00:00Z INFO admin logged in\\u{1b}[2J\\r\\t\\\\"
        );
        assert!(!escaped.chars().any(char::is_control));
    }

    #[test]
    fn bidirectional_overrides_and_line_separators_are_escaped() {
        let escaped = escape_bounded("a\u{202E}b\u{2028}c\u{85}d", 100);
        assert_eq!(escaped, "a\\u{202e}b\\u{2028}c\\u{85}d");
    }

    #[test]
    fn long_text_is_cut_and_its_length_named() {
        let long = "x".repeat(3_349);
        let escaped = escape_bounded(&long, 200);
        assert_eq!(escaped, format!("{}…(3349 chars)", "x".repeat(200)));
        assert_eq!(escape_bounded("short", 200), "short");
        assert_eq!(escape_bounded(&"y".repeat(200), 200), "y".repeat(200));
    }

    #[test]
    fn valid_participant_ids_are_logged_as_they_are() {
        assert_eq!(loggable_participant_id("acme-soc_1.eu"), "acme-soc_1.eu");
    }

    #[test]
    fn invalid_participant_ids_are_logged_as_a_short_escaped_prefix_and_a_length() {
        let forged = format!("alice\n{}", "A".repeat(3_343));
        let logged = loggable_participant_id(&forged);
        assert_eq!(
            logged,
            format!("invalid id \"alice\\n{}…\"(3349 bytes)", "A".repeat(26))
        );
        assert_eq!(loggable_participant_id(""), "invalid id \"\"(0 bytes)");
        assert_eq!(
            loggable_participant_id("a b"),
            "invalid id \"a b\"(3 bytes)"
        );
    }
}
