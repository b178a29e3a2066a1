#!/bin/bash
# The calibration study (make study): issue #16's acceptance protocol,
# test/study/calibration.sql, in a throwaway cluster: STUDY_DRAWS bootstrap
# calibration sets per size for calibrate (default 500, the issue's least)
# and STUDY_SPLITS splits for train_and_calibrate (default 50: each trains
# six models), about six minutes on 2 cores; prints validity and efficiency
# per method, size and target, and writes them to test/study/results.txt.
# A study, not a test: it fails only if something does not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/cluster.sh"
COPY_BACK=test/study/results.txt
drop_root test/study/run.sh "$@"

WORK=$(mktemp -d /tmp/pg_triage-study.XXXXXX)
cluster_start "$WORK/pg"
trap 'cluster_stop; rm -rf "$WORK"' EXIT
psql -X -q -v ON_ERROR_STOP=1 -v csv="$ROOT/test/data/fine_foods_train.csv" \
	-v draws="${STUDY_DRAWS:-500}" -v splits="${STUDY_SPLITS:-50}" -f "$ROOT/test/study/calibration.sql" 2>&1 |
	grep -v 'NOTICE:' | tee "$WORK/results.txt"
{
	echo "# make study, $(date -u +%Y-%m-%d), ${STUDY_DRAWS:-500} draws, ${STUDY_SPLITS:-50} splits"
	cat "$WORK/results.txt"
} >"$ROOT/test/study/results.txt"
