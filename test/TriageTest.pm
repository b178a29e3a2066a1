# Helpers shared by the TAP tests in test/t (test/ is on @INC when they run).
package TriageTest;

use strict;
use warnings;

use Exporter 'import';
use IPC::Run ();
use PostgreSQL::Test::Utils ();
use Test::More ();
use Time::HiRes ();
our @EXPORT_OK = qw(triage_worker worker_and_stub start_stub split_reviews parse_prometheus);

# The triage-worker to test: $TRIAGE_WORKER, else the one installed next to
# pg_config's binaries, else the one built in the tree under $root
sub triage_worker
{
	my ($root) = @_;
	return $ENV{TRIAGE_WORKER} if $ENV{TRIAGE_WORKER};
	my $pg_config = $ENV{PG_CONFIG} || 'pg_config';
	my $bindir = `$pg_config --bindir 2>/dev/null`;
	chomp $bindir if defined $bindir;
	return (defined $bindir && -x "$bindir/triage-worker")
	  ? "$bindir/triage-worker"
	  : "$root/src/worker/triage-worker";
}

# The triage-worker, for a test that runs it against the stub LLM: skips
# the test when there is no worker or no python3 for the stub
sub worker_and_stub
{
	my ($root) = @_;
	my $worker = triage_worker($root);
	Test::More::plan(skip_all => "no triage-worker at $worker (make it, or set TRIAGE_WORKER)")
	  unless -x $worker;
	Test::More::plan(skip_all => 'python3 is needed for the stub LLM')
	  if system('python3 -c "import http.server" 2>/dev/null') != 0;
	return $worker;
}

# The stub LLM ($stub_py, test/stub/stub_llm.py) on a free port of
# 127.0.0.1, answering from the gold file $gold with the stub's options
# @args, its output in $dir/stub_$name.out and .err; it exits by itself after
# 300 s should the test die.  Waits until it listens and returns
# { h => its IPC::Run harness, port => its port, name => $name }.
sub start_stub
{
	my ($stub_py, $dir, $name, $gold, @args) = @_;
	my $out = "$dir/stub_$name.out";
	my $h = IPC::Run::start([ 'python3', $stub_py, '--gold', $gold, '--port', '0', '--max-seconds', '300', @args ],
		'>', $out, '2>', "$dir/stub_$name.err");
	my $deadline = Time::HiRes::time() + 30;
	while (Time::HiRes::time() < $deadline)
	{
		my $text = -e $out ? PostgreSQL::Test::Utils::slurp_file($out) : '';
		return { h => $h, port => $1, name => $name } if $text =~ /listening on (\d+)/;
		Time::HiRes::sleep(0.05);
	}
	die "the stub did not start: " . PostgreSQL::Test::Utils::slurp_file("$dir/stub_$name.err");
}

# The shared reviews in table food, and in table labeled (r, review, score,
# split): numbered r in the order of md5 of their text, so that copies of a
# review fall in one part, and cut into parts [name, last r], the last part
# taking the rest.  Checks that no review is in two parts.
sub split_reviews
{
	my ($node, $csv, @parts) = @_;
	my $last = pop @parts;
	my $cases = join(' ', map { "WHEN r <= $_->[1] THEN '$_->[0]'" } @parts);
	$node->safe_psql('postgres', qq{
		CREATE TABLE food (product text, review text, score text);
		COPY food FROM '$csv' WITH (FORMAT csv, HEADER);
		CREATE TABLE labeled AS
		SELECT r, review, score, CASE $cases ELSE '$last->[0]' END AS split
		  FROM (SELECT row_number() OVER (ORDER BY md5(review), n) AS r, review, score
				  FROM (SELECT row_number() OVER () AS n, review, score FROM food) f) s;
	});
	Test::More::is($node->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT review FROM labeled GROUP BY review HAVING count(DISTINCT split) > 1) s}),
		'0', 'no review is in two parts of the split');
}

# The Prometheus text exposition format (0.0.4), strictly: HELP and TYPE
# once per family, before its samples, which are contiguous; names and label
# names of the allowed characters; label values quoted with only \\, \" and
# \n escapes; values floats; no series twice; a counter's name ends in
# _total; a line feed at the end.  A histogram's samples are NAME_bucket
# (with le, a float or +Inf, the counts cumulative: never smaller at a
# larger le, and ending with le="+Inf"), NAME_sum and NAME_count (equal to
# the +Inf bucket), per set of other labels; a summary's NAME, NAME_sum and
# NAME_count.  Returns the samples as {"name{labels}" => value} with label
# values unescaped and labels sorted, or (undef, the first error).
sub parse_prometheus
{
	my ($text) = @_;
	return (undef, 'no final line feed') unless $text =~ /\n\z/;
	my (%samples, %help, %type, %closed, $current, %hist);
	my $name_re = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
	my $float_re = qr/^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?Inf$|^NaN$/;
	my $n = 0;
	for my $line (split /\n/, $text)
	{
		$n++;
		if ($line =~ /^# HELP ($name_re) ((?:[^\\\n]|\\[\\n])*)$/)
		{
			return (undef, "line $n: second HELP of $1") if $help{$1}++;
			return (undef, "line $n: HELP of $1 after its samples") if exists $samples{"$1\0"} || $closed{$1};
			$closed{$current} = 1 if defined $current && $current ne $1;
			$current = $1;
		}
		elsif ($line =~ /^# TYPE ($name_re) (counter|gauge|histogram|summary|untyped)$/)
		{
			my ($name, $kind) = ($1, $2);
			return (undef, "line $n: second TYPE of $name") if $type{$name};
			return (undef, "line $n: TYPE of $name is not with its HELP") unless defined $current && $current eq $name;
			return (undef, "line $n: counter $name does not end in _total") if $kind eq 'counter' && $name !~ /_total$/;
			$type{$name} = $kind;
		}
		elsif ($line =~ /^($name_re)(?:\{(.*)\})? (\S+)$/)
		{
			my ($name, $labels, $value) = ($1, $2 // '', $3);
			return (undef, "line $n: sample of $name outside a family") unless defined $current;
			my $kind = $type{$current};
			my $suffix;
			if ($name ne $current)
			{
				($suffix) = $name =~ /^\Q$current\E(_bucket|_sum|_count)$/;
				return (undef, "line $n: sample of $name outside its family")
				  unless $suffix && $kind && ($kind eq 'histogram' || ($kind eq 'summary' && $suffix ne '_bucket'));
			}
			return (undef, "line $n: sample of $name without TYPE") unless $kind;
			return (undef, "line $n: histogram $current has a sample without a suffix")
			  if $kind eq 'histogram' && !$suffix;
			return (undef, "line $n: value $value is not a float") unless $value =~ $float_re;
			my (@pairs, $le);
			my $rest = $labels;
			while ($rest ne '')
			{
				$rest =~ s/^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,(?=.)|$)//
				  or return (undef, "line $n: bad labels {$labels}");
				my ($k, $v) = ($1, $2);
				$v =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
				push @pairs, "$k=$v";
				$le = $v if $k eq 'le';
			}
			my $key = $name . '{' . join(',', sort @pairs) . '}';
			return (undef, "line $n: series $key twice") if exists $samples{$key};
			$samples{$key} = $value;
			$samples{"$current\0"} = 1;
			next unless $kind eq 'histogram';
			my $series = $current . '{' . join(',', sort grep { !/^le=/ } @pairs) . '}';
			my $h = $hist{$series} //= { buckets => [] };
			if ($suffix eq '_bucket')
			{
				return (undef, "line $n: bucket of $series without le") unless defined $le;
				return (undef, "line $n: le=\"$le\" is not a float") unless $le =~ $float_re && $le ne 'NaN';
				my $prev = $h->{buckets}[-1];
				my $at = $le =~ /^\+?Inf$/ ? 9**9**9 : $le;
				return (undef, "line $n: bucket le=\"$le\" after a larger one")
				  if $prev && $at <= $prev->[0];
				return (undef, "line $n: bucket le=\"$le\" counts less than a smaller one")
				  if $prev && $value < $prev->[1];
				push @{ $h->{buckets} }, [ $at, $value ];
			}
			else
			{
				return (undef, "line $n: $name has an le label") if defined $le;
				$h->{ substr($suffix, 1) } = $value;
			}
		}
		else
		{
			return (undef, "line $n: not a HELP, TYPE or sample line: $line");
		}
	}
	for my $series (sort keys %hist)
	{
		my $h = $hist{$series};
		my $last = $h->{buckets}[-1];
		return (undef, "histogram $series has no le=\"+Inf\" bucket") unless $last && $last->[0] == 9**9**9;
		return (undef, "histogram $series has no _count") unless defined $h->{count};
		return (undef, "histogram $series has no _sum") unless defined $h->{sum};
		return (undef, "histogram $series: _count $h->{count} is not its +Inf bucket $last->[1]")
		  unless $h->{count} == $last->[1];
	}
	delete $samples{$_} for grep { /\0$/ } keys %samples;
	return (\%samples, undef);
}

1;
