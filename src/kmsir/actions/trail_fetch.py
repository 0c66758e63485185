"""Fetch S3 objects fast: parallel ranged GETs into one buffer per object, handed on as each
object completes.

A small object is one GET; a large one is cut into parts (``PART`` bytes) fetched at once by
the thread pool, each part written straight into its place in one buffer allocated for the
whole object (``readinto`` a slice of it: no temporary file, no join of pieces). Every GET
carries the listing's ETag as ``If-Match``, so an object overwritten between two of its parts
is noticed (S3 answers 412) and fetched again whole once, from a fresh ``HeadObject``
(https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html, "If-Match"). The caller
gets each object as soon as its last part is in, while the others download; at most
``BUFFERED`` bytes of objects (or one object, if larger) are held at once, so memory stays
flat in the size of the prefix.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kmsir.aws import aws_errors
from kmsir.errors import AwsError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Bytes of one ranged GET: an object up to this size is one GET.
PART = 8 * 2**20
#: GETs in flight at once.
WORKERS = 16
#: Bytes of objects held at once (downloading, or downloaded and not yet handed over).
BUFFERED = 64 * 2**20
#: Bytes asked of one response at a time (botocore's ``readinto`` reads, then copies once).
_READ = 2**20
#: S3's answer to a GET whose ``If-Match`` ETag is no longer the object's.
CHANGED = "PreconditionFailed"


@dataclass(frozen=True)
class Listed:
    """One object as ListObjectsV2 listed it."""

    key: str
    size: int
    etag: str


class _Download:
    """One object being fetched: its buffer and the parts still out."""

    def __init__(self, obj: Listed, part: int, attempt: int = 1) -> None:
        self.obj = obj
        self.attempt = attempt
        self.buffer = bytearray(obj.size)
        self.parts = parts(obj.size, part)
        self.left = len(self.parts)
        self.failure: str | None = None
        self.changed = False


def parts(size: int, part: int) -> list[tuple[int, int] | None]:
    """The byte ranges ``(first, last)`` of an object's GETs; ``[None]`` (one GET of the whole
    object, no ``Range``) when it fits in one part."""
    if size <= part:
        return [None]
    return [(start, min(start + part, size) - 1) for start in range(0, size, part)]


def _get(client: S3Client, bucket: str, download: _Download, span: tuple[int, int] | None) -> None:
    """One GET of ``download``'s object (a range of it, or all of it) into its buffer."""
    obj = download.obj
    first, last = span or (0, obj.size - 1)
    # an S3-compatible store may list no ETag: nothing to hold the object to then
    asked: dict[str, Any] = {"Bucket": bucket, "Key": obj.key}
    if obj.etag:
        asked["IfMatch"] = obj.etag
    if span is not None:
        asked["Range"] = f"bytes={first}-{last}"
    with aws_errors(f"GetObject s3://{bucket}/{obj.key}", service="s3"):
        body = client.get_object(**asked)["Body"]
        # botocore's bodies read into a buffer since 2025; an older one's are read and copied
        fill = getattr(body, "readinto", None) or (lambda into: _read_into(body, into))
        try:
            with memoryview(download.buffer) as whole, whole[first : last + 1] as view:
                got = 0
                while got < len(view):
                    read = fill(view[got : got + _READ])
                    if not read:
                        raise AwsError("short", code="IncompleteBody", operation="GetObject")
                    got += read
            # the end of the body: botocore checks the length (and the checksum) it was told
            if body.read(1):
                raise AwsError("long", code="UnexpectedBodyLength", operation="GetObject")
        finally:
            body.close()


def _read_into(body: Any, into: memoryview) -> int:
    chunk = body.read(len(into))
    into[: len(chunk)] = chunk
    return len(chunk)


def _head(client: S3Client, bucket: str, key: str) -> Listed:
    with aws_errors(f"HeadObject s3://{bucket}/{key}", service="s3"):
        head = client.head_object(Bucket=bucket, Key=key)
    return Listed(key, int(head["ContentLength"]), str(head["ETag"]))


def fetch(
    client: S3Client,
    bucket: str,
    objects: list[Listed],
    *,
    workers: int | None = None,
    part: int | None = None,
    buffered: int | None = None,
) -> Generator[tuple[int, bytearray | str], None, None]:
    """Each object (by its index in ``objects``) with its bytes, as soon as they are all in
    (in the order downloads complete), or why it could not be read (an AWS error code, or
    ``CHANGED`` for an object that changed again while fetched a second time). A buffer is
    the caller's until it asks for the next object: it is then no longer counted as held.
    ``workers``, ``part`` and ``buffered`` default to ``WORKERS``, ``PART`` and ``BUFFERED``."""
    part, buffered = part or PART, buffered or BUFFERED
    finished: queue.SimpleQueue[tuple[_Download, BaseException | None]] = queue.SimpleQueue()
    waiting = deque(enumerate(objects))
    index: dict[int, int] = {}  # id of a download -> its object's index
    futures: list[Future[None]] = []
    held = out = 0
    pool = ThreadPoolExecutor(max_workers=workers or WORKERS, thread_name_prefix="kmsir-s3")

    def one(download: _Download, span: tuple[int, int] | None) -> None:
        try:
            _get(client, bucket, download, span)
        except BaseException as exc:  # handed to the caller's thread, which decides
            finished.put((download, exc))
        else:
            finished.put((download, None))

    def start(download: _Download) -> None:
        futures.extend(pool.submit(one, download, span) for span in download.parts)

    try:
        while waiting or out:
            while waiting and (held == 0 or held + waiting[0][1].size <= buffered):
                number, obj = waiting.popleft()
                download = _Download(obj, part)
                index[id(download)] = number
                held, out = held + obj.size, out + 1
                start(download)
            download, error = finished.get()
            if isinstance(error, AwsError):
                download.changed |= error.code == CHANGED
                download.failure = download.failure or error.code
            elif error is not None:
                raise error  # not AWS's answer (no credentials, a bug): the caller's to see
            download.left -= 1
            if download.left:
                continue
            number = index.pop(id(download))
            if download.changed and download.attempt == 1:
                # overwritten since it was listed: once more, whole, as it is now
                try:
                    fresh = _Download(_head(client, bucket, download.obj.key), part, 2)
                except AwsError as exc:
                    download.failure = exc.code
                else:
                    held += fresh.obj.size - download.obj.size
                    index[id(fresh)] = number
                    start(fresh)
                    continue
            out -= 1
            try:
                yield number, download.failure or download.buffer
            finally:
                held -= download.obj.size
                download.buffer = bytearray()
    finally:
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True)
