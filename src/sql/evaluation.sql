-- pg_triage: evaluation of classifiers and extractors
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Evaluation ------------------------------------------------------------------

CREATE FUNCTION triage_internal.deployed_version(name text) RETURNS integer
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	v integer;
BEGIN
	SELECT d.version INTO v FROM triage.deployments d WHERE d.name = deployed_version.name;
	IF v IS NULL THEN
		RAISE EXCEPTION 'model "%" has no deployed version', name
			USING ERRCODE = 'object_not_in_prerequisite_state',
				HINT = 'Pass a version, or deploy one with triage.deploy().';
	END IF;
	RETURN v;
END;
$$;
COMMENT ON FUNCTION triage_internal.deployed_version(text) IS 'The deployed version of a model; an error if there is none.';

-- Whether an extracted value is the one a person wrote: the same text, or
-- the same ignoring case and white space, or the same number (1,299.00 and 1299)
-- A number as written (1,299.00, 1.299,00, 1 299.00, 45) as numeric, or NULL:
-- the last '.' or ',' followed by one or two digits is the decimal point
CREATE FUNCTION triage.parse_number(value text) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE
		WHEN value !~ '^[0-9][0-9., '']*$' OR length(value) > 40 THEN NULL
		WHEN value ~ '[.,][0-9]{1,2}$'
		THEN (regexp_replace(left(value, -length(substring(value FROM '[.,][0-9]{1,2}$'))), '[^0-9]', '', 'g')
			  || '.' || substring(value FROM '[.,]([0-9]{1,2})$'))::numeric
		ELSE regexp_replace(value, '[^0-9]', '', 'g')::numeric
	END
$$;
COMMENT ON FUNCTION triage.parse_number(text) IS
	'A number as people write it (1,299.00, 1.299,00, 1 299.00) as numeric; NULL if it is not one.';

CREATE FUNCTION triage.same_value(extracted text, expected text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT extracted = expected
		OR lower(regexp_replace(extracted, '\s+', '', 'g')) = lower(regexp_replace(expected, '\s+', '', 'g'))
		OR triage.parse_number(extracted) = triage.parse_number(expected)
$$;
COMMENT ON FUNCTION triage.same_value(text, text) IS
	'Whether an extracted value matches the expected one: equal, equal ignoring case and white space, or the same number.';

-- Per-field precision, recall and F1 of an extractor on (input, fields) rows,
-- the share of rows with every field right, and how well confidence
-- separates right from wrong fields (AUROC)
CREATE FUNCTION triage_internal.evaluate_extractor(name text, query text, version integer,
	query_search_path text) RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	result jsonb;
BEGIN
	query := triage_internal.user_rows_sql(query, query_search_path, '{text,jsonb}');
	EXECUTE format($q$
		WITH gold AS (
			SELECT row_number() OVER () AS id, q.input::text AS input, q.fields::jsonb AS fields
			  FROM (%s) AS q(input, fields)
			 WHERE q.input IS NOT NULL AND q.fields IS NOT NULL),
		got AS (SELECT id, fields AS gold, triage.extract($1, $2, input) AS got FROM gold),
		pairs AS (
			SELECT g.id, k.field, g.gold->>k.field AS expected, g.got->k.field->>'value' AS value,
				   (g.got->k.field->>'confidence')::float8 AS confidence
			  FROM got g,
				   LATERAL (SELECT jsonb_object_keys(g.gold) UNION SELECT jsonb_object_keys(g.got)) AS k(field)),
		scored AS (
			SELECT *, coalesce(value IS NOT NULL AND expected IS NOT NULL
							   AND triage.same_value(value, expected), false) AS correct
			  FROM pairs WHERE value IS NOT NULL OR expected IS NOT NULL),
		per_field AS (
			SELECT field, count(expected) AS support, count(value) AS predicted,
				   count(*) FILTER (WHERE correct) AS tp
			  FROM scored GROUP BY field),
		ranked AS (
			SELECT correct,
				   (rank() OVER w + count(*) OVER (PARTITION BY confidence) - 1 + rank() OVER w) / 2.0 AS r
			  FROM scored WHERE value IS NOT NULL
			WINDOW w AS (ORDER BY confidence)),
		auc AS (
			SELECT CASE WHEN count(*) FILTER (WHERE correct) > 0 AND count(*) FILTER (WHERE NOT correct) > 0
						THEN (sum(r) FILTER (WHERE correct)
							  - count(*) FILTER (WHERE correct) * (count(*) FILTER (WHERE correct) + 1) / 2.0)
							 / (count(*) FILTER (WHERE correct) * count(*) FILTER (WHERE NOT correct)) END AS auroc
			  FROM ranked),
		totals AS (SELECT sum(support) AS support, sum(predicted) AS predicted, sum(tp) AS tp FROM per_field)
		SELECT jsonb_build_object(
			'kind', 'crf',
			'n', (SELECT count(*) FROM gold),
			'precision', round(t.tp::numeric / nullif(t.predicted, 0), 4),
			'recall', round(t.tp::numeric / nullif(t.support, 0), 4),
			'f1', round(2 * t.tp::numeric / nullif(t.support + t.predicted, 0), 4),
			'rows_all_correct', (SELECT round(avg(ok::int), 4) FROM
									(SELECT g.id, bool_and(coalesce(s.correct, true)) AS ok
									   FROM gold g LEFT JOIN scored s ON s.id = g.id GROUP BY g.id) r),
			'auroc', (SELECT round(auroc::numeric, 4) FROM auc),
			'confidence_right', (SELECT round(avg(confidence)::numeric, 4) FROM scored WHERE correct),
			'confidence_wrong', (SELECT round(avg(confidence)::numeric, 4) FROM scored WHERE value IS NOT NULL AND NOT correct),
			'fields', (SELECT jsonb_object_agg(field, jsonb_build_object(
							'support', support, 'predicted', predicted,
							'precision', round(tp::numeric / nullif(predicted, 0), 4),
							'recall', round(tp::numeric / nullif(support, 0), 4),
							'f1', round(2 * tp::numeric / nullif(support + predicted, 0), 4)))
						 FROM per_field))
		  FROM totals t
	$q$, query) INTO result USING name, version;
	RETURN result;
END;
$$;
COMMENT ON FUNCTION triage_internal.evaluate_extractor(text, text, integer, text) IS
	'evaluate_extractor with the search_path to run the query text under.';

-- As the caller, with the caller's search_path for the query text: the
-- function above runs with search_path pinned
CREATE FUNCTION triage.evaluate_extractor(name text, query text, version integer) RETURNS jsonb
LANGUAGE sql STABLE STRICT AS $$
	SELECT triage_internal.evaluate_extractor(name, query, version, pg_catalog.current_setting('search_path'))
$$;

COMMENT ON FUNCTION triage.evaluate_extractor(text, text, integer) IS
	'Evaluates a version of an extractor on (input, fields) rows: per-field and overall precision, recall and F1 (triage.same_value), the share of rows with every field right, and the AUROC of confidence for right against wrong fields.';

CREATE FUNCTION triage_internal.evaluate(name text, query text, version integer,
	query_search_path text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	v integer := version;
	result jsonb;
BEGIN
	IF name IS NULL OR query IS NULL THEN
		RAISE EXCEPTION 'name and query must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	v := coalesce(v, triage_internal.deployed_version(name));
	IF EXISTS (SELECT FROM triage.models m WHERE m.name = evaluate.name AND m.version = v AND m.kind = 'crf') THEN
		RETURN triage_internal.evaluate_extractor(name, query, v, query_search_path);
	END IF;

	-- one pass of the model over the rows, then every metric from it
	query := triage_internal.user_rows_sql(query, query_search_path, '{text,text}');
	EXECUTE format($q$
		WITH gold AS (
			SELECT q.input::text AS input, q.label::text AS gold
			  FROM (%s) AS q(input, label)
			 WHERE q.input IS NOT NULL AND q.label IS NOT NULL),
		scored AS (
			SELECT gold, (p).label AS predicted, coalesce((p).confidence, 0) AS confidence
			  FROM (SELECT gold, triage.classify($1, $2, input) AS p FROM gold) s),
		labels AS (
			SELECT gold AS label FROM scored
			UNION SELECT predicted FROM scored WHERE predicted IS NOT NULL),
		per_label AS (
			SELECT l.label,
				   count(*) FILTER (WHERE s.gold = l.label) AS support,
				   count(*) FILTER (WHERE s.predicted = l.label AND s.gold = l.label) AS tp,
				   count(*) FILTER (WHERE s.predicted = l.label) AS predicted
			  FROM labels l CROSS JOIN scored s GROUP BY l.label),
		f1 AS (
			SELECT label, support,
				   CASE WHEN predicted > 0 THEN tp::float8 / predicted ELSE 0 END AS precision,
				   CASE WHEN support > 0 THEN tp::float8 / support ELSE 0 END AS recall
			  FROM per_label),
		f1s AS (
			SELECT *, CASE WHEN precision + recall > 0
						   THEN 2 * precision * recall / (precision + recall) ELSE 0 END AS f1
			  FROM f1),
		bins AS (
			SELECT least(floor(confidence * 10)::int, 9) AS bin, count(*) AS n,
				   avg(confidence) AS confidence,
				   avg((predicted IS NOT DISTINCT FROM gold)::int) AS accuracy
			  FROM scored GROUP BY 1),
		confusion AS (
			SELECT gold, jsonb_object_agg(coalesce(predicted, '(none)'), n) AS row
			  FROM (SELECT gold, predicted, count(*) AS n FROM scored GROUP BY 1, 2) c
			 GROUP BY gold),
		-- ranking: rows of one confidence together, most confident first; a
		-- row with no answer has confidence 0 and is never right
		by_confidence AS (
			SELECT confidence,
				   count(*) FILTER (WHERE predicted IS NOT DISTINCT FROM gold) AS ok,
				   count(*) FILTER (WHERE predicted IS DISTINCT FROM gold) AS wrong
			  FROM scored GROUP BY confidence),
		cumulative AS (
			SELECT confidence, ok, wrong,
				   sum(wrong) OVER (ORDER BY confidence ROWS BETWEEN UNBOUNDED PRECEDING
																AND 1 PRECEDING) AS wrong_below,
				   sum(ok + wrong) OVER (ORDER BY confidence DESC) AS kept,
				   sum(ok) OVER (ORDER BY confidence DESC) AS kept_ok
			  FROM by_confidence),
		-- keeping the rows at or above each confidence: what is escalated, and
		-- the accuracy of what is kept
		coverage AS (
			SELECT 1 - kept::float8 / (SELECT count(*) FROM scored) AS escalation,
				   kept_ok::float8 / kept AS kept_accuracy
			  FROM cumulative),
		targets AS (
			SELECT t, coalesce((SELECT min(escalation) FROM coverage WHERE kept_accuracy >= t), 1) AS escalation
			  FROM unnest(ARRAY[0.85, 0.90, 0.95]) AS t),
		curve AS (
			SELECT e, (SELECT c.kept_accuracy FROM coverage c WHERE c.escalation <= e
						ORDER BY c.escalation DESC LIMIT 1) AS kept_accuracy
			  FROM generate_series(0, 19) g, LATERAL (SELECT g / 20.0 AS e) x)
		SELECT jsonb_build_object(
			'model', $1::text,
			'version', $2,
			'n', (SELECT count(*) FROM scored),
			'accuracy', (SELECT round(avg((predicted IS NOT DISTINCT FROM gold)::int)::numeric, 4)
						   FROM scored),
			'macro_f1', (SELECT round(avg(f1)::numeric, 4) FROM f1s WHERE support > 0),
			'labels', (SELECT jsonb_object_agg(label, jsonb_build_object(
							'support', support,
							'precision', round(precision::numeric, 4),
							'recall', round(recall::numeric, 4),
							'f1', round(f1::numeric, 4)))
						 FROM f1s),
			'confusion', (SELECT jsonb_object_agg(gold, row) FROM confusion),
			'ece', (SELECT round((sum(n * abs(accuracy - confidence)) / sum(n))::numeric, 4)
					  FROM bins),
			-- the chance that a right answer is more confident than a wrong one
			-- (ties count half): how well confidence ranks, which sets escalations
			'auroc', (SELECT round((sum(ok * (coalesce(wrong_below, 0) + 0.5 * wrong))
									/ nullif(sum(ok) * sum(wrong), 0))::numeric, 4)
						FROM cumulative),
			'escalation_for_accuracy', (SELECT jsonb_object_agg(to_char(t, 'FM0.00'), round(escalation::numeric, 4))
										  FROM targets),
			'risk_coverage', (SELECT jsonb_agg(jsonb_build_object(
								  'escalation', e, 'kept_accuracy', round(kept_accuracy::numeric, 4))
								  ORDER BY e)
								FROM curve WHERE kept_accuracy IS NOT NULL),
			'reliability', (SELECT jsonb_agg(jsonb_build_object(
								'bin', format('%%s-%%s', round(bin / 10.0, 1), round((bin + 1) / 10.0, 1)),
								'n', n,
								'confidence', round(confidence::numeric, 4),
								'accuracy', round(accuracy::numeric, 4)) ORDER BY bin)
							  FROM bins))
	$q$, query) INTO result USING name, v;

	IF (result->>'n')::int = 0 THEN
		RAISE EXCEPTION 'evaluation query returned no rows'
			USING ERRCODE = 'no_data_found',
				HINT = 'It must return (input text, label text) rows.';
	END IF;
	RETURN result;
END;
$$;
COMMENT ON FUNCTION triage_internal.evaluate(text, text, integer, text) IS
	'evaluate with the search_path to run the query text under.';

-- As the caller, with the caller's search_path for the query text: the
-- function above runs with search_path pinned
CREATE FUNCTION triage.evaluate(name text, query text, version integer DEFAULT NULL) RETURNS jsonb
LANGUAGE sql STABLE AS $$
	SELECT triage_internal.evaluate(name, query, version, pg_catalog.current_setting('search_path'))
$$;

COMMENT ON FUNCTION triage.evaluate(text, text, integer) IS
	'Scores a version (default: the deployed one) on the labeled (input, label) rows of query: accuracy, macro F1, per-label precision/recall/F1, confusion, ECE and a reliability table.';


-- evaluate() returns jsonb, for programs; for people in psql, its per-label
-- scores as rows
CREATE FUNCTION triage.label_scores(evaluation jsonb)
	RETURNS TABLE (label text, "precision" numeric, recall numeric, f1 numeric, support integer)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT l.key, (l.value->>'precision')::numeric, (l.value->>'recall')::numeric,
		   (l.value->>'f1')::numeric, (l.value->>'support')::integer
	  FROM jsonb_each(evaluation->'labels') AS l
	 ORDER BY l.key
$$;
COMMENT ON FUNCTION triage.label_scores(jsonb) IS
	'The per-label precision, recall, F1 and support of what evaluate() returns, as rows: SELECT * FROM triage.label_scores(triage.evaluate(...)).';
