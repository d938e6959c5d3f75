"""``train``, ``cv``, ``evaluate``, ``predict``, ``export``, ``import-reference``, ``summary``."""

from __future__ import annotations

import json

from ..metrics import format_metric
from ..progress import reporting
from ..specs import VARIANTS
from .common import (
    UsageError,
    add_sequences,
    add_status,
    add_task,
    device_arg,
    outputs_list,
    status,
    task_from_args,
)


def _distributed(a):
    """Set up torch.distributed under torchrun; returns (rank, world_size) or None."""
    if not getattr(a, "distributed", False):
        return None
    from ..distributed import init_from_env

    return init_from_env(device_arg(a.device))


def cmd_train(a):
    from ..workflows import resume_run, train_run

    dist = _distributed(a)
    # under torchrun every rank trains, but only rank 0 reports to the status file
    callback = status(a) if not dist or dist[0] == 0 else None
    result = {}
    with reporting(callback, lambda: f"run written to {result['out']}"):
        if a.resume:
            result["out"] = resume_run(a.resume, force=a.force, verbose=not a.quiet, distributed=dist,
                                       callback=callback)
        else:
            if not a.out:
                raise UsageError("train needs --out RUN (or --resume RUN)")
            task = task_from_args(a)
            if a.group:
                task = task.replace(group=a.group)
            result["out"] = train_run(a.out, task, force=a.force, distributed=dist, callback=callback,
                                      verbose=not a.quiet)
    if not dist or dist[0] == 0:
        print(f"run written to {result['out']}")


def cmd_cv(a):
    from ..workflows import cv_runs

    callback = status(a)
    runs = []
    with reporting(callback, lambda: f"{len(runs)} fold runs in {a.out}"):
        runs = cv_runs(a.out, task_from_args(a), force=a.force, callback=callback, verbose=not a.quiet)
    print(f"{len(runs)} fold runs in {a.out}")


def cmd_evaluate(a):
    from ..atomic import write_json
    from ..workflows import evaluate_run

    metrics = evaluate_run(a.run, targets=a.targets, sequences=a.sequences, bed=a.bed, genome=a.genome,
                           batch_size=a.batch_size, device=device_arg(a.device))
    for name, mse, r2, r in zip(metrics["outputs"], metrics["mse"], metrics["r2"], metrics["pearson"]):
        print(f"{name}\tMSE {mse:.4f}\tR2 {format_metric(r2, 4)}\tPearson {format_metric(r, 4)}")
    print(f"mean\tMSE {metrics['mean_mse']:.4f}\tR2 {format_metric(metrics['mean_r2'], 4)}\tPearson "
          f"{format_metric(metrics['mean_pearson'], 4)}\t(n = {metrics['n']})")
    if a.out:
        write_json(a.out, metrics)


def cmd_predict(a):
    from ..workflows import predict_table, write_table

    table = predict_table(a.run, sequences=a.sequences, bed=a.bed, genome=a.genome,
                          batch_size=a.batch_size, device=device_arg(a.device))
    write_table(table, a.out)
    print(f"{len(table)} predictions x {table.shape[1]} outputs written to {a.out}")


def cmd_export(a):
    from ..analysis import final_layer
    from ..motifs import write_meme
    from ..runs import load_run
    from ..workflows import kernel_motifs, write_table

    if not (a.final_layer or a.kernels):
        raise UsageError("export needs --final-layer W.tsv and/or --kernels K.meme")
    run = load_run(a.run)
    if a.final_layer:
        table = final_layer(run)
        table.insert(0, "name", run.motif_names)
        write_table(table, a.final_layer)
        print(f"final layer written to {a.final_layer}")
    if a.kernels:
        write_meme(kernel_motifs(run), a.kernels)
        print(f"kernels written to {a.kernels}")


def cmd_import_reference(a):
    from ..workflows import import_reference_run

    out = import_reference_run(a.state_dict, motifs=a.motifs, variant=a.variant, era=a.era,
                               outputs=outputs_list(a.outputs), out=a.out, length=a.length,
                               force=a.force, attention_softmax=a.attention_softmax)
    print(f"imported into {out}")


def cmd_summary(a):
    from ..workflows import summary

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
    if info.get("finetune"):
        tuned = info["finetune"]
        print(f"fine-tuned   train {tuned['train']}, from {' -> '.join(tuned['lineage'])}")
    test = info["metrics"].get("test")
    if test:
        print(f"test         mean R2 {format_metric(test.get('mean_r2'), 3)}, mean Pearson "
              f"{format_metric(test.get('mean_pearson'), 3)} (n = {test.get('n')})")
        for name, r2, r in zip(test.get("outputs") or info["outputs"], test.get("r2") or [],
                               test.get("pearson") or []):
            print(f"  {name:<24} R2 {format_metric(r2, 3)}  Pearson {format_metric(r, 3)}")


def add_parsers(sub):
    p = sub.add_parser("train", help="train one model into a run directory")
    add_task(p)
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted training in RUN")
    p.add_argument("--group", help="name of the cross-validation set this run belongs to (default: "
                                   "none; `tisfm cv` sets it to the CV folder's name)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing run (only once the new inputs proved readable) and take "
                        "over the claim of a process that no longer runs")
    p.add_argument("--distributed", action="store_true",
                   help="train across processes under torchrun (NCCL on GPU, gloo on CPU)")
    p.add_argument("--quiet", action="store_true")
    add_status(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cv", help="cross-validation: one run per fold in CV_DIR/fold_<i>")
    add_task(p)
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true", help="retrain folds that are already finished and "
                                                         "take over a stale claim on the folder")
    p.add_argument("--quiet", action="store_true")
    add_status(p)
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("evaluate", help="per-output MSE, R2 and Pearson of a run on data")
    p.add_argument("run")
    add_sequences(p)
    p.add_argument("--out", help="also write the metrics as JSON")
    p.add_argument("--batch-size", type=int, default=512, help="sequences per batch")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predictions for sequences, one row per input in input order")
    p.add_argument("run")
    add_sequences(p, targets=False)
    p.add_argument("--out", required=True, help="output TSV (id + one column per output)")
    p.add_argument("--batch-size", type=int, default=512, help="sequences per batch")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export the final layer (TSV) or the kernels (MEME)")
    p.add_argument("run")
    p.add_argument("--final-layer", metavar="W.tsv", help="motif id, TF name and one column per output")
    p.add_argument("--kernels", metavar="K.meme")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import-reference", help="import a state dict of the reference implementation")
    p.add_argument("state_dict")
    p.add_argument("--motifs", required=True, help="the motif file the reference model was built from")
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
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

