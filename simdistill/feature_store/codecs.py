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

Quantised mode (`store_format.quantize_bits` > 0 on `quantize_arrays`) replaces the float16 serialiser of those
arrays with `PlaneQuantizeCodec`: every H×W plane of a chunk (a channel of one view) becomes unsigned integer
codes `q` with its own step (scale) and zero point, x ≈ scale · (q − zero), so the maximum error of a plane is
half its step plus float16 rounding of the decoded value. Exact zeros (ReLU features, the masked LiDAR BEV) stay
exactly zero. The step: with `quantize_step` 0, each plane's range in 2^bits − 1 steps; with `quantize_step` s > 0,
one step for every plane of the view, s × the standard deviation of the view's array (an MSE over all channels
loses least for a given size when every channel gets the same error: reverse water-filling), widened only for a
plane whose range would overflow the codes. Uniform error of step Δ adds about Δ²/12 to an MSE, so s = 0.02 adds
3.3e-5 of the array's variance. Codes go to blosc without shuffling (one-byte codes) or byte-shuffled (uint16);
what each setting stores, in bits per value, is measured by `benchmarks/store_paper.py`. The codec is registered
with zarr under `QUANTIZE_CODEC` when this module is imported (every reader and writer of the package imports
it), and every array's zarr.json names it, so a store decodes the way it was written; the store's `codecs` attribute records the mode too.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
from zarr.codecs.numcodecs import BitRound
from zarr.core.array_spec import ArraySpec as ZarrArraySpec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

from simdistill.config import StoreFormatConfig
from simdistill.errors import ConfigError
from simdistill.feature_store.schema import FEATURE_ARRAYS, SCHEMA

BLOSC_BLOCKSIZE = 1 << 18  # 256 KiB blocks: zstd sees long shuffled runs (auto picks smaller, compresses worse)
FLOAT16_MANTISSA_BITS = 10
FLOAT16_MAX = 65504.0
QUANTIZE_CODEC = "simdistill.plane_quantize"
MAX_QUANTIZE_BITS = 16


def lossy_arrays(store_cfg: StoreFormatConfig) -> list[str]:
    """The arrays bit-rounded in lossy mode ([] in lossless mode); validated against the schema, together with the
    quantisation settings (`quantized_arrays`), so one call checks every codec setting before a store is made."""
    quantized_arrays(store_cfg)
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


def quantized_arrays(store_cfg: StoreFormatConfig) -> list[str]:
    """The arrays stored as per-plane integer codes ([] when `quantize_bits` is 0); validated against the schema
    and against the bit-rounded arrays (an array takes one lossy codec)."""
    bits = store_cfg.quantize_bits
    if not 0 <= bits <= MAX_QUANTIZE_BITS:
        raise ConfigError(f"store_format.quantize_bits must be 0 (off) or 1..{MAX_QUANTIZE_BITS}, got {bits}")
    if bits == 0:
        return []
    if not 0.0 <= store_cfg.quantize_step < float("inf"):
        raise ConfigError(f"store_format.quantize_step must be >= 0 (0 = each plane's own range), got "
                          f"{store_cfg.quantize_step}")
    for name in store_cfg.quantize_arrays:
        if name not in FEATURE_ARRAYS:
            raise ConfigError(f"store_format.quantize_arrays names '{name}', which is not a float16 store array; "
                              f"choose from {', '.join(FEATURE_ARRAYS)}")
        if store_cfg.lossy and name in store_cfg.lossy_arrays:
            raise ConfigError(f"store_format: '{name}' is in both lossy_arrays and quantize_arrays; an array takes "
                              "one lossy codec, drop it from one list")
    return list(store_cfg.quantize_arrays)


def codec_mode(store_cfg: StoreFormatConfig) -> str:
    """'lossless', or the lossy codecs joined by '; ', e.g. 'lossy:bitround keepbits=N on [a, b]' and
    'lossy:quantize bits=N per plane on [c]' (stored in the group attributes)."""
    parts = []
    if arrays := lossy_arrays(store_cfg):
        parts.append(f"lossy:bitround keepbits={store_cfg.lossy_keepbits} on [{', '.join(arrays)}]")
    if arrays := quantized_arrays(store_cfg):
        step = f" step={store_cfg.quantize_step:g}*std" if store_cfg.quantize_step else ""
        parts.append(f"lossy:quantize bits={store_cfg.quantize_bits}{step} per plane on [{', '.join(arrays)}]")
    return "; ".join(parts) or "lossless"


def lossy_max_abs(keepbits: int) -> float:
    """Values with |x| at or above this bound bit-round to infinity in float16 (refuse them).

    Rounding to nearest can carry into the exponent: the bound is the midpoint between the largest
    float16 with `keepbits` mantissa bits and 2**16 (checked for every keepbits in the tests; at keepbits=0 the
    midpoint itself is a tie that rounds down to even, so refusing it is conservative).
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
    serializer: ArrayBytesCodec = BytesCodec()
    if name in lossy_arrays(store_cfg):
        filters.append(BitRound(keepbits=store_cfg.lossy_keepbits))
    if name in quantized_arrays(store_cfg):
        serializer = PlaneQuantizeCodec(bits=store_cfg.quantize_bits, rel_step=store_cfg.quantize_step)
        itemsize = serializer.code_dtype.itemsize  # the codes are what blosc sees
    shuffle = "shuffle" if store_cfg.shuffle and itemsize > 1 else "noshuffle"
    compressors = [
        BloscCodec(cname="zstd", clevel=store_cfg.zstd_level, shuffle=shuffle, typesize=itemsize,
                   blocksize=BLOSC_BLOCKSIZE),
        Crc32cCodec(),
    ]
    return {"filters": filters, "serializer": serializer, "compressors": compressors}


def codecs_attr(store_cfg: StoreFormatConfig) -> dict[str, Any]:
    """The codec description stored in the group attributes."""
    return {
        "mode": codec_mode(store_cfg),
        "values": "float16",
        "quantize": {"bits": store_cfg.quantize_bits, "step": store_cfg.quantize_step,
                     "arrays": quantized_arrays(store_cfg),
                     "scheme": "per H×W plane: x = scale * (q - zero), codes uint8 (<= 8 bits) or uint16",
                     "codec": QUANTIZE_CODEC} if quantized_arrays(store_cfg) else None,
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


# -----------------------------------------------------------------------------------------------
# Per-plane quantisation (store_format.quantize_bits)


def _planes(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-2] * x.shape[-1])  # [n, H*W]


def plane_steps(x: np.ndarray, bits: int, rel_step: float = 0.0) -> np.ndarray:
    """[n] quantisation step of each H×W plane of x [..., H, W] (float32-exact, > 0): the plane's range in
    2^bits − 1 steps, or (rel_step > 0) rel_step × std(x) for every plane, widened where the codes would overflow."""
    planes = _planes(x)
    lo, hi = planes.min(axis=1), planes.max(axis=1)
    step = (hi - lo) / ((1 << bits) - 1)  # the finest step whose codes still fit
    if rel_step > 0:
        step = np.maximum(step, rel_step * float(planes.std()))
    flat = np.where(hi != 0, np.abs(hi), 1.0)  # a constant plane: step = |value| (or 1), decoded exactly
    return np.where(step > 0, step, flat).astype(np.float32).astype(np.float64)


def quantize_planes(x: np.ndarray, bits: int, rel_step: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x [..., H, W] (finite) → (codes [..., H, W] uint8 or uint16, scale [n] float32, zero [n] int32), one
    (scale, zero) per H×W plane (n = x.size / (H·W); steps from `plane_steps`); decode with `dequantize_planes`."""
    if not np.all(np.isfinite(x)):
        raise ValueError("quantisation needs finite values (NaN or inf found)")
    planes = _planes(x)
    scale = plane_steps(x, bits, rel_step)
    zero = np.rint(-planes.min(axis=1) / scale)  # q == zero decodes to exactly 0 (0 in [lo, hi]: zero in [0, qmax])
    q = np.clip(np.rint(planes / scale[:, None]) + zero[:, None], 0, (1 << bits) - 1)
    dtype = np.uint8 if bits <= 8 else np.uint16
    return q.astype(dtype).reshape(x.shape), scale.astype(np.float32), zero.astype(np.int32)


def dequantize_planes(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, dtype: Any) -> np.ndarray:
    """codes [..., H, W], scale / zero [n] per H×W plane → scale · (codes − zero) as `dtype`, shaped like codes."""
    planes = codes.reshape(len(scale), -1).astype(np.int32) - zero[:, None]  # [n, H*W], exact integers
    return (planes.astype(np.float32) * scale[:, None]).astype(dtype).reshape(codes.shape)


def quantize_error_bound(x: np.ndarray, bits: int, rel_step: float = 0.0) -> np.ndarray:
    """[n] per-plane bound on |decoded − x| for float16 output: half a step plus float16 rounding."""
    planes = _planes(x)
    peak = np.maximum(np.abs(planes.min(axis=1)), np.abs(planes.max(axis=1)))
    return plane_steps(x, bits, rel_step) / 2 * (1 + 1e-6) + peak * 2.0**-11


def quantize_roundtrip(x: np.ndarray, bits: int, rel_step: float = 0.0) -> np.ndarray:
    """What a quantised array gives back for `x` [..., H, W] (the codec's encode then decode), as float16."""
    return dequantize_planes(*quantize_planes(x, bits, rel_step), np.float16)


@dataclass(frozen=True)
class PlaneQuantizeCodec(ArrayBytesCodec):
    """Zarr v3 array→bytes codec: a chunk's float values as per-plane integer codes.

    Bytes: scale float32[n] | zero int32[n] | codes (uint8 for bits <= 8, else uint16)[chunk shape], little-endian.
    """

    is_fixed_size = False
    bits: int
    rel_step: float  # 0: each plane's range in 2^bits - 1 steps; > 0: this × the chunk's std for every plane

    def __init__(self, *, bits: int, rel_step: float = 0.0) -> None:
        if not 1 <= int(bits) <= MAX_QUANTIZE_BITS:
            raise ValueError(f"{QUANTIZE_CODEC}: bits must be in 1..{MAX_QUANTIZE_BITS}, got {bits}")
        if not 0.0 <= float(rel_step) < float("inf"):
            raise ValueError(f"{QUANTIZE_CODEC}: rel_step must be >= 0, got {rel_step}")
        object.__setattr__(self, "bits", int(bits))
        object.__setattr__(self, "rel_step", float(rel_step))

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype("<u1" if self.bits <= 8 else "<u2")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PlaneQuantizeCodec":
        _, conf = parse_named_configuration(data, QUANTIZE_CODEC, require_configuration=True)
        return cls(**conf)

    def to_dict(self) -> dict[str, Any]:
        return {"name": QUANTIZE_CODEC, "configuration": {"bits": self.bits, "rel_step": self.rel_step}}

    def _encode(self, chunk: NDBuffer, spec: ZarrArraySpec) -> Buffer:
        codes, scale, zero = quantize_planes(chunk.as_numpy_array(), self.bits, self.rel_step)
        raw = scale.astype("<f4").tobytes() + zero.astype("<i4").tobytes() + codes.astype(self.code_dtype).tobytes()
        return spec.prototype.buffer.from_bytes(raw)

    def _decode(self, data: Buffer, spec: ZarrArraySpec) -> NDBuffer:
        raw = data.as_numpy_array().view(np.uint8)
        n = int(np.prod(spec.shape[:-2], dtype=np.int64))
        scale = raw[: 4 * n].view("<f4")
        zero = raw[4 * n : 8 * n].view("<i4")
        codes = raw[8 * n :].view(self.code_dtype).reshape(spec.shape)
        out = dequantize_planes(codes, scale, zero, spec.dtype.to_native_dtype())
        return spec.prototype.nd_buffer.from_ndarray_like(out)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ZarrArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ZarrArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ZarrArraySpec) -> int:
        n_values = int(np.prod(chunk_spec.shape, dtype=np.int64))
        n_planes = int(np.prod(chunk_spec.shape[:-2], dtype=np.int64))
        return 8 * n_planes + n_values * self.code_dtype.itemsize


register_codec(QUANTIZE_CODEC, PlaneQuantizeCodec)
