"""The bad-input matrix of the app (the CLI's is tests/test_bad_inputs.py).

Every case drives a page with AppTest the way a user would (uploads, paths, pasted text, button
clicks) and must end with an error box that names the problem, no exception, no job started,
no upload left behind, and every saved run unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import folder_digest, write_bad_inputs
from test_app import _run_files, _zip, page, texts

from tisfm_core import jobs

pytestmark = pytest.mark.slow
#: Folders of the user's home that are caches, rebuilt at will (a genome's index), not saved work.
CACHES = ("genome-index",)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    from app_fixtures import app_runs_folder

    root = app_runs_folder()
    demo = root / "data" / "demo"
    tmp = tmp_path_factory.mktemp("app_bad")
    files = write_bad_inputs(tmp, demo / "sequences.fa", demo / "targets_lineages.tsv")
    files.update(seq=demo / "sequences.fa", targets=demo / "targets_lineages.tsv",
                 motifs=demo / "motifs_small.meme", tmp=tmp)
    run = root / "runs" / "lineages_full"
    good = _run_files(run)
    config = json.loads(good["config.json"])

    def with_config(edit):
        c = json.loads(json.dumps(config))
        edit(c)
        return dict(good, **{"config.json": json.dumps(c).encode()})

    files["zips"] = {
        "truncated": _zip(dict(good, **{"model.safetensors": good["model.safetensors"][:200]})),
        "wrongtype": _zip(with_config(lambda c: c["model"]["config"].update(length="100"))),
        "nofield": _zip(with_config(lambda c: c.pop("model"))),
        "motifs": _zip(with_config(lambda c: c["motifs"].update(ids=c["motifs"]["ids"][:-1]))),
        "notzip": b"this is not a zip archive",
    }
    return files


def _upload(at, key, path, name=None):
    at.file_uploader(key=key).set_value((name or Path(path).name, Path(path).read_bytes(), "text/plain"))


def train_upload(seq="seq", targets="targets", motifs="motifs", **settings):
    """Training form, 'Upload files' + uploaded motif file; other widgets from ``settings``."""
    def act(at, f):
        at.radio(key="data_source").set_value("Upload files").run()
        _upload(at, "up_seq", f[seq])
        _upload(at, "up_targets", f[targets])
        at.radio(key="motif_source").set_value("upload").run()
        _upload(at, "motif_upload", f[motifs])
        for key, value in settings.items():
            (at.selectbox if key == "device" else at.text_input)(key=key).set_value(value)
        at.run()
        at.button(key="start_training").click().run()
    return "pages/1_Models_and_training.py", act


def train_server(bed=None, genome=None, seq=None, targets="targets", transform=None):
    """Training form, 'Files on this server', JASPAR motifs."""
    def act(at, f):
        at.radio(key="data_source").set_value("Files on this server").run()
        if bed:
            at.radio(key="seq_kind").set_value("BED + genome FASTA").run()
            at.text_input(key="srv_bed").input(str(f[bed]))
            at.text_input(key="srv_genome").input(str(f[genome]))
        else:
            at.text_input(key="srv_seq").input(str(f[seq]) if seq in f else seq)
        at.text_input(key="srv_targets").input(str(f[targets]))
        if transform:
            at.selectbox(key="transform").set_value(transform[0]).run()
            at.text_input(key="transform_table").input(transform[1])
        at.radio(key="motif_source").set_value("JASPAR release").run()
        at.button(key="start_training").click().run()
    return "pages/1_Models_and_training.py", act


def tism(text):
    def act(at, f):
        at.text_area(key="tism_text").input(text(f) if callable(text) else text).run()
    return "pages/6_TISM_logos.py", act


def tism_upload(name):
    def act(at, f):
        at.radio(key="tism_mode").set_value("Upload FASTA").run()
        shown = Path(f[name]).name if Path(f[name]).suffix in (".fa", ".gz") else "upload.fa"
        _upload(at, "tism_fasta", f[name], shown)
        at.run()
    return "pages/6_TISM_logos.py", act


def run_zip(which):
    def act(at, f):
        at.file_uploader(key="run_zip").set_value(("run.zip", f["zips"][which], "application/zip")).run()
        at.button(key="add_run_zip").click().run()
    return "pages/1_Models_and_training.py", act


def import_ref(pt):
    def act(at, f):
        _upload(at, "ref_pt", f[pt], "state_dict.pt")
        _upload(at, "ref_motifs", f["motifs"])
        at.run()
        at.button(key="ref_import").click().run()
    return "pages/1_Models_and_training.py", act


def _seq_line(f, i=1):
    return Path(f["seq"]).read_text().splitlines()[i]


CASES = [
    # (id, (page, action), text the error box must contain)
    ("motif bad row", train_upload(motifs="bad_row.meme"), "'bad_row.meme' (uploaded), line 7"),
    ("motif wrong alphabet", train_upload(motifs="rna.meme"), "ACGU"),
    ("motif file empty", train_upload(motifs="empty.meme"), "'empty.meme' (uploaded) is empty"),
    ("motif file without motifs", train_upload(motifs="nomotif.meme"), "no motif"),
    ("duplicate motif ids", train_upload(motifs="dup.meme"), "duplicate motif id 'a'"),
    ("negative probability", train_upload(motifs="negative.meme"), "negative"),
    ("rows not summing to 1", train_upload(motifs="halfsum.meme"), "sums to 0.4"),
    ("binary motif file", train_upload(motifs="binary.meme"), "none of the supported formats"),
    ("invalid letter", train_upload(seq="letters.fa"), "invalid character 'X' at position 11"),
    ("mixed lengths", train_upload(seq="lengths.fa"), "sequence 'extra' is 4 bp"),
    ("empty record", train_upload(seq="emptyrec.fa"), "empty sequence"),
    ("duplicate sequence ids", train_upload(seq="dupid.fa"), "appears twice"),
    ("ids do not match targets", train_upload(seq="otherids.fa"), "no sequence id matches"),
    ("NaN target", train_upload(targets="nan.tsv"), "holds 'nan'"),
    ("non-numeric target", train_upload(targets="text.tsv"), "holds 'high'"),
    ("comma-separated targets", train_upload(targets="targets.csv"), "must be tab-separated"),
    ("damaged gzip sequences", train_upload(seq="damaged.fa.gz"), "damaged or truncated gzip"),
    ("image uploaded as sequences", train_upload(seq="image.png"), "'image.png' (uploaded) is not UTF-8"),
    ("cuda without a GPU", train_upload(device="cuda"), "CUDA"),
    ("BED interval past the contig end", train_server(bed="offend.bed", genome="genome.fa"),
     "runs past the end of '…'"),
    ("BED unknown contig", train_server(bed="unknown.bed", genome="genome.fa"), "contig '…' is not in"),
    ("missing server file", train_server(seq="/nonexistent/seqs.fa"), "does not exist on this server"),
    ("tree-diff without its parent table", train_server(seq="seq", transform=("tree-diff", "/nope.tsv")),
     "/nope.tsv does not exist"),
    ("pasted invalid letter", tism(lambda f: ">x\n" + _seq_line(f)[:5] + "Z" + _seq_line(f)[6:]),
     "invalid character 'Z' at position 6"),
    ("pasted wrong length", tism("ACGT" * 10), "40 bp long; expected 100 bp"),
    ("pasted header without sequence", tism(lambda f: ">a\n\n>b\n" + _seq_line(f)), "'a'"),
    ("pasted duplicate ids", tism(lambda f: f">a\n{_seq_line(f)}\n>a\n{_seq_line(f, 3)}"), "appears twice"),
    ("pasted text before the first header", tism(lambda f: "hello\n>a\n" + _seq_line(f)), "before the first"),
    ("uploaded binary FASTA", tism_upload("image.png"), "is not a text (UTF-8) file"),
    ("uploaded damaged gzip FASTA", tism_upload("damaged.fa.gz"), "damaged or truncated gzip"),
    ("run zip with truncated weights", run_zip("truncated"), "model.safetensors"),
    ("run zip with a wrong-typed config field", run_zip("wrongtype"), "'length'"),
    ("run zip whose config lacks the model", run_zip("nofield"), "'model'"),
    ("run zip whose motifs do not match the weights", run_zip("motifs"), "motif"),
    ("upload that is not a zip", run_zip("notzip"), "not a zip"),
    ("checkpoint that runs code", import_ref("evil.pt"), "refused"),
    ("text file as checkpoint", import_ref("notes.pt"), "'state_dict.pt' (uploaded)"),
]


@pytest.mark.parametrize("name, case, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_an_error_box_and_changes_nothing(bad, env, tmp_path, monkeypatch, name, case,
                                                        needle):
    if "cuda" in name and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    launched = []
    monkeypatch.setattr(jobs, "launch", lambda *a, **k: launched.append(a))
    home = tmp_path / "home"
    before = folder_digest(env), folder_digest(home, skip=CACHES)
    script, act = case
    at = page(script, env / "lineages_full")
    act(at, bad)
    errors = texts(at.error)
    assert not at.exception, at.exception
    assert any(needle in e for e in errors), errors
    assert all("Traceback" not in e and "Something went wrong" not in e for e in errors), errors
    assert not launched
    assert (folder_digest(env), folder_digest(home, skip=CACHES)) == before   # no run changed, no upload left
    assert not (bad["tmp"] / "pwned").exists()


def test_existing_run_name_is_refused_and_the_run_kept(bad, env, tmp_path, monkeypatch):
    launched = []
    monkeypatch.setattr(jobs, "launch", lambda *a, **k: launched.append(a))
    mine = tmp_path / "home" / "runs" / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    at = page("pages/1_Models_and_training.py")
    train_upload(run_name="mine")[1](at, bad)
    assert any("named mine already exists" in e for e in texts(at.error)), texts(at.error)
    assert not launched and (mine / "notes.txt").read_text() == "keep me"
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_app_matrix_has_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.fixture
def env(monkeypatch, tmp_path):
    from app_fixtures import app_runs_folder

    root = app_runs_folder()
    monkeypatch.setenv("TISFM_RUNS", str(root / "runs"))
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    return root / "runs"


def test_unwritable_home_folder_is_reported_not_hidden(bad, tmp_path, monkeypatch):
    """The app's home (runs, uploads, jobs) lies under a regular file: pages still render, and
    starting work says which folder cannot be written."""
    from app_fixtures import app_runs_folder

    blocker = tmp_path / "home_is_a_file"
    blocker.write_text("x")
    monkeypatch.setenv("TISFM_RUNS", str(app_runs_folder() / "runs"))
    monkeypatch.setenv("TISFM_HOME", str(blocker / "home"))
    at = page("pages/1_Models_and_training.py")
    train_upload()[1](at, bad)
    errors = texts(at.error)
    assert not at.exception, at.exception
    assert any("home_is_a_file" in e and "Not a directory" in e for e in errors), errors
    assert blocker.read_text() == "x"


def test_good_uploads_start_a_job_on_copies_under_app_chosen_names(bad, env, tmp_path, monkeypatch):
    from tisfm_core.cli import build_parser

    launched = []
    monkeypatch.setattr(jobs, "launch", lambda kind, args, jobs_dir, label="", spec=None, hide_contents=None:
                        launched.append((kind, [str(a) for a in args], label, spec, hide_contents))
                        or jobs.Job(path=Path(jobs_dir), id="fake", kind=kind))
    at = page("pages/1_Models_and_training.py")
    _, act = train_upload(run_name="from_uploads")
    act(at, bad)
    assert not texts(at.error), texts(at.error)
    (kind, args, label, task, hidden), = launched
    assert hidden is False   # the user's own uploads: their messages may quote them
    parsed = build_parser().parse_args([kind, *args])
    uploads = tmp_path / "home" / "data" / "uploads"
    for given, original in ((task.data.sequences, bad["seq"]), (task.data.targets, bad["targets"]),
                            (task.model.motifs, bad["motifs"])):
        saved = Path(given)
        assert uploads in saved.parents and saved.name in ("sequences.fa", "targets.tsv", "motifs.meme")
        assert saved.read_bytes() == Path(original).read_bytes()
    assert parsed.out.endswith("/runs/from_uploads") and "motifs_small.meme" in label
    assert any("300 regions x 7 outputs, 100 bp" in s for s in texts(at.success)), texts(at.success)


def test_server_paths_outside_the_allowed_folders_are_refused(bad, env, tmp_path, monkeypatch):
    """With TISFM_SERVER_ROOTS set (an exposed app), typed paths may not leave those folders,
    not even through a link, and typed runs folders outside them are not searched."""
    launched = []
    monkeypatch.setattr(jobs, "launch", lambda *a, **k: launched.append(a))
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "escape.tsv").symlink_to(bad["targets"])
    monkeypatch.setenv("TISFM_SERVER_ROOTS", str(allowed))
    for name, case, needle in [
        ("outside", train_server(seq="seq"), "is outside the folders this app may read"),
        ("link", train_server(seq="seq", targets="link"), "is outside the folders"),
    ]:
        at = page("pages/1_Models_and_training.py")
        case[1](at, dict(bad, link=allowed / "escape.tsv"))
        assert any(needle in e for e in texts(at.error)), (name, texts(at.error))
    at = page("pages/6_TISM_logos.py", env / "lineages_full")
    at.radio(key="tism_mode").set_value("Genome coordinates").run()
    at.text_input(key="tism_genome").input("/etc/hostname")
    at.text_input(key="tism_region").input("chr1:1-100").run()
    assert any("is outside the folders" in e for e in texts(at.error)), texts(at.error)
    assert not launched
    # typed runs folders outside the roots are not searched; the configured ones still are
    at = page("pages/1_Models_and_training.py")
    at.session_state["runs_folders"] = f"{env}; /"
    at.run()
    assert len(at.dataframe[0].value) == 5


def test_gzip_fasta_upload_explains_the_same_sequences(bad, env):
    import gzip

    text = "\n".join(Path(bad["seq"]).read_text().splitlines()[:4]) + "\n"
    views = []
    for name, data in (("two.fa", text.encode()), ("two.fa.gz", gzip.compress(text.encode()))):
        at = page("pages/6_TISM_logos.py", env / "lineages_full")
        at.radio(key="tism_mode").set_value("Upload FASTA").run()
        at.file_uploader(key="tism_fasta").set_value((name, data, "application/octet-stream")).run()
        assert not texts(at.error) and not at.exception, texts(at.error)
        views.append([c.proto.spec for c in at.get("plotly_chart")] + texts(at.caption))
    assert views[0] == views[1] and views[0]


# -- hostile uploads and values, each under a memory cap -------------------------------------------
#
# What a browser user of a shared server can send: decompression bombs, run zips describing absurd
# models or lying about their sizes, configs whose data paths leave the allowed folders, files
# whose contents must not be echoed, names made of Markdown. Each case runs with the address space
# of the test process capped (conftest.memory_cap) and must end with an error box naming the
# problem, within bounded time and memory, with no job started and no file changed.

MAX_SECONDS = 20
MAX_ADDED_MB = 400
SECRET = "SECRETVALUE"


def _edited_run(source, dest, edit=None):
    shutil.copytree(source, dest)
    if edit:
        config = json.loads((dest / "config.json").read_text())
        edit(config)
        (dest / "config.json").write_text(json.dumps(config))
    return dest


@pytest.fixture(scope="module")
def hostile(bad, tmp_path_factory):
    from conftest import deflate_bomb, gzip_bomb, make_zip, reference_state
    from safetensors.torch import load_file, save_file

    from app_fixtures import app_runs_folder

    root = tmp_path_factory.mktemp("app_hostile")
    run = app_runs_folder() / "runs" / "lineages_full"
    f = dict(bad, root=root, run=run)

    def write(name, data):
        f[name] = root / name
        f[name].write_bytes(data if isinstance(data, bytes) else data.encode())
    write("bomb.fa.gz", gzip_bomb(1024, head=b">r0\n"))
    write("bomb.tsv.gz", gzip_bomb(1024, head=b"id\tB\tT\n"))
    write("bomb.meme.gz", gzip_bomb(1024, head=b"MEME version 4\n\nALPHABET= ACGT\n\n"))
    write("big.fa", ">a\n" + "A" * (17 * 2**20) + "\n")
    rows = Path(bad["targets"]).read_text().splitlines()
    cells = rows[3].split("\t")
    write("targets_big.tsv", "\n".join(rows[:3] + ["\t".join([cells[0], "1e39", *cells[2:]])] + rows[4:]) + "\n")
    write("many.meme", "MEME version 4\n\nALPHABET= ACGT\n\n" + "".join(
        f"MOTIF m{i}\nletter-probability matrix: alength= 4 w= 1\n0.25 0.25 0.25 0.25\n\n" for i in range(20_000)))
    good = _run_files(run)
    config = json.loads(good["config.json"])
    stream, crc = deflate_bomb(1024)

    def with_config(edit):
        c = json.loads(json.dumps(config))
        edit(c)
        return dict(good, **{"config.json": json.dumps(c).encode()})

    def with_weights(change):
        weights = {k: v.clone() for k, v in load_file(run / "model.safetensors").items()}
        change(weights)
        save_file(weights, root / "w.safetensors")
        return dict(good, **{"model.safetensors": (root / "w.safetensors").read_bytes()})
    small = deflate_bomb(1)
    f["zips"] = {
        "bomb": make_zip({**{k: v for k, v in good.items() if k != "model.safetensors"},
                          "model.safetensors": (stream, crc, 2**30)}),
        "many": make_zip({**good, **{f"x/{i}": b"" for i in range(5000)}}),
        "lying": make_zip({**{k: v for k, v in good.items() if k != "model.safetensors"},
                           "model.safetensors": (small[0], small[1], 100)}),
        "huge": _zip(with_config(lambda c: c["model"]["config"].update(n_motifs=10**7))),
        "str": _zip(with_config(lambda c: c["model"]["config"].update(n_motifs="x"))),
        "deep": _zip(dict(good, **{"config.json": ("[" * 100_000 + "]" * 100_000).encode()})),
        "nan": _zip(with_weights(lambda w: w["final.weight"].fill_(float("nan")))),
        "int": _zip(with_weights(lambda w: w.update({"final.weight": w["final.weight"].int()}))),
    }
    state = reference_state(run)
    torch.save(state, root / "legit.pt")
    with zipfile.ZipFile(root / "legit.pt") as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    write("bomb.pt", make_zip({**members, "legit/data/99": (stream, crc, 2**30)}))
    for name, change in {"nan": lambda s: s["linreg.weight"].__setitem__((0, 0), float("nan")),
                         "int": lambda s: s.update({"linreg.weight": s["linreg.weight"].long()}),
                         "huge": lambda s: s.update({"conv_motif.weight": torch.zeros(200_004, 4, 1),
                                                     "linreg.weight": torch.zeros(7, 100_002)})}.items():
        edited = {k: v.clone() for k, v in state.items()}
        change(edited)
        torch.save(edited, root / f"sd_{name}.pt")
        f[f"sd_{name}.pt"] = root / f"sd_{name}.pt"
    # server files whose contents no message may show
    write("secret_targets.tsv", f"{SECRET},x\nr1,1\n")
    seqs = Path(bad["seq"]).read_text().splitlines()
    write("secret_seqs.fa", f">{SECRET}\n{seqs[1][:10]}X{seqs[1][11:]}\n")
    outside = root / "outside"
    outside.mkdir()
    (outside / "targets.tsv").write_text(Path(bad["targets"]).read_text())
    f["outside"] = outside
    return f


def _place_run(name, edit=None):
    """Setup: a copy of the fixture run in the user's runs folder (as an extracted upload would be),
    its config changed by ``edit(config, files, folder)``; the copy becomes the active run."""
    def setup(f, home, monkeypatch):
        dest = _edited_run(f["run"], home / "runs" / name)
        if edit:
            config = json.loads((dest / "config.json").read_text())
            edit(config, f, dest)
            (dest / "config.json").write_text(json.dumps(config))
        return dest
    return setup


def _roots(setup):
    """Setup wrapper: TISFM_SERVER_ROOTS is the user's home and the fixture runs folder (the
    folder with the hostile files is outside)."""
    def wrapped(f, home, monkeypatch):
        from app_fixtures import app_runs_folder

        monkeypatch.setenv("TISFM_SERVER_ROOTS", os.pathsep.join([str(home), str(app_runs_folder())]))
        return setup(f, home, monkeypatch)
    return wrapped


def _targets_outside(config, f, dest):
    config["data"]["targets"] = {"path": str(f["outside"] / "targets.tsv")}


def _targets_up_and_out(config, f, dest):
    config["data"]["targets"] = {"path": "/nonexistent",
                                 "rel": os.path.relpath(f["outside"] / "targets.tsv", dest)}


def _secret_sequences(config, f, dest):
    config["data"]["sequences"] = {"path": str(f["secret_seqs.fa"])}


def region_of_run_data(at, f):
    at.radio(key="tism_mode").set_value("Region of the run's data").run()


def path_job(grid="1e-4:1e-1:4"):
    def act(at, f):
        at.text_input(key="path_grid").input(grid)
        at.button(key="start_path").click().run()
    return act


def genome_window(genome, region="chr1:1-100"):
    def act(at, f):
        at.radio(key="tism_mode").set_value("Genome coordinates").run()
        at.text_input(key="tism_genome").input(genome)
        at.text_input(key="tism_region").input(region).run()
    return act


def _home_table_has_no_secret(at, f):
    problems = " ".join(map(str, at.dataframe[0].value["problem"]))
    assert "'…'" in problems and SECRET not in problems, problems


T1, T6 = "pages/1_Models_and_training.py", "pages/6_TISM_logos.py"
HOSTILE = [
    # (id, script, setup (returns the active run or None), action, text an error box must contain,
    #  words no element may show)
    ("TISM upload: gzip bomb", T6, None, tism_upload("bomb.fa.gz")[1], "decompresses to more than 16 MiB", ()),
    ("TISM upload: 17 MiB of text", T6, None, tism_upload("big.fa")[1], "larger than 16 MiB", ()),
    ("TISM paste: 17 Mi characters", T6, None, tism(lambda f: ">a\n" + "A" * (17 * 2**20))[1],
     "longer than 16 Mi characters", ()),
    ("training upload: sequences gzip bomb", T1, None, train_upload(seq="bomb.fa.gz")[1],
     "'bomb.fa.gz' (uploaded) expands more than 200-fold", ()),
    ("training upload: targets gzip bomb", T1, None, train_upload(targets="bomb.tsv.gz")[1],
     "decompression bomb", ()),
    ("training upload: motif gzip bomb", T1, None, train_upload(motifs="bomb.meme.gz")[1],
     "decompression bomb", ()),
    ("training upload: target 1e39", T1, None, train_upload(targets="targets_big.tsv")[1],
     "within float32 range", ()),
    ("training upload: 20,000 motifs", T1, None, train_upload(motifs="many.meme")[1],
     "refused before building", ()),
    ("run zip: 1 GiB bomb", T1, None, run_zip("bomb")[1], "expands more than 200-fold", ()),
    ("run zip: 5000 entries", T1, None, run_zip("many")[1], "entries; at most 64 are read", ()),
    ("run zip: member larger than its header", T1, None, run_zip("lying")[1], "larger than its header says", ()),
    ("run zip: 10 million motifs", T1, None, run_zip("huge")[1], "refused before building", ()),
    ("run zip: n_motifs as text", T1, None, run_zip("str")[1], "'n_motifs' should be int", ()),
    ("run zip: 100k-deep config", T1, None, run_zip("deep")[1], "nested too deeply", ()),
    ("run zip: NaN weights", T1, None, run_zip("nan")[1], "NaN or infinite", ()),
    ("run zip: integer weights", T1, None, run_zip("int")[1], "stored as I32", ()),
    ("import: zip bomb in the state dict", T1, None, import_ref("bomb.pt")[1], "expands more than 200-fold", ()),
    ("import: NaN weights", T1, None, import_ref("sd_nan.pt")[1], "NaN or infinite", ()),
    ("import: integer weights", T1, None, import_ref("sd_int.pt")[1], "dtype int64", ()),
    ("import: 100,000 motifs", T1, None, import_ref("sd_huge.pt")[1], "refused before building", ()),
    ("path job: a billion lambdas", "pages/4_Regularization_path.py", _place_run("grid"),
     path_job("0:1:1000000000"), "at most 200", ()),
    ("path job: run data outside the roots", "pages/4_Regularization_path.py",
     _roots(_place_run("escaped", _targets_outside)), path_job(), "targets file of run escaped", ()),
    ("TISM region: run data outside the roots", T6, _roots(_place_run("escaped", _targets_outside)),
     region_of_run_data, "is outside the folders this app may read", ()),
    ("TISM region: run data leaving by ..", T6, _roots(_place_run("escaped", _targets_up_and_out)),
     region_of_run_data, "is outside the folders", ()),
    ("TISM region: no contents of a bad data file", T6, _place_run("secret", _secret_sequences),
     region_of_run_data, "invalid character '…'", (SECRET,)),
    ("TISM genome: a NUL byte", T6, None, genome_window("/etc/hostname\x00"), "NUL byte", ()),
    ("training server files: no header shown", T1, None, train_server(seq="seq", targets="secret_targets.tsv")[1],
     "(header '…')", (SECRET,)),
    ("runs table: no contents of a broken run", T1,
     _place_run("broken_secret", lambda c, f, d: c.update(format=SECRET)), _home_table_has_no_secret, None,
     (SECRET,)),
    ("upload named with Markdown", T1, None, lambda at, f: train_upload(targets="md")[1](at, f),
     "(uploaded)", ()),
]


@pytest.mark.parametrize("name, script, setup, act, needle, hidden", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_input_gets_an_error_box_within_bounds(hostile, env, tmp_path, monkeypatch, name, script,
                                                       setup, act, needle, hidden):
    from conftest import memory_cap
    from markdown_it import MarkdownIt

    launched = []
    monkeypatch.setattr(jobs, "launch", lambda *a, **k: launched.append(a))
    home = tmp_path / "home"
    files = dict(hostile, md=_markdown_named(hostile["targets"], tmp_path))
    active = setup(files, home, monkeypatch) if setup else None
    before = folder_digest(env), folder_digest(home, skip=CACHES), folder_digest(hostile["root"])
    started = time.perf_counter()
    with memory_cap() as cap:
        at = page(script, active)
        act(at, files)
    seconds = time.perf_counter() - started
    errors = texts(at.error)
    shown = errors + texts(at.markdown) + texts(at.caption) + texts(at.info) + texts(at.warning)
    assert not at.exception, at.exception
    if needle is not None:
        assert any(needle in e for e in errors), errors
    assert all("Traceback" not in e and "Something went wrong" not in e for e in errors), errors
    assert not any(word in s for word in hidden for s in shown), shown
    for box in at.error:   # what the browser renders: user text never becomes a link or an image
        html = MarkdownIt("gfm-like").render(box.value)
        assert "<a " not in html and "<img" not in html, html
    assert not launched
    assert seconds < MAX_SECONDS and cap.added_mb < MAX_ADDED_MB, (seconds, cap.added_mb)
    assert (folder_digest(env), folder_digest(home, skip=CACHES), folder_digest(hostile["root"])) == before


def _markdown_named(source, tmp_path):
    """A copy of ``source`` whose file name is Markdown: a link, an image and emphasis."""
    folder = tmp_path / "md"
    folder.mkdir(exist_ok=True)
    path = folder / "[x](http:evil.example) ![i](http:evil.example) _t_.tsv"
    path.write_text(Path(source).read_text().replace("\t", ","))   # refused: comma-separated
    return path


def test_hostile_app_matrix_and_the_cli_one_add_at_least_60_cases():
    from test_bad_inputs import HOSTILE as CLI_HOSTILE

    assert len(HOSTILE) + len(CLI_HOSTILE) >= 60 and len(HOSTILE) >= 25


def test_markdown_in_an_upload_name_shows_as_text_in_the_job_list(bad, env, tmp_path, monkeypatch):
    """A file name made of a Markdown link, image and emphasis appears in the job list (and the
    notice) as the characters typed: rendered, it holds no link, image or emphasis."""
    import html
    import re

    from markdown_it import MarkdownIt

    from tisfm_core.atomic import write_json

    def launch(kind, args, jobs_dir, label="", spec=None, hide_contents=False):   # as launch writes it
        path = Path(jobs_dir) / "20260101-000000-train-fake"
        path.mkdir(parents=True)
        job = jobs.Job(path=path, id=path.name, kind=kind, args=list(args), created=time.time(), label=label)
        write_json(path / jobs.JOB, job.to_dict())
        write_json(path / jobs.STATUS, {"state": "failed", "message": f"could not read {label}"})
        return job
    monkeypatch.setattr(jobs, "launch", launch)
    name = "[x](http://evil.example) ![i](http://evil.example/i.png) *b* <u> www.evil.example.fa"
    at = page("pages/1_Models_and_training.py")
    at.radio(key="data_source").set_value("Upload files").run()
    _upload(at, "up_seq", bad["seq"], name)   # a browser sends any name it likes
    _upload(at, "up_targets", bad["targets"])
    at.radio(key="motif_source").set_value("upload").run()
    _upload(at, "motif_upload", bad["motifs"])
    at.run()
    at.button(key="start_training").click().run()
    assert not at.exception, at.exception
    labels = [e.label for e in at.expander if "evil" in e.label] + [
        e.value for e in [*at.success, *at.error] if "evil" in e.value]
    assert len(labels) == 3, labels            # the job's title, the notice, its error box
    for label in labels:
        rendered = MarkdownIt("gfm-like").render(label)
        assert not re.search(r"<(a|img|em|strong|u)\b", rendered), rendered
        assert name in html.unescape(re.sub(r"<[^>]+>", "", rendered)), rendered


def test_home_page_shows_n_a_for_an_undefined_r2(env, tmp_path):
    """A constant output has no R2 (null in config.json): the Home page says n/a, the rest shows."""
    def constant(config):
        test = config["metrics"]["test"]
        test["r2"] = [None] + test["r2"][1:]
        test["mean_r2"] = None
    run = _edited_run(env / "lineages_full", tmp_path / "home" / "runs" / "constant", constant)
    at = page("app.py", run)
    assert not at.exception and not texts(at.error), texts(at.error)
    assert any("mean R² n/a" in m for m in texts(at.markdown)), texts(at.markdown)
    shown = at.dataframe[0].value
    assert shown["test_r2"].iloc[0] == "n/a" and shown["test_r2"].iloc[1] != "n/a"


@pytest.mark.parametrize("text", [
    "[x](http://evil.example)", "![i](http://evil.example/i.png)", "<http://evil.example>",
    "see http://evil.example/x and www.evil.example", "*bold* _it_ ~~gone~~ `code`", "# heading",
    "- item\n1. item", "a | b\n--|--\nc | d", "$x^2$ and :red[text] :material/home:", "a\\b &amp; <b>x</b>",
    "line one\n===", "> quote", "r0's 'value' (uploaded)"])
def test_md_escape_renders_the_typed_text(text):
    import html
    import re

    from markdown_it import MarkdownIt

    from tisfm_app.ui import md_escape

    rendered = MarkdownIt("gfm-like").render(md_escape(text))   # one line: new lines become spaces
    assert re.findall(r"</?(\w+)", rendered) == ["p", "p"], rendered
    assert html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip() == " ".join(text.split())


def test_redact_hides_quoted_contents_but_keeps_upload_names_and_words():
    from tisfm_core.server import redact

    assert redact("t.tsv line 5 (row 'SECRET') holds 'x'; the run's data") == \
        "t.tsv line 5 (row '…') holds '…'; the run's data"
    assert redact("'my file.fa' (uploaded), line 2: motif 'abc' has") == \
        "'my file.fa' (uploaded), line 2: motif '…' has"
    assert redact('found "it\'s" here') == 'found "…" here'
    assert redact("nothing quoted") == "nothing quoted"


@pytest.mark.parametrize("linked", ["config.json", "model.safetensors", "whole folder"])
def test_a_run_in_an_allowed_folder_that_links_outside_is_not_read(env, tmp_path, monkeypatch, linked):
    """A run found in an allowed runs folder whose files are links to a folder outside
    TISFM_SERVER_ROOTS is listed as broken and never loaded (a linked run folder is not even
    listed); the same run inside is fine."""
    from tisfm_core.errors import TisfmError
    from tisfm_core.runs import list_runs, load_run

    outside, allowed = tmp_path / "outside", tmp_path / "allowed"
    allowed.mkdir()
    shutil.copytree(env / "lineages_full", outside / "run")
    if linked == "whole folder":
        (allowed / "run").symlink_to(outside / "run", target_is_directory=True)
    else:
        shutil.copytree(outside / "run", allowed / "run")
        (allowed / "run" / linked).unlink()
        (allowed / "run" / linked).symlink_to(outside / "run" / linked)
    assert load_run(allowed / "run").outputs   # without roots: any readable file
    monkeypatch.setenv("TISFM_SERVER_ROOTS", str(allowed))
    if linked != "whole folder":
        with pytest.raises(TisfmError, match="leads outside the folders this app may read"):
            load_run(allowed / "run")
    rows = list_runs([allowed])   # the search does not follow linked folders at all
    assert len(rows) == (linked != "whole folder")
    assert all("leads outside the folders this app may read" in r["error"] for r in rows)
    monkeypatch.setenv("TISFM_SERVER_ROOTS", os.pathsep.join([str(allowed), str(outside)]))
    assert load_run(allowed / "run").outputs
    assert not any("error" in r for r in list_runs([allowed]))
