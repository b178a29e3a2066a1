-- pg_triage: roles and their grants (last: grants cover every object above)
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Roles ---------------------------------------------------------------------------

-- Three roles, created if missing (roles belong to the cluster, not to the
-- extension, so DROP EXTENSION leaves them): grant them to login roles.
--   triage_user    classify, predict, route, evaluate: reads models and policies
--   triage_worker  claim, complete, fail, release, heartbeat, and nothing else
--   triage_admin   also imports, trains, deploys, edits policies and the queue
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'triage_user') THEN
		CREATE ROLE triage_user NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'triage_worker') THEN
		CREATE ROLE triage_worker NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'triage_admin') THEN
		CREATE ROLE triage_admin NOLOGIN;
	END IF;
END
$$;
GRANT USAGE ON SCHEMA triage TO triage_user, triage_worker, triage_admin;
-- the helpers the functions of triage call as their caller (SECURITY
-- INVOKER): whoever may use schema triage may reach them
GRANT USAGE ON SCHEMA triage_internal TO triage_user, triage_worker, triage_admin;
-- Users classify and route: they read policies and what models are, but not
-- a model's bytes (a fastText dictionary lists its training words), which
-- the extension reads for them
GRANT SELECT (name, version, kind, labels, params, metrics, created_at) ON triage.models TO triage_user;
GRANT SELECT ON triage.deployments, triage.policies, triage.policy_grants TO triage_user;
GRANT EXECUTE ON FUNCTION triage.claim(text, integer, interval, text, text), triage.complete(bigint, jsonb),
	triage.fail(bigint, text, interval), triage.release(bigint),
	triage.heartbeat(text, text, integer, bigint, bigint) TO triage_worker;
GRANT triage_user TO triage_admin;
-- Admins keep the model store, policies, examples and workers; they read and
-- delete the queue, but only pg_triage writes it (an escalation names a
-- table and columns that complete() writes into)
GRANT SELECT, INSERT, UPDATE, DELETE ON triage.models, triage.model_versions, triage.deployments, triage.policies,
	triage.policy_grants, triage.examples, triage.policy_counters, triage.progress, triage.workers,
	triage.worker_roles TO triage_admin;
GRANT SELECT, DELETE ON triage.escalations TO triage_admin;
GRANT SELECT ON triage.escalation_stats, triage.process_progress TO triage_admin;
GRANT USAGE ON SEQUENCE triage.examples_id_seq TO triage_admin;
GRANT EXECUTE ON FUNCTION triage.claim(text, integer, interval, text, text), triage.complete(bigint, jsonb),
	triage.fail(bigint, text, interval), triage.release(bigint),
	triage.heartbeat(text, text, integer, bigint, bigint) TO triage_admin;

GRANT EXECUTE ON FUNCTION triage.distill(text, jsonb) TO triage_admin;
-- The report page, metrics and purge are for admins (metrics() is SECURITY
-- DEFINER, counts and names only: an operator may grant it to a monitoring
-- role with USAGE on schema triage, as the README shows)
REVOKE ALL ON FUNCTION triage.report(text, timestamptz), triage.metrics(),
	triage.purge(interval, boolean, interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION triage.report(text, timestamptz), triage.metrics(),
	triage.purge(interval, boolean, interval, integer) TO triage_admin;

-- The promise's health (src/sql/health.sql): policy_health shows a role
-- the policies it owns (a member of their owner) and triage_admin every
-- one; the counts and events are written only by complete() and triggers
GRANT SELECT ON triage.policy_health TO triage_user;
GRANT SELECT, DELETE ON triage.policy_audits, triage.policy_baselines, triage.policy_health_events TO triage_admin;

-- process_table's counters, progress and queue lookups: SECURITY DEFINER,
-- each checking its caller, for the roles that route rows
REVOKE ALL ON FUNCTION triage.compact_counters(), triage_internal.count_routed(text, bigint, bigint),
	triage_internal.record_progress(regclass, text, timestamptz, bigint, bigint, bigint, boolean),
	triage_internal.open_escalation(regclass, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION triage.compact_counters(), triage_internal.count_routed(text, bigint, bigint),
	triage_internal.record_progress(regclass, text, timestamptz, bigint, bigint, bigint, boolean),
	triage_internal.open_escalation(regclass, jsonb) TO triage_user;

-- triage-worker --mode batch: the batch functions (SECURITY DEFINER, each
-- acting on the caller's batches only); admins read batches and budgets
GRANT EXECUTE ON FUNCTION triage.claim_batch(text, integer, bigint, interval, text, text, integer),
	triage.take_batches(text), triage.batch_requests(bigint, text), triage.batch_uploaded(bigint, jsonb, text),
	triage.batch_created(bigint, jsonb), triage.batch_polled(bigint, jsonb), triage.extend_batch(bigint, interval),
	triage.batch_result(bigint, text), triage.finish_batch(bigint, text, text) TO triage_worker, triage_admin;
GRANT SELECT ON triage.batches, triage.budget_status TO triage_admin;
