//! Run epochs: ids that stay unique across runs and restarts into the same output directory.
//!
//! Every start of the engine takes the next *epoch*, a number persisted in `<out>/epoch`
//! (written through a temporary file and a rename, so a crash leaves the old or the new value,
//! never half of one). Ids put the epoch in their top [`EPOCH_BITS`] bits and their own
//! structure in the [`BODY_BITS`] below ([`Epoch::id`]), or hash it with their content
//! ([`Epoch::hash_id`]) where no structure fits; each stream documents which next to its
//! definition. Two runs into one directory therefore never share an id, and a restart never
//! reuses one.

use std::path::Path;

use crate::error::{EngineError, Result};

/// Bits of an id taken by the epoch.
pub const EPOCH_BITS: u32 = 12;
/// Bits of an id below the epoch.
pub const BODY_BITS: u32 = 64 - EPOCH_BITS;

/// The run's epoch; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(u16);

impl Epoch {
    /// The largest epoch.
    pub const MAX: u16 = (1 << EPOCH_BITS) - 1;

    /// An epoch given directly (tests, replay).
    pub fn new(value: u16) -> Result<Self> {
        if value > Self::MAX {
            return Err(EngineError::user(
                format!("epoch {value} is above {}", Self::MAX),
                "start a new output directory",
            ));
        }
        Ok(Self(value))
    }

    /// Takes the next epoch of output directory `dir` (1 for a new one) and persists it.
    pub fn next(dir: &Path) -> Result<Self> {
        let path = dir.join("epoch");
        let last = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u16>().map_err(|_| {
                EngineError::user(
                    format!("{}: {:?} is not an epoch number", path.display(), text.trim()),
                    "restore the file from a backup, or write the largest epoch the directory has used",
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(EngineError::io("reading", &path, e)),
        };
        let next = last.checked_add(1).filter(|n| *n <= Self::MAX).ok_or_else(|| {
            EngineError::user(
                format!("{} has used all {} run epochs", dir.display(), Self::MAX),
                "start vigil with a new output directory (--out), or archive this one",
            )
        })?;
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io("creating", dir, e))?;
        let tmp = dir.join(".epoch.tmp");
        std::fs::write(&tmp, format!("{next}\n")).map_err(|e| EngineError::io("writing", &tmp, e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| EngineError::io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| EngineError::io("renaming", &tmp, e))?;
        Ok(Self(next))
    }

    /// The epoch's number.
    pub fn value(self) -> u16 {
        self.0
    }

    /// An id of this epoch with `body` below it; `body` must fit in [`BODY_BITS`] (the bits
    /// above are cut off, so callers pack their fields within it).
    pub fn id(self, body: u64) -> u64 {
        debug_assert!(body >> BODY_BITS == 0, "id body {body:#x} does not fit in {BODY_BITS} bits");
        (u64::from(self.0) << BODY_BITS) | (body & ((1 << BODY_BITS) - 1))
    }

    /// A 64-bit id hashed from the epoch and `parts` (SipHash with fixed keys: the same in every
    /// process). For rows with no structure to pack; two of a million such ids collide with
    /// odds of about 3 in 100 million.
    pub fn hash_id(self, parts: &[&[u8]]) -> u64 {
        use std::hash::Hasher;
        let mut h = std::hash::DefaultHasher::new();
        h.write_u16(self.0);
        for p in parts {
            h.write_usize(p.len());
            h.write(p);
        }
        h.finish()
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_takes_the_next_epoch_and_ids_do_not_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let a = Epoch::next(dir.path()).unwrap();
        let b = Epoch::next(dir.path()).unwrap();
        assert_eq!((a.value(), b.value()), (1, 2));
        assert_ne!(a.id(7), b.id(7));
        assert_eq!(a.id(7) >> BODY_BITS, 1);
        assert_ne!(a.hash_id(&[b"x"]), b.hash_id(&[b"x"]));
        assert_eq!(a.hash_id(&[b"x", b"y"]), a.hash_id(&[b"x", b"y"]));
        assert_ne!(a.hash_id(&[b"xy"]), a.hash_id(&[b"x", b"y"]));
    }

    #[test]
    fn a_damaged_epoch_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("epoch"), "banana").unwrap();
        let e = Epoch::next(dir.path()).unwrap_err().to_string();
        assert!(e.contains("epoch: \"banana\" is not an epoch number"), "{e}");
        std::fs::write(dir.path().join("epoch"), format!("{}", Epoch::MAX)).unwrap();
        let e = Epoch::next(dir.path()).unwrap_err().to_string();
        assert!(e.contains("has used all 4095 run epochs"), "{e}");
    }
}
