-- pg_triage: the extension's objects, in schemas triage and triage_internal.
-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_triage" to load this file. \quit

-- Schemas -------------------------------------------------------------------

-- Made here, not from the control file (which names pg_catalog, as pg_cron's
-- does), so that they are members of the extension: DROP EXTENSION drops
-- them, and pg_dump leaves them to CREATE EXTENSION instead of dumping a
-- CREATE SCHEMA that fails where the extension already exists.
CREATE SCHEMA triage;
COMMENT ON SCHEMA triage IS
	'pg_triage: the functions users call (\df triage.*), its tables and views.';
-- Helpers, trigger functions and the overloads that take the caller's
-- search_path: what the functions of triage call, kept out of users' way
CREATE SCHEMA triage_internal;
COMMENT ON SCHEMA triage_internal IS
	'pg_triage''s internal functions: what the functions of schema triage call; not an interface.';

-- Model store ---------------------------------------------------------------

CREATE TABLE triage.models (
	name text NOT NULL
		CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]*$' AND octet_length(name) < 64),
	version integer NOT NULL CHECK (version > 0),
	kind text NOT NULL CHECK (kind IN ('linear', 'fasttext', 'crf')),
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

-- The last version number given to each name: numbers are never reused
CREATE TABLE triage.model_versions (
	name text PRIMARY KEY,
	last_version integer NOT NULL
);
COMMENT ON TABLE triage.model_versions IS
	'The last version number given to each model name, so that a deleted version''s number is never given again.';
SELECT pg_catalog.pg_extension_config_dump('triage.model_versions', '');

-- Dumped by pg_dump, with their data, like user tables
-- model bytes are floats and codes that barely compress: store them as they are
ALTER TABLE triage.models ALTER COLUMN data SET STORAGE EXTERNAL;

SELECT pg_catalog.pg_extension_config_dump('triage.models', '');
SELECT pg_catalog.pg_extension_config_dump('triage.deployments', '');

CREATE FUNCTION triage_internal.model_store_changed() RETURNS trigger
	AS 'MODULE_PATHNAME', 'triage_model_store_changed' LANGUAGE C;
COMMENT ON FUNCTION triage_internal.model_store_changed() IS
	'Trigger: tells every session to reload deployments and models at its next statement.';

CREATE TRIGGER models_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON triage.models
	FOR EACH STATEMENT EXECUTE FUNCTION triage_internal.model_store_changed();
CREATE TRIGGER deployments_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON triage.deployments
	FOR EACH STATEMENT EXECUTE FUNCTION triage_internal.model_store_changed();

CREATE FUNCTION triage_internal.models_immutable() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	-- the temperature changes the confidences a version gives: it is part of the version
	IF (NEW.name, NEW.version, NEW.kind, NEW.labels, NEW.params, NEW.data,
		NEW.metrics #> '{calibration,temperature}')
		IS DISTINCT FROM (OLD.name, OLD.version, OLD.kind, OLD.labels, OLD.params, OLD.data,
						  OLD.metrics #> '{calibration,temperature}') THEN
		RAISE EXCEPTION 'model "%" version % cannot be changed', OLD.name, OLD.version
			USING ERRCODE = 'object_not_in_prerequisite_state',
				HINT = 'Model versions are immutable; import or train a new version instead (calibrate_temperature stores one).';
	END IF;
	RETURN NEW;
END;
$$;
COMMENT ON FUNCTION triage_internal.models_immutable() IS
	'Trigger: rejects changes to a stored model version other than its metrics (its temperature included).';

CREATE TRIGGER models_immutable
	BEFORE UPDATE ON triage.models
	FOR EACH ROW EXECUTE FUNCTION triage_internal.models_immutable();

-- Users' query texts ---------------------------------------------------------

-- A user's query is the one SQL text the extension runs as written by someone
-- else: as the caller, under the caller's search_path.  Every function here
-- runs with search_path pinned to pg_catalog, pg_temp; those that take a
-- query get the caller's search_path from a thin wrapper and read the rows
-- through query_rows().
CREATE FUNCTION triage_internal.query_rows(query text, search_path text, types text[])
	RETURNS TABLE (r text[])
	AS 'MODULE_PATHNAME', 'triage_query_rows'
	LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION triage_internal.query_rows(text, text, text[]) IS
	'The rows of a user''s query, run as the caller under search_path, each as the text of its columns, which must be of types (text or jsonb).';

-- A query over query_rows() that reads query's rows as columns of types
CREATE FUNCTION triage_internal.user_rows_sql(query text, search_path text, types text[]) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
	SELECT pg_catalog.format('SELECT %s FROM triage_internal.query_rows(%L, %L, %L) AS q',
		(SELECT pg_catalog.string_agg(pg_catalog.format('q.r[%s]::%s', t.n, t.type), ', ' ORDER BY t.n)
		   FROM pg_catalog.unnest(types) WITH ORDINALITY AS t(type, n)),
		query, search_path, types)
$$;
COMMENT ON FUNCTION triage_internal.user_rows_sql(text, text, text[]) IS
	'A query that reads the rows of a user''s query (run under search_path) as columns of the given types.';

-- Results -------------------------------------------------------------------

CREATE TYPE triage.prediction AS (label text, confidence real);
COMMENT ON TYPE triage.prediction IS 'A label and the model''s probability for it.';

CREATE FUNCTION triage_internal.check_model_name(name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF name !~ '^[A-Za-z_][A-Za-z0-9_.-]*$' OR octet_length(name) >= 64 THEN
		RAISE EXCEPTION 'invalid model name "%"', name
			USING ERRCODE = 'invalid_name',
				HINT = 'A model name starts with a letter or underscore, has at most 63 bytes, '
					   'and holds only letters, digits, "_", "." and "-".';
	END IF;
END;
$$;
COMMENT ON FUNCTION triage_internal.check_model_name(text) IS
	'Raises an error unless name is a valid model name.';

-- Deployment ------------------------------------------------------------------

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
