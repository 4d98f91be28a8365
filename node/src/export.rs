//! Exports for people, spreadsheets and maps: JSON Lines (one record per line), CSV close
//! to ACLED's event files (one row per current finding, optionally with an HXL hashtag
//! row) and GeoJSON. All honour the same audience rules as bundles; coordinates are
//! coarsened to the precision the finding states.

use std::io::Write;

use serde_json::{json, Value};

use crate::finding::{FindingIndex, FINDING_SCHEMA};
use crate::record::Record;
use crate::sealed::SEALED_SCHEMA;

/// One JSON object per record: its id, envelope fields and parsed payload, and whether it
/// is sealed (`sealed`: its schema and payload are what this node opened, or `sealed/v1`
/// and no payload where it could not).
pub fn record_json(r: &Record) -> Value {
    let sealed = crate::record::schema_of(&r.bytes).as_deref() == Some(SEALED_SCHEMA);
    json!({
        "sealed": sealed,
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

/// CSV header: ACLED's event columns, then Coalition's own, each with its HXL hashtag.
pub const CSV_COLUMNS: &[(&str, &str)] = &[
    ("event_id_cnty", "#event+code"),
    ("event_date", "#date+occurred"),
    ("year", "#date+year"),
    ("time_precision", "#date+precision"),
    ("event_type", "#event+type"),
    ("sub_event_type", "#event+type+sub"),
    ("actor1", "#group+name+first"),
    ("actor2", "#group+name+second"),
    ("iso", "#country+code"),
    ("country", "#country+name"),
    ("admin1", "#adm1+name"),
    ("admin2", "#adm2+name"),
    ("location", "#loc+name"),
    ("latitude", "#geo+lat"),
    ("longitude", "#geo+lon"),
    ("geo_precision", "#geo+precision"),
    ("source", "#meta+source"),
    ("notes", "#description"),
    ("affected", "#affected+num"),
    ("tags", "#meta+tags"),
    ("title", "#event+title"),
    ("event_date_end", "#date+end"),
    ("affected_groups", "#affected+type"),
    ("confidence", "#meta+confidence"),
    ("record_id", "#meta+id"),
    ("author", "#org+code"),
];

/// ACLED's time precision: 1 a day, 2 a range of days, 3 a month or a year.
fn time_precision(code: &str) -> &'static str {
    match code {
        "day" => "1",
        "range" => "2",
        _ => "3",
    }
}

/// Coordinates as precise as the finding says they are: exact and approximate ones as
/// given, municipality-level to 2 decimals (about 1 km), region-level to 1 decimal,
/// country-level to whole degrees.
pub fn coarsen(lat: f64, lon: f64, precision: &str) -> (f64, f64) {
    let round = |x: f64, places: i32| {
        let f = 10f64.powi(places);
        (x * f).round() / f
    };
    match precision {
        "municipality" => (round(lat, 2), round(lon, 2)),
        "region" => (round(lat, 1), round(lon, 1)),
        "country" => (round(lat, 0), round(lon, 0)),
        _ => (lat, lon),
    }
}

/// What one finding looks like in analyst exports.
struct Row {
    f: FindingIndex,
    v: Value,
}

impl Row {
    fn of(r: &Record) -> Option<Self> {
        let v = serde_json::from_slice::<Value>(&r.payload).ok()?;
        Some(Self {
            f: FindingIndex::extract(&v),
            v,
        })
    }

    fn geo_precision(&self) -> String {
        self.v["location"]["coordinates"]["precision"]
            .as_str()
            .unwrap_or("approximate")
            .to_string()
    }

    fn coordinates(&self) -> Option<(f64, f64)> {
        Some(coarsen(self.f.lat?, self.f.lon?, &self.geo_precision()))
    }

    fn actor(a: &Value) -> String {
        let t = a["type"].as_str().unwrap_or_default();
        match a["unit"].as_str() {
            Some(u) => format!("{t} ({u})"),
            None => t.to_string(),
        }
    }

    fn actors(&self) -> (String, String) {
        let all: Vec<String> = self.v["actors"]
            .as_array()
            .map(|a| a.iter().map(Self::actor).collect())
            .unwrap_or_default();
        (
            all.first().cloned().unwrap_or_default(),
            all.iter().skip(1).cloned().collect::<Vec<_>>().join("; "),
        )
    }

    fn sources(&self) -> String {
        self.v["sources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let t = s["type"].as_str().unwrap_or_default();
                        match s["url"].as_str() {
                            Some(u) => format!("{t} <{u}>"),
                            None => t.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    fn location(&self) -> String {
        let loc = &self.v["location"];
        loc["place"]
            .as_str()
            .or(loc["municipality"].as_str())
            .or(loc["region"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// A CSV cell that a spreadsheet will show as text, never evaluate: a cell starting with
/// `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel and LibreOffice
/// (CSV/formula injection, OWASP), so it gets a leading `'`. Numbers (a negative
/// longitude) are left as they are.
pub fn safe_cell(cell: String) -> String {
    let risky = cell
        .chars()
        .next()
        .is_some_and(|c| matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r'));
    if risky && cell.trim().parse::<f64>().is_err() {
        format!("'{cell}")
    } else {
        cell
    }
}

/// Writes the findings among `records` for which `current` holds as ACLED-like CSV.
pub fn write_csv<W: Write>(
    w: W,
    records: &[Record],
    current: &dyn Fn(&Record) -> bool,
) -> Result<(), csv::Error> {
    write_csv_with(w, records, current, false)
}

/// As [`write_csv`], with the HXL hashtag row under the header when `hxl` is set.
pub fn write_csv_with<W: Write>(
    w: W,
    records: &[Record],
    current: &dyn Fn(&Record) -> bool,
    hxl: bool,
) -> Result<(), csv::Error> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record(CSV_COLUMNS.iter().map(|(name, _)| name))?;
    if hxl {
        out.write_record(CSV_COLUMNS.iter().map(|(_, tag)| tag))?;
    }
    let schemas = crate::schema::schemas();
    for r in records
        .iter()
        .filter(|r| r.schema == FINDING_SCHEMA && current(r))
    {
        let Some(row) = Row::of(r) else {
            continue;
        };
        let f = &row.f;
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        let (lat, lon) = row
            .coordinates()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap_or_default();
        let (actor1, actor2) = row.actors();
        let cells = [
            format!("{}{}", f.country, &r.id.to_hex()[..12]),
            f.occurred_start.clone(),
            f.occurred_start.get(..4).unwrap_or_default().to_string(),
            time_precision(&f.date_precision).to_string(),
            f.category.clone(),
            String::new(),
            actor1,
            actor2,
            f.country.clone(),
            schemas.label("country", &f.country, "en"),
            opt(&f.region),
            opt(&f.municipality),
            row.location(),
            lat,
            lon,
            if f.lat.is_some() {
                row.geo_precision()
            } else {
                String::new()
            },
            row.sources(),
            f.summary.clone(),
            f.affected_count.map(|c| c.to_string()).unwrap_or_default(),
            f.tags.join(";"),
            f.title.clone(),
            opt(&f.occurred_end),
            f.groups.join(";"),
            f.confidence.clone(),
            r.id.to_hex(),
            r.author.to_hex(),
        ];
        out.write_record(cells.map(safe_cell))?;
    }
    out.flush()?;
    Ok(())
}

/// The findings among `records` for which `current` holds, as an RFC 7946
/// FeatureCollection: findings with coordinates as points (`[lon, lat]`, coarsened to
/// their stated precision), the rest as features without geometry.
pub fn geojson(records: &[Record], current: &dyn Fn(&Record) -> bool) -> Value {
    let features: Vec<Value> = records
        .iter()
        .filter(|r| r.schema == FINDING_SCHEMA && current(r))
        .filter_map(|r| {
            let row = Row::of(r)?;
            let f = &row.f;
            let geometry = row
                .coordinates()
                .map(|(lat, lon)| json!({"type": "Point", "coordinates": [lon, lat]}))
                .unwrap_or(Value::Null);
            Some(json!({
                "type": "Feature",
                "id": r.id,
                "geometry": geometry,
                "properties": {
                    "record_id": r.id,
                    "author": r.author,
                    "title": f.title,
                    "event_date": f.occurred_start,
                    "event_date_end": f.occurred_end,
                    "time_precision": f.date_precision,
                    "country": f.country,
                    "admin1": f.region,
                    "admin2": f.municipality,
                    "location": row.location(),
                    "geo_precision": f.lat.map(|_| row.geo_precision()),
                    "category": f.category,
                    "actor_types": f.actor_types,
                    "affected": f.affected_count,
                    "affected_groups": f.groups,
                    "confidence": f.confidence,
                    "tags": f.tags,
                    "notes": f.summary,
                },
            }))
        })
        .collect();
    json!({"type": "FeatureCollection", "features": features})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_numbers_are_not() {
        assert_eq!(
            safe_cell("=HYPERLINK(\"http://x\")".into()),
            "'=HYPERLINK(\"http://x\")"
        );
        assert_eq!(
            safe_cell("+1+cmd|' /C calc'!A0".into()),
            "'+1+cmd|' /C calc'!A0"
        );
        assert_eq!(safe_cell("@SUM(A1)".into()), "'@SUM(A1)");
        assert_eq!(safe_cell("-2+3".into()), "'-2+3");
        assert_eq!(safe_cell("\t=1".into()), "'\t=1");
        assert_eq!(safe_cell("-21.4".into()), "-21.4");
        assert_eq!(safe_cell("Police stop".into()), "Police stop");
        assert_eq!(safe_cell(String::new()), "");
    }

    #[test]
    fn coordinates_are_coarsened_to_their_precision() {
        assert_eq!(coarsen(45.2517, 19.8369, "exact"), (45.2517, 19.8369));
        assert_eq!(coarsen(45.2517, 19.8369, "municipality"), (45.25, 19.84));
        assert_eq!(coarsen(45.2517, 19.8369, "region"), (45.3, 19.8));
        assert_eq!(coarsen(45.2517, 19.8369, "country"), (45.0, 20.0));
    }
}
