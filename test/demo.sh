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
-- the shipped model: trained by pg_triage on 3,200 fine-food reviews, quantized (.ftz)
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

say "Classify a few reviews:  SELECT c.* FROM reviews r, LATERAL triage.classify('sentiment', r.review) c"
sql <<'SQL'
SELECT id, left(review, 60) || '...' AS review, c.label, c.confidence, gold
  FROM reviews, LATERAL triage.classify('sentiment', review) c ORDER BY id LIMIT 6;
SQL

say "Top 2 labels with probabilities:  triage.predict(name, input, k)"
sql <<'SQL'
SELECT * FROM triage.predict('sentiment', 'Stale, bitter, and the bag arrived torn. Never again.', 2);
SQL

say "Calibrate confidences on 400 held-out reviews (temperature scaling), evaluate on all 800"
sql <<'SQL'
SELECT c->'temperature' AS temperature, c->'ece_before' AS "ECE before", c->'ece_after' AS "ECE after"
  FROM triage.calibrate_temperature('sentiment', 'SELECT review, gold FROM reviews WHERE id % 10 = 9') c;
SELECT e->'n' AS reviews, e->'accuracy' AS accuracy, e->'macro_f1' AS "macro F1", e->'ece' AS "ECE",
       round(greatest(avg((gold = 'great')::int), avg((gold = 'other')::int)), 3) AS "majority class alone"
  FROM triage.evaluate('sentiment', 'SELECT review, gold FROM reviews') e, reviews
 GROUP BY e;
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
CREATE TABLE scored AS
  SELECT id, gold, c.label, c.confidence FROM reviews, LATERAL triage.classify('sentiment', review) c;
SELECT threshold,
       round(avg((confidence < threshold)::int), 3) AS "escalated share",
       round(avg((label = gold)::int) FILTER (WHERE confidence >= threshold), 3) AS "accuracy on kept rows"
  FROM scored, unnest(ARRAY[0.0, 0.6, 0.7, 0.8, 0.9]::real[]) AS threshold
 GROUP BY threshold ORDER BY threshold;
SQL

say "Train a new version in the database from a query, compare, deploy, roll back"
sql <<SQL
SELECT triage.train('sentiment', 'SELECT review, score FROM raw EXCEPT SELECT review, gold FROM reviews',
                    '{"kind": "fasttext", "dim": 20, "epoch": 10, "lr": 0.2, "wordNgrams": 2, "bucket": 100000, "seed": 2,
                      "quantize": {"cutoff": 20000}}') AS new_version \gset
\echo trained version :new_version
SELECT version, pg_size_pretty(octet_length(data)::bigint) AS size,
       metrics->'train'->>'seconds' AS "train seconds",
       triage.evaluate('sentiment', 'SELECT review, gold FROM reviews', version)->>'accuracy' AS accuracy
  FROM triage.models WHERE name = 'sentiment' ORDER BY version;
SELECT triage.deploy('sentiment', 2) \gset
SELECT 'deployed' AS now, version FROM triage.deployments;
SELECT triage.rollback('sentiment') AS "rolled back to";
SQL

say "Route: a policy whose threshold is calibrated on held-out rows to 90% accuracy on the rows kept"
sql <<'SQL'
SELECT triage.create_policy('reviews', 'sentiment');
SELECT c->'threshold' AS threshold, c->'escalation_rate' AS "escalation rate", c->'kept_accuracy' AS "kept accuracy"
  FROM triage.calibrate('reviews', 'SELECT review, gold FROM reviews WHERE id % 10 = 9', target_accuracy => 0.9) c;
SELECT * FROM triage.route('reviews', 'Stale, bitter, and the bag arrived torn. Never again.');
SQL

say "New rows are routed as they arrive: an attached table, 200 unseen reviews inserted"
sql <<'SQL'
CREATE TABLE inbox (id bigserial PRIMARY KEY, review text, label text, gold text);
SELECT triage.attach('inbox', 'review', 'label', 'reviews');
INSERT INTO inbox (review, gold) SELECT review, gold FROM reviews WHERE id % 10 = 4 ORDER BY id LIMIT 200;
SELECT count(*) AS inserted, count(label) AS labeled,
       (SELECT count(*) FROM triage.escalations) AS escalated
  FROM inbox;
SQL

say "The large model answers the escalated rows: triage-worker against a stub endpoint on 127.0.0.1"
echo "(the stub answers from the gold labels with 5% errors: it simulates a strong model)"
psql -X -q -At -c "COPY (SELECT review AS input, gold AS label FROM inbox) TO STDOUT WITH (FORMAT csv, HEADER)" > "$WORK/gold.csv"
python3 test/stub/stub_llm.py --port 0 --gold "$WORK/gold.csv" --error-rate 0.05 --seed 1 \
	--max-seconds 120 > "$WORK/stub.out" 2>"$WORK/stub.err" &
STUB_PID=$!
for _ in $(seq 50); do grep -q listening "$WORK/stub.out" && break; sleep 0.1; done
STUB_PORT=$(sed -n 's/.*listening on \([0-9]*\).*/\1/p' "$WORK/stub.out")
if [ -z "$STUB_PORT" ]; then
	echo "the stub endpoint did not start:" >&2
	cat "$WORK/stub.err" >&2
	exit 1
fi
WORKER=$("$PG_CONFIG" --bindir)/triage-worker
[ -x "$WORKER" ] || WORKER=src/worker/triage-worker
timeout 120 "$WORKER" --dsn "host=$PGHOST port=$PGPORT dbname=postgres" --base-url "http://127.0.0.1:$STUB_PORT/v1" \
	--model stub-large --concurrency 4 --once --log-file "$WORK/worker.log"
kill "$STUB_PID" 2>/dev/null || true
echo "worker log: $(grep -c 'outcome=done' "$WORK/worker.log") done, first lines:"
head -3 "$WORK/worker.log"
sql <<'SQL'
SET triage.llm_prompt_price_per_1k = 0.0025;
SET triage.llm_completion_price_per_1k = 0.01;
SELECT status, outcome, count(*) FROM triage.escalations GROUP BY 1, 2 ORDER BY 1, 2;
SELECT round(avg((label = gold)::int), 3) AS "accuracy of the table's labels now",
       count(*) FILTER (WHERE id IN (SELECT (source_key->>'id')::bigint FROM triage.escalations)) AS "answered by the large model"
  FROM inbox;
SELECT policy, rows_seen, rows_kept, escalated, answered, tokens, llm_cost AS "large-model cost",
       all_llm_cost AS "cost if every row went to it"
  FROM triage.escalation_stats;
\echo the same answers through the Batch API (triage-worker --mode batch, a policy with rules latency "batch"),
\echo at the batch prices: triage.llm_batch_*_price_per_1k, unset here, so half the interactive ones
SELECT s.answered, s.tokens, s.llm_cost AS "large-model cost, interactive",
       round(sum(triage_internal.llm_cost(e.usage, true)), 4) AS "at batch prices"
  FROM triage.escalation_stats s JOIN triage.escalations e ON e.policy = s.policy AND e.status = 'done'
 WHERE s.policy = 'reviews' GROUP BY s.answered, s.tokens, s.llm_cost;
SELECT count(*) AS "new training examples from the large model" FROM triage.examples WHERE source = 'llm';
SQL

say "The policy's report page, one HTML file that needs no network:  psql -Atc \"SELECT triage.report('reviews')\" > report.html"
REPORT=${TMPDIR:-/tmp}/pg_triage-demo-report.html
PGOPTIONS="-c triage.llm_prompt_price_per_1k=0.0025 -c triage.llm_completion_price_per_1k=0.01" \
	psql -X -At -c "SELECT triage.report('reviews')" > "$REPORT"
echo "written to $REPORT ($(wc -c < "$REPORT") bytes): open it in a browser"

say "Field extraction: the shipped extractor (models/business_fields.crf) on messages in phrasings it never saw"
python3 test/extract/gen_messages.py --seed 7 --count 200 --phrasings unseen --out "$WORK/messages.csv"
sql <<SQL
SELECT triage.import_extractor('fields', pg_read_binary_file('$ROOT/models/business_fields.crf')) AS extractor_version;
CREATE TABLE messages (input text, fields jsonb, kind text, template text);
COPY messages FROM '$WORK/messages.csv' WITH (FORMAT csv, HEADER);
\echo one message and what extract() finds in it (character offsets, a confidence per field):
SELECT input FROM messages LIMIT 1;
SELECT key AS field, value->>'value' AS value, value->>'start' AS start, value->>'end' AS "end",
       value->>'confidence' AS confidence
  FROM (SELECT input FROM messages LIMIT 1) m, jsonb_each(triage.extract('fields', m.input));
SELECT (e->>'f1')::numeric AS "field F1 on 200 unseen phrasings", e->>'rows_all_correct' AS "rows all right",
       e->>'auroc' AS "AUROC of confidence"
  FROM triage.evaluate('fields', 'SELECT input, fields FROM messages') e;
\echo an extraction policy: escalate when the order id is missing or any field is unsure
SELECT triage.create_policy('orders', NULL, extractor => 'fields',
                            rules => '{"required_fields": ["order_id"], "min_field_confidence": 0.9}');
CREATE TABLE tickets (id bigserial PRIMARY KEY, body text, fields jsonb);
SELECT triage.attach('tickets', 'body', 'fields', 'orders');
INSERT INTO tickets (body) SELECT input FROM messages;
SELECT count(*) AS tickets, count(*) FILTER (WHERE fields ? 'order_id') AS with_order_id,
       (SELECT count(*) FROM triage.escalations WHERE policy = 'orders') AS escalated
  FROM tickets;
SELECT reason, count(*) FROM triage.escalations WHERE policy = 'orders' GROUP BY 1 ORDER BY 2 DESC LIMIT 5;
SQL

say "Next: retrain from these examples (distillation); see README.md"
cluster_stop
rm -rf "$WORK"
