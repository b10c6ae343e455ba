//! What Go's YAML and time packages read differently from serde_norway
//! and humantime, so that a file written for the peer means the same here.
//!
//! Kept by hand: serde_norway reads YAML 1.2, where `yes` and `on` are
//! strings, and lets a later duplicate key in a map win silently (serde's
//! `deny_unknown_fields` covers only structs' fields); humantime reads
//! spaces, days and `min`/`sec`, which Go refuses, and refuses `.5s`, `5.s`
//! and `μs`, which Go reads.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Deserializer, de};

/// A string-to-string mapping that refuses duplicate keys, as the peer's
/// strict YAML decoding does (a later duplicate would silently win here).
#[derive(Debug, Default)]
pub struct StrictMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for StrictMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = StrictMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of strings to strings")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<StrictMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("{key:?} is given twice")));
                    }
                    out.insert(key, value);
                }
                Ok(StrictMap(out))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// A boolean as Go's YAML library reads one: YAML 1.1's `yes`/`no`/`on`/
/// `off` spellings too, so that files written for the peer mean the same.
pub fn yaml11_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    struct Visit;
    impl de::Visitor<'_> for Visit {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a boolean (true or false)")
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Option<bool>, E> {
            Ok(Some(b))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<bool>, E> {
            match text {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True"
                | "TRUE" => Ok(Some(true)),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
                | "FALSE" => Ok(Some(false)),
                _ => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
            }
        }
    }
    deserializer.deserialize_any(Visit)
}

/// Parses a Go duration such as `1s`, `250ms`, `1m30s` or `0`; negative
/// durations are refused.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 100ms, 1s or 1m30s");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, after) = rest.split_at(number_len);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = after;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}
