-- pg_triage: routing the rows of tables: attach, process_table, counters
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Routing rows of tables ----------------------------------------------------------

-- One row per routing statement, never updated, so that sessions writing to
-- attached tables at once never wait for each other; compact_counters()
-- folds them (the worker's heartbeat calls it)
CREATE TABLE triage.policy_counters (
	policy text NOT NULL REFERENCES triage.policies (name) ON UPDATE CASCADE ON DELETE CASCADE,
	seen bigint NOT NULL DEFAULT 0,
	escalated bigint NOT NULL DEFAULT 0,
	-- the hour the rows were routed in, for the report's volume over time
	hour timestamptz NOT NULL DEFAULT pg_catalog.date_trunc('hour', pg_catalog.now())
);
CREATE INDEX policy_counters_policy ON triage.policy_counters (policy);
SELECT pg_catalog.pg_extension_config_dump('triage.policy_counters', '');
COMMENT ON TABLE triage.policy_counters IS
	'Rows routed by attached tables and process_table, and how many of them were escalated, in the hour they were routed: sum per policy (and hour).';

CREATE FUNCTION triage.compact_counters() RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	WITH folded AS (DELETE FROM triage.policy_counters RETURNING *)
	INSERT INTO triage.policy_counters (policy, seen, escalated, hour)
	SELECT policy, sum(seen), sum(escalated), hour FROM folded GROUP BY policy, hour
$$;
COMMENT ON FUNCTION triage.compact_counters() IS
	'Folds triage.policy_counters into one row per policy and hour (as the extension''s owner: it changes no count).';

CREATE TABLE triage.progress (
	source regclass PRIMARY KEY,
	policy text NOT NULL,
	started_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL,
	rows_total bigint,
	rows_done bigint NOT NULL DEFAULT 0,
	escalated bigint NOT NULL DEFAULT 0,
	finished boolean NOT NULL DEFAULT false
);
SELECT pg_catalog.pg_extension_config_dump('triage.progress', '');
COMMENT ON TABLE triage.progress IS 'The progress of triage.process_table(), one row per table, committed per batch.';

CREATE VIEW triage.process_progress AS
SELECT source, policy, rows_done, rows_total, escalated, finished,
	   round(rows_done / greatest(extract(epoch FROM updated_at - started_at), 0.001)) AS rows_per_second,
	   CASE WHEN NOT finished AND rows_total > rows_done AND rows_done > 0
			THEN (updated_at - started_at) * ((rows_total - rows_done)::float8 / rows_done) END AS eta
  FROM triage.progress;
COMMENT ON VIEW triage.process_progress IS 'triage.process_table() progress: rows done, rows/s, ETA, escalated so far.';

-- The single-column primary key of a table, checked for attach and process_table
CREATE FUNCTION triage_internal.key_column(tbl regclass) RETURNS name
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	cols name[];
BEGIN
	SELECT array_agg(a.attname ORDER BY k.ord) INTO cols
	  FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord), pg_attribute a
	 WHERE i.indrelid = tbl AND i.indisprimary AND a.attrelid = tbl AND a.attnum = k.attnum;
	IF cols IS NULL THEN
		RAISE EXCEPTION 'table % has no primary key', tbl
			USING ERRCODE = 'invalid_table_definition',
				HINT = 'Escalated answers are written back by key: add a primary key.';
	END IF;
	IF cardinality(cols) > 1 THEN
		RAISE EXCEPTION 'table % has a primary key of % columns', tbl, cardinality(cols)
			USING ERRCODE = 'feature_not_supported',
				HINT = 'pg_triage needs a single-column primary key for now.';
	END IF;
	RETURN cols[1];
END;
$$;
COMMENT ON FUNCTION triage_internal.key_column(regclass) IS
	'The single-column primary key of a table, which answers are written back by; an error otherwise.';

-- The type of a column of a table; an error if there is no such column
CREATE FUNCTION triage_internal.column_type(tbl regclass, col name) RETURNS regtype
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	typ regtype;
BEGIN
	SELECT a.atttypid::regtype INTO typ FROM pg_attribute a
	 WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
	IF typ IS NULL THEN
		RAISE EXCEPTION 'column "%" of % does not exist', col, tbl USING ERRCODE = 'undefined_column';
	END IF;
	RETURN typ;
END;
$$;
COMMENT ON FUNCTION triage_internal.column_type(regclass, name) IS
	'The type of a column of a table; an error if it has no such column.';

CREATE FUNCTION triage_internal.check_text_column(tbl regclass, col name) RETURNS void
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	typ regtype;
BEGIN
	typ := triage_internal.column_type(tbl, col);
	IF typ NOT IN ('text'::regtype, 'character varying'::regtype) THEN
		RAISE EXCEPTION 'column "%" of % is %, not text', col, tbl, typ
			USING ERRCODE = 'datatype_mismatch',
				HINT = 'Use a text or varchar column.';
	END IF;
END;
$$;
COMMENT ON FUNCTION triage_internal.check_text_column(regclass, name) IS
	'Error unless the column exists and is text or varchar.';

-- The statement that routes the rows of rows_sql for process_table: writes
-- labels (and provenance), queues escalations (unless the row already has
-- one open), returns (routed, escalated, last key, written).  Parameters:
-- $1 policy, $2 table, $3 key column, $4 input column, $5 output column,
-- $6 provenance column, $7 model, $8 its deployed version.
CREATE FUNCTION triage_internal.field_values(fields jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT coalesce(jsonb_object_agg(k, v->'value'), '{}') FROM jsonb_each(fields) AS f(k, v)
$$;
COMMENT ON FUNCTION triage_internal.field_values(jsonb) IS
	'The values of what extract() returns, without offsets and confidences: {"field": "value"}.';

-- The output column of an attached table: text for a classifying policy, jsonb for an extraction policy
CREATE FUNCTION triage_internal.check_output_column(tbl regclass, col name, policy text) RETURNS void
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	typ regtype;
	extraction boolean;
BEGIN
	SELECT p.model IS NULL INTO extraction FROM triage.policies p WHERE p.name = check_output_column.policy;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'policy "%" does not exist', policy
			USING ERRCODE = 'undefined_object', HINT = 'Create one with triage.create_policy().';
	END IF;
	IF NOT extraction THEN
		PERFORM triage_internal.check_text_column(tbl, col);
		RETURN;
	END IF;
	typ := triage_internal.column_type(tbl, col);
	IF typ <> 'jsonb'::regtype THEN
		RAISE EXCEPTION 'column "%" of % is %, but policy "%" extracts fields into jsonb', col, tbl, typ, policy
			USING ERRCODE = 'datatype_mismatch', HINT = 'Use a jsonb output column.';
	END IF;
END;
$$;
COMMENT ON FUNCTION triage_internal.check_output_column(regclass, name, text) IS
	'Error unless the column can hold what the policy answers: text for a label, jsonb for fields.';

CREATE FUNCTION triage_internal.route_rows_sql(tbl regclass, key_col name, input_col name, output_col name,
									  provenance_col name, rows_sql text, extraction boolean DEFAULT false)
	RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT format($q$
		WITH routed AS (
			SELECT r.%1$I AS k, r.%2$I AS input, triage.route($1, r.%2$I) AS d FROM (%3$s) r),
		written AS (
			UPDATE %4$s t SET %5$I = %7$s %6$s FROM routed r
			 WHERE t.%1$I = r.k AND %7$s IS NOT NULL
			RETURNING t.%1$I),
		queued AS (
			SELECT triage.enqueue($1, r.input, jsonb_strip_nulls(jsonb_build_object('label', (r.d).label,
								  'fields', triage_internal.field_values((r.d).fields), 'confidence', (r.d).confidence)),
								  $2, jsonb_build_object($3, r.k::text), (r.d).reason, $4, $5, $6) AS id
			  FROM routed r
			 WHERE (r.d).escalate
			   AND NOT triage_internal.open_escalation($2, jsonb_build_object($3, r.k::text)))
		SELECT (SELECT count(*) FROM routed) AS routed, (SELECT count(*) FROM queued) AS escalated,
			   (SELECT k::text FROM routed ORDER BY k DESC LIMIT 1) AS last_key, (SELECT count(*) FROM written) AS written
	$q$, key_col, input_col, rows_sql, tbl, output_col,
		CASE WHEN provenance_col IS NOT NULL THEN format(
			$p$, %I = jsonb_build_object('by', 'model', 'model', $7, 'version', $8,
										 'confidence', round((r.d).confidence::numeric, 4),
										 'at', now())$p$, provenance_col)
			 ELSE '' END,
		CASE WHEN extraction THEN 'triage_internal.field_values((r.d).fields)' ELSE '(r.d).label' END)
$$;
COMMENT ON FUNCTION triage_internal.route_rows_sql(regclass, name, name, name, name, text, boolean) IS
	'The set-based statement process_table runs per batch: writes answers, queues escalations, returns the counts.';

-- The counters and the progress are written as the extension's owner: a
-- table owner routing with process_table needs no rights on them, and may
-- count only under policies it may use, and record progress only for
-- tables it may update
CREATE FUNCTION triage_internal.count_routed(policy text, routed bigint, escalated bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NOT triage.may_use_policy(policy, triage_internal.caller_role()) THEN
		RAISE EXCEPTION 'role "%" may not use policy "%"', triage_internal.caller_role(), policy
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	INSERT INTO triage.policy_counters (policy, seen, escalated)
	SELECT policy, routed, escalated WHERE routed > 0;
END;
$$;
COMMENT ON FUNCTION triage_internal.count_routed(text, bigint, bigint) IS
	'Adds rows routed by process_table to triage.policy_counters.';

-- Whether a row already waits for the large model (process_table queues it
-- once), for a caller who may read the table but not the queue
CREATE FUNCTION triage_internal.open_escalation(source regclass, source_key jsonb) RETURNS boolean
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NOT has_table_privilege(triage_internal.caller_role(), source, 'SELECT') THEN
		RAISE EXCEPTION 'permission denied for table %', source USING ERRCODE = 'insufficient_privilege';
	END IF;
	RETURN EXISTS (SELECT FROM triage.escalations e
					WHERE e.source = open_escalation.source AND e.source_key = open_escalation.source_key
					  AND e.status IN ('pending', 'claimed'));
END;
$$;
COMMENT ON FUNCTION triage_internal.open_escalation(regclass, jsonb) IS
	'Whether a row of a table the caller may read waits for the large model.';

CREATE FUNCTION triage_internal.record_progress(tbl regclass, policy text, started timestamptz, total bigint,
									   done bigint, escalated bigint, finished boolean) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NOT has_table_privilege(triage_internal.caller_role(), tbl, 'UPDATE') THEN
		RAISE EXCEPTION 'permission denied to record the progress of %', tbl
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	INSERT INTO triage.progress AS p (source, policy, started_at, updated_at, rows_total, rows_done,
									  escalated, finished)
	VALUES (tbl, policy, started, clock_timestamp(), total, done, escalated, finished)
	ON CONFLICT (source) DO UPDATE SET policy = excluded.policy, started_at = excluded.started_at,
		updated_at = excluded.updated_at, rows_total = excluded.rows_total,
		rows_done = excluded.rows_done, escalated = excluded.escalated, finished = excluded.finished;
END;
$$;
COMMENT ON FUNCTION triage_internal.record_progress(regclass, text, timestamptz, bigint, bigint, bigint, boolean) IS
	'Records process_table''s progress on a table in triage.progress.';

CREATE FUNCTION triage_internal.route_row() RETURNS trigger
	AS 'MODULE_PATHNAME', 'triage_route_row' LANGUAGE C;
COMMENT ON FUNCTION triage_internal.route_row() IS
	'Row trigger of attached tables: writes the small model''s label into the row being inserted (or whose input is updated) and queues it when the policy escalates it.';

-- The tables attached to a policy: their route triggers name it
CREATE FUNCTION triage.attached_tables(policy text) RETURNS SETOF regclass
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
	SELECT DISTINCT t.tgrelid::regclass FROM pg_catalog.pg_trigger t
	 WHERE t.tgfoid = 'triage_internal.route_row()'::regprocedure AND t.tgnargs = 5
	   AND (pg_catalog.string_to_array(pg_catalog.encode(t.tgargs, 'escape'), '\000'))[4] = policy
$$;
COMMENT ON FUNCTION triage.attached_tables(text) IS
	'The tables attached to a policy (triage.attach()).';

CREATE FUNCTION triage_internal.count_routed_rows() RETURNS trigger
	AS 'MODULE_PATHNAME', 'triage_count_routed_rows' LANGUAGE C;
COMMENT ON FUNCTION triage_internal.count_routed_rows() IS
	'Statement trigger of attached tables: adds the statement''s routed rows to triage.policy_counters.';

CREATE FUNCTION triage_internal.check_provenance_column(tbl regclass, col name) RETURNS void
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	typ regtype;
BEGIN
	typ := triage_internal.column_type(tbl, col);
	IF typ <> 'jsonb'::regtype THEN
		RAISE EXCEPTION 'provenance column "%" of % is %, not jsonb', col, tbl, typ
			USING ERRCODE = 'datatype_mismatch';
	END IF;
END;
$$;
COMMENT ON FUNCTION triage_internal.check_provenance_column(regclass, name) IS
	'Error unless the provenance column exists and is jsonb.';

CREATE FUNCTION triage_internal.check_attachment(policy text, tbl regclass, key_column name, input_column name,
										output_column name, provenance_column name) RETURNS void
	AS 'MODULE_PATHNAME', 'triage_check_attachment' LANGUAGE C STABLE;
COMMENT ON FUNCTION triage_internal.check_attachment(text, regclass, name, name, name, name) IS
	'Error unless the current role may use policy and tbl is attached to it with these columns (what queueing and complete() check).';

-- What attach and process_table check of a table: a single-column primary
-- key (returned), a text input, an output of what the policy answers, a
-- jsonb provenance column if one is given
CREATE FUNCTION triage_internal.check_columns(tbl regclass, input_column name, output_column name, policy text,
									 provenance_column name) RETURNS name
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	key_col name := triage_internal.key_column(tbl);
BEGIN
	PERFORM triage_internal.check_text_column(tbl, input_column);
	PERFORM triage_internal.check_output_column(tbl, output_column, policy);
	IF provenance_column IS NOT NULL THEN
		PERFORM triage_internal.check_provenance_column(tbl, provenance_column);
	END IF;
	RETURN key_col;
END;
$$;
COMMENT ON FUNCTION triage_internal.check_columns(regclass, name, name, text, name) IS
	'What attach and process_table check of a table''s columns; returns its key column.';

-- The name of an attach() trigger for an output column: the column's name
-- when it fits in 63 bytes, else a hash of it (a cut name could collide with
-- another column's, and detach() would drop the wrong trigger)
CREATE FUNCTION triage_internal.trigger_name(prefix text, output_column name) RETURNS name
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN octet_length(prefix || output_column) < 64 THEN prefix || output_column
				ELSE prefix || md5(output_column) END::name
$$;
COMMENT ON FUNCTION triage_internal.trigger_name(text, name) IS
	'The name of the trigger attach() creates for an output column.';

CREATE FUNCTION triage.attach(tbl regclass, input_column name, output_column name, policy text,
							  provenance_column name DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	key_col name;
	args text;
BEGIN
	IF tbl IS NULL OR input_column IS NULL OR output_column IS NULL OR policy IS NULL THEN
		RAISE EXCEPTION 'attach needs a table, an input column, an output column and a policy'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	key_col := triage_internal.check_columns(tbl, input_column, output_column, policy, provenance_column);
	args := format('%L, %L, %L, %L, %L', key_col, input_column, output_column, policy,
				   coalesce(provenance_column, ''));
	-- BEFORE ROW: the label goes into the row as it is written (COPY
	-- included), no second write; UPDATE OF: only a changed input is routed
	EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OF %I ON %s '
				   'FOR EACH ROW EXECUTE FUNCTION triage_internal.route_row(%s)',
				   triage_internal.trigger_name('triage_route_', output_column), input_column, tbl, args);
	EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE ON %s '
				   'FOR EACH STATEMENT EXECUTE FUNCTION triage_internal.count_routed_rows(%L)',
				   triage_internal.trigger_name('triage_count_', output_column), tbl, policy);
	-- what the trigger will check before queueing, checked now too
	PERFORM triage_internal.check_attachment(policy, tbl, key_col, input_column, output_column, provenance_column);
END;
$$;
COMMENT ON FUNCTION triage.attach(regclass, name, name, text, name) IS
	'Routes every row inserted into tbl (and every update of its input column) under policy: the label goes to output_column (its provenance to provenance_column, jsonb, if given), escalations to the queue.';

CREATE FUNCTION triage.detach(tbl regclass, output_column name) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', triage_internal.trigger_name('triage_route_', output_column), tbl);
	EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', triage_internal.trigger_name('triage_count_', output_column), tbl);
END;
$$;
COMMENT ON FUNCTION triage.detach(regclass, name) IS 'Removes what triage.attach() added for output_column.';

-- process_table's work, in functions with a pinned search_path (a procedure
-- that commits cannot have one): what it checks and sets up, then one batch
-- at a time.  Its state, passed from call to call, is a jsonb object.
CREATE FUNCTION triage_internal.process_table_start(tbl regclass, input_column name, output_column name,
										   policy text, batch_size integer, provenance_column name)
	RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	key_col name;
	model text;
	extraction boolean;
	total bigint;
	started timestamptz := clock_timestamp();
BEGIN
	IF tbl IS NULL OR input_column IS NULL OR output_column IS NULL OR policy IS NULL THEN
		RAISE EXCEPTION 'process_table needs a table, an input column, an output column and a policy'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	key_col := triage_internal.check_columns(tbl, input_column, output_column, policy, provenance_column);
	IF batch_size IS NULL OR batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- escalated answers are written back only into attached tables
	PERFORM triage_internal.check_attachment(policy, tbl, key_col, input_column, output_column, provenance_column);
	SELECT coalesce(p.model, p.extractor), p.model IS NULL INTO model, extraction
	  FROM triage.policies p WHERE p.name = process_table_start.policy;
	EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL',
				   tbl, output_column, input_column) INTO total;
	PERFORM triage_internal.record_progress(tbl, policy, started, total, 0, 0, false);
	RETURN jsonb_build_object('tbl', tbl::oid, 'key_col', key_col, 'input_column', input_column,
							  'output_column', output_column, 'provenance_column', provenance_column,
							  'policy', policy, 'model', model, 'extraction', extraction,
							  'batch_size', batch_size, 'total', total, 'started', started,
							  'last_key', NULL, 'done', 0, 'escalated', 0);
END;
$$;
COMMENT ON FUNCTION triage_internal.process_table_start(regclass, name, name, text, integer, name) IS
	'process_table''s checks and progress row; returns its state.';

-- Rows still without an output, in key order: a cancelled run resumes where it
-- stopped, since every committed batch has its outputs written.  Returns the
-- state for the next batch, or NULL once no row is left.
CREATE FUNCTION triage_internal.process_table_batch(state jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp
	-- keys go into the queue as text: in the settings the row trigger uses too
	SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET extra_float_digits = 3 AS $$
DECLARE
	tbl regclass := (state->>'tbl')::oid::regclass;
	key_col name := state->>'key_col';
	input_column name := state->>'input_column';
	output_column name := state->>'output_column';
	provenance_column name := state->>'provenance_column';
	policy text := state->>'policy';
	model text := state->>'model';
	last_key text := state->>'last_key';
	started timestamptz := (state->>'started')::timestamptz;
	n_done bigint;
	n_escalated bigint;
	r record;
BEGIN
	EXECUTE triage_internal.route_rows_sql(tbl, key_col, input_column, output_column, provenance_column,
		rows_sql => format('SELECT * FROM %s WHERE %I IS NULL AND %I IS NOT NULL %s ORDER BY %I LIMIT %s',
			   tbl, output_column, input_column,
			   CASE WHEN last_key IS NULL THEN ''
					ELSE format('AND %I > %L', key_col, last_key) END,
			   key_col, (state->>'batch_size')::integer),
		extraction => (state->>'extraction')::boolean)
	   INTO r USING policy, tbl, key_col, input_column, output_column, provenance_column,
					model, triage_internal.deployed_version(model);
	PERFORM triage_internal.count_routed(policy, r.routed, r.escalated);
	n_done := (state->>'done')::bigint + r.routed;
	n_escalated := (state->>'escalated')::bigint + r.escalated;
	PERFORM triage_internal.record_progress(tbl, policy, started, (state->>'total')::bigint, n_done, n_escalated,
								   r.routed = 0);
	IF r.routed = 0 THEN
		PERFORM triage.compact_counters();
		RETURN NULL;
	END IF;
	RAISE NOTICE 'process_table %: % of % rows, % escalated, % rows/s', tbl, n_done, state->>'total',
		n_escalated, round(n_done / greatest(extract(epoch FROM clock_timestamp() - started), 0.001));
	RETURN state || jsonb_build_object('last_key', r.last_key, 'done', n_done, 'escalated', n_escalated);
END;
$$;
COMMENT ON FUNCTION triage_internal.process_table_batch(jsonb) IS
	'Routes process_table''s next batch; returns the next state, or NULL when no row is left.';

-- Only commits between batches: the work is in the pinned functions above,
-- and this body names nothing but them
CREATE PROCEDURE triage.process_table(tbl regclass, input_column name, output_column name,
									  policy text, batch_size integer DEFAULT 10000,
									  provenance_column name DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
	state pg_catalog.jsonb;		-- qualified: this body runs under the caller's search_path
BEGIN
	state := triage_internal.process_table_start(tbl, input_column, output_column, policy, batch_size,
										provenance_column);
	COMMIT;
	LOOP
		state := triage_internal.process_table_batch(state);
		COMMIT;
		EXIT WHEN state IS NULL;
	END LOOP;
END;
$$;
COMMENT ON PROCEDURE triage.process_table(regclass, name, name, text, integer, name) IS
	'Routes the rows of tbl whose output is NULL, batch_size at a time, committing each batch; resumable after a cancel; progress in triage.process_progress.';

CREATE VIEW triage.escalation_stats AS
SELECT p.name AS policy,
	   coalesce(c.seen, 0) AS rows_seen,
	   coalesce(c.seen, 0) - coalesce(c.escalated, 0) AS rows_kept,
	   count(e.id) AS escalated,
	   count(e.id) FILTER (WHERE e.status = 'pending') AS pending,
	   count(e.id) FILTER (WHERE e.status = 'claimed') AS claimed,
	   count(e.id) FILTER (WHERE e.status = 'done') AS answered,
	   count(e.id) FILTER (WHERE e.status = 'dead') AS dead,
	   coalesce(sum(e.attempts), 0) AS failed_attempts,
	   coalesce(sum((e.usage->>'total_tokens')::bigint), 0) AS tokens,
	   -- answers of the Batch API at its prices (triage_internal.llm_prices); the
	   -- tokens summed first and priced once (what llm_cost gives per row, exactly:
	   -- numeric), since a function call per row took 65 s on 1,000,000 rows
	   round(coalesce(sum((e.usage->>'prompt_tokens')::numeric) FILTER (WHERE e.batch IS NULL), 0) / 1000 * ip.prompt
			 + coalesce(sum((e.usage->>'completion_tokens')::numeric) FILTER (WHERE e.batch IS NULL), 0) / 1000 * ip.completion
			 + coalesce(sum((e.usage->>'prompt_tokens')::numeric) FILTER (WHERE e.batch IS NOT NULL), 0) / 1000 * bp.prompt
			 + coalesce(sum((e.usage->>'completion_tokens')::numeric) FILTER (WHERE e.batch IS NOT NULL), 0) / 1000 * bp.completion,
			 4) AS llm_cost,
	   -- what sending every routed row to the large model would have cost, at the
	   -- tokens per answered escalation seen so far
	   round(greatest(coalesce(c.seen, 0), count(e.id))
			 * (coalesce(avg((e.usage->>'prompt_tokens')::numeric), 0) / 1000 * coalesce(nullif(current_setting('triage.llm_prompt_price_per_1k', true), '')::numeric, 0)
				+ coalesce(avg((e.usage->>'completion_tokens')::numeric), 0) / 1000 * coalesce(nullif(current_setting('triage.llm_completion_price_per_1k', true), '')::numeric, 0)), 4)
		 AS all_llm_cost,
	   count(e.id) FILTER (WHERE e.status = 'done' AND e.batch IS NOT NULL) AS batch_answered,
	   count(e.id) FILTER (WHERE e.outcome = 'over_budget') AS over_budget,
	   coalesce(bool_or(b.over), false) AS budget_reached
  FROM triage.policies p
  LEFT JOIN triage_internal.budgets() b ON b.policy = p.name
  LEFT JOIN (SELECT policy, sum(seen) AS seen, sum(escalated) AS escalated
			   FROM triage.policy_counters GROUP BY policy) c ON c.policy = p.name
  LEFT JOIN triage.escalations e ON e.policy = p.name
 CROSS JOIN triage_internal.llm_prices(false) ip
 CROSS JOIN triage_internal.llm_prices(true) bp
 GROUP BY p.name, c.seen, c.escalated, ip.prompt, ip.completion, bp.prompt, bp.completion;
COMMENT ON VIEW triage.escalation_stats IS
	'Per policy: rows seen and kept, escalations by state (exact counts), tokens, the large model''s cost (answers of the Batch API at the batch prices) and what sending every row would have cost (prices: triage.llm_prompt_price_per_1k, triage.llm_completion_price_per_1k), answers through the Batch API, rows kept with the small model''s answer over budget, and whether the budget is reached now.';

