# shellcheck shell=bash
# Sourced by test/run-tests.sh and test/harness/selftest.sh: how the runner
# counts what each test program says, so that the self-test exercises the
# very code the real run uses.
#
#   count_reset                      zero the counts
#   record NAME STATUS               one pass (STATUS 0) or failure
#   record_skip NAME REASON          one skip; allowed only if REASON matches
#                                    an entry of SKIP_ALLOWED
#   tap_run NAME OUT COMMAND...      run COMMAND (stdout to OUT, stderr to
#                                    OUT.err) and count_tap its output
#   count_tap NAME FILE STATUS       a TAP stream FILE from a program that
#                                    exited STATUS (C unit tests, test/t/*.pl)
#   count_regress FILE STATUS NAME...
#                                    pg_regress's output FILE and exit STATUS,
#                                    against the names it was asked to run
#   check_regress_files DIR NAME...  DIR/sql/NAME.sql and DIR/expected/NAME.out
#                                    exist for each NAME, and every
#                                    DIR/sql/*.sql is one of the NAMEs
#   check_all_ran WHAT "RAN..." FILE...
#                                    a failure for each FILE whose name (without
#                                    directory and extension) is not in RAN
#   count_fuzz NAME FILE STATUS      a fuzz runner's output
#   count_summary                    the failures, the skips and the closing
#                                    line "N passed, N failed, N skipped";
#                                    returns 1 on a failure or a disallowed skip
#
# A test is never silently absent: a TAP stream without a plan, or with a
# plan its lines do not match, or with no tests at all, is a failure, as is
# a program that exits non-zero without a "not ok" (a crash or a die), and
# a name given to pg_regress without a result line.

# Reasons a test may be skipped for, as extended regular expressions.  On a
# fresh Debian 12 with the Makefile's dependencies ("make deps") nothing is
# skipped, so none is allowed on Linux; elsewhere only the tests that read a
# backend's memory from /proc may skip.
SKIP_ALLOWED=()
if [ "$(uname -s)" != Linux ]; then
	SKIP_ALLOWED+=('read from /proc \(Linux\)$')
fi

count_reset() {
	PASSED=0
	FAILED=0
	SKIPPED=0
	FAILURES=()
	BAD_SKIPS=()
}

record() {	# record NAME STATUS
	if [ "$2" = 0 ]; then
		PASSED=$((PASSED + 1))
	else
		FAILED=$((FAILED + 1))
		FAILURES+=("$1")
	fi
}

skip_allowed() {	# skip_allowed REASON: is REASON on the allow-list?
	local pattern
	for pattern in ${SKIP_ALLOWED[@]+"${SKIP_ALLOWED[@]}"}; do
		if printf '%s\n' "$1" | grep -Eq -- "$pattern"; then
			return 0
		fi
	done
	return 1
}

record_skip() {	# record_skip NAME REASON
	SKIPPED=$((SKIPPED + 1))
	if ! skip_allowed "$2"; then
		BAD_SKIPS+=("$1: ${2:-(no reason)}")
	fi
}

# The top-level lines of a TAP stream, one per line on stdout:
#   pass, fail, skip REASON, skipall REASON, plan N, bail REASON
# Subtests are indented and summed up by their own top-level line.
tap_lines() {	# tap_lines FILE
	awk '
		/^ok( |$)/ {
			if (match($0, / # [Ss][Kk][Ii][Pp]([ \t]|$)/)) {
				reason = substr($0, RSTART + 7); sub(/^[ \t]+/, "", reason)
				print "skip " reason
			} else
				print "pass"
			next
		}
		/^not ok( |$)/ { print "fail"; next }
		/^1\.\.0 *# *[Ss][Kk][Ii][Pp]/ {
			reason = $0; sub(/^1\.\.0 *# *[Ss][Kk][Ii][Pp][ \t]*/, "", reason)
			print "skipall " reason; next
		}
		/^1\.\.[0-9]+/ { n = $1; sub(/^1\.\./, "", n); print "plan " n; next }
		/^Bail out!/ { reason = $0; sub(/^Bail out! */, "", reason); print "bail " reason; next }
	' "$1"
}

tap_run() {	# tap_run NAME OUT COMMAND...
	local name=$1 out=$2
	shift 2
	"$@" >"$out" 2>"$out.err"
	count_tap "$name" "$out" $?
}

count_tap() {	# count_tap NAME FILE STATUS
	local name=$1 file=$2 status=$3
	local kind rest n_ok=0 n_bad=0 n_skip=0 lines=0 plan='' skipall='' bail='' problem=''

	while read -r kind rest; do
		case $kind in
		pass) n_ok=$((n_ok + 1)); lines=$((lines + 1)); PASSED=$((PASSED + 1)) ;;
		fail) n_bad=$((n_bad + 1)); lines=$((lines + 1)); FAILED=$((FAILED + 1)) ;;
		skip) n_skip=$((n_skip + 1)); lines=$((lines + 1)); record_skip "$name" "$rest" ;;
		skipall) skipall=${rest:-(no reason)}; plan=0 ;;
		plan) [ -z "$plan" ] && plan=$rest ;;
		bail) bail=${rest:-(no reason)} ;;
		esac
	done < <([ -f "$file" ] && tap_lines "$file")

	echo "$name: $n_ok ok, $n_bad not ok, $n_skip skipped (exit $status)"
	# each failure with the diagnostics that follow it
	[ -f "$file" ] && awk '/^not ok/ { p = 1; print; next } /^ok/ { p = 0 } p && /^#/' "$file" | head -80
	[ "$n_bad" -gt 0 ] && FAILURES+=("$name")

	if [ -n "$skipall" ]; then
		echo "$name: skipped entirely: $skipall"
		record_skip "$name" "$skipall"
		[ "$lines" -gt 0 ] && problem="skip_all after $lines tests"
	elif [ -n "$bail" ]; then
		problem="bailed out: $bail"
	elif [ -z "$plan" ]; then
		problem="no plan: aborted"
	elif [ "$plan" != "$lines" ]; then
		problem="planned $plan tests, ran $lines"
	elif [ "$lines" = 0 ]; then
		problem="no tests"
	fi
	if [ -z "$problem" ] && [ "$status" != 0 ] && [ "$n_bad" = 0 ]; then
		problem="exit $status without a failed test: crashed"
	fi
	if [ -n "$problem" ]; then
		record "$name ($problem)" 1
		echo "$name: $problem"
		[ -f "$file" ] && tail -30 "$file"
		[ -s "$file.err" ] && tail -30 "$file.err"
	fi
	return 0
}

# PostgreSQL 15 prints "test NAME ... ok" (or "     NAME ... ok" in a
# parallel group), 16 and later "ok N - NAME" and "not ok N - NAME".
regress_results() {	# regress_results FILE: "NAME ok" or "NAME failed"
	awk '
		/^(test| )  *[A-Za-z_0-9-]+ +\.\.\. / {
			name = ($1 == "test") ? $2 : $1
			result = ($1 == "test") ? $4 : $3
			print name, (result == "ok" ? "ok" : "failed"); next
		}
		/^(not )?ok +[0-9]+ +[-+] / {
			ok = ($1 == "ok"); sub(/^(not )?ok +[0-9]+ +[-+] +/, "")
			print $1, (ok ? "ok" : "failed")
		}' "$1"
}

count_regress() {	# count_regress FILE STATUS NAME...
	local file=$1 status=$2; shift 2
	local name found bad=0
	local results

	results=$([ -f "$file" ] && regress_results "$file")
	for name in "$@"; do
		found=$(printf '%s\n' "$results" | awk -v n="$name" '$1 == n { print $2 }')
		case $found in
		ok) record "pg_regress $name" 0 ;;
		failed) record "pg_regress $name" 1; bad=1 ;;
		"") record "pg_regress $name (no result: aborted?)" 1; bad=1 ;;
		*) record "pg_regress $name (more than one result)" 1; bad=1 ;;
		esac
	done
	while read -r name _; do
		[ -n "$name" ] || continue
		case " $* " in
		*" $name "*) ;;
		*) record "pg_regress $name (not asked for)" 1; bad=1 ;;
		esac
	done <<<"$results"
	if [ "$status" != 0 ] && [ "$bad" = 0 ]; then
		record "pg_regress (exit $status)" 1
	fi
	[ $# -gt 0 ] || record "pg_regress (no tests named)" 1
	return 0
}

check_regress_files() {	# check_regress_files DIR NAME...
	local dir=$1 name sql
	shift
	for name in "$@"; do
		[ -f "$dir/sql/$name.sql" ] || record "pg_regress $name (no sql/$name.sql)" 1
		[ -f "$dir/expected/$name.out" ] || record "pg_regress $name (no expected/$name.out)" 1
	done
	for sql in "$dir"/sql/*.sql; do
		[ -f "$sql" ] || continue
		name=$(basename "$sql" .sql)
		case " $* " in
		*" $name "*) ;;
		*) record "sql/$name.sql (not in REGRESS: never run)" 1 ;;
		esac
	done
}

check_all_ran() {	# check_all_ran WHAT "RAN..." FILE...
	local what=$1 ran=$2 file name
	shift 2
	for file in "$@"; do
		[ -e "$file" ] || continue
		name=$(basename "$file")
		name=${name%.*}
		case " $ran " in
		*" $name "*) ;;
		*) record "$what $file (never run)" 1 ;;
		esac
	done
}

count_fuzz() {	# count_fuzz NAME FILE STATUS: passes if it ran inputs and exited 0
	local n
	n=$(sed -n 's/^fuzz: \([0-9][0-9]*\) inputs.*/\1/p' "$2" 2>/dev/null | tail -1)
	if [ "$3" != 0 ]; then
		record "$1 (exit $3)" 1
	elif [ -z "$n" ] || [ "$n" = 0 ]; then
		record "$1 (no inputs)" 1
	else
		record "$1" 0
	fi
}

count_summary() {
	echo
	if [ ${#FAILURES[@]} -gt 0 ]; then
		echo "failed: ${FAILURES[*]}"
	fi
	if [ ${#BAD_SKIPS[@]} -gt 0 ]; then
		echo "skipped without an allowed reason:"
		printf '  %s\n' "${BAD_SKIPS[@]}"
	fi
	echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
	[ "$FAILED" = 0 ] && [ ${#BAD_SKIPS[@]} = 0 ]
}
