"""The bad-input matrix of the command line: every case must exit with status 2, print one line
that names the problem, show no traceback, and leave every saved file untouched."""

import json
import os
import shlex
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import folder_digest, planted_dataset, reference_state, write_bad_inputs

from tisfm_core.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    fasta, tsv, meme, _ = planted_dataset(tmp, n=300, length=40, n_outputs=2)
    run = tmp / "run"
    assert main(["train", "--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme),
                 "--out", str(run), "--epochs", "1", "--batch-size", "64", "--quiet"]) == 0
    aitac = tmp / "aitac"
    assert main(["train", "--sequences", str(fasta), "--targets", str(tsv), "--variant", "aitac",
                 "--out", str(aitac), "--epochs", "1", "--batch-size", "64", "--quiet"]) == 0
    write_bad_inputs(tmp, fasta, tsv)
    # broken copies of the run
    for name, edit in {
        "run_noweights": lambda d: (d / "model.safetensors").unlink(),
        "run_truncated": lambda d: (d / "model.safetensors").write_bytes(
            (d / "model.safetensors").read_bytes()[:300]),
        "run_nofield": lambda d: _edit_config(d, lambda c: c.pop("model")),
        "run_wrongtype": lambda d: _edit_config(d, lambda c: c["model"]["config"].update(length="300")),
        "run_motifs": lambda d: _edit_config(d, lambda c: c["motifs"].update(ids=c["motifs"]["ids"][:-1])),
    }.items():
        shutil.copytree(run, tmp / name)
        edit(tmp / name)
    return tmp, fasta, tsv, meme, run, aitac


def _edit_config(folder, fn):
    config = json.loads((folder / "config.json").read_text())
    fn(config)
    (folder / "config.json").write_text(json.dumps(config))


T = "train --sequences {fasta} --targets {tsv} --motifs {meme} --epochs 1 --out {tmp}/new"
CASES = [
    # (id, command, text the message must contain)
    ("motif bad row", "train --sequences {fasta} --targets {tsv} --motifs {tmp}/bad_row.meme --out {tmp}/n1",
     "line 7"),
    ("motif wrong alphabet", "train --sequences {fasta} --targets {tsv} --motifs {tmp}/rna.meme --out {tmp}/n2",
     "ACGU"),
    ("motif file empty", "train --sequences {fasta} --targets {tsv} --motifs {tmp}/empty.meme --out {tmp}/n3",
     "empty.meme"),
    ("motif file without motifs",
     "train --sequences {fasta} --targets {tsv} --motifs {tmp}/nomotif.meme --out {tmp}/n4", "no motif"),
    ("duplicate motif ids", "train --sequences {fasta} --targets {tsv} --motifs {tmp}/dup.meme --out {tmp}/n5",
     "duplicate"),
    ("negative probability",
     "train --sequences {fasta} --targets {tsv} --motifs {tmp}/negative.meme --out {tmp}/n6", "negative"),
    ("rows not summing to 1",
     "train --sequences {fasta} --targets {tsv} --motifs {tmp}/halfsum.meme --out {tmp}/n7", "sum"),
    ("unknown JASPAR release",
     "train --sequences {fasta} --targets {tsv} --motifs jaspar:1999 --out {tmp}/n8", "1999"),
    ("invalid letter", "predict {run} --sequences {tmp}/letters.fa --out {tmp}/p.tsv", "position 11"),
    ("mixed lengths", "predict {run} --sequences {tmp}/lengths.fa --out {tmp}/p.tsv", "extra"),
    ("empty record", "predict {run} --sequences {tmp}/emptyrec.fa --out {tmp}/p.tsv", "r0"),
    ("duplicate sequence ids", "predict {run} --sequences {tmp}/dupid.fa --out {tmp}/p.tsv", "r0"),
    ("wrong length for the run", "predict {run} --sequences {tmp}/short.fa --out {tmp}/p.tsv", "40"),
    ("ids do not match targets",
     "train --sequences {tmp}/otherids.fa --targets {tsv} --motifs {meme} --out {tmp}/n9", "peak_"),
    ("NaN target", "train --sequences {fasta} --targets {tmp}/nan.tsv --motifs {meme} --out {tmp}/n10", "r4"),
    ("non-numeric target", "train --sequences {fasta} --targets {tmp}/text.tsv --motifs {meme} --out {tmp}/n11",
     "high"),
    ("BED interval past the contig end",
     "predict {run} --bed {tmp}/offend.bed --genome {tmp}/genome.fa --out {tmp}/p.tsv", "chr1"),
    ("BED unknown contig", "predict {run} --bed {tmp}/unknown.bed --genome {tmp}/genome.fa --out {tmp}/p.tsv",
     "chrZ"),
    ("unknown output name", T.replace("--out", "--outputs out0,nope --out"), "nope"),
    ("evaluate without an output column",
     "evaluate {run} --sequences {fasta} --targets {tmp}/onecol.tsv", "out1"),
    ("missing weights", "summary {tmp}/run_noweights", "model.safetensors"),
    ("truncated weights", "predict {tmp}/run_truncated --sequences {fasta} --out {tmp}/p.tsv", "truncated"),
    ("config missing field", "summary {tmp}/run_nofield", "'model'"),
    ("config wrong type", "summary {tmp}/run_wrongtype", "'length'"),
    ("motif set does not match the weights", "summary {tmp}/run_motifs", "motif"),
    ("cuda without a GPU", T.replace("--out", "--device cuda --out"), "CUDA"),
    ("existing output folder", "train --sequences {fasta} --targets {tsv} --motifs {meme} --out {run}",
     "--force"),
    ("resume without checkpoint", "train --resume {run}", "checkpoint"),
    ("checkpoint that runs code", "import-reference {tmp}/evil.pt --motifs {meme} --variant full --era head "
     "--out {tmp}/imp1", "refused"),
    ("text file as checkpoint", "import-reference {tmp}/notes.pt --motifs {meme} --variant full --era head "
     "--out {tmp}/imp2", "notes.pt"),
    ("final layer of the AI-TAC baseline", "export {aitac} --final-layer {tmp}/w.tsv", "AI-TAC"),
    ("TISM for an unknown output", "tism {run} --sequences {fasta} --outputs nope --out {tmp}/t.npz", "nope"),
    ("not a run folder", "summary {tmp}", "config"),
    ("missing sequence file", "predict {run} --sequences {tmp}/missing.fa --out {tmp}/p.tsv", "missing.fa"),
    ("demo data into a non-empty folder", "demo-data --out {run}", "--force"),
    ("folder as sequence file", "predict {run} --sequences {tmp} --out {tmp}/p.tsv", "is a folder"),
    ("damaged gzip sequence file", "predict {run} --sequences {tmp}/damaged.fa.gz --out {tmp}/p.tsv",
     "damaged or truncated gzip"),
    ("comma-separated targets", "train --sequences {fasta} --targets {tmp}/targets.csv --motifs {meme} "
     "--out {tmp}/n12", "tab-separated"),
    ("zero batch size", "predict {run} --sequences {fasta} --batch-size 0 --out {tmp}/p.tsv",
     "batch_size must be a positive integer"),
]


@pytest.mark.parametrize("name, command, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_clearly_and_changes_nothing(world, capsys, name, command, needle):
    if "cuda" in command and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    tmp, fasta, tsv, meme, run, aitac = world
    before = folder_digest(run), folder_digest(aitac)
    args = command.format(tmp=tmp, fasta=fasta, tsv=tsv, meme=meme, run=run, aitac=aitac).split()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle.lower() in err.lower(), err
    assert (folder_digest(run), folder_digest(aitac)) == before
    assert not (tmp / "pwned").exists()


def test_matrix_has_at_least_30_cases():
    assert len(CASES) >= 30


# -- hostile inputs, each command in its own process under a memory cap ---------------------------
#
# A shared server meets inputs made to hurt it: decompression bombs, configs describing absurd
# models, paths that leave the allowed folders, tampered or deeply nested JSON. Every case runs
# in a forked child with its address space capped (tests/capped.py), so a regression fails here
# instead of exhausting the machine, and is checked for its exit status, its one-line message,
# its time, its peak memory and that no file anywhere in the test folder changed.

#: Generous bounds: the tests do not measure speed, they catch work that grows with a bomb.
MAX_SECONDS = 20
MAX_ADDED_MB = 400


@pytest.fixture(scope="module")
def capped():
    from capped import CappedCLI

    cli = CappedCLI()
    yield cli
    cli.close()


def _write_config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def _deep(n=100_000):
    return "[" * n + "]" * n


@pytest.fixture(scope="module")
def hostile(world):
    """Hostile files next to the matrix's world: bombs, absurd configs, escaping paths."""
    from conftest import deflate_bomb, gzip_bomb, make_zip
    from safetensors.torch import load_file, save_file

    tmp, fasta, tsv, meme, run, aitac = world
    root = tmp / "hostile"
    allowed, secret = root / "allowed", root / "secret"
    allowed.mkdir(parents=True)
    secret.mkdir()
    f = {"root": root, "allowed": allowed}
    (secret / "targets.tsv").write_text(Path(tsv).read_text())
    (allowed / "link.tsv").symlink_to(secret / "targets.tsv")
    for name, source in (("seqs.fa", fasta), ("targets.tsv", tsv)):
        (allowed / name).write_text(Path(source).read_text())
    inside = {key: {"path": str(allowed / name)} for key, name in (("sequences", "seqs.fa"),
                                                                  ("targets", "targets.tsv"))}

    def copy(name, edit=None, source=run, parent=root):
        shutil.copytree(source, parent / name)
        if edit:
            _write_config(parent / name, edit)
        f[name] = parent / name
        return parent / name

    def data_path(stored):
        return lambda c: c["data"].update(inside, targets=stored)
    # run configs naming files outside the allowed folders, kept inside them
    copy("run_abs", data_path({"path": str(secret / "targets.tsv")}), parent=allowed)
    copy("run_rel", data_path({"path": str(allowed / "gone.tsv"), "rel": "../../secret/targets.tsv"}),
         parent=allowed)
    copy("run_link", data_path({"path": str(allowed / "link.tsv")}), parent=allowed)
    copy("run_nul", data_path({"path": str(allowed / "t\x00.tsv")}), parent=allowed)
    def lineage_outside(config):
        config["transform"] = {"kind": "lineage", "spec": "lineage:map.tsv"}
        config["data"].update(inside, transform_table={"path": str(secret / "map.tsv")})
    copy("run_table", lineage_outside, parent=allowed)
    # decompression bombs: about 1 MB each, 1 GiB inflated
    for name, head in (("bomb.fa.gz", b">r0\n"), ("bomb.tsv.gz", b"id\tout0\tout1\n"),
                       ("bomb.meme.gz", b"MEME version 4\n\nALPHABET= ACGT\n\n"), ("bomb.bed.gz", b"")):
        (root / name).write_bytes(gzip_bomb(1024, head=head))
    stream = deflate_bomb(1024)
    legit = root / "legit.pt"
    torch.save(reference_state(run), legit)
    with zipfile.ZipFile(legit) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    (root / "bomb.pt").write_bytes(make_zip({**members, "legit/data/99": (*stream, 2**30)}))
    (root / "many.pt").write_bytes(make_zip({**members, **{f"legit/x/{i}": b"" for i in range(5000)}}))
    state = reference_state(run)
    for name, edit in {
        "nan": lambda s: s["linreg.weight"].__setitem__((0, 0), float("nan")),
        "inf": lambda s: s["interaction_layer.weight"].__setitem__((0, 0), float("inf")),
        "int": lambda s: s.update({"linreg.weight": s["linreg.weight"].long()}),
        "conv2d": lambda s: s.update({"conv_motif.weight": s["conv_motif.weight"][:, :, 0]}),
        "huge": lambda s: s.update({"conv_motif.weight": torch.zeros(200_004, 4, 1, dtype=torch.float16),
                                    "linreg.weight": torch.zeros(2, 100_002, dtype=torch.float16)}),
    }.items():
        edited = {k: v.clone() for k, v in state.items()}
        edit(edited)
        torch.save(edited, root / f"sd_{name}.pt")
    # absurd and wrong-typed run configs
    def model(**values):
        return lambda c: c["model"]["config"].update(values)
    for name, edit in {
        "motifs_huge": model(n_motifs=10**7), "length_huge": model(length=10**8),
        "kernel_huge": model(length=10**6, kernel_width=10**6), "outputs_huge": model(n_outputs=10**9),
        "pad_huge": model(n_pad_channels=10**9), "pad_negative": model(n_pad_channels=-4),
        "nmotifs_str": model(n_motifs="862"), "outputs_notlist": lambda c: c.update(outputs="out0,out1"),
        "ids_number": lambda c: c["motifs"].update(ids=7), "r2_length": lambda c: c["metrics"]["test"].update(r2=[0.1]),
        "metrics_list": lambda c: c.update(metrics=[1, 2]), "history_dict": lambda c: c.update(history={"a": 1}),
        "version_str": lambda c: c.update(format_version="1"), "epochs_str": lambda c: c["training"].update(epochs="x"),
        "constant": lambda c: c["metrics"]["test"].update(r2=[c["metrics"]["test"]["r2"][0], None], mean_r2=None),
    }.items():
        copy(f"run_{name}", edit)
    for name, edit in {"aitac_length": model(length=10**7), "aitac_filters": model(n_filters=10**6)}.items():
        copy(f"run_{name}", edit, source=aitac)
    copy("run_deep").joinpath("config.json").write_text(_deep())
    weights = load_file(run / "model.safetensors")
    for name, change in {"nan": lambda w: w["final.weight"].fill_(float("nan")),
                         "int": lambda w: w.update({"final.weight": w["final.weight"].int()})}.items():
        folder = copy(f"run_weights_{name}")
        edited = {k: v.clone() for k, v in weights.items()}
        change(edited)
        save_file(edited, folder / "model.safetensors")
    # tampered request.json (train --resume reads it)
    for name, edit in {"list": lambda r: r.update(data=[1]), "unknown": lambda r: r["training"].update(turbo=1),
                       "epochs": lambda r: r["training"].update(epochs="many"),
                       "half": lambda r: r.update(half="yes"), "format": lambda r: r.update(format="other")}.items():
        request = json.loads((run / "request.json").read_text())
        edit(request)
        copy(f"req_{name}").joinpath("request.json").write_text(json.dumps(request))
    copy("req_deep").joinpath("request.json").write_text(_deep())
    (root / "deep_spec.json").write_text(_deep())
    rows = Path(tsv).read_text().splitlines()
    for name, value in (("big", "1e39"), ("negbig", "-1e39")):
        (root / f"targets_{name}.tsv").write_text("\n".join(rows[:3] + [_cell(rows[3], value)] + rows[4:]) + "\n")
    (root / "targets_constant.tsv").write_text(
        "\n".join([rows[0]] + [r.rsplit("\t", 1)[0] + "\t1.0" for r in rows[1:]]) + "\n")
    (root / "many.meme").write_text("MEME version 4\n\nALPHABET= ACGT\n\n" + "".join(
        f"MOTIF m{i}\nletter-probability matrix: alength= 4 w= 1\n0.25 0.25 0.25 0.25\n\n"
        for i in range(20_000)))
    # folders --force must not touch when the new inputs are bad
    (root / "cv").mkdir()
    copy("fold_0", parent=root / "cv")
    assert main(["path", str(run), "--lambdas", "0:0.01:2", "--epochs", "1", "--out", str(root / "path"),
                 "--device", "cpu"]) == 0
    f["path"] = root / "path"
    copy("run_nodata", lambda c: c["data"].update(targets={"path": str(root / "gone.tsv")}))
    demo = root / "demo"
    demo.mkdir()
    (demo / "manifest.json").write_text(json.dumps({"synthetic": True, "steps": {}}))
    f["demo"] = demo
    # an orphaned temporary file of an interrupted write, and a fresh one of a write under way
    out = root / "evalout"
    out.mkdir()
    for name, age in ((".metrics.json.abcd1234.tmp", 7200), (".metrics.json.efgh5678.tmp", 0)):
        (out / name).write_text("partial")
        os.utime(out / name, (time.time() - age, time.time() - age))
    f["evalout"] = out
    return f


def _cell(row, value):
    cells = row.split("\t")
    cells[1] = value
    return "\t".join(cells)


P = "path {allowed}/{run} --lambdas 0:0.01:2 --epochs 1 --device cpu --out {root}/p_{run}"
IMPORT = "import-reference {root}/{pt} --motifs {meme} --variant full --era head --out {root}/imp_{pt}"
HOSTILE = [
    # (id, command, exit status, text stdout or stderr must contain, env, paths allowed to change)
    # no file outside the allowed roots is read, whatever the path comes from
    ("run data path outside the roots", P.format(allowed="{allowed}", root="{root}", run="run_abs"), 2,
     "targets file of run run_abs", "roots", ()),
    ("run data path leaving by ..", P.format(allowed="{allowed}", root="{root}", run="run_rel"), 2,
     "targets file of run run_rel", "roots", ()),
    ("run data path through a link", P.format(allowed="{allowed}", root="{root}", run="run_link"), 2,
     "targets file of run run_link", "roots", ()),
    ("run data path with a NUL byte", P.format(allowed="{allowed}", root="{root}", run="run_nul"), 2,
     "NUL byte", "roots", ()),
    ("transform table outside the roots", "evaluate {allowed}/run_table --sequences {fasta} --targets {tsv}",
     2, "transform table file of run run_table", "roots", ()),
    # decompression is bounded
    ("gzip FASTA bomb", "predict {run} --sequences {root}/bomb.fa.gz --out {root}/p.tsv", 2,
     "decompression is capped", None, ()),
    ("gzip targets bomb", "train --sequences {fasta} --targets {root}/bomb.tsv.gz --motifs {meme} "
     "--out {root}/n", 2, "decompression bomb", None, ()),
    ("gzip motif bomb", "train --sequences {fasta} --targets {tsv} --motifs {root}/bomb.meme.gz "
     "--out {root}/n", 2, "decompression bomb", None, ()),
    ("gzip BED bomb", "predict {run} --bed {root}/bomb.bed.gz --genome {tmp}/genome.fa --out {root}/p.tsv",
     2, "decompression bomb", None, ()),
    ("zip bomb inside a state dict", IMPORT.replace("{pt}", "bomb.pt"), 2, "expands more than 200-fold",
     None, ()),
    ("state dict zip with 5000 entries", IMPORT.replace("{pt}", "many.pt"), 2, "entries", None, ()),
    ("100k-deep run config", "summary {root}/run_deep", 2, "nested too deeply", None, ()),
    ("100k-deep request.json", "train --resume {root}/req_deep", 2, "nested too deeply", None, ()),
    ("100k-deep task file", "train --spec {root}/deep_spec.json --out {root}/n", 2, "nested too deeply",
     None, ()),
    # sizes are checked before anything is allocated
    ("config with 10 million motifs", "summary {root}/run_motifs_huge", 2, "refused before building", None, ()),
    ("config with a 100 Mb window", "summary {root}/run_length_huge", 2, "refused before building", None, ()),
    ("config with 1 Mb kernels", "summary {root}/run_kernel_huge", 2, "refused before building", None, ()),
    ("config with a billion outputs", "predict {root}/run_outputs_huge --sequences {fasta} --out {root}/p.tsv",
     2, "refused before building", None, ()),
    ("config with a billion padding channels", "summary {root}/run_pad_huge", 2, "refused before building",
     None, ()),
    ("config with negative padding", "summary {root}/run_pad_negative", 2, "n_pad_channels", None, ()),
    ("AI-TAC config with a 10 Mb window", "summary {root}/run_aitac_length", 2, "refused before building",
     None, ()),
    ("AI-TAC config with a million filters", "summary {root}/run_aitac_filters", 2, "refused before building",
     None, ()),
    ("motif file of 20,000 motifs", "train --sequences {fasta} --targets {tsv} --motifs {root}/many.meme "
     "--epochs 1 --out {root}/n", 2, "refused before building", None, ()),
    ("reference with 100,000 motifs", IMPORT.replace("{pt}", "sd_huge.pt").replace(
        "{meme}", "{root}/many.meme"), 2, "refused before building", None, ()),
    ("import with a 10 Mb window", IMPORT.replace("{pt}", "legit.pt") + " --length 10000000", 2,
     "refused before building", None, ()),
    ("lambda grid of a billion values", "path {run} --lambdas 0:1:1000000000 --out {root}/p", 2,
     "at most 200", None, ()),
    ("lambda grid NUM of 5000 digits", "path {run} --lambdas 0:1:" + "9" * 5000 + " --out {root}/p", 2,
     "whole number", None, ()),
    ("path of a billion epochs", "path {run} --lambdas 0:1:3 --epochs 1000000000 --out {root}/p", 2,
     "epochs", None, ()),
    ("training of a billion epochs", "train --sequences {fasta} --targets {tsv} --motifs {meme} "
     "--epochs 1000000000 --out {root}/n", 2, "at most 10000 epochs", None, ()),
    ("demo atlas of a trillion regions", "demo-data --out {root}/d --regions 1000000000000", 2,
     "at most 1,000,000 regions", None, ()),
    ("BED coordinate of 5000 digits", "predict {run} --bed {root}/huge_int.bed --genome {tmp}/genome.fa "
     "--out {root}/p.tsv", 2, "is not an integer", None, ()),
    # values are checked at the door
    ("target 1e39 (infinite in float32)", "train --sequences {fasta} --targets {root}/targets_big.tsv "
     "--motifs {meme} --out {root}/n", 2, "row 'r2', column 'out0' holds '1e+39'", None, ()),
    ("target -1e39", "train --sequences {fasta} --targets {root}/targets_negbig.tsv --motifs {meme} "
     "--out {root}/n", 2, "targets_negbig.tsv: row 'r2'", None, ()),
    ("reference weights with NaN", IMPORT.replace("{pt}", "sd_nan.pt"), 2, "NaN", None, ()),
    ("reference weights with inf", IMPORT.replace("{pt}", "sd_inf.pt"), 2, "infinite", None, ()),
    ("reference weights of integers", IMPORT.replace("{pt}", "sd_int.pt"), 2, "dtype int64", None, ()),
    ("reference kernels without a width", IMPORT.replace("{pt}", "sd_conv2d.pt"), 2, "expected (2n + 4, 4, K)",
     None, ()),
    ("run weights with NaN", "summary {root}/run_weights_nan", 2, "NaN", None, ()),
    ("run weights stored as integers", "summary {root}/run_weights_int", 2, "stored as I32", None, ()),
    ("config n_motifs as a string", "summary {root}/run_nmotifs_str", 2, "'n_motifs' should be int", None, ()),
    ("config outputs as a string", "summary {root}/run_outputs_notlist", 2, "'outputs' must be", None, ()),
    ("config motif ids as a number", "summary {root}/run_ids_number", 2, "'ids'", None, ()),
    ("config metrics of the wrong length", "summary {root}/run_r2_length", 2, "one value per output", None, ()),
    ("config metrics as a list", "summary {root}/run_metrics_list", 2, "'metrics' should hold dict", None, ()),
    ("config history as an object", "summary {root}/run_history_dict", 2, "'history' should hold list", None, ()),
    ("config format_version as a string", "summary {root}/run_version_str", 2, "'format_version' must be",
     None, ()),
    ("config epochs as a string", "summary {root}/run_epochs_str", 2, "'training.epochs' should hold int",
     None, ()),
    ("request.json data as a list", "train --resume {root}/req_list", 2, "must be a JSON object", None, ()),
    ("request.json unknown option", "train --resume {root}/req_unknown", 2, "turbo", None, ()),
    ("request.json epochs as text", "train --resume {root}/req_epochs", 2, "epochs must be", None, ()),
    ("request.json half as text", "train --resume {root}/req_half", 2, "half must be true or false", None, ()),
    ("request.json of another format", "train --resume {root}/req_format", 2, "not a training task", None, ()),
    # valid odd data works
    ("summary with an undefined R2", "summary {root}/run_constant", 0, "R2 n/a", None, ()),
    ("evaluate a constant output", "evaluate {run} --sequences {fasta} --targets {root}/targets_constant.tsv",
     0, "R2 n/a", None, ()),
    # nothing saved is lost: --force validates the new inputs first
    ("train --force with bad targets", "train --sequences {fasta} --targets {root}/targets_big.tsv --motifs "
     "{meme} --out {run} --force", 2, "float32", None, ()),
    ("train --force on a missing GPU", "train --sequences {fasta} --targets {tsv} --motifs {meme} --out {run} "
     "--force --device cuda --quiet", 2, "CUDA", None, ()),
    ("finetune --force with bad targets", "finetune {run} --out {aitac} --force --sequences {fasta} "
     "--targets {root}/targets_big.tsv", 2, "float32", None, ()),
    ("cv --force with a bad motif file", "cv --sequences {fasta} --targets {tsv} --motifs {tmp}/dup.meme "
     "--folds 3 --out {root}/cv --force", 2, "duplicate", None, ()),
    ("path --force with a bad grid", "path {run} --lambdas 0:1:0 --out {root}/path --force", 2,
     "at least 1", None, ()),
    ("path --force on a run whose data are gone", "path {root}/run_nodata --lambdas 0:1:2 --out {root}/path "
     "--force", 2, "gone.tsv", None, ()),
    ("import-reference --force with code in the pickle", "import-reference {tmp}/evil.pt --motifs {meme} "
     "--variant full --era head --out {run} --force", 2, "refused", None, ()),
    ("import-reference --force with NaN weights", "import-reference {root}/sd_nan.pt --motifs {meme} "
     "--variant full --era head --out {run} --force", 2, "NaN", None, ()),
    ("demo-data --force with zero regions", "demo-data --out {run} --regions 0 --force", 2, "n_regions", None, ()),
    ("demo-models --force on a run folder", "demo-models --out {run} --force", 2, "not a folder made by "
     "demo-models", None, ()),
    ("demo-models --force with a trillion regions", "demo-models --out {root}/demo --regions 1000000000000 "
     "--force", 2, "at most 1,000,000 regions", None, ()),
    ("demo-models --force with 2 folds", "demo-models --out {root}/demo --folds 2 --force", 2, "at least 3",
     None, ()),
    # an interrupted write leaves no orphan: the next write into the folder removes it
    ("orphaned temporary file removed", "evaluate {run} --sequences {fasta} --targets {tsv} --out "
     "{root}/evalout/metrics.json", 0, "mean", None, ("evalout",)),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, command, status, needle, env, changes", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_input_is_refused_within_bounds(world, hostile, capped, name, command, status, needle,
                                                env, changes):
    if "cuda" in command and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    tmp, fasta, tsv, meme, run, aitac = world
    root = hostile["root"]
    (root / "huge_int.bed").write_text("chr1\t" + "1" * 5000 + "\t60\tp1\n")
    names = sorted(p.name for p in root.iterdir())
    watched = [p for p in [tmp / "run", tmp / "aitac", *root.iterdir()] if p.name not in changes]
    before = [folder_digest(p) if p.is_dir() else p.read_bytes() for p in watched]
    args = shlex.split(command.format(tmp=tmp, fasta=fasta, tsv=tsv, meme=meme, run=run, aitac=aitac,
                                      root=root, allowed=hostile["allowed"]))
    result = capped.run(args, env={"TISFM_SERVER_ROOTS": str(hostile["allowed"])} if env == "roots" else None)
    shown = result["stderr"] if status else result["stdout"]
    assert result["code"] == status, result
    assert needle in shown, result
    assert "Traceback" not in result["stderr"], result
    if env == "roots" and "NUL" not in needle:
        assert "is outside the folders this app may read" in shown, result
    if status:
        assert len(result["stderr"].strip().splitlines()) == 1, result
    assert result["seconds"] < MAX_SECONDS, result
    assert result["added_mb"] < MAX_ADDED_MB, result
    after = [folder_digest(p) if p.is_dir() else p.read_bytes() for p in watched]
    assert after == before, [p.name for p, a, b in zip(watched, after, before) if a != b]
    assert sorted(p.name for p in root.iterdir()) == names, "a command left a file behind"
    if changes == ("evalout",):
        names = sorted(p.name for p in (root / "evalout").iterdir())
        assert names == [".metrics.json.efgh5678.tmp", "metrics.json"], names


def test_hostile_matrix_has_at_least_60_cases():
    assert len(HOSTILE) >= 60


@pytest.mark.slow
def test_the_memory_cap_turns_a_blow_up_into_a_failure(capped, tmp_path):
    """The cap is real: a valid command that needs more memory than the cap ends with the
    out-of-memory status instead of growing (a regression would fail the same way)."""
    args = ["demo-data", "--out", tmp_path / "atlas", "--regions", "200000"]
    capped_run = capped.run(args, cap_mb=200)
    assert capped_run["code"] == 3 and "out of memory" in capped_run["stderr"], capped_run
    assert capped_run["added_mb"] < 200
