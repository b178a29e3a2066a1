#!/bin/bash
# Rebuilds the shipped models with pg_triage itself, in a throwaway cluster
# (make models installs the extension first).
#
#   fine_foods_sentiment.ftz: trained by triage.train() on 3,200 of the 4,000
#   reviews of test/data/fine_foods_train.csv (every 5th held out), quantized
#   the fastText way; exported with triage.export_fasttext(), so the fasttext
#   tool reads it too.  Deterministic: one thread, a fixed seed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/test/cluster.sh"
COPY_BACK="models/fine_foods_sentiment.ftz models/fine_foods_sentiment.metrics.json" \
	drop_root models/build.sh "$@"
cd "$ROOT"

WORK=$(mktemp -d /tmp/pg_triage-models.XXXXXX)
cluster_start "$WORK"
OUT=$ROOT/models

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION pg_triage;
CREATE TABLE food (product text, review text, score text);
COPY food FROM '$ROOT/test/data/fine_foods_train.csv' WITH (FORMAT csv, HEADER);
CREATE TABLE split AS SELECT row_number() OVER () AS n, review, score FROM food;

SELECT triage.train('sentiment', 'SELECT review, score FROM split WHERE n % 5 <> 0',
  '{"dim": 50, "epoch": 25, "lr": 0.1, "wordNgrams": 2, "minn": 2, "maxn": 4,
    "bucket": 200000, "seed": 1,
    "quantize": {"cutoff": 20000, "retrain": true, "dsub": 2, "qnorm": true}}') AS version \gset
-- calibrate on one half of the held-out reviews, report on the other
SELECT triage.calibrate_temperature('sentiment', 'SELECT review, score FROM split WHERE n % 10 = 0')
  AS calibration \gset
\pset tuples_only on
\pset format unaligned
\o $WORK/card.txt
SELECT jsonb_pretty(jsonb_build_object(
  'bytes', octet_length(data),
  'params', params,
  'train', metrics->'train',
  'calibration', metrics->'calibration',
  'heldout_800', triage.evaluate('sentiment', 'SELECT review, score FROM split WHERE n % 5 = 0')
                   - 'reliability' - 'model' - 'version',
  'heldout_400_not_used_for_calibration',
                 triage.evaluate('sentiment', 'SELECT review, score FROM split WHERE n % 10 = 5')
                   - 'labels' - 'confusion' - 'model' - 'version'))
  FROM triage.models WHERE name = 'sentiment';
\o
COPY (SELECT encode(triage.export_fasttext('sentiment', 1), 'base64')) TO '$WORK/model.b64';
SQL

# COPY's text format writes the base64 line breaks as \n
sed 's/\\n//g' "$WORK/model.b64" | base64 -d > "$WORK/fine_foods_sentiment.ftz"
cp "$WORK/fine_foods_sentiment.ftz" "$OUT/fine_foods_sentiment.ftz"
cp "$WORK/card.txt" "$OUT/fine_foods_sentiment.metrics.json"
echo "models/fine_foods_sentiment.ftz: $(stat -c %s "$OUT/fine_foods_sentiment.ftz") bytes"
cat "$OUT/fine_foods_sentiment.metrics.json"
cluster_stop
rm -rf "$WORK"
