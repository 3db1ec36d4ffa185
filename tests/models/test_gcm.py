"""GCM: grid_sample deformable attention against an explicit per-query/head/point bilinear loop."""

from __future__ import annotations

import math

import pytest
import torch

from simdistill.config import GCMConfig
from simdistill.errors import ConfigError
from simdistill.models.gcm import GCM, deformable_attention


def naive_deformable_attention(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """value [B, M, Ch, H, W]; locations [B, Q, M, P, 2] normalised (x, y); weights [B, Q, M, P] -> [B, Q, M*Ch].

    Bilinear sampling written out: pixel (i, j) has its centre at ((j + 0.5) / W, (i + 0.5) / H);
    corners outside the map contribute zero.
    """
    value, locations, weights = value.detach(), locations.detach(), weights.detach()
    b, m, ch, h, w = value.shape
    q, p = locations.shape[1], locations.shape[3]
    out = torch.zeros(b, q, m, ch, dtype=torch.float64)
    for bi in range(b):
        for qi in range(q):
            for mi in range(m):
                for pi in range(p):
                    x = float(locations[bi, qi, mi, pi, 0]) * w - 0.5
                    y = float(locations[bi, qi, mi, pi, 1]) * h - 0.5
                    x0, y0 = math.floor(x), math.floor(y)
                    sample = torch.zeros(ch, dtype=torch.float64)
                    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                        if 0 <= xi < w and 0 <= yi < h:
                            sample += (1 - abs(x - xi)) * (1 - abs(y - yi)) * value[bi, mi, :, yi, xi].double()
                    out[bi, qi, mi] += float(weights[bi, qi, mi, pi]) * sample
    return out.reshape(b, q, m * ch).float()


def test_deformable_attention_matches_naive_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    b, m, ch, h, w, q, p = 2, 2, 3, 4, 5, 6, 3
    value = torch.randn(b, m, ch, h, w, generator=gen)
    locations = torch.rand(b, q, m, p, 2, generator=gen) * 1.4 - 0.2  # some samples fall off the map
    weights = torch.rand(b, q, m, p, generator=gen).softmax(-1)
    torch.testing.assert_close(
        deformable_attention(value, locations, weights), naive_deformable_attention(value, locations, weights),
        atol=1e-5, rtol=1e-5,
    )


def test_gcm_layer_matches_naive_reference() -> None:
    torch.manual_seed(0)
    channels, h, w = 8, 3, 4
    gcm = GCM(channels, GCMConfig(heads=2, points=3), (h, w), cell_size=1.0)
    with torch.no_grad():  # random weights everywhere, offsets large enough to leave the map
        for param in gcm.parameters():
            param.normal_(0.0, 0.5)
        gcm.sampling_offsets.weight.mul_(4.0)
    x = torch.randn(2, channels, h, w)
    out = gcm(x)

    # The layer written out with the reference sampler.
    src = x.flatten(2).transpose(1, 2)  # [B, HW, C]
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.cat([gcm.col_embed[cols.reshape(-1)], gcm.row_embed[rows.reshape(-1)]], dim=-1)  # [HW, C]
    query = src + pos
    value = gcm.value_proj(src).view(2, h * w, 2, 4).permute(0, 2, 3, 1).reshape(2, 2, 4, h, w)
    offsets = gcm.sampling_offsets(query).view(2, h * w, 2, 3, 2)
    weights = gcm.attention_weights(query).view(2, h * w, 2, 3).softmax(-1)
    ref = torch.stack([(cols.reshape(-1) + 0.5) / w, (rows.reshape(-1) + 0.5) / h], dim=-1)  # cell centres
    locations = ref[None, :, None, None] + offsets / torch.tensor([w, h])
    assert ((locations < 0) | (locations > 1)).any()
    attended = gcm.output_proj(naive_deformable_attention(value, locations, weights))
    expected = (src + attended).transpose(1, 2).reshape(2, channels, h, w)  # attn(src) + src, no norm
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_gcm_init_samples_on_circles_and_is_differentiable() -> None:
    gcm = GCM(8, GCMConfig(heads=4, points=2, reach=1.2), (5, 5), cell_size=0.6)  # reach 2 cells
    bias = gcm.sampling_offsets.bias.view(4, 2, 2)
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    torch.testing.assert_close(bias[:, 0], directions, atol=1e-6, rtol=0)  # point i at (i + 1) cells
    torch.testing.assert_close(bias[:, 1], 2 * directions, atol=1e-6, rtol=0)
    assert gcm.sampling_offsets.weight.abs().sum() == 0 and gcm.attention_weights.weight.abs().sum() == 0
    x = torch.randn(1, 8, 5, 5, requires_grad=True)
    gcm(x).square().sum().backward()
    assert x.grad.abs().sum() > 0 and gcm.sampling_offsets.weight.grad.abs().sum() > 0


def test_gcm_keeps_where_the_lift_put_mass() -> None:
    """The residual is not normalised: a map that is zero outside a few cells stays near zero there."""
    torch.manual_seed(0)
    gcm = GCM(8, GCMConfig(heads=2, points=2), (6, 6), cell_size=1.0)
    x = torch.zeros(1, 8, 6, 6)
    x[0, :, 2, 3] = 5.0
    out = gcm(x)
    assert out.shape == x.shape
    assert out[0, :, 2, 3].norm() > 5 * out[0, :, 5, 0].norm()


@pytest.mark.parametrize("heads, channels", [(3, 8), (8, 12)])
def test_heads_must_divide_channels(heads: int, channels: int) -> None:
    with pytest.raises(ConfigError, match="must divide"):
        GCM(channels, GCMConfig(heads=heads, points=2), (4, 4), cell_size=1.0)


@pytest.mark.parametrize("cell_size", [0.6, 1.2])
def test_gcm_reach_is_in_metres_whatever_the_cell(cell_size: float) -> None:
    """The official 20 points on 0.6 m cells reach 12 m; on 1.2 m cells the same config still reaches 12 m."""
    gcm = GCM(8, GCMConfig(heads=4, points=20, reach=12.0), (8, 8), cell_size=cell_size)
    offsets = gcm.sampling_offsets.bias.view(4, 20, 2)  # [M, P, 2] in cells
    farthest = offsets.abs().amax(dim=-1).max() * cell_size  # Chebyshev ring: the axis-aligned heads reach it
    torch.testing.assert_close(farthest, torch.tensor(12.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(offsets[0, 0].abs().max() * cell_size, torch.tensor(0.6), atol=1e-4, rtol=0)


def test_zero_initialised_output_makes_the_gcm_start_as_the_identity() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 5)
    plain = GCM(8, GCMConfig(heads=2, points=4), (5, 5), cell_size=1.0)
    zero = GCM(8, GCMConfig(heads=2, points=4, zero_init_output=True), (5, 5), cell_size=1.0)
    assert not torch.allclose(plain(x), x)
    torch.testing.assert_close(zero(x), x)
    zero(x).square().sum().backward()
    assert zero.output_proj.weight.grad.abs().sum() > 0  # it still learns
