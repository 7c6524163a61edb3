"""``fit`` and ``evaluate``: the training loop every compression step reuses.

Hooks keep it general: ``loss_fn(model, x, y) -> (loss, logits)`` replaces the
loss (distillation, regularisers), ``on_step(model)`` runs after each optimizer
step (re-applying masks, clipping latent binary weights).
"""

from __future__ import annotations

import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import BatchLoader
from ..errors import UserError
from .checkpoint import check_resume_key, load_checkpoint, resume_key, save_checkpoint
from .config import TrainConfig, lr_factor
from .distributed import current as current_dist


def resolve_device(name: str = "cpu") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but no CUDA device is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; choose cpu, cuda, cuda:N or auto") from None


def show_progress(enabled: bool = True) -> bool:
    forced = os.environ.get("TORCHSLIM_PROGRESS")  # set by the recipe runner for its stages
    if forced is not None:
        return forced == "1" and current_dist().is_main
    return enabled and sys.stdout.isatty() and current_dist().is_main


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(False)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on BN/bias: the usual practice, and it keeps BN scales meaningful for pruning.
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def default_loss(label_smoothing: float = 0.0):
    def loss_fn(model, x, y):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    return loss_fn


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int = 256, device="cpu", progress: bool = False) -> dict:
    """Top-1, top-5 (fractions 0..1) and mean loss of ``model`` on an ImageSet."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = BatchLoader(dataset, batch_size=batch_size)
    correct1 = correct5 = n = 0
    loss_sum = 0.0
    for x, y in tqdm(loader, desc="eval", leave=False, disable=not show_progress(progress)):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top.eq(y[:, None])
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        n += len(y)  # images actually scored: a streamed folder may skip unreadable ones
    model.train(was_training)
    n = n or len(dataset.labels)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n, "n": n}


def _wrap_distributed(model: nn.Module, device: torch.device) -> nn.Module:
    dist_info = current_dist()
    if not dist_info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel  # lazy: only under torchrun

    ids = [device.index or 0] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _sync_buffers(model: nn.Module) -> None:
    """DDP syncs buffers at the start of each forward, so the last batch leaves each
    rank with its own BN statistics; copy rank 0's so every rank ends identical."""
    import torch.distributed as dist  # lazy: only under torchrun

    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def fit(
    model: nn.Module,
    train_set,
    config: TrainConfig,
    eval_set=None,
    checkpoint_path=None,
    loss_fn=None,
    on_step=None,
    progress: bool = True,
    resume_extra: dict | None = None,
) -> dict:
    """Train ``model`` in place on ``train_set`` (an ImageSet); returns the history.

    With ``checkpoint_path``, state is saved atomically after every epoch and a
    rerun resumes after the last finished epoch with identical results.  A checkpoint written for
    another model layout, data set, config or ``resume_extra`` (e.g. the starting file's digest) is refused.
    """
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model.to(device)
    dist_info = current_dist()
    loader = BatchLoader(
        train_set, batch_size=config.batch_size, shuffle=True, augment=config.augment,
        seed=config.seed, rank=dist_info.rank, world_size=dist_info.world_size, drop_last=True,
    )
    if len(loader) == 0:  # zero steps would save the untrained model as if it were trained
        raise UserError(f"batch size {config.batch_size} is larger than the {len(train_set)} training images"
                        f"{f' split over {dist_info.world_size} processes' if dist_info.world_size > 1 else ''}; "
                        f"use a batch size of at most {max(1, len(train_set) // dist_info.world_size)}")
    steps = len(loader)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config, s, steps))
    loss_fn = loss_fn or default_loss(config.label_smoothing)
    history = {"epochs": [], "config": config.to_dict()}
    start_epoch = 0
    key = resume_key(model, train_set, config.to_dict(), resume_extra) if checkpoint_path else None
    state = load_checkpoint(checkpoint_path) if checkpoint_path else None
    if state is not None:
        check_resume_key(checkpoint_path, state, key)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
    train_model = _wrap_distributed(model, device)
    for epoch in range(start_epoch, config.epochs):
        torch.manual_seed(config.seed * 1000 + epoch)  # dropout etc. reproducible after resume
        loader.set_epoch(epoch)
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        began = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not show_progress(progress))
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss, logits = loss_fn(train_model, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if on_step is not None:
                on_step(model)
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / (time.perf_counter() - began):.0f}")
        if dist_info.enabled:
            _sync_buffers(model)
        record = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1),
                  "seconds": time.perf_counter() - began}
        if eval_set is not None and dist_info.is_main:
            record.update({f"eval_{k}": v for k, v in evaluate(model, eval_set, device=device).items() if k != "n"})
        history["epochs"].append(record)
        if checkpoint_path and dist_info.is_main:
            save_checkpoint(checkpoint_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history, "key": key,
            })
    return history
