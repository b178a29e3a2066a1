-- fastText classifiers: import, inspect, predict, classify
\getenv abs_srcdir PG_ABS_SRCDIR
\set v1 :abs_srcdir '/test/data/sentiment_v1.ftz'
\set v2 :abs_srcdir '/test/data/sentiment_v2.ftz'
CREATE EXTENSION pg_triage;

-- import: the first version of a name is stored and deployed
SELECT triage.import_fasttext('sentiment', pg_read_binary_file(:'v1'));
SELECT name, version, kind, labels, params->>'loss' AS loss,
       params->>'quantized' AS quantized, params->>'source' AS source
  FROM triage.models;
SELECT name, version FROM triage.deployments;

-- inspect describes a file without storing it
SELECT labels, params->'dim' AS dim, params->'wordNgrams' AS word_ngrams,
       params->'pruned' AS pruned
  FROM triage.inspect_fasttext(pg_read_binary_file(:'v1'));

-- predict: labels without the __label__ prefix, best first
SELECT label, round(probability::numeric, 4) AS p
  FROM triage.predict('sentiment', 'the coffee was stale and bitter, never again', 2);
SELECT label FROM triage.predict('sentiment', 'I love this tea, wonderful flavor, will buy again');
-- k = -1 returns every label; softmax probabilities sum to 1
SELECT count(*), round(sum(probability)::numeric, 4)
  FROM triage.predict('sentiment', 'it was fine', -1);
-- k larger than the number of labels returns them all
SELECT count(*) FROM triage.predict('sentiment', 'it was fine', 10);
-- threshold drops labels below it
SELECT count(*) FROM triage.predict('sentiment', 'the coffee was stale and bitter, never again', -1, 0.5);
SELECT count(*) FROM triage.predict('sentiment', 'it was fine', -1, 1.0);

-- classify is the top prediction
SELECT c.label = p.label AND c.confidence = p.probability AS same
  FROM (VALUES ('stale and bitter'), ('love it'), (''), ('café crème 日本語')) AS v(t),
       LATERAL triage.classify('sentiment', t) AS c,
       LATERAL triage.predict('sentiment', t) AS p;
-- no evidence: empty, blank, or no word the model knows gets no prediction
-- (fastText would answer from the end-of-line token alone, with a confidence
-- near 1), and routing escalates it
SELECT t, c.label IS NULL AS no_label, c.confidence IS NULL AS no_confidence,
       (SELECT count(*) FROM triage.predict('sentiment', t)) AS predictions
  FROM (VALUES (''), (E' \t '), ('!!!'), ('zzqx qxzz')) AS v(t), LATERAL triage.classify('sentiment', t) AS c;
SELECT (triage.classify('sentiment', 'stale')).label IS NOT NULL AS one_known_word_is_evidence;
-- a newline inside the input is a space: one prediction for the whole value
SELECT (triage.classify('sentiment', E'stale\nand bitter')).confidence
     = (triage.classify('sentiment', 'stale and bitter')).confidence AS same;
-- tokens that look like labels are ignored, as in fastText
SELECT (triage.classify('sentiment', '__label__great stale and bitter')).confidence
     = (triage.classify('sentiment', 'stale and bitter')).confidence AS same;

-- over a table
CREATE TABLE reviews (id int PRIMARY KEY, body text);
INSERT INTO reviews VALUES
  (1, 'Absolutely delicious, my kids love these snacks'),
  (2, 'Arrived broken and tasted stale. Very disappointed.'),
  (3, 'Best dog food we have tried, great price'),
  (4, 'Not worth the money, the flavor is artificial');
SELECT id, (triage.classify('sentiment', body)).label FROM reviews ORDER BY id;

-- versions: a second import is stored but not deployed
SELECT triage.import_fasttext('sentiment', pg_read_binary_file(:'v2'));
SELECT version FROM triage.deployments WHERE name = 'sentiment';
SELECT (triage.classify('sentiment', 'the coffee was stale and bitter, never again')).label;
-- a fixed version
SELECT (triage.classify('sentiment', 2, 'the coffee was stale and bitter, never again')).label;
-- deploying switches the next statement to the new version
SELECT triage.deploy('sentiment', 2);
SELECT (triage.classify('sentiment', 'the coffee was stale and bitter, never again')).label;
SELECT triage.deploy('sentiment', 1);
SELECT (triage.classify('sentiment', 'the coffee was stale and bitter, never again')).label;

-- the versioned classify is IMMUTABLE, so it can back an expression index
CREATE INDEX reviews_label ON reviews (((triage.classify('sentiment', 1, body)).label));
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM reviews WHERE (triage.classify('sentiment', 1, body)).label = 'other';
SELECT id FROM reviews WHERE (triage.classify('sentiment', 1, body)).label = 'other' ORDER BY id;
RESET enable_seqscan;

-- parallel workers can classify
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
CREATE TABLE many AS SELECT g AS id, body FROM reviews, generate_series(1, 500) AS g;
ANALYZE many;
EXPLAIN (COSTS OFF)
SELECT count(*) FROM many WHERE (triage.classify('sentiment', body)).label = 'great';
SELECT count(*) FROM many WHERE (triage.classify('sentiment', body)).label = 'great';
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
