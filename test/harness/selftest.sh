#!/bin/bash
# The runner's self-test: each case counts a fixture (test/harness/fixtures)
# with the functions test/run-tests.sh counts with (count.sh), in a subshell,
# and checks the closing line and whether the run would fail.  Prints TAP;
# test/run-tests.sh runs it first and counts it like any other test.
#
#   test/harness/selftest.sh [WORK_DIR]
set -uo pipefail

HARNESS=$(cd "$(dirname "$0")" && pwd)
FIX=$HARNESS/fixtures
WORK=${1:-$(mktemp -d /tmp/pg_triage-harness.XXXXXX)}
mkdir -p "$WORK"
source "$HARNESS/count.sh"

n=0
bad=0

# expect DESCRIPTION EXIT "CLOSING LINE" COMMANDS: run COMMANDS (a string)
# in a subshell after count_reset, then count_summary; the subshell must exit
# with EXIT (0, or 1 for a failed run) and end with CLOSING LINE
expect() {
	local what=$1 want_status=$2 want_line=$3 commands=$4
	local out status line
	n=$((n + 1))
	out=$( (count_reset; eval "$commands"; count_summary) 2>&1)
	status=$?
	line=$(printf '%s\n' "$out" | tail -1)
	if [ "$status" = "$want_status" ] && [ "$line" = "$want_line" ]; then
		echo "ok $n - $what"
	else
		bad=$((bad + 1))
		echo "not ok $n - $what"
		echo "# wanted exit $want_status and \"$want_line\", got exit $status and \"$line\":"
		printf '%s\n' "$out" | sed 's/^/#   /'
	fi
}

tap() {	# tap FIXTURE: run one TAP fixture as the runner runs test/t/*.pl
	tap_run "$1" "$WORK/$1.tap" perl "$FIX/$1"
}

regress() {	# regress OUTPUT STATUS NAME...: pg_regress that printed OUTPUT
	local output=$1 status=$2
	shift 2
	"$FIX/pg_regress.sh" "$FIX/$output" "$status" >"$WORK/$output" 2>&1
	count_regress "$WORK/$output" $? "$@"
}

# the controls: what passes must still pass
expect "a passing TAP file passes" 0 "2 passed, 0 failed, 0 skipped" \
	'tap pass.pl'
expect "pg_regress with a result line per name, exit 0, passes" 0 "2 passed, 0 failed, 0 skipped" \
	'regress regress_pass.out 0 one two'
expect "PostgreSQL 16's pg_regress output is read too" 0 "2 passed, 0 failed, 0 skipped" \
	'regress regress_pg16.out 0 one two'
expect "a REGRESS list matching sql/ and expected/ passes" 0 "0 passed, 0 failed, 0 skipped" \
	"check_regress_files '$FIX/regress' one"

# failures
expect "a failed TAP assertion fails the run" 1 "1 passed, 1 failed, 0 skipped" \
	'tap fail.pl'
expect "a TAP file that dies after its last assertion fails the run" 1 "1 passed, 1 failed, 0 skipped" \
	'tap dies.pl'
gcc -o "$WORK/crash" "$FIX/crash.c"
expect "a binary that crashes after a complete, passing TAP stream fails the run" 1 \
	"1 passed, 1 failed, 0 skipped" \
	"tap_run crash '$WORK/crash.out' '$WORK/crash'"
expect "a failed pg_regress test fails the run" 1 "1 passed, 1 failed, 0 skipped" \
	'regress regress_failed.out 1 one two'
expect "pg_regress aborting before any test fails every name" 1 "0 passed, 2 failed, 0 skipped" \
	'regress regress_abort.out 2 one two'
expect "pg_regress aborting on a missing file fails the run" 1 "1 passed, 1 failed, 0 skipped" \
	'regress regress_missing.out 2 one two'
expect "a name in REGRESS without a result line fails the run, even with exit 0" 1 \
	"2 passed, 1 failed, 0 skipped" \
	'regress regress_pass.out 0 one two three'
expect "pg_regress exiting non-zero with every result ok fails the run" 1 "2 passed, 1 failed, 0 skipped" \
	'regress regress_pass.out 2 one two'
expect "a name in REGRESS without sql/NAME.sql and expected/NAME.out fails the run" 1 \
	"0 passed, 2 failed, 0 skipped" \
	"check_regress_files '$FIX/regress' one two"
expect "an sql/*.sql missing from REGRESS fails the run" 1 "0 passed, 1 failed, 0 skipped" \
	"check_regress_files '$FIX/regress'"
expect "a test source that was never run fails the run" 1 "0 passed, 1 failed, 0 skipped" \
	"check_all_ran 'fixture' 'pass skip_all' '$FIX/pass.pl' '$FIX/fail.pl'"

# skips
expect "a TAP file that calls skip_all is a skip, and fails the run" 1 "0 passed, 0 failed, 1 skipped" \
	'tap skip_all.pl'
expect "the lines of skip() and a skipped subtest are skips, not passes, and fail the run" 1 \
	"1 passed, 0 failed, 3 skipped" \
	'tap skip_some.pl'
expect "a skip whose reason is on the allow-list passes" 0 "0 passed, 0 failed, 1 skipped" \
	"SKIP_ALLOWED=('^a fixture that always skips\$'); tap skip_all.pl"
expect "the allow-list matches the reason, not any skip" 1 "0 passed, 0 failed, 1 skipped" \
	"SKIP_ALLOWED=('^another reason\$'); tap skip_all.pl"

echo "1..$n"
[ "$bad" = 0 ]
