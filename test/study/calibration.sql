-- The acceptance protocol of issue #16: how often a threshold chosen on
-- labeled rows keeps its promise on rows it never saw, and what it costs.
--
-- Part 1, calibrate.  A deployed model (train's default kind, linear, on
-- the first 1,000 of the shared reviews in md5 order) answers the other
-- 3,000: the pool.  Each draw takes a calibration set of n = 300, 500 or
-- 1,000 pool rows by bootstrap (with replacement), chooses thresholds on it
-- for a target t = 0.85 or 0.90 with each method (calibrate_answers, what
-- calibrate runs once it has the answers; 'bound' and 'guarantee' at
-- confidence 0.9) and scores them exactly on the whole pool.
--
-- Part 2, train_and_calibrate.  Each split takes about 1,000 of the 4,000
-- reviews (by md5 of the split and the review, so copies share a side) as
-- the labeled rows and the rest as the pool; it does what
-- train_and_calibrate does (cross_validate with 5 folds, a model of all the
-- rows) and chooses thresholds on the out-of-fold answers carried over in
-- each way of transfer_answers, then scores them on the pool answered by
-- the model of all the rows.
--
-- Per (method, n, t), and transfer: validity, the share of draws whose
-- kept accuracy on the pool is at least t (none kept counts as valid), and
-- efficiency, mean escalation at most e*(t + 1.28 sqrt(t (1 - t) / (n (1 -
-- e*(t))))) + 0.05, with e*(a) the pool's least escalation keeping accuracy
-- a (1 above the curve's top): the escalation an oracle would need for the
-- target plus one standard error of what n rows can show, and 5 points.
--
-- psql -v csv=/path/fine_foods_train.csv -v draws=500 -v splits=50 -f calibration.sql
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_triage;
CREATE TABLE study_reviews (product text, review text, score text);
COPY study_reviews FROM :'csv' WITH (FORMAT csv, HEADER);
CREATE TABLE study_labeled AS
SELECT row_number() OVER (ORDER BY md5(review), n) AS id, review, score
  FROM (SELECT row_number() OVER () AS n, review, score FROM study_reviews) f;
-- a pool's answers, and its curve (escalation, kept accuracy) per threshold
CREATE TABLE study_pool (pid integer, l text, c real, ok boolean);
CREATE TABLE study_curve (escalation float8, accuracy float8);
CREATE TABLE study_results (part text, transfer text, draw integer, n integer, target numeric, method text,
							threshold real, escalation float8, kept_accuracy float8, bound float8);
SELECT set_config('study.draws', :'draws', false), set_config('study.splits', :'splits', false) \g /dev/null
SET client_min_messages = notice;

-- the curve of study_pool
CREATE FUNCTION study_fill_curve() RETURNS void LANGUAGE sql AS $$
	TRUNCATE study_curve;
	INSERT INTO study_curve
	SELECT 1 - sum(k) OVER w / (SELECT count(*) FROM study_pool), sum(right_k) OVER w / nullif(sum(k) OVER w, 0)
	  FROM (SELECT c, count(*)::float8 AS k, count(*) FILTER (WHERE ok)::float8 AS right_k
			  FROM study_pool GROUP BY c) g
	WINDOW w AS (ORDER BY c DESC);
	INSERT INTO study_curve VALUES (1, NULL);
$$;

-- e*(a): the least escalation keeping accuracy a on the pool
CREATE FUNCTION study_least(a float8) RETURNS float8 LANGUAGE sql STABLE AS $$
	SELECT coalesce(min(escalation), 1) FROM study_curve WHERE accuracy >= a OR accuracy IS NULL
$$;

-- the efficiency bound for target t on n rows
CREATE FUNCTION study_bound(t float8, n integer) RETURNS float8 LANGUAGE sql STABLE AS $$
	SELECT study_least(t + 1.28 * sqrt(t * (1 - t) / (n * greatest(1 - study_least(t), 1e-9)))) + 0.05
$$;

-- choose on rows with each method and target, score on the pool
CREATE FUNCTION study_choose(part text, transfer text, draw integer, n integer, p text, rows jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	t numeric;
	m text;
	th jsonb;
BEGIN
	FOREACH t IN ARRAY ARRAY[0.85, 0.90] LOOP
		FOREACH m IN ARRAY ARRAY['bound', 'guarantee', 'estimate'] LOOP
			PERFORM triage_internal.calibrate_answers(p, rows, t::real, NULL, 0.9, m);
			SELECT thresholds INTO th FROM triage.policies WHERE name = p;
			-- as route() decides: escalate when the confidence is under the
			-- label's threshold, else the default
			INSERT INTO study_results
			SELECT part, transfer, draw, n, t, m, (th->>'default')::real, avg((NOT kept)::int),
				   avg(ok::int) FILTER (WHERE kept), study_bound(t, n)
			  FROM (SELECT ok, c >= coalesce((th->'labels'->>l)::real, (th->>'default')::real) AS kept
					  FROM study_pool) s;
		END LOOP;
	END LOOP;
END;
$$;

-- Part 1: the deployed model and its pool
SELECT triage.train('study', 'SELECT review, score FROM study_labeled WHERE id <= 1000 ORDER BY id') \g /dev/null
SELECT triage.create_policy('study_scratch', 'study') \g /dev/null
INSERT INTO study_pool
SELECT row_number() OVER (ORDER BY id), (a).label, coalesce((a).confidence, 0), (a).label IS NOT DISTINCT FROM score
  FROM (SELECT id, score, triage.classify('study', review) AS a FROM study_labeled WHERE id > 1000) s;
SELECT study_fill_curve() \g /dev/null

\echo
\echo 'Part 1: the pool (answers of a linear model trained on 1,000 reviews, on the other 3,000)'
SELECT count(*) AS rows, round(avg(ok::int), 3) AS accuracy,
	   round(study_least(0.85)::numeric, 3) AS "e*(0.85)", round(study_least(0.90)::numeric, 3) AS "e*(0.90)"
  FROM study_pool;

DO $$
DECLARE
	pool_n integer := (SELECT count(*) FROM study_pool);
	rows jsonb;
	n integer;
BEGIN
	FOR d IN 1 .. current_setting('study.draws')::int LOOP
		FOR i IN 1 .. 3 LOOP
			n := (ARRAY[300, 500, 1000])[i];
			PERFORM setseed((d * 3 + i) / 1e5);
			SELECT jsonb_agg(jsonb_build_object('l', p.l, 'c', p.c, 'ok', p.ok)) INTO rows
			  FROM (SELECT 1 + floor(random() * pool_n)::int AS pid FROM generate_series(1, n)) g
			  JOIN study_pool p USING (pid);
			PERFORM study_choose('calibrate', '-', d, n, 'study_scratch', rows);
		END LOOP;
		IF d % 50 = 0 THEN
			RAISE NOTICE 'draw % of %', d, current_setting('study.draws');
		END IF;
		COMMIT;
	END LOOP;
END
$$;

-- Part 2: train_and_calibrate's out-of-fold answers, each way of carrying
-- them over, on splits
CREATE TABLE study_split (id integer, review text, score text, part text);
DO $$
DECLARE
	m text;
	v integer;
	q text := 'SELECT review, score FROM study_split WHERE part = ''labeled'' ORDER BY id';
	rows jsonb;
	n integer;
	tr text;
BEGIN
	PERFORM triage.train('study_tc', 'SELECT review, score FROM study_labeled WHERE id <= 100');
	PERFORM triage.create_policy('study_tc_scratch', 'study_tc');
	FOR s IN 1 .. current_setting('study.splits')::int LOOP
		m := 'study_tc_' || s;
		TRUNCATE study_split;
		INSERT INTO study_split
		SELECT id, review, score,
			   CASE WHEN ('x' || substr(md5(s || ':' || review), 1, 8))::bit(32)::bigint < 1073741824
					THEN 'labeled' ELSE 'pool' END
		  FROM study_labeled;
		-- what train_and_calibrate does: the out-of-fold answers, a model of all the rows
		v := triage.train(m, q);
		SELECT jsonb_agg(jsonb_build_object('l', x.predicted, 'c', coalesce(x.confidence, 0),
											'ok', x.predicted IS NOT DISTINCT FROM x.label, 'k', x.fold,
											'f', coalesce((triage.classify(m, v, x.input)).confidence, 0))),
			   count(*)
		  INTO rows, n
		  FROM triage.cross_validate(q, '{}', 5) x;
		TRUNCATE study_pool;
		INSERT INTO study_pool
		SELECT row_number() OVER (ORDER BY id), (a).label, coalesce((a).confidence, 0), (a).label IS NOT DISTINCT FROM score
		  FROM (SELECT id, score, triage.classify(m, v, review) AS a FROM study_split WHERE part = 'pool') p;
		PERFORM study_fill_curve();
		FOREACH tr IN ARRAY ARRAY['none', 'fraction', 'scale', 'folds'] LOOP
			PERFORM study_choose('train_and_calibrate', tr, s, n, 'study_tc_scratch',
								 triage_internal.transfer_answers(rows, tr));
		END LOOP;
		IF s % 5 = 0 THEN
			RAISE NOTICE 'split % of %', s, current_setting('study.splits');
		END IF;
		COMMIT;
	END LOOP;
END
$$;

\echo
\echo 'Per method, n and target: validity (share of draws keeping the target on the pool),'
\echo 'mean escalation and the efficiency bound; for train_and_calibrate n is the labeled'
\echo 'rows (mean of the splits) and the bound the mean of each split''s own'
SELECT part, transfer, method, round(avg(n)) AS n, target, count(*) AS draws,
	   round(avg((kept_accuracy >= target OR kept_accuracy IS NULL)::int), 3) AS validity,
	   round(avg(kept_accuracy)::numeric, 3) AS "kept accuracy",
	   round(avg(escalation)::numeric, 3) AS escalation, round(avg(bound)::numeric, 3) AS bound,
	   CASE WHEN method = 'estimate' THEN '-'
			WHEN avg((kept_accuracy >= target OR kept_accuracy IS NULL)::int) >= 0.875 THEN 'yes' ELSE 'NO' END
		   AS "valid >= 87.5%",
	   CASE WHEN avg(escalation) <= avg(bound) THEN 'yes' ELSE 'NO' END AS efficient
  FROM study_results
 GROUP BY part, transfer, method, CASE WHEN part = 'calibrate' THEN n END, target
 ORDER BY part, transfer DESC, array_position(ARRAY['bound', 'guarantee', 'estimate'], method), 4, target;
