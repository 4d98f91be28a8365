//! The analyst's commands: `query`, `report`, `verify-report`, and the filtered
//! analyst exports of `export`. Thin: parse, call [`crate::query`], [`crate::report`]
//! and [`crate::export`], print.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::shared::charter_id;
use super::shared::open_unlocked;
use super::{open, out, Format, Outcome};
use crate::config::Home;
use crate::identity::OrgKey;
use crate::node::{self, Node};
use crate::query::{self, Dimension, Query, QueryError};
use crate::record::{Record, RecordId};
use crate::report;

/// Filter flags shared by `coalition query`, `report` and `export`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QueryArgs {
    /// Country code(s), e.g. RS,XK.
    #[arg(long, value_delimiter = ',', value_name = "CODE")]
    pub country: Vec<String>,
    /// Region, as written in the findings (repeat for several).
    #[arg(long, value_name = "NAME")]
    pub region: Vec<String>,
    /// Municipality, as written in the findings (repeat for several).
    #[arg(long, value_name = "NAME")]
    pub municipality: Vec<String>,
    /// Category code(s).
    #[arg(long, value_delimiter = ',', value_name = "CODE")]
    pub category: Vec<String>,
    /// Security actor type code(s).
    #[arg(long = "actor-type", value_delimiter = ',', value_name = "CODE")]
    pub actor_type: Vec<String>,
    /// Affected group code(s).
    #[arg(long = "affected-group", value_delimiter = ',', value_name = "CODE")]
    pub affected_group: Vec<String>,
    /// Author organisation key(s).
    #[arg(long, value_delimiter = ',', value_name = "KEY")]
    pub author: Vec<String>,
    /// Confidence code(s).
    #[arg(long, value_delimiter = ',', value_name = "CODE")]
    pub confidence: Vec<String>,
    /// Tag (repeat for several).
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// Incident on or after this date (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// Incident on or before this date (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
    /// Recorded on or after this UTC day (YYYY-MM-DD).
    #[arg(long = "recorded-from", value_name = "DATE")]
    pub recorded_from: Option<String>,
    /// Recorded on or before this UTC day (YYYY-MM-DD).
    #[arg(long = "recorded-to", value_name = "DATE")]
    pub recorded_to: Option<String>,
    /// Full-text search in titles and summaries (any language; words are prefixes).
    #[arg(long = "search", value_name = "WORDS")]
    pub search: Option<String>,
}

impl QueryArgs {
    /// The checked query these flags describe.
    pub fn to_query(&self) -> Result<Query, QueryError> {
        let mut author = Vec::new();
        for a in &self.author {
            author.push(query::parse_author(a)?);
        }
        Query {
            country: self.country.clone(),
            region: self.region.clone(),
            municipality: self.municipality.clone(),
            category: self.category.clone(),
            actor_type: self.actor_type.clone(),
            affected_group: self.affected_group.clone(),
            author,
            confidence: self.confidence.clone(),
            tag: self.tag.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            recorded_from: self.recorded_from.clone(),
            recorded_to: self.recorded_to.clone(),
            q: self.search.clone(),
        }
        .normalised()
    }
}

/// `coalition query`
#[derive(Debug, clap::Args)]
pub struct QueryCmd {
    /// Filters.
    #[command(flatten)]
    pub filters: QueryArgs,
    /// Count by these dimensions (comma-separated): country, region, municipality,
    /// category, actor_type, affected_group, author, confidence, week, month, quarter,
    /// year. Without it, findings are listed.
    #[arg(long = "group-by", value_delimiter = ',', value_name = "DIM")]
    pub group_by: Vec<String>,
    /// Findings per page when listing (at most 500).
    #[arg(long, default_value_t = query::DEFAULT_LIMIT)]
    pub limit: u32,
    /// Continue a listing from the `next_cursor` a previous page printed.
    #[arg(long)]
    pub cursor: Option<String>,
    /// JSON output.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV output.
    #[arg(long)]
    pub csv: bool,
    /// Language of labels in tables: en, sr-Latn, sr-Cyrl, mk, ru, sq, ka.
    #[arg(long, default_value = "en",
          value_parser = clap::builder::PossibleValuesParser::new(crate::schema::LABEL_LANGUAGES))]
    pub lang: String,
}

/// `coalition report`
#[derive(Debug, clap::Args)]
pub struct ReportCmd {
    /// Filters.
    #[command(flatten)]
    pub filters: QueryArgs,
    /// Count by these dimensions (comma-separated; see `coalition query --help`).
    #[arg(long = "group-by", value_delimiter = ',', value_name = "DIM")]
    pub group_by: Vec<String>,
    /// Report file to write.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: PathBuf,
    /// Make the report for this member organisation: it then also counts findings shared
    /// with that member. Without it the report is for the whole coalition and counts only
    /// findings shared with every member (never private ones).
    #[arg(long = "for", value_name = "KEY")]
    pub recipient: Option<OrgKey>,
}

/// `coalition verify-report`
#[derive(Debug, clap::Args)]
pub struct VerifyReportCmd {
    /// Report file.
    pub report: PathBuf,
    /// Bundle with the records the report counted.
    pub bundle: PathBuf,
    /// Judge membership by this charter id (from `coalition charter show`) instead of
    /// trusting the charter the bundle carries.
    #[arg(long, value_name = "CHARTER_ID")]
    pub charter: Option<String>,
    /// Machine-readable result.
    #[arg(long)]
    pub json: bool,
}

/// Runs `coalition query`.
pub(super) async fn query(home: &Home, cmd: QueryCmd) -> Result<Outcome> {
    let q = cmd.filters.to_query()?;
    let group_by = query::parse_group_by(&cmd.group_by)?;
    let node = open(home).await?;
    let reader = node.store().reader();
    if group_by.is_empty() {
        let page = query::Page {
            with_total: true,
            ..query::page(Some(cmd.limit), cmd.cursor)?
        };
        let p = query::findings(&reader, &q, &page).await?;
        if cmd.json {
            out(serde_json::to_string_pretty(&p)?)?;
        } else if cmd.csv {
            let mut w = csv::Writer::from_writer(std::io::stdout().lock());
            w.write_record([
                "record_id",
                "event_date",
                "country",
                "admin1",
                "admin2",
                "category",
                "actor_types",
                "affected",
                "confidence",
                "author",
                "title",
            ])?;
            for item in &p.items {
                let f = &item.columns;
                let cells = [
                    item.id.to_hex(),
                    f.occurred_start.clone(),
                    f.country.clone(),
                    f.region.clone().unwrap_or_default(),
                    f.municipality.clone().unwrap_or_default(),
                    f.category.clone(),
                    f.actor_types.join(";"),
                    f.affected_count.map(|c| c.to_string()).unwrap_or_default(),
                    f.confidence.clone(),
                    item.author.to_hex(),
                    f.title.clone(),
                ];
                w.write_record(cells.map(crate::export::safe_cell))?;
            }
            w.flush()?;
        } else {
            out(format!(
                "{:<12}  {:<10}  {:<2}  {:<26}  {:>8}  TITLE",
                "ID", "DATE", "CC", "CATEGORY", "AFFECTED"
            ))?;
            for item in &p.items {
                let f = &item.columns;
                out(format!(
                    "{:<12}  {:<10}  {:<2}  {:<26}  {:>8}  {}",
                    item.id.short(),
                    f.occurred_start,
                    f.country,
                    f.category,
                    f.affected_count.map(|c| c.to_string()).unwrap_or_default(),
                    f.title
                ))?;
            }
            eprintln!(
                "{} of {} matching findings ({} people affected){}",
                p.items.len(),
                p.total.unwrap_or_default().findings,
                p.total.unwrap_or_default().affected,
                p.next_cursor
                    .as_deref()
                    .map(|c| format!("; next page: --cursor {c}"))
                    .unwrap_or_default()
            );
        }
        return Ok(Outcome::Success);
    }
    let agg = query::aggregate(&reader, &q, &group_by).await?;
    if cmd.json {
        out(serde_json::to_string_pretty(&agg)?)?;
    } else if cmd.csv {
        let mut w = csv::Writer::from_writer(std::io::stdout().lock());
        let mut header: Vec<&str> = group_by.iter().map(|d| d.name()).collect();
        header.extend(["findings", "affected"]);
        w.write_record(&header)?;
        for r in &agg.rows {
            let mut rec: Vec<String> = r
                .keys
                .iter()
                .map(|k| k.clone().unwrap_or_default())
                .collect();
            rec.push(r.measures.findings.to_string());
            rec.push(r.measures.affected.to_string());
            w.write_record(rec.into_iter().map(crate::export::safe_cell))?;
        }
        w.flush()?;
    } else {
        print_table(&agg, &group_by, &cmd.lang)?;
    }
    Ok(Outcome::Success)
}

fn print_table(agg: &query::Aggregate, group_by: &[Dimension], lang: &str) -> Result<()> {
    let mut table: Vec<Vec<String>> = vec![group_by
        .iter()
        .map(|d| d.name().to_uppercase())
        .chain(["FINDINGS".into(), "AFFECTED".into()])
        .collect()];
    for r in &agg.rows {
        table.push(
            group_by
                .iter()
                .zip(&r.keys)
                .map(|(d, k)| query::key_label(*d, k.as_deref(), lang))
                .chain([
                    r.measures.findings.to_string(),
                    r.measures.affected.to_string(),
                ])
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let n = group_by.len();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                if i >= n {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        out(line.join("  ").trim_end())?;
    }
    out(format!(
        "total: {} findings, {} people affected{}",
        agg.total.findings,
        agg.total.affected,
        if group_by
            .iter()
            .any(|d| matches!(d, Dimension::ActorType | Dimension::AffectedGroup))
        {
            " (a finding with several actor types or groups counts in each of its groups)"
        } else {
            ""
        }
    ))
}

/// Runs `coalition report`.
pub(super) async fn report(home: &Home, cmd: ReportCmd) -> Result<Outcome> {
    let q = cmd.filters.to_query()?;
    let group_by = query::parse_group_by(&cmd.group_by)?;
    let (node, identity) = open_unlocked(home).await?;
    let name = node.config().organisation.name.clone();
    let epoch = membership_epoch(&node).await;
    let audience = report::ReportAudience::for_recipient(cmd.recipient);
    let produced = report::produce(
        &node.store().reader(),
        &identity,
        &name,
        epoch,
        &q,
        &group_by,
        audience.clone(),
    )
    .await?;
    let r = &produced.report;
    let text = serde_json::to_vec_pretty(r)?;
    node::write_atomically(&cmd.output, |w| std::io::Write::write_all(w, &text))?;
    eprintln!(
        "wrote report for {} of {} findings ({} people affected) in {} groups to {}, signed by {}",
        audience.describe(),
        r.report.total.findings,
        r.report.total.affected,
        r.report.rows.len(),
        cmd.output.display(),
        r.report.producer
    );
    if produced.withheld > 0 {
        eprintln!(
            "left out {} matching findings that {} may not see (private, or shared only with other members)",
            produced.withheld,
            audience.describe()
        );
    }
    Ok(Outcome::Success)
}

/// The membership epoch a report is made in (hex); a node without a charter has none,
/// and its reports say `null`.
async fn membership_epoch(node: &Node) -> Option<String> {
    match node.membership().await {
        Ok(m) => m.map(|m| hex::encode(m.current().epoch)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot compute the membership epoch for a report");
            None
        }
    }
}

/// Runs `coalition verify-report`.
pub(super) async fn verify_report(cmd: VerifyReportCmd) -> Result<Outcome> {
    let charter = charter_id(cmd.charter.as_deref())?;
    let r = report::read(&cmd.report)?;
    let check = report::verify(&r, &cmd.bundle, charter)
        .await
        .with_context(|| format!("while checking against {}", cmd.bundle.display()))?;
    if cmd.json {
        out(serde_json::to_string_pretty(&check)?)?;
    } else {
        match &check.signature_error {
            None => out(format!(
                "signature: valid, by {} ({})",
                check.producer, check.producer_name
            ))?,
            Some(e) => out(format!("signature: INVALID: {e}"))?,
        }
        out(format!(
            "audience: {}{}",
            check.audience.describe(),
            if check.audience_stated {
                ""
            } else {
                " (not stated: a format 1 report, made before reports honoured audiences)"
            }
        ))?;
        match (&check.coalition, &check.producer_error) {
            (_, Some(e)) => out(format!("producer: NOT ACCEPTED: {e}"))?,
            (Some(c), None) => out(format!(
                "producer: a member of {c:?} under the report's epoch and still one"
            ))?,
            (None, None) => {}
        }
        for u in &check.unentitled {
            out(format!(
                "counted record by a non-member: {}: {}",
                u.id, u.reason
            ))?;
        }
        out(format!(
            "bundle: {} records verify, {} do not (ignored)",
            check.bundle_records, check.bundle_invalid
        ))?;
        out(format!(
            "totals: report {} findings / {} affected; bundle gives {} / {}",
            check.reported_total.findings,
            check.reported_total.affected,
            check.recomputed_total.findings,
            check.recomputed_total.affected
        ))?;
        for id in &check.missing {
            out(format!("missing from the bundle: {id}"))?;
        }
        for id in &check.not_shareable {
            out(format!(
                "counted but not shared with {} (private, or for other members only): {id}",
                check.audience.describe()
            ))?;
        }
        for id in &check.not_counted {
            out(format!(
                "in the bundle but not counted there (superseded, retracted or not matching): {id}"
            ))?;
        }
        for id in &check.extra {
            out(format!(
                "counted from the bundle but not in the report: {id}"
            ))?;
        }
        for d in &check.rows_differ {
            let m = |x: Option<query::Measures>| {
                x.map(|m| format!("{}/{}", m.findings, m.affected))
                    .unwrap_or_else(|| "absent".into())
            };
            out(format!(
                "group {:?}: report {}, bundle {}",
                d.keys,
                m(d.reported),
                m(d.recomputed)
            ))?;
        }
        for a in &check.history.authors {
            out(format!("history: {a}"))?;
        }
        out(format!(
            "history: the counted records come from {} history{}",
            match (check.history.complete, check.history.witnessed) {
                (true, true) => "a complete, witnessed",
                (true, false) => "a complete but not wholly witnessed",
                (false, true) => "an INCOMPLETE (though witnessed)",
                (false, false) => "an INCOMPLETE, not wholly witnessed",
            },
            if check.history.complete {
                ""
            } else {
                ": the bundle lacks records its authors' checkpoints commit to, or holds evidence against them"
            }
        ))?;
        out(if check.ok() {
            "OK: the bundle reproduces the report exactly, from members' records, for a member"
        } else if check.signature_error.is_some()
            || check.producer_error.is_some()
            || !check.unentitled.is_empty()
        {
            "FAILED: the report is not a member's report of members' records"
        } else {
            "MISMATCH: the bundle does not reproduce the report"
        })?;
    }
    Ok(if check.ok() {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

/// Writes a JSON Lines, CSV or GeoJSON export honouring audiences and `filters`.
/// Returns the number of records or findings written.
pub(super) async fn export(
    node: &Node,
    format: Format,
    output: &Path,
    include_private: bool,
    recipient: Option<OrgKey>,
    filters: &QueryArgs,
    hxl: bool,
) -> Result<usize> {
    let q = filters.to_query()?;
    let records = node.readable(include_private, recipient).await?;
    let matching: HashSet<RecordId> = query::matching_ids(&node.store().reader(), &q)
        .await?
        .into_iter()
        .collect();
    let selected = |r: &Record| matching.contains(&r.id);
    let n = match format {
        Format::Jsonl => {
            // Without filters: every shareable record, as before; with: the matching findings.
            let chosen: Vec<Record> = records
                .into_iter()
                .filter(|r| q.is_empty() || selected(r))
                .collect();
            node::write_atomically(output, |w| crate::export::write_jsonl(w, &chosen))?;
            chosen.len()
        }
        Format::Csv => {
            let n = records.iter().filter(|r| selected(r)).count();
            node::write_atomically(output, |w| {
                crate::export::write_csv_with(w, &records, &selected, hxl)
                    .map_err(std::io::Error::other)
            })?;
            n
        }
        Format::Geojson => {
            let n = records.iter().filter(|r| selected(r)).count();
            let doc = crate::export::geojson(&records, &selected);
            node::write_atomically(output, |w| {
                serde_json::to_writer(&mut *w, &doc)?;
                std::io::Write::write_all(w, b"\n")
            })?;
            n
        }
        Format::Bundle => {
            let bar = super::progress::Progress::new("exporting", super::progress::Unit::Bytes);
            node.export_bundle_observed(output, include_private, recipient, &bar.observer())
                .await?
        }
    };
    Ok(n)
}
