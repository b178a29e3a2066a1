# Every SQL block of README.md, in order, on a fresh database with the
# shipped files: the README's examples cannot drift from what runs (#14).
# "/path/to/" in a block is the source tree; a block's expected output, where
# the README shows one as "-- " comments, is not compared (it has "…").
# Then what \df shows users: every function of schema triage has a comment
# and is in the README's reference; every one of triage_internal (the
# helpers, out of users' way) has a comment and is named in "Internal
# functions".
use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use PostgreSQL::Test::Cluster;
use Test::More;

my $root = File::Spec->rel2abs(dirname(__FILE__) . '/../..');
open(my $fh, '<', "$root/README.md") or die "README.md: $!";
my (@blocks, $block, $line, $readme);
while (my $l = <$fh>)
{
	$line++;
	$readme .= $l;
	if (!defined $block && $l =~ /^```sql\s*$/) { $block = { line => $line, sql => '' }; next; }
	if (defined $block && $l =~ /^```\s*$/) { push @blocks, $block; undef $block; next; }
	$block->{sql} .= $l if defined $block;
}
close $fh;
cmp_ok(scalar @blocks, '>=', 8, 'README.md has its SQL blocks (' . scalar(@blocks) . ')');

my $node = PostgreSQL::Test::Cluster->new('readme');
$node->init;
$node->start;

# The install section creates the extension; later blocks repeat it for
# readers who start there: run those as "IF NOT EXISTS"
for my $b (@blocks)
{
	my $sql = $b->{sql};
	$sql =~ s{/path/to/}{$root/}g;
	$sql =~ s/CREATE EXTENSION pg_triage;/CREATE EXTENSION IF NOT EXISTS pg_triage;/g;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 1);
	my $first = (split /\n/, $b->{sql})[0];
	ok($ret == 0, "README.md line $b->{line} runs: $first") or diag($err);
}

# what the blocks promise, checked after them
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM triage.models WHERE name = 'sentiment') >= 2
	   AND (SELECT count(*) FROM triage.policy_grants WHERE policy = 'reviews') = 1
	   AND (SELECT count(*) FROM triage.worker_roles) = 1}),
	't', 'the blocks stored what they say: two sentiment versions, a policy grant, a worker role');

# \df triage.* and \df triage_internal.*: name, comment
sub functions
{
	my ($schema) = @_;
	return map { [ split /\|/, $_, 2 ] } split /\n/, $node->safe_psql('postgres', qq{
		SELECT p.proname, coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), '')
		  FROM pg_proc p WHERE p.pronamespace = '$schema'::regnamespace ORDER BY 1, p.oid});
}
my ($reference) = $readme =~ /^## Reference\n(.*?)^### Internal functions\n/ms;
my ($internal) = $readme =~ /^### Internal functions\n(.*?)^##/ms;
ok($reference && $internal, 'the README has a reference and a section "Internal functions"');
my @public = functions('triage');
cmp_ok(scalar @public, '>=', 40, scalar(@public) . ' functions in schema triage');
is(join(', ', map { $_->[0] } grep { $_->[1] !~ /\S/ } @public), '', 'every function of schema triage has a comment');
is(join(', ', map { $_->[0] } grep { $reference !~ /`\Q$_->[0]\E\(/ } @public), '',
	'every function of schema triage is in the README\'s reference (`name(...)`)');
my @helpers = functions('triage_internal');
cmp_ok(scalar @helpers, '>=', 40, scalar(@helpers) . ' functions in schema triage_internal');
is(join(', ', map { $_->[0] } grep { $_->[1] !~ /\S/ } @helpers), '', 'every function of schema triage_internal has a comment');
is(join(', ', map { $_->[0] } grep { $internal !~ /`\Q$_->[0]\E[`(]/ } @helpers), '',
	'every function of schema triage_internal is named in "Internal functions"');
is($node->safe_psql('postgres', q{
	SELECT string_agg(n.nspname, ',' ORDER BY n.nspname) FROM pg_namespace n JOIN pg_depend d
	    ON d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e'
	  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_triage'}),
	'triage,triage_internal', 'both schemas are members of the extension');

$node->stop;
done_testing();
