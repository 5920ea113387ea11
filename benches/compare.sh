#!/usr/bin/env bash
# Before/after comparison of `cargo bench --bench backup` on two commits.
#
#   benches/compare.sh [-n RUNS] [--callgrind] [--own-benches] A B [-- BENCH ARGS]
#
# Builds each commit in a temporary worktree (one shared target dir, so dependencies build
# once), with this checkout's benches/ copied over both unless --own-benches, so the same
# measuring code runs against both libraries. Then either
# - (default) runs the two bench binaries RUNS times each, in the order A B B A A B ...
#   (drift falls on both), and prints per row of the bench's tables: the min and median over
#   the runs of each commit, B/A of the medians, and A's own spread (max/min over its runs),
#   the run-to-run noise; a time is marked `slower` when B/A exceeds that spread and B's min
#   is above A's median. BENCH ARGS default to --mib 200 --rounds 5 --rss-mib 200;
# - or, with --callgrind, runs each route of `--profile` once per commit under
#   `valgrind --tool=callgrind` and prints the instructions of the measured call, A, B and
#   B/A (repeatable to a few instructions, so small differences show; kernel time is not
#   counted).
#
# Outputs stay in $COMPARE_DIR (default target/compare/<A>-<B>), the binaries included.
# Set COMPARE_MIB for the callgrind database size (default 16).
set -euo pipefail

runs=5
mode=time
own=0
while [ $# -gt 0 ]; do
    case "$1" in
    -n) runs=$2; shift 2 ;;
    --callgrind) mode=callgrind; shift ;;
    --own-benches) own=1; shift ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
    esac
done
[ $# -ge 2 ] || { echo "usage: $0 [-n RUNS] [--callgrind] [--own-benches] A B [-- BENCH ARGS]" >&2; exit 2; }
if [ "$mode" = callgrind ]; then command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 2; }; fi
repo=$(git rev-parse --show-toplevel)
a=$(git -C "$repo" rev-parse --short "$1^{commit}")
b=$(git -C "$repo" rev-parse --short "$2^{commit}")
shift 2
[ "${1:-}" = "--" ] && shift
bench_args=("$@")
[ ${#bench_args[@]} -gt 0 ] || bench_args=(--mib 200 --rounds 5 --rss-mib 200)

out=${COMPARE_DIR:-$repo/target/compare/$a-$b}
mkdir -p "$out"
# The checkout's own target dir: dependencies are shared, each worktree path builds its own crate.
export CARGO_TARGET_DIR=${COMPARE_TARGET:-$repo/target}
trees=$(mktemp -d)
cleanup() {
    for l in A B; do [ -d "$trees/$l" ] && git -C "$repo" worktree remove --force "$trees/$l"; done
    rm -rf "$trees"
}
trap cleanup EXIT

# Labels A and B; the same commit twice measures the noise alone (one build, run twice).
declare -A bin tree commit=([A]=$a [B]=$b)
for l in A B; do
    c=${commit[$l]}
    if [ "$l" = B ] && [ "$b" = "$a" ]; then bin[B]=${bin[A]}; tree[B]=${tree[A]}; continue; fi
    tree[$l]=$trees/$l
    git -C "$repo" worktree add --detach --quiet "${tree[$l]}" "$c"
    if [ "$own" = 0 ]; then
        rm -rf "${tree[$l]}/benches"
        cp -r "$repo/benches" "${tree[$l]}/benches"
    fi
    exe=$(cd "${tree[$l]}" && cargo bench --bench backup --no-run --message-format=json 2>"$out/build-$l.log" |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "backup":
        print(m["executable"])' | tail -1)
    [ -n "$exe" ] || { cat "$out/build-$l.log" >&2; exit 1; }
    cp "$exe" "$out/backup-$l"
    bin[$l]=$out/backup-$l
done
echo "# A = $a ($(git -C "$repo" log -1 --format=%s "$a" | cut -c1-60))"
echo "# B = $b ($(git -C "$repo" log -1 --format=%s "$b" | cut -c1-60))"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$mode" = callgrind ]; then
    mib=${COMPARE_MIB:-16}
    routes=$("${bin[A]}" --profile list 0 .)
    echo "# callgrind, one call per route, $mib MiB database: instructions (Ir) of the measured call"
    echo
    echo "| route | A | B | B/A |"
    echo "| --- | ---: | ---: | ---: |"
    for r in $routes; do
        declare -A ir=()
        for l in A B; do
            dir=$(mktemp -d)
            (cd "${tree[$l]}" && valgrind --tool=callgrind --collect-atstart=no \
                --toggle-collect='*measured*' --callgrind-out-file="$out/callgrind-$r-$l.out" \
                "${bin[$l]}" --profile "$r" "$mib" "$dir" 2>"$out/callgrind-$r-$l.log" >/dev/null)
            rm -rf "$dir"
            ir[$l]=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/callgrind-$r-$l.log")
        done
        awk -v r="$r" -v x="${ir[A]}" -v y="${ir[B]}" \
            'BEGIN { printf "| %s | %d | %d | %.4f |\n", r, x, y, y / x }'
    done
    exit 0
fi

echo "# bench args: ${bench_args[*]}; $runs runs of each, order A B B A ..."
for i in $(seq 1 "$runs"); do
    if [ $((i % 2)) = 1 ]; then order="A B"; else order="B A"; fi
    for l in $order; do
        echo "run $i: $l" >&2
        (cd "${tree[$l]}" && "${bin[$l]}" "${bench_args[@]}" >"$out/run-$l-$i.md" 2>"$out/run-$l-$i.err") ||
            echo "run $i of $l failed, its rows are partial: see $out/run-$l-$i.err" >&2
    done
done
python3 - "$out" "$runs" <<'EOF'
import re, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
a, b = "A", "B"
qty = re.compile(r"^(-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*(s|ms|µs|ns|MiB|%|x)?$")
scale = {"s": 1e3, "ms": 1.0, "µs": 1e-3, "ns": 1e-6}

def rows(path):
    """(section, row) -> (value, unit) for every table row with a figure."""
    found, section, lines = {}, "", open(path, encoding="utf-8").read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("### "):
            section = line[4:].strip()
        if not line.startswith("| ") or line.startswith("| ---"):
            continue
        if i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            continue  # a header
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for cell in cells[1:]:
            m = qty.match(cell)
            if m:
                v, unit = float(m.group(1).replace(",", "")), m.group(2) or ""
                if unit in scale:
                    v, unit = v * scale[unit], "ms"
                found[(section, cells[0])] = (v, unit)
                break
    return found

data = {c: [rows(f"{out}/run-{c}-{i}.md") for i in range(1, runs + 1)] for c in (a, b)}
keys = list(dict.fromkeys(k for r in data[a] + data[b] for k in r))
print(f"\n| section | row | unit | A min | A median | B min | B median | B/A | A max/min | |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for k in keys:
    va = [r[k][0] for r in data[a] if k in r]
    vb = [r[k][0] for r in data[b] if k in r]
    if not va or not vb:
        continue
    unit = next(r[k][1] for r in data[a] if k in r)
    ma, mb = statistics.median(va), statistics.median(vb)
    spread = max(va) / min(va) if min(va) > 0 else float("nan")
    ratio = mb / ma if ma else float("nan")
    # Times only: slower beyond the noise of A's own runs.
    slower = unit == "ms" and ratio > spread and min(vb) > ma
    print(f"| {k[0][:40]} | {k[1][:60]} | {unit} | {min(va):.4g} | {ma:.4g} | {min(vb):.4g} "
          f"| {mb:.4g} | {ratio:.3f} | {spread:.3f} | {'slower' if slower else ''} |")
EOF
