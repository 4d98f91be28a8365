//! Gossip in the event loop: validating announcements from peers (accepted if the
//! record is held, else held back until a sync with the source resolves them),
//! publishing this organisation's announcements, and reporting verdicts to gossipsub.

use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::PeerId;

use super::super::error::Violation;
use super::super::gossip::{self, Outgoing};
use super::{EventLoop, Work};

impl EventLoop {
    /// Reports a gossip message's validation result: forwarded only if accepted.
    pub(super) fn report(&mut self, msg: &MessageId, source: &PeerId, verdict: MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(msg, source, verdict);
    }

    /// Resolves the announcements that waited for a sync with `peer` (in a task: it
    /// refreshes the holdings from the store).
    pub(super) fn resolve_announces(&mut self, peer: PeerId) {
        let pending = self.announces.take(&peer);
        if pending.is_empty() {
            return;
        }
        let (node, index, tx) = (self.node.clone(), self.index.clone(), self.work_tx.clone());
        self.tasks.spawn(async move {
            let verdicts = gossip::resolve(&node, &index, pending).await;
            let _ = tx.send(Work::Resolved { peer, verdicts }).await;
        });
    }

    pub(super) fn on_gossip(
        &mut self,
        source: PeerId,
        msg_id: MessageId,
        message: gossipsub::Message,
    ) {
        if !self.peers.is_verified(&source) {
            self.report(&msg_id, &source, MessageAcceptance::Reject);
            return self.violation(source, Violation::GossipUnverified);
        }
        let Some(id) = gossip::announced(&message.data) else {
            self.report(&msg_id, &source, MessageAcceptance::Reject);
            return self.violation(source, Violation::MalformedAnnounce);
        };
        let held = self
            .index
            .try_lock()
            .map(|ix| ix.holds(&id))
            .unwrap_or(false);
        if held {
            self.report(&msg_id, &source, MessageAcceptance::Accept);
        } else if self.announces.wait(source, msg_id.clone(), id) {
            self.start_sync(source);
        } else {
            self.report(&msg_id, &source, MessageAcceptance::Ignore);
        }
    }

    /// Announces this organisation's new shareable records.
    pub(super) fn announce(&mut self, out: Outgoing) {
        for (id, msg) in out.announce {
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), msg)
            {
                Ok(_) => tracing::debug!(record = %id.short(), "announced"),
                Err(e) => {
                    tracing::debug!(record = %id.short(), error = %e, "not announced (peers will sync)")
                }
            }
        }
        if out.sync_now {
            // Members-only: not announced to the whole topic; sync with peers now.
            self.sync_all();
        }
    }
}
