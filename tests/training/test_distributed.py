"""Data-parallel training: 2 CPU processes over gloo, through the real launcher and CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from senior_intern.data.loader import BatchLoader
from senior_intern.data.tokenize import Sample
from tests.conftest import write_dataset

PY = sys.executable


def _cli(*args: str, cwd: Path) -> list[str]:
    return [PY, "-m", "senior_intern.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train_args(model: Path, data: Path, root: Path, name: str, batch: int, **extra: str) -> list[str]:
    args = ["train", "--model", str(model), "--data", str(data), "--output", str(root / "runs"),
            "--adapters-dir", str(root / "adapters"), "--name", name, "--batch-size", str(batch),
            "--max-seq-length", "64", "--device", "cpu", "--dtype", "float32", "--validation-split", "0.25",
            "--learning-rate", "5e-3", "--warmup-steps", "2", "--lora-dropout", "0", "--rank", "4", "--alpha", "8"]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", v]
    return args


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _adapter(root: Path) -> dict[str, torch.Tensor]:
    (folder,) = [p for p in (root / "adapters").iterdir() if p.is_dir()]  # exactly one adapter
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    """The same job twice: 2 processes x batch 2 (CLI launcher) and 1 process x batch 4 (CLI)."""
    root = tmp_path_factory.mktemp("dist")
    data = write_dataset(root / "data.jsonl", n=40)
    common = dict(epochs="2", gradient_accumulation_steps="2", eval_every="2", save_every="2")
    two = subprocess.run(_cli(*_train_args(tiny_model_dir, data, root / "two", "t", 2, **common), "--nproc-per-node", "2",
                              cwd=root), capture_output=True, text=True, env=_env(), timeout=300)
    one = subprocess.run(_cli(*_train_args(tiny_model_dir, data, root / "one", "t", 4, **common), cwd=root),
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    return root, two, one


def test_two_processes_match_one_process_with_the_double_batch(two_runs):
    root, two, _ = two_runs
    assert "global batch 8 = 2 per process x 2 processes x 2 accumulation steps" in two.stderr
    assert "Data parallel over 2 processes (gloo)" in two.stderr
    assert "Adapter identical on all 2 ranks" in two.stderr  # bitwise: sha256 compared across ranks
    m2, m1 = _metrics(root / "two" / "runs" / "t"), _metrics(root / "one" / "runs" / "t")
    assert [(m["type"], m["step"]) for m in m2] == [(m["type"], m["step"]) for m in m1]
    for a, b in zip(m2, m1):
        key = "loss" if a["type"] == "train" else "validation_loss"
        assert a[key] == pytest.approx(b[key], abs=1e-5)
    a2, a1 = _adapter(root / "two"), _adapter(root / "one")
    assert a2.keys() == a1.keys()
    for k in a2:
        torch.testing.assert_close(a2[k], a1[k], atol=1e-5, rtol=0)


def test_files_are_written_once_by_rank_zero(two_runs):
    root, two, _ = two_runs
    run = root / "two" / "runs" / "t"
    metrics = _metrics(run)
    train_steps = [m["step"] for m in metrics if m["type"] == "train"]
    assert train_steps == list(range(1, len(train_steps) + 1))  # one line per step, no rank duplicates
    assert two.stderr.count("Adapter saved:") == 1
    assert two.stderr.count("Checkpoint step-0000004 saved") == 1
    assert sorted(p.name for p in (root / "two" / "runs").iterdir()) == ["t"]  # no second run folder
    state = json.loads((run / "checkpoints" / "step-0000004" / "state.json").read_text())
    assert state["world_size"] == 2
    assert [s["rank"] for s in state["loader_ranks"]] == [0, 1]
    trainer_state = torch.load(run / "checkpoints" / "step-0000004" / "trainer_state.pt", weights_only=True)
    assert len(trainer_state["rng_ranks"]) == 2


def test_resume_with_another_world_size_says_it_is_not_bitwise(two_runs):
    from senior_intern.training.engine import Trainer
    from senior_intern.training.events import LogMessage

    root, _, _ = two_runs
    # The run itself finished (a finished run refuses to resume): its mid-run checkpoint, copied.
    copy = root / "copy" / "checkpoints" / "step-0000004"
    shutil.copytree(root / "two" / "runs" / "t" / "checkpoints" / "step-0000004", copy)
    events = []
    result = Trainer().resume(copy, on_event=events.append)
    assert result.success, result.error_message
    text = " ".join(e.text for e in events if isinstance(e, LogMessage))
    assert "written by 2 process(es), this run has 1" in text and "not bitwise" in text


def test_kill_of_one_worker_names_the_rank_and_resume_completes(tmp_path, tiny_model_dir):
    data = write_dataset(tmp_path / "data.jsonl", n=40)
    args = _train_args(tiny_model_dir, data, tmp_path, "k", 1, epochs="12", max_steps="90", save_every="3", eval_every="0")
    proc = subprocess.Popen(_cli(*args, "--nproc-per-node", "2", cwd=tmp_path), stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_env())
    pids, lines = {}, []
    deadline = time.time() + 240
    for line in proc.stderr:
        lines.append(line)
        if "Data parallel over 2 processes" in line:
            for part in line.split(": ", 1)[1].split(", "):
                words = part.split()
                pids[int(words[1])] = int(words[3])
        if "Checkpoint step-0000003 saved" in line:
            os.kill(pids[1], signal.SIGKILL)
            break
        assert time.time() < deadline, "".join(lines)[-2000:]
    out, err = proc.communicate(timeout=120)
    err = "".join(lines) + err
    assert proc.returncode == 1, err[-3000:]
    assert f"rank 1 (local rank 1, pid {pids[1]}) killed by SIGKILL" in err
    run = tmp_path / "runs" / "k"
    assert "Resume with: senior-intern resume" in err and str(run) in err
    # Resume under an external torchrun, the way a multi-machine run is started.
    resumed = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              "-m", "senior_intern.cli", "resume", str(run)],
                             capture_output=True, text=True, env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Status: Completed" in resumed.stdout
    steps = [m["step"] for m in _metrics(run) if m["type"] == "train"]
    assert steps == list(range(1, 91))  # every step once, the ones before the kill included


# --- the loader's shards and the DDP hooks, without a launcher --------------------------------
def _samples(n: int) -> list[Sample]:
    return [Sample(input_ids=[1, 2 + i % 50, 3], labels=[-100, 2 + i % 50, 3], source=f"s{i}") for i in range(n)]


def test_rank_shards_are_disjoint_and_make_up_the_single_process_batch():
    samples = _samples(11)
    single = BatchLoader(samples, 4, pad_id=0, max_seq_length=8, seed=3)
    ranks = [BatchLoader(samples, 2, pad_id=0, max_seq_length=8, seed=3, rank=r, world_size=2) for r in range(2)]
    assert len(single) == len(ranks[0]) == 3
    for whole, *parts in zip(single, *ranks):
        assert sum(p.n_samples for p in parts) == whole.n_samples
        ids = [tuple(row.tolist()) for p in parts for row, m in zip(p.input_ids, p.labels) if (m != -100).any()]
        assert sorted(ids) == sorted(tuple(row.tolist()) for row in whole.input_ids)
    # 11 rows, global batches of 4: the last holds 3, split 2 + 1.
    last = [list(r)[-1] for r in (BatchLoader(samples, 2, pad_id=0, max_seq_length=8, seed=3, rank=k, world_size=2) for k in range(2))]
    assert [b.n_samples for b in last] == [2, 1]


def test_a_rank_without_rows_gets_an_ignored_row():
    loader = BatchLoader(_samples(1), 1, pad_id=0, max_seq_length=8, rank=1, world_size=2)
    (batch,) = list(loader)
    assert batch.n_samples == batch.n_trained_tokens == 0 and (batch.labels == -100).all()


def test_loader_state_moves_to_another_world_size():
    samples = _samples(16)
    two = BatchLoader(samples, 2, pad_id=0, max_seq_length=8, rank=0, world_size=2)
    it = iter(two)
    next(it), next(it)
    one = BatchLoader(samples, 2, pad_id=0, max_seq_length=8)
    one.load_state_dict(two.state_dict())
    assert one.index == 4  # 2 global batches of 4 rows = 4 batches of 2


def _ddp_grads(rank: int, out: str) -> None:
    from senior_intern.training.distributed import DataParallel, DistContext

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    model[0].requires_grad_(False)  # "the frozen base"
    params = list(model[1].parameters())
    x = torch.randn(2, 4, 4)[rank]  # rank's own 4 rows: 2 micro-batches of 2
    dp = DataParallel(DistContext(rank, 2, rank, 2, "gloo"))
    dp.wrap(model, lambda inputs, labels: model(inputs["x"]).sum(), params)
    grads = {}
    for name, no_sync in (("no_sync", True), ("sync", False)):
        for p in params:
            p.grad = None
        steps = dp.micro_steps([x[:2], x[2:]]) if no_sync else ((b, contextlib.nullcontext()) for b in (x[:2], x[2:]))
        for batch, ctx in steps:
            with ctx:
                dp.backward(dp.forward({"x": batch}, None) * dp.loss_scale)
        grads[name] = [p.grad.clone() for p in params]
    grads["frozen_grad"] = model[0].weight.grad
    torch.save(grads, f"{out}.{rank}")


def _ddp_worker(rank: int, init_file: str, out: str) -> None:
    import gc

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        _ddp_grads(rank, out)
        gc.collect()  # DDP's reducer holds the group: let it go before the group is torn down
        dist.barrier()  # neither rank tears gloo down while the other's last collective is in flight
    finally:
        dist.destroy_process_group()


def test_no_sync_accumulation_equals_syncing_every_micro_step(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "grads")
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), out), nprocs=2, join=True)
    g0, g1 = (torch.load(f"{out}.{r}", weights_only=True) for r in range(2))
    for a, b, c in zip(g0["no_sync"], g0["sync"], g1["no_sync"]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        assert torch.equal(a, c)  # the same reduced gradient on both ranks
    assert g0["frozen_grad"] is None
    # The reduced gradient is the single-process gradient of both ranks' rows together.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    x = torch.randn(2, 4, 4).reshape(8, 4)
    model(x).sum().backward()
    torch.testing.assert_close(g0["no_sync"][0], model[1].weight.grad, atol=1e-5, rtol=0)
