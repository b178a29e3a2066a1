# Attacks on pg_triage by the roles it does not trust (issues #13 and #21).
#
# On a cluster where a superuser created the extension, log in as
#   mallory  triage_user, with her own schemas and CREATE on public in shadowdb
#   alice    triage_user who owns tables: the legitimate user, and the owner
#            whose own code (triggers, casts, index expressions) must never
#            run with anyone else's rights
#   adam     triage_admin
#   wanda, walter  logins granted triage_worker (and triage.allow_worker'ed
#            in the databases they serve, once that exists); wendy is granted
#            triage_worker and allowed nowhere
#   olga     a plain table owner with no triage role
#   eve      a login with nothing at all
#   pool     a pooler's login that SETs ROLE to cache_user (triage_user) or
#            cache_nosel (USAGE on schema triage only)
# and try every attack of #13 and #21 "What was shown", each a subtest of its
# own with its own policy and tables, so that a missing defence fails only
# its own checks.  An attack fails the test if any role gains an attribute
# or a membership (pg_roles, pg_auth_members against a snapshot taken after
# setup; restored after each subtest), if attack code runs as a superuser
# (each payload writes a row to public.pwned and a WARNING to the server
# log saying as whom), if a table is written by someone without the right,
# or if a worker reads another database's queue.
#
# Shadowing: mallory generates, in public of database shadowdb and in her
# schema mallory_shadow of shop, a shadow of every pg_catalog operator and
# of every non-polymorphic, non-variadic function whose argument types are
# common ones, with the same signature, plus hand-written better matches
# and domains named like catalog types (test/attacks/shadows.sql).  A superuser then runs the whole loop under
# search_path = public, pg_catalog (pg_catalog last, so same-signature
# shadows win), and mallory runs everything a triage_user may under her own
# schema first: no shadow may be called, by any statement of the extension
# (public.shadow_calls, and "pg_triage shadow called" in the server log).
# Two static checks go with it: every SPI statement in src/*.c is inside a
# BeginOwnSql section (except the readers of users' own query texts), and
# every sql/plpgsql function of schema triage pins search_path, or is a thin
# entry point that names everything it uses with its schema (a LANGUAGE sql
# call, or a plpgsql procedure, which cannot pin search_path and commit).
#
# test/run-tests.sh runs it with the others.  Alone, as root, from the tree
# (PostgreSQL runs as postgres, who must be able to read the tree; 30-50 s):
#   PGXS=$(dirname $(pg_config --pgxs))/../..; mkdir -p /tmp/t011; chown postgres /tmp/t011
#   runuser -u postgres -- env PG_REGRESS=$PGXS/src/test/regress/pg_regress TESTDIR=/tmp/t011 \
#     perl -I $PGXS/src/test/perl -I test test/t/011_attacks.pl
# Each failure is an attack that got through; the diagnostics say who ran
# what as whom.  Subtests that run triage-worker skip without it or python3.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run;
use JSON::PP qw(decode_json);
use Time::HiRes qw(sleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AttackTest qw(scan_spi worker_sql_strings thin_sql_body thin_plpgsql_body leaked_pieces unqualified_calls);
use TriageTest qw(triage_worker);

my $started = time;
my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $model_file = "$root/test/data/sentiment_v1.ftz";
my $csv = "$root/test/data/fine_foods_train.csv";
my $worker = triage_worker($root);
my $have_worker = -x $worker && system('python3 -c "import http.server" 2>/dev/null') == 0;

my $node = PostgreSQL::Test::Cluster->new('attacks');
$node->init;
$node->append_conf('postgresql.conf', "max_connections = 40\nlog_min_messages = warning\n");
$node->start;
my $su = $node->safe_psql('postgres', 'SELECT current_user');
my @dbs = qw(shop other shadowdb);

# ---------------------------------------------------------------------------
# Helpers

# {{name}} in a SQL template replaced by its value
sub fill
{
	my ($text, %vars) = @_;
	$text =~ s/\{\{(\w+)\}\}/exists $vars{$1} ? $vars{$1} : die "no value for {{$1}}"/ge;
	return $text;
}

sub sql_quote
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

# Run SQL in a database as a role (undef: the superuser); never dies on an
# SQL error: returns { ok, out, err }
sub run_as
{
	my ($db, $role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, $sql, on_error_stop => 0, timeout => 180,
		defined $role ? (extra_params => [ '-U', $role ]) : ());
	$out //= '';
	$err //= '';
	return { ok => ($ret == 0 && $err !~ /\b(?:ERROR|FATAL|PANIC):/), out => $out, err => $err };
}

sub errors
{
	my ($r) = @_;
	my @lines = grep { /ERROR|FATAL|DETAIL|HINT/ } split /\n/, $r->{err};
	return @lines ? join("\n", @lines) : $r->{err};
}

# The superuser, for set-up with what exists today: dies on error
sub su
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db, $sql);
}

# The superuser in shadowdb, where public holds shadows: under a pinned path
sub su_sh
{
	my ($sql) = @_;
	return $node->safe_psql('shadowdb', "SET search_path = pg_catalog;\n$sql");
}

# An attack that must be refused (an error)
sub refused
{
	my ($db, $role, $sql, $what) = @_;
	my $r = run_as($db, $role, $sql);
	ok(!$r->{ok}, "$what: refused") or diag("it was not refused; output: $r->{out}");
	note("refused: " . errors($r)) unless $r->{ok};
	return $r;
}

# A step that must work
sub works
{
	my ($db, $role, $sql, $what) = @_;
	my $r = run_as($db, $role, $sql);
	ok($r->{ok}, "$what: works") or diag(errors($r));
	return $r;
}

sub has_function
{
	my ($db, $name) = @_;
	return su($db, "SELECT count(*) > 0 FROM pg_proc WHERE proname = '$name' AND pronamespace = 'triage'::regnamespace")
	  eq 't';
}

# triage.grant_policy / triage.allow_worker, where they exist yet
sub grant_policy
{
	my ($db, $policy, $role) = @_;
	unless (has_function($db, 'grant_policy'))
	{
		note("triage.grant_policy does not exist yet: $role uses policy $policy without a grant");
		return;
	}
	my $r = run_as($db, undef, "SELECT triage.grant_policy('$policy', '$role')");
	diag("grant_policy('$policy', '$role') failed: " . errors($r)) unless $r->{ok};
}

sub allow_worker
{
	my ($db, $role) = @_;
	unless (has_function($db, 'allow_worker'))
	{
		note("triage.allow_worker does not exist yet: $role is not registered in $db");
		return;
	}
	my $r = run_as($db, undef, "SELECT triage.allow_worker('$role')");
	diag("allow_worker('$role') in $db failed: " . errors($r)) unless $r->{ok};
}

# A policy that escalates every row (a rule no input meets), of model
# sentiment (great, other) or another
sub escalating_policy
{
	my ($db, $name, $model) = @_;
	$model //= 'sentiment';
	su($db, "SET search_path = pg_catalog;\n"
		  . "SELECT triage.create_policy('$name', '$model', rules => '{\"min_length\": 100000}')");
}

# A chat-completions reply whose content is $content
sub reply
{
	my ($content, %extra) = @_;
	return JSON::PP->new->canonical->encode(
		{ choices => [ { message => { content => $content } } ], model => 'attack-test', %extra });
}

# Lease up to n escalations of a policy as a role (undef: the superuser)
sub claim_ids
{
	my ($db, $role, $policy, $n) = @_;
	my $r = run_as($db, $role, "SELECT id FROM triage.claim('" . ($role // $su) . "', $n, '5 minutes', '$policy')");
	note("claim as " . ($role // $su) . " in $db: " . errors($r)) unless $r->{ok};
	return ($r, [ grep { /^\d+$/ } split /\n/, $r->{out} ]);
}

sub complete_as
{
	my ($db, $role, $id, $content, %extra) = @_;
	my $r = run_as($db, $role, "SELECT triage.complete($id, " . sql_quote(reply($content, %extra)) . ')');
	note("complete($id) as " . ($role // $su) . ': ' . ($r->{ok} ? $r->{out} : errors($r)));
	return $r;
}

# The server log from byte $from on
sub log_from
{
	my ($from) = @_;
	open(my $fh, '<', $node->logfile) or die $!;
	seek($fh, $from, 0);
	local $/;
	my $text = <$fh>;
	close $fh;
	return $text // '';
}

# Where the shadows' calls stand: rows of public.shadow_calls of a schema's
# shadows, and the end of the server log (where the calls whose transaction
# rolled back still show)
sub shadow_mark
{
	my ($db, $schema) = @_;
	return [ su($db, "SELECT count(*) FROM public.shadow_calls WHERE schema = '$schema'"), -s $node->logfile ];
}

# Shadows called since a mark: (n, "sig as role; ...")
sub shadows_since
{
	my ($db, $schema, $mark) = @_;
	my ($rows, $list) = split /\|/, su($db, qq{
		SELECT count(*), coalesce(string_agg(DISTINCT sig || ' as ' || by_role, '; '), '')
		  FROM (SELECT * FROM public.shadow_calls WHERE schema = '$schema' ORDER BY id OFFSET $mark->[0]) s});
	my @logged = log_from($mark->[1]) =~ /WARNING:\s+pg_triage shadow called: ([^\n]*)/g;
	my %seen = map { $_ => 1 } grep { $_ ne '' } split(/; /, $list // ''), @logged;
	my $n = $rows > @logged ? $rows : scalar(@logged);
	return ($n, join('; ', sort keys %seen));
}

# Roles: attributes and memberships
sub role_state
{
	return su('postgres', q{
		SELECT string_agg(format('%s super=%s createrole=%s createdb=%s bypassrls=%s replication=%s',
								 rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication),
						  E'\n' ORDER BY rolname)
		  FROM pg_roles WHERE rolname !~ '^pg_'})
	  . "\n"
	  . su('postgres', q{
		SELECT coalesce(string_agg(format('%s member of %s', m.rolname, r.rolname), E'\n'
								   ORDER BY m.rolname, r.rolname), '')
		  FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member});
}

my @test_roles = qw(mallory alice adam wanda walter wendy olga eve hr cache_user cache_nosel pool);
my $baseline;
my $log_pos = 0;

sub restore_roles
{
	su('postgres', join '', map { "ALTER ROLE $_ NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS NOREPLICATION;\n" }
		  @test_roles);
	my %base = map { $_ => 1 } split /\n/, $baseline;
	for my $line (split /\n/, role_state())
	{
		next if $base{$line} || $line !~ /^(\S+) member of (\S+)$/;
		su('postgres', qq{REVOKE "$2" FROM "$1"});
	}
}

# After an attack: no role gained anything; no attack code whose name
# starts with $prefix ran as a superuser (public.pwned of every database,
# and the server log since the last check, which also has the payloads
# whose transaction rolled back)
sub no_gain
{
	my ($what, $prefix) = @_;
	my %base = map { $_ => 1 } split /\n/, $baseline;
	my @changed = grep { !$base{$_} } split /\n/, role_state();
	is(join("\n", @changed), '', "$what: no role gained superuser, another attribute or a membership")
	  or restore_roles();
	for my $db (@dbs)
	{
		is(su($db, qq{SELECT coalesce(string_agg(DISTINCT attack || ' as ' || by_role, ', '), '')
						FROM public.pwned WHERE is_super AND attack LIKE '$prefix%'}),
			'', "$what: no attack code ran as a superuser in database $db");
	}
	my $new = log_from($log_pos);
	$log_pos += length $new;
	my @as_super = grep { /WARNING:\s+pg_triage attack payload: \Q$prefix\E.*\(superuser: t\)/ } split /\n/, $new;
	is(scalar(@as_super), 0, "$what: the server log shows no attack code run as a superuser")
	  or diag(join("\n", @as_super[ 0 .. ($#as_super < 4 ? $#as_super : 4) ]));
}

# One attack: a subtest that a die inside fails instead of ending the test
sub attack
{
	my ($name, $code) = @_;
	my $t0 = time;
	subtest $name => sub {
		my $ok = eval { $code->(); 1 };
		fail("the attack's set-up died: $@") unless $ok;
	};
	note(sprintf('%.1f s', time - $t0));
}

# The function every attack's code calls: it records who it runs as, says
# so in the server log, and tries to make $victim a superuser
sub payload_function
{
	my ($schema) = @_;
	return qq{
	CREATE FUNCTION $schema.payload(p_attack text, p_victim text) RETURNS boolean LANGUAGE plpgsql AS \$pl\$
	DECLARE
		is_super boolean;
	BEGIN
		SELECT r.rolsuper INTO is_super FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user;
		INSERT INTO public.pwned (attack, by_role, session_role, is_super)
		VALUES (p_attack, current_user, session_user, is_super);
		RAISE WARNING 'pg_triage attack payload: % as % (superuser: %)', p_attack, current_user, is_super;
		BEGIN
			EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', p_victim);
		EXCEPTION WHEN others THEN NULL;
		END;
		RETURN true;
	END
	\$pl\$;};
}

sub shadows_script
{
	my ($schema) = @_;
	return "\\set schema $schema\n" . slurp_file("$root/test/attacks/shadows.sql");
}

# Runs a command with a time limit; returns (exit status, stdout, stderr)
sub run_with_limit
{
	my ($cmd, $seconds) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start($cmd, '>', \$out, '2>', \$err, IPC::Run::timeout($seconds));
	my $finished = eval { $h->finish; 1 };
	unless ($finished)
	{
		$h->kill_kill(grace => 2);
		return (-1, $out, $err);
	}
	return ($h->result(0), $out, $err);
}

# Starts a python endpoint; returns [harness, port]
sub start_endpoint
{
	my ($name, @cmd) = @_;
	my $out = "$tmp/$name.out";
	my $h = IPC::Run::start(\@cmd, '>', $out, '2>', "$tmp/$name.err");
	for (1 .. 300)
	{
		my ($port) = (-e $out ? slurp_file($out) : '') =~ /listening on (\d+)/;
		return [ $h, $port ] if $port;
		sleep 0.05;
	}
	die "$name did not start: " . slurp_file("$tmp/$name.err");
}

sub stop_endpoint
{
	my ($e) = @_;
	$e->[0]->signal('TERM');
	eval { $e->[0]->finish; 1 } or $e->[0]->kill_kill;
}

# ---------------------------------------------------------------------------
# Set-up: three databases with the extension, created by the superuser

su('postgres', 'CREATE DATABASE shop');
su('shop', 'CREATE EXTENSION pg_triage');
su('postgres', q{
	CREATE ROLE mallory LOGIN IN ROLE triage_user;
	CREATE ROLE alice LOGIN IN ROLE triage_user;
	CREATE ROLE adam LOGIN IN ROLE triage_admin;
	CREATE ROLE wanda LOGIN IN ROLE triage_worker;
	CREATE ROLE walter LOGIN IN ROLE triage_worker;
	CREATE ROLE wendy LOGIN IN ROLE triage_worker;
	CREATE ROLE olga LOGIN;
	CREATE ROLE eve LOGIN;
	CREATE ROLE hr NOLOGIN;
	CREATE ROLE cache_user NOLOGIN IN ROLE triage_user;
	CREATE ROLE cache_nosel NOLOGIN;
	CREATE ROLE pool LOGIN IN ROLE cache_user, cache_nosel;
	CREATE DATABASE other;
	CREATE DATABASE shadowdb;
});
su('other', 'CREATE EXTENSION pg_triage');
su('shadowdb', 'CREATE EXTENSION pg_triage');
for my $db (@dbs)
{
	su($db, qq{
		CREATE TABLE public.pwned (id bigserial, attack text, by_role name, session_role name, is_super boolean,
								   at timestamptz DEFAULT clock_timestamp());
		CREATE TABLE public.shadow_calls (id bigserial, schema name, sig text, by_role name, session_role name,
										  at timestamptz DEFAULT clock_timestamp());
		CREATE TABLE public.shadow_list (schema name, kind text, sig text);
		GRANT SELECT, INSERT ON public.pwned, public.shadow_calls, public.shadow_list TO PUBLIC;
		GRANT USAGE ON SEQUENCE public.pwned_id_seq, public.shadow_calls_id_seq TO PUBLIC;
		GRANT USAGE ON SCHEMA triage TO cache_nosel;
		SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$model_file'));
	});
}

# shop: the users' schemas, hr's payroll, some labeled reviews
su('shop', qq{
	CREATE SCHEMA alice AUTHORIZATION alice;
	CREATE SCHEMA mallory AUTHORIZATION mallory;
	CREATE SCHEMA mallory_shadow AUTHORIZATION mallory;
	CREATE SCHEMA olga AUTHORIZATION olga;
	CREATE SCHEMA hr AUTHORIZATION hr;
	CREATE TABLE hr.payroll (id integer PRIMARY KEY, name text, salary text);
	INSERT INTO hr.payroll VALUES (1, 'jdoe', '5000');
	ALTER TABLE hr.payroll OWNER TO hr;
	CREATE TABLE public.food (product text, review text, score text);
	COPY public.food FROM '$csv' WITH (FORMAT csv, HEADER);
	CREATE TABLE public.reviews AS SELECT row_number() OVER () AS n, review, score FROM public.food LIMIT 600;
	GRANT SELECT ON public.reviews TO PUBLIC;
	-- a model whose labels are what forged escalations write: true (into
	-- pg_authid.rolsuper), 999999 (into hr.payroll.salary), great, other
	-- (an admin may train one; a restored dump may hold one)
	CREATE TABLE public.forge_rows AS
	SELECT 'row ' || g || ' ' || l AS input, l AS label
	  FROM generate_series(1, 5) g, unnest(ARRAY['true', 'false', '999999', '5000', 'great', 'other']) l;
	SELECT triage.train('forge_model', 'SELECT input, label FROM public.forge_rows', '{"kind": "fasttext", "dim": 2, "epoch": 1}');
});
for my $schema (qw(alice mallory olga))
{
	my $r = run_as('shop', $schema, payload_function($schema));
	die "payload of $schema: " . errors($r) unless $r->{ok};
}
my $r = run_as('shop', 'mallory', shadows_script('mallory_shadow'));
die 'shadows in mallory_shadow: ' . errors($r) unless $r->{ok};
note(grep { /shadows in schema/ } split /\n/, $r->{err});

# shadowdb: a database upgraded from PostgreSQL 14, where everyone may
# create in public; the loop's tables are made before mallory's shadows
su('shadowdb', qq{
	GRANT CREATE ON SCHEMA public TO PUBLIC;
	CREATE TABLE food (product text, review text, score text);
	COPY food FROM '$csv' WITH (FORMAT csv, HEADER);
	CREATE TABLE sh_all AS SELECT row_number() OVER () AS n, review, score FROM food;
	CREATE TABLE sh_train AS SELECT review, score FROM sh_all WHERE n <= 300;
	CREATE TABLE sh_cal AS SELECT review, score FROM sh_all WHERE n > 300 AND n <= 450;
	CREATE TABLE sh_test AS SELECT review, score FROM sh_all WHERE n > 450 AND n <= 600;
	CREATE TABLE sh_inbox (id integer PRIMARY KEY, body text, label text, label_by jsonb);
	CREATE TABLE sh_batch (id integer PRIMARY KEY, body text, label text, label_by jsonb);
	INSERT INTO sh_batch (id, body) SELECT n, review FROM sh_all WHERE n > 600 AND n <= 620;
	CREATE TABLE sh_default (id integer PRIMARY KEY, body text, label text);
	GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC;
});
$r = run_as('shadowdb', 'mallory', payload_function('public') . "\n" . shadows_script('public'));
die 'shadows in shadowdb: ' . errors($r) unless $r->{ok};
note(grep { /shadows in schema/ } split /\n/, $r->{err});
note(su('shadowdb', "SELECT string_agg(kind || ': ' || n, ', ') FROM (SELECT kind, count(*) AS n FROM public.shadow_list GROUP BY kind) s"));

# workers: wanda and walter serve shop, wanda also shadowdb; nobody other
allow_worker('shop', $_) for ('wanda', 'walter', $su);
allow_worker('shadowdb', $_) for ('wanda', $su);

$baseline = role_state();
$log_pos = -s $node->logfile;
note(sprintf('set-up: %.1f s', time - $started));

# ---------------------------------------------------------------------------
# #13, What was shown

attack('#13.1 triage_user to superuser through the insert trigger: mallory.jsonb_build_object, search_path = mallory, public', sub {
	my $p = 'a_pol';
	escalating_policy('shop', $p);
	grant_policy('shop', $p, 'mallory');
	works('shop', 'mallory', 'CREATE TABLE mallory.inbox (id integer PRIMARY KEY, body text, label text)',
		'mallory creates her table');
	my $att = run_as('shop', 'mallory', "SELECT triage.attach('mallory.inbox', 'body', 'label', '$p')");
	note('attach: ' . ($att->{ok} ? 'done' : errors($att)));
	works('shop', 'mallory', q{
		CREATE FUNCTION mallory.jsonb_build_object(text, text) RETURNS jsonb LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM mallory.payload('13.1-jsonb_build_object', 'mallory');
			RETURN pg_catalog.jsonb_build_object($1, $2);
		END $$;
	}, 'mallory plants mallory.jsonb_build_object(text, text)');
	my $ins = run_as('shop', 'mallory', "SET search_path = mallory, public;\n"
		  . "INSERT INTO mallory.inbox VALUES (1, 'the coffee was bitter and stale')");
	note('insert: ' . ($ins->{ok} ? 'done' : errors($ins)));
	note('escalations queued: ' . su('shop', "SELECT count(*) FROM triage.escalations WHERE policy = '$p'"));
	no_gain('#13.1', '13.1-');
});

attack('#13.1 search_path variants: the trigger and every function a triage_user calls, under search_path = mallory_shadow, pg_catalog (generated shadows)', sub {
	my $p = 'b_pol';
	escalating_policy('shop', $p);
	grant_policy('shop', $p, 'mallory');
	works('shop', 'mallory', q{
		CREATE TABLE mallory.b_inbox (id integer PRIMARY KEY, body text, label text, label_by jsonb);
		CREATE TABLE mallory.b_batch (id integer PRIMARY KEY, body text, label text);
		INSERT INTO mallory.b_batch (id, body) VALUES (1, 'a batch row, quite tasty'), (2, 'a batch row, stale');
		CREATE TABLE mallory.b_gold (body text, label text);
		INSERT INTO mallory.b_gold VALUES ('delicious and fresh', 'great'), ('stale and bitter', 'other');
	}, 'mallory creates her tables');
	my $att = run_as('shop', 'mallory', "SELECT triage.attach('mallory.b_inbox', 'body', 'label', '$p', 'label_by')");
	note('attach: ' . ($att->{ok} ? 'done' : errors($att)));
	for my $step (
		[ 'INSERT into her attached table (the route trigger)',
			"INSERT INTO mallory.b_inbox (id, body) VALUES (1, 'the tea was stale'), (2, 'lovely snack')" ],
		[ 'UPDATE of the input (the route trigger)', "UPDATE mallory.b_inbox SET body = 'the tea was very stale'" ],
		[ 'COPY into her attached table', "COPY mallory.b_inbox (id, body) FROM stdin;\n3\ta copied review, rather bland\n\\.\n" ],
		[ 'classify', "SELECT triage.classify('sentiment', 'tasty')" ],
		[ 'classify with a version', "SELECT triage.classify('sentiment', 1, 'tasty')" ],
		[ 'classify_batch', "SELECT * FROM triage.classify_batch('sentiment', '{tasty,stale}')" ],
		[ 'predict', "SELECT * FROM triage.predict('sentiment', 'tasty', 2)" ],
		[ 'route', "SELECT triage.route('$p', 'tasty')" ],
		[ 'enqueue', "SELECT triage.enqueue('$p', 'enqueued by mallory')" ],
		[ 'attach (a second table)', "SELECT triage.attach('mallory.b_batch', 'body', 'label', '$p')" ],
		[ 'process_table', "CALL triage.process_table('mallory.b_batch', 'body', 'label', '$p')" ],
		[ 'evaluate', "SELECT triage.evaluate('sentiment', 'SELECT body, label FROM mallory.b_gold')" ],
		[ 'detach', "SELECT triage.detach('mallory.b_inbox', 'label')" ])
	{
		my ($what, $sql) = @$step;
		my $before = shadow_mark('shop', 'mallory_shadow');
		my $r = run_as('shop', 'mallory', "SET search_path = mallory_shadow, pg_catalog;\n$sql");
		note("$what: " . ($r->{ok} ? 'done' : errors($r)));
		my ($n, $list) = shadows_since('shop', 'mallory_shadow', $before);
		is($n, 0, "$what: no shadow of mallory's called") or diag($list);
	}
	no_gain('#13.1 variants', '13.1v-');
});

attack('#13.2 complete() runs the table owner\'s trigger, index expression and CHECK constraint as the table owner, not as the superuser', sub {
	my $p = 'c_pol';
	escalating_policy('shop', $p);
	grant_policy('shop', $p, 'alice');
	works('shop', 'alice', q{
		CREATE TABLE alice.c_tickets (id integer PRIMARY KEY, body text, label text);
		CREATE FUNCTION alice.c_after() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM alice.payload('13.2-after-update-trigger', 'alice');
			RETURN NULL;
		END $$;
		CREATE TRIGGER c_after AFTER UPDATE ON alice.c_tickets FOR EACH ROW EXECUTE FUNCTION alice.c_after();
		CREATE FUNCTION alice.c_index(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
		BEGIN
			PERFORM alice.payload('13.2-index-expression', 'alice');
			RETURN t;
		END $$;
		CREATE INDEX c_tickets_label ON alice.c_tickets (alice.c_index(label));
		CREATE FUNCTION alice.c_check(t text) RETURNS boolean LANGUAGE plpgsql AS $$
		BEGIN
			RETURN alice.payload('13.2-check-constraint', 'alice');
		END $$;
		ALTER TABLE alice.c_tickets ADD CONSTRAINT c_check CHECK (alice.c_check(label));
	}, 'alice adds a trigger, an index expression and a CHECK constraint to her table');
	works('shop', 'alice', "SELECT triage.attach('alice.c_tickets', 'body', 'label', '$p')", 'alice attaches it');
	works('shop', 'alice', q{INSERT INTO alice.c_tickets (id, body) VALUES (1, 'I loved it, would buy again'),
							(2, 'it arrived broken')}, 'alice inserts two rows');
	su('shop', "DELETE FROM public.pwned WHERE attack LIKE '13.2-%'");	# what her own insert ran
	# the worker answers one row, the superuser the other
	my (undef, $ids) = claim_ids('shop', 'wanda', $p, 1);
	complete_as('shop', 'wanda', $_, 'other') for @$ids;
	my (undef, $ids2) = claim_ids('shop', undef, $p, 1);
	complete_as('shop', undef, $_, 'other') for @$ids2;
	is(su('shop', "SELECT count(*) FROM alice.c_tickets WHERE label = 'other'"), '2',
		'both answers were written into alice\'s table');
	is(su('shop', q{SELECT coalesce(string_agg(DISTINCT by_role, ','), '') FROM public.pwned
					 WHERE attack = '13.2-after-update-trigger'}),
		'alice', 'the AFTER UPDATE trigger ran during complete(), as alice, the table owner');
	no_gain('#13.2', '13.2-');
});

attack('#13.3 triage_admin forges escalations of pg_authid.rolsuper and hr.payroll.salary', sub {
	my $p = 'd_pol';
	# labels true, false, 999999, 5000, great, other (adam could train such a model himself)
	escalating_policy('shop', $p, 'forge_model');
	su('shop', "SELECT triage.enqueue('$p', 'an honest row')");
	# adam has no USAGE on schema hr: he names the table by its oid
	my $payroll = su('shop', "SELECT 'hr.payroll'::regclass::oid");
	refused('shop', 'adam', qq{
		INSERT INTO triage.escalations (policy, source, source_key, input_column, output_column, input, small_answer)
		VALUES ('$p', 'pg_catalog.pg_authid', '{"rolname": "adam"}', 'rolname', 'rolsuper', 'adam', '{"label": "false"}')},
		'adam INSERTs an escalation of pg_authid.rolsuper');
	refused('shop', 'adam', qq{
		INSERT INTO triage.escalations (policy, source, source_key, input_column, output_column, input, small_answer)
		VALUES ('$p', '$payroll', '{"id": "1"}', 'name', 'salary', 'jdoe', '{"label": "5000"}')},
		'adam INSERTs an escalation of hr.payroll.salary');
	refused('shop', 'adam', qq{
		UPDATE triage.escalations SET source = '$payroll', source_key = '{"id": "1"}', input_column = 'name',
			   output_column = 'salary', input = 'jdoe', small_answer = '{"label": "5000"}'
		 WHERE policy = '$p' AND input = 'an honest row'},
		'adam UPDATEs an honest escalation into one of hr.payroll.salary');
	# whatever is in the queue now is answered, by adam and by the worker
	for my $role ('adam', 'wanda')
	{
		my (undef, $ids) = claim_ids('shop', $role, $p, 10);
		for my $id (@$ids)
		{
			my $column = su('shop', "SELECT coalesce(output_column::text, '') FROM triage.escalations WHERE id = $id");
			complete_as('shop', $role, $id, $column eq 'rolsuper' ? 'true' : $column eq 'salary' ? '999999' : 'great');
		}
	}
	is(su('shop', 'SELECT salary FROM hr.payroll WHERE id = 1'), '5000', 'hr.payroll is unchanged');
	no_gain('#13.3', '13.3-');
});

# ---------------------------------------------------------------------------
# #21, What was shown

attack('#21.1 operator and function shadowing: a superuser runs the whole loop under search_path = public, pg_catalog in shadowdb', sub {
	my $path = "SET search_path = public, pg_catalog;\n";
	my $before_all = shadow_mark('shadowdb', 'public');
	my $opts = '{"kind": "fasttext", "dim": 10, "epoch": 5, "seed": 1}';
	my %ids;
	my $step = sub {
		my ($what, $sql, $role) = @_;
		my $before = shadow_mark('shadowdb', 'public');
		my $r = run_as('shadowdb', $role, $path . $sql);
		ok($r->{ok}, "$what runs under that search_path") or diag(errors($r));
		my ($n, $list) = shadows_since('shadowdb', 'public', $before);
		is($n, 0, "$what: no shadow called") or diag($list);
		return $r;
	};
	my $claim = sub {
		my ($who, $policy, $n) = @_;
		my $r = $step->("claim as $who ($policy)",
			"SELECT id FROM triage.claim('$who', $n, '5 minutes', '$policy')", $who eq $su ? undef : $who);
		return grep { /^\d+$/ } split /\n/, $r->{out};
	};
	my $response = sql_quote(reply('great', usage => { prompt_tokens => 10, completion_tokens => 2, total_tokens => 12 }));

	$step->('import_fasttext', "SELECT triage.import_fasttext('sh', pg_catalog.pg_read_binary_file('$model_file'))");
	$step->('inspect_fasttext', "SELECT labels FROM triage.inspect_fasttext(pg_catalog.pg_read_binary_file('$model_file'))");
	$step->('train', "SELECT triage.train('sh_trained', 'SELECT review, score FROM sh_train', '$opts')");
	$step->('quantize', "SELECT triage.quantize('sh_trained', 1, '{\"cutoff\": 1000}')");
	$step->('deploy', "SELECT triage.deploy('sh_trained', 2)");
	$step->('rollback', "SELECT triage.rollback('sh_trained')");
	$step->('classify', "SELECT triage.classify('sh', 'the snacks were delicious')");
	$step->('classify with a version', "SELECT triage.classify('sh', 1, 'stale crackers')");
	$step->('classify_batch', "SELECT * FROM triage.classify_batch('sh', '{delicious,stale}')");
	$step->('predict', "SELECT * FROM triage.predict('sh', 'delicious', 2)");
	$step->('create_policy', "SELECT triage.create_policy('sh_pol', 'sh', rules => '{\"min_length\": 100000}')");
	$step->('route', "SELECT triage.route('sh_pol', 'delicious')");
	$step->('attach', "SELECT triage.attach('sh_inbox', 'body', 'label', 'sh_pol', 'label_by')");
	$step->('INSERT into the attached table', "INSERT INTO sh_inbox (id, body) VALUES (1, 'tasty and fresh'), (2, 'stale and bitter')");
	$step->('attach (the table process_table routes)', "SELECT triage.attach('sh_batch', 'body', 'label', 'sh_pol', 'label_by')");
	$step->('process_table', "CALL triage.process_table('sh_batch', 'body', 'label', 'sh_pol', 10, 'label_by')");
	$step->('evaluate', "SELECT triage.evaluate('sh', 'SELECT review, score FROM sh_test')");
	$step->('calibrate', "SELECT triage.calibrate('sh_pol', 'SELECT review, score FROM sh_cal', target_accuracy => 0.8)");
	$step->('calibrate_temperature', "SELECT triage.calibrate_temperature('sh_trained', 'SELECT review, score FROM sh_cal')");
	$step->('fit_temperature', "SELECT triage.fit_temperature('sh_trained', 1, 'SELECT review, score FROM sh_cal')");
	$step->('cross_validate', "SELECT count(*) FROM triage.cross_validate('SELECT review, score FROM sh_train', '{\"kind\": \"fasttext\", \"dim\": 10, \"epoch\": 2}', 2)");
	$step->('create_policy (trained model)', "SELECT triage.create_policy('sh_tc_pol', 'sh_trained')");
	$step->('train_and_calibrate', "SELECT triage.train_and_calibrate('sh_tc_pol', 'SELECT review, score FROM sh_train', '$opts', target_accuracy => 0.8, folds => 2)");
	$step->('add_examples', "SELECT triage.add_examples('sh', 'SELECT review, score FROM sh_cal')");
	$step->('enqueue', "SELECT triage.enqueue('sh_pol', 'please look at this one')");
	$step->('enqueue', "SELECT triage.enqueue('sh_pol', 'and at this one')");
	$step->('enqueue', "SELECT triage.enqueue('sh_pol', 'and this one too')");
	my @mine = $claim->($su, 'sh_pol', 3);
	$step->('complete as the superuser', "SELECT triage.complete($mine[0], $response)") if @mine > 0;
	$step->('fail as the superuser', "SELECT triage.fail($mine[1], 'HTTP 500', '1 second')") if @mine > 1;
	$step->('release as the superuser', "SELECT triage.release($mine[2])") if @mine > 2;
	my @theirs = $claim->('wanda', 'sh_pol', 3);
	ok(@theirs >= 2, 'the worker claimed rows (the inserted ones)') or diag("claimed: @theirs");
	$step->('complete as the worker', "SELECT triage.complete($theirs[0], $response)", 'wanda') if @theirs > 0;
	$step->('fail as the worker', "SELECT triage.fail($theirs[1], 'HTTP 500', '1 second')", 'wanda') if @theirs > 1;
	$step->('release as the worker', "SELECT triage.release($theirs[2])", 'wanda') if @theirs > 2;
	$step->('heartbeat as the worker', "SELECT triage.heartbeat('wanda', 'host', 4242, 1, 1)", 'wanda');
	$step->('escalation_stats', 'SELECT * FROM triage.escalation_stats');
	$step->('process_progress', 'SELECT * FROM triage.process_progress');
	$step->('compact_counters', 'SELECT triage.compact_counters()');
	$step->('distill', q{SELECT triage.distill('sh', '{"heldout": "SELECT review, score FROM sh_test", "query": "SELECT review, score FROM sh_train", "train": {"dim": 10, "epoch": 5}}')});
	$step->('export_fasttext', "SELECT triage.export_fasttext('sh', 1) IS NOT NULL");
	$step->('import_extractor', "SELECT triage.import_extractor('shx', pg_catalog.pg_read_binary_file('$root/models/business_fields.crf'))");
	$step->('extract', "SELECT triage.extract('shx', 'Hi, order A-10293 (\$129.99) has not arrived. Maria Lopez')");
	$step->('create an extraction policy', "SELECT triage.create_policy('shx_pol', NULL, extractor => 'shx', rules => '{\"min_length\": 100000}')");
	$step->('route (extraction)', "SELECT triage.route('shx_pol', 'order A-10293 has not arrived')");
	$step->('enqueue (extraction)', "SELECT triage.enqueue('shx_pol', 'order A-10293 has not arrived')");
	my ($field) = split /,/, su_sh("SELECT array_to_string(labels, ',') FROM triage.models WHERE name = 'shx'");
	my @x = $claim->('wanda', 'shx_pol', 1);
	$step->('complete with fields as the worker', 'SELECT triage.complete(' . $x[0] . ', '
		  . sql_quote(reply(JSON::PP->new->encode({ fields => { $field => 'A-10293' } }))) . ')', 'wanda') if @x;
	$step->('export_extractor', "SELECT triage.export_extractor('shx', 1) IS NOT NULL");
	$step->('detach', "SELECT triage.detach('sh_inbox', 'label')");
	my ($n, $list) = shadows_since('shadowdb', 'public', $before_all);
	is($n, 0, 'the whole loop called no shadow') or diag($list);
	no_gain('#21.1', '21.1');
});

attack('#21.1 operator shadowing with the default search_path: #>> (jsonb, text) and jsonb_build_object(text, text) are better matches', sub {
	my $p = 'r_pol';
	su_sh("SELECT triage.create_policy('$p', 'sentiment', rules => '{\"min_length\": 100000}');
		   SELECT triage.attach('public.sh_default', 'body', 'label', '$p')");
	for my $step (
		[ 'classify in a fresh session (the model loads)', "SELECT triage.classify('sentiment', 'tasty')" ],
		[ 'INSERT into an attached table in a fresh session',
			"INSERT INTO public.sh_default (id, body) VALUES (1, 'an escalated row')" ])
	{
		my ($what, $sql) = @$step;
		my $before = shadow_mark('shadowdb', 'public');
		my $r = run_as('shadowdb', undef, $sql);
		ok($r->{ok}, "$what works") or diag(errors($r));
		my ($n, $list) = shadows_since('shadowdb', 'public', $before);
		is($n, 0, "$what: no shadow called") or diag($list);
	}
});

attack('#21.2 the worker\'s session: triage-worker as a login whose search_path puts planted functions first', sub {
	plan skip_all => "no triage-worker at $worker or no python3" unless $have_worker;
	my $p = 'l_pol';
	su_sh(qq{
		SELECT triage.create_policy('$p', 'sentiment', labels => ARRAY['great', 'other']);
		SELECT triage.enqueue('$p', 'worker session review ' || g) FROM generate_series(1, 3) g;
	});
	su('postgres', 'ALTER ROLE wanda IN DATABASE shadowdb SET search_path = public, pg_catalog');
	my $gold = "$tmp/l_gold.jsonl";
	open(my $g, '>', $gold) or die;
	print $g qq{{"input": "worker session review $_", "label": "great"}\n} for 1 .. 3;
	close $g;
	# the first request gets a 500, so that the worker also calls fail()
	my $stub = start_endpoint('l_stub', 'python3', "$root/test/stub/stub_llm.py", '--gold', $gold,
		'--port', '0', '--mode', '500:1', '--max-seconds', '120');
	my $before = shadow_mark('shadowdb', 'public');
	my $log = "$tmp/l_worker.log";
	my ($status, $out, $err) = run_with_limit([ $worker, '--dsn', $node->connstr('shadowdb') . ' user=wanda',
			'--base-url', "http://127.0.0.1:$stub->[1]/v1", '--model', 'stub', '--policy', $p,
			'--name', 'wanda-l', '--once', '--log-file', $log ], 60);
	# the stub answers an input it does not know with a made-up label (#20)
	require HTTP::Tiny;
	my $stats = decode_json(HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$stub->[1]/stats")->{content} || '{}');
	is($stats->{unknown_input}, 0, 'the stub knew every input the worker sent');
	stop_endpoint($stub);
	su('postgres', 'ALTER ROLE wanda IN DATABASE shadowdb RESET search_path');
	my @warnings = grep { /WARNING/ } split /\n/, $err;
	note("worker exit $status; log:\n" . (-e $log ? slurp_file($log) : '')
		  . join("\n", grep { !/WARNING/ } split /\n/, $err)
		  . "\n" . scalar(@warnings) . ' WARNINGs from the server on its stderr');
	cmp_ok(su_sh("SELECT count(*) FROM triage.escalations WHERE policy = '$p' AND status = 'done'"), '>=', 2,
		'the worker answered the rows that did not get a 500');
	my ($n, $list) = shadows_since('shadowdb', 'public', $before);
	is($n, 0, 'triage-worker called no planted function or operator') or diag($list);
	# and its SQL names everything it calls
	my @bad = map { my @u = unqualified_calls($_->[2]); @u ? "$_->[0]:$_->[1] calls " . join(', ', @u) . " unqualified" : () }
	  worker_sql_strings("$root/src/worker");
	is(join("\n", @bad), '', 'every SQL string of triage-worker calls schema-qualified functions only');
});

attack('#21.3 policy use without a grant: attach, a hand-written trigger, enqueue and process_table under another team\'s policy', sub {
	my $p = 'f_team_a';
	works('shop', 'adam', "SELECT triage.create_policy('$p', 'sentiment', rules => '{\"min_length\": 100000}')",
		'adam creates team A\'s policy');
	works('shop', 'mallory', q{
		CREATE TABLE mallory.f_t1 (id integer PRIMARY KEY, body text, label text);
		CREATE TABLE mallory.f_t2 (id integer PRIMARY KEY, body text, label text);
		CREATE TABLE mallory.f_t3 (id integer PRIMARY KEY, body text, label text);
		INSERT INTO mallory.f_t3 (id, body) VALUES (1, 'mallory wants team A to pay for this');
	}, 'mallory creates her tables');
	refused('shop', 'mallory', "SELECT triage.attach('mallory.f_t1', 'body', 'label', '$p')",
		'mallory attaches her table under team A\'s policy');
	my $r = run_as('shop', 'mallory', qq{
		CREATE TRIGGER triage_route_label BEFORE INSERT OR UPDATE OF body ON mallory.f_t2
			FOR EACH ROW EXECUTE FUNCTION triage_internal.route_row('id', 'body', 'label', '$p', '');
		INSERT INTO mallory.f_t2 (id, body) VALUES (1, 'mallory spends team A''s budget');});
	note('hand-written trigger: ' . ($r->{ok} ? 'the insert went through' : errors($r)));
	refused('shop', 'mallory', "SELECT triage.enqueue('$p', 'mallory enqueues under team A')",
		'mallory enqueues under team A\'s policy');
	refused('shop', 'mallory', "CALL triage.process_table('mallory.f_t3', 'body', 'label', '$p')",
		'mallory runs process_table under team A\'s policy');
	is(su('shop', "SELECT count(*) FROM triage.escalations WHERE policy = '$p'"), '0',
		'nothing was queued under team A\'s policy (no budget spent, no examples to poison distill)');
	is(su('shop', "SELECT coalesce(sum(seen), 0) FROM triage.policy_counters WHERE policy = '$p'"), '0',
		'team A\'s counters are untouched');
	no_gain('#21.3', '21.3-');
});

attack('#21.3 a hand-written route_row trigger whose key is not the primary key', sub {
	my $p = 'g_pol';
	escalating_policy('shop', $p);
	grant_policy('shop', $p, 'alice');
	works('shop', 'alice', qq{
		CREATE TABLE alice.g_dup (id integer PRIMARY KEY, grp integer, body text, label text);
		CREATE TRIGGER triage_route_label BEFORE INSERT OR UPDATE OF body ON alice.g_dup
			FOR EACH ROW EXECUTE FUNCTION triage_internal.route_row('grp', 'body', 'label', '$p', '');
	}, 'alice writes the trigger by hand, keyed on grp');
	my $r = run_as('shop', 'alice', q{INSERT INTO alice.g_dup (id, grp, body) VALUES (1, 7, 'same words twice'),
									  (2, 7, 'same words twice')});
	note('insert: ' . ($r->{ok} ? 'done' : errors($r)));
	my $small = su('shop', "SELECT coalesce(max(label), '') FROM alice.g_dup");
	my $answer = $small eq 'other' ? 'great' : 'other';
	my (undef, $ids) = claim_ids('shop', 'wanda', $p, 5);
	complete_as('shop', 'wanda', $_, $answer) for @$ids;
	is(su('shop', "SELECT count(*) FROM alice.g_dup WHERE label = '$answer'"), '0',
		'no row took an answer through a key that is not the primary key (it was two)');
	no_gain('#21.3 key', '21.3k-');
});

attack('#21.4 complete() reads the output column through the table owner\'s cast', sub {
	my $p = 'h_pol';
	escalating_policy('shop', $p);
	grant_policy('shop', $p, 'alice');
	works('shop', 'alice', q{
		CREATE TABLE alice.h_cast (id integer PRIMARY KEY, body text, label text);
		CREATE TYPE alice.h_mt AS ENUM ('great', 'other');
		CREATE FUNCTION alice.h_mt_text(alice.h_mt) RETURNS text LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM alice.payload('21.4-cast-on-read', 'alice');
			RETURN pg_catalog.format('%s', $1);
		END $$;
		CREATE CAST (alice.h_mt AS text) WITH FUNCTION alice.h_mt_text(alice.h_mt);
	}, 'alice makes a type with a cast to text that runs her code');
	works('shop', 'alice', "SELECT triage.attach('alice.h_cast', 'body', 'label', '$p')", 'alice attaches her table');
	works('shop', 'alice', q{
		INSERT INTO alice.h_cast (id, body) VALUES (1, 'what a tasty treat'), (2, 'stale and bitter');
		ALTER TABLE alice.h_cast ALTER COLUMN label TYPE alice.h_mt USING label::alice.h_mt;
	}, 'alice inserts, then changes the output column to her type');
	su('shop', "DELETE FROM public.pwned WHERE attack LIKE '21.4-%'");
	my (undef, $ids) = claim_ids('shop', 'wanda', $p, 1);
	complete_as('shop', 'wanda', $_, 'other') for @$ids;
	my (undef, $ids2) = claim_ids('shop', undef, $p, 1);
	complete_as('shop', undef, $_, 'great') for @$ids2;
	no_gain('#21.4', '21.4-');
});

attack('#21.5 model bytes: a triage_user cannot read triage.models.data or export a model', sub {
	su('shop', q{
		CREATE TABLE hr.i_tickets (body text, label text);
		INSERT INTO hr.i_tickets
		SELECT CASE WHEN g % 2 = 0 THEN 'payroll question from jdoe-ssn-078-05-1120 at jdoe@example.com'
					ELSE 'laptop broken again, please help' END || ' ticket ' || g,
			   CASE WHEN g % 2 = 0 THEN 'payroll' ELSE 'it' END
		  FROM generate_series(1, 40) g;
		ALTER TABLE hr.i_tickets OWNER TO hr;
		SELECT triage.train('i_hr_model', 'SELECT body, label FROM hr.i_tickets', '{"kind": "fasttext", "dim": 5, "epoch": 2}');
	});
	is(su('shop', q{SELECT position(convert_to('jdoe-ssn-078-05-1120', 'UTF8') IN data) > 0
					  FROM triage.models WHERE name = 'i_hr_model'}),
		't', 'the model\'s dictionary holds the training text (what a reader of the bytes would see)');
	refused('shop', 'mallory', "SELECT data FROM triage.models WHERE name = 'i_hr_model'",
		'mallory SELECTs the model bytes');
	refused('shop', 'mallory', q{SELECT count(*) FROM triage.models
								  WHERE position(convert_to('jdoe-ssn', 'UTF8') IN data) > 0},
		'mallory searches the model bytes');
	refused('shop', 'mallory', 'SELECT * FROM triage.models', 'mallory SELECTs every column of triage.models');
	refused('shop', 'mallory', "SELECT triage.export_fasttext('i_hr_model', 1)", 'mallory exports the model');
	refused('shop', 'wanda', 'SELECT data FROM triage.models', 'a worker SELECTs the model bytes');
	works('shop', 'mallory', "SELECT name, version, kind, labels FROM triage.models WHERE name = 'i_hr_model'",
		'mallory lists the models');
	works('shop', 'mallory', "SELECT triage.classify('i_hr_model', 'my laptop is broken')",
		'mallory classifies with the model');
});

attack('#21.7 the model cache after SET ROLE: a role without SELECT on the models cannot use one another role loaded', sub {
	my $p = 'j_pol';
	escalating_policy('shop', $p);
	my $cold = run_as('shop', 'pool', "SET ROLE cache_nosel;\nSELECT (triage.classify('sentiment', 'tasty')).label");
	ok(!$cold->{ok}, 'in a fresh session, cache_nosel cannot classify (the check exists)');
	# one session, one statement a line: an error names its line
	my @script = (
		[ 'SET ROLE cache_user' ],
		[ "SELECT (triage.classify('sentiment', 'tasty')).label", 1, 'cache_user classifies (the model is cached)' ],
		[ "SELECT (triage.classify('sentiment', 1, 'tasty')).label", 1, 'cache_user classifies with a version' ],
		[ "SELECT count(*) FROM triage.predict('sentiment', 'tasty', 2)", 1, 'cache_user predicts' ],
		[ "SELECT count(*) FROM triage.classify_batch('sentiment', '{tasty}')", 1, 'cache_user classifies a batch' ],
		[ "SELECT (triage.route('$p', 'tasty')).escalate", 1, 'cache_user routes' ],
		[ 'SET ROLE cache_nosel' ],
		[ "SELECT (triage.classify('sentiment', 'tasty')).label", 0, 'then, after SET ROLE cache_nosel, classify' ],
		[ "SELECT (triage.classify('sentiment', 1, 'tasty')).label", 0, 'classify with a version' ],
		[ "SELECT count(*) FROM triage.predict('sentiment', 'tasty', 2)", 0, 'predict' ],
		[ "SELECT count(*) FROM triage.classify_batch('sentiment', '{tasty}')", 0, 'classify_batch' ],
		[ "SELECT (triage.route('$p', 'tasty')).escalate", 0, 'route' ],
		# a pooler: SET LOCAL ROLE in each transaction
		[ 'RESET ROLE' ],
		[ 'BEGIN' ],
		[ 'SET LOCAL ROLE cache_user' ],
		[ "SELECT (triage.classify('sentiment', 'crunchy')).label", 1, 'a pooled transaction as cache_user classifies' ],
		[ 'COMMIT' ],
		[ 'BEGIN' ],
		[ 'SET LOCAL ROLE cache_nosel' ],
		[ "SELECT (triage.classify('sentiment', 'crunchy')).label", 0,
			'the next pooled transaction, as cache_nosel, classifies' ],
		[ 'ROLLBACK' ]);
	my $r = run_as('shop', 'pool', join('', map { "$_->[0];\n" } @script));
	my %failed = map { $_ => 1 } $r->{err} =~ /psql:<stdin>:(\d+): ERROR/g;
	for my $i (0 .. $#script)
	{
		my (undef, $expect_ok, $what) = @{ $script[$i] };
		next unless defined $what;
		if ($expect_ok) { ok(!$failed{ $i + 1 }, "$what: works") or diag($r->{err}); }
		else { ok($failed{ $i + 1 }, "$what: refused"); }
	}
});

attack('#21.8 NOTIFY payloads carry escalation ids only', sub {
	my $p = 'k_secret_team_policy';
	escalating_policy('shop', $p);
	grant_policy('shop', $p, 'alice');
	works('shop', 'alice', "CREATE TABLE alice.k_inbox (id integer PRIMARY KEY, body text, label text);
		SELECT triage.attach('alice.k_inbox', 'body', 'label', '$p');", 'alice attaches a table');
	my $bg = $node->background_psql('shop', on_error_stop => 0, extra_params => [ '-U', 'eve' ]);
	$bg->query('LISTEN triage_escalations');
	works('shop', 'alice', "INSERT INTO alice.k_inbox (id, body) VALUES (1, 'a row for the secret team')",
		'alice inserts an escalated row');
	su('shop', "SELECT triage.enqueue('$p', 'enqueued for the secret team')");
	my $heard = '';
	for (1 .. 50)
	{
		$heard .= $bg->query('SELECT 1');
		last if ($heard =~ s/Asynchronous notification/$&/g) >= 2;
		sleep 0.1;
	}
	$bg->quit;
	my @payloads = $heard =~ /Asynchronous notification "triage_escalations" with payload "([^"]*)"/g;
	note("eve heard: @payloads");
	ok(@payloads >= 1, 'a role with no triage role hears the channel (a hint for workers; documented)');
	is(join(' ', grep { !/^\d+$/ } @payloads), '', 'every payload is an escalation id (no policy names)');
});

attack('#21.9 forged escalations planted as the superuser (a restored dump): complete() refuses targets that are not attached with those columns', sub {
	my $p = 'e_pol';
	escalating_policy('shop', $p, 'forge_model');
	escalating_policy('shop', 'e_pol2');
	grant_policy('shop', $_, 'alice') for ($p, 'e_pol2');
	works('shop', 'alice', q{
		CREATE TABLE alice.e_plain (id integer PRIMARY KEY, body text, label text);
		INSERT INTO alice.e_plain VALUES (1, 'plain row', NULL);
		CREATE TABLE alice.e_att (id integer PRIMARY KEY, grp integer, body text, label text, note text);
		INSERT INTO alice.e_att VALUES (1, 7, 'att row', NULL, NULL), (2, 7, 'att row', NULL, NULL);
		CREATE TABLE alice.e_other (id integer PRIMARY KEY, body text, label text);
		INSERT INTO alice.e_other VALUES (1, 'other policy row', NULL);
	}, 'alice\'s tables');
	works('shop', 'alice', "SELECT triage.attach('alice.e_att', 'body', 'label', '$p');
		SELECT triage.attach('alice.e_other', 'body', 'label', 'e_pol2');", 'alice attaches two of them');
	my @forged = (
		[ 'pg_authid.rolsuper of the worker', 'pg_catalog.pg_authid', '{"rolname": "wanda"}', 'rolname', 'rolsuper',
			'wanda', '{"label": "false"}', 'true', "SELECT rolsuper FROM pg_roles WHERE rolname = 'wanda'", 'f' ],
		[ 'hr.payroll.salary', 'hr.payroll', '{"id": "1"}', 'name', 'salary', 'jdoe', '{"label": "5000"}', '999999',
			'SELECT salary FROM hr.payroll WHERE id = 1', '5000' ],
		[ 'a table that is not attached', 'alice.e_plain', '{"id": "1"}', 'body', 'label', 'plain row', '{}', 'great',
			"SELECT coalesce(label, '-') FROM alice.e_plain", '-' ],
		[ 'an attached table, another output column', 'alice.e_att', '{"id": "1"}', 'body', 'note', 'att row', '{}',
			'great', 'SELECT count(note) FROM alice.e_att', '0' ],
		[ 'an attached table, a key that is not the primary key', 'alice.e_att', '{"grp": "7"}', 'body', 'label',
			'att row', '{}', 'other', 'SELECT count(label) FROM alice.e_att', '0' ],
		[ 'a table attached under another policy', 'alice.e_other', '{"id": "1"}', 'body', 'label', 'other policy row',
			'{}', 'great', "SELECT coalesce(label, '-') FROM alice.e_other", '-' ]);
	my %answer;
	for my $f (@forged)
	{
		my ($what, $source, $key, $in, $out, $input, $small, $ans) = @$f;
		my $id = su('shop', qq{
			INSERT INTO triage.escalations (policy, source, source_key, input_column, output_column, input, small_answer)
			VALUES ('$p', '$source', '$key', '$in', '$out', '$input', '$small') RETURNING id});
		$answer{$id} = $ans;
	}
	my ($claim, $ids) = claim_ids('shop', 'wanda', $p, 20);
	ok($claim->{ok}, 'claim() does not fail as a whole because of the forged rows') or diag(errors($claim));
	complete_as('shop', 'wanda', $_, $answer{$_} // 'great') for @$ids;
	for my $f (@forged)
	{
		my ($what, $check, $expect) = @$f[ 0, 8, 9 ];
		is(su('shop', $check), $expect, "$what: not written");
	}
	no_gain('#21.9', '21.9-');
});

attack('#21.6 the API key does not leak: an endpoint that echoes it in a 400, a key in the URL, a password in the DSN', sub {
	plan skip_all => "no triage-worker at $worker or no python3" unless $have_worker;
	my $p = 'v_pol';
	escalating_policy('shop', $p);
	su('shop', "SELECT triage.enqueue('$p', 'a row for the echoing endpoint')");
	my @chars = ('a' .. 'z', 'A' .. 'Z', '0' .. '9');
	my $key = 'sk-' . join('', map { $chars[ int(rand(@chars)) ] } 1 .. 161);
	substr($key, $_, 1) = '/' for (40, 90, 140);	# JSON encoders may escape "/"
	(my $escaped = $key) =~ s{/}{\\/}g;
	my $key_file = "$tmp/v_api_key";
	open(my $kf, '>', $key_file) or die;
	print $kf "$key\n";
	close $kf;
	chmod 0600, $key_file;
	my $echo = start_endpoint('v_echo', 'python3', "$root/test/attacks/echo_llm.py", '--port', '0');
	my $url_secret = 'QSECRET' . int(rand(1e9));
	my $log = "$tmp/v_worker.log";
	my ($status, $out, $err) = run_with_limit([ $worker, '--dsn', $node->connstr('shop') . ' user=wanda',
			'--base-url', "http://127.0.0.1:$echo->[1]/v1?api_key=$url_secret", '--model', 'stub',
			'--api-key-file', $key_file, '--policy', $p, '--name', 'wanda-v', '--once', '--log-file', $log ], 60);
	stop_endpoint($echo);
	my $text = (-e $log ? slurp_file($log) : '') . $out . $err;
	my $stored = su('shop', "SELECT coalesce(string_agg(error, ' '), '') FROM triage.escalations WHERE policy = '$p'");
	note("stored error: $stored");
	ok($stored ne '' || $text =~ /job=/, 'the worker sent the request and recorded the failure');
	my @leaks = leaked_pieces($stored, 12, $key, $escaped);
	is(scalar(@leaks), 0, 'no piece of the key (12 characters or more) in triage.escalations.error')
	  or diag("e.g. $leaks[0]");
	@leaks = leaked_pieces($text, 12, $key, $escaped);
	is(scalar(@leaks), 0, 'no piece of the key in the worker\'s log') or diag("e.g. $leaks[0]");
	unlike($stored, qr/received_authorization/, 'no reply body is stored for a 400');
	unlike($text, qr/\Q$url_secret\E/, 'a key in the URL\'s query string is not logged');
	# a password with an @ in a URI DSN, the database unreachable
	my $pw_secret = 'PWSECRET' . int(rand(1e9));
	my $log2 = "$tmp/v_worker_dsn.log";
	($status, $out, $err) = run_with_limit([ $worker, '--dsn', "postgresql://wanda:pa\@ss-$pw_secret\@127.0.0.1:1/shop",
			'--base-url', 'http://127.0.0.1:1/v1', '--model', 'stub', '--name', 'wanda-v2', '--once',
			'--log-file', $log2 ], 6);
	my $text2 = (-e $log2 ? slurp_file($log2) : '') . $out . $err;
	note("worker with an unreachable DSN: exit $status; $text2");
	unlike($text2, qr/\Q$pw_secret\E/, 'no part of a DSN password after an @ is logged');
});

# ---------------------------------------------------------------------------
# #13, What to build: queues per database, leases, usage

attack('#13 per-database workers: a worker allowed in shop cannot read or claim the queue of database other', sub {
	su('other', "SELECT triage.create_policy('m_pol', 'sentiment'); SELECT triage.enqueue('m_pol', 'a row of database other')");
	my $id = su('other', "SELECT id FROM triage.escalations WHERE policy = 'm_pol'");
	my $r = run_as('other', 'wanda', "SELECT id FROM triage.claim('wanda', 10)");
	ok(!$r->{ok} || $r->{out} eq '', 'claim() in other gives wanda (allowed in shop only) nothing')
	  or diag("wanda claimed $r->{out} in other");
	run_as('other', 'wanda', "SELECT triage.complete($id, " . sql_quote(reply('great')) . ')');
	run_as('other', 'wanda', "SELECT triage.fail($id, 'x')");
	is(su('other', "SELECT status || ' ' || attempts FROM triage.escalations WHERE id = $id"), 'pending 0',
		'other\'s escalation is untouched');
	refused('other', 'wanda', 'SELECT input FROM triage.escalations', 'wanda reads the queue of other');
	refused('shop', 'wanda', 'SELECT input FROM triage.escalations', 'wanda reads the queue of shop directly');
	# wendy has triage_worker but was allowed nowhere
	escalating_policy('shop', 'm_pol_shop');
	su('shop', "SELECT triage.enqueue('m_pol_shop', 'a row of shop')");
	my $w = run_as('shop', 'wendy', "SELECT id FROM triage.claim('wendy', 10, '5 minutes', 'm_pol_shop')");
	ok(!$w->{ok} || $w->{out} eq '', 'claim() in shop gives wendy (never allowed) nothing')
	  or diag("wendy claimed $w->{out}");
});

attack('#13 leases: a worker completes, fails or releases only what it claimed, while the lease holds', sub {
	my $p = 'n_pol';
	escalating_policy('shop', $p);
	su('shop', "SELECT triage.enqueue('$p', 'lease row ' || g) FROM generate_series(1, 4) g");
	my (undef, $ids) = claim_ids('shop', 'wanda', $p, 4);
	is(scalar(@$ids), 4, 'wanda leases four rows');
	my @id = @$ids;
	return unless @id == 4;
	run_as('shop', 'walter', "SELECT triage.complete($id[0], " . sql_quote(reply('great')) . ')');
	run_as('shop', 'walter', "SELECT triage.fail($id[1], 'walter says no')");
	run_as('shop', 'walter', "SELECT triage.release($id[2])");
	is(su('shop', "SELECT string_agg(status || '/' || attempts, ' ' ORDER BY id) FROM triage.escalations
					WHERE id IN ($id[0], $id[1], $id[2])"),
		'claimed/0 claimed/0 claimed/0', 'walter could not complete, fail or release wanda\'s leases');
	su('shop', "UPDATE triage.escalations SET visible_at = now() - interval '1 second' WHERE id = $id[3]");
	complete_as('shop', 'wanda', $id[3], 'great');
	isnt(su('shop', "SELECT status FROM triage.escalations WHERE id = $id[3]"), 'done',
		'wanda cannot complete a row whose lease ran out');
});

attack('#13 a reply with a non-numeric usage does not break triage.escalation_stats', sub {
	my $p = 'o_pol';
	escalating_policy('shop', $p);
	su('shop', "SELECT triage.enqueue('$p', 'usage row')");
	my (undef, $ids) = claim_ids('shop', 'wanda', $p, 1);
	complete_as('shop', 'wanda', $_, 'great',
		usage => { prompt_tokens => 'many', completion_tokens => [1], total_tokens => { n => 1 } }) for @$ids;
	works('shop', undef, 'SELECT * FROM triage.escalation_stats', 'escalation_stats');
	works('shop', 'adam', 'SELECT * FROM triage.escalation_stats', 'escalation_stats for an admin');
});

attack('a plain table owner with no triage role: the queue, the models, a hand-written trigger', sub {
	my $p = 'p_pol';
	escalating_policy('shop', $p);
	refused('shop', 'olga', "SELECT triage.enqueue('$p', 'olga enqueues')", 'olga enqueues');
	refused('shop', 'olga', "SELECT * FROM triage.claim('olga', 1)", 'olga claims');
	refused('shop', 'olga', "SELECT triage.complete(1, '{}')", 'olga completes');
	refused('shop', 'olga', 'SELECT name FROM triage.models', 'olga reads triage.models');
	refused('shop', 'olga', 'SELECT name FROM triage.policies', 'olga reads triage.policies');
	my $r = run_as('shop', 'olga', qq{
		CREATE TABLE olga.p_notes (id integer PRIMARY KEY, body text, label text);
		CREATE TRIGGER triage_route_label BEFORE INSERT ON olga.p_notes
			FOR EACH ROW EXECUTE FUNCTION triage_internal.route_row('id', 'body', 'label', '$p', '');
		INSERT INTO olga.p_notes (id, body) VALUES (1, 'olga routes without any right');});
	note('olga\'s trigger: ' . ($r->{ok} ? 'the insert went through' : errors($r)));
	is(su('shop', "SELECT count(*) FROM triage.escalations WHERE policy = '$p'"), '0',
		'nothing was queued from olga\'s table');
	no_gain('plain owner', 'p-');
});

attack('#13 the loop still runs for a table owner with only the documented grants (triage_user and a policy grant)', sub {
	my $p = 'u_pol';
	escalating_policy('shop', $p);
	grant_policy('shop', $p, 'alice');
	works('shop', 'alice', q{
		CREATE TABLE alice.u_inbox (id integer PRIMARY KEY, body text, label text, label_by jsonb);
		CREATE TABLE alice.u_old (id integer PRIMARY KEY, body text, label text);
		INSERT INTO alice.u_old (id, body) VALUES (1, 'an old row, tasty'), (2, 'an old row, stale');
	}, 'alice creates her tables');
	works('shop', 'alice', "SELECT triage.attach('alice.u_inbox', 'body', 'label', '$p', 'label_by')", 'alice attaches');
	works('shop', 'alice', "INSERT INTO alice.u_inbox (id, body) VALUES (1, 'lovely and fresh'), (2, 'stale crackers')",
		'alice inserts');
	my (undef, $ids) = claim_ids('shop', 'wanda', $p, 10);
	is(scalar(@$ids), 2, 'the worker leases the two escalations');
	complete_as('shop', 'wanda', $_, 'great') for @$ids;
	is(su('shop', "SELECT count(*) FROM alice.u_inbox WHERE label = 'great' AND label_by->>'by' = 'llm'"), '2',
		'the answers were written into her attached table, with provenance');
	is(su('shop', "SELECT count(*) FROM triage.escalations WHERE policy = '$p' AND outcome = 'written'"), '2',
		'both escalations were written back');
	works('shop', 'adam', q{SELECT triage.distill('sentiment', '{"heldout": "SELECT review, score FROM public.reviews WHERE n > 400", "query": "SELECT review, score FROM public.reviews WHERE n <= 400", "train": {"dim": 10, "epoch": 5}}')},
		'the admin distills');
	# process_table on rows that were there before the table was attached
	works('shop', 'alice', "SELECT triage.attach('alice.u_old', 'body', 'label', '$p')", 'alice attaches her old table');
	works('shop', 'alice', "CALL triage.process_table('alice.u_old', 'body', 'label', '$p')", 'alice runs process_table');
	is(su('shop', 'SELECT count(label) FROM alice.u_old'), '2', 'process_table labeled her old rows');
});

# ---------------------------------------------------------------------------
# Static checks

attack('every SPI statement of src/*.c runs inside a BeginOwnSql section (the readers of users\' query texts excepted)', sub {
	my ($statements, $connects) = scan_spi("$root/src");
	ok(@$statements > 0, 'SPI statements found');
	for my $s (@$statements)
	{
		my $where = "$s->{file}:$s->{line} $s->{function}() $s->{call}";
		note($where . ': ' . ($s->{literal} ? $s->{sql} : "<$s->{sql}>"));
		# query_rows.c reads users' query texts as the caller, and so does
		# the held-out reader of calibration_sql.c: they run no SQL of their own
		if ($s->{file} eq 'query_rows.c' || ($s->{file} eq 'calibration_sql.c' && $s->{function} eq 'ReadHeldOut'))
		{
			ok(!$s->{literal}, "$where runs a user's query text, no SQL of its own");
		}
		else
		{
			ok($s->{in_section}, "$where is inside BeginOwnSql/EndOwnSql");
		}
	}
	my @stray = grep {
		$_->{file} ne 'security.c' && $_->{file} ne 'query_rows.c'
		  && !($_->{file} eq 'calibration_sql.c' && $_->{function} eq 'ReadHeldOut')
	} @$connects;
	is(join(', ', map { "$_->{file}:$_->{line} $_->{function}()" } @stray), '',
		'SPI_connect only in BeginOwnSql and the readers of users\' query texts');
});

attack('every sql and plpgsql function of schemas triage and triage_internal pins search_path = pg_catalog, pg_temp (or is a thin qualified entry point)', sub {
	my $functions = decode_json(su('shop', q{
		SELECT json_agg(json_build_object('name', p.oid::regprocedure::text,
										  'proname', p.pronamespace::regnamespace::text || '.' || p.proname,
										  'kind', p.prokind, 'lang', l.lanname, 'config', p.proconfig,
										  'src', p.prosrc, 'secdef', p.prosecdef, 'nargs', p.pronargs,
										  'ndefaults', p.pronargdefaults,
										  'public_exec', has_function_privilege('eve', p.oid, 'EXECUTE'))
						ORDER BY p.oid::regprocedure::text)
		  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
		 WHERE p.pronamespace IN ('triage'::regnamespace, 'triage_internal'::regnamespace)}));
	for my $f (@$functions)
	{
		$f->{pinned} = grep { (my $c = $_) =~ s/[\s"]//g; $c eq 'search_path=pg_catalog,pg_temp' } @{ $f->{config} || [] };
	}
	# a call of schema.name with n arguments reaches a pinned (or C) function
	my $safe_call = sub {
		my ($name, $n) = @_;
		return grep {
			$_->{proname} eq $name && ($_->{pinned} || $_->{lang} eq 'c')
			  && $n <= $_->{nargs} && $n >= $_->{nargs} - $_->{ndefaults}
		} @$functions;
	};
	for my $f (grep { $_->{lang} eq 'sql' || $_->{lang} eq 'plpgsql' } @$functions)
	{
		if ($f->{pinned})
		{
			ok(1, "$f->{name} pins search_path");
			next;
		}
		# thin entry points: a LANGUAGE sql function, or a plpgsql procedure
		# (a procedure that commits cannot have SET search_path)
		if (!$f->{secdef} && ($f->{lang} eq 'sql' || $f->{kind} eq 'p'))
		{
			my ($thin, $detail) = $f->{lang} eq 'sql' ? thin_sql_body($f->{src}) : thin_plpgsql_body($f->{src});
			my @unsafe = $thin ? grep { !$safe_call->(@$_) } @$detail : ();
			ok($thin && !@unsafe, "$f->{name}: an unpinned thin entry point that calls pinned functions only")
			  or diag($thin
				  ? 'calls ' . join(', ', map { "$_->[0] with $_->[1] arguments" } @unsafe) . ', not pinned'
				  : $detail);
			next;
		}
		fail("$f->{name} ($f->{lang}" . ($f->{secdef} ? ', SECURITY DEFINER' : '') . ') does not pin search_path');
	}
	for my $f (grep { $_->{secdef} } @$functions)
	{
		ok($f->{pinned}, "SECURITY DEFINER $f->{name} pins search_path");
		ok(!$f->{public_exec}, "SECURITY DEFINER $f->{name} is not executable by PUBLIC");
	}
});

# ---------------------------------------------------------------------------

my @called = slurp_file($node->logfile) =~ /WARNING:\s+pg_triage shadow called: ([^\n]*)/g;
my %distinct = map { $_ => 1 } @called;
is(scalar(@called), 0, 'the server log shows no planted function or operator called, by anyone')
  or diag(scalar(@called) . ' calls, e.g.: ' . join('; ', (sort keys %distinct)[ 0 .. (keys %distinct > 12 ? 11 : keys(%distinct) - 1) ]));

note(sprintf('011_attacks: %.0f s', time - $started));
$node->stop;
done_testing();
