//! URL query strings (`?country=RS,XK&group_by=month&limit=10`) as the HTTP API receives
//! them, parsed into the query model. Unknown keys are refused rather than ignored, so a
//! typo never silently widens a count.

use super::error::{invalid, QueryError};
use super::model::{parse_group_by, Dimension, Query};
use super::page::{page, Page, MAX_LIMIT};
use crate::identity::OrgKey;

/// A query string split into its parts.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Filters.
    pub query: Query,
    /// Grouping.
    pub group_by: Vec<Dimension>,
    /// Paging.
    pub page: Page,
}

impl Request {
    /// Parses `key=value` pairs as found in a URL query string. Repeated keys and
    /// comma-separated codes both list alternatives. Unknown keys are refused.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let mut q = Query::default();
        let mut group_by = Vec::new();
        let mut limit = None;
        let mut cursor = None;
        let mut with_total = false;
        let codes = |v: &str| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        for (k, v) in pairs {
            match k.as_str() {
                "country" => q.country.extend(codes(v)),
                "region" => q.region.push(v.clone()),
                "municipality" => q.municipality.push(v.clone()),
                "category" => q.category.extend(codes(v)),
                "actor_type" => q.actor_type.extend(codes(v)),
                "affected_group" => q.affected_group.extend(codes(v)),
                "confidence" => q.confidence.extend(codes(v)),
                "tag" => q.tag.push(v.clone()),
                "author" => {
                    for c in codes(v) {
                        q.author.push(parse_author(&c)?);
                    }
                }
                "from" => q.from = non_empty(v),
                "to" => q.to = non_empty(v),
                "recorded_from" => q.recorded_from = non_empty(v),
                "recorded_to" => q.recorded_to = non_empty(v),
                "q" => q.q = non_empty(v),
                "group_by" => group_by.push(v.clone()),
                "limit" => {
                    limit = Some(v.trim().parse::<u32>().map_err(|_| {
                        invalid(format!("limit must be a number from 1 to {MAX_LIMIT}"))
                    })?)
                }
                "cursor" => cursor = non_empty(v),
                "total" => {
                    with_total = match v.trim() {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => return Err(invalid("total must be true or false")),
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unknown query parameter {other:?} (see the OpenAPI description at /api/v1/openapi.yaml)"
                    )))
                }
            }
        }
        let query = q.normalised()?;
        Ok(Self {
            query,
            group_by: parse_group_by(&group_by)?,
            page: Page {
                with_total,
                ..page(limit, cursor)?
            },
        })
    }
}

fn non_empty(v: &str) -> Option<String> {
    let t = v.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Parses an author filter value: an organisation key as 64 hex characters.
pub fn parse_author(s: &str) -> Result<OrgKey, QueryError> {
    s.parse().map_err(|_| {
        invalid(format!(
            "author {s:?} is not an organisation key (64 hex characters)"
        ))
    })
}
