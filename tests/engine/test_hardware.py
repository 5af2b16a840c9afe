"""GPU probe without torch, and doctor's device report / CPU-torch-beside-NVIDIA warning."""
from __future__ import annotations

import json
import os
import stat

from engine import hardware
from engine.doctor import device_report
from tests.engine.cli_helpers import run_cli


def fake_nvidia_smi(folder, names=("NVIDIA H200",), rc=0):
    """An ``nvidia-smi`` on a PATH of its own that prints ``names`` as the real one does for --query-gpu."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    body = "".join(f"echo '{n}'\n" for n in names)
    exe.write_text(f"#!/bin/sh\ncase \"$*\" in *--query-gpu=name*) {body};; esac\nexit {rc}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(folder)


def test_detect_finds_the_driver_from_proc_or_nvidia_smi(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    none = hardware.detect("Linux", proc=empty, dev=empty, path=str(empty))
    assert none == hardware.Hardware("Linux")
    (tmp_path / "proc" / "driver" / "nvidia").mkdir(parents=True)
    (tmp_path / "proc" / "driver" / "nvidia" / "version").write_text("NVRM version: 580.1\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "kfd").write_text("")
    by_proc = hardware.detect("Linux", proc=tmp_path / "proc", dev=tmp_path / "dev", path=str(empty))
    assert by_proc.nvidia and by_proc.nvidia_gpus == () and by_proc.amd_rocm
    smi = fake_nvidia_smi(tmp_path / "bin", ("NVIDIA H200", "NVIDIA L4"))
    by_smi = hardware.detect("Linux", proc=empty, dev=empty, path=smi)
    assert by_smi.nvidia and by_smi.nvidia_gpus == ("NVIDIA H200", "NVIDIA L4") and not by_smi.amd_rocm
    broken = fake_nvidia_smi(tmp_path / "broken", (), rc=9)  # nvidia-smi without a working driver
    assert not hardware.detect("Linux", proc=empty, dev=empty, path=broken).nvidia
    # /proc and /dev say nothing on other systems
    assert not hardware.detect("Darwin", proc=tmp_path / "proc", dev=tmp_path / "dev", path=str(empty)).nvidia


def test_device_report_warns_only_for_a_cpu_torch_beside_an_nvidia_gpu():
    import torch

    assert torch.version.cuda is None  # these machines run the CPU wheel
    quiet = device_report(hardware.Hardware("Linux"))
    assert quiet == {"device": "cpu", "torch_build": "cpu", "nvidia_gpu": False, "warning": ""}
    loud = device_report(hardware.Hardware("Linux", nvidia=True, nvidia_gpus=("NVIDIA H200",)))
    assert loud["device"] == "cpu" and loud["nvidia_gpu"] is True
    assert "NVIDIA H200" in loud["warning"] and "CPU build" in loud["warning"]


def test_doctor_reports_device_and_warns_on_stderr(tmp_path):
    smi = fake_nvidia_smi(tmp_path / "bin")
    result = run_cli("doctor", env={**os.environ, "PATH": smi + os.pathsep + os.environ["PATH"]})
    assert result.code == 0, result.stderr
    device = json.loads(result.stdout)["device"]
    assert device["device"] == "cpu" and device["torch_build"] == "cpu" and device["nvidia_gpu"] is True
    assert "NVIDIA H200" in device["warning"]
    assert f"warning: {device['warning']}" in result.stderr
