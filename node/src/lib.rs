//! Coalition node library: everything the `coalition` binary does, as functions the CLI,
//! the demo and the tests share.
//!
//! The verifiable core (identity, records, schemas, findings, membership, bundles, the
//! audience rules, the record check and offline verification) lives in the
//! `coalition-core` crate and is re-exported here under the same module names. This
//! crate adds what a running node needs: [`store`] (SQLite), [`config`] (home and config
//! file), [`node`] (operations on a home), [`backup`] (a home in one file), [`export`],
//! [`query`], [`report`], [`api`]
//! (local HTTP API and dashboard), [`net`] (libp2p), [`daemon`] (`coalition run`),
//! [`cli`], [`demo`], [`launch`] (a running `coalition run` process, for the demo,
//! the end-to-end tests and the benchmarks), and [`sample`] (example findings made into
//! many records, and benchmark figures).

pub use coalition_core::{
    audience, bundle, chain, charter, check, finding, identity, merkle, now_ms, record, schema,
    sealed, verify,
};

pub mod api;
pub mod api_server;
pub mod backup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod export;
pub mod fuzzing;
pub mod launch;
pub mod metrics;
pub mod net;
pub mod node;
pub mod priority;
pub mod query;
pub mod report;
pub mod sample;
pub mod store;
