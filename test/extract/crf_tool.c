/*
 * crf_tool.c
 *		Train and evaluate CRF field extractors outside the server.
 *
 *	crf_tool train TRAIN.tsv MODEL.bin [key=value ...]
 *		keys: max_iterations l2 epsilon delta min_feature_count max_parameters
 *		seed context_dropout lexicon_folds lexicon_min_ratio max_tokens
 *		features (a number, or -name / +name to drop / add a group:
 *		word shape affix flags ngram context lexicon caprun line bag)
 *	crf_tool eval MODEL.bin TEST.tsv [errors=N] [repeat=N]
 *		per-field precision, recall and F1 (exact value match; an amount
 *		also matches its normalized gold, "1,299" = "1299.00"), micro F1,
 *		whole-row accuracy, AUROC of the confidence for right vs wrong
 *		extracted fields, and extraction time per message.
 *
 * TSV: one message per line, the text, then TAB-separated field and value
 * pairs; backslash escapes \\ \n \t \r in all of them.
 *
 * Build: gcc -O2 -Isrc test/extract/crf_tool.c src/crf_*.c src/triage_core.c -llbfgs -lm -o crf_tool
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crf.h"
#include "../core/read_file.h"

typedef struct Row
{
	char	   *text;
	size_t		len;
	int32_t		nfields;
	char	  **names;
	char	  **values;
} Row;

static double
Now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Unescape s[0..n) into a new NUL-terminated string */
static char *
Unescape(const char *s, size_t n, size_t *outlen)
{
	char	   *o = malloc(n + 1);
	size_t		k = 0;

	for (size_t i = 0; i < n; i++)
	{
		if (s[i] == '\\' && i + 1 < n)
		{
			char		c = s[++i];

			o[k++] = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
		}
		else
			o[k++] = s[i];
	}
	o[k] = '\0';
	if (outlen)
		*outlen = k;
	return o;
}

static Row *
ReadTsv(const char *path, int64_t *nrows)
{
	FILE	   *f = fopen(path, "r");
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		got;
	Row		   *rows = NULL;
	int64_t		n = 0,
				rcap = 0;

	if (f == NULL)
	{
		perror(path);
		exit(1);
	}
	while ((got = getline(&line, &cap, f)) > 0)
	{
		char	   *cols[2 * 64 + 2];
		int			nc = 0;
		char	   *p = line;
		Row		   *r;

		while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
			line[--got] = '\0';
		if (got == 0)
			continue;
		cols[nc++] = p;
		while ((p = strchr(p, '\t')) != NULL && nc < (int) (sizeof(cols) / sizeof(cols[0])))
		{
			*p++ = '\0';
			cols[nc++] = p;
		}
		if (n == rcap)
		{
			rcap = rcap ? rcap * 2 : 1024;
			rows = realloc(rows, rcap * sizeof(Row));
		}
		r = &rows[n++];
		r->text = Unescape(cols[0], strlen(cols[0]), &r->len);
		r->nfields = (nc - 1) / 2;
		r->names = malloc((r->nfields + 1) * sizeof(char *));
		r->values = malloc((r->nfields + 1) * sizeof(char *));
		for (int i = 0; i < r->nfields; i++)
		{
			r->names[i] = Unescape(cols[1 + 2 * i], strlen(cols[1 + 2 * i]), NULL);
			r->values[i] = Unescape(cols[2 + 2 * i], strlen(cols[2 + 2 * i]), NULL);
		}
	}
	free(line);
	fclose(f);
	*nrows = n;
	return rows;
}


static const char *group_names[] = {
	"word", "shape", "affix", "flags", "ngram", "context", "lexicon", "caprun", "line", "bag"
};

static int
Train(int argc, char **argv)
{
	CrfTrainOptions opt;
	CrfTrainReport rep;
	CrfModel   *model = NULL;
	int64_t		n;
	Row		   *rows;
	CrfExample *ex;
	char		err[256];
	TriageStatus st;
	uint8_t    *bytes;
	size_t		len;
	double		t0;
	FILE	   *out;

	CrfTrainDefaults(&opt);
	for (int i = 4; i < argc; i++)
	{
		char	   *eq = strchr(argv[i], '=');
		char	   *v;

		if (eq == NULL)
		{
			fprintf(stderr, "option %s is not key=value\n", argv[i]);
			return 2;
		}
		*eq = '\0';
		v = eq + 1;
		if (strcmp(argv[i], "max_iterations") == 0)
			opt.max_iterations = atoi(v);
		else if (strcmp(argv[i], "l2") == 0)
			opt.l2 = atof(v);
		else if (strcmp(argv[i], "epsilon") == 0)
			opt.epsilon = atof(v);
		else if (strcmp(argv[i], "delta") == 0)
			opt.delta = atof(v);
		else if (strcmp(argv[i], "min_feature_count") == 0)
			opt.min_feature_count = atoi(v);
		else if (strcmp(argv[i], "max_parameters") == 0)
			opt.max_parameters = atoll(v);
		else if (strcmp(argv[i], "seed") == 0)
			opt.seed = strtoull(v, NULL, 10);
		else if (strcmp(argv[i], "context_dropout") == 0)
			opt.context_dropout = atof(v);
		else if (strcmp(argv[i], "lexicon_folds") == 0)
			opt.lexicon_folds = atoi(v);
		else if (strcmp(argv[i], "lexicon_min_ratio") == 0)
			opt.lexicon_min_ratio = atof(v);
		else if (strcmp(argv[i], "max_tokens") == 0)
			opt.max_tokens = atoi(v);
		else if (strcmp(argv[i], "features") == 0)
		{
			char	   *tok = strtok(v, ",");

			while (tok != NULL)
			{
				if (tok[0] == '+' || tok[0] == '-')
				{
					int			g;

					for (g = 0; g < 10; g++)
						if (strcmp(tok + 1, group_names[g]) == 0)
							break;
					if (g == 10)
					{
						fprintf(stderr, "unknown feature group %s\n", tok + 1);
						return 2;
					}
					if (tok[0] == '+')
						opt.features |= 1u << g;
					else
						opt.features &= ~(1u << g);
				}
				else
					opt.features = (uint32_t) strtoul(tok, NULL, 0);
				tok = strtok(NULL, ",");
			}
		}
		else
		{
			fprintf(stderr, "unknown option %s\n", argv[i]);
			return 2;
		}
	}
	rows = ReadTsv(argv[2], &n);
	ex = calloc(n, sizeof(CrfExample));
	for (int64_t i = 0; i < n; i++)
	{
		ex[i].text = rows[i].text;
		ex[i].len = rows[i].len;
		ex[i].nfields = rows[i].nfields;
		ex[i].field_names = (const char *const *) rows[i].names;
		ex[i].values = (const char *const *) rows[i].values;
	}
	t0 = Now();
	st = CrfTrain(&opt, ex, n, NULL, &model, &rep, err, sizeof(err));
	if (st != TRIAGE_OK)
	{
		fprintf(stderr, "training failed: %s\n", err);
		return 1;
	}
	printf("trained on %lld examples (%lld tokens) in %.2f s: %d fields, %lld features, %lld parameters "
		   "(min count %d), %d iterations, loss %.2f, lbfgs status %d\n",
		   (long long) rep.examples, (long long) rep.tokens, Now() - t0, rep.nfields,
		   (long long) rep.features, (long long) rep.parameters, rep.min_feature_count,
		   rep.iterations, rep.loss, rep.lbfgs_status);
	printf("values %lld: exact %lld, case/space %lld, number %lld, unaligned %lld; truncated texts %lld\n",
		   (long long) rep.values, (long long) rep.aligned_exact, (long long) rep.aligned_fold,
		   (long long) rep.aligned_number, (long long) rep.unaligned, (long long) rep.truncated);
	for (int f = 0; f < rep.nfields; f++)
		if (rep.unaligned_by_field[f] > 0)
			printf("  unaligned %s: %lld\n", CrfFieldName(model, f), (long long) rep.unaligned_by_field[f]);
	st = CrfSave(model, NULL, &bytes, &len, err, sizeof(err));
	if (st != TRIAGE_OK)
	{
		fprintf(stderr, "save failed: %s\n", err);
		return 1;
	}
	{
		int64_t		nf,
					nw,
					nl;

		CrfModelStats(model, &nf, &nw, &nl);
		printf("model: %zu bytes, %lld features, %lld int8 weights, %lld lexicon entries\n",
			   len, (long long) nf, (long long) nw, (long long) nl);
	}
	out = fopen(argv[3], "wb");
	if (out == NULL || fwrite(bytes, 1, len, out) != len || fclose(out) != 0)
	{
		perror(argv[3]);
		return 1;
	}
	free(bytes);
	CrfFree(model);
	return 0;
}

/*
 * Whether an extracted value equals the gold one: byte for byte, or as the
 * same number when the gold amount was written normalized ("1,299" for
 * gold "1299.00"); CrfAlignValue's number rule decides.
 */
static bool
SameValue(const char *got, size_t len, const char *gold)
{
	CrfToken	tokens[64];
	int32_t		n,
				first,
				last,
				nspans;

	if (strlen(gold) == len && memcmp(gold, got, len) == 0)
		return true;
	n = CrfTokenize(got, len, tokens, 64);
	return n == 1 &&
		CrfAlignValue(got, tokens, n, gold, strlen(gold), &first, &last, 1, &nspans) == CRF_ALIGN_NUMBER &&
		nspans == 1;
}

typedef struct Scored
{
	float		conf;
	int			correct;
} Scored;

static int
CompareScored(const void *a, const void *b)
{
	const Scored *x = a,
			   *y = b;

	return x->conf < y->conf ? -1 : x->conf > y->conf;
}

/* Probability that a random right field scores above a random wrong one (ties count half) */
static double
Auroc(Scored *s, int64_t n)
{
	int64_t		pos = 0,
				neg = 0;
	double		rank_sum = 0.0;

	qsort(s, n, sizeof(Scored), CompareScored);
	for (int64_t i = 0; i < n;)
	{
		int64_t		j = i;

		while (j < n && s[j].conf == s[i].conf)
			j++;
		for (int64_t k = i; k < j; k++)
			if (s[k].correct)
				rank_sum += (i + j + 1) / 2.0;	/* average 1-based rank */
		i = j;
	}
	for (int64_t i = 0; i < n; i++)
		s[i].correct ? pos++ : neg++;
	if (pos == 0 || neg == 0)
		return NAN;
	return (rank_sum - pos * (pos + 1) / 2.0) / ((double) pos * neg);
}

static int
Eval(int argc, char **argv)
{
	size_t		len;
	uint8_t    *bytes = ReadFile(argv[2], &len);
	CrfModel   *model;
	char		err[256];
	int64_t		n;
	Row		   *rows;
	int32_t		F;
	int64_t    *tp,
			   *fp,
			   *fn;
	int64_t		rows_ok = 0,
				nscored = 0;
	Scored	   *scored;
	CrfWorkspace ws;
	CrfResult	res[CRF_MAX_FIELDS];
	int32_t		nres;
	int			show_errors = 0,
				repeat = 3;
	double		t0,
				elapsed,
				bytes_total = 0;

	for (int i = 4; i < argc; i++)
	{
		if (strncmp(argv[i], "errors=", 7) == 0)
			show_errors = atoi(argv[i] + 7);
		else if (strncmp(argv[i], "repeat=", 7) == 0)
			repeat = atoi(argv[i] + 7);
	}
	if (bytes == NULL)
	{
		fprintf(stderr, "cannot read %s\n", argv[2]);
		return 1;
	}
	if (CrfLoad(bytes, len, NULL, &model, err, sizeof(err)) != TRIAGE_OK)
	{
		fprintf(stderr, "load failed: %s\n", err);
		return 1;
	}
	rows = ReadTsv(argv[3], &n);
	F = CrfFieldCount(model);
	tp = calloc(F, sizeof(int64_t));
	fp = calloc(F, sizeof(int64_t));
	fn = calloc(F, sizeof(int64_t));
	scored = calloc(n * F + 1, sizeof(Scored));
	CrfWorkspaceInit(&ws, NULL);

	for (int64_t i = 0; i < n; i++)
	{
		Row		   *r = &rows[i];
		bool		row_ok = true;
		bool		seen[CRF_MAX_FIELDS] = {false};

		if (CrfExtract(model, &ws, r->text, r->len, res, &nres, err, sizeof(err)) != TRIAGE_OK)
		{
			fprintf(stderr, "extract failed: %s\n", err);
			return 1;
		}
		for (int k = 0; k < nres; k++)
		{
			const char *gold = NULL;
			size_t		vlen = res[k].end - res[k].start;
			int			correct;

			for (int j = 0; j < r->nfields; j++)
				if (strcmp(r->names[j], CrfFieldName(model, res[k].field)) == 0)
					gold = r->values[j];
			correct = gold != NULL && SameValue(r->text + res[k].start, vlen, gold);
			seen[res[k].field] = true;
			scored[nscored].conf = res[k].confidence;
			scored[nscored].correct = correct;
			nscored++;
			if (correct)
				tp[res[k].field]++;
			else
			{
				fp[res[k].field]++;
				if (gold != NULL && gold[0] != '\0')
					fn[res[k].field]++;
				row_ok = false;
				if (show_errors > 0)
				{
					show_errors--;
					printf("WRONG %s: got \"%.*s\" (%.3f) want \"%s\" in: %.*s\n",
						   CrfFieldName(model, res[k].field), (int) vlen, r->text + res[k].start,
						   res[k].confidence, gold ? gold : "(none)", (int) r->len, r->text);
				}
			}
		}
		for (int j = 0; j < r->nfields; j++)
		{
			int32_t		f = CrfFindField(model, r->names[j], strlen(r->names[j]));

			if (f < 0 || r->values[j][0] == '\0' || seen[f])
				continue;
			fn[f]++;
			row_ok = false;
			if (show_errors > 0)
			{
				show_errors--;
				printf("MISSED %s: want \"%s\" in: %.*s\n", r->names[j], r->values[j], (int) r->len, r->text);
			}
		}
		if (row_ok)
			rows_ok++;
	}

	t0 = Now();
	for (int rep = 0; rep < repeat; rep++)
		for (int64_t i = 0; i < n; i++)
		{
			CrfExtract(model, &ws, rows[i].text, rows[i].len, res, &nres, err, sizeof(err));
			if (rep == 0)
				bytes_total += rows[i].len;
		}
	elapsed = Now() - t0;

	{
		int64_t		TP = 0,
					FP = 0,
					FN = 0;

		printf("%-18s %6s %6s %6s %6s\n", "field", "prec", "recall", "f1", "n");
		for (int32_t f = 0; f < F; f++)
		{
			double		p = tp[f] + fp[f] ? (double) tp[f] / (tp[f] + fp[f]) : 0;
			double		rc = tp[f] + fn[f] ? (double) tp[f] / (tp[f] + fn[f]) : 0;

			printf("%-18s %6.3f %6.3f %6.3f %6lld\n", CrfFieldName(model, f), p, rc,
				   p + rc > 0 ? 2 * p * rc / (p + rc) : 0, (long long) (tp[f] + fn[f]));
			TP += tp[f];
			FP += fp[f];
			FN += fn[f];
		}
		{
			double		p = TP + FP ? (double) TP / (TP + FP) : 0;
			double		rc = TP + FN ? (double) TP / (TP + FN) : 0;

			printf("micro: precision %.4f recall %.4f f1 %.4f\n", p, rc,
				   p + rc > 0 ? 2 * p * rc / (p + rc) : 0);
		}
		printf("rows: %lld, all fields right: %.4f\n", (long long) n, n ? (double) rows_ok / n : 0);
		printf("confidence AUROC (right vs wrong extracted fields): %.4f (%lld fields)\n",
			   Auroc(scored, nscored), (long long) nscored);
		printf("extraction: %.2f us/message (mean %.0f bytes)\n",
			   elapsed * 1e6 / (n * (double) repeat), n ? bytes_total / n : 0);
	}
	CrfWorkspaceFree(&ws);
	CrfFree(model);
	free(bytes);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc >= 4 && strcmp(argv[1], "train") == 0)
		return Train(argc, argv);
	if (argc >= 4 && strcmp(argv[1], "eval") == 0)
		return Eval(argc, argv);
	fprintf(stderr,
			"usage: crf_tool train TRAIN.tsv MODEL.bin [key=value ...]\n"
			"       crf_tool eval MODEL.bin TEST.tsv [errors=N] [repeat=N]\n");
	return 2;
}
