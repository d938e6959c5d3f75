"""The Streamlit app, page by page, with AppTest (no browser) on a small runs folder.

Figure contents are read from the Plotly specs the pages send and compared with numbers computed
here from the run files (weights, motifs, path arrays), not with the app's own helpers.
"""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from app_fixtures import app_runs_folder

from tisfm_core import jobs
from tisfm_core.cli import build_parser
from tisfm_core.errors import TisfmError
from tisfm_core.motifs import read_meme
from tisfm_core.runs import load_run
from tisfm_core.demo import run_truth
from tisfm_core.sequences import encode, one_hot, parse_sequence_text
from tisfm_core.specs import TrainTask
from tisfm_core.uploads import extract_run_zip
from tisfm_core.workflows import RUN_FILES

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def fixture_root():
    return app_runs_folder()


@pytest.fixture
def env(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TISFM_RUNS", str(fixture_root / "runs"))
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    return fixture_root / "runs"


def page(script, run=None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / script), default_timeout=60)
    if run is not None:
        at.session_state["active_run"] = str(run)
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def arr(value):
    """A Plotly spec array (plain list or base64 'bdata' with dtype and shape) as NumPy."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            out = out.reshape([int(s) for s in str(value["shape"]).split(",")])
        return out
    return np.asarray(value)


def texts(elements):
    """The texts of elements as shown: Markdown backslash escapes (ui.md_escape) removed."""
    return [re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", e.value) if isinstance(e.value, str) else e.value
            for e in elements]


def weights(run_dir):
    """(motifs x outputs) final-layer weights straight from the model's nn.Linear."""
    run = load_run(run_dir)
    n = len(run.motif_ids)
    w = run.model.final.weight.detach().numpy()[:, :n].T.astype(np.float64)
    return pd.DataFrame(w, index=run.motif_ids, columns=run.outputs), run


# -- home ---------------------------------------------------------------------------------------

def test_home_shows_the_run_card(env):
    run_dir = env / "lineages_full"
    at = page("app.py", run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    bar = charts(at)[0]["data"][0]
    assert list(bar["x"]) == config["outputs"]
    assert np.allclose(arr(bar["y"]), config["metrics"]["test"]["r2"])
    model = load_run(run_dir).model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    body = "\n".join(texts(at.markdown))
    assert f"**{total:,}** total, **{trainable:,}** trainable" in body
    assert "variant **full**" in body and "trained on **cpu**" in body
    assert any("Synthetic demo" in w for w in texts(at.warning))
    assert len(at.get("page_link")) == 6
    assert "Test R² of each output" in texts(at.caption)[0]
    table = at.dataframe[0].value          # shown with 3 decimals ("n/a" when undefined)
    assert np.allclose(table["test_r2"].astype(float), config["metrics"]["test"]["r2"], atol=5e-4)


def test_run_picker_lists_broken_runs_with_their_error(env):
    at = page("app.py")
    picker = at.selectbox(key="_run_picker")
    labels = list(picker.options)  # as shown (formatted)
    assert labels[-1].startswith("⚠ broken") and "synthetic demo" in labels[0]
    assert picker.value != str(env / "broken")  # a usable run is picked by default
    picker.set_value(str(env / "broken")).run()
    assert any("not valid JSON" in e for e in texts(at.error))
    assert not at.get("plotly_chart")
    # the choice is kept in the session for the other pages
    assert at.session_state["active_run"] == str(env / "broken")


# -- final layer --------------------------------------------------------------------------------

def test_final_layer_heatmap_is_the_normalised_final_layer(env):
    run_dir = env / "lineages_full"
    at = page("pages/2_Final_layer.py", run_dir)
    at.radio(key="order").set_value("fixed").run()
    at.checkbox(key="with_planted").uncheck().run()
    heat = charts(at)[0]["data"][0]
    W, run = weights(run_dir)
    top = []
    for output in W.columns:
        col = np.abs(W[output].to_numpy())
        for i in np.argsort(-col, kind="stable")[:5]:
            if col[i] > 0 and W.index[i] not in top:
                top.append(W.index[i])
    expected = W / np.abs(W).max(axis=0)
    assert [c[0][0] for c in heat["customdata"]] == top
    assert list(heat["x"]) == list(W.columns)
    assert np.allclose(arr(heat["z"]), expected.loc[top].to_numpy(), atol=1e-6)
    assert any("divided by each output's max |weight|" in c for c in texts(at.caption))


def test_final_layer_marks_planted_regulators(env, fixture_root):
    at = page("pages/2_Final_layer.py", env / "lineages_full")
    data = charts(at)[0]["data"]
    truth = json.loads((fixture_root / "data" / "demo" / "truth.json").read_text())
    names = dict(zip(*(lambda r: (r.motif_ids, r.motif_names))(load_run(env / "lineages_full"))))
    expected = {(f"{names[e['motif']]} ({e['motif']})", lineage)
                for lineage, rows in truth["per_lineage"].items() for e in rows if e["motif"] in names}
    rings = data[1]
    assert rings["name"] == "planted"
    assert set(zip(rings["y"], rings["x"])) == expected


def test_inclusion_ratio_over_cv_folds(env):
    fold0 = env / "cv_lineages" / "fold_0"
    at = page("pages/2_Final_layer.py", fold0)
    at.slider(key="incl_threshold").set_value(0.0).run()
    heat = charts(at)[1]["data"][0]
    counts = None
    for fold in ("fold_0", "fold_1"):
        W, _ = weights(env / "cv_lineages" / fold)
        hit = np.zeros(W.shape)
        for j in range(W.shape[1]):
            col = np.abs(W.iloc[:, j].to_numpy())
            top = np.argsort(-col, kind="stable")[:10]
            hit[top[col[top] > 0], j] = 1
        counts = hit if counts is None else counts + hit
    ratio = pd.DataFrame(counts / 2, index=W.index, columns=W.columns)
    kept = ratio.loc[(ratio > 0).any(axis=1)]
    assert [c[0][0] for c in heat["customdata"]] == list(kept.index)
    assert np.allclose(arr(heat["z"]), kept.to_numpy())
    # a run outside a CV set explains what is missing
    at = page("pages/2_Final_layer.py", env / "lineages_full")
    assert any("not part of a cross-validation set" in i for i in texts(at.info))


# -- pooling and interaction --------------------------------------------------------------------

def test_pooling_vs_information_content(env):
    from scipy import stats

    run_dir = env / "lineages_full"
    at = page("pages/3_Pooling_vs_information.py", run_dir)
    scatter = charts(at)[0]["data"][0]
    run = load_run(run_dir)
    motifs = read_meme(run_dir / "motifs.meme")
    ic = np.array([np.sum(2 + np.sum(np.where(m > 0, m * np.log2(np.where(m > 0, m, 1)), 0), axis=1))
                   for m in motifs.matrices])
    pooling = run.model.pool_weight.detach().numpy()[:len(motifs)]
    assert np.allclose(arr(scatter["x"]), ic, atol=1e-6)
    assert np.allclose(arr(scatter["y"]), pooling, atol=1e-6)
    colour = run.model.final.weight.detach().numpy()[0, :len(motifs)]  # first output
    assert np.allclose(arr(scatter["marker"]["color"]), colour, atol=1e-6)
    r = {m.label: m.value for m in at.metric}
    assert r["Pearson r"] == f"{stats.pearsonr(ic, pooling).statistic:.3f}"
    assert r["Spearman ρ"] == f"{stats.spearmanr(ic, pooling).statistic:.3f}"
    inter = charts(at)[1]["data"][0]
    A = run.model.interaction.weight.detach().numpy()[:len(motifs), :len(motifs)]
    assert np.allclose(arr(inter["y"]), np.abs(A).sum(axis=0), atol=1e-5)
    # a variant without the interaction layer says so instead of drawing
    at = page("pages/3_Pooling_vs_information.py", env / "treediff_base")
    assert len(charts(at)) == 1
    assert any("no TF-TF interaction layer" in i for i in texts(at.info))


# -- regularization path ------------------------------------------------------------------------

def test_regularization_path_views(env):
    path_dir = env / "paths" / "lineages_mcp"
    with np.load(path_dir / "path.npz", allow_pickle=False) as npz:
        lambdas, val_mse, coefs, best = npz["lambdas"], npz["val_mse"], npz["coefs"], npz["best_index"]
        ids = npz["motif_ids"].tolist()
    at = page("pages/4_Regularization_path.py", env / "lineages_full")
    mse, coef_fig, layer = charts(at)
    for r, trace in enumerate(mse["data"]):
        assert np.allclose(arr(trace["x"]), lambdas) and np.allclose(arr(trace["y"]), val_mse[:, r])
    assert sorted(s["x0"] for s in mse["layout"]["shapes"]) == sorted(lambdas[best].tolist())
    # coefficient paths of the first output: every non-zero motif drawn, the top 9 in colour
    drawn = {t["name"]: arr(t["y"]) for t in coef_fig["data"]}
    assert len(drawn) == int((np.abs(coefs[:, 0, :]) > 0).any(axis=0).sum())
    # the final layer at the chosen lambda (default: the first output's best)
    z = arr(layer["data"][0]["z"])
    shown = [c[0][0] for c in layer["data"][0]["customdata"]]
    at_best = coefs[best[0]].T
    assert np.allclose(z, at_best[[ids.index(m) for m in shown]], atol=1e-6)
    at.select_slider(key="path_lambda").set_value(at.select_slider(key="path_lambda").options[-1]).run()
    layer = charts(at)[2]["data"][0]
    shown = [c[0][0] for c in layer["customdata"]]
    assert np.allclose(arr(layer["z"]), coefs[-1].T[[ids.index(m) for m in shown]], atol=1e-6)


def test_regularization_path_missing_offers_a_job(env, monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "launch", lambda kind, args, jobs_dir, label="", spec=None:
                        calls.append((kind, args, spec)) or jobs.Job(path=Path(jobs_dir), id="fake", kind=kind))
    at = page("pages/4_Regularization_path.py", env / "treediff_base")
    assert any("No regularization path" in i for i in texts(at.info))
    at.button(key="start_path").click().run()
    kind, args, spec = calls[0]
    parsed = build_parser().parse_args([kind, *map(str, args)])
    assert parsed.run == str(env / "treediff_base") and spec.penalty == "mcp" and spec.log_grid
    assert np.allclose(spec.lambdas, np.r_[0, np.geomspace(1e-4, 1e-1, 12)])


# -- lineage tree -------------------------------------------------------------------------------

def test_lineage_tree(env):
    run_dir = env / "treediff_base"
    config = json.loads((run_dir / "config.json").read_text())
    at = page("pages/5_Lineage_tree.py", run_dir)
    at.slider(key="tree_threshold").set_value(-0.5).run()
    tree, heat = charts(at)
    mids = next(t for t in tree["data"] if t.get("name") == "edges")
    assert sorted(c[0] for c in mids["customdata"]) == sorted(config["outputs"])
    r2 = dict(zip(config["metrics"]["test"]["outputs"], config["metrics"]["test"]["r2"]))
    assert all(abs(c[2] - r2[c[0]]) < 1e-9 for c in mids["customdata"])
    # root at the top: the root node has the smallest y and the axis is reversed
    nodes = next(t for t in tree["data"] if t.get("name") == "cell types")
    assert tree["layout"]["yaxis"]["autorange"] == "reversed"
    assert arr(nodes["y"])[0] == 0 and (arr(nodes["y"]) >= 0).all()
    kept = [e for e in config["outputs"] if r2[e] is not None and r2[e] > -0.5]
    assert len(heat["data"][0]["x"]) == len(kept)
    W, _ = weights(run_dir)
    top = set()
    for edge in kept:
        col = np.abs(W[edge].to_numpy())
        top |= {W.index[i] for i in np.argsort(-col, kind="stable")[:5] if col[i] > 0}
    assert {c[0][0] for c in heat["data"][0]["customdata"]} == top
    edge_table = at.dataframe[-1].value
    first = at.selectbox(key="tree_edge").value
    col = W[first].to_numpy()
    assert list(edge_table["motif"]) == [W.index[i] for i in np.argsort(-np.abs(col), kind="stable")[:10]]
    # any other run explains what the page needs
    at = page("pages/5_Lineage_tree.py", env / "lineages_full")
    assert any("tree-diff targets" in i for i in texts(at.info)) and not charts(at)


# -- TISM logos ---------------------------------------------------------------------------------

def _seq(fixture_root, k=0):
    lines = (fixture_root / "data" / "demo" / "sequences.fa").read_text().split("\n")
    return lines[2 * k + 1]


def test_tism_page_explains_a_pasted_sequence(env, fixture_root):
    run_dir = env / "lineages_full"
    seq = _seq(fixture_root)
    at = page("pages/6_TISM_logos.py", run_dir)
    at.text_area(key="tism_text").input(f">mine\n{seq}").run()
    assert not texts(at.error)
    assert any("Mean TISM effect at the reference base" in c for c in texts(at.caption))
    # variant table: predictions against the model run here
    at.number_input(key="variant_pos").set_value(10).run()
    table = at.dataframe[-1].value
    model = load_run(run_dir).model
    idx = encode([seq])
    with torch.no_grad():
        ref = model(torch.from_numpy(one_hot(idx))).numpy()[0]
        for row in table.itertuples():
            mutated = idx.copy()
            mutated[0, 9] = "ACGT".index(row.alt)
            alt = model(torch.from_numpy(one_hot(mutated))).numpy()[0]
            k = model_outputs(run_dir).index(row.output)
            assert row.position == 10 and row.ref == seq[9]
            assert abs(row.ref_pred - ref[k]) < 1e-5 and abs(row.exact_delta - (alt[k] - ref[k])) < 1e-5
    # exact ISM check: Pearson of TISM (autograd) and brute-force ISM for the first output
    at.button(key="ism_button").click().run()
    shown = float(at.metric[0].value)
    x = torch.from_numpy(one_hot(idx)).requires_grad_(True)
    model(x)[0, 0].backward()
    g = x.grad.numpy()[0]
    ref_base = idx[0]
    sites = [(pos, b) for pos in range(len(seq)) for b in range(4) if b != ref_base[pos]]
    t_vals = [g[b, pos] - g[ref_base[pos], pos] for pos, b in sites]
    mutants = np.repeat(idx, len(sites), axis=0)
    mutants[np.arange(len(sites)), [pos for pos, _ in sites]] = [b for _, b in sites]
    with torch.no_grad():
        base_pred = model(torch.from_numpy(one_hot(idx))).numpy()[0, 0]
        i_vals = model(torch.from_numpy(one_hot(mutants))).numpy()[:, 0] - base_pred
    assert abs(shown - np.corrcoef(t_vals, i_vals)[0, 1]) < 2e-3


def model_outputs(run_dir):
    return json.loads((run_dir / "config.json").read_text())["outputs"]


def test_tism_page_names_bad_letters_and_lengths(env, fixture_root):
    seq = _seq(fixture_root)
    at = page("pages/6_TISM_logos.py", env / "lineages_full")
    at.text_area(key="tism_text").input(">good\n" + seq + "\n>bad\n" + seq[:41] + "Z" + seq[42:]).run()
    assert texts(at.error) == ["sequence 'bad' has invalid character 'Z' at position 42 (1-based); expected "
                               "A, C, G, T or an IUPAC code"]
    at.text_area(key="tism_text").input(seq[:60]).run()
    assert "60 bp long; expected 100 bp" in texts(at.error)[0]
    assert not charts(at)


def test_tism_page_region_of_the_run_data(env):
    at = page("pages/6_TISM_logos.py", env / "lineages_full")
    at.radio(key="tism_mode").set_value("Region of the run's data").run()
    assert not texts(at.error)
    assert at.multiselect(key="tism_regions").value == ["syn_00000"]
    assert any("Mean TISM effect" in c for c in texts(at.caption))


# -- models and training ------------------------------------------------------------------------

def _zip(entries, links=()):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _run_files(run_dir, prefix=""):
    return {prefix + p.name: p.read_bytes() for p in run_dir.iterdir() if p.name in RUN_FILES}


def test_upload_run_zip(env, tmp_path):
    at = page("pages/1_Models_and_training.py")
    assert len(at.dataframe[0].value) == 5
    good = _zip(_run_files(env / "lineages_full", "my_run/"))
    at.file_uploader(key="run_zip").set_value(("my_run.zip", good, "application/zip")).run()
    at.button(key="add_run_zip").click().run()
    assert not texts(at.error)
    added = list((tmp_path / "home" / "runs").iterdir())
    assert len(added) == 1 and added[0].name.startswith("uploaded_") and "my_run" not in added[0].name
    assert (added[0] / "model.safetensors").read_bytes() == (env / "lineages_full" / "model.safetensors").read_bytes()
    assert at.session_state["active_run"] == str(added[0])
    assert len(at.dataframe[0].value) == 6


@pytest.mark.parametrize("entries, links, message", [
    ({"../evil/config.json": b"{}", "model.safetensors": b""}, (), "leaves its folder"),
    ({"/abs/config.json": b"{}", "model.safetensors": b""}, (), "absolute"),
    ({"config.json": b"{}", "model.safetensors": b"", "run.sh": b"rm -rf /"}, (), "may only contain"),
    ({"config.json": b"{}", "model.safetensors": b""}, ("motifs.meme",), "link"),
    ({"a/config.json": b"{}", "b/model.safetensors": b""}, (), "several folders"),
    ({"config.json": b"{}"}, (), "no model.safetensors"),
])
def test_bad_run_zips_are_refused(env, tmp_path, entries, links, message):
    at = page("pages/1_Models_and_training.py")
    at.file_uploader(key="run_zip").set_value(("x.zip", _zip(entries, links), "application/zip")).run()
    at.button(key="add_run_zip").click().run()
    assert any(message in e for e in texts(at.error)), texts(at.error)
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())


def test_zip_size_limit_and_invalid_run(env, tmp_path):
    files = _run_files(env / "lineages_full")
    with pytest.raises(TisfmError, match="more than"):
        extract_run_zip(_zip(files), tmp_path / "runs", max_bytes=1000)
    broken = dict(files, **{"config.json": b'{"format": "tisfm-run", "format_version": 1}'})
    with pytest.raises(TisfmError, match="the uploaded run is not valid"):
        extract_run_zip(_zip(broken), tmp_path / "runs")
    assert not any((tmp_path / "runs").iterdir())
    with pytest.raises(TisfmError, match="not a zip"):
        extract_run_zip(b"plain text", tmp_path / "runs")


def test_training_form_builds_a_valid_job(env, fixture_root, monkeypatch):

    calls = []

    def fake_launch(kind, args, jobs_dir, label="", spec=None):
        calls.append((kind, [str(a) for a in args], label, spec))
        return jobs.Job(path=Path(jobs_dir), id="fake", kind=kind)

    monkeypatch.setattr(jobs, "launch", fake_launch)
    demo = fixture_root / "data" / "demo"
    at = page("pages/1_Models_and_training.py")
    at.radio(key="data_source").set_value("Files on this server").run()
    at.text_input(key="srv_seq").input(str(demo / "sequences.fa"))
    at.text_input(key="srv_targets").input(str(demo / "targets_celltypes.tsv"))
    at.selectbox(key="transform").set_value("tree-diff").run()
    at.text_input(key="transform_table").input(str(demo / "parents.tsv"))
    at.radio(key="motif_source").set_value("JASPAR release").run()
    at.selectbox(key="variant").set_value("base")
    at.number_input(key="epochs").set_value(3)
    at.number_input(key="finetune").set_value(2)
    at.text_input(key="run_name").input("my tree run!").run()
    at.button(key="start_training").click().run()
    assert not texts(at.error), texts(at.error)
    kind, args, label, task = calls[0]
    parsed = build_parser().parse_args([kind, *args])
    assert kind == "train" and parsed.out.endswith("/runs/my_tree_run")
    # the job's task survives its JSON round trip (what the job process reads)
    task = TrainTask.from_dict(json.loads(json.dumps(task.to_dict(base=REPO))), base=REPO)
    assert task.model.variant == "base" and task.training.epochs == 3 and task.training.finetune_epochs == 2
    assert task.data.transform == f"tree-diff:{demo / 'parents.tsv'}" and task.model.motifs == "jaspar:2024"
    assert task.data.sequences == str(demo / "sequences.fa")
    # a missing server file is refused before any job starts
    at.text_input(key="srv_targets").input(str(demo / "nope.tsv")).run()
    at.button(key="start_training").click().run()
    assert any("does not exist on this server" in e for e in texts(at.error)) and len(calls) == 1


def test_training_form_makes_the_demo_atlas(env, tmp_path, monkeypatch):

    calls = []
    monkeypatch.setattr(jobs, "launch", lambda kind, args, jobs_dir, label="", spec=None:
                        calls.append((kind, spec)) or jobs.Job(path=Path(jobs_dir), id="f", kind=kind))
    at = page("pages/1_Models_and_training.py")
    at.number_input(key="demo_regions").set_value(200)
    at.selectbox(key="demo_targets").set_value("tree edges (80 outputs: child minus parent)")
    at.radio(key="job_mode").set_value("Cross-validation (one run per fold)").run()
    at.button(key="start_training").click().run()
    assert not texts(at.error), texts(at.error)
    kind, task = calls[0]
    demo = tmp_path / "home" / "data" / "demo_200_seed0"
    assert kind == "cv" and task.data.sequences == str(demo / "sequences.fa")
    assert task.data.transform == f"tree-diff:{demo / 'parents.tsv'}" and task.model.motifs == str(demo / "motifs.meme")
    assert len((demo / "sequences.fa").read_text().split(">")) == 201
    assert json.loads((demo / "truth.json").read_text())["synthetic"] is True


def test_jobs_panel_shows_progress_loss_and_failures(env, tmp_path):
    home_jobs = tmp_path / "home" / "jobs"
    history = [{"stage": "frozen", "epoch": i, "train_loss": 1.0 / i, "val_loss": 1.5 / i} for i in (1, 2, 3)]
    for name, status in (("a_failed", {"state": "failed", "message": "targets file x.tsv does not exist",
                                       "fraction": 0.0}),
                         ("b_done", {"state": "done", "message": "run written", "fraction": 1.0,
                                     "history": history})):
        folder = home_jobs / name
        folder.mkdir(parents=True)
        job = jobs.Job(path=folder, id=name, kind="train", created=1.0 if name == "a_failed" else 2.0,
                       label=name)
        (folder / "job.json").write_text(json.dumps(job.to_dict()))
        (folder / "status.json").write_text(json.dumps(status))
        (folder / "log.txt").write_text(f"log of {name}\n")
    at = page("pages/1_Models_and_training.py")
    table = at.dataframe[1].value
    assert list(table["job"]) == ["b_done", "a_failed"] and list(table["state"]) == ["done", "failed"]
    assert list(table["progress"]) == [100, 0]
    assert any("targets file x.tsv does not exist" in e for e in texts(at.error))
    loss = charts(at)[0]["data"]
    assert np.allclose(arr(loss[0]["y"]), [1.0, 0.5, 1 / 3]) and np.allclose(arr(loss[1]["y"]), [1.5, 0.75, 0.5])
    assert "log of a_failed" in [c.value for c in at.code][1]


# -- helpers --------------------------------------------------------------------------------------

def test_parse_sequences_fasta_raw_and_wrapped():
    seqs = parse_sequence_text(">a x\nACGT\nAC\n\n>b\nTTTTNN\n", length=6)
    assert list(seqs.ids) == ["a", "b"] and seqs.indices.tolist() == [[0, 1, 2, 3, 0, 1], [3, 3, 3, 3, 4, 4]]
    seqs = parse_sequence_text("ACG\nTAC\n\nGGG\nCCC", length=6)  # blocks of wrapped lines
    assert list(seqs.ids) == ["seq1", "seq2"] and seqs.indices.tolist() == [[0, 1, 2, 3, 0, 1], [2, 2, 2, 1, 1, 1]]
    seqs = parse_sequence_text("ACG\nTAC", length=3)  # one sequence per line
    assert list(seqs.ids) == ["seq1", "seq2"]
    with pytest.raises(TisfmError, match="line 1: text before the first"):
        parse_sequence_text("ACGT\n>a\nACGT")
    with pytest.raises(TisfmError, match="'b' appears twice"):
        parse_sequence_text(">b\nAC\n>b\nAC")


def test_figure_downloads_are_valid_images():
    from tisfm_core.plots import figure_image, weight_heatmap

    W = pd.DataFrame([[1.0, -0.5], [0.2, 0.0]], index=["M1", "M2"], columns=["o1", "o2"])
    fig = weight_heatmap(W, names={"M1": "Pax5"}, marks=[("M1", "o1")])
    svg = figure_image(fig, "svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg and b"Pax5 (M1)" in svg
    assert figure_image(fig, "png").startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(TisfmError, match="image format"):
        figure_image(fig, "gif")


def test_tism_page_genome_coordinates(env, tmp_path):
    rng = np.random.default_rng(1)
    contig = "".join(rng.choice(list("ACGT"), size=500))
    genome = tmp_path / "genome.fa"
    genome.write_text(">chr1\n" + "\n".join(contig[i:i + 60] for i in range(0, 500, 60)) + "\n")
    at = page("pages/6_TISM_logos.py", env / "lineages_full")
    at.radio(key="tism_mode").set_value("Genome coordinates").run()
    at.text_input(key="tism_genome").input(str(genome))
    at.text_input(key="tism_region").input("chr1:201-300").run()
    assert not texts(at.error), texts(at.error)
    at.number_input(key="variant_pos").set_value(7).run()
    table = at.dataframe[-1].value
    assert set(table["ref"]) == {contig[200 + 6]}  # window chr1:201-300 = contig[200:300]
    at.text_input(key="tism_region").input("chrX:1-100").run()
    assert any("chrX" in e for e in texts(at.error))


def test_import_reference_state_dict(env, tmp_path):
    from conftest import CISBP, REFERENCE, need

    root = need(REFERENCE / "base_head")
    at = page("pages/1_Models_and_training.py")
    at.file_uploader(key="ref_pt").set_value(("sd.pt", (root / "state_dict.pt").read_bytes(), "application/octet-stream"))
    at.file_uploader(key="ref_motifs").set_value(("cisbp.meme", need(CISBP).read_bytes(), "text/plain"))
    at.selectbox(key="ref_variant").set_value("full")
    at.selectbox(key="ref_era").set_value("head").run()
    at.button(key="ref_import").click().run()
    assert any("not 'full'" in e or "is a" in e for e in texts(at.error)), texts(at.error)
    assert not list((tmp_path / "home" / "runs").glob("imported_*"))
    at.selectbox(key="ref_variant").set_value("base").run()
    at.button(key="ref_import").click().run()
    assert not texts(at.error), texts(at.error)
    (imported,) = (tmp_path / "home" / "runs").glob("imported_*")
    model = load_run(imported).model
    with torch.no_grad():
        got = model(torch.from_numpy(np.load(root / "inputs.npy"))).numpy()
    assert np.abs(got - np.load(root / "outputs.npy")).max() < 1e-4
    assert at.session_state["active_run"] == str(imported)


def test_moved_runs_find_their_data_through_run_relative_paths(fixture_root, tmp_path, monkeypatch):
    """A runs folder copied elsewhere (absolute data paths gone) still gives the TISM page its
    regions and the planted-regulator marks their truth.json."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(fixture_root / "data", moved / "data")
    shutil.copytree(fixture_root / "runs" / "lineages_full", moved / "runs" / "lineages_full")
    config_path = moved / "runs" / "lineages_full" / "config.json"
    config = json.loads(config_path.read_text())
    for key in ("sequences", "targets"):
        config["data"][key]["path"] = "/nonexistent" + config["data"][key]["path"]
    config_path.write_text(json.dumps(config))
    monkeypatch.setenv("TISFM_RUNS", str(moved / "runs"))
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    run = moved / "runs" / "lineages_full"
    synthetic, truth = run_truth(str(run), config)
    assert synthetic and truth is not None and truth["synthetic"] is True
    at = page("pages/6_TISM_logos.py", run)
    at.radio(key="tism_mode").set_value("Region of the run's data").run()
    assert not texts(at.error), texts(at.error)
    assert at.multiselect(key="tism_regions").value == ["syn_00000"]

