/* See ipsec_mb_shim.h. ESP wire layout from the ESP header:
 *   SPI(4) Seq(4) | IV (16 CBC, 8 GCM) | ciphertext | ICV (12 CBC, 16 GCM)
 * CBC + HMAC-SHA1-96: the ICV covers header, IV and ciphertext, plus the ESN
 * high half appended (RFC 4303 §2.2.1). GCM (RFC 4106): nonce = salt || IV,
 * AAD = SPI || [seq_hi] || seq_lo. */
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
    default:
        goto bad;
    }
    return sa;
bad:
    free(sa);
    return NULL;
}

void espgw_imb_sa_free(void *p) {
    if (p != NULL) {
        imb_clear_mem(p, sizeof(struct espgw_imb_sa));
        free(p);
    }
}

uint32_t espgw_imb_burst(void *mgr, const void *sap, int encrypt, uint8_t *const *bufs, const uint32_t *lens,
                         const uint32_t *seq_hi, uint8_t *status, uint32_t n) {
    IMB_MGR *m = (IMB_MGR *)mgr;
    const struct espgw_imb_sa *sa = (const struct espgw_imb_sa *)sap;
    int gcm = sa->alg == ESPGW_IMB_GCM128 || sa->alg == ESPGW_IMB_GCM256;
    uint32_t iv_len = gcm ? 8 : 16, icv_len = gcm ? 16 : 12;
    /* Per-packet scratch: computed tag, received ICV, GCM nonce and AAD. */
    uint8_t tag[ESPGW_IMB_MAX_BURST][16];
    uint8_t rx_icv[ESPGW_IMB_MAX_BURST][16];
    uint8_t nonce[ESPGW_IMB_MAX_BURST][12];
    uint8_t aad[ESPGW_IMB_MAX_BURST][12];
    if (n > ESPGW_IMB_MAX_BURST)
        n = ESPGW_IMB_MAX_BURST;

    for (uint32_t i = 0; i < n; i++) {
        uint8_t *b = bufs[i];
        uint32_t body_end = lens[i] - icv_len;
        uint32_t ct_len = body_end - 8 - iv_len;
        status[i] = ESPGW_IMB_ERROR;
        if (!encrypt)
            memcpy(rx_icv[i], b + body_end, icv_len);
        IMB_JOB *job = IMB_GET_NEXT_JOB(m);
        job->src = b;
        job->dst = b + 8 + iv_len;
        job->cipher_start_src_offset_in_bytes = 8 + iv_len;
        job->msg_len_to_cipher_in_bytes = ct_len;
        job->key_len_in_bytes = sa->key_len;
        job->cipher_direction = encrypt ? IMB_DIR_ENCRYPT : IMB_DIR_DECRYPT;
        job->chain_order = encrypt ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
        job->auth_tag_output = tag[i];
        job->auth_tag_output_len_in_bytes = icv_len;
        job->user_data = (void *)(uintptr_t)i;
        if (gcm) {
            memcpy(nonce[i], sa->salt, 4);
            memcpy(nonce[i] + 4, b + 8, 8);
            uint32_t aad_len = 8;
            memcpy(aad[i], b, 4);
            if (seq_hi != NULL) {
                uint32_t hi = __builtin_bswap32(seq_hi[i]);
                memcpy(aad[i] + 4, &hi, 4);
                memcpy(aad[i] + 8, b + 4, 4);
                aad_len = 12;
            } else {
                memcpy(aad[i] + 4, b + 4, 4);
            }
            job->cipher_mode = IMB_CIPHER_GCM;
            job->hash_alg = IMB_AUTH_AES_GMAC;
            job->enc_keys = &sa->gcm;
            job->dec_keys = &sa->gcm;
            job->iv = nonce[i];
            job->iv_len_in_bytes = 12;
            job->hash_start_src_offset_in_bytes = 8 + iv_len;
            job->msg_len_to_hash_in_bytes = ct_len;
            job->u.GCM.aad = aad[i];
            job->u.GCM.aad_len_in_bytes = aad_len;
        } else {
            uint32_t hash_len = body_end;
            if (seq_hi != NULL) {
                /* The ESN high half follows the ciphertext for the ICV only:
                 * it goes where the ICV will be (saved above when opening). */
                uint32_t hi = __builtin_bswap32(seq_hi[i]);
                memcpy(b + body_end, &hi, 4);
                hash_len += 4;
            }
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
        job = IMB_SUBMIT_JOB(m);
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
        uint8_t *icv = bufs[i] + lens[i] - icv_len;
        if (encrypt) {
            memcpy(icv, tag[i], icv_len);
        } else {
            uint8_t diff = 0;
            for (uint32_t k = 0; k < icv_len; k++)
                diff |= (uint8_t)(tag[i][k] ^ rx_icv[i][k]);
            memcpy(icv, rx_icv[i], icv_len);
            if (diff != 0)
                status[i] = ESPGW_IMB_AUTH_FAILED;
        }
    }
    return n;
}
