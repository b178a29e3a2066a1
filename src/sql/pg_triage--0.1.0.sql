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

CREATE FUNCTION triage.import_fasttext(name text, model bytea) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT AS $$
#variable_conflict use_column
DECLARE
	info record;
	new_version integer;
BEGIN
	PERFORM triage.check_model_name(import_fasttext.name);
	SELECT * INTO info FROM triage.inspect_fasttext(model);
	-- one importer per name at a time, so version numbers never collide
	PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('triage.models'),
											 pg_catalog.hashtext(import_fasttext.name));
	SELECT coalesce(max(m.version), 0) + 1 INTO new_version
		FROM triage.models m WHERE m.name = import_fasttext.name;
	INSERT INTO triage.models (name, version, kind, labels, params, data)
		VALUES (import_fasttext.name, new_version, 'fasttext', info.labels,
				info.params || '{"source": "import"}', model);
	INSERT INTO triage.deployments (name, version)
		VALUES (import_fasttext.name, new_version)
		ON CONFLICT (name) DO NOTHING;
	RETURN new_version;
END;
$$;
COMMENT ON FUNCTION triage.import_fasttext(text, bytea) IS
	'Stores a fastText model as a new version of name; the first version of a name is deployed.';

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
