-- pg_triage: what the large model costs, at interactive and batch prices,
-- and the spending limits of policies
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Prices ------------------------------------------------------------------------

-- The prices per 1,000 tokens in effect: the Batch API's are their own
-- settings, by default half the interactive ones (OpenAI's discount)
CREATE FUNCTION triage_internal.llm_prices(batch boolean, OUT prompt numeric, OUT completion numeric)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN batch AND s.batch_prompt >= 0 THEN s.batch_prompt
				WHEN batch THEN s.prompt / 2 ELSE s.prompt END,
		   CASE WHEN batch AND s.batch_completion >= 0 THEN s.batch_completion
				WHEN batch THEN s.completion / 2 ELSE s.completion END
	  FROM (SELECT coalesce(nullif(current_setting('triage.llm_prompt_price_per_1k', true), '')::numeric, 0) AS prompt,
				   coalesce(nullif(current_setting('triage.llm_completion_price_per_1k', true), '')::numeric, 0) AS completion,
				   coalesce(nullif(current_setting('triage.llm_batch_prompt_price_per_1k', true), '')::numeric, -1) AS batch_prompt,
				   coalesce(nullif(current_setting('triage.llm_batch_completion_price_per_1k', true), '')::numeric, -1) AS batch_completion) s
$$;
COMMENT ON FUNCTION triage_internal.llm_prices(boolean) IS
	'The prices per 1,000 prompt and completion tokens: triage.llm_prompt_price_per_1k and triage.llm_completion_price_per_1k, or for batch answers triage.llm_batch_*_price_per_1k (unset: half of those).';

-- The cost of one answer's usage (as usage_counts keeps it)
CREATE FUNCTION triage_internal.llm_cost(usage jsonb, batch boolean) RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT coalesce((usage->>'prompt_tokens')::numeric, 0) / 1000 * p.prompt
		   + coalesce((usage->>'completion_tokens')::numeric, 0) / 1000 * p.completion
	  FROM triage_internal.llm_prices(batch) p
$$;
COMMENT ON FUNCTION triage_internal.llm_cost(jsonb, boolean) IS
	'What an answer''s usage cost, at the interactive or the batch prices.';

-- Budgets -----------------------------------------------------------------------

-- what the budgets read: the answers of a policy in the last hour or day
CREATE INDEX escalations_done ON triage.escalations (policy, done_at) WHERE status = 'done';

CREATE FUNCTION triage_internal.budgets()
	RETURNS TABLE (policy text, per interval, max_tokens bigint, max_cost numeric, tokens bigint,
				   cost numeric, when_over text, over boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT p.name, w.per, (p.rules #>> '{budget,tokens}')::bigint, (p.rules #>> '{budget,cost}')::numeric,
		   s.tokens, round(s.cost, 6), coalesce(p.rules #>> '{budget,when_over}', 'wait'),
		   coalesce(s.tokens >= (p.rules #>> '{budget,tokens}')::bigint, false)
		   OR coalesce(s.cost >= (p.rules #>> '{budget,cost}')::numeric, false)
	  FROM triage.policies p
	 CROSS JOIN LATERAL (SELECT CASE p.rules #>> '{budget,per}' WHEN 'hour' THEN interval '1 hour'
								ELSE interval '1 day' END AS per) w
	 CROSS JOIN LATERAL (SELECT coalesce(sum((e.usage->>'total_tokens')::bigint), 0)::bigint AS tokens,
								coalesce(sum(triage_internal.llm_cost(e.usage, e.batch IS NOT NULL)), 0) AS cost
						   FROM triage.escalations e
						  WHERE e.policy = p.name AND e.status = 'done' AND e.done_at > now() - w.per) s
	 WHERE p.rules ? 'budget'
$$;
COMMENT ON FUNCTION triage_internal.budgets() IS
	'Each policy with a budget rule: its window, limits, the tokens and cost of its answers in the window, what happens when over, and whether it is.';

CREATE VIEW triage.budget_status AS SELECT * FROM triage_internal.budgets();
COMMENT ON VIEW triage.budget_status IS
	'The policies with a budget (rules budget): the limit, what their answers used in the last hour or day, and whether claim() holds their rows back (when_over wait) or keeps the small model''s answer (keep_small).';
