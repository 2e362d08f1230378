"""Torture messages in the spirit of RFC 4475 ("SIP Torture Test Messages"), our own
text, one or more per category of the RFC, with the answer the engine gives.

Each message is a template: ``{port}`` (the engine's), ``{lport}`` (ours),
``{cid}`` (a fresh Call-ID), ``{branch}``, ``{tp}`` (UDP/TCP) and ``{body}``/``{len}``
(an SDP offer and its length) are filled in per send. The engine under test refuses
every valid call (``denyIncoming=all``), so a valid INVITE is answered 486 by the
policy (DND) and an invalid one by whatever catches it first.

``expect`` is the status code (None: no response at all); ``owner`` says who decides
it: ``engine`` (our checks or policy, through pjsua2) or ``pjsip`` (its parser,
transaction layer or pjsua's own modules, which the engine cannot reach from the
pjsua2 API). The README's table "RFC 4475 categories: the engine's answer" lists
the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from .wire import SDP, Transport

VIA = "Via: SIP/2.0/{tp} 127.0.0.1:{lport};branch=z9hG4bK{branch}"
FROM = "From: <sip:caller@127.0.0.1:{lport}>;tag=t{branch}"
TO = "To: <sip:test@127.0.0.1:{port}>"
CONTACT = "Contact: <sip:caller@127.0.0.1:{lport}>"
SDP_TAIL = "Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{body}"


def _invite(*headers: str, uri: str = "sip:test@127.0.0.1:{port}", tail: str = SDP_TAIL) -> str:
    base = [VIA, FROM, TO, "Call-ID: {cid}", "CSeq: 1 INVITE", CONTACT, "Max-Forwards: 70"]
    return "\r\n".join([f"INVITE {uri} SIP/2.0", *base, *headers, tail])


def _request(method: str, *headers: str, cseq: str = "", uri: str = "") -> str:
    uri = uri or "sip:test@127.0.0.1:{port}"
    lines = [f"{method} {uri} SIP/2.0", VIA, FROM, TO, "Call-ID: {cid}"]
    lines += [f"CSeq: {cseq or '1 ' + method}", CONTACT, "Max-Forwards: 70", *headers]
    return "\r\n".join([*lines, "Content-Length: 0", "", ""])


@dataclass(frozen=True)
class Torture:
    name: str
    #: The RFC 4475 category: 3.1.1 valid, 3.1.2 invalid, 3.2 transaction layer,
    #: 3.3 application layer, 3.4 backward compatibility ("-": none of them).
    section: str
    text: str
    expect: int | None
    owner: str  # "engine" or "pjsip"
    transports: tuple[Transport, ...] = ("udp", "tcp")

    def render(self, port: int, lport: int, tp: Transport, cid: str) -> bytes:
        values = {
            "port": port,
            "lport": lport,
            "tp": tp.upper(),
            "cid": cid,
            "branch": cid[:16],
            "body": SDP,
            "len": len(SDP.encode()),
        }
        out = self.text
        for key, value in values.items():  # not str.format: SDP and URIs hold braces
            out = out.replace("{" + key + "}", str(value))
        return out.encode("utf-8", "surrogateescape")


NO_BODY = "Content-Length: 0\r\n\r\n"

CORPUS: tuple[Torture, ...] = (
    # 3.1.1 Valid messages: parsed and handed to the policy (486 here).
    Torture(
        "folded-compact-whitespace",
        "3.1.1",
        "\r\n".join(
            [
                "INVITE sip:test@127.0.0.1:{port};unknownparam=x SIP/2.0",
                "v:  SIP/2.0/{tp}   127.0.0.1:{lport}  ;branch=z9hG4bK{branch}",
                "f :  <sip:caller@127.0.0.1:{lport}>",
                "  ;tag=t{branch}",
                "t:\t<sip:test@127.0.0.1:{port}>",
                "i: {cid}",
                "CSeq:   1\t  INVITE",
                "m: <sip:caller@127.0.0.1:{lport}>",
                "Max-Forwards: 70",
                "X-Unknown-Header: value, with,   commas",
                "Subject: folded",
                "\tover two lines",
                "c: application/sdp",
                "l: {len}",
                "",
                "{body}",
            ]
        ),
        486,
        "engine",
    ),
    Torture(
        "escaped-user-and-null",
        "3.1.1",
        _invite(uri="sip:te%73t%00x@127.0.0.1:{port}"),
        486,
        "engine",
    ),
    Torture(
        "unknown-header-params-and-unreason",
        "3.1.1",
        _invite("Foo-Bar: ;;a=b;;", "Subject: =?utf-8?q?x?= \u00e9\u00e8 caf\u00e9"),
        486,
        "engine",
    ),
    Torture(
        "bad-date-is-ignored",
        "3.1.2",
        _invite("Date: Fri, 01 Jan 2010 16:00:00 EST"),
        486,
        "engine",
    ),
    Torture(
        "max-forwards-zero",
        "3.3",
        _invite().replace("Max-Forwards: 70", "Max-Forwards: 0"),
        486,
        "engine",
    ),
    Torture(
        "rfc2543-branchless",
        "3.2",
        _invite().replace(";branch=z9hG4bK{branch}", ""),
        486,
        "engine",
    ),
    # 3.1.2 Invalid messages.
    Torture(
        "content-length-larger-than-body",
        "3.1.2",
        _invite(tail="Content-Type: application/sdp\r\nContent-Length: 9999\r\n\r\n{body}"),
        400,
        "engine",
        ("udp",),
    ),
    Torture(
        "negative-content-length",
        "3.1.2",
        _invite(tail="Content-Type: application/sdp\r\nContent-Length: -999\r\n\r\n{body}"),
        None,
        "pjsip",
        ("udp",),
    ),
    Torture(
        "huge-cseq",
        "3.1.2",
        _invite().replace("CSeq: 1 INVITE", "CSeq: 36893488147419103232 INVITE"),
        None,
        "pjsip",
    ),
    Torture("duplicate-call-id", "3.3", _invite("Call-ID: other-{cid}"), 400, "engine"),
    Torture("duplicate-from", "3.3", _invite("From: <sip:other@127.0.0.1>;tag=zz"), 400, "engine"),
    Torture("duplicate-to", "3.3", _invite("To: <sip:other@127.0.0.1>"), 400, "engine"),
    Torture(
        "duplicate-cseq",
        "3.3",
        _invite().replace("CSeq: 1 INVITE", "CSeq: 1 INVITE\r\nCSeq: 2 INVITE"),
        400,
        "engine",
    ),
    Torture(
        "cseq-method-mismatch",
        "3.1.2",
        _invite().replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS"),
        500,
        "pjsip",
    ),
    Torture(
        "unknown-method-cseq-mismatch",
        "3.1.2",
        _request("NEWMETHOD", cseq="1 INVITE"),
        None,
        "pjsip",
    ),
    Torture(
        "bad-sip-version",
        "3.1.2",
        _invite().replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia", 1),
        None,
        "pjsip",
    ),
    Torture(
        "spaces-in-request-uri",
        "3.1.2",
        _invite(uri="sip:te st@127.0.0.1:{port}"),
        None,
        "pjsip",
    ),
    Torture(
        "missing-call-id",
        "3.3",
        _invite().replace("Call-ID: {cid}\r\n", "X-Lost-Call-ID: {cid}\r\n"),
        None,
        "pjsip",
    ),
    Torture(
        "unterminated-quoted-display-name",
        "3.1.2",
        _invite().replace("From: <sip:", 'From: "caller <sip:'),
        None,
        "pjsip",
    ),
    # 3.3 Application-layer semantics.
    Torture(
        "unknown-request-uri-scheme",
        "3.3",
        _invite(uri="nobody:opaque-{port}"),
        None,
        "pjsip",
    ),
    Torture("require-unknown-extension", "3.3", _invite("Require: nosuchextension"), 420, "pjsip"),
    Torture(
        "second-require-unknown",
        "3.3",
        _invite("Require: timer", "Require: nosuchextension"),
        420,
        "pjsip",
    ),
    Torture(
        "unknown-content-type",
        "3.3",
        _invite(tail="Content-Type: application/x-unknown\r\nContent-Length: 4\r\n\r\nabcd"),
        415,
        "pjsip",
    ),
    Torture("invite-without-sdp", "-", _invite(tail=NO_BODY), 486, "engine"),
    Torture("unknown-method", "3.3", _request("NEWMETHOD"), None, "pjsip"),
    Torture(
        "register-to-a-phone",
        "3.3",
        _request("REGISTER", uri="sip:127.0.0.1:{port}"),
        None,
        "pjsip",
    ),
    Torture(
        "options-require-unknown",
        "3.3",
        _request("OPTIONS", "Require: nosuchextension"),
        200,
        "pjsip",
    ),
    Torture("options", "3.3", _request("OPTIONS"), 200, "pjsip"),
    Torture("bye-outside-a-dialog", "3.3", _request("BYE"), None, "pjsip"),
    Torture("cancel-unknown-transaction", "3.3", _request("CANCEL", cseq="1 CANCEL"), 481, "pjsip"),
)
