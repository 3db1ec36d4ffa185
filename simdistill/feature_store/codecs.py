"""Codec chains for the feature store (DESIGN.md §5): float16 → bytes → shuffle + zstd → crc32c.

One Blosc codec (zstd level 3 inside, byte shuffle, 256 KiB blocks) rather than numcodecs `Shuffle` followed by
zarr's `ZstdCodec`: on demo- and paper-size views it compressed slightly better and decoded faster (decoding is
what training repeats every epoch; encoding happens once), and it is a Zarr v3 core codec, whereas the
numcodecs wrappers warn that other Zarr implementations may not read them. Level 9 gains little size at a
much slower encode; byte shuffle barely matters for dense lossless float16 features but shrinks heatmaps and
helps bit-rounded data. The measurements behind these choices: `benchmarks/results/design_choices.md`.

Lossy mode adds numcodecs `BitRound(keepbits)` as an array→array filter before serialisation. It
works on float16 directly (numcodecs ≥ 0.16 knows float16's 10 mantissa bits), so no manual rounding
is needed. It is the only numcodecs codec we use; its "not in the v3 spec" warning is silenced where
we create or open such arrays (`quiet_numcodecs_warning`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
from zarr.codecs.numcodecs import BitRound

from simdistill.config import StoreFormatConfig
from simdistill.errors import ConfigError
from simdistill.feature_store.schema import FEATURE_ARRAYS, SCHEMA

BLOSC_BLOCKSIZE = 1 << 18  # 256 KiB blocks: zstd sees long shuffled runs (auto picks smaller, compresses worse)
FLOAT16_MANTISSA_BITS = 10
FLOAT16_MAX = 65504.0


def lossy_arrays(store_cfg: StoreFormatConfig) -> list[str]:
    """The arrays bit-rounded in lossy mode ([] in lossless mode); validated against the schema."""
    if not store_cfg.lossy:
        return []
    for name in store_cfg.lossy_arrays:
        if name not in FEATURE_ARRAYS:
            raise ConfigError(
                f"store_format.lossy_arrays names '{name}', which is not a float16 store array; "
                f"choose from {', '.join(FEATURE_ARRAYS)}"
            )
    if not 0 <= store_cfg.lossy_keepbits <= FLOAT16_MANTISSA_BITS:
        raise ConfigError(
            f"store_format.lossy_keepbits must be in 0..{FLOAT16_MANTISSA_BITS} (float16 mantissa bits), "
            f"got {store_cfg.lossy_keepbits}"
        )
    return list(store_cfg.lossy_arrays)


def codec_mode(store_cfg: StoreFormatConfig) -> str:
    """'lossless' or 'lossy:bitround keepbits=N on [a, b]' (stored in the group attributes)."""
    arrays = lossy_arrays(store_cfg)
    if not arrays:
        return "lossless"
    return f"lossy:bitround keepbits={store_cfg.lossy_keepbits} on [{', '.join(arrays)}]"


def lossy_max_abs(keepbits: int) -> float:
    """Values with |x| at or above this bound bit-round to infinity in float16 (refuse them).

    Rounding to nearest can carry into the exponent: the bound is the midpoint between the largest
    float16 with `keepbits` mantissa bits and 2**16 (checked for every keepbits in the tests).
    """
    largest_kept = (2.0 - 2.0 ** (-keepbits)) * 2.0**15
    return largest_kept + 2.0 ** (15 - keepbits - 1)


def lossy_rel_error(keepbits: int) -> float:
    """Relative error bound of bit-rounding a normal float16 value to `keepbits` mantissa bits."""
    return 2.0 ** (-(keepbits + 1))


def array_codecs(name: str, store_cfg: StoreFormatConfig) -> dict[str, Any]:
    """`filters`, `serializer` and `compressors` keyword arguments for zarr's `create_array`."""
    spec = SCHEMA[name]
    itemsize = {"float16": 2, "float32": 4, "int32": 4, "int16": 2, "bool": 1}[spec.dtype]
    filters = []
    if name in lossy_arrays(store_cfg):
        filters.append(BitRound(keepbits=store_cfg.lossy_keepbits))
    compressors = [
        BloscCodec(
            cname="zstd",
            clevel=store_cfg.zstd_level,
            shuffle="shuffle" if store_cfg.shuffle and itemsize > 1 else "noshuffle",
            typesize=itemsize,
            blocksize=BLOSC_BLOCKSIZE,
        ),
        Crc32cCodec(),
    ]
    return {"filters": filters, "serializer": BytesCodec(), "compressors": compressors}


def codecs_attr(store_cfg: StoreFormatConfig) -> dict[str, Any]:
    """The codec description stored in the group attributes."""
    return {
        "mode": codec_mode(store_cfg),
        "values": "float16",
        "compressor": f"blosc zstd level {store_cfg.zstd_level}",
        "shuffle": "byte" if store_cfg.shuffle else "none",
        "checksum": "crc32c per chunk",
        "sharding": store_cfg.sharding,
        "views_per_shard": store_cfg.views_per_shard if store_cfg.sharding else 1,
        "compact_boxes": store_cfg.compact_boxes,
        "lidar_bev_masked": True,
    }


@contextlib.contextmanager
def quiet_numcodecs_warning() -> Iterator[None]:
    """Silence zarr's 'Numcodecs codecs are not in the Zarr version 3 specification' warning (BitRound)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
        yield
