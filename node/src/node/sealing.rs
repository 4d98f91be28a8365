//! Sealed records on this node (docs/FORMATS.md §6): the organisation's published
//! encryption key, the members' current keys, sealing what this organisation writes for
//! chosen members, and opening what arrives for it.
//!
//! Every record whose audience is chosen members (MEMBERS) and whose schema may be sealed
//! (a finding, an annex, a retraction) is sealed: its content is encrypted under a fresh
//! key wrapped for the author and each listed member's current encryption key. The
//! node opens a sealed record when it arrives if this organisation holds a wrap for it
//! (its secrets are held once the key file is unlocked, [`Node::unlock`]), and stores the
//! content beside the sealed bytes; every other node stores and serves the ciphertext.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Node, NodeError};
use crate::check::{self, Prepared};
use crate::identity::{Identity, OrgKey};
use crate::record::{Audience, Record, RecordId};
use crate::sealed::{
    self, current_encryption_key, encryption_key_payload, Recipient, ENCRYPTION_KEY_SCHEMA,
    SEALED_SCHEMA,
};

/// Why a record for chosen members cannot be sealed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsealable {
    /// These members have published no encryption key that this node holds.
    NoKey(Vec<OrgKey>),
}

impl std::fmt::Display for Unsealable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsealable::NoKey(orgs) => {
                let names: Vec<String> = orgs.iter().map(|o| o.to_string()).collect();
                write!(
                    f,
                    "member {} has published no encryption key that this node holds (its node publishes one when it runs: sync with the coalition, `coalition run`, and later records are sealed)",
                    names.join(", ")
                )
            }
        }
    }
}

/// This organisation's encryption secrets, held in memory while the node runs so that
/// sealed records can be opened as they arrive. Never printed.
pub(crate) struct Keyring {
    me: OrgKey,
    secrets: Vec<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keyring({}, {} secrets)",
            self.me.short(),
            self.secrets.len()
        )
    }
}

impl Keyring {
    fn of(identity: &Identity) -> Self {
        Self {
            me: identity.key(),
            secrets: identity.encryption_secrets().to_vec(),
        }
    }

    /// `p` opened, if it is a sealed record with a wrap for this organisation that opens
    /// and content that passes its check; otherwise `p` as it was (stored unread). A
    /// record sealed for this organisation that does not open is the author's fault (the
    /// signature rules out a relay); it is logged and kept as ciphertext.
    pub(crate) fn open(&self, p: Prepared) -> Prepared {
        if p.record.schema != SEALED_SCHEMA || p.content.is_some() {
            return p;
        }
        let opened = match sealed::open(&p.record, &self.me, &self.secrets) {
            Ok(o) => o,
            Err(sealed::OpenError::NotRecipient { .. }) => return p,
            Err(e) => {
                tracing::warn!(record = %p.record.id.short(), error = %e, "a sealed record for this organisation does not open; kept unread");
                return p;
            }
        };
        match check::prepare_opened(p.record.clone(), &opened.schema, &opened.payload) {
            Ok(inner) => inner,
            Err(e) => {
                tracing::warn!(record = %p.record.id.short(), error = %e, "a sealed record for this organisation holds invalid content; kept unread");
                p
            }
        }
    }
}

impl Keyring {
    /// Opens `record` (sealed, held unread) with this organisation's own wrap or one that
    /// a grant of its author in `grants` carries; `None` if neither opens it.
    fn open_held(&self, record: Record, grants: &[Record]) -> Option<Prepared> {
        let raw = Prepared {
            record,
            subject: None,
            finding: None,
            content: None,
        };
        let p = self.open(raw);
        if p.content.is_some() {
            return Some(p);
        }
        let wraps = grants
            .iter()
            .filter(|g| g.author == p.record.author)
            .filter_map(|g| serde_json::from_slice::<serde_json::Value>(&g.payload).ok())
            .filter_map(|v| sealed::grant_keys(&v).ok())
            .flatten()
            .filter(|w| w.recipient == self.me);
        for wrap in wraps {
            let opened = match sealed::open_with_wrap(&p.record, &wrap, &self.me, &self.secrets) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(record = %p.record.id.short(), error = %e, "a key granted to this organisation does not open the record");
                    continue;
                }
            };
            match check::prepare_opened(p.record.clone(), &opened.schema, &opened.payload) {
                Ok(inner) => return Some(inner),
                Err(e) => {
                    tracing::warn!(record = %p.record.id.short(), error = %e, "a granted sealed record holds invalid content; kept unread");
                    return None;
                }
            }
        }
        None
    }
}

impl Node {
    /// Opens the sealed records this node holds unread that it can open now, and indexes
    /// their content: with `ids` (the targets of grants just stored), those among them
    /// that a grant of their author brings this organisation a key for; without, every
    /// one held (the node starts: records imported while the key file was locked, or
    /// that arrived after their grant). Nothing without the key file unlocked. Returns
    /// how many were opened.
    pub async fn open_pending(&self, ids: Option<&[RecordId]>) -> Result<usize, NodeError> {
        let Some(keys) = self.keyring() else {
            return Ok(0);
        };
        let mut held = self.store.unopened_sealed(ids).await?;
        if held.is_empty() {
            return Ok(0);
        }
        let mut grants = self
            .store
            .grants_about(&held.iter().map(|r| r.id).collect::<Vec<_>>())
            .await?;
        if ids.is_some() {
            // Just checked with this organisation's own wraps: only a grant can help.
            held.retain(|r| grants.contains_key(&r.id));
        }
        let opened: Vec<Prepared> = tokio::task::block_in_place(|| {
            held.into_iter()
                .filter_map(|r| {
                    let g = grants.remove(&r.id).unwrap_or_default();
                    keys.open_held(r, &g)
                })
                .collect()
        });
        if opened.is_empty() {
            return Ok(0);
        }
        Ok(self.store.open_held(&opened).await?)
    }

    /// Holds this organisation's encryption secrets, so records sealed for it are opened
    /// as they arrive ([`Node::unlock`] calls it).
    pub fn hold_keys(&self, identity: &Identity) {
        let mut held = self.keyring.write().unwrap_or_else(|e| e.into_inner());
        *held = Some(Arc::new(Keyring::of(identity)));
    }

    /// The secrets held, if the key file was unlocked.
    pub(crate) fn keyring(&self) -> Option<Arc<Keyring>> {
        self.keyring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current encryption key `org` published, among the records this node holds.
    pub async fn encryption_key_of(
        &self,
        org: &OrgKey,
    ) -> Result<Option<sealed::EncryptionKey>, NodeError> {
        let records = self
            .store
            .records_with_schemas(&[ENCRYPTION_KEY_SCHEMA])
            .await?;
        Ok(current_encryption_key(org, &records))
    }

    /// Publishes this organisation's current encryption key (an `encryption-key/v1`
    /// record for the whole coalition) unless the store already holds it as current.
    /// Returns the new record's id, if one was made. A node with no coalition yet
    /// publishes nothing (its first run in a coalition does).
    pub async fn publish_encryption_key(
        &self,
        identity: &Identity,
    ) -> Result<Option<RecordId>, NodeError> {
        let key = identity.encryption_key();
        if self.encryption_key_of(&identity.key()).await? == Some(key)
            || self.membership().await?.is_none()
        {
            return Ok(None);
        }
        let now = crate::now_ms();
        let made = self
            .append(identity, 1, |_| crate::record::Draft {
                schema: ENCRYPTION_KEY_SCHEMA.into(),
                audience: Audience::Coalition,
                supersedes: None,
                epoch: None,
                payload: encryption_key_payload(&key),
                created_at_ms: now,
            })
            .await?;
        Ok(made.first().map(|r| r.id))
    }

    /// Makes a new encryption secret current in `identity`, writes the key file again
    /// (atomically: the old file or the new one, never a torn one), and publishes the new
    /// key. The old secrets stay in the key file, so records sealed to them still open.
    /// Refuses before a coalition exists (there is nobody to publish to).
    pub async fn rotate_encryption_key(
        &self,
        identity: &mut Identity,
        passphrase: &str,
    ) -> Result<RecordId, NodeError> {
        if self.membership().await?.is_none() {
            return Err(NodeError::Refused(
                "this node belongs to no coalition yet: there is nobody to publish an encryption key to".into(),
            ));
        }
        identity.rotate_encryption_key();
        identity.replace_key_file(&self.home.key_path(), passphrase)?;
        self.hold_keys(identity);
        self.publish_encryption_key(identity).await?.ok_or_else(|| {
            NodeError::Refused("the new encryption key was already published".into())
        })
    }

    /// Who a record for `audience` is sealed for: this organisation and every listed
    /// member, each with its current encryption key. `Ok(None)` for an audience that is
    /// not MEMBERS (nothing to seal). Refuses a listed organisation that is not a member
    /// now (a removed member gets no key). A listed member that has published no
    /// encryption key yet is an [`Unsealable::NoKey`]: the caller decides.
    pub(super) async fn recipients(
        &self,
        identity: &Identity,
        audience: &Audience,
    ) -> Result<Result<Option<Vec<Recipient>>, Unsealable>, NodeError> {
        let Audience::Members(members) = audience else {
            return Ok(Ok(None));
        };
        self.publish_encryption_key(identity).await?;
        let membership = self.membership().await?;
        let records = self
            .store
            .records_with_schemas(&[ENCRYPTION_KEY_SCHEMA])
            .await?;
        let me = identity.key();
        let mut out = vec![Recipient {
            org: me,
            key: identity.encryption_key(),
        }];
        let mut missing = Vec::new();
        for org in members.iter().filter(|k| **k != me) {
            if let Some(m) = &membership {
                if !m.current().is_member(org) {
                    return Err(NodeError::Refused(format!(
                        "{org} is not a member of coalition {:?} under its current membership; a record for chosen members can name members only",
                        m.name
                    )));
                }
            }
            match current_encryption_key(org, &records) {
                Some(key) => out.push(Recipient { org: *org, key }),
                None => missing.push(*org),
            }
        }
        if !missing.is_empty() {
            return Ok(Err(Unsealable::NoKey(missing)));
        }
        Ok(Ok(Some(out)))
    }

    /// As [`Node::recipients`], for a record that is sealed when it can be: with a
    /// member that has published no key yet, `None` (the record is written unsealed, for
    /// its audience only: it travels only between its author and its audience, as every
    /// unsealed record for chosen members does), and why, to tell the operator.
    pub(super) async fn recipients_if_any(
        &self,
        identity: &Identity,
        audience: &Audience,
    ) -> Result<(Option<Vec<Recipient>>, Option<Unsealable>), NodeError> {
        Ok(match self.recipients(identity, audience).await? {
            Ok(r) => (r, None),
            Err(why) => (None, Some(why)),
        })
    }

    /// The wraps a grant widening `rec` to `widened` carries: `rec`'s content key (this
    /// organisation opens its own wrap) wrapped to the current key of every organisation
    /// the widened audience names (every current member, for the whole coalition) that
    /// the record holds no wrap for. `None` for a record that is not sealed: nothing to
    /// wrap. The content is never encrypted again.
    pub(super) async fn grant_wraps(
        &self,
        identity: &Identity,
        rec: &Record,
        widened: &Audience,
    ) -> Result<Option<serde_json::Value>, NodeError> {
        let signed = crate::record::verify(&rec.bytes)
            .map_err(|e| NodeError::Refused(format!("record {}: {e}", rec.id)))?;
        if signed.schema != SEALED_SCHEMA {
            return Ok(None);
        }
        let me = identity.key();
        let view = sealed::parse(&signed.payload).map_err(check::IngestError::from)?;
        let opened = sealed::open(&signed, &me, identity.encryption_secrets())
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        let named: Vec<OrgKey> = match widened {
            Audience::Members(m) => m.clone(),
            Audience::Coalition => match self.membership().await? {
                Some(m) => m.current().members.keys().copied().collect(),
                None => Vec::new(),
            },
            Audience::Private => Vec::new(),
        };
        let new: Vec<OrgKey> = named
            .into_iter()
            .filter(|o| *o != me && view.key_for(o).is_none())
            .collect();
        let recipients = match self.recipients(identity, &Audience::members(new)).await? {
            Ok(r) => r.unwrap_or_default(),
            Err(why) => {
                return Err(NodeError::Refused(format!(
                    "{why}; the grant could not bring it the key of sealed record {}",
                    rec.id
                )))
            }
        };
        let wraps = recipients
            .iter()
            .filter(|r| r.org != me)
            .map(|r| {
                sealed::wrap_for(&me, &opened.content_key, &view.ciphertext, r)
                    .map(|w| w.to_json())
                    .map_err(check::IngestError::from)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(serde_json::Value::Array(wraps)))
    }

    /// Checks one of this organisation's new records like any received one and, if it is
    /// sealed, opens it with `identity` (the author holds a wrap of its own).
    pub(super) fn prepare_own(identity: &Identity, r: Record) -> Result<Prepared, NodeError> {
        let p = check::prepare_verified(r)?;
        if p.record.schema != SEALED_SCHEMA {
            return Ok(p);
        }
        let opened = sealed::open(&p.record, &identity.key(), identity.encryption_secrets())
            .map_err(|e| NodeError::Refused(format!("cannot open a record just sealed: {e}")))?;
        Ok(check::prepare_opened(
            p.record,
            &opened.schema,
            &opened.payload,
        )?)
    }
}

/// The payload of a draft of `schema` for `recipients`: sealed (`sealed/v1`) when there
/// are recipients and the schema may be sealed, as it is otherwise.
pub(super) fn sealed_draft(
    author: &OrgKey,
    schema: &str,
    payload: Vec<u8>,
    recipients: Option<&[Recipient]>,
) -> Result<(String, Vec<u8>), NodeError> {
    match recipients {
        Some(r) if sealed::is_sealable(schema) => {
            let s = sealed::seal(author, schema, &payload, r).map_err(check::IngestError::from)?;
            Ok((SEALED_SCHEMA.to_string(), s.payload))
        }
        _ => Ok((schema.to_string(), payload)),
    }
}
