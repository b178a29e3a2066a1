-- pg_triage: distillation
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Distillation --------------------------------------------------------------------

CREATE FUNCTION triage_internal.distill(name text, options jsonb,
	query_search_path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	heldout text := options->>'heldout';
	extra text := options->>'query';
	train_options jsonb := coalesce(options->'train', '{}');
	training_query text;
	old_version integer;
	new_version integer;
	before jsonb;
	after jsonb;
	improved boolean;
	extractor boolean;
BEGIN
	IF heldout IS NULL THEN
		RAISE EXCEPTION 'distill needs options->>''heldout'', a query of labeled (input, label) rows to compare versions on'
			USING ERRCODE = 'invalid_parameter_value',
				HINT = 'For example triage.distill(''m'', ''{"heldout": "SELECT body, label FROM checked"}'').';
	END IF;
	IF EXISTS (SELECT FROM jsonb_object_keys(options) k WHERE k NOT IN ('heldout', 'query', 'train')) THEN
		RAISE EXCEPTION 'unknown option of distill; known: heldout, query, train'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	old_version := triage_internal.deployed_version(name);
	extractor := EXISTS (SELECT FROM triage.models m WHERE m.name = distill.name AND m.version = old_version
							AND m.kind = 'crf');
	heldout := triage_internal.user_rows_sql(heldout, query_search_path,
		CASE WHEN extractor THEN '{text,jsonb}' ELSE '{text,text}' END::text[]);
	extra := triage_internal.user_rows_sql(extra, query_search_path,
		CASE WHEN extractor THEN '{text,jsonb}' ELSE '{text,text}' END::text[]);
	-- the examples of this model (human and large-model answers), and any other
	-- labeled rows; a large-model answer only while the owner of the table it
	-- came from may still use a policy of this model (a revoked grant takes
	-- its rows out of training too)
	training_query := format($q$
		SELECT e.input, e.%1$I FROM triage.examples e
		 WHERE e.model = %2$L AND e.%1$I IS NOT NULL
		   AND (e.source_table IS NULL
				OR EXISTS (SELECT FROM triage.policies p, pg_catalog.pg_class c
							WHERE c.oid = e.source_table AND %2$L IN (p.model, p.extractor)
							  AND triage.may_use_policy(p.name, c.relowner)))$q$,
							 CASE WHEN extractor THEN 'fields' ELSE 'label' END, name)
		|| coalesce(' UNION ALL SELECT * FROM (' || extra || ') AS extra', '');
	before := triage.evaluate(name, heldout, old_version);
	-- a classifier is retrained as the kind it is, unless options say otherwise
	IF NOT extractor THEN
		train_options := jsonb_build_object('kind', (SELECT m.kind FROM triage.models m
													   WHERE m.name = distill.name
														 AND m.version = old_version))
						 || train_options;
	END IF;
	new_version := triage_internal.train_model(name, CASE WHEN extractor THEN 'crf' ELSE 'classifier' END,
									  training_query, train_options,
									  pg_catalog.current_setting('search_path'));
	after := triage.evaluate(name, heldout, new_version);
	-- classifiers by accuracy, extractors by field F1
	improved := coalesce((after->>'accuracy')::numeric, (after->>'f1')::numeric)
				> coalesce((before->>'accuracy')::numeric, (before->>'f1')::numeric);
	IF improved THEN
		PERFORM triage.deploy(name, new_version);
	END IF;
	UPDATE triage.models m SET metrics = m.metrics || jsonb_build_object('heldout', after - 'reliability')
	 WHERE m.name = distill.name AND m.version = new_version;
	RETURN jsonb_build_object(
		'previous_version', old_version, 'new_version', new_version, 'deployed', improved,
		'examples', (SELECT count(*) FROM triage.examples e WHERE e.model = distill.name),
		'before', CASE WHEN extractor THEN jsonb_build_object('f1', before->'f1', 'rows_all_correct', before->'rows_all_correct')
					   ELSE jsonb_build_object('accuracy', before->'accuracy', 'macro_f1', before->'macro_f1') END,
		'after', CASE WHEN extractor THEN jsonb_build_object('f1', after->'f1', 'rows_all_correct', after->'rows_all_correct')
					  ELSE jsonb_build_object('accuracy', after->'accuracy', 'macro_f1', after->'macro_f1') END);
END;
$$;
COMMENT ON FUNCTION triage_internal.distill(text, jsonb, text) IS
	'distill with the search_path to run the query text under.';

-- As the caller, with the caller's search_path for the query text: the
-- function above runs with search_path pinned
CREATE FUNCTION triage.distill(name text, options jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE sql VOLATILE STRICT AS $$
	SELECT triage_internal.distill(name, options, pg_catalog.current_setting('search_path'))
$$;

COMMENT ON FUNCTION triage.distill(text, jsonb) IS
	'Retrains a model from its examples (human and large-model answers, triage.examples) plus options->>''query'', compares the new version with the deployed one on options->>''heldout'', deploys it only if it is more accurate, and returns both scores.';
