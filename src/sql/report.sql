-- pg_triage: the report page of a policy (triage.report) and the SVG it draws
-- (part of the extension script: the Makefile concatenates src/sql/*.sql in the order of SQL_PARTS)

-- Report ------------------------------------------------------------------------

-- The page is XHTML-compatible HTML: one file, inline CSS and SVG, no
-- script, no URL, no font to fetch, so that it opens from disk, prints, and
-- parses as XML (the test parses it so).  Every text that comes from data
-- (labels, reasons, errors, worker names) goes through html_escape().

-- Text as HTML/XML character data or an attribute value: & < > " ' escaped,
-- and the control characters XML forbids replaced (an error message may
-- carry any byte a reply had)
CREATE FUNCTION triage_internal.html_escape(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT regexp_replace(
		replace(replace(replace(replace(replace(coalesce(value, ''), '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
						'"', '&quot;'), '''', '&#39;'),
		'[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]', U&'\FFFD', 'g')
$$;
COMMENT ON FUNCTION triage_internal.html_escape(text) IS
	'Text escaped for HTML and XML (& < > " '' and the control characters XML forbids); NULL gives the empty string.';

-- A value from lo..hi as a pixel between a and b (clamped to the axis)
CREATE FUNCTION triage_internal.svg_scale(v float8, lo float8, hi float8, a float8, b float8) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT round(coalesce(a + (least(greatest(v, lo), hi) - lo) / nullif(hi - lo, 0) * (b - a), a)::numeric, 1)
$$;
COMMENT ON FUNCTION triage_internal.svg_scale(float8, float8, float8, float8, float8) IS
	'A value of the range lo..hi as a pixel coordinate between a and b, clamped to the range.';

-- A line chart, 520 x 300 pixels.  series: [{"name", "class", "points":
-- [[x, y], ...], "dots": bool}], drawn in order (CSS classes s1, s2, ref
-- give the colors); marks: [{"x", "y", "label"}], circled and labeled.
CREATE FUNCTION triage_internal.svg_line_chart(series jsonb, x_title text, y_title text, x_lo float8, x_hi float8,
											   y_lo float8, y_hi float8, marks jsonb DEFAULT '[]')
	RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	w constant float8 := 520;
	h constant float8 := 300;
	l constant float8 := 56;	-- margins: the axes' numbers and titles, the legend on the right
	r constant float8 := 150;
	t constant float8 := 12;
	b constant float8 := 44;
	svg text;
	s jsonb;
	m jsonb;
	pts text;
	x numeric;
	y numeric;
	i integer;
	n integer := 0;
BEGIN
	svg := format('<svg class="chart" width="%s" height="%s" viewBox="0 0 %s %s" role="img" aria-label="%s">',
				  w, h, w, h, triage_internal.html_escape(y_title || ' by ' || x_title));
	FOR i IN 0 .. 4 LOOP
		x := triage_internal.svg_scale(x_lo + (x_hi - x_lo) * i / 4, x_lo, x_hi, l, w - r);
		y := triage_internal.svg_scale(y_lo + (y_hi - y_lo) * i / 4, y_lo, y_hi, h - b, t);
		svg := svg || format('<line class="grid" x1="%s" y1="%s" x2="%s" y2="%s"/>', x, t, x, h - b)
				   || format('<text class="tick" x="%s" y="%s" text-anchor="middle">%s</text>', x, h - b + 14,
							 round((x_lo + (x_hi - x_lo) * i / 4)::numeric, 2))
				   || format('<line class="grid" x1="%s" y1="%s" x2="%s" y2="%s"/>', l, y, w - r, y)
				   || format('<text class="tick" x="%s" y="%s" text-anchor="end">%s</text>', l - 4, y + 4,
							 round((y_lo + (y_hi - y_lo) * i / 4)::numeric, 2));
	END LOOP;
	svg := svg || format('<rect class="frame" x="%s" y="%s" width="%s" height="%s"/>', l, t, w - r - l, h - b - t)
			   || format('<text class="title" x="%s" y="%s" text-anchor="middle">%s</text>', (l + w - r) / 2, h - 6,
						 triage_internal.html_escape(x_title))
			   || format('<text class="title" transform="translate(14 %s) rotate(-90)" text-anchor="middle">%s</text>',
						 (t + h - b) / 2, triage_internal.html_escape(y_title));
	FOR s IN SELECT * FROM jsonb_array_elements(coalesce(series, '[]')) LOOP
		n := n + 1;
		SELECT string_agg(triage_internal.svg_scale((p->>0)::float8, x_lo, x_hi, l, w - r) || ','
						  || triage_internal.svg_scale((p->>1)::float8, y_lo, y_hi, h - b, t), ' ' ORDER BY o)
		  INTO pts
		  FROM jsonb_array_elements(s->'points') WITH ORDINALITY AS q(p, o)
		 WHERE jsonb_typeof(p->0) = 'number' AND jsonb_typeof(p->1) = 'number';
		IF pts IS NOT NULL THEN
			svg := svg || format('<polyline class="%s" points="%s"/>', triage_internal.html_escape(s->>'class'), pts);
			IF (s->>'dots')::boolean THEN
				svg := svg || (SELECT string_agg(format('<circle class="%s" cx="%s" cy="%s" r="3"/>',
														 triage_internal.html_escape(s->>'class'), split_part(xy, ',', 1),
														 split_part(xy, ',', 2)), '')
								 FROM unnest(string_to_array(pts, ' ')) AS xy);
			END IF;
		END IF;
		svg := svg || format('<line class="%s" x1="%s" y1="%s" x2="%s" y2="%s"/><text x="%s" y="%s">%s</text>',
							 triage_internal.html_escape(s->>'class'), w - r + 10, t + 8 + 18 * n, w - r + 30,
							 t + 8 + 18 * n, w - r + 34, t + 12 + 18 * n, triage_internal.html_escape(s->>'name'));
	END LOOP;
	FOR m IN SELECT * FROM jsonb_array_elements(coalesce(marks, '[]'))
			  WHERE jsonb_typeof(value->'x') = 'number' AND jsonb_typeof(value->'y') = 'number' LOOP
		x := triage_internal.svg_scale((m->>'x')::float8, x_lo, x_hi, l, w - r);
		y := triage_internal.svg_scale((m->>'y')::float8, y_lo, y_hi, h - b, t);
		svg := svg || format('<circle class="mark" cx="%s" cy="%s" r="6"/><text class="marklabel" x="%s" y="%s">%s</text>',
							 x, y, x + 9, y - 8, triage_internal.html_escape(m->>'label'));
	END LOOP;
	RETURN svg || '</svg>';
END;
$$;
COMMENT ON FUNCTION triage_internal.svg_line_chart(jsonb, text, text, float8, float8, float8, float8, jsonb) IS
	'An SVG line chart of series ([{"name", "class", "points": [[x, y], ...], "dots"}]) on the axes x_lo..x_hi and y_lo..y_hi, with marks ([{"x", "y", "label"}]) circled; all text escaped.';

-- Grouped bars, 520 x 260 pixels: one group per category, one bar per series
-- (CSS classes b1, b2, ...); values: [[v of series 1, v of series 2, ...], ...]
-- per category.  Each bar has its count as a tooltip; the axes are titled
-- x_title and y_title (none when NULL).
CREATE FUNCTION triage_internal.svg_bar_chart(categories text[], series text[], vals jsonb,
											  x_title text DEFAULT NULL, y_title text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	w constant float8 := 520;
	h constant float8 := 260;
	l constant float8 := 48;
	r constant float8 := 110;
	t constant float8 := 12;
	b constant float8 := 56;
	ncat integer := coalesce(cardinality(categories), 0);
	nser integer := coalesce(cardinality(series), 0);
	top float8;
	group_w float8;
	bar_w float8;
	svg text;
	v float8;
	y numeric;
	i integer;
	j integer;
	label_every integer;
BEGIN
	SELECT greatest(1, max(x::float8)) INTO top
	  FROM jsonb_array_elements(coalesce(vals, '[]')) AS c, jsonb_array_elements_text(c) AS x;
	-- a round top: 1, 2 or 5 times a power of ten
	top := (SELECT min(m * 10 ^ floor(log(top))) FROM unnest(ARRAY[1, 2, 5, 10]) AS m WHERE m * 10 ^ floor(log(top)) >= top);
	svg := format('<svg class="chart" width="%s" height="%s" viewBox="0 0 %s %s" role="img" aria-label="%s">',
				  w, h, w, h, triage_internal.html_escape(array_to_string(series, ', ')));
	FOR i IN 0 .. 4 LOOP
		y := triage_internal.svg_scale(top * i / 4, 0, top, h - b, t);
		svg := svg || format('<line class="grid" x1="%s" y1="%s" x2="%s" y2="%s"/>', l, y, w - r, y)
				   || format('<text class="tick" x="%s" y="%s" text-anchor="end">%s</text>', l - 4, y + 4,
							 round((top * i / 4)::numeric, 1)::float8);
	END LOOP;
	svg := svg || format('<rect class="frame" x="%s" y="%s" width="%s" height="%s"/>', l, t, w - r - l, h - b - t);
	IF x_title IS NOT NULL THEN
		svg := svg || format('<text class="title" x="%s" y="%s" text-anchor="middle">%s</text>', (l + w - r) / 2, h - 6,
							 triage_internal.html_escape(x_title));
	END IF;
	IF y_title IS NOT NULL THEN
		svg := svg || format('<text class="title" transform="translate(12 %s) rotate(-90)" text-anchor="middle">%s</text>',
							 (t + h - b) / 2, triage_internal.html_escape(y_title));
	END IF;
	IF ncat > 0 AND nser > 0 THEN
		group_w := (w - r - l) / ncat;
		label_every := greatest(1, ceil((coalesce((SELECT max(length(c)) FROM unnest(categories) AS c), 0) * 7 + 10) / group_w))::integer;
		bar_w := greatest(group_w * 0.8 / nser, 0.5);
		FOR i IN 1 .. ncat LOOP
			FOR j IN 1 .. nser LOOP
				v := coalesce((vals->(i - 1)->>(j - 1))::float8, 0);
				y := triage_internal.svg_scale(v, 0, top, h - b, t);
				svg := svg || format('<rect class="b%s" x="%s" y="%s" width="%s" height="%s"><title>%s</title></rect>',
									 j, round((l + group_w * (i - 1) + group_w * 0.1 + bar_w * (j - 1))::numeric, 1), y,
									 round(bar_w::numeric, 1), round((h - b)::numeric - y, 1),
									 triage_internal.html_escape(categories[i] || ' ' || series[j] || ': ' || v));
			END LOOP;
			-- as many category labels as fit side by side (11px text: about 7px
			-- a character, and a gap), whatever their number
			IF (i - 1) % label_every = 0 THEN
				svg := svg || format('<text class="tick" x="%s" y="%s" text-anchor="middle">%s</text>',
									 round((l + group_w * (i - 0.5))::numeric, 1), h - b + 14,
									 triage_internal.html_escape(categories[i]));
			END IF;
		END LOOP;
	END IF;
	FOR j IN 1 .. nser LOOP
		svg := svg || format('<rect class="b%s" x="%s" y="%s" width="12" height="12"/><text x="%s" y="%s">%s</text>',
							 j, w - r + 10, t + 18 * j - 10, w - r + 28, t + 18 * j, triage_internal.html_escape(series[j]));
	END LOOP;
	RETURN svg || '</svg>';
END;
$$;
COMMENT ON FUNCTION triage_internal.svg_bar_chart(text[], text[], jsonb, text, text) IS
	'An SVG chart of grouped bars: one group per category, one bar per series, vals[category][series], axes titled x_title and y_title; all text escaped.';

-- An HTML table: header cells, then rows of cells (jsonb arrays; numbers
-- right-aligned), or the text empty when there is no row
CREATE FUNCTION triage_internal.html_table(header text[], rows jsonb, empty text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN coalesce(jsonb_array_length(rows), 0) = 0
				THEN '<p class="none">' || triage_internal.html_escape(empty) || '</p>'
				ELSE '<table><thead><tr>'
					 || (SELECT string_agg('<th>' || triage_internal.html_escape(h) || '</th>', '' ORDER BY o)
						   FROM unnest(header) WITH ORDINALITY AS x(h, o))
					 || '</tr></thead><tbody>'
					 || (SELECT string_agg('<tr>' || (SELECT string_agg(CASE WHEN jsonb_typeof(c) = 'number'
																			 THEN '<td class="n">' ELSE '<td>' END
																		|| triage_internal.html_escape(c #>> '{}') || '</td>',
																		'' ORDER BY co)
														FROM jsonb_array_elements(rw) WITH ORDINALITY AS y(c, co))
										   || '</tr>', '' ORDER BY ro)
						   FROM jsonb_array_elements(rows) WITH ORDINALITY AS z(rw, ro))
					 || '</tbody></table>' END
$$;
COMMENT ON FUNCTION triage_internal.html_table(text[], jsonb, text) IS
	'An HTML table of header cells and rows (jsonb arrays of cells, numbers right-aligned), or the text empty in a paragraph when there are no rows; all text escaped.';

-- Chart: the routing curve stored by calibrate, the current threshold on it,
-- and the kept accuracy the audit sample measured (the large model's answers
-- to confident rows, against the small model's)
CREATE FUNCTION triage_internal.report_routing(p triage.policies) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	curve jsonb := p.calibration->'curve';
	threshold float8 := (p.thresholds->>'default')::float8;
	here jsonb;
	audited bigint;
	audit_accuracy numeric;
	y_lo float8;
	html text := '<section id="routing"><h2>Routing curve</h2>';
BEGIN
	SELECT count(*), round(avg((e.small_answer->>'label' = e.answer->>'label')::int), 4)
	  INTO audited, audit_accuracy
	  FROM triage.escalations e
	 WHERE e.policy = p.name AND e.status = 'done' AND e.reason LIKE 'audit sample%';
	IF jsonb_typeof(curve) = 'array' AND jsonb_array_length(curve) > 0 THEN
		-- the point of the curve nearest the threshold in force
		SELECT c INTO here FROM jsonb_array_elements(curve) AS c
		 ORDER BY abs((c->>'threshold')::float8 - threshold) LIMIT 1;
		SELECT least(floor(min((c->>'kept_accuracy')::float8) * 10) / 10, 0.9) INTO y_lo
		  FROM jsonb_array_elements(curve) AS c;
		y_lo := least(coalesce(y_lo, 0), coalesce(floor(audit_accuracy * 10) / 10, 1));
		html := html || '<p>Kept accuracy against the share of rows escalated, on the '
			|| triage_internal.html_escape(coalesce(p.calibration->>'rows', '?'))
			|| ' labeled rows <code>calibrate</code> chose the threshold on. The circle is the threshold in force ('
			|| round(threshold::numeric, 4) || ').</p>'
			|| triage_internal.svg_line_chart(
				jsonb_build_array(jsonb_build_object('name', 'calibration rows', 'class', 's1', 'dots', true,
					'points', (SELECT jsonb_agg(jsonb_build_array(c->'escalation_rate', c->'kept_accuracy')
												ORDER BY (c->>'escalation_rate')::float8)
								 FROM jsonb_array_elements(curve) AS c))),
				'escalation rate', 'kept accuracy', 0, 1, y_lo, 1,
				jsonb_build_array(jsonb_build_object('x', here->'escalation_rate', 'y', here->'kept_accuracy',
													 'label', 'threshold ' || round(threshold::numeric, 3)))
				|| CASE WHEN audited > 0 THEN jsonb_build_array(jsonb_build_object(
						'x', here->'escalation_rate', 'y', audit_accuracy, 'label', 'audit ' || audit_accuracy))
						ELSE '[]' END);
	ELSE
		html := html || '<p class="none">Not calibrated: <code>triage.calibrate()</code> stores the curve. Threshold in force: '
			|| round(threshold::numeric, 4) || '.</p>';
	END IF;
	RETURN html || triage_internal.html_table('{what,value}', jsonb_build_array(
		jsonb_build_array('threshold in force', round(threshold::numeric, 4)),
		jsonb_build_array('per-label thresholds', coalesce(nullif(p.thresholds->'labels', '{}')::text, 'none')),
		jsonb_build_array('calibrated kept accuracy', p.calibration->'kept_accuracy'),
		jsonb_build_array('calibrated escalation rate', p.calibration->'escalation_rate'),
		jsonb_build_array('audit sample answered by the large model', audited),
		jsonb_build_array('kept accuracy the audit measured', coalesce(audit_accuracy::text, 'no audited answer yet'))), '')
		|| '</section>';
END;
$$;
COMMENT ON FUNCTION triage_internal.report_routing(triage.policies) IS
	'The report''s routing section: the stored calibration curve with the threshold in force and the audit''s measured kept accuracy.';

-- Chart: the reliability diagram of a model version, from an evaluation
-- stored in its metrics ('evaluation', which users store, or 'heldout', which
-- distill stores); pg_triage stores no labeled rows to evaluate on itself
CREATE FUNCTION triage_internal.report_reliability(model text, version integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
	metrics jsonb;
	ev jsonb;
	html text := '<section id="reliability"><h2>Reliability</h2>';
BEGIN
	SELECT m.metrics INTO metrics FROM triage.models m WHERE m.name = model AND m.version = version;
	ev := coalesce(metrics->'evaluation', metrics->'heldout');
	IF jsonb_typeof(ev->'reliability') = 'array' THEN
		html := html || '<p>Accuracy against confidence of version ' || version || ' in bins of 0.1, from the evaluation stored in its metrics ('
			|| triage_internal.html_escape(coalesce(ev->>'n', '?')) || ' rows); on the diagonal, confidence means what it says.</p>'
			|| triage_internal.svg_line_chart(jsonb_build_array(
					jsonb_build_object('name', 'perfect calibration', 'class', 'ref', 'points', '[[0, 0], [1, 1]]'::jsonb),
					jsonb_build_object('name', 'version ' || version, 'class', 's1', 'dots', true,
						'points', (SELECT jsonb_agg(jsonb_build_array(b->'confidence', b->'accuracy') ORDER BY o)
									 FROM jsonb_array_elements(ev->'reliability') WITH ORDINALITY AS x(b, o)))),
				'confidence', 'accuracy', 0, 1, 0, 1)
			|| triage_internal.html_table('{bin,rows,confidence,accuracy}',
				(SELECT jsonb_agg(jsonb_build_array(b->>'bin', b->'n', b->'confidence', b->'accuracy') ORDER BY o)
				   FROM jsonb_array_elements(ev->'reliability') WITH ORDINALITY AS x(b, o)), '');
	ELSE
		html := html || '<p class="none">No reliability table is stored for version ' || coalesce(version::text, '?')
			|| ': <code>evaluate()</code> returns one but does not store it, and pg_triage keeps no labeled rows to compute it from. '
			|| 'To draw it here, store one: <code>UPDATE triage.models SET metrics = metrics || jsonb_build_object(''evaluation'', '
			|| 'triage.evaluate(name, ''SELECT input, label FROM held_out'', version)) WHERE ...</code>. '
			|| 'The calibration data there is: the routing curve above, and these numbers.</p>';
	END IF;
	RETURN html || triage_internal.html_table('{what,value}', (SELECT jsonb_agg(jsonb_build_array(k, v)) FROM (VALUES
		('ECE (expected calibration error, 10 bins)', ev->'ece'),
		('accuracy', ev->'accuracy'),
		('AUROC of confidence', ev->'auroc'),
		('temperature', metrics #> '{calibration,temperature}'),
		('ECE before temperature scaling', metrics #> '{calibration,ece_before}'),
		('ECE after temperature scaling', metrics #> '{calibration,ece_after}')) AS x(k, v)
		WHERE v IS NOT NULL AND v <> 'null'), 'No evaluation or temperature calibration is stored for this version.')
		|| '</section>';
END;
$$;
COMMENT ON FUNCTION triage_internal.report_reliability(text, integer) IS
	'The report''s reliability section: the reliability diagram and ECE of a model version from an evaluation stored in its metrics, or what calibration data there is.';

-- Chart: escalations queued, answered and dead-lettered per hour (per day
-- past 3 days, per week past 120 days) since a time
CREATE FUNCTION triage_internal.report_volume(policy text, since timestamptz) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
	step text := CASE WHEN now() - since <= interval '3 days' THEN 'hour'
					  WHEN now() - since <= interval '120 days' THEN 'day' ELSE 'week' END;
	cats text[];
	vals jsonb;
	s record;
BEGIN
	-- one pass over the policy's counters for the rows routed and kept, one
	-- over its escalations for the queued counts and one for the finished
	-- ones, not three per bar (4 s a bar on 1,000,000 rows)
	WITH routed AS (
		SELECT date_trunc(step, c.hour) AS g, sum(c.seen) AS seen, sum(c.seen - c.escalated) AS kept
		  FROM triage.policy_counters c
		 WHERE c.policy = policy AND c.hour >= date_trunc(step, since) GROUP BY 1),
	queued AS (
		SELECT date_trunc(step, e.created_at) AS g, count(*) AS n FROM triage.escalations e
		 WHERE e.policy = policy AND e.created_at >= date_trunc(step, since) GROUP BY 1),
	finished AS (
		SELECT date_trunc(step, e.done_at) AS g, count(*) FILTER (WHERE e.status = 'done') AS answered,
			   count(*) FILTER (WHERE e.status = 'dead') AS dead
		  FROM triage.escalations e
		 WHERE e.policy = policy AND e.status IN ('done', 'dead') AND e.done_at >= date_trunc(step, since) GROUP BY 1)
	SELECT array_agg(to_char(b.g, CASE WHEN step = 'hour' THEN 'MM-DD HH24:00' ELSE 'YYYY-MM-DD' END) ORDER BY b.g),
		   jsonb_agg(jsonb_build_array(coalesce(r.seen, 0), coalesce(r.kept, 0), coalesce(q.n, 0),
									   coalesce(f.answered, 0), coalesce(f.dead, 0)) ORDER BY b.g)
	  INTO cats, vals
	  FROM generate_series(date_trunc(step, since), date_trunc(step, now()), ('1 ' || step)::interval) AS b(g)
	  LEFT JOIN routed r ON r.g = b.g
	  LEFT JOIN queued q ON q.g = b.g
	  LEFT JOIN finished f ON f.g = b.g;
	SELECT * INTO s FROM triage.escalation_stats x WHERE x.policy = report_volume.policy;
	RETURN '<section id="volume"><h2>Volume</h2>'
		|| '<p>Rows routed, kept by the small model, and escalated (queued, answered, dead) per ' || step
		|| ' since ' || triage_internal.html_escape(to_char(since, 'YYYY-MM-DD HH24:MI TZ')) || '; totals below.</p>'
		|| triage_internal.svg_bar_chart(cats, '{routed,kept,queued,answered,dead}', vals, step, 'rows per ' || step)
		|| triage_internal.html_table('{"rows seen","kept by the small model",escalated,pending,leased,answered,dead}',
			jsonb_build_array(jsonb_build_array(s.rows_seen, s.rows_kept, s.escalated, s.pending, s.claimed,
												s.answered, s.dead)), '')
		|| '</section>';
END;
$$;
COMMENT ON FUNCTION triage_internal.report_volume(text, timestamptz) IS
	'The report''s volume section: escalations queued, answered and dead per hour, day or week since a time, and the policy''s totals.';

CREATE FUNCTION triage.report(policy text, since timestamptz DEFAULT NULL) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
	p triage.policies;
	model text;
	deployed integer;
	ev jsonb;
	s record;
	q record;
	prompt_price numeric := coalesce(nullif(current_setting('triage.llm_prompt_price_per_1k', true), '')::numeric, 0);
	completion_price numeric := coalesce(nullif(current_setting('triage.llm_completion_price_per_1k', true), '')::numeric, 0);
	html text;
BEGIN
	SELECT * INTO p FROM triage.policies x WHERE x.name = policy;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'policy "%" does not exist', policy USING ERRCODE = 'undefined_object';
	END IF;
	since := coalesce(since, now() - interval '7 days');
	model := coalesce(p.model, p.extractor);
	SELECT d.version INTO deployed FROM triage.deployments d WHERE d.name = model;
	SELECT m.metrics->'evaluation' INTO ev FROM triage.models m WHERE m.name = model AND m.version = deployed;
	IF ev IS NULL THEN
		SELECT m.metrics->'heldout' INTO ev FROM triage.models m WHERE m.name = model AND m.version = deployed;
	END IF;
	SELECT * INTO s FROM triage.escalation_stats x WHERE x.policy = p.name;
	SELECT count(*) FILTER (WHERE e.status = 'pending') AS pending,
		   count(*) FILTER (WHERE e.status = 'pending' AND e.visible_at > now()) AS waiting,
		   count(*) FILTER (WHERE e.status = 'claimed' AND e.visible_at > now()) AS leased,
		   count(*) FILTER (WHERE e.status = 'claimed' AND e.visible_at <= now()) AS expired,
		   count(*) FILTER (WHERE e.status = 'dead') AS dead,
		   now() - min(e.created_at) FILTER (WHERE e.status = 'pending') AS oldest
	  INTO q FROM triage.escalations e WHERE e.policy = p.name;

	html := '<!DOCTYPE html>' || E'\n' || '<html lang="en"><head><meta charset="utf-8"/>'
		|| '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
		|| '<title>pg_triage: policy ' || triage_internal.html_escape(p.name) || '</title><style>'
		|| 'body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}'
		|| 'h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}'
		|| 'table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ddd;padding:.2em .6em;text-align:left;vertical-align:top}'
		|| 'td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4}.none{color:#666;font-style:italic}'
		|| 'code{background:#f4f4f4;padding:0 .2em}svg.chart{display:block;margin:.6em 0;max-width:100%;height:auto}'
		|| 'svg text{font-size:11px;fill:#333}svg .title{font-size:12px}'
		|| '.grid{stroke:#e4e4e4}.frame{fill:none;stroke:#999}'
		|| 'polyline{fill:none;stroke-width:2}.s1{stroke:#1f6fb2}circle.s1{fill:#1f6fb2}.ref{stroke:#aaa;stroke-dasharray:4 3}'
		|| 'circle.mark{fill:none;stroke:#d62728;stroke-width:2}.marklabel{fill:#d62728}'
		|| 'rect.b1{fill:#7f7f7f}rect.b2{fill:#2ca02c}rect.b3{fill:#ff7f0e}rect.b4{fill:#1f6fb2}rect.b5{fill:#d62728}'
		|| '@media print{body{margin:0;max-width:none}section{break-inside:avoid}}'
		|| '</style></head><body>'
		|| '<h1>Policy ' || triage_internal.html_escape(p.name) || '</h1>'
		|| '<p>Model <b>' || triage_internal.html_escape(model) || '</b>, deployed version '
		|| coalesce(deployed::text, 'none') || '; database ' || triage_internal.html_escape(current_database())
		|| '; generated ' || triage_internal.html_escape(to_char(now(), 'YYYY-MM-DD HH24:MI:SS TZ')) || '.</p>';

	html := html || triage_internal.report_routing(p)
		|| triage_internal.report_reliability(model, deployed)
		|| triage_internal.report_volume(p.name, since);

	html := html || '<section id="cost"><h2>Cost</h2>'
		|| CASE WHEN prompt_price = 0 AND completion_price = 0
				THEN '<p class="none">No prices are set: set <code>triage.llm_prompt_price_per_1k</code> and '
					 || '<code>triage.llm_completion_price_per_1k</code> (per 1,000 tokens) to see costs.</p>' ELSE '' END
		|| triage_internal.html_table('{what,value}', jsonb_build_array(
			jsonb_build_array('tokens used by the large model', s.tokens),
			jsonb_build_array('large-model spend so far', s.llm_cost),
			jsonb_build_array('if every row had gone to it', s.all_llm_cost),
			jsonb_build_array('saved', s.all_llm_cost - s.llm_cost),
			jsonb_build_array('price per 1,000 prompt tokens', prompt_price),
			jsonb_build_array('price per 1,000 completion tokens', completion_price)), '')
		|| '</section>';

	html := html || '<section id="queue"><h2>Queue now</h2>'
		|| triage_internal.html_table('{pending,"of which waiting to retry","oldest pending",leased,"expired leases","dead letters"}',
			jsonb_build_array(jsonb_build_array(q.pending, q.waiting,
				coalesce(date_trunc('second', q.oldest)::text, 'none'), q.leased, q.expired, q.dead)), '')
		|| '<h3>Dead letters: top errors</h3>'
		|| triage_internal.html_table('{error,count,"last at"}',
			(SELECT jsonb_agg(jsonb_build_array(err, n, to_char(at, 'YYYY-MM-DD HH24:MI')) ORDER BY n DESC, err)
			   FROM (SELECT left(coalesce(e.error, '(no error recorded)'), 200) AS err, count(*) AS n, max(e.done_at) AS at
					   FROM triage.escalations e WHERE e.policy = p.name AND e.status = 'dead'
					  GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10) d), 'No dead letters.')
		|| '<h3>Workers</h3>'
		|| triage_internal.html_table('{worker,host,pid,"last heartbeat","seconds ago","jobs done","jobs failed"}',
			(SELECT jsonb_agg(jsonb_build_array(w.name, w.host, w.pid, to_char(w.last_seen, 'YYYY-MM-DD HH24:MI:SS'),
												round(extract(epoch FROM now() - w.last_seen)), w.jobs_done, w.jobs_failed)
							  ORDER BY w.last_seen DESC, w.name)
			   FROM triage.workers w), 'No worker has sent a heartbeat.')
		|| '</section>';

	html := html || '<section id="labels"><h2>Labels and reasons</h2>'
		|| '<h3>Per-label precision and recall</h3>'
		|| triage_internal.html_table('{label,precision,recall,f1,support}',
			(SELECT jsonb_agg(jsonb_build_array(l.key, l.value->'precision', l.value->'recall', l.value->'f1',
												l.value->'support') ORDER BY l.key)
			   FROM jsonb_each(CASE WHEN jsonb_typeof(ev->'labels') = 'object' THEN ev->'labels' END) AS l),
			'No evaluation of the deployed version is stored (metrics->''evaluation'' or metrics->''heldout'').')
		|| '<h3>Top escalation reasons since ' || triage_internal.html_escape(to_char(since, 'YYYY-MM-DD HH24:MI')) || '</h3>'
		|| triage_internal.html_table('{reason,escalations}',
			(SELECT jsonb_agg(jsonb_build_array(why, n) ORDER BY n DESC, why)
			   FROM (SELECT CASE WHEN e.reason LIKE 'confidence % < threshold %' THEN 'confidence below the threshold'
								 WHEN e.reason LIKE 'audit sample%' THEN 'audit sample'
								 WHEN e.reason LIKE 'rule %:%' THEN split_part(e.reason, ':', 1)
								 ELSE left(coalesce(e.reason, '(none given)'), 120) END AS why, count(*) AS n
					   FROM triage.escalations e WHERE e.policy = p.name AND e.created_at >= since
					  GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10) r), 'No escalation in this period.')
		|| '</section>';

	html := html || '<section id="versions"><h2>Model versions of ' || triage_internal.html_escape(model) || '</h2>'
		|| triage_internal.html_table('{version,deployed,kind,created,labels,"held-out accuracy",ECE,"training loss",size}',
			(SELECT jsonb_agg(jsonb_build_array(m.version, CASE WHEN m.version = deployed THEN 'deployed' ELSE '' END,
												m.kind, to_char(m.created_at, 'YYYY-MM-DD HH24:MI'),
												array_to_string(m.labels, ', '),
												coalesce(m.metrics #> '{evaluation,accuracy}', m.metrics #> '{heldout,accuracy}',
														 m.metrics #> '{calibration,accuracy}'),
												coalesce(m.metrics #> '{evaluation,ece}', m.metrics #> '{heldout,ece}',
														 m.metrics #> '{calibration,ece_after}'),
												m.metrics #> '{train,loss}', pg_size_pretty(octet_length(m.data)::bigint))
							  ORDER BY m.version DESC)
			   FROM triage.models m WHERE m.name = model), 'No version.')
		|| '</section>';

	RETURN html || '<footer><p>pg_triage ' || triage_internal.html_escape(
		(SELECT e.extversion FROM pg_extension e WHERE e.extname = 'pg_triage')) || '</p></footer></body></html>' || E'\n';
END;
$$;
COMMENT ON FUNCTION triage.report(text, timestamptz) IS
	'One self-contained HTML page (inline SVG and CSS, no script, no URL) on a policy: routing curve, reliability, volume since a time (default: 7 days), cost, the queue now, labels and escalation reasons, model versions. psql -Atc "SELECT triage.report(''p'')" > report.html';
