# The CRF field extractor end to end, on synthetic messages from
# test/extract/gen_messages.py (fixed seeds, so the test is deterministic):
#
#   1. trained with triage.train_extractor (default options) on 2,000
#      messages of the SEEN phrasings, then evaluated with triage.evaluate
#      on 1,000 messages of the UNSEEN phrasings and 1,000 more of the seen
#      ones: per-field and micro F1, the seen-unseen gap, rows with every
#      field right, and the AUROC of confidence for right against wrong
#      fields.  The bounds (#20: what the feature promised, less sampling
#      error of the rows measured, not a round number far below it) are
#      stated where they are asserted: unseen micro F1 within sampling error
#      of the 0.9924 this configuration has recorded since issue #5 (whose
#      target was 0.95), the AUROC at least issue #5's 0.85, and the
#      shipped extractor (models/business_fields.crf) reproducing its model
#      card on the card's own rows and within sampling error of it on new
#      ones.
#   2. the alignment report in metrics->'train', character offsets that
#      give back the value (non-ASCII text included), extract with a fixed
#      version equal to extract with the deployed one, and training twice
#      giving the same bytes.
#   3. the large model's answers: 300 more unseen-phrasing messages stored
#      in triage.examples (source 'llm') with their fields, and a retrain on
#      the seen messages plus those.  The answers here are the generator's
#      gold fields, i.e. a simulated strong large model.  Unseen F1 must not
#      drop, and most of the gap must close (issue #5: more than half).
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP qw(decode_json);
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $started = time;
my $root = abs_path(dirname(__FILE__) . '/../..');
my $gen = "$root/test/extract/gen_messages.py";
my $tmp = PostgreSQL::Test::Utils::tempdir;

plan skip_all => 'python3 is needed for the message generator'
  if system('python3 -c "import json" 2>/dev/null') != 0;

my $node = PostgreSQL::Test::Cluster->new('extract');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_triage');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub json_sql { return decode_json(sql($_[0])); }

sub fmt { return defined $_[0] ? sprintf('%.4f', $_[0]) : 'n/a'; }

# name => [seed, count, phrasings]
my %sets = (
	train => [101, 2000, 'seen'],
	unseen => [102, 1000, 'unseen'],
	seen => [103, 1000, 'seen'],
	llm => [104, 300, 'unseen']);
for my $name (sort keys %sets)
{
	my ($seed, $count, $phrasings) = @{ $sets{$name} };
	my $file = "$tmp/$name.csv";
	system('python3', $gen, '--seed', $seed, '--count', $count, '--phrasings', $phrasings,
		'--out', $file) == 0
	  or die "gen_messages.py failed for $name";
	sql("CREATE TABLE msg_$name (id serial, input text, fields jsonb, kind text, template text);
		 COPY msg_$name (input, fields, kind, template) FROM '$file' (FORMAT csv, HEADER)");
	is(sql("SELECT count(*) FROM msg_$name"), $count, "$count $phrasings messages loaded ($name)");
}

# --- training on the seen phrasings ---------------------------------------

my $t0 = time;
is(sql("SELECT triage.train_extractor('fields', 'SELECT input, fields FROM msg_train ORDER BY id')"),
	'1', 'train_extractor stores version 1');
my $train_seconds = time - $t0;
note sprintf('training on 2,000 messages: %.1f s', $train_seconds);

my $model = json_sql("SELECT jsonb_build_object('labels', labels, 'params', params, "
	  . "'metrics', metrics, 'bytes', octet_length(data)) FROM triage.models WHERE name = 'fields' AND version = 1");
is_deeply($model->{labels},
	[qw(amount currency customer_name date email order_id phone product tracking_number)],
	'the extractor has the nine fields of the messages, sorted');
is(sql("SELECT version FROM triage.deployments WHERE name = 'fields'"), '1',
	'the first version is deployed');

# the alignment report: every value found, nearly all byte for byte
my $tr = $model->{metrics}{train};
ok(defined $tr, "metrics->'train' is present");
note sprintf('alignment: %d values: %d exact, %d ignoring case, %d as a number, %d unaligned; '
	  . '%d tokens, %d iterations, model %d bytes',
	(map { $tr->{$_} // -1 } qw(values aligned_exact aligned_ignoring_case aligned_as_number unaligned tokens iterations)),
	$model->{bytes});
note 'model v1 md5: ' . sql("SELECT md5(data) FROM triage.models WHERE name = 'fields' AND version = 1");
is($tr->{rows}, 2000, 'alignment report: 2,000 rows');
is($tr->{rows_skipped_null}, 0, 'alignment report: no row skipped');
my $gold_values = sql("SELECT count(*) FROM msg_train, jsonb_each_text(fields) f WHERE f.value <> ''");
is($tr->{values}, $gold_values, "alignment report: every gold value counted ($gold_values)");
is($tr->{aligned_exact} + $tr->{aligned_ignoring_case} + $tr->{aligned_as_number} + $tr->{unaligned},
	$tr->{values}, 'alignment report: exact + ignoring case + as number + unaligned = values');
ok($tr->{aligned_exact} >= 0.95 * $tr->{values}, 'alignment report: at least 95% aligned exactly');
# the generator normalizes about 6% of the amounts (1,299.00 -> 1299.00): found as numbers
ok($tr->{aligned_as_number} > 0, 'alignment report: normalized amounts aligned as numbers');
ok($tr->{unaligned} <= 0.01 * $tr->{values}, 'alignment report: at most 1% unaligned');
is_deeply([ sort keys %{ $tr->{unaligned_by_field} } ], $model->{labels},
	'alignment report: unaligned_by_field names every field');
ok($tr->{iterations} > 0 && $tr->{tokens} > 0, 'alignment report: tokens and iterations');

# --- evaluation on unseen and seen phrasings ------------------------------

sub evaluate
{
	my ($table, $version) = @_;
	my $v = defined $version ? ", $version" : '';
	my $t = time;
	my $r = json_sql("SELECT triage.evaluate('fields', 'SELECT input, fields FROM $table ORDER BY id'$v)");
	$r->{seconds} = time - $t;
	return $r;
}

my $unseen = evaluate('msg_unseen');
my $seen = evaluate('msg_seen');
is($unseen->{kind}, 'crf', 'evaluate on an extractor reports kind crf');
is($unseen->{n}, 1000, 'evaluate counted 1,000 rows');

note 'per-field F1 (precision / recall), version 1 trained on seen phrasings:';
note sprintf('  %-16s %-26s %-26s', 'field', 'unseen', 'seen');
for my $f (@{ $model->{labels} })
{
	my ($u, $s) = ($unseen->{fields}{$f}, $seen->{fields}{$f});
	note sprintf('  %-16s %s (%s / %s)   %s (%s / %s)', $f,
		fmt($u->{f1}), fmt($u->{precision}), fmt($u->{recall}),
		fmt($s->{f1}), fmt($s->{precision}), fmt($s->{recall}));
}
my $gap = $seen->{f1} - $unseen->{f1};
diag sprintf('extractor v1: micro F1 unseen %s, seen %s, gap %s; rows all correct unseen %s, seen %s',
	fmt($unseen->{f1}), fmt($seen->{f1}), fmt($gap),
	fmt($unseen->{rows_all_correct}), fmt($seen->{rows_all_correct}));
diag sprintf('extractor v1: AUROC of confidence right vs wrong: unseen %s, seen %s; '
	  . 'mean confidence right %s, wrong %s (unseen)',
	fmt($unseen->{auroc}), fmt($seen->{auroc}),
	fmt($unseen->{confidence_right}), fmt($unseen->{confidence_wrong}));
diag sprintf('extractor v1: unseen micro F1 %s issue #5\'s 0.95 target; '
	  . 'evaluation took %.1f s + %.1f s',
	$unseen->{f1} >= 0.95 ? 'reaches' : 'misses', $unseen->{seconds}, $seen->{seconds});

# The unseen micro F1 of this configuration (2,000 seen-phrasing messages of
# seed 101, default options; 1,000 unseen-phrasing messages of seed 102) was
# 0.9924 when issue #5 was resolved and has not changed since; issue #5's
# target was 0.95.  An extractor no worse on unseen phrasings in general
# differs from that figure on these rows by sampling error: the F1 of n gold
# fields is a proportion, and two of them (that one and this one) differ by
# sd = sqrt(2 F (1 - F) / n); the bound is 3 sd below 0.9924 (about 0.987
# with n = 4,700), and never below the 0.95 target.  Checked to fail (#20):
# with the value lexicon switched off in training the unseen F1 is 0.9517,
# which passed the old bound (0.90) and even the 0.95 target.
my $recorded_unseen_f1 = 0.9924;
my $n_unseen_fields = 0;
$n_unseen_fields += $_->{support} for values %{ $unseen->{fields} };
my $f1_bound = $recorded_unseen_f1
  - 3 * sqrt(2 * $recorded_unseen_f1 * (1 - $recorded_unseen_f1) / $n_unseen_fields);
$f1_bound = 0.95 if $f1_bound < 0.95;
cmp_ok($unseen->{f1}, '>=', $f1_bound,
	sprintf('unseen phrasings: micro F1 %s within 3 sd of sampling error (%d fields) of the recorded 0.9924: >= %.4f',
		fmt($unseen->{f1}), $n_unseen_fields, $f1_bound));
ok($seen->{f1} >= $unseen->{f1} - 0.005, 'seen phrasings: micro F1 >= unseen micro F1 - 0.005');
# too few wrong fields on seen phrasings for an AUROC, so it is measured on unseen ones
ok(defined $unseen->{auroc} && $unseen->{auroc} >= 0.85,
	'unseen phrasings: AUROC of confidence, right vs wrong fields, >= 0.85');
ok(defined $unseen->{confidence_right} && defined $unseen->{confidence_wrong}
	  && $unseen->{confidence_right} > $unseen->{confidence_wrong},
	'right fields are more confident than wrong ones on average');

# --- what extract returns -------------------------------------------------

# every field of every test row: the offsets give the value back, in characters
my $check = json_sql(q{
	WITH rows AS (
		SELECT input, triage.extract('fields', input) AS got FROM msg_unseen
		UNION ALL SELECT input, triage.extract('fields', input) FROM msg_seen),
	f AS (
		SELECT r.input, e.key, e.value->>'value' AS value, (e.value->>'start')::int AS s,
			   (e.value->>'end')::int AS e, (e.value->>'confidence')::float8 AS c
		  FROM rows r, jsonb_each(r.got) e)
	SELECT jsonb_build_object(
		'fields', count(*),
		'bad_offsets', count(*) FILTER (WHERE substr(input, s + 1, e - s) IS DISTINCT FROM value),
		'bad_confidence', count(*) FILTER (WHERE c IS NULL OR c < 0 OR c > 1),
		'empty', count(*) FILTER (WHERE value = '' OR e <= s),
		'after_non_ascii', count(*) FILTER (WHERE octet_length(left(input, s)) > s),
		'non_ascii_values', count(*) FILTER (WHERE octet_length(value) > length(value)))
	  FROM f});
note sprintf('extract on 2,000 test rows: %d fields, %d after non-ASCII text, %d with non-ASCII values',
	$check->{fields}, $check->{after_non_ascii}, $check->{non_ascii_values});
ok($check->{fields} > 8000, 'extract returns fields for the test rows');
is($check->{bad_offsets}, 0, 'substr(input, start + 1, end - start) = value for every field of every test row');
ok($check->{after_non_ascii} > 0 && $check->{non_ascii_values} > 0,
	'... including fields after non-ASCII text and non-ASCII values (character offsets)');
is($check->{bad_confidence}, 0, 'every confidence is in 0..1');
is($check->{empty}, 0, 'no empty value');

# a hand-written non-ASCII message
my $one = json_sql(q{SELECT triage.extract('fields',
	E'Dear Ayşe Çelik,\nyour order ORD-2024-55821 of 1.299,00 € has shipped. Tracking number: 1Z999AA10123456784.\nRegards, Müller Café')});
note 'hand-written message: ' . join(', ', map { "$_=$one->{$_}{value} [$one->{$_}{start},$one->{$_}{end})" } sort keys %$one);
is($one->{order_id}{value}, 'ORD-2024-55821', 'hand-written message: order id');
is($one->{tracking_number}{value}, '1Z999AA10123456784', 'hand-written message: tracking number');
is(sql(q{SELECT bool_and(substr(m, (e.value->>'start')::int + 1,
		(e.value->>'end')::int - (e.value->>'start')::int) = e.value->>'value')
	FROM (SELECT E'Dear Ayşe Çelik,\nyour order ORD-2024-55821 of 1.299,00 € has shipped. Tracking number: 1Z999AA10123456784.\nRegards, Müller Café' AS m) x,
	jsonb_each(triage.extract('fields', m)) e}), 't', 'hand-written message: offsets in characters');

is(sql(q{SELECT count(*) FROM (SELECT input FROM msg_unseen UNION ALL SELECT input FROM msg_seen) r
	WHERE triage.extract('fields', 1, input) IS DISTINCT FROM triage.extract('fields', input)}),
	'0', 'extract(name, 1, input) = extract(name, input) on every test row');

# deterministic: the same rows and options give the same bytes
$t0 = time;
is(sql(q{SELECT (SELECT md5(data) FROM triage.train_crf('SELECT input, fields FROM msg_train ORDER BY id', '{}'))
	= (SELECT md5(data) FROM triage.models WHERE name = 'fields' AND version = 1)}),
	't', 'training again on the same rows gives byte-identical model data');
note sprintf('second training: %.1f s', time - $t0);

# --- the large model's answers close the gap ------------------------------

diag 'simulated large model: its answers below are the generator\'s gold fields '
  . '(a strong large model that is always right), for 300 unseen-phrasing messages (seed 104)';
sql(q{INSERT INTO triage.examples (model, input, fields, source)
	SELECT 'fields', input, fields, 'llm' FROM msg_llm ORDER BY id});
is(sql("SELECT count(*) FROM triage.examples WHERE model = 'fields' AND source = 'llm' AND fields IS NOT NULL"),
	'300', '300 large-model answers stored in triage.examples');
is(sql(q{SELECT count(*) FROM msg_llm l JOIN msg_unseen u USING (input)}), '0',
	'no large-model message is in the unseen test set');

$t0 = time;
is(sql(q{SELECT triage.train_extractor('fields',
	'SELECT input, fields FROM (SELECT 0 AS src, id, input, fields FROM msg_train
	   UNION ALL SELECT 1, id, input, fields FROM triage.examples WHERE model = ''fields'' AND source = ''llm'') t
	 ORDER BY src, id')}), '2', 'retraining on seen + large-model examples stores version 2');
note sprintf('retraining on 2,300 messages: %.1f s', time - $t0);
is(json_sql("SELECT metrics->'train' FROM triage.models WHERE name = 'fields' AND version = 2")->{rows},
	2300, 'version 2 trained on 2,300 rows');

my $unseen2 = evaluate('msg_unseen', 2);
my $seen2 = evaluate('msg_seen', 2);
my $gap2 = $seen2->{f1} - $unseen2->{f1};
note 'per-field F1 on unseen phrasings, before -> after the large-model examples:';
for my $f (@{ $model->{labels} })
{
	note sprintf('  %-16s %s -> %s', $f, fmt($unseen->{fields}{$f}{f1}), fmt($unseen2->{fields}{$f}{f1}));
}
my $closed = $gap > 0 ? ($gap - $gap2) / $gap : undef;
diag sprintf('large-model examples: unseen micro F1 %s -> %s, seen %s -> %s, gap %s -> %s (%s of the gap closed); '
	  . 'rows all correct unseen %s -> %s; AUROC unseen %s -> %s',
	fmt($unseen->{f1}), fmt($unseen2->{f1}), fmt($seen->{f1}), fmt($seen2->{f1}),
	fmt($gap), fmt($gap2), defined $closed ? sprintf('%.0f%%', 100 * $closed) : 'n/a (no gap)',
	fmt($unseen->{rows_all_correct}), fmt($unseen2->{rows_all_correct}),
	fmt($unseen->{auroc}), fmt($unseen2->{auroc}));
ok($unseen2->{f1} >= $unseen->{f1}, 'unseen micro F1 after the large-model examples >= before');
# issue #5: the large model's answers close "most" of the unseen-phrasing gap
ok(defined $closed && $closed > 0.5,
	sprintf('the large-model examples close most of the seen-unseen gap (%s)',
		defined $closed ? sprintf('%.0f%%', 100 * $closed) : 'no gap to close'));
ok($seen2->{f1} >= $seen->{f1} - 0.005, 'seen micro F1 does not drop with the large-model examples');
is(sql("SELECT version FROM triage.deployments WHERE name = 'fields'"), '1',
	'retraining does not deploy the new version by itself');

# --- the shipped extractor against its model card ------------------------

# models/build.sh trains models/business_fields.crf on 3,000 messages of
# every phrasing (seed 1) and records in models/business_fields.metrics.json
# its F1 on 1,000 messages of seed 2 whose templates are the "unseen" ones
# (which it did see, in other messages: the card's name for them is the
# generator's).  Evaluated here on those very rows, it must give the card's
# figure (to its 4 decimals: extraction is deterministic); on the 1,000
# unseen-phrasing messages above (seed 102, also new to it) within sampling
# error of it: the two F1 are proportions of n_card and n gold fields, so
# differ by sd = sqrt(F (1 - F) (1 / n_card + 1 / n)); the bound is 3 sd below.
my $card = decode_json(slurp_file("$root/models/business_fields.metrics.json"));
my $card_unseen = $card->{heldout_1000_trained_phrasings_unseen_split};
system('python3', $gen, '--seed', 2, '--count', 1000, '--phrasings', 'unseen', '--out', "$tmp/card_unseen.csv") == 0
  or die 'gen_messages.py failed for the card\'s rows';
sql("CREATE TABLE msg_card (id serial, input text, fields jsonb, kind text, template text);
	 COPY msg_card (input, fields, kind, template) FROM '$tmp/card_unseen.csv' (FORMAT csv, HEADER);
	 SELECT triage.import_extractor('shipped', pg_read_binary_file('$root/models/business_fields.crf'))");
my $shipped_card = json_sql("SELECT triage.evaluate('shipped', 'SELECT input, fields FROM msg_card ORDER BY id')");
cmp_ok(abs($shipped_card->{f1} - $card_unseen->{f1}), '<', 0.00005,
	sprintf('the shipped extractor gives its model card\'s F1 on the card\'s rows (%s against %s)',
		fmt($shipped_card->{f1}), fmt($card_unseen->{f1})));
my $shipped_new = json_sql("SELECT triage.evaluate('shipped', 'SELECT input, fields FROM msg_unseen ORDER BY id')");
my $n_card = 0;
$n_card += $_->{support} for values %{ $card_unseen->{fields} };
my $fc = $card_unseen->{f1};
my $shipped_bound = $fc - 3 * sqrt($fc * (1 - $fc) * (1 / $n_card + 1 / $n_unseen_fields));
cmp_ok($shipped_new->{f1}, '>=', $shipped_bound,
	sprintf('the shipped extractor on 1,000 new messages: F1 %s within 3 sd of its card\'s %s (%d and %d fields): >= %.4f',
		fmt($shipped_new->{f1}), fmt($fc), $n_card, $n_unseen_fields, $shipped_bound));

note sprintf('010_extract took %.0f s', time - $started);
$node->stop;
done_testing();
