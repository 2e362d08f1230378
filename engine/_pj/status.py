"""pjproject status codes the engine reacts to, derived as pjproject defines them.

The wheel exports no ``PJ_*``/``PJSIP_*``/``PJMEDIA_*`` error constants, so each is
built here from its error space exactly as the named header does; a typed number
drifts (an earlier ``220111`` for ``PJMEDIA_RTP_EREMNORFC2833`` never matched).
``tests/test_pj_status.py`` checks every one against pjproject's own message text.
"""

from __future__ import annotations

# pjlib/include/pj/errno.h
PJ_ERRNO_START = 20000
PJ_ERRNO_SPACE_SIZE = 50000
PJ_ERRNO_START_STATUS = PJ_ERRNO_START + PJ_ERRNO_SPACE_SIZE
PJ_ERRNO_START_SYS = PJ_ERRNO_START_STATUS + PJ_ERRNO_SPACE_SIZE
PJ_ERRNO_START_USER = PJ_ERRNO_START_SYS + PJ_ERRNO_SPACE_SIZE
#: pjlib/include/pj/errno.h: ``PJ_ETOOMANY`` = ``PJ_ERRNO_START_STATUS + 10``.
PJ_ETOOMANY = PJ_ERRNO_START_STATUS + 10

# pjsip/include/pjsip/sip_errno.h
PJSIP_ERRNO_START = PJ_ERRNO_START_USER
PJSIP_ERRNO_START_PJSIP = PJSIP_ERRNO_START + 1000
#: ``PJSIP_EBUSY`` = ``PJSIP_ERRNO_START_PJSIP + 1``.
PJSIP_EBUSY = PJSIP_ERRNO_START_PJSIP + 1

# pjmedia/include/pjmedia/errno.h
PJMEDIA_ERRNO_START = PJ_ERRNO_START_USER + PJ_ERRNO_SPACE_SIZE
#: ``PJMEDIA_RTP_EREMNORFC2833`` = ``PJMEDIA_ERRNO_START + 107``: the far end's SDP
#: offered no telephone-event, so RFC 2833 DTMF cannot be sent.
PJMEDIA_RTP_EREMNORFC2833 = PJMEDIA_ERRNO_START + 107
