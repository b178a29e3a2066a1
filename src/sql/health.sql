-- pg_triage: the promise checked in production (#16): audits against the calibration
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)
--
-- calibrate() promises a kept accuracy (target_accuracy, at a confidence).
-- The audit sample sends confident rows to the large model anyway; when it
-- answers one, complete() counts whether the small model's label was the
-- same (triage_internal.record_audit).  triage.policy_health compares the
-- counts with the promise; a transition to "broken" raises a WARNING, a
-- NOTIFY triage_policy_health and, with rules->>'on_broken' = 'tighten',
-- raises the threshold to the next point of the stored curve.
--
-- The counts are kept per policy, model version and thresholds in force:
-- a new version, a recalibration or a tightening starts new counts, since
-- each is a new promise to check.  An audited row counts only if its small
-- confidence reaches the thresholds in force when it is answered (a row
-- queued under a lower, older threshold is no sample of what is kept now).

-- Promise health ------------------------------------------------------------------

-- One row per policy, model version and thresholds, updated in place by
-- complete() (INSERT ... ON CONFLICT: two workers answering audited rows of
-- one policy wait for each other's commit only there)
CREATE TABLE triage.policy_audits (
	policy text NOT NULL REFERENCES triage.policies (name) ON UPDATE CASCADE ON DELETE CASCADE,
	model text NOT NULL,
	version integer NOT NULL,
	thresholds jsonb NOT NULL,
	audited bigint NOT NULL DEFAULT 0,
	agreed bigint NOT NULL DEFAULT 0 CHECK (agreed <= audited),
	verdict text,				-- the last verdict complete() saw, for its transitions
	first_at timestamptz NOT NULL DEFAULT now(),
	last_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (policy, model, version, thresholds)
);
COMMENT ON TABLE triage.policy_audits IS
	'Audited rows the large model answered and how many of its labels agreed with the small model''s, per policy, model version and thresholds in force (written by complete()).';
SELECT pg_catalog.pg_extension_config_dump('triage.policy_audits', '');

-- The counters of triage.policy_counters when a policy's thresholds were
-- last set (calibrated, tightened or edited): the kept share "now" is of
-- the rows routed since
CREATE TABLE triage.policy_baselines (
	policy text PRIMARY KEY REFERENCES triage.policies (name) ON UPDATE CASCADE ON DELETE CASCADE,
	since timestamptz NOT NULL DEFAULT now(),
	seen bigint NOT NULL,
	escalated bigint NOT NULL
);
COMMENT ON TABLE triage.policy_baselines IS
	'Per policy, the routed and escalated counts of triage.policy_counters when its thresholds were last set: policy_health''s kept share is of the rows since.';
SELECT pg_catalog.pg_extension_config_dump('triage.policy_baselines', '');

CREATE TABLE triage.policy_health_events (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now(),
	policy text NOT NULL REFERENCES triage.policies (name) ON UPDATE CASCADE ON DELETE CASCADE,
	model text NOT NULL,
	version integer NOT NULL,
	thresholds jsonb NOT NULL,	-- in force when the promise broke
	audited bigint NOT NULL,
	agreed bigint NOT NULL,
	kept_accuracy_upper real NOT NULL,
	target_accuracy real NOT NULL,
	action text NOT NULL CHECK (action IN ('warned', 'tightened', 'nothing tighter')),
	new_thresholds jsonb		-- what it was tightened to
);
COMMENT ON TABLE triage.policy_health_events IS
	'Each time a policy''s kept-accuracy promise became broken (the audit''s upper bound below the target): the counts, and whether the threshold was tightened; the id is the payload of NOTIFY triage_policy_health.';
SELECT pg_catalog.pg_extension_config_dump('triage.policy_health_events', '');
SELECT pg_catalog.pg_extension_config_dump('triage.policy_health_events_id_seq', '');

-- The two-sided Wilson interval of successes / trials at a confidence
-- (z = the (1 + confidence) / 2 normal quantile): each end is a one-sided
-- bound at (1 + confidence) / 2.  The upper end is 1 - the lower end of the
-- failures.  [0, 1] when there are no trials.
CREATE FUNCTION triage_internal.wilson_interval(successes bigint, trials bigint, confidence float8,
												OUT lower float8, OUT upper float8)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT triage_internal.wilson_lower(successes, trials, z),
		   CASE WHEN trials = 0 THEN 1 ELSE 1 - triage_internal.wilson_lower(trials - successes, trials, z) END
	  FROM (SELECT triage_internal.normal_quantile((1 + confidence) / 2) AS z) q
$$;
COMMENT ON FUNCTION triage_internal.wilson_interval(bigint, bigint, float8) IS
	'The two-sided Wilson interval of successes / trials at confidence ([0, 1] without trials).';

-- The verdict on a promise from the audit's counts: holding (the interval's
-- lower end reaches the target), broken (its upper end is below it), else
-- uncertain; uncertain also below min_audits (checked after every audit,
-- the interval alone would cry wolf on a few early disagreements: see the
-- README), uncalibrated without a target
CREATE FUNCTION triage_internal.promise_verdict(agreed bigint, audited bigint, target float8,
												confidence float8, min_audits integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN target IS NULL THEN 'uncalibrated'
				WHEN coalesce(audited, 0) < greatest(coalesce(min_audits, 1), 1) THEN 'uncertain'
				WHEN w.lower >= target THEN 'holding'
				WHEN w.upper < target THEN 'broken'
				ELSE 'uncertain' END
	  FROM triage_internal.wilson_interval(coalesce(agreed, 0), coalesce(audited, 0),
										   coalesce(confidence, 0.9)) w
$$;
COMMENT ON FUNCTION triage_internal.promise_verdict(bigint, bigint, float8, float8, integer) IS
	'holding, broken or uncertain: the Wilson interval of agreed / audited at confidence against target (uncertain below min_audits; uncalibrated without a target).';

-- Is a kept share of k of n rows further from p0 (a share measured on n0
-- calibration rows) than chance allows?  The pooled two-proportion z
-- statistic; drift when |z| is above the (1 + confidence) / 2 quantile (a
-- two-sided test at level 1 - confidence).  NULL without rows.
CREATE FUNCTION triage_internal.share_drift_z(k bigint, n bigint, p0 float8, n0 bigint) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN se > 0 THEN (k::float8 / n - p0) / se WHEN se = 0 THEN 0 END
	  FROM (SELECT CASE WHEN n > 0 AND n0 > 0 AND p0 IS NOT NULL
						THEN sqrt(pooled * (1 - pooled) * (1.0 / n + 1.0 / n0)) END AS se
			  FROM (SELECT greatest(0, least(1, (k + p0 * n0) / nullif(n + n0, 0)))::float8 AS pooled) q) s
$$;
COMMENT ON FUNCTION triage_internal.share_drift_z(bigint, bigint, float8, bigint) IS
	'The pooled two-proportion z statistic of a share k / n against p0 measured on n0 rows (NULL without rows).';

-- The kept share calibration expects at a policy's thresholds: 1 - its
-- escalation_rate while the threshold is the calibrated one, else the
-- stored curve's point nearest the threshold in force (a tightened
-- policy); audited rows count as escalated, so times 1 - audit_rate
CREATE FUNCTION triage_internal.expected_kept_share(p triage.policies) RETURNS float8
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT (1 - p.audit_rate::float8) * (1 - CASE
		WHEN abs((p.thresholds->>'default')::float8 - (p.calibration->>'threshold')::float8) < 1e-4
			THEN (p.calibration->>'escalation_rate')::float8
		ELSE (SELECT (c->>'escalation_rate')::float8
				FROM pg_catalog.jsonb_array_elements(p.calibration->'curve') c
			   ORDER BY abs((c->>'threshold')::float8 - (p.thresholds->>'default')::float8), (c->>'threshold')::float8
			   LIMIT 1) END)
	 WHERE p.calibration ? 'escalation_rate'
$$;
COMMENT ON FUNCTION triage_internal.expected_kept_share(triage.policies) IS
	'The share of routed rows a policy keeps by its calibration at the thresholds in force (the curve''s nearest point once tightened), times 1 - audit_rate.';

-- The model version that answers for a policy now: the deployed one, else
-- the latest
CREATE FUNCTION triage_internal.answering_version(model text) RETURNS integer
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
	SELECT coalesce((SELECT d.version FROM triage.deployments d WHERE d.name = model),
					(SELECT max(m.version) FROM triage.models m WHERE m.name = model))
$$;
COMMENT ON FUNCTION triage_internal.answering_version(text) IS
	'The version of a model that classify() uses: the deployed one, else the latest.';

-- The thresholds one step tighter along the stored calibration curve: the
-- least curve threshold above the one in force whose kept accuracy is
-- higher than at the one in force, else (nothing more accurate) the
-- curve's last point, which keeps nothing; per-label thresholds are raised
-- to it too.  NULL when the threshold is already there.
CREATE FUNCTION triage_internal.tighter_thresholds(p triage.policies) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	WITH curve AS (
		SELECT (c->>'threshold')::float8 AS t, (c->>'kept_accuracy')::float8 AS acc
		  FROM pg_catalog.jsonb_array_elements(
				CASE WHEN pg_catalog.jsonb_typeof(p.calibration->'curve') = 'array' THEN p.calibration->'curve' END) c),
	now_at AS (
		SELECT (p.thresholds->>'default')::float8 AS t,
			   (SELECT acc FROM curve WHERE curve.t <= (p.thresholds->>'default')::float8 + 1e-4
				 ORDER BY curve.t DESC LIMIT 1) AS acc),
	next AS (
		SELECT coalesce(
			(SELECT min(curve.t) FROM curve, now_at
			  WHERE curve.t > now_at.t + 1e-4 AND curve.acc > coalesce(now_at.acc, 0)),
			(SELECT max(curve.t) FROM curve, now_at WHERE curve.t > now_at.t + 1e-4)) AS t)
	SELECT pg_catalog.jsonb_build_object('default', next.t,
		'labels', coalesce((SELECT pg_catalog.jsonb_object_agg(l.key, greatest(l.value::text::float8, next.t))
							  FROM pg_catalog.jsonb_each(coalesce(p.thresholds->'labels', '{}')) l), '{}'))
	  FROM next WHERE next.t IS NOT NULL
$$;
COMMENT ON FUNCTION triage_internal.tighter_thresholds(triage.policies) IS
	'A policy''s thresholds one step up its stored calibration curve (to more kept accuracy), or NULL at the end of the curve.';

-- For complete() only (as the extension's owner): counts an audited row
-- the large model answered under its policy, and acts on a transition of
-- the verdict to broken: a WARNING, an event, NOTIFY triage_policy_health
-- with the event's id (any role may LISTEN: no policy name in the payload),
-- and with rules->>'on_broken' = 'tighten' the next thresholds of the curve.
-- Cheap: one upsert, and the rest only when the verdict changes.
CREATE FUNCTION triage_internal.record_audit(policy text, small_answer jsonb, label text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
	p triage.policies;
	small_label text := small_answer->>'label';
	a triage.policy_audits;
	target float8;
	confidence float8;
	new_verdict text;
	w record;
	tighter jsonb;
	action text := 'warned';
	event bigint;
BEGIN
	SELECT * INTO p FROM triage.policies x WHERE x.name = record_audit.policy;
	IF NOT FOUND OR p.model IS NULL OR small_label IS NULL OR label IS NULL THEN
		RETURN;
	END IF;
	-- a sample of what is kept now only if the thresholds in force keep it
	IF coalesce((small_answer->>'confidence')::float8, 0)
	   < coalesce((p.thresholds->'labels'->>small_label)::float8, (p.thresholds->>'default')::float8) THEN
		RETURN;
	END IF;
	INSERT INTO triage.policy_audits AS x (policy, model, version, thresholds, audited, agreed)
	VALUES (p.name, p.model, triage_internal.answering_version(p.model), p.thresholds, 1, (small_label = label)::int)
	ON CONFLICT ON CONSTRAINT policy_audits_pkey DO UPDATE
	   SET audited = x.audited + 1, agreed = x.agreed + excluded.agreed, last_at = now()
	RETURNING * INTO a;
	target := (p.calibration->>'target_accuracy')::float8;
	confidence := coalesce((p.calibration->>'confidence')::float8, 0.9);
	new_verdict := triage_internal.promise_verdict(a.agreed, a.audited, target, confidence,
											   coalesce((p.rules->>'min_audits')::integer, 20));
	IF new_verdict IS NOT DISTINCT FROM a.verdict THEN
		RETURN;
	END IF;
	-- the row is locked by the upsert: one transaction sees each transition
	UPDATE triage.policy_audits x SET verdict = new_verdict
	 WHERE (x.policy, x.model, x.version, x.thresholds) = (a.policy, a.model, a.version, a.thresholds);
	IF new_verdict <> 'broken' THEN
		RETURN;
	END IF;
	w := triage_internal.wilson_interval(a.agreed, a.audited, confidence);
	IF p.rules->>'on_broken' = 'tighten' THEN
		tighter := triage_internal.tighter_thresholds(p);
		IF tighter IS NULL THEN
			action := 'nothing tighter';
		ELSE
			-- checked by check_policy; every session routes with it from its next statement
			UPDATE triage.policies x SET thresholds = tighter WHERE x.name = p.name;
			action := 'tightened';
		END IF;
	END IF;
	INSERT INTO triage.policy_health_events (policy, model, version, thresholds, audited, agreed,
											 kept_accuracy_upper, target_accuracy, action, new_thresholds)
	VALUES (p.name, a.model, a.version, a.thresholds, a.audited, a.agreed, w.upper, target, action, tighter)
	RETURNING id INTO event;
	RAISE WARNING 'pg_triage: the kept-accuracy promise of policy "%" is broken: % of % audited rows agreed with the large model (% to % at % confidence), below the target %',
		p.name, a.agreed, a.audited, round(w.lower::numeric, 4), round(w.upper::numeric, 4), confidence, target
		USING DETAIL = format('model %s version %s, thresholds %s; %s', a.model, a.version, a.thresholds,
							  CASE action WHEN 'tightened' THEN 'tightened to ' || tighter::text
										  WHEN 'nothing tighter' THEN 'already at the end of the calibration curve'
										  ELSE 'rules->>''on_broken'' is not ''tighten'': thresholds unchanged' END),
			HINT = 'Recalibrate the policy (triage.calibrate) or deploy a better model; see triage.policy_health.';
	PERFORM pg_catalog.pg_notify('triage_policy_health', event::text);
END;
$$;
COMMENT ON FUNCTION triage_internal.record_audit(text, jsonb, text) IS
	'For complete() only: counts an audited row''s agreement in triage.policy_audits; on a transition to broken, a WARNING, an event, NOTIFY triage_policy_health (the event id) and, with on_broken tighten, tighter thresholds.';
REVOKE ALL ON FUNCTION triage_internal.record_audit(text, jsonb, text) FROM PUBLIC;

-- Trigger: a policy's thresholds were set (created, calibrated, tightened
-- or edited): the kept share is counted from here.  SECURITY DEFINER: an
-- admin calibrating needs no rights on triage.policy_baselines.
CREATE FUNCTION triage_internal.reset_policy_baseline() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO triage.policy_baselines AS b (policy, since, seen, escalated)
	SELECT NEW.name, now(), coalesce(sum(c.seen), 0), coalesce(sum(c.escalated), 0)
	  FROM triage.policy_counters c WHERE c.policy = NEW.name
	ON CONFLICT (policy) DO UPDATE SET since = excluded.since, seen = excluded.seen, escalated = excluded.escalated;
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION triage_internal.reset_policy_baseline() IS
	'Trigger: records triage.policy_counters'' sums for a policy whose thresholds or calibration were just set.';
REVOKE ALL ON FUNCTION triage_internal.reset_policy_baseline() FROM PUBLIC;
-- (Not on INSERT: a new policy has no baseline, so its kept share counts
-- from its first row; and pg_restore, which inserts the policies before it
-- copies triage.policy_baselines, would find a row already there.)
CREATE TRIGGER policies_baseline_update AFTER UPDATE OF thresholds, calibration ON triage.policies
	FOR EACH ROW WHEN (NEW.thresholds IS DISTINCT FROM OLD.thresholds OR NEW.calibration IS DISTINCT FROM OLD.calibration)
	EXECUTE FUNCTION triage_internal.reset_policy_baseline();

-- Per policy, what the audit says of the promise and whether routing keeps
-- the share calibration said.  security_barrier: a role sees the policies
-- it owns (or is a member of the owner), triage_admin sees every one.
CREATE VIEW triage.policy_health WITH (security_barrier) AS
SELECT p.name AS policy,
	   p.model,
	   v.version,
	   (p.thresholds->>'default')::real AS threshold,
	   (p.calibration->>'target_accuracy')::real AS target_accuracy,
	   k.confidence::real AS confidence,
	   coalesce(a.audited, 0) AS audited,
	   coalesce(a.agreed, 0) AS agreed,
	   round(a.agreed::numeric / nullif(a.audited, 0), 4) AS kept_accuracy,
	   round(w.lower::numeric, 4) AS kept_accuracy_lower,
	   round(w.upper::numeric, 4) AS kept_accuracy_upper,
	   triage_internal.promise_verdict(a.agreed, a.audited, (p.calibration->>'target_accuracy')::float8,
									   k.confidence, coalesce((p.rules->>'min_audits')::integer, 20)) AS verdict,
	   r.routed AS rows_routed,
	   round(r.kept::numeric / nullif(r.routed, 0), 4) AS kept_share,
	   round(k.expected::numeric, 4) AS calibrated_kept_share,
	   round(d.z::numeric, 2) AS drift_z,
	   abs(d.z) > triage_internal.normal_quantile((1 + k.confidence) / 2) AS drift,
	   b.since,
	   (SELECT max(e.at) FROM triage.policy_health_events e
		 WHERE e.policy = p.name AND e.action = 'tightened'
		   AND e.at >= coalesce(b.since, '-infinity')) AS tightened_at
  FROM triage.policies p
  LEFT JOIN triage.policy_baselines b ON b.policy = p.name
  CROSS JOIN LATERAL (SELECT triage_internal.answering_version(p.model) AS version) v
  LEFT JOIN triage.policy_audits a
	ON a.policy = p.name AND a.model = p.model AND a.version = v.version AND a.thresholds = p.thresholds
  CROSS JOIN LATERAL (SELECT coalesce((p.calibration->>'confidence')::float8, 0.9) AS confidence,
							 triage_internal.expected_kept_share(p) AS expected) k
  CROSS JOIN LATERAL triage_internal.wilson_interval(coalesce(a.agreed, 0), coalesce(a.audited, 0), k.confidence) w
  CROSS JOIN LATERAL (SELECT greatest(0, coalesce(sum(c.seen), 0) - coalesce(b.seen, 0))::bigint AS routed,
							 greatest(0, coalesce(sum(c.seen), 0) - coalesce(b.seen, 0)
										 - greatest(0, coalesce(sum(c.escalated), 0) - coalesce(b.escalated, 0)))::bigint AS kept
						FROM triage.policy_counters c WHERE c.policy = p.name) r
  CROSS JOIN LATERAL (SELECT triage_internal.share_drift_z(r.kept, r.routed, k.expected,
														   (p.calibration->>'rows')::bigint) AS z) d
 WHERE pg_catalog.pg_has_role(p.owner, 'USAGE') OR pg_catalog.pg_has_role('triage_admin', 'USAGE');
COMMENT ON VIEW triage.policy_health IS
	'Per policy: the deployed version, the audit''s agreement with the large model and its Wilson interval at the calibration''s confidence, the verdict on the promised kept accuracy (holding, uncertain, broken, uncalibrated), the kept share since the thresholds were set against calibration''s and whether it drifted (two-sided two-proportion test), and when it was last tightened.';
