//! Coalition's verifiable core: everything an auditor's trust rests on, and nothing else.
//!
//! An organisation's key and key file ([`identity`]), signed records and their ids
//! ([`record`]), the payload schemas ([`schema`]), findings and their query columns
//! ([`finding`]), the charter and the membership fold ([`charter`]), the auditor's bundle
//! format ([`bundle`]), each author's chain of records and the evidence of a fork
//! ([`chain`]), the RFC 6962 Merkle tree over an author's log ([`merkle`]), who may receive a record ([`audience`]), the one check every record
//! passes before it is stored ([`check`]), offline verification ([`verify`]) and sealed
//! records, encrypted to chosen members ([`sealed`]).
//!
//! This crate depends on no async runtime, no database and no network stack, so offline
//! verification links only what it needs and can be reviewed on its own.

pub mod audience;
pub mod bundle;
pub mod chain;
pub mod charter;
pub mod check;
pub mod finding;
pub mod identity;
pub mod merkle;
pub mod record;
pub mod schema;
pub mod sealed;
pub mod verify;

/// Current time in ms since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
