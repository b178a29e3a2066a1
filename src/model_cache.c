/*
 * model_cache.c
 *		The per-backend model cache and its invalidation, who may use a
 *		model, and the limits on what a model is run on.
 *
 * Design note.  Models are immutable once stored, so a loaded model keyed by
 * (name, version) stays valid; what changes is which version a name is
 * deployed as.  Statement-level triggers on triage.models and
 * triage.deployments call CacheInvalidateRelcache() on the table, which
 * PostgreSQL delivers to every backend at commit (and to our own backend
 * at the next command).  Our relcache callback only bumps a generation
 * counter: it may run at awkward moments, so it never frees memory.  The
 * next call that sees a new generation forgets the deployment map (and, if
 * the models table changed, the loaded models) and resolves again with SPI.
 *
 * Each SQL call site keeps a ModelRef in fn_extra, so the per-row cost of
 * finding the model is a few integer compares and one name compare.
 *
 * Pins.  A call that got a model may run SPI (a trigger queueing, a
 * held-out query), and a nested call may then drop every loaded model.  So
 * each lookup pins the model until the memory context it was looked up in
 * is reset or deleted (the call's, or the row's): a dropped model that is
 * still pinned is only marked, and the last unpin frees it.  Error recovery
 * resets those contexts too, so pins cannot leak.
 *
 * Privileges.  Model bytes are read as the owner of pg_triage's tables (a
 * user may have no right to the data column, which holds the training
 * words), after checking that the current user may read triage.models at
 * all.  A ModelRef remembers who was checked and under which grants (a
 * generation bumped by any invalidation of triage.models, which GRANT and
 * REVOKE send, and by changes to role memberships or attributes), so a hit
 * costs integer compares and SET ROLE is seen at the next row.
 *
 * Memory: every model lives in its own context under CacheMemoryContext's
 * child "pg_triage models", freed when the model is dropped from the cache
 * and no call holds it.  What one input made a model's scratch grow to is
 * given back after the call (SCRATCH_KEEP_BYTES).
 */
#include "postgres.h"

#include <limits.h>
#include <math.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "fasttext_quantize.h"
#include "triage.h"

/* Scratch memory a loaded model keeps between calls; more is given back */
#define SCRATCH_KEEP_BYTES ((size_t) 4 * 1024 * 1024)

typedef struct ModelKey
{
	char		name[NAMEDATALEN];
	int32		version;
} ModelKey;

typedef struct ModelCacheEntry
{
	ModelKey	key;
	CachedModel *model;
} ModelCacheEntry;

typedef struct DeploymentEntry
{
	char		name[NAMEDATALEN];
	int32		version;
} DeploymentEntry;

/* A pin: held until the context it was taken in is reset or deleted */
typedef struct ModelPin
{
	MemoryContextCallback callback;
	CachedModel *model;
	MemoryContext context;
} ModelPin;

/* settings */
static int	MaxInputBytes = 1024 * 1024;
static int	MaxTokens = 100000;

static MemoryContext ModelCacheContext = NULL;
static HTAB *ModelTable = NULL;

/* how many models this backend has loaded: each load's serial */
static uint64 ModelLoads = 0;
static HTAB *DeploymentTable = NULL;

/* bumped by invalidations; ModelRefs from older generations re-resolve */
static uint64 CacheGeneration = 1;
static bool ModelsChanged = false;
static bool DeploymentsChanged = false;
static Oid	ModelsRelid = InvalidOid;
static Oid	DeploymentsRelid = InvalidOid;

/*
 * An invalidation can arrive in the middle of a statement; a deployment read
 * again then is read under that statement's snapshot, which may be older
 * than the change.  So after any invalidation, the next statement reads the
 * deployments again (ForgetEarlierStatements).
 */
static bool InvalidatedSinceStatement = false;
static LocalTransactionId SeenLxid = InvalidLocalTransactionId;
static TimestampTz SeenStatementStart = 0;

/* bumped when who may read triage.models may have changed */
static uint64 PrivilegeGeneration = 1;

/* Reject a classifier where an extractor is needed, and the other way round */
void
ModelRequireKind(CachedModel *model, ModelKind kind)
{
	if (model->kind == kind)
		return;
	if (kind == MODEL_KIND_EXTRACTOR)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("model \"%s\" version %d is a classifier, not an extractor",
						model->name, model->version),
				 errhint("Use triage.classify() with it, or train an extractor with triage.train_extractor().")));
	ereport(ERROR,
			(errcode(ERRCODE_WRONG_OBJECT_TYPE),
			 errmsg("model \"%s\" version %d is an extractor, not a classifier",
					model->name, model->version),
			 errhint("Use triage.extract() with it.")));
}

static void
ModelStoreInvalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == ModelsRelid)
	{
		ModelsChanged = true;
		/* GRANT and REVOKE on the table come this way too */
		PrivilegeGeneration++;
	}
	if (relid == InvalidOid || relid == ModelsRelid || relid == DeploymentsRelid)
	{
		DeploymentsChanged = true;
		CacheGeneration++;
		InvalidatedSinceStatement = true;
	}
}

/* Role memberships (GRANT triage_user TO ...) or attributes (SUPERUSER) changed */
static void
RolesInvalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	PrivilegeGeneration++;
}

/*
 * The settings, and the invalidation callbacks.  Called once per backend
 * from _PG_init.
 */
void
ModelCacheInit(void)
{
	DefineCustomIntVariable("triage.max_input_bytes",
							"The most bytes of one input that classification and extraction read.",
							"A longer input is read up to this many bytes, cut at a character "
							"boundary, and the rest is ignored, so that one huge row costs no more "
							"than a row of this size and never fails the statement.  The same cut "
							"applies to the text queued for the large model.  Values of 1GB and "
							"more (the longest text value) mean no limit.",
							&MaxInputBytes, 1024 * 1024, 1, INT_MAX, PGC_USERSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("triage.max_tokens",
							"The most tokens of one input that a model reads.",
							"Classification stops reading an input after this many tokens (words "
							"between white space), or earlier if the tokens' input rows (each word, "
							"its character n-grams and word n-grams, which a model's maxn and "
							"wordNgrams multiply) would pass 64 per token allowed; the rest of the "
							"input is ignored.  Extractors read at most the lower of this and the "
							"limit they were trained with (4,096 tokens by default).",
							&MaxTokens, 100000, 1, INT_MAX / FASTTEXT_ROWS_PER_TOKEN - 1,
							PGC_USERSET, 0, NULL, NULL, NULL);
	CacheRegisterRelcacheCallback(ModelStoreInvalidate, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, RolesInvalidate, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, RolesInvalidate, (Datum) 0);
}

/* triage.max_input_bytes, for code that reads inputs without the helpers below */
int32
InputBytesLimit(void)
{
	return Min(MaxInputBytes, (int32) MaxAllocSize);
}

/*
 * Models read text as UTF-8 (fastText's and the extractor's files are
 * UTF-8).  In a database of another encoding, ASCII reads the same; other
 * characters would be read as the wrong bytes and give another answer,
 * silently: an error says so instead.  (SQL_ASCII declares no encoding:
 * its bytes are taken as they are.)
 */
static void
CheckInputEncoding(const char *bytes, int32 len)
{
	int			encoding = GetDatabaseEncoding();

	if (encoding == PG_UTF8 || encoding == PG_SQL_ASCII)
		return;
	for (int32 i = 0; i < len; i++)
		if ((unsigned char) bytes[i] >= 0x80)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("pg_triage reads text as UTF-8, and this database's encoding is %s",
							GetDatabaseEncodingName()),
					 errdetail("The input has characters outside ASCII, which would be read as other characters."),
					 errhint("Use pg_triage in a database created with ENCODING 'UTF8'.")));
}

/*
 * How many of bytes[0..len) are considered: all of them up to
 * triage.max_input_bytes, else that many cut back to a character boundary.
 * bytes is text in the database encoding.
 */
int32
LimitInputLength(const char *bytes, int32 len)
{
	int32		limit = InputBytesLimit();
	int32		cut;

	CheckInputEncoding(bytes, Min(len, limit));
	if (len <= limit)
		return len;
	if (pg_database_encoding_max_length() == 1)
		return limit;
	if (GetDatabaseEncoding() == PG_UTF8)
	{
		/* bytes[limit] is the first left out: it must start a character */
		cut = limit;
		while (cut > 0 && ((unsigned char) bytes[cut] & 0xC0) == 0x80)
			cut--;
		return cut;
	}
	return pg_mbcliplen(bytes, len, limit);
}

/*
 * input as considered: itself when it is within triage.max_input_bytes,
 * else a copy of what is considered.  input may still be toasted (for
 * example PG_GETARG_RAW_VARLENA_P): then only the part considered is
 * fetched and decompressed, so a 300 MB value costs what 1 MB does.
 */
text *
LimitInput(text *input)
{
	int32		limit = InputBytesLimit();
	int32		len;
	int32		cut;
	text	   *result;

	if (VARATT_IS_EXTERNAL(input) || VARATT_IS_COMPRESSED(input))
	{
		/* one byte more than the limit tells whether to cut, and where */
		input = (text *) pg_detoast_datum_slice((struct varlena *) input, 0,
												limit < INT_MAX ? limit + 1 : limit);
	}
	len = VARSIZE_ANY_EXHDR(input);
	cut = LimitInputLength(VARDATA_ANY(input), len);
	if (cut == len)
		return input;
	result = (text *) palloc(cut + VARHDRSZ);
	SET_VARSIZE(result, cut + VARHDRSZ);
	memcpy(VARDATA(result), VARDATA_ANY(input), cut);
	return result;
}

static void
CreateTables(void)
{
	HASHCTL		ctl;

	if (ModelCacheContext == NULL)
		ModelCacheContext = AllocSetContextCreate(CacheMemoryContext, "pg_triage models",
												  ALLOCSET_DEFAULT_SIZES);
	if (ModelTable == NULL)
	{
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(ModelKey);
		ctl.entrysize = sizeof(ModelCacheEntry);
		ctl.hcxt = ModelCacheContext;
		ModelTable = hash_create("pg_triage model cache", 16, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	if (DeploymentTable == NULL)
	{
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(DeploymentEntry);
		ctl.hcxt = ModelCacheContext;
		DeploymentTable = hash_create("pg_triage deployments", 16, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
}

/* At a new statement, read the deployments again if an invalidation came since the last one */
static void
ForgetEarlierStatements(void)
{
	TimestampTz start = GetCurrentStatementStartTimestamp();

	if (MyProc->lxid == SeenLxid && start == SeenStatementStart)
		return;
	if (InvalidatedSinceStatement)
	{
		DeploymentsChanged = true;
		CacheGeneration++;
		InvalidatedSinceStatement = false;
	}
	SeenLxid = MyProc->lxid;
	SeenStatementStart = start;
}

/* Apply pending invalidations: forget deployments, and models if they changed */
static void
ProcessInvalidations(void)
{
	if (ModelsChanged && ModelTable != NULL)
	{
		HASH_SEQ_STATUS status;
		ModelCacheEntry *entry;

		hash_seq_init(&status, ModelTable);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			/* a call still using it frees it when it ends (UnpinModel) */
			if (entry->model->pins > 0)
				entry->model->dropped = true;
			else
				MemoryContextDelete(entry->model->context);
		}
		hash_destroy(ModelTable);
		ModelTable = NULL;
		/* the tables may have been dropped and recreated */
		ModelsRelid = DeploymentsRelid = InvalidOid;
	}
	if (DeploymentsChanged && DeploymentTable != NULL)
	{
		hash_destroy(DeploymentTable);
		DeploymentTable = NULL;
	}
	ModelsChanged = DeploymentsChanged = false;
	CreateTables();

	if (!OidIsValid(ModelsRelid) || !OidIsValid(DeploymentsRelid))
	{
		Oid			nsp = get_namespace_oid(TRIAGE_SCHEMA, true);

		if (OidIsValid(nsp))
		{
			ModelsRelid = get_relname_relid("models", nsp);
			DeploymentsRelid = get_relname_relid("deployments", nsp);
		}
	}
}

static void
CopyModelName(char *dest, const char *name, int len)
{
	if (len >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("model name is too long (%d bytes)", len),
				 errhint("Model names have at most %d bytes.", NAMEDATALEN - 1)));
	memcpy(dest, name, len);
	dest[len] = '\0';
}

/* The deployed version of name, via the deployment map or SPI */
static int32
ResolveDeployment(const char *name)
{
	DeploymentEntry *entry;
	bool		found;
	Datum		arg;
	Oid			argtype = TEXTOID;
	int32		version = 0;
	bool		known = false;
	char		key[NAMEDATALEN];
	OwnSqlSection section;

	/* the map's keys are NUL-padded, so that any PostgreSQL version can hash them */
	memset(key, 0, sizeof(key));
	strlcpy(key, name, NAMEDATALEN);
	entry = hash_search(DeploymentTable, key, HASH_FIND, NULL);
	if (entry != NULL)
		return entry->version;

	arg = CStringGetTextDatum(name);
	/* as the tables' owner: the caller's right to read models was checked */
	BeginOwnSql(&section, TriageOwner());
	if (SPI_execute_with_args("SELECT version FROM triage.deployments "
							  "WHERE name OPERATOR(pg_catalog.=) $1",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read triage.deployments");
	if (SPI_processed == 1)
	{
		bool		isnull;

		version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	else
	{
		/* only to say which error it is */
		if (SPI_execute_with_args("SELECT FROM triage.models WHERE name OPERATOR(pg_catalog.=) $1",
								  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read triage.models");
		known = SPI_processed > 0;
	}
	EndOwnSql(&section);

	if (version == 0 && !known)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" does not exist", name),
				 errhint("Create it with triage.train(), triage.train_extractor() or an import "
						 "function, or list models with SELECT name, version FROM triage.models.")));
	if (version == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" has no deployed version", name),
				 errhint("Deploy one with SELECT triage.deploy('%s', version).", name)));

	entry = hash_search(DeploymentTable, key, HASH_ENTER, &found);
	entry->version = version;
	return version;
}

/* Read (name, version) from triage.models and load it into its own context */
static CachedModel *
LoadModel(const char *name, int32 version)
{
	Datum		args[2];
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	MemoryContext context;
	CachedModel *model;
	bytea	   *data = NULL;
	char	   *kind = NULL;
	Jsonb	   *params = NULL;
	const ClassifierKind *volatile classifier = NULL;
	TriageAllocator allocator;
	TriageStatus status;
	char		errbuf[256];
	float4		temperature = 1.0f;
	OwnSqlSection section;
	const char *what;
	Datum		data_datum = (Datum) 0;
	int64		data_len = 0;
	TimestampTz created = 0;

	args[0] = CStringGetTextDatum(name);
	args[1] = Int32GetDatum(version);

	/*
	 * As the tables' owner, since users need not have SELECT on data (the
	 * caller's right to use models was checked); every name qualified,
	 * though the section pins search_path too.
	 */
	BeginOwnSql(&section, TriageOwner());
	if (SPI_execute_with_args("SELECT kind, data, "
							  "coalesce((metrics OPERATOR(pg_catalog.#>>) "
							  "'{calibration,temperature}')::pg_catalog.float4, 1), params, "
							  "pg_catalog.octet_length(data), created_at "
							  "FROM triage.models "
							  "WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
							  2, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read triage.models");
	if (SPI_processed == 1)
	{
		bool		isnull;

		kind = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		temperature = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		params = DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
		data_len = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
		created = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull));
		/* not read (nor decompressed) yet: a shared file may make it unneeded */
		data_datum = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		if (!isnull)
			data = (bytea *) DatumGetPointer(data_datum);
	}
	if (data == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d does not exist", name, version),
				 errhint("List versions with SELECT version FROM triage.models WHERE name = '%s'.", name)));
	if (strcmp(kind, "crf") != 0)
		classifier = FindClassifierKind(kind, true);
	if (strcmp(kind, "crf") != 0 && classifier == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("model \"%s\" version %d is of kind \"%s\", which pg_triage cannot run",
						name, version, kind)));

	context = AllocSetContextCreate(ModelCacheContext, "pg_triage model", ALLOCSET_DEFAULT_SIZES);
	model = MemoryContextAllocZero(context, sizeof(CachedModel));
	strlcpy(model->name, name, NAMEDATALEN);
	model->version = version;
	model->serial = ++ModelLoads;
	model->kind = classifier == NULL ? MODEL_KIND_EXTRACTOR : MODEL_KIND_CLASSIFIER;
	model->classifier = classifier;
	model->context = context;
	allocator = ContextAllocator(context);
	PG_TRY();
	{
		if (model->kind == MODEL_KIND_EXTRACTOR)
		{
			data = DatumGetByteaPP(data_datum);
			status = CrfLoad((const uint8_t *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data),
							 &allocator, &model->crf, errbuf, sizeof(errbuf));
			if (status != TRIAGE_OK)
				ereport(ERROR,
						(errcode(status == TRIAGE_OUT_OF_MEMORY ? ERRCODE_OUT_OF_MEMORY
								 : ERRCODE_INVALID_BINARY_REPRESENTATION),
						 errmsg("invalid extractor \"%s\" version %d: %s", name, version, errbuf),
						 errhint("Train it again with triage.train_extractor().")));
			CheckCrfFieldNames(model->crf, psprintf("extractor \"%s\" version %d", name, version));
		}
		else
		{
			const uint8 *mapped = NULL;

			what = psprintf("model \"%s\" version %d", name, version);
			if (classifier->load_in_place != NULL && ShareModelFile(data_len))
			{
				mapped = MapModelFile(name, version, created, data_len, context);
				if (mapped == NULL)
				{
					/* the first use on this server: check it, then share it */
					int64		offset;

					data = DatumGetByteaPP(data_datum);
					offset = classifier->shared_offset(data, context);
					if (offset >= 0)
					{
						WriteModelFile(name, version, created, data, offset);
						mapped = MapModelFile(name, version, created, data_len, context);
						/* and the files of versions gone (on a standby, only here) */
						(void) RemoveUnusedModelFiles();
					}
				}
			}
			if (mapped != NULL)
				model->state = classifier->load_in_place(mapped, data_len, params, context, what);
			else
				model->state = classifier->load(DatumGetByteaPP(data_datum), params, context, what);
		}
	}
	PG_CATCH();
	{
		MemoryContextDelete(context);
		PG_RE_THROW();
	}
	PG_END_TRY();
	EndOwnSql(&section);

	if (model->kind == MODEL_KIND_EXTRACTOR)
	{
		CrfWorkspaceInit(&model->crf_workspace, &allocator);
		model->crf_results = MemoryContextAlloc(context, sizeof(CrfResult) * Max(CrfFieldCount(model->crf), 1));
		return model;
	}
	/* fitted by triage.calibrate_temperature(); 1 keeps the model's own probabilities */
	if (temperature > 0 && isfinite(temperature))
		classifier->set_temperature(model->state, temperature);
	model->scratch = classifier->new_scratch(model->state, context);
	model->nlabels = classifier->label_count(model->state);
	model->predictions = MemoryContextAllocExtended(context,
													mul_size(model->nlabels, sizeof(TriagePrediction)),
													MCXT_ALLOC_HUGE);
	return model;
}

/*
 * Error unless the current user may read triage.models: SELECT on the table
 * or on any of its columns (triage_user has every column but the bytes).
 */
static void
CheckUseModels(const char *name)
{
	Oid			userid = GetUserId();

	/*
	 * (Not stored in ModelsRelid: the cache sets both relids together, and
	 * one set alone would leave deployments' invalidations unheard.)
	 */
	Oid			relid = OidIsValid(ModelsRelid) ? ModelsRelid : TriageRelation("models");

	if (pg_class_aclcheck(relid, userid, ACL_SELECT) == ACLCHECK_OK ||
		pg_attribute_aclcheck_all(relid, userid, ACL_SELECT, ACLMASK_ANY) == ACLCHECK_OK)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for model \"%s\"", name),
			 errdetail("Using a model needs SELECT on %s.models.", TRIAGE_SCHEMA),
			 errhint("Grant the role triage_user: GRANT triage_user TO %s;",
					 quote_identifier(GetUserNameFromId(userid, false)))));
}

/*
 * Give back what an input made a model's scratch grow to beyond
 * SCRATCH_KEEP_BYTES.  Between calls only: scratch holds nothing then.
 */
void
TrimModelScratch(CachedModel *model)
{
	size_t		freed;

	if (model->kind == MODEL_KIND_CLASSIFIER)
		freed = model->classifier->trim_scratch(model->state, model->scratch, SCRATCH_KEEP_BYTES);
	else
		freed = CrfWorkspaceTrim(&model->crf_workspace, SCRATCH_KEEP_BYTES);
#ifdef __GLIBC__

	/*
	 * Freed, the memory may still be held: once glibc has given a big block
	 * back to the system, it raises its mmap threshold (up to 32 MB) and keeps
	 * smaller blocks, such as the scratch's doublings, in the heap, which it
	 * shrinks only past a threshold raised the same way.  Ask it to return
	 * the free pages now, so that the backend does not stay tens of
	 * megabytes larger after one big input.
	 */
	if (freed > 0)
		malloc_trim(0);
#else
	(void) freed;
#endif
}

/* Give a pin back (a reset callback): free the model if it was dropped meanwhile */
static void
UnpinModel(void *arg)
{
	ModelPin   *pin = (ModelPin *) arg;
	CachedModel *model = pin->model;

	if (model->pinned_in == pin->context)
		model->pinned_in = NULL;
	Assert(model->pins > 0);
	if (--model->pins > 0)
		return;
	if (model->dropped)
	{
		MemoryContextDelete(model->context);
		return;
	}
	/* no call is using the scratch now: give back what a big input grew */
	TrimModelScratch(model);
}

/*
 * Keep model from being freed until CurrentMemoryContext (the caller's call
 * or row) is reset.  Once per context: a row that looks it up twice, or a
 * loop in one context, holds one pin.
 */
static void
PinModel(CachedModel *model)
{
	ModelPin   *pin;

	if (model->pinned_in == CurrentMemoryContext)
		return;
	pin = MemoryContextAlloc(CurrentMemoryContext, sizeof(ModelPin));
	pin->model = model;
	pin->context = CurrentMemoryContext;
	pin->callback.func = UnpinModel;
	pin->callback.arg = pin;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &pin->callback);
	model->pins++;
	model->pinned_in = CurrentMemoryContext;
}

/* A model about to run: pinned, and with the limits of the settings now */
static CachedModel *
ModelForCall(CachedModel *model)
{
	PinModel(model);
	if (model->kind == MODEL_KIND_CLASSIFIER)
		model->classifier->set_max_tokens(model->scratch, MaxTokens);
	model->crf_workspace.max_tokens = MaxTokens;
	return model;
}

/*
 * The model for (name, version), version 0 meaning the deployed one, through
 * ref: a caller's own slot that remembers the last model it resolved, and
 * for whom, so that later calls cost a few comparisons until something is
 * invalidated.  The model stays valid until CurrentMemoryContext is reset.
 */
CachedModel *
ModelRefLookup(ModelRef *ref, const char *name, int len, int32 version)
{
	ModelKey	key;
	ModelCacheEntry *entry;
	bool		found;
	uint64		privilege_generation = PrivilegeGeneration;

	if (ref->model != NULL && ref->generation == CacheGeneration &&
		ref->userid == GetUserId() && ref->privilege_generation == privilege_generation &&
		ref->version == version && len < NAMEDATALEN &&
		strncmp(ref->name, name, len) == 0 && ref->name[len] == '\0')
		return ModelForCall(ref->model);

	if (version < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model version %d is invalid", version),
				 errhint("Versions start at 1.")));
	ForgetEarlierStatements();
	ProcessInvalidations();
	memset(&key, 0, sizeof(key));
	CopyModelName(key.name, name, len);
	/* before anything that says whether the model exists */
	CheckUseModels(key.name);
	key.version = version > 0 ? version : ResolveDeployment(key.name);

	entry = hash_search(ModelTable, &key, HASH_FIND, NULL);
	if (entry == NULL)
	{
		CachedModel *model = LoadModel(key.name, key.version);

		/* loading ran SPI, which may have processed invalidations */
		ProcessInvalidations();
		entry = hash_search(ModelTable, &key, HASH_ENTER, &found);
		entry->model = model;
	}
	ref->generation = CacheGeneration;
	strlcpy(ref->name, key.name, NAMEDATALEN);
	ref->version = version;
	ref->model = entry->model;
	/* as of before the check: a REVOKE seen since makes the next call check again */
	ref->userid = GetUserId();
	ref->privilege_generation = privilege_generation;
	return ModelForCall(ref->model);
}

/*
 * ModelRefLookup with the ref kept in fcinfo's fn_extra, for later calls
 * from the same call site.
 */
CachedModel *
ModelRefGet(FunctionCallInfo fcinfo, text *name, int32 version)
{
	ModelRef   *ref = (ModelRef *) fcinfo->flinfo->fn_extra;

	if (ref == NULL)
	{
		ref = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ModelRef));
		fcinfo->flinfo->fn_extra = ref;
		/* a new statement: see deployments committed since the last one */
		AcceptInvalidationMessages();
	}
	return ModelRefLookup(ref, VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name), version);
}

PG_FUNCTION_INFO_V1(triage_model_store_changed);

/*
 * Statement-level trigger on triage.models and triage.deployments: make
 * every backend forget what it resolved from them.
 */
Datum
triage_model_store_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("triage_internal.model_store_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	/* versions gone: so are their shared files (model_files.c) */
	if (RelationGetRelid(trigdata->tg_relation) == TriageRelation("models") &&
		(TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) || TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event)))
		(void) RemoveUnusedModelFiles();
	PG_RETURN_POINTER(NULL);
}
