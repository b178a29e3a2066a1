-- pg_triage: routing one input, and choosing thresholds
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Routing -----------------------------------------------------------------------

CREATE TYPE triage.decision AS (label text, confidence real, fields jsonb, escalate boolean, reason text);
COMMENT ON TYPE triage.decision IS
	'A routing decision: the small model''s answer, whether to escalate it, and the rule or threshold that decided.';

-- COST 16: classify's 15 plus the policy (rules, threshold, the reason
-- string), measured as classify's COST (src/sql/fasttext.sql) under a
-- policy of the linear kind: 14.7x md5 (the shipped .ftz: 11.9x), the
-- policy's share within the noise of the runs (under one md5).  An
-- extraction policy costs an extract (30), one with both about 45: the
-- COST is for the usual classification policy.
CREATE FUNCTION triage.route(policy text, input text) RETURNS triage.decision
	AS 'MODULE_PATHNAME', 'triage_route'
	LANGUAGE C STABLE STRICT PARALLEL SAFE COST 16;
COMMENT ON FUNCTION triage.route(text, text) IS
	'Routes one input under a policy: the small model''s label and confidence, and whether to escalate, with the reason (rule, threshold or audit sample).';

-- The checks calibrate and train_and_calibrate share, before any work: the
-- arguments, and the policy, locked until the thresholds are stored.
CREATE FUNCTION triage_internal.lock_policy_for_calibration(policy text, query text, target_accuracy real,
												   max_escalation real) RETURNS triage.policies
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	p triage.policies;
BEGIN
	IF policy IS NULL OR query IS NULL THEN
		RAISE EXCEPTION 'policy and query must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF target_accuracy IS NULL AND max_escalation IS NULL THEN
		RAISE EXCEPTION 'give target_accuracy, max_escalation or both'
			USING ERRCODE = 'invalid_parameter_value',
				HINT = 'For example triage.calibrate(''p'', ''SELECT body, label FROM heldout'', target_accuracy => 0.9).';
	END IF;
	IF target_accuracy NOT BETWEEN 0 AND 1 OR max_escalation NOT BETWEEN 0 AND 1 THEN
		RAISE EXCEPTION 'target_accuracy and max_escalation are shares between 0 and 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT * INTO p FROM triage.policies x WHERE x.name = lock_policy_for_calibration.policy FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'policy "%" does not exist', policy USING ERRCODE = 'undefined_object';
	END IF;
	RETURN p;
END;
$$;

COMMENT ON FUNCTION triage_internal.lock_policy_for_calibration(text, text, real, real) IS
	'The checks calibrate and train_and_calibrate share; locks the policy until the thresholds are stored.';

-- Chooses and stores a policy's thresholds from rows of the model's answers
-- ([{"l": label, "c": confidence, "ok": right?}]): the part of calibrate and
-- train_and_calibrate after the answers are known.  source (what gave the
-- answers) is stored and returned with the result.
-- Statistics for thresholds with a stated confidence (bounds.c)
CREATE FUNCTION triage_internal.normal_quantile(p float8) RETURNS float8
	AS 'MODULE_PATHNAME', 'triage_normal_quantile'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage_internal.normal_quantile(float8) IS
	'The p-quantile of the standard normal distribution.';

CREATE FUNCTION triage_internal.binomial_upper_tail(successes integer, trials integer, p float8) RETURNS float8
	AS 'MODULE_PATHNAME', 'triage_binomial_upper_tail'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage_internal.binomial_upper_tail(integer, integer, float8) IS
	'P(X >= successes) for X ~ Binomial(trials, p), exactly: the p-value of "accuracy <= p".';

-- The one-sided Wilson lower bound of a share, z standard errors below
CREATE FUNCTION triage_internal.wilson_lower(successes bigint, trials bigint, z float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN trials = 0 THEN 0 ELSE
		(successes::float8 / trials + z * z / (2 * trials)
		 - z * sqrt(successes::float8 / trials * (1 - successes::float8 / trials) / trials
					+ z * z / (4.0 * trials * trials)))
		/ (1 + z * z / trials) END
$$;
COMMENT ON FUNCTION triage_internal.wilson_lower(bigint, bigint, float8) IS
	'The one-sided Wilson lower bound of successes / trials, z standard errors down.';

CREATE FUNCTION triage_internal.calibrate_answers(policy text, rows jsonb, target_accuracy real,
										 max_escalation real, confidence real DEFAULT 0.9,
										 method text DEFAULT 'bound', source jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	n integer := coalesce(jsonb_array_length(rows), 0);
	chosen record;
	curve jsonb;
	per_label jsonb := '{}';
	per_label_escalated integer;
	kept_n integer;
	kept_correct integer;
	result jsonb;
	z float8;
	lambda real;
	grid_kept integer;
	grid_correct integer;
	promise text;
	escalation float8;
	margin float8;
	reached boolean;
	best_threshold real;
	best_kept integer;
	best_correct integer;
BEGIN
	IF method IS NULL OR method NOT IN ('bound', 'guarantee', 'estimate') THEN
		RAISE EXCEPTION 'method must be ''bound'', ''guarantee'' or ''estimate'', not %', coalesce(quote_literal(method), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				HINT = '''bound'' (the default) keeps a lower confidence bound of the kept accuracy at the target.';
	END IF;
	IF confidence IS NULL OR NOT (confidence >= 0.5 AND confidence < 1) THEN
		RAISE EXCEPTION 'confidence must be at least 0.5 and below 1, not %', coalesce(confidence::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value', HINT = '0.9 is usual.';
	END IF;
	z := triage_internal.normal_quantile(confidence);
	IF n = 0 THEN
		RAISE EXCEPTION 'calibration query returned no labeled rows'
			USING ERRCODE = 'no_data_found', HINT = 'It must return (input text, label text) rows.';
	END IF;

	-- every threshold worth trying: each distinct confidence, and above them all
	-- (created once per transaction: IF NOT EXISTS would say so in a NOTICE)
	IF to_regclass('pg_temp.triage_calibration_rows') IS NULL THEN
		CREATE TEMP TABLE triage_calibration_rows (l text, c real, ok boolean) ON COMMIT DROP;
		CREATE TEMP TABLE triage_calibration_curve (threshold real, kept integer, correct integer) ON COMMIT DROP;
	END IF;
	TRUNCATE triage_calibration_rows;
	INSERT INTO triage_calibration_rows SELECT * FROM jsonb_to_recordset(rows) AS r(l text, c real, ok boolean);
	TRUNCATE triage_calibration_curve;
	-- (running sums from the most confident down: linear in the rows after the sort)
	INSERT INTO triage_calibration_curve
	SELECT c, sum(n) OVER w, sum(n_ok) OVER w
	  FROM (SELECT c, count(*) AS n, count(*) FILTER (WHERE ok) AS n_ok
			  FROM triage_calibration_rows GROUP BY c) g
	WINDOW w AS (ORDER BY c DESC)
	UNION ALL
	SELECT 1.000001, 0, 0;

	IF method = 'guarantee' AND target_accuracy IS NOT NULL THEN
		-- Learn-then-Test (Angelopoulos et al. 2021) with a Bonferroni
		-- correction over a grid fixed in advance (thresholds 0, 0.025, ...,
		-- 1): at each, the exact binomial test of "kept accuracy <= target" at
		-- level (1 - confidence) / 41; of the thresholds where it is rejected,
		-- the one that escalates least.  The family-wise error is at most
		-- 1 - confidence, so with that confidence every rejected threshold,
		-- and the one chosen, keeps at least the target on new rows from the
		-- same distribution.  (Fixed-sequence testing from the top was tried
		-- first: its first thresholds keep a handful of rows, too few to
		-- reject anything, and it stopped there.)
		best_kept := -1;
		FOR g IN 0..40 LOOP
			lambda := (1 - g / 40.0)::real;
			SELECT count(*), count(*) FILTER (WHERE r.ok) INTO grid_kept, grid_correct
			  FROM triage_calibration_rows r WHERE r.c >= lambda;
			IF (grid_kept = 0
				OR triage_internal.binomial_upper_tail(grid_correct, grid_kept, target_accuracy) <= (1 - confidence) / 41)
			   AND (max_escalation IS NULL OR 1 - grid_kept::float8 / n <= max_escalation + 1e-9)
			   AND grid_kept > best_kept THEN
				best_threshold := CASE WHEN grid_kept = 0 THEN 1.000001::real ELSE lambda END;
				best_kept := grid_kept;
				best_correct := grid_correct;
			END IF;
		END LOOP;
		IF best_kept >= 0 THEN
			SELECT best_threshold AS threshold, best_kept AS kept, best_correct AS correct INTO chosen;
		END IF;
	ELSE
		-- The least escalation whose kept accuracy reaches the target: its
		-- one-sided Wilson lower bound at the confidence ('bound'), or the
		-- share itself ('estimate', right on new rows about half the time).
		-- (Also requiring it at every higher threshold, against lucky dips,
		-- was measured to escalate more and keep less accuracy on unseen rows:
		-- see 009.)
		SELECT threshold, kept, correct INTO chosen
		  FROM triage_calibration_curve c
		 WHERE (target_accuracy IS NULL OR kept = 0
				OR CASE WHEN method = 'estimate' THEN correct::float8 / kept
						ELSE triage_internal.wilson_lower(correct, kept, z) END >= target_accuracy)
		   AND (max_escalation IS NULL OR 1 - kept::float8 / n <= max_escalation + 1e-9)
		 ORDER BY CASE WHEN target_accuracy IS NULL
					   THEN -(CASE WHEN kept > 0 THEN correct::float8 / kept ELSE 0 END) ELSE 0 END,
				  kept DESC, threshold
		 LIMIT 1;
	END IF;
	reached := chosen IS NOT NULL;
	IF chosen IS NULL THEN
		-- the target is out of reach within the budget: the best accuracy it allows
		SELECT threshold, kept, correct INTO chosen FROM triage_calibration_curve
		 WHERE 1 - kept::float8 / n <= max_escalation + 1e-9
		 ORDER BY CASE WHEN kept > 0 THEN correct::float8 / kept ELSE 0 END DESC, kept DESC
		 LIMIT 1;
	END IF;

	-- per label, for a target accuracy and the point estimate: each label's
	-- own least threshold (the bound and the guarantee are about all kept
	-- rows, so they keep one threshold)
	IF target_accuracy IS NOT NULL AND method = 'estimate' THEN
		SELECT jsonb_object_agg(l, t), sum(total - kept) INTO per_label, per_label_escalated
		  FROM (SELECT DISTINCT ON (l) l, t, kept, total
				  FROM (SELECT l, c AS t, sum(n) OVER w AS kept, sum(n_ok) OVER w AS correct,
							   sum(n) OVER (PARTITION BY l) AS total
						  FROM (SELECT l, c, count(*) AS n, count(*) FILTER (WHERE ok) AS n_ok
								  FROM triage_calibration_rows WHERE l IS NOT NULL GROUP BY l, c) g
						WINDOW w AS (PARTITION BY l ORDER BY c DESC)
						UNION ALL
						SELECT l, 1.000001, 0, 0, count(*)
						  FROM triage_calibration_rows WHERE l IS NOT NULL GROUP BY l) per_threshold
				 WHERE kept = 0 OR correct / kept >= target_accuracy
				 ORDER BY l, t) per;
		per_label_escalated := per_label_escalated
			+ (SELECT count(*) FROM triage_calibration_rows WHERE l IS NULL);
		-- per label only when it clearly helps: fitted on fewer rows, it generalises worse
		IF per_label_escalated > (n - chosen.kept) - greatest(1, n / 20) OR max_escalation IS NOT NULL THEN
			per_label := '{}';
		END IF;
	END IF;

	-- what the stored thresholds keep: per label when those are used
	IF per_label <> '{}' THEN
		SELECT count(*), count(*) FILTER (WHERE r.ok) INTO kept_n, kept_correct
		  FROM triage_calibration_rows r
		 WHERE r.l IS NOT NULL AND r.c >= (per_label->>r.l)::real;
	ELSE
		kept_n := chosen.kept;
		kept_correct := chosen.correct;
	END IF;

	SELECT jsonb_agg(jsonb_build_object('threshold', round(threshold::numeric, 4),
										'escalation_rate', round(1 - kept::numeric / n, 4),
										'kept_accuracy', CASE WHEN kept > 0 THEN round(correct::numeric / kept, 4) END)
					 ORDER BY threshold)
	  INTO curve
	  FROM (SELECT *, row_number() OVER (ORDER BY threshold) AS r, count(*) OVER () AS total
			  FROM triage_calibration_curve) c
	 -- about 20 points of the curve, and the chosen one
	 WHERE (r - 1) % greatest(1, total / 20) = 0 OR r = total OR threshold = chosen.threshold;

	-- the promise in words: what holds with what confidence, and the
	-- escalation to expect on new rows (its sampling interval at the confidence)
	escalation := 1 - kept_n::float8 / n;
	margin := z * sqrt(escalation * (1 - escalation) / n);
	promise := CASE
		WHEN target_accuracy IS NULL THEN
			format('the best kept accuracy within escalation %s on the calibration rows (a point estimate, no stated confidence)',
				   round(max_escalation::numeric, 2))
		WHEN NOT reached THEN
			format('kept accuracy %s cannot be promised within escalation %s: the best is %s on the calibration rows',
				   round(target_accuracy::numeric, 2), round(max_escalation::numeric, 2),
				   coalesce(round(kept_correct::numeric / nullif(kept_n, 0), 4), 0))
		WHEN method = 'estimate' THEN
			format('kept accuracy %s on the calibration rows (a point estimate: on new rows about half the time); escalation %s%% expected (%s to %s%%)',
				   round(target_accuracy::numeric, 2), round((100 * escalation)::numeric),
				   round((100 * greatest(0, escalation - margin))::numeric), round((100 * least(1, escalation + margin))::numeric))
		ELSE
			format('kept accuracy >= %s with %s%% confidence (%s); escalation %s%% expected (%s to %s%%)',
				   round(target_accuracy::numeric, 2), round((100 * confidence)::numeric),
				   CASE method WHEN 'bound' THEN format('one-sided Wilson bound on %s rows', n)
					   ELSE format('Learn-then-Test, Bonferroni over 41 thresholds, on %s rows', n) END,
				   round((100 * escalation)::numeric),
				   round((100 * greatest(0, escalation - margin))::numeric), round((100 * least(1, escalation + margin))::numeric))
		END;

	result := jsonb_build_object(
		'rows', n,
		'method', method,
		'confidence', confidence,
		'promise', promise,
		'threshold', round(chosen.threshold::numeric, 4),
		'label_thresholds', per_label,
		'escalation_rate', round(escalation::numeric, 4),
		'escalation_interval', jsonb_build_array(round(greatest(0, escalation - margin)::numeric, 4),
												 round(least(1, escalation + margin)::numeric, 4)),
		'kept_accuracy', CASE WHEN kept_n > 0 THEN round(kept_correct::numeric / kept_n, 4) END,
		'kept_accuracy_lower_bound', CASE WHEN kept_n > 0
			THEN round(triage_internal.wilson_lower(kept_correct, kept_n, z)::numeric, 4) END,
		'target_accuracy', target_accuracy,
		'max_escalation', max_escalation,
		'curve', curve) || source;
	UPDATE triage.policies x
	   SET thresholds = jsonb_build_object('default', chosen.threshold, 'labels', per_label),
		   calibration = result, updated_at = now()
	 WHERE x.name = calibrate_answers.policy;
	RETURN result;
END;
$$;

COMMENT ON FUNCTION triage_internal.calibrate_answers(text, jsonb, real, real, real, text, jsonb) IS
	'Chooses and stores a policy''s thresholds from rows of the model''s answers ([{"l", "c", "ok"}]) by method (bound, guarantee or estimate) at a confidence.';

CREATE FUNCTION triage_internal.calibrate(policy text, query text, target_accuracy real, max_escalation real,
	confidence real, method text, query_search_path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	p triage.policies;
	rows jsonb;
BEGIN
	p := triage_internal.lock_policy_for_calibration(policy, query, target_accuracy, max_escalation);

	query := triage_internal.user_rows_sql(query, query_search_path, '{text,text}');

	-- the model's answer and confidence on every labeled row
	EXECUTE format($q$
		SELECT jsonb_agg(jsonb_build_object('l', (c).label, 'c', coalesce((c).confidence, 0),
											'ok', (c).label IS NOT DISTINCT FROM gold))
		  FROM (SELECT q.label::text AS gold, triage.classify($1, q.input::text) AS c
				  FROM (%s) AS q(input, label)
				 WHERE q.input IS NOT NULL AND q.label IS NOT NULL) s
	$q$, query) INTO rows USING p.model;
	RETURN triage_internal.calibrate_answers(policy, rows, target_accuracy, max_escalation, confidence, method);
END;
$$;
COMMENT ON FUNCTION triage_internal.calibrate(text, text, real, real, real, text, text) IS
	'calibrate with the search_path to run the query text under.';

-- As the caller, with the caller's search_path for the query text: the
-- function above runs with search_path pinned
CREATE FUNCTION triage.calibrate(policy text, query text, target_accuracy real DEFAULT NULL, max_escalation real DEFAULT NULL,
								 confidence real DEFAULT 0.9, method text DEFAULT 'bound') RETURNS jsonb
LANGUAGE sql VOLATILE AS $$
	SELECT triage_internal.calibrate(policy, query, target_accuracy, max_escalation, confidence, method,
									 pg_catalog.current_setting('search_path'))
$$;

COMMENT ON FUNCTION triage.calibrate(text, text, real, real, real, text) IS
	'Chooses the policy''s confidence threshold (per label when that escalates fewer rows) from labeled held-out rows: the fewest escalations reaching target_accuracy on kept rows, or the best kept accuracy within max_escalation; stores it and returns the curve.';

CREATE FUNCTION triage.cross_validate(query text, options jsonb DEFAULT '{}', folds integer DEFAULT 5)
	RETURNS TABLE (input text, label text, predicted text, confidence real, fold integer)
	AS 'MODULE_PATHNAME', 'triage_cross_validate'
	LANGUAGE C VOLATILE STRICT ROWS 1000;
COMMENT ON FUNCTION triage.cross_validate(text, jsonb, integer) IS
	'Every (input, label) row of query with the answer of a model trained with options on the other folds (rows go to folds by a hash of their input, so copies share one): how a model trained on all of them will do on new rows.';

-- How train_and_calibrate carries a threshold chosen on out-of-fold answers
-- over to the model of all the rows it deploys.  rows: [{"l", "c", "ok",
-- "k": the fold, "f": the full model's confidence on the row}]; returns
-- the rows for calibrate_answers with "c" replaced by a monotone map of it
-- (a rank-to-rank quantile map: a row below which a share p of the source
-- confidences lies gets the target confidence below which p lies):
--   none      c as it is: the fold models' held-out confidences
--   fraction  pooled, onto the full model's confidences on the same rows
--   scale     per fold, onto the full model's confidences on that fold
--   folds     per fold, onto the pooled out-of-fold confidences
-- The full model has trained on every row, so its confidences there are
-- in-sample ("fraction" and "scale"); make study measures all four.
CREATE FUNCTION triage_internal.transfer_answers(rows jsonb, transfer text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	WITH r AS (
		SELECT x.l, x.c, x.ok, x.k, x.f, count(*) OVER () AS n,
			   count(*) OVER (PARTITION BY x.k) AS n_k,
			   rank() OVER (ORDER BY x.c) AS rank_all,
			   rank() OVER (PARTITION BY x.k ORDER BY x.c) AS rank_k
		  FROM jsonb_to_recordset(rows) AS x(l text, c real, ok boolean, k integer, f real)),
	sorted AS (
		SELECT array_agg(c ORDER BY c) AS c_all, array_agg(f ORDER BY f) AS f_all FROM r),
	sorted_k AS (
		SELECT k, array_agg(f ORDER BY f) AS f_k FROM r GROUP BY k)
	SELECT jsonb_agg(jsonb_build_object('l', r.l, 'ok', r.ok, 'c', CASE transfer
		WHEN 'none' THEN r.c
		WHEN 'fraction' THEN s.f_all[r.rank_all]
		WHEN 'scale' THEN sk.f_k[r.rank_k]
		WHEN 'folds' THEN s.c_all[1 + (r.rank_k - 1) * r.n / r.n_k]
		END))
	  FROM r CROSS JOIN sorted s LEFT JOIN sorted_k sk ON sk.k IS NOT DISTINCT FROM r.k
$$;
COMMENT ON FUNCTION triage_internal.transfer_answers(jsonb, text) IS
	'Out-of-fold answers ([{"l", "c", "ok", "k", "f"}]) with their confidences mapped as transfer says (none, fraction, scale or folds): how train_and_calibrate carries a threshold over to the model of all the rows.';

CREATE FUNCTION triage_internal.train_and_calibrate(policy text, query text, options jsonb, target_accuracy real, max_escalation real, folds integer,
	confidence real, method text, query_search_path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	p triage.policies;
	rows jsonb;
	version integer;
	-- how a threshold chosen on out-of-fold answers is carried over to the
	-- model of all the rows (transfer_answers): as it is.  make study: that
	-- model's confidences on new rows are distributed about as the fold
	-- models' on their held-out folds, while on the rows it trained on they
	-- are far higher (median 0.95 against 0.83), so the maps onto those
	-- ('fraction', 'scale') escalate 77-99% of new rows where the efficiency
	-- bound of the study is 42-72%
	transfer CONSTANT text := 'none';
BEGIN
	p := triage_internal.lock_policy_for_calibration(policy, query, target_accuracy, max_escalation);
	IF options IS NULL OR folds IS NULL THEN
		RAISE EXCEPTION 'options and folds must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p.model IS NULL THEN
		RAISE EXCEPTION 'policy "%" has no classifier to train', policy
			USING ERRCODE = 'wrong_object_type',
				HINT = 'train_and_calibrate trains the policy''s model; an extraction policy has none.';
	END IF;
	PERFORM triage_internal.check_model_kind(p.model, 'classifier');
	query := triage_internal.user_rows_sql(query, query_search_path, '{text,text}');
	-- a model is retrained as the kind it is, unless options say otherwise
	options := jsonb_strip_nulls(jsonb_build_object(
		'kind', (SELECT m.kind FROM triage.models m WHERE m.name = p.model
				  ORDER BY m.version DESC LIMIT 1))) || options;

	-- thresholds from every row's out-of-fold answer ...
	CREATE TEMP TABLE triage_out_of_fold ON COMMIT DROP AS
	SELECT x.input, x.label, x.predicted, x.confidence, x.fold FROM triage.cross_validate(query, options, folds) x;
	-- ... for the model of all of them, deployed with its thresholds
	version := triage.train(p.model, query, options);
	PERFORM triage.deploy(p.model, version);
	-- carried over as TRANSFER says (transfer_answers; the full model's own
	-- confidences only when it needs them)
	SELECT jsonb_agg(jsonb_build_object('l', x.predicted, 'c', coalesce(x.confidence, 0),
										'ok', x.predicted IS NOT DISTINCT FROM x.label, 'k', x.fold,
										'f', CASE WHEN transfer IN ('fraction', 'scale')
												  THEN coalesce((triage.classify(p.model, version, x.input)).confidence, 0) END))
	  INTO rows
	  FROM triage_out_of_fold x;
	DROP TABLE triage_out_of_fold;
	RETURN triage_internal.calibrate_answers(policy, triage_internal.transfer_answers(rows, transfer), target_accuracy,
									max_escalation, confidence, method,
									jsonb_build_object('model', p.model, 'version', version, 'folds', folds,
													   'transfer', transfer));
END;
$$;
COMMENT ON FUNCTION triage_internal.train_and_calibrate(text, text, jsonb, real, real, integer, real, text, text) IS
	'train_and_calibrate with the search_path to run the query text under.';

-- As the caller, with the caller's search_path for the query text: the
-- function above runs with search_path pinned
CREATE FUNCTION triage.train_and_calibrate(policy text, query text, options jsonb DEFAULT '{}', target_accuracy real DEFAULT NULL, max_escalation real DEFAULT NULL, folds integer DEFAULT 5,
										   confidence real DEFAULT 0.9, method text DEFAULT 'bound') RETURNS jsonb
LANGUAGE sql VOLATILE AS $$
	SELECT triage_internal.train_and_calibrate(policy, query, options, target_accuracy, max_escalation, folds,
											   confidence, method, pg_catalog.current_setting('search_path'))
$$;

COMMENT ON FUNCTION triage.train_and_calibrate(text, text, jsonb, real, real, integer, real, text) IS
	'Uses every labeled row of query twice: thresholds chosen as calibrate does, on each row''s answer from a model trained on the other folds (cross_validate), for a model trained on all of them, which becomes the deployed version of the policy''s model.';

-- calibrate() and train_and_calibrate() return jsonb; their routing curve as rows
CREATE FUNCTION triage.routing_curve(calibration jsonb)
	RETURNS TABLE (threshold real, escalation_rate numeric, kept_accuracy numeric)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF jsonb_typeof(calibration->'curve') IS DISTINCT FROM 'array' THEN
		RAISE EXCEPTION 'routing_curve needs what calibrate() returns: an object with a "curve" array'
			USING ERRCODE = 'invalid_parameter_value',
				HINT = 'For example: SELECT c.* FROM triage.policies p, triage.routing_curve(p.calibration) c WHERE p.name = ''reviews''.';
	END IF;
	RETURN QUERY
	SELECT (c->>'threshold')::real, (c->>'escalation_rate')::numeric, (c->>'kept_accuracy')::numeric
	  FROM jsonb_array_elements(calibration->'curve') AS c;
END;
$$;
COMMENT ON FUNCTION triage.routing_curve(jsonb) IS
	'The curve of what calibrate() returns (or a policy''s stored calibration), one row per threshold: the escalation rate and the accuracy of the kept rows.';
