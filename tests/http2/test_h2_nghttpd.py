"""H2Agent against nghttpd (nghttp2's C server), whose HPACK decoder is strict.

nghttp2 insists on a dynamic table size update at the start of the first
header block after it lowers SETTINGS_HEADER_TABLE_SIZE; these tests run the
agent's hand-made header blocks past it, with the default table and with none.
Skipped where ``nghttpd`` is not installed (Debian ``nghttp2-server``).
"""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from gw_servers import free_port, server_process
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from gateway.http2 import BytesProducer, H2Agent

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("nghttpd") is None, reason="needs nghttpd"),
]

TOKEN = "5e1f" * 16


@pytest.fixture(params=["4096", "0"], ids=["table-4096", "table-0"])
def nghttpd(
    request: pytest.FixtureRequest,
    tls_pair: tuple[Path, Path],
    tmp_path: Path,
) -> Iterator[int]:
    """nghttpd on 127.0.0.1 serving an empty file at /3/device/<TOKEN>; its port."""
    docroot = tmp_path / "htdocs"
    (docroot / "3" / "device").mkdir(parents=True)
    (docroot / "3" / "device" / TOKEN).write_bytes(b"")
    port = free_port()
    cert, key = tls_pair
    cmd = [
        "nghttpd",
        "--address=127.0.0.1",
        f"--htdocs={docroot}",
        f"--header-table-size={request.param}",
        str(port),
        str(key),
        str(cert),
    ]
    with server_process(cmd, port):
        yield port


@pytest_twisted.inlineCallbacks
def test_many_requests_through_treq(
    nghttpd: int, tls_pair: tuple[Path, Path]
) -> Generator[Deferred[Any], Any, None]:
    """Concurrent and sequential APNs-shaped POSTs all get nghttpd's 200: every
    header block (first, Huffman-coded, cached) decodes on the C side."""
    agent = H2Agent(reactor, ca_file=tls_pair[0], ping_interval=None)
    client = HTTPClient(agent, data_to_body_producer=BytesProducer)
    url = f"https://127.0.0.1:{nghttpd}/3/device/{TOKEN}"

    def post(i: int) -> Deferred[int]:
        d = client.post(
            url,
            data=b'{"aps":{}}',
            headers={
                "apns-push-type": "voip",
                "apns-topic": "com.example.phone.voip",
                "apns-id": f"2f1e3e1c-7b7c-4d8e-9b7a-{i:012d}",
                "authorization": "bearer " + "x" * 200,
            },
        )
        return d.addCallback(lambda response: response.code)

    try:
        codes = yield gatherResults([post(i) for i in range(50)])
        for i in range(50, 60):
            codes.append((yield post(i)))
        assert codes == [200] * 60
        assert agent.connection_count("127.0.0.1", nghttpd) == 1
    finally:
        yield agent.close()
