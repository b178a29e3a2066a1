-- pg_triage: operating it: metrics for Prometheus, retention of the queue
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Metrics -----------------------------------------------------------------------

-- A label value in the Prometheus text format: backslash, double quote and
-- line feed escaped
CREATE FUNCTION triage_internal.prometheus_labels(labels jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT coalesce('{' || string_agg(l.key || '="'
								|| replace(replace(replace(l.value, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n')
								|| '"', ',' ORDER BY l.key) || '}', '')
	  FROM jsonb_each_text(labels) AS l
$$;
COMMENT ON FUNCTION triage_internal.prometheus_labels(jsonb) IS
	'Prometheus labels {name="value",...} of a jsonb object, values escaped as the text format wants (\\, \", \n).';

-- Computed now from the tables, so a scrape costs a scan of the queue's
-- open rows and one of the answered ones: scrape every 30 s or more.
-- SECURITY DEFINER (granted to triage_admin; an operator may grant it to a
-- monitoring role): it shows counts and names of policies and workers, never
-- a row's text.
CREATE FUNCTION triage.metrics() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	WITH stats AS (SELECT * FROM triage.escalation_stats),
	per_status AS (
		SELECT p.name AS policy, st.status,
			   (SELECT count(*) FROM triage.escalations e WHERE e.policy = p.name AND e.status = st.status) AS n
		  FROM triage.policies p, unnest(ARRAY['pending', 'claimed', 'done', 'dead']) AS st(status)),
	samples (metric, labels, value) AS (
		SELECT 'triage_rows_seen_total', jsonb_build_object('policy', s.policy), s.rows_seen::numeric FROM stats s
		UNION ALL SELECT 'triage_rows_kept_total', jsonb_build_object('policy', s.policy), s.rows_kept FROM stats s
		UNION ALL SELECT 'triage_rows_escalated_total', jsonb_build_object('policy', s.policy),
						 (SELECT coalesce(sum(c.escalated), 0) FROM triage.policy_counters c WHERE c.policy = s.policy)
					FROM stats s
		UNION ALL SELECT 'triage_escalations', jsonb_build_object('policy', q.policy, 'status', q.status), q.n
					FROM per_status q
		UNION ALL SELECT 'triage_oldest_pending_seconds', jsonb_build_object('policy', p.name),
						 coalesce((SELECT round(extract(epoch FROM now() - min(e.created_at)), 3)
									 FROM triage.escalations e WHERE e.policy = p.name AND e.status = 'pending'), 0)
					FROM triage.policies p
		UNION ALL SELECT 'triage_answers', jsonb_build_object('policy', e.policy, 'outcome', e.outcome), count(*)
					FROM triage.escalations e WHERE e.outcome IS NOT NULL GROUP BY e.policy, e.outcome
		UNION ALL SELECT 'triage_tokens', jsonb_build_object('policy', e.policy, 'kind', u.kind),
						 sum((e.usage->>(u.kind || '_tokens'))::numeric)
					FROM triage.escalations e, unnest(ARRAY['prompt', 'completion']) AS u(kind)
				   WHERE e.usage ? (u.kind || '_tokens') GROUP BY e.policy, u.kind
		UNION ALL SELECT 'triage_llm_cost', jsonb_build_object('policy', s.policy), s.llm_cost FROM stats s
		UNION ALL SELECT 'triage_all_llm_cost', jsonb_build_object('policy', s.policy), s.all_llm_cost FROM stats s
		UNION ALL SELECT 'triage_worker_last_seen_seconds', jsonb_build_object('worker', w.name),
						 round(extract(epoch FROM now() - w.last_seen), 3)
					FROM triage.workers w
		UNION ALL SELECT 'triage_worker_jobs_done', jsonb_build_object('worker', w.name), w.jobs_done FROM triage.workers w
		UNION ALL SELECT 'triage_worker_jobs_failed', jsonb_build_object('worker', w.name), w.jobs_failed FROM triage.workers w),
	families (ord, metric, type, help) AS (VALUES
		(1, 'triage_rows_seen_total', 'counter', 'Rows routed under a policy (attached tables and process_table).'),
		(2, 'triage_rows_kept_total', 'counter', 'Rows routed under a policy and answered by the small model.'),
		(3, 'triage_rows_escalated_total', 'counter', 'Rows routed under a policy and escalated to the large model.'),
		(4, 'triage_escalations', 'gauge', 'Escalations in triage.escalations by status (pending, claimed, done, dead); purge removes old done and dead ones.'),
		(5, 'triage_oldest_pending_seconds', 'gauge', 'Age of the oldest pending escalation of a policy, 0 when none is pending.'),
		(6, 'triage_answers', 'gauge', 'Answered or refused escalations in triage.escalations by outcome (written, source_changed, source_deleted, source_overwritten, refused).'),
		(7, 'triage_tokens', 'gauge', 'Large-model tokens of the escalations in triage.escalations, by kind (prompt, completion).'),
		(8, 'triage_llm_cost', 'gauge', 'Large-model cost of the escalations in triage.escalations, at triage.llm_prompt_price_per_1k and triage.llm_completion_price_per_1k.'),
		(9, 'triage_all_llm_cost', 'gauge', 'What sending every routed row to the large model would have cost, at the same prices.'),
		(10, 'triage_worker_last_seen_seconds', 'gauge', 'Seconds since a triage-worker''s last heartbeat.'),
		(11, 'triage_worker_jobs_done', 'gauge', 'Jobs a triage-worker reported done (since it started).'),
		(12, 'triage_worker_jobs_failed', 'gauge', 'Jobs a triage-worker reported failed (since it started).'))
	SELECT string_agg('# HELP ' || f.metric || ' ' || f.help || E'\n# TYPE ' || f.metric || ' ' || f.type || E'\n'
					  || coalesce((SELECT string_agg(f.metric || triage_internal.prometheus_labels(s.labels) || ' '
													 || coalesce(s.value, 0)::text || E'\n', '' ORDER BY s.labels::text)
									 FROM samples s WHERE s.metric = f.metric), ''),
					  '' ORDER BY f.ord)
	  FROM families f
$$;
COMMENT ON FUNCTION triage.metrics() IS
	'Prometheus text exposition of pg_triage: rows seen, kept and escalated per policy, escalations by status, the oldest pending age, answers by outcome, tokens, cost, workers'' last heartbeat.';

-- Retention ---------------------------------------------------------------------

-- What purge looks up: finished rows by age, and the examples that name an
-- escalation (ON DELETE SET NULL would scan triage.examples per row otherwise)
CREATE INDEX escalations_finished ON triage.escalations (done_at) WHERE status IN ('done', 'dead');
CREATE INDEX examples_escalation ON triage.examples (escalation) WHERE escalation IS NOT NULL;

-- Done (and dead) escalations are final: nothing takes them back, so
-- deleting them never races a worker; rows that are locked (being read for
-- a dump, say) are skipped and left for the next run
CREATE FUNCTION triage.purge(older_than interval, keep_dead boolean DEFAULT true,
							 forget_workers interval DEFAULT '7 days', batch_size integer DEFAULT 10000)
	RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
	cutoff timestamptz;
	n_done bigint := 0;
	n_dead bigint := 0;
	n_examples bigint := 0;
	n_workers bigint := 0;
	batch record;
BEGIN
	IF older_than IS NULL OR older_than < interval '0' OR keep_dead IS NULL
	   OR batch_size IS NULL OR batch_size < 1 OR forget_workers < interval '0' THEN
		RAISE EXCEPTION 'purge needs older_than of 0 or more, keep_dead, a positive batch_size, and forget_workers of 0 or more (or NULL)'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	cutoff := now() - older_than;
	LOOP
		WITH picked AS (
			SELECT e.id FROM triage.escalations e
			 WHERE (e.status = 'done' OR (e.status = 'dead' AND NOT keep_dead)) AND e.done_at < cutoff
			 ORDER BY e.done_at
			 LIMIT batch_size
			   FOR UPDATE SKIP LOCKED),
		gone AS (
			DELETE FROM triage.escalations e USING picked
			 WHERE e.id = picked.id AND (e.status = 'done' OR (e.status = 'dead' AND NOT keep_dead))
			RETURNING e.id, e.status)
		SELECT count(*) AS n, count(*) FILTER (WHERE g.status = 'done') AS done,
			   count(*) FILTER (WHERE g.status = 'dead') AS dead,
			   (SELECT count(*) FROM triage.examples x WHERE x.escalation IN (SELECT g2.id FROM gone g2)) AS examples
		  INTO batch FROM gone g;
		n_done := n_done + batch.done;
		n_dead := n_dead + batch.dead;
		n_examples := n_examples + batch.examples;
		EXIT WHEN batch.n < batch_size;
	END LOOP;
	IF forget_workers IS NOT NULL THEN
		DELETE FROM triage.workers w WHERE w.last_seen < now() - forget_workers;
		GET DIAGNOSTICS n_workers = ROW_COUNT;
	END IF;
	RETURN jsonb_build_object('done', n_done, 'dead', n_dead, 'examples_unlinked', n_examples,
							  'workers', n_workers, 'before', cutoff);
END;
$$;
COMMENT ON FUNCTION triage.purge(interval, boolean, interval, integer) IS
	'Deletes answered escalations finished more than older_than ago (and dead-lettered ones unless keep_dead), batch_size at a time, skipping locked rows; pending and leased rows are never touched; their examples stay, unlinked. Forgets workers not seen for forget_workers (NULL: keep them). Returns the counts.';
