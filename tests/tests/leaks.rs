//! Nothing leaves a node that should not: markers planted in records with narrow audiences
//! on one node are searched for on every channel of every other node.
//!
//! A line of three member nodes A — B — C (C reaches A only through B), a second node of
//! A's organisation (A2: the same key in a copied home, as on a second laptop or a restored
//! backup, never enrolled as a replica), and a node of an organisation outside the
//! coalition (D) that holds the charter and dials B. On A:
//!
//! * a PRIVATE finding (marker in its title and summary),
//! * a coalition finding whose sensitive details (its PRIVATE annex) carry a marker,
//! * a finding for the chosen member B only,
//! * and a coalition finding with a public marker: the control that proves each search
//!   looks where records do arrive.
//!
//! Channels searched: every file of each home (store, WAL, shared memory, config), the
//! node's log at debug level, every API route, every export format, and reports. A marker
//! is the text planted and the id of the record carrying it (in hex, and as the raw 32
//! bytes a store keeps).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use coalition_tests::node::{toml_list, TestNode};
use coalition_tests::{eventually, example, found, held, Org};
use serde_json::Value;

const PUBLIC: &str = "LEAKTEST-PUBLIC-5d1e";
const PRIVATE: &str = "LEAKTEST-PRIVATE-7f3a";
const ANNEX: &str = "LEAKTEST-ANNEX-91c2";
const CHOSEN: &str = "LEAKTEST-CHOSEN-4be8";

/// How long the network may take to carry the control record from A to C.
const CONVERGE: Duration = Duration::from_secs(60);

/// A planted secret: its text and the ids of the records that carry it.
struct Marker {
    text: &'static str,
    ids: Vec<String>,
}

impl Marker {
    /// Where in `bytes` (a file, a log, an HTTP body) the marker shows, if anywhere: its
    /// text, or with `ids` also the ids of the records carrying it.
    fn found_in(&self, bytes: &[u8], ids: bool) -> Option<String> {
        let mut needles: Vec<(String, Vec<u8>)> =
            vec![(self.text.to_string(), self.text.as_bytes().to_vec())];
        for id in self.ids.iter().filter(|_| ids) {
            needles.push((format!("id {id}"), id.as_bytes().to_vec()));
            needles.push((format!("raw id {id}"), hex::decode(id).expect("hex id")));
        }
        needles
            .into_iter()
            .find(|(_, n)| bytes.windows(n.len()).any(|w| w == n.as_slice()))
            .map(|(what, _)| what)
    }
}

/// An example finding with `marker` at the start of its title and summary; with
/// `annex`, its sensitive details (the PRIVATE annex) carry that marker instead.
fn marked_input(org: &Org, example_name: &str, marker: &str, annex: Option<&str>) -> String {
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(example(example_name)).unwrap()).unwrap();
    let title: String = v["title"].as_str().unwrap().chars().take(120).collect();
    v["title"] = Value::String(format!("{marker} {title}"));
    v["summary"] = Value::String(format!("{marker} {}", v["summary"].as_str().unwrap()));
    match annex {
        Some(secret) => {
            v["sensitive"]["victims"][0]["name"] = Value::String(secret.to_string());
            v["sensitive"]["notes"] = Value::String(format!("{secret} consents to the finding"));
        }
        None => {
            v.as_object_mut().unwrap().remove("sensitive");
        }
    }
    let path = org.write(&format!("{marker}.json"), v.to_string());
    path.display().to_string()
}

/// Adds a finding from `input` to `org` with `--share share`; returns its id and, if it
/// has one, its annex's id.
fn add(org: &Org, input: &str, share: &str) -> (String, Option<String>) {
    let id = org.add(Path::new(input), share);
    let annex = org
        .all_records()
        .into_iter()
        .find(|r| r["schema"] == "annex/v1" && r["payload"]["finding"] == Value::String(id.clone()))
        .map(|r| r["id"].as_str().unwrap().to_string());
    (id, annex)
}

/// Every channel of one node, as named bytes, each saying whether a record id in it is a
/// leak.
///
/// Ids count only where a channel lists what it counted (a report). Elsewhere an id alone
/// is no leak: every record names its author's previous record (`prev`), so whoever holds
/// a coalition record knows the id of the author's record before it, PRIVATE or not
/// (that a record exists, never what it says; docs/THREAT_MODEL.md).
struct Channels(Vec<(String, Vec<u8>, bool)>);

impl Channels {
    fn new() -> Self {
        Self(Vec::new())
    }

    /// A channel where the markers' text must not show.
    fn push(&mut self, name: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((name.into(), bytes.into(), false));
    }

    /// A channel where neither the markers' text nor their records' ids may show.
    fn push_listing(&mut self, name: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((name.into(), bytes.into(), true));
    }

    /// Fails naming every channel in which a marker of `forbidden` shows.
    #[track_caller]
    fn assert_free_of(&self, node: &str, forbidden: &[&Marker]) {
        let mut leaks = Vec::new();
        for (channel, bytes, ids) in &self.0 {
            for m in forbidden {
                if let Some(what) = m.found_in(bytes, *ids) {
                    leaks.push(format!("{node}: {} ({what}) in {channel}", m.text));
                }
            }
        }
        assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
    }

    /// Fails unless `marker` shows in the channel named `channel`: the control that the
    /// search looks where records arrive.
    #[track_caller]
    fn assert_shows(&self, node: &str, channel: &str, marker: &Marker) {
        let (_, bytes, _) = self
            .0
            .iter()
            .find(|(c, _, _)| c == channel)
            .unwrap_or_else(|| panic!("{node} has no channel {channel}"));
        assert!(
            marker.found_in(bytes, false).is_some(),
            "{node}: the control {} is missing from {channel}: the search would miss a leak",
            marker.text
        );
    }
}

/// What a node's operator, its analysts and its log show, while it runs: every API route
/// (every finding it lists, and the marked ones asked for by id), and its debug log.
fn running_channels(org: &Org, node: &TestNode, ids: &[&str], into: &mut Channels) {
    let mut paths: Vec<String> = [
        "/",
        "/api/v1/status",
        "/api/v1/peers",
        "/api/v1/findings?limit=500",
        "/api/v1/findings?limit=500&include_retracted=true",
        "/api/v1/aggregate?group_by=author,country,category",
        "/api/v1/vocabularies",
    ]
    .map(String::from)
    .to_vec();
    let (_, listing) = node.get("/api/v1/findings?limit=500");
    let listing: Value = serde_json::from_slice(&listing).unwrap_or(Value::Null);
    for item in listing["items"].as_array().into_iter().flatten() {
        paths.push(format!("/api/v1/findings/{}", item["id"].as_str().unwrap()));
    }
    paths.extend(ids.iter().map(|id| format!("/api/v1/findings/{id}")));
    for p in paths {
        let (status, body) = node.get(&p);
        into.push(format!("GET {p} ({status})"), body);
    }
    home_files(org, "running", into);
    into.push(
        "node log (debug)",
        std::fs::read(org.path("node.log")).unwrap_or_default(),
    );
}

/// Every file of the home (store, WAL, shared memory, config, key file), named with
/// `when` they were read.
fn home_files(org: &Org, when: &str, into: &mut Channels) {
    for entry in std::fs::read_dir(org.home()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            // A file may go away while the node runs (a checkpointed WAL).
            if let Ok(bytes) = std::fs::read(&path) {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                into.push(format!("file {name} ({when})"), bytes);
            }
        }
    }
}

/// What lies on the node's disk and what its operator can hand on: every file of the
/// home, every export format (the operator's own backup with private records too), and
/// a report.
fn offline_channels(org: &Org, into: &mut Channels) {
    home_files(org, "stopped", into);
    into.push("own backup (jsonl --include-private)", {
        let p = org.export("jsonl", "backup.jsonl", &["--include-private"]);
        std::fs::read(p).unwrap()
    });
}

/// What an operator publishes: the default exports in every format and a report. None
/// may carry a record that is not the whole coalition's.
fn published_channels(org: &Org, into: &mut Channels) {
    for (format, name) in [
        ("bundle", "published.bundle"),
        ("jsonl", "published.jsonl"),
        ("csv", "published.csv"),
        ("geojson", "published.geojson"),
    ] {
        let p = org.export(format, name, &[]);
        into.push(
            format!("export --format {format}"),
            std::fs::read(p).unwrap(),
        );
    }
    let report = org.path("report.json");
    org.run([
        "report",
        "--group-by",
        "country,category,author",
        "-o",
        report.to_str().unwrap(),
    ])
    .ok();
    into.push_listing("report", std::fs::read(&report).unwrap());
}

#[test]
fn markers_stay_where_they_belong_on_every_channel() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let b = Org::init("Safety Forum Prizren", "XK");
    let c = Org::init("Rights Desk Skopje", "MK");
    found("Balkan Monitoring Coalition", &[&a, &b, &c], 2);
    // A second node of A's organisation, and a stranger: an organisation of another
    // coalition whose node dials B and A.
    let a2 = a.second_home();
    let d = Org::init("Not A Member", "AL");
    found("Another Coalition", &[&d], 1);

    let (public, _) = add(
        &a,
        &marked_input(&a, "03-rs-presevo-checkpoint-harassment.json", PUBLIC, None),
        "coalition",
    );
    let (private, _) = add(
        &a,
        &marked_input(&a, "05-rs-nis-roma-children-profiling.json", PRIVATE, None),
        "private",
    );
    let (with_annex, annex) = add(
        &a,
        &marked_input(
            &a,
            "01-rs-belgrade-protest-force.json",
            "LEAKTEST-SHARED-0b77",
            Some(ANNEX),
        ),
        "coalition",
    );
    let annex = annex.expect("the finding with sensitive details has an annex");
    let (chosen, _) = add(
        &a,
        &marked_input(&a, "02-rs-novi-sad-student-detention.json", CHOSEN, None),
        b.key(),
    );

    let public = Marker {
        text: PUBLIC,
        ids: vec![public],
    };
    let private = Marker {
        text: PRIVATE,
        ids: vec![private],
    };
    let annex = Marker {
        text: ANNEX,
        ids: vec![annex],
    };
    let chosen = Marker {
        text: CHOSEN,
        ids: vec![chosen],
    };
    let marked: Vec<&str> = [&public, &private, &annex, &chosen]
        .iter()
        .map(|m| m.ids[0].as_str())
        .collect();

    // Every node logs at debug level (this file's only test sets it for its nodes).
    std::env::set_var("COALITION_TEST_LOG", "debug");
    let start = |org: &Org, name: &str, bootstrap: &[&str]| {
        org.start_node(name, &format!("bootstrap = {}", toml_list(bootstrap)))
    };
    let node_a = start(&a, "a", &[]);
    let node_b = start(&b, "b", &[&node_a.tcp]);
    let node_c = start(&c, "c", &[&node_b.tcp]);
    let node_a2 = start(&a2, "a2", &[&node_a.tcp]);
    let node_d = start(&d, "d", &[&node_b.tcp, &node_a.tcp]);

    // The control crosses the line; what B and A2 may hold reaches them.
    eventually("C holds the public finding through B", CONVERGE, || {
        held(&c).contains(&public.ids[0])
    });
    eventually(
        "B holds the finding for B and the shared one",
        CONVERGE,
        || {
            let h = held(&b);
            h.contains(&chosen.ids[0]) && h.contains(&with_annex)
        },
    );
    eventually("A2 holds what its organisation shared", CONVERGE, || {
        let h = held(&a2);
        h.contains(&chosen.ids[0]) && h.contains(&public.ids[0])
    });
    // A few more sync rounds (each second) in which anything wrongly offered would move.
    std::thread::sleep(Duration::from_secs(4));

    let mut seen = BTreeMap::new();
    for (name, org, node) in [
        ("a", &a, &node_a),
        ("b", &b, &node_b),
        ("c", &c, &node_c),
        ("a2", &a2, &node_a2),
        ("d", &d, &node_d),
    ] {
        let mut ch = Channels::new();
        running_channels(org, node, &marked, &mut ch);
        seen.insert(name, ch);
    }
    for node in [node_a, node_b, node_c, node_a2, node_d] {
        node.stop();
    }
    for (name, org) in [("a", &a), ("b", &b), ("c", &c), ("a2", &a2), ("d", &d)] {
        offline_channels(org, seen.get_mut(name).unwrap());
    }

    // What each node holds, serves and logs.
    let b_ch = &seen["b"];
    b_ch.assert_free_of("B", &[&private, &annex]);
    // B holds the record chosen for it (its store file no longer shows it: the store is
    // encrypted, which tests/tests/at_rest.rs checks byte by byte).
    b_ch.assert_shows("B", "own backup (jsonl --include-private)", &chosen);
    seen["c"].assert_free_of("C", &[&private, &annex, &chosen]);
    seen["c"].assert_shows("C", "GET /api/v1/findings?limit=500 (200)", &public);
    seen["c"].assert_shows("C", "own backup (jsonl --include-private)", &public);
    seen["a2"].assert_free_of("A2", &[&private, &annex]);
    seen["a2"].assert_shows("A2", "own backup (jsonl --include-private)", &chosen);
    seen["d"].assert_free_of("D", &[&public, &private, &annex, &chosen]);
    seen["a"].assert_shows("A", "own backup (jsonl --include-private)", &private);
    seen["a"].assert_shows("A", "own backup (jsonl --include-private)", &annex);

    // What each member's operator publishes carries the coalition's records only.
    for (name, org) in [("A", &a), ("B", &b), ("C", &c)] {
        let mut published = Channels::new();
        published_channels(org, &mut published);
        published.assert_free_of(name, &[&private, &annex, &chosen]);
        published.assert_shows(name, "export --format jsonl", &public);
        let report = &published
            .0
            .iter()
            .find(|(c, _, _)| c == "report")
            .unwrap()
            .1;
        assert!(
            public.found_in(report, true).is_some(),
            "{name}'s report does not list the coalition finding: the id search would miss a leak"
        );
    }
}
