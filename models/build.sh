#!/bin/bash
# Rebuilds the shipped models with pg_triage itself, in a throwaway cluster
# (make models installs the extension first).
#
#   fine_foods_sentiment.ftz: trained by triage.train() on 3,200 of the 4,000
#   reviews of test/data/fine_foods_train.csv (every 5th held out), quantized
#   the fastText way; exported with triage.export_fasttext(), so the fasttext
#   tool reads it too.  Deterministic: one thread, a fixed seed.
#
#   business_fields.crf: a field extractor trained by triage.train_extractor()
#   on 3,000 messages of every phrasing of test/extract/gen_messages.py
#   (seed 1), evaluated on messages it never saw (seed 2), those of the
#   generator's "unseen" templates and its "seen" ones apart; it trained on
#   both (hence heldout_1000_trained_phrasings_unseen_split, not "unseen
#   phrasings": models/README.md).  Exported with triage.export_extractor().
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/test/cluster.sh"
COPY_BACK="models/fine_foods_sentiment.ftz models/fine_foods_sentiment.metrics.json models/business_fields.crf models/business_fields.metrics.json" \
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
  '{"kind": "fasttext", "dim": 50, "epoch": 25, "lr": 0.1, "wordNgrams": 2, "minn": 2, "maxn": 4,
    "bucket": 200000, "seed": 1, "thread": 1,
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
# The field extractor
GEN=$ROOT/test/extract/gen_messages.py
python3 "$GEN" --seed 1 --count 3000 --phrasings all --out "$WORK/fields_train.csv"
python3 "$GEN" --seed 2 --count 1000 --phrasings unseen --out "$WORK/fields_unseen.csv"
python3 "$GEN" --seed 2 --count 1000 --phrasings seen --out "$WORK/fields_seen.csv"
psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE messages (input text, fields jsonb, kind text, template text);
COPY messages FROM '$WORK/fields_train.csv' WITH (FORMAT csv, HEADER);
CREATE TABLE unseen (LIKE messages);
COPY unseen FROM '$WORK/fields_unseen.csv' WITH (FORMAT csv, HEADER);
CREATE TABLE seen (LIKE messages);
COPY seen FROM '$WORK/fields_seen.csv' WITH (FORMAT csv, HEADER);
SELECT triage.train_extractor('fields', 'SELECT input, fields FROM messages', '{"seed": 1}') AS version \gset
\pset tuples_only on
\pset format unaligned
\o $WORK/fields_card.txt
SELECT jsonb_pretty(jsonb_build_object(
  'bytes', octet_length(data),
  'fields', labels,
  'params', params,
  'train', metrics->'train',
  'heldout_1000_trained_phrasings_unseen_split', triage.evaluate('fields', 'SELECT input, fields FROM unseen'),
  'heldout_1000_seen_phrasings', triage.evaluate('fields', 'SELECT input, fields FROM seen')))
  FROM triage.models WHERE name = 'fields';
\o
COPY (SELECT encode(triage.export_extractor('fields', 1), 'base64')) TO '$WORK/fields.b64';
SQL
sed 's/\\n//g' "$WORK/fields.b64" | base64 -d > "$OUT/business_fields.crf"
cp "$WORK/fields_card.txt" "$OUT/business_fields.metrics.json"
echo "models/business_fields.crf: $(stat -c %s "$OUT/business_fields.crf") bytes"

cluster_stop
rm -rf "$WORK"
