# Bounded resources for hostile input, and who may use a model (issues #13
# and #21):
#
#   1. triage.max_input_bytes: the cut (at a character boundary), the
#      setting that moves it, and a 100 MB row costing what 1 MB does;
#   2. triage.max_tokens: the cut, and a hostile 8 KB model (maxn and
#      wordNgrams 64) on a 4 MB input staying within tens of megabytes;
#   3. statement_timeout on a 100 MB input with both limits raised;
#   4. scratch memory given back after big inputs (classifier and
#      extractor): the backend's VmRSS back near where it was;
#   5. predict() over 1,000,000 rows without growth;
#   6. the privilege check on a cache hit: SET ROLE, a plpgsql expression
#      kept across roles, a membership revoked mid-transaction, and users
#      who may read every column of triage.models but the bytes;
#   7. a model in use stays valid while a nested call drops the cache;
#   8. extractor field names: a byte that is not UTF-8 is refused at import.
#
# Memory is read by the backend itself from /proc/self/status (VmRSS, and
# VmHWM for the peak during a statement), with JIT off so that loading LLVM
# does not count.
use strict;
use warnings;
no warnings 'portable';		# the 64-bit constants of the CRF checksum

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

plan skip_all => 'the memory of a backend is read from /proc (Linux)' unless -r "/proc/$$/status";

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $v1 = "$root/test/data/sentiment_v1.ftz";
# how far above where it was a backend may stay after a big input
my $near_mb = 16;

my $node = PostgreSQL::Test::Cluster->new('limits');
$node->init;
$node->append_conf('postgresql.conf', "jit = off\n");
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# psql that may fail: (exit code, stdout, stderr)
sub try_sql
{
	my ($query) = @_;
	my ($out, $err) = ('', '');
	my $ret = $node->psql('postgres', $query, stdout => \$out, stderr => \$err, on_error_stop => 0);
	return ($ret, $out, $err);
}

# "VmRSS VmHWM" of the session's backend, in kB, as SQL
my $mem = q{SELECT mem()};

sql(qq{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('v1', pg_read_binary_file('$v1'));
	SELECT triage.import_fasttext('food', pg_read_binary_file('$root/models/fine_foods_sentiment.ftz'));
	SELECT triage.import_extractor('fields', pg_read_binary_file('$root/models/business_fields.crf'));
	-- A hostile classifier of 8 KB: subword and word n-grams up to 64 (the
	-- most the loader accepts), not pruned, so that every n-gram is a row
	SELECT triage.train('tiny', \$\$SELECT 'good food ' || g, 'good' FROM generate_series(1, 20) g
		UNION ALL SELECT 'bad food ' || g, 'bad' FROM generate_series(1, 20) g\$\$,
		'{"kind": "fasttext", "dim": 2, "bucket": 1000, "minn": 1, "maxn": 3, "wordNgrams": 2, "epoch": 1}');
	SELECT triage.import_fasttext('hostile', overlay(overlay(triage.export_fasttext('tiny', 1)
		PLACING '\\x40000000' FROM 49 FOR 4) PLACING '\\x40000000' FROM 29 FOR 4));
	-- The same maxn and wordNgrams in a pruned model: few rows, but each
	-- n-gram hashed and looked up, so that a long input is slow rather than big
	SELECT triage.import_fasttext('slow', overlay(overlay(pg_read_binary_file('$v1')
		PLACING '\\x40000000' FROM 49 FOR 4) PLACING '\\x40000000' FROM 29 FOR 4));
	CREATE FUNCTION mem() RETURNS text LANGUAGE sql AS \$\$
		SELECT (regexp_match(s, 'VmRSS:\\s+(\\d+) kB'))[1] || ' ' || (regexp_match(s, 'VmHWM:\\s+(\\d+) kB'))[1]
		  FROM pg_read_file('/proc/self/status') s\$\$;
	-- 3 MB: 66 kB of praise (9,000 tokens), then complaints; and 100 MB,
	-- its first megabyte praise
	CREATE TABLE big (id int PRIMARY KEY, body text);
	INSERT INTO big SELECT 1, repeat('delicious great tasty ', 3000) || repeat('stale bitter awful ', 150000);
	INSERT INTO big SELECT 2, repeat('delicious great tasty ', 48000) || repeat('stale bitter awful ', 5200000);
});
is(sql(q{SELECT params->>'maxn' || ' ' || (params->>'wordNgrams') || ' ' || (params->>'pruned') || ' '
		  || (octet_length(data) < 10000) FROM triage.models WHERE name = 'hostile'}),
	'64 64 false true', 'the hostile model: maxn 64, wordNgrams 64, not pruned, under 10 KB');
is(sql(q{SELECT string_agg((octet_length(body) / 1000000)::text, ' ' ORDER BY id) FROM big}), '2 99',
	'rows of 2.9 MB and 99 MB');

# The settings, with their defaults
is(sql(q{LOAD 'pg_triage'; SELECT current_setting('triage.max_input_bytes') || ' ' || current_setting('triage.max_tokens')}),
	'1MB 100000', 'defaults: triage.max_input_bytes 1MB, triage.max_tokens 100000');

# 1. triage.max_input_bytes
# 'stale bitter ' is 13 bytes, and é two more: at 14 the cut falls inside é
# and goes back to its start
is(sql(q{
	SET triage.max_input_bytes = 14;
	SELECT triage.classify('v1', 'stale bitter éclair great great great')
		   = triage.classify('v1', 'stale bitter ')}), 't',
	'max_input_bytes: an input is read up to the limit, cut back to a character boundary');
isnt(sql(q{SET triage.max_input_bytes = 14; SELECT triage.classify('v1', 'stale bitter éclair great great great')}),
	sql(q{SELECT triage.classify('v1', 'stale bitter éclair great great great')}),
	'max_input_bytes: at the default the input is read whole');
my $letter = 'Order A-10293 was charged 1,299.00 EUR on 2024-03-05. Contact: Jane Roe, jane.roe@example.com, +1 555 0100.';
is(sql(qq{
	SET triage.max_input_bytes = 40;
	SELECT triage.extract('fields', '$letter') = (SELECT triage.extract('fields', left('$letter', 40)))}), 't',
	'max_input_bytes: extraction reads the same prefix');
isnt(sql(qq{SELECT triage.extract('fields', '$letter') = triage.extract('fields', left('$letter', 40))}), 't',
	'max_input_bytes: ... which leaves out fields past it');

# The 3 MB row: the first 100,000 tokens are mostly complaints, but the
# first 64 kB or 9,000 tokens praise
is(sql(q{SELECT (triage.classify('food', body)).label FROM big WHERE id = 1}), 'other',
	'a 3 MB row at the defaults: the complaints in its first megabyte decide');
is(sql(q{SET triage.max_input_bytes = '64kB'; SELECT (triage.classify('food', body)).label FROM big WHERE id = 1}),
	'great', '... with max_input_bytes 64kB, only the praise is read');
is(sql(q{SET triage.max_tokens = 9000; SELECT (triage.classify('food', body)).label FROM big WHERE id = 1}),
	'great', '... and so with max_tokens 9000');

# The 100 MB row costs what its first megabyte does: only that much is
# fetched from the table and decompressed
{
	my $t0 = time;
	my @r = split /\n/, sql(qq{
		SELECT triage.classify('food', 'warm up') IS NOT NULL;
		$mem;
		SELECT (triage.classify('food', body)).label FROM big WHERE id = 2;
		$mem;
		SELECT triage.classify('food', body) = triage.classify('food', left(body, 1048576)) FROM big WHERE id = 2;
	});
	my $t = time - $t0;
	my ($rss0, $hwm0) = split / /, $r[1];
	my ($rss1, $hwm1) = split / /, $r[3];
	is($r[2], 'great', 'the 100 MB row at the defaults: classified by its first megabyte');
	is($r[4], 't', '... as the first megabyte alone is');
	cmp_ok(($hwm1 - $hwm0) / 1024, '<', 32,
		sprintf('... with the backend at most %.1f MB above where it was', ($hwm1 - $hwm0) / 1024));
	cmp_ok($t, '<', 20, sprintf('... in %.2f s for both statements', $t));
}

# 2. triage.max_tokens
is(sql(q{
	SET triage.max_tokens = 3;
	SELECT triage.classify('v1', 'stale bitter awful great great great great')
		   = triage.classify('v1', 'stale bitter awful')}), 't',
	'max_tokens: prediction reads that many tokens and stops');
is(sql(q{
	SELECT triage.classify('v1', 'stale bitter awful great great great great')
		   = triage.classify('v1', 'stale bitter awful')}), 'f',
	'max_tokens: at the default it reads them all');
is(sql(q{
	SET triage.max_tokens = 3;
	SELECT array_agg(label || ' ' || probability ORDER BY label)
		   = (SELECT array_agg(label || ' ' || probability ORDER BY label)
				FROM triage.predict('v1', 'stale bitter awful', -1))
	  FROM triage.predict('v1', 'stale bitter awful great great great great', -1)}), 't',
	'max_tokens: predict() too');

# The hostile model on 4 MB: one 4 MB token (64 n-grams per character), and
# 1.3 million short tokens (63 word n-grams each).  Unbounded, these take
# about 1 GB and 370 MB of rows; bounded, at most 64 rows per token allowed.
for my $case ([ 'one 4 MB token', q{repeat('x', 4000000)} ],
	[ '1.3 million tokens', q{repeat('ab ', 1300000)} ])
{
	my ($what, $input) = @$case;
	my $t0 = time;
	my @r = split /\n/, sql(qq{
		SET triage.max_input_bytes = '8MB';
		SELECT triage.classify('hostile', 'warm up');
		$mem;
		SELECT count(*) FROM (SELECT triage.classify('hostile', $input)) AS answered;
		$mem;
	});
	my $t = time - $t0;
	my ($rss0, $hwm0) = split / /, $r[1];
	my ($rss1, $hwm1) = split / /, $r[3];
	# answered (a token over the row budget is not read: with nothing else,
	# that is no evidence, a NULL answer)
	is($r[2], '1', "hostile model, $what: answered");
	cmp_ok(($hwm1 - $hwm0) / 1024, '<', 100,
		sprintf("hostile model, $what: peak %.1f MB above where it was (unbounded: hundreds)", ($hwm1 - $hwm0) / 1024));
	cmp_ok(($rss1 - $rss0) / 1024, '<', $near_mb,
		sprintf("hostile model, $what: VmRSS %.1f MB above where it was after the call", ($rss1 - $rss0) / 1024));
	note(sprintf("hostile model, $what: %.2f s; VmRSS %d kB -> %d kB, peak %d kB", $t, $rss0, $rss1, $hwm1));
}

# 3. statement_timeout on 100 MB with both limits raised: the slow model
# takes several seconds on it (4.5 s here; see the note), reading the row
# 0.2 s: it must stop at 1 s, inside the prediction
{
	my $t0 = time;
	my ($ret, $out, $err) = try_sql(qq{
		SELECT triage.classify('slow', 'warm up') IS NOT NULL;
		$mem;
		SET triage.max_input_bytes = '1GB';
		SET triage.max_tokens = 33554430;
		SET statement_timeout = '1s';
		SELECT triage.classify('slow', body) FROM big WHERE id = 2;
		RESET statement_timeout;
		$mem;
	});
	my $t = time - $t0;
	my @r = split /\n/, $out;
	like($err, qr/canceling statement due to statement timeout/,
		'statement_timeout cancels a prediction over 100 MB with the limits raised');
	cmp_ok($t, '<', 10, sprintf('... %.1f s after the session started (timeout 1 s)', $t));
	my ($rss0) = split / /, $r[1] // '';
	my ($rss1) = split / /, $r[2] // '';
	ok(defined $rss1 && $rss1 =~ /^\d+$/, '... and the session goes on');
	cmp_ok(($rss1 - $rss0) / 1024, '<', $near_mb,
		sprintf('... its VmRSS %.1f MB above where it was before', ($rss1 - $rss0) / 1024));

	my $t1 = time;
	is(sql(q{SET triage.max_input_bytes = '1GB'; SET triage.max_tokens = 33554430;
			 SELECT triage.classify('slow', left(body, 1000000)) IS NOT NULL FROM big WHERE id = 2}), 't',
		'the slow model on 1 MB with the limits raised');
	note(sprintf('... takes %.2f s, so the 100 MB would take about 100 times that', time - $t1));
	$t1 = time;
	is(sql(q{SELECT triage.classify('slow', body) IS NOT NULL FROM big WHERE id = 2}), 't',
		'at the defaults the slow model reads the 100 MB row');
	cmp_ok(time - $t1, '<', 10, sprintf('... in %.2f s', time - $t1));
}

# 4. Scratch given back: an extractor on a long text (its per-token arrays
# grow with the tokens, up to 4,096), a classifier on many tokens
{
	my @r = split /\n/, sql(qq{
		SELECT triage.extract('fields', 'warm up') IS NOT NULL;
		SELECT triage.classify('food', 'warm up') IS NOT NULL;
		$mem;
		SELECT triage.extract('fields', repeat('Order A-10293 for Jane Roe ', 2000)) IS NOT NULL;
		$mem;
		SET triage.max_input_bytes = '8MB';
		SELECT triage.classify('food', repeat('stale bitter ', 400000)) IS NOT NULL;
		$mem;
	});
	my @m = map { [ split / / ] } @r[ 2, 4, 6 ];
	cmp_ok(($m[1][0] - $m[0][0]) / 1024, '<', $near_mb,
		sprintf('extractor, 4,096 tokens: VmRSS %.1f MB above where it was after the call', ($m[1][0] - $m[0][0]) / 1024));
	cmp_ok(($m[2][0] - $m[0][0]) / 1024, '<', $near_mb,
		sprintf('classifier, 100,000 tokens of 2 n-gram models: VmRSS %.1f MB above where it was after the call (peak %.1f MB above)',
			($m[2][0] - $m[0][0]) / 1024, ($m[2][1] - $m[0][1]) / 1024));
}

# 5. predict() over 1,000,000 rows, as a select-list function and LATERAL:
# it kept a kilobyte per call until the end of the query (1 GB)
for my $form ([ 'select list', q{SELECT count(*) FROM (SELECT triage.predict('v1', 'stale and bitter ' || g, 1, 0)
		FROM generate_series(1, 1000000) g) s} ],
	[ 'LATERAL', q{SELECT count(*) FROM generate_series(1, 1000000) g,
		LATERAL triage.predict('v1', 'stale and bitter ' || g, 1, 0) p} ])
{
	my ($what, $query) = @$form;
	my $t0 = time;
	my @r = split /\n/, sql(qq{
		SELECT count(*) FROM triage.predict('v1', 'warm up');
		$mem;
		$query;
		$mem;
	});
	my ($rss0, $hwm0) = split / /, $r[1];
	my ($rss1, $hwm1) = split / /, $r[3];
	is($r[2], '1000000', "predict() in the $what: 1,000,000 rows");
	cmp_ok(($hwm1 - $hwm0) / 1024, '<', 32,
		sprintf("predict() in the $what: peak %.1f MB above where it was (after: %.1f MB); %.1f s",
			($hwm1 - $hwm0) / 1024, ($rss1 - $rss0) / 1024, time - $t0));
}

# 6. Who may use a model, on cache hits too.  alice has triage_user;
# mallory may call the functions (USAGE on the schema) but has no grant on
# triage.models; bob has triage_user until it is revoked.
sql(q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE mallory LOGIN;
	CREATE ROLE bob LOGIN;
	GRANT triage_user TO alice, bob;
	GRANT USAGE ON SCHEMA triage TO mallory;
	CREATE FUNCTION label_of(t text) RETURNS text LANGUAGE plpgsql AS
		$$BEGIN RETURN (triage.classify('v1', t)).label; END$$;
});
my $label = sql(q{SELECT (triage.classify('v1', 'stale bitter')).label});
{
	my ($ret, $out, $err) = try_sql(q{
		SET ROLE alice;
		SELECT (triage.classify('v1', 'stale bitter')).label;
		SET ROLE mallory;
		SELECT (triage.classify('v1', 'stale bitter')).label;
	});
	is($out, $label, 'alice (triage_user) classifies: the model is now cached in the backend');
	like($err, qr/permission denied for model "v1"/, 'after SET ROLE mallory (no grant): permission denied for model');
	like($err, qr/GRANT triage_user TO mallory/, '... with a hint naming the grant');

	($ret, $out, $err) = try_sql(q{
		BEGIN;
		SET LOCAL ROLE alice;
		SELECT label_of('stale bitter');
		RESET ROLE;
		SET LOCAL ROLE mallory;
		SELECT label_of('stale bitter');
		ROLLBACK;
	});
	is($out, $label, 'a plpgsql expression classifies as alice ...');
	like($err, qr/permission denied for model "v1"/,
		'... and the same expression, its model reference kept, refuses mallory');

	($ret, $out, $err) = try_sql(q{
		BEGIN;
		SET LOCAL ROLE bob;
		SELECT label_of('stale bitter');
		RESET ROLE;
		REVOKE triage_user FROM bob;
		SET LOCAL ROLE bob;
		SELECT label_of('stale bitter');
		ROLLBACK;
	});
	is($out, $label, 'bob classifies ...');
	like($err, qr/permission denied for model "v1"/, '... and not once triage_user is revoked, in the same transaction');

	($ret, $out, $err) = try_sql(q{
		BEGIN;
		SET LOCAL ROLE alice;
		SELECT label_of('stale bitter');
		RESET ROLE;
		REVOKE SELECT ON triage.models FROM triage_user;
		REVOKE SELECT (name, version, kind, labels, params, metrics, data, created_at) ON triage.models FROM triage_user;
		SET LOCAL ROLE alice;
		SELECT label_of('stale bitter');
		ROLLBACK;
	});
	like($err, qr/permission denied for model "v1"/, 'nor once SELECT on triage.models is revoked from triage_user');
}
# Users who may read every column but the bytes still classify (the bytes
# are read for them), but cannot read the bytes themselves
sql(q{
	REVOKE SELECT ON triage.models FROM triage_user;
	GRANT SELECT (name, version, kind, labels, params, metrics, created_at) ON triage.models TO triage_user;
});
{
	my ($ret, $out, $err) = try_sql(q{
		SET ROLE alice;
		SELECT (triage.classify('food', 'stale bitter coffee')).label;
		SELECT (triage.extract('fields', 'Order A-10293')) IS NOT NULL;
		SELECT octet_length(data) FROM triage.models WHERE name = 'food';
	});
	is($out, sql(q{SELECT (triage.classify('food', 'stale bitter coffee')).label}) . "\nt",
		'without SELECT on models.data, triage_user still classifies and extracts');
	like($err, qr/permission denied for table models/, '... but cannot read the bytes');
}

# 7. A model in use stays valid while a nested call drops every loaded
# model: fit_temperature holds "food" while its held-out query stores a
# model (invalidating triage.models) and classifies (which then drops the
# cache and loads "food" again).  Freed under the outer call, its weights
# (hundreds of kB, given back to the system) would be read after the free.
sql(qq{
	CREATE TABLE held AS
		SELECT 'great coffee, would buy again ' || g AS input, 'great' AS label FROM generate_series(1, 30) g
		UNION ALL SELECT 'stale and bitter, never again ' || g, 'other' FROM generate_series(1, 30) g;
	CREATE FUNCTION churn(t text, n int) RETURNS text LANGUAGE plpgsql AS \$\$
	BEGIN
		IF n = 1 THEN
			PERFORM triage.import_fasttext('churn', pg_read_binary_file('$v1'));
		END IF;
		RETURN t || left((triage.classify('food', t)).label, 0);
	END\$\$;
});
{
	my $plain = sql(q{SELECT triage.fit_temperature('food', 1, 'SELECT input, label FROM held')});
	my $churned = sql(q{
		SELECT triage.fit_temperature('food', 1,
			'SELECT churn(input, (row_number() OVER ())::int), label FROM held');
		SELECT count(*) FROM pg_backend_memory_contexts WHERE name = 'pg_triage model';
	});
	my ($result, $contexts) = split /\n/, $churned;
	is($result, $plain, 'fit_temperature gives the same result while a nested call drops the cache');
	is($contexts, '1', '... and the copy it held is freed when it ends (one model loaded)');
}

# 8. Extractor field names must be valid in the database encoding: a file
# whose first field name starts with a stray byte (checksum repaired, as
# an attacker would) is refused
{
	my $bytes = slurp_file("$root/models/business_fields.crf");
	is(crf_checksum(substr($bytes, 0, -8)), unpack('Q<', substr($bytes, -8)), 'the CRF checksum, computed here');
	substr($bytes, 65, 1) = "\xff";
	substr($bytes, -8) = pack('Q<', crf_checksum(substr($bytes, 0, -8)));
	open(my $fh, '>:raw', "$tmp/bad_name.crf") or die;
	print $fh $bytes;
	close($fh);
	my ($ret, $out, $err) = try_sql(qq{SELECT triage.import_extractor('bad', pg_read_binary_file('$tmp/bad_name.crf'))});
	like($err, qr/invalid extractor file: field name 0 is not valid in the database encoding/,
		'import_extractor refuses a field name that is not valid UTF-8');
	is(sql(q{SELECT count(*) FROM triage.models WHERE name = 'bad'}), '0', '... and stores nothing');
	($ret, $out, $err) = try_sql(qq{SELECT fields FROM triage.inspect_crf(pg_read_binary_file('$tmp/bad_name.crf'))});
	like($err, qr/field name 0 is not valid/, 'so does inspect_crf');
	# stored behind pg_triage's back (as a restore would), it fails to load
	($ret, $out, $err) = try_sql(qq{
		INSERT INTO triage.models (name, version, kind, labels, data)
			VALUES ('bad', 1, 'crf', '{}', pg_read_binary_file('$tmp/bad_name.crf'));
		SELECT triage.extract('bad', 1, 'Order A-10293');
	});
	like($err, qr/field name 0 is not valid.*extractor "bad" version 1/s,
		'a stored extractor with such a name fails to load, naming it');
}

# CrfChecksum (src/crf_model.c), in 64-bit arithmetic
sub mul64
{
	my ($x, $y) = @_;
	use integer;
	return unpack('Q', pack('q', $x * $y));
}

sub crf_checksum
{
	my ($bytes) = @_;
	my $len = length($bytes);
	my $h = 0x243F6A8885A308D3 ^ $len;
	my $i = 0;
	for (; $i + 8 <= $len; $i += 8)
	{
		$h ^= mul64(unpack('Q<', substr($bytes, $i, 8)), 0x87C37B91114253D5);
		$h = mul64((($h << 31) | ($h >> 33)) & 0xFFFFFFFFFFFFFFFF, 0x4CF5AD432745937F);
	}
	for (; $i < $len; $i++)
	{
		$h ^= ord(substr($bytes, $i, 1));
		$h = mul64($h, 0x100000001b3);
	}
	$h ^= $h >> 33;
	$h = mul64($h, 0xff51afd7ed558ccd);
	$h ^= $h >> 33;
	$h = mul64($h, 0xc4ceb9fe1a85ec53);
	$h ^= $h >> 33;
	return $h;
}

$node->stop;
done_testing();
