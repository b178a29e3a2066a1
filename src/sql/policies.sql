-- pg_triage: routing policies
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Routing policies --------------------------------------------------------------

CREATE TABLE triage.policies (
	name text PRIMARY KEY,
	model text,					-- the classifier, or NULL for an extraction policy
	extractor text,				-- the field extractor, if any
	labels text[],				-- the labels the large model may answer
	fields text[],				-- the fields the large model may answer (extraction policies)
	thresholds jsonb NOT NULL DEFAULT '{"default": 0.5}',
	rules jsonb NOT NULL DEFAULT '{}',
	audit_rate real NOT NULL DEFAULT 0 CHECK (audit_rate BETWEEN 0 AND 1),
	prompt jsonb NOT NULL DEFAULT '{}',
	max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
	calibration jsonb,
	-- who may use it: its owner, and the roles of triage.policy_grants
	owner regrole NOT NULL DEFAULT pg_catalog.to_regrole(pg_catalog.quote_ident(CURRENT_USER)),
	updated_at timestamptz NOT NULL DEFAULT now(),
	CHECK (model IS NOT NULL OR extractor IS NOT NULL)
);
COMMENT ON TABLE triage.policies IS
	'How to route: which model, confidence thresholds (default and per label), rules, the audit rate and the large model''s prompt.';
SELECT pg_catalog.pg_extension_config_dump('triage.policies', '');

-- The labels (or fields) a policy lets the large model answer: some of its
-- model's, at least one, no NULL (the prompt lists them; complete() accepts
-- only them)
CREATE FUNCTION triage_internal.check_answer_names(policy text, what text, names text[], model text,
										  model_names text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF cardinality(names) = 0 OR array_position(names, NULL) IS NOT NULL OR NOT names <@ model_names THEN
		RAISE EXCEPTION '% of policy "%" must be some of the % of "%" (%), without NULLs',
			what, policy, what, model, array_to_string(model_names, ', ')
			USING ERRCODE = 'invalid_parameter_value',
				HINT = format('Leave %s NULL for all of them.', what);
	END IF;
END;
$$;
COMMENT ON FUNCTION triage_internal.check_answer_names(text, text, text[], text, text[]) IS
	'Error unless a policy''s labels or fields are a non-empty subset of its model''s, without NULLs.';

-- A positive interval written as a JSON string ("24 hours"), else NULL
CREATE FUNCTION triage_internal.json_interval(v jsonb) RETURNS interval
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	i interval;
BEGIN
	IF jsonb_typeof(v) IS DISTINCT FROM 'string' THEN
		RETURN NULL;
	END IF;
	BEGIN
		i := (v #>> '{}')::interval;
	EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
		RETURN NULL;
	END;
	RETURN CASE WHEN i > '0'::interval THEN i END;
END;
$$;
COMMENT ON FUNCTION triage_internal.json_interval(jsonb) IS
	'A positive interval written as a JSON string ("24 hours"), else NULL.';

-- A policy's budget rule: {"tokens": N and/or "cost": X, "per": "hour" or
-- "day", "when_over": "wait" (default) or "keep_small"}
CREATE FUNCTION triage_internal.check_budget(policy text, budget jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF jsonb_typeof(budget) IS DISTINCT FROM 'object'
	   OR EXISTS (SELECT FROM jsonb_object_keys(budget) k WHERE k NOT IN ('tokens', 'cost', 'per', 'when_over'))
	   OR NOT (budget ? 'tokens' OR budget ? 'cost')
	   OR (budget ? 'tokens' AND (jsonb_typeof(budget->'tokens') <> 'number' OR (budget->>'tokens') !~ '^[0-9]{1,15}$'))
	   OR (budget ? 'cost' AND (jsonb_typeof(budget->'cost') <> 'number' OR (budget->>'cost')::numeric < 0))
	   OR coalesce(budget->>'per', 'day') NOT IN ('hour', 'day') OR jsonb_typeof(coalesce(budget->'per', '"day"')) <> 'string'
	   OR coalesce(budget->>'when_over', 'wait') NOT IN ('wait', 'keep_small') OR jsonb_typeof(coalesce(budget->'when_over', '"wait"')) <> 'string' THEN
		RAISE EXCEPTION 'rule budget of policy "%" must be {"tokens": N and/or "cost": X, "per": "hour" or "day", "when_over": "wait" or "keep_small"}, not %', policy, budget
			USING ERRCODE = 'invalid_parameter_value',
				HINT = 'Tokens are the replies'' usage; cost is at triage.llm_prompt_price_per_1k and triage.llm_completion_price_per_1k (batch answers at the batch prices).';
	END IF;
END;
$$;
COMMENT ON FUNCTION triage_internal.check_budget(text, jsonb) IS
	'Error unless a policy''s budget rule is {"tokens" and/or "cost", "per": hour or day, "when_over": wait or keep_small}.';

-- Policies are edited in place (create_policy, calibrate or a plain UPDATE):
-- check what routing will read, so that a bad policy fails when it is
-- written, not on the millionth row routed
CREATE FUNCTION triage_internal.check_policy() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	k text;
	v jsonb;
	model_labels text[];
	extractor_fields text[];
	tables text;
BEGIN
	-- a policy in use keeps its name: attached tables name it in their triggers
	IF TG_OP = 'UPDATE' AND NEW.name IS DISTINCT FROM OLD.name THEN
		SELECT string_agg(t::text, ', ') INTO tables FROM triage.attached_tables(OLD.name) t;
		IF tables IS NOT NULL THEN
			RAISE EXCEPTION 'policy "%" cannot be renamed: tables are attached to it (%)', OLD.name, tables
				USING ERRCODE = 'dependent_objects_still_exist',
					HINT = 'Detach them with triage.detach(), rename, and attach them again.';
		END IF;
	END IF;
	IF NEW.name IS NULL OR NEW.name !~ '^[A-Za-z_][A-Za-z0-9_.-]*$' OR octet_length(NEW.name) >= 64 THEN
		RAISE EXCEPTION 'invalid policy name "%"', NEW.name
			USING ERRCODE = 'invalid_name',
				HINT = 'A policy name starts with a letter or underscore, has at most 63 bytes, '
					   'and holds only letters, digits, "_", "." and "-".';
	END IF;
	-- the classifier and the extractor exist, of their kinds; the labels and
	-- fields the large model may answer are theirs (by default all of them)
	IF NEW.model IS NOT NULL THEN
		SELECT m.labels INTO model_labels FROM triage.models m
		 WHERE m.name = NEW.model AND m.kind <> 'crf' ORDER BY m.version DESC LIMIT 1;
		IF model_labels IS NULL THEN
			RAISE EXCEPTION 'classifier "%" does not exist', NEW.model
				USING ERRCODE = 'undefined_object',
					HINT = 'Train or import the model first (an extractor is not a classifier).';
		END IF;
		NEW.labels := coalesce(NEW.labels, model_labels);
		PERFORM triage_internal.check_answer_names(NEW.name, 'labels', NEW.labels, NEW.model, model_labels);
	ELSIF NEW.labels IS NOT NULL THEN
		RAISE EXCEPTION 'an extraction policy has fields, not labels' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NEW.extractor IS NOT NULL THEN
		SELECT m.labels INTO extractor_fields FROM triage.models m
		 WHERE m.name = NEW.extractor AND m.kind = 'crf' ORDER BY m.version DESC LIMIT 1;
		IF extractor_fields IS NULL THEN
			RAISE EXCEPTION 'extractor "%" does not exist', NEW.extractor
				USING ERRCODE = 'undefined_object',
					HINT = 'Train one first with triage.train_extractor() (a classifier is not an extractor).';
		END IF;
		NEW.fields := coalesce(NEW.fields, extractor_fields);
		PERFORM triage_internal.check_answer_names(NEW.name, 'fields', NEW.fields, NEW.extractor, extractor_fields);
	ELSIF NEW.fields IS NOT NULL THEN
		RAISE EXCEPTION 'fields need an extractor' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF jsonb_typeof(NEW.prompt) <> 'object'
	   OR EXISTS (SELECT FROM jsonb_object_keys(NEW.prompt) AS p(key) WHERE p.key NOT IN ('version', 'system', 'instructions'))
	   OR jsonb_typeof(NEW.prompt->'system') NOT IN ('string', 'null')
	   OR jsonb_typeof(NEW.prompt->'instructions') NOT IN ('string', 'null') THEN
		RAISE EXCEPTION 'prompt of policy "%" must be {"version": ..., "system": "...", "instructions": "..."}', NEW.name
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF jsonb_typeof(NEW.thresholds) <> 'object'
	   OR EXISTS (SELECT FROM jsonb_object_keys(NEW.thresholds) AS t(key) WHERE t.key NOT IN ('default', 'labels'))
	   OR NOT NEW.thresholds ? 'default'
	   OR (NEW.thresholds ? 'default' AND (jsonb_typeof(NEW.thresholds->'default') <> 'number'
										   OR (NEW.thresholds->>'default')::float8 NOT BETWEEN 0 AND 1.001))
	   OR (NEW.thresholds ? 'labels' AND jsonb_typeof(NEW.thresholds->'labels') <> 'object') THEN
		RAISE EXCEPTION 'thresholds of policy "%" must be {"default": 0..1, "labels": {"label": 0..1, ...}}', NEW.name
			USING ERRCODE = 'invalid_parameter_value',
				HINT = 'A confidence below its threshold escalates the row; a threshold just above 1 escalates every row.';
	END IF;
	FOR k, v IN SELECT * FROM jsonb_each(coalesce(NEW.thresholds->'labels', '{}')) LOOP
		IF NEW.model IS NULL OR NOT k = ANY (model_labels) THEN
			RAISE EXCEPTION 'threshold for label "%" in policy "%", which its classifier does not have', k, NEW.name
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF jsonb_typeof(v) <> 'number' OR v::text::float8 NOT BETWEEN 0 AND 1.001 THEN
			RAISE EXCEPTION 'threshold of label "%" in policy "%" must be a number between 0 and 1, not %', k, NEW.name, v
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
	END LOOP;
	IF jsonb_typeof(NEW.rules) <> 'object' THEN
		RAISE EXCEPTION 'rules of policy "%" must be a JSON object', NEW.name
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR k, v IN SELECT * FROM jsonb_each(NEW.rules) LOOP
		IF k IN ('max_length', 'min_length') THEN
			IF jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]{1,9}$' THEN
				RAISE EXCEPTION 'rule % of policy "%" must be a whole number of characters, not %', k, NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSIF k IN ('escalate_if_matches', 'escalate_unless_matches') THEN
			IF jsonb_typeof(v) <> 'string' THEN
				RAISE EXCEPTION 'rule % of policy "%" must be a regular expression (a JSON string), not %', k, NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			BEGIN
				PERFORM '' ~* (v #>> '{}');
			EXCEPTION WHEN invalid_regular_expression THEN
				RAISE EXCEPTION 'rule % of policy "%" is not a valid regular expression: %', k, NEW.name, SQLERRM
					USING ERRCODE = 'invalid_regular_expression';
			END;
		ELSIF k = 'required_fields' THEN
			IF jsonb_typeof(v) <> 'array' OR EXISTS (SELECT FROM jsonb_array_elements(v) e WHERE jsonb_typeof(e) <> 'string') THEN
				RAISE EXCEPTION 'rule required_fields of policy "%" must be an array of field names, not %', NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			IF NEW.extractor IS NULL THEN
				RAISE EXCEPTION 'rule required_fields of policy "%" needs an extractor', NEW.name
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSIF k = 'min_field_confidence' THEN
			IF jsonb_typeof(v) <> 'number' OR v::text::float8 NOT BETWEEN 0 AND 1 THEN
				RAISE EXCEPTION 'rule min_field_confidence of policy "%" must be a number between 0 and 1, not %', NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			IF NEW.extractor IS NULL THEN
				RAISE EXCEPTION 'rule min_field_confidence of policy "%" needs an extractor', NEW.name
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		-- how the large model is asked: latency "batch" leaves the rows to
		-- batch-mode workers (the Batch API, at its price) for up to max_wait
		ELSIF k = 'latency' THEN
			IF v NOT IN ('"interactive"', '"batch"') THEN
				RAISE EXCEPTION 'rule latency of policy "%" must be "interactive" or "batch", not %', NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSIF k = 'max_wait' THEN
			IF triage_internal.json_interval(v) IS NULL THEN
				RAISE EXCEPTION 'rule max_wait of policy "%" must be a positive interval (a JSON string such as "24 hours"), not %', NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSIF k = 'budget' THEN
			PERFORM triage_internal.check_budget(NEW.name, v);
		-- what complete() does when the audit breaks the calibrated promise
		-- (src/sql/health.sql), and the audits a verdict needs
		ELSIF k = 'on_broken' THEN
			IF v NOT IN ('"warn"', '"tighten"') THEN
				RAISE EXCEPTION 'rule on_broken of policy "%" must be "warn" or "tighten", not %', NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSIF k = 'min_audits' THEN
			IF jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]{1,9}$' OR v::text::integer < 1 THEN
				RAISE EXCEPTION 'rule min_audits of policy "%" must be a whole number of audited rows (1 or more), not %', NEW.name, v
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSE
			RAISE EXCEPTION 'unknown rule "%" in policy "%"', k, NEW.name
				USING ERRCODE = 'invalid_parameter_value',
					HINT = 'Rules: max_length, min_length, escalate_if_matches, escalate_unless_matches, required_fields, min_field_confidence, latency, max_wait, budget, on_broken, min_audits.';
		END IF;
	END LOOP;
	NEW.updated_at := now();
	RETURN NEW;
END;
$$;
COMMENT ON FUNCTION triage_internal.check_policy() IS
	'Trigger: validates a policy as it is written (by create_policy or by hand) and fills in its default labels and fields.';
CREATE TRIGGER policies_check BEFORE INSERT OR UPDATE ON triage.policies
	FOR EACH ROW EXECUTE FUNCTION triage_internal.check_policy();

-- a policy in use stays: deleting it would leave attached tables failing on
-- every insert
CREATE FUNCTION triage_internal.check_policy_unused() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	tables text;
BEGIN
	SELECT string_agg(t::text, ', ') INTO tables FROM triage.attached_tables(OLD.name) t;
	IF tables IS NOT NULL THEN
		RAISE EXCEPTION 'policy "%" cannot be deleted: tables are attached to it (%)', OLD.name, tables
			USING ERRCODE = 'dependent_objects_still_exist',
				HINT = 'Detach them first with triage.detach().';
	END IF;
	RETURN OLD;
END;
$$;
COMMENT ON FUNCTION triage_internal.check_policy_unused() IS
	'Trigger: refuses to delete a policy that tables are attached to.';
CREATE TRIGGER policies_in_use BEFORE DELETE ON triage.policies
	FOR EACH ROW EXECUTE FUNCTION triage_internal.check_policy_unused();
-- every session routes with the edited policy from its next statement
CREATE TRIGGER policies_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON triage.policies
	FOR EACH STATEMENT EXECUTE FUNCTION triage_internal.model_store_changed();

-- Queueing rows under a policy spends its large-model budget and adds to
-- its model's training examples: only its owner and the roles granted it
-- may (checked by attach, process_table, enqueue and the row trigger)
CREATE TABLE triage.policy_grants (
	policy text NOT NULL REFERENCES triage.policies (name) ON UPDATE CASCADE ON DELETE CASCADE,
	grantee regrole NOT NULL,
	PRIMARY KEY (policy, grantee)
);
COMMENT ON TABLE triage.policy_grants IS
	'Roles (besides its owner) that may route rows under a policy: triage.grant_policy().';
SELECT pg_catalog.pg_extension_config_dump('triage.policy_grants', '');
CREATE TRIGGER policy_grants_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON triage.policy_grants
	FOR EACH STATEMENT EXECUTE FUNCTION triage_internal.model_store_changed();

CREATE FUNCTION triage.grant_policy(policy text, role regrole) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
	IF NOT EXISTS (SELECT FROM triage.policies p WHERE p.name = grant_policy.policy) THEN
		RAISE EXCEPTION 'policy "%" does not exist', policy
			USING ERRCODE = 'undefined_object', HINT = 'Create one with triage.create_policy().';
	END IF;
	INSERT INTO triage.policy_grants (policy, grantee) VALUES (policy, role) ON CONFLICT DO NOTHING;
END;
$$;
COMMENT ON FUNCTION triage.grant_policy(text, regrole) IS
	'Lets role (and its members) route rows under policy: attach tables to it, queue escalations, train its model with their answers.';

CREATE FUNCTION triage.may_use_policy(policy text, role oid) RETURNS boolean
	AS 'MODULE_PATHNAME', 'triage_may_use_policy' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION triage.may_use_policy(text, oid) IS
	'Whether role may route rows under policy: its owner, a role granted it, or a member of either.';

CREATE FUNCTION triage.revoke_policy(policy text, role regrole) RETURNS void
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
	DELETE FROM triage.policy_grants g WHERE g.policy = revoke_policy.policy AND g.grantee = revoke_policy.role
$$;
COMMENT ON FUNCTION triage.revoke_policy(text, regrole) IS
	'Takes back triage.grant_policy(): rows of role''s attached tables are no longer queued under policy.';

CREATE FUNCTION triage.create_policy(name text, model text, labels text[] DEFAULT NULL,
									 threshold real DEFAULT 0.5, rules jsonb DEFAULT '{}',
									 prompt jsonb DEFAULT NULL, audit_rate real DEFAULT 0,
									 max_attempts integer DEFAULT 5, extractor text DEFAULT NULL)
	RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
	IF model IS NULL AND extractor IS NULL THEN
		RAISE EXCEPTION 'a policy needs a classifier (model), an extractor, or both'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- checked, and labels and fields defaulted, by triage_internal.check_policy(), as
	-- for a policy written with INSERT or UPDATE
	INSERT INTO triage.policies (name, model, extractor, labels, thresholds, rules, prompt,
								 audit_rate, max_attempts)
	VALUES (name, model, extractor, labels,
			jsonb_build_object('default', threshold), coalesce(rules, '{}'),
			coalesce(prompt, jsonb_build_object(
				'version', 1,
				'system', CASE WHEN model IS NULL
							   THEN 'You extract fields from business text. Answer with JSON only.'
							   ELSE 'You label business text. Answer with JSON only.' END)),
			audit_rate, max_attempts);
END;
$$;
COMMENT ON FUNCTION triage.create_policy(text, text, text[], real, jsonb, jsonb, real, integer, text) IS
	'Creates a routing policy: a classifier (model) with its allowed labels (default: the model''s) and confidence threshold, and/or a field extractor (model NULL: an extraction policy, whose output is the fields); rules, prompt, audit rate and attempts.';

