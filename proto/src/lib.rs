//! Coalition's wire and storage formats, generated from `coalition/v1/*.proto`.
//!
//! The generated types are the only definition of the formats: the node, the tests and
//! any other tool decode and encode records through them.

/// Version 1 of the Coalition formats.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/coalition.v1.rs"));
}
