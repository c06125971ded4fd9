"""The training engine: schedules, checkpoints, exact resume after a kill, non-finite losses, DDP with gloo."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
from pathlib import Path

import pytest
import torch

from pose_edge.errors import ArtifactError, PoseEdgeError
from pose_edge.models.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from pose_edge.train.engine import EpochBatchSampler, fit
from pose_edge.train.metrics_log import read_csv
from pose_edge.train.optim import ModelEMA, OptimizerSpec, ScheduleSpec, apply_schedule, build_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from script_runner import run_script, same_weights  # noqa: E402
from toy_task import toy_config, toy_model, toy_task  # noqa: E402

TOY = Path(__file__).parent / "toy_task.py"


def run_toy(*args, torchrun: int = 0, timeout: int = 240):
    """tests/toy_task.py in a fresh process (or torchrun's)."""
    return run_script(TOY, *args, torchrun=torchrun, timeout=timeout)


# ---------------------------------------------------------------------------------------------------- schedules


def test_schedules_and_warmup():
    multistep = ScheduleSpec("multistep", milestones=(90, 120), gamma=0.1)
    assert [multistep.factor(e, 140) for e in (0, 89, 90, 119, 120, 139)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    one_cycle = ScheduleSpec("one_cycle", lrf=0.2)
    assert one_cycle.factor(0, 100) == 1.0 and one_cycle.factor(50, 100) == pytest.approx(0.6)
    assert one_cycle.factor(100, 100) == pytest.approx(0.2)

    model = toy_model()
    opt = build_optimizer(model, OptimizerSpec("sgd", lr=0.01, momentum=0.937, nesterov=True, weight_decay=5e-4,
                                               param_groups="yolo"))
    assert [g["kind"] for g in opt.param_groups] == ["norm", "weight", "bias"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    assert len(opt.param_groups[0]["params"]) == 1 and len(opt.param_groups[2]["params"]) == 3  # BN w; 3 biases
    warm = ScheduleSpec("one_cycle", lrf=0.2, warmup_epochs=3, warmup_min_iters=1000, warmup_bias_lr=0.1,
                        warmup_momentum=0.8)
    assert warm.warmup_iters(100) == 1000 and warm.warmup_iters(1000) == 3000
    apply_schedule(opt, warm, epoch=0, epochs=10, global_iter=0, iters_per_epoch=100)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0, 0.1]
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8)
    apply_schedule(opt, warm, epoch=5, epochs=10, global_iter=500, iters_per_epoch=100)
    target = 0.01 * warm.factor(5, 10)
    assert opt.param_groups[1]["lr"] == pytest.approx(target / 2)
    assert opt.param_groups[2]["lr"] == pytest.approx(0.1 + (target - 0.1) / 2)
    assert opt.param_groups[1]["momentum"] == pytest.approx((0.8 + 0.937) / 2)
    apply_schedule(opt, warm, epoch=9, epochs=10, global_iter=2000, iters_per_epoch=100)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01 * warm.factor(9, 10)] * 3)
    adam = build_optimizer(model, OptimizerSpec("adam", lr=1e-3, momentum=0.9))
    apply_schedule(adam, ScheduleSpec(warmup_min_iters=10, warmup_momentum=0.5), 0, 1, 5, 100)
    assert adam.param_groups[0]["betas"] == (pytest.approx(0.7), 0.999)


def test_ema_follows_the_model_with_its_ramp():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ModelEMA(model, decay=0.5, tau=1.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d = 0.5 * (1 - math.exp(-1))
    assert ema.module.weight[0, 0].item() == pytest.approx(1 - d)


def test_batches_split_over_ranks_form_the_global_batch():
    one = EpochBatchSampler(20, 8, seed=3)
    ranks = [EpochBatchSampler(20, 8, r, 2, seed=3) for r in range(2)]
    for s in (one, *ranks):
        s.set_epoch(4)
    combined = [a + b for a, b in zip(*[list(s) for s in ranks])]
    assert combined == list(one) and len(combined) == 2  # 20 // 8, the partial batch dropped
    one.set_epoch(4, start_batch=1)
    assert list(one) == combined[1:]
    with pytest.raises(PoseEdgeError, match="split"):
        EpochBatchSampler(20, 7, 0, 2)


# -------------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_errors(tmp_path, synth_data):
    fit(toy_task(16), toy_config(epochs=1), tmp_path / "run", progress=False, log=lambda _s: None)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["kind"] == "full" and state["epoch"] == 1 and "optimizer" in state and "rng" in state
    assert resolve_checkpoint(tmp_path / "run") == tmp_path / "run" / "best.pt"

    good = (tmp_path / "run" / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArtifactError) as err:
        load_checkpoint(truncated)
    assert str(truncated) in str(err.value) and "\n" not in str(err.value) and "truncated" in str(err.value)

    # A pickle that would run code when loaded without weights_only is refused, not executed.
    evil = tmp_path / "evil.pt"
    torch.save({"format": "pose-edge-checkpoint", "payload": _Exploit(tmp_path / "pwned")}, evil)
    with pytest.raises(ArtifactError, match="evil.pt"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ArtifactError, match="not a pose-edge checkpoint"):
        load_checkpoint(other)
    with pytest.raises(ArtifactError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")

    # The CLI prints the truncated file's error as one line, exit status 1.
    from click.testing import CliRunner

    from pose_edge.cli import main

    result = CliRunner().invoke(main, ["eval", str(truncated), "--data", str(synth_data)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "truncated.pt" in result.output, result.output


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"preset": {}, "meta": "{}", "model": {}, "n": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"preset": {}, "meta": "{}", "model": {}, "bad": lambda: None})  # not picklable
    assert load_checkpoint(path)["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_non_finite_loss_stops_the_run(tmp_path):
    task = toy_task(16)
    calls = {"n": 0}
    loss_fn = task.loss_fn

    def exploding(out, batch):
        calls["n"] += 1
        loss, parts = loss_fn(out, batch)
        return (loss * float("nan"), parts) if calls["n"] > 3 else (loss, parts)

    task.loss_fn = exploding
    with pytest.raises(PoseEdgeError, match="not finite at epoch 2, iteration 2"):
        fit(task, toy_config(epochs=3), tmp_path / "run", progress=False, log=lambda _s: None)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # the last good epoch, untouched


def test_metrics_csv_and_plot(tmp_path):
    summary = fit(toy_task(16), toy_config(epochs=2), tmp_path / "run", progress=False, log=lambda _s: None)
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"lr", "train_loss", "train_mse", "images_per_s", "val_AP"} <= rows[0].keys()
    assert (tmp_path / "run" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["best"] == pytest.approx(max(r["val_AP"] for r in rows), rel=1e-5)
    best = load_checkpoint(resolve_checkpoint(tmp_path / "run"))
    assert best["kind"] == "weights" and best["metrics"]["AP"] == pytest.approx(summary["best"])
    assert "optimizer" not in best


# ------------------------------------------------------------------------------------------ resume after a kill


class _Interrupt(Exception):
    pass


def _one_thread(fn):
    """Run fn with torch on one thread, as the subprocesses run (so float sums add up in the same order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    """Interrupted in the middle of epoch 2 (of 3) with no mid-epoch checkpoint: resume replays epoch 2 from the end
    of epoch 1 and ends with the uninterrupted run's weights (EMA and gradient accumulation on), bit for bit."""
    config = toy_config(ema_decay=0.9, ema_tau=5.0, accumulate=2)
    quiet = {"progress": False, "log": lambda _s: None}
    full = toy_task()
    fit(full, config, tmp_path / "full", **quiet)

    def interrupt(epoch, iteration):
        if (epoch, iteration) == (1, 3):
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(toy_task(), config, tmp_path / "run", on_iteration=interrupt, **quiet)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    resumed = toy_task()
    fit(resumed, config, tmp_path / "run", resume=True, **quiet)
    assert same_weights(full.model.state_dict(), resumed.model.state_dict())
    assert same_weights(load_checkpoint(tmp_path / "full" / "last.pt")["model"],
                        load_checkpoint(tmp_path / "run" / "last.pt")["model"])  # the EMA weights too
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # and a different stream of randomness would have shown: a run with another seed ends elsewhere
    other = toy_task()
    fit(other, dataclasses.replace(config, seed=1), tmp_path / "other", **quiet)
    assert not same_weights(full.model.state_dict(), other.model.state_dict())


def test_killed_run_resumes_mid_epoch_to_the_same_weights(tmp_path):
    """SIGKILL in the middle of epoch 2 with a checkpoint every 2 iterations: resume starts at epoch 2, iteration 4,
    and ends with the uninterrupted run's weights, bit for bit."""
    extra = ["--ema", "--accumulate", "2", "--checkpoint-every", "2"]
    killed = run_toy(tmp_path / "run", *extra, "--kill-at", 1, 4)
    assert killed.returncode == -9, killed.stderr[-2000:]
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["iteration"]) == (1, 4)

    config = toy_config(ema_decay=0.9, ema_tau=5.0, accumulate=2, checkpoint_every=2)
    quiet = {"progress": False, "log": lambda _s: None}
    full, resumed = toy_task(), toy_task()
    _one_thread(lambda: fit(full, config, tmp_path / "full", **quiet))
    _one_thread(lambda: fit(resumed, config, tmp_path / "run", resume=True, **quiet))
    assert same_weights(full.model.state_dict(), resumed.model.state_dict())
    assert same_weights(load_checkpoint(tmp_path / "full" / "last.pt")["model"],
                        load_checkpoint(tmp_path / "run" / "last.pt")["model"])


# Kill -9 at random points: iterations and atomic writes drawn once from a fixed seed (so a failure reproduces), the
# same toy run each time (EMA, accumulation 2, a mid-epoch checkpoint every 2 iterations). Determinism rule: the
# killed process and the reference run use the same torch thread count (one), see pose_edge.train.engine.fit.
KILL_CONFIG = dict(ema_decay=0.9, ema_tau=5.0, accumulate=2, checkpoint_every=2)
KILL_ARGS = ["--ema", "--accumulate", "2", "--checkpoint-every", "2"]
_draw = random.Random(20261202)
RANDOM_KILLS = ([("iteration", _draw.randrange(3), _draw.randrange(6))] +
                [("write", _draw.randrange(3, 16), None) for _ in range(2)])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Final weights (raw and EMA) of the uninterrupted toy run, one thread."""
    run = tmp_path_factory.mktemp("full")
    task = toy_task()
    _one_thread(lambda: fit(task, toy_config(**KILL_CONFIG), run, progress=False, log=lambda _s: None))
    return task.model.state_dict(), load_checkpoint(run / "last.pt")["model"]


def _complete_under_final_names(run: Path) -> list[Path]:
    """Every file under its final name is whole (it loads); return the temporaries (hidden files) left beside."""
    import json as _json

    for p in run.iterdir():
        if p.name.startswith("."):
            continue
        if p.suffix == ".pt":
            load_checkpoint(p)
        elif p.suffix == ".json":
            _json.loads(p.read_text())
        elif p.suffix == ".csv":
            assert read_csv(p)
        elif p.suffix == ".png":
            assert p.read_bytes()[:4] == b"\x89PNG" and p.read_bytes()[-8:-4] == b"IEND"
    return [p for p in run.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.parametrize("kind, a, b", RANDOM_KILLS, ids=[f"{k}-{a}-{b}" for k, a, b in RANDOM_KILLS])
def test_kill_9_at_a_random_point_then_resume_is_exact(tmp_path, uninterrupted, kind, a, b):
    """SIGKILL after a random iteration, or inside a random atomic write (the temporary complete, not renamed): no
    file under its final name is ever partial, the rerun removes the dead writer's temporaries, and it ends with the
    uninterrupted run's weights bit for bit."""
    run = tmp_path / "run"
    if kind == "iteration":
        killed = run_toy(run, *KILL_ARGS, "--kill-at", a, b)
    else:
        killed = run_script(Path(__file__).parent / "kill_in_write.py", a, TOY, run, *KILL_ARGS)
    assert killed.returncode == -9, killed.stderr[-2000:]
    left = _complete_under_final_names(run)
    if kind == "write":
        assert left, "the kill was meant to land inside a write"
    resume = (run / "last.pt").exists()
    task = toy_task()
    _one_thread(lambda: fit(task, toy_config(**KILL_CONFIG), run, resume=resume, progress=False,
                            log=lambda _s: None))
    raw, ema = uninterrupted
    assert same_weights(task.model.state_dict(), raw)
    assert same_weights(load_checkpoint(run / "last.pt")["model"], ema)
    assert _complete_under_final_names(run) == []


def test_training_is_deterministic_with_several_threads(synth_data):
    """The determinism rule the engine states: same seed, data and thread count -> the same weights bit for bit,
    with more than one thread too. Checked where it broke: KAPAO's loss gradient (several targets matched to one
    anchor cell) on real samples, three backward passes with 4 threads under fit's deterministic_algorithms."""
    from pose_edge.data.coco import CocoKeypoints
    from pose_edge.data.kapao_samples import KapaoDataset, collate
    from pose_edge.models import build_model, get_preset, model_meta
    from pose_edge.models.torch_backend import prepare_images
    from pose_edge.train.engine import deterministic_algorithms, seed_everything
    from pose_edge.train.kapao_loss import build_loss

    preset = get_preset("kapao-tiny")
    meta = model_meta(preset)
    seed_everything(0)
    model = build_model(preset).train()
    criterion = build_loss(meta, preset.train_args)
    dataset = KapaoDataset(CocoKeypoints(synth_data, "train"), preset.input_size, "none")
    batch = collate([dataset[i] for i in range(4)])
    with torch.no_grad():
        outputs = [o.detach() for o in model(prepare_images(batch["images"], meta.input))]

    def gradient():
        grads = [o.clone().requires_grad_(True) for o in outputs]
        loss, _ = criterion(grads, batch["targets"])
        loss.backward()
        return [g.grad for g in grads]

    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with deterministic_algorithms(torch.device("cpu")):
            first = gradient()
            for _ in range(2):
                assert all(torch.equal(x, y) for x, y in zip(first, gradient()))
        assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_ddp_two_processes_keep_identical_weights(tmp_path):
    out = run_toy(tmp_path / "run", "--epochs", 2, "--batch", 8, "--save-weights", tmp_path / "w.pt", torchrun=2)
    assert out.returncode == 0, out.stderr[-3000:]
    w0 = torch.load(f"{tmp_path / 'w.pt'}.rank0", weights_only=True)
    w1 = torch.load(f"{tmp_path / 'w.pt'}.rank1", weights_only=True)
    assert same_weights(w0, w1)
    assert not same_weights(w0, toy_task().model.state_dict())  # and they did train


@pytest.mark.slow
def test_ddp_sync_batchnorm_step_equals_one_process_on_the_whole_batch(tmp_path):
    """One SGD step on 2 processes x 4 samples with SyncBatchNorm = one process on the same 8 samples."""
    args = ["--epochs", 1, "--batch", 8, "--samples", 8, "--optimizer", "sgd", "--no-warmup", "--sync-bn"]
    two = run_toy(tmp_path / "two", *args, "--save-weights", tmp_path / "two.pt", torchrun=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_toy(tmp_path / "one", *args, "--save-weights", tmp_path / "one.pt")
    assert one.returncode == 0, one.stderr[-3000:]
    a = torch.load(f"{tmp_path / 'two.pt'}.rank0", weights_only=True)
    b = torch.load(f"{tmp_path / 'one.pt'}.rank0", weights_only=True)
    start = toy_task().model.state_dict()
    for k in a:
        if a[k].dtype.is_floating_point:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
            if k.endswith("weight"):
                assert not torch.equal(a[k], start[k]), k  # the step changed it
    # Without synchronised statistics the two-process step differs (each rank normalises its own half).
    plain = run_toy(tmp_path / "plain", *args[:-1], "--save-weights", tmp_path / "plain.pt", torchrun=2)
    assert plain.returncode == 0, plain.stderr[-3000:]
    c = torch.load(f"{tmp_path / 'plain.pt'}.rank0", weights_only=True)
    assert not torch.allclose(c["0.weight"], b["0.weight"], rtol=1e-5, atol=1e-6)
