//! A node's operations on its home: record, correct, retract, share, export, import,
//! verify. The CLI, the demo and the tests all go through these functions.

use std::collections::HashMap;
use std::path::Path;

use coalition_proto::v1::BundleHeader;
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::audience::{self, grant_target, union};
use crate::bundle;
use crate::charter::{
    self, Change, GovernanceError, Member, Membership, SignedCharter, MEMBERSHIP_SCHEMAS,
};
use crate::check::{self, IngestError, Prepared};
use crate::config::{Config, ConfigError, Home, Organisation};
use crate::finding::{
    annex_payload, retraction_payload, to_payload, FindingInput, ANNEX_SCHEMA, FINDING_SCHEMA,
    GRANT_SCHEMA, RETRACTION_SCHEMA,
};
use crate::identity::{Identity, IdentityError, OrgKey};
use crate::record::{self, Audience, Draft, Record, RecordId};
use crate::store::{self, Store, StoreError};
use crate::verify::{is_membership, judge_all, VerifyError};

/// Records handled per parallel verify + insert step of an import.
const IMPORT_BATCH: usize = 8192;
/// Records in the first batch of an import (see `Node::import`).
const IMPORT_FIRST_BATCH: usize = 256;

/// Errors from node operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Home or config problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Key file problem.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bundle unreadable.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    /// Bundle unreadable for verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A record we made does not pass our own checks (a bug or a bad schema).
    #[error("record rejected: {0}")]
    Ingest(#[from] IngestError),
    /// A governance rule was broken.
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    /// The operation is not allowed on this record.
    #[error("{0}")]
    Refused(String),
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub use coalition_core::now_ms;
pub use coalition_core::verify::{verify_bundle, verify_bundle_for, Failure, VerifyReport};

/// An opened home: its config and store.
#[derive(Debug)]
pub struct Node {
    home: Home,
    config: Config,
    store: Store,
}

/// What `finding add` stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Added {
    /// The finding record.
    pub finding: RecordId,
    /// The private annex with sensitive details, if any.
    pub annex: Option<RecordId>,
}

/// Records from a peer that passed every check, waiting to be stored
/// ([`Node::check_from_peer`], then [`Node::store_from_peer`]).
#[derive(Debug, Default)]
pub struct CheckedRecords {
    ok: Vec<Prepared>,
    report: ImportReport,
}

impl CheckedRecords {
    /// How many records passed the checks.
    pub fn len(&self) -> usize {
        self.ok.len()
    }

    /// Records stored so far: the membership records that the check stores at once.
    pub fn stored(&self) -> u64 {
        self.report.stored
    }

    /// Whether no record passed.
    pub fn is_empty(&self) -> bool {
        self.ok.is_empty()
    }

    /// Adds `other` (checked after `self`), so that both are stored in one transaction.
    /// Failure indexes of `other` are shifted past the records of `self`.
    pub fn append(&mut self, other: CheckedRecords) {
        let shift = self.report.read;
        self.ok.extend(other.ok);
        self.report.read += other.report.read;
        self.report.stored += other.report.stored;
        self.report.duplicates += other.report.duplicates;
        self.report
            .failures
            .extend(other.report.failures.into_iter().map(|mut f| {
                f.index += shift;
                f
            }));
    }
}

/// Outcome of an import.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// Records read from the bundle.
    pub read: u64,
    /// Newly stored.
    pub stored: u64,
    /// Already held.
    pub duplicates: u64,
    /// Refused, with reasons.
    pub failures: Vec<Failure>,
}

/// A record as `finding show` presents it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordView {
    /// Record id.
    pub id: RecordId,
    /// Author key.
    pub author: OrgKey,
    /// Whether the author is this node's organisation.
    pub own: bool,
    /// Signature status (re-checked now).
    pub signature: String,
    /// Schema id.
    pub schema: String,
    /// Author's sequence number.
    pub seq: u64,
    /// Creation time claimed by the author, ms.
    pub created_at_ms: i64,
    /// Audience including grants.
    pub audience: Value,
    /// Record this one supersedes.
    pub supersedes: Option<RecordId>,
    /// Later versions by the same author.
    pub superseded_by: Vec<RecordId>,
    /// Retraction reason, if the finding was retracted.
    pub retracted: Option<String>,
    /// Private annexes held on this node.
    pub annexes: Vec<RecordId>,
    /// The payload.
    pub payload: Value,
}

impl Node {
    /// Creates a new home: config, encrypted key, store. Refuses to touch an existing one.
    pub async fn init(
        home: Home,
        org: &str,
        country: &str,
        passphrase: &str,
    ) -> Result<(Self, Identity), NodeError> {
        if home.exists() {
            return Err(ConfigError::HomeExists(home.dir().to_path_buf()).into());
        }
        let country = country.trim().to_ascii_uppercase();
        if !crate::schema::schemas()
            .vocabulary("country")
            .contains(&country)
        {
            return Err(NodeError::Refused(format!(
                "unknown country code {country:?}: use an ISO 3166-1 alpha-2 code (Kosovo: XK)"
            )));
        }
        if org.trim().is_empty() {
            return Err(NodeError::Refused("--org must not be empty".into()));
        }
        if passphrase.chars().count() < crate::identity::MIN_PASSPHRASE_LEN {
            return Err(IdentityError::WeakPassphrase {
                min: crate::identity::MIN_PASSPHRASE_LEN,
            }
            .into());
        }
        std::fs::create_dir_all(home.dir()).map_err(io_err(home.dir()))?;
        let identity = Identity::generate();
        identity.save(&home.key_path(), passphrase)?;
        let config = Config {
            organisation: Organisation {
                name: org.trim().to_string(),
                country,
                key: identity.key(),
            },
            network: None,
            api: None,
        };
        config.create(&home)?;
        let store = Store::create(&home.db_path()).await?;
        Ok((
            Self {
                home,
                config,
                store,
            },
            identity,
        ))
    }

    /// Opens an existing home.
    pub async fn open(home: Home) -> Result<Self, NodeError> {
        let config = Config::load(&home)?;
        let store = Store::open(&home.db_path()).await?;
        Ok(Self {
            home,
            config,
            store,
        })
    }

    /// Decrypts the organisation key.
    pub fn unlock(&self, passphrase: &str) -> Result<Identity, NodeError> {
        let id = Identity::load(&self.home.key_path(), passphrase)?;
        if id.key() != self.config.organisation.key {
            return Err(NodeError::Refused(format!(
                "the key file {} does not belong to the organisation in {}",
                self.home.key_path().display(),
                self.home.config_path().display()
            )));
        }
        Ok(id)
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This organisation's key.
    pub fn key(&self) -> OrgKey {
        self.config.organisation.key
    }

    /// Signs and stores own records in one transaction, chaining seq/prev. `make` builds
    /// each draft and may use the records made before it in the same call.
    async fn append(
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
            prepared.push(check::prepare_verified(r.clone())?);
            made.push(r);
        }
        own.insert(&prepared).await?;
        own.commit().await?;
        Ok(made)
    }

    /// Signs and stores one own record made now (epoch and chain added by `append`).
    async fn append_one(
        &self,
        identity: &Identity,
        schema: &str,
        audience: Audience,
        supersedes: Option<RecordId>,
        payload: Vec<u8>,
    ) -> Result<Record, NodeError> {
        let now = now_ms();
        let mut made = self
            .append(identity, 1, |_| Draft {
                schema: schema.into(),
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
        let now = now_ms();
        let finding_payload = to_payload(&input.finding);
        let n = 1 + usize::from(input.sensitive.is_some());
        let records = self
            .append(identity, n, |made| match made.first() {
                None => Draft {
                    schema: FINDING_SCHEMA.into(),
                    audience: audience.clone(),
                    supersedes: None,
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
        let now = now_ms();
        let payload = to_payload(&input.finding);
        let n = 1 + usize::from(input.sensitive.is_some());
        let records = self
            .append(identity, n, |made| match made.first() {
                None => Draft {
                    schema: FINDING_SCHEMA.into(),
                    audience: audience.clone(),
                    supersedes: Some(head.id),
                    epoch: None,
                    payload: payload.clone(),
                    created_at_ms: now,
                },
                Some(f) => Draft {
                    schema: ANNEX_SCHEMA.into(),
                    audience: Audience::Private,
                    supersedes: None,
                    epoch: None,
                    payload: to_payload(&annex_payload(
                        &f.id,
                        input.sensitive.as_ref().expect("sensitive"),
                    )),
                    created_at_ms: now,
                },
            })
            .await?;
        Ok(Added {
            finding: records[0].id,
            annex: records.get(1).map(|r| r.id),
        })
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
            .check_payload(RETRACTION_SCHEMA, &payload, "--reason")
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
        let payload = json!({"record": id.to_hex(), "audience": with.to_json()});
        let r = self
            .append_one(identity, GRANT_SCHEMA, widened, None, to_payload(&payload))
            .await?;
        Ok(r.id)
    }

    /// A record's audience including the grants its author signed for it.
    pub async fn effective_audience(&self, rec: &Record) -> Result<Audience, NodeError> {
        let grants = self.store.about(&rec.id, GRANT_SCHEMA).await?;
        Ok(audience::effective(rec, &grants))
    }

    /// Everything `finding show` presents about a record.
    pub async fn show(&self, target: &str) -> Result<RecordView, NodeError> {
        let id = self.store.resolve(target).await?;
        let (rec, signature) = match self.store.record(&id).await {
            Ok(r) => (r, "valid (ed25519 verify_strict)".to_string()),
            Err(e) => return Err(e.into()),
        };
        let later = self.store.superseded_by(&id, &rec.author).await?;
        let retracted = later
            .iter()
            .find(|r| r.schema == RETRACTION_SCHEMA)
            .and_then(|r| serde_json::from_slice::<Value>(&r.payload).ok())
            .map(|v| v["reason"].as_str().unwrap_or_default().to_string());
        let annexes = self.store.about(&id, ANNEX_SCHEMA).await?;
        Ok(RecordView {
            id,
            author: rec.author,
            own: rec.author == self.key(),
            signature,
            schema: rec.schema.clone(),
            seq: rec.seq,
            created_at_ms: rec.created_at_ms,
            audience: self.effective_audience(&rec).await?.to_json(),
            supersedes: rec.supersedes,
            superseded_by: later
                .iter()
                .filter(|r| r.schema == FINDING_SCHEMA)
                .map(|r| r.id)
                .collect(),
            retracted,
            annexes: annexes
                .iter()
                .filter(|a| a.author == rec.author)
                .map(|a| a.id)
                .collect(),
            payload: serde_json::from_slice(&rec.payload).unwrap_or(Value::Null),
        })
    }

    /// Stored records that may leave this node for `recipient` (`None`: the whole
    /// coalition), or all of them when `include_private`.
    pub async fn shareable(
        &self,
        include_private: bool,
        recipient: Option<OrgKey>,
    ) -> Result<Vec<Record>, NodeError> {
        let all = self.store.all_records().await?;
        let mut records = Vec::with_capacity(all.len());
        for (id, bytes) in all {
            records.push(store::reread(&id, &bytes)?);
        }
        // Membership records first, so a reader can judge everything after them.
        records.sort_by_key(|r| !MEMBERSHIP_SCHEMAS.contains(&r.schema.as_str()));
        if include_private {
            return Ok(records);
        }
        let mut grants: HashMap<(RecordId, OrgKey), Vec<Audience>> = HashMap::new();
        for g in records.iter().filter(|r| r.schema == GRANT_SCHEMA) {
            if let Some((target, a)) = grant_target(g) {
                grants.entry((target, g.author)).or_default().push(a);
            }
        }
        Ok(records
            .into_iter()
            .filter(|r| {
                let a = audience::widened(
                    &r.audience,
                    grants.get(&(r.id, r.author)).into_iter().flatten(),
                );
                audience::shareable_with(&a, recipient.as_ref())
            })
            .collect())
    }

    /// Writes a bundle of the shareable records to `path`. Returns the record count.
    pub async fn export_bundle(
        &self,
        path: &Path,
        include_private: bool,
        recipient: Option<OrgKey>,
    ) -> Result<usize, NodeError> {
        let records = self.shareable(include_private, recipient).await?;
        let bytes: Vec<Vec<u8>> = records.into_iter().map(|r| r.bytes).collect();
        let header = BundleHeader {
            created_at_ms: now_ms(),
            exporter: self.key().as_bytes().to_vec().into(),
            note: format!("exported by {}", self.config.organisation.name),
            ..Default::default()
        };
        write_atomically(path, |w| bundle::write(w, header, &bytes))?;
        Ok(bytes.len())
    }

    /// Imports a bundle: verifies every record (in parallel), stores the valid ones, and
    /// reports each invalid one. Importing the same bundle twice stores nothing new.
    ///
    /// Membership records (charter, proposals, approvals) are read and stored first, so
    /// that every other record can be judged against the membership they define: once a
    /// coalition charter is present, a record whose author was not a member under the
    /// epoch it names is refused.
    pub async fn import(&self, path: &Path) -> Result<ImportReport, NodeError> {
        let open = || -> Result<_, NodeError> {
            let file = std::fs::File::open(path).map_err(io_err(path))?;
            Ok(bundle::Reader::new(std::io::BufReader::with_capacity(
                1 << 20,
                file,
            ))?)
        };
        let mut report = ImportReport::default();
        let governance: Vec<bundle::Entry> = open()?
            .filter_map(Result::ok)
            .filter(|e| is_membership(&e.bytes))
            .collect();
        report.read += governance.len() as u64;
        self.ingest(&governance, None, &mut report).await?;
        let membership = self.membership().await?;

        // Pipelined: while one batch is written (SQLite, one core), the next is verified
        // on the others, so the two costs overlap instead of adding up.
        let membership = membership.map(std::sync::Arc::new);
        let mut entries = open()?;
        let mut writing: Option<Vec<Prepared>> = None;
        // The first batch is verified while the writer has nothing to do, so batches
        // start small and double up to IMPORT_BATCH: the writer starts within
        // milliseconds instead of waiting for a whole batch.
        let mut size = IMPORT_FIRST_BATCH;
        loop {
            let mut batch = Vec::with_capacity(size);
            for e in entries.by_ref().take(size) {
                match e {
                    Ok(e) if is_membership(&e.bytes) => {}
                    Ok(e) => batch.push(e),
                    Err(f) => report.failures.push(Failure {
                        index: f.index,
                        id: None,
                        reason: format!("at byte {}: {}", f.offset, f.reason),
                    }),
                }
            }
            if batch.is_empty() && writing.is_none() {
                break;
            }
            report.read += batch.len() as u64;
            size = (size * 2).min(IMPORT_BATCH);
            let m = membership.clone();
            let checking = tokio::task::spawn_blocking(move || {
                check_pool().install(|| check_batch(&batch, m.as_deref()))
            });
            if let Some(ok) = writing.take() {
                self.store_checked(&ok, &mut report).await?;
            }
            // A panic in verification is a bug: surface it as one, not as a bad record.
            let (ok, failures) = checking
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            report.failures.extend(failures);
            writing = (!ok.is_empty()).then_some(ok);
        }
        report.failures.sort_by_key(|f| f.index);
        Ok(report)
    }

    /// Stores records received from a peer: membership records first, then the rest
    /// judged against the membership they define. Returns what was stored and refused.
    pub async fn ingest_from_peer(&self, records: Vec<Vec<u8>>) -> Result<ImportReport, NodeError> {
        let records: Vec<(RecordId, Vec<u8>)> =
            records.into_iter().map(|b| (RecordId::of(&b), b)).collect();
        let ids: Vec<RecordId> = records.iter().map(|(id, _)| *id).collect();
        let held = self.store.held(&ids).await?;
        let checked = self.check_from_peer(records, &held).await?;
        self.store_from_peer(checked).await
    }

    /// The first half of [`Node::ingest_from_peer`]: skips records in `held` (the caller
    /// knows them to be stored already), stores membership records at once (later
    /// records are judged by them), and verifies the rest against the membership, on the
    /// verification threads (one core fewer than the machine), so that a sync can store
    /// one page while it checks the next. `records` come with their ids
    /// ([`RecordId::of`] of the bytes). A record held but not listed in `held` is
    /// verified and then counted as a duplicate by the store.
    pub async fn check_from_peer(
        &self,
        records: Vec<(RecordId, Vec<u8>)>,
        held: &std::collections::HashSet<RecordId>,
    ) -> Result<CheckedRecords, NodeError> {
        let read = records.len() as u64;
        let (governance, data): (Vec<_>, Vec<_>) = records
            .into_iter()
            .enumerate()
            .filter(|(_, (id, _))| !held.contains(id))
            .map(|(i, (_, bytes))| bundle::Entry {
                index: i as u64 + 1,
                offset: 0,
                bytes,
            })
            .partition(|e| is_membership(&e.bytes));
        let mut report = ImportReport {
            read,
            duplicates: read - (governance.len() + data.len()) as u64,
            ..Default::default()
        };
        self.ingest(&governance, None, &mut report).await?;
        if data.is_empty() {
            return Ok(CheckedRecords {
                ok: Vec::new(),
                report,
            });
        }
        let membership = self.membership().await?;
        let (ok, failures) = tokio::task::spawn_blocking(move || {
            check_pool().install(|| check_batch(&data, membership.as_ref()))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        report.failures.extend(failures);
        Ok(CheckedRecords { ok, report })
    }

    /// The second half of [`Node::ingest_from_peer`]: stores what passed, in one
    /// transaction (committed with `synchronous=FULL`, like every write).
    pub async fn store_from_peer(
        &self,
        checked: CheckedRecords,
    ) -> Result<ImportReport, NodeError> {
        let mut report = checked.report;
        self.store_checked(&checked.ok, &mut report).await?;
        Ok(report)
    }

    /// Verifies `batch` in parallel, judges authors against `membership` (if any), and
    /// stores what passes in one transaction.
    async fn ingest(
        &self,
        batch: &[bundle::Entry],
        membership: Option<&Membership>,
        report: &mut ImportReport,
    ) -> Result<(), NodeError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (ok, failures) = tokio::task::block_in_place(|| check_batch(batch, membership));
        report.failures.extend(failures);
        self.store_checked(&ok, report).await
    }

    /// Stores checked records in one transaction and counts what was new.
    async fn store_checked(
        &self,
        ok: &[Prepared],
        report: &mut ImportReport,
    ) -> Result<(), NodeError> {
        let new = self.store.insert(ok).await?;
        report.stored += new.len() as u64;
        report.duplicates += (ok.len() - new.len()) as u64;
        Ok(())
    }

    /// Re-verifies every stored record, its author's membership, and the database file.
    pub async fn verify_store(&self) -> Result<VerifyReport, NodeError> {
        let mut report = VerifyReport::default();
        for problem in self.store.integrity_check().await? {
            report.failures.push(Failure {
                index: 0,
                id: None,
                reason: format!("database integrity: {problem}"),
            });
        }
        let all = self.store.all_records().await?;
        let checked: Vec<(u64, Option<String>, Result<Prepared, String>)> =
            tokio::task::block_in_place(|| {
                all.par_iter()
                    .enumerate()
                    .map(|(i, (id, bytes))| {
                        let r = check::prepare(bytes)
                            .map_err(|e| e.to_string())
                            .and_then(|p| {
                                if p.record.id == *id {
                                    Ok(p)
                                } else {
                                    Err("stored bytes hash to a different id than the one stored"
                                        .into())
                                }
                            });
                        (i as u64 + 1, Some(id.to_hex()), r)
                    })
                    .collect()
            });
        let chosen = self.chosen_charter().await?;
        judge_all(&mut report, checked, chosen);
        Ok(report)
    }

    async fn chosen_charter(&self) -> Result<Option<[u8; 32]>, NodeError> {
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
            .append_one(
                identity,
                charter::CHARTER_SCHEMA,
                Audience::Coalition,
                None,
                payload,
            )
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
            .append_one(
                identity,
                charter::PROPOSAL_SCHEMA,
                Audience::Coalition,
                None,
                payload,
            )
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
            .append_one(
                identity,
                charter::APPROVAL_SCHEMA,
                Audience::Coalition,
                None,
                payload,
            )
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
            .check_payload(charter::NODE_CERT_SCHEMA, &payload, "--peer-id")
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        let r = self
            .append_one(
                identity,
                charter::NODE_CERT_SCHEMA,
                Audience::Coalition,
                None,
                payload,
            )
            .await?;
        Ok(r)
    }

    async fn require_membership(&self) -> Result<Membership, NodeError> {
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

/// Meta key naming the charter this node adopted.
const CHARTER_META: &str = "charter";

/// Cheap check, without verifying, whether record bytes carry a membership schema.
/// Threads that verify the next batch while SQLite writes the previous one: one core
/// fewer than the machine has (at least one), so the writer keeps a core to itself.
fn check_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores.saturating_sub(1).max(1))
            .thread_name(|i| format!("coalition-verify-{i}"))
            .build()
            .expect("verification threads start")
    })
}

/// Verifies every entry (signature, schema) in parallel on every core and judges its
/// author against `membership` (if given): the records that pass, and why the others fail.
fn check_batch(
    batch: &[bundle::Entry],
    membership: Option<&Membership>,
) -> (Vec<Prepared>, Vec<Failure>) {
    let results: Vec<(u64, &[u8], Result<Prepared, String>)> = batch
        .par_iter()
        .map(|e| {
            let r = check::prepare(&e.bytes)
                .map_err(|err| err.to_string())
                .and_then(|p| match membership {
                    Some(m) => m.judge(&p.record).map(|()| p),
                    None => Ok(p),
                });
            (e.index, e.bytes.as_slice(), r)
        })
        .collect();
    let mut ok = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for (index, bytes, r) in results {
        match r {
            Ok(p) => ok.push(p),
            Err(reason) => failures.push(Failure {
                index,
                id: Some(RecordId::of(bytes).to_hex()),
                reason,
            }),
        }
    }
    (ok, failures)
}

/// Writes `path` via a temporary file in the same directory and a rename, so a crash
/// never leaves a half-written export under the final name.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> Result<(), NodeError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("export"),
        std::process::id()
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        {
            let mut w = std::io::BufWriter::new(&file);
            write(&mut w)?;
            std::io::Write::flush(&mut w)?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result.map_err(io_err(path))
}
