-- pg_triage: temperature calibration of classifiers
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

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

