//! The stream catalog: every stream and reference table a running engine knows, by name.
//!
//! The catalog is not a list anyone keeps by hand: it is made from the definitions of the
//! streams the engine is fed and of those its operators derive (each operator says what it
//! produces). The Parquet sinks, the SQL catalog, psql `SELECT`, replay and retention all
//! iterate it.
//!
//! Beside the streams, the catalog holds the [`TextFunction`]s their definitions offer readers
//! (a plate's canonical form, say): the SQL front end exposes each as a scalar function, so the
//! function lives next to the stream it serves and no other crate names it.

use std::collections::BTreeMap;

use crate::error::{EngineError, Result};
use crate::stream::{Class, StreamInfo};

/// Streams and tables by name; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    by_name: BTreeMap<&'static str, &'static StreamInfo>,
    functions: BTreeMap<&'static str, &'static TextFunction>,
    writes: BTreeMap<&'static str, &'static TableWrites>,
}

/// How users may change a reference table at run time (SQL `INSERT` and `DELETE`): its
/// definition checks and completes the rows given, so that nothing the table's rules refuse
/// (a missing legal basis, say) gets in by another door.
#[derive(Debug)]
pub struct TableWrites {
    /// The table.
    pub table: &'static str,
    /// The column `DELETE … WHERE <key> = …` names.
    pub key: &'static str,
    /// Canonical form of a key value (`DELETE` finds rows by it).
    pub canonical_key: fn(&str) -> Option<String>,
    /// Rows from text columns (name, one value per row), at time `now` by user `user`: the
    /// table's rows, or what is wrong with the first bad row (numbered from 1), and the fix.
    pub check: CheckRows,
    /// Why `DELETE` is refused and the fix, when rows cannot be deleted (`None`: they can).
    pub delete: Option<(&'static str, &'static str)>,
}

/// Text columns as users gave them: (column name, one value per row, `None` for NULL).
pub type TextColumns = [(String, Vec<Option<String>>)];

/// See [`TableWrites::check`].
pub type CheckRows = fn(
    columns: &TextColumns,
    now: crate::time::Millis,
    user: &str,
) -> std::result::Result<arrow::array::RecordBatch, (String, String)>;

/// A function from text to text that a stream's definition offers its readers; `None` is
/// SQL's `NULL` (the text has no such form).
#[derive(Debug)]
pub struct TextFunction {
    /// Its name (lower case, as SQL calls it).
    pub name: &'static str,
    /// What it does, for humans.
    pub doc: &'static str,
    /// The function.
    pub f: fn(&str) -> Option<String>,
}

impl Catalog {
    /// A catalog of `infos`; the same definition may come twice (it is kept once), two different
    /// definitions may not share a name.
    pub fn new(infos: impl IntoIterator<Item = &'static StreamInfo>) -> Result<Self> {
        let mut c = Self::default();
        for info in infos {
            c.add(info)?;
        }
        Ok(c)
    }

    /// Adds a definition (see [`new`](Self::new)).
    pub fn add(&mut self, info: &'static StreamInfo) -> Result<()> {
        match self.by_name.get(info.name) {
            Some(known) if std::ptr::eq(*known, info) => Ok(()),
            Some(_) => Err(EngineError::Schema(format!("two different streams are named {}", info.name))),
            None => {
                self.by_name.insert(info.name, info);
                Ok(())
            }
        }
    }

    /// Adds a function; the same definition may come twice, two may not share a name.
    pub fn add_function(&mut self, f: &'static TextFunction) -> Result<()> {
        match self.functions.insert(f.name, f) {
            Some(known) if !std::ptr::eq(known, f) => {
                Err(EngineError::Schema(format!("two different functions are named {}", f.name)))
            }
            _ => Ok(()),
        }
    }

    /// Lets users change a table (see [`TableWrites`]).
    pub fn add_writes(&mut self, w: &'static TableWrites) -> Result<()> {
        if self.get(w.table).is_none_or(|i| !i.is_table()) {
            return Err(EngineError::Schema(format!("{} is not a reference table of the catalog", w.table)));
        }
        self.writes.insert(w.table, w);
        Ok(())
    }

    /// How users may change `table`, if they may.
    pub fn writes(&self, table: &str) -> Option<&'static TableWrites> {
        self.writes.get(table).copied()
    }

    /// The functions, by name.
    pub fn functions(&self) -> impl Iterator<Item = &'static TextFunction> + '_ {
        self.functions.values().copied()
    }

    /// A stream or table by name.
    pub fn get(&self, name: &str) -> Option<&'static StreamInfo> {
        self.by_name.get(name).copied()
    }

    /// Every stream and table, by name.
    pub fn all(&self) -> impl Iterator<Item = &'static StreamInfo> + '_ {
        self.by_name.values().copied()
    }

    /// The event streams (not the reference tables), by name.
    pub fn streams(&self) -> impl Iterator<Item = &'static StreamInfo> + '_ {
        self.all().filter(|i| i.class != Class::Reference)
    }

    /// The reference tables, by name.
    pub fn tables(&self) -> impl Iterator<Item = &'static StreamInfo> + '_ {
        self.all().filter(|i| i.class == Class::Reference)
    }

    /// Names, for error messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamDef;

    crate::stream! {
        /// A.
        pub struct A {
            name: "a", class: Record, keys: [], personal: [],
            row: ARow, builder: ARows, reader: ACols,
            columns: { event_time: crate::stream::Timestamp }
        }
    }

    #[test]
    fn one_definition_per_name() {
        let c = Catalog::new([A::info(), A::info()]).unwrap();
        assert_eq!(c.names(), vec!["a"]);
        let other: &'static StreamInfo = Box::leak(Box::new(StreamInfo::new(
            "a",
            "",
            Class::Record,
            vec![crate::stream::field::<crate::stream::Timestamp>("event_time")],
            &[],
            &[],
        )));
        let e = Catalog::new([A::info(), other]).unwrap_err().to_string();
        assert!(e.contains("two different streams are named a"), "{e}");
    }
}
