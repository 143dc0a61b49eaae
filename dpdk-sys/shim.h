/*
 * espgw shim: DPDK's fast path is `static inline` in its headers, so it has no
 * symbol to link against. These one-line wrappers give it one. No logic here.
 */
#ifndef ESPGW_SHIM_H
#define ESPGW_SHIM_H
#include <stdint.h>
struct rte_mbuf;
struct rte_mempool;

uint16_t espgw_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t espgw_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *espgw_pktmbuf_alloc(struct rte_mempool *mp);
int espgw_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n);
void espgw_pktmbuf_free(struct rte_mbuf *m);
char *espgw_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *espgw_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *espgw_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int espgw_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
int espgw_pktmbuf_linearize(struct rte_mbuf *m);
int espgw_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail);
uint16_t espgw_mbuf_refcnt_read(const struct rte_mbuf *m);
void espgw_mbuf_refcnt_set(struct rte_mbuf *m, uint16_t v);
int espgw_errno(void);
unsigned espgw_lcore_id(void);
/* RSS hash-field masks are RTE_BIT64 expressions bindgen cannot evaluate. */
uint64_t espgw_rss_ip_mask(void);
uint64_t espgw_rss_udp_tcp_mask(void);
/* Offload flag bits (also RTE_BIT64 expressions). */
uint64_t espgw_rx_offload_multi_seg(void);
uint64_t espgw_tx_offload_multi_segs(void);
uint64_t espgw_tx_offload_mbuf_fast_free(void);
uint64_t espgw_rx_offload_ipv4_cksum(void);
#endif
