"""The torch rule and the set-up plan (blender_addon/engine_env.py): pure data, no bpy, no torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from blender_addon import engine_env  # noqa: E402
from blender_addon.engine_env import TorchChoiceError, choose_torch  # noqa: E402
from engine.hardware import Hardware  # noqa: E402

LINUX, NVIDIA = Hardware("Linux"), Hardware("Linux", nvidia=True, nvidia_gpus=("NVIDIA L4",))
CPU_INDEX, CUDA_INDEX = "https://download.pytorch.org/whl/cpu", "https://download.pytorch.org/whl/cu128"


def wheel_dir(tmp_path, *names):
    folder = tmp_path / "wheels"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return str(folder)


def test_auto_follows_the_hardware(tmp_path):
    assert choose_torch("", LINUX).install_args() == ["torch==2.13.0", "--index-url", CPU_INDEX]
    cuda = choose_torch("auto", NVIDIA)
    assert cuda.kind == "cuda" and cuda.install_args() == ["torch==2.13.0", "--index-url", CUDA_INDEX]
    assert "NVIDIA L4" in cuda.reason
    rocm = choose_torch("", Hardware("Linux", amd_rocm=True))
    assert rocm.install_args()[-1] == "https://download.pytorch.org/whl/rocm6.4"
    assert choose_torch("", Hardware("Darwin")).install_args() == ["torch==2.13.0"]  # PyPI: CPU + MPS
    assert choose_torch("", Hardware("Windows")).install_args()[-1] == CPU_INDEX  # PyPI's Windows torch is CPU too
    assert choose_torch("", Hardware("Windows", nvidia=True)).install_args()[-1] == CUDA_INDEX


def test_a_local_cpu_wheel_is_used_only_when_it_fits(tmp_path):
    wrong = wheel_dir(tmp_path, "torch-2.13.0+cpu-cp313-cp313-manylinux_2_28_x86_64.whl",
                      "torch-2.12.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                      "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl")  # a CUDA build's name has no +cpu
    assert choose_torch("", LINUX, [wrong]).index_url == CPU_INDEX
    good = wheel_dir(tmp_path, "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    local = choose_torch("", LINUX, [str(tmp_path / "missing"), good])
    assert local.install_args() == ["torch==2.13.0", "--find-links", good] and good in local.reason
    assert choose_torch("", NVIDIA, [good]).kind == "cuda"  # a GPU machine does not settle for the CPU wheel
    assert choose_torch("", Hardware("Windows"), [good]).index_url == CPU_INDEX  # a Linux wheel, not for Windows


def test_overrides_and_bad_values(tmp_path):
    assert choose_torch("cpu", NVIDIA).index_url == CPU_INDEX
    assert choose_torch("CUDA", LINUX).index_url == CUDA_INDEX
    assert choose_torch(" https://mirror.example/torch ", LINUX).install_args()[1:] == [
        "--index-url", "https://mirror.example/torch"]
    folder = wheel_dir(tmp_path)
    assert choose_torch(folder, NVIDIA).install_args() == ["torch==2.13.0", "--find-links", folder]
    with pytest.raises(TorchChoiceError, match="none for Darwin"):
        choose_torch("cuda", Hardware("Darwin"))
    with pytest.raises(TorchChoiceError, match="none for Windows"):
        choose_torch("rocm", Hardware("Windows"))
    with pytest.raises(TorchChoiceError, match="'gpu please'"):
        choose_torch("gpu please", LINUX)


def test_plan_installs_uv_then_a_311_env_torch_and_the_engine(tmp_path):
    env = tmp_path / "engine-env.partial"
    steps = engine_env.plan("/blender/python/bin/python3.13", env, "/ext/gen3dface", choose_torch("", LINUX),
                            uv=tmp_path / "tools" / "bin" / "uv", install_uv=True, tools_dir=tmp_path / "tools")
    uv, py = str(tmp_path / "tools" / "bin" / "uv"), str(env / "bin" / "python")
    assert [s.title for s in steps] == ["Install uv", "Find or fetch Python 3.11", "Install torch",
                                        "Install the engine", "Warm the caches", "Check the engine"]
    assert steps[0].argv[:3] == ("/blender/python/bin/python3.13", "-m", "pip")
    assert steps[0].argv[-3:] == ("--target", str(tmp_path / "tools"), "uv")
    assert steps[1].argv == (uv, "venv", "--relocatable", "--python", "3.11", str(env))
    assert steps[2].argv == (uv, "pip", "install", "--python", py, "torch==2.13.0", "--index-url", CPU_INDEX)
    assert steps[3].argv == (uv, "pip", "install", "--python", py, "-r", "/ext/gen3dface/pyproject.toml")
    assert steps[4].argv[0] == py and "warm_caches()" in steps[4].argv[-1]
    assert steps[5].argv[0] == py and "device_report" in steps[5].argv[-1]
    again = engine_env.plan("py", env, "/ext", choose_torch("", LINUX), uv="uv", install_uv=False)
    assert [s.title for s in again][0] == "Find or fetch Python 3.11"


def test_manual_commands_for_each_system():
    cpu = choose_torch("", LINUX)
    linux = engine_env.manual_commands("Linux", "/home/me/.config/blender/5.2/x/engine-env", "/ext dir/gen3dface", cpu)
    assert linux[1] == "uv venv --python 3.11 /home/me/.config/blender/5.2/x/engine-env"
    assert linux[2] == ("uv pip install --python /home/me/.config/blender/5.2/x/engine-env/bin/python "
                        f"torch==2.13.0 --index-url {CPU_INDEX}")
    assert linux[3].endswith(" -r '/ext dir/gen3dface/pyproject.toml'")
    assert linux[4] == "cd '/ext dir/gen3dface' && /home/me/.config/blender/5.2/x/engine-env/bin/python -m engine warmup"
    win = engine_env.manual_commands("Windows", r"C:\Users\Me\AppData\Roaming\Blender Foundation\engine-env",
                                     r"C:\ext\gen3dface", choose_torch("", Hardware("Windows", nvidia=True)))
    assert win[0].startswith("py -m pip install uv")
    assert win[2] == (r'uv pip install --python "C:\Users\Me\AppData\Roaming\Blender Foundation\engine-env'
                      rf'\Scripts\python.exe" torch==2.13.0 --index-url {CUDA_INDEX}')
    mac = engine_env.manual_commands("Darwin", "/Users/me/Library/Application Support/Blender/5.2/engine-env",
                                     "/ext", choose_torch("", Hardware("Darwin")))
    assert mac[2] == ("uv pip install --python '/Users/me/Library/Application Support/Blender/5.2/engine-env/"
                      "bin/python' torch==2.13.0")


def torch_args(env_extra, *args):
    env = {**os.environ, **env_extra}
    done = subprocess.run([sys.executable, str(ROOT / "blender_addon" / "engine_env.py"), "torch-args", *args],
                          capture_output=True, text=True, env=env, timeout=60)
    return done.returncode, done.stdout.split(), done.stderr


def test_setup_sh_gets_the_same_rule_from_the_script(tmp_path):
    """scripts/setup.sh runs `engine_env.py torch-args --pip-wheels`: the rule, the override, pip's wheel folders."""
    from tests.engine.test_hardware import fake_nvidia_smi

    smi_path = fake_nvidia_smi(tmp_path / "bin") + os.pathsep + os.environ["PATH"]
    assert torch_args({"PATH": smi_path, "GEN3DFACE_TORCH": ""})[1] == ["torch==2.13.0", "--index-url", CUDA_INDEX]
    rc, out, err = torch_args({"PATH": smi_path, "GEN3DFACE_TORCH": "cpu"})
    assert rc == 0 and out == ["torch==2.13.0", "--index-url", CPU_INDEX], (out, err)
    good = wheel_dir(tmp_path, f"torch-2.13.0+cpu-cp311-cp311-{'manylinux_2_28_x86_64'}.whl")
    rc, out, err = torch_args({"PIP_FIND_LINKS": good, "GEN3DFACE_TORCH": "cpu"}, "--pip-wheels")
    assert out == ["torch==2.13.0", "--find-links", good] and "local wheel folder" in err
    rc, out, err = torch_args({"GEN3DFACE_TORCH": "tpu"})
    assert rc == 2 and out == [] and err.startswith("engine_env.py: torch build 'tpu'")
