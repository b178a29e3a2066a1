# Helpers shared by the TAP tests in test/t (test/ is on @INC when they run).
package TriageTest;

use strict;
use warnings;

use Exporter 'import';
use Test::More ();
our @EXPORT_OK = qw(triage_worker worker_and_stub split_reviews);

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

1;
