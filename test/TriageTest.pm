# Helpers shared by the TAP tests in test/t (test/ is on @INC when they run).
package TriageTest;

use strict;
use warnings;

use Exporter 'import';
our @EXPORT_OK = qw(triage_worker);

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

1;
