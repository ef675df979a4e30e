"""The sdist fetched from pip's indexes directly: pip's settings read as pip reads them, the simple API in both
forms, a local HTTP index with the hash checked, and nothing half-written."""

import hashlib
import http.server
import json
import threading
from typing import ClassVar

import pytest

from pytest_axion.serve import sdist
from pytest_axion.serve.sdist import NotFound, PipSources, files_on_page, find_sdist, parse_pip_config

LISTING = """\
:env:.find-links='/opt/wheels'
:env:.index-url='https://mirror.example/simple'
global.index-url='https://pypi.org/simple'
global.extra-index-url='file:///opt/pypi/simple https://other.example/simple'
global.cert='/etc/ssl/certs/ca.crt'
"""


def test_pip_settings_take_the_environment_before_the_config_files_and_split_lists():
    sources = parse_pip_config(LISTING)
    assert sources.index_urls == ("https://mirror.example/simple", "file:///opt/pypi/simple",
                                  "https://other.example/simple")
    assert sources.find_links == ("/opt/wheels",) and sources.cert == "/etc/ssl/certs/ca.crt"
    assert parse_pip_config("").index_urls == (sdist.DEFAULT_INDEX,)
    offline = parse_pip_config(LISTING + "global.no-index='true'\n")
    assert offline.index_urls == () and offline.find_links == ("/opt/wheels",)


def test_both_forms_of_the_simple_api_give_each_file_its_address_and_hash():
    page = "https://pypi.example/simple/llama-cpp-python/"
    as_json = json.dumps({"files": [{"filename": "llama_cpp_python-0.3.36.tar.gz",
                                     "url": "../../files/llama_cpp_python-0.3.36.tar.gz",
                                     "hashes": {"sha256": "ab12"}}]}).encode()
    as_html = (b'<html><body><a href="https://files.example/p/llama_cpp_python-0.3.36.tar.gz#sha256=ab12">x</a>'
               b'<a href="llama_cpp_python-0.3.35.tar.gz">y</a></body></html>')
    assert files_on_page(as_json, "application/vnd.pypi.simple.v1+json", page) == {
        "llama_cpp_python-0.3.36.tar.gz": ("https://pypi.example/files/llama_cpp_python-0.3.36.tar.gz", "ab12")}
    assert files_on_page(as_html, "text/html", page) == {
        "llama_cpp_python-0.3.36.tar.gz": ("https://files.example/p/llama_cpp_python-0.3.36.tar.gz", "ab12"),
        "llama_cpp_python-0.3.35.tar.gz": (page + "llama_cpp_python-0.3.35.tar.gz", None)}


def test_a_find_links_folder_and_a_file_index_are_read_from_disk(tmp_path):
    name = "llama_cpp_python-1.0.tar.gz"
    (tmp_path / "links").mkdir()
    (tmp_path / "index" / "llama-cpp-python").mkdir(parents=True)
    (tmp_path / "index" / "llama-cpp-python" / name).write_bytes(b"from the index")
    on_disk = PipSources(index_urls=((tmp_path / "index").as_uri(),), find_links=(str(tmp_path / "links"),),
                         cert=None)
    assert find_sdist(name, "llama-cpp-python", on_disk) == ((tmp_path / "index" / "llama-cpp-python" / name)
                                                              .as_uri(), None)
    (tmp_path / "links" / name).write_bytes(b"from the folder")
    assert find_sdist(name, "llama-cpp-python", on_disk)[0] == (tmp_path / "links" / name).as_uri()
    with pytest.raises(NotFound, match=r"llama_cpp_python-2\.0\.tar\.gz is in none of"):
        find_sdist("llama_cpp_python-2.0.tar.gz", "llama-cpp-python", on_disk)


class _Index(http.server.BaseHTTPRequestHandler):
    body = b"the sdist's bytes"
    listed_hash = hashlib.sha256(body).hexdigest()
    seen_authorization: ClassVar[list[str | None]] = []

    def do_GET(self):
        self.seen_authorization.append(self.headers.get("Authorization"))
        if self.path == "/simple/llama-cpp-python/":
            page = json.dumps({"files": [{"filename": "llama_cpp_python-9.9.tar.gz",
                                          "url": "/files/llama_cpp_python-9.9.tar.gz",
                                          "hashes": {"sha256": self.listed_hash}}]}).encode()
            self._reply(page, "application/vnd.pypi.simple.v1+json")
        elif self.path == "/files/llama_cpp_python-9.9.tar.gz":
            self._reply(self.body, "application/octet-stream")
        else:
            self.send_error(404)

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def index(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://user:to%40ken@127.0.0.1:{server.server_port}/simple"
    monkeypatch.setattr(sdist, "pip_sources", lambda python: PipSources(
        index_urls=("http://127.0.0.1:1/simple", address), find_links=(), cert=None))
    _Index.seen_authorization.clear()
    yield _Index
    server.shutdown()


def test_the_sdist_comes_from_the_first_index_that_lists_it_with_its_hash_checked(index, tmp_path):
    got = sdist.fetch_sdist("llama-cpp-python", "9.9", tmp_path)
    assert got == tmp_path / "llama_cpp_python-9.9.tar.gz" and got.read_bytes() == index.body
    # the address's login went in the header, not the address
    assert set(index.seen_authorization) == {"Basic dXNlcjp0b0BrZW4="}


def test_a_file_whose_hash_is_not_the_listed_one_is_not_kept(index, tmp_path, monkeypatch):
    monkeypatch.setattr(index, "listed_hash", "0" * 64)
    with pytest.raises(NotFound, match="does not have the sha256 the index lists"):
        sdist.fetch_sdist("llama-cpp-python", "9.9", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_build_asks_pip_download_when_no_index_answers(tmp_path, monkeypatch):
    from pytest_axion.serve import build

    def nowhere(project, version, into):
        raise NotFound("llama_cpp_python-0.1.tar.gz is in none of https://nowhere.example/simple")

    asked = []

    def pip_download(command, what, log):
        asked.append(command)
        (tmp_path / "llama_cpp_python-0.1.tar.gz").write_bytes(b"")

    monkeypatch.setattr(build, "fetch_sdist", nowhere)
    monkeypatch.setattr(build, "_run", pip_download)
    log = tmp_path / "build.log"
    assert build._download_sdist("0.1", tmp_path, log) == tmp_path / "llama_cpp_python-0.1.tar.gz"
    assert asked and asked[0][1:4] == ["-m", "pip", "download"]
    assert "fetching the sdist from pip's indexes directly failed (llama_cpp_python-0.1.tar.gz is in none of" in (
        log.read_text())


def test_the_real_index_lists_the_installed_versions_sdist_with_its_hash():
    # pip's own settings and indexes on this machine (the package index is the one place they reach); the download
    # itself is the local index's test above, and the first served test's build.
    from importlib import metadata
    version = metadata.version("llama-cpp-python")
    url, digest = find_sdist(f"llama_cpp_python-{version}.tar.gz", "llama-cpp-python", sdist.pip_sources())
    assert url.endswith(f"/llama_cpp_python-{version}.tar.gz")
    assert url.startswith("file:") or (digest is not None and len(digest) == 64)
