"""The bare pjsua2 reference process for scripts/bench: the least an app must do.

Poll mode on one thread with a 10 ms ``libHandleEvents`` loop (the notes' baseline),
null audio, one UDP transport on 127.0.0.1, one account registering to the given
registrar. Prints one JSON line per phase on stdout; benchmarking code only, so it
does not go through the engine (which is what it is compared with).

Usage: bare_pjsua2.py <registrar host:port> <user> <password> <idle seconds> \
       <dial target uri or -> <dial count>
"""

from __future__ import annotations

import json
import sys
import time

import pjsua2 as pj


class Acc(pj.Account):  # type: ignore[misc]
    registered = False

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        self.registered = prm.code // 100 == 2 and prm.expiration > 0


class Call(pj.Call):  # type: ignore[misc]
    confirmed_at = 0.0
    done = False

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed_at = time.perf_counter()
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.done = True


def pump(ep: pj.Endpoint, until: float) -> None:
    while time.monotonic() < until:
        ep.libHandleEvents(10)


def main() -> int:
    registrar, user, password, idle, target, count = sys.argv[1:7]
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    cfg.medConfig.sndAutoCloseTime = -1
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tc = pj.TransportConfig()
    tc.boundAddress = "127.0.0.1"
    tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
    ep.libStart()
    for codec in ep.codecEnum2():
        ep.codecSetPriority(codec.codecId, 255 if codec.codecId.startswith("PCMU") else 0)
    host = registrar
    ac = pj.AccountConfig()
    ac.idUri = f"sip:{user}@{host}"
    ac.regConfig.registrarUri = f"sip:{host}"
    ac.sipConfig.transportId = tid
    ac.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    ac.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    acc = Acc()
    acc.create(ac)
    deadline = time.monotonic() + 5
    while not acc.registered and time.monotonic() < deadline:
        ep.libHandleEvents(10)
    print(json.dumps({"phase": "ready", "registered": acc.registered}), flush=True)
    pump(ep, time.monotonic() + float(idle))
    print(json.dumps({"phase": "idle_done"}), flush=True)
    times = []
    for _ in range(int(count) if target != "-" else 0):
        call = Call(acc)
        t0 = time.perf_counter()
        call.makeCall(target, pj.CallOpParam(True))
        end = time.monotonic() + 5
        while not call.confirmed_at and not call.done and time.monotonic() < end:
            ep.libHandleEvents(10)
        if call.confirmed_at:
            times.append(call.confirmed_at - t0)
            call.hangup(pj.CallOpParam())
        end = time.monotonic() + 5
        while not call.done and time.monotonic() < end:
            ep.libHandleEvents(10)
        del call
        pump(ep, time.monotonic() + 0.05)
    print(json.dumps({"phase": "dial_done", "times": times}), flush=True)
    acc.shutdown()
    del acc
    ep.libDestroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
