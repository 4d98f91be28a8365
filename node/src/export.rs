//! Exports for people and spreadsheets: JSON Lines (one record per line) and CSV (one row
//! per current finding). Both honour the same audience rules as bundles.

use std::io::Write;

use serde_json::{json, Value};

use crate::finding::{FindingIndex, FINDING_SCHEMA};
use crate::record::Record;

/// One JSON object per record: its id, envelope fields and parsed payload.
pub fn record_json(r: &Record) -> Value {
    json!({
        "id": r.id,
        "author": r.author,
        "seq": r.seq,
        "prev": r.prev,
        "created_at_ms": r.created_at_ms,
        "schema": r.schema,
        "audience": r.audience.to_json(),
        "supersedes": r.supersedes,
        "epoch": r.epoch.map(hex::encode),
        "payload": serde_json::from_slice::<Value>(&r.payload).unwrap_or(Value::Null),
    })
}

/// Writes `records` as JSON Lines.
pub fn write_jsonl<W: Write>(w: &mut W, records: &[Record]) -> std::io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *w, &record_json(r))?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// CSV header row.
pub const CSV_COLUMNS: &[&str] = &[
    "record_id",
    "author",
    "event_date",
    "event_date_end",
    "time_precision",
    "category",
    "country",
    "admin1",
    "admin2",
    "latitude",
    "longitude",
    "actors",
    "affected",
    "affected_groups",
    "confidence",
    "title",
    "notes",
    "tags",
];

/// Writes the current (latest, non-retracted) findings among `records` as CSV.
/// `current` decides which finding ids are current.
pub fn write_csv<W: Write>(
    w: W,
    records: &[Record],
    current: &dyn Fn(&Record) -> bool,
) -> Result<(), csv::Error> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record(CSV_COLUMNS)?;
    for r in records
        .iter()
        .filter(|r| r.schema == FINDING_SCHEMA && current(r))
    {
        let Ok(v) = serde_json::from_slice::<Value>(&r.payload) else {
            continue;
        };
        let f = FindingIndex::extract(&v);
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        let num = |o: Option<f64>| o.map(|x| x.to_string()).unwrap_or_default();
        out.write_record([
            r.id.to_hex(),
            r.author.to_hex(),
            f.occurred_start.clone(),
            opt(&f.occurred_end),
            f.date_precision.clone(),
            f.category.clone(),
            f.country.clone(),
            opt(&f.region),
            opt(&f.municipality),
            num(f.lat),
            num(f.lon),
            f.actor_types.join(";"),
            f.affected_count.map(|c| c.to_string()).unwrap_or_default(),
            f.groups.join(";"),
            f.confidence.clone(),
            f.title.clone(),
            f.summary.clone(),
            f.tags.join(";"),
        ])?;
    }
    out.flush()?;
    Ok(())
}
