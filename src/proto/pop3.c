/* Placeholder: the pop3 module is being written. */
#include <stdlib.h>

#include "switchyard/interactive.h"

static int stub_init(sy_ictx *c)
{
	(void)c;
	return 0;
}

static void stub_greet(sy_ictx *c)
{
	ictx_close_after_flush(c);
}

static int stub_line(sy_ictx *c, char *line, size_t len)
{
	(void)c;
	(void)line;
	(void)len;
	return -1;
}

static bool stub_tempfail(sy_ictx *c, const char *text)
{
	(void)c;
	(void)text;
	return true;
}

static void stub_void(sy_ictx *c)
{
	(void)c;
}

static int stub_bline(sy_ictx *c, char *line, size_t len)
{
	(void)c;
	(void)line;
	(void)len;
	return -1;
}

const sy_proto_ops sy_pop3_ops = {
    .proto = SY_PROTO_POP3,
    .name = "pop3",
    .init = stub_init,
    .greet = stub_greet,
    .client_line = stub_line,
    .line_too_long = stub_void,
    .backend_connected = stub_void,
    .backend_line = stub_bline,
    .backend_tls_done = stub_void,
    .tempfail = stub_tempfail,
};
