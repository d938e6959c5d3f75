"""`tisfm demo-models` builds every kind of shipped run (tiny settings) and keeps finished steps."""

import json

import pytest

from tisfm_core.cli import main
from tisfm_core.path import load_path
from tisfm_core.runs import find_runs, load_run


@pytest.mark.slow
def test_demo_models_builds_every_run_and_resumes(tmp_path, capsys):
    out = tmp_path / "tm"
    args = ["demo-models", "--out", str(out), "--regions", "300", "--folds", "3", "--epochs", "1",
            "--finetune-epochs", "1", "--batch-size", "64"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    steps = set(manifest["steps"])
    assert steps == {"atlas", "cv_full", "path_mcp_fold0", "treediff_full", "ablation_base",
                     "ablation_attention", "ablation_interaction", "ablation_maxpool", "ablation_linear",
                     "ablation_aitac"}
    runs = {str(p.relative_to(out)) for p in find_runs(out)}
    assert runs == {"cv_full/fold_0", "cv_full/fold_1", "cv_full/fold_2", "treediff_full",
                    *(f"ablations/{v}" for v in ("base", "attention", "interaction", "maxpool", "linear",
                                                 "aitac"))}
    tree = load_run(out / "treediff_full")
    assert tree.config["transform"]["kind"] == "tree-diff" and len(tree.outputs) == 80
    assert load_run(out / "cv_full" / "fold_1").config["group"] == "cv_full"
    path = load_path(out / "path_mcp_fold0")
    assert len(path.lambdas) == 17 and path.coefs.shape[1:] == (7, 163)
    readme = (out / "README.md").read_text()
    assert "SYNTHETIC" in readme and "`ablations/aitac`" in readme and "Fold-0 comparison" in readme
    before = (out / "cv_full" / "fold_0" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(args) == 0                               # a second call keeps every finished step
    assert "kept" in capsys.readouterr().out
    assert (out / "cv_full" / "fold_0" / "model.safetensors").read_bytes() == before
