//! Findings: the operator's input document, its sensitive annex, and the query columns
//! extracted from a finding payload at ingest ([`FindingIndex`], the one declaration of a
//! finding's columns: the store indexes them, listings serialise them, exports read them).
//!
//! An input file may carry a `sensitive` object (names of victims and witnesses,
//! contacts). It never becomes part of the finding: `finding add` signs it as a separate
//! private `annex/v1` record that points at the finding, so the finding can be shared and
//! still verify while the annex stays on the node.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::record::RecordId;
use crate::schema::{parse_json, schemas, SchemaError};

/// Schema id of findings.
pub const FINDING_SCHEMA: &str = "finding/v1";
/// Schema id of sensitive annexes.
pub const ANNEX_SCHEMA: &str = "annex/v1";
/// Schema id of retractions.
pub const RETRACTION_SCHEMA: &str = "retraction/v1";
/// Schema id of audience grants.
pub const GRANT_SCHEMA: &str = "grant/v1";

/// A validated input document, split into what may be shared and what may not.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingInput {
    /// The finding payload (valid against `finding/v1`).
    pub finding: Value,
    /// The sensitive details, if any (valid against `annex/v1#/$defs/sensitive`).
    pub sensitive: Option<Value>,
}

impl FindingInput {
    /// Parses and validates an input document; `source_name` names it in errors.
    pub fn parse(bytes: &[u8], source_name: &str) -> Result<Self, SchemaError> {
        let mut value = parse_json(bytes, source_name)?;
        let sensitive = value.as_object_mut().and_then(|o| o.remove("sensitive"));
        schemas().validate(FINDING_SCHEMA, &value, source_name)?;
        if let Some(s) = &sensitive {
            // Validated in the shape it will be stored in, with a placeholder link. The
            // annex keeps it under the same `sensitive` key, so violation paths point
            // into the input document as they are.
            let probe = annex_payload(&RecordId([0; 32]), s);
            schemas().validate(ANNEX_SCHEMA, &probe, source_name)?;
        }
        Ok(Self {
            finding: value,
            sensitive,
        })
    }
}

/// The payload of the annex record for `finding`.
pub fn annex_payload(finding: &RecordId, sensitive: &Value) -> Value {
    json!({"finding": finding.to_hex(), "sensitive": sensitive})
}

/// Query columns of a finding, extracted once at ingest: the one declaration of a
/// finding's columns. The store writes them to `findings` and its side tables, query
/// listings serialise them (as [`FindingIndex::COLUMNS`] names them), and analyst exports
/// map them to their own headers.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct FindingIndex {
    /// Title.
    pub title: String,
    /// Summary. Not serialised: listings stay short, and the signed payload has it.
    #[serde(skip_serializing)]
    pub summary: String,
    /// BCP 47 language.
    pub language: String,
    /// ISO 3166-1 alpha-2 (Kosovo `XK`).
    pub country: String,
    /// First-level region.
    pub region: Option<String>,
    /// Municipality.
    pub municipality: Option<String>,
    /// Category code.
    pub category: String,
    /// Confidence code.
    pub confidence: String,
    /// Start date (`YYYY-MM-DD`).
    pub occurred_start: String,
    /// End date, for ranges.
    pub occurred_end: Option<String>,
    /// Date precision code.
    pub date_precision: String,
    /// Number of people affected.
    pub affected_count: Option<i64>,
    /// Latitude (WGS84).
    pub lat: Option<f64>,
    /// Longitude (WGS84).
    pub lon: Option<f64>,
    /// Security actor types.
    pub actor_types: Vec<String>,
    /// Affected groups (named `affected_groups` as a column).
    #[serde(rename = "affected_groups")]
    pub groups: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(s).collect())
        .unwrap_or_default()
}

impl FindingIndex {
    /// The columns' names, in declaration order: the names of the `findings` table's
    /// columns for single values, and of the lists (`actor_types`, `affected_groups`,
    /// `tags`) that the store keeps in side tables. Listings select these and serialise
    /// them under the same names (all but `summary`).
    pub const COLUMNS: [&'static str; 17] = [
        "title",
        "summary",
        "language",
        "country",
        "region",
        "municipality",
        "category",
        "confidence",
        "occurred_start",
        "occurred_end",
        "date_precision",
        "affected_count",
        "lat",
        "lon",
        "actor_types",
        "affected_groups",
        "tags",
    ];

    /// Extracts the columns from a payload already valid against `finding/v1`.
    pub fn extract(v: &Value) -> Self {
        let loc = &v["location"];
        let mut actor_types: Vec<String> = v["actors"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| s(&x["type"])).collect())
            .unwrap_or_default();
        actor_types.sort();
        actor_types.dedup();
        Self {
            title: s(&v["title"]).unwrap_or_default(),
            summary: s(&v["summary"]).unwrap_or_default(),
            language: s(&v["language"]).unwrap_or_default(),
            country: s(&loc["country"]).unwrap_or_default(),
            region: s(&loc["region"]),
            municipality: s(&loc["municipality"]),
            category: s(&v["category"]).unwrap_or_default(),
            confidence: s(&v["confidence"]).unwrap_or_default(),
            occurred_start: s(&v["occurred"]["start"]).unwrap_or_default(),
            occurred_end: s(&v["occurred"]["end"]),
            date_precision: s(&v["occurred"]["precision"]).unwrap_or_default(),
            affected_count: v["affected"]["count"].as_i64(),
            lat: loc["coordinates"]["lat"].as_f64(),
            lon: loc["coordinates"]["lon"].as_f64(),
            actor_types,
            groups: strings(&v["affected"]["groups"]),
            tags: strings(&v["tags"]),
        }
    }
}

/// The record a payload points at: the finding of an annex, the record of a grant.
pub fn subject_of(schema: &str, payload: &Value) -> Option<RecordId> {
    let field = match schema {
        ANNEX_SCHEMA => "finding",
        GRANT_SCHEMA => "record",
        _ => return None,
    };
    payload[field].as_str().and_then(|h| h.parse().ok())
}

/// Serialises a JSON value as the compact UTF-8 bytes that get signed.
pub fn to_payload(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON values serialise")
}

/// A `retraction/v1` payload.
pub fn retraction_payload(reason: &str) -> Value {
    let mut m = Map::new();
    m.insert("reason".into(), Value::String(reason.to_string()));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = r#"{
      "title": "Police disperse protest",
      "summary": "Police used batons against seated protesters near the town hall.",
      "language": "en",
      "occurred": {"start": "2025-03-14", "precision": "day"},
      "location": {"country": "RS", "region": "Vojvodina", "municipality": "Novi Sad",
                   "coordinates": {"lat": 45.25, "lon": 19.84, "precision": "approximate"}},
      "category": "excessive_force",
      "actors": [{"type": "police", "unit": "Intervention Unit"}, {"type": "police"}],
      "affected": {"count": 12, "groups": ["youth"]},
      "sources": [{"type": "witness"}],
      "confidence": "medium",
      "tags": ["protest"],
      "sensitive": {"victims": [{"name": "A. Fictional", "contact": "+381 00 000"}]}
    }"#;

    #[test]
    fn sensitive_details_are_split_off() {
        let input = FindingInput::parse(INPUT.as_bytes(), "in.json").unwrap();
        assert!(input.finding.get("sensitive").is_none());
        assert!(!to_payload(&input.finding)
            .windows(11)
            .any(|w| w == b"A. Fictiona"));
        assert_eq!(
            input.sensitive.unwrap()["victims"][0]["name"],
            "A. Fictional"
        );
    }

    #[test]
    fn index_columns_are_extracted() {
        let input = FindingInput::parse(INPUT.as_bytes(), "in.json").unwrap();
        let ix = FindingIndex::extract(&input.finding);
        assert_eq!(ix.country, "RS");
        assert_eq!(ix.municipality.as_deref(), Some("Novi Sad"));
        assert_eq!(ix.actor_types, vec!["police"]);
        assert_eq!(ix.affected_count, Some(12));
        assert_eq!(ix.lat, Some(45.25));
    }

    #[test]
    fn column_names_are_the_serialised_fields() {
        let json = serde_json::to_string(&FindingIndex::default()).unwrap();
        let mut at = 0;
        for c in FindingIndex::COLUMNS.iter().filter(|c| **c != "summary") {
            let key = format!("\"{c}\":");
            let pos = json[at..]
                .find(&key)
                .unwrap_or_else(|| panic!("{c} in {json}"));
            at += pos + key.len();
        }
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v.as_object().unwrap().len(),
            FindingIndex::COLUMNS.len() - 1
        );
    }

    #[test]
    fn invalid_sensitive_block_is_reported_at_its_path() {
        let bad = INPUT.replace(r#""contact": "+381 00 000""#, r#""shoe_size": 44"#);
        let err = FindingInput::parse(bad.as_bytes(), "in.json").unwrap_err();
        assert!(err.to_string().contains("/sensitive/victims/0"), "{err}");
    }
}
