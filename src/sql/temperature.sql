-- pg_triage: temperature calibration of classifiers
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Calibration -----------------------------------------------------------------

CREATE FUNCTION triage.fit_temperature(name text, version integer, query text) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'triage_fit_temperature'
	LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION triage.fit_temperature(text, integer, text) IS
	'The temperature that minimizes the negative log-likelihood of a version on the labeled (input, label) rows of query.';

CREATE FUNCTION triage.calibrate_temperature(name text, query text, version integer,
	query_search_path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
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
	query := triage.user_rows_sql(query, query_search_path, '{text,text}');
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
COMMENT ON FUNCTION triage.calibrate_temperature(text, text, integer, text) IS
	'(internal) calibrate_temperature with the search_path to run the query text under.';

-- As the caller, with the caller's search_path for the query text: the
-- function above runs with search_path pinned
CREATE FUNCTION triage.calibrate_temperature(name text, query text, version integer DEFAULT NULL) RETURNS jsonb
LANGUAGE sql VOLATILE AS $$
	SELECT triage.calibrate_temperature(name, query, version, pg_catalog.current_setting('search_path'))
$$;

COMMENT ON FUNCTION triage.calibrate_temperature(text, text, integer) IS
	'Fits temperature scaling on held-out (input, label) rows and stores it with the version, so confidences match accuracy; returns the temperature and the ECE before and after.';

