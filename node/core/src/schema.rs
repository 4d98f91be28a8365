//! JSON Schema validation of record payloads.
//!
//! The schemas in `schemas/` are the contract for what a record may say; new record
//! types are new schema files, not new code. They are compiled into the binary so a node
//! validates the same way wherever it runs, with no network access (references between
//! schemas resolve from an in-memory registry only).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use jsonschema::{Registry, Validator};
use serde_json::Value;

/// Base URI of every Coalition schema's `$id`.
pub const SCHEMA_BASE: &str = "https://schemas.coalition.invalid/";

/// Schema files shipped in the binary: (record schema id, file name, contents).
const SCHEMA_FILES: &[(&str, &str, &str)] = &[
    (
        "finding/v1",
        "finding.v1.json",
        include_str!("../../../schemas/finding.v1.json"),
    ),
    (
        "annex/v1",
        "annex.v1.json",
        include_str!("../../../schemas/annex.v1.json"),
    ),
    (
        "retraction/v1",
        "retraction.v1.json",
        include_str!("../../../schemas/retraction.v1.json"),
    ),
    (
        "grant/v1",
        "grant.v1.json",
        include_str!("../../../schemas/grant.v1.json"),
    ),
    (
        "charter/v1",
        "charter.v1.json",
        include_str!("../../../schemas/charter.v1.json"),
    ),
    (
        "proposal/v1",
        "proposal.v1.json",
        include_str!("../../../schemas/proposal.v1.json"),
    ),
    (
        "approval/v1",
        "approval.v1.json",
        include_str!("../../../schemas/approval.v1.json"),
    ),
    (
        "node-cert/v1",
        "node-cert.v1.json",
        include_str!("../../../schemas/node-cert.v1.json"),
    ),
    (
        "encryption-key/v1",
        "encryption-key.v1.json",
        include_str!("../../../schemas/encryption-key.v1.json"),
    ),
    (
        "checkpoint/v1",
        "checkpoint.v1.json",
        include_str!("../../../schemas/checkpoint.v1.json"),
    ),
    (
        "cosignature/v1",
        "cosignature.v1.json",
        include_str!("../../../schemas/cosignature.v1.json"),
    ),
];

/// Vocabulary document referenced by the record schemas.
const VOCAB_FILE: (&str, &str) = (
    "vocab.v1.json",
    include_str!("../../../schemas/vocab.v1.json"),
);

/// Longest violation message shown (enum lists can be long).
const MAX_MESSAGE_CHARS: usize = 240;

/// Languages every vocabulary is labelled in (BCP 47 tags, as in the `x-labels` of
/// `vocab.v1.json`); English first, the fallback for a missing label.
pub const LABEL_LANGUAGES: &[&str] = &["en", "sr-Latn", "sr-Cyrl", "mk", "ru", "sq", "ka"];

/// Why a payload or input document is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The record names a schema this node does not know.
    #[error("unknown schema {id:?} (this node knows: {known}); upgrade Coalition if a newer schema is in use")]
    Unknown {
        /// The schema id given.
        id: String,
        /// Known ids, comma-separated.
        known: String,
    },
    /// Not JSON at all.
    #[error("{source_name}: malformed JSON at line {line}, column {column}: {message}")]
    Json {
        /// File name or `-`.
        source_name: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// JSON that breaks the schema.
    #[error("{source_name}: does not match schema {schema}:\n{}", format_violations(.violations))]
    Invalid {
        /// File name or record id.
        source_name: String,
        /// The schema id.
        schema: String,
        /// Each broken rule.
        violations: Vec<Violation>,
    },
}

/// One schema rule a document breaks.
///
/// The message never quotes the offending value: a finding's fields hold names of
/// victims and witnesses, and errors end up on terminals, in logs and in replies to
/// peers. It names the field (by its path), the rule and the rule's limit instead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer to the offending value (`/location/country`), or `/` for the root.
    pub path: String,
    /// The JSON Schema keyword that failed (`required`, `enum`, `maxLength`…).
    pub rule: String,
    /// Human description, with the value itself replaced by "the value".
    pub message: String,
}

fn format_violations(v: &[Violation]) -> String {
    v.iter()
        .map(|v| format!("  at {}: {} (rule `{}`)", v.path, v.message, v.rule))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Compiled validators for every shipped schema, plus the vocabularies.
pub struct Schemas {
    validators: BTreeMap<&'static str, Validator>,
    vocab: Value,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("ids", &self.validators.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The process-wide compiled schemas (compiled once, on first use).
pub fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| Schemas::compile().expect("shipped schemas compile (checked by tests)"))
}

impl Schemas {
    fn compile() -> Result<Self, String> {
        let parse = |name: &str, text: &str| -> Result<Value, String> {
            serde_json::from_str(text).map_err(|e| format!("schemas/{name}: {e}"))
        };
        let vocab = parse(VOCAB_FILE.0, VOCAB_FILE.1)?;
        let mut docs = vec![(format!("{SCHEMA_BASE}{}", VOCAB_FILE.0), vocab.clone())];
        for (_, file, text) in SCHEMA_FILES {
            docs.push((format!("{SCHEMA_BASE}{file}"), parse(file, text)?));
        }
        let mut builder = Registry::new();
        for (uri, doc) in &docs {
            builder = builder
                .add(uri, doc.clone())
                .map_err(|e| format!("registering {uri}: {e}"))?;
        }
        let registry = builder.prepare().map_err(|e| e.to_string())?;
        let mut validators = BTreeMap::new();
        for ((id, file, _), (_, doc)) in SCHEMA_FILES.iter().zip(docs.iter().skip(1)) {
            let v = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .with_registry(&registry)
                .build(doc)
                .map_err(|e| format!("schemas/{file}: {e}"))?;
            validators.insert(*id, v);
        }
        Ok(Self { validators, vocab })
    }

    /// Ids of every known schema.
    pub fn ids(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.validators.keys().copied()
    }

    /// Checks `value` against schema `id`; `source_name` names the document in errors.
    pub fn validate(&self, id: &str, value: &Value, source_name: &str) -> Result<(), SchemaError> {
        let validator = self
            .validators
            .get(id)
            .ok_or_else(|| SchemaError::Unknown {
                id: id.to_string(),
                known: self.ids().collect::<Vec<_>>().join(", "),
            })?;
        // The common case, valid input, without building any error (several times faster
        // than collecting an empty error list); only invalid input pays for the report.
        if validator.is_valid(value) {
            return Ok(());
        }
        refusal(validator, id, value, source_name)
    }

    /// Parses UTF-8 JSON bytes and validates them against schema `id`.
    pub fn check_payload(
        &self,
        id: &str,
        payload: &[u8],
        source_name: &dyn std::fmt::Display,
    ) -> Result<Value, SchemaError> {
        let Some(validator) = self.validators.get(id) else {
            return Err(SchemaError::Unknown {
                id: id.to_string(),
                known: self.ids().collect::<Vec<_>>().join(", "),
            });
        };
        // The name is written out only for an error: records are checked by the hundred
        // thousand in a sync, and almost all of them are valid.
        let value = parse_json_named(payload, source_name)?;
        if !validator.is_valid(&value) {
            refusal(validator, id, &value, &source_name.to_string())?;
        }
        Ok(value)
    }

    /// A vocabulary (`category`, `actor_type`, `country`, …): its codes in order.
    pub fn vocabulary(&self, name: &str) -> Vec<String> {
        self.vocab["$defs"][name]["enum"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Label of `code` in vocabulary `name` for `lang`, falling back to English, then the code.
    pub fn label(&self, name: &str, code: &str, lang: &str) -> String {
        let labels = &self.vocab["$defs"][name]["x-labels"];
        labels[lang][code]
            .as_str()
            .or_else(|| labels["en"][code].as_str())
            .unwrap_or(code)
            .to_string()
    }
}

/// Why `value` fails `validator` (schema `id`), with every violation; `Ok` if none is
/// found after all. Called only once the validator said `value` is not valid: building
/// the report costs several times the check.
fn refusal(
    validator: &Validator,
    id: &str,
    value: &Value,
    source_name: &str,
) -> Result<(), SchemaError> {
    let violations: Vec<Violation> = validator
        .iter_errors(value)
        .map(|e| {
            let path = e.instance_path().to_string();
            let mut message = e.masked_with("the value").to_string();
            if message.chars().count() > MAX_MESSAGE_CHARS {
                message = message.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
            }
            Violation {
                path: if path.is_empty() { "/".into() } else { path },
                rule: e.kind().keyword().to_string(),
                message,
            }
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Invalid {
            source_name: source_name.to_string(),
            schema: id.to_string(),
            violations,
        })
    }
}

/// Parses JSON, reporting the line and column of a syntax error.
pub fn parse_json(bytes: &[u8], source_name: &str) -> Result<Value, SchemaError> {
    parse_json_named(bytes, &source_name)
}

fn parse_json_named(
    bytes: &[u8],
    source_name: &dyn std::fmt::Display,
) -> Result<Value, SchemaError> {
    serde_json::from_slice(bytes).map_err(|e| SchemaError::Json {
        source_name: source_name.to_string(),
        line: e.line(),
        column: e.column(),
        message: e
            .to_string()
            .split(" at line")
            .next()
            .unwrap_or_default()
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_schemas_compile_and_know_their_ids() {
        let ids: Vec<_> = schemas().ids().collect();
        for id in ["finding/v1", "annex/v1", "retraction/v1", "grant/v1"] {
            assert!(ids.contains(&id), "{id} missing");
        }
        assert!(schemas()
            .vocabulary("category")
            .contains(&"excessive_force".to_string()));
        assert!(schemas().vocabulary("country").contains(&"XK".to_string()));
    }

    #[test]
    fn labels_in_every_language() {
        for lang in &LABEL_LANGUAGES[1..] {
            assert_ne!(
                schemas().label("category", "excessive_force", lang),
                "Excessive use of force",
                "{lang} falls back to English"
            )
        }
        assert_eq!(
            schemas().label("actor_type", "gendarmerie", "sr-Cyrl"),
            "Жандармерија"
        );
        assert_eq!(
            schemas().label("actor_type", "gendarmerie", "ru"),
            "Жандармерия"
        );
        // A language without labels, or a code without one, falls back to English.
        assert_eq!(schemas().label("country", "FR", "mk"), "France");
        assert_eq!(schemas().label("confidence", "high", "fr"), "High");
    }

    #[test]
    fn every_shipped_example_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let mut v = parse_json(&std::fs::read(&path).unwrap(), "example").unwrap();
            v.as_object_mut().unwrap().remove("sensitive");
            schemas()
                .validate("finding/v1", &v, &path.display().to_string())
                .unwrap();
            n += 1;
        }
        assert!(n >= 30, "only {n} examples");
    }

    #[test]
    fn violations_name_the_field_and_rule() {
        let v: Value = serde_json::json!({"title": "x"});
        let err = schemas().validate("finding/v1", &v, "t.json").unwrap_err();
        let SchemaError::Invalid { violations, .. } = &err else {
            panic!("{err}")
        };
        assert!(violations.iter().any(|v| v.rule == "required"), "{err}");
        assert!(
            violations
                .iter()
                .any(|v| v.path == "/title" && v.rule == "minLength"),
            "{err}"
        );
    }

    #[test]
    fn violations_never_quote_the_value() {
        let secret = "Witness Jelena Secretname of 12 Hidden Street";
        let mut v = parse_json(
            &std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../schemas/examples/03-rs-presevo-checkpoint-harassment.json"),
            )
            .unwrap(),
            "example",
        )
        .unwrap();
        v["category"] = secret.into();
        v["language"] = secret.into();
        v["occurred"]["start"] = secret.into();
        v["title"] = secret.repeat(20).into();
        v["confidence"] = serde_json::json!({ "note": secret });
        let err = schemas()
            .validate("finding/v1", &v, "input.json")
            .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("Secretname"), "{text}");
        let SchemaError::Invalid { violations, .. } = &err else {
            panic!("{err}")
        };
        for field in ["/category", "/title", "/occurred/start", "/confidence"] {
            assert!(
                violations.iter().any(|v| v.path == field),
                "{field} not named: {text}"
            );
        }
        assert!(text.contains("the value"), "{text}");
        assert!(violations.iter().any(|v| v.rule == "maxLength"), "{text}");
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err = parse_json(b"{\n  \"title\": oops\n}", "f.json").unwrap_err();
        assert!(matches!(err, SchemaError::Json { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("line 2, column"));
    }

    #[test]
    fn unknown_schema_is_named() {
        let err = schemas()
            .check_payload("finding/v9", b"{}", &"r")
            .unwrap_err();
        assert!(err.to_string().contains("finding/v9"));
    }
}
