"""The Zarr v3 feature store of cached teacher targets (DESIGN.md §5, §8).

Schema in `schema.py`, codecs in `codecs.py`, creating and resuming a store in `create.py`, writing views in
`writer.py` (with the storage transforms of `transforms.py` and the export lock of `lock.py`), reading in
`reader.py`, read-ahead in `prefetch.py`, checks and summaries in `verify.py` / `info.py`, the teacher's
per-channel statistics in `stats.py`, URLs and their storage options in `storage.py`. A library: it takes typed
arguments (`StoreLayout`, `StoreFormatConfig`, `StoreURL`), never an experiment's whole config.
"""

from simdistill.feature_store.create import (
    StoreAttrs,
    create_or_resume_store,
    create_store,
    open_for_resume,
    open_for_write,
)
from simdistill.feature_store.info import ArrayInfo, StoreInfo, store_info
from simdistill.feature_store.prefetch import TargetPrefetcher, read_batch
from simdistill.feature_store.reader import FeatureStoreReader, open_store
from simdistill.feature_store.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    ArraySpec,
    StoreLayout,
    arrays_for_losses,
)
from simdistill.feature_store.stats import ChannelStats, channel_stats, read_channel_stats, write_channel_stats
from simdistill.feature_store.storage import StoreLike, StoreURL, store_url
from simdistill.feature_store.transforms import (
    TeacherView,
    compact_boxes,
    stored_values,
)
from simdistill.feature_store.verify import VerifyReport, reset_bad_views, verify_store
from simdistill.feature_store.writer import FeatureStoreWriter

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "ArrayInfo",
    "ArraySpec",
    "ChannelStats",
    "FeatureStoreReader",
    "FeatureStoreWriter",
    "StoreAttrs",
    "StoreInfo",
    "StoreLayout",
    "StoreLike",
    "StoreURL",
    "TargetPrefetcher",
    "TeacherView",
    "VerifyReport",
    "arrays_for_losses",
    "channel_stats",
    "compact_boxes",
    "create_or_resume_store",
    "create_store",
    "open_for_resume",
    "open_for_write",
    "open_store",
    "read_batch",
    "read_channel_stats",
    "reset_bad_views",
    "store_info",
    "store_url",
    "stored_values",
    "verify_store",
    "write_channel_stats",
]
