"""A small runs folder for the app tests: tiny tiSFM runs trained on a SYNTHETIC demo atlas.

Layout (under the folder returned by :func:`app_runs_folder`)::

    data/demo/                 demo atlas (300 regions x 100 bp) + truth.json + motifs_small.meme
    runs/lineages_full/        full variant, 7 lineage outputs (interaction, programmable pooling)
    runs/cv_lineages/fold_0,1  base variant, one CV set (config "group" = cv_lineages)
    runs/treediff_base/        base variant on tree-diff targets (one output per tree edge)
    runs/paths/lineages_mcp/   MCP regularization path of lineages_full (path.npz + path.json)
    runs/broken/               a run folder whose config.json is not JSON

Building takes about half a minute on two busy cores, so the folder is cached in the temporary
directory under a key made of the sources it depends on, and reused by later test sessions.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SOURCES = ["tests/app_fixtures.py"] + [f"tisfm_core/{name}.py" for name in (
    "runs", "model", "workflows", "training", "demo", "path", "motifs", "dataset", "targets",
    "sequences", "splits")]
N_REGIONS = 300
LENGTH = 100
N_EXTRA_MOTIFS = 6


def _key():
    digest = hashlib.sha256()
    for name in _SOURCES:
        path = REPO / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:16]


def small_motifs(atlas_dir, truth):
    """The planted motifs plus a few others from the demo's collection (a faster model)."""
    from tisfm_core.motifs import MotifSet, read_meme, write_meme

    motifs = read_meme(atlas_dir / "motifs.meme")
    planted = set(truth["motifs"].values())
    keep = [i for i, m in enumerate(motifs.ids) if m in planted]
    keep += [i for i, m in enumerate(motifs.ids) if m not in planted][:N_EXTRA_MOTIFS]
    keep.sort()
    small = MotifSet(ids=tuple(motifs.ids[i] for i in keep), names=tuple(motifs.names[i] for i in keep),
                     matrices=tuple(motifs.matrices[i] for i in keep), source="demo atlas (subset)")
    path = atlas_dir / "motifs_small.meme"
    write_meme(small, path)
    return path


def build(root):
    """Write the fixture folder into ``root`` (see the module docstring); returns ``root``."""
    from tisfm_core.demo import make_demo_atlas
    from tisfm_core.path import regularization_path
    from tisfm_core.specs import DataSpec, ModelSpec, PathSpec, TrainTask
    from tisfm_core.training import TrainSettings
    from tisfm_core.workflows import train_run

    root = Path(root)
    atlas_dir = root / "data" / "demo"
    info = make_demo_atlas(atlas_dir, n_regions=N_REGIONS, length=LENGTH, random_state=0)
    motifs = small_motifs(atlas_dir, info["truth"])
    files = info["files"]
    runs = root / "runs"
    two = TrainSettings(epochs=2, batch_size=64, device="cpu", precision="fp32", lr=0.003)
    one = TrainSettings(epochs=1, batch_size=64, device="cpu", precision="fp32", lr=0.003)

    def task(variant, settings, targets, **data):
        return TrainTask(data=DataSpec(sequences=files["sequences"], targets=targets, folds=5, **data),
                         model=ModelSpec(variant=variant, motifs=str(motifs)), training=settings)
    train_run(runs / "lineages_full", task("full", two, files["lineages"]), verbose=False)
    for fold in range(2):
        train_run(runs / "cv_lineages" / f"fold_{fold}",
                  task("base", one, files["lineages"], fold=fold).replace(group="cv_lineages"), verbose=False)
    train_run(runs / "treediff_base", task("base", one, files["celltypes"],
                                           transform=f"tree-diff:{files['parents']}"), verbose=False)
    result = regularization_path(runs / "lineages_full", PathSpec(lambdas=(0.0, 1e-3, 1e-2, 1e-1),
                                                                  penalty="mcp", epochs=2, device="cpu"))
    result.save(runs / "paths" / "lineages_mcp")
    broken = runs / "broken"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"")
    return root


def app_runs_folder():
    """The cached fixture folder, built on first use (under a file lock: safe across processes).

    The runs find their data relative to themselves (see test_a_moved_checkout_renders_every_page_and_run
    for a moved folder); this one is used where it was built.
    """
    base = Path(tempfile.gettempdir()) / f"tisfm-app-fixture-{_key()}"
    if (base / "complete").exists():
        return base
    with open(base.with_name(base.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (base / "complete").exists():
            shutil.rmtree(base, ignore_errors=True)
            build(base)
            (base / "complete").write_text("ok\n")
    # folders of older sources are dead weight once a day has passed
    for old in base.parent.glob("tisfm-app-fixture-*"):
        if old.is_dir() and old != base and time.time() - old.stat().st_mtime > 86400:
            shutil.rmtree(old, ignore_errors=True)
    return base
