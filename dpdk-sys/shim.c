#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include "shim.h"

uint16_t espgw_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }
uint16_t espgw_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }
struct rte_mbuf *espgw_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int espgw_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n)
{ return rte_pktmbuf_alloc_bulk(mp, pkts, n); }
void espgw_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
char *espgw_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *espgw_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *espgw_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int espgw_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
int espgw_pktmbuf_linearize(struct rte_mbuf *m) { return rte_pktmbuf_linearize(m); }
int espgw_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail) { return rte_pktmbuf_chain(head, tail); }
uint16_t espgw_mbuf_refcnt_read(const struct rte_mbuf *m) { return rte_mbuf_refcnt_read(m); }
void espgw_mbuf_refcnt_set(struct rte_mbuf *m, uint16_t v) { rte_mbuf_refcnt_set(m, v); }
int espgw_errno(void) { return rte_errno; }
unsigned espgw_lcore_id(void) { return rte_lcore_id(); }
uint64_t espgw_rss_ip_mask(void) { return RTE_ETH_RSS_IP; }
uint64_t espgw_rss_udp_tcp_mask(void) { return RTE_ETH_RSS_UDP | RTE_ETH_RSS_TCP; }
uint64_t espgw_rx_offload_multi_seg(void) { return RTE_ETH_RX_OFFLOAD_SCATTER; }
uint64_t espgw_tx_offload_multi_segs(void) { return RTE_ETH_TX_OFFLOAD_MULTI_SEGS; }
uint64_t espgw_tx_offload_mbuf_fast_free(void) { return RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE; }
uint64_t espgw_rx_offload_ipv4_cksum(void) { return RTE_ETH_RX_OFFLOAD_IPV4_CKSUM; }
