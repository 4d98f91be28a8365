#!/usr/bin/env bash
# Builds the node image from deploy/Containerfile and runs deploy/compose.yaml with it:
# three nodes (node-a, node-b, node-c) whose homes are made with the image's own
# `coalition` (init, charter draft/sign/adopt, import), where node-b and node-c know
# node-a only as /dns4/node-a/tcp/7400/p2p/PEERID, found on the compose network. A
# finding recorded on node-b must then reach node-a and node-c. Everything it creates
# (containers, network, image, homes) is removed at the end, whatever the outcome.
#
# Needs root, podman and podman-compose (Debian: apt-get install podman podman-compose
# runc mmdebstrap). Not part of scripts/test.sh: it takes minutes and root.
#
# Exit status: 0 passed, 1 failed, 77 skipped (no usable container runtime here; with
# CONTAINER_TEST_REQUIRED=1 that is a failure instead).
#
# Environment:
#   COALITION_BIN=PATH        package this binary (built on a Debian 12 / glibc 2.36 host);
#                             default: `cargo build -p coalition-node --bin coalition`.
#   CONTAINER_TEST_FROM_SOURCE=1
#                             build the image with the Containerfile's Rust stage instead
#                             (needs the rust and debian images from Docker Hub).
#   CONTAINER_TEST_BASE=IMAGE runtime base image (a Debian 12). Default: debian:bookworm-slim
#                             if present or pullable, else localhost/coalition-base:bookworm,
#                             made once with mmdebstrap from the Debian mirror and kept.
#   CONTAINER_TEST_KEEP=1     keep the containers and homes (and print where) for debugging.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
SKIP=77
DEADLINE_SECS=90
project="coalition-test-$$"
image="localhost/coalition-test:$$"
official_base="docker.io/library/debian:bookworm-slim"
local_base="localhost/coalition-base:bookworm"
passphrase="container test passphrase $$"

say() { printf '== %s\n' "$*" >&2; }
fail() {
    printf 'FAILED container test: %s\n' "$*" >&2
    exit 1
}
skip() {
    if [ "${CONTAINER_TEST_REQUIRED:-}" = "1" ]; then
        fail "CONTAINER_TEST_REQUIRED=1 but $*"
    fi
    printf 'SKIPPED container test: %s\n' "$*" >&2
    exit "$SKIP"
}

# --- Is there a runtime to test with? -------------------------------------------------
command -v podman >/dev/null 2>&1 ||
    skip "podman is not installed (Debian: apt-get install podman podman-compose runc)"
command -v podman-compose >/dev/null 2>&1 ||
    skip "podman-compose is not installed (Debian: apt-get install podman-compose)"
[ "$(id -u)" = "0" ] ||
    skip "run as root: the homes are handed to the image's user with chown (rootless podman is not covered)"

work="$(mktemp -d /tmp/coalition-container-test.XXXXXX)"
compose_dir="$work/deploy"
started=""

compose() { podman-compose -p "$project" -f "$compose_dir/compose.yaml" "$@"; }

container_of() {
    podman ps -a --filter "label=com.docker.compose.project=$project" \
        --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -n1
}

cleanup() {
    status=$?
    set +e
    if [ -n "$started" ] && [ "$status" != 0 ] && [ "$status" != "$SKIP" ]; then
        for s in node-a node-b node-c; do
            c="$(container_of "$s")"
            [ -n "$c" ] || continue
            printf -- '--- last log lines of %s (%s)\n' "$s" "$c" >&2
            podman logs --tail 40 "$c" >&2 2>&1
        done
    fi
    if [ "${CONTAINER_TEST_KEEP:-}" = "1" ]; then
        say "kept: project $project, image $image, homes in $compose_dir"
        exit "$status"
    fi
    if [ -n "$started" ]; then
        compose down -t 5 >/dev/null 2>&1
        podman network rm -f "${project}_coalition" >/dev/null 2>&1
    fi
    podman rmi -f "$image" >/dev/null 2>&1
    if [ -f "$work/dangling.before" ]; then
        podman images -q --filter dangling=true | sort | comm -13 "$work/dangling.before" - |
            xargs -r podman rmi >/dev/null 2>&1
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- A base image and a runtime that starts containers --------------------------------
base="${CONTAINER_TEST_BASE:-}"
if [ -z "$base" ]; then
    if podman image exists "$official_base" ||
        timeout 60 podman pull -q "$official_base" >/dev/null 2>&1; then
        base="$official_base"
    elif podman image exists "$local_base"; then
        base="$local_base"
    elif command -v mmdebstrap >/dev/null 2>&1; then
        say "no registry image: building $local_base with mmdebstrap from the Debian mirror (kept for next runs)"
        mmdebstrap --variant=minbase --mode=root --quiet bookworm "$work/base.tar" ||
            skip "$official_base cannot be pulled and mmdebstrap could not build a base"
        podman import --quiet --change 'CMD ["/bin/bash"]' "$work/base.tar" "$local_base" >/dev/null
        rm -f "$work/base.tar"
        base="$local_base"
    else
        skip "$official_base cannot be pulled and mmdebstrap is missing to build a local Debian base (apt-get install mmdebstrap)"
    fi
fi
say "base image: $base"

# Some hosts (a VM without CAP_SYS_RESOURCE, cgroups v1+v2 hybrid) refuse podman's
# defaults: raising RLIMIT_NOFILE/NPROC, and crun on hybrid cgroups. Then retry with
# the host's own limits and runc, in a containers.conf used by this script only.
if ! probe="$(podman run --rm "$base" true 2>&1)"; then
    nofile="$(ulimit -Hn)"
    [ "$nofile" = "unlimited" ] && nofile=65536
    runtime=""
    command -v runc >/dev/null 2>&1 && runtime='runtime = "runc"'
    cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
$runtime
EOF
    export CONTAINERS_CONF="$work/containers.conf"
    probe2="$(podman run --rm "$base" true 2>&1)" ||
        skip "podman cannot start a container here: $probe / with runc and host limits: $probe2"
    say "podman's defaults failed ($probe); using ${runtime:-crun} with nofile=$nofile, nproc=4096"
fi

# --- The image ------------------------------------------------------------------------
# Build stages leave untagged images; those that appear during this run are removed.
podman images -q --filter dangling=true | sort >"$work/dangling.before"
if [ "${CONTAINER_TEST_FROM_SOURCE:-}" = "1" ]; then
    say "building $image from source (Containerfile's Rust stage)"
    podman build -q -f "$repo/deploy/Containerfile" -t "$image" \
        --build-arg BASE="$base" "$repo" >/dev/null
else
    bin="${COALITION_BIN:-}"
    if [ -z "$bin" ]; then
        say "building the coalition binary (cargo build -p coalition-node --bin coalition)"
        (cd "$repo" && cargo build --locked -p coalition-node --bin coalition \
            --message-format=json-render-diagnostics) >"$work/cargo.json" ||
            fail "cargo build of the coalition binary failed"
        bin="$(python3 -c 'import json,sys
exe=[m.get("executable") for m in map(json.loads, open(sys.argv[1])) if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="coalition"]
print(([e for e in exe if e] or [""])[-1])' "$work/cargo.json")"
    fi
    [ -x "$bin" ] || fail "no executable coalition binary at $bin"
    mkdir "$work/bin"
    cp "$bin" "$work/bin/coalition"
    # Debug builds carry hundreds of MB of debug information the image does not need.
    command -v strip >/dev/null 2>&1 && strip --strip-debug "$work/bin/coalition"
    say "building $image from $bin"
    podman build -q -f "$repo/deploy/Containerfile" -t "$image" \
        --build-arg BINARY=prebuilt --build-context bin="$work/bin" \
        --build-arg BASE="$base" "$repo" >/dev/null
fi
podman run --rm "$image" --version >/dev/null ||
    fail "the image's coalition does not start (a binary built against a newer glibc than Debian 12's?)"
uid="$(podman run --rm --entrypoint id "$image" -u)"
gid="$(podman run --rm --entrypoint id "$image" -g)"

# --- Three homes and a charter, made with the image -----------------------------------
mkdir -p "$compose_dir/homes/a" "$compose_dir/homes/b" "$compose_dir/homes/c" \
    "$compose_dir/secrets" "$work/exchange"
cp "$repo/deploy/compose.yaml" "$compose_dir/compose.yaml"
for n in a b c; do
    printf '%s' "$passphrase $n" >"$compose_dir/secrets/passphrase_$n"
    chmod 0400 "$compose_dir/secrets/passphrase_$n"
done
chown -R "$uid:$gid" "$compose_dir/homes" "$compose_dir/secrets" "$work/exchange"
chmod 0700 "$compose_dir/homes"/*

# `cli N ARGS…`: the image's coalition on home N, with the exchange directory at /x;
# prints its standard output, and its standard error only if it fails.
cli() {
    local n="$1"
    shift
    podman run --rm -i --network none \
        -v "$compose_dir/homes/$n:/var/lib/coalition" -v "$work/exchange:/x" \
        -e COALITION_PASSPHRASE="$passphrase $n" --entrypoint coalition "$image" "$@" \
        2>"$work/cli.err" || fail "coalition $* (home $n): $(cat "$work/cli.err")"
}

say "founding a coalition of three organisations in the image"
cli a init --org "Container Test A" --country RS >/dev/null
cli b init --org "Container Test B" --country MK >/dev/null
cli c init --org "Container Test C" --country GE >/dev/null
for n in a b c; do
    cli "$n" identity export >"$work/exchange/card_$n.json"
done
cli a charter draft --name "Container test coalition" --threshold 2 \
    --member /x/card_a.json --member /x/card_b.json --member /x/card_c.json \
    -o /x/draft.json >/dev/null
for n in a b c; do cli "$n" charter sign /x/draft.json >/dev/null; done
cli a charter adopt /x/draft.json >/dev/null
cli a export --format bundle -o /x/charter.bundle >/dev/null
cli b import /x/charter.bundle >/dev/null
cli c import /x/charter.bundle >/dev/null

# `configure N [BOOTSTRAP]`: TCP on every interface, port 7400; syncs every 2 s.
configure() {
    local cfg="$compose_dir/homes/$1/config.toml" boot="${2:-}"
    {
        printf '\n[network]\nlisten = ["/ip4/0.0.0.0/tcp/7400"]\nsync_interval_secs = 2\n'
        [ -n "$boot" ] && printf 'bootstrap = ["%s"]\n' "$boot"
        printf '\n[api]\nlisten = "127.0.0.1:7878"\n'
    } >>"$cfg"
}

# --- compose up: node-a first, for its peer id -----------------------------------------
configure a
export COALITION_IMAGE="$image"
started=yes
say "compose up node-a"
compose up -d --no-build node-a >"$work/compose-a.log" 2>&1 ||
    fail "compose up node-a: $(cat "$work/compose-a.log")"
peer=""
end=$((SECONDS + DEADLINE_SECS))
while [ -z "$peer" ]; do
    [ "$SECONDS" -lt "$end" ] || fail "node-a printed no 'listening on …/p2p/PEERID' within ${DEADLINE_SECS}s"
    sleep 1
    peer="$(podman logs "$(container_of node-a)" 2>&1 |
        sed -n 's|.*listening on /ip4/[^ ]*/tcp/7400/p2p/\([1-9A-HJ-NP-Za-km-z]*\).*|\1|p' | head -n1)"
done
boot="/dns4/node-a/tcp/7400/p2p/$peer"
say "node-a is $peer; node-b and node-c bootstrap from $boot"
configure b "$boot"
configure c "$boot"
compose up -d --no-build >"$work/compose-bc.log" 2>&1 ||
    fail "compose up: $(cat "$work/compose-bc.log")"
for s in node-b node-c; do
    [ -n "$(container_of "$s")" ] || fail "compose did not create $s: $(cat "$work/compose-bc.log")"
done

# `node S ARGS…`: coalition inside service S's running container, passphrase from its secret.
node() {
    local s="$1" n="${1#node-}"
    shift
    podman exec -i "$(container_of "$s")" sh -c \
        "COALITION_PASSPHRASE=\"\$(cat /run/secrets/passphrase_$n)\" exec coalition \"\$@\"" \
        coalition "$@"
}

say "recording a finding on node-b"
finding="$(node node-b finding add - --share coalition \
    <"$repo/schemas/examples/01-rs-belgrade-protest-force.json" 2>/dev/null | head -n1)"
[[ "$finding" =~ ^[0-9a-f]{64}$ ]] || fail "finding add on node-b printed '$finding', not a record id"

start=$SECONDS
end=$((SECONDS + DEADLINE_SECS))
for s in node-a node-c; do
    until node "$s" finding list --json 2>/dev/null | grep -q "\"$finding\""; do
        [ "$SECONDS" -lt "$end" ] ||
            fail "$s did not receive finding $finding from node-b within ${DEADLINE_SECS}s"
        sleep 1
    done
    say "$s holds the finding recorded on node-b ($((SECONDS - start)) s)"
done
# node-c was told of node-a only, by name; it must be connected to it at that address.
peers="$(node node-c peers 2>/dev/null || true)"
grep -qF "$boot" <<<"$peers" || fail "node-c is not connected to node-a at $boot: $peers"

echo "PASSED container test: image built; compose ran 3 nodes; node-a and node-c (connected to $boot) hold node-b's finding after $((SECONDS - start)) s"
