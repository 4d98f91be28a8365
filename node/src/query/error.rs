//! The one error type of queries: a wrong query (said in words the analyst can act on),
//! a finding that is not there, or a store failure.

use crate::store::StoreError;

/// Errors from queries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The query itself is wrong (unknown code, bad date, too many values …).
    #[error("{0}")]
    Invalid(String),
    /// No such finding.
    #[error("no finding with id {0} on this node")]
    NotFound(String),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Db(e))
    }
}

pub(super) fn invalid(msg: impl Into<String>) -> QueryError {
    QueryError::Invalid(msg.into())
}
