//! The coalition membership as this node sees it: folded from the membership records it
//! holds, under the charter it adopted (or, after joining by import, the first valid
//! charter that lists this organisation).

use super::{Node, NodeError};
use crate::charter::{self, Member, Membership, SignedCharter, MEMBERSHIP_SCHEMAS};

/// Meta key naming the charter this node adopted.
pub(super) const CHARTER_META: &str = "charter";

impl Node {
    /// The id of the charter this node belongs to, as its store's meta table records it.
    pub(super) async fn chosen_charter(&self) -> Result<Option<[u8; 32]>, NodeError> {
        Ok(self
            .store
            .meta(CHARTER_META)
            .await?
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| b.try_into().ok()))
    }

    /// The coalition membership folded from the records this node holds (`None` before
    /// a charter is adopted or received).
    pub async fn membership(&self) -> Result<Option<Membership>, NodeError> {
        let recs = self.store.records_with_schemas(&MEMBERSHIP_SCHEMAS).await?;
        let chosen = match self.chosen_charter().await? {
            Some(c) => Some(c),
            None => {
                // A node that joined by import belongs to the first valid charter that
                // lists its organisation; remember it, so a later, different charter
                // (which any member could sign alone) cannot displace it.
                let mine = recs
                    .iter()
                    .filter(|r| r.schema == charter::CHARTER_SCHEMA)
                    .filter_map(|r| serde_json::from_slice::<SignedCharter>(&r.payload).ok())
                    .find(|c| {
                        c.check().is_ok() && c.charter.members.iter().any(|m| m.key == self.key())
                    })
                    .map(|c| c.charter.id());
                if let Some(id) = mine {
                    self.store.set_meta(CHARTER_META, &hex::encode(id)).await?;
                }
                mine
            }
        };
        Ok(Membership::fold(&recs, chosen)?)
    }

    /// The membership, or a refusal saying how to get a charter onto this node.
    pub(super) async fn require_membership(&self) -> Result<Membership, NodeError> {
        self.membership().await?.ok_or_else(|| {
            NodeError::Refused(
                "no coalition charter on this node yet: adopt one with `coalition charter adopt DRAFT` or import a bundle that carries it".into(),
            )
        })
    }

    /// This organisation's member card.
    pub fn member_card(&self) -> Member {
        Member {
            organisation: self.config.organisation.name.clone(),
            country: self.config.organisation.country.clone(),
            key: self.key(),
        }
    }
}
