# triage.report() in a real browser, and on the policies 017_report.pl does
# not cover (#18): headless Chromium (Debian's chromium, installed by make
# deps) renders the page of a policy with traffic to a PNG and dumps the DOM
# it built; no console message, every chart with its axes titled, the
# numbers on the page those of the views.  Then the page of an extraction
# policy, of a policy with no traffic yet (empty states, not errors), and
# its size with 10,000 and 1,000,000 escalations (aggregates, not rows).
#
# Chromium runs as the test's user with HOME, its profile and its caches in
# the test's temporary directory, without its sandbox (which needs user
# namespaces or a setuid helper).  It logs page console messages to stderr
# as "...:CONSOLE:LINE] "text", source: URL (LINE)" whatever their level,
# among its own warnings (D-Bus, GPU); a page without script has none, so
# any such line is a failure, and a control page with a console.error and
# an uncaught exception checks that the capture sees them.
#
# Each assertion was checked to fail on a feature broken on purpose: see
# the commit message.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run qw(run timeout);
use JSON::PP qw(decode_json);
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $chromium = $ENV{CHROMIUM} || '/usr/bin/chromium';
my ($width, $height) = (1200, 3000);

# no skip: without the browser, the test fails (make deps installs it)
ok(-x $chromium, "chromium at $chromium (test/install-deps.sh installs it)")
  or die "no chromium at $chromium";

my $node = PostgreSQL::Test::Cluster->new('report_browser');
$node->init;
$node->start;

sub write_file
{
	my ($file, $text) = @_;
	open(my $fh, '>', $file) or die "$file: $!";
	print $fh $text;
	close $fh;
	return $file;
}

# Runs Chromium headless on a file; returns (exit ok, stdout, stderr, the
# page's console lines)
my $runs = 0;
sub chromium
{
	my ($html, @args) = @_;
	my $home = "$tmp/chromium" . ++$runs;
	mkdir $home or die "$home: $!";
	local $ENV{HOME} = $home;
	local $ENV{XDG_CONFIG_HOME} = "$home/.config";
	local $ENV{XDG_CACHE_HOME} = "$home/.cache";
	my ($out, $err) = ('', '');
	my $ok = eval {
		run([ $chromium, '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
				"--user-data-dir=$home/profile", '--enable-logging=stderr', '--v=0', '--hide-scrollbars',
				'--no-first-run', @args, "file://$html" ],
			'<', \undef, '>', \$out, '2>', \$err, timeout(180));
	};
	my @console = grep { /:CONSOLE[:(\]]|\bUncaught\b/ } split /\n/, $err;
	return ($ok, $out, $err, \@console);
}

# The PNG's structure (signature, chunk CRCs, IHDR, IDAT inflating to
# height rows of its width) and its content: distinct scanlines (as
# filtered) and distinct colors of the rows that decode alone (filter None
# or Sub), as JSON
my $png_py = write_file("$tmp/png.py", <<'PY');
import json, struct, sys, zlib
d = open(sys.argv[1], 'rb').read()
out = {'ok': False}
try:
    assert d[:8] == b'\x89PNG\r\n\x1a\n', 'signature'
    pos, idat, chunks = 8, b'', []
    while pos < len(d):
        n, kind = struct.unpack('>I4s', d[pos:pos + 8])
        body = d[pos + 8:pos + 8 + n]
        assert len(body) == n, 'truncated chunk'
        assert struct.unpack('>I', d[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body), 'CRC of ' + kind.decode()
        chunks.append(kind.decode())
        if kind == b'IHDR':
            w, h, depth, ctype = struct.unpack('>IIBB', body[:10])
        elif kind == b'IDAT':
            idat += body
        pos += 12 + n
    assert chunks[0] == 'IHDR' and chunks[-1] == 'IEND', 'chunk order'
    assert depth == 8 and ctype in (2, 6), '8-bit RGB or RGBA'
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = 1 + w * bpp
    assert len(raw) == h * stride, 'IDAT size'
    lines, colors = set(), set()
    for y in range(h):
        row = raw[y * stride:(y + 1) * stride]
        lines.add(row)
        if row[0] in (0, 1) and y % 4 == 0:
            px = bytearray(row[1:])
            if row[0] == 1:
                for i in range(bpp, len(px)):
                    px[i] = (px[i] + px[i - bpp]) & 255
            for i in range(0, len(px), bpp):
                colors.add(bytes(px[i:i + 3]))
    out = {'ok': True, 'width': w, 'height': h, 'distinct_lines': len(lines), 'colors': len(colors)}
except Exception as e:
    out['error'] = str(e)
print(json.dumps(out))
PY

# The DOM Chromium built, through python3's lenient HTML parser: the
# sections, each svg's axis titles (text.title) and text count, the tables
# of each section, the script elements, the body's text
my $dom_py = write_file("$tmp/dom.py", <<'PY');
import json, sys
from html.parser import HTMLParser
class P(HTMLParser):
    def __init__(self):
        super().__init__()
        self.section = None; self.svg = None; self.title = None; self.cell = None; self.tick = None
        self.out = {'sections': [], 'svgs': [], 'tables': {}, 'scripts': 0, 'text': ''}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'section':
            self.section = a.get('id'); self.out['sections'].append(self.section)
            self.out['tables'].setdefault(self.section, [])
        elif tag == 'svg':
            self.svg = {'section': self.section, 'titles': [], 'texts': 0, 'xticks': []}
            self.out['svgs'].append(self.svg)
        elif tag == 'text' and self.svg is not None:
            self.svg['texts'] += 1
            self.title = '' if 'title' in (a.get('class') or '').split() else None
            if 'tick' in (a.get('class') or '').split() and a.get('text-anchor') == 'middle':
                self.tick = [float(a.get('x')), a.get('y'), '']
                self.svg['xticks'].append(self.tick)
        elif tag == 'script':
            self.out['scripts'] += 1
        elif tag == 'table' and self.section:
            self.out['tables'][self.section].append([])
        elif tag == 'tr' and self.section and self.out['tables'][self.section]:
            self.out['tables'][self.section][-1].append([])
        elif tag in ('td', 'th'):
            self.cell = ''
    def handle_endtag(self, tag):
        if tag == 'svg':
            self.svg = None
        elif tag == 'text':
            if self.title is not None:
                self.svg['titles'].append(self.title)
            self.title = None; self.tick = None
        elif tag in ('td', 'th') and self.cell is not None:
            self.out['tables'][self.section][-1][-1].append(self.cell); self.cell = None
        elif tag == 'section':
            self.section = None
    def handle_data(self, data):
        self.out['text'] += data
        if self.title is not None: self.title += data
        if self.tick is not None: self.tick[2] += data
        if self.cell is not None: self.cell += data
p = P()
p.feed(open(sys.argv[1], encoding='utf-8').read())
print(json.dumps(p.out))
PY

# The page parsed as XML by python3's strict parser (as 017 does)
my $xml_py = write_file("$tmp/page_xml.py", <<'PY');
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
body = root.find('body')
print(json.dumps({'sections': [s.get('id') for s in root.iter('section')],
                  'svgs': [s.get('aria-label') for s in root.iter('svg')],
                  'text': ''.join(body.itertext())}))
PY

sub python_json
{
	my ($script, $file) = @_;
	my $json = `python3 $script $file 2>&1`;
	my $data = $? == 0 ? eval { decode_json($json) } : undef;
	diag("$script: $json") unless $data;
	return $data;
}

# A table of a section as {header => value} of its first data row
sub first_row
{
	my ($table) = @_;
	return {} unless $table && @$table >= 2;
	my %row;
	@row{ @{ $table->[0] } } = @{ $table->[1] };
	return \%row;
}

# --- the capture works: a control page's console error is seen ------------------

my $control = write_file("$tmp/control.html",
	'<!DOCTYPE html><html><body><p>control</p><script>console.error("control error"); missing_function();</script></body></html>');
my ($ok, $out, $err, $console) = chromium($control, '--dump-dom');
ok($ok, 'chromium runs headless') or diag($err);
is(scalar(@$console), 2, 'the console capture sees a control page\'s console.error and uncaught exception')
  or diag($err);

# --- a policy with traffic, as in make demo ------------------------------------
# The shipped model never saw the reviews with n % 5 = 0 (test/data/README.md):
# it is calibrated on those with n % 10 = 0, evaluated on and routes those
# with n % 10 = 5.

$node->safe_psql('postgres', qq{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$root/models/fine_foods_sentiment.ftz'));
	CREATE TABLE food (product text, review text, score text);
	COPY food FROM '$root/test/data/fine_foods_train.csv' WITH (FORMAT csv, HEADER);
	CREATE TABLE food_n AS SELECT row_number() OVER () AS n, review, score FROM food;
	-- a policy with no traffic yet, first (before any worker exists)
	SELECT triage.create_policy('quiet', 'sentiment');
});

# --- no traffic yet: empty states, not errors ----------------------------------

my $quiet_html = write_file("$tmp/quiet.html", $node->safe_psql('postgres', "SELECT triage.report('quiet')"));
my $quiet = python_json($xml_py, $quiet_html);
ok($quiet, 'the page of a policy with no traffic parses as XML');
$quiet ||= { sections => [], svgs => [], text => '' };
is(join(',', @{ $quiet->{sections} }), 'routing,reliability,volume,cost,queue,labels,versions', 'every section is there');
is(scalar(@{ $quiet->{svgs} }), 1, 'one chart (volume, zero bars), none for the curve and reliability not stored');
for my $empty ('Not calibrated', 'No reliability table is stored for version 1', 'No dead letters.',
	'No worker has sent a heartbeat.', 'No evaluation of the deployed version is stored',
	'No escalation in this period.')
{
	like($quiet->{text}, qr/\Q$empty\E/, "no traffic: the page says \"$empty\"");
}
unlike($quiet->{text}, qr/ERROR|NaN|Infinity|null/, 'no error, NaN or null shown');
($ok, $out, $err, $console) = chromium($quiet_html, '--dump-dom');
ok($ok && $out =~ /<section id="versions">/, 'chromium renders the page of a policy with no traffic');
is(join("\n", @$console), '', 'no console message on the page of a policy with no traffic');

# --- traffic ---------------------------------------------------------------------

$node->safe_psql('postgres', q{
	SELECT triage.create_policy('reviews', 'sentiment', audit_rate => 0.2);
	SELECT triage.calibrate('reviews', 'SELECT review, score FROM food_n WHERE n % 10 = 0', target_accuracy => 0.9);
	UPDATE triage.models SET metrics = metrics || jsonb_build_object('evaluation',
		triage.evaluate('sentiment', 'SELECT review, score FROM food_n WHERE n % 10 = 5'))
	 WHERE name = 'sentiment' AND version = 1;
	CREATE TABLE inbox (id serial PRIMARY KEY, body text, label text);
	SELECT triage.attach('inbox', 'body', 'label', 'reviews');
	INSERT INTO inbox (body) SELECT review FROM food_n WHERE n % 10 = 5 ORDER BY n;
	SELECT triage.allow_worker('postgres');
	SELECT triage.heartbeat('worker-1', 'host-1', 4242, 0, 0);
	-- the large model answers most escalations with the gold label; 4 dead letters; some left
	SELECT count(*) FROM triage.claim('worker-1', 1000);
	SELECT triage.complete(e.id, jsonb_build_object('choices', jsonb_build_array(jsonb_build_object('message',
			jsonb_build_object('content', (SELECT f.score FROM food_n f WHERE f.review = e.input LIMIT 1)))),
			'usage', '{"prompt_tokens": 180, "completion_tokens": 3, "total_tokens": 183}'::jsonb))
	  FROM triage.escalations e WHERE e.status = 'claimed'
	   AND e.id NOT IN (SELECT id FROM triage.escalations WHERE status = 'claimed' ORDER BY id LIMIT 12);
	UPDATE triage.policies SET max_attempts = 1 WHERE name = 'reviews';
	SELECT triage.fail(id, 'HTTP 500 from the endpoint') FROM triage.escalations WHERE status = 'claimed' ORDER BY id LIMIT 4;
	UPDATE triage.policies SET max_attempts = 5 WHERE name = 'reviews';
	SELECT triage.release(id) FROM triage.escalations WHERE status = 'claimed' ORDER BY id LIMIT 3;
	-- a week of traffic: spread the escalations over 7 days
	UPDATE triage.escalations SET created_at = created_at - (id % 7) * interval '1 day',
								  done_at = done_at - (id % 7) * interval '1 day';
});
my %stats;
@stats{qw(rows_seen escalated pending claimed answered dead tokens)} = split /\|/, $node->safe_psql('postgres',
	"SELECT rows_seen, escalated, pending, claimed, answered, dead, tokens FROM triage.escalation_stats WHERE policy = 'reviews'");
cmp_ok($stats{answered}, '>', 20, "escalations answered ($stats{answered})");
is("$stats{claimed}|$stats{dead}", '5|4', 'leased (5) and dead (4) escalations');
cmp_ok($stats{pending}, '>=', 3, "escalations pending ($stats{pending})");
my $threshold = $node->safe_psql('postgres',
	"SELECT round((thresholds->>'default')::numeric, 4) FROM triage.policies WHERE name = 'reviews'");

my $prices = 'SET triage.llm_prompt_price_per_1k = 0.0025; SET triage.llm_completion_price_per_1k = 0.01;';
my $html_text = $node->safe_psql('postgres', "$prices SELECT triage.report('reviews')");
my $html = write_file("$tmp/report.html", $html_text);

# the screenshot
my $png = "$tmp/report.png";
my $t0 = time;
($ok, $out, $err, $console) = chromium($html, "--screenshot=$png", "--window-size=$width,$height");
note(sprintf('screenshot in %.1f s', time - $t0));
ok($ok, 'chromium takes a screenshot of the report') or diag($err);
is(join("\n", @$console), '', 'no console message (error, warning or log) while rendering the report');
my $shot = python_json($png_py, $png) || { ok => 0 };
ok($shot->{ok}, 'the screenshot is a valid PNG (signature, chunk CRCs, IDAT of the right size)')
  or diag(explain($shot));
is(($shot->{width} // '?') . 'x' . ($shot->{height} // '?'), "${width}x$height", 'of the window\'s size');

# the same window on an empty page: what a blank screenshot is
my $blank_html = write_file("$tmp/blank.html", '<!DOCTYPE html><html><body></body></html>');
chromium($blank_html, "--screenshot=$tmp/blank.png", "--window-size=$width,$height");
my $blank = python_json($png_py, "$tmp/blank.png") || {};
my ($size, $blank_size) = (-s $png || 0, -s "$tmp/blank.png" || 0);
note("screenshot $size bytes, $shot->{distinct_lines} distinct scanlines, $shot->{colors} colors sampled; "
	  . "blank page $blank_size bytes, $blank->{distinct_lines} scanlines, $blank->{colors} colors");
cmp_ok($size, '>', 10 * $blank_size, "not blank: the PNG ($size bytes) is over 10 times a blank page's ($blank_size)");
cmp_ok($shot->{distinct_lines} // 0, '>', 500, 'not blank: over 500 distinct scanlines');
cmp_ok($shot->{colors} // 0, '>', 20, 'not blank: over 20 distinct colors (text antialiasing, the charts\' colors)');

# the DOM Chromium built
($ok, $out, $err, $console) = chromium($html, '--dump-dom');
ok($ok && length($out) > 1000, 'chromium dumps the DOM of the report') or diag($err);
is(join("\n", @$console), '', 'no console message while loading the report for the DOM');
my $dom_file = write_file("$tmp/dom.html", $out);
my $dom = python_json($dom_py, $dom_file) || { sections => [], svgs => [], tables => {}, scripts => -1, text => '' };
is(join(',', @{ $dom->{sections} }), 'routing,reliability,volume,cost,queue,labels,versions',
	'the DOM has every section, in order');
is($dom->{scripts}, 0, 'no script element in the DOM');
is(join(',', map { $_->{section} } @{ $dom->{svgs} }), 'routing,reliability,volume', 'a chart (svg) in routing, reliability and volume');
is_deeply([ map { join(' | ', @{ $_->{titles} }) } @{ $dom->{svgs} } ],
	[ 'escalation rate | kept accuracy', 'confidence | accuracy', 'day | rows per day' ],
	'each chart has its two axes titled (text elements)');
ok(!(grep { $_->{texts} < 10 } @{ $dom->{svgs} }), 'each chart has its tick labels and legend (10 texts or more)')
  or diag(explain($dom->{svgs}));
# the x axis's labels (centred under their tick) do not run into each other:
# 11px text is under 7px a character
my @overlaps;
for my $svg (@{ $dom->{svgs} })
{
	my @ticks = sort { $a->[0] <=> $b->[0] } @{ $svg->{xticks} };
	for my $k (1 .. $#ticks)
	{
		my ($p, $q) = @ticks[ $k - 1, $k ];
		push @overlaps, "$svg->{section}: '$p->[2]' at $p->[0], '$q->[2]' at $q->[0]"
		  if $q->[0] - $p->[0] < 7 * (length($p->[2]) + length($q->[2])) / 2 + 4;
	}
}
is(join('; ', @overlaps), '', 'no two labels of an x axis overlap');

# the numbers on the page are the views'
my %routing_rows = map { $_->[0] => $_->[1] } @{ $dom->{tables}{routing}[0] || [] };
is($routing_rows{'threshold in force'}, $threshold, "the threshold in force ($threshold), as triage.policies has it");
my $volume = first_row($dom->{tables}{volume}[0]);
is(join('|', map { $volume->{$_} // '?' } 'rows seen', 'escalated', 'pending', 'leased', 'answered', 'dead'),
	join('|', @stats{qw(rows_seen escalated pending claimed answered dead)}),
	'volume totals on the page = triage.escalation_stats (rows seen, escalated, pending, leased, answered, dead)');
my $queue = first_row($dom->{tables}{queue}[0]);
is(join('|', map { $queue->{$_} // '?' } 'pending', 'leased', 'dead letters'),
	"$stats{pending}|$stats{claimed}|$stats{dead}", 'the queue now on the page = the view\'s pending, leased, dead');
my %cost = map { $_->[0] => $_->[1] } @{ $dom->{tables}{cost}[0] || [] };
is($cost{'tokens used by the large model'}, $stats{tokens}, "tokens on the page = the view's ($stats{tokens})");
is($cost{'large-model spend so far'},
	$node->safe_psql('postgres', "$prices SELECT llm_cost FROM triage.escalation_stats WHERE policy = 'reviews'"),
	'the spend on the page = the view\'s llm_cost at the session\'s prices');
my ($dl_head, @dead_rows) = @{ $dom->{tables}{queue}[1] || [] };
is(join('|', @{ $dead_rows[0] || [] }[ 0, 1 ]), "HTTP 500 from the endpoint|$stats{dead}", 'the top dead-letter error and its count');
my ($w_head, @worker_rows) = @{ $dom->{tables}{queue}[2] || [] };
is(join(',', map { $_->[0] } @worker_rows), 'worker-1', 'the worker');
my $label_rows = $node->safe_psql('postgres', q{
	SELECT string_agg(key || ':' || (value->>'precision')::numeric || ':' || (value->>'recall')::numeric, ',' ORDER BY key)
	  FROM triage.models, jsonb_each(metrics->'evaluation'->'labels') WHERE name = 'sentiment' AND version = 1});
my ($l_head, @labels) = @{ $dom->{tables}{labels}[0] || [] };
is(join(',', map { "$_->[0]:" . ($_->[1] + 0) . ':' . ($_->[2] + 0) } @labels),
	join(',', map { my @f = split /:/; "$f[0]:" . ($f[1] + 0) . ':' . ($f[2] + 0) } split /,/, $label_rows),
	'per-label precision and recall on the page = the stored evaluation');

# the PNG of a report for the README (docs/report.png): TRIAGE_REPORT_PNG=path
if ($ENV{TRIAGE_REPORT_PNG})
{
	chromium($html, "--screenshot=$ENV{TRIAGE_REPORT_PNG}", '--window-size=1000,3150');
}

# --- an extraction policy --------------------------------------------------------

$node->safe_psql('postgres', qq{
	SELECT triage.import_extractor('fields', pg_read_binary_file('$root/models/business_fields.crf'));
	SELECT triage.create_policy('orders', NULL, extractor => 'fields',
								rules => '{"required_fields": ["order_id"], "min_field_confidence": 0.9}');
	CREATE TABLE messages (input text, fields jsonb, kind text, template text);
	COPY messages FROM '$root/test/data/extract_heldout.csv' WITH (FORMAT csv, HEADER);
	CREATE TABLE tickets (id bigserial PRIMARY KEY, body text, fields jsonb);
	SELECT triage.attach('tickets', 'body', 'fields', 'orders');
	INSERT INTO tickets (body) SELECT input FROM messages;
	UPDATE triage.models SET metrics = metrics || jsonb_build_object('evaluation',
		triage.evaluate('fields', 'SELECT input, fields FROM messages'))
	 WHERE name = 'fields' AND version = 1;
});
my ($o_seen, $o_escalated) = split /\|/, $node->safe_psql('postgres',
	"SELECT rows_seen, escalated FROM triage.escalation_stats WHERE policy = 'orders'");
is($o_seen, 200, 'the extraction policy saw the 200 messages');
cmp_ok($o_escalated, '>', 0, "and escalated some ($o_escalated)");
my $orders_html = write_file("$tmp/orders.html", $node->safe_psql('postgres', "SELECT triage.report('orders')"));
my $orders = python_json($xml_py, $orders_html);
ok($orders, 'the page of an extraction policy parses as XML');
$orders ||= { sections => [], text => '' };
is(join(',', @{ $orders->{sections} }), 'routing,reliability,volume,cost,queue,labels,versions',
	'the extraction policy\'s page has every section');
like($orders->{text}, qr/Model fields, deployed version 1/, 'it names the extractor and its version');
($ok, $out, $err, $console) = chromium($orders_html, '--dump-dom');
ok($ok, 'chromium renders the page of the extraction policy') or diag($err);
is(join("\n", @$console), '', 'no console message on the extraction policy\'s page');
my $odom = python_json($dom_py, write_file("$tmp/orders_dom.html", $out)) || { tables => {} };
my $ovol = first_row($odom->{tables}{volume}[0]);
is(($ovol->{'rows seen'} // '?') . '|' . ($ovol->{escalated} // '?'), "$o_seen|$o_escalated",
	'its rows seen and escalated on the page = triage.escalation_stats');
my %oversions = map { $_->[0] => $_ } @{ $odom->{tables}{versions}[0] || [] };
is($oversions{1}[2], 'crf', 'the versions table shows the extractor\'s kind');

# --- 1,000,000 escalations: the page stays the same size -----------------------
# Inserted directly as superuser, a mix of statuses (pending 2%, leased 0.5%,
# answered 95%, dead 2.5%), reasons and errors, over the past week, like what
# a busy policy holds before purge.

sub fill
{
	my ($from, $to) = @_;
	$node->safe_psql('postgres', qq{
		INSERT INTO triage.escalations (policy, input, small_answer, reason, status, attempts, visible_at,
										claimed_by, claimed_role, answer, usage, error, outcome, created_at, done_at)
		SELECT 'bulk', 'review number ' || i, jsonb_build_object('label', 'great', 'confidence', 0.5 + (i % 40) / 100.0),
			   CASE WHEN i % 10 = 0 THEN 'audit sample (rate 0.1)'
					WHEN i % 97 = 0 THEN 'rule ' || (i % 3) || ': required field missing'
					ELSE 'confidence 0.' || (50 + i % 40) || ' < threshold 0.9' END,
			   s, CASE WHEN s = 'dead' THEN 5 ELSE 0 END,
			   CASE WHEN s = 'claimed' THEN now() + interval '5 minutes' ELSE t END,
			   CASE WHEN s = 'claimed' THEN 'worker-' || (i % 4) END,
			   CASE WHEN s = 'claimed' THEN 'postgres'::regrole END,
			   CASE WHEN s = 'done' THEN jsonb_build_object('label', CASE WHEN i % 3 = 0 THEN 'other' ELSE 'great' END) END,
			   CASE WHEN s = 'done' THEN '{"prompt_tokens": 180, "completion_tokens": 3, "total_tokens": 183}'::jsonb END,
			   CASE WHEN s = 'dead' THEN 'HTTP ' || (500 + i % 4) || ' error ' || (i % 50) END,
			   CASE WHEN s = 'done' THEN 'written' END,
			   t, CASE WHEN s IN ('done', 'dead') THEN t + interval '2 minutes' END
		  FROM generate_series($from, $to) AS i,
			   LATERAL (SELECT CASE WHEN i % 200 < 4 THEN 'pending' WHEN i % 200 = 4 THEN 'claimed'
									WHEN i % 200 < 10 THEN 'dead' ELSE 'done' END AS s,
							   now() - interval '7 days' + (i % 100000) * interval '6 seconds' AS t) x;
	});
}

$node->safe_psql('postgres', "SELECT triage.create_policy('bulk', 'sentiment')");
fill(1, 10000);
my $len_10k = length($node->safe_psql('postgres', "SELECT triage.report('bulk')"));
$t0 = time;
fill(10001, 1000000);
note(sprintf('990,000 escalations inserted in %.1f s', time - $t0));
is($node->safe_psql('postgres', "SELECT escalated FROM triage.escalation_stats WHERE policy = 'bulk'"),
	1000000, '1,000,000 escalations of the policy');
$t0 = time;
my $big_text = $node->safe_psql('postgres', "SELECT triage.report('bulk')");
my $report_s = time - $t0;
my $len_1m = length($big_text);
note(sprintf('report() on 1,000,000 escalations: %.2f s, %d bytes; on 10,000: %d bytes', $report_s, $len_1m, $len_10k));
cmp_ok($len_1m, '<', 200_000, "the page with 1,000,000 escalations is under 200 KB ($len_1m bytes)");
cmp_ok(abs($len_1m - $len_10k), '<', 0.05 * $len_10k,
	"and within 5% of the page with 10,000 ($len_10k bytes): aggregates, not rows");
my $big = python_json($xml_py, write_file("$tmp/big.html", $big_text));
ok($big, 'the page with 1,000,000 escalations parses as XML');
like($big ? $big->{text} : '', qr/1000000/, 'it counts the 1,000,000 escalations');

$node->stop;
done_testing();
