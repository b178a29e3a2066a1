/*
 * model_files.c
 *		One copy of a large model per server: its stored bytes written once
 *		to a file under the data directory, and mapped read-only by every
 *		backend (and parallel worker) that uses it, so that the operating
 *		system keeps one copy of its pages for all of them.
 *
 * Design note.  A stored version never changes (triage.models is immutable
 * but for metrics, and version numbers are never reused), so a file named
 * by the database, the name, the version and the version's created_at
 * stays right for as long as the version exists; created_at tells a
 * version apart from one of the same number in a recreated extension.  The
 * first backend to need a file writes it under a temporary name and
 * renames it into place, so that no backend ever maps a partial file; a
 * crash leaves at most a temporary file, removed with the others by
 * RemoveUnusedModelFiles.  The file holds a header, padding, then the
 * stored bytes, laid out so that the model's large float matrix starts on
 * a 64-byte boundary of the mapping and can be read in place
 * (FastTextLoadInPlace).  Every load still parses and checks the file's
 * structure, as for any stored model (the dictionary, sizes, offsets): only
 * the large matrix is read where it lies instead of copied.  The header
 * names the version it holds, so a file is never taken for another
 * version's.  Files are not WAL-logged: a standby builds its own.
 *
 * Only models of at least triage.shared_model_min_bytes are shared this
 * way: a small model costs less to copy than to map.
 */
#include "postgres.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog/pg_type.h"
#include "common/file_perm.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/memutils.h"

#include "triage.h"

#define MODEL_FILES_DIR "pg_triage"
#define MODEL_FILE_MAGIC "pg_triage model"
#define MODEL_FILE_FORMAT 1
#define MODEL_FILE_ALIGN 64

typedef struct ModelFileHeader
{
	char		magic[16];
	uint32		format;
	uint32		padding;		/* bytes between the header and the model */
	uint64		length;			/* of the model's bytes */
	Oid			database;
	int32		version;
	int64		created;		/* created_at, in microseconds since 2000 */
	char		name[NAMEDATALEN];
} ModelFileHeader;

typedef struct ModelMapping
{
	MemoryContextCallback callback;
	void	   *base;
	size_t		length;
} ModelMapping;

static int	SharedModelMinBytes = 16 * 1024 * 1024;

void
ModelFilesInit(void)
{
	DefineCustomIntVariable("triage.shared_model_min_bytes",
							"Models at least this large are mapped from one shared file per server.",
							"Such a model is written once to a file under the data directory "
							"(pg_triage/) and every backend maps it read-only, so that the server "
							"holds one copy of it instead of one per connection, and a new "
							"connection's first use does not read it from the table.  -1 disables "
							"sharing: every backend loads its own copy.",
							&SharedModelMinBytes, 16 * 1024 * 1024, -1, INT_MAX,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
}

/* Whether a model of len bytes is shared through a file */
bool
ShareModelFile(int64 len)
{
	return SharedModelMinBytes >= 0 && len >= SharedModelMinBytes;
}

/* Model names are checked when stored; file names take only the safe ones */
static bool
SafeFileName(const char *name)
{
	if (name[0] == '\0' || name[0] == '.')
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-'))
			return false;
	return true;
}

static char *
ModelFilePath(const char *name, int32 version, int64 created)
{
	return psprintf("%s/%u.%s.%d.%lld", MODEL_FILES_DIR, MyDatabaseId, name, version,
					(long long) created);
}

static void
UnmapModelFile(void *arg)
{
	ModelMapping *mapping = arg;

	munmap(mapping->base, mapping->length);
}

/*
 * The model's bytes from its file, mapped until context is deleted, and
 * their length in *len; NULL if there is no such file (or it is not one we
 * wrote for this version).
 */
const uint8 *
MapModelFile(const char *name, int32 version, int64 created, int64 expected_len,
			 MemoryContext context)
{
	char	   *path;
	int			fd;
	struct stat st;
	void	   *base;
	ModelFileHeader header;
	ModelMapping *mapping;

	if (!SafeFileName(name))
		return NULL;
	path = ModelFilePath(name, version, created);
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		if (errno != ENOENT)
			ereport(WARNING,
					(errcode_for_file_access(),
					 errmsg("could not open shared model file \"%s\": %m", path)));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || st.st_size < (off_t) sizeof(ModelFileHeader))
	{
		CloseTransientFile(fd);
		return NULL;
	}
	base = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	CloseTransientFile(fd);
	if (base == MAP_FAILED)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not map shared model file \"%s\": %m", path)));
		return NULL;
	}
	memcpy(&header, base, sizeof(header));
	if (memcmp(header.magic, MODEL_FILE_MAGIC, sizeof(MODEL_FILE_MAGIC)) != 0 ||
		header.format != MODEL_FILE_FORMAT || header.database != MyDatabaseId ||
		header.version != version || header.created != created ||
		strncmp(header.name, name, NAMEDATALEN) != 0 ||
		(int64) header.length != expected_len ||
		(uint64) st.st_size != sizeof(header) + header.padding + header.length)
	{
		munmap(base, st.st_size);
		ereport(WARNING,
				(errmsg("shared model file \"%s\" does not hold model \"%s\" version %d; loading it from the table",
						path, name, version)));
		return NULL;
	}
	mapping = MemoryContextAlloc(context, sizeof(ModelMapping));
	mapping->base = base;
	mapping->length = st.st_size;
	mapping->callback.func = UnmapModelFile;
	mapping->callback.arg = mapping;
	MemoryContextRegisterResetCallback(context, &mapping->callback);
	return (const uint8 *) base + sizeof(header) + header.padding;
}

/*
 * Write data as the shared file of (name, version, created), padded so that
 * byte aligned_offset of data lands on a MODEL_FILE_ALIGN boundary of the
 * file (and so of its mapping).  Another backend may be writing it too: the
 * rename makes one of the two complete files the file.  Errors are
 * WARNINGs: without the file, the model is loaded from the table.
 */
void
WriteModelFile(const char *name, int32 version, int64 created, const bytea *data,
			   int64 aligned_offset)
{
	char	   *path;
	char	   *temp;
	int			fd;
	ModelFileHeader header;
	char		zeros[MODEL_FILE_ALIGN] = {0};
	size_t		len = VARSIZE_ANY_EXHDR(data);

	if (!SafeFileName(name))
		return;
	if (MakePGDirectory(MODEL_FILES_DIR) < 0 && errno != EEXIST)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", MODEL_FILES_DIR)));
		return;
	}
	path = ModelFilePath(name, version, created);
	temp = psprintf("%s.tmp.%d", path, MyProcPid);

	memset(&header, 0, sizeof(header));
	memcpy(header.magic, MODEL_FILE_MAGIC, sizeof(MODEL_FILE_MAGIC));
	header.format = MODEL_FILE_FORMAT;
	header.padding = (MODEL_FILE_ALIGN - (sizeof(header) + aligned_offset) % MODEL_FILE_ALIGN)
		% MODEL_FILE_ALIGN;
	header.length = len;
	header.database = MyDatabaseId;
	header.version = version;
	header.created = created;
	strlcpy(header.name, name, NAMEDATALEN);

	fd = OpenTransientFile(temp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not create shared model file \"%s\": %m", temp)));
		return;
	}
	if (write(fd, &header, sizeof(header)) != sizeof(header) ||
		write(fd, zeros, header.padding) != (ssize_t) header.padding)
		goto failed;
	for (size_t done = 0; done < len;)
	{
		ssize_t		n = write(fd, VARDATA_ANY(data) + done, Min(len - done, (size_t) 1 << 30));

		if (n <= 0)
			goto failed;
		done += n;
		CHECK_FOR_INTERRUPTS();
	}
	if (CloseTransientFile(fd) != 0)
	{
		fd = -1;
		goto failed;
	}
	if (rename(temp, path) != 0)
	{
		fd = -1;
		goto failed;
	}
	return;

failed:
	ereport(WARNING,
			(errcode_for_file_access(),
			 errmsg("could not write shared model file \"%s\": %m", temp)));
	if (fd >= 0)
		CloseTransientFile(fd);
	unlink(temp);
}

/*
 * Remove this database's shared model files whose version is no longer in
 * triage.models (deleted, or from a dropped extension), and temporary files
 * of writers that are gone.  Called after deletes from triage.models, and
 * whenever a new file is built (a standby replays the deletes but runs no
 * trigger); a delete that rolls back only costs a rebuild of the file at
 * the next use.
 * Returns the number of files removed.
 */
int
RemoveUnusedModelFiles(void)
{
	DIR		   *dir;
	struct dirent *de;
	char		prefix[32];
	int			removed = 0;
	OwnSqlSection section;

	snprintf(prefix, sizeof(prefix), "%u.", MyDatabaseId);
	dir = AllocateDir(MODEL_FILES_DIR);
	if (dir == NULL)
		return 0;				/* no file was ever written */
	/* (not read-only: a fresh snapshot, which sees the delete that called us) */
	BeginOwnSql(&section, TriageOwner());
	while ((de = ReadDirExtended(dir, MODEL_FILES_DIR, LOG)) != NULL)
	{
		char	   *file = de->d_name;
		char	   *copy;
		char	   *tmp;
		char	   *dot;
		char	   *name;
		long long	created;
		int			version;
		bool		keep = false;

		if (strncmp(file, prefix, strlen(prefix)) != 0)
			continue;
		copy = pstrdup(file + strlen(prefix));
		if ((tmp = strstr(copy, ".tmp.")) != NULL)
		{
			/* a writer's temporary file: only once the writer is gone */
			int			pid = atoi(tmp + 5);

			keep = pid > 0 && kill(pid, 0) == 0;
		}
		else if ((dot = strrchr(copy, '.')) != NULL &&
				 sscanf(dot + 1, "%lld", &created) == 1)
		{
			*dot = '\0';
			if ((dot = strrchr(copy, '.')) != NULL && sscanf(dot + 1, "%d", &version) == 1)
			{
				Datum		args[3];
				Oid			types[3] = {TEXTOID, INT4OID, TIMESTAMPTZOID};

				*dot = '\0';
				name = copy;
				args[0] = CStringGetTextDatum(name);
				args[1] = Int32GetDatum(version);
				args[2] = TimestampTzGetDatum((TimestampTz) created);
				if (SPI_execute_with_args("SELECT FROM triage.models WHERE name OPERATOR(pg_catalog.=) $1 "
										  "AND version OPERATOR(pg_catalog.=) $2 "
										  "AND created_at OPERATOR(pg_catalog.=) $3",
										  3, types, args, NULL, false, 1) != SPI_OK_SELECT)
					elog(ERROR, "could not read triage.models");
				keep = SPI_processed > 0;
			}
		}
		if (!keep)
		{
			char	   *path = psprintf("%s/%s", MODEL_FILES_DIR, file);

			if (unlink(path) == 0)
				removed++;
			else if (errno != ENOENT)
				ereport(WARNING,
						(errcode_for_file_access(),
						 errmsg("could not remove shared model file \"%s\": %m", path)));
		}
	}
	EndOwnSql(&section);
	FreeDir(dir);
	return removed;
}
