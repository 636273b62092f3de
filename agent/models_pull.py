"""`edge-agent models pull NAME`: fetch a pretrained vision model (and its labels) from its
published URL into the models directory, checking the sha256 from the catalog.

The download goes to a temporary file beside the target and is renamed into place only when
its sha256 matches, so a failed or tampered download never leaves a file the agent would
load. Standard library only (urllib): this is not the cloud client.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from agent.errors import EdgeAgentError
from agent.registry import sha256_file
from agent.vision.catalog import BASE_URL, CATALOG, CatalogFile, CatalogModel

log = logging.getLogger(__name__)

MAX_BYTES = 256 * 1024 * 1024
_CHUNK = 1 << 16


class PullError(EdgeAgentError):
    """A model could not be fetched, or what was fetched is not the published file."""


@dataclass(frozen=True)
class Pulled:
    path: Path
    url: str | None  # None: already present with the right sha256
    size: int


def catalog_model(name: str) -> CatalogModel:
    model = CATALOG.get(name)
    if model is None:
        raise PullError(f"unknown model {name!r}; known: {', '.join(sorted(CATALOG))}")
    return model


def download(url: str, target: Path, sha256: str, timeout_s: float = 60.0) -> int:
    """Fetch `url` into `target` if its sha256 is `sha256`. Returns the size."""
    if not url.startswith(("http://", "https://")):
        raise PullError(f"{url}: only http:// and https:// URLs are fetched")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout_s)
            except urllib.error.HTTPError as exc:
                raise PullError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise PullError(f"{url}: cannot fetch: {reason}") from None
            with response:
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > MAX_BYTES:
                        raise PullError(f"{url}: larger than {MAX_BYTES} bytes; refusing")
                    digest.update(chunk)
                    out.write(chunk)
        actual = digest.hexdigest()
        if actual != sha256:
            raise PullError(
                f"{url}: sha256 mismatch: expected {sha256}, got {actual}; not installed"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a model file is not a secret
        os.replace(tmp, target)
        return size
    finally:
        tmp.unlink(missing_ok=True)


def pull(
    name: str,
    dest: Path,
    *,
    base_url: str | None = None,
    url: str | None = None,
    force: bool = False,
    timeout_s: float = 60.0,
) -> list[Pulled]:
    """Fetch model `name` (and its labels file) into `dest`. `base_url` replaces the
    published location (a mirror: the file names are appended); `url` is the exact URL of the
    model file itself. Files already present with the right sha256 are kept unless `force`."""
    model = catalog_model(name)
    results: list[Pulled] = []
    for item in model.files:
        target = dest / item.file
        if not force and target.is_file() and sha256_file(target) == item.sha256:
            results.append(Pulled(target, None, target.stat().st_size))
            continue
        source = _source(item, model, base_url, url)
        log.info("fetching %s from %s", item.file, source)
        size = download(source, target, item.sha256, timeout_s)
        results.append(Pulled(target, source, size))
    return results


def _source(item: CatalogFile, model: CatalogModel, base_url: str | None, url: str | None) -> str:
    if url is not None and item is model.file:
        return url
    if base_url is not None:
        return base_url.rstrip("/") + "/" + item.file
    return BASE_URL + item.file
