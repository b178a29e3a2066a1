-- pg_triage: field extractors (CRF)
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Extractors -----------------------------------------------------------------

CREATE FUNCTION triage.train_crf(query text, options jsonb,
								 OUT data bytea, OUT fields text[], OUT params jsonb,
								 OUT metrics jsonb)
	RETURNS record
	AS 'MODULE_PATHNAME', 'triage_train_crf'
	LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION triage.train_crf(text, jsonb) IS
	'Trains a CRF field extractor on the (input, fields) rows of query and returns it without storing it.';

-- As the caller, with the caller's search_path for the query text
CREATE FUNCTION triage.train_extractor(name text, query text, options jsonb DEFAULT '{}') RETURNS integer
LANGUAGE sql VOLATILE STRICT AS $$
	SELECT triage.train_model(name, 'crf', query, options, pg_catalog.current_setting('search_path'))
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
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
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
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
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
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
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
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
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

