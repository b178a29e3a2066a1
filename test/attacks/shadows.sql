-- Shadows of pg_catalog's functions and operators, for test/t/011_attacks.pl.
--
-- Run by an attacker role with CREATE on schema :"schema" (psql variable):
-- creates there, with the same signature (names and defaults included), a
-- shadow of every pg_catalog operator and non-polymorphic, non-variadic
-- function whose argument types are all among a set of common types, plus a
-- few hand-written shadows that are better matches than pg_catalog's
-- (variadic "any", polymorphic or text[] originals called with a text
-- literal), and a domain named like each common catalog type (text, jsonb,
-- int4...).  Each shadow says it was called (a WARNING in the server log and
-- a row in public.shadow_calls, which everyone may insert into) and returns
-- what pg_catalog's would.  The list of shadows goes to public.shadow_list.
--
-- The script pins its own search_path: the shadows it makes (and those of
-- an earlier run) cannot stand in for what it calls.  Needs public.shadow_calls
-- (schema, sig, by_role, session_role) and public.shadow_list (schema, kind, sig).
SET search_path = pg_catalog, pg_temp;
SET pg_triage.shadow_schema = :'schema';

DO $gen$
DECLARE
	target text := pg_catalog.current_setting('pg_triage.shadow_schema');
	common oid[] := ARRAY['text', 'varchar', 'name', 'jsonb', 'json', 'int2', 'int4', 'int8', 'float4',
						  'float8', 'numeric', 'bool', 'oid', 'regclass', 'regrole', 'timestamptz',
						  'interval', 'text[]', 'bytea', '"char"']::regtype[]::oid[];
	f record;
	sig text;
	call text;
	ret text;
	outs text;
	made integer := 0;
	failed integer := 0;
BEGIN
	-- functions
	FOR f IN
		SELECT p.oid, p.proname, p.pronargs, p.proretset, p.prorettype, t.typtype,
			   p.proallargtypes, p.proargmodes, p.proargnames
		  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) p.prorettype
		 WHERE p.pronamespace OPERATOR(pg_catalog.=) 'pg_catalog'::regnamespace
		   AND p.prokind OPERATOR(pg_catalog.=) 'f' AND p.provariadic OPERATOR(pg_catalog.=) 0
		   AND p.proargtypes::oid[] OPERATOR(pg_catalog.<@) common
		   AND NOT coalesce(p.proargmodes::text[] OPERATOR(pg_catalog.&&) ARRAY['b', 'v'], false)
		   AND NOT EXISTS (SELECT FROM pg_catalog.unnest(p.proallargtypes) a(t), pg_catalog.pg_type x
							WHERE x.oid OPERATOR(pg_catalog.=) a.t AND x.typtype OPERATOR(pg_catalog.=) 'p')
		   AND (t.typtype OPERATOR(pg_catalog.<>) 'p' OR p.prorettype OPERATOR(pg_catalog.=) 'void'::regtype
				OR (p.prorettype OPERATOR(pg_catalog.=) 'record'::regtype AND p.proallargtypes IS NOT NULL))
		 ORDER BY p.oid
	LOOP
		sig := f.oid::regprocedure::text;
		call := pg_catalog.format('pg_catalog.%I(%s)', f.proname,
			(SELECT pg_catalog.string_agg('$' OPERATOR(pg_catalog.||) i, ', ' ORDER BY i)
			   FROM pg_catalog.generate_series(1, f.pronargs) i));
		IF f.proretset THEN
			ret := pg_catalog.format('RETURN QUERY SELECT * FROM %s; RETURN;', call);
		ELSIF f.prorettype OPERATOR(pg_catalog.=) 'void'::regtype THEN
			ret := pg_catalog.format('PERFORM %s; RETURN;', call);
		ELSIF f.proallargtypes IS NOT NULL THEN
			SELECT pg_catalog.string_agg(pg_catalog.quote_ident(n), ', ' ORDER BY i) INTO outs
			  FROM ROWS FROM (pg_catalog.unnest(f.proargmodes::text[]), pg_catalog.unnest(f.proargnames))
				   WITH ORDINALITY AS a(m, n, i)
			 WHERE m OPERATOR(pg_catalog.=) ANY (ARRAY['o', 't']);
			ret := pg_catalog.format('SELECT * INTO %s FROM %s; RETURN;', outs, call);
		ELSE
			ret := pg_catalog.format('RETURN %s;', call);
		END IF;
		BEGIN
			EXECUTE pg_catalog.format($f$
				CREATE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE plpgsql AS $body$
				BEGIN
					RAISE WARNING 'pg_triage shadow called: %% as %%', %L, current_user;
					INSERT INTO public.shadow_calls (schema, sig, by_role, session_role) VALUES (%L, %L, current_user, session_user);
					%s
				END
				$body$$f$, target, f.proname, pg_catalog.pg_get_function_arguments(f.oid),
				pg_catalog.pg_get_function_result(f.oid), sig, target, sig, ret);
			INSERT INTO public.shadow_list (schema, kind, sig) VALUES (target, 'function', sig);
			made := made OPERATOR(pg_catalog.+) 1;
		EXCEPTION WHEN others THEN
			-- (a few OUT parameters share an IN parameter's name)
			INSERT INTO public.shadow_list (schema, kind, sig) VALUES (target, 'skipped', sig || ': ' || SQLERRM);
			failed := failed OPERATOR(pg_catalog.+) 1;
		END;
	END LOOP;

	-- operators: a function per operator, then the operator
	FOR f IN
		SELECT o.oid, o.oprname, o.oprleft, o.oprright, o.oprresult
		  FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) o.oprresult
		 WHERE o.oprnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::regnamespace
		   AND o.oprkind OPERATOR(pg_catalog.=) ANY (ARRAY['b', 'l']::"char"[])
		   AND (o.oprleft OPERATOR(pg_catalog.=) 0 OR o.oprleft OPERATOR(pg_catalog.=) ANY (common))
		   AND o.oprright OPERATOR(pg_catalog.=) ANY (common)
		   AND t.typtype OPERATOR(pg_catalog.<>) 'p'
		 ORDER BY o.oid
	LOOP
		sig := pg_catalog.format('operator %s(%s, %s)', f.oprname,
			CASE WHEN f.oprleft OPERATOR(pg_catalog.=) 0 THEN 'NONE' ELSE pg_catalog.format_type(f.oprleft, NULL) END,
			pg_catalog.format_type(f.oprright, NULL));
		BEGIN
			EXECUTE pg_catalog.format($f$
				CREATE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE plpgsql AS $body$
				BEGIN
					RAISE WARNING 'pg_triage shadow called: %% as %%', %L, current_user;
					INSERT INTO public.shadow_calls (schema, sig, by_role, session_role) VALUES (%L, %L, current_user, session_user);
					RETURN %s;
				END
				$body$$f$, target, 'pg_triage_shadow_op_' OPERATOR(pg_catalog.||) f.oid,
				CASE WHEN f.oprleft OPERATOR(pg_catalog.=) 0 THEN pg_catalog.format_type(f.oprright, NULL)
					 ELSE pg_catalog.format_type(f.oprleft, NULL) OPERATOR(pg_catalog.||) ', '
						  OPERATOR(pg_catalog.||) pg_catalog.format_type(f.oprright, NULL) END,
				pg_catalog.format_type(f.oprresult, NULL), sig, target, sig,
				CASE WHEN f.oprleft OPERATOR(pg_catalog.=) 0
					 THEN pg_catalog.format('OPERATOR(pg_catalog.%s) $1', f.oprname)
					 ELSE pg_catalog.format('$1 OPERATOR(pg_catalog.%s) $2', f.oprname) END);
			EXECUTE pg_catalog.format('CREATE OPERATOR %I.%s (%s RIGHTARG = %s, FUNCTION = %I.%I)',
				target, f.oprname,
				CASE WHEN f.oprleft OPERATOR(pg_catalog.=) 0 THEN ''
					 ELSE pg_catalog.format('LEFTARG = %s,', pg_catalog.format_type(f.oprleft, NULL)) END,
				pg_catalog.format_type(f.oprright, NULL), target, 'pg_triage_shadow_op_' OPERATOR(pg_catalog.||) f.oid);
			INSERT INTO public.shadow_list (schema, kind, sig) VALUES (target, 'operator', sig);
			made := made OPERATOR(pg_catalog.+) 1;
		EXCEPTION WHEN others THEN
			INSERT INTO public.shadow_list (schema, kind, sig) VALUES (target, 'skipped', sig || ': ' || SQLERRM);
			failed := failed OPERATOR(pg_catalog.+) 1;
		END;
	END LOOP;

	-- Hand-written shadows that are better matches than pg_catalog's for the
	-- calls they catch: [name(arguments), return type, what to return]
	FOR f IN
		SELECT * FROM (VALUES
			('jsonb_build_object(text, text)', 'jsonb', 'pg_catalog.jsonb_build_object($1, $2)'),
			('jsonb_build_object(text, text, text, text)', 'jsonb', 'pg_catalog.jsonb_build_object($1, $2, $3, $4)'),
			('jsonb_build_object(text, jsonb)', 'jsonb', 'pg_catalog.jsonb_build_object($1, $2)'),
			('jsonb_build_object(text, integer)', 'jsonb', 'pg_catalog.jsonb_build_object($1, $2)'),
			('jsonb_build_array(text)', 'jsonb', 'pg_catalog.jsonb_build_array($1)'),
			('make_interval(secs text)', 'interval', 'pg_catalog.make_interval(secs => $1::pg_catalog.float8)'),
			('format(text, text)', 'text', 'pg_catalog.format($1, $2)'),
			('format(text, text, text)', 'text', 'pg_catalog.format($1, $2, $3)'),
			('concat(text, text)', 'text', 'pg_catalog.concat($1, $2)'),
			('to_jsonb(text)', 'jsonb', 'pg_catalog.to_jsonb($1)'),
			('array_to_string(text[], text)', 'text', 'pg_catalog.array_to_string($1, $2)'),
			('cardinality(text[])', 'integer', 'pg_catalog.cardinality($1)'),
			('array_length(text[], integer)', 'integer', 'pg_catalog.array_length($1, $2)'),
			('jsonb_path_text(jsonb, text)', 'text', '$1 OPERATOR(pg_catalog.#>>) $2::pg_catalog.text[]'),
			('jsonb_path(jsonb, text)', 'jsonb', '$1 OPERATOR(pg_catalog.#>) $2::pg_catalog.text[]'))
		  AS h(fn, rettype, result)
	LOOP
		sig := CASE f.fn WHEN 'jsonb_path_text(jsonb, text)' THEN 'operator #>>(jsonb, text)'
					WHEN 'jsonb_path(jsonb, text)' THEN 'operator #>(jsonb, text)'
					ELSE f.fn END OPERATOR(pg_catalog.||) ' [better match]';
		BEGIN
			EXECUTE pg_catalog.format($f$
				CREATE FUNCTION %I.%s RETURNS %s LANGUAGE plpgsql AS $body$
				BEGIN
					RAISE WARNING 'pg_triage shadow called: %% as %%', %L, current_user;
					INSERT INTO public.shadow_calls (schema, sig, by_role, session_role) VALUES (%L, %L, current_user, session_user);
					RETURN %s;
				END
				$body$$f$, target, f.fn, f.rettype, sig, target, sig, f.result);
			INSERT INTO public.shadow_list (schema, kind, sig) VALUES (target, 'better match', sig);
			made := made OPERATOR(pg_catalog.+) 1;
		EXCEPTION WHEN others THEN
			INSERT INTO public.shadow_list (schema, kind, sig) VALUES (target, 'skipped', sig || ': ' || SQLERRM);
			failed := failed OPERATOR(pg_catalog.+) 1;
		END;
	END LOOP;
	-- #>> and #> with a text right operand (pg_catalog's take text[]): an
	-- unknown literal such as '{a,b}' picks these
	EXECUTE pg_catalog.format('CREATE OPERATOR %I.#>> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = %I.jsonb_path_text)',
							  target, target);
	EXECUTE pg_catalog.format('CREATE OPERATOR %I.#> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = %I.jsonb_path)',
							  target, target);

	-- Types: a domain named like a catalog type, whose check says it was
	-- used; only names that are not SQL keywords (integer, real, numeric,
	-- interval, varchar... always mean pg_catalog's).  A cast to an
	-- unqualified type, or a plpgsql variable declared with one, picks these.
	EXECUTE pg_catalog.format($f$
		CREATE FUNCTION %I.pg_triage_shadow_type(type_name text) RETURNS boolean LANGUAGE plpgsql AS $body$
		BEGIN
			RAISE WARNING 'pg_triage shadow called: type %% as %%', type_name, current_user;
			INSERT INTO public.shadow_calls (schema, sig, by_role, session_role)
			VALUES (%L, 'type ' OPERATOR(pg_catalog.||) type_name, current_user, session_user);
			RETURN true;
		END
		$body$$f$, target, target);
	FOR f IN
		SELECT t FROM pg_catalog.unnest(ARRAY['text', 'jsonb', 'json', 'name', 'regclass', 'regrole', 'regtype',
											  'int2', 'int4', 'int8', 'float4', 'float8', 'bool', 'oid', 'bytea',
											  'timestamptz']) AS t
	LOOP
		BEGIN
			EXECUTE pg_catalog.format('CREATE DOMAIN %I.%I AS pg_catalog.%I CHECK (%I.pg_triage_shadow_type(%L))',
									  target, f.t, f.t, target, f.t);
			INSERT INTO public.shadow_list (schema, kind, sig) VALUES (target, 'type', f.t);
			made := made OPERATOR(pg_catalog.+) 1;
		EXCEPTION WHEN others THEN
			INSERT INTO public.shadow_list (schema, kind, sig) VALUES (target, 'skipped', 'type ' || f.t || ': ' || SQLERRM);
			failed := failed OPERATOR(pg_catalog.+) 1;
		END;
	END LOOP;
	RAISE NOTICE '% shadows in schema %, % could not be made', made, target, failed;
END
$gen$;
