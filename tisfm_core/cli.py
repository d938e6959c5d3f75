"""Command line: ``tisfm <command> ...`` (also ``python -m tisfm_core``).

Argument parsing only; every command calls one library function. Problems with the input are
printed as one line on stderr with a non-zero exit status (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from .progress import reporting

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3


def _outputs(text):
    return None if text is None else [o.strip() for o in text.split(",") if o.strip()]


def _add_data(p, *, targets=True):
    g = p.add_argument_group("data")
    g.add_argument("--sequences", help="FASTA or two-column TSV (id, sequence)")
    g.add_argument("--bed", help="BED/narrowPeak regions (summit-centred windows) instead of --sequences")
    g.add_argument("--genome", help="genome FASTA for --bed (indexed with pyfaidx)")
    if targets:
        g.add_argument("--targets", required=True,
                       help="targets TSV (header; first column ids) or an AI-TAC sample folder")


def _add_training(p):
    p.add_argument("--motifs", default="jaspar:2024",
                   help="motif file (MEME, JASPAR, TRANSFAC, HOMER) or jaspar:RELEASE (default jaspar:2024)")
    p.add_argument("--variant", default="full",
                   choices=["full", "base", "attention", "interaction", "maxpool", "aitac"])
    p.add_argument("--era", default="head", choices=["paper", "head"],
                   help="kernel placement and attention biases of the reference era (default head)")
    p.add_argument("--attention-softmax", default="query", choices=["query", "key"],
                   help="axis of the attention softmax: query (reference) or key (standard)")
    p.add_argument("--transform", default="none",
                   help="zscore | none | lineage:MAP.tsv | tree-diff:PARENTS.tsv (default none)")
    p.add_argument("--outputs", help="comma-separated subset of outputs to train on")
    p.add_argument("--epochs", type=int, default=100, help="max epochs with frozen kernels (default 100)")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="epochs with unfrozen kernels after stage 1 (paper: 10; default 0)")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="learning rate of the fine-tuning stage (default lr / 10)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--penalty", default="none", choices=["none", "l1", "mcp"])
    p.add_argument("--lam", type=float, default=0.0, help="penalty strength on the final layer")
    p.add_argument("--mcp-b", type=float, default=3.0)
    p.add_argument("--lr-patience", type=int, default=10)
    p.add_argument("--min-lr", type=float, default=5e-7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="fuse the motif block with torch.compile (auto: CPU, >= 100 motifs)")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--half", action="store_true", help="store weights in float16")
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--distributed", action="store_true",
                   help="train across processes under torchrun (NCCL on GPU, gloo on CPU)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--status-file", help="keep a JSON progress file up to date (used by the app's jobs)")


def _status(a):
    """A StatusFile callback when --status-file is given, else None."""
    from .progress import status_file

    return status_file(getattr(a, "status_file", None))


def _settings(a):
    from .training import TrainSettings

    return TrainSettings(epochs=a.epochs, finetune_epochs=a.finetune_epochs, batch_size=a.batch_size,
                         lr=a.lr, finetune_lr=a.finetune_lr, weight_decay=a.weight_decay,
                         penalty=a.penalty, lam=a.lam, mcp_b=a.mcp_b, lr_patience=a.lr_patience,
                         min_lr=a.min_lr, random_state=a.seed, device=a.device, precision=a.precision,
                         compile=a.compile)


def _train_kwargs(a):
    return dict(targets=a.targets, sequences=a.sequences, bed=a.bed, genome=a.genome, motifs=a.motifs,
                variant=a.variant, era=a.era, attention_softmax=a.attention_softmax,
                transform=a.transform, outputs=_outputs(a.outputs), settings=_settings(a),
                half=a.half, verbose=not a.quiet)


def _distributed(a):
    """Set up torch.distributed under torchrun; returns (rank, world_size) or None."""
    if not getattr(a, "distributed", False):
        return None
    from .distributed import init_from_env

    return init_from_env(a.device)


def cmd_train(a):
    from .workflows import train_run

    dist = _distributed(a)
    status = _status(a)
    result = {}
    with reporting(status, lambda: f"run written to {result['out']}"):
        if a.resume:
            result["out"] = train_run(a.resume, targets=None, resume=True, verbose=not a.quiet,
                                      distributed=dist, callback=status)
        else:
            if not a.out:
                raise _usage("train needs --out RUN (or --resume RUN)")
            if a.targets is None:
                raise _usage("train needs --targets")
            result["out"] = train_run(a.out, folds=a.folds, fold=a.fold, force=a.force, distributed=dist,
                                      callback=status, group=a.group, **_train_kwargs(a))
    out = result["out"]
    if not dist or dist[0] == 0:
        print(f"run written to {out}")


def cmd_cv(a):
    from .workflows import cv_runs

    status = _status(a)
    runs = []
    with reporting(status, lambda: f"{len(runs)} fold runs in {a.out}"):
        runs = cv_runs(a.out, folds=a.folds, force=a.force, callback=status, **_train_kwargs(a))
    print(f"{len(runs)} fold runs in {a.out}")


def cmd_evaluate(a):
    from .atomic import write_json
    from .workflows import evaluate_run

    metrics = evaluate_run(a.run, targets=a.targets, sequences=a.sequences, bed=a.bed, genome=a.genome,
                           batch_size=a.batch_size, device=a.device)
    for name, mse, r2, r in zip(metrics["outputs"], metrics["mse"], metrics["r2"], metrics["pearson"]):
        print(f"{name}\tMSE {mse:.4f}\tR2 {r2:.4f}\tPearson {r:.4f}")
    print(f"mean\tMSE {metrics['mean_mse']:.4f}\tR2 {metrics['mean_r2']:.4f}\tPearson "
          f"{metrics['mean_pearson']:.4f}\t(n = {metrics['n']})")
    if a.out:
        write_json(a.out, metrics)


def cmd_predict(a):
    from .workflows import predict_table, write_table

    table = predict_table(a.run, sequences=a.sequences, bed=a.bed, genome=a.genome,
                          batch_size=a.batch_size, device=a.device)
    write_table(table, a.out)
    print(f"{len(table)} predictions x {table.shape[1]} outputs written to {a.out}")


def cmd_export(a):
    from .motifs import write_meme
    from .runs import load_run
    from .workflows import final_layer_table, kernel_motifs, write_table

    if not (a.final_layer or a.kernels):
        raise _usage("export needs --final-layer W.tsv and/or --kernels K.meme")
    run = load_run(a.run)
    if a.final_layer:
        write_table(final_layer_table(run), a.final_layer)
        print(f"final layer written to {a.final_layer}")
    if a.kernels:
        write_meme(kernel_motifs(run), a.kernels)
        print(f"kernels written to {a.kernels}")


def cmd_import_reference(a):
    from .workflows import import_reference_run

    out = import_reference_run(a.state_dict, motifs=a.motifs, variant=a.variant, era=a.era,
                               outputs=_outputs(a.outputs), out=a.out, length=a.length, force=a.force,
                               attention_softmax=a.attention_softmax)
    print(f"imported into {out}")


def cmd_summary(a):
    from .workflows import summary

    info = summary(a.run)
    if a.json:
        print(json.dumps(info, indent=1))
        return
    print(f"run          {info['run']}")
    print(f"variant      {info['variant']} ({info['kind']})")
    if info["kind"] == "tisfm":
        print(f"motifs       {info['motifs']} from {info['motif_source']} ({info['motif_fingerprint'][:19]}...)")
        print(f"layers       era {info['era']}, attention {info['attention']}, interaction "
              f"{info['interaction']}, pooling {info['pooling']}")
    print(f"outputs      {len(info['outputs'])}: {', '.join(info['outputs'][:10])}"
          f"{' ...' if len(info['outputs']) > 10 else ''}")
    print(f"window       {info['length']} bp")
    print(f"parameters   {info['parameters_total']:,} total, {info['parameters_trainable']:,} trainable")
    if info.get("seconds") is not None:
        print(f"trained      {info['seconds']:.0f} s on {info['device']}")
    test = info["metrics"].get("test")
    if test:
        print(f"test         mean R2 {test['mean_r2']:.3f}, mean Pearson {test['mean_pearson']:.3f} "
              f"(n = {test['n']})")
        for name, r2, r in zip(test["outputs"], test["r2"], test["pearson"]):
            print(f"  {name:<24} R2 {r2 if r2 is not None else float('nan'):.3f}  "
                  f"Pearson {r if r is not None else float('nan'):.3f}")


class _UsageError(Exception):
    pass


def _usage(message):
    return _UsageError(message)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tisfm", description="tiSFM: train, inspect and explain interpretable "
                                  "sequence-to-function models")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one model into a run directory")
    _add_data(p, targets=False)
    p.add_argument("--targets")
    _add_training(p)
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted training in RUN")
    p.add_argument("--group", help="name of the cross-validation set this run belongs to (default: "
                                   "none; `tisfm cv` sets it to the CV folder's name)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cv", help="cross-validation: one run per fold in CV_DIR/fold_<i>")
    _add_data(p)
    _add_training(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("evaluate", help="per-output MSE, R2 and Pearson of a run on data")
    p.add_argument("run")
    _add_data(p)
    p.add_argument("--out", help="also write the metrics as JSON")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predictions for sequences, one row per input in input order")
    p.add_argument("run")
    _add_data(p, targets=False)
    p.add_argument("--out", required=True, help="output TSV (id + one column per output)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export the final layer (TSV) or the kernels (MEME)")
    p.add_argument("run")
    p.add_argument("--final-layer", metavar="W.tsv")
    p.add_argument("--kernels", metavar="K.meme")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import-reference", help="import a state dict of the reference implementation")
    p.add_argument("state_dict")
    p.add_argument("--motifs", required=True, help="the motif file the reference model was built from")
    p.add_argument("--variant", required=True, choices=["full", "base", "attention", "interaction", "maxpool"])
    p.add_argument("--era", required=True, choices=["paper", "head"])
    p.add_argument("--outputs", help="comma-separated output names, in the model's order")
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--attention-softmax", default="query", choices=["query", "key"])
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_import_reference)

    p = sub.add_parser("summary", help="variant, motifs, outputs, parameter counts and metrics of a run")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    from . import analysis, attribution, demo, demo_models, path
    analysis.add_parser(sub)
    attribution.add_parser(sub)
    demo.add_parser(sub)
    demo_models.add_parser(sub)
    path.add_parser(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import TisfmError

    # a warning (e.g. counts normalised) is one line, not a source excerpt
    warnings.showwarning = lambda msg, cat, *rest, **kw: print(f"warning: {msg}", file=sys.stderr)
    try:
        args.func(args)
    except _UsageError as exc:
        parser.exit(EXIT_USER_ERROR, f"tisfm {args.command}: error: {exc}\n")
    except TisfmError as exc:
        if args.debug:
            raise
        print(f"tisfm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"tisfm {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"tisfm {args.command}: error: out of memory (try a smaller --batch-size)", file=sys.stderr)
        return EXIT_INTERNAL
    except OSError as exc:
        if args.debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"tisfm {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # an internal bug: still one line, with the way to see more
        if args.debug:
            raise
        print(f"tisfm {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
