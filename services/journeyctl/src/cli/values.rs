//! clap value parsers for the arguments whose text must be checked: bad input is refused by
//! clap (exit 2, naming the argument) before any command runs.
//!
//! clap shows only an error's own message, so these messages carry their cause's text too.

use std::num::ParseFloatError;
use std::time::Duration;

/// Why an argument's value was refused.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("`{input}` is not a duration: {source} (e.g. 90s, 5m, 1h30m)")]
    Duration {
        input: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("`{input}`: must be more than zero")]
    NotPositive { input: String },
    #[error("`{input}` is not a number: {source}")]
    Number {
        input: String,
        #[source]
        source: ParseFloatError,
    },
    #[error("not JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// A humantime duration: `90s`, `5m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(s.trim()).map_err(|source| ValueError::Duration {
        input: s.to_string(),
        source,
    })
}

/// A humantime duration above zero.
pub fn positive_duration(s: &str) -> Result<Duration, ValueError> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(ValueError::NotPositive {
            input: s.to_string(),
        }),
        d => Ok(d),
    }
}

/// A finite rate above zero (messages per second; fractions allowed).
pub fn positive_rate(s: &str) -> Result<f64, ValueError> {
    let rate: f64 = s.trim().parse().map_err(|source| ValueError::Number {
        input: s.to_string(),
        source,
    })?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(ValueError::NotPositive {
            input: s.to_string(),
        })
    }
}

/// A JSON document.
pub fn parse_json(s: &str) -> Result<serde_json::Value, ValueError> {
    serde_json::from_str(s).map_err(ValueError::Json)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_humantime_and_positive_ones_refuse_zero() {
        assert_eq!(parse_duration(" 1m30s ").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(matches!(
            positive_duration("0s"),
            Err(ValueError::NotPositive { .. })
        ));
        let e = parse_duration("soon").unwrap_err();
        assert!(
            e.to_string().starts_with("`soon` is not a duration: "),
            "{e}"
        );
    }

    #[test]
    fn rates_must_be_finite_numbers_above_zero() {
        assert_eq!(positive_rate("0.5").unwrap(), 0.5);
        for bad in ["0", "-1", "NaN", "inf"] {
            assert!(
                matches!(positive_rate(bad), Err(ValueError::NotPositive { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            positive_rate("fast"),
            Err(ValueError::Number { .. })
        ));
    }

    #[test]
    fn payloads_must_be_json() {
        assert_eq!(
            parse_json(r#"{"a":1}"#).unwrap(),
            serde_json::json!({"a": 1})
        );
        assert!(matches!(parse_json("{a"), Err(ValueError::Json(_))));
    }
}
