//! Seconds given by people (flags, environment variables, arguments from
//! the bindings) turned into durations by one checked rule, so that no value
//! panics (`Duration::from_secs_f64` does on NaN, infinity, negatives and
//! overflow) or spins (a period that rounds to zero).
//!
//! Two kinds of value:
//! - a **period** (heartbeat, discovery period, poll interval, expiry): a
//!   finite number from [`MIN_PERIOD`] to [`MAX_SECONDS`];
//! - a **wait** (timeouts, how long to listen): a finite number from 0 to
//!   [`MAX_SECONDS`].
//!
//! Anything else (`inf`, `NaN`, `-1`, `1e30`, `1e-300` for a period, text
//! that is not a number) is an error that names the value and the range;
//! the command line turns it into exit code 2, the bindings into their
//! usage error (Python `msgflo.InvalidDefinitionError`, JS `Error` with code
//! `InvalidDefinition`).

use std::time::Duration;

/// The longest accepted: about 31.7 years, far beyond any timeout, and far
/// below what `Instant + Duration` can hold.
pub const MAX_SECONDS: f64 = 1e9;

/// The shortest period: 1 ms. Shorter ones are a busy loop.
pub const MIN_PERIOD: f64 = 0.001;

fn checked(what: &str, v: f64, min: f64) -> Result<Duration, String> {
    if v.is_finite() && (min..=MAX_SECONDS).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{what} must be a number of seconds from {min} to {MAX_SECONDS:e}, not {v}"))
    }
}

/// A period of `v` seconds: finite, from 1 ms to [`MAX_SECONDS`].
pub fn period(what: &str, v: f64) -> Result<Duration, String> {
    checked(what, v, MIN_PERIOD)
}

/// A wait of `v` seconds: finite, from 0 to [`MAX_SECONDS`].
pub fn wait(what: &str, v: f64) -> Result<Duration, String> {
    checked(what, v, 0.0)
}

fn number(what: &str, text: &str) -> Result<f64, String> {
    let t = text.trim();
    t.parse::<f64>().map_err(|_| format!("{what} must be a number of seconds, not {t:?}"))
}

/// [`period`] from text (a flag or an environment variable).
pub fn parse_period(what: &str, text: &str) -> Result<Duration, String> {
    period(what, number(what, text)?)
}

/// [`wait`] from text (a flag or an environment variable).
pub fn parse_wait(what: &str, text: &str) -> Result<Duration, String> {
    wait(what, number(what, text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_named_bad_values_are_errors() {
        for v in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -1.0, 1e30, -0.5] {
            assert!(period("x", v).is_err(), "{v}");
            assert!(wait("x", v).is_err(), "{v}");
        }
        assert!(period("x", 1e-300).is_err());
        assert!(period("x", 0.0).is_err());
        assert_eq!(wait("x", 1e-300).unwrap(), Duration::ZERO);
        assert_eq!(wait("x", 0.0).unwrap(), Duration::ZERO);
        for t in ["inf", "-inf", "NaN", "nan", "-1", "1e30", "", "ten", "1s", "0x10"] {
            assert!(parse_period("--interval", t).is_err(), "{t:?}");
            assert!(parse_wait("--timeout", t).is_err(), "{t:?}");
        }
        assert!(parse_period("--interval", "1e-300").unwrap_err().contains("--interval"));
        assert_eq!(parse_period("p", " 2.5 ").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_wait("w", "0").unwrap(), Duration::ZERO);
        assert_eq!(period("p", MAX_SECONDS).unwrap(), Duration::from_secs(1_000_000_000));
    }

    proptest! {
        #[test]
        fn any_number_is_a_duration_in_range_or_an_error(v in proptest::num::f64::ANY) {
            for (r, min) in [(period("p", v), MIN_PERIOD), (wait("w", v), 0.0)] {
                match r {
                    Ok(d) => {
                        prop_assert!(v.is_finite() && v >= min && v <= MAX_SECONDS);
                        prop_assert!(d.as_secs_f64() <= MAX_SECONDS);
                        // Usable as a deadline and, for periods, as an interval.
                        let _ = std::time::Instant::now() + d;
                        prop_assert!(min == 0.0 || !d.is_zero());
                    }
                    Err(e) => {
                        prop_assert!(!(v.is_finite() && v >= min && v <= MAX_SECONDS));
                        prop_assert!(e.contains("seconds"));
                    }
                }
            }
        }

        #[test]
        fn any_text_parses_or_is_an_error(t in ".{0,24}") {
            let _ = parse_period("p", &t);
            let _ = parse_wait("w", &t);
        }

        #[test]
        fn numbers_written_as_text_agree_with_numbers(v in proptest::num::f64::ANY) {
            prop_assert_eq!(parse_period("p", &v.to_string()).is_ok(), period("p", v).is_ok());
            prop_assert_eq!(parse_wait("w", &format!("{v:e}")).is_ok(), wait("w", v).is_ok());
        }
    }
}
