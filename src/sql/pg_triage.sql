-- pg_triage: the extension's objects, all in schema triage.
-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_triage" to load this file. \quit

-- Model store ---------------------------------------------------------------

CREATE TABLE triage.models (
	name text NOT NULL
		CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]*$' AND octet_length(name) < 64),
	version integer NOT NULL CHECK (version > 0),
	kind text NOT NULL CHECK (kind IN ('fasttext', 'crf')),
	labels text[] NOT NULL,
	params jsonb NOT NULL DEFAULT '{}',
	metrics jsonb NOT NULL DEFAULT '{}',
	data bytea NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (name, version)
);
COMMENT ON TABLE triage.models IS
	'Every stored model version; a version is immutable once written (only metrics may change).';

CREATE TABLE triage.deployments (
	name text PRIMARY KEY,
	version integer NOT NULL,
	deployed_at timestamptz NOT NULL DEFAULT now(),
	FOREIGN KEY (name, version) REFERENCES triage.models (name, version)
);
COMMENT ON TABLE triage.deployments IS
	'Which version of each model triage.classify(name, input) uses.';

-- Dumped by pg_dump, with their data, like user tables
-- model bytes are floats and codes that barely compress: store them as they are
ALTER TABLE triage.models ALTER COLUMN data SET STORAGE EXTERNAL;

SELECT pg_catalog.pg_extension_config_dump('triage.models', '');
SELECT pg_catalog.pg_extension_config_dump('triage.deployments', '');

CREATE FUNCTION triage.model_store_changed() RETURNS trigger
	AS 'MODULE_PATHNAME', 'triage_model_store_changed' LANGUAGE C;
COMMENT ON FUNCTION triage.model_store_changed() IS
	'Trigger: tells every session to reload deployments and models at its next statement.';

CREATE TRIGGER models_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON triage.models
	FOR EACH STATEMENT EXECUTE FUNCTION triage.model_store_changed();
CREATE TRIGGER deployments_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON triage.deployments
	FOR EACH STATEMENT EXECUTE FUNCTION triage.model_store_changed();

CREATE FUNCTION triage.models_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF (NEW.name, NEW.version, NEW.kind, NEW.labels, NEW.params, NEW.data)
		IS DISTINCT FROM (OLD.name, OLD.version, OLD.kind, OLD.labels, OLD.params, OLD.data) THEN
		RAISE EXCEPTION 'model "%" version % cannot be changed', OLD.name, OLD.version
			USING ERRCODE = 'object_not_in_prerequisite_state',
				HINT = 'Model versions are immutable; import or train a new version instead.';
	END IF;
	RETURN NEW;
END;
$$;
COMMENT ON FUNCTION triage.models_immutable() IS
	'Trigger: rejects changes to a stored model version other than its metrics.';

CREATE TRIGGER models_immutable
	BEFORE UPDATE ON triage.models
	FOR EACH ROW EXECUTE FUNCTION triage.models_immutable();

-- Results -------------------------------------------------------------------

CREATE TYPE triage.prediction AS (label text, confidence real);
COMMENT ON TYPE triage.prediction IS 'A label and the model''s probability for it.';

CREATE FUNCTION triage.check_model_name(name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
	IF name !~ '^[A-Za-z_][A-Za-z0-9_.-]*$' OR octet_length(name) >= 64 THEN
		RAISE EXCEPTION 'invalid model name "%"', name
			USING ERRCODE = 'invalid_name',
				HINT = 'A model name starts with a letter or underscore, has at most 63 bytes, '
					   'and holds only letters, digits, "_", "." and "-".';
	END IF;
END;
$$;
COMMENT ON FUNCTION triage.check_model_name(text) IS
	'Raises an error unless name is a valid model name.';

-- fastText models -----------------------------------------------------------

CREATE FUNCTION triage.inspect_fasttext(model bytea, OUT labels text[], OUT params jsonb)
	RETURNS record
	AS 'MODULE_PATHNAME', 'triage_inspect_fasttext'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.inspect_fasttext(bytea) IS
	'Validates a fastText .bin or .ftz supervised model and returns its labels and parameters.';

-- The versions of a name are all classifiers or all extractors
CREATE FUNCTION triage.check_model_kind(name text, kind text) RETURNS void
LANGUAGE plpgsql STABLE STRICT AS $$
#variable_conflict use_column
DECLARE
	other_kind text;
BEGIN
	SELECT m.kind INTO other_kind FROM triage.models m
	 WHERE m.name = check_model_kind.name AND m.kind <> check_model_kind.kind LIMIT 1;
	IF other_kind IS NOT NULL THEN
		RAISE EXCEPTION 'model "%" is %; %', name,
			CASE other_kind WHEN 'crf' THEN 'an extractor' ELSE 'a classifier' END,
			CASE kind WHEN 'crf' THEN 'an extractor needs a name of its own'
				 ELSE 'a classifier needs a name of its own' END
			USING ERRCODE = 'wrong_object_type';
	END IF;
END;
$$;
COMMENT ON FUNCTION triage.check_model_kind(text, text) IS
	'Raises an error if name already holds models of another kind (classifier or extractor).';

CREATE FUNCTION triage.store_model(name text, kind text, labels text[], params jsonb,
									metrics jsonb, data bytea) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT AS $$
#variable_conflict use_column
DECLARE
	new_version integer;
BEGIN
	PERFORM triage.check_model_name(store_model.name);
	-- one writer per name at a time, so version numbers never collide
	PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('triage.models'),
											 pg_catalog.hashtext(store_model.name));
	PERFORM triage.check_model_kind(store_model.name, store_model.kind);
	SELECT coalesce(max(m.version), 0) + 1 INTO new_version
		FROM triage.models m WHERE m.name = store_model.name;
	INSERT INTO triage.models (name, version, kind, labels, params, metrics, data)
		VALUES (store_model.name, new_version, store_model.kind, store_model.labels,
				store_model.params, store_model.metrics, store_model.data);
	INSERT INTO triage.deployments (name, version)
		VALUES (store_model.name, new_version)
		ON CONFLICT (name) DO NOTHING;
	RETURN new_version;
END;
$$;
COMMENT ON FUNCTION triage.store_model(text, text, text[], jsonb, jsonb, bytea) IS
	'Stores a model as the next version of name; the first version of a name is deployed.';

CREATE FUNCTION triage.import_fasttext(name text, model bytea) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT AS $$
DECLARE
	info record;
BEGIN
	PERFORM triage.check_model_name(name);
	SELECT * INTO info FROM triage.inspect_fasttext(model);
	RETURN triage.store_model(name, 'fasttext', info.labels,
							  info.params || '{"source": "import"}', '{}', model);
END;
$$;
COMMENT ON FUNCTION triage.import_fasttext(text, bytea) IS
	'Stores a fastText model as a new version of name; the first version of a name is deployed.';

CREATE FUNCTION triage.fasttext_file(model bytea) RETURNS bytea
	AS 'MODULE_PATHNAME', 'triage_fasttext_file'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.fasttext_file(bytea) IS
	'A stored model as a file the fasttext tool reads: fastText models as they are, int8 models dequantized.';

CREATE FUNCTION triage.export_fasttext(name text, version integer) RETURNS bytea
LANGUAGE plpgsql STABLE STRICT AS $$
#variable_conflict use_column
DECLARE
	result bytea;
BEGIN
	SELECT triage.fasttext_file(m.data) INTO result FROM triage.models m
	 WHERE m.name = export_fasttext.name AND m.version = export_fasttext.version
	   AND m.kind = 'fasttext';
	IF result IS NULL THEN
		RAISE EXCEPTION 'fastText model "%" version % does not exist', name, version
			USING ERRCODE = 'undefined_object',
				HINT = 'List versions with SELECT name, version, kind FROM triage.models.';
	END IF;
	RETURN result;
END;
$$;
COMMENT ON FUNCTION triage.export_fasttext(text, integer) IS
	'The model as a fastText .bin/.ftz file, which the fasttext tool loads and predicts with identically.';

CREATE FUNCTION triage.train_fasttext(query text, options jsonb,
									  OUT data bytea, OUT labels text[], OUT params jsonb,
									  OUT metrics jsonb)
	RETURNS record
	AS 'MODULE_PATHNAME', 'triage_train_fasttext'
	LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION triage.train_fasttext(text, jsonb) IS
	'Trains a fastText classifier on the (input, label) rows of query and returns it without storing it.';

-- train and train_extractor: the name checked before a long training, then
-- the trainer of the kind, then stored as the next version
CREATE FUNCTION triage.train_model(name text, kind text, query text, options jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT AS $$
DECLARE
	trained record;
BEGIN
	PERFORM triage.check_model_name(name);
	PERFORM triage.check_model_kind(name, kind);
	IF kind = 'crf' THEN
		SELECT data, fields AS names, params, metrics INTO trained FROM triage.train_crf(query, options);
	ELSE
		SELECT data, labels AS names, params, metrics INTO trained FROM triage.train_fasttext(query, options);
	END IF;
	RETURN triage.store_model(name, kind, trained.names, trained.params, trained.metrics, trained.data);
END;
$$;

CREATE FUNCTION triage.train(name text, query text, options jsonb DEFAULT '{}') RETURNS integer
LANGUAGE sql VOLATILE STRICT AS $$
	SELECT triage.train_model(name, 'fasttext', query, options)
$$;
COMMENT ON FUNCTION triage.train(text, text, jsonb) IS
	'Trains a classifier on the (input, label) rows of query and stores it as a new version of name.';

-- Extractors -----------------------------------------------------------------

CREATE FUNCTION triage.train_crf(query text, options jsonb,
								 OUT data bytea, OUT fields text[], OUT params jsonb,
								 OUT metrics jsonb)
	RETURNS record
	AS 'MODULE_PATHNAME', 'triage_train_crf'
	LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION triage.train_crf(text, jsonb) IS
	'Trains a CRF field extractor on the (input, fields) rows of query and returns it without storing it.';

CREATE FUNCTION triage.train_extractor(name text, query text, options jsonb DEFAULT '{}') RETURNS integer
LANGUAGE sql VOLATILE STRICT AS $$
	SELECT triage.train_model(name, 'crf', query, options)
$$;
COMMENT ON FUNCTION triage.train_extractor(text, text, jsonb) IS
	'Trains a field extractor on the (input text, fields jsonb) rows of query (fields: {"field": "value as written"}) and stores it as a new version of name.';

CREATE FUNCTION triage.inspect_crf(model bytea, OUT fields text[], OUT params jsonb)
	RETURNS record
	AS 'MODULE_PATHNAME', 'triage_inspect_crf'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.inspect_crf(bytea) IS
	'Validates an extractor file and returns its fields and sizes.';

CREATE FUNCTION triage.import_extractor(name text, model bytea) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT AS $$
DECLARE
	info record;
BEGIN
	PERFORM triage.check_model_name(name);
	SELECT * INTO info FROM triage.inspect_crf(model);
	RETURN triage.store_model(name, 'crf', info.fields, info.params, '{}', model);
END;
$$;
COMMENT ON FUNCTION triage.import_extractor(text, bytea) IS
	'Stores an extractor file (from triage.export_extractor()) as a new version of name, deployed if it is the first.';

CREATE FUNCTION triage.export_extractor(name text, version integer) RETURNS bytea
LANGUAGE sql STABLE STRICT AS $$
	SELECT data FROM triage.models m
	 WHERE m.name = export_extractor.name AND m.version = export_extractor.version AND m.kind = 'crf'
$$;
COMMENT ON FUNCTION triage.export_extractor(text, integer) IS
	'The bytes of a stored extractor version, for triage.import_extractor() elsewhere (NULL if there is none).';

CREATE FUNCTION triage.extract(name text, input text) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'triage_extract'
	LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.extract(text, text) IS
	'The fields the deployed extractor finds in input: {"field": {"value", "start", "end", "confidence"}}, character offsets, end exclusive.';

CREATE FUNCTION triage.extract(name text, version integer, input text) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'triage_extract_version'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.extract(text, integer, text) IS
	'extract() with a fixed version of the extractor: IMMUTABLE, so it can back an expression index.';

CREATE FUNCTION triage.deploy(name text, version integer) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT AS $$
#variable_conflict use_column
BEGIN
	IF NOT EXISTS (SELECT FROM triage.models m
				   WHERE m.name = deploy.name AND m.version = deploy.version) THEN
		RAISE EXCEPTION 'model "%" version % does not exist', deploy.name, deploy.version
			USING ERRCODE = 'undefined_object',
				HINT = 'List versions with SELECT name, version FROM triage.models.';
	END IF;
	INSERT INTO triage.deployments AS d (name, version)
		VALUES (deploy.name, deploy.version)
		ON CONFLICT (name) DO UPDATE SET version = excluded.version, deployed_at = now();
END;
$$;
COMMENT ON FUNCTION triage.deploy(text, integer) IS
	'Makes version the one triage.classify(name, input) uses, in every session from its next statement.';

CREATE FUNCTION triage.rollback(name text) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT AS $$
#variable_conflict use_column
DECLARE
	current integer;
	previous integer;
BEGIN
	SELECT d.version INTO current FROM triage.deployments d WHERE d.name = rollback.name FOR UPDATE;
	IF current IS NULL THEN
		RAISE EXCEPTION 'model "%" has no deployed version', name
			USING ERRCODE = 'object_not_in_prerequisite_state',
				HINT = 'Deploy one with SELECT triage.deploy(name, version).';
	END IF;
	SELECT max(m.version) INTO previous FROM triage.models m
	 WHERE m.name = rollback.name AND m.version < current;
	IF previous IS NULL THEN
		RAISE EXCEPTION 'model "%" has no version before %', name, current
			USING ERRCODE = 'object_not_in_prerequisite_state',
				HINT = 'Nothing to roll back to; deploy a specific version with triage.deploy().';
	END IF;
	PERFORM triage.deploy(name, previous);
	RETURN previous;
END;
$$;
COMMENT ON FUNCTION triage.rollback(text) IS
	'Deploys the highest version below the deployed one and returns it.';

-- COST 100: one prediction costs about what 40 md5() calls do, so that the
-- planner considers parallel workers for large classifications
CREATE FUNCTION triage.predict(name text, input text, k integer DEFAULT 1,
							   threshold real DEFAULT 0.0)
	RETURNS TABLE (label text, probability real)
	AS 'MODULE_PATHNAME', 'triage_predict'
	LANGUAGE C STABLE STRICT PARALLEL SAFE COST 100 ROWS 2;
COMMENT ON FUNCTION triage.predict(text, text, integer, real) IS
	'The k most likely labels of input (k = -1: all) with probability >= threshold, as fasttext predict-prob.';

CREATE FUNCTION triage.classify(name text, input text) RETURNS triage.prediction
	AS 'MODULE_PATHNAME', 'triage_classify'
	LANGUAGE C STABLE STRICT PARALLEL SAFE COST 100;
COMMENT ON FUNCTION triage.classify(text, text) IS
	'The most likely label of input and its probability, with the deployed version of model name.';

CREATE FUNCTION triage.classify(name text, version integer, input text) RETURNS triage.prediction
	AS 'MODULE_PATHNAME', 'triage_classify_version'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 100;
COMMENT ON FUNCTION triage.classify(text, integer, text) IS
	'As classify(name, input) with a fixed version; versions never change, so it can back an index.';

-- Evaluation ------------------------------------------------------------------

CREATE FUNCTION triage.deployed_version(name text) RETURNS integer
LANGUAGE plpgsql STABLE STRICT AS $$
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
COMMENT ON FUNCTION triage.deployed_version(text) IS 'The deployed version of a model; an error if there is none.';

-- Whether an extracted value is the one a person wrote: the same text, or
-- the same ignoring case and white space, or the same number (1,299.00 and 1299)
-- A number as written (1,299.00, 1.299,00, 1 299.00, 45) as numeric, or NULL:
-- the last '.' or ',' followed by one or two digits is the decimal point
CREATE FUNCTION triage.parse_number(value text) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
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
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
	SELECT extracted = expected
		OR lower(regexp_replace(extracted, '\s+', '', 'g')) = lower(regexp_replace(expected, '\s+', '', 'g'))
		OR triage.parse_number(extracted) = triage.parse_number(expected)
$$;
COMMENT ON FUNCTION triage.same_value(text, text) IS
	'Whether an extracted value matches the expected one: equal, equal ignoring case and white space, or the same number.';

-- Per-field precision, recall and F1 of an extractor on (input, fields) rows,
-- the share of rows with every field right, and how well confidence
-- separates right from wrong fields (AUROC)
CREATE FUNCTION triage.evaluate_extractor(name text, query text, version integer) RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
	result jsonb;
BEGIN
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
COMMENT ON FUNCTION triage.evaluate_extractor(text, text, integer) IS
	'Evaluates a version of an extractor on (input, fields) rows: per-field and overall precision, recall and F1 (triage.same_value), the share of rows with every field right, and the AUROC of confidence for right against wrong fields.';

CREATE FUNCTION triage.evaluate(name text, query text, version integer DEFAULT NULL)
	RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
	v integer := version;
	result jsonb;
BEGIN
	IF name IS NULL OR query IS NULL THEN
		RAISE EXCEPTION 'name and query must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	v := coalesce(v, triage.deployed_version(name));
	IF EXISTS (SELECT FROM triage.models m WHERE m.name = evaluate.name AND m.version = v AND m.kind = 'crf') THEN
		RETURN triage.evaluate_extractor(name, query, v);
	END IF;

	-- one pass of the model over the rows, then every metric from it
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
			 GROUP BY gold)
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
COMMENT ON FUNCTION triage.evaluate(text, text, integer) IS
	'Scores a version (default: the deployed one) on the labeled (input, label) rows of query: accuracy, macro F1, per-label precision/recall/F1, confusion, ECE and a reliability table.';

-- Calibration -----------------------------------------------------------------

CREATE FUNCTION triage.fit_temperature(name text, version integer, query text) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'triage_fit_temperature'
	LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION triage.fit_temperature(text, integer, text) IS
	'The temperature that minimizes the negative log-likelihood of a version on the labeled (input, label) rows of query.';

CREATE FUNCTION triage.calibrate_temperature(name text, query text, version integer DEFAULT NULL)
	RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	v integer := version;
	fit jsonb;
	before jsonb;
	after jsonb;
BEGIN
	IF name IS NULL OR query IS NULL THEN
		RAISE EXCEPTION 'name and query must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	v := coalesce(v, triage.deployed_version(name));
	-- fit with the raw model, then store; the next statement uses the new temperature
	UPDATE triage.models m SET metrics = m.metrics - 'calibration'
	 WHERE m.name = calibrate_temperature.name AND m.version = v;
	before := triage.evaluate(name, query, v);
	fit := triage.fit_temperature(name, v, query);
	UPDATE triage.models m
	   SET metrics = m.metrics || jsonb_build_object('calibration', fit)
	 WHERE m.name = calibrate_temperature.name AND m.version = v;
	after := triage.evaluate(name, query, v);
	fit := fit || jsonb_build_object('ece_before', before->'ece', 'ece_after', after->'ece',
									 'accuracy', after->'accuracy');
	UPDATE triage.models m
	   SET metrics = m.metrics || jsonb_build_object('calibration', fit)
	 WHERE m.name = calibrate_temperature.name AND m.version = v;
	RETURN fit;
END;
$$;
COMMENT ON FUNCTION triage.calibrate_temperature(text, text, integer) IS
	'Fits temperature scaling on held-out (input, label) rows and stores it with the version, so confidences match accuracy; returns the temperature and the ECE before and after.';

-- Quantization ----------------------------------------------------------------

CREATE FUNCTION triage.quantize_fasttext(model bytea, options jsonb DEFAULT '{}') RETURNS bytea
	AS 'MODULE_PATHNAME', 'triage_quantize_fasttext'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.quantize_fasttext(bytea, jsonb) IS
	'fastText''s quantize on a dense model file: keep the cutoff rows of largest norm, product-quantize; returns the .ftz bytes.';

CREATE FUNCTION triage.quantize(name text, version integer, options jsonb DEFAULT '{}')
	RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT AS $$
#variable_conflict use_column
DECLARE
	source record;
	quantized bytea;
	info record;
	new_version integer;
BEGIN
	SELECT m.* INTO source FROM triage.models m
	 WHERE m.name = quantize.name AND m.version = quantize.version AND m.kind = 'fasttext';
	IF NOT FOUND THEN
		RAISE EXCEPTION 'fastText model "%" version % does not exist', name, version
			USING ERRCODE = 'undefined_object',
				HINT = 'List versions with SELECT name, version, kind FROM triage.models.';
	END IF;
	quantized := triage.quantize_fasttext(source.data, options);
	SELECT * INTO info FROM triage.inspect_fasttext(quantized);
	new_version := triage.store_model(name, 'fasttext', info.labels,
		source.params || jsonb_build_object('quantized', true, 'quantize', options,
											'quantization', info.params->'quantization',
											'quantized_from', version),
		jsonb_build_object('parent_bytes', octet_length(source.data),
						   'bytes', octet_length(quantized)),
		quantized);
	RETURN new_version;
END;
$$;
COMMENT ON FUNCTION triage.quantize(text, integer, jsonb) IS
	'Stores a product-quantized copy of a dense version as a new version (options: dsub, qnorm, qout, cutoff).';

-- Routing policies --------------------------------------------------------------

CREATE TABLE triage.policies (
	name text PRIMARY KEY,
	model text,					-- the classifier, or NULL for an extraction policy
	extractor text,				-- the field extractor, if any
	labels text[],				-- the labels the large model may answer
	fields text[],				-- the fields the large model may answer (extraction policies)
	thresholds jsonb NOT NULL DEFAULT '{"default": 0.0}',
	rules jsonb NOT NULL DEFAULT '{}',
	audit_rate real NOT NULL DEFAULT 0 CHECK (audit_rate BETWEEN 0 AND 1),
	prompt jsonb NOT NULL DEFAULT '{}',
	max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
	calibration jsonb,
	updated_at timestamptz NOT NULL DEFAULT now(),
	CHECK (model IS NOT NULL OR extractor IS NOT NULL)
);
COMMENT ON TABLE triage.policies IS
	'How to route: which model, confidence thresholds (default and per label), rules, the audit rate and the large model''s prompt.';
SELECT pg_catalog.pg_extension_config_dump('triage.policies', '');

-- Policies are edited in place (create_policy, calibrate or a plain UPDATE):
-- check what routing will read, so that a bad policy fails when it is
-- written, not on the millionth row routed
CREATE FUNCTION triage.check_policy() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	k text;
	v jsonb;
BEGIN
	IF jsonb_typeof(NEW.thresholds) <> 'object'
	   OR (NEW.thresholds ? 'default' AND (jsonb_typeof(NEW.thresholds->'default') <> 'number'
										   OR (NEW.thresholds->>'default')::float8 NOT BETWEEN 0 AND 1.001))
	   OR (NEW.thresholds ? 'labels' AND jsonb_typeof(NEW.thresholds->'labels') <> 'object') THEN
		RAISE EXCEPTION 'thresholds of policy "%" must be {"default": 0..1, "labels": {"label": 0..1, ...}}', NEW.name
			USING ERRCODE = 'invalid_parameter_value',
				HINT = 'A confidence below its threshold escalates the row; a threshold just above 1 escalates every row.';
	END IF;
	FOR k, v IN SELECT * FROM jsonb_each(coalesce(NEW.thresholds->'labels', '{}')) LOOP
		IF jsonb_typeof(v) <> 'number' OR v::text::float8 NOT BETWEEN 0 AND 1.001 THEN
			RAISE EXCEPTION 'threshold of label "%" in policy "%" must be a number between 0 and 1, not %', k, NEW.name, v
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
	END LOOP;
	IF jsonb_typeof(NEW.rules) <> 'object' THEN
		RAISE EXCEPTION 'rules of policy "%" must be a JSON object', NEW.name
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR k, v IN SELECT * FROM jsonb_each(NEW.rules) LOOP
		IF k IN ('max_length', 'min_length') THEN
			IF jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]{1,9}$' THEN
				RAISE EXCEPTION 'rule % of policy "%" must be a whole number of characters, not %', k, NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSIF k IN ('escalate_if_matches', 'escalate_unless_matches') THEN
			IF jsonb_typeof(v) <> 'string' THEN
				RAISE EXCEPTION 'rule % of policy "%" must be a regular expression (a JSON string), not %', k, NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			BEGIN
				PERFORM '' ~* (v #>> '{}');
			EXCEPTION WHEN invalid_regular_expression THEN
				RAISE EXCEPTION 'rule % of policy "%" is not a valid regular expression: %', k, NEW.name, SQLERRM
					USING ERRCODE = 'invalid_regular_expression';
			END;
		ELSIF k = 'required_fields' THEN
			IF jsonb_typeof(v) <> 'array' OR EXISTS (SELECT FROM jsonb_array_elements(v) e WHERE jsonb_typeof(e) <> 'string') THEN
				RAISE EXCEPTION 'rule required_fields of policy "%" must be an array of field names, not %', NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			IF NEW.extractor IS NULL THEN
				RAISE EXCEPTION 'rule required_fields of policy "%" needs an extractor', NEW.name
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSIF k = 'min_field_confidence' THEN
			IF jsonb_typeof(v) <> 'number' OR v::text::float8 NOT BETWEEN 0 AND 1 THEN
				RAISE EXCEPTION 'rule min_field_confidence of policy "%" must be a number between 0 and 1, not %', NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			IF NEW.extractor IS NULL THEN
				RAISE EXCEPTION 'rule min_field_confidence of policy "%" needs an extractor', NEW.name
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSE
			RAISE EXCEPTION 'unknown rule "%" in policy "%"', k, NEW.name
				USING ERRCODE = 'invalid_parameter_value',
					HINT = 'Rules: max_length, min_length, escalate_if_matches, escalate_unless_matches, required_fields, min_field_confidence.';
		END IF;
	END LOOP;
	NEW.updated_at := now();
	RETURN NEW;
END;
$$;
CREATE TRIGGER policies_check BEFORE INSERT OR UPDATE ON triage.policies
	FOR EACH ROW EXECUTE FUNCTION triage.check_policy();
-- every session routes with the edited policy from its next statement
CREATE TRIGGER policies_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON triage.policies
	FOR EACH STATEMENT EXECUTE FUNCTION triage.model_store_changed();

CREATE FUNCTION triage.create_policy(name text, model text, labels text[] DEFAULT NULL,
									 threshold real DEFAULT 0.5, rules jsonb DEFAULT '{}',
									 prompt jsonb DEFAULT NULL, audit_rate real DEFAULT 0,
									 max_attempts integer DEFAULT 5, extractor text DEFAULT NULL)
	RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	model_labels text[];
	extractor_fields text[];
BEGIN
	PERFORM triage.check_model_name(name);
	IF model IS NULL AND extractor IS NULL THEN
		RAISE EXCEPTION 'a policy needs a classifier (model), an extractor, or both'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF model IS NOT NULL THEN
		SELECT m.labels INTO model_labels FROM triage.models m
		 WHERE m.name = create_policy.model AND m.kind = 'fasttext' ORDER BY m.version DESC LIMIT 1;
		IF model_labels IS NULL THEN
			RAISE EXCEPTION 'classifier "%" does not exist', model
				USING ERRCODE = 'undefined_object',
					HINT = 'Train or import the model first.';
		END IF;
	END IF;
	IF extractor IS NOT NULL THEN
		SELECT m.labels INTO extractor_fields FROM triage.models m
		 WHERE m.name = create_policy.extractor AND m.kind = 'crf' ORDER BY m.version DESC LIMIT 1;
		IF extractor_fields IS NULL THEN
			RAISE EXCEPTION 'extractor "%" does not exist', extractor
				USING ERRCODE = 'undefined_object',
					HINT = 'Train one first with triage.train_extractor().';
		END IF;
	END IF;
	INSERT INTO triage.policies (name, model, extractor, labels, fields, thresholds, rules, prompt,
								 audit_rate, max_attempts)
	VALUES (name, model, extractor, coalesce(labels, model_labels), extractor_fields,
			jsonb_build_object('default', threshold), coalesce(rules, '{}'),
			coalesce(prompt, jsonb_build_object(
				'version', 1,
				'system', CASE WHEN model IS NULL
							   THEN 'You extract fields from business text. Answer with JSON only.'
							   ELSE 'You label business text. Answer with JSON only.' END)),
			audit_rate, max_attempts);
END;
$$;
COMMENT ON FUNCTION triage.create_policy(text, text, text[], real, jsonb, jsonb, real, integer, text) IS
	'Creates a routing policy: a classifier (model) with its allowed labels (default: the model''s) and confidence threshold, and/or a field extractor (model NULL: an extraction policy, whose output is the fields); rules, prompt, audit rate and attempts.';

-- Escalation queue --------------------------------------------------------------

CREATE TABLE triage.escalations (
	id bigserial PRIMARY KEY,
	policy text NOT NULL REFERENCES triage.policies (name) ON UPDATE CASCADE,
	source regclass,
	source_key jsonb,
	input_column name,
	output_column name,
	provenance_column name,
	input text NOT NULL,
	small_answer jsonb,
	reason text,
	status text NOT NULL DEFAULT 'pending'
		CHECK (status IN ('pending', 'claimed', 'done', 'dead')),
	attempts integer NOT NULL DEFAULT 0,
	visible_at timestamptz NOT NULL DEFAULT now(),
	claimed_by text,
	answer jsonb,
	usage jsonb,
	error text,
	outcome text,
	created_at timestamptz NOT NULL DEFAULT now(),
	done_at timestamptz
);
CREATE INDEX escalations_claimable ON triage.escalations (visible_at, id)
	WHERE status IN ('pending', 'claimed');
CREATE INDEX escalations_open_source ON triage.escalations (source, source_key)
	WHERE status IN ('pending', 'claimed');
COMMENT ON TABLE triage.escalations IS
	'The queue of rows for the large model: pending, claimed (leased until visible_at), done or dead.';
SELECT pg_catalog.pg_extension_config_dump('triage.escalations', '');
SELECT pg_catalog.pg_extension_config_dump('triage.escalations_id_seq', '');

CREATE TABLE triage.examples (
	id bigserial PRIMARY KEY,
	model text NOT NULL,
	input text NOT NULL,
	label text,
	fields jsonb,
	source text NOT NULL CHECK (source IN ('human', 'llm', 'import')),
	escalation bigint REFERENCES triage.escalations (id) ON DELETE SET NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE triage.examples IS 'Training data, including the large model''s answers (source llm).';
SELECT pg_catalog.pg_extension_config_dump('triage.examples', '');
SELECT pg_catalog.pg_extension_config_dump('triage.examples_id_seq', '');

-- Labeled rows people checked, as training examples of a model: (input,
-- label) rows for a classifier, (input, fields jsonb) rows for an extractor
CREATE FUNCTION triage.add_examples(model text, query text, source text DEFAULT 'human') RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT AS $$
#variable_conflict use_column
DECLARE
	kind text;
	n bigint;
BEGIN
	SELECT m.kind INTO kind FROM triage.models m WHERE m.name = add_examples.model ORDER BY m.version DESC LIMIT 1;
	IF kind IS NULL THEN
		RAISE EXCEPTION 'model "%" does not exist', model
			USING ERRCODE = 'undefined_object', HINT = 'Train or import it first: examples belong to a model.';
	END IF;
	IF source NOT IN ('human', 'llm', 'import') THEN
		RAISE EXCEPTION 'source must be human, llm or import, not "%"', source
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF kind = 'crf' THEN
		EXECUTE format('INSERT INTO triage.examples (model, input, fields, source)
						SELECT $1, q.input::text, q.fields::jsonb, $2 FROM (%s) AS q(input, fields)
						 WHERE q.input IS NOT NULL AND jsonb_typeof(q.fields::jsonb) = ''object''', query)
		  USING model, source;
	ELSE
		EXECUTE format('INSERT INTO triage.examples (model, input, label, source)
						SELECT $1, q.input::text, q.label::text, $2 FROM (%s) AS q(input, label)
						 WHERE q.input IS NOT NULL AND q.label IS NOT NULL', query)
		  USING model, source;
	END IF;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END;
$$;
COMMENT ON FUNCTION triage.add_examples(text, text, text) IS
	'Adds the labeled rows of query as training examples of model (source human by default): (input, label) for a classifier, (input, fields) for an extractor; distill() trains on them. Returns how many.';

CREATE TABLE triage.workers (
	name text PRIMARY KEY,
	host text,
	pid integer,
	started_at timestamptz NOT NULL DEFAULT now(),
	last_seen timestamptz NOT NULL DEFAULT now(),
	jobs_done bigint NOT NULL DEFAULT 0,
	jobs_failed bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE triage.workers IS 'triage-worker processes and their last heartbeat.';

-- The chat-completions request for one row, from the policy's prompt
CREATE FUNCTION triage.build_request(policy triage.policies, input text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT jsonb_build_object(
		'messages', jsonb_build_array(
			jsonb_build_object('role', 'system', 'content',
				coalesce(policy.prompt->>'system', 'You label business text. Answer with JSON only.')),
			jsonb_build_object('role', 'user', 'content',
				CASE WHEN policy.model IS NULL THEN
					coalesce(policy.prompt->>'instructions', 'Find these fields in the input, copied as they are written; leave out the ones it does not have.')
					|| E'\nFields: ' || array_to_string(policy.fields, ', ')
					|| E'\nAnswer with JSON: {"fields": {"<field>": "<value>", ...}}'
				ELSE
					coalesce(policy.prompt->>'instructions', 'Choose the one label that fits the input.')
					|| E'\nLabels: ' || array_to_string(policy.labels, ', ')
					|| E'\nAnswer with JSON: {"label": "<one of the labels>"}'
				END
				|| E'\nInput:\n' || input)),
		'temperature', 0,
		'response_format', jsonb_build_object('type', 'json_object'))
$$;
COMMENT ON FUNCTION triage.build_request(triage.policies, text) IS
	'The chat-completions request body (without "model") that asks the large model to label input.';

CREATE FUNCTION triage.enqueue(policy text, input text, small_answer jsonb DEFAULT NULL,
							   source regclass DEFAULT NULL, source_key jsonb DEFAULT NULL,
							   reason text DEFAULT NULL, input_column name DEFAULT NULL,
							   output_column name DEFAULT NULL, provenance_column name DEFAULT NULL)
	RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	new_id bigint;
BEGIN
	IF NOT EXISTS (SELECT FROM triage.policies p WHERE p.name = enqueue.policy) THEN
		RAISE EXCEPTION 'policy "%" does not exist', policy
			USING ERRCODE = 'undefined_object',
				HINT = 'Create one with triage.create_policy().';
	END IF;
	IF input IS NULL THEN
		RAISE EXCEPTION 'cannot escalate a NULL input' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF source IS NOT NULL AND (source_key IS NULL OR input_column IS NULL OR output_column IS NULL) THEN
		RAISE EXCEPTION 'an escalation with a source table needs its key, input column and output column'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO triage.escalations (policy, source, source_key, input_column, output_column,
									provenance_column, input, small_answer, reason)
	VALUES (policy, source, source_key, input_column, output_column,
			provenance_column, input, small_answer, reason)
	RETURNING id INTO new_id;
	PERFORM pg_catalog.pg_notify('triage_escalations', policy);
	RETURN new_id;
END;
$$;
COMMENT ON FUNCTION triage.enqueue(text, text, jsonb, regclass, jsonb, text, name, name, name) IS
	'Queues a row for the large model under a policy and notifies listening workers.';

CREATE FUNCTION triage.claim(worker text, n integer, visibility interval DEFAULT '5 minutes',
							 policy text DEFAULT NULL)
	RETURNS TABLE (id bigint, request jsonb)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
	IF worker IS NULL OR n IS NULL OR n < 1 OR visibility IS NULL OR visibility <= '0'::interval THEN
		RAISE EXCEPTION 'claim needs a worker name, n >= 1 and a positive visibility'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- A lease that ran out (a worker died) counts as an attempt, so that a
	-- row that kills workers is dead-lettered instead of looping forever.
	RETURN QUERY
	WITH picked AS (
		SELECT e.id FROM triage.escalations e
		 WHERE e.status IN ('pending', 'claimed') AND e.visible_at <= now()
		   AND (claim.policy IS NULL OR e.policy = claim.policy)
		 ORDER BY e.visible_at, e.id
		 LIMIT n
		   FOR UPDATE SKIP LOCKED)
	UPDATE triage.escalations e
	   SET status = 'claimed', claimed_by = worker,
		   visible_at = clock_timestamp() + visibility,
		   attempts = e.attempts + (e.status = 'claimed')::int
	  FROM picked, triage.policies p
	 WHERE e.id = picked.id AND p.name = e.policy
	-- built now, so that a prompt edited meanwhile applies to rows still queued
	RETURNING e.id, triage.build_request(p, e.input);
END;
$$;
COMMENT ON FUNCTION triage.claim(text, integer, interval, text) IS
	'Leases up to n escalations to a worker until now() + visibility (FOR UPDATE SKIP LOCKED); returns each one''s request body.';

-- The label in a chat-completions reply: {"label": ...} content, or a bare label
CREATE FUNCTION triage.answer_label(response jsonb, labels text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
	content text := response #>> '{choices,0,message,content}';
	parsed jsonb;
	label text;
BEGIN
	IF content IS NULL THEN
		RETURN NULL;
	END IF;
	BEGIN
		parsed := content::jsonb;
	EXCEPTION WHEN others THEN
		parsed := NULL;
	END;
	IF jsonb_typeof(parsed) = 'object' THEN
		label := parsed->>'label';
	ELSIF jsonb_typeof(parsed) = 'string' THEN
		label := parsed #>> '{}';
	ELSE
		label := btrim(content, E' \t\r\n."''');
	END IF;
	IF label = ANY (labels) THEN
		RETURN label;
	END IF;
	RETURN NULL;
END;
$$;

CREATE FUNCTION triage.fail(id bigint, error text, retry_after interval DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	e triage.escalations;
	max_attempts integer;
	backoff interval;
BEGIN
	SELECT * INTO e FROM triage.escalations x WHERE x.id = fail.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'escalation % does not exist', id USING ERRCODE = 'undefined_object';
	END IF;
	IF e.status <> 'claimed' THEN
		RETURN 'stale';
	END IF;
	SELECT p.max_attempts INTO max_attempts FROM triage.policies p WHERE p.name = e.policy;
	-- exponential backoff with jitter, unless the endpoint said when
	backoff := coalesce(retry_after,
						make_interval(secs => least(300, 2 ^ e.attempts) * (0.5 + random())));
	UPDATE triage.escalations x
	   SET attempts = x.attempts + 1,
		   error = left(fail.error, 2000),
		   status = CASE WHEN x.attempts + 1 >= max_attempts THEN 'dead' ELSE 'pending' END,
		   visible_at = clock_timestamp() + backoff,
		   done_at = CASE WHEN x.attempts + 1 >= max_attempts THEN now() END
	 WHERE x.id = fail.id;
	RETURN CASE WHEN e.attempts + 1 >= max_attempts THEN 'dead' ELSE 'retry' END;
END;
$$;
COMMENT ON FUNCTION triage.fail(bigint, text, interval) IS
	'Records a failed attempt of a leased escalation: retried after retry_after (or an exponential backoff), dead-lettered after the policy''s max_attempts. Returns retry, dead or stale.';

CREATE FUNCTION triage.release(id bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
	UPDATE triage.escalations
	   SET status = 'pending', visible_at = now(), claimed_by = NULL
	 WHERE escalations.id = release.id AND status = 'claimed'
$$;
COMMENT ON FUNCTION triage.release(bigint) IS
	'Gives a leased escalation back without counting an attempt.';

-- The fields of a chat-completions reply: {"fields": {"field": "value"}}
-- with only allowed field names and string (or null) values; else NULL
CREATE FUNCTION triage.answer_fields(response jsonb, allowed text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
	content text := response #>> '{choices,0,message,content}';
	parsed jsonb;
	result jsonb := '{}';
	k text;
	v jsonb;
BEGIN
	IF content IS NULL THEN
		RETURN NULL;
	END IF;
	BEGIN
		parsed := content::jsonb;
	EXCEPTION WHEN others THEN
		RETURN NULL;
	END;
	IF jsonb_typeof(parsed) <> 'object' OR jsonb_typeof(parsed->'fields') IS DISTINCT FROM 'object' THEN
		RETURN NULL;
	END IF;
	FOR k, v IN SELECT * FROM jsonb_each(parsed->'fields') LOOP
		IF NOT (k = ANY (allowed)) OR jsonb_typeof(v) NOT IN ('string', 'null') THEN
			RETURN NULL;
		END IF;
		IF jsonb_typeof(v) = 'string' AND v #>> '{}' <> '' THEN
			result := result || jsonb_build_object(k, v);
		END IF;
	END LOOP;
	RETURN result;
END;
$$;
COMMENT ON FUNCTION triage.answer_fields(jsonb, text[]) IS
	'The fields a chat-completions reply gives ({"fields": {...}}: allowed names, string values), without empty ones; NULL if the reply is anything else.';

COMMENT ON FUNCTION triage.answer_label(jsonb, text[]) IS
	'The label a chat-completions reply gives ({"label": ...} or a bare label), if it is one of labels; else NULL.';

CREATE FUNCTION triage.complete(id bigint, response jsonb) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	e triage.escalations;
	p triage.policies;
	label text;
	result_outcome text := 'no_source';
	key_cond text;
	fields jsonb;
	small text;
	src_input text;
	src_output text;
	n integer;
BEGIN
	SELECT * INTO e FROM triage.escalations x WHERE x.id = complete.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'escalation % does not exist', id USING ERRCODE = 'undefined_object';
	END IF;
	IF e.status <> 'claimed' THEN
		RETURN 'stale';
	END IF;
	SELECT * INTO p FROM triage.policies x WHERE x.name = e.policy;
	IF p.model IS NULL THEN
		-- an extraction policy: the answer is an object of fields
		fields := triage.answer_fields(response, p.fields);
		label := fields::text;
	ELSE
		label := triage.answer_label(response, p.labels);
	END IF;
	IF label IS NULL THEN
		-- a failed attempt; 'dead' when it was the last one allowed
		IF triage.fail(id, 'invalid answer: ' || left(coalesce(
			response #>> '{choices,0,message,content}', response::text), 500)) = 'dead' THEN
			RETURN 'dead';
		END IF;
		RETURN 'invalid';
	END IF;

	-- Write to the source row only if it still holds the escalated input and
	-- nobody wrote another answer meanwhile; otherwise keep the answer, marked.
	IF e.source IS NOT NULL THEN
		SELECT string_agg(format('%I = %L', k, v), ' AND ') INTO key_cond
		  FROM jsonb_each_text(e.source_key) AS t(k, v);
		EXECUTE format('SELECT %I::text, %I::text FROM %s WHERE %s FOR UPDATE',
					   e.input_column, e.output_column, e.source, key_cond)
		   INTO src_input, src_output;
		GET DIAGNOSTICS n = ROW_COUNT;
		IF n = 0 THEN
			result_outcome := 'source_deleted';
		ELSIF src_input IS DISTINCT FROM e.input THEN
			result_outcome := 'source_changed';
		ELSIF src_output IS NOT NULL AND src_output IS DISTINCT FROM
			  (CASE WHEN fields IS NULL THEN e.small_answer->>'label' ELSE (e.small_answer->'fields')::text END) THEN
			result_outcome := 'source_overwritten';
		ELSE
			EXECUTE format('UPDATE %s SET %I = %L%s WHERE %s', e.source, e.output_column, label,
						   CASE WHEN e.provenance_column IS NOT NULL
								THEN format(', %I = %L', e.provenance_column, jsonb_build_object(
									'by', 'llm', 'model', response->>'model',
									'prompt_version', p.prompt->'version', 'escalation', e.id, 'at', now()))
								ELSE '' END,
						   key_cond);
			result_outcome := 'written';
		END IF;
	END IF;

	UPDATE triage.escalations x
	   SET status = 'done', done_at = now(), error = NULL, outcome = result_outcome,
		   answer = jsonb_build_object(CASE WHEN fields IS NULL THEN 'label' ELSE 'fields' END,
									   coalesce(fields, to_jsonb(label)), 'by', 'llm',
									   'model', response->>'model',
									   'prompt_version', p.prompt->'version', 'at', now()),
		   usage = response->'usage'
	 WHERE x.id = complete.id;
	IF fields IS NULL THEN
		INSERT INTO triage.examples (model, input, label, source, escalation)
		VALUES (p.model, e.input, label, 'llm', e.id);
	ELSE
		INSERT INTO triage.examples (model, input, fields, source, escalation)
		VALUES (p.extractor, e.input, fields, 'llm', e.id);
	END IF;
	UPDATE triage.workers w SET jobs_done = w.jobs_done + 1 WHERE w.name = e.claimed_by;
	RETURN 'done';
END;
$$;
COMMENT ON FUNCTION triage.complete(bigint, jsonb) IS
	'Accepts a leased escalation''s chat-completions reply: validates the label, writes it to the source row if that row is unchanged, records a training example; returns done, invalid (counted as a failed attempt, retried), dead (that failure was the last attempt) or stale.';

CREATE FUNCTION triage.heartbeat(worker text, host text, pid integer, jobs_done bigint,
								 jobs_failed bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
	INSERT INTO triage.workers AS w (name, host, pid, jobs_done, jobs_failed)
	VALUES (worker, host, pid, coalesce(jobs_done, 0), coalesce(jobs_failed, 0))
	ON CONFLICT (name) DO UPDATE
	   SET host = excluded.host, pid = excluded.pid, last_seen = now(),
		   jobs_done = greatest(w.jobs_done, excluded.jobs_done),
		   jobs_failed = excluded.jobs_failed,
		   started_at = CASE WHEN w.pid IS DISTINCT FROM excluded.pid THEN now() ELSE w.started_at END
$$;
COMMENT ON FUNCTION triage.heartbeat(text, text, integer, bigint, bigint) IS
	'A worker says it is alive, with its counters.';

-- Roles -------------------------------------------------------------------------

-- The worker role needs no table rights: claim, complete, fail, release and
-- heartbeat run as the extension owner (SECURITY DEFINER, pinned search_path).
ALTER FUNCTION triage.claim(text, integer, interval, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.complete(bigint, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.fail(bigint, text, interval) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.release(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.heartbeat(text, text, integer, bigint, bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION triage.claim(text, integer, interval, text), triage.complete(bigint, jsonb),
	triage.fail(bigint, text, interval), triage.release(bigint),
	triage.heartbeat(text, text, integer, bigint, bigint) FROM PUBLIC;

-- Routing -----------------------------------------------------------------------

CREATE TYPE triage.decision AS (label text, confidence real, fields jsonb, escalate boolean, reason text);
COMMENT ON TYPE triage.decision IS
	'A routing decision: the small model''s answer, whether to escalate it, and the rule or threshold that decided.';

CREATE FUNCTION triage.route(policy text, input text) RETURNS triage.decision
	AS 'MODULE_PATHNAME', 'triage_route'
	LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.route(text, text) IS
	'Routes one input under a policy: the small model''s label and confidence, and whether to escalate, with the reason (rule, threshold or audit sample).';

-- The checks calibrate and train_and_calibrate share, before any work: the
-- arguments, and the policy, locked until the thresholds are stored.
CREATE FUNCTION triage.lock_policy_for_calibration(policy text, query text, target_accuracy real,
												   max_escalation real) RETURNS triage.policies
LANGUAGE plpgsql VOLATILE AS $$
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

-- Chooses and stores a policy's thresholds from rows of the model's answers
-- ([{"l": label, "c": confidence, "ok": right?}]): the part of calibrate and
-- train_and_calibrate after the answers are known.  source (what gave the
-- answers) is stored and returned with the result.
CREATE FUNCTION triage.calibrate_answers(policy text, rows jsonb, target_accuracy real,
										 max_escalation real, source jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
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
BEGIN
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

	-- The least escalation whose kept accuracy reaches the target.  (Also
	-- requiring it at every higher threshold, against lucky dips, was measured
	-- to escalate more and keep less accuracy on unseen rows: see 009.)
	SELECT threshold, kept, correct INTO chosen
	  FROM triage_calibration_curve c
	 WHERE (target_accuracy IS NULL OR kept = 0 OR correct::float8 / kept >= target_accuracy)
	   AND (max_escalation IS NULL OR 1 - kept::float8 / n <= max_escalation + 1e-9)
	 ORDER BY CASE WHEN target_accuracy IS NULL
				   THEN -(CASE WHEN kept > 0 THEN correct::float8 / kept ELSE 0 END) ELSE 0 END,
			  kept DESC, threshold
	 LIMIT 1;
	IF chosen IS NULL THEN
		-- the target is out of reach within the budget: the best accuracy it allows
		SELECT threshold, kept, correct INTO chosen FROM triage_calibration_curve
		 WHERE 1 - kept::float8 / n <= max_escalation + 1e-9
		 ORDER BY CASE WHEN kept > 0 THEN correct::float8 / kept ELSE 0 END DESC, kept DESC
		 LIMIT 1;
	END IF;

	-- per label, for a target accuracy: each label's own least threshold
	IF target_accuracy IS NOT NULL THEN
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

	result := jsonb_build_object(
		'rows', n,
		'threshold', round(chosen.threshold::numeric, 4),
		'label_thresholds', per_label,
		'escalation_rate', round(1 - kept_n::numeric / n, 4),
		'kept_accuracy', CASE WHEN kept_n > 0 THEN round(kept_correct::numeric / kept_n, 4) END,
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

CREATE FUNCTION triage.calibrate(policy text, query text, target_accuracy real DEFAULT NULL,
								 max_escalation real DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	p triage.policies;
	rows jsonb;
BEGIN
	p := triage.lock_policy_for_calibration(policy, query, target_accuracy, max_escalation);

	-- the model's answer and confidence on every labeled row
	EXECUTE format($q$
		SELECT jsonb_agg(jsonb_build_object('l', (c).label, 'c', coalesce((c).confidence, 0),
											'ok', (c).label IS NOT DISTINCT FROM gold))
		  FROM (SELECT q.label::text AS gold, triage.classify($1, q.input::text) AS c
				  FROM (%s) AS q(input, label)
				 WHERE q.input IS NOT NULL AND q.label IS NOT NULL) s
	$q$, query) INTO rows USING p.model;
	RETURN triage.calibrate_answers(policy, rows, target_accuracy, max_escalation);
END;
$$;
COMMENT ON FUNCTION triage.calibrate(text, text, real, real) IS
	'Chooses the policy''s confidence threshold (per label when that escalates fewer rows) from labeled held-out rows: the fewest escalations reaching target_accuracy on kept rows, or the best kept accuracy within max_escalation; stores it and returns the curve.';

CREATE FUNCTION triage.cross_validate(query text, options jsonb DEFAULT '{}', folds integer DEFAULT 5)
	RETURNS TABLE (input text, label text, predicted text, confidence real, fold integer)
	AS 'MODULE_PATHNAME', 'triage_cross_validate'
	LANGUAGE C VOLATILE STRICT ROWS 1000;
COMMENT ON FUNCTION triage.cross_validate(text, jsonb, integer) IS
	'Every (input, label) row of query with the answer of a model trained with options on the other folds (rows go to folds by a hash of their input, so copies share one): how a model trained on all of them will do on new rows.';

CREATE FUNCTION triage.train_and_calibrate(policy text, query text, options jsonb DEFAULT '{}',
										   target_accuracy real DEFAULT NULL, max_escalation real DEFAULT NULL,
										   folds integer DEFAULT 5) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	p triage.policies;
	rows jsonb;
	version integer;
BEGIN
	p := triage.lock_policy_for_calibration(policy, query, target_accuracy, max_escalation);
	IF options IS NULL OR folds IS NULL THEN
		RAISE EXCEPTION 'options and folds must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p.model IS NULL THEN
		RAISE EXCEPTION 'policy "%" has no classifier to train', policy
			USING ERRCODE = 'wrong_object_type',
				HINT = 'train_and_calibrate trains the policy''s model; an extraction policy has none.';
	END IF;
	PERFORM triage.check_model_kind(p.model, 'fasttext');
	-- thresholds from every row's out-of-fold answer ...
	SELECT jsonb_agg(jsonb_build_object('l', x.predicted, 'c', coalesce(x.confidence, 0),
										'ok', x.predicted IS NOT DISTINCT FROM x.label))
	  INTO rows
	  FROM triage.cross_validate(query, options, folds) x;
	-- ... for the model of all of them, deployed with its thresholds
	version := triage.train(p.model, query, options);
	PERFORM triage.deploy(p.model, version);
	RETURN triage.calibrate_answers(policy, rows, target_accuracy, max_escalation,
									jsonb_build_object('model', p.model, 'version', version, 'folds', folds));
END;
$$;
COMMENT ON FUNCTION triage.train_and_calibrate(text, text, jsonb, real, real, integer) IS
	'Uses every labeled row of query twice: thresholds chosen as calibrate does, on each row''s answer from a model trained on the other folds (cross_validate), for a model trained on all of them, which becomes the deployed version of the policy''s model.';

-- Batch classification ------------------------------------------------------------

CREATE FUNCTION triage.classify_batch(name text, inputs text[])
	RETURNS TABLE (ord integer, label text, confidence real)
	AS 'MODULE_PATHNAME', 'triage_classify_batch'
	LANGUAGE C STABLE STRICT PARALLEL SAFE COST 1000 ROWS 1000;
COMMENT ON FUNCTION triage.classify_batch(text, text[]) IS
	'The top label of every input of an array (ord is the 1-based position), the output layer computed for all at once with OpenBLAS; for models with many labels.';

-- Routing rows of tables ----------------------------------------------------------

-- One row per routing statement, never updated, so that sessions writing to
-- attached tables at once never wait for each other; compact_counters()
-- folds them (the worker's heartbeat calls it)
CREATE TABLE triage.policy_counters (
	policy text NOT NULL REFERENCES triage.policies (name) ON UPDATE CASCADE ON DELETE CASCADE,
	seen bigint NOT NULL DEFAULT 0,
	escalated bigint NOT NULL DEFAULT 0
);
CREATE INDEX policy_counters_policy ON triage.policy_counters (policy);
COMMENT ON TABLE triage.policy_counters IS
	'Rows routed by attached tables and process_table, and how many of them were escalated: sum per policy.';

CREATE FUNCTION triage.compact_counters() RETURNS void
LANGUAGE sql VOLATILE AS $$
	WITH folded AS (DELETE FROM triage.policy_counters RETURNING *)
	INSERT INTO triage.policy_counters (policy, seen, escalated)
	SELECT policy, sum(seen), sum(escalated) FROM folded GROUP BY policy
$$;
COMMENT ON FUNCTION triage.compact_counters() IS
	'Folds triage.policy_counters into one row per policy.';

CREATE TABLE triage.progress (
	source regclass PRIMARY KEY,
	policy text NOT NULL,
	started_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL,
	rows_total bigint,
	rows_done bigint NOT NULL DEFAULT 0,
	escalated bigint NOT NULL DEFAULT 0,
	finished boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE triage.progress IS 'The progress of triage.process_table(), one row per table, committed per batch.';

CREATE VIEW triage.process_progress AS
SELECT source, policy, rows_done, rows_total, escalated, finished,
	   round(rows_done / greatest(extract(epoch FROM updated_at - started_at), 0.001)) AS rows_per_second,
	   CASE WHEN NOT finished AND rows_total > rows_done AND rows_done > 0
			THEN (updated_at - started_at) * ((rows_total - rows_done)::float8 / rows_done) END AS eta
  FROM triage.progress;
COMMENT ON VIEW triage.process_progress IS 'triage.process_table() progress: rows done, rows/s, ETA, escalated so far.';

-- The single-column primary key of a table, checked for attach and process_table
CREATE FUNCTION triage.key_column(tbl regclass) RETURNS name
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
	cols name[];
BEGIN
	SELECT array_agg(a.attname ORDER BY k.ord) INTO cols
	  FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord), pg_attribute a
	 WHERE i.indrelid = tbl AND i.indisprimary AND a.attrelid = tbl AND a.attnum = k.attnum;
	IF cols IS NULL THEN
		RAISE EXCEPTION 'table % has no primary key', tbl
			USING ERRCODE = 'invalid_table_definition',
				HINT = 'Escalated answers are written back by key: add a primary key.';
	END IF;
	IF cardinality(cols) > 1 THEN
		RAISE EXCEPTION 'table % has a primary key of % columns', tbl, cardinality(cols)
			USING ERRCODE = 'feature_not_supported',
				HINT = 'pg_triage needs a single-column primary key for now.';
	END IF;
	RETURN cols[1];
END;
$$;

CREATE FUNCTION triage.check_text_column(tbl regclass, col name) RETURNS void
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
	typ regtype;
BEGIN
	SELECT a.atttypid::regtype INTO typ FROM pg_attribute a
	 WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
	IF typ IS NULL THEN
		RAISE EXCEPTION 'column "%" of % does not exist', col, tbl USING ERRCODE = 'undefined_column';
	END IF;
	IF typ NOT IN ('text'::regtype, 'character varying'::regtype) THEN
		RAISE EXCEPTION 'column "%" of % is %, not text', col, tbl, typ
			USING ERRCODE = 'datatype_mismatch',
				HINT = 'Use a text or varchar column.';
	END IF;
END;
$$;

-- The statement that routes the rows of rows_sql for process_table: writes
-- labels (and provenance), queues escalations (unless the row already has
-- one open), returns (routed, escalated, last key, written).  Parameters:
-- $1 policy, $2 table, $3 key column, $4 input column, $5 output column,
-- $6 provenance column, $7 model, $8 its deployed version.
CREATE FUNCTION triage.field_values(fields jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
	SELECT coalesce(jsonb_object_agg(k, v->'value'), '{}') FROM jsonb_each(fields) AS f(k, v)
$$;
COMMENT ON FUNCTION triage.field_values(jsonb) IS
	'The values of what extract() returns, without offsets and confidences: {"field": "value"}.';

-- The output column of an attached table: text for a classifying policy, jsonb for an extraction policy
CREATE FUNCTION triage.check_output_column(tbl regclass, col name, policy text) RETURNS void
LANGUAGE plpgsql STABLE STRICT AS $$
#variable_conflict use_column
DECLARE
	typ regtype;
	extraction boolean;
BEGIN
	SELECT p.model IS NULL INTO extraction FROM triage.policies p WHERE p.name = check_output_column.policy;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'policy "%" does not exist', policy
			USING ERRCODE = 'undefined_object', HINT = 'Create one with triage.create_policy().';
	END IF;
	IF NOT extraction THEN
		PERFORM triage.check_text_column(tbl, col);
		RETURN;
	END IF;
	SELECT a.atttypid::regtype INTO typ FROM pg_attribute a
	 WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
	IF typ IS NULL THEN
		RAISE EXCEPTION 'column "%" of % does not exist', col, tbl USING ERRCODE = 'undefined_column';
	END IF;
	IF typ <> 'jsonb'::regtype THEN
		RAISE EXCEPTION 'column "%" of % is %, but policy "%" extracts fields into jsonb', col, tbl, typ, policy
			USING ERRCODE = 'datatype_mismatch', HINT = 'Use a jsonb output column.';
	END IF;
END;
$$;

CREATE FUNCTION triage.route_rows_sql(tbl regclass, key_col name, input_col name, output_col name,
									  provenance_col name, rows_sql text, extraction boolean DEFAULT false)
	RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT format($q$
		WITH routed AS (
			SELECT r.%1$I AS k, r.%2$I AS input, triage.route($1, r.%2$I) AS d FROM (%3$s) r),
		written AS (
			UPDATE %4$s t SET %5$I = %7$s %6$s FROM routed r
			 WHERE t.%1$I = r.k AND %7$s IS NOT NULL
			RETURNING t.%1$I),
		queued AS (
			SELECT triage.enqueue($1, r.input, jsonb_strip_nulls(jsonb_build_object('label', (r.d).label,
								  'fields', triage.field_values((r.d).fields), 'confidence', (r.d).confidence)),
								  $2, jsonb_build_object($3, r.k::text), (r.d).reason, $4, $5, $6) AS id
			  FROM routed r
			 WHERE (r.d).escalate
			   AND NOT EXISTS (SELECT FROM triage.escalations e
								WHERE e.source = $2 AND e.source_key = jsonb_build_object($3, r.k::text)
								  AND e.status IN ('pending', 'claimed')))
		SELECT (SELECT count(*) FROM routed) AS routed, (SELECT count(*) FROM queued) AS escalated,
			   (SELECT max(k)::text FROM routed) AS last_key, (SELECT count(*) FROM written) AS written
	$q$, key_col, input_col, rows_sql, tbl, output_col,
		CASE WHEN provenance_col IS NOT NULL THEN format(
			$p$, %I = jsonb_build_object('by', 'model', 'model', $7, 'version', $8,
										 'confidence', round((r.d).confidence::numeric, 4),
										 'at', now())$p$, provenance_col)
			 ELSE '' END,
		CASE WHEN extraction THEN 'triage.field_values((r.d).fields)' ELSE '(r.d).label' END)
$$;

CREATE FUNCTION triage.count_routed(policy text, routed bigint, escalated bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
	INSERT INTO triage.policy_counters (policy, seen, escalated)
	SELECT policy, routed, escalated WHERE routed > 0
$$;

CREATE FUNCTION triage.route_row() RETURNS trigger
	AS 'MODULE_PATHNAME', 'triage_route_row' LANGUAGE C;
COMMENT ON FUNCTION triage.route_row() IS
	'Row trigger of attached tables: writes the small model''s label into the row being inserted (or whose input is updated) and queues it when the policy escalates it.';

CREATE FUNCTION triage.count_routed_rows() RETURNS trigger
	AS 'MODULE_PATHNAME', 'triage_count_routed_rows' LANGUAGE C;
COMMENT ON FUNCTION triage.count_routed_rows() IS
	'Statement trigger of attached tables: adds the statement''s routed rows to triage.policy_counters.';

CREATE FUNCTION triage.check_provenance_column(tbl regclass, col name) RETURNS void
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
	typ regtype;
BEGIN
	SELECT a.atttypid::regtype INTO typ FROM pg_attribute a
	 WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
	IF typ IS NULL THEN
		RAISE EXCEPTION 'column "%" of % does not exist', col, tbl USING ERRCODE = 'undefined_column';
	END IF;
	IF typ <> 'jsonb'::regtype THEN
		RAISE EXCEPTION 'provenance column "%" of % is %, not jsonb', col, tbl, typ
			USING ERRCODE = 'datatype_mismatch';
	END IF;
END;
$$;

CREATE FUNCTION triage.attach(tbl regclass, input_column name, output_column name, policy text,
							  provenance_column name DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	key_col name;
	args text;
BEGIN
	IF tbl IS NULL OR input_column IS NULL OR output_column IS NULL OR policy IS NULL THEN
		RAISE EXCEPTION 'attach needs a table, an input column, an output column and a policy'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	key_col := triage.key_column(tbl);
	PERFORM triage.check_text_column(tbl, input_column);
	PERFORM triage.check_output_column(tbl, output_column, policy);
	IF provenance_column IS NOT NULL THEN
		PERFORM triage.check_provenance_column(tbl, provenance_column);
	END IF;
	args := format('%L, %L, %L, %L, %L', key_col, input_column, output_column, policy,
				   coalesce(provenance_column, ''));
	-- BEFORE ROW: the label goes into the row as it is written (COPY
	-- included), no second write; UPDATE OF: only a changed input is routed
	EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OF %I ON %s '
				   'FOR EACH ROW EXECUTE FUNCTION triage.route_row(%s)',
				   'triage_route_' || output_column, input_column, tbl, args);
	EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE ON %s '
				   'FOR EACH STATEMENT EXECUTE FUNCTION triage.count_routed_rows(%L)',
				   'triage_count_' || output_column, tbl, policy);
END;
$$;
COMMENT ON FUNCTION triage.attach(regclass, name, name, text, name) IS
	'Routes every row inserted into tbl (and every update of its input column) under policy: the label goes to output_column (its provenance to provenance_column, jsonb, if given), escalations to the queue.';

CREATE FUNCTION triage.detach(tbl regclass, output_column name) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
	EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'triage_route_' || output_column, tbl);
	EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'triage_count_' || output_column, tbl);
END;
$$;
COMMENT ON FUNCTION triage.detach(regclass, name) IS 'Removes what triage.attach() added for output_column.';

CREATE PROCEDURE triage.process_table(tbl regclass, input_column name, output_column name,
									  policy text, batch_size integer DEFAULT 10000,
									  provenance_column name DEFAULT NULL)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
	key_col name := triage.key_column(tbl);
	model text;
	extraction boolean;
	last_key text := NULL;
	r record;
	total bigint;
	n_done bigint := 0;
	n_escalated bigint := 0;
	started timestamptz := clock_timestamp();
BEGIN
	PERFORM triage.check_text_column(tbl, input_column);
	PERFORM triage.check_output_column(tbl, output_column, policy);
	IF provenance_column IS NOT NULL THEN
		PERFORM triage.check_provenance_column(tbl, provenance_column);
	END IF;
	IF batch_size IS NULL OR batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT coalesce(p.model, p.extractor), p.model IS NULL INTO model, extraction
	  FROM triage.policies p WHERE p.name = process_table.policy;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'policy "%" does not exist', policy
			USING ERRCODE = 'undefined_object', HINT = 'Create one with triage.create_policy().';
	END IF;
	EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL',
				   tbl, output_column, input_column) INTO total;
	INSERT INTO triage.progress AS p (source, policy, started_at, updated_at, rows_total)
	VALUES (tbl, policy, started, started, total)
	ON CONFLICT (source) DO UPDATE SET policy = excluded.policy, started_at = excluded.started_at,
		updated_at = excluded.updated_at, rows_total = excluded.rows_total,
		rows_done = 0, escalated = 0, finished = false;
	COMMIT;
	-- Rows still without an output, in key order: a cancelled run resumes where it
	-- stopped, since every committed batch has its outputs written.
	LOOP
		EXECUTE triage.route_rows_sql(tbl, key_col, input_column, output_column, provenance_column,
			rows_sql => format('SELECT * FROM %s WHERE %I IS NULL AND %I IS NOT NULL %s ORDER BY %I LIMIT %s',
				   tbl, output_column, input_column,
				   CASE WHEN last_key IS NULL THEN ''
						ELSE format('AND %I > %L', key_col, last_key) END,
				   key_col, batch_size),
			extraction => extraction)
		   INTO r USING policy, tbl, key_col, input_column, output_column, provenance_column,
						model, triage.deployed_version(model);
		PERFORM triage.count_routed(policy, r.routed, r.escalated);
		EXIT WHEN r.routed = 0;
		last_key := r.last_key;
		n_done := n_done + r.routed;
		n_escalated := n_escalated + r.escalated;
		UPDATE triage.progress SET rows_done = n_done, escalated = n_escalated,
								   updated_at = clock_timestamp()
		 WHERE source = tbl;
		COMMIT;
		RAISE NOTICE 'process_table %: % of % rows, % escalated, % rows/s', tbl, n_done, total,
			n_escalated, round(n_done / greatest(extract(epoch FROM clock_timestamp() - started), 0.001));
	END LOOP;
	UPDATE triage.progress SET finished = true, updated_at = clock_timestamp() WHERE source = tbl;
	PERFORM triage.compact_counters();
	COMMIT;
END;
$$;
COMMENT ON PROCEDURE triage.process_table(regclass, name, name, text, integer, name) IS
	'Routes the rows of tbl whose output is NULL, batch_size at a time, committing each batch; resumable after a cancel; progress in triage.process_progress.';

CREATE VIEW triage.escalation_stats AS
SELECT p.name AS policy,
	   coalesce(c.seen, 0) AS rows_seen,
	   coalesce(c.seen, 0) - coalesce(c.escalated, 0) AS rows_kept,
	   count(e.id) AS escalated,
	   count(e.id) FILTER (WHERE e.status = 'pending') AS pending,
	   count(e.id) FILTER (WHERE e.status = 'claimed') AS claimed,
	   count(e.id) FILTER (WHERE e.status = 'done') AS answered,
	   count(e.id) FILTER (WHERE e.status = 'dead') AS dead,
	   coalesce(sum(e.attempts), 0) AS failed_attempts,
	   coalesce(sum((e.usage->>'total_tokens')::bigint), 0) AS tokens,
	   round(coalesce(sum((e.usage->>'prompt_tokens')::numeric), 0) / 1000 * coalesce(nullif(current_setting('triage.llm_prompt_price_per_1k', true), '')::numeric, 0)
			 + coalesce(sum((e.usage->>'completion_tokens')::numeric), 0) / 1000 * coalesce(nullif(current_setting('triage.llm_completion_price_per_1k', true), '')::numeric, 0), 4)
		 AS llm_cost,
	   -- what sending every routed row to the large model would have cost, at the
	   -- tokens per answered escalation seen so far
	   round(greatest(coalesce(c.seen, 0), count(e.id))
			 * (coalesce(avg((e.usage->>'prompt_tokens')::numeric), 0) / 1000 * coalesce(nullif(current_setting('triage.llm_prompt_price_per_1k', true), '')::numeric, 0)
				+ coalesce(avg((e.usage->>'completion_tokens')::numeric), 0) / 1000 * coalesce(nullif(current_setting('triage.llm_completion_price_per_1k', true), '')::numeric, 0)), 4)
		 AS all_llm_cost
  FROM triage.policies p
  LEFT JOIN (SELECT policy, sum(seen) AS seen, sum(escalated) AS escalated
			   FROM triage.policy_counters GROUP BY policy) c ON c.policy = p.name
  LEFT JOIN triage.escalations e ON e.policy = p.name
 GROUP BY p.name, c.seen, c.escalated;
COMMENT ON VIEW triage.escalation_stats IS
	'Per policy: rows seen and kept, escalations by state (exact counts), tokens, the large model''s cost and what sending every row would have cost (prices: triage.llm_prompt_price_per_1k, triage.llm_completion_price_per_1k).';

-- Roles ---------------------------------------------------------------------------

-- Three roles, created if missing (roles belong to the cluster, not to the
-- extension, so DROP EXTENSION leaves them): grant them to login roles.
--   triage_user    classify, predict, route, evaluate: reads models and policies
--   triage_worker  claim, complete, fail, release, heartbeat, and nothing else
--   triage_admin   also imports, trains, deploys, edits policies and the queue
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'triage_user') THEN
		CREATE ROLE triage_user NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'triage_worker') THEN
		CREATE ROLE triage_worker NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'triage_admin') THEN
		CREATE ROLE triage_admin NOLOGIN;
	END IF;
END
$$;
GRANT USAGE ON SCHEMA triage TO triage_user, triage_worker, triage_admin;
GRANT SELECT ON triage.models, triage.deployments, triage.policies TO triage_user;
GRANT EXECUTE ON FUNCTION triage.claim(text, integer, interval, text), triage.complete(bigint, jsonb),
	triage.fail(bigint, text, interval), triage.release(bigint),
	triage.heartbeat(text, text, integer, bigint, bigint) TO triage_worker;
GRANT triage_user TO triage_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA triage TO triage_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA triage TO triage_admin;
GRANT EXECUTE ON FUNCTION triage.claim(text, integer, interval, text), triage.complete(bigint, jsonb),
	triage.fail(bigint, text, interval), triage.release(bigint),
	triage.heartbeat(text, text, integer, bigint, bigint) TO triage_admin;

-- Distillation --------------------------------------------------------------------

CREATE FUNCTION triage.distill(name text, options jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql VOLATILE STRICT AS $$
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
	old_version := triage.deployed_version(name);
	extractor := EXISTS (SELECT FROM triage.models m WHERE m.name = distill.name AND m.version = old_version
							AND m.kind = 'crf');
	-- the examples of this model (human and large-model answers), and any other labeled rows
	training_query := format('SELECT input, %s FROM triage.examples WHERE model = %L AND %s IS NOT NULL',
							 CASE WHEN extractor THEN 'fields' ELSE 'label' END, name,
							 CASE WHEN extractor THEN 'fields' ELSE 'label' END)
		|| coalesce(' UNION ALL SELECT * FROM (' || extra || ') AS extra', '');
	before := triage.evaluate(name, heldout, old_version);
	new_version := triage.train_model(name, CASE WHEN extractor THEN 'crf' ELSE 'fasttext' END,
									  training_query, train_options);
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
COMMENT ON FUNCTION triage.distill(text, jsonb) IS
	'Retrains a model from its examples (human and large-model answers, triage.examples) plus options->>''query'', compares the new version with the deployed one on options->>''heldout'', deploys it only if it is more accurate, and returns both scores.';
GRANT EXECUTE ON FUNCTION triage.distill(text, jsonb) TO triage_admin;
