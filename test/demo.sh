#!/bin/bash
# "make demo": a throwaway cluster, the shipped sentiment model, 800 reviews
# the model never saw, and what a user wants to know about them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/test/cluster.sh"
drop_root test/demo.sh "$@"
cd "$ROOT"

WORK=$(mktemp -d /tmp/pg_triage-demo.XXXXXX)
cluster_start "$WORK"

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
sql() { psql -X -q -v ON_ERROR_STOP=1 -P footer=off "$@"; }

say "PostgreSQL $(psql -XAtc 'SHOW server_version') with pg_triage, in a throwaway cluster at $WORK"
sql <<SQL
CREATE EXTENSION pg_triage;
-- the shipped model: fastText, quantized, trained on 3,200 fine-food reviews
SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$ROOT/models/fine_foods_sentiment.ftz'))
       AS "imported version";
SELECT name, version, labels, pg_size_pretty(octet_length(data)::bigint) AS size,
       params->>'dim' AS dim, params->>'quantized' AS quantized
  FROM triage.models;

-- every 5th review was held out of the model's training: 800 unseen reviews
CREATE TABLE raw (product text, review text, score text);
COPY raw FROM '$ROOT/test/data/fine_foods_train.csv' WITH (FORMAT csv, HEADER);
CREATE TABLE reviews AS
  SELECT n AS id, review, score AS gold
    FROM (SELECT row_number() OVER () - 1 AS n, * FROM raw) t
   WHERE n % 5 = 4;
ALTER TABLE reviews ADD PRIMARY KEY (id);
SQL

say "Classify a few reviews:  SELECT (triage.classify('sentiment', review)).* FROM reviews"
sql <<'SQL'
SELECT id, left(review, 60) || '...' AS review, (triage.classify('sentiment', review)).*, gold
  FROM reviews ORDER BY id LIMIT 6;
SQL

say "Top 2 labels with probabilities:  triage.predict(name, input, k)"
sql <<'SQL'
SELECT * FROM triage.predict('sentiment', 'Stale, bitter, and the bag arrived torn. Never again.', 2);
SQL

say "All 800 unseen reviews: accuracy against the gold labels"
sql <<'SQL'
CREATE TABLE scored AS
  SELECT id, gold, (triage.classify('sentiment', review)).* FROM reviews;
SELECT count(*) AS reviews,
       round(avg((label = gold)::int), 3) AS accuracy,
       round(greatest(avg((gold = 'great')::int), avg((gold = 'other')::int)), 3)
         AS "majority class alone"
  FROM scored;
SELECT gold, count(*) FILTER (WHERE label = 'great') AS "predicted great",
       count(*) FILTER (WHERE label = 'other') AS "predicted other"
  FROM scored GROUP BY gold ORDER BY gold;
SQL

say "Speed: classify 80,000 rows (the 800 reviews x 100) in one query"
sql <<'SQL'
CREATE TABLE many AS SELECT r.* FROM reviews r, generate_series(1, 100);
\timing on
SELECT count(*) FILTER (WHERE (triage.classify('sentiment', review)).label = 'great') AS great,
       count(*) AS rows
  FROM many;
\timing off
SQL

say "Confidence: the small model is right when it is sure; the unsure rows are the ones to escalate"
sql <<'SQL'
SELECT threshold,
       round(avg((confidence < threshold)::int), 3) AS "escalated share",
       round(avg((label = gold)::int) FILTER (WHERE confidence >= threshold), 3) AS "accuracy on kept rows"
  FROM scored, unnest(ARRAY[0.0, 0.6, 0.7, 0.8, 0.9]::real[]) AS threshold
 GROUP BY threshold ORDER BY threshold;
SQL

say "Deploy a new version, roll back: every session follows at its next statement"
sql <<SQL
SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$ROOT/test/data/sentiment_v2.ftz')) AS "new version";
SELECT triage.deploy('sentiment', 2) \gset
SELECT 'version 2' AS deployed, round(avg(((triage.classify('sentiment', review)).label = gold)::int), 3) AS accuracy FROM reviews;
SELECT triage.deploy('sentiment', 1) \gset
SELECT 'version 1' AS deployed, round(avg(((triage.classify('sentiment', review)).label = gold)::int), 3) AS accuracy FROM reviews;
SQL

say "Not in this release yet: routing policies, the escalation queue and triage-worker"
echo "(the threshold table above is what the router will calibrate; see README.md)"
cluster_stop
rm -rf "$WORK"
