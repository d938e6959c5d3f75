"""``path``: the regularization path of a run's final layer."""

from __future__ import annotations

from ..atomic import check_output_folder
from ..claims import claim_output
from ..progress import reporting
from .common import add_path_flags, add_status, path_spec, status


def cmd_path(a):
    """One line per lambda, then the best lambda per output."""
    from ..path import regularization_path

    spec = path_spec(a)
    callback = status(a)

    def progress(event):
        # one progress step per finished lambda
        if callback is not None and event.get("event") == "lambda":
            callback({"event": "step", "step": event["index"] + 2, "steps": event["lambdas"] + 1,
                      "message": f"lambda {event['lam']:.4g}: val MSE {event['val_mse']:.4f}, "
                                 f"{event['n_nonzero']} non-zeros"})
    with reporting(callback, lambda: f"path with {len(spec.lambdas)} lambdas written to {a.out}"), \
            claim_output(a.out, kind="path", force=a.force):
        out = check_output_folder(a.out, force=a.force)
        result = regularization_path(a.run, spec, verbose=True, callback=progress)
        result.save(out)
    for output, row in result.best_table().iterrows():
        print(f"best lambda {output}: {row['lambda']:.4g} (val MSE {row['val_mse']:.4f}, "
              f"test MSE {row['test_mse']:.4f}, {int(row['n_nonzero'])} non-zeros)")
    print(f"path of {len(result.lambdas)} lambdas ({result.mode} mode, {result.seconds:.1f} s) "
          f"written to {out}")


def add_parsers(sub):
    p = sub.add_parser("path", help="regularization path of a run's final layer (L1 or MCP, warm starts)")
    p.add_argument("run", help="run folder (its training data files must still exist)")
    add_path_flags(p)
    p.add_argument("--out", required=True, metavar="PATH_DIR", help="folder for path.npz and path.json")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing path folder and take over a stale claim on it")
    add_status(p)
    p.set_defaults(func=cmd_path)
