"""The bad-input matrix of the app (the CLI's is tests/test_bad_inputs.py).

Every case drives a page with AppTest the way a user would (uploads, paths, pasted text, button
clicks) and must end with an error box that names the problem, no exception, no job started,
no upload left behind, and every saved run unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import folder_digest, write_bad_inputs
from test_app import _run_files, _zip, page, texts

from tisfm_core import jobs

pytestmark = pytest.mark.slow


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
    ("uploaded binary FASTA", tism_upload("image.png"), "is not UTF-8 text"),
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
    before = folder_digest(env), folder_digest(home)
    script, act = case
    at = page(script, env / "lineages_full")
    act(at, bad)
    errors = texts(at.error)
    assert not at.exception, at.exception
    assert any(needle in e for e in errors), errors
    assert all("Traceback" not in e and "Something went wrong" not in e for e in errors), errors
    assert not launched
    assert (folder_digest(env), folder_digest(home)) == before            # no run changed, no upload left behind
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
    monkeypatch.setattr(jobs, "launch", lambda kind, args, jobs_dir, label="", spec=None:
                        launched.append((kind, [str(a) for a in args], label, spec))
                        or jobs.Job(path=Path(jobs_dir), id="fake", kind=kind))
    at = page("pages/1_Models_and_training.py")
    _, act = train_upload(run_name="from_uploads")
    act(at, bad)
    assert not texts(at.error), texts(at.error)
    (kind, args, label, task), = launched
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
