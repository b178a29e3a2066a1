#!/bin/bash
# The calibration study (make study): test/study/calibration.sql over
# STUDY_SPLITS random splits of the shared reviews (default 50, about ten
# minutes on 2 cores) in a throwaway cluster; prints how often the routing
# criteria hold for calibrate and for train_and_calibrate, and writes that
# to test/study/results.txt.  A study, not a test: it fails only if
# something does not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/cluster.sh"
COPY_BACK=test/study/results.txt
drop_root test/study/run.sh "$@"

WORK=$(mktemp -d /tmp/pg_triage-study.XXXXXX)
cluster_start "$WORK/pg"
trap 'cluster_stop; rm -rf "$WORK"' EXIT
psql -X -q -v ON_ERROR_STOP=1 -v csv="$ROOT/test/data/fine_foods_train.csv" \
	-v splits="${STUDY_SPLITS:-50}" -f "$ROOT/test/study/calibration.sql" 2>&1 |
	grep -v 'NOTICE:  split' | tee "$WORK/results.txt"
{
	echo "# make study, $(date -u +%Y-%m-%d), ${STUDY_SPLITS:-50} splits"
	cat "$WORK/results.txt"
} >"$ROOT/test/study/results.txt"
