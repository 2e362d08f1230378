"""Media and security settings on the wire (issue 5, parts 7 and 8).

Read from what a real peer received: the INVITE at a SIPp UAS (``-trace_msg``
writes every message to ``messages.log``), the contact Kamailio stored for a
REGISTER, and an unsolicited MWI NOTIFY from a SIPp UAC (``uac_mwi_notify``).

* ``hideCID``: ``1`` / ``hard`` → anonymous From; any other value → ``Privacy: id``.
* ``transport=tcp`` on an account → REGISTER and INVITE over TCP.
* ``audioCodecs`` → the INVITE's SDP offers exactly those codecs, in that order
  (plus telephone-event); speex only when listed.
* MWI (RFC 3842) → an ``mwi`` event with the waiting flag and voice counts.

Every wait has a hard timeout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginekit import BASE_INI, Engines, EventLog, engines_fixture, sip_port
from peers.kamailio import Kamailio
from peers.sipp import Sipp, SippFactory

from engine.manager import CallManager

pytestmark = pytest.mark.peers

ANONYMOUS_FROM = re.compile(r'^From: *"Anonymous" <sip:anonymous@anonymous\.invalid>;tag=', re.M)


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def received(sipp: Sipp, method: str) -> list[tuple[str, str]]:
    """(transport, text) of every ``method`` request SIPp received, in order."""
    log = sipp._scenario_file("messages.log")
    assert log is not None and log.exists(), "SIPp wrote no messages.log"
    out = []
    for block in re.split(r"^-{20,} .*$", log.read_text(errors="replace"), flags=re.M):
        head, _, message = block.strip().partition("\n")
        if " message received" in head and message.lstrip().startswith(f"{method} "):
            out.append((head.split()[0], message.strip()))
    return out


def one_call(manager: CallManager, events: EventLog, uas: Sipp, target: str) -> tuple[str, str]:
    """Dial ``target`` (the SIPp UAS), wait for the answer, hang up; returns the
    transport and text of the INVITE that SIPp received."""
    call = manager.dial(target).call
    events.wait_for("call_state", timeout=5, call=call, state="confirmed")
    manager.hangup(call)
    events.wait_for("call_state", timeout=5, call=call, state="disconnected")
    result = uas.wait(10)
    assert result.successful == 1, result
    [invite] = received(uas, "INVITE")
    return invite


def headers(message: str, name: str) -> list[str]:
    head = message.split("\n\n", 1)[0]
    return [v.strip() for v in re.findall(rf"^{name}:(.*)$", head, flags=re.M | re.I)]


# -- hideCID --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hide", "anonymous", "privacy"),
    [("", False, []), ("1", True, None), ("hard", True, None), ("id", False, ["id"])],
)
def test_hide_cid_anonymous_from_or_privacy_header(
    engines: Engines,
    sipp_factory: SippFactory,
    hide: str,
    anonymous: bool,
    privacy: list[str] | None,
) -> None:
    """``[Account0] hideCID`` (the account is user 100, "Alice Smith"): ``1``/``hard``
    send ``From: "Anonymous" <sip:anonymous@anonymous.invalid>`` (neither name nor
    user anywhere in it); another value keeps our From and adds ``Privacy: id``;
    empty does neither. The call is answered either way."""
    identity = "username=100\ndisplayName=Alice Smith\n"
    manager, events = engines.start(
        BASE_INI.replace("transport=\n", f"transport=\n{identity}hideCID={hide}\n")
    )
    uas = sipp_factory.uas("uas_answer", bye_timeout_ms=5000, timeout_s=10)
    _, invite = one_call(manager, events, uas, uas.uri("callee"))
    [from_] = headers(invite, "From")
    assert bool(ANONYMOUS_FROM.search(invite)) is anonymous, from_
    if anonymous:
        assert "Alice" not in from_ and "sip:100@" not in from_, from_
    else:
        assert from_.startswith('"Alice Smith" <sip:100@127.0.0.1'), from_
    if privacy is not None:  # 1/hard: MicroSIP 3.20 also sends Privacy: id; not required
        assert headers(invite, "Privacy") == privacy, invite


# -- per-account transport ------------------------------------------------------------


def test_account_transport_tcp_registers_and_calls_over_tcp(
    engines: Engines, kamailio: Kamailio, sipp_factory: SippFactory
) -> None:
    """``[Account1] transport=tcp``: the REGISTER goes over TCP (Kamailio stores a
    ``transport=tcp`` contact) and a call to a plain ``sip:`` URI reaches a TCP-only
    SIPp UAS over TCP (``;transport=tcp`` is added, ``Via: SIP/2.0/TCP``)."""
    manager, events = engines.start(
        f"""[Settings]
accountId=1
enableLocalAccount=0
sourcePort=0
audioCodecs=PCMU/8000/1
[Account1]
server={kamailio.address}
domain={kamailio.domain}
username=alice
password=alice-secret
transport=tcp
"""
    )
    events.wait_for("registration", timeout=5, account=1, state="registered")
    [contact] = kamailio.wait_registrations("alice", 1)
    assert ";transport=tcp" in contact.lower(), contact
    [account] = manager.accounts()
    assert account.transport == "tcp", account

    uas = sipp_factory.uas("uas_answer", transport="tcp", bye_timeout_ms=5000, timeout_s=10)
    call = manager.dial(f"sip:sipp@{uas.address}")
    assert call.remote_uri == f"sip:sipp@{uas.address};transport=tcp", call
    events.wait_for("call_state", timeout=5, call=call.call, state="confirmed")
    manager.hangup(call.call)
    assert uas.wait(10).successful == 1
    [(transport, invite)] = received(uas, "INVITE")
    assert transport == "TCP", transport
    assert headers(invite, "Via")[0].startswith("SIP/2.0/TCP "), invite


# -- codec priorities -----------------------------------------------------------------

#: Static RTP payload types (RFC 3551) that may come without an rtpmap.
STATIC = {"0": "PCMU/8000", "3": "GSM/8000", "8": "PCMA/8000", "9": "G722/8000"}


def offered_codecs(invite: str) -> list[str]:
    """The audio codecs of an SDP offer in order, as ``name/rate`` (telephone-event left out)."""
    body = invite.split("\n\n", 1)[1]
    [formats] = re.findall(r"^m=audio \d+ RTP/AVP ([\d ]+)$", body, flags=re.M)
    rtpmap = dict(re.findall(r"^a=rtpmap:(\d+) ([^/\s]+/\d+)", body, flags=re.M))
    names = [rtpmap.get(pt, STATIC.get(pt, pt)) for pt in formats.split()]
    return [n for n in names if not n.lower().startswith("telephone-event/")]


@pytest.mark.parametrize(
    ("audio_codecs", "offered", "limits"),
    [
        (None, ["PCMA/8000", "PCMU/8000"], ["PCMA/8000/1", "PCMU/8000/1"]),
        ("PCMA/8000/1 PCMU/8000/1", ["PCMA/8000", "PCMU/8000"], ["PCMA/8000/1", "PCMU/8000/1"]),
        ("PCMU/8000/1", ["PCMU/8000"], ["PCMU/8000/1"]),
        ("speex/8000/1 PCMU/8000/1", ["speex/8000", "PCMU/8000"], ["speex/8000/1", "PCMU/8000/1"]),
    ],
    ids=["default", "PCMA-PCMU", "PCMU", "speex-listed"],
)
def test_audio_codecs_set_the_offer_and_its_order(
    engines: Engines,
    sipp_factory: SippFactory,
    audio_codecs: str | None,
    offered: list[str],
    limits: list[str],
) -> None:
    """``audioCodecs`` (absent: MicroSIP's default ``PCMA/8000/1 PCMU/8000/1``) is
    the INVITE's whole codec list, in priority order, with telephone-event for
    RFC 2833; speex appears only when listed; ``status()["limits"]["codecs"]``
    says the same."""
    line = "" if audio_codecs is None else f"audioCodecs={audio_codecs}\n"
    ini = BASE_INI.replace("audioCodecs=PCMU/8000/1 PCMA/8000/1\n", line)
    assert ("audioCodecs" in ini) is (audio_codecs is not None)
    manager, events = engines.start(ini)
    assert manager.status()["limits"]["codecs"] == limits
    uas = sipp_factory.uas("uas_answer", bye_timeout_ms=5000, timeout_s=10)
    _, invite = one_call(manager, events, uas, uas.uri("callee"))
    assert offered_codecs(invite) == offered, invite
    assert re.search(r"^a=rtpmap:\d+ telephone-event/8000", invite, flags=re.M), invite


# -- MWI ------------------------------------------------------------------------------


def test_mwi_notify_becomes_an_event(engines: Engines, sipp_factory: SippFactory) -> None:
    """With ``voicemailNumber`` set, an (unsolicited) RFC 3842 NOTIFY is answered 200
    and reported as ``mwi`` with the waiting flag and the new/old voice counts;
    a later "no messages" NOTIFY clears it."""
    manager, events = engines.start(
        BASE_INI.replace("transport=\n", "transport=\nvoicemailNumber=*97\n")
    )
    target = f"sip:100@127.0.0.1:{sip_port(manager)}"
    for waiting, new, old in (("yes", 2, 8), ("no", 0, 10)):
        notify = sipp_factory.uac(
            target, "uac_mwi_notify", params={"waiting": waiting, "new": new, "old": old}
        )
        result = notify.wait(10)
        assert result.successful == 1 and result.received("200") == 1, result
        event = events.wait_for("mwi", timeout=5, waiting=waiting == "yes")
        assert (event["account"], event["new"], event["old"]) == (0, new, old), event
    assert len(events.of("mwi")) == 2


# -- publicAddr and rtpPortMin/Max ---------------------------------------------------------


def test_public_addr_and_rtp_port_range_shape_the_sdp(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    """``publicAddr`` is the address the SDP offers (127.0.0.9 here: still loopback, so
    SIPp's RTP stays on this machine) and ``rtpPortMin``/``rtpPortMax`` bound the port."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        low = probe.getsockname()[1] // 2 * 2  # RTP ports are even
    ini = BASE_INI.replace(
        "sourcePort=0\n", f"sourcePort=0\nrtpPortMin={low}\nrtpPortMax={low + 40}\n"
    ).replace("[Account0]\n", "[Account0]\npublicAddr=127.0.0.9\n")
    manager, events = engines.start(ini)
    uas = sipp_factory.uas("uas_answer", bye_timeout_ms=5000, timeout_s=10)
    _, invite = one_call(manager, events, uas, uas.uri("callee"))
    assert re.search(r"^c=IN IP4 127\.0\.0\.9\s*$", invite, flags=re.M), invite
    port = int(re.search(r"^m=audio (\d+) ", invite, flags=re.M).group(1))  # type: ignore[union-attr]
    assert low <= port <= low + 40, (port, low)


def test_stun_mapped_address_is_advertised(engines: Engines, sipp_factory: SippFactory) -> None:
    """With ``STUN`` and ``enableSTUN=1`` the engine asks the STUN server for its public
    address and advertises it in SIP and SDP (127.0.0.77 here, still loopback)."""
    from peers.stun import StunServer

    with StunServer("127.0.0.77") as stun:
        ini = BASE_INI.replace("[Settings]\n", f"[Settings]\nSTUN={stun.address}\nenableSTUN=1\n")
        manager, events = engines.start(ini)
        assert stun.answered > 0
        assert manager.accounts()[0].uri.startswith("sip:127.0.0.77:")
        uas = sipp_factory.uas("uas_answer", bye_timeout_ms=5000, timeout_s=10)
        _, invite = one_call(manager, events, uas, uas.uri("callee"))
    assert re.search(r"^c=IN IP4 127\.0\.0\.77\s*$", invite, flags=re.M), invite
