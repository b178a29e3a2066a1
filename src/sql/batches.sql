-- pg_triage: escalations answered through an OpenAI-compatible Batch API
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)
--
-- A batch-mode worker (triage-worker --mode batch) claims the rows of
-- policies whose rules say latency "batch" with claim_batch(), which leases
-- them and records the batch here in one transaction; it writes them as a
-- JSONL file, uploads it, creates the batch at the endpoint, polls it and
-- hands every line of the output and error files to batch_result().  The
-- state lives here, not in the worker: a worker that restarts takes its
-- open batches back (take_batches) and resumes polling instead of sending
-- the rows again.  The rows stay leased to the worker's role while the
-- batch is out (extend_batch), so nobody else asks them; a batch that
-- expires, fails or is cancelled gives them back (finish_batch).
--
-- Every reply the worker passes in is untrusted: ids are checked against a
-- pattern, a line's custom_id must be an escalation of this batch, and a
-- line that is not JSON is counted, never an error.

-- Batches ------------------------------------------------------------------------

CREATE TABLE triage.batches (
	id bigserial PRIMARY KEY,
	provider_batch_id text,		-- the endpoint's batch id, once created
	input_file_id text,
	output_file_id text,
	error_file_id text,
	escalation_ids bigint[] NOT NULL,
	worker text NOT NULL,		-- the worker that polls it
	claimed_role regrole NOT NULL,	-- holds the leases of its rows
	status text NOT NULL DEFAULT 'preparing'
		CHECK (status IN ('preparing', 'uploaded', 'submitted', 'completed', 'failed', 'expired',
						  'cancelled', 'abandoned')),
	provider_status text,		-- the endpoint's word for it at the last poll
	attempts integer NOT NULL DEFAULT 1,	-- submissions tried
	polls integer NOT NULL DEFAULT 0,
	answered integer NOT NULL DEFAULT 0,	-- lines recorded
	rejected integer NOT NULL DEFAULT 0,	-- lines refused: not JSON, or not of this batch
	error text,
	created_at timestamptz NOT NULL DEFAULT now(),
	submitted_at timestamptz,
	finished_at timestamptz
);
CREATE INDEX batches_open ON triage.batches (claimed_role) WHERE status IN ('preparing', 'uploaded', 'submitted');
COMMENT ON TABLE triage.batches IS
	'Batches of escalations sent through the Batch API by triage-worker --mode batch: their ids at the endpoint, rows, state and counts.';
SELECT pg_catalog.pg_extension_config_dump('triage.batches', '');
SELECT pg_catalog.pg_extension_config_dump('triage.batches_id_seq', '');

-- The batch, locked, if the calling role owns it and it is still open
CREATE FUNCTION triage_internal.own_batch(batch bigint) RETURNS triage.batches
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	b triage.batches;
BEGIN
	SELECT * INTO b FROM triage.batches x WHERE x.id = own_batch.batch FOR UPDATE;
	IF NOT FOUND OR b.claimed_role IS DISTINCT FROM triage_internal.caller_role() THEN
		RAISE EXCEPTION 'batch % is not one of role "%"', batch, triage_internal.caller_role()
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF b.status NOT IN ('preparing', 'uploaded', 'submitted') THEN
		RAISE EXCEPTION 'batch % is over (%)', batch, b.status
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	RETURN b;
END;
$$;
COMMENT ON FUNCTION triage_internal.own_batch(bigint) IS
	'A batch, locked, if the calling role owns it and it is open; else an error.';

-- An id the endpoint gave (file or batch), if it looks like one
CREATE FUNCTION triage_internal.provider_id(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN jsonb_typeof(v) = 'string' AND (v #>> '{}') ~ '^[A-Za-z0-9_.:-]{1,200}$' THEN v #>> '{}' END
$$;
COMMENT ON FUNCTION triage_internal.provider_id(jsonb) IS
	'An endpoint''s file or batch id from a reply (1 to 200 letters, digits, "_.:-"), else NULL.';

CREATE FUNCTION triage.claim_batch(worker text, n integer, max_bytes bigint, visibility interval,
								   policy text DEFAULT NULL, response_format text DEFAULT 'json_schema',
								   line_overhead integer DEFAULT 0)
	RETURNS TABLE (batch bigint, id bigint, request jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	ids bigint[] := '{}';
	requests jsonb[] := '{}';
	r record;
	b bigint;
BEGIN
	IF max_bytes IS NULL OR max_bytes < 1 OR line_overhead IS NULL OR line_overhead < 0 THEN
		RAISE EXCEPTION 'claim_batch needs a positive max_bytes and a line_overhead of 0 or more'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR r IN SELECT * FROM triage_internal.claim_rows(worker, n, visibility, policy, response_format, true,
													  max_bytes, line_overhead) LOOP
		ids := ids || r.id;
		requests := requests || r.request;
	END LOOP;
	IF cardinality(ids) = 0 THEN
		RETURN;
	END IF;
	INSERT INTO triage.batches (escalation_ids, worker, claimed_role)
	VALUES (ids, worker, triage_internal.caller_role()) RETURNING triage.batches.id INTO b;
	FOR i IN 1 .. cardinality(ids) LOOP
		batch := b;
		id := ids[i];
		request := requests[i];
		RETURN NEXT;
	END LOOP;
END;
$$;
COMMENT ON FUNCTION triage.claim_batch(text, integer, bigint, interval, text, text, integer) IS
	'For triage-worker --mode batch: leases up to n rows of batch policies (rules latency "batch") whose requests, each counted with line_overhead bytes, fit in max_bytes, records them as a new batch in triage.batches and returns the batch id with each row''s request. Nothing when nothing is claimable.';

CREATE FUNCTION triage.take_batches(worker text)
	RETURNS TABLE (batch bigint, status text, provider_batch_id text, escalations integer)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	caller regrole := triage_internal.caller_role();
	b triage.batches;
	leased integer;
	open integer;
BEGIN
	IF worker IS NULL THEN
		RAISE EXCEPTION 'take_batches needs a worker name' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- the caller's open batches, its own or those of a worker silent for a
	-- minute (its heartbeat comes every 10 s)
	FOR b IN
		SELECT * FROM triage.batches x
		 WHERE x.claimed_role = caller AND x.status IN ('preparing', 'uploaded', 'submitted')
		   AND (x.worker = take_batches.worker
				OR NOT EXISTS (SELECT FROM triage.workers w
								WHERE w.name = x.worker AND w.last_seen > now() - interval '1 minute'))
		 ORDER BY x.id
		   FOR UPDATE OF x SKIP LOCKED
	LOOP
		SELECT count(*) FILTER (WHERE e.status = 'claimed' AND e.claimed_role = caller
								 AND e.visible_at > pg_catalog.clock_timestamp()),
			   count(*) FILTER (WHERE e.status IN ('pending', 'claimed'))
		  INTO leased, open
		  FROM triage.escalations e WHERE e.id = ANY (b.escalation_ids);
		IF leased = 0 THEN
			-- every row was answered before a crash, or the leases ran out
			-- and the rows are anyone's again: nothing to poll for
			UPDATE triage.batches x
			   SET status = CASE WHEN open = 0 THEN 'completed' ELSE 'abandoned' END, finished_at = now(),
				   error = CASE WHEN open = 0 THEN x.error ELSE 'the leases of its rows ran out before it was polled again' END
			 WHERE x.id = b.id;
			CONTINUE;
		END IF;
		UPDATE triage.batches x SET worker = take_batches.worker WHERE x.id = b.id;
		batch := b.id;
		status := b.status;
		provider_batch_id := b.provider_batch_id;
		escalations := leased;
		RETURN NEXT;
	END LOOP;
END;
$$;
COMMENT ON FUNCTION triage.take_batches(text) IS
	'The calling role''s open batches for worker to go on with (its own, or those of a worker without a heartbeat for a minute), now polled by it; a batch none of whose rows is still leased is closed (completed, or abandoned when the leases ran out).';

CREATE FUNCTION triage.batch_requests(batch bigint, response_format text DEFAULT 'json_schema')
	RETURNS TABLE (id bigint, request jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	b triage.batches := triage_internal.own_batch(batch);
BEGIN
	IF response_format IS NULL OR response_format NOT IN ('json_schema', 'json_object', 'none') THEN
		RAISE EXCEPTION 'response_format must be json_schema, json_object or none, not %', coalesce(response_format, 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	UPDATE triage.batches x SET attempts = x.attempts + 1, status = 'preparing' WHERE x.id = b.id;
	RETURN QUERY
		SELECT e.id, triage_internal.build_request(p, e.input, response_format)
		  FROM triage.escalations e JOIN triage.policies p ON p.name = e.policy
		 WHERE e.id = ANY (b.escalation_ids) AND e.status = 'claimed' AND e.claimed_role = b.claimed_role
		   AND e.visible_at > pg_catalog.clock_timestamp()
		 ORDER BY e.id;
END;
$$;
COMMENT ON FUNCTION triage.batch_requests(bigint, text) IS
	'The requests of a batch of the caller''s not yet created at the endpoint (its rows still leased), to write its file again; counts a submission attempt.';

CREATE FUNCTION triage.batch_uploaded(batch bigint, reply jsonb, completion_window text DEFAULT '24h')
	RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	b triage.batches := triage_internal.own_batch(batch);
	file_id text := triage_internal.provider_id(reply->'id');
BEGIN
	IF file_id IS NULL THEN
		RETURN NULL;
	END IF;
	UPDATE triage.batches x SET input_file_id = file_id, status = 'uploaded' WHERE x.id = b.id;
	RETURN jsonb_build_object('input_file_id', file_id, 'endpoint', '/v1/chat/completions',
							  'completion_window', completion_window,
							  'metadata', jsonb_build_object('triage_batch', b.id::text));
END;
$$;
COMMENT ON FUNCTION triage.batch_uploaded(bigint, jsonb, text) IS
	'Records the file id of the endpoint''s reply to a batch''s upload (POST /files) and returns the body that creates the batch (POST /batches); NULL if the reply has no file id.';

CREATE FUNCTION triage.batch_created(batch bigint, reply jsonb) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	b triage.batches := triage_internal.own_batch(batch);
	provider text := triage_internal.provider_id(reply->'id');
BEGIN
	IF provider IS NULL THEN
		RETURN NULL;
	END IF;
	UPDATE triage.batches x
	   SET provider_batch_id = provider, status = 'submitted', submitted_at = now(),
		   provider_status = left(reply->>'status', 40)
	 WHERE x.id = b.id;
	RETURN provider;
END;
$$;
COMMENT ON FUNCTION triage.batch_created(bigint, jsonb) IS
	'Records the endpoint''s batch id from its reply to POST /batches (the batch is then submitted) and returns it; NULL if the reply has none.';

CREATE FUNCTION triage.batch_polled(batch bigint, reply jsonb,
									OUT status text, OUT output_file_id text, OUT error_file_id text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	b triage.batches := triage_internal.own_batch(batch);
	said text := reply->>'status';
BEGIN
	IF b.status <> 'submitted' OR jsonb_typeof(reply) IS DISTINCT FROM 'object'
	   OR triage_internal.provider_id(reply->'id') IS DISTINCT FROM b.provider_batch_id THEN
		RETURN;					-- all NULL: not a reply about this batch
	END IF;
	status := CASE WHEN said IN ('validating', 'in_progress', 'finalizing', 'cancelling') THEN 'in_progress'
				   WHEN said IN ('completed', 'failed', 'expired', 'cancelled') THEN said END;
	output_file_id := triage_internal.provider_id(reply->'output_file_id');
	error_file_id := triage_internal.provider_id(reply->'error_file_id');
	UPDATE triage.batches x
	   SET polls = x.polls + 1, provider_status = left(said, 40),
		   output_file_id = coalesce(batch_polled.output_file_id, x.output_file_id),
		   error_file_id = coalesce(batch_polled.error_file_id, x.error_file_id),
		   error = CASE WHEN said IN ('failed', 'expired', 'cancelled')
						THEN left(coalesce(reply #>> '{errors,data,0,message}', 'the batch ' || said), 500)
						ELSE x.error END
	 WHERE x.id = b.id;
END;
$$;
COMMENT ON FUNCTION triage.batch_polled(bigint, jsonb) IS
	'Reads the endpoint''s reply to GET /batches/{id} for a submitted batch of the caller''s: status (in_progress, completed, failed, expired or cancelled; NULL if the reply is not about this batch or unknown) and the ids of its output and error files.';

CREATE FUNCTION triage.extend_batch(batch bigint, visibility interval) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	b triage.batches := triage_internal.own_batch(batch);
	n integer;
BEGIN
	IF visibility IS NULL OR visibility <= '0'::interval THEN
		RAISE EXCEPTION 'extend_batch needs a positive visibility' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- only leases the caller still holds: a lease that ran out is anyone's
	UPDATE triage.escalations e
	   SET visible_at = pg_catalog.clock_timestamp() + visibility, claimed_by = b.worker
	 WHERE e.id = ANY (b.escalation_ids) AND e.status = 'claimed' AND e.claimed_role = b.claimed_role
	   AND e.visible_at > pg_catalog.clock_timestamp();
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END;
$$;
COMMENT ON FUNCTION triage.extend_batch(bigint, interval) IS
	'Extends to now() + visibility the leases the caller still holds on the rows of its batch while the endpoint works on it; returns how many.';

CREATE FUNCTION triage.batch_result(batch bigint, line text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	b triage.batches := triage_internal.own_batch(batch);
	j jsonb;
	eid bigint;
	resp jsonb;
	result text;
	why text;
BEGIN
	BEGIN
		j := line::jsonb;
	EXCEPTION WHEN OTHERS THEN
		j := NULL;
	END;
	IF jsonb_typeof(j) IS DISTINCT FROM 'object' THEN
		UPDATE triage.batches x SET rejected = x.rejected + 1 WHERE x.id = b.id;
		RETURN 'malformed';
	END IF;
	-- the custom_id is the escalation's id, and must be one of this batch
	IF jsonb_typeof(j->'custom_id') IS DISTINCT FROM 'string' OR (j->>'custom_id') !~ '^[0-9]{1,18}$'
	   OR NOT (j->>'custom_id')::bigint = ANY (b.escalation_ids) THEN
		UPDATE triage.batches x SET rejected = x.rejected + 1 WHERE x.id = b.id;
		RETURN 'foreign';
	END IF;
	eid := (j->>'custom_id')::bigint;
	resp := j->'response';
	IF jsonb_typeof(resp) = 'object' AND resp->'status_code' = '200' AND jsonb_typeof(resp->'body') = 'object' THEN
		result := triage.complete(eid, resp->'body');
		IF result = 'done' THEN
			UPDATE triage.escalations e SET batch = b.id WHERE e.id = eid;
		END IF;
	ELSIF j #>> '{error,code}' IN ('batch_expired', 'batch_cancelled') THEN
		-- not asked in time: back to the queue, no attempt counted
		PERFORM triage.release(eid);
		result := 'released';
	ELSE
		why := coalesce(j #>> '{error,message}', resp #>> '{body,error,message}',
						'status ' || coalesce(resp->>'status_code', 'unknown'));
		result := triage.fail(eid, pg_catalog.left('batch ' || coalesce(b.provider_batch_id, b.id::text) || ': ' || why, 500));
	END IF;
	UPDATE triage.batches x SET answered = x.answered + 1 WHERE x.id = b.id;
	RETURN result;
END;
$$;
COMMENT ON FUNCTION triage.batch_result(bigint, text) IS
	'Records one line of a batch''s output or error file: a 200 response goes to complete(), a batch_expired or batch_cancelled error to release(), any other error to fail(); returns their outcome, or malformed (not a JSON object) or foreign (its custom_id is not a row of this batch), which touch no row.';

CREATE FUNCTION triage.finish_batch(batch bigint, status text, error text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	b triage.batches := triage_internal.own_batch(batch);
	e record;
	n integer := 0;
BEGIN
	IF status IS NULL OR status NOT IN ('completed', 'failed', 'expired', 'cancelled', 'abandoned') THEN
		RAISE EXCEPTION 'a batch finishes completed, failed, expired, cancelled or abandoned, not %', coalesce(status, 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- the rows it did not answer: a completed batch that left one out, or a
	-- failed one, counts an attempt (the request may be at fault); an
	-- expired, cancelled or abandoned one gives them back as they were
	FOR e IN SELECT x.id FROM triage.escalations x
			  WHERE x.id = ANY (b.escalation_ids) AND x.status = 'claimed' AND x.claimed_role = b.claimed_role
				AND x.visible_at > pg_catalog.clock_timestamp()
			  ORDER BY x.id LOOP
		IF status IN ('completed', 'failed') THEN
			PERFORM triage.fail(e.id, pg_catalog.left(CASE WHEN status = 'completed'
				THEN 'batch ' || coalesce(b.provider_batch_id, b.id::text) || ' completed without an answer for it'
				ELSE 'batch ' || coalesce(b.provider_batch_id, b.id::text) || ' failed: ' || coalesce(error, b.error, 'no reason given') END, 500),
				'0'::interval);
		ELSE
			PERFORM triage.release(e.id);
		END IF;
		n := n + 1;
	END LOOP;
	UPDATE triage.batches x
	   SET status = finish_batch.status, finished_at = now(),
		   error = coalesce(pg_catalog.left(finish_batch.error, 500), x.error)
	 WHERE x.id = b.id;
	RETURN n;
END;
$$;
COMMENT ON FUNCTION triage.finish_batch(bigint, text, text) IS
	'Closes a batch of the caller''s (completed, failed, expired, cancelled or abandoned) and returns to the queue the rows it did not answer: at once, with an attempt counted after a completed or failed batch; returns how many.';

-- Roles -------------------------------------------------------------------------

-- The worker role needs no table rights: the batch functions run as the
-- extension owner (SECURITY DEFINER, pinned search_path), each acting only
-- on the caller's batches and leases
ALTER FUNCTION triage.claim_batch(text, integer, bigint, interval, text, text, integer) SECURITY DEFINER;
ALTER FUNCTION triage.take_batches(text) SECURITY DEFINER;
ALTER FUNCTION triage.batch_requests(bigint, text) SECURITY DEFINER;
ALTER FUNCTION triage.batch_uploaded(bigint, jsonb, text) SECURITY DEFINER;
ALTER FUNCTION triage.batch_created(bigint, jsonb) SECURITY DEFINER;
ALTER FUNCTION triage.batch_polled(bigint, jsonb) SECURITY DEFINER;
ALTER FUNCTION triage.extend_batch(bigint, interval) SECURITY DEFINER;
ALTER FUNCTION triage.batch_result(bigint, text) SECURITY DEFINER;
ALTER FUNCTION triage.finish_batch(bigint, text, text) SECURITY DEFINER;
REVOKE ALL ON FUNCTION triage.claim_batch(text, integer, bigint, interval, text, text, integer),
	triage.take_batches(text), triage.batch_requests(bigint, text), triage.batch_uploaded(bigint, jsonb, text),
	triage.batch_created(bigint, jsonb), triage.batch_polled(bigint, jsonb), triage.extend_batch(bigint, interval),
	triage.batch_result(bigint, text), triage.finish_batch(bigint, text, text),
	triage_internal.own_batch(bigint) FROM PUBLIC;
