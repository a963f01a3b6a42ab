//! Argus's in-memory dimensional time-series store: series identified by their tags, values on
//! a fixed step in compressed blocks, a roaring-bitmap tag index, retention. No networking and
//! no wire types: the server converts its inputs to [`TagMap`] and [`Sample`] at its edge.

mod bytes;
pub mod codec;
mod error;
mod head;
mod index;
mod matcher;
mod normalize;
mod parallel;
pub mod prefetch;
mod read;
mod series;
mod store;
mod tags;
mod wal;

pub use error::{Error, Result};
pub use index::Postings;
pub use matcher::{CmpOp, Matcher, ValuePredicate};
pub use normalize::DsType;
pub use parallel::{scan_cores, scan_parts};
pub use read::{Consolidation, ReadRequest, SeriesId, SeriesSource};
/// Fuzz entries for the store's file readers (not an API).
#[doc(hidden)]
pub use store::fuzzing;
pub use store::{
    AppendOutcome, Cardinality, Clock, Durability, MaintenanceReport, MemoryStats, Recovery,
    Sample, SeriesLimits, SnapshotReport, SnapshotStart, StorageStats, Store, StoreConfig, Writer,
    system_clock,
};
pub use tags::{Interner, Sym, TagMap, Tags};
pub use wal::{WalStats, WalSync};
