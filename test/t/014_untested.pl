# Behaviours no other test covered (issue #20), each asserted as it should
# be, so that a test fails where the product does not do it:
#
#   1. classify_batch (the OpenBLAS path) against classify, on a model of
#      50 labels trained here by the fasttext tool: the same label and a
#      confidence within 1e-5 for every input, and no answer where classify
#      has none (NULL, empty, blank, unknown words).
#   2. a deploy committed while one statement runs: the statement answers
#      every row with the version deployed when it started, serial, with
#      parallel workers, and through an attached table's trigger whose
#      escalations (SPI, locks) come after the deploy; the next statement
#      uses the new version.
#   3. pg_dump/pg_restore of a database with a model, a policy, an attached
#      table, escalations (pending and answered) and counters, into a fresh
#      database and into one that has the extension, without an error: all
#      of it comes back, the table still routes, a restored escalation is
#      still answered into its (restored) row.
#   4. DROP EXTENSION with an attached table: refused, naming the triggers;
#      with CASCADE the triggers go and the table and its rows stay, and the
#      schemas triage and triage_internal (members of the extension) go.
#   5. a LATIN1 database: classify and extract answer as in a UTF-8 one
#      (same labels, confidences, values and character offsets), or fail
#      with an error that says so; never a silently different answer.
#      Training on rows with characters outside ASCII fails with the error
#      classify gives; ASCII rows train.
#   6. pg_cancel_backend during train_extractor and during distill: each
#      stops within seconds, with the cancel's error, storing nothing.
use strict;
use warnings;
use utf8;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run;
use List::Util qw(shuffle);
use Time::HiRes qw(sleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $started = time;
my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $v1 = "$root/test/data/sentiment_v1.ftz";
my $v2 = "$root/test/data/sentiment_v2.ftz";
my $csv = "$root/test/data/fine_foods_train.csv";
my $shipped = "$root/models/fine_foods_sentiment.ftz";
my $crf = "$root/models/business_fields.crf";

my $node = PostgreSQL::Test::Cluster->new('untested');
$node->init;
$node->append_conf('postgresql.conf', "max_worker_processes = 8\nmax_parallel_workers = 4");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_triage');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# A psql running $sql in the background, found by its application_name
sub start_session
{
	my ($name, $sql, $db) = @_;
	my $file = "$tmp/$name.sql";
	open(my $fh, '>', $file) or die "$file: $!";
	print $fh $sql;
	close $fh;
	my $s = { name => $name, out => '', err => '', db => $db // 'postgres' };
	$s->{h} = IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d',
		  $node->connstr($s->{db}) . " application_name=$name", '-f', $file ],
		'>', \$s->{out}, '2>', \$s->{err});
	return $s;
}

# Waits until the session's statement matching $like has run $seconds; its pid
sub wait_running
{
	my ($s, $like, $seconds) = @_;
	my $deadline = time + 60;
	while (time < $deadline)
	{
		my $pid = $node->safe_psql($s->{db}, qq{
			SELECT pid FROM pg_stat_activity
			 WHERE application_name = '$s->{name}' AND state = 'active' AND query LIKE '$like'
			   AND clock_timestamp() - query_start > interval '$seconds seconds'});
		return $pid if $pid;
		last unless $s->{h}->pumpable;
		sleep 0.05;
	}
	return undef;
}

sub finish_session
{
	my ($s) = @_;
	$s->{h}->finish;
	$s->{status} = $? >> 8;
	return $s;
}

# ---------------------------------------------------------------------------
# 1. classify_batch against classify, 50 labels

# 50 labels (two of them not ASCII), each with 8 words of its own among 400
# shared ones; 5,000 training lines, 2,000 test lines; a fixed seed
my @labels = map { sprintf('lab%02d', $_) } 0 .. 49;
@labels[ 0, 1 ] = ('café', 'naïve');
{
	srand(20);
	my @vocab = map { "w$_" } 0 .. 399;
	my @own = map { [ map { $vocab[ int(rand(400)) ] } 1 .. 8 ] } 0 .. 49;
	my $line = sub {
		my ($l) = @_;
		my @w = ((map { $own[$l][ int(rand(8)) ] } 1 .. 2 + int(rand(4))),
			(map { $vocab[ int(rand(400)) ] } 1 .. 1 + int(rand(6))));
		return join(' ', shuffle(@w));
	};
	open(my $tr, '>:utf8', "$tmp/many_train.txt") or die;
	for (1 .. 5000)
	{
		my $l = int(rand(50));
		print $tr "__label__$labels[$l] " . $line->($l) . "\n";
	}
	close $tr;
	open(my $te, '>:utf8', "$tmp/many_test.txt") or die;
	print $te $line->(int(rand(50))), "\n" for 1 .. 2000;
	close $te;
}
my ($out, $err) = ('', '');
IPC::Run::run([ 'fasttext', 'supervised', '-input', "$tmp/many_train.txt", '-output', "$tmp/many",
		'-dim', '16', '-epoch', '10', '-lr', '0.5', '-thread', '1', '-bucket', '10000', '-verbose', '0' ],
	'>', \$out, '2>', \$err)
  or die "fasttext supervised failed (it is a dependency of make test): $err";
sql(qq{
	SELECT triage.import_fasttext('many', pg_read_binary_file('$tmp/many.bin'));
	SELECT triage.import_fasttext('two', pg_read_binary_file('$v1'));
	CREATE TABLE many_in (id serial, body text);
	COPY many_in (body) FROM '$tmp/many_test.txt';
});
is(sql("SELECT cardinality(labels) FROM triage.models WHERE name = 'many'"), '50', 'a model of 50 labels');
# the 2,000 lines, then inputs without evidence and a NULL
sql(q{INSERT INTO many_in (body) VALUES (''), ('   '), ('zzqx qxzz'), (NULL), ('w1 w2 w3')});

# classify_batch's answer and classify's for each input, side by side.  The
# 50-label model is dense with a softmax output, so classify_batch computes
# its output layer with one sgemm (fasttext_batch.c: 16 labels or more);
# sentiment_v1 (2 labels, quantized) goes row by row.  Labels must agree;
# confidences may differ in the last bits (the sums run in another order)
sub batch_against_row
{
	my ($model) = @_;
	return sql(qq{
		CREATE TEMP TABLE cmp AS
		SELECT i.id, i.body, b.ord, b.label AS b_label, b.confidence AS b_conf, c.label AS c_label, c.confidence AS c_conf
		  FROM many_in i
		  LEFT JOIN triage.classify_batch('$model', (SELECT array_agg(body ORDER BY id) FROM many_in)) b ON b.ord = i.id
		  LEFT JOIN LATERAL triage.classify('$model', i.body) c ON true;
		SELECT count(*), count(ord), count(*) FILTER (WHERE c_label IS NOT NULL),
			   count(*) FILTER (WHERE c_label IS NOT NULL AND b_label IS DISTINCT FROM c_label),
			   coalesce(max(abs(b_conf - c_conf)), 0),
			   count(*) FILTER (WHERE c_label IS NULL AND b_label IS NOT NULL),
			   coalesce(string_agg(DISTINCT quote_literal(coalesce(body, 'NULL')) || ' -> ' || b_label, ', ')
						FILTER (WHERE c_label IS NULL AND b_label IS NOT NULL), '')
		  FROM cmp;
		DROP TABLE cmp;});
}
my ($n, $n_ord, $n_found, $n_differ, $max_diff, $n_extra, $extra) = split /\|/, batch_against_row('many');
is($n_ord, $n, "classify_batch answers every one of the $n inputs, at its position (ord)");
cmp_ok($n_found, '>=', 2000, "classify answers the $n_found inputs with evidence");
is($n_differ, 0, 'classify_batch gives the label classify gives, 50 labels (the sgemm path)');
cmp_ok($max_diff, '<=', 1e-5, "and its confidence within 1e-5 ($max_diff)");
is($n_extra, 0, 'classify_batch answers no input that classify does not (NULL, empty, blank, unknown words)')
  or diag("classify_batch answered: $extra");
($n, $n_ord, $n_found, $n_differ, $max_diff, $n_extra, $extra) = split /\|/, batch_against_row('two');
is($n_differ, 0, 'two labels (the row-by-row path): the same labels');
cmp_ok($max_diff, '<=', 1e-5, "and confidences ($max_diff)");
is($n_extra, 0, 'two labels: classify_batch answers no input that classify does not')
  or diag("classify_batch answered: $extra");

# ---------------------------------------------------------------------------
# 2. A deploy committed while one statement runs

# 4,000 reviews 40 times (160,000 rows), and both versions' confidence of each
sql(qq{
	SELECT triage.import_fasttext('dv', pg_read_binary_file('$v1'));
	SELECT triage.import_fasttext('dv', pg_read_binary_file('$v2'));
	CREATE TABLE food (product text, review text, score text);
	COPY food FROM '$csv' WITH (FORMAT csv, HEADER);
	CREATE TABLE ref AS
	SELECT row_number() OVER () AS rid, review,
		   (triage.classify('dv', 1, review)).confidence AS c1, (triage.classify('dv', 2, review)).confidence AS c2
	  FROM food;
	CREATE TABLE big AS SELECT (k - 1) * 4000 + rid AS id, rid, review AS body FROM ref, generate_series(1, 40) k;
	ALTER TABLE big ADD PRIMARY KEY (id);
	ANALYZE big;
	-- a pause every 16,000 rows, so that the statement runs a few seconds
	-- (STABLE: its SPI is read-only, as a parallel worker requires)
	CREATE FUNCTION nap(id bigint) RETURNS boolean LANGUAGE plpgsql STABLE PARALLEL SAFE AS \$\$
	BEGIN
		IF id % 16000 = 0 THEN PERFORM pg_sleep(0.25); END IF;
		RETURN true;
	END \$\$;
});
is(sql('SELECT count(*) FROM ref WHERE abs(c1 - c2) < 1e-6'), '0',
	'every review has another confidence under each version: a row says which answered it');

# Runs $statement (which makes table $table of (rid, c, at)) in a session,
# deploys version 2 once it has run 0.7 s; returns the deploy's commit time
sub deploy_during
{
	my ($name, $settings, $statement, $table) = @_;
	sql("SELECT triage.deploy('dv', 1)");
	my $s = start_session($name, "$settings\n$statement;\n"
		  . "CREATE TABLE ${table}_next AS SELECT rid, (triage.classify('dv', body)).confidence AS c FROM big WHERE id <= 100;\n");
	my $pid = wait_running($s, '%CREATE TABLE%', 0.7);
	ok($pid, "$name: the statement is running") or diag($s->{err});
	sql("SELECT triage.deploy('dv', 2)");
	my $deployed = sql('SELECT clock_timestamp()');
	finish_session($s);
	is($s->{status}, 0, "$name: the statement ended") or diag($s->{err});
	my ($rows, $after, $v1_rows, $v2_only) = split /\|/, sql(qq{
		SELECT count(*), count(*) FILTER (WHERE t.at > '$deployed'),
			   count(*) FILTER (WHERE abs(t.c - r.c1) < 1e-6), count(*) FILTER (WHERE abs(t.c - r.c1) >= 1e-6)
		  FROM $table t JOIN ref r USING (rid)});
	cmp_ok($after, '>', 0, "$name: $after of its $rows rows were answered after the deploy had committed");
	is($v2_only, 0, "$name: one version answered the whole statement: none of its $rows rows by version 2");
	is($v1_rows, $rows, "$name: every row by version 1, deployed when the statement began");
	is(sql("SELECT count(*) FILTER (WHERE abs(n.c - r.c2) < 1e-6) || '/' || count(*) FROM ${table}_next n JOIN ref r USING (rid)"),
		'100/100', "$name: the session's next statement uses version 2");
}

deploy_during('serial', 'SET max_parallel_workers_per_gather = 0;',
	"CREATE TABLE seen_serial AS SELECT rid, (triage.classify('dv', body)).confidence AS c, clock_timestamp() AS at FROM big WHERE nap(id)",
	'seen_serial');

my $parallel = 'SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; '
  . 'SET min_parallel_table_scan_size = 0;';
my $par_select = "SELECT rid, (triage.classify('dv', body)).confidence AS c, clock_timestamp() AS at FROM big WHERE nap(id)";
like(sql("$parallel EXPLAIN (COSTS OFF) CREATE TABLE x AS $par_select"), qr/Gather.*Workers Planned: 2/s,
	'with these settings the statement runs in 2 parallel workers and the leader');
deploy_during('parallel', $parallel, "CREATE TABLE seen_parallel AS $par_select", 'seen_parallel');

# an attached table: rows routed by its trigger, those after the deploy
# escalated (an SPI insert into the queue, whose lock is taken only then)
sql(q{
	SELECT triage.create_policy('dvp', 'dv', threshold => 0, rules => '{"escalate_if_matches": "zzlate"}');
	CREATE TABLE routed_in (id bigint PRIMARY KEY, rid bigint, body text, label text, label_by jsonb,
							at timestamptz DEFAULT clock_timestamp());
	SELECT triage.attach('routed_in', 'body', 'label', 'dvp', 'label_by');
});
sql("SELECT triage.deploy('dv', 1)");
my $s = start_session('trigger', "SET max_parallel_workers_per_gather = 0;\n"
	  . "INSERT INTO routed_in (id, rid, body) SELECT id, rid, CASE WHEN id > 80000 AND id % 100 = 0 THEN body || ' zzlate' ELSE body END FROM big WHERE nap(id);\n");
ok(wait_running($s, '%INSERT INTO routed_in%', 0.7), 'trigger: the INSERT is running') or diag($s->{err});
sql("SELECT triage.deploy('dv', 2)");
my $deployed = sql('SELECT clock_timestamp()');
finish_session($s);
is($s->{status}, 0, 'trigger: the INSERT ended') or diag($s->{err});
my ($rows, $after, $versions, $queued_after) = split /\|/, sql(qq{
	SELECT count(*), count(*) FILTER (WHERE at > '$deployed'),
		   string_agg(DISTINCT label_by->>'version', ','),
		   (SELECT count(*) FROM triage.escalations e JOIN routed_in r ON r.id = (e.source_key->>'id')::bigint
			 WHERE e.policy = 'dvp' AND r.at > '$deployed')
	  FROM routed_in});
cmp_ok($after, '>', 0, "trigger: $after of $rows rows were routed after the deploy had committed");
cmp_ok($queued_after, '>', 0, "trigger: $queued_after of them were queued (SPI in the trigger) after it");
is($versions, '1', 'trigger: every row of the INSERT was routed by version 1 (label_by->>version)');

# ---------------------------------------------------------------------------
# 3. pg_dump and pg_restore

$node->safe_psql('postgres', 'CREATE DATABASE shop');
sub shop { return $node->safe_psql('shop', $_[0]); }
shop(qq{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('m', pg_read_binary_file('$v1'));
	SELECT triage.create_policy('p', 'm', threshold => 0.9, rules => '{"escalate_if_matches": "refund"}', audit_rate => 0.1);
	CREATE TABLE inbox (id int PRIMARY KEY, body text, label text, label_by jsonb);
	SELECT triage.attach('inbox', 'body', 'label', 'p', 'label_by');
	INSERT INTO inbox (id, body)
	SELECT g, 'review number ' || g || CASE WHEN g % 7 = 0 THEN ' refund please' ELSE ' lovely tea' END
	  FROM generate_series(1, 200) g;
	SELECT count(*) FROM triage.claim('w', 5, '1 hour');
	SELECT triage.complete(id, '{"model": "big", "choices": [{"message": {"content": "{\\"label\\": \\"other\\"}"}}],
								 "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}')
	  FROM triage.escalations WHERE status = 'claimed';
});
# everything that must survive, as text
my $state_sql = q{
	SELECT jsonb_build_object(
		'stats', (SELECT jsonb_agg(to_jsonb(s) ORDER BY policy) FROM triage.escalation_stats s),
		'queue', (SELECT jsonb_agg(jsonb_build_array(id, policy, input, status, attempts, outcome, answer, usage,
													 source::text, source_key) ORDER BY id) FROM triage.escalations),
		-- (updated_at: the policy check sets it on every write, restore's too)
		'policies', (SELECT jsonb_agg(to_jsonb(p) - 'updated_at' ORDER BY name) FROM triage.policies p),
		'counters', (SELECT jsonb_agg(jsonb_build_array(policy, s, e) ORDER BY policy)
					   FROM (SELECT policy, sum(seen) AS s, sum(escalated) AS e FROM triage.policy_counters GROUP BY 1) c),
		'examples', (SELECT jsonb_agg(jsonb_build_array(model, input, label, source) ORDER BY id) FROM triage.examples),
		'inbox', (SELECT jsonb_agg(jsonb_build_array(id, body, label, label_by - 'at') ORDER BY id) FROM inbox),
		'attached', (SELECT array_agg(t::text) FROM triage.attached_tables('p') t),
		'models', (SELECT jsonb_agg(jsonb_build_array(name, version, md5(data)) ORDER BY name, version) FROM triage.models),
		'deployed', (SELECT jsonb_agg(jsonb_build_array(name, version)) FROM triage.deployments))};
my $before = shop($state_sql);
like($before, qr/"answered": 5/, 'the source database has answered escalations');
like($before, qr/"pending": [1-9]/, '... and pending ones');

my $dump = "$tmp/shop.dump";
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('shop') ], 'pg_dump of the database');
$node->safe_psql('postgres', 'CREATE DATABASE shop2');
($out, $err) = ('', '');
IPC::Run::run([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('shop2'), $dump ], '>', \$out, '2>', \$err);
is($? >> 8, 0, 'pg_restore into a fresh database, without an error') or diag($err);
is($node->safe_psql('shop2', $state_sql), $before,
	'restored: models, deployments, the policy, the queue, counters, examples, escalation_stats, the table and its attachment');
# into a database where CREATE EXTENSION already ran: the dump's CREATE
# EXTENSION is IF NOT EXISTS, and schemas triage and triage_internal are
# members of the extension (made by its script), so not dumped apart
$node->safe_psql('postgres', 'CREATE DATABASE shop3');
$node->safe_psql('shop3', 'CREATE EXTENSION pg_triage');
($out, $err) = ('', '');
IPC::Run::run([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('shop3'), $dump ], '>', \$out, '2>', \$err);
is($? >> 8, 0, 'pg_restore into a database that has the extension, without an error') or diag($err);
IPC::Run::run([ 'pg_restore', '-l', $dump ], '>', \$out, '2>', \$err);
unlike($out, qr/SCHEMA - triage/, 'the dump has no schema of its own for triage or triage_internal: both are the extension\'s');
is($node->safe_psql('shop3', $state_sql), $before, 'and everything is restored there too');
sub shop2 { return $node->safe_psql('shop2', $_[0]); }
shop2(q{INSERT INTO inbox (id, body) VALUES (1000, 'I want a refund'), (1001, 'lovely tea')});
is(shop2(q{SELECT string_agg(id || ':' || (label IS NOT NULL) || ':' || (label_by->>'by'), ',' ORDER BY id) FROM inbox WHERE id >= 1000}),
	'1000:true:model,1001:true:model', 'the restored table still routes inserted rows');
is(shop2(q{SELECT count(*) FROM triage.escalations WHERE source_key->>'id' = '1000' AND id > (SELECT max(id) FROM triage.escalations WHERE source_key->>'id' <> '1000')}),
	'1', 'and queues an escalation with a new id (the sequence came back too)');
is(shop2(q{SELECT rows_seen FROM triage.escalation_stats WHERE policy = 'p'}), '202',
	'and counts the two rows on top of the restored counters');
# a restored pending escalation is answered into its restored row
my $job = shop2(q{SELECT min(id) FROM triage.escalations WHERE status = 'pending' AND source_key->>'id' <> '1000'});
shop2(qq{UPDATE triage.escalations SET visible_at = now() - interval '1 second' WHERE id = $job});
is(shop2(qq{SELECT count(*) FROM triage.claim('w2', 100, '1 hour') WHERE id = $job}), '1', 'a restored escalation is claimed');
is(shop2(qq{SELECT triage.complete($job, '{"choices": [{"message": {"content": "great"}}]}')}), 'done',
	'and answered');
is(shop2(qq{SELECT i.label || ':' || (i.label_by->>'by') || ':' || e.outcome FROM triage.escalations e
			 JOIN inbox i ON i.id = (e.source_key->>'id')::int WHERE e.id = $job}),
	'great:llm:written', 'the answer is written into the restored row');

# ---------------------------------------------------------------------------
# 4. DROP EXTENSION with an attached table

my ($ret, $stdout, $stderr) = $node->psql('shop2', 'DROP EXTENSION pg_triage');
isnt($ret, 0, 'DROP EXTENSION with an attached table is refused');
like($stderr, qr/cannot drop extension pg_triage because other objects depend on it/,
	'... with a clear error') or diag($stderr);
like($stderr, qr/trigger triage_route_label on table inbox depends on function triage_internal\.route_row\(\)/,
	'... naming the routing trigger of the attached table');
is(shop2(q{SELECT count(*) FROM pg_extension WHERE extname = 'pg_triage'}), '1', 'the extension is still there');
($ret, $stdout, $stderr) = $node->psql('shop2', 'DROP EXTENSION pg_triage CASCADE');
is($ret, 0, 'DROP EXTENSION ... CASCADE drops it');
like($stderr, qr/drop cascades to trigger triage_route_label on table inbox/, '... and says it drops the triggers');
is(shop2(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'inbox'::regclass}), '0', 'the triggers are gone');
is(shop2(q{SELECT count(*) FROM inbox}), '202', 'the table and its rows stay');
shop2(q{INSERT INTO inbox (id, body) VALUES (2000, 'lovely tea')});
is(shop2(q{SELECT label IS NULL FROM inbox WHERE id = 2000}), 't', 'and new rows are no longer routed');
# the schemas are members of the extension (its script makes them): gone too
is(shop2(q{SELECT count(*) FROM pg_namespace WHERE nspname IN ('triage', 'triage_internal')}), '0',
	'schemas triage and triage_internal are dropped with the extension');
shop2('CREATE EXTENSION pg_triage');
is(shop2(q{SELECT count(*) FROM triage.models}), '0', 'and CREATE EXTENSION works again, empty');

# ---------------------------------------------------------------------------
# 5. A LATIN1 database

$node->safe_psql('postgres',
	"CREATE DATABASE lat TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'");
is($node->safe_psql('lat', 'SHOW server_encoding'), 'LATIN1', 'a LATIN1 database');
my $setup = qq{
	CREATE EXTENSION IF NOT EXISTS pg_triage;
	SELECT triage.import_fasttext('enc_sentiment', pg_read_binary_file('$shipped'));
	SELECT triage.import_fasttext('enc_many', pg_read_binary_file('$tmp/many.bin'));
	SELECT triage.import_extractor('enc_fields', pg_read_binary_file('$crf'));
};
$node->safe_psql($_, $setup) for qw(postgres lat);
# texts made with chr(), whose code points LATIN1 and UTF-8 share; every
# answer as the hex of its UTF-8 bytes, so that both databases print alike
my @texts = (
	[ 'ascii review', q{'great tea, would buy again'} ],
	[ 'accented review', q{'caf' || chr(233) || ' d' || chr(233) || 'licieux, tr' || chr(232) || 's bon, na' || chr(239) || 've'} ]);
for my $t (@texts)
{
	my ($what, $expr) = @$t;
	my $q = "SELECT encode(convert_to(c.label, 'UTF8'), 'hex') || ':' || c.confidence FROM triage.classify('enc_sentiment', $expr) c";
	my $utf8 = $node->safe_psql('postgres', $q);
	my ($r, $lat, $e) = $node->psql('lat', $q);
	ok(($r == 0 && $lat eq $utf8) || ($r != 0 && $e =~ /encoding|UTF-?8/i),
		"LATIN1: classify of an $what answers as in UTF-8 ($utf8), or fails saying why")
	  or diag("LATIN1: " . ($r == 0 ? $lat : $e));
}
# the label café of the 50-label model
{
	# an input the model gives label café: found in the UTF-8 database
	my $input = sql(q{SELECT body FROM many_in WHERE (triage.classify('many', body)).label = 'caf' || chr(233) ORDER BY id LIMIT 1});
	ok($input, "an input labelled cafe with an e acute by the 50-label model: '$input'");
	my $q = "SELECT encode(convert_to(c.label, 'UTF8'), 'hex') FROM triage.classify('enc_many', '$input') c";
	my $utf8 = $node->safe_psql('postgres', $q);
	my ($r, $lat, $e) = $node->psql('lat', $q);
	is($utf8, '636166c3a9', 'UTF-8: the label is cafe with an e acute (its UTF-8 bytes)');
	ok(($r == 0 && $lat eq $utf8) || ($r != 0 && $e =~ /encoding|UTF-?8/i),
		'LATIN1: the label cafe with an e acute comes back as itself, or an error says why')
	  or diag("LATIN1: " . ($r == 0 ? "label bytes (UTF-8 hex) $lat" : $e));
}
{
	my $msg = q{'Dear M' || chr(252) || 'ller, order A-10293 of ' || chr(163) || '129.99 has shipped. Regards, Jos' || chr(233) || ' Garc' || chr(237) || 'a'};
	my $q = "SELECT string_agg(key || '=' || encode(convert_to(value->>'value', 'UTF8'), 'hex') || '['
	  || (value->>'start') || ',' || (value->>'end') || ')', ' ' ORDER BY key) FROM jsonb_each(triage.extract('enc_fields', $msg))";
	my $utf8 = $node->safe_psql('postgres', $q);
	my ($r, $lat, $e) = $node->psql('lat', $q);
	ok(($r == 0 && $lat eq $utf8) || ($r != 0 && $e =~ /encoding|UTF-?8/i),
		'LATIN1: extract of a message with accents gives the fields and character offsets of UTF-8, or fails saying why')
	  or diag("UTF-8: $utf8\nLATIN1: " . ($r == 0 ? $lat : $e));
}

# Training reads rows whole, as UTF-8 like classification: in LATIN1, rows
# with characters outside ASCII (inputs, labels, an extractor's inputs and
# fields) fail with classify's error, before any training; ASCII rows train
{
	my ($r, $o, $e) = $node->psql('lat', q{SELECT triage.classify('enc_sentiment', 'caf' || chr(233))});
	my ($classify_error) = $e =~ /^.*?(ERROR:.*)$/m;
	like($classify_error, qr/pg_triage reads text as UTF-8, and this database's encoding is LATIN1/,
		'LATIN1: classify of a non-ASCII input is an error that says why');
	my @cases = (
		[ 'train on a non-ASCII input',
		  q{SELECT triage.train('enc_t', $$SELECT * FROM (VALUES ('caf' || chr(233) || ' good', 'pos'), ('bad tea', 'neg')) v$$)} ],
		[ 'train on a non-ASCII label',
		  q{SELECT triage.train('enc_t', $$SELECT * FROM (VALUES ('good tea', 'caf' || chr(233)), ('bad tea', 'neg')) v$$)} ],
		[ 'cross_validate on a non-ASCII input',
		  q{SELECT count(*) FROM triage.cross_validate($$SELECT * FROM (VALUES ('good tea', 'pos'), ('na' || chr(239) || 've', 'neg')) v$$, '{}', 2)} ],
		[ 'train_extractor on a non-ASCII input',
		  q{SELECT triage.train_extractor('enc_x', $$SELECT 'order A-1 for Jos' || chr(233), '{"order_id": "A-1"}'::jsonb$$)} ],
		[ 'train_extractor on a non-ASCII field value',
		  q{SELECT triage.train_extractor('enc_x', $$SELECT 'order A-1 for Jose', jsonb_build_object('order_id', 'A-1', 'name', 'Jos' || chr(233))$$)} ]);
	for my $c (@cases)
	{
		my ($what, $q) = @$c;
		($r, $o, $e) = $node->psql('lat', $q);
		my ($error) = $e =~ /^.*?(ERROR:.*)$/m;
		isnt($r, 0, "LATIN1: $what fails");
		is($error, $classify_error, "LATIN1: $what fails with classify's error") or diag($e);
	}
	is($node->safe_psql('lat', q{SELECT count(*) FROM triage.models WHERE name IN ('enc_t', 'enc_x')}), '0',
		'LATIN1: nothing was stored by the failed trainings');
	# (two rows: the linear kind's c given, since choosing it by 5-fold
	# cross-validation needs at least 5, and every word kept)
	is($node->safe_psql('lat', q{SELECT triage.train('enc_t', $$SELECT * FROM (VALUES ('good tea', 'pos'), ('bad tea', 'neg')) v$$,
													  '{"c": 1, "min_df": 1}')}),
		'1', 'LATIN1: training on ASCII rows works');
}

# ---------------------------------------------------------------------------
# 6. Cancelling train_extractor and distill

system('python3', "$root/test/extract/gen_messages.py", '--seed', 101, '--count', 2000, '--phrasings', 'seen',
	'--out', "$tmp/msgs.csv") == 0
  or die 'gen_messages.py failed';
sql(qq{
	CREATE TABLE msgs (id serial, input text, fields jsonb, kind text, template text);
	COPY msgs (input, fields, kind, template) FROM '$tmp/msgs.csv' (FORMAT csv, HEADER);
	CREATE TABLE labeled AS SELECT row_number() OVER () AS n, review, score FROM food;
	SELECT triage.import_fasttext('dd', pg_read_binary_file('$shipped'));
	INSERT INTO triage.examples (model, input, label, source) VALUES ('dd', 'stale and bitter', 'other', 'llm');
});

# Starts $sql in a session, cancels it after $after seconds; checks it
# stopped within 5 s with the cancel's error
sub cancel_during
{
	my ($name, $sql, $like, $after) = @_;
	my $s = start_session($name, "$sql;\n");
	my $pid = wait_running($s, $like, $after);
	ok($pid, "$name: running for $after s") or diag($s->{err});
	my $t0 = time;
	is(sql("SELECT pg_cancel_backend($pid)"), 't', "$name: pg_cancel_backend");
	finish_session($s);
	my $took = time - $t0;
	cmp_ok($took, '<', 5, sprintf('%s: stopped %.2f s after the cancel', $name, $took));
	like($s->{err}, qr/canceling statement due to user request/, "$name: with the cancel's error")
	  or diag($s->{err});
}

my $models_before = sql('SELECT count(*) FROM triage.models');
cancel_during('train_extractor', "SELECT triage.train_extractor('fx', 'SELECT input, fields FROM msgs ORDER BY id')",
	'%train_extractor%', 2);
is(sql("SELECT count(*) FROM triage.models WHERE name = 'fx'") . '/' . sql("SELECT count(*) FROM triage.deployments WHERE name = 'fx'"),
	'0/0', 'train_extractor cancelled: no model, no deployment stored');

cancel_during('distill', q{SELECT triage.distill('dd', '{"query": "SELECT review, score FROM labeled WHERE n % 5 <> 0",
	"heldout": "SELECT review, score FROM labeled WHERE n % 5 = 0",
	"train": {"dim": 100, "epoch": 200, "wordNgrams": 2, "seed": 1}}')}, '%distill%', 2);
is(sql("SELECT string_agg(version::text, ',' ORDER BY version) FROM triage.models WHERE name = 'dd'"), '1',
	'distill cancelled: no new version stored');
is(sql("SELECT version FROM triage.deployments WHERE name = 'dd'"), '1', 'and the deployment is unchanged');
is(sql('SELECT count(*) FROM triage.models'), $models_before, 'no model of any name was stored');

note(sprintf('014_untested took %.0f s', time - $started));
$node->stop;
done_testing();
