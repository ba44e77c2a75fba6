/* sy-floor-relay: the floor a proxied IMAP login cannot go below (bench only).
 *
 * Usage: sy-floor-relay [--tls CERT KEY [--tickets]] LISTEN_PORT BACKEND_PORT
 *        (both ports on 127.0.0.1)
 *
 * One session at a time, blocking: accept, send the greeting, read the LOGIN
 * line, connect to the backend, read its greeting, write a canned
 * "AUTHENTICATE PLAIN" with the credentials (SASL-IR), read the reply, send the
 * client its tagged reply, then relay both ways with poll() until either side
 * closes. Serial, so it measures CPU per login, not concurrency. Credentials are
 * taken as two atoms without quoting (bench users only).
 *
 * --tls: implicit TLS on the client leg, the least OpenSSL needs: one
 * SSL_CTX, a blocking SSL_accept on the socket, then the same steps with
 * SSL_read/SSL_write on the client side (the backend leg stays plain). No
 * session cache and no session tickets (SSL_CTX_set_num_tickets 0), since a
 * login without resumption needs neither; --tickets sends OpenSSL's default
 * two TLS 1.3 tickets per handshake, as the proxies do by default.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

/* The client leg: a socket, with TLS on it when ssl is set. */
struct conn {
	int fd;
	SSL *ssl;
};

static ssize_t conn_read(struct conn *c, char *buf, size_t n)
{
	if (!c->ssl)
		return read(c->fd, buf, n);
	int r = SSL_read(c->ssl, buf, (int)n);
	return r > 0 ? r : -1;
}

static ssize_t conn_write(struct conn *c, const char *buf, size_t n)
{
	if (!c->ssl)
		return write(c->fd, buf, n);
	int r = SSL_write(c->ssl, buf, (int)n);
	return r > 0 ? r : -1;
}

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
static ssize_t read_line(struct conn *c, char *buf, size_t cap, const char *prefix)
{
	size_t fill = 0;
	for (;;) {
		ssize_t n = conn_read(c, buf + fill, cap - 1 - fill);
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

static void session(struct conn *c, struct sockaddr_in *be)
{
	static const char greet[] = "* OK floor ready\r\n";
	char buf[16384], tag[64], user[256], pass[256];
	if (c->ssl && SSL_accept(c->ssl) != 1)
		return;
	if (conn_write(c, greet, sizeof(greet) - 1) < 0)
		return;
	if (read_line(c, buf, sizeof(buf), "") < 0)
		return;
	if (sscanf(buf, "%63s LOGIN %255s %255s", tag, user, pass) != 3)
		return;
	int b = socket(AF_INET, SOCK_STREAM, 0);
	if (b < 0)
		return;
	struct conn bc = {b, NULL};
	if (connect(b, (struct sockaddr *)be, sizeof(*be)) < 0 ||
	    read_line(&bc, buf, sizeof(buf), "* ") < 0) {
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
	if (write(b, cmd, (size_t)k) < 0 || (n = read_line(&bc, buf, sizeof(buf), want)) < 0 ||
	    conn_write(c, buf, (size_t)n) < 0) {
		close(b);
		return;
	}
	struct pollfd p[2] = {{c->fd, POLLIN, 0}, {b, POLLIN, 0}};
	struct conn *side[2] = {c, &bc};
	for (;;) {
		int from;
		if (c->ssl && SSL_pending(c->ssl) > 0) {
			from = 0; /* plaintext OpenSSL already holds */
		} else {
			if (poll(p, 2, -1) < 0)
				break;
			from = (p[0].revents & (POLLIN | POLLHUP | POLLERR)) ? 0 : 1;
		}
		n = conn_read(side[from], buf, sizeof(buf));
		if (n <= 0 || conn_write(side[1 - from], buf, (size_t)n) != n)
			break;
	}
	close(b);
}

int main(int argc, char **argv)
{
	SSL_CTX *ctx = NULL;
	if (argc >= 4 && strcmp(argv[1], "--tls") == 0) {
		ctx = SSL_CTX_new(TLS_server_method());
		if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1) {
			fprintf(stderr, "cannot load %s / %s\n", argv[2], argv[3]);
			return 1;
		}
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		argv += 3;
		argc -= 3;
		if (argc >= 2 && strcmp(argv[1], "--tickets") == 0) {
			argv++;
			argc--;
		} else {
			SSL_CTX_set_num_tickets(ctx, 0);
			SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		}
	}
	if (argc != 3) {
		fprintf(stderr, "usage: %s [--tls CERT KEY [--tickets]] LISTEN_PORT BACKEND_PORT\n",
		        argv[0]);
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
		int fd = accept(l, NULL, NULL);
		if (fd < 0)
			continue;
		struct conn c = {fd, NULL};
		/* TLS writes back to back (the handshake flight, then tickets or the
		 * greeting): without TCP_NODELAY Nagle holds the second one for the
		 * peer's delayed ACK. */
		if (ctx)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (ctx && (!(c.ssl = SSL_new(ctx)) || SSL_set_fd(c.ssl, fd) != 1)) {
			SSL_free(c.ssl);
			close(fd);
			continue;
		}
		session(&c, &be);
		SSL_free(c.ssl);
		close(fd);
	}
}
