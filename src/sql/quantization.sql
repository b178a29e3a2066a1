-- pg_triage: product quantization of stored classifiers
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Quantization ----------------------------------------------------------------

CREATE FUNCTION triage.quantize_fasttext(model bytea, options jsonb DEFAULT '{}') RETURNS bytea
	AS 'MODULE_PATHNAME', 'triage_quantize_fasttext'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.quantize_fasttext(bytea, jsonb) IS
	'fastText''s quantize on a dense model file: keep the cutoff rows of largest norm, product-quantize; returns the .ftz bytes.';

CREATE FUNCTION triage.quantize(name text, version integer, options jsonb DEFAULT '{}')
	RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
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
	new_version := triage_internal.store_model(name, 'fasttext', info.labels,
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

