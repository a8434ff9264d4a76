//! The row reader of [`answer_rows_as`](super::answer_rows_as): the rows
//! arrays read one row at a time, each handed to `T` as columns by name (or
//! by position: a tuple, or a struct whose fields are the columns in
//! order), each cell through the wire rules of [`cell`](super::cell); and
//! the context that names the row and column of a failure while serde
//! unwinds.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::cell::CellSeed;

/// The row and column a failure was in, kept while serde unwinds (its
/// errors are the JSON parser's, which know neither).
#[derive(Default)]
pub(super) struct Ctx {
    pub(super) row: Cell<usize>,
    pub(super) blame: RefCell<Option<Blame>>,
    /// Whether the struct's fields (by the address of serde's list) are
    /// exactly the result's columns, in order.
    pub(super) in_order: Cell<Option<(usize, bool)>>,
    /// The current row is being read by position, and how many of its
    /// cells were read.
    pub(super) positional: Cell<bool>,
    pub(super) cells: Cell<usize>,
    /// Read by name only: a positional reading read fewer cells than the
    /// row has (serde lists a field's aliases among its fields), so the
    /// answer is read again this way.
    pub(super) by_name: Cell<bool>,
    /// Set when a positional reading left cells unread.
    pub(super) retry: Cell<bool>,
}

pub(super) struct Blame {
    pub(super) row: usize,
    pub(super) column: Option<String>,
    pub(super) message: String,
}

impl Ctx {
    /// Records the first (innermost) failure.
    pub(super) fn blame(&self, column: Option<&str>, error: &dyn fmt::Display) {
        let mut blame = self.blame.borrow_mut();
        if blame.is_none() {
            let mut message = error.to_string();
            // The parser's position says nothing the row and column do not.
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            *blame = Some(Blame {
                row: self.row.get(),
                column: column.map(str::to_owned),
                message,
            });
        }
    }
}

pub(super) struct RowsSeed<'c, 'n, T> {
    pub(super) ctx: &'c Ctx,
    pub(super) names: &'n [&'n str],
    pub(super) _t: PhantomData<fn() -> T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for RowsSeed<'_, '_, T> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for RowsSeed<'_, '_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            self.ctx.row.set(out.len());
            let row = RowSeed::<T> {
                ctx: self.ctx,
                names: self.names,
                _t: PhantomData,
            };
            match seq.next_element_seed(row)? {
                Some(t) => out.push(t),
                None => return Ok(out),
            }
        }
    }
}

/// One row (a JSON array), handed to `T` as columns by name, or by
/// position for a tuple.
struct RowSeed<'c, 'n, T> {
    ctx: &'c Ctx,
    names: &'n [&'n str],
    _t: PhantomData<fn() -> T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for RowSeed<'_, '_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<T, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for RowSeed<'_, '_, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row (an array of cells)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<T, A::Error> {
        let row = RowDe {
            seq: &mut seq,
            ctx: self.ctx,
            names: self.names,
            next: 0,
            ended: false,
        };
        self.ctx.positional.set(false);
        self.ctx.cells.set(0);
        match T::deserialize(row) {
            Ok(t) => {
                if self.ctx.positional.get() && self.ctx.cells.get() < self.names.len() {
                    // A struct read by position took fewer cells than its
                    // fields' names promised: read the answer by name.
                    self.ctx.retry.set(true);
                    return Err(de::Error::custom("read again by name"));
                }
                // Cells past what `T` read (a tuple shorter than the row).
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(t)
            }
            Err(e) => {
                self.ctx.blame(None, &e);
                Err(e)
            }
        }
    }
}

/// A row as a `Deserializer`: a map for structs and maps, a sequence for
/// tuples. Its errors are the parser's.
struct RowDe<'s, 'c, 'n, A> {
    seq: &'s mut A,
    ctx: &'c Ctx,
    names: &'n [&'n str],
    next: usize,
    ended: bool,
}

impl<'de, A: SeqAccess<'de>> RowDe<'_, '_, '_, A> {
    fn name(&self, i: usize) -> &str {
        self.names.get(i).copied().unwrap_or("")
    }

    /// The next cell, through `seed`, read as the field asks.
    fn cell<S: DeserializeSeed<'de>>(&mut self, seed: S) -> std::result::Result<Option<S::Value>, A::Error> {
        let i = self.next;
        self.next += 1;
        self.ctx.cells.set(self.next);
        let column = self.names.get(i).copied().unwrap_or("");
        let got = self.seq.next_element_seed(CellSeed(seed));
        match got {
            Err(e) => {
                self.ctx.blame(Some(column), &e);
                Err(e)
            }
            Ok(None) => {
                self.ended = true;
                Ok(None)
            }
            ok => ok,
        }
    }
}

impl<'de, A: SeqAccess<'de>> Deserializer<'de> for RowDe<'_, '_, '_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, A::Error> {
        visitor.visit_map(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, A::Error> {
        // A struct whose fields are the columns, in order (`SELECT a, b`
        // into `struct { a, b }`), reads them by position, as serde's
        // derive allows: no name is compared per row.
        let key = fields.as_ptr() as usize;
        let in_order = !self.ctx.by_name.get()
            && match self.ctx.in_order.get() {
                Some((k, in_order)) if k == key => in_order,
                _ => {
                    let in_order = fields == self.names;
                    self.ctx.in_order.set(Some((key, in_order)));
                    in_order
                }
            };
        if in_order {
            self.ctx.positional.set(true);
            visitor.visit_seq(self)
        } else {
            visitor.visit_map(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, A::Error> {
        visitor.visit_seq(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> std::result::Result<V::Value, A::Error> {
        visitor.visit_seq(self)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> std::result::Result<V::Value, A::Error> {
        visitor.visit_seq(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> std::result::Result<V::Value, A::Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct map enum identifier ignored_any
    }
}

impl<'de, A: SeqAccess<'de>> MapAccess<'de> for RowDe<'_, '_, '_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> std::result::Result<Option<K::Value>, A::Error> {
        // A row with more cells than the schema has names: the rest are
        // nameless, and left to the caller's skip (`RowSeed`).
        if self.ended || self.next >= self.names.len() {
            return Ok(None);
        }
        let name = self.name(self.next);
        seed.deserialize(StrDeserializer::<A::Error>::new(name)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> std::result::Result<V::Value, A::Error> {
        let names = self.names;
        let column = names.get(self.next).copied().unwrap_or("");
        match self.cell(seed)? {
            Some(v) => Ok(v),
            None => {
                let e = de::Error::custom(format_args!("the row ends before its column `{column}`"));
                self.ctx.blame(Some(column), &e);
                Err(e)
            }
        }
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for RowDe<'_, '_, '_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> std::result::Result<Option<S::Value>, A::Error> {
        if self.ended {
            return Ok(None);
        }
        self.cell(seed)
    }
}
