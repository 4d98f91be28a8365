//! What may leave the node as a bundle: the stored records a recipient may receive under
//! the audience rules, written atomically so a crash never leaves half a file. Node
//! certificates are operational data (which libp2p peer id an organisation runs, so
//! where to find it) and stay out of every export but a full backup.

use std::collections::HashMap;
use std::path::Path;

use coalition_proto::v1::BundleHeader;

use super::{io_err, Node, NodeError};
use crate::audience::{self, grant_target};
use crate::bundle;
use crate::charter::{MEMBERSHIP_SCHEMAS, NODE_CERT_SCHEMA};
use crate::finding::GRANT_SCHEMA;
use crate::identity::OrgKey;
use crate::now_ms;
use crate::record::{Audience, Record, RecordId};
use crate::sealed::SEALED_SCHEMA;

/// Writes `path` via a temporary file in the same directory and a rename, so a crash
/// never leaves a half-written export under the final name. The file is readable by its
/// owner only (0600; exports can hold what the organisation shared with chosen members,
/// or its own private records), and the temporary file is created new, so a link planted
/// at its name is refused rather than followed; the rename replaces a link at `path`
/// instead of writing through it.
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
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&tmp)?;
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

impl Node {
    /// Stored records that may leave this node in a bundle for `recipient` (`None`: the
    /// whole coalition), node certificates left out; or all of them when
    /// `include_private` (a backup for the organisation itself). A sealed record goes to
    /// anyone in the coalition as the ciphertext it is ([`audience::carried`]); records
    /// come with the content this node opened, but a bundle carries only their bytes.
    pub async fn shareable(
        &self,
        include_private: bool,
        recipient: Option<OrgKey>,
    ) -> Result<Vec<Record>, NodeError> {
        self.leaving(include_private, recipient, false).await
    }

    /// As [`Node::shareable`], for readable exports (JSON Lines, CSV, GeoJSON): each
    /// record by its own effective audience, sealed ones included only when this node
    /// opened them and `recipient` is in their audience (their content, never the
    /// ciphertext, which no reader of such a file could use). With `include_private`,
    /// everything (an own backup).
    pub async fn readable(
        &self,
        include_private: bool,
        recipient: Option<OrgKey>,
    ) -> Result<Vec<Record>, NodeError> {
        self.leaving(include_private, recipient, true).await
    }

    async fn leaving(
        &self,
        include_private: bool,
        recipient: Option<OrgKey>,
        readable: bool,
    ) -> Result<Vec<Record>, NodeError> {
        if include_private && recipient.is_some() {
            return Err(NodeError::Refused(
                "--include-private puts every private record and annex in the file: it is for \
                 your own backups and cannot be combined with --for KEY (export for KEY \
                 without it)"
                    .into(),
            ));
        }
        let mut records = self.store.all_records_opened().await?;
        // Membership records first, so a reader can judge everything after them.
        records.sort_by_key(|(r, _)| !MEMBERSHIP_SCHEMAS.contains(&r.schema.as_str()));
        if include_private {
            // The organisation's own backup: everything, sealed records it could not
            // open included (as the envelope they are).
            return Ok(records.into_iter().map(|(r, _)| r).collect());
        }
        let mut grants: HashMap<(RecordId, OrgKey), Vec<Audience>> = HashMap::new();
        for (g, _) in records.iter().filter(|(r, _)| r.schema == GRANT_SCHEMA) {
            if let Some((target, a)) = grant_target(g) {
                grants.entry((target, g.author)).or_default().push(a);
            }
        }
        Ok(records
            .into_iter()
            .filter(|(r, _)| r.schema != NODE_CERT_SCHEMA)
            .filter(|(r, sealed)| {
                let signed = match (*sealed, readable) {
                    (true, true) if r.schema == SEALED_SCHEMA => return false,
                    (true, false) => audience::carried(SEALED_SCHEMA, &r.audience),
                    _ => r.audience.clone(),
                };
                let a =
                    audience::widened(&signed, grants.get(&(r.id, r.author)).into_iter().flatten());
                audience::shareable_with(&a, recipient.as_ref())
            })
            .map(|(r, _)| r)
            .collect())
    }

    /// Writes a bundle of the shareable records to `path`. Returns the record count.
    pub async fn export_bundle(
        &self,
        path: &Path,
        include_private: bool,
        recipient: Option<OrgKey>,
    ) -> Result<usize, NodeError> {
        self.export_bundle_observed(path, include_private, recipient, &|_, _| {})
            .await
    }

    /// As [`Node::export_bundle`], telling `progress(written, total)` in bytes of
    /// records as they are written, for a progress bar.
    pub async fn export_bundle_observed(
        &self,
        path: &Path,
        include_private: bool,
        recipient: Option<OrgKey>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<usize, NodeError> {
        // Every record in a bundle verifies on its own: those taken on a checkpoint
        // are verified first (one whose signature fails is removed, not exported).
        self.check_unchecked().await?;
        let records = self.shareable(include_private, recipient).await?;
        // A sync of the running node may have stored more since: not in this bundle.
        let unchecked = self.store.unchecked_ids().await?;
        let bytes: Vec<Vec<u8>> = records
            .into_iter()
            .filter(|r| !unchecked.contains(&r.id))
            .map(|r| r.bytes)
            .collect();
        let total = bytes.iter().map(|b| b.len() as u64).sum();
        let header = BundleHeader {
            created_at_ms: now_ms(),
            exporter: self.key().as_bytes().to_vec().into(),
            note: format!("exported by {}", self.config.organisation.name),
            ..Default::default()
        };
        write_atomically(path, |w| {
            bundle::write(&mut Counted(w, 0, &|n| progress(n, total)), header, &bytes)
        })?;
        Ok(bytes.len())
    }
}

/// A writer that tells how many bytes went through it.
struct Counted<'a, W>(W, u64, &'a dyn Fn(u64));

impl<W: std::io::Write> std::io::Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 += n as u64;
        (self.2)(self.1);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
