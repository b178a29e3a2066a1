# Helpers of test/t/011_attacks.pl that read files, not the database: the
# scan of the extension's C sources for SPI statements outside a
# BeginOwnSql section, the SQL strings of triage-worker, the check of a thin
# LANGUAGE sql body, and the search for pieces of a secret in a text.
package AttackTest;

use strict;
use warnings;

use Exporter 'import';
our @EXPORT_OK = qw(scan_spi worker_sql_strings thin_sql_body thin_plpgsql_body leaked_pieces unqualified_calls);

# C source with comments blanked (newlines kept, so line numbers hold) and
# string literals left as they are
sub _strip_c_comments
{
	my ($text) = @_;
	my $out = '';
	my $i = 0;
	my $n = length $text;
	while ($i < $n)
	{
		my $c = substr($text, $i, 1);
		my $two = substr($text, $i, 2);
		if ($two eq '/*')
		{
			my $end = index($text, '*/', $i + 2);
			$end = $n - 2 if $end < 0;
			(my $blank = substr($text, $i, $end + 2 - $i)) =~ s/[^\n]/ /g;
			$out .= $blank;
			$i = $end + 2;
		}
		elsif ($two eq '//')
		{
			my $end = index($text, "\n", $i);
			$end = $n if $end < 0;
			$out .= ' ' x ($end - $i);
			$i = $end;
		}
		elsif ($c eq '"' || $c eq "'")
		{
			my $j = $i + 1;
			while ($j < $n && substr($text, $j, 1) ne $c)
			{
				$j++ if substr($text, $j, 1) eq '\\';
				$j++;
			}
			$out .= substr($text, $i, $j + 1 - $i);
			$i = $j + 1;
		}
		else
		{
			$out .= $c;
			$i++;
		}
	}
	return $out;
}

# The text of a call's arguments: from the "(" at $pos to its match
sub _call_args
{
	my ($text, $pos) = @_;
	my $depth = 0;
	my $in_string = 0;
	for (my $i = $pos; $i < length $text; $i++)
	{
		my $c = substr($text, $i, 1);
		if ($in_string)
		{
			$i++ if $c eq '\\';
			$in_string = 0 if $c eq '"';
			next;
		}
		$in_string = 1 if $c eq '"';
		$depth++ if $c eq '(';
		$depth-- if $c eq ')';
		return substr($text, $pos + 1, $i - $pos - 1) if $depth == 0;
	}
	return substr($text, $pos + 1);
}

# The SQL a call passes: its C string literals up to the first comma
# outside them (adjacent literals concatenated), or the expression passed
sub _first_arg_sql
{
	my ($args) = @_;
	my $sql = '';
	my $rest = $args;
	while ($rest =~ /\G\s*"((?:[^"\\]|\\.)*)"/gc)
	{
		$sql .= $1;
	}
	return wantarray ? ($sql, 1) : $sql if $sql ne '';
	$sql = (split /,/, $args)[0] =~ s/^\s+|\s+$//gr;
	return wantarray ? ($sql, 0) : $sql;
}

# Every SPI statement of the C files of $dir: returns a list of
#   { file, line, function, call, sql, literal, in_section }
# (literal: the SQL is a string literal of the source, not an expression)
# where in_section says whether more BeginOwnSql( than EndOwnSql( precede the
# call in its function (not counting an EndOwnSql( of an early return); and the SPI_connect( calls outside security.c as
# { file, line, function }.  Functions are found PostgreSQL style: the name
# at the start of a line, the body between a "{" and a "}" at the start of
# a line.
sub scan_spi
{
	my ($dir) = @_;
	my (@statements, @connects);
	for my $path (sort glob("$dir/*.c"))
	{
		(my $file = $path) =~ s{.*/}{};
		open(my $fh, '<', $path) or die "$path: $!";
		my $text = _strip_c_comments(do { local $/; <$fh> });
		close $fh;
		my @lines = split /\n/, $text, -1;
		my ($function, $candidate, $in_body, $body_start) = (undef, undef, 0, 0);
		my $offset = 0;
		my @bodies;
		for my $i (0 .. $#lines)
		{
			my $line = $lines[$i];
			if (!$in_body)
			{
				$candidate = $1 if $line =~ /^([A-Za-z_]\w*)\s*\(/;
				if ($line =~ /^\{/)
				{
					($in_body, $function, $body_start) = (1, $candidate // '?', $offset);
				}
			}
			elsif ($line =~ /^\}/)
			{
				push @bodies, [ $function, $body_start, $offset + length($line) ];
				$in_body = 0;
				$candidate = undef;
			}
			$offset += length($line) + 1;
		}
		for my $b (@bodies)
		{
			my ($name, $start, $end) = @$b;
			my $body = substr($text, $start, $end - $start);
			while ($body =~ /\b(SPI_(?:execute\w*|exec|execp|prepare\w*|cursor_open\w*|cursor_parse_open\w*|connect\w*))\s*\(/g)
			{
				my ($call, $at) = ($1, $-[0]);
				my $paren = $+[0] - 1;
				my $before = substr($body, 0, $at);
				my $line = 1 + (substr($text, 0, $start + $at) =~ tr/\n//);
				if ($call =~ /^SPI_connect/)
				{
					push @connects, { file => $file, line => $line, function => $name };
					next;
				}
				my $opened = () = $before =~ /\bBeginOwnSql\s*\(/g;
				# an EndOwnSql( followed by a return before its block
				# closes ends an early exit, not the section
				my $closed = 0;
				while ($before =~ /\bEndOwnSql\s*\(/g)
				{
					my $after = substr($before, $+[0]);
					$after =~ s/\}.*//s;
					$closed++ unless $after =~ /\b(?:return|PG_RETURN\w*)\b/;
				}
				my ($sql, $literal) = _first_arg_sql(_call_args($body, $paren));
				push @statements, {
					file => $file, line => $line, function => $name, call => $call,
					sql => $sql, literal => $literal, in_section => $opened > $closed };
			}
		}
	}
	return (\@statements, \@connects);
}

# SQL keywords that may stand before a "(" without being a function call
my %sql_keyword = map { $_ => 1 } qw(select from where and or not in exists values as on join
  any all some array row using into returning cast case when then else filter over by lateral
  if elsif loop exit return perform raise);

# The function calls of a SQL text that are not schema-qualified: names
# followed by "(" with no "schema." before them, string literals left out
sub unqualified_calls
{
	my ($sql) = @_;
	(my $s = $sql) =~ s/'(?:[^']|'')*'/''/g;
	my @found;
	while ($s =~ /(?<![\w.\$"])([A-Za-z_]\w*)\s*\(/g)
	{
		push @found, $1 unless $sql_keyword{ lc $1 };
	}
	return @found;
}

# The SQL strings triage-worker sends (PQexec, PQexecParams, PQprepare,
# PQsendQuery...), from the C files of $dir: [ file, line, sql ]
sub worker_sql_strings
{
	my ($dir) = @_;
	my @found;
	for my $path (sort glob("$dir/*.c"))
	{
		(my $file = $path) =~ s{.*/}{};
		open(my $fh, '<', $path) or die "$path: $!";
		my $text = _strip_c_comments(do { local $/; <$fh> });
		close $fh;
		while ($text =~ /\b(PQexec|PQexecParams|PQprepare|PQsendQuery|PQsendQueryParams|PQsendPrepare)\s*\(/g)
		{
			my ($call, $at, $paren) = ($1, $-[0], $+[0] - 1);
			my $args = _call_args($text, $paren);
			# the SQL is the argument after the connection (and, for
			# PQprepare/PQsendPrepare, the statement name)
			my $skip = $call =~ /Prepare$|prepare$/ ? 2 : 1;
			my $rest = $args;
			for (1 .. $skip)
			{
				$rest =~ s/^[^,"]*(?:"(?:[^"\\]|\\.)*"[^,"]*)*,//s;
			}
			my $sql = _first_arg_sql($rest);
			next if $sql !~ /\s/;	# a variable, not a literal
			my $line = 1 + (substr($text, 0, $at) =~ tr/\n//);
			push @found, [ $file, $line, $sql ];
		}
	}
	return @found;
}

# The triage.* and triage_internal.* calls of a SQL text, each as
# [schema.name, number of arguments]
sub _triage_calls
{
	my ($s) = @_;
	my @calls;
	while ($s =~ /\b(triage(?:_internal)?\.\w+)\s*\(/g)
	{
		my ($name, $paren) = ($1, $+[0] - 1);
		my $args = _call_args($s, $paren);
		1 while $args =~ s/\([^()]*\)//g;	# nested calls' own commas
		my $n = $args =~ /\S/ ? 1 + ($args =~ tr/,//) : 0;
		push @calls, [ $name, $n ];
	}
	return @calls;
}

# A body with comments and string literals taken out
sub _bare_sql
{
	my ($src) = @_;
	(my $s = $src) =~ s{/\*.*?\*/}{ }gs;
	$s =~ s/--[^\n]*//g;
	$s =~ s/'(?:[^']|'')*'/''/g;
	return $s;
}

# What makes a body resolve names through the caller's search_path: an
# unqualified call, an operator, a cast to an unqualified type
sub _path_dependence
{
	my ($s) = @_;
	my @bad = unqualified_calls($s);
	return 'an unqualified call of ' . join(', ', @bad) if @bad;
	(my $ops = $s) =~ s/=>|:=//g;
	$ops =~ s/::\s*(?:pg_catalog|triage|triage_internal)\.//g;
	return 'a cast to an unqualified type' if $ops =~ /::/;
	$ops =~ s/\$\d+//g;
	return "an operator ($1)" if $ops =~ /([-+*\/<>=~!@#%^&|`?]+)/;
	return undef;
}

# Whether a LANGUAGE sql body is a thin entry point: one SELECT of a call of
# a triage.* or triage_internal.* function whose arguments use only
# parameters, literals, named arguments and pg_catalog./triage.-qualified
# function calls (no operator, no unqualified name followed by "(", no cast
# to an unqualified type).  Returns (1, [[called function as schema.name,
# number of arguments], ...]) or (0, reason).
sub thin_sql_body
{
	my ($src) = @_;
	my $s = _bare_sql($src);
	$s =~ s/^\s+|[\s;]+$//g;
	return (0, 'not one SELECT of a triage.* call')
	  unless $s =~ /^SELECT\s+triage(?:_internal)?\.\w+\s*\(/is;
	my $bad = _path_dependence($s);
	return (0, $bad) if $bad;
	return (1, [ _triage_calls($s) ]);
}

# The same for a plpgsql procedure (which cannot pin search_path if it
# commits): variables of schema-qualified types only, no dynamic SQL, and
# statements that call only qualified functions, without operators.
sub thin_plpgsql_body
{
	my ($src) = @_;
	my $s = _bare_sql($src);
	return (0, 'dynamic SQL (EXECUTE)') if $s =~ /\bEXECUTE\b/i;
	if ($s =~ /\bDECLARE\b(.*?)\bBEGIN\b/is)
	{
		for my $decl (grep { /\S/ } split /;/, $1)
		{
			my ($var, $type) = $decl =~ /^\s*(\w+)\s+(?:CONSTANT\s+)?([\w."\[\]%]+)/i;
			return (0, "variable $var of an unqualified type $type")
			  if defined $type && $type !~ /^(?:pg_catalog|triage|triage_internal)\./;
		}
	}
	(my $body = $s) =~ s/.*?\bBEGIN\b//is;
	my $bad = _path_dependence($body);
	return (0, $bad) if $bad;
	return (1, [ _triage_calls($body) ]);
}

# The pieces (windows of $len characters) of each secret that occur in text
sub leaked_pieces
{
	my ($text, $len, @secrets) = @_;
	my %found;
	for my $secret (@secrets)
	{
		for my $i (0 .. length($secret) - $len)
		{
			my $piece = substr($secret, $i, $len);
			$found{$piece} = 1 if index($text, $piece) >= 0;
		}
	}
	return sort keys %found;
}


1;
