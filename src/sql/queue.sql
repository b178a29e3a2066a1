-- pg_triage: the escalation queue and the worker's functions
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Escalation queue --------------------------------------------------------------

CREATE TABLE triage.escalations (
	id bigserial PRIMARY KEY,
	policy text NOT NULL REFERENCES triage.policies (name) ON UPDATE CASCADE,
	source regclass,
	source_key jsonb,
	input_column name,
	output_column name,
	provenance_column name,
	input text NOT NULL,
	small_answer jsonb,
	reason text,
	status text NOT NULL DEFAULT 'pending'
		CHECK (status IN ('pending', 'claimed', 'done', 'dead')),
	attempts integer NOT NULL DEFAULT 0,
	visible_at timestamptz NOT NULL DEFAULT now(),
	claimed_by text,
	claimed_role regrole,		-- who holds the lease: only it may complete, fail or release
	queued_by regrole,			-- whose rights on the source were checked when queueing
	answer jsonb,
	usage jsonb,
	error text,
	outcome text,
	created_at timestamptz NOT NULL DEFAULT now(),
	done_at timestamptz,
	batch bigint				-- the triage.batches row whose answer it took (batch prices)
);
CREATE INDEX escalations_claimable ON triage.escalations (visible_at, id)
	WHERE status IN ('pending', 'claimed');
CREATE INDEX escalations_open_source ON triage.escalations (source, source_key)
	WHERE status IN ('pending', 'claimed');
COMMENT ON TABLE triage.escalations IS
	'The queue of rows for the large model: pending, claimed (leased until visible_at), done or dead.';
SELECT pg_catalog.pg_extension_config_dump('triage.escalations', '');
SELECT pg_catalog.pg_extension_config_dump('triage.escalations_id_seq', '');

CREATE TABLE triage.examples (
	id bigserial PRIMARY KEY,
	model text NOT NULL,
	input text NOT NULL,
	label text,
	fields jsonb,
	source text NOT NULL CHECK (source IN ('human', 'llm', 'import')),
	escalation bigint REFERENCES triage.escalations (id) ON DELETE SET NULL,
	source_table regclass,		-- the attached table an answered escalation came from
	created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE triage.examples IS 'Training data, including the large model''s answers (source llm).';
SELECT pg_catalog.pg_extension_config_dump('triage.examples', '');
SELECT pg_catalog.pg_extension_config_dump('triage.examples_id_seq', '');

-- Labeled rows people checked, as training examples of a model: (input,
-- label) rows for a classifier, (input, fields jsonb) rows for an extractor
CREATE FUNCTION triage_internal.add_examples(model text, query text, source text,
	query_search_path text) RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	kind text;
	n bigint;
BEGIN
	SELECT m.kind INTO kind FROM triage.models m WHERE m.name = add_examples.model ORDER BY m.version DESC LIMIT 1;
	IF kind IS NULL THEN
		RAISE EXCEPTION 'model "%" does not exist', model
			USING ERRCODE = 'undefined_object', HINT = 'Train or import it first: examples belong to a model.';
	END IF;
	IF source NOT IN ('human', 'llm', 'import') THEN
		RAISE EXCEPTION 'source must be human, llm or import, not "%"', source
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	query := triage_internal.user_rows_sql(query, query_search_path, CASE WHEN kind = 'crf' THEN '{text,jsonb}' ELSE '{text,text}' END::text[]);
	IF kind = 'crf' THEN
		EXECUTE format('INSERT INTO triage.examples (model, input, fields, source)
						SELECT $1, q.input::text, q.fields::jsonb, $2 FROM (%s) AS q(input, fields)
						 WHERE q.input IS NOT NULL AND jsonb_typeof(q.fields::jsonb) = ''object''', query)
		  USING model, source;
	ELSE
		EXECUTE format('INSERT INTO triage.examples (model, input, label, source)
						SELECT $1, q.input::text, q.label::text, $2 FROM (%s) AS q(input, label)
						 WHERE q.input IS NOT NULL AND q.label IS NOT NULL', query)
		  USING model, source;
	END IF;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END;
$$;
COMMENT ON FUNCTION triage_internal.add_examples(text, text, text, text) IS
	'add_examples with the search_path to run the query text under.';

-- As the caller, with the caller's search_path for the query text: the
-- function above runs with search_path pinned
CREATE FUNCTION triage.add_examples(model text, query text, source text DEFAULT 'human') RETURNS bigint
LANGUAGE sql VOLATILE STRICT AS $$
	SELECT triage_internal.add_examples(model, query, source, pg_catalog.current_setting('search_path'))
$$;

COMMENT ON FUNCTION triage.add_examples(text, text, text) IS
	'Adds the labeled rows of query as training examples of model (source human by default): (input, label) for a classifier, (input, fields) for an extractor; distill() trains on them. Returns how many.';

CREATE TABLE triage.workers (
	name text PRIMARY KEY,
	host text,
	pid integer,
	started_at timestamptz NOT NULL DEFAULT now(),
	last_seen timestamptz NOT NULL DEFAULT now(),
	jobs_done bigint NOT NULL DEFAULT 0,
	jobs_failed bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE triage.workers IS 'triage-worker processes and their last heartbeat.';

-- The JSON schema of an answer under a policy, for response_format
-- json_schema (strict): one of the labels, or every field as a string or
-- null (strict mode wants every property required; null is "not found")
CREATE FUNCTION triage_internal.answer_schema(policy triage.policies) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN policy.model IS NULL THEN
		jsonb_build_object('name', 'triage_fields', 'strict', true, 'schema', jsonb_build_object(
			'type', 'object',
			'properties', jsonb_build_object('fields', jsonb_build_object(
				'type', 'object',
				'properties', (SELECT jsonb_object_agg(f, jsonb_build_object('type', jsonb_build_array('string', 'null')))
								 FROM unnest(policy.fields) AS f),
				'required', to_jsonb(policy.fields),
				'additionalProperties', false)),
			'required', jsonb_build_array('fields'),
			'additionalProperties', false))
	ELSE
		jsonb_build_object('name', 'triage_label', 'strict', true, 'schema', jsonb_build_object(
			'type', 'object',
			'properties', jsonb_build_object('label', jsonb_build_object('type', 'string', 'enum', to_jsonb(policy.labels))),
			'required', jsonb_build_array('label'),
			'additionalProperties', false))
	END
$$;
COMMENT ON FUNCTION triage_internal.answer_schema(triage.policies) IS
	'The json_schema response format of a policy''s answers: {"label": one of its labels}, or {"fields": {every field: string or null}}, strict.';

-- The chat-completions request for one row, from the policy's prompt.
-- response_format: json_schema (an endpoint that constrains the answer to
-- the policy's schema), json_object (JSON mode only) or none
CREATE FUNCTION triage_internal.build_request(policy triage.policies, input text,
											  response_format text DEFAULT 'json_schema') RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT jsonb_build_object(
		'messages', jsonb_build_array(
			jsonb_build_object('role', 'system', 'content',
				coalesce(policy.prompt->>'system', 'You label business text. Answer with JSON only.')),
			jsonb_build_object('role', 'user', 'content',
				CASE WHEN policy.model IS NULL THEN
					coalesce(policy.prompt->>'instructions', 'Find these fields in the input, copied as they are written; leave out the ones it does not have.')
					|| E'\nFields: ' || array_to_string(policy.fields, ', ')
					|| E'\nAnswer with JSON: {"fields": {"<field>": "<value>", ...}}'
				ELSE
					coalesce(policy.prompt->>'instructions', 'Choose the one label that fits the input.')
					|| E'\nLabels: ' || array_to_string(policy.labels, ', ')
					|| E'\nAnswer with JSON: {"label": "<one of the labels>"}'
				END
				|| E'\nInput:\n' || input)),
		'temperature', 0)
		|| CASE response_format
			WHEN 'json_schema' THEN jsonb_build_object('response_format', jsonb_build_object(
				'type', 'json_schema', 'json_schema', triage_internal.answer_schema(policy)))
			WHEN 'json_object' THEN jsonb_build_object('response_format', jsonb_build_object('type', 'json_object'))
			ELSE '{}'::jsonb END
$$;
COMMENT ON FUNCTION triage_internal.build_request(triage.policies, text, text) IS
	'The chat-completions request body (without "model") that asks the large model to label input, with a response_format of json_schema (default), json_object or none.';

CREATE FUNCTION triage.enqueue(policy text, input text, small_answer jsonb DEFAULT NULL,
							   source regclass DEFAULT NULL, source_key jsonb DEFAULT NULL,
							   reason text DEFAULT NULL, input_column name DEFAULT NULL,
							   output_column name DEFAULT NULL, provenance_column name DEFAULT NULL)
	RETURNS bigint
	AS 'MODULE_PATHNAME', 'triage_enqueue' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION triage.enqueue(text, text, jsonb, regclass, jsonb, text, name, name, name) IS
	'Queues a row for the large model under a policy the caller may use and wakes listening workers (the notification carries the id only). With a source, the table must be attached to the policy with these columns, and the caller needs SELECT on its key and input and UPDATE on its output.';

CREATE FUNCTION triage_internal.queue_limits(OUT max_input_bytes bigint, OUT max_retry_after interval)
	AS 'MODULE_PATHNAME', 'triage_queue_limits' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION triage_internal.queue_limits() IS
	'The settings triage.max_input_bytes and triage.max_retry_after, read where the library is loaded (a worker''s session may not have loaded it).';

-- The role that called: inside a SECURITY DEFINER function current_user is
-- the definer, but the role setting is still the caller's (SET ROLE), else
-- the session's
CREATE FUNCTION triage_internal.caller_role() RETURNS regrole
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT r.oid::regrole FROM pg_catalog.pg_roles r
	 WHERE r.rolname = CASE WHEN pg_catalog.current_setting('role') = 'none' THEN SESSION_USER
							ELSE pg_catalog.current_setting('role') END
$$;
COMMENT ON FUNCTION triage_internal.caller_role() IS
	'The role calling a queue function (the SET ROLE role, else the session user), which owns the leases it claims.';

-- Roles are cluster-wide: a login in triage_worker could reach the queue of
-- every database with pg_triage.  A database's queue serves only the roles
-- registered here, in that database.
CREATE TABLE triage.worker_roles (
	role regrole PRIMARY KEY,
	allowed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE triage.worker_roles IS
	'The roles that may claim this database''s escalations (triage.allow_worker()).';
SELECT pg_catalog.pg_extension_config_dump('triage.worker_roles', '');

CREATE FUNCTION triage.allow_worker(role regrole) RETURNS void
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
	INSERT INTO triage.worker_roles (role) VALUES (role) ON CONFLICT DO NOTHING
$$;
COMMENT ON FUNCTION triage.allow_worker(regrole) IS
	'Lets role (a login in triage_worker) claim, complete and fail this database''s escalations.';

CREATE FUNCTION triage.disallow_worker(role regrole) RETURNS void
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
	DELETE FROM triage.worker_roles w WHERE w.role = disallow_worker.role
$$;
COMMENT ON FUNCTION triage.disallow_worker(regrole) IS
	'Stops role from claiming this database''s escalations (leases it holds run out as usual).';

-- What claim() and claim_batch() share: leases up to n claimable rows to
-- the calling role.  for_batch: only rows of policies with rules latency
-- "batch" (else only the others', and batch rows that waited max_wait);
-- max_bytes: stop before the requests (each octet_length + line_overhead)
-- would pass it.  Policies over their budget are skipped, or their rows
-- kept with the small model's answer (triage_internal.budgets()).
CREATE FUNCTION triage_internal.claim_rows(worker text, n integer, visibility interval, policy text,
										   response_format text, for_batch boolean,
										   max_bytes bigint DEFAULT NULL, line_overhead integer DEFAULT 0)
	RETURNS TABLE (id bigint, request jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	caller regrole := triage_internal.caller_role();
	max_input bigint := (triage_internal.queue_limits()).max_input_bytes;
	picked record;
	built jsonb;
	total bigint := 0;
	line bigint;
	waiting text[];
	keeping text[];
	returned integer := 0;
	closed integer;
BEGIN
	IF worker IS NULL OR n IS NULL OR n < 1 OR n > 10000 OR visibility IS NULL OR visibility <= '0'::interval THEN
		RAISE EXCEPTION 'claim needs a worker name, n between 1 and 10000 and a positive visibility'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF response_format IS NULL OR response_format NOT IN ('json_schema', 'json_object', 'none') THEN
		RAISE EXCEPTION 'response_format must be json_schema, json_object or none, not %', coalesce(response_format, 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT FROM triage.worker_roles w WHERE pg_catalog.pg_has_role(caller, w.role, 'USAGE'))
	   AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = caller) THEN
		RAISE EXCEPTION 'role "%" may not claim escalations in database "%"', caller, pg_catalog.current_database()
			USING ERRCODE = 'insufficient_privilege',
				HINT = pg_catalog.format('An admin of this database can allow it: SELECT triage.allow_worker(%L);', caller);
	END IF;
	SELECT pg_catalog.array_agg(b.policy) FILTER (WHERE b.when_over = 'wait'),
		   pg_catalog.array_agg(b.policy) FILTER (WHERE b.when_over = 'keep_small')
	  INTO waiting, keeping
	  FROM triage_internal.budgets() b WHERE b.over;
	-- Rows it closes (dead-lettered, or kept over_budget) do not count: it
	-- picks again until n rows are leased or a round closes none, so that a
	-- claim that finds only such rows does not look like an empty queue
	<<rounds>>
	LOOP
		closed := 0;
		FOR picked IN
			SELECT e.id, e.status, e.attempts, e.policy, p.max_attempts, pg_catalog.octet_length(e.input) AS bytes
			  FROM triage.escalations e JOIN triage.policies p ON p.name = e.policy
			 WHERE e.status IN ('pending', 'claimed') AND e.visible_at <= now()
			   AND (claim_rows.policy IS NULL OR e.policy = claim_rows.policy)
			   AND CASE WHEN for_batch THEN p.rules->>'latency' = 'batch'
						ELSE p.rules->>'latency' IS DISTINCT FROM 'batch'
							 OR e.created_at <= now() - coalesce((p.rules->>'max_wait')::interval, '24 hours') END
			   AND NOT e.policy = ANY (coalesce(waiting, '{}'))
			 ORDER BY e.visible_at, e.id
			 LIMIT n - returned
			   FOR UPDATE OF e SKIP LOCKED
		LOOP
			-- A lease that ran out (a worker died) counts as an attempt, so that a
			-- row that kills workers is dead-lettered instead of looping forever;
			-- so is a row too large to send
			IF (picked.status = 'claimed' AND picked.attempts + 1 >= picked.max_attempts)
			   OR picked.bytes > max_input THEN
				UPDATE triage.escalations e
				   SET status = 'dead', attempts = e.attempts + (e.status = 'claimed')::int, done_at = now(),
					   claimed_role = NULL,
					   error = CASE WHEN picked.bytes > max_input
									THEN pg_catalog.format('input of %s bytes is over triage.max_input_bytes', picked.bytes)
									ELSE 'the lease ran out on the last attempt allowed (the worker died or timed out)' END
				 WHERE e.id = picked.id;
				closed := closed + 1;
				CONTINUE;
			END IF;
			-- over budget with when_over "keep_small": the small model's answer
			-- (already in the source row) stands, and the row is not asked
			IF picked.policy = ANY (coalesce(keeping, '{}')) THEN
				UPDATE triage.escalations e
				   SET status = 'done', outcome = 'over_budget', done_at = now(), claimed_role = NULL,
					   error = 'over the policy''s budget: the small model''s answer is kept'
				 WHERE e.id = picked.id;
				closed := closed + 1;
				CONTINUE;
			END IF;
			-- one row that cannot be turned into a request is dead-lettered, not
			-- the whole claim failed
			BEGIN
				-- built now, so that a prompt edited meanwhile applies to rows still queued
				SELECT triage_internal.build_request(p, e.input, response_format) INTO built
				  FROM triage.escalations e JOIN triage.policies p ON p.name = e.policy
				 WHERE e.id = picked.id;
				line := pg_catalog.octet_length(built::text) + line_overhead;
				IF max_bytes IS NOT NULL AND total + line > max_bytes THEN
					-- a row too large for any file is left to the interactive
					-- workers (after the policy's max_wait); else the file is full
					CONTINUE WHEN total = 0;
					EXIT rounds;
				END IF;
				total := total + line;
				UPDATE triage.escalations e
				   SET status = 'claimed', claimed_by = worker, claimed_role = caller,
					   visible_at = pg_catalog.clock_timestamp() + visibility,
					   attempts = e.attempts + (e.status = 'claimed')::int
				 WHERE e.id = picked.id;
				returned := returned + 1;
				id := picked.id;
				request := built;
				RETURN NEXT;
			EXCEPTION WHEN OTHERS THEN
				UPDATE triage.escalations e
				   SET status = 'dead', done_at = now(), claimed_role = NULL,
					   error = pg_catalog.left('could not build the request: ' || SQLERRM, 2000)
				 WHERE e.id = picked.id;
				closed := closed + 1;
			END;
		END LOOP;
		EXIT WHEN closed = 0 OR returned >= n;
	END LOOP;
END;
$$;
COMMENT ON FUNCTION triage_internal.claim_rows(text, integer, interval, text, text, boolean, bigint, integer) IS
	'What claim and claim_batch run: leases up to n claimable rows (of batch policies or of the others) to the calling role, within max_bytes of requests, skipping policies over budget; returns each one''s request.';

CREATE FUNCTION triage.claim(worker text, n integer, visibility interval DEFAULT '5 minutes',
							 policy text DEFAULT NULL, response_format text DEFAULT 'json_schema')
	RETURNS TABLE (id bigint, request jsonb)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
	SELECT * FROM triage_internal.claim_rows(worker, n, visibility, policy, response_format, false)
$$;
COMMENT ON FUNCTION triage.claim(text, integer, interval, text, text) IS
	'Leases up to n escalations to the calling role (which must be allowed with triage.allow_worker()) until now() + visibility (FOR UPDATE SKIP LOCKED); returns each one''s request body, with a response_format of json_schema (default: the policy''s labels or fields, strict), json_object or none. Rows of batch policies (rules latency "batch") are left to claim_batch until they waited max_wait; policies over their budget are skipped. Expired leases count as attempts; a row at its last attempt, or too large, is dead-lettered.';

-- The label in a chat-completions reply: {"label": ...} content, or a bare label
CREATE FUNCTION triage_internal.answer_label(response jsonb, labels text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	content text := response #>> '{choices,0,message,content}';
	parsed jsonb;
	label text;
BEGIN
	IF content IS NULL THEN
		RETURN NULL;
	END IF;
	BEGIN
		parsed := content::jsonb;
	EXCEPTION WHEN others THEN
		parsed := NULL;
	END;
	IF jsonb_typeof(parsed) = 'object' THEN
		label := parsed->>'label';
	ELSIF jsonb_typeof(parsed) = 'string' THEN
		label := parsed #>> '{}';
	ELSE
		label := btrim(content, E' \t\r\n."''');
	END IF;
	IF label = ANY (labels) THEN
		RETURN label;
	END IF;
	RETURN NULL;
END;
$$;

-- The escalation id, locked, if the calling role holds its lease and the
-- lease still holds; NULL otherwise (complete and fail then say "stale")
CREATE FUNCTION triage_internal.leased_escalation(id bigint) RETURNS triage.escalations
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	e triage.escalations;
BEGIN
	SELECT * INTO e FROM triage.escalations x WHERE x.id = leased_escalation.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'escalation % does not exist', id USING ERRCODE = 'undefined_object';
	END IF;
	IF e.status <> 'claimed' OR e.claimed_role IS DISTINCT FROM triage_internal.caller_role()
	   OR e.visible_at <= clock_timestamp() THEN
		RETURN NULL;
	END IF;
	RETURN e;
END;
$$;
COMMENT ON FUNCTION triage_internal.leased_escalation(bigint) IS
	'An escalation, locked, if the calling role holds its lease and it still holds; else NULL.';

CREATE FUNCTION triage.fail(id bigint, error text, retry_after interval DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	e triage.escalations;
	max_attempts integer;
	backoff interval;
BEGIN
	e := triage_internal.leased_escalation(id);
	IF e IS NULL THEN
		RETURN 'stale';
	END IF;
	SELECT p.max_attempts INTO max_attempts FROM triage.policies p WHERE p.name = e.policy;
	-- exponential backoff with jitter, unless the endpoint said when (within
	-- 0 and triage.max_retry_after: a reply cannot park a row for years)
	backoff := least(greatest(coalesce(retry_after,
							pg_catalog.make_interval(secs => least(300, 2 ^ e.attempts) * (0.5 + pg_catalog.random()))),
						'0'::interval),
						(triage_internal.queue_limits()).max_retry_after);
	UPDATE triage.escalations x
	   SET attempts = x.attempts + 1,
		   error = pg_catalog.left(fail.error, 2000),
		   status = CASE WHEN x.attempts + 1 >= max_attempts THEN 'dead' ELSE 'pending' END,
		   visible_at = pg_catalog.clock_timestamp() + backoff,
		   claimed_role = NULL,
		   done_at = CASE WHEN x.attempts + 1 >= max_attempts THEN now() END
	 WHERE x.id = fail.id;
	RETURN CASE WHEN e.attempts + 1 >= max_attempts THEN 'dead' ELSE 'retry' END;
END;
$$;
COMMENT ON FUNCTION triage.fail(bigint, text, interval) IS
	'Records a failed attempt of an escalation leased to the caller: retried after retry_after (clamped to triage.max_retry_after) or an exponential backoff, dead-lettered after the policy''s max_attempts. Returns retry, dead, or stale (not the caller''s lease, or it ran out).';

CREATE FUNCTION triage.release(id bigint) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
	UPDATE triage.escalations
	   SET status = 'pending', visible_at = now(), claimed_by = NULL, claimed_role = NULL
	 WHERE escalations.id = release.id AND status = 'claimed'
	   AND claimed_role = triage_internal.caller_role() AND visible_at > pg_catalog.clock_timestamp()
$$;
COMMENT ON FUNCTION triage.release(bigint) IS
	'Gives an escalation leased to the caller back without counting an attempt.';

-- The fields of a chat-completions reply: {"fields": {"field": "value"}}
-- with only allowed field names and string (or null) values; else NULL
CREATE FUNCTION triage_internal.answer_fields(response jsonb, allowed text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	content text := response #>> '{choices,0,message,content}';
	parsed jsonb;
	result jsonb := '{}';
	k text;
	v jsonb;
BEGIN
	IF content IS NULL THEN
		RETURN NULL;
	END IF;
	BEGIN
		parsed := content::jsonb;
	EXCEPTION WHEN others THEN
		RETURN NULL;
	END;
	IF jsonb_typeof(parsed) <> 'object' OR jsonb_typeof(parsed->'fields') IS DISTINCT FROM 'object' THEN
		RETURN NULL;
	END IF;
	FOR k, v IN SELECT * FROM jsonb_each(parsed->'fields') LOOP
		IF NOT (k = ANY (allowed)) OR jsonb_typeof(v) NOT IN ('string', 'null') THEN
			RETURN NULL;
		END IF;
		IF jsonb_typeof(v) = 'string' AND v #>> '{}' <> '' THEN
			result := result || jsonb_build_object(k, v);
		END IF;
	END LOOP;
	RETURN result;
END;
$$;
COMMENT ON FUNCTION triage_internal.answer_fields(jsonb, text[]) IS
	'The fields a chat-completions reply gives ({"fields": {...}}: allowed names, string values), without empty ones; NULL if the reply is anything else.';

COMMENT ON FUNCTION triage_internal.answer_label(jsonb, text[]) IS
	'The label a chat-completions reply gives ({"label": ...} or a bare label), if it is one of labels; else NULL.';

-- What a large model's reply says it used, kept only as whole token counts:
-- triage.escalation_stats sums them for everyone, so one odd reply must not
-- break it
CREATE FUNCTION triage_internal.usage_counts(usage jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT pg_catalog.jsonb_object_agg(u.k, u.v)
	  FROM pg_catalog.jsonb_each(CASE WHEN pg_catalog.jsonb_typeof(usage) = 'object' THEN usage END) AS u(k, v)
	 WHERE u.k IN ('prompt_tokens', 'completion_tokens', 'total_tokens')
	   AND pg_catalog.jsonb_typeof(u.v) = 'number' AND u.v::text ~ '^[0-9]{1,15}$'
$$;
COMMENT ON FUNCTION triage_internal.usage_counts(jsonb) IS
	'The token counts of a reply''s usage object (prompt, completion, total: whole numbers), without anything else.';

CREATE FUNCTION triage_internal.write_answer(id bigint, label text, fields jsonb, provenance jsonb) RETURNS text
	AS 'MODULE_PATHNAME', 'triage_write_answer' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION triage_internal.write_answer(bigint, text, jsonb, jsonb) IS
	'For complete() only: writes an answer into its source row as the table''s owner (restricted), after checking the table is still attached with those columns; returns the outcome.';

CREATE FUNCTION triage.complete(id bigint, response jsonb) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	e triage.escalations;
	p triage.policies;
	label text;
	result_outcome text;
	fields jsonb;
BEGIN
	e := triage_internal.leased_escalation(id);
	IF e IS NULL THEN
		RETURN 'stale';
	END IF;
	SELECT * INTO p FROM triage.policies x WHERE x.name = e.policy;
	IF p.model IS NULL THEN
		-- an extraction policy: the answer is an object of fields
		fields := triage_internal.answer_fields(response, p.fields);
		label := fields::text;
	ELSE
		label := triage_internal.answer_label(response, p.labels);
	END IF;
	IF label IS NULL THEN
		-- a failed attempt; 'dead' when it was the last one allowed
		IF triage.fail(id, 'invalid answer: ' || pg_catalog.left(coalesce(
			response #>> '{choices,0,message,content}', response::text), 500)) = 'dead' THEN
			RETURN 'dead';
		END IF;
		RETURN 'invalid';
	END IF;

	-- Written into the source row (as its owner) only if the row still holds
	-- the escalated input and nobody wrote another answer meanwhile;
	-- otherwise the answer is kept, marked.  A source that is not (or no
	-- longer) an attached table with these columns is refused: the row is
	-- dead-lettered and its answer trains nothing.
	BEGIN
		result_outcome := triage_internal.write_answer(e.id, CASE WHEN fields IS NULL THEN label END, fields,
			CASE WHEN e.provenance_column IS NOT NULL THEN pg_catalog.jsonb_build_object(
				'by', 'llm', 'model', response->>'model',
				'prompt_version', p.prompt->'version', 'escalation', e.id, 'at', now()) END);
	EXCEPTION WHEN invalid_table_definition OR insufficient_privilege THEN
		UPDATE triage.escalations x
		   SET status = 'dead', done_at = now(), outcome = 'refused', claimed_role = NULL,
			   error = pg_catalog.left('answer not written: ' || SQLERRM, 2000)
		 WHERE x.id = complete.id;
		RETURN 'dead';
	END;

	UPDATE triage.escalations x
	   SET status = 'done', done_at = now(), error = NULL, outcome = result_outcome, claimed_role = NULL,
		   answer = pg_catalog.jsonb_build_object(CASE WHEN fields IS NULL THEN 'label' ELSE 'fields' END,
									   coalesce(fields, pg_catalog.to_jsonb(label)), 'by', 'llm',
									   'model', response->>'model',
									   'prompt_version', p.prompt->'version', 'at', now()),
		   usage = triage_internal.usage_counts(response->'usage')
	 WHERE x.id = complete.id;
	IF fields IS NULL THEN
		INSERT INTO triage.examples (model, input, label, source, escalation, source_table)
		VALUES (p.model, e.input, label, 'llm', e.id, e.source);
	ELSE
		INSERT INTO triage.examples (model, input, fields, source, escalation, source_table)
		VALUES (p.extractor, e.input, fields, 'llm', e.id, e.source);
	END IF;
	-- an audited row: does the promise of the policy's calibration hold?
	-- (src/sql/health.sql)
	IF fields IS NULL AND e.reason LIKE 'audit sample%' THEN
		PERFORM triage_internal.record_audit(e.policy, e.small_answer, label);
	END IF;
	UPDATE triage.workers w SET jobs_done = w.jobs_done + 1 WHERE w.name = e.claimed_by;
	RETURN 'done';
END;
$$;
COMMENT ON FUNCTION triage.complete(bigint, jsonb) IS
	'Accepts the chat-completions reply of an escalation leased to the caller: validates the label, writes it to the source row (as the table''s owner) if that row is unchanged, records a training example; returns done, invalid (counted as a failed attempt, retried), dead (that failure was the last attempt, or the source is not an attached table) or stale (not the caller''s lease, or it ran out).';

CREATE FUNCTION triage.heartbeat(worker text, host text, pid integer, jobs_done bigint,
								 jobs_failed bigint) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
	INSERT INTO triage.workers AS w (name, host, pid, jobs_done, jobs_failed)
	VALUES (worker, host, pid, coalesce(jobs_done, 0), coalesce(jobs_failed, 0))
	ON CONFLICT (name) DO UPDATE
	   SET host = excluded.host, pid = excluded.pid, last_seen = now(),
		   jobs_done = greatest(w.jobs_done, excluded.jobs_done),
		   jobs_failed = excluded.jobs_failed,
		   started_at = CASE WHEN w.pid IS DISTINCT FROM excluded.pid THEN now() ELSE w.started_at END
$$;
COMMENT ON FUNCTION triage.heartbeat(text, text, integer, bigint, bigint) IS
	'A worker says it is alive, with its counters.';

-- Roles -------------------------------------------------------------------------

-- The worker role needs no table rights: claim, complete, fail, release and
-- heartbeat run as the extension owner (SECURITY DEFINER, pinned search_path).
ALTER FUNCTION triage.claim(text, integer, interval, text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.complete(bigint, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.fail(bigint, text, interval) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.release(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.heartbeat(text, text, integer, bigint, bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION triage_internal.write_answer(bigint, text, jsonb, jsonb), triage_internal.leased_escalation(bigint),
	triage_internal.claim_rows(text, integer, interval, text, text, boolean, bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION triage.claim(text, integer, interval, text, text), triage.complete(bigint, jsonb),
	triage.fail(bigint, text, interval), triage.release(bigint),
	triage.heartbeat(text, text, integer, bigint, bigint) FROM PUBLIC;
