#!/usr/bin/env bash
# cargo deny: licences, bans, sources, and advisories checked against the RustSec
# advisory database snapshot at ../shared/advisory-db (relative to the repository root),
# with no network access. Installs the pinned cargo-deny when missing.
#
#   scripts/deny.sh            ADVISORY_DB=/path/to/advisory-db scripts/deny.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DENY_VERSION=0.20.2
DB="${ADVISORY_DB:-../shared/advisory-db}"

if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $DENY_VERSION" ]; then
    echo "installing cargo-deny $DENY_VERSION (a release build: minutes on an idle machine, over an hour on 2 saturated cores) ..."
    start=$(date +%s)
    cargo install --locked cargo-deny --version "$DENY_VERSION"
    echo "cargo-deny installed in $(( $(date +%s) - start ))s"
fi

if [ ! -d "$DB/crates" ]; then
    echo "deny.sh: no RustSec advisory database at $DB (expected its crates/ folder)" >&2
    exit 1
fi
# cargo-deny reads <db-path>/advisory-db-<hash of the url in deny.toml> and takes the
# database's date from its git metadata; the snapshot is plain files, so it is copied
# there as a one-commit repository dated as the snapshot says.
DBS=target/advisory-dbs
HERE="$DBS/advisory-db-3157b0e258782691"
[ -d "$HERE" ] && chmod -R u+w "$HERE" && rm -rf "$HERE"
mkdir -p "$DBS"
cp -r "$DB" "$HERE"
chmod -R u+w "$HERE" # CI's copy of shared/ has no write bits
when=$(sed -n 's/^commit [0-9a-f]* (\(.*\))$/\1/p' "$DB/SNAPSHOT.txt" 2>/dev/null || true)
echo "advisory database: $DB, snapshot $(head -2 "$DB/SNAPSHOT.txt" 2>/dev/null | tail -1)"
(
    cd "$HERE"
    git init -q -b main
    git add -A
    if [ -n "$when" ]; then
        export GIT_AUTHOR_DATE="${when}T00:00:00Z" GIT_COMMITTER_DATE="${when}T00:00:00Z"
    fi
    git -c user.name=snapshot -c user.email=snapshot@invalid commit -q -m snapshot
)
# cargo-deny reads the metadata of every package in Cargo.lock, for every platform, and
# --offline only lets it use what is already downloaded: fetch them all from crates.io
# first (a build only downloads the ones of this platform).
cargo fetch --locked
cargo deny --offline --locked check
