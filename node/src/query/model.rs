//! The query model: filters ([`Query`]), grouping ([`Dimension`]) and the measures an
//! aggregate returns. A [`Query`] is checked once ([`Query::normalised`]: codes against
//! the vocabularies, dates, sizes) so the SQL built from it never meets an unchecked
//! value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{invalid, QueryError};
use crate::identity::OrgKey;
use crate::schema::schemas;

/// Most grouping dimensions in one aggregate.
pub const MAX_GROUP_BY: usize = 4;
/// Most values one filter may list.
pub const MAX_VALUES: usize = 100;
/// Longest full-text search, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;
/// Most terms of a full-text search.
const MAX_SEARCH_TERMS: usize = 16;

/// Filters on findings. Empty lists and `None` do not filter; values within one list are
/// alternatives (OR); different filters must all hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Country codes (ISO 3166-1 alpha-2, Kosovo XK).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub country: Vec<String>,
    /// Regions, as written in the findings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region: Vec<String>,
    /// Municipalities, as written in the findings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub municipality: Vec<String>,
    /// Category codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<String>,
    /// Security actor type codes (a finding matches if any of its actors does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor_type: Vec<String>,
    /// Affected group codes (a finding matches if any of its groups does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected_group: Vec<String>,
    /// Author organisation keys (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub author: Vec<OrgKey>,
    /// Confidence codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confidence: Vec<String>,
    /// Tags (exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<String>,
    /// Incident start date on or after (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Incident start date on or before (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Recorded (author's creation time) on or after this UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_from: Option<String>,
    /// Recorded on or before this UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_to: Option<String>,
    /// Full-text search over title and summary, any language and script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
}

/// What findings can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Country code.
    Country,
    /// Region as written.
    Region,
    /// Municipality as written.
    Municipality,
    /// Category code.
    Category,
    /// Security actor type (a finding with two actor types counts in both groups).
    ActorType,
    /// Affected group (a finding counts in each of its groups).
    AffectedGroup,
    /// Author organisation key.
    Author,
    /// Confidence code.
    Confidence,
    /// Week of the incident start date, named by its Monday.
    Week,
    /// `YYYY-MM` of the incident start date.
    Month,
    /// `YYYY-Qn` of the incident start date.
    Quarter,
    /// `YYYY` of the incident start date.
    Year,
}

impl Dimension {
    /// Every dimension, in documentation order.
    pub const ALL: [Dimension; 12] = [
        Self::Country,
        Self::Region,
        Self::Municipality,
        Self::Category,
        Self::ActorType,
        Self::AffectedGroup,
        Self::Author,
        Self::Confidence,
        Self::Week,
        Self::Month,
        Self::Quarter,
        Self::Year,
    ];

    /// The name used on the command line, in URLs and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Country => "country",
            Self::Region => "region",
            Self::Municipality => "municipality",
            Self::Category => "category",
            Self::ActorType => "actor_type",
            Self::AffectedGroup => "affected_group",
            Self::Author => "author",
            Self::Confidence => "confidence",
            Self::Week => "week",
            Self::Month => "month",
            Self::Quarter => "quarter",
            Self::Year => "year",
        }
    }

    /// Parses a name (`actor-type` and `actor_type` both work).
    pub fn parse(s: &str) -> Result<Self, QueryError> {
        let s = s.trim().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                invalid(format!(
                    "cannot group by {s:?}; choose from {}",
                    Self::ALL.map(Self::name).join(", ")
                ))
            })
    }
}

/// Parses a comma-separated list of dimensions.
pub fn parse_group_by(list: &[String]) -> Result<Vec<Dimension>, QueryError> {
    let mut dims = Vec::new();
    for part in list.iter().flat_map(|s| s.split(',')) {
        if part.trim().is_empty() {
            continue;
        }
        let d = Dimension::parse(part)?;
        if !dims.contains(&d) {
            dims.push(d);
        }
    }
    if dims.len() > MAX_GROUP_BY {
        return Err(invalid(format!(
            "group by at most {MAX_GROUP_BY} dimensions at once"
        )));
    }
    Ok(dims)
}

impl Query {
    /// True when nothing is filtered.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks codes against the vocabularies, dates and sizes; upper-cases country codes.
    pub fn normalised(mut self) -> Result<Self, QueryError> {
        for c in &mut self.country {
            *c = c.trim().to_ascii_uppercase();
        }
        let vocab_checks: [(&str, &str, &Vec<String>); 5] = [
            ("country", "country", &self.country),
            ("category", "category", &self.category),
            ("actor_type", "actor_type", &self.actor_type),
            ("affected_group", "affected_group", &self.affected_group),
            ("confidence", "confidence", &self.confidence),
        ];
        for (param, vocab, values) in vocab_checks {
            let known = schemas().vocabulary(vocab);
            if let Some(bad) = values.iter().find(|v| !known.contains(v)) {
                let hint = if known.len() > 20 {
                    String::new()
                } else {
                    format!("; known codes: {}", known.join(", "))
                };
                return Err(invalid(format!("unknown {param} code {bad:?}{hint}")));
            }
        }
        let lists = [
            self.country.len(),
            self.region.len(),
            self.municipality.len(),
            self.category.len(),
            self.actor_type.len(),
            self.affected_group.len(),
            self.author.len(),
            self.confidence.len(),
            self.tag.len(),
        ];
        if lists.iter().any(|&n| n > MAX_VALUES) {
            return Err(invalid(format!(
                "a filter may list at most {MAX_VALUES} values"
            )));
        }
        for (name, d) in [
            ("from", &self.from),
            ("to", &self.to),
            ("recorded_from", &self.recorded_from),
            ("recorded_to", &self.recorded_to),
        ] {
            if let Some(d) = d {
                days_from_date(d).ok_or_else(|| {
                    invalid(format!("{name} must be a date as YYYY-MM-DD, not {d:?}"))
                })?;
            }
        }
        if let Some(q) = &self.q {
            if q.chars().count() > MAX_SEARCH_CHARS {
                return Err(invalid(format!(
                    "search text is limited to {MAX_SEARCH_CHARS} characters"
                )));
            }
            if fts_expression(q).is_none() {
                self.q = None;
            }
        }
        Ok(self)
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, if it is a real date.
pub(super) fn days_from_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: i64 = s[5..7].parse().ok()?;
    let d: i64 = s[8..10].parse().ok()?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// An FTS5 expression matching every word of `text` as a prefix, or `None` if `text`
/// has no words. Each word is quoted, so FTS5 operators in user input are just text.
pub(super) fn fts_expression(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == '"')
        .filter(|t| t.chars().any(char::is_alphanumeric))
        .take(MAX_SEARCH_TERMS)
        .map(|t| format!("\"{t}\"*"))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// Number of findings and of people affected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measures {
    /// Findings counted.
    pub findings: i64,
    /// Sum of `affected.count` over them (findings without a count add 0).
    pub affected: i64,
}

/// One group of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateRow {
    /// Values of the grouping dimensions, in `group_by` order (`null`: not given).
    pub keys: Vec<Option<String>>,
    /// Measures of the group.
    #[serde(flatten)]
    pub measures: Measures,
}

/// Grouped counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The dimensions, in order.
    pub group_by: Vec<Dimension>,
    /// Groups, ordered by their keys.
    pub rows: Vec<AggregateRow>,
    /// Distinct findings matching the filters, whatever the grouping.
    pub total: Measures,
}

/// Labels of an aggregate's keys in `lang`, for tables a person reads.
pub fn key_label(dim: Dimension, key: Option<&str>, lang: &str) -> String {
    let Some(key) = key else {
        return "—".into();
    };
    let vocab = match dim {
        Dimension::Country => "country",
        Dimension::Category => "category",
        Dimension::ActorType => "actor_type",
        Dimension::AffectedGroup => "affected_group",
        Dimension::Confidence => "confidence",
        _ => return key.to_string(),
    };
    schemas().label(vocab, key, lang)
}

/// Aggregate rows keyed by their key tuple, for comparisons.
pub fn rows_by_key(a: &Aggregate) -> BTreeMap<Vec<Option<String>>, Measures> {
    a.rows
        .iter()
        .map(|r| (r.keys.clone(), r.measures))
        .collect()
}
