/*-------------------------------------------------------------------------
 *
 * config.c
 *	  triage-worker's options: command line, environment, the help text and
 *	  the API key.
 *
 * Every option can also come from a TRIAGE_* environment variable; a flag
 * wins over its variable.  The API key itself is never an option, so that it
 * cannot show in ps: it is read from a named environment variable, which is
 * then wiped and removed (so that /proc/PID/environ does not show it
 * either), or from a file.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "triage_worker.h"

#define MAX_API_KEY 4096

static const char *help_text =
"NAME\n"
"    triage-worker - answer pg_triage escalations with a large language model\n"
"\n"
"SYNOPSIS\n"
"    triage-worker --dsn CONNSTR --base-url URL --model NAME\n"
"                  [--api-key-env VAR | --api-key-file PATH]\n"
"                  [--concurrency N] [--rps R] [--tpm N] [--timeout SECONDS]\n"
"                  [--max-attempts N] [--policy NAME] [--name WORKER_NAME]\n"
"                  [--batch N] [--visibility SECONDS]\n"
"                  [--max-retry-after SECONDS] [--log-file PATH]\n"
"                  [--response-format json_schema|json_object|none]\n"
"                  [--mode interactive|batch] [--batch-file-requests N]\n"
"                  [--batch-file-bytes BYTES] [--batch-poll SECONDS]\n"
"                  [--batch-poll-max SECONDS] [--batch-interval SECONDS]\n"
"                  [--metrics-listen [HOST]:PORT] [--once] [--help]\n"
"                  [--version]\n"
"\n"
"DESCRIPTION\n"
"    triage-worker takes escalated rows from the pg_triage queue with\n"
"    triage.claim(), posts each row's request to the OpenAI-compatible\n"
"    endpoint URL/chat/completions with \"model\" set to NAME, and hands the\n"
"    reply, unparsed, to triage.complete(), which validates the answer,\n"
"    writes it to the source row and records a training example.  Failed\n"
"    tries go to triage.fail(), which retries with backoff and dead-letters\n"
"    a job after its policy's max_attempts.\n"
"\n"
"    Requests run in parallel, up to --concurrency at a time, within the\n"
"    --rps and --tpm limits.  A 429 or 5xx reply, a timeout or a broken\n"
"    reply counts as a failed try, retried after the Retry-After the\n"
"    endpoint sent (at most --max-retry-after).  Failures that are not a\n"
"    job's fault (connection refused, unknown host, 401, 403, 404, or five\n"
"    5xx replies or timeouts in a row) open a circuit breaker: the worker\n"
"    gives its unstarted jobs back without counting an attempt, stops\n"
"    claiming, waits (1 s doubling to 60 s, with jitter) and sends one\n"
"    request before resuming.\n"
"\n"
"    When nothing is claimable the worker sleeps until NOTIFY\n"
"    triage_escalations or a few seconds pass.  Any role may send that\n"
"    notification: it is only a hint to claim now, its payload is ignored.\n"
"    A failed triage.claim() is retried with backoff (1 s doubling to 60 s,\n"
"    with jitter).  It reconnects, with backoff, when the database restarts.\n"
"    It reports itself in triage.workers through triage.heartbeat() every\n"
"    10 seconds.\n"
"\n"
"    The worker's session has search_path pg_catalog, pg_temp and every name\n"
"    in its SQL is schema-qualified: nothing resolves through its role's\n"
"    search_path.  In each database it serves, an admin must run\n"
"    SELECT triage.allow_worker('ROLE') for the worker's login role.\n"
"\n"
"    A job is leased for --visibility seconds; a request is cut short to end\n"
"    before its lease does.  If the lease was lost anyway (the database was\n"
"    away, or an admin gave the job back), the server answers \"stale\": the\n"
"    job is another worker's now, and this one logs it and moves on.\n"
"\n"
"    SIGTERM or SIGINT: stop claiming, let requests in flight finish (up to\n"
"    --timeout), give the rest back, exit 0; a second signal gives\n"
"    everything back at once.  SIGHUP: reopen the log file and re-read the\n"
"    API key file.\n"
"\n"
"    Each job's outcome is one line of the log, in logfmt:\n"
"        ts=... level=info job=123 outcome=done http=200 ms=532 tokens=81\n"
"    outcome is done, invalid (the server rejected the answer and counted a\n"
"    failed try), retry, dead, stale (the lease was lost) or released.\n"
"    The API key, the database password and the URL's credentials and\n"
"    query values are masked in the log and in the errors stored in the\n"
"    queue, also cut or escaped (any 8 characters of them in a row); of a\n"
"    400, 401, 403 or 407 reply only the status is kept.\n"
"\n"
"OPTIONS\n"
"    --dsn CONNSTR\n"
"        libpq connection string or URI of the database with pg_triage.\n"
"        Prefer a password file (PGPASSFILE) to a password in CONNSTR,\n"
"        which ps would show.  The log shows CONNSTR as libpq reads it,\n"
"        without passwords.  In a URI, write \"@\" and \"/\" in a user name or\n"
"        password as %40 and %2F.\n"
"    --base-url URL\n"
"        The endpoint's base URL, e.g. https://api.openai.com/v1.  The log\n"
"        shows it without user, password and query string.  With plain\n"
"        http:// to a host other than localhost, 127.0.0.0/8 or ::1, the\n"
"        worker warns at start that the key crosses the network in clear.\n"
"    --model NAME\n"
"        The \"model\" of every request.\n"
"    --api-key-env VAR\n"
"        Read the API key from the environment variable VAR, then wipe and\n"
"        remove VAR from the worker's environment.\n"
"    --api-key-file PATH\n"
"        Read the API key from PATH (surrounding white space is ignored);\n"
"        re-read on SIGHUP.  Without either option no Authorization header\n"
"        is sent.  The key is never logged.\n"
"    --concurrency N\n"
"        Requests in flight at most (default 4).\n"
"    --rps R\n"
"        Requests per second at most, R may be fractional (default:\n"
"        unlimited).\n"
"    --tpm N\n"
"        Tokens per minute at most, estimated from the usage the endpoint\n"
"        reported for earlier requests, at first from a request's length / 4\n"
"        (default: unlimited).\n"
"    --timeout SECONDS\n"
"        Time limit of one request (default 60).\n"
"    --max-attempts N\n"
"        Accepted for compatibility and logged; the policy's max_attempts\n"
"        decides when a job is dead-lettered.\n"
"    --policy NAME\n"
"        Claim only this policy's jobs (default: every policy's).\n"
"    --name WORKER_NAME\n"
"        The name in triage.workers and in the leases (default HOST:PID).\n"
"    --batch N\n"
"        Jobs claimed at most per call of triage.claim() (default: the\n"
"        concurrency).\n"
"    --visibility SECONDS\n"
"        How long a claimed job stays leased to this worker (default 300);\n"
"        if the worker dies, another one may take the job after that.  Keep\n"
"        it well above --timeout.\n"
"    --max-retry-after SECONDS\n"
"        The longest Retry-After passed on to triage.fail() (default 3600);\n"
"        an endpoint's longer one is cut to it.\n"
"    --log-file PATH\n"
"        Append the log to PATH instead of standard error; reopened on\n"
"        SIGHUP.\n"
"    --response-format json_schema|json_object|none\n"
"        What the requests ask of the answer's form (default json_schema):\n"
"        json_schema constrains it to the policy's labels or fields (OpenAI\n"
"        structured outputs, strict; vLLM, llama.cpp's server and Ollama take\n"
"        the same form), json_object asks for JSON only (JSON mode), none\n"
"        sends no response_format.\n"
"    --mode interactive|batch\n"
"        interactive (default): one request per row, for the policies\n"
"        without rules latency \"batch\".  batch: the rows of policies with\n"
"        rules latency \"batch\", through the endpoint's Batch API (URL/files,\n"
"        URL/batches): claimed in bulk with triage.claim_batch(), written as a\n"
"        JSONL file, uploaded, polled, and each line of the output handed to\n"
"        triage.batch_result().  The batch's state is in triage.batches: a\n"
"        restarted worker (same --name) polls its open batches again instead\n"
"        of sending them twice.  The leases of a batch's rows are extended\n"
"        while it is out; --visibility defaults to 3600 in this mode.\n"
"    --batch-file-requests N\n"
"        Requests per batch file at most (default 5000, up to 50000).\n"
"    --batch-file-bytes BYTES\n"
"        Bytes per batch file at most (default 100000000, up to 200000000).\n"
"    --batch-poll SECONDS\n"
"        First wait before polling a batch (default 30), doubling up to\n"
"        --batch-poll-max (default 600).\n"
"    --batch-interval SECONDS\n"
"        How often to look for rows for a new batch (default 300; at once\n"
"        after a full file).\n"
"    --metrics-listen [HOST]:PORT\n"
"        Serve the worker's own metrics at http://HOST:PORT/metrics in the\n"
"        Prometheus text format: jobs by outcome, requests by HTTP status,\n"
"        request durations (a histogram), tokens, requests in flight, the\n"
"        circuit breaker and the pause after a 429.  Without HOST (\":9187\")\n"
"        it listens on 127.0.0.1 only; any other address (0.0.0.0, a LAN\n"
"        address) must be given, and then anyone who can reach it reads the\n"
"        worker's name and counters (no secrets, no row text).  An IPv6\n"
"        address is written [::1]:9187.  Port 0 takes a free port, which the\n"
"        log names.  Off by default.\n"
"    --once\n"
"        Drain the jobs claimable now, then exit.  A job to be retried later is\n"
"        left to the next run.\n"
"    --help\n"
"        Print this text and exit.\n"
"    --version\n"
"        Print the version and exit.\n"
"\n"
"ENVIRONMENT\n"
"    TRIAGE_DSN, TRIAGE_BASE_URL, TRIAGE_MODEL, TRIAGE_API_KEY_ENV,\n"
"    TRIAGE_API_KEY_FILE, TRIAGE_CONCURRENCY, TRIAGE_RPS, TRIAGE_TPM,\n"
"    TRIAGE_TIMEOUT, TRIAGE_MAX_ATTEMPTS, TRIAGE_POLICY, TRIAGE_NAME,\n"
"    TRIAGE_BATCH, TRIAGE_VISIBILITY, TRIAGE_MAX_RETRY_AFTER,\n"
"    TRIAGE_LOG_FILE, TRIAGE_RESPONSE_FORMAT, TRIAGE_MODE,\n"
"    TRIAGE_BATCH_FILE_REQUESTS, TRIAGE_BATCH_FILE_BYTES, TRIAGE_BATCH_POLL,\n"
"    TRIAGE_BATCH_POLL_MAX, TRIAGE_BATCH_INTERVAL, TRIAGE_METRICS_LISTEN,\n"
"    TRIAGE_ONCE (1, true or yes)\n"
"        Defaults of the options of the same names; a flag wins.\n"
"    PGHOST, PGPORT, PGUSER, PGPASSFILE, ...\n"
"        As for every libpq client.\n"
"\n"
"EXIT STATUS\n"
"    0   --once found nothing more to claim, or a signal stopped the worker\n"
"    1   a fatal error: the API key cannot be read, pg_triage is missing,\n"
"        the role may not claim (insufficient_privilege: the log names the\n"
"        triage.allow_worker() call that fixes it), the log cannot be\n"
"        opened, or with --once the endpoint refused the key (401, 403), or\n"
"        the endpoint or triage.claim() kept failing\n"
"    2   bad usage\n"
"\n"
"EXAMPLES\n"
"    OPENAI_API_KEY=... triage-worker --dsn 'dbname=shop' \\\n"
"        --base-url https://api.openai.com/v1 --model gpt-4o-mini \\\n"
"        --api-key-env OPENAI_API_KEY --concurrency 8 --rps 5 --tpm 200000\n"
"\n"
"    triage-worker --dsn postgresql://triage@db/shop \\\n"
"        --base-url http://127.0.0.1:8000/v1 --model llama3 --once\n";

static void usage_error(const char *fmt,...)
			__attribute__((format(printf, 1, 2), noreturn));

static void
usage_error(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "triage-worker: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry \"triage-worker --help\" for more information.\n");
	exit(EXIT_USAGE);
}

/* what: the option or variable, for the message */
static long
parse_long(const char *value, const char *what, long min, long max)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' || v < min || v > max)
		usage_error("invalid value \"%s\" for %s (an integer from %ld to %ld)",
					value, what, min, max);
	return v;
}

static double
parse_double(const char *value, const char *what, double min, double max)
{
	char	   *end;
	double		v;

	errno = 0;
	v = strtod(value, &end);
	if (errno != 0 || end == value || *end != '\0' || !isfinite(v) || v < min || v > max)
		usage_error("invalid value \"%s\" for %s (a number from %g to %g)",
					value, what, min, max);
	return v;
}

static bool
parse_bool(const char *value, const char *what)
{
	if (strcmp(value, "1") == 0 || strcasecmp(value, "true") == 0 ||
		strcasecmp(value, "yes") == 0 || strcasecmp(value, "on") == 0)
		return true;
	if (strcmp(value, "0") == 0 || strcasecmp(value, "false") == 0 ||
		strcasecmp(value, "no") == 0 || strcasecmp(value, "off") == 0 || value[0] == '\0')
		return false;
	usage_error("invalid value \"%s\" for %s (1, true, yes, 0, false or no)", value, what);
}

enum
{
	OPT_DSN = 256,
	OPT_BASE_URL,
	OPT_MODEL,
	OPT_API_KEY_ENV,
	OPT_API_KEY_FILE,
	OPT_CONCURRENCY,
	OPT_RPS,
	OPT_TPM,
	OPT_TIMEOUT,
	OPT_MAX_ATTEMPTS,
	OPT_POLICY,
	OPT_NAME,
	OPT_BATCH,
	OPT_VISIBILITY,
	OPT_MAX_RETRY_AFTER,
	OPT_LOG_FILE,
	OPT_ONCE,
	OPT_RESPONSE_FORMAT,
	OPT_MODE,
	OPT_BATCH_FILE_REQUESTS,
	OPT_BATCH_FILE_BYTES,
	OPT_BATCH_POLL,
	OPT_BATCH_POLL_MAX,
	OPT_BATCH_INTERVAL,
	OPT_METRICS_LISTEN,
	OPT_HELP,
	OPT_VERSION
};

/* Each option, its environment variable and the flag, in one table */
static const struct
{
	int			code;
	const char *env;
	const char *flag;
}			option_names[] =
{
	{OPT_DSN, "TRIAGE_DSN", "--dsn"},
	{OPT_BASE_URL, "TRIAGE_BASE_URL", "--base-url"},
	{OPT_MODEL, "TRIAGE_MODEL", "--model"},
	{OPT_API_KEY_ENV, "TRIAGE_API_KEY_ENV", "--api-key-env"},
	{OPT_API_KEY_FILE, "TRIAGE_API_KEY_FILE", "--api-key-file"},
	{OPT_CONCURRENCY, "TRIAGE_CONCURRENCY", "--concurrency"},
	{OPT_RPS, "TRIAGE_RPS", "--rps"},
	{OPT_TPM, "TRIAGE_TPM", "--tpm"},
	{OPT_TIMEOUT, "TRIAGE_TIMEOUT", "--timeout"},
	{OPT_MAX_ATTEMPTS, "TRIAGE_MAX_ATTEMPTS", "--max-attempts"},
	{OPT_POLICY, "TRIAGE_POLICY", "--policy"},
	{OPT_NAME, "TRIAGE_NAME", "--name"},
	{OPT_BATCH, "TRIAGE_BATCH", "--batch"},
	{OPT_VISIBILITY, "TRIAGE_VISIBILITY", "--visibility"},
	{OPT_MAX_RETRY_AFTER, "TRIAGE_MAX_RETRY_AFTER", "--max-retry-after"},
	{OPT_LOG_FILE, "TRIAGE_LOG_FILE", "--log-file"},
	{OPT_ONCE, "TRIAGE_ONCE", "--once"},
	{OPT_RESPONSE_FORMAT, "TRIAGE_RESPONSE_FORMAT", "--response-format"},
	{OPT_MODE, "TRIAGE_MODE", "--mode"},
	{OPT_BATCH_FILE_REQUESTS, "TRIAGE_BATCH_FILE_REQUESTS", "--batch-file-requests"},
	{OPT_BATCH_FILE_BYTES, "TRIAGE_BATCH_FILE_BYTES", "--batch-file-bytes"},
	{OPT_BATCH_POLL, "TRIAGE_BATCH_POLL", "--batch-poll"},
	{OPT_BATCH_POLL_MAX, "TRIAGE_BATCH_POLL_MAX", "--batch-poll-max"},
	{OPT_BATCH_INTERVAL, "TRIAGE_BATCH_INTERVAL", "--batch-interval"},
	{OPT_METRICS_LISTEN, "TRIAGE_METRICS_LISTEN", "--metrics-listen"},
};

/* Applies one option; what names its source for error messages */
static void
set_option(WorkerConfig *cfg, int code, const char *value, const char *what)
{
	switch (code)
	{
		case OPT_DSN:
			cfg->dsn = strdup(value);
			break;
		case OPT_BASE_URL:
			cfg->base_url = strdup(value);
			break;
		case OPT_MODEL:
			cfg->model = strdup(value);
			break;
		case OPT_API_KEY_ENV:
			cfg->api_key_env = value[0] ? strdup(value) : NULL;
			break;
		case OPT_API_KEY_FILE:
			cfg->api_key_file = value[0] ? strdup(value) : NULL;
			break;
		case OPT_CONCURRENCY:
			cfg->concurrency = (int) parse_long(value, what, 1, 1000);
			break;
		case OPT_RPS:
			cfg->rps = parse_double(value, what, 0, 1e6);
			break;
		case OPT_TPM:
			cfg->tpm = parse_long(value, what, 0, LONG_MAX / 2);
			break;
		case OPT_TIMEOUT:
			cfg->timeout = parse_double(value, what, 0.1, 86400);
			break;
		case OPT_MAX_ATTEMPTS:
			cfg->max_attempts = (int) parse_long(value, what, 1, 100);
			break;
		case OPT_POLICY:
			cfg->policy = value[0] ? strdup(value) : NULL;
			break;
		case OPT_NAME:
			cfg->name = value[0] ? strdup(value) : NULL;
			break;
		case OPT_BATCH:
			cfg->batch = (int) parse_long(value, what, 1, 10000);
			break;
		case OPT_VISIBILITY:
			cfg->visibility = parse_double(value, what, 1, 7 * 86400);
			cfg->visibility_set = true;
			break;
		case OPT_MAX_RETRY_AFTER:
			cfg->max_retry_after = parse_double(value, what, 0, 7 * 86400);
			break;
		case OPT_LOG_FILE:
			cfg->log_file = value[0] ? strdup(value) : NULL;
			break;
		case OPT_ONCE:
			cfg->once = parse_bool(value, what);
			break;
		case OPT_RESPONSE_FORMAT:
			if (strcmp(value, "json_schema") != 0 && strcmp(value, "json_object") != 0 &&
				strcmp(value, "none") != 0)
				usage_error("invalid value \"%s\" for %s (json_schema, json_object or none)",
							value, what);
			cfg->response_format = strdup(value);
			break;
		case OPT_MODE:
			if (strcmp(value, "interactive") != 0 && strcmp(value, "batch") != 0)
				usage_error("invalid value \"%s\" for %s (interactive or batch)", value, what);
			cfg->batch_mode = strcmp(value, "batch") == 0;
			break;
		case OPT_BATCH_FILE_REQUESTS:
			cfg->batch_file_requests = (int) parse_long(value, what, 1, 50000);
			break;
		case OPT_BATCH_FILE_BYTES:
			cfg->batch_file_bytes = parse_long(value, what, 1000, 200000000);
			break;
		case OPT_BATCH_POLL:
			cfg->batch_poll = parse_double(value, what, 0.05, 86400);
			break;
		case OPT_BATCH_POLL_MAX:
			cfg->batch_poll_max = parse_double(value, what, 0.05, 86400);
			break;
		case OPT_BATCH_INTERVAL:
			cfg->batch_interval = parse_double(value, what, 0.05, 86400);
			break;
		case OPT_METRICS_LISTEN:
			if (value[0] == '\0')
				cfg->metrics_listen = NULL;
			else
			{
				char		host[256];
				char		err[256];
				int			port;

				if (!metrics_parse_listen(value, host, sizeof(host), &port, err, sizeof(err)))
					usage_error("invalid value for %s: %s", what, err);
				cfg->metrics_listen = strdup(value);
			}
			break;
	}
}

/*
 * Fills cfg from the environment, then the command line; exits 0 after
 * --help or --version and 2 on bad usage.
 */
void
config_parse(WorkerConfig *cfg, int argc, char **argv)
{
	static const struct option long_options[] = {
		{"dsn", required_argument, NULL, OPT_DSN},
		{"base-url", required_argument, NULL, OPT_BASE_URL},
		{"model", required_argument, NULL, OPT_MODEL},
		{"api-key-env", required_argument, NULL, OPT_API_KEY_ENV},
		{"api-key-file", required_argument, NULL, OPT_API_KEY_FILE},
		{"concurrency", required_argument, NULL, OPT_CONCURRENCY},
		{"rps", required_argument, NULL, OPT_RPS},
		{"tpm", required_argument, NULL, OPT_TPM},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"max-attempts", required_argument, NULL, OPT_MAX_ATTEMPTS},
		{"policy", required_argument, NULL, OPT_POLICY},
		{"name", required_argument, NULL, OPT_NAME},
		{"batch", required_argument, NULL, OPT_BATCH},
		{"visibility", required_argument, NULL, OPT_VISIBILITY},
		{"max-retry-after", required_argument, NULL, OPT_MAX_RETRY_AFTER},
		{"log-file", required_argument, NULL, OPT_LOG_FILE},
		{"once", no_argument, NULL, OPT_ONCE},
		{"response-format", required_argument, NULL, OPT_RESPONSE_FORMAT},
		{"mode", required_argument, NULL, OPT_MODE},
		{"batch-file-requests", required_argument, NULL, OPT_BATCH_FILE_REQUESTS},
		{"batch-file-bytes", required_argument, NULL, OPT_BATCH_FILE_BYTES},
		{"batch-poll", required_argument, NULL, OPT_BATCH_POLL},
		{"batch-poll-max", required_argument, NULL, OPT_BATCH_POLL_MAX},
		{"batch-interval", required_argument, NULL, OPT_BATCH_INTERVAL},
		{"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
		{"help", no_argument, NULL, OPT_HELP},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0}
	};
	bool		key_env_flag = false;
	bool		key_file_flag = false;
	size_t		i;
	int			c;

	memset(cfg, 0, sizeof(*cfg));
	cfg->concurrency = 4;
	cfg->timeout = 60;
	cfg->visibility = 300;
	cfg->max_retry_after = 3600;
	cfg->response_format = "json_schema";
	cfg->batch_file_requests = 5000;
	cfg->batch_file_bytes = 100000000;
	cfg->batch_poll = 30;
	cfg->batch_poll_max = 600;
	cfg->batch_interval = 300;

	for (i = 0; i < sizeof(option_names) / sizeof(option_names[0]); i++)
	{
		const char *value = getenv(option_names[i].env);

		if (value != NULL)
			set_option(cfg, option_names[i].code, value, option_names[i].env);
	}

	opterr = 0;
	while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case OPT_HELP:
				fputs(help_text, stdout);
				exit(0);
			case OPT_VERSION:
				printf("triage-worker %s (%s)\n", WORKER_VERSION, curl_version());
				exit(0);
			case OPT_ONCE:
				cfg->once = true;
				break;
			case '?':
				if (optopt != 0)
					usage_error("option \"%s\" needs a value", argv[optind - 1]);
				usage_error("unknown option \"%s\"", argv[optind - 1]);
			default:
				for (i = 0; i < sizeof(option_names) / sizeof(option_names[0]); i++)
					if (option_names[i].code == c)
						set_option(cfg, c, optarg, option_names[i].flag);
				if (c == OPT_API_KEY_ENV)
					key_env_flag = true;
				if (c == OPT_API_KEY_FILE)
					key_file_flag = true;
				break;
		}
	}
	if (optind < argc)
		usage_error("unexpected argument \"%s\"", argv[optind]);

	/* a flag for one source of the key overrides the variable of the other */
	if (key_env_flag && !key_file_flag)
		cfg->api_key_file = NULL;
	if (key_file_flag && !key_env_flag)
		cfg->api_key_env = NULL;
	if (cfg->api_key_env && cfg->api_key_file)
		usage_error("%s", "--api-key-env and --api-key-file cannot be used together");

	if (cfg->dsn == NULL)
		usage_error("%s", "--dsn (or TRIAGE_DSN) is required");
	{
		char		err[256];

		if (!dsn_check(cfg->dsn, err, sizeof(err)))
			usage_error("%s", err);
	}
	if (cfg->base_url == NULL || cfg->base_url[0] == '\0')
		usage_error("%s", "--base-url (or TRIAGE_BASE_URL) is required");
	if (cfg->model == NULL || cfg->model[0] == '\0')
		usage_error("%s", "--model (or TRIAGE_MODEL) is required");
	if (strncmp(cfg->base_url, "http://", 7) != 0 && strncmp(cfg->base_url, "https://", 8) != 0)
		usage_error("--base-url must start with http:// or https://, not \"%s\"", cfg->base_url);

	/* accept both ".../v1" and ".../v1/" */
	{
		size_t		len = strlen(cfg->base_url);

		while (len > 0 && cfg->base_url[len - 1] == '/')
			cfg->base_url[--len] = '\0';
		cfg->url = malloc(len + sizeof("/chat/completions"));
		if (cfg->url == NULL)
			usage_error("%s", "out of memory");
		memcpy(cfg->url, cfg->base_url, len);
		strcpy(cfg->url + len, "/chat/completions");
	}
	cfg->model_json = json_string(cfg->model);
	/* a batch takes hours: its rows' leases must outlive a restart */
	if (cfg->batch_mode && !cfg->visibility_set)
		cfg->visibility = 3600;
	if (cfg->batch_poll_max < cfg->batch_poll)
		cfg->batch_poll_max = cfg->batch_poll;

	if (cfg->batch == 0)
		cfg->batch = cfg->concurrency;
	if (cfg->name == NULL)
	{
		char		host[200];
		char		name[256];

		if (gethostname(host, sizeof(host)) != 0)
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		snprintf(name, sizeof(name), "%s:%d", host, (int) getpid());
		cfg->name = strdup(name);
	}
}

/*
 * Reads the API key named by the configuration into *key (malloc'd; NULL
 * when no source is configured).  Returns false with a message in err when
 * the source is configured but unusable.  The key is never part of err.
 *
 * A key from the environment is then wiped where it lies and the variable
 * removed: unsetenv() alone takes it out of environ, so that no child
 * would inherit it, but /proc/PID/environ shows the memory the process
 * started with.
 */
bool
load_api_key(const WorkerConfig *cfg, char **key, char *err, size_t errlen)
{
	char		buf[MAX_API_KEY + 2];
	size_t		len;
	size_t		start;

	*key = NULL;
	if (cfg->api_key_env)
	{
		char	   *value = getenv(cfg->api_key_env);
		size_t		value_len;

		if (value == NULL || value[0] == '\0')
		{
			snprintf(err, errlen, "environment variable %s (from --api-key-env) is not set",
					 cfg->api_key_env);
			return false;
		}
		value_len = len = strlen(value);
		if (len <= MAX_API_KEY)
			memcpy(buf, value, len);
		explicit_bzero(value, value_len);
		unsetenv(cfg->api_key_env);
		if (len > MAX_API_KEY)
		{
			snprintf(err, errlen, "the API key in %s is longer than %d bytes",
					 cfg->api_key_env, MAX_API_KEY);
			return false;
		}
	}
	else if (cfg->api_key_file)
	{
		FILE	   *f = fopen(cfg->api_key_file, "r");

		if (f == NULL)
		{
			snprintf(err, errlen, "could not open API key file \"%s\": %s",
					 cfg->api_key_file, strerror(errno));
			return false;
		}
		len = fread(buf, 1, sizeof(buf) - 1, f);
		if (ferror(f))
		{
			snprintf(err, errlen, "could not read API key file \"%s\": %s",
					 cfg->api_key_file, strerror(errno));
			fclose(f);
			explicit_bzero(buf, sizeof(buf));
			return false;
		}
		fclose(f);
		if (len > MAX_API_KEY)
		{
			explicit_bzero(buf, sizeof(buf));
			snprintf(err, errlen, "API key file \"%s\" is longer than %d bytes",
					 cfg->api_key_file, MAX_API_KEY);
			return false;
		}
	}
	else
		return true;

	/* a key file usually ends in a newline, and a header must not */
	while (len > 0 && isspace((unsigned char) buf[len - 1]))
		len--;
	for (start = 0; start < len && isspace((unsigned char) buf[start]); start++)
		;
	buf[len] = '\0';
	if (start == len)
	{
		snprintf(err, errlen, "the API key is empty");
		return false;
	}
	for (size_t i = start; i < len; i++)
	{
		if ((unsigned char) buf[i] < 0x21 || (unsigned char) buf[i] == 0x7f)
		{
			explicit_bzero(buf, sizeof(buf));
			snprintf(err, errlen, "the API key contains white space or control characters");
			return false;
		}
	}
	*key = strdup(buf + start);
	explicit_bzero(buf, sizeof(buf));
	if (*key == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return false;
	}
	return true;
}
