//! Authoring: this organisation's own records. Findings (with their private annexes),
//! corrections, retractions and grants are built here, signed on top of the chain head
//! the store reads inside its write transaction, checked like any received record, and
//! stored in that same transaction before anything can announce them.

use serde_json::json;

use super::sealing::{sealed_draft, Unsealable};
use super::{Node, NodeError};
use crate::audience::union;
use crate::finding::{
    annex_payload, retraction_payload, to_payload, FindingInput, ANNEX_SCHEMA, FINDING_SCHEMA,
    GRANT_SCHEMA, RETRACTION_SCHEMA,
};
use crate::identity::Identity;
use crate::now_ms;
use crate::record::{self, Audience, Draft, Record, RecordId};
use crate::sealed;

/// What `finding add` stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Added {
    /// The finding record.
    pub finding: RecordId,
    /// The private annex with sensitive details, if any.
    pub annex: Option<RecordId>,
    /// Whether the finding was sealed (end-to-end encrypted for its chosen members).
    pub sealed: bool,
    /// Why a finding for chosen members was not sealed, if it was not.
    #[serde(skip)]
    pub unsealed: Option<Unsealable>,
}

impl Node {
    /// Signs and stores own records in one transaction, chaining seq/prev. `make` builds
    /// each draft and may use the records made before it in the same call.
    pub(super) async fn append(
        &self,
        identity: &Identity,
        count: usize,
        mut make: impl FnMut(&[Record]) -> Draft,
    ) -> Result<Vec<Record>, NodeError> {
        let epoch = match self.membership().await? {
            Some(m) => {
                if !m.current().is_member(&identity.key()) {
                    return Err(NodeError::Refused(format!(
                        "organisation {} is not a member of coalition {:?} under its current membership epoch; it cannot record anything for it",
                        identity.key(),
                        m.name
                    )));
                }
                Some(m.current().epoch)
            }
            None => None,
        };
        // The membership is folded first: folding may write the store's meta table, which
        // would wait for the one write connection the transaction below holds.
        // The store holds its write transaction (and so the chain head) while the
        // records are signed on top of that head and checked here; dropped on an error,
        // it rolls back.
        let mut own = self.store.own_writer(&identity.key()).await?;
        let (mut seq, mut prev) = own.head().map(|(s, id)| (s, Some(id))).unwrap_or((0, None));
        let mut made: Vec<Record> = Vec::with_capacity(count);
        let mut prepared = Vec::with_capacity(count);
        for _ in 0..count {
            let draft = Draft {
                epoch,
                ..make(&made)
            };
            let r = record::sign(identity, seq + 1, prev, draft);
            seq = r.seq;
            prev = Some(r.id);
            prepared.push(Node::prepare_own(identity, r.clone())?);
            made.push(r);
        }
        own.insert(&prepared).await?;
        own.commit().await?;
        Ok(made)
    }

    /// Signs and stores one own record made now (epoch and chain added by `append`).
    pub(super) async fn append_one(
        &self,
        identity: &Identity,
        schema: &str,
        audience: Audience,
        supersedes: Option<RecordId>,
        payload: Vec<u8>,
    ) -> Result<Record, NodeError> {
        let now = now_ms();
        let recipients = match sealed::is_sealable(schema) {
            true => self.recipients_if_any(identity, &audience).await?.0,
            false => None,
        };
        let (schema, payload) =
            sealed_draft(&identity.key(), schema, payload, recipients.as_deref())?;
        let mut made = self
            .append(identity, 1, |_| Draft {
                schema: schema.clone(),
                audience: audience.clone(),
                supersedes,
                epoch: None,
                payload: payload.clone(),
                created_at_ms: now,
            })
            .await?;
        Ok(made.remove(0))
    }

    /// Validates, signs and stores a finding (and its private annex, if the input has
    /// sensitive details).
    pub async fn add_finding(
        &self,
        identity: &Identity,
        input: &FindingInput,
        audience: Audience,
    ) -> Result<Added, NodeError> {
        self.check_audience(&audience)?;
        self.append_finding(identity, input, audience, None).await
    }

    /// Signs and stores a finding superseding `supersedes` (if any) and, if the input has
    /// sensitive details, its PRIVATE annex, in one transaction.
    async fn append_finding(
        &self,
        identity: &Identity,
        input: &FindingInput,
        audience: Audience,
        supersedes: Option<RecordId>,
    ) -> Result<Added, NodeError> {
        let now = now_ms();
        // For chosen members the finding is sealed if every one of them published a key
        // (its annex stays PRIVATE, unsealed).
        let (recipients, unsealed) = self.recipients_if_any(identity, &audience).await?;
        let (finding_schema, finding_payload) = sealed_draft(
            &identity.key(),
            FINDING_SCHEMA,
            to_payload(&input.finding),
            recipients.as_deref(),
        )?;
        let n = 1 + usize::from(input.sensitive.is_some());
        let records = self
            .append(identity, n, |made| match made.first() {
                None => Draft {
                    schema: finding_schema.clone(),
                    audience: audience.clone(),
                    supersedes,
                    epoch: None,
                    payload: finding_payload.clone(),
                    created_at_ms: now,
                },
                Some(finding) => Draft {
                    schema: ANNEX_SCHEMA.into(),
                    audience: Audience::Private,
                    supersedes: None,
                    epoch: None,
                    payload: to_payload(&annex_payload(
                        &finding.id,
                        input
                            .sensitive
                            .as_ref()
                            .expect("annex only with sensitive details"),
                    )),
                    created_at_ms: now,
                },
            })
            .await?;
        Ok(Added {
            finding: records[0].id,
            annex: records.get(1).map(|r| r.id),
            sealed: recipients.is_some(),
            unsealed,
        })
    }

    fn check_audience(&self, audience: &Audience) -> Result<(), NodeError> {
        if let Audience::Members(m) = audience {
            if m == &[self.key()] {
                return Err(NodeError::Refused(
                    "an audience of only this organisation is `private`; name other members or use --share coalition".into(),
                ));
            }
        }
        Ok(())
    }

    /// Resolves an id (or prefix) to one of this organisation's current findings.
    async fn own_current_finding(&self, text: &str, verb: &str) -> Result<Record, NodeError> {
        let id = self.store.resolve(text).await?;
        let rec = self.store.record(&id).await?;
        if rec.schema != FINDING_SCHEMA {
            return Err(NodeError::Refused(format!(
                "record {id} is a {} record, not a finding; only findings can be {verb}",
                rec.schema
            )));
        }
        if rec.author != self.key() {
            return Err(NodeError::Refused(format!(
                "finding {id} was recorded by organisation {}, not by this one ({}); only its author can {verb} it",
                rec.author,
                self.key()
            )));
        }
        let mut head = rec;
        loop {
            let later = self.store.superseded_by(&head.id, &head.author).await?;
            if let Some(r) = later.iter().find(|r| r.schema == RETRACTION_SCHEMA) {
                return Err(NodeError::Refused(format!(
                    "finding {id} was retracted by record {}; a retracted finding cannot be {verb}",
                    r.id
                )));
            }
            match later.into_iter().find(|r| r.schema == FINDING_SCHEMA) {
                Some(next) => head = next,
                None => return Ok(head),
            }
        }
    }

    /// Stores a correction of finding `target` (its latest version) by this organisation.
    pub async fn correct(
        &self,
        identity: &Identity,
        target: &str,
        input: &FindingInput,
    ) -> Result<Added, NodeError> {
        let head = self.own_current_finding(target, "corrected").await?;
        let audience = self.effective_audience(&head).await?;
        self.append_finding(identity, input, audience, Some(head.id))
            .await
    }

    /// Retracts finding `target` (its latest version) with a reason.
    pub async fn retract(
        &self,
        identity: &Identity,
        target: &str,
        reason: &str,
    ) -> Result<RecordId, NodeError> {
        let head = self.own_current_finding(target, "retracted").await?;
        let audience = self.effective_audience(&head).await?;
        let payload = to_payload(&retraction_payload(reason));
        crate::schema::schemas()
            .check_payload(RETRACTION_SCHEMA, &payload, &"--reason")
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        let r = self
            .append_one(
                identity,
                RETRACTION_SCHEMA,
                audience,
                Some(head.id),
                payload,
            )
            .await?;
        Ok(r.id)
    }

    /// Widens who may receive one of this organisation's records by signing a grant.
    pub async fn share(
        &self,
        identity: &Identity,
        target: &str,
        with: Audience,
    ) -> Result<RecordId, NodeError> {
        if with == Audience::Private {
            return Err(NodeError::Refused(
                "records are immutable: an audience can be widened, never narrowed to private"
                    .into(),
            ));
        }
        self.check_audience(&with)?;
        let id = self.store.resolve(target).await?;
        let rec = self.store.record(&id).await?;
        if rec.author != self.key() {
            return Err(NodeError::Refused(format!(
                "record {id} was made by organisation {}; only its author can widen its audience",
                rec.author
            )));
        }
        if rec.schema == FINDING_SCHEMA {
            if let Some(newer) = self
                .store
                .superseded_by(&id, &rec.author)
                .await?
                .into_iter()
                .find(|r| r.schema == FINDING_SCHEMA)
            {
                return Err(NodeError::Refused(format!(
                    "finding {id} has a newer version {}; share that one",
                    newer.id
                )));
            }
        }
        let current = self.effective_audience(&rec).await?;
        let widened = union(&current, &with);
        if widened == current {
            return Err(NodeError::Refused(format!(
                "record {id} is already shared with {}",
                current.label()
            )));
        }
        let mut payload = json!({"record": id.to_hex(), "audience": with.to_json()});
        // A sealed record: the grant brings the new members its content key.
        if let Some(keys) = self.grant_wraps(identity, &rec, &widened).await? {
            payload["keys"] = keys;
        }
        let r = self
            .append_one(identity, GRANT_SCHEMA, widened, None, to_payload(&payload))
            .await?;
        Ok(r.id)
    }
}
