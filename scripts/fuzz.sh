#!/usr/bin/env bash
# Builds the libFuzzer harnesses of Fuzz/ (ASan + libFuzzer) and runs each named fuzzer (all by default) for
# FUZZ_RUNS executions on a copy of its committed corpus, one at a time and niced. Logs and any crashing input go to
# Fuzz/.build/fuzz/<target>/. See docs/fuzzing.md.
#   scripts/fuzz.sh [safetensors|bundle|idx|image|pth ...]
#   FUZZ_RUNS=1000000  FUZZ_SANITIZE=fuzzer,address  FUZZ_ARGS="extra libFuzzer flags"
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# SwiftPM names a package after its folder: a checkout folder called "fuzz" would clash with Fuzz/ itself.
if [ "$(basename "$root" | tr '[:upper:]' '[:lower:]')" = fuzz ]; then
  echo "fuzz.sh: the checkout's folder is named '$(basename "$root")', which SwiftPM confuses with Fuzz/; use a checkout" \
       "in a folder of another name (e.g. a bind mount: mount --bind $root /tmp/swiftai)" >&2
  exit 2
fi
runs=${FUZZ_RUNS:-1000000}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors bundle idx image pth)

cd Fuzz
# SwiftPM starts its compilers at nice 0 (each in its own process group) whatever its own niceness: renice the
# build's descendants every second while it runs.
renice_tree() { local k; for k in $(ps -o pid= --ppid "$1"); do renice -n 19 -p "$k" >/dev/null 2>&1 || true; renice_tree "$k"; done; }
nice -n 19 swift build -c release -Xswiftc -sanitize="${FUZZ_SANITIZE:-fuzzer,address}" -Xswiftc -parse-as-library &
build=$!
while kill -0 $build 2>/dev/null; do renice_tree $build; sleep 1; done
wait $build

status=0
for t in "${targets[@]}"; do
  case $t in
    safetensors) product=FuzzSafetensors; max_len=4096 ;;
    bundle) product=FuzzBundle; max_len=70000 ;;  # the valid cnn bundle of the corpus is 63 KB
    idx) product=FuzzIDX; max_len=4096 ;;
    image) product=FuzzImage; max_len=16384 ;;
    pth) product=FuzzPth; max_len=8192 ;;
    *) echo "fuzz.sh: unknown target '$t' (safetensors, bundle, idx, image, pth)" >&2; exit 2 ;;
  esac
  out=.build/fuzz/$t
  rm -rf "$out" && mkdir -p "$out/corpus"
  cp corpus/"$t"/* "$out/corpus/"  # the committed corpus is not grown
  echo "== $t: $runs runs (log: Fuzz/$out/log)"
  dict=()
  [ -f "dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
  # One process (no -jobs/-workers), niced: fuzzing shares the machine. Swift's own crash backtracer is off so that
  # libFuzzer handles a trap at once and saves the input.
  # shellcheck disable=SC2086
  if ! SWIFT_BACKTRACE=enable=no OMP_NUM_THREADS=1 nice -n 19 ".build/release/$product" "$out/corpus" "${dict[@]}" \
      -runs="$runs" -max_len=$max_len -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$out/" ${FUZZ_ARGS:-} > "$out/log" 2>&1; then
    echo "!! $t failed: $(grep -m1 -E 'ERROR|Test unit written' "$out/log" || tail -1 "$out/log")"
    status=1
  fi
  grep -E '^#[0-9]+ +DONE|^Done|stat::' "$out/log" || true
done
exit $status
