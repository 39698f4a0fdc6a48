"""Hypothesis strategies for SIP requests that a core really sends (and
ones it should not): matching and non-matching branches and Call-IDs,
RFC 3326 Reasons, RFC 8599 contacts, odd Expires, bodies, custom headers.
"""

from __future__ import annotations

from gw_front import AOR, request
from hypothesis import strategies as st

_METHODS = (
    "INVITE",
    "CANCEL",
    "ACK",
    "OPTIONS",
    "REGISTER",
    "MESSAGE",
    "BYE",
    "INFO",
    "PRACK",
    "SUBSCRIBE",
    "PUBLISH",
    "FOO",
)
_URIS = (
    AOR,
    "sip:nobody@example.com",
    "sip:gw@127.0.0.1",
    "sips:bob@example.com",
    "sip:bob@example.com;transport=tcp",
    "tel:+4930123",
    "sip:%62ob@example.com",
)
_HEADERS = (
    'Reason: SIP;cause=200;text="Call completed elsewhere"',
    "Reason: SIP;cause=600",
    "Reason: SIP;cause=603, Q.850;cause=16",
    "Reason: Q.850;cause=16",
    "Reason: SIP;cause=abc",
    "Reason: garbage",
    "Contact: <sip:bob@10.0.0.1;pn-provider=apns;pn-prid="
    + "ab" * 32
    + ";pn-param=TEAMID.com.x.voip>;expires=600",
    "Contact: <sip:bob@10.0.0.2;pn-provider=lpc;pn-prid=phone>",
    "Contact: <sip:bob@10.0.0.1;pn-provider=apns;pn-prid=zz>",
    "Contact: <sip:bob@10.0.0.1;pn-provider=fcm;pn-prid=x>;expires=0",
    "Contact: <sip:bob@10.0.0.1>",
    "Contact: *",
    "Contact: <sip:a@b>, <sip:c@d>;expires=5",
    "Expires: 0",
    "Expires: 20",
    "Expires: -1",
    "Expires: 99999999999999",
    "Content-Type: text/plain",
    "Content-Type: application/sdp",
    "Content-Type: message/cpim",
    "Content-Type: text/plain;charset=latin-1",
    "X-Customer-Id: 42",
    "X-Long: " + "x" * 300,
    'P-Asserted-Identity: "Alice" <sip:+4930999@core.example.com>',
    "P-Asserted-Identity: <tel:+4930999>",
    "P-Asserted-Identity: nonsense <",
    "Require: 100rel",
    "Supported: timer, 100rel",
    "Max-Forwards: 0",
    "Subject: hello",
    "Priority: emergency",
)
_BODIES = (b"", b"hello", "grüße".encode(), b"\xff\xfe\x00", b"v=0\r\n" * 40)


def sip_requests() -> st.SearchStrategy[bytes]:
    """Requests as a core sends them, or should not."""
    header = st.one_of(
        st.sampled_from(_HEADERS),
        st.builds(
            "{}: {}".format,
            st.sampled_from(("Reason", "Contact", "Expires", "X-Any", "From")),
            st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40),
        ),
    )
    return st.builds(
        lambda method, uri, branch, call_id, cseq, headers, body, tagged: request(
            method,
            uri,
            branch=f"z9hG4bK-{branch}",
            call_id=f"c{call_id}@test",
            cseq=cseq,
            headers="".join(
                h.replace("\r", "").replace("\n", "") + "\r\n" for h in headers
            ),
            body=body,
            to=f"<{uri}>;tag=t1" if tagged else None,
        ),
        st.sampled_from(_METHODS),
        st.sampled_from(_URIS),
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(0, 3),
        st.lists(header, max_size=4),
        st.sampled_from(_BODIES),
        st.booleans(),
    )
