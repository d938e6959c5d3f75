"""Equivalence with the reference implementation and safe loading of its checkpoints."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import CISBP, REFERENCE, REFERENCE_FIXTURES, REPO, need

from tisfm_core.errors import TisfmError
from tisfm_core.reference import import_reference, read_state_dict


@pytest.mark.parametrize("folder, variant, era, n_params", REFERENCE_FIXTURES)
def test_reference_fixture_outputs_reproduced(cisbp, folder, variant, era, n_params):
    root = need(REFERENCE / folder)
    info = json.loads((root / "info.json").read_text())
    model = import_reference(root / "state_dict.pt", cisbp, variant=variant, era=era)
    assert model.n_parameters() == info["parameters_total"] == n_params
    x = torch.from_numpy(np.load(root / "inputs.npy"))
    with torch.no_grad():
        got = model(x).numpy()
    assert np.abs(got - np.load(root / "outputs.npy")).max() < 1e-4


def test_wrong_variant_or_era_is_refused_with_the_reason(cisbp):
    path = need(REFERENCE / "full_head" / "state_dict.pt")
    with pytest.raises(TisfmError, match="is a full or maxpool model, not 'base'"):
        import_reference(path, cisbp, variant="base", era="head")
    with pytest.raises(TisfmError, match="which means era head"):
        import_reference(path, cisbp, variant="full", era="paper")
    with pytest.raises(TisfmError, match="3 output names were given but the state dict has 8"):
        import_reference(path, cisbp, variant="full", era="head", outputs=["a", "b", "c"])
    with pytest.raises(TisfmError, match="has 10 motifs but the state dict has kernels for 862"):
        import_reference(path, cisbp.subset(cisbp.ids[:10]), variant="full", era="head")


def test_truncated_and_foreign_files_are_refused(tmp_path):
    src = need(REFERENCE / "base_head" / "state_dict.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(TisfmError, match="not a readable PyTorch checkpoint"):
        read_state_dict(cut)
    text = tmp_path / "notes.pt"
    text.write_text("just some text\n")
    with pytest.raises(TisfmError, match="cut.pt|notes.pt"):
        read_state_dict(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, foreign)
    from tisfm_core.reference import config_from_state_dict
    with pytest.raises(TisfmError, match="not a tiSFM reference state dict"):
        config_from_state_dict(read_state_dict(foreign), variant="full", era="head")


def test_checkpoint_that_runs_code_when_unpickled_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    # build the payload in a separate interpreter so this process never holds the object
    script = (
        "import os, torch\n"
        "class Evil:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'linreg.weight': torch.zeros(1), 'x': Evil()}}, r'{evil}')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    assert evil.exists() and not marker.exists()
    with pytest.raises(TisfmError, match="refused"):
        read_state_dict(evil)
    assert not marker.exists(), "the payload ran"


def test_cli_import_then_predict_matches_reference_and_summary_counts(tmp_path):
    root = need(REFERENCE / "full_paper")
    need(CISBP)
    run = tmp_path / "imported"
    outputs = "abT,B,gdT,innate.lym,myeloid,stem,stroma,T.act"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "tisfm_core"]
    r = subprocess.run(cmd + ["import-reference", str(root / "state_dict.pt"), "--motifs", str(CISBP),
                              "--variant", "full", "--era", "paper", "--outputs", outputs,
                              "--out", str(run)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    x = np.load(root / "inputs.npy")
    # decode the fixture's one-hot into FASTA; the all-zero run becomes N
    letters = np.array(list("ACGTN"))
    idx = np.where(x.sum(1) == 0, 4, x.argmax(1))
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">s{i}\n{''.join(letters[row])}\n" for i, row in enumerate(idx)))
    pred = tmp_path / "pred.tsv"
    r = subprocess.run(cmd + ["predict", str(run), "--sequences", str(fasta), "--out", str(pred)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = pred.read_text().splitlines()
    assert lines[0].split("\t") == ["id"] + outputs.split(",")
    got = np.array([[float(v) for v in line.split("\t")[1:]] for line in lines[1:]])
    assert [line.split("\t")[0] for line in lines[1:]] == [f"s{i}" for i in range(16)]
    assert np.abs(got - np.load(root / "outputs.npy")).max() < 1e-4
    r = subprocess.run(cmd + ["summary", str(run)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "966,182 total" in r.stdout, r.stdout + r.stderr
