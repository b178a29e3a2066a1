# Operating pg_triage (#18): triage.report()'s HTML page, triage.metrics()'s
# Prometheus text, and triage.purge()'s retention, on a policy with routed
# rows and escalations in every state.
#
# The page is parsed as XML (python3's xml.etree, a strict parser);
# 024_report_browser.pl renders it in headless Chromium. The Prometheus text is checked by a strict parser
# (parse_prometheus in test/TriageTest.pm, shared with 023), not by
# promtool: Debian ships promtool only inside the prometheus server package
# (96 MB installed, with a dozen JavaScript packages).
#
# Each assertion was checked to fail on a feature broken on purpose (a
# copy of this file that replaces one function after CREATE EXTENSION):
# see the commit message of #18 for the list.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP qw(decode_json);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TriageTest qw(parse_prometheus);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir;

my $node = PostgreSQL::Test::Cluster->new('report');
$node->init;
$node->start;

# --- a policy with routed rows and escalations in every state --------------

my $hostile_error = '</svg><script>alert(1)</script> & "quoted"';
my $hostile_label = '<script>alert("label")</script>';
my $hostile_reason = '<img onerror=x> reason & </table>';
my $hostile_worker = "w<b>\"1\\\nnext";    # quote, backslash, newline: Prometheus escapes them
$node->safe_psql('postgres', qq{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$root/test/data/sentiment_v1.ftz'));
	CREATE TABLE food (product text, review text, score text);
	COPY food FROM '$root/test/data/fine_foods_train.csv' WITH (FORMAT csv, HEADER);
	CREATE TABLE food_n AS SELECT row_number() OVER () AS n, review, score FROM food;
	SELECT triage.create_policy('reviews', 'sentiment', audit_rate => 0.2);
	SELECT triage.calibrate('reviews', 'SELECT review, score FROM food_n WHERE n <= 600', target_accuracy => 0.9);
	CREATE TABLE inbox (id serial PRIMARY KEY, body text, label text);
	SELECT triage.attach('inbox', 'body', 'label', 'reviews');
	INSERT INTO inbox (body) SELECT review FROM food_n WHERE n > 600 AND n <= 900;
	SELECT triage.enqueue('reviews', 'queued by hand', reason => \$r\$$hostile_reason\$r\$);
	SELECT triage.allow_worker('postgres');
	SELECT triage.heartbeat(\$w\$$hostile_worker\$w\$, 'host-1', 42, 7, 1);
	SELECT triage.heartbeat('gone', 'host-2', 43, 0, 0);
	UPDATE triage.workers SET last_seen = now() - interval '10 days' WHERE name = 'gone';
	-- claimed: 40; answered: 20 of them (15 with token usage); dead: 5 (a hostile error)
	SELECT count(*) FROM triage.claim('w1', 40);
	SELECT triage.complete(id, '{"choices": [{"message": {"content": "great"}}],
								 "usage": {"prompt_tokens": 120, "completion_tokens": 4, "total_tokens": 124}}')
	  FROM triage.escalations WHERE status = 'claimed' ORDER BY id LIMIT 15;
	SELECT triage.complete(id, '{"choices": [{"message": {"content": "other"}}]}')
	  FROM triage.escalations WHERE status = 'claimed' ORDER BY id LIMIT 5;
	UPDATE triage.policies SET max_attempts = 1 WHERE name = 'reviews';
	SELECT triage.fail(id, \$e\$$hostile_error\$e\$) FROM triage.escalations WHERE status = 'claimed' ORDER BY id LIMIT 5;
	UPDATE triage.policies SET max_attempts = 5 WHERE name = 'reviews';
	-- an evaluation stored in the deployed version's metrics, with a hostile label
	UPDATE triage.models SET metrics = metrics || jsonb_build_object('evaluation',
		jsonb_set(triage.evaluate('sentiment', 'SELECT review, score FROM food_n WHERE n > 900 AND n <= 1300'),
				  ARRAY['labels', \$l\$$hostile_label\$l\$],
				  '{"precision": 0.5, "recall": 0.25, "f1": 0.3333, "support": 4}'))
	 WHERE name = 'sentiment' AND version = 1;
	-- a second policy, not calibrated, with nothing stored
	SELECT triage.import_fasttext('bare', pg_read_binary_file('$root/test/data/sentiment_v1.ftz'));
	SELECT triage.create_policy('bare', 'bare');
});
my ($pending, $claimed, $done, $dead) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'claimed'),
		   count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'dead')
	  FROM triage.escalations});
cmp_ok($pending, '>', 0, "escalations pending ($pending)");
is("$claimed|$done|$dead", '15|20|5', 'escalations leased (15), answered (20) and dead (5)');

# --- report() ----------------------------------------------------------------

# The page parsed by a strict XML parser; what it holds, as JSON
my $inspect_py = <<'PY';
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
def text(e): return ''.join(e.itertext())
out = {'root': root.tag, 'sections': [], 'svgs': [], 'tables': {}, 'scripts': len(list(root.iter('script'))),
       'text': text(root.find('body'))}
for sec in root.iter('section'):
    sid = sec.get('id')
    out['sections'].append(sid)
    out['tables'][sid] = [[[text(c) for c in tr] for tr in t.iter('tr')] for t in sec.iter('table')]
    for svg in sec.iter('svg'):
        w, h = float(svg.get('width')), float(svg.get('height'))
        n = bad = 0
        for el in svg.iter():
            pts = [(el.get(a), el.get(b)) for a, b in (('x', 'y'), ('x1', 'y1'), ('x2', 'y2'), ('cx', 'cy'))]
            pts += [tuple(p.split(',')) for p in (el.get('points') or '').split()]
            for x, y in pts:
                for v, lim in ((x, w), (y, h)):
                    if v is not None:
                        n += 1
                        bad += not (0 <= float(v) <= lim)
        out['svgs'].append({'section': sid, 'viewBox': svg.get('viewBox'), 'coords': n, 'outside': bad,
                            'marks': sum(1 for c in svg.iter('circle') if c.get('class') == 'mark'),
                            'lines': len(list(svg.iter('polyline'))),
                            'bars': sum(1 for r in svg.iter('rect') if (r.get('class') or '').startswith('b')
                                        and r.find('title') is not None)})
print(json.dumps(out))
PY
open(my $pyf, '>', "$tmp/inspect.py") or die;
print $pyf $inspect_py;
close $pyf;

sub page
{
	my ($sql) = @_;
	my $html = $node->safe_psql('postgres', $sql);
	my $file = "$tmp/page" . int(rand(1e9)) . '.html';
	open(my $fh, '>', $file) or die;
	print $fh $html;
	close $fh;
	my $json = `python3 $tmp/inspect.py $file 2>&1`;
	return ($html, $? == 0 ? decode_json($json) : undef, $json);
}

my ($html, $page, $err) = page("SELECT triage.report('reviews')");
ok($page, 'the report is well-formed XHTML-compatible HTML (a strict XML parser reads it)') or diag($err);
$page ||= { sections => [], svgs => [], tables => {}, text => '' };
like($html, qr/\A<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"\/>/, 'an HTML5 page in UTF-8');
is(join(',', @{ $page->{sections} }), 'routing,reliability,volume,cost,queue,labels,versions', 'every section, in order');
unlike($html, qr/<script/i, 'no script element, nor any text that makes one');
is($page->{scripts}, 0, 'the parser finds no script element');
unlike($html, qr{https?://|url\(|\@import|\b(?:src|href)=}i, 'no URL, no external resource, no font to fetch');
like($html, qr/\@media print\{/, 'a print style');
is(join(',', map { $_->{section} } @{ $page->{svgs} }), 'routing,reliability,volume', 'three charts: routing, reliability, volume');
is(join(',', map { $_->{outside} } @{ $page->{svgs} }), '0,0,0', 'every coordinate of every chart is inside its box')
  or diag(explain($page->{svgs}));
my ($routing, $reliability, $volume) = @{ $page->{svgs} };
is($routing->{marks}, 2, 'the routing curve marks the threshold in force and the audit\'s measured accuracy');
my $curve_points = $node->safe_psql('postgres', q{
	SELECT count(*) FROM triage.policies p, jsonb_array_elements(p.calibration->'curve') c
	 WHERE p.name = 'reviews' AND jsonb_typeof(c->'kept_accuracy') = 'number'});
like($html, qr/<polyline class="s1" points="(?:[\d.]+,[\d.]+ ){@{[ $curve_points - 1 ]}}[\d.]+,[\d.]+"\/>/,
	"the routing curve has the stored curve's $curve_points points");
is($reliability->{lines}, 2, 'the reliability diagram: the diagonal and the version\'s bins');
my $bins = $node->safe_psql('postgres',
	"SELECT jsonb_array_length(metrics->'evaluation'->'reliability') FROM triage.models WHERE name = 'sentiment'");
is(scalar(@{ $page->{tables}{reliability}[0] }) - 1, $bins, "the reliability table has the stored $bins bins");
like($page->{text}, qr/ECE \(expected calibration error, 10 bins\)/, 'the ECE is shown');
is($volume->{bars}, 5 * 8, 'volume: routed, kept, queued, answered and dead for each of 8 days (the default 7 days back)');

# the numbers are the tables'
my ($qhead, $qrow) = @{ $page->{tables}{queue}[0] };
my %queue;
@queue{@$qhead} = @$qrow;
is("$queue{pending}|$queue{leased}|$queue{'dead letters'}", "$pending|15|5", 'the queue now: pending, leased, dead letters');
my ($vhead, $vrow) = @{ $page->{tables}{volume}[0] };
my %vol;
@vol{@$vhead} = @$vrow;
is("$vol{'rows seen'}|$vol{escalated}|$vol{answered}", '300|' . ($pending + 40) . '|20',
	'volume totals: rows seen, escalated, answered');
# the routed and kept bars over time add up to the counters (fails if the
# chart drew escalations only, or counters lost their hour)
my ($routed_sum, $kept_sum) = (0, 0);
$routed_sum += $1 while $html =~ / routed: (\d+)<\/title>/g;
$kept_sum += $1 while $html =~ / kept: (\d+)<\/title>/g;
is("$routed_sum|$kept_sum", "$vol{'rows seen'}|$vol{'kept by the small model'}",
	'volume over time: the routed and kept bars add up to rows seen and kept');
my ($ehead, @errors) = @{ $page->{tables}{queue}[1] };
is_deeply($errors[0] ? [ @{ $errors[0] }[ 0, 1 ] ] : [], [ $hostile_error, 5 ],
	'the top dead-letter error, shown as the text it is');
my ($whead, @workers) = @{ $page->{tables}{queue}[2] };
is(join(',', sort map { $_->[0] } @workers), join(',', sort('gone', $hostile_worker)), 'the workers, names as text');
my ($lhead, @labels) = @{ $page->{tables}{labels}[0] };
is_deeply([ map { $_->[0] } @labels ], [ sort($hostile_label, 'great', 'other') ],
	'per-label precision and recall, hostile label as text');
my ($rhead, @reasons) = @{ $page->{tables}{labels}[1] };
ok((grep { $_->[0] eq $hostile_reason && $_->[1] eq '1' } @reasons), 'an escalation reason, shown as the text it is');
is($reasons[0][0], 'audit sample', 'reasons grouped: the audit sample first')
  or diag(explain(\@reasons));
my ($mhead, @versions) = @{ $page->{tables}{versions}[0] };
is(join(',', map { "$_->[0]:$_->[1]" } @versions), '1:deployed', 'the model\'s versions, the deployed one marked');

# escaped where it stands in the markup
like($html, qr/&lt;\/svg&gt;&lt;script&gt;alert\(1\)&lt;\/script&gt; &amp; &quot;quoted&quot;/, 'the hostile error is escaped');
like($html, qr/&lt;script&gt;alert\(&quot;label&quot;\)&lt;\/script&gt;/, 'the hostile label is escaped');
like($html, qr/&lt;img onerror=x&gt; reason &amp; &lt;\/table&gt;/, 'the hostile reason is escaped');

# an uncalibrated policy, nothing stored: says so, still a page
($html, $page, $err) = page("SELECT triage.report('bare', now() - interval '1 hour')");
ok($page, 'the report of a bare policy parses too') or diag($err);
$page ||= { sections => [], svgs => [], text => '' };
is(join(',', map { $_->{section} } @{ $page->{svgs} }), 'volume', 'only the volume chart without data for the others');
like($page->{text}, qr/Not calibrated/, 'it says the policy is not calibrated');
like($page->{text}, qr/No reliability table is stored for version 1/, 'and that no evaluation is stored');
is(scalar(@{ $page->{svgs} }) && $page->{svgs}[0]{bars}, 5 * 2, 'an hour back: hourly bars (2 hours)');

my ($ret, $out, $stderr) = $node->psql('postgres', "SELECT triage.report('nope')");
like($stderr, qr/policy "nope" does not exist/, 'an unknown policy is an error');

# --- metrics() -----------------------------------------------------------------

# the parser itself rejects what the format forbids
for my $bad ([ "# HELP a x\n# TYPE a gauge\na{p=\"x\"y\"} 1\n", 'an unescaped quote' ],
			 [ "# HELP a x\n# TYPE a gauge\na{p=\"x\\ty\"} 1\n", 'an unknown escape' ],
			 [ "# HELP a x\n# TYPE a gauge\na 1\n# HELP b x\n# TYPE b gauge\nb 1\na 2\n", 'a family split in two' ],
			 [ "# HELP a x\n# TYPE a counter\na 1\n", 'a counter without _total' ],
			 [ "# HELP a x\n# TYPE a gauge\na one\n", 'a value that is no float' ],
			 [ "# HELP a x\n# TYPE a gauge\na 1", 'no final line feed' ])
{
	my ($s) = parse_prometheus($bad->[0]);
	ok(!$s, "the format check rejects $bad->[1]");
}

my $prices = 'SET triage.llm_prompt_price_per_1k = 0.5; SET triage.llm_completion_price_per_1k = 2;';
my $metrics = $node->safe_psql('postgres', "$prices SELECT triage.metrics()") . "\n";
my ($m, $why) = parse_prometheus($metrics);
ok($m, 'metrics() passes the strict format check') or diag("$why\n$metrics");
$m ||= {};

# every number against a count of its own
my %expect;
my @by_status = split /\n/, $node->safe_psql('postgres', q{
	SELECT s || '|' || (SELECT count(*) FROM triage.escalations e WHERE e.policy = p.name AND e.status = s)
		   || '|' || p.name
	  FROM triage.policies p, unnest(ARRAY['pending', 'claimed', 'done', 'dead']) s});
for (@by_status)
{
	my ($s, $n, $p) = split /\|/;
	$expect{"triage_escalations{policy=$p,status=$s}"} = $n;
}
my ($seen, $escalated_rows) = split /\|/, $node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM inbox), (SELECT count(*) FROM triage.escalations WHERE source = 'inbox'::regclass)});
$expect{'triage_rows_seen_total{policy=reviews}'} = $seen;
$expect{'triage_rows_escalated_total{policy=reviews}'} = $escalated_rows;
$expect{'triage_rows_kept_total{policy=reviews}'} = $seen - $escalated_rows;
$expect{"triage_rows_${_}_total{policy=bare}"} = 0 for qw(seen kept escalated);
$expect{'triage_answers{outcome=written,policy=reviews}'} = 20;
$expect{'triage_tokens{kind=prompt,policy=reviews}'} = 15 * 120;
$expect{'triage_tokens{kind=completion,policy=reviews}'} = 15 * 4;
$expect{'triage_llm_cost{policy=reviews}'} = 15 * 120 / 1000 * 0.5 + 15 * 4 / 1000 * 2;
$expect{"triage_worker_jobs_done{worker=$hostile_worker}"} = 7;
$expect{'triage_worker_jobs_failed{worker=gone}'} = 0;
for my $k (sort keys %expect)
{
	ok(exists $m->{$k} && $m->{$k} == $expect{$k}, "metric $k = $expect{$k}")
	  or diag('got ' . ($m->{$k} // 'nothing'));
}
my $oldest = $node->safe_psql('postgres', q{
	SELECT extract(epoch FROM now() - min(created_at)) FROM triage.escalations WHERE status = 'pending'});
ok(abs(($m->{'triage_oldest_pending_seconds{policy=reviews}'} // -1e9) - $oldest) < 60,
	"the oldest pending age ($oldest s)");
is($m->{'triage_oldest_pending_seconds{policy=bare}'}, '0', 'and 0 with nothing pending');
like($metrics, qr/^triage_worker_jobs_done\{worker="w<b>\\"1\\\\\\nnext"\} 7$/m,
	'a worker name with a quote, a backslash and a line feed, escaped as the format says');

# who may read them
$node->safe_psql('postgres', q{
	-- a monitoring role, as the README grants it
	CREATE ROLE monitor LOGIN;
	GRANT USAGE ON SCHEMA triage TO monitor;
	GRANT EXECUTE ON FUNCTION triage.metrics() TO monitor;
	CREATE ROLE boss LOGIN IN ROLE triage_admin;
	CREATE ROLE nobody LOGIN;
	CREATE ROLE analyst LOGIN IN ROLE triage_user;
});
my $as = sub {
	my ($role, $sql) = @_;
	my ($r, $o, $e) = $node->psql('postgres', $sql, extra_params => [ '-U', $role ]);
	return $r == 0 ? 'ok' : ($e =~ /permission denied/ ? 'denied' : $e);
};
is($as->('monitor', 'SELECT triage.metrics()'), 'ok', 'a monitoring role granted metrics() reads it, without rights on any table');
is($as->('boss', "SELECT triage.metrics(), triage.report('reviews')"), 'ok', 'triage_admin reads metrics() and report()');
is($as->('analyst', 'SELECT triage.metrics()') . ' ' . $as->('analyst', "SELECT triage.report('reviews')"),
	'denied denied', 'triage_user reads neither');
is($as->('monitor', "SELECT triage.report('reviews')"), 'denied', 'the report (errors, reasons) is for admins');
is($as->('nobody', "SELECT triage.purge('1 day')") . ' ' . $as->('analyst', "SELECT triage.purge('1 day')"),
	'denied denied', 'purge is for admins');

# --- purge() -------------------------------------------------------------------

# age the answered rows: half 40 days old, half a day old; the dead ones 40
# days; one pending and one leased row 40 days old
$node->safe_psql('postgres', q{
	UPDATE triage.escalations SET done_at = now() - CASE WHEN id % 2 = 0 THEN interval '40 days' ELSE interval '1 day' END
	 WHERE status = 'done';
	UPDATE triage.escalations SET done_at = now() - interval '40 days' WHERE status = 'dead';
	-- (with a done_at, as a row restored from elsewhere might have: only the
	-- status says a row is finished)
	UPDATE triage.escalations SET created_at = now() - interval '40 days', done_at = now() - interval '40 days'
	 WHERE id IN ((SELECT min(id) FROM triage.escalations WHERE status = 'pending'),
				  (SELECT min(id) FROM triage.escalations WHERE status = 'claimed'));
	CREATE TABLE before_purge AS SELECT id, status, done_at FROM triage.escalations;
	CREATE TABLE examples_before AS SELECT id, escalation FROM triage.examples;
});
my $old_done = $node->safe_psql('postgres',
	"SELECT string_agg(id::text, ',' ORDER BY id) FROM before_purge WHERE status = 'done' AND done_at < now() - interval '30 days'");

# a row held by another session (a dump reading it, say) is skipped, not waited for
my $holder = $node->background_psql('postgres');
my $held = $node->safe_psql('postgres',
	"SELECT min(id) FROM before_purge WHERE status = 'done' AND done_at < now() - interval '30 days'");
$holder->query_safe("BEGIN; SELECT id FROM triage.escalations WHERE id = $held FOR SHARE;");
my $result = $node->safe_psql('postgres', q{
	SET statement_timeout = '10s'; SELECT triage.purge('30 days', batch_size => 3)});
my $counts = decode_json($result);
is($counts->{done}, scalar(split /,/, $old_done) - 1, 'purge deleted the old answered rows but the locked one, in batches of 3');
is($node->safe_psql('postgres', "SELECT count(*) FROM triage.escalations WHERE id = $held"), '1',
	'the locked row is still there');
$holder->query_safe('COMMIT');
$holder->quit;
my $second = decode_json($node->safe_psql('postgres', "SELECT triage.purge('30 days')"));
$counts->{$_} += $second->{$_} for qw(done dead examples_unlinked);
is($node->safe_psql('postgres',
	'SELECT string_agg(id::text, \',\' ORDER BY id) FROM before_purge b WHERE NOT EXISTS (SELECT FROM triage.escalations e WHERE e.id = b.id)'),
	$old_done, 'after the lock, exactly the answered rows finished over 30 days ago are gone');
is($counts->{dead}, 0, 'no dead row deleted (keep_dead)');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM before_purge b JOIN triage.escalations e USING (id)
	 WHERE b.status IN ('pending', 'claimed', 'dead') AND e.status = b.status}),
	$node->safe_psql('postgres', "SELECT count(*) FROM before_purge WHERE status IN ('pending', 'claimed', 'dead')"),
	'every pending, leased and dead row is kept, the 40-day-old pending and leased ones too');
my ($examples_now, $unlinked, $still_linked) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT (SELECT count(*) FROM triage.examples),
		   (SELECT count(*) FROM examples_before b JOIN triage.examples x USING (id)
			 WHERE b.escalation IN ($old_done) AND x.escalation IS NULL),
		   (SELECT count(*) FROM examples_before b JOIN triage.examples x USING (id)
			 WHERE b.escalation NOT IN ($old_done) AND x.escalation = b.escalation)});
my $examples_before = $node->safe_psql('postgres', 'SELECT count(*) FROM examples_before');
is($examples_now, $examples_before, 'every training example stays');
is($unlinked, scalar(split /,/, $old_done), "the examples of deleted rows are unlinked (escalation NULL)");
is($still_linked, $examples_before - $unlinked, 'the others keep their link');
is($counts->{examples_unlinked}, $unlinked, 'purge counts the examples it unlinked');
is($counts->{workers}, 1, 'the worker not seen for 10 days is forgotten (default: 7 days)');
is($node->safe_psql('postgres', 'SELECT string_agg(name, \',\') FROM triage.workers'), $hostile_worker,
	'the live worker stays');

$counts = decode_json($node->safe_psql('postgres', "SELECT triage.purge('30 days', keep_dead => false)"));
is("$counts->{done}|$counts->{dead}", '0|5', 'keep_dead => false: the 5 old dead rows go too');
is($node->safe_psql('postgres', "SELECT count(*) FROM triage.escalations WHERE status IN ('pending', 'claimed')"),
	$node->safe_psql('postgres', "SELECT count(*) FROM before_purge WHERE status IN ('pending', 'claimed')"),
	'still no pending or leased row touched');

# purge beside a claim, in two sessions: a purge in an open transaction
# does not hold up a claim, and a claim in an open transaction (its rows
# locked, uncommitted) does not hold up a purge; neither loses a row
$node->safe_psql('postgres', q{
	UPDATE triage.escalations SET visible_at = now() WHERE status IN ('pending', 'claimed');
	UPDATE triage.escalations SET status = 'done', done_at = now() - interval '40 days', claimed_role = NULL
	 WHERE id IN (SELECT id FROM triage.escalations WHERE status = 'claimed' ORDER BY id LIMIT 5);
});
my $open = $node->safe_psql('postgres', "SELECT count(*) FROM triage.escalations WHERE status IN ('pending', 'claimed')");
my $purger = $node->background_psql('postgres');
my $claimer = $node->background_psql('postgres');
is(decode_json($purger->query_safe("BEGIN; SELECT triage.purge('30 days');"))->{done}, 5,
	'a purge in an open transaction deletes the 5 old answered rows');
my $got = $claimer->query_safe("SET statement_timeout = '10s'; BEGIN; SELECT count(*) FROM triage.claim('w2', 1000);");
is($got, $open, 'a claim beside an open purge gets every open row at once');
my $purged = decode_json($purger->query_safe("SET statement_timeout = '10s'; SELECT triage.purge('30 days');"));
is($purged->{done}, 0, 'a second purge beside the open claim finds nothing more to delete, without waiting');
$purger->query_safe('COMMIT');
$claimer->query_safe('COMMIT');
$purger->quit;
$claimer->quit;
is($node->safe_psql('postgres', "SELECT count(*) FROM triage.escalations WHERE status = 'claimed' AND claimed_by = 'w2'"),
	$open, 'after both commit, every open row is leased to the claimer');
is($node->safe_psql('postgres', "SELECT count(*) FROM triage.escalations WHERE status = 'done' AND done_at < now() - interval '30 days'"),
	'0', 'and the old answered rows are gone');

($ret, $out, $stderr) = $node->psql('postgres', "SELECT triage.purge('-1 day')");
like($stderr, qr/purge needs older_than of 0 or more/, 'a negative age is an error');

$node->stop;
done_testing();
