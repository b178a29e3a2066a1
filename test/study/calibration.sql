-- Calibration over many random splits of the shared reviews: how often the
-- issue's two criteria hold on rows that calibration never saw, for both
-- ways of choosing thresholds, on the same routing rows each time.
--
--   held-out        train on 60% of the reviews, calibrate on the next 20%
--                   (triage.train, then triage.calibrate)
--   cross-fitted    the same 80% go to triage.train_and_calibrate (4 folds)
--
-- Each split routes the last 20% with route() and records the escalation
-- rate, the kept accuracy, the least escalation any threshold reaches 90%
-- with there (the oracle), and the kept accuracy when as many rows are
-- escalated by the seeds' rule (the longest) or at random (mean of 20
-- draws).  The criteria: kept accuracy >= 0.89, and escalation at most 5
-- points above the oracle.  Splits: by md5(seed || review), so copies of a
-- review share a part; every query reads its rows in the file's order.
--
-- psql -v csv=/path/fine_foods_train.csv -v splits=40 -f calibration.sql
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_triage;
CREATE TABLE study_reviews (product text, review text, score text);
COPY study_reviews FROM :'csv' WITH (FORMAT csv, HEADER);
CREATE TABLE study_results (seed integer, method text, escalation numeric, kept_accuracy numeric,
							oracle numeric, longest numeric, random numeric, PRIMARY KEY (seed, method));
CREATE TABLE study_split (id integer, review text, score text, part text);
CREATE TABLE study_routed (id integer, len integer, c real, ok boolean, escalate boolean);
SELECT set_config('study.splits', :'splits', false) \g /dev/null
SET client_min_messages = notice;

-- route the routing part under policy p and record the result
CREATE FUNCTION study_route(seed integer, method text, p text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	n_escalated bigint;
BEGIN
	TRUNCATE study_routed;
	INSERT INTO study_routed
	SELECT id, length(review), (d).confidence, (d).label IS NOT DISTINCT FROM score, (d).escalate
	  FROM (SELECT id, review, score, triage.route(p, review) AS d FROM study_split WHERE part = 'routing') s;
	SELECT count(*) FILTER (WHERE escalate) INTO n_escalated FROM study_routed;
	INSERT INTO study_results
	SELECT seed, method, avg(escalate::int), avg(ok::int) FILTER (WHERE NOT escalate),
		   (SELECT min(escalation) FROM (
				SELECT avg((r.c < t.t)::int) AS escalation, avg(r.ok::int) FILTER (WHERE r.c >= t.t) AS accuracy
				  FROM (SELECT DISTINCT c AS t FROM study_routed UNION SELECT 1.000001) t, study_routed r
				 GROUP BY t.t) curve
			 WHERE accuracy >= 0.9 OR accuracy IS NULL),
		   (SELECT avg(ok::int) FROM (SELECT ok, row_number() OVER (ORDER BY len DESC, id) AS i FROM study_routed) l
			 WHERE i > n_escalated),
		   (SELECT avg(accuracy) FROM (
				SELECT d, avg(ok::int) AS accuracy
				  FROM (SELECT d, ok, row_number() OVER (PARTITION BY d ORDER BY md5(d || ':' || id)) AS i
						  FROM study_routed, generate_series(1, 20) d) r
				 WHERE i > n_escalated GROUP BY d) per_draw)
	  FROM study_routed;
END;
$$;

DO $$
DECLARE
	options jsonb := '{"kind": "fasttext", "dim": 10, "epoch": 10, "lr": 0.5, "wordNgrams": 2, "minn": 3, "maxn": 6, '
					 '"bucket": 200000, "seed": 1, "thread": 1}';
	m text;
BEGIN
	FOR seed IN 1 .. current_setting('study.splits')::int LOOP
		m := 'study_' || seed;
		TRUNCATE study_split;
		INSERT INTO study_split
		SELECT id, review, score, CASE WHEN h < 0.6 THEN 'train' WHEN h < 0.8 THEN 'calibration' ELSE 'routing' END
		  FROM (SELECT row_number() OVER () AS id, review, score,
					   ('x' || substr(md5(seed || ':' || review), 1, 8))::bit(32)::bigint / 4294967296.0 AS h
				  FROM study_reviews) s;
		PERFORM triage.train(m, 'SELECT review, score FROM study_split WHERE part = ''train'' ORDER BY id', options);
		PERFORM triage.create_policy(m, m);
		PERFORM triage.calibrate(m, 'SELECT review, score FROM study_split WHERE part = ''calibration'' ORDER BY id',
								 target_accuracy => 0.9);
		PERFORM study_route(seed, 'held-out', m);
		PERFORM triage.train_and_calibrate(m, 'SELECT review, score FROM study_split WHERE part <> ''routing'' ORDER BY id',
										   options, target_accuracy => 0.9, folds => 4);
		PERFORM study_route(seed, 'cross-fitted', m);
		RAISE NOTICE 'split % of %', seed, current_setting('study.splits');
		COMMIT;
	END LOOP;
END
$$;

\echo
\echo 'Per method, over the splits: means, and how often each criterion held'
SELECT method, count(*) AS splits,
	   round(avg(kept_accuracy), 3) AS kept_accuracy, round(avg(escalation), 3) AS escalation,
	   round(avg(oracle), 3) AS oracle,
	   round(avg((kept_accuracy >= 0.89)::int), 2) AS "P(kept >= 0.89)",
	   round(avg((escalation <= oracle + 0.05)::int), 2) AS "P(escalation <= oracle + 5)",
	   round(avg((kept_accuracy >= 0.89 AND escalation <= oracle + 0.05)::int), 2) AS "P(both)",
	   round(stddev(escalation), 3) AS "sd escalation", round(stddev(oracle), 3) AS "sd oracle"
  FROM study_results GROUP BY method ORDER BY method DESC;
\echo 'What 009_calibration.pl asserts on its split, over these: the least of each'
SELECT method, round(min(kept_accuracy), 3) AS "kept accuracy",
	   round(min(kept_accuracy - longest), 3) AS "over the longest",
	   round(min(kept_accuracy - random), 3) AS "over random"
  FROM study_results GROUP BY method ORDER BY method DESC;
\echo 'Paired, on the same routing rows: splits where only one method met both criteria'
SELECT count(*) FILTER (WHERE x AND NOT h) AS "only cross-fitted", count(*) FILTER (WHERE h AND NOT x) AS "only held-out",
	   count(*) FILTER (WHERE h AND x) AS both, count(*) FILTER (WHERE NOT h AND NOT x) AS neither
  FROM (SELECT seed, bool_and(ok) FILTER (WHERE method = 'held-out') AS h,
			   bool_and(ok) FILTER (WHERE method = 'cross-fitted') AS x
		  FROM (SELECT *, kept_accuracy >= 0.89 AND escalation <= oracle + 0.05 AS ok FROM study_results) r
		 GROUP BY seed) s;
