/* pjproject compile-time configuration for the engine's own pjsua2 build
 * (scripts/build-pjsua2). SPDX-License-Identifier: GPL-2.0-or-later
 * Every define says why it is here; docs/pjsua2-builds.md compares this build
 * with the PyPI wheel. */

/* Calls: the PyPI wheel stops at 4; a headless engine (IVR, test rigs) carries
 * dozens. 64 were measured CONFIRMED between two processes. */
#define PJSUA_MAX_CALLS 64
/* Accounts: the wheel's 8th is its last (the 9th aborts); 32 covers multi-tenant
 * set-ups and still costs little memory. */
#define PJSUA_MAX_ACC 32
/* One player and one recorder per call at least (recording, on-hold music). */
#define PJSUA_MAX_PLAYERS 64
#define PJSUA_MAX_RECORDERS 64
/* 64 calls need >= 193 bridge ports (call, player, recorder per call + master). */
#define PJSUA_MAX_CONF_PORTS 254
/* Each call holds an RTP and an RTCP socket, each transport and listener one more:
 * the default 64 handles run out near 30 calls (and under an INVITE burst). */
#define PJ_IOQUEUE_MAX_HANDLES 1024
/* Keys of closed sockets stay reserved until no callback can still use them. */
#define PJ_IOQUEUE_HAS_SAFE_UNREG 1
/* Misuse must come back as an error, never an abort: no C assert() at all
 * (pj_assert follows PJ_DEBUG in 2.17, so both are off), and the argument checks
 * that assert() used to do are kept as error returns. */
#define PJ_DEBUG 0
#define PJ_ENABLE_EXTRA_CHECK 1
/* Audio only: the engine has no video path. */
#define PJMEDIA_HAS_VIDEO 0
/* SDES-SRTP through Debian's libsrtp2 (MicroSIP's `SRTP` account key). */
#define PJMEDIA_HAS_SRTP 1
/* Opus from Debian's libopus (the wheel has none). */
#define PJMEDIA_HAS_OPUS_CODEC 1

#include <pj/config_site_sample.h>
