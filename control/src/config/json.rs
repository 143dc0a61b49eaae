//! API input (JSON) deserialised straight into the config's raw types, so an
//! SA or eroute given to the API passes exactly the validation a config
//! file's `[[sa]]` / `[[eroute]]` does — no detour through TOML text.
//!
//! The raw types locate fields with `toml::Spanned`; that type asks its
//! deserializer for a special struct. [`JsonDe`] answers that request with an
//! empty span (API input has no line: errors name the field), and otherwise
//! walks a `serde_json::Value` as any self-describing format would.

use serde::de::value::{BorrowedStrDeserializer, MapDeserializer, SeqDeserializer};
use serde::de::{Deserializer, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;

/// A JSON value as a deserializer that also speaks toml's `Spanned` protocol.
pub struct JsonDe(pub Value);

impl<'de> IntoDeserializer<'de, serde_json::Error> for JsonDe {
    type Deserializer = JsonDe;
    fn into_deserializer(self) -> JsonDe {
        self
    }
}

impl<'de> Deserializer<'de> for JsonDe {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visitor.visit_seq(SeqDeserializer::new(a.into_iter().map(JsonDe))),
            Value::Object(o) => visitor.visit_map(MapDeserializer::new(o.into_iter().map(|(k, v)| (k, JsonDe(v))))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            v => visitor.visit_some(JsonDe(v)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if serde_spanned::__unstable::is_spanned(name, fields) {
            use serde_spanned::__unstable::{END_FIELD, START_FIELD, VALUE_FIELD};
            // Span 0..0: "no location"; the value is this JSON value.
            // Spanned reads its keys as borrowed strings.
            let key = BorrowedStrDeserializer::<'de, serde_json::Error>::new;
            let entries = vec![
                (key(START_FIELD), JsonDe(Value::from(0u64))),
                (key(END_FIELD), JsonDe(Value::from(0u64))),
                (key(VALUE_FIELD), self),
            ];
            return visitor.visit_map(MapDeserializer::new(entries.into_iter()));
        }
        self.deserialize_any(visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The first `null` in a JSON object, by field name: refused with a clear
/// answer rather than read as "absent" or as a type error.
pub fn first_null(v: &Value) -> Option<String> {
    v.as_object()?.iter().find(|(_, x)| x.is_null()).map(|(k, _)| k.clone())
}

/// A deserialisation error as the API shows it (serde's text, e.g.
/// "unknown field `color`, expected one of ...").
pub fn message(e: &serde_json::Error) -> String {
    e.to_string()
}
