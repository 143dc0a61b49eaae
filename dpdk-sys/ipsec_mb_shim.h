/* intel-ipsec-mb (libIPSec_MB) for ESP, behind a few plain C calls so that
 * Rust never sees IMB's job structures. One manager per thread; one key
 * context per SA (immutable once built, shared by all workers). */
#ifndef ESPGW_IPSEC_MB_SHIM_H
#define ESPGW_IPSEC_MB_SHIM_H
#include <stddef.h>
#include <stdint.h>

/* Largest burst espgw_imb_burst accepts. */
#define ESPGW_IMB_MAX_BURST 32

/* Algorithms. */
#define ESPGW_IMB_CBC128_SHA1 0
#define ESPGW_IMB_CBC256_SHA1 1
#define ESPGW_IMB_GCM128 2
#define ESPGW_IMB_GCM256 3
#define ESPGW_IMB_CHACHA20_POLY1305 4

/* Per-packet status. */
#define ESPGW_IMB_OK 0
#define ESPGW_IMB_AUTH_FAILED 1
#define ESPGW_IMB_ERROR 2

/* A thread's multi-buffer manager; NULL if the library cannot run here. */
void *espgw_imb_mgr_new(void);
void espgw_imb_mgr_free(void *mgr);
/* Which code path the library picked (e.g. "AVX512"). */
const char *espgw_imb_arch_name(void *mgr);

/* Key context: expanded AES keys, HMAC ipad/opad digests, GCM hash keys.
 * cbc: key 16/32 bytes + 20-byte HMAC key. gcm: key 16/32 bytes + 4-byte salt
 * (auth_key unused). NULL on bad lengths. Freed (zeroized) by _free. */
void *espgw_imb_sa_new(void *mgr, int alg, const uint8_t *key, size_t key_len, const uint8_t *auth_key,
                       size_t auth_len);
void espgw_imb_sa_free(void *sa);

/* Seal (encrypt=1) or open (encrypt=0) n <= ESPGW_IMB_MAX_BURST ESP packets in
 * place. bufs[i] points at the ESP header, lens[i] runs to the end of the ICV;
 * IV and trailer are in place. seq_hi: ESN high halves (NULL without ESN).
 * The caller has checked the lengths (header + IV + ICV, cipher blocks).
 * status[i]: ESPGW_IMB_OK, _AUTH_FAILED (open) or _ERROR. Returns n. */
uint32_t espgw_imb_burst(void *mgr, const void *sa, int encrypt, uint8_t *const *bufs, const uint32_t *lens,
                         const uint32_t *seq_hi, uint8_t *status, uint32_t n);
#endif
