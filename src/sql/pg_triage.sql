-- pg_triage: the extension's objects, all in schema triage.
-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_triage" to load this file. \quit

-- Model store ---------------------------------------------------------------

CREATE TABLE triage.models (
	name text NOT NULL
		CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]*$' AND octet_length(name) < 64),
	version integer NOT NULL CHECK (version > 0),
	kind text NOT NULL CHECK (kind IN ('fasttext')),
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

CREATE FUNCTION triage.export_fasttext(name text, version integer) RETURNS bytea
LANGUAGE plpgsql STABLE STRICT AS $$
#variable_conflict use_column
DECLARE
	result bytea;
BEGIN
	SELECT m.data INTO result FROM triage.models m
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

CREATE FUNCTION triage.train(name text, query text, options jsonb DEFAULT '{}') RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT AS $$
DECLARE
	trained record;
BEGIN
	PERFORM triage.check_model_name(name);
	SELECT * INTO trained FROM triage.train_fasttext(query, options);
	RETURN triage.store_model(name, 'fasttext', trained.labels, trained.params,
							  trained.metrics, trained.data);
END;
$$;
COMMENT ON FUNCTION triage.train(text, text, jsonb) IS
	'Trains a classifier on the (input, label) rows of query and stores it as a new version of name.';

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

CREATE FUNCTION triage.predict(name text, input text, k integer DEFAULT 1,
							   threshold real DEFAULT 0.0)
	RETURNS TABLE (label text, probability real)
	AS 'MODULE_PATHNAME', 'triage_predict'
	LANGUAGE C STABLE STRICT PARALLEL SAFE ROWS 2;
COMMENT ON FUNCTION triage.predict(text, text, integer, real) IS
	'The k most likely labels of input (k = -1: all) with probability >= threshold, as fasttext predict-prob.';

CREATE FUNCTION triage.classify(name text, input text) RETURNS triage.prediction
	AS 'MODULE_PATHNAME', 'triage_classify'
	LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.classify(text, text) IS
	'The most likely label of input and its probability, with the deployed version of model name.';

CREATE FUNCTION triage.classify(name text, version integer, input text) RETURNS triage.prediction
	AS 'MODULE_PATHNAME', 'triage_classify_version'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.classify(text, integer, text) IS
	'As classify(name, input) with a fixed version; versions never change, so it can back an index.';

-- Evaluation ------------------------------------------------------------------

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
	IF v IS NULL THEN
		SELECT d.version INTO v FROM triage.deployments d WHERE d.name = evaluate.name;
		IF v IS NULL THEN
			RAISE EXCEPTION 'model "%" has no deployed version', name
				USING ERRCODE = 'object_not_in_prerequisite_state',
					HINT = 'Pass a version, or deploy one with triage.deploy().';
		END IF;
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
	IF v IS NULL THEN
		SELECT d.version INTO v FROM triage.deployments d WHERE d.name = calibrate_temperature.name;
		IF v IS NULL THEN
			RAISE EXCEPTION 'model "%" has no deployed version', name
				USING ERRCODE = 'object_not_in_prerequisite_state',
					HINT = 'Pass a version, or deploy one with triage.deploy().';
		END IF;
	END IF;
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
											'quantized_from', version),
		jsonb_build_object('parent_bytes', octet_length(source.data),
						   'bytes', octet_length(quantized)),
		quantized);
	RETURN new_version;
END;
$$;
COMMENT ON FUNCTION triage.quantize(text, integer, jsonb) IS
	'Stores a product-quantized copy of a dense version as a new version (options: dsub, qnorm, qout, cutoff).';
