//! The store poller: a task beside the event loop that reads the store so the event loop
//! never waits on it. Every 200 ms it looks for this organisation's new records (to
//! announce, or to sync now if they are members-only); every second it asks for the
//! membership (it also changes through the CLI and imports) and counts the records held
//! per author; and it asks at once when the event loop asks (a sync stored membership
//! records). Asking is cheap: the node caches the fold and refolds only when membership
//! records were stored (`Node::membership`). It sends what it found over a bounded channel
//! ([`Polled`]); when the event loop is busy the poller waits, and it stops when the
//! event loop is gone or `shutdown` turns true.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Mutex, Notify};

use crate::charter::Membership;
use crate::identity::OrgKey;
use crate::node::Node;

use super::gossip::Outgoing;
use super::index::Index;

/// Between looks for this organisation's new records.
const OWN_RECORDS_EVERY: Duration = Duration::from_millis(200);
/// Between membership checks (a cached fold) and counts of records per author.
const MEMBERSHIP_EVERY: Duration = Duration::from_secs(1);
/// Results waiting for the event loop.
pub(super) const POLLED_QUEUE: usize = 16;

/// What the poller found.
#[derive(Debug)]
pub(super) enum Polled {
    /// This organisation's records stored since the last look.
    Own(Outgoing),
    /// The membership, folded now: its epoch changed, or the event loop asked.
    Membership(Option<Membership>),
    /// Records held per author.
    PerAuthor(BTreeMap<OrgKey, u64>),
}

/// The poller's state; [`Poller::run`] is the task. It reports to `tx`: own records
/// after `announced_upto`, membership changes from `epoch` on, and a fold whenever
/// `refold` is notified.
pub(super) struct Poller {
    pub(super) node: Arc<Node>,
    pub(super) index: Arc<Mutex<Index>>,
    pub(super) me: OrgKey,
    /// Rowid up to which own records were looked at.
    pub(super) announced_upto: i64,
    /// Epoch of the membership last reported.
    pub(super) epoch: Option<[u8; 32]>,
    pub(super) refold: Arc<Notify>,
    pub(super) tx: mpsc::Sender<Polled>,
}

impl Poller {
    /// Polls until `shutdown` turns true or the event loop is gone. Cancel safe between
    /// polls; a poll only reads.
    pub(super) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut own = tokio::time::interval(OWN_RECORDS_EVERY);
        let mut slow = tokio::time::interval(MEMBERSHIP_EVERY);
        loop {
            let sent = tokio::select! {
                _ = shutdown.changed() => return,
                _ = own.tick() => self.own_records().await,
                _ = slow.tick() => self.membership(false).await && self.per_author().await,
                _ = self.refold.notified() => self.membership(true).await,
            };
            if !sent {
                return;
            }
        }
    }

    /// Sends `polled`; false once the event loop is gone.
    async fn send(&self, polled: Polled) -> bool {
        self.tx.send(polled).await.is_ok()
    }

    async fn own_records(&mut self) -> bool {
        match self
            .node
            .store()
            .authored_since(&self.me, self.announced_upto)
            .await
        {
            Ok((upto, rows)) => {
                self.announced_upto = upto;
                let out = Outgoing::of(&self.me, rows);
                out.is_empty() || self.send(Polled::Own(out)).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read new records");
                true
            }
        }
    }

    /// Folds the membership; reports it if `always` or its epoch changed.
    async fn membership(&mut self, always: bool) -> bool {
        match self.node.membership().await {
            Ok(m) => {
                let epoch = m.as_ref().map(|m| m.current().epoch);
                if !always && epoch == self.epoch {
                    return true;
                }
                self.epoch = epoch;
                self.send(Polled::Membership(m)).await
            }
            Err(e) => {
                // Asked for after a sync stored membership records: worth a warning; the
                // fold every second retries quietly.
                if always {
                    tracing::warn!(error = %e, "cannot compute membership");
                } else {
                    tracing::debug!(error = %e, "cannot compute membership");
                }
                true
            }
        }
    }

    /// Counts records per author, unless a sync holds the index.
    async fn per_author(&mut self) -> bool {
        let per_author = match self.index.try_lock() {
            Ok(mut ix) => {
                let _ = ix.refresh(self.node.store()).await;
                ix.per_author()
            }
            Err(_) => return true,
        };
        self.send(Polled::PerAuthor(per_author)).await
    }
}
