/* sy-floor-relay: the floor a proxied IMAP login cannot go below (bench only).
 *
 * Usage: sy-floor-relay LISTEN_PORT BACKEND_PORT   (both on 127.0.0.1)
 *
 * One session at a time, blocking: accept, send the greeting, read the LOGIN
 * line, connect to the backend, read its greeting, write a canned
 * "AUTHENTICATE PLAIN" with the credentials (SASL-IR), read the reply, send the
 * client its tagged reply, then relay both ways with poll() until either side
 * closes. Serial, so it measures CPU per login, not concurrency. Credentials are
 * taken as two atoms without quoting (bench users only).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64enc(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = b64[(v >> 18) & 63];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? b64[v & 63] : '=';
	}
	return o;
}

/* Reads until a line starting with prefix is complete; returns bytes held. */
static ssize_t read_line(int fd, char *buf, size_t cap, const char *prefix)
{
	size_t fill = 0;
	for (;;) {
		ssize_t n = read(fd, buf + fill, cap - 1 - fill);
		if (n <= 0)
			return -1;
		fill += (size_t)n;
		buf[fill] = 0;
		char *p = buf;
		for (char *nl; (nl = strchr(p, '\n')); p = nl + 1)
			if (strncmp(p, prefix, strlen(prefix)) == 0)
				return (ssize_t)fill;
		if (fill >= cap - 1)
			return -1;
	}
}

static void session(int c, struct sockaddr_in *be)
{
	static const char greet[] = "* OK floor ready\r\n";
	char buf[16384], tag[64], user[256], pass[256];
	if (write(c, greet, sizeof(greet) - 1) < 0)
		return;
	if (read_line(c, buf, sizeof(buf), "") < 0)
		return;
	if (sscanf(buf, "%63s LOGIN %255s %255s", tag, user, pass) != 3)
		return;
	int b = socket(AF_INET, SOCK_STREAM, 0);
	if (b < 0)
		return;
	if (connect(b, (struct sockaddr *)be, sizeof(*be)) < 0 ||
	    read_line(b, buf, sizeof(buf), "* ") < 0) {
		close(b);
		return;
	}
	unsigned char plain[600];
	size_t ul = strlen(user), pl = strlen(pass);
	plain[0] = 0;
	memcpy(plain + 1, user, ul);
	plain[1 + ul] = 0;
	memcpy(plain + 2 + ul, pass, pl);
	char cmd[1024];
	int k = snprintf(cmd, sizeof(cmd), "%s AUTHENTICATE PLAIN ", tag);
	k += (int)b64enc(plain, 2 + ul + pl, cmd + k);
	cmd[k++] = '\r';
	cmd[k++] = '\n';
	char want[80];
	snprintf(want, sizeof(want), "%s ", tag);
	ssize_t n;
	if (write(b, cmd, (size_t)k) < 0 || (n = read_line(b, buf, sizeof(buf), want)) < 0 ||
	    write(c, buf, (size_t)n) < 0) {
		close(b);
		return;
	}
	struct pollfd p[2] = {{c, POLLIN, 0}, {b, POLLIN, 0}};
	for (;;) {
		if (poll(p, 2, -1) < 0)
			break;
		int from = (p[0].revents & (POLLIN | POLLHUP | POLLERR)) ? 0 : 1;
		n = read(p[from].fd, buf, sizeof(buf));
		if (n <= 0 || write(p[1 - from].fd, buf, (size_t)n) != n)
			break;
	}
	close(b);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s LISTEN_PORT BACKEND_PORT\n", argv[0]);
		return 2;
	}
	struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
	struct sockaddr_in be = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
	la.sin_addr.s_addr = be.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l < 0 || bind(l, (struct sockaddr *)&la, sizeof(la)) < 0 || listen(l, 1024) < 0) {
		perror("listen");
		return 1;
	}
	for (;;) {
		int c = accept(l, NULL, NULL);
		if (c < 0)
			continue;
		session(c, &be);
		close(c);
	}
}
