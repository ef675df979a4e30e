"""The installed llama-cpp-python's sdist, fetched straight from the package index pip is configured with.

``pip download --no-binary :all:`` also installs the package's build backend in a scratch environment and
prepares its metadata before it saves the file: 45 of the 240 s a first llama-server build took on a 2-vCPU VM,
for a file that downloads in under a second. So the file is looked up here as pip would (its ``index-url``,
``extra-index-url``, ``find-links`` and ``cert`` from ``pip config list``, the environment's ``PIP_*`` included),
through the index's simple API (PEP 691 JSON or PEP 503 HTML), checked against the index's sha256 and written
whole. Anything this does not cover (credentials from a keyring, a proxy's own login) fails here, and the
caller falls back to ``pip download``.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import re
import shlex
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

from pytest_axion.files import written_atomically

DEFAULT_INDEX = "https://pypi.org/simple"
PIP_PRECEDENCE = (":env:", "site", "user", "global")   # pip's own order, the first that sets a key wins
TIMEOUT_S = 60


class NotFound(Exception):
    """No index or folder pip is configured with offers the file, or one that does could not be read."""


@dataclass(frozen=True)
class PipSources:
    index_urls: tuple[str, ...]
    find_links: tuple[str, ...]
    cert: str | None


def parse_pip_config(listing: str) -> PipSources:
    """``pip config list`` output (``global.index-url='https://...'``) as the places pip looks in."""
    values: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        match = re.match(r"^(:env:|[\w-]+)\.([\w-]+)='(.*)'$", line.strip())
        if match:
            origin, key, value = match.groups()
            values.setdefault(key, {})[origin] = value

    def setting(key: str) -> str | None:
        by_origin = values.get(key, {})
        for origin in PIP_PRECEDENCE:
            if origin in by_origin:
                return by_origin[origin]
        return next(iter(by_origin.values()), None)

    index = setting("index-url") or DEFAULT_INDEX
    extra = tuple(shlex.split(setting("extra-index-url") or ""))
    links = tuple(shlex.split(setting("find-links") or ""))
    offline = (setting("no-index") or "").lower() in ("1", "true", "yes", "on")   # pip then reads find-links only
    return PipSources(index_urls=() if offline else (index, *extra), find_links=links, cert=setting("cert"))


def pip_sources(python: str = sys.executable) -> PipSources:
    listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            timeout=TIMEOUT_S, check=False)
    if listed.returncode != 0:
        raise NotFound(f"pip config list failed: {listed.stderr.strip()[:200]}")
    return parse_pip_config(listed.stdout)


def normalized(name: str) -> str:
    """PEP 503's project name in an index's address."""
    return re.sub(r"[-_.]+", "-", name).lower()


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def files_on_page(body: bytes, content_type: str, page_url: str) -> dict[str, tuple[str, str | None]]:
    """filename -> (absolute url, sha256 or None) from a simple-API project page, JSON or HTML."""
    found: dict[str, tuple[str, str | None]] = {}
    if "json" in content_type:
        for entry in json.loads(body).get("files", []):
            url = urllib.parse.urljoin(page_url, entry["url"])
            found[entry["filename"]] = (url.split("#")[0], entry.get("hashes", {}).get("sha256"))
        return found
    anchors = _Anchors()
    anchors.feed(body.decode("utf-8", errors="replace"))
    for href in anchors.hrefs:
        url = urllib.parse.urljoin(page_url, href)
        address, _, fragment = url.partition("#")
        digest = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
        found[urllib.parse.unquote(address.rsplit("/", 1)[-1])] = (address, digest)
    return found


def _request(url: str) -> urllib.request.Request:
    """A request for ``url``; credentials in the address (``https://user:token@host/``) go in its header."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    login = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    request.add_header("Authorization", "Basic " + b64encode(login.encode()).decode())
    return request


def _with_login_of(index: str, url: str) -> str:
    """``url`` with the index's login when it is on the index's host (as pip sends it there too)."""
    source, target = urllib.parse.urlsplit(index), urllib.parse.urlsplit(url)
    if source.username is None or target.username is not None or source.hostname != target.hostname:
        return url
    return urllib.parse.urlunsplit(target._replace(netloc=source.netloc))


def _open(url: str, cert: str | None, accept: str | None = None):  # type: ignore[no-untyped-def]
    request = _request(url)
    if accept:
        request.add_header("Accept", accept)
    context = ssl.create_default_context(cafile=cert) if url.startswith("https:") else None
    return urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context)


def find_sdist(filename: str, project: str, sources: PipSources) -> tuple[str, str | None]:
    """Where ``filename`` is: a ``find-links`` folder's copy, else the first index that lists it."""
    for folder in sources.find_links:
        local = Path(folder.removeprefix("file://")) / filename
        if local.is_file():
            return local.as_uri(), None
    for index in sources.index_urls:
        if index.startswith("file:"):
            index_folder = Path(urllib.request.url2pathname(urllib.parse.urlsplit(index).path))
            local = index_folder / normalized(project) / filename
            if local.is_file():
                return local.as_uri(), None
            continue
        page = index.rstrip("/") + f"/{normalized(project)}/"
        try:
            with _open(page, sources.cert, accept="application/vnd.pypi.simple.v1+json, text/html;q=0.1") as reply:
                listed = files_on_page(reply.read(), reply.headers.get("Content-Type", ""), reply.geturl())
        except OSError:
            continue   # another index may have it; if none does, pip gets its turn
        if filename in listed:
            url, digest = listed[filename]
            return _with_login_of(index, url), digest
    raise NotFound(f"{filename} is in none of {', '.join(sources.index_urls + sources.find_links)}")


def fetch_sdist(project: str, version: str, into: Path, *, python: str = sys.executable) -> Path:
    """``<project>-<version>.tar.gz`` from where pip would take it, into ``into``; the file appears whole, and only
    if its sha256 is the one the index gives."""
    filename = f"{normalized(project).replace('-', '_')}-{version}.tar.gz"
    sources = pip_sources(python)
    url, expected = find_sdist(filename, project, sources)
    target = into / filename
    digest = hashlib.sha256()
    try:
        with _open(url, sources.cert) as reply, written_atomically(target) as out:
            while chunk := reply.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            if expected is not None and digest.hexdigest() != expected.lower():
                raise NotFound(f"{url} does not have the sha256 the index lists ({expected})")
    except OSError as err:
        raise NotFound(f"downloading {url} failed: {err}") from err
    return target
