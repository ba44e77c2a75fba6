/*
 * The line readers of the interactive framework, without I/O: the client
 * reader (lines split across reads, IMAP/ManageSieve literals folded into
 * the logical line, seg_start, the SY_LINE_MAX cap, the buffer dropped at
 * STARTTLS) and the backend line splitter.
 *
 * They work on the reader fields of sy_ictx (cbuf, clen, cscan,
 * literal_end, seg_start; bbuf, blen), borrow their buffers from the pool
 * they are given (a block only while bytes are held, returned as soon as
 * the buffer is empty) and hand complete lines to the module through
 * c->ops->client_line and c->ops->backend_line. Everything else is the
 * caller's: what a result means (a log line, the module's error reply, a
 * close or a temporary failure), sockets and timers. They call no ictx_*
 * function, so src/proto/interactive.c, the fuzz test session
 * (tests/fuzz/proto_driver.h) and tests/unit/test_ireader.c run the same
 * code.
 *
 * Private to src/proto/interactive.c (the fuzz driver and the unit test
 * include it by path).
 */
#ifndef SWITCHYARD_IREADER_H
#define SWITCHYARD_IREADER_H

#include <stddef.h>

#include "switchyard/interactive.h"
#include "switchyard/pool.h"

typedef enum sy_iread {
	SY_IREAD_OK,        /* nothing for the caller to do */
	SY_IREAD_IGNORED,   /* not reading in this state: the bytes were not taken */
	SY_IREAD_NOMEM,     /* no block for the bytes: nothing was taken */
	SY_IREAD_TOO_LONG,  /* a line (with its literals) reached SY_LINE_MAX */
	SY_IREAD_CLOSE,     /* client_line returned SY_LINE_CLOSE */
	SY_IREAD_BAD_REPLY, /* backend_line refused a line */
} sy_iread;

/*
 * Appends n bytes the client sent, in any state that keeps client bytes
 * (pre-auth, and while a login is routed or with the backend: those bytes
 * follow the login to the bridge). Returns SY_IREAD_OK (taken: run
 * ireader_client_lines next), SY_IREAD_IGNORED (another state: dropped),
 * SY_IREAD_NOMEM, or SY_IREAD_TOO_LONG (the held bytes would pass
 * SY_LINE_MAX; nothing taken).
 */
sy_iread ireader_client_append(sy_ictx *c, sy_pool *pool, const char *data, size_t n);

/*
 * Hands the complete lines held to c->ops->client_line while the module is
 * ready for them (IC_PREAUTH, not paused, the session not closing). A line
 * is passed without its LF, and without the CR before it unless that CR is
 * the last byte of a folded literal; it is NUL-terminated in place and may
 * hold NULs. When client_line asks for a literal (SY_LINE_LITERAL(n)), the
 * line stays (with its line end), n raw bytes and the rest of the command
 * are appended, and the whole is passed again with c->seg_start at the text
 * after the literal. A consumed line is wiped; the block goes back to the
 * pool when the buffer empties, or when the module dropped it
 * (ireader_client_drop from inside client_line). Returns SY_IREAD_OK (wants
 * more bytes, or the module paused), SY_IREAD_TOO_LONG (no line end within
 * SY_LINE_MAX, or a literal that would pass it) or SY_IREAD_CLOSE.
 * Not re-entrant: the caller marks c->processing around it.
 */
sy_iread ireader_client_lines(sy_ictx *c, sy_pool *pool);

/* Discards every client byte held (STARTTLS: whatever the client pipelined
 * after the command is an injection attempt) and resets the reader. */
void ireader_client_drop(sy_ictx *c, sy_pool *pool);

/*
 * Appends n bytes the backend sent while a login is with it (IC_BACKEND;
 * otherwise SY_IREAD_IGNORED) and hands each complete line to
 * c->ops->backend_line (without CR LF, NUL-terminated, a copy that is wiped
 * after the call). A line is consumed before the call, so a verdict given
 * from inside it (ictx_auth_ok) finds only the bytes that follow in c->bbuf.
 * Stops at the first line the module refuses (SY_IREAD_BAD_REPLY), or when
 * the login ends or the module dropped the buffer. Returns SY_IREAD_OK,
 * SY_IREAD_IGNORED, SY_IREAD_NOMEM, SY_IREAD_TOO_LONG (more than SY_LINE_MAX
 * held; nothing taken) or SY_IREAD_BAD_REPLY.
 */
sy_iread ireader_backend_read(sy_ictx *c, sy_pool *pool, const char *data, size_t n);

/* Discards every backend byte held (after the backend's STARTTLS go-ahead,
 * and when the backend leg is dropped). */
void ireader_backend_drop(sy_ictx *c, sy_pool *pool);

/*
 * The bridge hand-off, when the backend accepted the login: what the backend
 * sent after its verdict line (c->bbuf) goes to to_client, then what the
 * client sent after the last line the module took (c->cbuf: commands
 * pipelined behind the login, which the module never saw) goes to
 * to_backend; each sink is called only for a non-empty rest. Both blocks go
 * back to the pool and the reader is reset. A sink may close the session:
 * the other is called all the same (its stream then refuses the bytes).
 */
typedef void (*sy_ireader_sink)(void *arg, const char *data, size_t n);
void ireader_handoff(sy_ictx *c, sy_pool *pool, sy_ireader_sink to_client,
                     sy_ireader_sink to_backend, void *arg);

#endif
