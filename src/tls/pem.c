/*
 * Key material loading (pem.h).
 */
#include "pem.h"

#include <errno.h>
#include <stdio.h>

#include <openssl/pem.h>

bool tls_file_readable(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	fclose(f);
	return true;
}

/* OpenSSL's default for an encrypted key is to prompt on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return 0;
}

EVP_PKEY *tls_read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	fclose(f);
	errno = 0;
	return key;
}
