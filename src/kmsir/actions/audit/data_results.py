"""What the checks over the data listings share: resources named by ARN and by name, the
evidence they were judged from, and could-not-check results for refused reads, one per
missing permission, naming the resources each left unjudged (a listing refused is
could-not-check for its kind; the other listings are still judged)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from kmsir.actions.audit.context import AuditContext, Unavailable
from kmsir.actions.audit.listings import Listing, Resource
from kmsir.actions.audit.rules import Result


def arns(resources: Iterable[Resource]) -> tuple[str, ...]:
    """The resources' ARNs."""
    return tuple(r.arn for r in resources)


def names(resources: list[Resource], shown: int = 8) -> str:
    """The first names of ``resources``, for a detail line."""
    listed = ", ".join(r.name for r in resources[:shown])
    return listed + (f" and {len(resources) - shown} more" if len(resources) > shown else "")


def evidence(listing: Listing, resources: Iterable[Resource] = ()) -> tuple[str, ...]:
    """The listing's evidence and the DescribeKey responses that told the resources' keys."""
    described = sorted({r.protection.evidence for r in resources if r.protection.evidence})
    return (listing.evidence, *described)


def refused(pairs: Iterable[tuple[str, Unavailable]], what: str) -> list[Result]:
    """One could-not-check per missing permission, naming the resources it left unjudged."""
    by_permission: dict[str, list[tuple[str, Unavailable]]] = {}
    for arn, exc in pairs:
        by_permission.setdefault(exc.permission or exc.code, []).append((arn, exc))
    return [
        Result(
            "could-not-check",
            tuple(arn for arn, _ in found),
            detail=f"{what}: {found[0][1].detail}"
            + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""),
            missing=permission,
        )
        for permission, found in by_permission.items()
    ]


def unknown(resources: Iterable[Resource]) -> Iterator[tuple[str, Unavailable]]:
    """The resources whose key (or encryption) could not be read, with the refusal."""
    for r in resources:
        if r.protection.unavailable is not None:
            yield r.arn, r.protection.unavailable


def each(
    audit: AuditContext,
    reads: Iterable[tuple[str, Callable[[AuditContext], Listing]]],
    out: list[Result],
) -> Iterator[Listing]:
    """Each listing of ``reads`` (words, reader); a refused one is a could-not-check in
    ``out``, and the others are still judged."""
    for what, read in reads:
        try:
            yield read(audit)
        except Unavailable as exc:
            detail = f"{what}: {exc.detail}"
            out.append(Result("could-not-check", detail=detail, missing=exc.permission))
