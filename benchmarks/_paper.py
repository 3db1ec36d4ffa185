"""Paper-size pieces of the benchmarks: the 1600x900 synthetic world, the config at
the nuscenes_swint config sizes on it, teacher checkpoints, the store export and its per-view cost, the
teacher-alone timing and the loader's rate per core. Public package API only.

Every step is run on `cfg.device`: with `--set device=cuda` the timings synchronise the device before reading the
clock (the training loop itself synchronises every step: it reads each loss term back as a float).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

import _common as C

NUSCENES_TRAIN_SAMPLES = 28_130
PAPER_IMAGE = (1600, 900)  # nuScenes' camera resolution: the paper's resize/crop to 256x704 applies unchanged
SMOKE_IMAGE = (200, 112)


def paper_world(workdir: Path, *, scenes: int, samples: int, smoke: bool) -> Path:
    """A synthetic world at 1600x900 (`scenes` scenes of `samples` key frames; the last scene is mini_val; 200x112
    with --smoke), rendered under workdir/paper_world and reused when its settings match."""
    from simdistill.config import WorldConfig, config_to_dict
    from simdistill.pipeline.synthetic import make_demo_data

    width, height = SMOKE_IMAGE if smoke else PAPER_IMAGE
    world = WorldConfig(image_width=width, image_height=height, scenes=scenes, samples_per_scene=samples)
    root = workdir / "paper_world"
    marker = root / ".simdistill-world.json"
    if marker.is_file() and json.loads(marker.read_text()).get("world") == config_to_dict(world):
        return root
    C.log(f"paper: rendering a {width}x{height} world ({scenes} scenes x {samples} key frames) into {root}")
    shutil.rmtree(root, ignore_errors=True)
    make_demo_data(root, world, progress=False)
    return root


def paper_config(*, dataroot: Path, smoke: bool, threads: int, overrides: list[str] = ()) -> Any:
    """the nuscenes_swint config (tiny with --smoke) on a synthetic v1.0-mini world, batch 1, on the CPU
    unless `overrides` (the user's --set, applied last) say otherwise."""
    from simdistill.config import load_config

    return load_config(C.TINY_CONFIG if smoke else C.PAPER_CONFIG, [
        "device=cpu", f"threads={threads}", f"data.dataroot={dataroot}", "data.version=v1.0-mini",
        "data.train_split=mini_train", "data.val_split=mini_val", "student_train.batch_size=1",
        "export.workers=1", "export.views_per_task=3", f"export.threads_per_worker={max(threads, 1)}", *overrides])


def teacher_checkpoint(cfg: Any, *, source: Path | None, out: Path) -> Path:
    """A teacher checkpoint whose model config is `cfg.model`: `source`'s weights (random init, seed 0, when None;
    step costs do not depend on the weights). A checkpoint is only accepted for the model config it records, and
    that includes student-only keys (model.shared_lift), so the shared-lift runs get a copy recording theirs."""
    import torch

    from simdistill.models import build_model
    from simdistill.training.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(cfg.seed)
    teacher = build_model("teacher", cfg.model, (cfg.augment.final_height, cfg.augment.final_width))
    if source is not None:
        teacher.load_state_dict(load_checkpoint(source, expect_kind="teacher")["model"])
    save_checkpoint(out, kind="teacher", cfg=cfg, model=teacher)
    return out


def export_figures(cfg: Any, *, teacher: Path, url: Path) -> dict[str, Any]:
    """Export the train split (K = export.views_per_sample) into a fresh store; its per-view cost and size."""
    from simdistill.teacher_export.export import export_teacher

    shutil.rmtree(url, ignore_errors=True)
    report = export_teacher(cfg, checkpoint=teacher, out=str(url), progress=False)
    warm = report.tasks[1:] or report.tasks  # one worker: its first task also loads the teacher and the data
    views = sum(t["views"] for t in warm)
    return {"views": report.exported, "wall_seconds": report.wall_seconds,
            "views_per_s_incl_startup": report.views_per_second,
            "seconds_per_view_warm": sum(t["wall_seconds"] for t in warm) / views,
            "forward_seconds_per_view_warm": sum(t["forward_seconds"] for t in warm) / views,
            "bytes_per_view": report.bytes_written / max(report.exported, 1), "store": str(url)}


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cuda_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def cuda_peak_mb(device: str) -> float | None:
    """torch.cuda.max_memory_allocated since `cuda_reset`, in MB (None on the CPU)."""
    import torch

    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def teacher_alone(cfg: Any, *, teacher: Path, store: Path, steps: int) -> list[float]:
    """Seconds of the online teacher's targets (`OnlineTeacher.targets`, what mode (d) adds to a step) for the
    first `steps` batches the student sees, inputs built beforehand."""
    import torch

    from simdistill.pipeline.augment import ViewBuilder
    from simdistill.pipeline.sources import open_data_source
    from simdistill.student_train.target_sources import OnlineTeacher, StoreTargets
    from simdistill.pipeline.view_plan import build_inputs, epoch_batches

    device = torch.device(cfg.device)
    online = OnlineTeacher(teacher, cfg, device)
    builder = ViewBuilder.for_config(open_data_source(cfg.data, "train"), cfg, train=True)
    plan = StoreTargets(str(store), cfg, []).plan
    batches = epoch_batches(plan, seed=cfg.seed, epoch=0, batch_size=cfg.student_train.batch_size)
    times = []
    for i in range(steps):
        batch = build_inputs(builder, plan, batches[i % len(batches)]).to(device)
        sync(cfg.device)
        t0 = time.perf_counter()
        online.targets(batch)
        sync(cfg.device)
        times.append(time.perf_counter() - t0)
    return times


def loader_pass(cfg: Any, *, url: Path, arrays: list[str], threads: int, float32: bool) -> tuple[float, float, int]:
    """One epoch of batches through the Dask loader with `threads` read threads: (wall s, process CPU s, views).
    CPU time counts every thread of this process (zarr's decode pool included): CPU-s per view is the cost
    in cores, whatever else the machine runs. `float32=False`: float16 handed over as stored (a GPU student's
    loader: the conversion happens on the device)."""
    from simdistill.feature_store import TargetPrefetcher
    from simdistill.student_train.target_sources import StoreTargets
    from simdistill.pipeline.view_plan import epoch_batches

    plan = StoreTargets(str(url), cfg, arrays).plan
    batches = epoch_batches(plan, seed=cfg.seed, epoch=0, batch_size=cfg.student_train.batch_size)
    views = sum(len(b) for b in batches)
    w0, c0 = time.perf_counter(), time.process_time()
    with TargetPrefetcher(str(url), arrays=arrays, batches=batches, threads=threads, float32=float32,
                          prefetch=max(cfg.student_train.prefetch_batches, threads)) as prefetcher:
        for _ in prefetcher:
            pass
    return time.perf_counter() - w0, time.process_time() - c0, views


def loader_scaling(cfg: Any, *, url: Path, threads: list[int], rounds: int) -> dict[str, Any]:
    """Views/s and views per CPU-second of the Dask loader over every array the full loss set reads, per number
    of read threads, handing over float32 (a CPU student) or float16 (a GPU student), in interleaved rounds
    (medians). Returns {"arrays", "float32": {threads: figures}, "float16": {threads: figures}}."""
    from simdistill.student_train.distill_step import arrays_needed

    arrays = arrays_needed(C.LOSS_TERMS)
    loader_pass(cfg, url=url, arrays=arrays, threads=1, float32=True)  # untimed: page cache and first-open costs
    keys = [(dtype, t) for dtype in ("float32", "float16") for t in threads]
    runs: dict[tuple[str, int], list[tuple[float, float, int]]] = {k: [] for k in keys}
    for r in range(rounds):
        for dtype, t in keys if r % 2 == 0 else keys[::-1]:
            runs[(dtype, t)].append(loader_pass(cfg, url=url, arrays=arrays, threads=t, float32=dtype == "float32"))
            wall, cpu, views = runs[(dtype, t)][-1]
            C.log(f"loader round {r + 1}/{rounds}, {dtype} out, {t} thread(s): {views / wall:.2f} views/s, "
                  f"{views / cpu:.2f} views per CPU-s")
    out: dict[str, Any] = {"arrays": arrays, "float32": {}, "float16": {}}
    for (dtype, t), rs in runs.items():
        out[dtype][str(t)] = {"views_per_s": C.summarize([v / w for w, _, v in rs])["median"],
                              "views_per_cpu_s": C.summarize([v / c for _, c, v in rs])["median"],
                              "cpu_s_per_view": C.summarize([c / v for _, c, v in rs])["median"]}
    return out


def loader_table(loader: dict[str, Any], *, consumption: float, gpu_rate: float) -> None:
    """The loader figures, and the cores a GPU student at `gpu_rate` views/s needs (float16 handed over)."""
    one = loader["float16"]["1"]["views_per_cpu_s"]
    loader["assumed_gpu_views_per_s"] = gpu_rate
    loader["cores_for_assumed_gpu"] = C.ratio(gpu_rate, one)
    loader["cores_for_4x_assumed_gpu"] = C.ratio(4 * gpu_rate, one)
    rows = [[f"{dtype} out, {t} read thread(s)", r["views_per_s"], r["views_per_cpu_s"], r["cpu_s_per_view"],
             C.ratio(r["views_per_s"], consumption)] for dtype in ("float32", "float16")
            for t, r in loader[dtype].items()]
    print(C.table("Loader at paper size, no training attached (median of rounds; float32 out: a CPU student's "
                  "loader, float16 out: a GPU student's, which converts on the device)",
                  ["Dask loader", "views/s", "views per CPU-s", "CPU-s per view", "x student (b)"], rows))
    print(f"GPU student assumed at {gpu_rate:g} views/s (--gpu-views-per-s): {loader['cores_for_assumed_gpu']:.2f} "
          f"loader core(s) feed it, {loader['cores_for_4x_assumed_gpu']:.2f} feed 4x that (the margin for faster GPUs).")


def with_overrides(cfg: Any, **sections: dict[str, Any]) -> Any:
    """A deep copy of cfg with section fields replaced, e.g. with_overrides(cfg, store_format={"lossy": True})."""
    out = copy.deepcopy(cfg)
    for section, fields in sections.items():
        for key, value in fields.items():
            setattr(getattr(out, section), key, value)
    return out
