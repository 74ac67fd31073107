//! Schema `format`s the Kubernetes API server knows, and the schemars transform that maps the
//! CRD's schema onto them.
//!
//! schemars names the Rust integer types (`uint32`, `uint64`, `uint8`, ...); the API server
//! knows none of those: it warns (`unrecognized format "uint64"`) and validates nothing for
//! them, so a `u32` field would accept `4294967296` and the operator would then fail to read the
//! object back. [`kubernetes_formats`] rewrites every integer format to `int32` or `int64` with
//! the Rust type's range as `minimum`/`maximum` (keeping an explicit bound when it is tighter),
//! and drops any other format the API server does not know.
//!
//! May use: schemars and serde_json only (the `crd` module applies it with
//! `#[schemars(transform = ...)]`).

use schemars::Schema;
use serde_json::{Map, Number, Value};

/// The formats the API server recognises, as it compares them: lowercase with every `-`
/// removed (`date-time` is `datetime`): OpenAPI's numeric formats, and the string formats of
/// `supportedVersionedFormats` (apiextensions-apiserver `validation/formats.go`) known since
/// Kubernetes 1.0.
// NB: `k8s-short-name` and `k8s-long-name` (1.34) are left out: an older API server would warn.
pub const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
];

/// Whether the API server knows `format` (compared as it does, without `-`).
pub fn is_known(format: &str) -> bool {
    let normalized = format.replace('-', "");
    KNOWN_FORMATS.contains(&normalized.as_str())
}

/// The range of a Rust integer type schemars names by its format: `(minimum, maximum)`, either
/// absent when the type has no bound within `i64`.
fn integer_range(format: &str) -> Option<(Option<i64>, Option<i64>)> {
    let range = match format {
        "int8" => (Some(i64::from(i8::MIN)), Some(i64::from(i8::MAX))),
        "int16" => (Some(i64::from(i16::MIN)), Some(i64::from(i16::MAX))),
        "uint8" => (Some(0), Some(i64::from(u8::MAX))),
        "uint16" => (Some(0), Some(i64::from(u16::MAX))),
        "uint32" => (Some(0), Some(i64::from(u32::MAX))),
        // NB: a u64 (or usize, or u128) above i64::MAX is not written as an int64; the API
        // server decodes such a number as a float and refuses it as a non-integer anyway.
        "uint64" | "uint" | "uint128" => (Some(0), None),
        "int" | "int128" => (None, None),
        _ => return None,
    };
    Some(range)
}

/// The schemars transform: every schema node of `schema`, nested ones included, gets a format
/// the API server knows or none (see the module docs). Idempotent.
pub fn kubernetes_formats(schema: &mut Schema) {
    schemars::transform::transform_subschemas(&mut kubernetes_formats, schema);
    if let Some(node) = schema.as_object_mut() {
        map_format(node);
    }
}

/// Rewrites the `format` of one schema node (not its subschemas).
fn map_format(node: &mut Map<String, Value>) {
    let Some(format) = node
        .get("format")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return;
    };
    if let Some((min, max)) = integer_range(&format) {
        if let Some(min) = min {
            tighten(node, "minimum", "exclusiveMinimum", min, |new, old| {
                new > old
            });
        }
        if let Some(max) = max {
            tighten(node, "maximum", "exclusiveMaximum", max, |new, old| {
                new < old
            });
        }
        let fits_i32 =
            |key: &str, ok: fn(f64) -> bool| node.get(key).and_then(Value::as_f64).is_some_and(ok);
        let int32 = fits_i32("minimum", |v| v >= f64::from(i32::MIN))
            && fits_i32("maximum", |v| v <= f64::from(i32::MAX));
        node.insert(
            "format".to_owned(),
            Value::from(if int32 { "int32" } else { "int64" }),
        );
    } else if !is_known(&format) {
        node.remove("format");
    }
}

/// Sets `node[key]` to `bound` unless it already holds a bound at least as tight (`tighter`
/// says whether its first argument is tighter than its second). A replaced bound loses its
/// `exclusive` flag: the type's own bound is inclusive.
fn tighten(
    node: &mut Map<String, Value>,
    key: &str,
    exclusive: &str,
    bound: i64,
    tighter: fn(f64, f64) -> bool,
) {
    // NB: every bound of `integer_range` is within 2^32 of zero, so exact as an f64.
    let keep = node
        .get(key)
        .and_then(Value::as_f64)
        .is_some_and(|old| !tighter(bound as f64, old));
    if !keep {
        node.insert(key.to_owned(), Value::Number(Number::from(bound)));
        if node.get(exclusive).is_some_and(Value::is_boolean) {
            node.remove(exclusive);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn transformed(value: Value) -> Value {
        let mut schema = Schema::try_from(value).expect("a schema object");
        kubernetes_formats(&mut schema);
        schema.to_value()
    }

    #[test]
    fn a_u32_becomes_an_int64_with_the_u32_range() {
        assert_eq!(
            transformed(json!({ "type": "integer", "format": "uint32", "minimum": 0.0 })),
            json!({ "type": "integer", "format": "int64", "minimum": 0.0, "maximum": 4294967295_i64 })
        );
    }

    #[test]
    fn a_u64_becomes_an_int64_that_is_not_negative() {
        assert_eq!(
            transformed(json!({ "type": "integer", "format": "uint64" })),
            json!({ "type": "integer", "format": "int64", "minimum": 0 })
        );
    }

    #[test]
    fn small_integers_become_int32_with_their_range() {
        assert_eq!(
            transformed(json!({ "type": "integer", "format": "uint8" })),
            json!({ "type": "integer", "format": "int32", "minimum": 0, "maximum": 255 })
        );
        assert_eq!(
            transformed(json!({ "type": "integer", "format": "int16" })),
            json!({ "type": "integer", "format": "int32", "minimum": -32768, "maximum": 32767 })
        );
    }

    #[test]
    fn a_tighter_explicit_bound_is_kept_and_a_looser_one_replaced() {
        assert_eq!(
            transformed(json!({ "format": "uint64", "minimum": 1.0, "maximum": 60000.0 })),
            json!({ "format": "int32", "minimum": 1.0, "maximum": 60000.0 }),
            "a range that fits an int32 is written as one"
        );
        assert_eq!(
            transformed(json!({
                "format": "uint16", "minimum": -5, "exclusiveMinimum": true, "maximum": 70000
            })),
            json!({ "format": "int32", "minimum": 0, "maximum": 65535 })
        );
    }

    #[test]
    fn nested_schemas_are_rewritten_and_unknown_formats_dropped() {
        let out = transformed(json!({
            "type": "object",
            "properties": {
                "retries": { "type": ["integer", "null"], "format": "uint32" },
                "list": { "type": "array", "items": { "type": "integer", "format": "uint64" } },
                "map": { "type": "object", "additionalProperties": { "format": "uint8" } },
                "either": { "anyOf": [{ "format": "uint16" }, { "type": "null" }] },
                "note": { "type": "string", "format": "markdown" },
                "at": { "type": "string", "format": "date-time" },
                "ratio": { "type": "number", "format": "double" },
            },
            "default": { "format": "text" },
        }));
        let p = &out["properties"];
        assert_eq!(p["retries"]["format"], "int64");
        assert_eq!(p["retries"]["maximum"], 4294967295_i64);
        assert_eq!(p["list"]["items"]["format"], "int64");
        assert_eq!(p["map"]["additionalProperties"]["format"], "int32");
        assert_eq!(p["either"]["anyOf"][0]["format"], "int32");
        assert_eq!(p["note"], json!({ "type": "string" }));
        assert_eq!(p["at"]["format"], "date-time");
        assert_eq!(p["ratio"]["format"], "double");
        assert_eq!(
            out["default"],
            json!({ "format": "text" }),
            "values are not schemas"
        );
    }

    #[test]
    fn the_transform_is_idempotent() {
        let once = transformed(json!({ "format": "uint32", "minimum": 1.0 }));
        assert_eq!(transformed(once.clone()), once);
    }

    #[test]
    fn formats_are_compared_as_the_api_server_does() {
        assert!(is_known("date-time") && is_known("int64") && is_known("uuid"));
        assert!(!is_known("uint32") && !is_known("uint64") && !is_known("text"));
    }
}
