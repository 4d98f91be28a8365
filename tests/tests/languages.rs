//! Every vocabulary label and every dashboard string exists, non-empty, in every language
//! the node offers; Serbian Cyrillic is exactly the transliteration of Serbian Latin; each
//! Cyrillic language uses its own alphabet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use coalition::schema::LABEL_LANGUAGES;
use serde_json::{Map, Value};

/// Serbian Latin → Serbian Cyrillic (Vuk's alphabet). The digraphs come first: each is a
/// single Cyrillic letter.
const SR_LATN_TO_CYRL: &[(&str, &str)] = &[
    ("DŽ", "Џ"),
    ("Dž", "Џ"),
    ("dž", "џ"),
    ("LJ", "Љ"),
    ("Lj", "Љ"),
    ("lj", "љ"),
    ("NJ", "Њ"),
    ("Nj", "Њ"),
    ("nj", "њ"),
    ("A", "А"),
    ("a", "а"),
    ("B", "Б"),
    ("b", "б"),
    ("C", "Ц"),
    ("c", "ц"),
    ("Č", "Ч"),
    ("č", "ч"),
    ("Ć", "Ћ"),
    ("ć", "ћ"),
    ("D", "Д"),
    ("d", "д"),
    ("Đ", "Ђ"),
    ("đ", "ђ"),
    ("E", "Е"),
    ("e", "е"),
    ("F", "Ф"),
    ("f", "ф"),
    ("G", "Г"),
    ("g", "г"),
    ("H", "Х"),
    ("h", "х"),
    ("I", "И"),
    ("i", "и"),
    ("J", "Ј"),
    ("j", "ј"),
    ("K", "К"),
    ("k", "к"),
    ("L", "Л"),
    ("l", "л"),
    ("M", "М"),
    ("m", "м"),
    ("N", "Н"),
    ("n", "н"),
    ("O", "О"),
    ("o", "о"),
    ("P", "П"),
    ("p", "п"),
    ("R", "Р"),
    ("r", "р"),
    ("S", "С"),
    ("s", "с"),
    ("Š", "Ш"),
    ("š", "ш"),
    ("T", "Т"),
    ("t", "т"),
    ("U", "У"),
    ("u", "у"),
    ("V", "В"),
    ("v", "в"),
    ("Z", "З"),
    ("z", "з"),
    ("Ž", "Ж"),
    ("ž", "ж"),
];

/// The product name stays in Latin letters in every language.
const BRAND: &str = "Coalition";

/// Letters only one of the Cyrillic languages uses: a label holding another's is a slip.
const NOT_IN: &[(&str, &str)] = &[
    ("sr-Cyrl", "ѓќѕыэёъщйЃЌЅЫЭЁЪЩЙ"),
    ("mk", "ђћыэёъщйЂЋЫЭЁЪЩЙ"),
    ("ru", "јљњџђћѓќѕЈЉЊЏЂЋЃЌЅ"),
];

fn transliterate(latin: &str) -> String {
    let mut out = String::new();
    let mut rest = latin;
    'next: while let Some(c) = rest.chars().next() {
        for (from, to) in SR_LATN_TO_CYRL {
            if let Some(r) = rest.strip_prefix(from) {
                out.push_str(to);
                rest = r;
                continue 'next;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn keys(m: &Map<String, Value>) -> BTreeSet<&str> {
    m.keys().map(String::as_str).collect()
}

/// Checks one language's strings against the reference keys; returns the problems found.
fn check_strings(
    what: &str,
    lang: &str,
    strings: &Map<String, Value>,
    expected: &BTreeSet<&str>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for k in expected.difference(&keys(strings)) {
        bad.push(format!("{what} [{lang}]: `{k}` missing"));
    }
    for k in keys(strings).difference(expected) {
        bad.push(format!(
            "{what} [{lang}]: `{k}` is not a key of the reference"
        ));
    }
    for (k, v) in strings {
        let Some(s) = v.as_str().filter(|s| !s.trim().is_empty()) else {
            bad.push(format!("{what} [{lang}]: `{k}` is empty or not a string"));
            continue;
        };
        if ["sr-Cyrl", "mk", "ru"].contains(&lang) {
            let latin: String = s
                .replace(BRAND, "")
                .chars()
                .filter(char::is_ascii_alphabetic)
                .collect();
            if !latin.is_empty() {
                bad.push(format!(
                    "{what} [{lang}]: `{k}` = {s:?} holds Latin letters"
                ));
            }
        }
        for (l, foreign) in NOT_IN {
            if *l == lang && s.chars().any(|c| foreign.contains(c)) {
                bad.push(format!(
                    "{what} [{lang}]: `{k}` = {s:?} holds a letter {lang} does not use"
                ));
            }
        }
    }
    bad
}

/// Serbian Cyrillic must be the transliteration of Serbian Latin, the brand aside.
fn check_cyrillic(what: &str, latn: &Map<String, Value>, cyrl: &Map<String, Value>) -> Vec<String> {
    let mut bad = Vec::new();
    for (k, v) in latn {
        let latin = v.as_str().unwrap_or_default();
        let expected = match latin.split_once(BRAND) {
            Some((a, b)) => format!("{}{BRAND}{}", transliterate(a), transliterate(b)),
            None => transliterate(latin),
        };
        if cyrl.get(k).and_then(Value::as_str) != Some(expected.as_str()) {
            bad.push(format!(
                "{what} [sr-Cyrl]: `{k}` should be {expected:?} (from {latin:?}), is {:?}",
                cyrl.get(k)
            ));
        }
    }
    bad
}

#[test]
fn transliteration_table_handles_digraphs() {
    assert_eq!(transliterate("Azerbejdžan"), "Азербејџан");
    assert_eq!(transliterate("Ljubljana, Njegoš"), "Љубљана, Његош");
    assert_eq!(
        transliterate("Đorđe Ćirić (MALO) — 12"),
        "Ђорђе Ћирић (МАЛО) — 12"
    );
}

#[test]
fn every_vocabulary_label_in_every_language() {
    let vocab = read_json(&repo().join("schemas/vocab.v1.json"));
    let mut bad = Vec::new();
    let mut checked = 0;
    for (name, def) in vocab["$defs"].as_object().expect("$defs") {
        let Some(labels) = def["x-labels"].as_object() else {
            continue;
        };
        let langs: BTreeSet<&str> = keys(labels);
        let offered: BTreeSet<&str> = LABEL_LANGUAGES.iter().copied().collect();
        assert_eq!(
            langs, offered,
            "{name}: languages labelled vs LABEL_LANGUAGES"
        );
        let codes: BTreeSet<&str> = def["enum"]
            .as_array()
            .expect("enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let en = labels["en"].as_object().expect("en labels");
        bad.extend(check_strings(name, "en", en, &codes));
        // Countries: English names every code; the other languages name the region's
        // countries (the same set in each), the rest fall back to English.
        let reference = if name == "country" {
            keys(labels["sr-Latn"].as_object().expect("sr-Latn"))
        } else {
            codes.clone()
        };
        assert!(
            reference.is_subset(&codes),
            "{name}: labels for unknown codes"
        );
        for lang in &LABEL_LANGUAGES[1..] {
            let strings = labels[*lang].as_object().expect("labels object");
            bad.extend(check_strings(name, lang, strings, &reference));
            checked += strings.len();
        }
        bad.extend(check_cyrillic(
            name,
            labels["sr-Latn"].as_object().unwrap(),
            labels["sr-Cyrl"].as_object().unwrap(),
        ));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(checked > 6 * 60, "only {checked} labels checked");
}

#[test]
fn every_dashboard_string_in_every_language() {
    let dir = repo().join("node/assets");
    let en = read_json(&dir.join("i18n/en.json"));
    let en = en.as_object().expect("en.json is an object");
    let reference = keys(en);
    assert!(
        reference.len() > 50,
        "en.json has {} strings",
        reference.len()
    );
    let files: BTreeSet<String> = std::fs::read_dir(dir.join("i18n"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = LABEL_LANGUAGES
        .iter()
        .map(|l| format!("{l}.json"))
        .collect();
    assert_eq!(files, expected, "i18n files vs LABEL_LANGUAGES");

    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let js = std::fs::read_to_string(dir.join("app.js")).unwrap();
    let api = std::fs::read_to_string(repo().join("node/src/api.rs")).unwrap();
    let mut bad = Vec::new();
    for lang in LABEL_LANGUAGES {
        let strings = read_json(&dir.join(format!("i18n/{lang}.json")));
        bad.extend(check_strings(
            "dashboard",
            lang,
            strings.as_object().expect("object"),
            &reference,
        ));
        if !html.contains(&format!("<option value=\"{lang}\">")) {
            bad.push(format!("index.html: no switcher entry for {lang}"));
        }
        if !js.contains(&format!("'{lang}'")) {
            bad.push(format!("app.js: {lang} not offered"));
        }
        if !api.contains(&format!("include_bytes!(\"../assets/i18n/{lang}.json\")")) {
            bad.push(format!("api.rs: i18n/{lang}.json not served"));
        }
    }
    let latn = read_json(&dir.join("i18n/sr-Latn.json"));
    let cyrl = read_json(&dir.join("i18n/sr-Cyrl.json"));
    bad.extend(check_cyrillic(
        "dashboard",
        latn.as_object().unwrap(),
        cyrl.as_object().unwrap(),
    ));
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
