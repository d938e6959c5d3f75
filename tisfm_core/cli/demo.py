"""``demo-data`` and ``demo-models``: the synthetic demo atlas and the shipped demo runs."""

from __future__ import annotations

from pathlib import Path

from ..atomic import check_output_folder
from ..errors import TisfmError


def _add_demo_data(sub):
    p = sub.add_parser("demo-data", help="write the SYNTHETIC demo atlas (81 ImmGen cell types, "
                                         "planted JASPAR motifs, known answer in truth.json)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    p.add_argument("--regions", type=int, default=20000, help="number of regions (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty DIR")
    p.set_defaults(func=cmd_demo_data)
    return p


def cmd_demo_data(args):
    """Handler of ``tisfm demo-data``: refuses an existing non-empty folder without ``--force``."""
    out = check_output_folder(args.out, force=args.force,
                              hint="write the demo atlas into it anyway")
    from ..demo import make_demo_atlas

    info = make_demo_atlas(out, n_regions=args.regions, random_state=args.seed)
    size = sum(Path(p).stat().st_size for p in info["files"].values())
    print(f"SYNTHETIC demo atlas written to {info['out']}: {info['n_regions']} regions x "
          f"{info['length']} bp, 81 cell types, {info['n_motifs']} motifs, {size / 1e6:.1f} MB "
          f"in {info['seconds']:.1f} s (the answer is in truth.json)")


def _add_demo_models(sub):
    p = sub.add_parser("demo-models", help="regenerate the shipped demo runs from the synthetic atlas")
    p.add_argument("--out", default="trained_models")
    p.add_argument("--regions", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--folds", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="delete OUT first and rebuild everything")
    p.set_defaults(func=cmd_demo_models)


def cmd_demo_models(args):
    if args.folds is not None and args.folds < 3:
        raise TisfmError("--folds must be at least 3 (train / validation / test)")
    from ..demo_models import build_demo_models

    manifest = build_demo_models(args.out, n_regions=args.regions, epochs=args.epochs,
                                 finetune_epochs=args.finetune_epochs, folds=args.folds,
                                 batch_size=args.batch_size, random_state=args.seed, force=args.force)
    total = sum(e["seconds"] for e in manifest["steps"].values())
    print(f"demo runs in {args.out} ({total / 60:.0f} min)")


def add_parsers(sub):
    _add_demo_data(sub)
    _add_demo_models(sub)
