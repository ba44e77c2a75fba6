/*
 * libFuzzer target for proxy_stage_feed() (src/core/proxy_protocol.c): the
 * PROXY header stage of a connection from a trusted peer, fed read by read
 * as src/session/session.c feeds it, and what it leaves for the next stage
 * (the TLS handshake or the protocol's line reader).
 *
 * Input: a flags byte (bit 0: proxy_protocol = "optional"), then the reads.
 * Each read is a length byte L and its bytes: L < 0x80 is L + 1 bytes that
 * follow; L >= 0x80 is a run of ((L & 0x7f) + 1) * 64 copies of the byte
 * that follows (so reads reach PROXY_HEADER_MAX and a whole block without
 * huge inputs). A read is at most one block, as the stream's reads are.
 *
 * Checked after every read, against everything fed so far (`fed`), with
 * proxy_parse and proxy_detect run on it in one piece:
 *   MORE      every byte is held, in order; the stage had no reason to stop
 *             (the bytes are a prefix of a signature or of a valid header,
 *             within PROXY_HEADER_MAX);
 *   HEADER    proxy_parse of `fed` gives the same length and addresses, and
 *             the buffer holds exactly fed[length..]: no byte after the header
 *             lost, duplicated or reordered, however the reads were split;
 *   NONE      optional only, `fed` does not begin with a signature, and the
 *             buffer holds all of `fed`;
 *   INVALID   `fed` is not a header (proxy_parse -1, or none complete within
 *             PROXY_HEADER_MAX);
 *   OVERFLOW  the bytes for the next stage are more than the block.
 * ASan finds a write beyond the block (the buffer is exactly SY_BLOCK_SIZE).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/pool.h"
#include "switchyard/proxy_protocol.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

#define FED_MAX (4 * SY_BLOCK_SIZE)

static char fed[FED_MAX];

static int same_info(const sy_proxy_info *a, const sy_proxy_info *b)
{
	return a->local == b->local && a->version == b->version &&
	       memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
	       memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	char *block = malloc(SY_BLOCK_SIZE);
	char *read = malloc(SY_BLOCK_SIZE);
	check(block && read);
	sy_proxy_stage ps = {.buf = block, .cap = SY_BLOCK_SIZE, .optional = data[0] & 1};
	size_t nfed = 0, i = 1;
	sy_pstage r = SY_PSTAGE_MORE;
	while (r == SY_PSTAGE_MORE && i < size) {
		uint8_t l = data[i++];
		size_t n;
		if (l & 0x80) {
			if (i >= size)
				break;
			n = ((size_t)(l & 0x7f) + 1) * 64;
			memset(read, data[i++], n);
		} else {
			n = (size_t)l + 1;
			if (n > size - i)
				n = size - i;
			memcpy(read, data + i, n);
			i += n;
		}
		if (nfed + n > FED_MAX)
			break;
		memcpy(fed + nfed, read, n);
		nfed += n;
		bool was_committed = ps.committed;
		sy_proxy_info info;
		memset(&info, 0xa5, sizeof(info));
		r = proxy_stage_feed(&ps, read, n, &info);
		check(!was_committed || ps.committed);
		check(ps.len <= ps.cap);

		int det = proxy_detect((const uint8_t *)fed, nfed < 12 ? nfed : 12);
		size_t plen = nfed < PROXY_HEADER_MAX ? nfed : PROXY_HEADER_MAX;
		sy_proxy_info want;
		memset(&want, 0xa5, sizeof(want));
		int p = proxy_parse((const uint8_t *)fed, plen, &want);
		bool header_expected = !ps.optional || det > 0;
		check(ps.committed == (ps.optional && det > 0));
		switch (r) {
		case SY_PSTAGE_MORE:
			check(ps.len == nfed && memcmp(ps.buf, fed, nfed) == 0);
			if (header_expected)
				check(p == 0 && nfed < PROXY_HEADER_MAX);
			else
				check(det == 0);
			break;
		case SY_PSTAGE_HEADER:
			check(header_expected && p > 0);
			check(same_info(&info, &want));
			check(ps.len == nfed - (size_t)p);
			check(memcmp(ps.buf, fed + p, ps.len) == 0);
			break;
		case SY_PSTAGE_NONE:
			check(ps.optional && det < 0);
			check(ps.len == nfed && memcmp(ps.buf, fed, nfed) == 0);
			break;
		case SY_PSTAGE_INVALID:
			check(header_expected && (p < 0 || (p == 0 && nfed >= PROXY_HEADER_MAX)));
			break;
		case SY_PSTAGE_OVERFLOW:
			/* Only the no-header case can hold more than a block: a
			 * header's leftovers are less than the read that ended it. */
			check(ps.optional && det < 0 && nfed > SY_BLOCK_SIZE);
			break;
		}
	}
	free(block);
	free(read);
	return 0;
}
