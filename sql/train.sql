-- Training, evaluation, quantization, calibration and versions, in SQL
\getenv abs_srcdir PG_ABS_SRCDIR
\set csv :abs_srcdir '/test/data/fine_foods_train.csv'
\set SHOW_CONTEXT never
CREATE EXTENSION IF NOT EXISTS pg_triage;

-- training reports progress in NOTICEs when it runs long, which depends on the machine
SET client_min_messages = warning;
CREATE TABLE food (product text, review text, score text);
COPY food FROM :'csv' WITH (FORMAT csv, HEADER);
-- every 5th review is held out
CREATE TABLE food_split AS
  SELECT row_number() OVER () AS n, review, score FROM food;
CREATE VIEW food_train AS SELECT review, score FROM food_split WHERE n % 5 <> 0;
CREATE VIEW food_test AS SELECT review, score FROM food_split WHERE n % 5 = 0;
-- one thread, so that a seed gives the same bytes (the default is the online cores, up to 4)
\set small '{"kind": "fasttext", "dim": 10, "epoch": 20, "lr": 0.5, "wordNgrams": 2, "bucket": 20000, "seed": 7, "thread": 1}'

-- train: a new version from a query of (input, label)
SELECT triage.train('food', 'SELECT review, score FROM food_train', :'small');
SELECT version, kind, labels, params->>'loss' AS loss, params->>'dim' AS dim,
       metrics->'train'->>'rows' AS rows, metrics->'train'->>'labels' AS nlabels
  FROM triage.models WHERE name = 'food';
-- the first version is deployed
SELECT version FROM triage.deployments WHERE name = 'food';

-- deterministic for a seed: the same bytes again; another seed differs
SELECT triage.train('food', 'SELECT review, score FROM food_train', :'small');
SELECT triage.train('food', 'SELECT review, score FROM food_train',
                    jsonb_set(:'small', '{seed}', '8'));
SELECT version, md5(data) = (SELECT md5(data) FROM triage.models WHERE name = 'food' AND version = 1)
       AS same_as_v1
  FROM triage.models WHERE name = 'food' ORDER BY version;

-- evaluate: the held-out rows, scored by the deployed version
SELECT e->'n' AS n, (e->>'accuracy')::float > 0.72 AS beats_majority,
       (e->>'macro_f1')::float > 0.6 AS macro_f1_ok,
       (SELECT sum(v::int) FROM jsonb_each(e->'confusion') c, jsonb_each_text(c.value) x(k, v)) AS confusion_total,
       jsonb_object_keys(e->'labels') AS label,
       (e->>'ece')::float BETWEEN 0 AND 1 AS ece_ok,
       jsonb_array_length(e->'reliability') > 0 AS has_reliability
  FROM triage.evaluate('food', 'SELECT review, score FROM food_test') e;
-- the same, as rows for people
SELECT label, "precision" > 0.5 AS precise, recall > 0.5 AS recalled, support
  FROM triage.label_scores(triage.evaluate('food', 'SELECT review, score FROM food_test'));
-- and a policy's routing curve as rows: more escalation keeps more accurate rows
SELECT triage.create_policy('food_policy', 'food');
SELECT count(*) > 5 AS has_curve,
       bool_and(escalation_rate BETWEEN 0 AND 1 AND kept_accuracy BETWEEN 0 AND 1) AS shares,
       corr(escalation_rate, kept_accuracy) > 0 AS more_escalation_more_accuracy
  FROM triage.routing_curve(triage.calibrate('food_policy', 'SELECT review, score FROM food_test',
                                             target_accuracy => 0.9));
DELETE FROM triage.policies WHERE name = 'food_policy';
-- a given version
SELECT (triage.evaluate('food', 'SELECT review, score FROM food_test', 3))->'version' AS version;

-- every loss learns
SELECT loss, triage.train('food_' || loss, 'SELECT review, score FROM food_train',
                          jsonb_set(:'small', '{loss}', to_jsonb(loss)))
  FROM unnest(ARRAY['hs', 'ns', 'ova']) AS loss;
SELECT loss, (triage.evaluate('food_' || loss, 'SELECT review, score FROM food_test')->>'accuracy')::float > 0.72
       AS beats_majority
  FROM unnest(ARRAY['hs', 'ns', 'ova']) AS loss;

-- quantized at training time: much smaller, about as accurate
SELECT triage.train('food_q', 'SELECT review, score FROM food_train',
                    :'small'::jsonb || '{"minn": 3, "maxn": 4, "quantize": {"cutoff": 5000}}');
SELECT triage.train('food_q', 'SELECT review, score FROM food_train',
                    :'small'::jsonb || '{"minn": 3, "maxn": 4}');
SELECT (SELECT octet_length(data) FROM triage.models WHERE name = 'food_q' AND version = 2)
       / (SELECT octet_length(data) FROM triage.models WHERE name = 'food_q' AND version = 1) >= 10
       AS ten_times_smaller,
       (SELECT params->>'quantized' FROM triage.models WHERE name = 'food_q' AND version = 1) AS quantized,
       abs((triage.evaluate('food_q', 'SELECT review, score FROM food_test', 1)->>'accuracy')::float
           - (triage.evaluate('food_q', 'SELECT review, score FROM food_test', 2)->>'accuracy')::float) <= 0.02
       AS similar_accuracy;
-- the pruned model was retrained: the training's loss and the retraining's are
-- measured apart (the model's own training loss is not overwritten)
SELECT version, metrics->'train' ? 'retrain' AS retrain_measured,
       (metrics->'train'->>'loss')::float > 0 AS has_training_loss,
       (metrics->'train'->'retrain'->>'loss')::float > 0 AS has_retraining_loss
  FROM triage.models WHERE name = 'food_q' AND version IN (1, 2) ORDER BY version;
-- quantizing a stored dense version
SELECT triage.quantize('food_q', 2, '{"cutoff": 5000, "dsub": 2}');
SELECT version, params->>'quantized' AS quantized, params->>'quantized_from' AS parent,
       octet_length(data) < 200000 AS small
  FROM triage.models WHERE name = 'food_q' AND version = 3;
SELECT triage.quantize('food_q', 1);
SELECT triage.quantize('food_q', 2, '{"retrain": true}');

-- int8 rows with a scale each: smaller without a cutoff, much smaller with one
SELECT triage.quantize('food_q', 2, '{"method": "int8", "cutoff": 0}');
SELECT triage.train('food_q', 'SELECT review, score FROM food_train',
                    :'small'::jsonb || '{"minn": 3, "maxn": 4, "quantize": {"method": "int8", "cutoff": 5000}}');
SELECT version, params->>'quantization' AS quantization,
       round(octet_length(data)::numeric / (SELECT octet_length(data) FROM triage.models
                                             WHERE name = 'food_q' AND version = 2), 2) AS size_ratio,
       abs((triage.evaluate('food_q', 'SELECT review, score FROM food_test', version)->>'accuracy')::float
           - (triage.evaluate('food_q', 'SELECT review, score FROM food_test', 2)->>'accuracy')::float) <= 0.01
       AS within_one_point
  FROM triage.models WHERE name = 'food_q' AND version IN (4, 5) ORDER BY version;
-- exported dequantized, it predicts exactly as the int8 version
SELECT triage.import_fasttext('food_int8_copy', triage.export_fasttext('food_q', 4));
SELECT (SELECT params->>'quantization' FROM triage.models WHERE name = 'food_int8_copy') AS exported_as,
       bool_and((triage.classify('food_int8_copy', review)).confidence
                = (triage.classify('food_q', 4, review)).confidence) AS same_predictions
  FROM food_test;
-- a pruned int8 model has no fastText form
SELECT triage.export_fasttext('food_q', 5);
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "quantize": {"method": "int4"}}');

-- export: the stored bytes, which the fasttext tool reads
SELECT md5(triage.export_fasttext('food', 1)) = md5(data) AS exported_as_stored
  FROM triage.models WHERE name = 'food' AND version = 1;
SELECT triage.import_fasttext('food_copy', triage.export_fasttext('food', 1));
SELECT bool_and((triage.classify('food_copy', review)).confidence = (triage.classify('food', 1, review)).confidence)
       AS same_predictions
  FROM food_test;

-- deploy and roll back
SELECT triage.deploy('food', 3);
SELECT triage.rollback('food');
SELECT triage.rollback('food');
SELECT triage.rollback('food');
SELECT version FROM triage.deployments WHERE name = 'food';

-- temperature scaling: fitted on held-out rows, stored with the version
SELECT (triage_internal.deployed_version('food')) AS was_deployed \gset
SELECT (c->>'temperature')::float > 0 AS fitted, c->'rows' AS rows,
       (c->>'nll_after')::float <= (c->>'nll_before')::float AS nll_not_worse,
       c->>'version' AS calibrated
  FROM triage.calibrate_temperature('food', 'SELECT review, score FROM food_test') c \gset
SELECT :'fitted' AS fitted, :'rows' AS rows, :'nll_not_worse' AS nll_not_worse;
-- as a new version, deployed in place of the one it came from; the old
-- version's answers stay as they were (classify(name, version, input) is IMMUTABLE)
SELECT m.version = :calibrated AS calibrated, m.metrics->'calibration' ? 'temperature' AS stored,
       m.params->>'calibrated_from' = :'was_deployed' AS from_the_deployed, d.version IS NOT NULL AS deployed
  FROM triage.models m LEFT JOIN triage.deployments d USING (name, version)
 WHERE m.name = 'food' AND m.version IN (:was_deployed, :calibrated) ORDER BY m.version;
SELECT (triage.classify('food', :was_deployed, 'stale and bitter')).confidence
       <> (triage.classify('food', :calibrated, 'stale and bitter')).confidence AS only_the_new_version_changed;
UPDATE triage.models SET metrics = jsonb_set(metrics, '{calibration,temperature}', '2')
 WHERE name = 'food' AND version = :calibrated;
-- so an expression index on a version's confidence stays true through a
-- later calibration: the index and a scan find the same rows
CREATE TABLE conf_idx AS SELECT review FROM food_test;
CREATE INDEX conf_idx_confidence ON conf_idx (((triage.classify('food', :calibrated, review)).confidence));
SELECT (triage.calibrate_temperature('food', 'SELECT review, score FROM food_test WHERE length(review) < 300')
       ->>'version')::int > :calibrated AS calibrated_again;
SET enable_seqscan = off;
SELECT count(*) AS by_index FROM conf_idx WHERE (triage.classify('food', :calibrated, review)).confidence > 0.8 \gset
RESET enable_seqscan;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT count(*) = :by_index AS index_agrees_with_scan, :by_index > 0 AS some
  FROM conf_idx WHERE (triage.classify('food', :calibrated, review)).confidence > 0.8;
RESET enable_indexscan;
RESET enable_bitmapscan;
DROP TABLE conf_idx;
SELECT triage.calibrate_temperature('food_hs', 'SELECT review, score FROM food_test');

-- cross-validation: every row once, answered by a model trained on the other folds
CREATE TABLE food_cv AS
  SELECT * FROM triage.cross_validate('SELECT review, score FROM food_split WHERE n % 5 <> 0 ORDER BY n',
                                      :'small', 4);
SELECT count(*) AS rows, min(fold), max(fold),
       count(*) = (SELECT count(*) FROM food_split WHERE n % 5 <> 0) AS every_row_once,
       avg((predicted = label)::int) > 0.72 AS beats_majority
  FROM food_cv;
-- copies of a text share a fold, so no row is answered by a model that saw it
SELECT count(*) AS texts_in_two_folds
  FROM (SELECT input FROM food_cv GROUP BY input HAVING count(DISTINCT fold) > 1) s;
-- fold 2's answers are exactly those of a model trained on the other folds' rows, in order
SELECT triage.train('food_not_fold2', 'SELECT review, score FROM food_split WHERE n % 5 <> 0
                    AND review NOT IN (SELECT input FROM food_cv WHERE fold = 2) ORDER BY n', :'small');
SELECT count(*) > 500 AS fold_rows,
       bool_and((triage.classify('food_not_fold2', input)).label = predicted
                AND (triage.classify('food_not_fold2', input)).confidence = confidence) AS same_answers
  FROM food_cv WHERE fold = 2;
SELECT triage.cross_validate('SELECT review, score FROM food_train', :'small', 1);
SELECT triage.cross_validate('SELECT review, score FROM food_train LIMIT 1', :'small', 2);
SELECT triage.cross_validate($$SELECT 'same text', 'great' UNION ALL SELECT 'same text', 'other'$$, '{}', 5);

-- bad training data and options fail clearly, naming what is wrong
SELECT triage.train('bad', 'SELECT review, score FROM food_train WHERE false');
SELECT triage.train('bad', 'SELECT review, NULL::text FROM food_train');
SELECT triage.train('bad', 'SELECT review, '''' FROM food_train');
SELECT triage.train('bad', 'SELECT review, ''same'' FROM food_train');
SELECT triage.train('bad', 'INSERT INTO food VALUES (''a'', ''b'', ''c'')');
SELECT triage.train('bad', 'SELECT review, score, product FROM food');
SELECT triage.train('bad', 'SELECT 1, 2');
SELECT triage.train('bad', 'SELECT nonsense FROM');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "epochs": 5}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "epoch": 0}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "lr": "fast"}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "loss": "hinge"}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "dim": 2.5}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '[1, 2]');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "minn": 5, "maxn": 3}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "wordNgrams": 2, "bucket": 0}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "bucket": 10000000, "dim": 100}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "quantize": {"dsub": 200}}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "quantize": {"bits": 4}}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "thread": 0}');
SELECT triage.train('bad', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "thread": 65}');
SELECT triage.train('bad name', 'SELECT review, score FROM food_train');
SELECT count(*) FROM triage.models WHERE name = 'bad';

-- two hogwild threads: not the same bytes, but as good on the held-out rows
SELECT triage.train('food_mt', 'SELECT review, score FROM food_train', jsonb_set(:'small', '{thread}', '2'));
SELECT params->>'thread' AS thread,
       (triage.evaluate('food_mt', 'SELECT review, score FROM food_test')->>'accuracy')::float > 0.72 AS beats_majority
  FROM triage.models WHERE name = 'food_mt';

-- a cancelled or timed-out training leaves no version behind (in threads, by default)
SET statement_timeout = '300ms';
SELECT triage.train('slow', 'SELECT review, score FROM food_train', '{"kind": "fasttext", "epoch": 1000, "dim": 50}');
RESET statement_timeout;
SELECT count(*) FROM triage.models WHERE name = 'slow';
