/*
 * triage.h
 *		Declarations shared by the server-side (glue) files of pg_triage.
 */
#ifndef TRIAGE_H
#define TRIAGE_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "fmgr.h"
#include "utils/jsonb.h"
#include "utils/palloc.h"

#include "classifier.h"
#include "crf.h"
#include "fasttext.h"
#include "triage_core.h"

#define TRIAGE_SCHEMA "triage"
/* helpers and trigger functions, out of users' \df triage.* */
#define TRIAGE_INTERNAL_SCHEMA "triage_internal"

typedef enum ModelKind
{
	MODEL_KIND_CLASSIFIER,		/* kind 'fasttext' or 'linear': a ClassifierKind */
	MODEL_KIND_EXTRACTOR		/* a field extractor (kind 'crf') */
} ModelKind;

/* A model loaded into this backend, keyed by (name, version) */
typedef struct CachedModel
{
	char		name[NAMEDATALEN];
	int32		version;
	uint64		serial;			/* unique per load in this backend: tells reloads apart */
	ModelKind	kind;
	MemoryContext context;		/* owns the model and its scratch */
	/* a classifier: its kind's functions, the loaded model, its scratch */
	const ClassifierKind *classifier;
	void	   *state;
	void	   *scratch;
	int32		nlabels;
	TriagePrediction *predictions;	/* room for every label */
	/* an extractor */
	CrfModel   *crf;
	CrfWorkspace crf_workspace;
	CrfResult  *crf_results;	/* room for every field */
	int32		crf_nresults;	/* filled by the last extraction */
	/* calls using it: a model dropped from the cache is freed by the last */
	int32		pins;
	bool		dropped;
	MemoryContext pinned_in;	/* the context of its latest pin, while held */
} CachedModel;

/*
 * Per-call-site state kept in fn_extra: the model last resolved and the
 * cache generation it was resolved in.
 */
typedef struct ModelRef
{
	uint64		generation;
	char		name[NAMEDATALEN];
	int32		version;		/* as requested: 0 means the deployed version */
	CachedModel *model;
	TupleDesc	tupdesc;		/* result type, for composite results */
	Oid			userid;			/* who was found allowed to read triage.models */
	uint64		privilege_generation;	/* and as of which grants */
} ModelRef;

/* glue.c: what every glue file shares to call the core */
extern TriageAllocator ContextAllocator(MemoryContext context);
extern void ReportModelError(const char *title, const char *hint, TriageStatus status,
							 const char *message, const char *context);
extern void ReportCoreError(TriageStatus status, const char *message, const char *context);
extern bytea *ByteaFromBytes(const uint8_t *bytes, size_t nbytes, const char *what, const char *hint);
extern struct Tuplestorestate *BeginMaterialize(FunctionCallInfo fcinfo, TupleDesc *tupdesc);

/* model_cache.c */
extern void ModelCacheInit(void);
extern CachedModel *ModelRefGet(FunctionCallInfo fcinfo, text *name, int32 version);
extern CachedModel *ModelRefLookup(ModelRef *ref, const char *name, int len, int32 version);
extern void ModelRequireKind(CachedModel *model, ModelKind kind);
extern void TrimModelScratch(CachedModel *model);
extern int32 InputBytesLimit(void);
extern int32 LimitInputLength(const char *bytes, int32 len);
extern text *LimitInput(text *input);

/* model_files.c: one mapped copy of a large model per server */
extern void ModelFilesInit(void);
extern bool ShareModelFile(int64 len);
extern const uint8 *MapModelFile(const char *name, int32 version, int64 created, int64 expected_len,
								 MemoryContext context);
extern void WriteModelFile(const char *name, int32 version, int64 created, const bytea *data,
						   int64 aligned_offset);
extern int	RemoveUnusedModelFiles(void);

/* security.c: every SPI statement of the extension's own runs in a section */
typedef struct OwnSqlSection
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} OwnSqlSection;

extern void BeginOwnSql(OwnSqlSection *section, Oid role);
extern void EndOwnSql(OwnSqlSection *section);
extern Oid	RelationOwner(Oid relid);
extern Oid	TriageRelation(const char *name);
extern Oid	TriageOwner(void);

/* query_rows.c */
typedef struct QueryRowsSpec
{
	const char *purpose;		/* "training": in "training query must ..." */
	const char *columns;		/* the columns it must return, for errors */
	const char *example;		/* a query that would do, for hints */
	int			batch;			/* rows per fetch */
	void		(*check) (TupleDesc tupdesc, void *arg);	/* error if the columns do not fit */
	void		(*row) (HeapTuple tuple, TupleDesc tupdesc, int64 row, void *arg);
} QueryRowsSpec;

extern void ForEachQueryRow(const char *query, const QueryRowsSpec *spec, void *arg);

/* train_sql.c */
extern void CheckTrainingText(const char *bytes, int32 len);

/* crf_sql.c */
extern int32 ModelExtract(CachedModel *model, text *input);
extern Jsonb *ExtractJsonb(CachedModel *model, text *input);
extern Jsonb *FieldValuesJsonb(CachedModel *model, text *input);
extern void CheckCrfFieldNames(const CrfModel *model, const char *what);

/* route.c */
extern void RouteInit(void);

/* classifier.c: classification with a model of any kind */
extern int32 ModelPredict(CachedModel *model, text *input, int32 k, float threshold);
extern text *ModelLabelText(CachedModel *model, int32 label);
extern const char *ModelLabelName(CachedModel *model, int32 label, size_t *len);

/* fasttext_kind.c */
extern FastTextModel *LoadFastTextBytea(bytea *data, MemoryContext context);
extern bytea *SaveFastTextBytea(const FastTextModel *model, MemoryContext context, const char *what);
extern void ReportFastTextError(TriageStatus status, const char *message, const char *context);
extern text *FastTextLabelText(const FastTextModel *model, int32 label);
extern void CheckFastTextLabels(const FastTextModel *model);

#endif
