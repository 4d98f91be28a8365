use super::model::{days_from_date, fts_expression};
use super::sql::{aggregate_from, rollup_answers, totals_from, Source};
use super::*;
use crate::check::prepare;
use crate::finding::{to_payload, FindingIndex, FINDING_SCHEMA, RETRACTION_SCHEMA};
use crate::identity::Identity;
use crate::record::{sign, Audience, Draft, Record, RecordId};
use crate::store::{Store, StoreKey};
use proptest::prelude::*;

const COUNTRIES: [&str; 3] = ["RS", "XK", "GE"];
const CATEGORIES: [&str; 3] = ["excessive_force", "corruption", "other"];

/// A finding payload from a few small choices, so groups collide.
fn payload(country: usize, category: usize, month: usize, affected: Option<u8>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "title": format!("Finding {country}-{category}-{month}"),
        "summary": "A summary long enough to pass the schema.",
        "language": "en",
        "occurred": {"start": format!("2024-{:02}-15", month + 1), "precision": "day"},
        "location": {"country": COUNTRIES[country]},
        "category": CATEGORIES[category],
        "actors": [{"type": "police"}],
        "sources": [{"type": "own_observation"}],
        "confidence": "high"
    });
    if let Some(n) = affected {
        v["affected"] = serde_json::json!({"count": n});
    }
    to_payload(&v)
}

/// Signs a chain of findings, corrections (which may move a finding to another
/// group) and retractions from `ops`, for two authors.
fn chains(ops: &[(u8, usize, usize, usize, Option<u8>)]) -> Vec<Record> {
    let authors = [
        Identity::from_seed(&[21; 32]),
        Identity::from_seed(&[22; 32]),
    ];
    let mut out = Vec::new();
    let mut state: Vec<(u64, Option<RecordId>, Vec<RecordId>)> =
        vec![(0, None, Vec::new()); authors.len()];
    for (i, &(op, country, category, month, affected)) in ops.iter().enumerate() {
        let a = i % authors.len();
        let (seq, prev, heads) = &mut state[a];
        let target = (!heads.is_empty()).then(|| heads[i % heads.len()]);
        let (schema, body, supersedes) = match (op % 4, target) {
            (2, Some(t)) => (
                FINDING_SCHEMA,
                payload(country, category, month, affected),
                Some(t),
            ),
            (3, Some(t)) => (
                RETRACTION_SCHEMA,
                to_payload(&serde_json::json!({"reason": "test"})),
                Some(t),
            ),
            _ => (
                FINDING_SCHEMA,
                payload(country, category, month, affected),
                None,
            ),
        };
        *seq += 1;
        let r = sign(
            &authors[a],
            *seq,
            *prev,
            Draft {
                schema: schema.into(),
                audience: Audience::Coalition,
                supersedes,
                epoch: None,
                payload: body,
                created_at_ms: 1,
            },
        );
        *prev = Some(r.id);
        if let Some(t) = supersedes {
            heads.retain(|h| *h != t);
        }
        if schema == FINDING_SCHEMA {
            heads.push(r.id);
        }
        out.push(r);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The rollup the store maintains gives exactly what counting the finding rows
    /// gives, whatever order versions arrive in and however they are batched.
    #[test]
    fn rollup_matches_counting_the_rows(
        ops in prop::collection::vec(
            (any::<u8>(), 0usize..3, 0usize..3, 0usize..4, prop::option::of(0u8..50)),
            1..40,
        ),
        order_seed in any::<u64>(),
        batch in 1usize..8,
    ) {
        let mut records = chains(&ops);
        // Shuffle arrival order deterministically, and deliver one record twice.
        let mut seed = order_seed | 1;
        for i in (1..records.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            records.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        records.push(records[0].clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::create(&dir.path().join("s.db"), &StoreKey::random()).await.unwrap();
            for chunk in records.chunks(batch) {
                let prepared: Vec<_> =
                    chunk.iter().map(|r| prepare(&r.bytes).unwrap()).collect();
                store.insert(&prepared).await.unwrap();
            }
            let reader = store.reader();
            let groupings: [&[Dimension]; 5] = [
                &[],
                &[Dimension::Country, Dimension::Category, Dimension::Month],
                &[Dimension::Category],
                &[Dimension::Year, Dimension::Country],
                &[Dimension::Quarter],
            ];
            let filters = [
                Query::default(),
                Query { country: vec!["RS".into(), "GE".into()], ..Query::default() },
                Query { category: vec!["corruption".into()], ..Query::default() },
            ];
            for q in &filters {
                for g in groupings {
                    assert!(rollup_answers(q, g));
                    let fast = aggregate_from(&reader, q, g, Source::Rollup, None).await.unwrap();
                    let slow = aggregate_from(&reader, q, g, Source::Findings, None).await.unwrap();
                    assert_eq!(&fast, &slow, "query {q:?} grouped by {g:?}");
                    assert_eq!(
                        totals_from(&reader, q, Source::Rollup, None).await.unwrap(),
                        totals_from(&reader, q, Source::Findings, None).await.unwrap()
                    );
                }
            }
        });
    }
}

#[test]
fn rollup_is_used_only_for_what_it_holds() {
    let by = [Dimension::Country, Dimension::Month];
    assert!(rollup_answers(&Query::default(), &by));
    assert!(!rollup_answers(&Query::default(), &[Dimension::Region]));
    assert!(!rollup_answers(&Query::default(), &[Dimension::Week]));
    let searched = Query {
        q: Some("police".into()),
        ..Query::default()
    };
    assert!(!rollup_answers(&searched, &by));
    let dated = Query {
        from: Some("2024-01-01".into()),
        ..Query::default()
    };
    assert!(!rollup_answers(&dated, &by));
}

#[test]
fn dates_are_checked_and_converted() {
    assert_eq!(days_from_date("1970-01-01"), Some(0));
    assert_eq!(days_from_date("2000-03-01"), Some(11_017));
    assert_eq!(days_from_date("2024-02-29"), Some(19_782));
    assert_eq!(days_from_date("2023-02-29"), None);
    assert_eq!(days_from_date("2023-13-01"), None);
    assert_eq!(days_from_date("23-1-1"), None);
}

#[test]
fn search_text_cannot_inject_fts_syntax() {
    assert_eq!(
        fts_expression("police NEAR(\"x\" OR y) *").as_deref(),
        Some("\"police\"* \"NEAR(\"* \"x\"* \"OR\"* \"y)\"*")
    );
    assert_eq!(fts_expression("  * - "), None);
    assert_eq!(
        fts_expression("წყლის ჭავლი").as_deref(),
        Some("\"წყლის\"* \"ჭავლი\"*")
    );
}

#[test]
fn query_strings_parse_and_unknown_codes_are_refused() {
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let r = Request::from_pairs(&pairs(&[
        ("country", "rs,XK"),
        ("country", "GE"),
        ("group_by", "country,month"),
        ("limit", "10"),
    ]))
    .unwrap();
    assert_eq!(r.query.country, ["RS", "XK", "GE"]);
    assert_eq!(r.group_by, [Dimension::Country, Dimension::Month]);
    assert_eq!(r.page.limit, 10);
    let err = Request::from_pairs(&pairs(&[("category", "bogus")])).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
    assert!(Request::from_pairs(&pairs(&[("limit", "501")])).is_err());
    assert!(Request::from_pairs(&pairs(&[("colour", "red")])).is_err());
    assert!(Request::from_pairs(&pairs(&[("from", "2025-02-30")])).is_err());
    assert!(Request::from_pairs(&pairs(&[("group_by", "weather")])).is_err());
}

#[test]
fn queries_round_trip_through_json() {
    let q = Query {
        country: vec!["RS".into()],
        q: Some("batons".into()),
        ..Default::default()
    };
    let text = serde_json::to_string(&q).unwrap();
    assert_eq!(text, r#"{"country":["RS"],"q":"batons"}"#);
    assert_eq!(serde_json::from_str::<Query>(&text).unwrap(), q);
}

#[test]
fn finding_summaries_serialise_the_fields_the_api_documents() {
    let s = FindingSummary {
        id: RecordId([7; 32]),
        author: Identity::from_seed(&[21; 32]).key(),
        columns: FindingIndex {
            summary: "not listed".into(),
            ..FindingIndex::default()
        },
        created_at_ms: 1,
        audience: 1,
    };
    let text = serde_json::to_string(&s).unwrap();
    let documented = documented_properties("FindingSummary");
    assert!(documented.len() > 10, "{documented:?}");
    let mut at = 0;
    for key in &documented {
        let k = format!("\"{key}\":");
        at += text[at..]
            .find(&k)
            .unwrap_or_else(|| panic!("{key} in {text}"))
            + k.len();
    }
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v.as_object().unwrap().len(), documented.len(), "{text}");
}

/// The property names of `schema` in docs/openapi.yaml, in their order: the lines
/// indented under its `properties:`.
fn documented_properties(schema: &str) -> Vec<String> {
    let lines: Vec<&str> = crate::api::OPENAPI_YAML.lines().collect();
    let header = format!("    {schema}:");
    let at = lines
        .iter()
        .position(|l| *l == header)
        .unwrap_or_else(|| panic!("{schema} in docs/openapi.yaml"));
    lines[at + 1..]
        .iter()
        .skip_while(|l| l.trim() != "properties:")
        .skip(1)
        .take_while(|l| l.starts_with("        "))
        .filter(|l| !l.starts_with("         "))
        .filter_map(|l| l.trim().split_once(':').map(|(name, _)| name.to_string()))
        .collect()
}

/// Signs a finding (or, with `grant`, a grant widening record `grant` to `audience`).
fn authored(
    who: &Identity,
    seq: u64,
    prev: Option<RecordId>,
    audience: Audience,
    body: Vec<u8>,
    schema: &str,
) -> Record {
    sign(
        who,
        seq,
        prev,
        Draft {
            schema: schema.into(),
            audience,
            supersedes: None,
            epoch: None,
            payload: body,
            created_at_ms: 1,
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn published_counts_hold_only_what_the_audience_may_see() {
    let a = Identity::from_seed(&[31; 32]);
    let b = Identity::from_seed(&[32; 32]);
    let c = Identity::from_seed(&[33; 32]);
    let shared = authored(
        &a,
        1,
        None,
        Audience::Coalition,
        payload(0, 0, 0, Some(3)),
        FINDING_SCHEMA,
    );
    let private = authored(
        &a,
        2,
        Some(shared.id),
        Audience::Private,
        payload(0, 0, 1, Some(5)),
        FINDING_SCHEMA,
    );
    let for_b = authored(
        &a,
        3,
        Some(private.id),
        Audience::members(vec![b.key()]),
        payload(1, 0, 0, Some(7)),
        FINDING_SCHEMA,
    );
    let for_c = authored(
        &a,
        4,
        Some(for_b.id),
        Audience::members(vec![c.key()]),
        payload(2, 1, 0, Some(11)),
        FINDING_SCHEMA,
    );
    let widened = authored(
        &a,
        5,
        Some(for_c.id),
        Audience::members(vec![b.key()]),
        payload(2, 2, 0, Some(13)),
        FINDING_SCHEMA,
    );
    // The author widens `widened` to the whole coalition; B's "grant" of A's `for_b` has
    // no effect (only an author widens its own records).
    let grant = |target: &Record| {
        to_payload(
            &serde_json::json!({"record": target.id.to_hex(), "audience": {"kind": "coalition"}}),
        )
    };
    let own_grant = authored(
        &a,
        6,
        Some(widened.id),
        Audience::Coalition,
        grant(&widened),
        crate::finding::GRANT_SCHEMA,
    );
    let foreign_grant = authored(
        &b,
        1,
        None,
        Audience::Coalition,
        grant(&for_b),
        crate::finding::GRANT_SCHEMA,
    );

    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s.db"), &StoreKey::random())
        .await
        .unwrap();
    let all = [
        &shared,
        &private,
        &for_b,
        &for_c,
        &widened,
        &own_grant,
        &foreign_grant,
    ];
    let prepared: Vec<_> = all.iter().map(|r| prepare(&r.bytes).unwrap()).collect();
    store.insert(&prepared).await.unwrap();
    let reader = store.reader();
    let sorted = |mut v: Vec<RecordId>| {
        v.sort();
        v
    };

    // Everything counts for the node's own eyes; the rollup path answers it.
    let everything = aggregate(&reader, &Query::default(), &[Dimension::Country])
        .await
        .unwrap();
    assert_eq!(everything.total.findings, 5);

    let coalition = publishable(&reader, &Query::default(), &[Dimension::Country], None)
        .await
        .unwrap();
    assert_eq!(coalition.counted, sorted(vec![shared.id, widened.id]));
    assert_eq!(
        coalition.withheld,
        sorted(vec![private.id, for_b.id, for_c.id])
    );
    assert_eq!(
        coalition.aggregate.total,
        Measures {
            findings: 2,
            affected: 16
        }
    );
    assert_eq!(
        coalition
            .aggregate
            .rows
            .iter()
            .map(|r| (r.keys[0].clone(), r.measures.findings))
            .collect::<Vec<_>>(),
        vec![(Some("GE".into()), 1), (Some("RS".into()), 1)]
    );

    let for_member_b = publishable(&reader, &Query::default(), &[], Some(&b.key()))
        .await
        .unwrap();
    assert_eq!(
        for_member_b.counted,
        sorted(vec![shared.id, for_b.id, widened.id])
    );
    assert_eq!(
        for_member_b.aggregate.total,
        Measures {
            findings: 3,
            affected: 23
        }
    );

    // Filters still apply, and the rollup is never used to count around a withheld finding.
    let rs = Query {
        country: vec!["RS".into()],
        ..Query::default()
    };
    let rs_only = publishable(&reader, &rs, &[Dimension::Month], None)
        .await
        .unwrap();
    assert_eq!(rs_only.counted, vec![shared.id]);
    assert_eq!(
        rs_only.aggregate.total,
        Measures {
            findings: 1,
            affected: 3
        }
    );
    assert_eq!(rs_only.aggregate.rows.len(), 1);
    store.close().await;
}
