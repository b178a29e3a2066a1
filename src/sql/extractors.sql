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
	SELECT triage_internal.train_model(name, 'crf', query, options, pg_catalog.current_setting('search_path'))
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
	PERFORM triage_internal.check_model_name(name);
	SELECT * INTO info FROM triage.inspect_crf(model);
	RETURN triage_internal.store_model(name, 'crf', info.fields, info.params, '{}', model);
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

-- COST 30: the shipped extractor (models/business_fields.crf) on the shared
-- reviews, measured as classify's COST (src/sql/fasttext.sql): 29.2x md5,
-- with a version 30.2x; about twice classify
CREATE FUNCTION triage.extract(name text, input text) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'triage_extract'
	LANGUAGE C STABLE STRICT PARALLEL SAFE COST 30;
COMMENT ON FUNCTION triage.extract(text, text) IS
	'The fields the deployed extractor finds in input: {"field": {"value", "start", "end", "confidence"}}, character offsets, end exclusive.';

CREATE FUNCTION triage.extract(name text, version integer, input text) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'triage_extract_version'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 30;
COMMENT ON FUNCTION triage.extract(text, integer, text) IS
	'extract() with a fixed version of the extractor: IMMUTABLE, so it can back an expression index.';
