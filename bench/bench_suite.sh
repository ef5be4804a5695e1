#!/usr/bin/env bash
# Wall time of the whole test suite and peak RSS of the quickstart, as a table.
# Targets (2 cores): make test ≤ 7 min 30 s (its notebook step and pytest), quickstart peak RSS ≤ 3 GB.
# Usage: bash bench/bench_suite.sh            (run from the repository root, after `make venv`)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
peak_rss_gb() {  # peak RSS (GB) of a command and all its children, via GNU time if present, else python's resource
  local log=$(mktemp)
  .venv/bin/python - "$log" "$@" <<'PY'
import resource, subprocess, sys, time
log, cmd = sys.argv[1], sys.argv[2:]
t = time.perf_counter(); rc = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
open(log, "w").write(f"{rc} {time.perf_counter() - t:.1f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6:.2f}")
PY
  cat "$log"
}
probe() { OMP_NUM_THREADS=${1:-1} $BIN/python -c "from ris_nb.machine import probe_ms; print(f'{probe_ms(reps=20):.2f}')"; }
p0=$(probe 1); q0=$(probe 2)
# the same two commands as `make test`
read rc1 t1 m1 < <(OMP_NUM_THREADS=1 peak_rss_gb $BIN/python tools/check_notebooks.py --n_workers 2)
read rc2 t2 m2 < <(OMP_NUM_THREADS=1 peak_rss_gb $BIN/python -m pytest tests -q -p no:cacheprovider -n auto --maxprocesses 4 --dist loadgroup)
tmp=$(mktemp -d)
read rc3 t3 m3 < <(OMP_NUM_THREADS=2 peak_rss_gb bash -c "$BIN/ris_nb synth --out $tmp/shaperefs --n-images ${QS_IMAGES:-3000} --seed 0 && $BIN/ris_nb train --preset ${QS_PRESET:-magnet_tiny} --data $tmp/shaperefs --out $tmp/run")
p1=$(probe 1); q1=$(probe 2)
echo
echo "512³ float32 matmul probe: ${p0} ms before, ${p1} ms after on one thread; ${q0} / ${q1} ms on two (compare times only beside their probes)"
echo "| job | exit | wall time (s) | peak RSS of one process (GB) | target |"
echo "|---|---|---|---|---|"
echo "| notebooks (tools/check_notebooks.py) | $rc1 | $t1 | $m1 | |"
echo "| pytest tests/ | $rc2 | $t2 | $m2 | |"
echo "| make test (the two above) | $(( rc1 || rc2 )) | $(awk "BEGIN {print $t1 + $t2}") | | ≤ 450 s |"
echo "| quickstart (synth + train + eval) | $rc3 | $t3 | $m3 | ≤ 3 GB |"
