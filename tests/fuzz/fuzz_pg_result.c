/*
 * libFuzzer target for what the PostgreSQL store makes of libpq's results
 * (src/route/store_sql.c, store_reply.h): the result of a lookup, upsert,
 * delete or pg_notify query (store_sql_answer), the result of LISTEN
 * (store_sql_listen_ok) and a notification's payload
 * (store_sql_notify_payload). The results are built with libpq's public
 * PQmakeEmptyPGresult(NULL, status), PQsetResultAttrs and PQsetvalue, so
 * they carry no command tag and no error fields (PQcmdTuples is "",
 * PQresultErrorMessage ""): those come only from a server.
 *
 * Input: byte 0 = what is converted (bits 0-1: the request, GET, PUT, DEL,
 * PUBLISH; bits 2-3: 0-1 the request's answer, 2 LISTEN, 3 a
 * notification), byte 1 = the result status (any ExecStatusType, and one
 * past the last), byte 2 = columns (0-4), byte 3 = rows (0-4); then per
 * cell a length byte (0xff: SQL NULL) and that many bytes of value (NUL
 * bytes included). For a notification the bytes after byte 0 are the
 * payload (byte 0 & 16: no payload at all).
 *
 * Checks: FOUND only for a lookup whose first cell is set, with the
 * value libpq holds for it, NUL-terminated at the length libpq claims;
 * every error status is an ERROR whose text starts "sql: ", is one line
 * and ends within its buffer; an ERROR never carries a value; NOT_FOUND
 * and DONE carry no text; DONE never answers a lookup; LISTEN succeeds
 * exactly on PGRES_COMMAND_OK and otherwise explains itself in one line;
 * a payload has the length claimed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "../../src/route/store_reply.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

static void check_line(const char *text, const char *prefix, const char *buf, size_t size)
{
	check(text != NULL && strncmp(text, prefix, strlen(prefix)) == 0);
	if (text == buf)
		check(memchr(buf, '\0', size) != NULL);
	check(strpbrk(text, "\r\n") == NULL);
}

static void check_answer(sy_store_op op, const PGresult *res)
{
	ExecStatusType status = PQresultStatus(res);
	const char *text = (const char *)1;
	char ebuf[128];
	sy_store_status st = store_sql_answer(op, res, &text, ebuf, sizeof(ebuf));
	bool rows = status == PGRES_TUPLES_OK || status == PGRES_SINGLE_TUPLE;
	bool ok = rows || status == PGRES_COMMAND_OK;
	if (!ok)
		check(st == SY_STORE_ERROR);
	switch (st) {
	case SY_STORE_FOUND:
		check(op == SY_STORE_OP_GET && rows);
		check(PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0));
		check(text == PQgetvalue(res, 0, 0));
		check(text[PQgetlength(res, 0, 0)] == '\0');
		check(strlen(text) <= (size_t)PQgetlength(res, 0, 0));
		break;
	case SY_STORE_NOT_FOUND:
		check(text == NULL);
		check(op == SY_STORE_OP_GET || op == SY_STORE_OP_DEL);
		if (op == SY_STORE_OP_GET)
			check(rows && (PQntuples(res) == 0 || PQnfields(res) == 0 ||
			               PQgetisnull(res, 0, 0)));
		break;
	case SY_STORE_DONE:
		check(text == NULL && op != SY_STORE_OP_GET && ok);
		break;
	case SY_STORE_ERROR:
		check_line(text, "sql: ", ebuf, sizeof(ebuf));
		check(!(rows && op == SY_STORE_OP_GET));
		break;
	default:
		check(0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static const sy_store_op ops[4] = {SY_STORE_OP_GET, SY_STORE_OP_PUT, SY_STORE_OP_DEL,
	                                   SY_STORE_OP_PUBLISH};
	sy_store_op op = ops[data[0] & 3];
	unsigned mode = (data[0] >> 2) & 3;

	if (mode == 3) {
		char *extra = malloc(size);
		check(extra != NULL);
		memcpy(extra, data + 1, size - 1);
		extra[size - 1] = '\0';
		char relname[] = "switchyard_events";
		PGnotify n = {
		    .relname = relname, .be_pid = 1, .extra = (data[0] & 16) ? NULL : extra};
		size_t len = (size_t)-1;
		const char *p = store_sql_notify_payload(&n, &len);
		if (n.extra)
			check(p == n.extra && len == strlen(p));
		else
			check(p == NULL);
		free(extra);
		return 0;
	}
	if (size < 4)
		return 0;
	ExecStatusType status = (ExecStatusType)(data[1] % (PGRES_PIPELINE_ABORTED + 2));
	int ncols = data[2] % 5, nrows = data[3] % 5;
	size_t pos = 4;

	PGresult *res = PQmakeEmptyPGresult(NULL, status);
	check(res != NULL);
	if (ncols > 0) {
		PGresAttDesc attrs[4];
		char names[4][4];
		for (int i = 0; i < ncols; i++) {
			snprintf(names[i], sizeof(names[i]), "c%d", i);
			attrs[i] = (PGresAttDesc){.name = names[i],
			                          .typid = 25,
			                          .typlen = -1,
			                          .atttypmod = -1,
			                          .format = 0};
		}
		check(PQsetResultAttrs(res, ncols, attrs));
		for (int row = 0; row < nrows; row++) {
			for (int col = 0; col < ncols; col++) {
				if (pos >= size) {
					/* Cells past the input are SQL NULLs. */
					check(PQsetvalue(res, row, col, NULL, -1));
					continue;
				}
				unsigned len = data[pos++];
				if (len == 0xff) {
					check(PQsetvalue(res, row, col, NULL, -1));
					continue;
				}
				if (len > size - pos)
					len = (unsigned)(size - pos);
				check(PQsetvalue(res, row, col, (char *)data + pos, (int)len));
				pos += len;
			}
		}
	}
	if (mode == 2) {
		char err[96];
		bool ok = store_sql_listen_ok(res, err, sizeof(err));
		check(ok == (status == PGRES_COMMAND_OK));
		if (!ok)
			check_line(err, "LISTEN failed: ", err, sizeof(err));
	} else {
		check_answer(op, res);
	}
	PQclear(res);
	return 0;
}
