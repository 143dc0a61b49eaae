/* Headers bindgen reads. Keep this to what espgw uses. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_telemetry.h>
#include <rte_pdump.h>
#include "shim.h"
#include "ipsec_mb_shim.h"
