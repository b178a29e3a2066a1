/*
 * read_file.h
 *		A whole file into memory, for the C tests and tools that load model
 *		files: the bytes (malloc'd, never NULL for an empty file) and their
 *		length, or NULL when the file cannot be read.
 */
#ifndef TRIAGE_TEST_READ_FILE_H
#define TRIAGE_TEST_READ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint8_t *
ReadFile(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	uint8_t    *buf;
	long		n;

	*len = 0;
	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n > 0 ? (size_t) n : 1);
	if (buf != NULL && fread(buf, 1, (size_t) n, f) != (size_t) n)
	{
		free(buf);
		buf = NULL;
	}
	fclose(f);
	if (buf != NULL)
		*len = (size_t) n;
	return buf;
}

#endif
