"""Download HIGGS.csv.gz once: resumable (HTTP Range), verified (size, sha256), never half-named.

The bytes go to `<name>.part` beside the destination and take the final name only once their size
and sha256 match. An interrupted download keeps its `.part`; the same command resumes it. http(s)
sources go through urllib; anything else (s3://, gs://, file paths) through pyarrow's filesystems.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

from raypkg.errors import UsageError, make_writable_dir

UCI_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00280/HIGGS.csv.gz"
CHUNK = 1 << 20  # bytes per read


@dataclass(frozen=True)
class Expected:
    """What the finished file must be; None skips that check."""

    size: int | None = 2_816_407_858  # UCI's HIGGS.csv.gz
    sha256: str | None = "ea302c18164d4e3d916a1e2e83a9a8d07069fa6ebc7771e4c0540d54e593b698"


UCI = Expected()


def fetch(url: str, dest_dir: str, expected: Expected = UCI, timeout: float = 60.0, progress: bool = True,
          log=print) -> str:  # fmt: skip
    """Download `url` into `dest_dir`; return the verified file's path."""
    final = os.path.join(dest_dir, os.path.basename(urlparse(url).path.rstrip("/")) or "HIGGS.csv.gz")
    part = final + ".part"
    created = make_writable_dir(dest_dir, "--dest")
    try:
        return _fetch(url, final, part, expected, timeout, progress, log)
    except BaseException:
        if created and not os.listdir(dest_dir):
            os.rmdir(dest_dir)  # leave no trace of a fetch that got nothing
        raise


def _fetch(url: str, final: str, part: str, expected: Expected, timeout: float, progress: bool, log) -> str:
    if os.path.exists(final):
        verify(final, expected, hash_file(final), on_mismatch=f"remove {final} and run again")
        log(f"fetch: {final} is already there and verified")
        return final
    is_http = urlparse(url).scheme in ("http", "https")
    digest = (download_http if is_http else copy_arrow)(url, part, expected, timeout, progress)
    verify(part, expected, digest, on_mismatch="the download was removed; check --url, --size and --sha256",
           remove=True)  # fmt: skip
    os.replace(part, final)
    log(f"fetch: {final} ({os.path.getsize(final):,} bytes, sha256 verified)" if expected.sha256 else
        f"fetch: {final} ({os.path.getsize(final):,} bytes)")  # fmt: skip
    return final


def hash_file(path: str, hasher=None):
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            hasher.update(block)
    return hasher


def verify(path: str, expected: Expected, hasher, on_mismatch: str, remove: bool = False) -> None:
    size = os.path.getsize(path)
    problem = None
    if expected.size is not None and size != expected.size:
        problem = f"is {size:,} bytes, expected {expected.size:,}"
    elif expected.sha256 is not None and hasher.hexdigest() != expected.sha256.lower():
        problem = f"has sha256 {hasher.hexdigest()}, expected {expected.sha256.lower()}"
    if problem:
        if remove:
            os.remove(path)
        raise UsageError(f"{path} {problem}: {on_mismatch}")


def download_http(url: str, part: str, expected: Expected, timeout: float, progress: bool):
    """Append the rest of `url` to `part`; return the sha256 hasher over all of part's bytes."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if expected.size is not None and have > expected.size:
        os.remove(part)  # longer than the file can be: not a prefix of it
        have = 0
    hasher = hash_file(part) if have else hashlib.sha256()
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after `have`: the part is already whole
            return hasher
        raise UsageError(f"{url}: HTTP {e.code} {e.reason}: check --url") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UsageError(f"cannot download {url} ({reason}): check --url and the network") from None
    with response:
        if have and response.status != 206:  # the server ignored Range: start again
            have, hasher = 0, hashlib.sha256()
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else expected.size
        if expected.size is not None and total is not None and total != expected.size:
            raise UsageError(f"{url} is {total:,} bytes, expected {expected.size:,}: check --url or --size")
        with open(part, "ab" if have else "wb") as out, progress_bar(total, have, progress) as advance:
            try:
                while block := response.read(CHUNK):
                    out.write(block)
                    hasher.update(block)
                    advance(len(block))
                if length and out.tell() < total:
                    raise ConnectionError("connection closed early")
            except (TimeoutError, socket.timeout, ConnectionError, http.client.IncompleteRead) as e:
                raise UsageError(
                    f"download of {url} stopped ({e or type(e).__name__}) after {out.tell():,} bytes; "
                    f"{part} is kept: run the same command to resume"
                ) from None
    return hasher


def copy_arrow(source: str, part: str, expected: Expected, timeout: float, progress: bool):
    """Copy a file that pyarrow's filesystems can open (s3://, gs://, a path), resuming `part`."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        uri = source if "://" in source else os.path.abspath(source)
        fs, path = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            problem = "not found" if info.type == pafs.FileType.NotFound else "is not a file"
            raise UsageError(f"{source} {problem}: give a HIGGS.csv.gz URL, bucket path or file")
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if have > info.size or (expected.size is not None and info.size != expected.size):
            have = 0
        if expected.size is not None and info.size != expected.size:
            raise UsageError(f"{source} is {info.size:,} bytes, expected {expected.size:,}: check the source or --size")
        hasher = hash_file(part) if have else hashlib.sha256()
        with fs.open_input_file(path) as src, open(part, "ab" if have else "wb") as out, \
                progress_bar(info.size, have, progress) as advance:  # fmt: skip
            src.seek(have)
            while block := src.read(CHUNK):
                out.write(block)
                hasher.update(block)
                advance(len(block))
        return hasher
    except (pa.ArrowException, OSError) as e:
        raise UsageError(f"cannot read {source} ({str(e).splitlines()[0]}): check the path and credentials") from None


class progress_bar:
    """A rich progress bar on stderr; the context value is `advance(bytes)`."""

    def __init__(self, total: int | None, done: int, enabled: bool):
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        self.bar = Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), disable=not enabled)  # fmt: skip
        self.task = self.bar.add_task("fetch", total=total, completed=done)

    def __enter__(self):
        self.bar.start()
        return lambda n: self.bar.advance(self.task, n)

    def __exit__(self, *exc):
        self.bar.stop()
