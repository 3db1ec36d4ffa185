"""Train a camera-only student of your own from a simdistill feature store, through `simdistill.data` alone.

    python examples/own_student.py --store teacher.zarr --dataroot data/demo --steps 200

The student is plain PyTorch and deliberately small: a conv image encoder, a geometric lift of the image features
onto the store's BEV grid (each BEV cell at one height, projected into every camera through the batch's
calibration and augmentation matrices), a BEV conv and a class heatmap head. It learns from the GT boxes (a
Gaussian heatmap, BCE) and from the teacher: MSE from its BEV features (through a 1×1 adapter) to the stored
`cam_bev` (or `fused_bev`), and MSE between its heatmap probabilities and the stored heatmap's.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from simdistill.data import CachedBatch, CachedTeacherDataset, OneViewPerSampleSampler, collate_cached_views

LIFT_HEIGHT = -1.0  # m in the LiDAR frame: roughly the height of object centres
SIGMA = 1.0  # GT Gaussian radius in BEV cells
HEAT_WEIGHT = 10.0  # heatmap probabilities differ by little; weigh their MSE up


class OwnStudent(nn.Module):
    def __init__(self, layout, *, channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.layout = layout  # the store's grid: rows = y, columns = x, cell i centred at min + (i + 0.5) * step
        self.encoder = nn.Sequential(  # [B*N, 3, H, W] -> [B*N, C, H/8, W/8]
            nn.Conv2d(3, channels, 3, 2, 1), nn.ReLU(), nn.Conv2d(channels, channels, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 2, 1), nn.ReLU())
        self.bev = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU())
        self.head = nn.Conv2d(channels, len(layout.class_names), 1)
        self.adapter = nn.Conv2d(channels, teacher_channels, 1)  # student BEV -> the teacher's channels
        nn.init.constant_(self.head.bias, -2.0)

    def forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = batch.images.shape[:2]
        feats = self.encoder(batch.images.flatten(0, 1))
        bev = self.bev(lift(feats.unflatten(0, (b, n)), batch, self.layout))  # [B, C, H, W]
        return bev, self.head(bev)  # features, heatmap logits [B, n_cls, H, W]


def bev_cells(layout) -> torch.Tensor:
    """[H*W, 4] homogeneous centres of the BEV cells at LIFT_HEIGHT, in the augmented LiDAR frame."""
    (x0, _, dx), (y0, _, dy) = layout.xbound, layout.ybound
    h, w = layout.grid_size
    yy, xx = torch.meshgrid(y0 + (torch.arange(h) + 0.5) * dy, x0 + (torch.arange(w) + 0.5) * dx, indexing="ij")
    return torch.stack([xx, yy, torch.full_like(xx, LIFT_HEIGHT), torch.ones_like(xx)], -1).reshape(-1, 4)


def lift(feats: torch.Tensor, batch, layout) -> torch.Tensor:
    """Image features [B, N, C, h, w] -> BEV [B, C, H, W]: the mean over the cameras that see each cell."""
    b, n, c = feats.shape[:3]
    img_h, img_w = batch.images.shape[-2:]
    lidar2cam = torch.linalg.inv(batch.camera2lidar) @ torch.linalg.inv(batch.lidar_aug_matrix)[:, None]
    cam = bev_cells(layout).to(feats) @ lidar2cam.transpose(-1, -2)  # [B, N, HW, 4] camera frame
    pix = cam[..., :3] @ batch.cam_intrinsics[..., :3, :3].transpose(-1, -2)  # [B, N, HW, 3] (u*d, v*d, d)
    uv = pix[..., :2] / pix[..., 2:3].clamp(min=1e-3)  # raw-image pixels
    aug = batch.img_aug_matrix  # raw -> augmented pixels, acting on (u, v) after the division
    uv = uv @ aug[..., :2, :2].transpose(-1, -2) + aug[..., None, :2, 3]
    grid = torch.stack([uv[..., 0] / (img_w - 1), uv[..., 1] / (img_h - 1)], -1) * 2 - 1  # [B, N, HW, 2]
    seen = (pix[..., 2] > 0.5) & (grid.abs() <= 1).all(-1)  # [B, N, HW]
    sampled = F.grid_sample(feats.flatten(0, 1), grid.flatten(0, 1)[:, None], align_corners=True)
    sampled = sampled.view(b, n, c, -1) * seen[:, :, None]  # [B, N, C, HW]
    bev = sampled.sum(1) / seen.sum(1, keepdim=True).clamp(min=1)  # [B, C, HW]
    return bev.view(b, c, *layout.grid_size)


def gt_heatmap(batch, layout) -> torch.Tensor:
    """[B, n_cls, H, W] Gaussians at the GT box centres (boxes are already in the augmented frame), in the stored
    heatmap's channel order: the classes of the head's tasks, concatenated."""
    (x0, _, dx), (y0, _, dy) = layout.xbound, layout.ybound
    h, w = layout.grid_size
    channels = [name for task in layout.tasks for name in task]
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = torch.zeros(len(batch.gt_boxes), len(channels), h, w)
    for i, (boxes, labels) in enumerate(zip(batch.gt_boxes, batch.gt_labels)):
        for box, label in zip(boxes.cpu(), labels.tolist()):
            c = channels.index(layout.class_names[label])  # labels index the store's class_names
            col, row = (box[0] - x0) / dx - 0.5, (box[1] - y0) / dy - 0.5
            blob = torch.exp(-((cols - col) ** 2 + (rows - row) ** 2) / (2 * SIGMA ** 2))
            out[i, c] = torch.maximum(out[i, c], blob)
    return out


def step_terms(model: OwnStudent, batch: CachedBatch, feature: str) -> dict[str, torch.Tensor]:
    """The named loss terms of one step: GT heatmap, feature distillation, heatmap distillation."""
    bev, logits = model(batch.inputs)
    terms = {"gt": F.binary_cross_entropy_with_logits(logits, gt_heatmap(batch.inputs, model.layout).to(logits)),
             "feat": F.mse_loss(model.adapter(bev), batch.targets[feature]),
             "heat": F.mse_loss(logits.sigmoid(), batch.targets["heatmap"].sigmoid())}
    terms["loss"] = terms["gt"] + terms["feat"] + HEAT_WEIGHT * terms["heat"]
    return terms


def train(args: argparse.Namespace) -> list[dict[str, float]]:
    """Run `args.steps` steps; returns every step's terms (what the test checks)."""
    torch.manual_seed(args.seed)
    ds = CachedTeacherDataset(args.store, dataroot=args.dataroot, arrays=(args.feature, "heatmap"))
    sampler = OneViewPerSampleSampler(ds, seed=args.seed)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, collate_fn=collate_cached_views,
                        num_workers=args.workers, drop_last=True)
    teacher_channels = {"cam_bev": ds.layout.cam_channels, "fused_bev": ds.layout.fused_channels}[args.feature]
    model = OwnStudent(ds.layout, channels=args.channels, teacher_channels=teacher_channels)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    history: list[dict[str, float]] = []
    for epoch in range(math.ceil(args.steps / max(len(loader), 1))):
        sampler.set_epoch(epoch)
        for batch in loader:
            if len(history) == args.steps:
                break
            terms = step_terms(model, batch, args.feature)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
            history.append({k: float(v.detach()) for k, v in terms.items()})
            print(f"step {len(history)}: " + " ".join(f"{k} {v:.4f}" for k, v in history[-1].items()), flush=True)
    return history


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="feature store URL (a path or s3://...)")
    p.add_argument("--dataroot", default=None, help="your copy of the data it was exported from (default: recorded)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--feature", default="cam_bev", choices=("cam_bev", "fused_bev"), help="teacher BEV to distill")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
