//! One cell, read as the field asks: a wrapper around any deserializer of
//! a JSON cell (the parser's, for rows read from bytes; a
//! `serde_json::Value`, owned or borrowed, for rows already parsed) that
//! applies KalamDB's wire forms (see [the module docs](super)): numbers
//! from strings, text from numbers, JSON text into structs, maps and lists.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Unexpected, Visitor};
use serde_json::Value;

/// Reads one cell through the field's own seed, with the wire rules.
pub(crate) struct CellSeed<S>(pub(crate) S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for CellSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<S::Value, D::Error> {
        self.0.deserialize(CellDe(d))
    }
}

/// A cell's deserializer: the parser's, with KalamDB's wire forms read as
/// the field asks (numbers from strings, text from numbers, JSON text into
/// structs, maps and lists).
pub(crate) struct CellDe<D>(pub(crate) D);

/// A numeric field.
#[derive(Clone, Copy)]
enum Num {
    Signed,
    Unsigned,
    I128,
    U128,
    Float,
}

macro_rules! numeric {
    ($($method:ident => $num:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, D::Error> {
            self.0.deserialize_any(Lenient { inner: visitor, num: Some(Num::$num) })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for CellDe<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    numeric! {
        deserialize_i8 => Signed, deserialize_i16 => Signed, deserialize_i32 => Signed, deserialize_i64 => Signed,
        deserialize_u8 => Unsigned, deserialize_u16 => Unsigned, deserialize_u32 => Unsigned,
        deserialize_u64 => Unsigned, deserialize_i128 => I128, deserialize_u128 => U128,
        deserialize_f32 => Float, deserialize_f64 => Float,
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_any(Lenient {
            inner: visitor,
            num: None,
        })
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_any(Lenient {
            inner: visitor,
            num: None,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_option(Optional(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_any(JsonText {
            inner: visitor,
            shape: Shape::Struct(name, fields),
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_any(JsonText {
            inner: visitor,
            shape: Shape::Map,
        })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_any(JsonText {
            inner: visitor,
            shape: Shape::Seq,
        })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> std::result::Result<V::Value, D::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_ignored_any(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_bool(visitor)
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct tuple tuple_struct identifier
    }
}

/// Forwards every `visit_*` it does not handle to `self.inner`.
macro_rules! forward_visits {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> std::result::Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

/// The rest of a visitor's methods, forwarded.
macro_rules! forward_structure {
    () => {
        fn visit_none<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
            self.inner.visit_none()
        }
        fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
            self.inner.visit_unit()
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> std::result::Result<Self::Value, D2::Error> {
            self.inner.visit_some(d)
        }
        fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> std::result::Result<Self::Value, D2::Error> {
            self.inner.visit_newtype_struct(d)
        }
        fn visit_seq<S: SeqAccess<'de>>(self, seq: S) -> std::result::Result<Self::Value, S::Error> {
            self.inner.visit_seq(seq)
        }
        fn visit_map<M: MapAccess<'de>>(self, map: M) -> std::result::Result<Self::Value, M::Error> {
            self.inner.visit_map(map)
        }
        fn visit_enum<En: de::EnumAccess<'de>>(self, data: En) -> std::result::Result<Self::Value, En::Error> {
            self.inner.visit_enum(data)
        }
        forward_visits!(
            visit_bool(bool),
            visit_char(char),
            visit_bytes(&[u8]),
            visit_byte_buf(Vec<u8>)
        );
        forward_visits!(visit_borrowed_bytes(&'de [u8]));
    };
}

/// A number from a number or from text; text from text or from a number.
struct Lenient<V> {
    inner: V,
    /// `Some` for a numeric field, `None` for a text field.
    num: Option<Num>,
}

impl<V> Lenient<V> {
    fn text<'de, E: de::Error>(self, s: &str) -> std::result::Result<V::Value, E>
    where
        V: Visitor<'de>,
    {
        fn parse<N: std::str::FromStr>(s: &str) -> Option<N> {
            s.parse().ok().or_else(|| s.trim().parse().ok())
        }
        let bad = || E::invalid_type(Unexpected::Str(s), &ExpectingOf(&self.inner));
        match self.num {
            Some(Num::Signed) => parse(s).ok_or_else(bad).and_then(|n| self.inner.visit_i64(n)),
            Some(Num::Unsigned) => parse(s).ok_or_else(bad).and_then(|n| self.inner.visit_u64(n)),
            Some(Num::I128) => parse(s).ok_or_else(bad).and_then(|n| self.inner.visit_i128(n)),
            Some(Num::U128) => parse(s).ok_or_else(bad).and_then(|n| self.inner.visit_u128(n)),
            Some(Num::Float) => parse(s).ok_or_else(bad).and_then(|n| self.inner.visit_f64(n)),
            None => self.inner.visit_str(s),
        }
    }
}

/// A visitor's `expecting`, for an error message.
struct ExpectingOf<'a, V>(&'a V);

impl<'de, V: Visitor<'de>> de::Expected for ExpectingOf<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Lenient<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<V::Value, E> {
        self.text(s)
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> std::result::Result<V::Value, E> {
        match self.num {
            None => self.inner.visit_borrowed_str(s),
            Some(_) => self.text(s),
        }
    }

    fn visit_string<E: de::Error>(self, s: String) -> std::result::Result<V::Value, E> {
        match self.num {
            None => self.inner.visit_string(s),
            Some(_) => self.text(&s),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<V::Value, E> {
        match self.num {
            // A number (DECIMAL, a count) asked for as text.
            None => self.inner.visit_string(n.to_string()),
            Some(_) => self.inner.visit_i64(n),
        }
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<V::Value, E> {
        match self.num {
            None => self.inner.visit_string(n.to_string()),
            Some(_) => self.inner.visit_u64(n),
        }
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> std::result::Result<V::Value, E> {
        match self.num {
            None => self
                .inner
                .visit_string(serde_json::Number::from_f64(n).map_or_else(|| n.to_string(), |n| n.to_string())),
            Some(_) => self.inner.visit_f64(n),
        }
    }

    forward_visits!(visit_i128(i128), visit_u128(u128));
    forward_structure!();
}

/// `Option<T>`: `None` for null, and the wire rules for the rest.
struct Optional<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Optional<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> std::result::Result<V::Value, D2::Error> {
        self.0.visit_some(CellDe(d))
    }
}

enum Shape {
    Struct(&'static str, &'static [&'static str]),
    Map,
    Seq,
}

/// A struct, map or list from the JSON itself, or from JSON text (a FILE
/// or JSON column).
struct JsonText<V> {
    inner: V,
    shape: Shape,
}

impl<V> JsonText<V> {
    fn text<'de, E: de::Error>(self, s: &str) -> std::result::Result<V::Value, E>
    where
        V: Visitor<'de>,
    {
        let opens = match self.shape {
            Shape::Seq => '[',
            _ => '{',
        };
        if !s.trim_start().starts_with(opens) {
            return Err(E::invalid_type(Unexpected::Str(s), &ExpectingOf(&self.inner)));
        }
        let parsed: Value = serde_json::from_str(s).map_err(E::custom)?;
        match self.shape {
            Shape::Struct(name, fields) => parsed.deserialize_struct(name, fields, self.inner),
            Shape::Map => parsed.deserialize_map(self.inner),
            Shape::Seq => parsed.deserialize_seq(self.inner),
        }
        .map_err(E::custom)
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for JsonText<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<V::Value, E> {
        self.text(s)
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> std::result::Result<V::Value, E> {
        self.text(s)
    }

    fn visit_string<E: de::Error>(self, s: String) -> std::result::Result<V::Value, E> {
        self.text(&s)
    }

    forward_visits!(
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_i128(i128),
        visit_u128(u128)
    );
    forward_structure!();
}
