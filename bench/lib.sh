# Shared by the benchmark scripts (sourced, not run).
#
# bench_git_state ROOT PATH...: sets BENCH_GIT to the short commit id the measured code comes
# from, and BENCH_DIRTY to a non-empty description when any of PATHs (what the benchmark
# measures) differs from that commit. A benchmark measured on a dirty tree is printed but never
# replaces the published tables in docs/benchmarks.md: published figures always name a commit
# that anyone can check out and measure again.
bench_git_state() {
  local root=$1; shift
  BENCH_GIT=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  BENCH_DIRTY=
  if [ "$BENCH_GIT" = unknown ]; then
    BENCH_DIRTY="not a git checkout"
  elif [ -n "$(git -C "$root" status --porcelain -- "$@" 2>/dev/null | head -1)" ]; then
    BENCH_DIRTY="uncommitted changes in $*"
  fi
}

# bench_may_publish NAME: 0 when the results may replace the published section; otherwise says
# why on stderr and returns 1.
bench_may_publish() {
  if [ -n "$BENCH_DIRTY" ]; then
    echo "$1: measured on $BENCH_GIT with $BENCH_DIRTY: printed above, docs/benchmarks.md left as it is (commit first to publish)" >&2
    return 1
  fi
  return 0
}

# bench_build ROOT TARGET: builds a benchmark program (CMake option WALCAST_BENCH, optimized) in
# $WALCAST_BENCH_BUILD_DIR (default ROOT/build-bench) against the same library walcast links,
# and prints the path of the binary. The build log is kept beside it.
bench_build() {
  local root=$1 target=$2
  local dir=${WALCAST_BENCH_BUILD_DIR:-$root/build-bench}
  mkdir -p "$dir"
  if ! { cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWALCAST_TESTS=OFF -DWALCAST_BENCH=ON &&
         cmake --build "$dir" -j"$(nproc)" --target "$target"; } >"$dir/bench-build-$target.log" 2>&1; then
    echo "bench: building $target failed; see $dir/bench-build-$target.log" >&2
    return 1
  fi
  echo "$dir/$target"
}

# bench_replace_section FILE SECTION_FILE NAME: puts SECTION_FILE (which starts with
# <!-- bench:NAME:begin --> and ends with <!-- bench:NAME:end -->) in place of that section of
# FILE, or appends it when FILE has none yet.
bench_replace_section() {
  if [ -f "$1" ] && grep -q "<!-- bench:$3:begin -->" "$1"; then
    python3 - "$1" "$2" "$3" <<'PY'
import sys
path, sec, name = sys.argv[1], open(sys.argv[2]).read().rstrip("\n"), sys.argv[3]
doc = open(path).read()
b, e = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
i, j = doc.index(b), doc.index(e) + len(e)
open(path, "w").write(doc[:i] + sec + doc[j:])
PY
  else
    { echo; cat "$2"; } >>"$1"
  fi
}
