/*
 * The machinery shared by the interactive protocols (IMAP, POP3, ManageSieve,
 * submission): line readers on both legs, STARTTLS on both legs, routing,
 * dialing, the authentication replay driver, and the hand-off to the bridge.
 *
 * A protocol is a table of functions (sy_proto_ops). The framework calls the
 * table; the table calls back into the ictx_* functions below. Each protocol
 * keeps its own state in ictx->p, allocated in ops->init and released in
 * ops->release.
 *
 * Life of a login:
 *   greet -> client_line* -> [ictx_client_starttls -> client_tls_done]
 *   -> ictx_authenticate(creds) -> (route, dial, PROXY header, implicit TLS)
 *   -> backend_connected -> backend_line* -> [ictx_backend_starttls ->
 *   backend_tls_done -> backend_line*] -> ictx_auth_ok (bridge) or
 *   ictx_auth_failed (back to client_line) or ictx_tempfail.
 */
#ifndef SWITCHYARD_INTERACTIVE_H
#define SWITCHYARD_INTERACTIVE_H

#include <stdbool.h>
#include <stddef.h>

#include "switchyard/sasl.h"
#include "switchyard/session.h"

/* The longest line either leg may send before login, including literals
 * folded into an IMAP command; a bearer token of 16 KiB fits with room. */
#define SY_LINE_MAX (SY_BLOCK_SIZE - 1)

typedef struct sy_ictx sy_ictx;

typedef enum sy_ictx_state {
	IC_PREAUTH,    /* reading client commands */
	IC_CLIENT_TLS, /* client STARTTLS handshake */
	IC_ROUTING,    /* waiting for the route */
	IC_BACKEND,    /* dialing, handshake and replay */
	IC_CLOSING,    /* flushing a last reply before close */
	IC_BRIDGED,
} sy_ictx_state;

extern const char *const sy_ictx_state_names[];

/* What client_line asks of the reader: SY_LINE_OK (line consumed),
 * SY_LINE_CLOSE, or SY_LINE_LITERAL(n): the line ends with a literal
 * announcement of n bytes (n may be 0); append them and the rest of the
 * command, then call again with the whole (the module has already sent a
 * continuation if one is needed). */
#define SY_LINE_OK         0
#define SY_LINE_CLOSE      (-1)
#define SY_LINE_LITERAL(n) ((int)(n) + 1)

typedef struct sy_proto_ops {
	sy_proto proto;
	const char *name;
	/* Allocates ctx->p. Returns 0 or -1. */
	int (*init)(sy_ictx *c);
	void (*release)(sy_ictx *c);
	/* Sends the greeting. */
	void (*greet)(sy_ictx *c);
	/* One client line (no CRLF; may contain folded literals and NULs) in
	 * IC_PREAUTH. Returns SY_LINE_OK, a literal size (> 0), or -1 to close
	 * at once. */
	int (*client_line)(sy_ictx *c, char *line, size_t len);
	/* The client STARTTLS finished (ManageSieve re-sends capabilities). May be NULL. */
	void (*client_tls_done)(sy_ictx *c);
	/* A too-long line arrived: send the protocol's error (the session then closes). */
	void (*line_too_long)(sy_ictx *c);
	/* The backend leg is connected (after PROXY header and implicit TLS). */
	void (*backend_connected)(sy_ictx *c);
	/* One backend line (no CRLF) during handshake and replay. Returns 0, or
	 * -1 when the backend misbehaved (framework sends tempfail). */
	int (*backend_line)(sy_ictx *c, char *line, size_t len);
	/* Backend STARTTLS finished. */
	void (*backend_tls_done)(sy_ictx *c);
	/* Sends the protocol's temporary-failure reply for the command being
	 * served. Returns true if the connection must close afterwards. */
	bool (*tempfail)(sy_ictx *c, const char *text);
	/* Sends the reply for exceeding max_auth_attempts (before close). May be NULL. */
	void (*too_many_failures)(sy_ictx *c);
	/* Process is shutting down while the client is in pre-auth. May be NULL. */
	void (*shutdown_notice)(sy_ictx *c);
	/* preauth_timeout passed: the protocol's goodbye before the close. May be NULL. */
	void (*timeout_notice)(sy_ictx *c);
} sy_proto_ops;

extern const sy_proto_ops sy_imap_ops, sy_pop3_ops, sy_sieve_ops, sy_submission_ops;

struct sy_ictx {
	sy_session *s;
	const sy_proto_ops *ops;
	const sy_caps_config *caps;
	sy_ictx_state state;
	bool client_tls; /* the client leg is encrypted */
	bool backend_tls;
	unsigned auth_failures;
	uint64_t preauth_deadline; /* loop time */

	/* Client line reader: a pool block only while a partial line is held. */
	char *cbuf;
	size_t clen;
	size_t cscan;       /* bytes already scanned for the end of line */
	size_t literal_end; /* while > 0: raw literal bytes run up to here */
	bool paused;        /* a command is being served asynchronously */
	bool processing;    /* inside process_client(): no re-entry */
	/* Offset in the line passed to client_line where the text after the
	 * last folded literal starts (0 when the line has no literal). */
	size_t seg_start;

	/* Backend line reader. */
	char *bbuf;
	size_t blen;

	sy_credentials creds;       /* only between ictx_authenticate and the verdict */
	char *identifier;           /* routing identifier of the login in progress */
	struct sy_route_req *route; /* routing in progress (cancelled if the login ends) */
	void *p;                    /* protocol state */
};

/* ---- for protocol modules --------------------------------------------------- */

/* Queues bytes to the client / backend (errors surface as a read error). */
void ictx_send(sy_ictx *c, const void *data, size_t len);
/* ictx_send for a string literal, its length counted by the compiler. */
#define ictx_send_lit(c, lit) ictx_send((c), (lit), sizeof(lit) - 1)
void ictx_sendf(sy_ictx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ictx_backend_send(sy_ictx *c, const void *data, size_t len);
void ictx_backend_sendf(sy_ictx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Whether PLAIN/LOGIN and IMAP LOGIN / POP3 USER-PASS are allowed now. */
bool ictx_plaintext_auth_allowed(const sy_ictx *c);
/* May the client use mechanism m? LOGIN always (accepted though never
 * advertised), the others when [capabilities] sasl lists them. */
bool ictx_mech_accepted(const sy_ictx *c, sy_mech m);
/* The mechanisms to advertise now, in configured order without repeats:
 * never LOGIN, PLAIN only while cleartext authentication is allowed.
 * Returns how many were written to out (at most SY_MECH_UNKNOWN). */
size_t ictx_mechs_advertised(const sy_ictx *c, sy_mech out[SY_MECH_UNKNOWN]);
/* An authentication exchange the module refused itself (malformed SASL,
 * bad base64, empty credentials) counts toward max_auth_attempts like a
 * failed login: guessing tools probe that way too. At the limit the
 * protocol's ops->too_many_failures reply is sent and the connection closes
 * after it; returns true then. */
bool ictx_count_failure(sy_ictx *c);

/* Whether STARTTLS should be offered now (starttls listener, not yet TLS). */
bool ictx_starttls_available(const sy_ictx *c);

/* Call right after queueing the protocol's "go ahead" reply: anything the
 * client pipelined after the STARTTLS command is discarded and the TLS
 * handshake begins. */
void ictx_client_starttls(sy_ictx *c);

/*
 * Starts a login with the decoded credentials (ownership moves to the
 * framework, which wipes them). The reader pauses; the framework extracts the
 * identifier, routes, dials and calls ops->backend_connected, or replies with
 * ops->tempfail.
 */
void ictx_authenticate(sy_ictx *c, sy_credentials *creds);

/* The destination of the login in progress. */
const sy_destination_config *ictx_destination(const sy_ictx *c);
/* Effective forwarding for this leg. */
sy_forwarding ictx_forwarding(const sy_ictx *c);
/* The backend leg's TLS mode (implicit, starttls or plain). */
sy_tls_mode ictx_backend_tls_mode(const sy_ictx *c);
/* May credentials be sent on the backend leg now? (encrypted, or a plain leg
 * with allow_plaintext_auth). */
bool ictx_backend_may_send_credentials(const sy_ictx *c);
/*
 * Builds the replay message for the stored credentials: *mech_out and a
 * malloc'd base64 string (wipe with sy_secure_free(b64, strlen(b64))).
 * Every replay goes through here, so this is where the rule "credentials
 * only on an encrypted leg, or a plain one with allow_plaintext_auth" is
 * enforced: when they may not be sent (or the message cannot be built) the
 * login gets the temporary failure and -1 is returned; the caller just
 * returns.
 */
int ictx_replay_b64(sy_ictx *c, sy_mech *mech_out, char **b64_out);

/* Upgrades the backend leg after its STARTTLS go-ahead; discards anything
 * the backend sent after it. Calls ops->backend_tls_done or tempfails. */
void ictx_backend_starttls(sy_ictx *c);

/* Forwarding facts for XCLIENT / ID. */
typedef struct sy_fwd_info {
	char client_ip[64], client_port[16];
	char local_ip[64], local_port[16];
	char session[24];
	char ttl[16];
	bool client_ipv6;
	const char *transport; /* "TLS" or "insecure" */
	const char *helo;      /* submission: the client's EHLO name or NULL */
} sy_fwd_info;
void ictx_fwd_info(const sy_ictx *c, sy_fwd_info *out);

/*
 * The backend accepted the login. `reply` (one or more complete lines with
 * CRLF) goes to the client, credentials are wiped, and the session becomes a
 * bridge. Bytes either side sent after the exchange are passed on.
 */
void ictx_auth_ok(sy_ictx *c, const char *reply, size_t len);

/*
 * The backend refused the login. `reply` is the backend's reply rewritten for
 * the client (complete lines with CRLF); `generic` replaces it when the
 * destination has hide_auth_errors. The backend leg is closed; the client
 * may retry until max_auth_attempts.
 */
void ictx_auth_failed(sy_ictx *c, const char *reply, size_t len, const char *generic);

/* Backend unavailable (or misbehaving): ops->tempfail with a short text, the
 * backend leg closed, `reason` logged. */
void ictx_tempfail(sy_ictx *c, const char *reason);

/* Sends nothing more; closes once queued output is flushed. */
void ictx_close_after_flush(sy_ictx *c);

/* ---- for the session ----------------------------------------------------------- */

/* The process is shutting down: a session still before login gets the
 * protocol's notice (IMAP BYE, submission 421, ...) and is closed; logins
 * with the backend and bridged sessions carry on and drain. */
void interactive_shutdown(sy_session *s);
/* Releases protocol state (called from session close). */
void interactive_release(sy_session *s);

#endif
