//! The docs match the binary: every `coalition` command and flag README.md shows exists
//! (checked against `coalition … --help`), `coalition demo --help` describes the demo that
//! runs, and `deploy/config.example.toml` loads with the node's own config loader, every
//! key in it (commented-out ones included) known.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use coalition::config::{Config, Home};
use coalition_tests::run_command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `line` up to a `#` comment that starts a word outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// The `coalition` invocations README.md shows: lines of code blocks starting with
/// `coalition` (or `cargo run … -- ARGS`), and inline code spans starting with `coalition `.
/// Each is returned as (README line number, arguments after `coalition`).
fn readme_invocations(readme: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut in_block = false;
    for (n, line) in readme.lines().enumerate() {
        let n = n + 1;
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        let mut candidates: Vec<String> = Vec::new();
        if in_block {
            let code = strip_comment(line).trim();
            if code.starts_with("coalition ") {
                candidates.push(code.to_string());
            } else if code.starts_with("cargo run") {
                if let Some((_, args)) = code.split_once(" -- ") {
                    candidates.push(format!("coalition {args}"));
                }
            }
        } else {
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 1 && span.starts_with("coalition ") {
                    candidates.push(span.to_string());
                }
            }
        }
        for c in candidates {
            let words = shlex::split(&c)
                .unwrap_or_else(|| panic!("README.md:{n}: cannot split `{c}` into words"));
            out.push((n, words[1..].to_vec()));
        }
    }
    out
}

/// `coalition ARGS --help`, cached.
struct Helps {
    tmp: tempfile::TempDir,
    cache: HashMap<Vec<String>, String>,
}

impl Helps {
    fn get(&mut self, path: &[String]) -> &str {
        let tmp = self.tmp.path().to_path_buf();
        self.cache.entry(path.to_vec()).or_insert_with(|| {
            let mut args = path.to_vec();
            args.push("--help".into());
            let out = run_command(&tmp, &args, &[]);
            assert_eq!(out.code, 0, "{} failed: {}", out.command, out.stderr);
            out.stdout
        })
    }
}

/// Subcommand names listed under `Commands:` in a clap help text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Whether `flag` (`--share`, `-o`) is listed in `help` as a whole word.
fn lists_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        let before = help[..i].chars().next_back();
        let after = help[i + flag.len()..].chars().next();
        before.is_none_or(|c| c.is_whitespace() || c == '[' || c == ',')
            && after.is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_'))
    })
}

/// Checks one invocation; returns what is wrong with it (none if it exists). Words that
/// are not subcommands or flags (values, placeholders like KEY or FILE, `[--json]`'s
/// brackets aside) are not checked.
fn check(helps: &mut Helps, args: &[String]) -> Vec<String> {
    let mut path: Vec<String> = Vec::new();
    let mut descending = true;
    let mut bad = Vec::new();
    for word in args {
        let word = word.trim_matches(|c| c == '[' || c == ']');
        if word.starts_with('-') && word.len() > 1 && word != "--" {
            descending = false;
            let flag = word.split_once('=').map_or(word, |(f, _)| f);
            if !lists_flag(helps.get(&path), flag) {
                bad.push(format!(
                    "`coalition {} --help` lists no {flag}",
                    path.join(" ")
                ));
            }
        } else if descending {
            if subcommands(helps.get(&path)).iter().any(|s| s == word) {
                path.push(word.to_string());
            } else if !subcommands(helps.get(&path)).is_empty() {
                bad.push(format!(
                    "`coalition {} {word}` is not a command",
                    path.join(" ")
                ));
                descending = false;
            } else {
                descending = false;
            }
        }
    }
    bad
}

fn helps() -> Helps {
    Helps {
        tmp: tempfile::tempdir().expect("tempdir"),
        cache: HashMap::new(),
    }
}

#[test]
fn every_command_and_flag_in_the_readme_exists() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let invocations = readme_invocations(&readme);
    let mut helps = helps();
    let mut bad = Vec::new();
    let mut flags = 0;
    for (line, args) in &invocations {
        flags += args
            .iter()
            .filter(|a| a.trim_start_matches('[').starts_with('-'))
            .count();
        for problem in check(&mut helps, args) {
            bad.push(format!(
                "README.md:{line}: coalition {}: {problem}",
                args.join(" ")
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // Not vacuous: the README shows many commands and flags.
    assert!(
        invocations.len() >= 25,
        "only {} invocations found",
        invocations.len()
    );
    assert!(flags >= 20, "only {flags} flags found");
    assert!(
        helps.cache.len() >= 15,
        "only {} help texts read",
        helps.cache.len()
    );
}

#[test]
fn the_checker_catches_a_missing_command_or_flag() {
    let mut helps = helps();
    let words = |s: &str| shlex::split(s).unwrap();
    assert!(check(&mut helps, &words("finding show 3fa9c2d1 [--json]")).is_empty());
    assert!(check(&mut helps, &words("finding add x.json --share KEY1")).is_empty());
    let bad = check(&mut helps, &words("finding add x.json --shared coalition"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("--shared"), "{bad:?}");
    let bad = check(&mut helps, &words("finding publish x.json"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("publish"), "{bad:?}");
    // Comments and quotes: `#` inside quotes is not a comment.
    assert_eq!(strip_comment(r#"a "b # c" d # e"#), r#"a "b # c" d "#);
    let found = readme_invocations(
        "x\n```\ncoalition init --org \"A # B\" # note\n```\n`coalition peers` y",
    );
    assert_eq!(
        found,
        vec![
            (3, vec!["init".into(), "--org".into(), "A # B".into()]),
            (5, vec!["peers".into()])
        ]
    );
}

#[test]
fn demo_help_describes_the_demo_that_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_command(tmp.path(), ["demo", "--help"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let help = out.stdout;
    assert!(help.contains("four organisations"), "{help}");
    assert!(help.contains("coalition run"), "{help}");
    assert!(!help.contains("two organisations"), "{help}");
}

/// `deploy/config.example.toml` with a real organisation key in place of its placeholder.
fn example_config() -> String {
    let text = std::fs::read_to_string(repo().join("deploy/config.example.toml")).unwrap();
    let placeholder = "\"<64 hex characters printed by coalition init>\"";
    assert!(
        text.contains(placeholder),
        "the example's key placeholder changed; update this test"
    );
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    text.replace(placeholder, &format!("\"{}\"", hex::encode(key.to_bytes())))
}

fn load(text: &str) -> Result<Config, coalition::config::ConfigError> {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.toml"), text).unwrap();
    Config::load(&Home::new(Some(tmp.path().to_path_buf())))
}

#[test]
fn the_example_config_loads_and_every_key_in_it_is_known() {
    let text = example_config();
    let config = load(&text).unwrap_or_else(|e| panic!("deploy/config.example.toml: {e}"));
    let net = config.network.expect("[network] section");
    assert_eq!(net.sync_interval_secs, Some(30));
    assert_eq!(
        config.api.and_then(|a| a.listen).as_deref(),
        Some("127.0.0.1:7878")
    );

    // The commented-out settings are keys the loader knows too: uncommented, they load.
    let mut uncommented = 0;
    let all: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(setting)
                if setting.split_once(" = ").is_some_and(|(k, _)| {
                    k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                uncommented += 1;
                format!("{setting}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    assert!(
        uncommented >= 6,
        "only {uncommented} commented-out settings found"
    );
    let config =
        load(&all).unwrap_or_else(|e| panic!("example with its settings uncommented: {e}"));
    let net = config.network.expect("[network] section");
    assert_eq!(net.max_connections_per_ip, Some(8));
    assert!(net.relays.is_some() && net.external_addresses.is_some());

    // And the loader does refuse a key it does not know, naming it.
    let typo = text.replace("sync_interval_secs = 30", "sync_interval_sec = 30");
    let err = load(&typo).expect_err("unknown key refused").to_string();
    assert!(err.contains("sync_interval_sec"), "{err}");
}
