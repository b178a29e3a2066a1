# Helpers shared by the TAP tests in test/t (test/ is on @INC when they run).
package TriageTest;

use strict;
use warnings;

use Exporter 'import';
use Test::More ();
our @EXPORT_OK = qw(triage_worker worker_and_stub);

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

1;
