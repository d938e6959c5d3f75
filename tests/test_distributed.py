"""DistributedDataParallel: 2 CPU processes (gloo) reach the same weights as one process."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, planted_dataset

from tisfm_core.runs import load_run


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    if shutil.which("torchrun") is None and not (REPO / ".venv" / "bin" / "torchrun").exists():
        pytest.skip("torchrun is not installed")
    fasta, tsv, meme, _ = planted_dataset(tmp_path, n=400, length=60, n_outputs=3)
    common = ["--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme), "--epochs", "2",
              "--batch-size", "64", "--device", "cpu", "--precision", "fp32", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "tisfm_core", "train", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--standalone", "-m", "tisfm_core", "train", "--distributed", *common,
                          "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = load_run(tmp_path / "one"), load_run(tmp_path / "two")
    assert b.config["training"]["world_size"] == 2 and a.config["training"]["world_size"] == 1
    # Adam turns reduction-order rounding of near-zero gradients (the attention starts as a zero
    # residual) into steps of size ~lr, so compare at the scale of the learning rate
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(p, q, atol=2e-3, rtol=1e-3), name
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (32, 60)), 4).permute(0, 2, 1).float()
    with torch.no_grad():
        assert torch.allclose(a.model(x), b.model(x), atol=1e-3)
