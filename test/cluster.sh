# Sourced by the test, demo and bench scripts: a throwaway PostgreSQL
# cluster under a temporary directory, reached through a Unix socket only.
#
#   cluster_start DIR    initdb DIR/data and start it; exports PGHOST, PGPORT
#   cluster_stop         stop it (also done on exit)

PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)}
PG_BINDIR=$("$PG_CONFIG" --bindir)
export PATH="$PG_BINDIR:$PATH"

cluster_start() {
	CLUSTER_DIR=$1
	mkdir -p "$CLUSTER_DIR"
	initdb -D "$CLUSTER_DIR/data" -A trust -E UTF8 --locale=C.UTF-8 >"$CLUSTER_DIR/initdb.log" 2>&1 ||
		{ cat "$CLUSTER_DIR/initdb.log"; return 1; }
	export PGHOST=$CLUSTER_DIR PGPORT=${PGPORT:-54329} PGDATABASE=postgres
	pg_ctl -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w \
		-o "-c listen_addresses='' -k $CLUSTER_DIR -p $PGPORT -c fsync=off" start >/dev/null ||
		{ cat "$CLUSTER_DIR/server.log"; return 1; }
	trap cluster_stop EXIT
}

cluster_stop() {
	[ -n "${CLUSTER_DIR:-}" ] && [ -d "$CLUSTER_DIR/data" ] &&
		pg_ctl -D "$CLUSTER_DIR/data" -m immediate stop >/dev/null 2>&1
	CLUSTER_DIR=
}

# Re-run the calling script as the postgres user when we are root, since
# PostgreSQL will not run as root: the tree is copied where postgres can write.
# Files named in COPY_BACK (relative to the tree) are copied back afterwards.
drop_root() {
	local script=$1; shift
	if [ "$(id -u)" = 0 ]; then
		local copy
		copy=$(mktemp -d /tmp/pg_triage.XXXXXX)
		cp -a "$ROOT/." "$copy/"
		chown -R postgres: "$copy"
		if [ -z "${COPY_BACK:-}" ]; then
			exec runuser -u postgres -- env PG_CONFIG="$PG_CONFIG" CI="${CI:-}" \
				TRIAGE_SOURCE="$ROOT" "$copy/$script" "$@"
		fi
		# the script writes files of the tree: bring them back as root
		runuser -u postgres -- env PG_CONFIG="$PG_CONFIG" CI="${CI:-}" "$copy/$script" "$@"
		for f in $COPY_BACK; do
			cp "$copy/$f" "$ROOT/$f"
		done
		rm -rf "$copy"
		exit 0
	fi
}
