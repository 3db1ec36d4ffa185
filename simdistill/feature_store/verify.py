"""`verify_store`: read every done view of every array and list what is wrong with it.

Checks: array shapes match the schema for the store's own attributes; every chunk of a done view
passes its crc32c and decodes; float values are finite (a chunk file missing from a done view
reads as the NaN fill value, so this also catches deleted files); sample_index / view lie in range
(their fill value is -1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rich.progress import Progress

from simdistill.feature_store.create import open_for_write
from simdistill.feature_store.reader import one_line, open_store
from simdistill.feature_store.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    array_shape,
    attrs_dim_sizes,
)
from simdistill.feature_store.storage import StoreLike, StoreURL

ALL_VIEWS = -1  # `view` of a problem that concerns the whole array (a wrong shape, a missing array)


@dataclass
class VerifyReport:
    url: str
    n_views: int
    n_done: int
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # (view or ALL_VIEWS, array, reason)
    location: StoreURL | None = None  # the URL with its storage options (what `reset_bad_views` reopens)

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def bad_views(self) -> list[int]:
        """Views to reset and re-export (`reset_bad_views`; empty when a problem concerns whole arrays only)."""
        return sorted({v for v, _, _ in self.bad if v != ALL_VIEWS})

    def to_text(self) -> str:
        head = f"{self.url}: {self.n_done} of {self.n_views} views done, "
        if self.ok:
            return head + "all done views verified"
        lines = [head + f"{len(self.bad)} problem(s) in {len(self.bad_views)} view(s)"]
        for v, name, reason in self.bad:
            where = "all views" if v == ALL_VIEWS else f"view {v}"
            lines.append(f"  {where} {name}: {reason}")
        return "\n".join(lines)


def _value_problem(name: str, x: np.ndarray, a: dict) -> str | None:
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        return f"{int((~np.isfinite(x)).sum())} non-finite values (a missing or damaged chunk)"
    if name == "sample_index" and not 0 <= int(x) < len(a["dataset"]["sample_tokens"]):
        return f"sample_index {int(x)} is outside 0..{len(a['dataset']['sample_tokens']) - 1} (a missing chunk?)"
    if name == "view" and not 0 <= int(x) < a["views_per_sample"]:
        return f"view {int(x)} is outside 0..{a['views_per_sample'] - 1} (a missing chunk?)"
    return None


def verify_store(url: StoreLike, *, progress: bool = True) -> VerifyReport:
    """Verify every done view; the report lists (view, array, reason) for each problem found."""
    reader = open_store(url, any_version=True)
    done = reader.done_views()
    report = VerifyReport(url=str(url), n_views=reader.n_views, n_done=int(done.sum()), location=reader.location)
    if reader.attrs.get("schema_version") != SCHEMA_VERSION:
        report.bad.append((ALL_VIEWS, "zarr.json", f"schema version {reader.attrs.get('schema_version')}"))
        return report
    sizes = attrs_dim_sizes(reader.attrs, n_views=reader.n_views)
    names = []
    for name in SCHEMA:
        if name == "done":
            continue
        if name not in reader.available:
            report.bad.append((ALL_VIEWS, name, "array is missing"))
            continue
        shape, expected = tuple(reader.array(name).shape), array_shape(name, sizes)
        if shape != expected:
            report.bad.append((ALL_VIEWS, name, f"shape {shape}, expected {expected}"))
            continue
        names.append(name)

    views = [int(v) for v in np.flatnonzero(done)]
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("verifying views", total=len(views))
        for v in views:
            for name in names:
                try:
                    x = np.asarray(reader.array(name)[v])
                except Exception as exc:  # noqa: BLE001 - checksum or decode failure
                    report.bad.append((v, name, one_line(exc)))
                    continue
                problem = _value_problem(name, x, reader.attrs)
                if problem:
                    report.bad.append((v, name, problem))
            bar.advance(task)
    return report


def reset_bad_views(report: VerifyReport) -> list[int]:
    """Clear the done flag of every view `report` found bad, under the export lock, so that re-running the same
    export rewrites exactly those views. Returns the views reset."""
    views = report.bad_views
    if views:
        writer = open_for_write(report.location or report.url)
        with writer.lock():
            writer.reset_done(views)
    return views
