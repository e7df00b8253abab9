//! Event and detection times as formats write them: RFC 3339 texts in UTC
//! and UNIX milliseconds, converted by hand (no allocation, no time zone
//! database) because the native format writes one per event.
//!
//! An event's `Timestamp` column holds either UNIX seconds with an optional
//! fraction (Zeek `ts`: `1526044838.104366`) or an RFC 3339 text (Suricata
//! `timestamp`: `2018-05-11T13:20:38.104366+0000` is *not* RFC 3339, its
//! offset lacks the colon; it is read, and re-written as RFC 3339).

use std::fmt;

use serde::{Serialize, Serializer};

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;
/// The largest UNIX second formats accept (9999-12-31T23:59:59Z).
const MAX_UNIX_SECS: i64 = 253_402_300_799;

/// An instant as whole UNIX seconds, its fraction's decimal digits (up to
/// nine, as the source wrote them) and, for times read from RFC 3339 texts,
/// nothing else: every time is written in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    unix_secs: i64,
    /// The fraction's digits, most significant first; `num_fraction_digits` of them are used.
    fraction_digits: [u8; 9],
    num_fraction_digits: u8,
}

impl EventTime {
    /// Returns the instant `unix_ms` milliseconds after the epoch.
    pub fn from_unix_ms(unix_ms: u64) -> EventTime {
        let millis = (unix_ms % 1000) as u16;
        let unix_secs = i64::try_from(unix_ms / 1000).unwrap_or(MAX_UNIX_SECS);
        let mut fraction_digits = [b'0'; 9];
        fraction_digits[0] = b'0' + (millis / 100) as u8;
        fraction_digits[1] = b'0' + (millis / 10 % 10) as u8;
        fraction_digits[2] = b'0' + (millis % 10) as u8;
        EventTime {
            unix_secs: unix_secs.min(MAX_UNIX_SECS),
            fraction_digits,
            num_fraction_digits: 3,
        }
    }

    /// Reads an event's timestamp column: UNIX seconds (`1526044838.104366`,
    /// `1526044838`) or an RFC 3339 date-time (also with a `+hhmm` offset).
    /// Returns `None` for anything else, or for years outside 1970..=9999.
    pub fn parse(text: &str) -> Option<EventTime> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        if text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'.')
        {
            return EventTime::parse_unix_secs(text);
        }
        EventTime::parse_rfc3339(text)
    }

    fn parse_unix_secs(text: &str) -> Option<EventTime> {
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        if whole.is_empty() || whole.len() > 12 {
            return None;
        }
        let unix_secs: i64 = whole.parse().ok()?;
        if unix_secs > MAX_UNIX_SECS {
            return None;
        }
        EventTime::with_fraction(unix_secs, fraction)
    }

    fn with_fraction(unix_secs: i64, fraction: &str) -> Option<EventTime> {
        if !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let mut fraction_digits = [b'0'; 9];
        let used = &fraction.as_bytes()[..fraction.len().min(9)];
        fraction_digits[..used.len()].copy_from_slice(used);
        Some(EventTime {
            unix_secs,
            fraction_digits,
            num_fraction_digits: used.len() as u8,
        })
    }

    /// Reads `YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm|±hhmm)`.
    fn parse_rfc3339(text: &str) -> Option<EventTime> {
        let bytes = text.as_bytes();
        if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[13] != b':' || bytes[16] != b':' {
            return None;
        }
        let year = digits(&bytes[0..4])?;
        let month = digits(&bytes[5..7])?;
        let day = digits(&bytes[8..10])?;
        let hour = digits(&bytes[11..13])?;
        let minute = digits(&bytes[14..16])?;
        let second = digits(&bytes[17..19])?;
        if !(1970..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let mut rest = &text[19..];
        let mut fraction = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let num_digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            if num_digits == 0 {
                return None;
            }
            fraction = &after_dot[..num_digits];
            rest = &after_dot[num_digits..];
        }
        let offset_secs = match rest.as_bytes() {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), hours @ .., b':', m1, m2] if hours.len() == 2 => {
                offset(*sign, hours, &[*m1, *m2])?
            }
            [sign @ (b'+' | b'-'), h1, h2, m1, m2] => offset(*sign, &[*h1, *h2], &[*m1, *m2])?,
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        // A leap second reads as the second before it.
        let whole_second = second.min(59);
        let unix_secs = days * DAY_SECS + hour * 3600 + minute * 60 + whole_second - offset_secs;
        if !(0..=MAX_UNIX_SECS).contains(&unix_secs) {
            return None;
        }
        EventTime::with_fraction(unix_secs, fraction)
    }

    /// Returns the instant as UNIX milliseconds (the fraction truncated).
    pub fn unix_ms(&self) -> i64 {
        let millis = self.fraction_digits[..3]
            .iter()
            .fold(0, |value, digit| value * 10 + i64::from(digit - b'0'));
        self.unix_secs * 1000 + millis
    }

    /// Writes the instant as RFC 3339 in UTC, with the fraction's digits as
    /// read (`2018-05-11T13:20:38.104366Z`), into `buffer`; returns the text.
    pub fn write_rfc3339<'b>(&self, buffer: &'b mut [u8; 30]) -> &'b str {
        let days = self.unix_secs.div_euclid(DAY_SECS);
        let secs_of_day = self.unix_secs.rem_euclid(DAY_SECS);
        let (year, month, day) = civil_from_days(days);
        let mut length = 0;
        let mut put = |value: i64, width: usize, separator: Option<u8>| {
            let mut remaining = value;
            for index in (0..width).rev() {
                buffer[length + index] = b'0' + (remaining % 10) as u8;
                remaining /= 10;
            }
            length += width;
            if let Some(separator) = separator {
                buffer[length] = separator;
                length += 1;
            }
        };
        put(year, 4, Some(b'-'));
        put(month, 2, Some(b'-'));
        put(day, 2, Some(b'T'));
        put(secs_of_day / 3600, 2, Some(b':'));
        put(secs_of_day / 60 % 60, 2, Some(b':'));
        put(secs_of_day % 60, 2, None);
        let num_fraction_digits = usize::from(self.num_fraction_digits);
        if num_fraction_digits > 0 {
            buffer[length] = b'.';
            buffer[length + 1..length + 1 + num_fraction_digits]
                .copy_from_slice(&self.fraction_digits[..num_fraction_digits]);
            length += 1 + num_fraction_digits;
        }
        buffer[length] = b'Z';
        length += 1;
        std::str::from_utf8(&buffer[..length]).expect("rfc 3339 digits and separators are ascii")
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.write_rfc3339(&mut [0; 30]))
    }
}

impl Serialize for EventTime {
    /// Serializes as an RFC 3339 text in UTC.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.write_rfc3339(&mut [0; 30]))
    }
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0, |value, byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + i64::from(byte - b'0'))
    })
}

fn offset(sign: u8, hours: &[u8], minutes: &[u8]) -> Option<i64> {
    let hours = digits(hours)?;
    let minutes = digits(minutes)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let secs = hours * 3600 + minutes * 60;
    Some(if sign == b'-' { -secs } else { secs })
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Returns days since 1970-01-01 of a proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Returns the (year, month, day) of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeek_seconds_keep_their_microseconds() {
        let time = EventTime::parse("1526044838.104366").expect("zeek ts parses");
        assert_eq!(time.to_string(), "2018-05-11T13:20:38.104366Z");
        assert_eq!(time.unix_ms(), 1_526_044_838_104);
    }

    #[test]
    fn whole_seconds_have_no_fraction() {
        let time = EventTime::parse("0").expect("the epoch parses");
        assert_eq!(time.to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn rfc3339_offsets_are_normalized_to_utc() {
        let with_colon = EventTime::parse("2018-05-11T15:20:38.5+02:00").expect("parses");
        assert_eq!(with_colon.to_string(), "2018-05-11T13:20:38.5Z");
        let suricata = EventTime::parse("2018-05-11T13:20:38.104366+0000").expect("parses");
        assert_eq!(suricata.to_string(), "2018-05-11T13:20:38.104366Z");
        let negative = EventTime::parse("2018-05-10T23:50:00-01:30").expect("parses");
        assert_eq!(negative.to_string(), "2018-05-11T01:20:00Z");
    }

    #[test]
    fn detection_milliseconds_round_trip() {
        let time = EventTime::from_unix_ms(1_709_251_200_007);
        assert_eq!(time.to_string(), "2024-03-01T00:00:00.007Z");
        assert_eq!(time.unix_ms(), 1_709_251_200_007);
        assert_eq!(EventTime::parse(&time.to_string()), Some(time));
    }

    #[test]
    fn leap_days_and_century_years_convert_both_ways() {
        for (text, unix_secs) in [
            ("2000-02-29T00:00:00Z", 951_782_400),
            ("2100-03-01T00:00:00Z", 4_107_542_400),
            ("2024-12-31T23:59:59Z", 1_735_689_599),
        ] {
            let time = EventTime::parse(text).expect("parses");
            assert_eq!(time.unix_secs, unix_secs, "{text}");
            assert_eq!(time.to_string(), text);
        }
    }

    #[test]
    fn text_that_is_no_time_is_refused() {
        for text in [
            "",
            "-",
            "yesterday",
            "1.2.3",
            "2018-02-30T00:00:00Z",
            "2018-05-11T13:20:38",
            "2018-05-11T13:20:38.Z",
            "9999999999999",
        ] {
            assert_eq!(EventTime::parse(text), None, "{text:?}");
        }
    }
}
