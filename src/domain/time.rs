//! Time on the wire: RFC 3339 date-times that must carry a zone, Unix seconds for events, and
//! the one canonical output format `YYYY-MM-DDTHH:mm:ss.sssZ`.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// The largest accepted Unix time: 9999-12-31T23:59:59Z. Anything later cannot be written in
/// the canonical four-digit-year format.
pub const MAX_UNIX_SECONDS: f64 = 253_402_300_799.0;

/// Parses an RFC 3339 / ISO 8601 date-time with a zone (`Z` or `±hh:mm`) and any fractional
/// precision (digits past nanoseconds are dropped). A missing zone, a bare date or anything
/// else is an error.
pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}

/// Formats `t` in UTC as exactly `YYYY-MM-DDTHH:mm:ss.sssZ` (milliseconds, truncated).
pub fn format_millis_utc(t: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    // Only UTC years 0000 to 9999 fit the format: `to_offset` would panic past year 9999
    // (9999-12-31T23:59:59-01:00) and year -1 would print as `-0001-…`. Callers keep to that
    // range (the server's clock; `import` refuses other `received_at`s); anything else prints
    // as the epoch rather than as a string that does not parse back.
    t.checked_to_offset(UtcOffset::UTC)
        .filter(|u| (0..=9999).contains(&u.year()))
        .and_then(|u| u.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

/// Unix seconds of `t`, rounded down to milliseconds (e.g. `1678886405.456`).
pub fn unix_seconds_millis(t: OffsetDateTime) -> f64 {
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    ms as f64 / 1000.0
}

/// Why an event timestamp was rejected.
pub const EVENT_TIMESTAMP_RULE: &str = "timestamp must be Unix seconds (a finite, non-negative \
     number such as 1678886405.123) or an ISO 8601 date-time with a time zone";

/// An event's own time: Unix seconds as a finite number in `0..=MAX_UNIX_SECONDS`, or an
/// RFC 3339 string with a zone (converted to Unix seconds).
pub fn parse_event_timestamp(v: &serde_json::Value) -> Result<f64, String> {
    let secs = match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => parse_rfc3339(s)
            .ok()
            .map(|t| t.unix_timestamp_nanos() as f64 / 1e9),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && (0.0..=MAX_UNIX_SECONDS).contains(&s) => Ok(s),
        _ => Err(EVENT_TIMESTAMP_RULE.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_date_time_with_z_and_millis_parses() {
        let t = parse_rfc3339("2024-01-15T14:30:45.123Z").expect("valid");
        assert_eq!(format_millis_utc(t), "2024-01-15T14:30:45.123Z");
    }

    #[test]
    fn any_fractional_precision_is_accepted() {
        for s in [
            "2024-01-15T14:30:45Z",
            "2024-01-15T14:30:45.1Z",
            "2024-01-15T14:30:45.123456Z",
            "2024-01-15T14:30:45.123456789123Z",
        ] {
            assert!(parse_rfc3339(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn an_offset_is_converted_to_utc_on_output() {
        let t = parse_rfc3339("2024-01-15T20:00:45.5+05:30").expect("valid");
        assert_eq!(format_millis_utc(t), "2024-01-15T14:30:45.500Z");
    }

    #[test]
    fn a_date_time_without_zone_or_a_bare_date_or_garbage_is_rejected() {
        for s in [
            "2024-01-15T14:30:45",
            "2024-01-15T14:30:45.123",
            "2024-01-15",
            "14:30:45Z",
            "yesterday",
            "",
            "2024-02-30T14:30:45Z",
            "2024-01-15T14:30:45+5:30",
        ] {
            assert!(parse_rfc3339(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn the_output_format_always_has_three_fraction_digits() {
        let t = parse_rfc3339("2024-01-15T14:30:45Z").expect("valid");
        assert_eq!(format_millis_utc(t), "2024-01-15T14:30:45.000Z");
        let t = parse_rfc3339("2024-01-15T14:30:45.9999Z").expect("valid");
        assert_eq!(format_millis_utc(t), "2024-01-15T14:30:45.999Z");
    }

    #[test]
    fn unix_seconds_have_millisecond_precision() {
        let t = parse_rfc3339("2023-03-15T13:20:05.456789Z").expect("valid");
        assert_eq!(unix_seconds_millis(t), 1678886405.456);
    }

    #[test]
    fn event_timestamps_accept_numbers_and_zoned_strings() {
        assert_eq!(
            parse_event_timestamp(&json!(1678886405.123)),
            Ok(1678886405.123)
        );
        assert_eq!(parse_event_timestamp(&json!(0)), Ok(0.0));
        assert_eq!(
            parse_event_timestamp(&json!("2023-03-15T13:20:05Z")),
            Ok(1678886405.0)
        );
    }

    #[test]
    fn event_timestamps_reject_negative_huge_and_non_time_values() {
        for v in [
            json!(-1),
            json!(1e300),
            json!("2023-03-15T13:20:05"),
            json!("1678886405"),
            json!(true),
            json!(null),
            json!([1]),
        ] {
            assert!(parse_event_timestamp(&v).is_err(), "{v}");
        }
    }
}
