"""``gen3dface train``: a tiny model on the synthetic dataset, on CPU (accelerate)."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def tiny(**kw):
    from engine.train.config import TrainConfig

    base = dict(model="tiny", image_size=64, n_targets=4, batch_size=2, max_steps=2, checkpoint_every=1,
                validate_every=0, tracker="none", val_items=1, cond_dropout=0.0, seed=3)
    return TrainConfig(**{**base, **kw})


def weights(ckpt: Path) -> dict:
    from weights.safeload import load_safetensors

    return load_safetensors(ckpt / "training" / "trainable.safetensors")


def test_two_steps_learn_and_the_checkpoint_generates(tiny_dataset, tmp_path):
    from engine.dataset import format as fmt
    from engine.multiview.diffusion import load_pipeline
    from engine.multiview.diffusion.presets import tiny_pipeline
    from engine.train.loop import train

    r = train(tiny_dataset, tmp_path / "run", tiny(validate_every=2, val_steps=2))
    assert r.step == 2 and all(np.isfinite(r.losses))
    start = tiny_pipeline(seed=3, n_views=4, size=64)
    after = weights(r.checkpoint)
    assert any(not torch.equal(start.unet.state_dict()[k], after[f"unet.{k}"]) for k in start.unet.state_dict())
    assert any(not torch.equal(start.conditioner.state_dict()[k], after[f"conditioner.{k}"])
               for k in start.conditioner.state_dict())
    pipe = load_pipeline(r.checkpoint)  # the folder generate --weights loads
    assert torch.equal(pipe.unet.state_dict()["conv_in.weight"], after["unet.conv_in.weight"])
    item = fmt.load_item(tiny_dataset, "synth_00003")
    out = pipe(item.crop, item.input_camera.resized(64, 64), item.vertices, item.faces,
               [c.resized(64, 64) for c in item.cameras[:4]], num_inference_steps=2)
    assert out.images.shape == (4, 64, 64, 4)
    assert (tmp_path / "run" / "validation" / "step_000002.png").is_file()


def test_resume_continues_exactly(tiny_dataset, tmp_path):
    from engine.train.loop import train

    cfg = tiny(max_steps=3, ema_decay=0.5, cond_dropout=0.3)
    full = train(tiny_dataset, tmp_path / "a", cfg)
    part = train(tiny_dataset, tmp_path / "b", cfg, stop_after=2)  # "killed" after step 2
    assert part.step == 2
    rest = train(tiny_dataset, tmp_path / "b", cfg)
    assert rest.step == 3 and rest.losses == full.losses[2:]
    wa, wb = weights(full.checkpoint), weights(rest.checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    from weights.safeload import load_safetensors

    ema_a = load_safetensors(full.checkpoint / "unet" / "diffusion_pytorch_model.safetensors")
    ema_b = load_safetensors(rest.checkpoint / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert not torch.equal(ema_a["conv_in.weight"], wa["unet.conv_in.weight"])  # the folder holds the EMA


def test_accumulation_matches_the_larger_batch(tiny_dataset, tmp_path):
    from engine.train.loop import train

    a = train(tiny_dataset, tmp_path / "a", tiny(max_steps=1, batch_size=2))
    b = train(tiny_dataset, tmp_path / "b", tiny(max_steps=1, batch_size=1, grad_accum=2))
    wa, wb = weights(a.checkpoint), weights(b.checkpoint)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5


def test_condition_dropout_drops_the_input(tiny_dataset):
    """Dropped samples' loss ignores the input view (the CFG unconditional branch); kept ones do not."""
    from engine.train.data import TrainSet
    from engine.train.loop import build_pipeline
    from engine.train.objective import TrainModel

    model = TrainModel(build_pipeline(tiny()))
    data = TrainSet(tiny_dataset, 64, 4, seed=3)

    def loss(p, flip):
        s = data.sample(0)
        if flip:
            s.input_rgb = 1 - s.input_rgb
        with torch.no_grad():
            return float(model([s], p))

    assert loss(1.0, False) == loss(1.0, True)
    assert loss(0.0, False) != loss(0.0, True)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state: a second precision needs it reset (tests only)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_bf16_and_gradient_checkpointing_run(tiny_dataset, tmp_path, fresh_accelerate_state):
    from accelerate.state import AcceleratorState

    from engine.train.loop import train

    plain = train(tiny_dataset, tmp_path / "a", tiny(max_steps=1))
    gc = train(tiny_dataset, tmp_path / "b", tiny(max_steps=1, gradient_checkpointing=True))
    assert abs(plain.losses[0] - gc.losses[0]) < 1e-6  # the same function, recomputed in backward
    wa, wb = weights(plain.checkpoint), weights(gc.checkpoint)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6  # and the same gradients
    AcceleratorState._reset_state(True)
    bf = train(tiny_dataset, tmp_path / "c", tiny(max_steps=1, mixed_precision="bf16"))
    assert np.isfinite(bf.losses[0]) and abs(bf.losses[0] - plain.losses[0]) < 0.1


def _killed_mid_write(dataset, out):
    """Child process: train; die (SIGKILL-like, no cleanup) halfway through writing checkpoint 2."""
    import engine.train.state as st
    from engine.train.loop import train

    real = st.save_safetensors
    calls = {"n": 0}

    def dying(tensors, path):
        if "step_000002" in str(path) or ".step_000002" in str(path):
            calls["n"] += 1
            if calls["n"] == 2:
                Path(path).write_bytes(b"partial")
                os._exit(137)
        return real(tensors, path)

    st.save_safetensors = dying
    import engine.multiview.diffusion.folder as folder

    folder.save_safetensors = dying
    train(dataset, out, tiny(max_steps=3))


def test_killed_mid_write_leaves_the_last_checkpoint_loadable(tiny_dataset, tmp_path):
    from engine.multiview.diffusion import load_pipeline
    from engine.train.loop import train
    from engine.train.state import latest_checkpoint

    proc = multiprocessing.get_context("fork").Process(target=_killed_mid_write, args=(tiny_dataset, tmp_path / "run"))
    proc.start()
    proc.join(300)
    assert proc.exitcode == 137
    assert list((tmp_path / "run" / "checkpoints").glob(".step_000002.tmp-*"))  # the half-written one
    last = latest_checkpoint(tmp_path / "run")
    assert last.name == "step_000001"
    load_pipeline(last)
    r = train(tiny_dataset, tmp_path / "run", tiny(max_steps=3))  # resumes from step 1
    assert r.step == 3 and len(r.losses) == 2


SCRIPT = """
import sys
from pathlib import Path
from engine.train.config import TrainConfig
from engine.train.loop import train
cfg = TrainConfig(model="tiny", image_size=64, n_targets=4, batch_size=int(sys.argv[3]), max_steps=2,
                  checkpoint_every=2, validate_every=0, tracker="none", val_items=1, cond_dropout=0.0, seed=3)
train(Path(sys.argv[1]), Path(sys.argv[2]), cfg)
"""


def test_two_cpu_processes_match_one(tiny_dataset, tmp_path):
    """accelerate launch --cpu --num_processes 2 (gloo), batch 2 = 1 per process, vs 1 process at batch 2."""
    from engine.train.loop import train

    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           str(script), str(tiny_dataset), str(tmp_path / "two"), "2"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one = train(tiny_dataset, tmp_path / "one", tiny(max_steps=2, checkpoint_every=2))
    wa = weights(one.checkpoint)
    wb = weights(tmp_path / "two" / "checkpoints" / "step_000002")
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert diff < 1e-5, diff
