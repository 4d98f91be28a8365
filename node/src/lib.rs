//! Coalition node library: everything the `coalition` binary does, as functions the CLI,
//! the demo and the tests share.
//!
//! Modules, one concept each: [`identity`] (keys and the encrypted key file), [`record`]
//! (build, sign, verify, ids), [`schema`] (JSON Schema validation), [`finding`] (input,
//! annexes, query columns), [`store`] (SQLite), [`bundle`] (the auditor's file format),
//! [`config`] (home and config file), [`node`] (operations on a home), [`export`]
//! (JSON Lines, ACLED-like CSV, GeoJSON), [`query`] (filters and aggregates), [`report`]
//! (signed, verifiable reports), [`api`] (local HTTP API and dashboard), [`daemon`]
//! (`coalition run`), [`cli`] (command-line interface), [`demo`].

pub mod api;
pub mod api_server;
pub mod bundle;
pub mod charter;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod export;
pub mod finding;
pub mod identity;
pub mod net;
pub mod node;
pub mod query;
pub mod record;
pub mod report;
pub mod schema;
pub mod store;
