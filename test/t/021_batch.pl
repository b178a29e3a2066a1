# Issue #19: schema-constrained answers, the Batch API, spending limits.
#
#   1. requests carry response_format json_schema (strict) built from the
#      policy: the labels as an enum, or the fields as strings or null;
#      json_object and none on request; the stub refuses a malformed schema
#   2. --mode batch answers N escalations of a batch policy through
#      /v1/files and /v1/batches, each exactly once, one batch; interactive
#      workers leave those rows alone; batch answers cost the batch price
#   3. a batch worker killed (SIGKILL) while its batch is out, restarted
#      with the same --name, polls the same batch: the stub created one
#   4. a failed batch, then an expired one (half answered, half in the
#      error file as batch_expired), give their rows back; they are
#      answered by the next batch
#   5. a policy over its budget keeps its rows queued (when_over wait), or
#      keeps the small model's answer (keep_small), and stats show it
#
# Each assertion was checked to fail with its feature broken (see the
# commit message).
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use HTTP::Tiny;
use IPC::Run qw(start run);
use JSON::PP qw(decode_json encode_json);
use Time::HiRes qw(sleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TriageTest qw(start_stub worker_and_stub);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $stub_py = "$root/test/stub/stub_llm.py";
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $worker = worker_and_stub($root);

my $node = PostgreSQL::Test::Cluster->new('batch');
$node->init;
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(qq{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$root/test/data/sentiment_v1.ftz'));
	SELECT triage.import_extractor('fields', pg_read_binary_file('$root/models/business_fields.crf'));
	CREATE ROLE llm_worker LOGIN IN ROLE triage_worker;
	SELECT triage.allow_worker('llm_worker');
	SELECT triage.create_policy('ci', model => 'sentiment', labels => ARRAY['great','other']);
	SELECT triage.create_policy('fx', model => NULL, extractor => 'fields');
	SELECT triage.create_policy('bp', model => 'sentiment', labels => ARRAY['great','other'],
								rules => '{"latency": "batch", "max_wait": "1 hour"}');
	SELECT triage.create_policy('br', model => 'sentiment', labels => ARRAY['great','other'],
								rules => '{"latency": "batch"}');
	SELECT triage.create_policy('bx', model => 'sentiment', labels => ARRAY['great','other'],
								rules => '{"latency": "batch"}');
	SELECT triage.create_policy('be', model => 'sentiment', labels => ARRAY['great','other'],
								rules => '{"latency": "batch"}');
	SELECT triage.create_policy('bud', model => 'sentiment', labels => ARRAY['great','other'],
								rules => '{"budget": {"tokens": 1, "per": "hour"}}');
});
my $dsn = $node->connstr('postgres') . ' user=llm_worker';
my @fields = split /,/, sql(q{SELECT array_to_string(fields, ',') FROM triage.policies WHERE name = 'fx'});

# every input of every case, answered "great" (the extraction row: fields)
my %inputs = (
	ci => [ map { "constrained review $_" } 1 .. 3 ],
	obj => ['json object review'],
	none => ['no format review'],
	bp => [ map { "batch review $_" } 1 .. 20 ],
	br => [ map { "resumed review $_" } 1 .. 10 ],
	bx => [ map { "expiring review $_" } 1 .. 6 ],
	bud => [ map { "budget review $_" } 1 .. 3 ],
	be => [ map { "erroring review $_" } 1 .. 4 ],
);
open(my $g, '>', "$tmp/gold.jsonl") or die;
print $g encode_json({ input => $_, label => 'great' }), "\n" for map { @$_ } values %inputs;
print $g encode_json({ input => 'order A-10293 from Maria Lopez', fields => { order_id => 'A-10293' } }), "\n";
close $g;

sub stub_get
{
	my ($stub, $what) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$stub->{port}/$what");
	die "GET /$what: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

sub worker_cmd
{
	my ($stub, $name, @extra) = @_;
	return [ $worker, '--dsn', $dsn, '--base-url', "http://127.0.0.1:$stub->{port}/v1",
		'--model', 'stub-model', '--name', $name, '--log-file', "$tmp/worker_$name.log",
		'--batch-poll', '0.2', '--batch-poll-max', '0.4', @extra ];
}

# runs a worker to the end (--once); returns its exit status
sub run_once
{
	my ($stub, $name, @extra) = @_;
	my ($out, $err) = ('', '');
	my $h = start(worker_cmd($stub, $name, '--once', @extra), '>', \$out, '2>', \$err,
		IPC::Run::timeout(60));
	eval { $h->finish };
	return $h->result(0);
}

# how often each input of a list reached the stub, by way of via
sub sent
{
	my ($log, $list, $via) = @_;
	my %n;
	$n{ $_->{input} }++ for grep { !$via || $_->{via} eq $via } grep { defined $_->{input} } @$log;
	return join(',', map { $n{$_} // 0 } @$list);
}

sub status_of
{
	my ($policy) = @_;
	return sql(qq{SELECT string_agg(status || CASE WHEN outcome = 'over_budget' THEN '/over_budget' ELSE '' END, ',' ORDER BY id)
					FROM triage.escalations WHERE policy = '$policy'});
}

my $stub = start_stub($stub_py, $tmp, 'main', "$tmp/gold.jsonl", '--batch-delay', '0.5');

# 1. constrained answers --------------------------------------------------------
sql(qq{SELECT triage.enqueue('ci', '$_') FROM (VALUES (1)) v}) for @{ $inputs{ci} };
sql(q{SELECT triage.enqueue('fx', 'order A-10293 from Maria Lopez')});
sql(qq{SELECT triage.enqueue('bp', '$_')}) for @{ $inputs{bp} };
is(run_once($stub, 'i1'), 0, 'the interactive worker drains the queue and exits 0');
is(status_of('ci'), 'done,done,done', 'the constrained answers were accepted');
is(status_of('fx'), 'done', 'the constrained fields were accepted');
is(status_of('bp'), join(',', ('pending') x 20), 'an interactive worker leaves a batch policy\'s rows to batch workers');
my $log = stub_get($stub, 'log');
my @ci = grep { ($_->{input} // '') =~ /^constrained review/ } @$log;
is(scalar @ci, 3, 'three requests for policy ci');
my $want_label = {
	type => 'json_schema',
	json_schema => {
		name => 'triage_label', strict => JSON::PP::true,
		schema => {
			type => 'object', required => ['label'], additionalProperties => JSON::PP::false,
			properties => { label => { type => 'string', enum => [ 'great', 'other' ] } } } } };
my $canon = JSON::PP->new->canonical;
is(scalar(grep { $canon->encode($_->{response_format}) eq $canon->encode($want_label) } @ci), 3,
	'each carries response_format json_schema, strict, with the policy\'s labels as the enum');
my ($fx) = grep { ($_->{input} // '') =~ /^order A-10293/ } @$log;
my $fschema = ($fx->{response_format}{type} // '') eq 'json_schema'
  ? $fx->{response_format}{json_schema}{schema}{properties}{fields} : {};
my %fprops = %{ $fschema->{properties} // {} };
is(join(',', sort keys %fprops) . ' required ' . join(',', sort @{ $fschema->{required} // [] })
	. ' additional ' . (($fschema->{additionalProperties} // 1) ? 'yes' : 'no')
	. ' types ' . join(',', sort keys %{{ map { join('|', @{ $_->{type} }) => 1 } values %fprops }}),
	join(',', sort @fields) . ' required ' . join(',', sort @fields) . ' additional no types string|null',
	'the extraction policy\'s schema: every field, required, a string or null, nothing else');

sql(qq{SELECT triage.enqueue('ci', '$inputs{obj}[0]')});
run_once($stub, 'i2', '--response-format', 'json_object');
sql(qq{SELECT triage.enqueue('ci', '$inputs{none}[0]')});
run_once($stub, 'i3', '--response-format', 'none');
$log = stub_get($stub, 'log');
my ($obj) = grep { ($_->{input} // '') eq $inputs{obj}[0] } @$log;
my ($none) = grep { ($_->{input} // '') eq $inputs{none}[0] } @$log;
is($canon->encode($obj->{response_format}) . ' ' . $canon->encode($none->{response_format}),
	'{"type":"json_object"} null', '--response-format json_object sends JSON mode, none sends nothing');
my $bad = HTTP::Tiny->new->post("http://127.0.0.1:$stub->{port}/v1/chat/completions", {
	content => encode_json({ model => 'm', messages => [ { role => 'user', content => 'x' } ],
		response_format => { type => 'json_schema', json_schema => { name => 'n', strict => JSON::PP::true,
		schema => { type => 'object', properties => { label => { type => 'string' } } } } } }) });
is($bad->{status}, 400, 'the stub refuses a strict schema without required and additionalProperties');

# 2. batch mode: each row once, one batch ----------------------------------------
is(run_once($stub, 'b1', '--mode', 'batch'), 0, 'the batch worker drains the batch policy and exits 0');
is(status_of('bp'), join(',', ('done') x 20), 'the 20 rows of the batch policy are answered');
is(sql(q{SELECT count(*) FILTER (WHERE batch IS NOT NULL) FROM triage.escalations WHERE policy = 'bp'}), '20',
	'each answered through a batch');
my $stats = stub_get($stub, 'stats');
is("$stats->{files_uploaded} $stats->{batches_created} $stats->{batch_lines}", '1 1 20',
	'one file uploaded, one batch created, 20 lines answered');
$log = stub_get($stub, 'log');
is(sent($log, $inputs{bp}), join(',', (1) x 20), 'each row was asked exactly once');
is(sent($log, $inputs{bp}, 'batch'), join(',', (1) x 20), '... by way of the batch');
is(sql(q{SELECT status || ' ' || cardinality(escalation_ids) || ' ' || answered || ' ' || rejected
		   FROM triage.batches ORDER BY id DESC LIMIT 1}), 'completed 20 20 0', 'triage.batches records it');
$node->append_conf('postgresql.conf', "triage.llm_prompt_price_per_1k = 1\ntriage.llm_completion_price_per_1k = 2\n");
$node->reload;
is(sql(q{SELECT s.llm_cost = round(sum((e.usage->>'prompt_tokens')::numeric * 0.0005
										+ (e.usage->>'completion_tokens')::numeric * 0.001), 4)
		      AND s.batch_answered = 20
		   FROM triage.escalation_stats s JOIN triage.escalations e ON e.policy = s.policy
		  WHERE s.policy = 'bp' GROUP BY s.llm_cost, s.batch_answered}), 't',
	'escalation_stats: the batch answers cost half the interactive price (the default batch price)');

# 3. a batch worker killed while its batch is out resumes polling it -------------
my $slow = start_stub($stub_py, $tmp, 'slow', "$tmp/gold.jsonl", '--batch-delay', '4');
sql(qq{SELECT triage.enqueue('br', '$_')}) for @{ $inputs{br} };
my ($out, $err) = ('', '');
my $h = start(worker_cmd($slow, 'wr', '--mode', 'batch', '--policy', 'br'), '>', \$out, '2>', \$err);
my $deadline = time + 30;
sleep 0.1 until time > $deadline || sql(q{SELECT count(*) FROM triage.batches WHERE status = 'submitted'}) eq '1';
$h->signal('KILL');
eval { $h->finish };
is(sql(q{SELECT count(*) FROM triage.escalations WHERE policy = 'br' AND status = 'claimed'}), '10',
	'killed with its batch out: the rows stay leased');
is(stub_get($slow, 'stats')->{batches_created}, 1, 'one batch created before the kill');
is(run_once($slow, 'wr', '--mode', 'batch', '--policy', 'br'), 0, 'the restarted worker exits 0');
is(status_of('br'), join(',', ('done') x 10), 'the restarted worker answered the 10 rows');
$stats = stub_get($slow, 'stats');
is("$stats->{files_uploaded} $stats->{batches_created} $stats->{batch_lines}", '1 1 10',
	'from the same batch: no second file or batch at the endpoint');
is(sent(stub_get($slow, 'log'), $inputs{br}), join(',', (1) x 10), 'each row asked once');
like(slurp_file("$tmp/worker_wr.log"), qr/batch=\d+ taken back \(submitted as batch_stub1/,
	'the log says it took the batch back');
$slow->{h}->signal('TERM');
$slow->{h}->finish;

# 4. failed and expired batches give their rows back ----------------------------
my $fate = start_stub($stub_py, $tmp, 'fate', "$tmp/gold.jsonl", '--batch-delay', '0.5', '--batch-fail', '1', '--batch-expire', '1');
sql(qq{SELECT triage.enqueue('bx', '$_')}) for @{ $inputs{bx} };
is(run_once($fate, 'bx', '--mode', 'batch', '--policy', 'bx'), 0, 'the batch worker exits 0');
is(status_of('bx'), join(',', ('done') x 6), 'all 6 rows answered in the end');
my $bx_batches = q{FROM triage.batches b WHERE true};
is(sql(qq{SELECT string_agg(status || ':' || cardinality(escalation_ids), ',' ORDER BY id) $bx_batches
		  AND b.escalation_ids && ARRAY(SELECT id FROM triage.escalations WHERE policy = 'bx')}),
	'failed:6,expired:6,completed:3',
	'a failed batch, then an expired one that answered half, then one with the 3 rows it gave back');
is(sql(q{SELECT string_agg(attempts::text, ',' ORDER BY id) FROM triage.escalations WHERE policy = 'bx'}),
	'1,1,1,1,1,1', 'the failed batch counted one attempt, the expiry none');
$stats = stub_get($fate, 'stats');
is("$stats->{batches_created} $stats->{batch_lines}", '3 6', 'three batches at the endpoint; 3 + 3 lines run');
$fate->{h}->signal('TERM');
$fate->{h}->finish;

# the lines of a batch's error file are failed attempts, with the endpoint's error
my $errs = start_stub($stub_py, $tmp, 'errs', "$tmp/gold.jsonl", '--batch-delay', '0.3', '--batch-error-lines', '2');
sql(qq{SELECT triage.enqueue('be', '$_')}) for @{ $inputs{be} };
run_once($errs, 'be', '--mode', 'batch', '--policy', 'be');
is(sql(q{SELECT string_agg(status || ' ' || attempts || ' ' || coalesce(error, ''), ',' ORDER BY id)
		   FROM triage.escalations WHERE policy = 'be'}),
	'pending 1 batch batch_stub1: The server had an error.,pending 1 batch batch_stub1: The server had an error.,done 0 ,done 0 ',
	'two lines of the error file: failed attempts with the endpoint\'s error; two answered');
is(sql(qq{SELECT answered || ' ' || rejected $bx_batches AND b.escalation_ids && ARRAY(SELECT id FROM triage.escalations WHERE policy = 'be')}),
	'4 0', 'the batch recorded its 4 lines');
$errs->{h}->signal('TERM');
$errs->{h}->finish;

# lines from the endpoint are untrusted: not JSON, not an object, a custom_id
# that is not a row of this batch, or not one number, are counted as rejected
# and touch no escalation (no cast of a 20-digit id overflows either)
my $other = sql(q{SELECT min(id) FROM triage.escalations});
my $probe = sql(q{INSERT INTO triage.batches (escalation_ids, worker, claimed_role, status)
				  VALUES ('{}', 'probe', 'llm_worker', 'submitted') RETURNING id});
my $queue_before = sql(q{SELECT md5(string_agg(e::text, ',' ORDER BY id)) FROM triage.escalations e});
my @untrusted = ('not json', '[1, 2]', qq({"custom_id": "$other", "response": {"status_code": 200, "body": {}}}),
	'{"custom_id": "-1"}', '{"custom_id": 7}', '{"custom_id": "99999999999999999999"}');
is(join(',', map { sql("SET ROLE llm_worker; SELECT triage.batch_result($probe, \$l\$$_\$l\$)") } @untrusted),
	'malformed,malformed,foreign,foreign,foreign,foreign', 'untrusted lines: malformed or foreign, each refused');
is(sql("SELECT answered || ' ' || rejected FROM triage.batches WHERE id = $probe"), '0 6', 'and counted as rejected');
is(sql(q{SELECT md5(string_agg(e::text, ',' ORDER BY id)) FROM triage.escalations e}), $queue_before,
	'no escalation was touched');
sql("DELETE FROM triage.batches WHERE id = $probe");

# 5. budgets --------------------------------------------------------------------
sql(qq{SELECT triage.enqueue('bud', '$inputs{bud}[0]')});
run_once($stub, 'u1', '--policy', 'bud');
sql(qq{SELECT triage.enqueue('bud', '$_')}) for @{ $inputs{bud} }[ 1 .. 2 ];
run_once($stub, 'u2', '--policy', 'bud');
is(status_of('bud'), 'done,pending,pending', 'over its budget of 1 token an hour, the policy\'s rows stay queued');
is(sql(q{SELECT over || ' ' || (tokens > 0) FROM triage.budget_status WHERE policy = 'bud'}), 'true true',
	'budget_status: over, with the tokens spent');
is(sql(q{SELECT budget_reached FROM triage.escalation_stats WHERE policy = 'bud'}), 't', 'escalation_stats: budget reached');
sql(q{UPDATE triage.policies SET rules = '{"budget": {"tokens": 1, "per": "hour", "when_over": "keep_small"}}' WHERE name = 'bud'});
run_once($stub, 'u3', '--policy', 'bud');
is(status_of('bud'), 'done,done/over_budget,done/over_budget',
	'when_over keep_small: the rows are closed with the small model\'s answer, marked over_budget');
is(sql(q{SELECT over_budget FROM triage.escalation_stats WHERE policy = 'bud'}), '2', 'escalation_stats counts them');
is(sent(stub_get($stub, 'log'), $inputs{bud}), '1,0,0', 'the large model was asked only before the budget was reached');

$stats = stub_get($stub, 'stats');
is($stats->{unknown_input}, 0, 'the stub knew every input');
$stub->{h}->signal('TERM');
$stub->{h}->finish;
$node->stop;
done_testing();
