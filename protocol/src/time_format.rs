//! The date formats the hub writes and reads.
//!
//! - `$.exp` in an MQTT property bag: .NET round-trip format with exactly seven fractional digits
//!   (`2023-07-19T23:06:40.0000000Z`); the C# SDK parses it with `DateTime.ParseExact(v, "o")`.
//! - Feedback `enqueuedTimeUtc` and HTTPS `iothub-*` date headers: ISO 8601 with milliseconds
//!   (`2015-07-28T16:24:48.789Z`), the form the docs show. C# reads the headers with
//!   `DateTime.TryParse`, which accepts it.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn civil(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(time::UtcOffset::UTC)
}

/// `2023-07-19T23:06:40.0000000Z`: seven fractional digits, UTC.
pub fn format_round_trip(t: OffsetDateTime) -> String {
    let t = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// `2015-07-28T16:24:48.789Z`: milliseconds, UTC.
pub fn format_millis(t: OffsetDateTime) -> String {
    let t = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses an RFC 3339 / ISO 8601 timestamp with any number of fractional digits.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339).ok()
}

/// Serde helper: a timestamp written with [`format_millis`] and read with [`parse`].
pub mod serde_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    /// Writes `t` as `2015-07-28T16:24:48.789Z`.
    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_millis(*t))
    }

    /// Reads any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: {s}")))
    }
}

/// Serde helper: an optional timestamp, `null` or written with [`format_millis`]; read with
/// [`parse`].
pub mod serde_millis_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    /// Writes `null`, or `t` as `2015-07-28T16:24:48.789Z`.
    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_millis(*t)),
            None => s.serialize_none(),
        }
    }

    /// Reads `null` or any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => super::parse(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: {s}"))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn round_trip_has_seven_digits() {
        let t = datetime!(2023-07-19 23:06:40.123456789 UTC);
        assert_eq!(format_round_trip(t), "2023-07-19T23:06:40.1234567Z");
        assert_eq!(
            format_round_trip(datetime!(3237-07-19 23:06:40 UTC)),
            "3237-07-19T23:06:40.0000000Z"
        );
    }

    #[test]
    fn millis_and_parse_agree() {
        let t = datetime!(2015-07-28 16:24:48.789 UTC);
        assert_eq!(format_millis(t), "2015-07-28T16:24:48.789Z");
        assert_eq!(parse("2015-07-28T16:24:48.789Z"), Some(t));
        assert_eq!(
            parse("2023-07-19T23:06:40.0000000Z"),
            Some(datetime!(2023-07-19 23:06:40 UTC))
        );
        assert_eq!(parse("nonsense"), None);
    }

    #[test]
    fn optional_millis_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T(#[serde(with = "serde_millis_opt")] Option<OffsetDateTime>);
        let t = datetime!(2015-07-28 16:24:48.789 UTC);
        assert_eq!(
            serde_json::to_string(&T(Some(t))).unwrap(),
            r#""2015-07-28T16:24:48.789Z""#
        );
        assert_eq!(serde_json::to_string(&T(None)).unwrap(), "null");
        assert_eq!(
            serde_json::from_str::<T>(r#""2015-07-28T16:24:48.789Z""#).unwrap(),
            T(Some(t))
        );
        assert_eq!(serde_json::from_str::<T>("null").unwrap(), T(None));
    }
}
