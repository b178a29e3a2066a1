-- pg_triage: fastText classifiers: import, export, training, classification
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- fastText models -----------------------------------------------------------

CREATE FUNCTION triage.inspect_fasttext(model bytea, OUT labels text[], OUT params jsonb)
	RETURNS record
	AS 'MODULE_PATHNAME', 'triage_inspect_fasttext'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION triage.inspect_fasttext(bytea) IS
	'Validates a fastText .bin or .ftz supervised model and returns its labels and parameters.';

-- The versions of a name are all classifiers or all extractors
CREATE FUNCTION triage_internal.check_model_kind(name text, kind text) RETURNS void
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	other_kind text;
BEGIN
	SELECT m.kind INTO other_kind FROM triage.models m
	 WHERE m.name = check_model_kind.name
	   AND (m.kind = 'crf') <> (check_model_kind.kind = 'crf') LIMIT 1;
	IF other_kind IS NOT NULL THEN
		RAISE EXCEPTION 'model "%" is %; %', name,
			CASE other_kind WHEN 'crf' THEN 'an extractor' ELSE 'a classifier' END,
			CASE kind WHEN 'crf' THEN 'an extractor needs a name of its own'
				 ELSE 'a classifier needs a name of its own' END
			USING ERRCODE = 'wrong_object_type';
	END IF;
END;
$$;
COMMENT ON FUNCTION triage_internal.check_model_kind(text, text) IS
	'Raises an error if name already holds models of another kind (classifier or extractor).';

CREATE FUNCTION triage_internal.store_model(name text, kind text, labels text[], params jsonb,
									metrics jsonb, data bytea) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	new_version integer;
BEGIN
	PERFORM triage_internal.check_model_name(store_model.name);
	-- one writer per name at a time, so version numbers never collide
	PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('triage.models'),
											 pg_catalog.hashtext(store_model.name));
	PERFORM triage_internal.check_model_kind(store_model.name, store_model.kind);
	-- never a number used before, even by a deleted version: a (name,
	-- version) always means the same model (classify(name, version, input)
	-- is IMMUTABLE, and backends cache models by it)
	INSERT INTO triage.model_versions AS v (name, last_version)
	SELECT store_model.name, coalesce(max(m.version), 0) + 1
	  FROM triage.models m WHERE m.name = store_model.name
	ON CONFLICT (name) DO UPDATE
		SET last_version = greatest(v.last_version, excluded.last_version - 1) + 1
	RETURNING v.last_version INTO new_version;
	INSERT INTO triage.models (name, version, kind, labels, params, metrics, data)
		VALUES (store_model.name, new_version, store_model.kind, store_model.labels,
				store_model.params, store_model.metrics, store_model.data);
	INSERT INTO triage.deployments (name, version)
		VALUES (store_model.name, new_version)
		ON CONFLICT (name) DO NOTHING;
	RETURN new_version;
END;
$$;
COMMENT ON FUNCTION triage_internal.store_model(text, text, text[], jsonb, jsonb, bytea) IS
	'Stores a model as the next version of name; the first version of a name is deployed.';

CREATE FUNCTION triage.import_fasttext(name text, model bytea) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	info record;
BEGIN
	PERFORM triage_internal.check_model_name(name);
	SELECT * INTO info FROM triage.inspect_fasttext(model);
	RETURN triage_internal.store_model(name, 'fasttext', info.labels,
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
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
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

CREATE FUNCTION triage_internal.train_classifier(query text, options jsonb,
									OUT kind text, OUT data bytea, OUT labels text[],
									OUT params jsonb, OUT metrics jsonb)
	RETURNS record
	AS 'MODULE_PATHNAME', 'triage_train_classifier'
	LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION triage_internal.train_classifier(text, jsonb) IS
	'Trains a classifier of the kind options->>''kind'' names (linear by default) on the (input, label) rows of query and returns it without storing it.';

-- train and train_extractor: the name checked before a long training, then
-- the trainer of the kind, then stored as the next version; kind is 'crf'
-- or 'classifier' (which kind of classifier, options->>'kind' says)
CREATE FUNCTION triage_internal.train_model(name text, kind text, query text, options jsonb,
									query_search_path text) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	trained record;
BEGIN
	-- on a standby (or in any read-only transaction) the store would fail
	-- only after the whole training: fail first
	IF pg_catalog.current_setting('transaction_read_only')::boolean THEN
		RAISE EXCEPTION 'cannot train model "%" in a read-only transaction', name
			USING ERRCODE = 'read_only_sql_transaction',
				HINT = 'Train on the primary: a standby gets the model by replication.';
	END IF;
	PERFORM triage_internal.check_model_name(name);
	PERFORM triage_internal.check_model_kind(name, kind);
	IF kind = 'crf' THEN
		query := triage_internal.user_rows_sql(query, query_search_path, '{text,jsonb}');
		SELECT 'crf' AS kind, data, fields AS names, params, metrics INTO trained
		  FROM triage.train_crf(query, options);
	ELSE
		query := triage_internal.user_rows_sql(query, query_search_path, '{text,text}');
		SELECT t.kind, data, labels AS names, params, metrics INTO trained
		  FROM triage_internal.train_classifier(query, options) t;
		kind := trained.kind;
	END IF;
	RETURN triage_internal.store_model(name, kind, trained.names, trained.params, trained.metrics, trained.data);
END;
$$;
COMMENT ON FUNCTION triage_internal.train_model(text, text, text, jsonb, text) IS
	'Trains a model of kind on the rows of query (run under query_search_path) and stores it as the next version of name.';

-- As the caller, with the caller's search_path for the query text
CREATE FUNCTION triage.train(name text, query text, options jsonb DEFAULT '{}') RETURNS integer
LANGUAGE sql VOLATILE STRICT AS $$
	SELECT triage_internal.train_model(name, 'classifier', query, options, pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION triage.train(text, text, jsonb) IS
	'Trains a classifier (options->>''kind'': linear by default, or fasttext) on the (input, label) rows of query and stores it as a new version of name.';


-- Classification ----------------------------------------------------------------

-- COSTs here and in extractors.sql and routing.sql are per call, in md5()
-- calls (md5 has COST 1), measured on the shared reviews (about 400 bytes
-- each): 100,000 rows, serial, each query's executor time less that of
-- count(review), best of 6 interleaved rounds in two runs (issue #17); md5:
-- 1.5 us.  Honest costs let the planner use parallel workers for large
-- tables (test/t/018_parallel.pl); COST 1 would price a call like md5.
--
-- predict: 16 (fastText, the shipped .ftz: 15.7x md5; linear: 16.7x); a
-- little above classify for the set it returns
CREATE FUNCTION triage.predict(name text, input text, k integer DEFAULT 1,
							   threshold real DEFAULT 0.0)
	RETURNS TABLE (label text, probability real)
	AS 'MODULE_PATHNAME', 'triage_predict'
	LANGUAGE C STABLE STRICT PARALLEL SAFE COST 16 ROWS 2;
COMMENT ON FUNCTION triage.predict(text, text, integer, real) IS
	'The k most likely labels of input (k = -1: all) with probability >= threshold, as fasttext predict-prob.';

-- classify: 15, for the linear kind, train's default (15.5x md5; with a
-- version 15.7x); a fastText model costs less or more with its size (the
-- shipped .ftz: 12.5x, 14.9x with a version), within the same order
CREATE FUNCTION triage.classify(name text, input text) RETURNS triage.prediction
	AS 'MODULE_PATHNAME', 'triage_classify'
	LANGUAGE C STABLE STRICT PARALLEL SAFE COST 15;
COMMENT ON FUNCTION triage.classify(text, text) IS
	'The most likely label of input and its probability, with the deployed version of model name.';

CREATE FUNCTION triage.classify(name text, version integer, input text) RETURNS triage.prediction
	AS 'MODULE_PATHNAME', 'triage_classify_version'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 15;
COMMENT ON FUNCTION triage.classify(text, integer, text) IS
	'As classify(name, input) with a fixed version; versions never change, so it can back an index.';

-- Batch classification ------------------------------------------------------------

-- COST 15000 per call, for an array of 1,000 inputs (ROWS 1000): classify's
-- 15 per input.  Measured on 100 arrays of 1,000 reviews: linear 14,400x
-- md5, the shipped .ftz 12,400x (2 labels: row by row; the sgemm path pays
-- off from 16 labels).  The planner cannot see an array's length: a call on
-- 10 inputs costs a hundredth of this.
CREATE FUNCTION triage.classify_batch(name text, inputs text[])
	RETURNS TABLE (ord integer, label text, confidence real)
	AS 'MODULE_PATHNAME', 'triage_classify_batch'
	LANGUAGE C STABLE STRICT PARALLEL SAFE COST 15000 ROWS 1000;
COMMENT ON FUNCTION triage.classify_batch(text, text[]) IS
	'The top label of every input of an array (ord is the 1-based position), the output layer computed for all at once with OpenBLAS; for models with many labels.';

