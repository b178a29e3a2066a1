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
	answer jsonb,
	usage jsonb,
	error text,
	outcome text,
	created_at timestamptz NOT NULL DEFAULT now(),
	done_at timestamptz
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
	created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE triage.examples IS 'Training data, including the large model''s answers (source llm).';
SELECT pg_catalog.pg_extension_config_dump('triage.examples', '');
SELECT pg_catalog.pg_extension_config_dump('triage.examples_id_seq', '');

-- Labeled rows people checked, as training examples of a model: (input,
-- label) rows for a classifier, (input, fields jsonb) rows for an extractor
CREATE FUNCTION triage.add_examples(model text, query text, source text DEFAULT 'human') RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT AS $$
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

-- The chat-completions request for one row, from the policy's prompt
CREATE FUNCTION triage.build_request(policy triage.policies, input text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
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
		'temperature', 0,
		'response_format', jsonb_build_object('type', 'json_object'))
$$;
COMMENT ON FUNCTION triage.build_request(triage.policies, text) IS
	'The chat-completions request body (without "model") that asks the large model to label input.';

CREATE FUNCTION triage.enqueue(policy text, input text, small_answer jsonb DEFAULT NULL,
							   source regclass DEFAULT NULL, source_key jsonb DEFAULT NULL,
							   reason text DEFAULT NULL, input_column name DEFAULT NULL,
							   output_column name DEFAULT NULL, provenance_column name DEFAULT NULL)
	RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	new_id bigint;
BEGIN
	IF NOT EXISTS (SELECT FROM triage.policies p WHERE p.name = enqueue.policy) THEN
		RAISE EXCEPTION 'policy "%" does not exist', policy
			USING ERRCODE = 'undefined_object',
				HINT = 'Create one with triage.create_policy().';
	END IF;
	IF input IS NULL THEN
		RAISE EXCEPTION 'cannot escalate a NULL input' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF source IS NOT NULL AND (source_key IS NULL OR input_column IS NULL OR output_column IS NULL) THEN
		RAISE EXCEPTION 'an escalation with a source table needs its key, input column and output column'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO triage.escalations (policy, source, source_key, input_column, output_column,
									provenance_column, input, small_answer, reason)
	VALUES (policy, source, source_key, input_column, output_column,
			provenance_column, input, small_answer, reason)
	RETURNING id INTO new_id;
	PERFORM pg_catalog.pg_notify('triage_escalations', policy);
	RETURN new_id;
END;
$$;
COMMENT ON FUNCTION triage.enqueue(text, text, jsonb, regclass, jsonb, text, name, name, name) IS
	'Queues a row for the large model under a policy and notifies listening workers.';

CREATE FUNCTION triage.claim(worker text, n integer, visibility interval DEFAULT '5 minutes',
							 policy text DEFAULT NULL)
	RETURNS TABLE (id bigint, request jsonb)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
	IF worker IS NULL OR n IS NULL OR n < 1 OR visibility IS NULL OR visibility <= '0'::interval THEN
		RAISE EXCEPTION 'claim needs a worker name, n >= 1 and a positive visibility'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- A lease that ran out (a worker died) counts as an attempt, so that a
	-- row that kills workers is dead-lettered instead of looping forever.
	RETURN QUERY
	WITH picked AS (
		SELECT e.id FROM triage.escalations e
		 WHERE e.status IN ('pending', 'claimed') AND e.visible_at <= now()
		   AND (claim.policy IS NULL OR e.policy = claim.policy)
		 ORDER BY e.visible_at, e.id
		 LIMIT n
		   FOR UPDATE SKIP LOCKED)
	UPDATE triage.escalations e
	   SET status = 'claimed', claimed_by = worker,
		   visible_at = clock_timestamp() + visibility,
		   attempts = e.attempts + (e.status = 'claimed')::int
	  FROM picked, triage.policies p
	 WHERE e.id = picked.id AND p.name = e.policy
	-- built now, so that a prompt edited meanwhile applies to rows still queued
	RETURNING e.id, triage.build_request(p, e.input);
END;
$$;
COMMENT ON FUNCTION triage.claim(text, integer, interval, text) IS
	'Leases up to n escalations to a worker until now() + visibility (FOR UPDATE SKIP LOCKED); returns each one''s request body.';

-- The label in a chat-completions reply: {"label": ...} content, or a bare label
CREATE FUNCTION triage.answer_label(response jsonb, labels text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
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

CREATE FUNCTION triage.fail(id bigint, error text, retry_after interval DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	e triage.escalations;
	max_attempts integer;
	backoff interval;
BEGIN
	SELECT * INTO e FROM triage.escalations x WHERE x.id = fail.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'escalation % does not exist', id USING ERRCODE = 'undefined_object';
	END IF;
	IF e.status <> 'claimed' THEN
		RETURN 'stale';
	END IF;
	SELECT p.max_attempts INTO max_attempts FROM triage.policies p WHERE p.name = e.policy;
	-- exponential backoff with jitter, unless the endpoint said when
	backoff := coalesce(retry_after,
						make_interval(secs => least(300, 2 ^ e.attempts) * (0.5 + random())));
	UPDATE triage.escalations x
	   SET attempts = x.attempts + 1,
		   error = left(fail.error, 2000),
		   status = CASE WHEN x.attempts + 1 >= max_attempts THEN 'dead' ELSE 'pending' END,
		   visible_at = clock_timestamp() + backoff,
		   done_at = CASE WHEN x.attempts + 1 >= max_attempts THEN now() END
	 WHERE x.id = fail.id;
	RETURN CASE WHEN e.attempts + 1 >= max_attempts THEN 'dead' ELSE 'retry' END;
END;
$$;
COMMENT ON FUNCTION triage.fail(bigint, text, interval) IS
	'Records a failed attempt of a leased escalation: retried after retry_after (or an exponential backoff), dead-lettered after the policy''s max_attempts. Returns retry, dead or stale.';

CREATE FUNCTION triage.release(id bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
	UPDATE triage.escalations
	   SET status = 'pending', visible_at = now(), claimed_by = NULL
	 WHERE escalations.id = release.id AND status = 'claimed'
$$;
COMMENT ON FUNCTION triage.release(bigint) IS
	'Gives a leased escalation back without counting an attempt.';

-- The fields of a chat-completions reply: {"fields": {"field": "value"}}
-- with only allowed field names and string (or null) values; else NULL
CREATE FUNCTION triage.answer_fields(response jsonb, allowed text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
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
COMMENT ON FUNCTION triage.answer_fields(jsonb, text[]) IS
	'The fields a chat-completions reply gives ({"fields": {...}}: allowed names, string values), without empty ones; NULL if the reply is anything else.';

COMMENT ON FUNCTION triage.answer_label(jsonb, text[]) IS
	'The label a chat-completions reply gives ({"label": ...} or a bare label), if it is one of labels; else NULL.';

CREATE FUNCTION triage.complete(id bigint, response jsonb) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
	e triage.escalations;
	p triage.policies;
	label text;
	result_outcome text := 'no_source';
	key_cond text;
	fields jsonb;
	small text;
	src_input text;
	src_output text;
	n integer;
BEGIN
	SELECT * INTO e FROM triage.escalations x WHERE x.id = complete.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'escalation % does not exist', id USING ERRCODE = 'undefined_object';
	END IF;
	IF e.status <> 'claimed' THEN
		RETURN 'stale';
	END IF;
	SELECT * INTO p FROM triage.policies x WHERE x.name = e.policy;
	IF p.model IS NULL THEN
		-- an extraction policy: the answer is an object of fields
		fields := triage.answer_fields(response, p.fields);
		label := fields::text;
	ELSE
		label := triage.answer_label(response, p.labels);
	END IF;
	IF label IS NULL THEN
		-- a failed attempt; 'dead' when it was the last one allowed
		IF triage.fail(id, 'invalid answer: ' || left(coalesce(
			response #>> '{choices,0,message,content}', response::text), 500)) = 'dead' THEN
			RETURN 'dead';
		END IF;
		RETURN 'invalid';
	END IF;

	-- Write to the source row only if it still holds the escalated input and
	-- nobody wrote another answer meanwhile; otherwise keep the answer, marked.
	IF e.source IS NOT NULL THEN
		SELECT string_agg(format('%I = %L', k, v), ' AND ') INTO key_cond
		  FROM jsonb_each_text(e.source_key) AS t(k, v);
		EXECUTE format('SELECT %I::text, %I::text FROM %s WHERE %s FOR UPDATE',
					   e.input_column, e.output_column, e.source, key_cond)
		   INTO src_input, src_output;
		GET DIAGNOSTICS n = ROW_COUNT;
		IF n = 0 THEN
			result_outcome := 'source_deleted';
		ELSIF src_input IS DISTINCT FROM e.input THEN
			result_outcome := 'source_changed';
		ELSIF src_output IS NOT NULL AND src_output IS DISTINCT FROM
			  (CASE WHEN fields IS NULL THEN e.small_answer->>'label' ELSE (e.small_answer->'fields')::text END) THEN
			result_outcome := 'source_overwritten';
		ELSE
			EXECUTE format('UPDATE %s SET %I = %L%s WHERE %s', e.source, e.output_column, label,
						   CASE WHEN e.provenance_column IS NOT NULL
								THEN format(', %I = %L', e.provenance_column, jsonb_build_object(
									'by', 'llm', 'model', response->>'model',
									'prompt_version', p.prompt->'version', 'escalation', e.id, 'at', now()))
								ELSE '' END,
						   key_cond);
			result_outcome := 'written';
		END IF;
	END IF;

	UPDATE triage.escalations x
	   SET status = 'done', done_at = now(), error = NULL, outcome = result_outcome,
		   answer = jsonb_build_object(CASE WHEN fields IS NULL THEN 'label' ELSE 'fields' END,
									   coalesce(fields, to_jsonb(label)), 'by', 'llm',
									   'model', response->>'model',
									   'prompt_version', p.prompt->'version', 'at', now()),
		   usage = response->'usage'
	 WHERE x.id = complete.id;
	IF fields IS NULL THEN
		INSERT INTO triage.examples (model, input, label, source, escalation)
		VALUES (p.model, e.input, label, 'llm', e.id);
	ELSE
		INSERT INTO triage.examples (model, input, fields, source, escalation)
		VALUES (p.extractor, e.input, fields, 'llm', e.id);
	END IF;
	UPDATE triage.workers w SET jobs_done = w.jobs_done + 1 WHERE w.name = e.claimed_by;
	RETURN 'done';
END;
$$;
COMMENT ON FUNCTION triage.complete(bigint, jsonb) IS
	'Accepts a leased escalation''s chat-completions reply: validates the label, writes it to the source row if that row is unchanged, records a training example; returns done, invalid (counted as a failed attempt, retried), dead (that failure was the last attempt) or stale.';

CREATE FUNCTION triage.heartbeat(worker text, host text, pid integer, jobs_done bigint,
								 jobs_failed bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
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
ALTER FUNCTION triage.claim(text, integer, interval, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.complete(bigint, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.fail(bigint, text, interval) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.release(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION triage.heartbeat(text, text, integer, bigint, bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION triage.claim(text, integer, interval, text), triage.complete(bigint, jsonb),
	triage.fail(bigint, text, interval), triage.release(bigint),
	triage.heartbeat(text, text, integer, bigint, bigint) FROM PUBLIC;
