"""Data-parallel training over several processes with ``torch.distributed`` (DDP).

Processes come from PyTorch's elastic launcher (``torchrun`` / ``torch.distributed.run``): it
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` ... and ``init_from_env()`` joins the process
group from them (nccl on CUDA, one GPU per local rank; gloo on the CPU). ``launch()`` is what
``senior-intern train --nproc-per-node N`` runs: the launcher on this machine, N workers.

``DataParallel`` is what a training ``Session`` talks to; in a single process every method is
a plain pass-through, so the session calls them unconditionally:

- the forward runs through ``DistributedDataParallel``, which all-reduces the LoRA gradients
  only (the frozen base is told to DDP as ignored: never broadcast, never reduced), once per
  optimizer step: the accumulation micro-steps before the last run under ``no_sync()``;
- DDP averages gradients over ranks, the session divides each rank's loss sum by the *global*
  count of trained tokens and multiplies it by the world size, so the reduced gradient is the
  one a single process would get on the union of the ranks' batches. Gradients are then equal
  on every rank, so the ordinary clipping norm is already the global norm;
- counts, loss and accuracy sums are summed over ranks; pause/cancel flags are reduced with
  MAX, so every rank takes the same decision at the same micro-batch;
- rank 0 alone writes files; the others wait at a barrier.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from senior_intern.layout import JOB_FILE

# How long a rank waits for the others in one collective before it gives up.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: its rank, the world size and the backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None  # "gloo" | "nccl" | None (one process)

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one that writes files and reports."""
        return self.rank == 0


_CONTEXT = DistContext()


def context() -> DistContext:
    """This process's ``DistContext`` (rank 0 of 1 until ``init_from_env()`` joined a group)."""
    return _CONTEXT


def launched_by_torchrun() -> bool:
    """True inside a worker that ``torchrun`` / ``torch.distributed.run`` started."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")) and int(os.environ["WORLD_SIZE"]) > 1


def _wants_cuda(device: str) -> bool:
    return torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))


def init_from_env(device: str = "auto") -> DistContext:
    """Join the process group ``torchrun`` describes in the environment; returns the context.

    ``device`` is the job's ``training.device``: CUDA (nccl, ``cuda:<local rank>``) when it
    asks for it or for ``auto`` and CUDA is there, else the CPU with gloo. On the CPU each
    process takes its share of the cores unless ``OMP_NUM_THREADS`` says otherwise.
    """
    global _CONTEXT
    if not launched_by_torchrun():
        return _CONTEXT
    env = os.environ
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local_rank = int(env["LOCAL_RANK"])
    local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    backend = "nccl" if _wants_cuda(device) else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"Local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                             "lower --nproc-per-node to the number of GPUs")
        torch.cuda.set_device(local_rank)
    elif "OMP_NUM_THREADS" not in env:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    _CONTEXT = DistContext(rank, world, local_rank, local_world, backend)
    return _CONTEXT


def shutdown() -> None:
    """Leave the process group (a no-op in one process)."""
    global _CONTEXT
    if dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = DistContext()


def rank_device(ctx: DistContext, device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:<local rank>`` under nccl, else ``device`` unchanged."""
    return torch.device("cuda", ctx.local_rank) if ctx.backend == "nccl" else device


class _LossModule(nn.Module):
    """The model as one module whose forward returns the loss parts (what DDP wraps)."""

    def __init__(self, model: nn.Module, forward) -> None:
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, inputs: dict[str, Any], labels: torch.Tensor):
        return self._forward(inputs, labels)


class DataParallel:
    """The collective side of a run for one ``Session``; pass-throughs in one process."""

    def __init__(self, ctx: DistContext | None = None) -> None:
        self.ctx = ctx or context()
        self.ddp: nn.Module | None = None
        self._forward = None
        self._params: list[nn.Parameter] = []

    enabled = property(lambda self: self.ctx.enabled)
    is_main = property(lambda self: self.ctx.is_main)
    world_size = property(lambda self: self.ctx.world_size)
    rank = property(lambda self: self.ctx.rank)

    # --- the model ----------------------------------------------------------------------------
    def wrap(self, model: nn.Module, forward, params: Sequence[nn.Parameter]) -> None:
        """Run ``forward`` through DDP over ``model``, reducing ``params`` (the LoRA factors) only."""
        self._forward, self._params = forward, list(params)
        if not self.enabled:
            return
        module = _LossModule(model, forward)
        trained = {id(p) for p in self._params}
        frozen = [name for name, p in module.named_parameters() if id(p) not in trained]
        frozen += [name for name, _ in module.named_buffers()]
        # The frozen base is the same on every rank (loaded from the same files): not broadcast.
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen)
        ids = [self.ctx.local_rank] if self.ctx.backend == "nccl" else None
        self.ddp = nn.parallel.DistributedDataParallel(module, device_ids=ids)  # ignored: base and buffers

    def forward(self, inputs: dict[str, Any], labels: torch.Tensor):
        """The loss parts of one micro-batch (through DDP when distributed)."""
        return self.ddp(inputs, labels) if self.ddp is not None else self._forward(inputs, labels)

    def micro_steps(self, group: list) -> Iterator[tuple[Any, contextlib.AbstractContextManager]]:
        """``(batch, context)`` per micro-batch: ``no_sync()`` on all but the last of the group."""
        for i, batch in enumerate(group):
            last = i == len(group) - 1
            yield batch, (self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext())

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``; a rank's empty share (no trained token) still reports zero gradients."""
        if not loss.requires_grad:
            loss = sum(p.sum() for p in self._params) * 0.0
        loss.backward()

    @property
    def loss_scale(self) -> int:
        """Factor on the per-rank loss that turns DDP's average over ranks into a sum."""
        return self.world_size

    # --- collectives ------------------------------------------------------------------------
    def sum(self, *values: float | int | torch.Tensor) -> list[float]:
        """Each value summed over ranks (one all-reduce, float64)."""
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64).detach().cpu().reshape(()) for v in values])
        if self.enabled:
            t = self._reduce(t, dist.ReduceOp.SUM)
        return t.tolist()

    def any(self, *flags: bool) -> list[bool]:
        """Each flag true on at least one rank."""
        t = torch.tensor([1.0 if f else 0.0 for f in flags], dtype=torch.float64)
        if self.enabled:
            t = self._reduce(t, dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def _reduce(self, t: torch.Tensor, op) -> torch.Tensor:
        if self.ctx.backend == "nccl":
            t = t.to(rank_device(self.ctx, t.device))
        dist.all_reduce(t, op=op)
        return t.cpu()

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank got here."""
        if self.enabled:
            dist.barrier()

    def check_identical(self, state: dict[str, torch.Tensor]) -> str:
        """SHA-256 of the LoRA weights, checked equal on every rank; ValueError naming the odd ranks."""
        h = hashlib.sha256()
        for name in sorted(state):
            h.update(name.encode())
            h.update(state[name].detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        digests = self.gather(h.hexdigest())
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        if odd:
            raise RuntimeError(f"The adapter weights of rank(s) {odd} differ from rank 0's; the ranks went out of step")
        return digests[0]

    def check_control(self, session) -> None:
        """``Session.check_control`` across ranks: a pause or cancel on any rank holds or stops all."""
        from senior_intern.training.events import TrainingState
        from senior_intern.training.session import RunStopped

        control = session.control
        local = lambda: (bool(control and control.cancelled), bool(control and control.paused))  # noqa: E731
        cancelled, paused = self.any(*local())
        if paused and not cancelled:
            paused_at, was = time.perf_counter(), session.state
            session.set_state(TrainingState.PAUSED, "Paused")
            while paused and not cancelled:
                if control is not None and control.paused:
                    control.wait_while_paused(timeout=0.5)
                else:
                    time.sleep(0.5)
                cancelled, paused = self.any(*local())
            session.exclude_paused(time.perf_counter() - paused_at)
            if not cancelled:
                session.set_state(was, "Resumed")
        if cancelled:
            raise RunStopped("cancelled", "Training was cancelled by user")


def describe(ctx: DistContext, device: torch.device, pids: Sequence[int] = ()) -> str:
    """One line for the log: world size, backend and each rank's device."""
    where = ", ".join(f"rank {r} pid {p} on {device if ctx.backend != 'nccl' else f'cuda:{r % ctx.local_world_size}'}"
                      for r, p in enumerate(pids))
    return f"Data parallel over {ctx.world_size} processes ({ctx.backend}): {where}"


# --- the launcher -------------------------------------------------------------------------------
def launch(worker_args: list[str], nproc: int, device: str = "auto", run_dir: Path | None = None, stream=None) -> int:
    """Run ``senior-intern <worker_args>`` in ``nproc`` local workers through torch's elastic launcher.

    Returns the exit code. When a worker fails (an error, or killed), the launcher stops the
    others and this prints which rank died and how, and where to resume from.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    stream = stream or sys.stderr
    if nproc < 1:
        raise ValueError(f"--nproc-per-node must be at least 1, got {nproc}")
    if _wants_cuda(device) and nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc-per-node {nproc} is more than this machine's {torch.cuda.device_count()} GPUs")
    if not _wants_cuda(device):
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--monitor-interval=0.2",
                       "-m", "senior_intern.cli", *worker_args])
    try:
        run(args)
    except ChildFailedError as exc:
        print(failure_report(exc, nproc, run_dir), file=stream)
        return 1
    return 0


def failure_report(exc, nproc: int, run_dir: Path | None) -> str:
    """What a failed distributed run tells the user: each failed rank, its cause, how to resume."""
    from senior_intern.training import checkpoint as ckpt

    lines = ["error: the distributed run failed"]
    first = exc.get_first_failure()[0] if exc.failures else None
    for rank, f in sorted(exc.failures.items()):
        cause = f"killed by {f.signal_name()}" if f.exitcode < 0 else f"exited with code {f.exitcode}"
        note = " (the first to fail)" if rank == first and len(exc.failures) > 1 else ""
        lines.append(f"  rank {rank} (local rank {f.local_rank}, pid {f.pid}) {cause}{note}")
    lines.append("  the other ranks were stopped by the launcher")
    resumable = None
    if run_dir is not None:
        try:
            resumable = ckpt.find_resumable(run_dir)
        except (FileNotFoundError, ValueError):
            resumable = None
    if resumable is not None:
        lines.append(f"Resume with: senior-intern resume {run_dir} --nproc-per-node {nproc}")
    else:
        lines.append("No checkpoint was written yet; start the run again")
    return "\n".join(lines)


def job_file_for_workers(job) -> Path:
    """The job written to a temporary TOML file that the workers load (``train --config``)."""
    folder = Path(tempfile.mkdtemp(prefix="senior-intern-dist-"))
    path = folder / JOB_FILE
    job.save(path)
    return path
