#!/usr/bin/env bash
# Runs fuzz targets for a bounded time each, at most $JOBS at once, under nice -n 19.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 600 seconds, every target; JOBS=2)
#
# EXTRA adds libFuzzer flags, e.g. EXTRA=-use_value_profile=1.
#
# Each target grows its working corpus in fuzz/work/<target>/ (seeded from fuzz/corpus/), logs
# to fuzz/logs/<target>.log and leaves crashes in fuzz/artifacts/<target>/. Needs nightly and
# cargo-fuzz (`cargo install cargo-fuzz`). The final "#N DONE" line of each log holds the
# figures: executions, cov (edges), ft (features), corp (entries/size).
set -eu
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^luahttpd-fuzz$')}
jobs=${JOBS:-2}
cargo +nightly fuzz build -s none -a
mkdir -p work logs
running=0
for t in $targets; do
    mkdir -p "work/$t"
    nice -n 19 cargo +nightly fuzz run -s none -a "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
        -print_final_stats=1 ${EXTRA:-} >"logs/$t.log" 2>&1 &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true
for t in $targets; do
    printf '%-22s %s\n' "$t" "$(grep -E '^#[0-9]+[[:space:]]+DONE' "logs/$t.log" | tail -1)"
done
