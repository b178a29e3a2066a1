-- Routing policies and the escalation queue
\getenv abs_srcdir PG_ABS_SRCDIR
\set v1 :abs_srcdir '/test/data/sentiment_v1.ftz'
\set csv :abs_srcdir '/test/data/fine_foods_train.csv'
\set SHOW_CONTEXT never
CREATE EXTENSION IF NOT EXISTS pg_triage;
SELECT triage.import_fasttext('router', pg_read_binary_file(:'v1')) AS version;

-- a policy: the model, a threshold, rules
SELECT triage.create_policy('reviews', 'router', threshold => 0.9,
       rules => '{"max_length": 200, "escalate_if_matches": "refund|lawyer"}');
SELECT name, model, labels, thresholds, max_attempts FROM triage.policies;

-- route: the small model's answer and why it is kept or escalated
SELECT (triage.route('reviews', 'the coffee was stale and bitter, never again')).*;
SELECT (triage.route('reviews', 'I want a refund for this')).reason;
-- no evidence (empty, blank, no word the model knows): escalated, never kept with confidence 1
SELECT t, r.label, r.confidence, r.escalate, r.reason
  FROM (VALUES (''), ('   '), ('zzqx qxzz')) AS v(t), LATERAL triage.route('reviews', t) AS r;
SELECT (triage.route('reviews', repeat('tasty ', 50))).reason;
UPDATE triage.policies SET thresholds = '{"default": 0.5}' WHERE name = 'reviews';
SELECT (triage.route('reviews', 'the coffee was stale and bitter, never again')).escalate;
-- the audit sample escalates the audit rate's share of confident rows (2,000
-- rows at 0.5: within 0.45..0.55, 4.5 standard deviations), and the same ones
-- in every session: a hash of the input, not a random draw
UPDATE triage.policies SET audit_rate = 0.5 WHERE name = 'reviews';
CREATE TABLE audited AS
SELECT g, (triage.route('reviews', 'great tea number ' || g)).reason LIKE 'audit%' AS audited
  FROM generate_series(1, 2000) g;
SELECT avg(audited::int) BETWEEN 0.45 AND 0.55 AS rate_kept FROM audited;
\c
SELECT count(*) FILTER (WHERE a.audited <> ((triage.route('reviews', 'great tea number ' || a.g)).reason LIKE 'audit%'))
       AS differ_in_another_session
  FROM audited a;
UPDATE triage.policies SET audit_rate = 0 WHERE name = 'reviews';
DROP TABLE audited;

-- calibrate on labeled rows the policy's model never trained on: the
-- reviews numbered n in file order, of which the router model
-- (sentiment_v1.ftz) trained on all 4,000, and the shipped model
-- (models/fine_foods_sentiment.ftz) on those with n % 5 <> 0; the 800 with
-- n % 5 = 0 are held out from the shipped model (test/data/README.md)
CREATE TABLE food_reviews (product text, review text, score text);
COPY food_reviews FROM :'csv' WITH (FORMAT csv, HEADER);
CREATE TABLE labeled AS SELECT row_number() OVER () AS n, review, score FROM food_reviews;
\set shipped :abs_srcdir '/models/fine_foods_sentiment.ftz'
SELECT triage.import_fasttext('shipped', pg_read_binary_file(:'shipped')) AS version;
SELECT triage.create_policy('held_out', 'shipped');
UPDATE triage.policies SET rules = '{}' WHERE name = 'reviews';
SELECT (c->>'kept_accuracy')::float >= 0.9 AS reaches_target,
       (c->>'escalation_rate')::float < 1 AS keeps_some,
       jsonb_array_length(c->'curve') > 5 AS has_curve
  FROM triage.calibrate('held_out', 'SELECT review, score FROM labeled WHERE n % 5 = 0',
                        target_accuracy => 0.9) c;
SELECT (thresholds->>'default')::real > 0.5 AS stored FROM triage.policies WHERE name = 'held_out';
SELECT (c->>'escalation_rate')::float <= 0.2 AS within_budget
  FROM triage.calibrate('held_out', 'SELECT review, score FROM labeled WHERE n % 5 = 0',
                        max_escalation => 0.2) c;
-- the three methods on the same 800 rows: the point estimate reaches the
-- target on them; the bound keeps its one-sided 90% Wilson bound at the
-- target, so it escalates at least as much; the guarantee (Learn-then-Test,
-- Bonferroni over thresholds 0, 0.025, ... 1) picks a threshold of its grid
-- whose exact binomial test rejects "accuracy <= 0.85" at 0.1 / 41
CREATE TABLE methods AS
  SELECT m, c FROM unnest(ARRAY['estimate', 'bound', 'guarantee']) m,
       LATERAL triage.calibrate('held_out', 'SELECT review, score FROM labeled WHERE n % 5 = 0',
                                target_accuracy => 0.85, method => m) c;
SELECT m, c->>'method' = m AS stored_method, (c->>'confidence')::real AS confidence,
       (c->>'kept_accuracy')::float >= 0.85 AS estimate_reaches,
       (c->>'kept_accuracy_lower_bound')::float >= 0.85 AS bound_reaches,
       (c->>'escalation_rate')::float >= (SELECT (x.c->>'escalation_rate')::float FROM methods x WHERE x.m = 'estimate')
         AS escalates_at_least_the_estimate,
       c->>'promise' LIKE 'kept accuracy >= 0.85 with 90% confidence%' AS promised
  FROM methods ORDER BY m;
SELECT abs((c->>'threshold')::float * 40 - round((c->>'threshold')::float * 40)) < 1e-3 AS on_grid,
       triage_internal.binomial_upper_tail(
           (SELECT count(*) FILTER (WHERE (triage.classify('shipped', review)).label = score)::int
              FROM labeled WHERE n % 5 = 0 AND (triage.classify('shipped', review)).confidence >= (c->>'threshold')::real),
           (SELECT count(*)::int FROM labeled
             WHERE n % 5 = 0 AND (triage.classify('shipped', review)).confidence >= (c->>'threshold')::real),
           0.85) <= 0.1 / 41 AS test_rejected
  FROM methods WHERE m = 'guarantee';
SELECT triage.calibrate('held_out', 'SELECT review, score FROM labeled', target_accuracy => 0.9, method => 'exact');
SELECT triage.calibrate('held_out', 'SELECT review, score FROM labeled', target_accuracy => 0.9, confidence => 1);
DELETE FROM triage.policies WHERE name = 'held_out';
-- train_and_calibrate: thresholds chosen on every row's out-of-fold answer,
-- for a model trained on all the rows, deployed with them
SELECT triage.import_fasttext('router_cv', pg_read_binary_file(:'v1')) AS version;
SELECT triage.create_policy('reviews_cv', 'router_cv');
CREATE TABLE cv_result AS
  SELECT triage.train_and_calibrate('reviews_cv', 'SELECT review, score FROM labeled WHERE n % 2 = 0',
                                    '{"dim": 10, "epoch": 5, "seed": 1}', target_accuracy => 0.9, folds => 3,
                                    method => 'estimate') AS c;
SELECT c->'rows' AS rows, c->'folds' AS folds, c->'version' AS version,
       (c->>'kept_accuracy')::float >= 0.9 AS reaches_target,
       (SELECT version FROM triage.deployments WHERE name = 'router_cv') AS deployed,
       abs((p.thresholds->>'default')::float - (c->>'threshold')::float) < 1e-4 AS threshold_stored,
       p.calibration = c AS result_stored
  FROM cv_result, triage.policies p WHERE p.name = 'reviews_cv';
-- what it reports is what the out-of-fold answers give
SELECT abs((c->>'escalation_rate')::float
           - (SELECT avg((coalesce(x.confidence, 0) < (c->>'threshold')::float - 5e-5)::int)
                FROM triage.cross_validate('SELECT review, score FROM labeled WHERE n % 2 = 0',
                                           '{"kind": "fasttext", "dim": 10, "epoch": 5, "seed": 1}', 3) x)) < 0.01 AS same_escalation
  FROM cv_result WHERE c->'label_thresholds' = '{}';
SELECT triage.train_and_calibrate('reviews_cv', 'SELECT review, score FROM labeled', folds => 1,
                                  target_accuracy => 0.9);
SELECT triage.train_and_calibrate('reviews_cv', 'SELECT review, score FROM labeled');
SELECT triage.train_and_calibrate('reviews_cv', 'SELECT review, score FROM labeled', NULL, target_accuracy => 0.9);
SELECT triage.train_and_calibrate('nope', 'SELECT review, score FROM labeled', target_accuracy => 0.9);
DELETE FROM triage.policies WHERE name = 'reviews_cv';
SELECT triage.calibrate('reviews', 'SELECT review, score FROM labeled');
SELECT triage.calibrate('reviews', 'SELECT review, score FROM labeled', target_accuracy => 1.5);
SELECT triage.calibrate('nope', 'SELECT review, score FROM labeled', target_accuracy => 0.9);

-- the queue: enqueue, claim (a lease), complete, fail, release
CREATE TABLE tickets (id int PRIMARY KEY, body text, label text);
INSERT INTO tickets VALUES (1, 'stale and bitter', 'other'), (2, 'lovely tea', 'great'),
                           (3, 'so so', 'great');
-- answers are written back only into attached tables
SELECT triage.attach('tickets', 'body', 'label', 'reviews');
SELECT triage.enqueue('reviews', body, jsonb_build_object('label', label), 'tickets',
                      jsonb_build_object('id', id), 'test', 'body', 'label')
  FROM tickets ORDER BY id;
SELECT id, status, attempts FROM triage.escalations ORDER BY id;
SELECT id, request->'messages'->1->>'content' LIKE '%Input:' || E'\n' || 'stale and bitter' AS has_input
  FROM triage.claim('w1', 2, '1 minute') ORDER BY id;
-- claimed rows are invisible to other claims while the lease lasts: only the third is left
SELECT count(*) FROM triage.claim('w2', 10, '1 minute');
-- a valid answer is written to the unchanged source row and becomes an example
SELECT triage.complete(1, '{"model": "big", "choices": [{"message": {"content": "{\"label\": \"other\"}"}}],
                            "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}}');
-- a second answer for the same row is not applied twice
SELECT triage.complete(1, '{"choices": [{"message": {"content": "great"}}]}');
-- an answer that is not one of the labels is a failed attempt, retried later
SELECT triage.complete(2, '{"choices": [{"message": {"content": "{\"label\": \"banana\"}"}}]}');
SELECT id, status, attempts, outcome, answer->>'label' AS answer, error FROM triage.escalations ORDER BY id;
SELECT id, label FROM tickets ORDER BY id;
SELECT model, input, label, source FROM triage.examples;
-- a bare label is accepted; the source row changed meanwhile is left alone
UPDATE triage.escalations SET visible_at = now() WHERE id IN (2, 3);
SELECT count(*) FROM triage.claim('w1', 10, '1 minute');
UPDATE tickets SET body = 'edited by a person' WHERE id = 3;
SELECT triage.complete(3, '{"choices": [{"message": {"content": "great"}}]}');
SELECT triage.complete(2, '{"choices": [{"message": {"content": "\"great\""}}]}');
SELECT id, status, outcome FROM triage.escalations ORDER BY id;
SELECT id, body, label FROM tickets ORDER BY id;
-- failures back off and end in the dead letter state after max_attempts
UPDATE triage.policies SET max_attempts = 2 WHERE name = 'reviews';
SELECT triage.enqueue('reviews', 'doomed') AS doomed \gset
SELECT count(*) FROM triage.claim('w1', 10, '1 minute');
SELECT triage.fail(:doomed, 'HTTP 500', '0 seconds');
SELECT count(*) FROM triage.claim('w1', 10, '1 minute');
SELECT triage.fail(:doomed, 'HTTP 500');
SELECT status, attempts, error FROM triage.escalations WHERE id = :doomed;
-- release gives a lease back without counting an attempt
SELECT triage.enqueue('reviews', 'released') AS rel \gset
SELECT count(*) FROM triage.claim('w1', 10, '1 minute');
SELECT triage.release(:rel);
SELECT status, attempts FROM triage.escalations WHERE id = :rel;
-- an expired lease comes back, counted as an attempt
SELECT count(*) FROM triage.claim('w1', 10, '1 millisecond');
SELECT pg_sleep(0.01);
SELECT count(*) FROM triage.claim('w2', 10, '1 minute');
SELECT status, attempts, claimed_by FROM triage.escalations WHERE id = :rel;
-- at the policy's max_attempts (2 here), an expired lease dead-letters the
-- row instead of leasing it again: a row that kills workers cannot loop
UPDATE triage.escalations SET visible_at = now() - interval '1 second' WHERE id = :rel;
SELECT count(*) FROM triage.claim('w3', 10, '1 minute') WHERE id = :rel;
SELECT status, attempts, error FROM triage.escalations WHERE id = :rel;
-- a row over triage.max_input_bytes is refused when queued, and
-- dead-lettered when claimed (the limit may have been lowered since)
SET triage.max_input_bytes = 20;
SELECT triage.enqueue('reviews', repeat('long ', 10));
RESET triage.max_input_bytes;
SELECT triage.enqueue('reviews', repeat('long ', 10)) AS long_job \gset
SET triage.max_input_bytes = 20;
SELECT count(*) FROM triage.claim('w3', 10, '1 minute') WHERE id = :long_job;
RESET triage.max_input_bytes;
SELECT status, attempts, error FROM triage.escalations WHERE id = :long_job;

-- bad input
SELECT triage.enqueue('nope', 'x');
SELECT triage.route('nope', 'x');
SELECT triage.claim('w1', 0);
SELECT triage.complete(999999, '{}');
SELECT triage.create_policy('p2', 'no_such_model');
SELECT triage.heartbeat('w1', 'host', 42, 3, 1);
SELECT name, host, pid, jobs_done, jobs_failed FROM triage.workers;

-- attach: rows inserted (COPY included) and inputs updated are routed
UPDATE triage.policies SET thresholds = '{"default": 0.999}', max_attempts = 5 WHERE name = 'reviews';
CREATE TABLE inbox (id bigserial PRIMARY KEY, body text, label text);
SELECT triage.attach('inbox', 'body', 'label', 'reviews');
INSERT INTO inbox (body) VALUES ('the coffee was stale and bitter, never again'), ('it was ok'), (NULL);
COPY inbox (body) FROM STDIN;
absolutely delicious, my kids love these snacks
arrived broken
\.
SELECT id, body, label FROM inbox ORDER BY id;
SELECT input, reason LIKE 'confidence%' AS by_confidence, small_answer ? 'label' AS has_small_answer
  FROM triage.escalations WHERE source = 'inbox'::regclass ORDER BY id;
-- an update of the input routes the row again; other updates do not
UPDATE inbox SET body = 'wonderful tea, will buy again' WHERE id = 2;
UPDATE inbox SET label = 'other' WHERE id = 1;
SELECT id, body, label FROM inbox WHERE id IN (1, 2) ORDER BY id;
SELECT triage.detach('inbox', 'label');
INSERT INTO inbox (body) VALUES ('not routed any more');
SELECT label IS NULL AS not_routed FROM inbox WHERE body = 'not routed any more';
-- provenance: which model version, or which large model and prompt, wrote each answer
CREATE TABLE mail (id int PRIMARY KEY, body text, label text, label_by jsonb);
SELECT triage.attach('mail', 'body', 'label', 'reviews', 'label_by');
INSERT INTO mail VALUES (1, 'the coffee was stale and bitter, never again'), (2, 'fine');
SELECT id, label IS NOT NULL AS labelled, label_by->>'by' AS by, label_by->>'model' AS model,
       (label_by->>'version')::int = triage_internal.deployed_version('router') AS deployed_version,
       (label_by->>'confidence')::real BETWEEN 0 AND 1 AS has_confidence, label_by ? 'at' AS has_time
  FROM mail ORDER BY id;
SELECT e.id AS mail_job FROM triage.escalations e
 WHERE e.source = 'mail'::regclass AND e.source_key->>'id' = '1' \gset
UPDATE triage.escalations SET visible_at = now() - interval '1 second' WHERE id = :mail_job;
SELECT count(*) > 0 AS claimed FROM triage.claim('w1', 100, '1 minute');
SELECT triage.complete(:mail_job, '{"model": "big-model", "choices": [{"message": {"content": "{\"label\": \"great\"}"}}]}');
SELECT id, label, label_by->>'by' AS by, label_by->>'model' AS model, label_by->>'prompt_version' AS prompt_version,
       (label_by->>'escalation')::bigint = :mail_job AS escalation
  FROM mail WHERE id = 1;
SELECT triage.attach('mail', 'body', 'label', 'reviews', 'body');
-- a policy edited in place applies from the next statement, no re-attach
UPDATE triage.policies SET rules = '{"max_length": 3}' WHERE name = 'reviews';
INSERT INTO mail VALUES (3, 'tasty and fresh tea, five stars');
SELECT reason FROM triage.escalations WHERE source = 'mail'::regclass AND source_key->>'id' = '3';
SELECT (triage.route('reviews', 'tasty and fresh tea, five stars')).reason;
UPDATE triage.policies SET rules = '{}' WHERE name = 'reviews';
SELECT (triage.route('reviews', 'tasty and fresh tea, five stars')).reason LIKE 'confidence%' AS by_confidence;
-- policies are checked when written
UPDATE triage.policies SET rules = '{"max_lenght": 3}' WHERE name = 'reviews';
UPDATE triage.policies SET rules = '{"max_length": "long"}' WHERE name = 'reviews';
UPDATE triage.policies SET rules = '{"escalate_if_matches": "(unclosed"}' WHERE name = 'reviews';
UPDATE triage.policies SET thresholds = '{"default": 7}' WHERE name = 'reviews';
UPDATE triage.policies SET thresholds = '{"default": 0.5, "labels": {"great": "high"}}' WHERE name = 'reviews';
-- a user who may classify can insert into an attached table: the trigger
-- queues escalations on the user's behalf, without rights on the queue
GRANT SELECT, INSERT ON mail TO triage_user;
UPDATE triage.policies SET thresholds = '{"default": 1.0001}' WHERE name = 'reviews';
SET ROLE triage_user;
INSERT INTO mail (id, body) VALUES (4, 'I want a refund for this'), (5, 'great coffee');
SELECT count(*) FROM triage.escalations;
RESET ROLE;
SELECT id, label IS NOT NULL AS labelled FROM mail WHERE id >= 4 ORDER BY id;
SELECT count(*) AS queued FROM triage.escalations WHERE source = 'mail'::regclass AND source_key->>'id' IN ('4', '5');
SELECT triage.detach('mail', 'label');
UPDATE triage.policies SET thresholds = '{"default": 0.999}' WHERE name = 'reviews';
-- attach checks the table
CREATE TABLE nokey (body text, label text);
SELECT triage.attach('nokey', 'body', 'label', 'reviews');
CREATE TABLE numbers (id int PRIMARY KEY, body int, label text);
SELECT triage.attach('numbers', 'body', 'label', 'reviews');
SELECT triage.attach('inbox', 'nope', 'label', 'reviews');
SELECT triage.attach('inbox', 'body', 'label', 'nope');

-- process_table: batches, committed one by one, resumable
CREATE TABLE backlog (id int PRIMARY KEY, body text, label text);
INSERT INTO backlog SELECT n, review, NULL FROM labeled WHERE n <= 500;
-- a table not attached is refused: escalated answers go only to attached tables
CALL triage.process_table('backlog', 'body', 'label', 'reviews', 200);
-- attached after the rows went in: they wait for process_table
SELECT triage.attach('backlog', 'body', 'label', 'reviews');
-- (its NOTICEs carry the speed, which varies)
SET client_min_messages = warning;
CALL triage.process_table('backlog', 'body', 'label', 'reviews', 200);
RESET client_min_messages;
SELECT count(*) FILTER (WHERE label IS NULL) AS without_label, count(*) FROM backlog;
SELECT source, rows_done, rows_total, finished, rows_per_second > 0 AS has_rate FROM triage.process_progress;
-- a second run finds nothing left to do
SET client_min_messages = warning;
CALL triage.process_table('backlog', 'body', 'label', 'reviews', 200);
RESET client_min_messages;
SELECT rows_done, rows_total FROM triage.process_progress WHERE source = 'backlog'::regclass;
CALL triage.process_table('backlog', 'body', 'label', 'reviews', 0);

-- the numbers of each policy
SET triage.llm_prompt_price_per_1k = 0.01;
SET triage.llm_completion_price_per_1k = 0.03;
SELECT policy, rows_seen > 0 AS seen, escalated > 0 AS escalated, answered, dead, tokens, llm_cost
  FROM triage.escalation_stats;
-- the costs, computed here from the queue and the counters on their own
SELECT s.llm_cost = round(q.prompt / 1000 * 0.01 + q.completion / 1000 * 0.03, 4) AS llm_cost_right,
       s.all_llm_cost = round(c.seen * (q.prompt / q.answered / 1000 * 0.01
                                        + q.completion / q.answered / 1000 * 0.03), 4) AS all_llm_cost_right
  FROM triage.escalation_stats s,
       (SELECT sum((usage->>'prompt_tokens')::numeric) AS prompt,
               sum((usage->>'completion_tokens')::numeric) AS completion,
               count(usage->>'prompt_tokens') AS answered
          FROM triage.escalations WHERE policy = 'reviews') q,
       (SELECT sum(seen) AS seen FROM triage.policy_counters WHERE policy = 'reviews') c
 WHERE s.policy = 'reviews';

-- least privilege: the worker role can work the queue and nothing else
SELECT triage.enqueue('reviews', 'for the worker role') AS job \gset
-- roles are cluster-wide: a worker role claims only where it is allowed
SET ROLE triage_worker;
SELECT count(*) FROM triage.claim('w9', 1, '1 minute');
RESET ROLE;
SELECT triage.allow_worker('triage_worker');
SET ROLE triage_worker;
SELECT count(*) FROM triage.claim('w9', 1, '1 minute');
SELECT triage.release(:job);
SELECT count(*) FROM triage.models;
SELECT triage.enqueue('reviews', 'x');
RESET ROLE;
-- a user can classify, but not deploy nor claim
SET ROLE triage_user;
SELECT (triage.classify('router', 'lovely tea')).label IS NOT NULL AS classified;
SELECT triage.deploy('router', 1);
SELECT triage.claim('w9', 1);
-- ... nor read a model's bytes (its dictionary lists its training words)
SELECT count(data) FROM triage.models;
SELECT octet_length(triage.export_fasttext('router', 1));
RESET ROLE;
-- a released lease is nobody's: the worker role cannot complete it
SET ROLE triage_worker;
SELECT triage.complete(:job, '{"choices": [{"message": {"content": "great"}}]}');
RESET ROLE;
-- nor can an admin forge an escalation (it names a table complete() writes into)
SET ROLE triage_admin;
INSERT INTO triage.escalations (policy, input) VALUES ('reviews', 'forged');
SELECT count(*) >= 0 AS admin_reads_queue FROM triage.escalations;
RESET ROLE;

-- policies have owners: a role routes rows under one only once granted it
SELECT triage.create_policy('app_policy', 'router', threshold => 1.001);
CREATE ROLE regress_app IN ROLE triage_user;
GRANT CREATE ON SCHEMA public TO regress_app;
SET ROLE regress_app;
CREATE TABLE app_inbox (id int PRIMARY KEY, body text, label text);
SELECT triage.attach('app_inbox', 'body', 'label', 'app_policy');
SELECT triage.enqueue('app_policy', 'queued by hand');
RESET ROLE;
SELECT triage.grant_policy('app_policy', 'regress_app');
SELECT triage.may_use_policy('app_policy', 'regress_app'::regrole) AS granted;
SET ROLE regress_app;
SELECT triage.attach('app_inbox', 'body', 'label', 'app_policy');
INSERT INTO app_inbox VALUES (1, 'lovely tea, would buy again');
SELECT id, label IS NOT NULL AS labeled FROM app_inbox;
RESET ROLE;
SELECT queued_by, source, output_column, status FROM triage.escalations WHERE policy = 'app_policy';
-- the grant taken back: the table's rows are no longer queued under it
SELECT triage.revoke_policy('app_policy', 'regress_app');
SET ROLE regress_app;
INSERT INTO app_inbox VALUES (2, 'stale and bitter');
RESET ROLE;
-- a role that may only write the table needs no rights on pg_triage: the
-- trigger routes with the table owner's
SELECT triage.grant_policy('app_policy', 'regress_app');
CREATE ROLE regress_writer;
GRANT INSERT ON app_inbox TO regress_writer;
SET ROLE regress_writer;
INSERT INTO app_inbox VALUES (3, 'stale and bitter');
RESET ROLE;
SELECT id, label IS NOT NULL AS labeled FROM app_inbox ORDER BY id;
SELECT queued_by, count(*) FROM triage.escalations WHERE policy = 'app_policy' GROUP BY 1;
-- a hand-written trigger is held to what attach() creates: the key must be the primary key
CREATE TABLE handmade (id int PRIMARY KEY, other int, body text, label text);
CREATE TRIGGER triage_route_label BEFORE INSERT ON handmade FOR EACH ROW
	EXECUTE FUNCTION triage_internal.route_row('other', 'body', 'label', 'app_policy', '');
INSERT INTO handmade VALUES (1, 7, 'lovely tea', NULL);
DROP TABLE handmade;

-- distillation: retrain from the examples (here 2 large-model answers) plus
-- labeled rows, deploy only if better on held-out rows: rows neither version
-- trained on.  The router's version 1 trained on every review, so the
-- shipped model, which never saw those with n % 5 = 0, is deployed first
SELECT triage.import_fasttext('router', pg_read_binary_file(:'shipped')) AS router_shipped \gset
SELECT triage.deploy('router', :router_shipped);
SELECT d->>'previous_version' AS previous, d->>'new_version' AS new, d->>'deployed' AS deployed,
       (d->>'deployed')::boolean = ((d->'after'->>'accuracy')::numeric > (d->'before'->>'accuracy')::numeric)
         AS deployed_only_if_better,
       (d->>'examples')::int > 0 AS has_examples
  FROM triage.distill('router', jsonb_build_object(
         'query', 'SELECT review, score FROM labeled WHERE n % 5 <> 0',
         'heldout', 'SELECT review, score FROM labeled WHERE n % 5 = 0',
         'train', '{"dim": 10, "epoch": 10, "lr": 0.5, "wordNgrams": 2, "bucket": 20000, "seed": 3}'::jsonb)) d
\gset distill_
SELECT :'distill_previous' AS previous, :'distill_new' AS new,
       :'distill_deployed_only_if_better' AS deployed_only_if_better, :'distill_has_examples' AS has_examples;
-- the deployment follows the decision
SELECT version = CASE WHEN :'distill_deployed' = 'true' THEN :'distill_new' ELSE :'distill_previous' END::int
       AS deployment_follows
  FROM triage.deployments WHERE name = 'router';
SELECT triage.distill('router', '{}');
SELECT triage.distill('router', '{"heldout": "SELECT 1", "bogus": 1}');

-- extraction policies: the extractor's fields go to a jsonb column, required
-- or unsure fields escalate, the large model answers {"fields": {...}}
\set crf :abs_srcdir '/models/business_fields.crf'
SELECT triage.import_extractor('fields', pg_read_binary_file(:'crf')) AS extractor_version;
SELECT triage.create_policy('orders', NULL, extractor => 'fields',
       rules => '{"required_fields": ["order_id"], "min_field_confidence": 0.5}');
SELECT name, model, extractor, fields FROM triage.policies WHERE name = 'orders';
-- an extraction policy has no classifier to train and calibrate
SELECT triage.train_and_calibrate('orders', 'SELECT review, score FROM labeled', target_accuracy => 0.9);
SELECT (d).escalate, (d).reason, (d).fields->'order_id'->>'value' AS order_id,
       (d).confidence BETWEEN 0 AND 1 AS has_confidence
  FROM (SELECT triage.route('orders', 'Hello, my order A-10293 for $129.99 never arrived. Maria Lopez') AS d) r;
SELECT (triage.route('orders', 'Hello, the parcel never arrived. Maria Lopez')).reason;
CREATE TABLE support (id int PRIMARY KEY, body text, fields jsonb, fields_by jsonb);
SELECT triage.attach('support', 'body', 'fields', 'orders', 'fields_by');
INSERT INTO support (id, body) VALUES
  (1, 'Hello, my order A-10293 for $129.99 never arrived. Maria Lopez'),
  (2, 'Hello, the parcel never arrived, please call me. Maria Lopez');
SELECT id, fields->>'order_id' AS order_id, fields_by->>'by' AS by FROM support ORDER BY id;
SELECT e.id AS fields_job, e.small_answer ? 'fields' AS small_has_fields, e.reason
  FROM triage.escalations e WHERE e.source = 'support'::regclass \gset
SELECT :'small_has_fields' AS small_has_fields, :'reason' AS reason;
UPDATE triage.escalations SET visible_at = now() - interval '1 second' WHERE id = :fields_job;
SELECT count(*) > 0 AS claimed FROM triage.claim('w1', 100, '1 minute', 'orders');
-- the request asks for the policy's fields
SELECT request->'messages'->1->>'content' LIKE '%Fields: amount, currency, customer_name%' AS asks_fields
  FROM triage.escalations e, LATERAL (SELECT triage_internal.build_request(p, e.input) AS request
                                       FROM triage.policies p WHERE p.name = e.policy) r
 WHERE e.id = :fields_job;
-- answers of the wrong shape are failed attempts; the row is untouched
SELECT triage.complete(:fields_job, '{"choices": [{"message": {"content": "{\"fields\": {\"order_id\": 42}}"}}]}');
UPDATE triage.escalations SET status = 'claimed', claimed_role = triage_internal.caller_role(), visible_at = now() + interval '1 minute' WHERE id = :fields_job;
SELECT triage.complete(:fields_job, '{"choices": [{"message": {"content": "{\"fields\": {\"shoe_size\": \"9\"}}"}}]}');
UPDATE triage.escalations SET status = 'claimed', claimed_role = triage_internal.caller_role(), visible_at = now() + interval '1 minute' WHERE id = :fields_job;
SELECT triage.complete(:fields_job, '{"choices": [{"message": {"content": "{\"label\": \"great\"}"}}]}');
UPDATE triage.escalations SET status = 'claimed', claimed_role = triage_internal.caller_role(), visible_at = now() + interval '1 minute' WHERE id = :fields_job;
SELECT triage.complete(:fields_job, '{"choices": [{"message": {"content": "not json"}}]}');
SELECT status, attempts, left(error, 40) AS error FROM triage.escalations WHERE id = :fields_job;
SELECT fields->>'order_id' AS order_id, fields_by->>'by' AS by FROM support WHERE id = 2;
-- a good answer is written with its provenance and becomes an example of the extractor
UPDATE triage.escalations SET visible_at = now() - interval '1 second', status = 'pending' WHERE id = :fields_job;
SELECT count(*) > 0 AS claimed FROM triage.claim('w1', 100, '1 minute', 'orders');
SELECT triage.complete(:fields_job, '{"model": "big", "choices": [{"message": {"content": "{\"fields\": {\"customer_name\": \"Maria Lopez\", \"order_id\": null}}"}}]}');
SELECT fields, fields_by->>'by' AS by, fields_by->>'model' AS model FROM support WHERE id = 2;
SELECT model, fields, source FROM triage.examples WHERE model = 'fields';
-- a text output column does not fit an extraction policy
CREATE TABLE support_text (id int PRIMARY KEY, body text, fields text);
SELECT triage.attach('support_text', 'body', 'fields', 'orders');
-- an extractor is not a classifier, and the other way round
SELECT triage.classify('fields', 'x');
SELECT triage.extract('router', 'x');
SELECT triage.create_policy('bad', 'fields');
SELECT triage.create_policy('bad', NULL);
UPDATE triage.policies SET rules = '{"required_fields": "order_id"}' WHERE name = 'orders';
UPDATE triage.policies SET rules = '{"min_field_confidence": 2}' WHERE name = 'orders';
UPDATE triage.policies SET rules = '{"required_fields": ["order_id"]}' WHERE name = 'reviews';
-- people's answers become examples too; distill retrains an extractor from them and
-- deploys the new version only if its field F1 is better on held-out
-- messages: neither these examples nor the shipped extractor's training
-- messages (test/extract/gen_messages.py, seed 1)
CREATE TABLE support_checked (body text, fields jsonb);
INSERT INTO support_checked VALUES
  ('Hi, order B-20431 for $59.00 has not arrived yet. John Smith',
   '{"order_id": "B-20431", "amount": "59.00", "currency": "$", "customer_name": "John Smith"}'),
  ('Please refund order C-77120, the kettle came broken. Ana Silva',
   '{"order_id": "C-77120", "customer_name": "Ana Silva"}');
SELECT triage.add_examples('fields', 'SELECT body, fields FROM support WHERE id = 1');
SELECT triage.add_examples('nope', 'SELECT 1, 2');
SELECT source, count(*) FROM triage.examples WHERE model = 'fields' GROUP BY 1 ORDER BY 1;
SELECT d->'before' ? 'f1' AS has_f1,
       (d->>'deployed')::boolean = ((d->'after'->>'f1')::numeric > (d->'before'->>'f1')::numeric)
         AS deployed_only_if_better
  FROM triage.distill('fields', '{"heldout": "SELECT body, fields FROM support_checked", "train": {"max_iterations": 20}}') d;
SELECT triage.add_examples('fields', 'SELECT body, fields FROM support', 'robot');
SELECT triage.add_examples('fields', 'SELECT body FROM support');
SELECT triage.add_examples('fields', NULL) IS NULL AS strict;

-- policies are checked when written, by create_policy or by hand, with the same defaults
INSERT INTO triage.policies (name, model) VALUES ('by_hand', 'router');
SELECT labels, thresholds FROM triage.policies WHERE name = 'by_hand';
INSERT INTO triage.policies (name, model, labels) VALUES ('bad', 'router', '{}');
INSERT INTO triage.policies (name, model, labels) VALUES ('bad', 'router', '{great,NULL}');
INSERT INTO triage.policies (name, model, labels) VALUES ('bad', 'router', '{great,banana}');
INSERT INTO triage.policies (name, model) VALUES ('bad', 'no_such_model');
INSERT INTO triage.policies (name, model) VALUES ('bad', 'fields');
INSERT INTO triage.policies (name, extractor) VALUES ('bad', 'router');
INSERT INTO triage.policies (name, extractor, fields) VALUES ('bad', 'fields', '{shoe_size}');
INSERT INTO triage.policies (name, model, thresholds) VALUES ('bad', 'router', '{}');
INSERT INTO triage.policies (name, model, thresholds) VALUES ('bad', 'router', '{"defualt": 0.99}');
INSERT INTO triage.policies (name, model, thresholds) VALUES ('bad', 'router', '{"default": 0.5, "labels": {"banana": 0.9}}');
INSERT INTO triage.policies (name, model, prompt) VALUES ('bad', 'router', '{"sytem": "typo"}');
INSERT INTO triage.policies (name, model) VALUES ('', 'router');
INSERT INTO triage.policies (name, model) VALUES (repeat('p', 64), 'router');
UPDATE triage.policies SET labels = '{great,banana}' WHERE name = 'by_hand';
DELETE FROM triage.policies WHERE name = 'by_hand';
-- a policy that tables are attached to keeps its name and stays
UPDATE triage.policies SET name = 'renamed' WHERE name = 'reviews';
DELETE FROM triage.policies WHERE name = 'reviews';
SELECT * FROM triage.attached_tables('reviews') ORDER BY 1;
-- output columns whose trigger names would be cut at 63 bytes (and collide) get triggers of their own
CREATE TABLE long_names (id int PRIMARY KEY, body text,
	label_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_1 text,
	label_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_2 text);
SELECT triage.attach('long_names', 'body', 'label_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_1', 'reviews');
SELECT triage.attach('long_names', 'body', 'label_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_2', 'reviews');
SELECT triage.detach('long_names', 'label_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_1');
INSERT INTO long_names (id, body) VALUES (1, 'lovely tea');
SELECT label_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_1 IS NULL AS first_detached,
	   label_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_2 IS NOT NULL AS second_routed
  FROM long_names;
DROP TABLE long_names;

-- process_table takes any orderable primary key, and a key's text in the
-- queue does not depend on the session's settings: answered under another
-- DateStyle, the answer still finds its row
CREATE TABLE by_time (at timestamptz PRIMARY KEY, body text, label text);
INSERT INTO by_time VALUES ('2026-01-02 03:04:05.123456+00', 'I want a refund', NULL),
                           ('2026-01-03 00:00:00+00', 'lovely tea', NULL);
CREATE TABLE by_uuid (id uuid PRIMARY KEY, body text, label text);
INSERT INTO by_uuid VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'I want a refund', NULL),
                           ('b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'lovely tea', NULL);
CREATE TABLE by_flag (flag boolean PRIMARY KEY, body text, label text);
INSERT INTO by_flag VALUES (true, 'I want a refund', NULL), (false, 'lovely tea', NULL);
SELECT triage.attach(t, 'body', 'label', 'app_policy') FROM unnest('{by_time,by_uuid,by_flag}'::regclass[]) t;
SET datestyle = 'SQL, MDY';
SET client_min_messages = warning;
CALL triage.process_table('by_time', 'body', 'label', 'app_policy', 1);
CALL triage.process_table('by_uuid', 'body', 'label', 'app_policy', 1);
CALL triage.process_table('by_flag', 'body', 'label', 'app_policy', 1);
RESET client_min_messages;
SELECT (SELECT count(label) FROM by_time) AS by_time, (SELECT count(label) FROM by_uuid) AS by_uuid,
       (SELECT count(label) FROM by_flag) AS by_flag;
SET datestyle = 'ISO, DMY';
SELECT count(*) AS claimed FROM triage.claim('w1', 100, '1 minute', 'app_policy')
 WHERE id IN (SELECT id FROM triage.escalations WHERE source IN ('by_time'::regclass, 'by_uuid', 'by_flag'));
SELECT e.source, triage.complete(e.id, pg_catalog.jsonb_build_object('choices', pg_catalog.jsonb_build_array(
         pg_catalog.jsonb_build_object('message', pg_catalog.jsonb_build_object('content', e.small_answer->>'label')))))
  FROM triage.escalations e WHERE e.source IN ('by_time'::regclass, 'by_uuid', 'by_flag') AND e.status = 'claimed'
 ORDER BY e.id;
SELECT source, outcome, count(*) FROM triage.escalations
 WHERE source IN ('by_time'::regclass, 'by_uuid', 'by_flag') GROUP BY 1, 2 ORDER BY 1, 2;
RESET datestyle;
SELECT triage.detach(t, 'label') FROM unnest('{by_time,by_uuid,by_flag}'::regclass[]) t;
DROP TABLE by_time, by_uuid, by_flag;

-- the role made above, and what it owns
DROP TABLE app_inbox;
REVOKE CREATE ON SCHEMA public FROM regress_app;
DROP ROLE regress_app, regress_writer;
