//! Governance records this organisation signs: adopting the charter, proposing and
//! approving membership changes, and certificates binding a libp2p node to it. Each is
//! refused here when it could not take effect or would be equivocation.

use serde_json::json;

use super::membership::CHARTER_META;
use super::{Node, NodeError, GOVERNANCE_CAP};
use crate::charter::{self, Change, SignedCharter};
use crate::finding::to_payload;
use crate::identity::Identity;
use crate::record::{Audience, Record, RecordId};

/// Meta key holding the replica enrolments: a JSON list of peer ids.
pub const REPLICAS_META: &str = "replicas";

impl Node {
    /// Adopts a fully signed charter: stores it as a record by this organisation.
    pub async fn adopt_charter(
        &self,
        identity: &Identity,
        charter: &SignedCharter,
    ) -> Result<RecordId, NodeError> {
        charter.check()?;
        if !charter
            .charter
            .members
            .iter()
            .any(|m| m.key == identity.key())
        {
            return Err(NodeError::Refused(format!(
                "organisation {} is not a founder of {:?}; only founders adopt a charter (others import it)",
                identity.key(),
                charter.charter.name
            )));
        }
        let id = charter.charter.id();
        if let Some(current) = self.chosen_charter().await? {
            if current != id {
                return Err(NodeError::Refused(format!(
                    "this node already belongs to the coalition with charter {}; a node belongs to one coalition (use another --home)",
                    hex::encode(current)
                )));
            }
        }
        let payload = to_payload(&serde_json::to_value(charter).expect("charter serialises"));
        let r = self
            .sign_for_coalition(identity, charter::CHARTER_SCHEMA, payload)
            .await?;
        self.store.set_meta(CHARTER_META, &hex::encode(id)).await?;
        Ok(r.id)
    }

    /// Proposes a membership change for the current epoch (counts as this member's approval).
    pub async fn propose(
        &self,
        identity: &Identity,
        change: Change,
        note: Option<&str>,
    ) -> Result<RecordId, NodeError> {
        let m = self.require_membership().await?;
        m.current().apply(&change, &RecordId([0; 32]))?;
        if let Some(other) = m
            .pending
            .iter()
            .find(|q| q.approvers.contains(&identity.key()))
        {
            return Err(NodeError::Refused(format!(
                "this organisation already supports proposal {} for the current epoch; proposing another would be equivocation, which every node records as evidence",
                other.proposal
            )));
        }
        let mut payload = json!({ "change": change });
        if let Some(n) = note {
            payload["note"] = n.into();
        }
        let payload = to_payload(&payload);
        let r = self
            .sign_for_coalition(identity, charter::PROPOSAL_SCHEMA, payload)
            .await?;
        Ok(r.id)
    }

    /// Approves a proposal for the current epoch.
    pub async fn approve(
        &self,
        identity: &Identity,
        proposal: &str,
    ) -> Result<RecordId, NodeError> {
        let m = self.require_membership().await?;
        let id = self.store.resolve(proposal).await?;
        let p = self.store.record(&id).await?;
        if p.schema != charter::PROPOSAL_SCHEMA {
            return Err(NodeError::Refused(format!(
                "record {id} is a {} record, not a proposal",
                p.schema
            )));
        }
        if p.epoch != Some(m.current().epoch) {
            return Err(NodeError::Refused(format!(
                "proposal {id} applies to an earlier membership epoch and can no longer take effect; propose the change again"
            )));
        }
        if m.applied.iter().any(|a| a.proposal == id) {
            return Err(NodeError::Refused(format!(
                "proposal {id} has already taken effect"
            )));
        }
        if m.pending
            .iter()
            .any(|q| q.proposal == id && q.approvers.contains(&identity.key()))
        {
            return Err(NodeError::Refused(format!(
                "this organisation already supports proposal {id}; its support counts once, so there is nothing to add"
            )));
        }
        if let Some(other) = m
            .pending
            .iter()
            .find(|q| q.proposal != id && q.approvers.contains(&identity.key()))
        {
            return Err(NodeError::Refused(format!(
                "this organisation already supports proposal {} for the current epoch; approving another would be equivocation, which every node records as evidence",
                other.proposal
            )));
        }
        let payload = to_payload(&json!({ "proposal": id.to_hex() }));
        let r = self
            .sign_for_coalition(identity, charter::APPROVAL_SCHEMA, payload)
            .await?;
        Ok(r.id)
    }

    /// Issues a node certificate binding `peer_id` to this organisation until `expires_at_ms`.
    pub async fn issue_node_cert(
        &self,
        identity: &Identity,
        peer_id: &str,
        expires_at_ms: i64,
    ) -> Result<Record, NodeError> {
        let payload = to_payload(&json!({ "peer_id": peer_id, "expires_at_ms": expires_at_ms }));
        crate::schema::schemas()
            .check_payload(charter::NODE_CERT_SCHEMA, &payload, &"--peer-id")
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        let r = self
            .sign_for_coalition(identity, charter::NODE_CERT_SCHEMA, payload)
            .await?;
        Ok(r)
    }

    /// The peer ids of this organisation's other nodes that this node's operator enrolled
    /// as replicas (PRIVATE records sync to them; see `coalition replica`).
    pub async fn replicas(&self) -> Result<Vec<String>, NodeError> {
        Ok(self
            .store
            .meta(REPLICAS_META)
            .await?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    /// Enrols the node with libp2p peer id `peer_id` as a replica: once it proves (by its
    /// node certificate) that it belongs to this organisation, this node's PRIVATE
    /// records sync to it. False if it was enrolled already.
    pub async fn add_replica(&self, peer_id: &str) -> Result<bool, NodeError> {
        let peer: libp2p::PeerId = peer_id.trim().parse().map_err(|e| {
            NodeError::Refused(format!(
                "{peer_id:?} is not a libp2p peer id ({e}); `coalition status` on the other node prints its peer id"
            ))
        })?;
        let mut list = self.replicas().await?;
        if list.contains(&peer.to_string()) {
            return Ok(false);
        }
        list.push(peer.to_string());
        list.sort();
        self.store
            .set_meta(REPLICAS_META, &serde_json::to_string(&list).expect("list"))
            .await?;
        Ok(true)
    }

    /// Withdraws a replica enrolment; false if `peer_id` was not enrolled. Records it
    /// received stay on it.
    pub async fn remove_replica(&self, peer_id: &str) -> Result<bool, NodeError> {
        let mut list = self.replicas().await?;
        let before = list.len();
        list.retain(|p| p != peer_id.trim());
        if list.len() == before {
            return Ok(false);
        }
        self.store
            .set_meta(REPLICAS_META, &serde_json::to_string(&list).expect("list"))
            .await?;
        Ok(true)
    }

    /// Signs and stores a governance record for the whole coalition (every member must
    /// be able to count it).
    async fn sign_for_coalition(
        &self,
        identity: &Identity,
        schema: &str,
        payload: Vec<u8>,
    ) -> Result<Record, NodeError> {
        if charter::MEMBERSHIP_SCHEMAS.contains(&schema) {
            // Other nodes store at most GOVERNANCE_CAP per author and epoch.
            let folded = self.folded().await?;
            let epoch = folded.membership.as_ref().map(|m| m.current().epoch);
            let held = folded
                .per_author_epoch
                .get(&(identity.key(), epoch))
                .copied()
                .unwrap_or(0);
            if held >= GOVERNANCE_CAP {
                return Err(NodeError::Refused(format!(
                    "this organisation already signed {held} membership records under the current epoch, the most other nodes store; wait for the membership to change"
                )));
            }
        }
        self.append_one(identity, schema, Audience::Coalition, None, payload)
            .await
    }
}
