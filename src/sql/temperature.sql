-- pg_triage: temperature calibration of classifiers
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Calibration -----------------------------------------------------------------

CREATE FUNCTION triage.fit_temperature(name text, version integer, query text) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'triage_fit_temperature'
	LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION triage.fit_temperature(text, integer, text) IS
	'The temperature that minimizes the negative log-likelihood of a version on the labeled (input, label) rows of query.';

CREATE FUNCTION triage_internal.calibrate_temperature(name text, query text, version integer,
	query_search_path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	v integer := version;
	source triage.models;
	new_version integer;
	fit jsonb;
	before jsonb;
	after jsonb;
BEGIN
	IF name IS NULL OR query IS NULL THEN
		RAISE EXCEPTION 'name and query must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	query := triage_internal.user_rows_sql(query, query_search_path, '{text,text}');
	v := coalesce(v, triage_internal.deployed_version(name));
	SELECT * INTO source FROM triage.models m
	 WHERE m.name = calibrate_temperature.name AND m.version = v AND m.kind <> 'crf';
	IF NOT FOUND THEN
		RAISE EXCEPTION 'classifier "%" version % does not exist', name, v USING ERRCODE = 'undefined_object';
	END IF;
	-- fitted on the version's logits (before any temperature it has), and
	-- stored as a new version: a stored version never changes its answers
	before := triage.evaluate(name, query, v);
	fit := triage.fit_temperature(name, v, query);
	new_version := triage_internal.store_model(name, source.kind, source.labels,
		source.params || jsonb_build_object('calibrated_from', v),
		(source.metrics - 'calibration' - 'heldout') || jsonb_build_object('calibration', fit),
		source.data);
	after := triage.evaluate(name, query, new_version);
	fit := fit || jsonb_build_object('version', new_version, 'calibrated_from', v,
									 'ece_before', before->'ece', 'ece_after', after->'ece',
									 'accuracy', after->'accuracy');
	UPDATE triage.models m
	   SET metrics = m.metrics || jsonb_build_object('calibration', fit)
	 WHERE m.name = calibrate_temperature.name AND m.version = new_version;
	-- the calibrated copy replaces the version it came from where that was deployed
	IF triage_internal.deployed_version(name) = v THEN
		PERFORM triage.deploy(name, new_version);
	END IF;
	RETURN fit;
END;
$$;
COMMENT ON FUNCTION triage_internal.calibrate_temperature(text, text, integer, text) IS
	'calibrate_temperature with the search_path to run the query text under.';

-- As the caller, with the caller's search_path for the query text: the
-- function above runs with search_path pinned
CREATE FUNCTION triage.calibrate_temperature(name text, query text, version integer DEFAULT NULL) RETURNS jsonb
LANGUAGE sql VOLATILE AS $$
	SELECT triage_internal.calibrate_temperature(name, query, version, pg_catalog.current_setting('search_path'))
$$;

COMMENT ON FUNCTION triage.calibrate_temperature(text, text, integer) IS
	'Fits temperature scaling on held-out (input, label) rows and stores the version with it as a new version (deployed if the version was), so confidences match accuracy; returns the temperature, the new version and the ECE before and after.';

