/*
 * Key material loading shared by the inbound and backend TLS contexts
 * (private to src/tls/).
 */
#ifndef SWITCHYARD_TLS_PEM_H
#define SWITCHYARD_TLS_PEM_H

#include <stdbool.h>

#include <openssl/evp.h>

/* Whether `path` can be opened for reading. Checked before OpenSSL reads a
 * file, so an unreadable file is reported with errno's text rather than
 * OpenSSL's less helpful "system lib". */
bool tls_file_readable(const char *path);

/* Reads a PEM private key, never prompting for a passphrase (an encrypted
 * key simply fails to load). NULL with errno set when the file cannot be
 * opened, NULL with errno 0 when it holds no usable key. */
EVP_PKEY *tls_read_key(const char *path);

#endif
