"""PEP 658 metadata files in the index, and `wheelfactory serve` (read-only, ranges)."""

from __future__ import annotations

import hashlib
import threading
import urllib.error
import urllib.request

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.store.pep658 import core_metadata
from wheelfactory.store.serve import allowed, make_server, parse_range
from wheelfactory.store.wheelhouse import Wheelhouse

from .test_wheelhouse import make_wheel


def published(tmp_path):
    wh = Wheelhouse(tmp_path / "wh")
    w = make_wheel(tmp_path, "demo-pkg", "1.0")
    with wh.lock():
        wh.publish([w], {"component": "demo", "key": "k1", "origin": "built"})
    return wh, w


def test_each_wheel_gets_its_metadata_file_announced_in_the_index(tmp_path):
    wh, w = published(tmp_path)
    meta = (wh.root / f"{w.name}.metadata").read_bytes()
    assert meta == core_metadata(w) and meta.startswith(b"Metadata-Version:")
    digest = hashlib.sha256(meta).hexdigest()
    page = (wh.root / "simple" / "demo-pkg" / "index.html").read_text()
    assert f'data-dist-info-metadata="sha256={digest}"' in page
    assert f'data-core-metadata="sha256={digest}"' in page


def test_metadata_follows_a_replaced_wheel_and_leaves_with_it(tmp_path):
    wh, w = published(tmp_path)
    newer = make_wheel(tmp_path / "b", "demo-pkg", "1.0", payload=b"y")
    with wh.lock():
        wh.quarantine([w.name])
    assert not (wh.root / f"{w.name}.metadata").exists()  # gone with the wheel to attic/
    with wh.lock():
        wh.publish([newer], {"component": "demo", "key": "k2", "origin": "built"})
    assert (wh.root / f"{newer.name}.metadata").read_bytes() == core_metadata(newer)


def test_only_what_an_installer_needs_is_reachable():
    for ok in ("/", "/simple/", "/simple/vllm/", "/torch-2.13.0-cp311-none-any.whl",
               "/torch-2.13.0-cp311-none-any.whl.metadata", "/locks/ci.txt", "/manifest.json"):
        assert allowed(ok), ok
    for bad in ("/.lock", "/attic/torch-2.13.0-cp311-none-any.whl", "/.incoming-x/a.whl", "/simple/../.lock",
                "/%2e%2e/etc/passwd", "/build.log", "/sub/a.whl"):
        assert not allowed(bad), bad


def test_single_byte_ranges():
    assert parse_range("bytes=0-99", 1000) == (0, 99)
    assert parse_range("bytes=900-", 1000) == (900, 999)
    assert parse_range("bytes=-100", 1000) == (900, 999)
    assert parse_range("bytes=990-2000", 1000) == (990, 999)
    assert parse_range("bytes=0-1,5-6", 1000) is None  # several: the whole file instead
    assert parse_range("items=0-1", 1000) is None
    for bad in ("bytes=1000-", "bytes=5-1", "bytes=x-1", "bytes=-0"):
        with pytest.raises(ValueError):
            parse_range(bad, 1000)


def test_serving_something_that_is_no_wheelhouse_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="has no simple/index.html"):
        make_server(tmp_path, "127.0.0.1", 0)


@pytest.mark.slow
def test_served_over_http_read_only_with_ranges(tmp_path):
    wh, w = published(tmp_path)
    (wh.root / "attic").mkdir()
    (wh.root / "attic" / w.name).write_bytes(b"old")
    server = make_server(wh.root, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        page = urllib.request.urlopen(f"{base}/simple/demo-pkg/").read().decode()
        assert "data-core-metadata" in page
        assert urllib.request.urlopen(f"{base}/{w.name}.metadata").read() == core_metadata(w)
        data = w.read_bytes()
        r = urllib.request.urlopen(urllib.request.Request(f"{base}/{w.name}", headers={"Range": "bytes=-22"}))
        assert r.status == 206 and r.read() == data[-22:]
        assert r.headers["Content-Range"] == f"bytes {len(data) - 22}-{len(data) - 1}/{len(data)}"
        assert urllib.request.urlopen(f"{base}/{w.name}").read() == data
        for path, code in ((f"/attic/{w.name}", 404), ("/.lock", 404)):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(base + path)
            assert e.value.code == code
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(f"{base}/{w.name}", data=b"x", method="PUT"))
        assert e.value.code == 501
    finally:
        server.shutdown()
        server.server_close()
