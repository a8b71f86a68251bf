#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (not part of CI's default path).
#
#   fuzz/run.sh               # 60 s per target
#   FUZZ_SECONDS=300 fuzz/run.sh lines session   # chosen targets, 5 min each
#
# Needs `cargo install cargo-fuzz`. Only a stable toolchain is assumed: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass its -Z flags, and `--sanitizer none` avoids needing a nightly sanitizer
# runtime (the targets check their invariants with assertions). Crashes land in
# fuzz/artifacts/<target>/; turn each into a regression test in core/tests.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
mkdir -p target
status=0
for t in "${targets[@]}"; do
    echo "== $t: ${seconds}s"
    if ! cargo fuzz run --sanitizer none "$t" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
        | tee "target/fuzz-$t.log" | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==|.*(panicked|crash|Test unit written))'; then
        :
    fi
    if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
        echo "!! $t: crashes in fuzz/artifacts/$t"
        status=1
    fi
done
exit $status
