"""Hostile and careless input: names that would become paths outside the project, markup in class and file names,
secrets in the tracking URI, alias bombs and out-of-range params, killed writers' leftovers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfpipe import outputs
from tfpipe.config import ParamsError
from tfpipe.params_file import load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
MARKUP = "<img src=x onerror=alert(1)>"
SECRET = "s3cr3t-pa55"


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"export": {"model_name": "/tmp/elsewhere"}}, "export.model_name"),
        ({"export": {"model_name": "../../outside"}}, "export.model_name"),
        ({"data": {"name": ".hidden"}}, "data.name"),
        ({"data": {"source": "tfds:../../etc"}}, "data.source"),
        ({"ingest": {"seed": -1}}, "ingest.seed"),
        ({"ingest": {"num_shards": 10_000}}, "ingest.num_shards"),
        ({"train": {"epochs": 1e23}}, "train.epochs"),
        ({"train": {"batch_size": 10**9}}, "train.batch_size"),
        ({"export": {"latency_runs": 10**12}}, "export.latency_runs"),
    ],
)
def test_names_that_become_paths_and_out_of_range_numbers_are_refused_naming_the_key(raw, key):
    with pytest.raises(ParamsError, match=f"  {key}: "):
        parse_params(raw)


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level, name in enumerate("bcdefghi"):
        previous = "abcdefgh"[level]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    (tmp_path / "params.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ParamsError, match="values once its YAML aliases .* expand, more than 100,000"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("x" * 1_000_001)
    with pytest.raises(ParamsError, match="more than the 1,000,000 a params file may hold"):
        load_params(tmp_path / "params.yaml")


def test_class_names_with_markup_or_a_leading_dot_are_named_not_used(tmp_path):
    from components.ingest.layout import LayoutError, read_layout

    for name in ("cat", MARKUP, "...", "..a", "dog"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name / "1.png")
    with pytest.raises(LayoutError, match="1 class name\\(s\\) cannot be used: '<img src=x onerror=alert\\(1\\)>'"):
        read_layout(tmp_path)
    (tmp_path / MARKUP / "1.png").unlink()
    (tmp_path / MARKUP).rmdir()
    layout = read_layout(tmp_path)
    assert layout.class_names == ["cat", "dog"]
    assert layout.hidden == [".../1.png", "..a/1.png"]  # skipped by the dot rule, and counted and listed


def test_file_names_with_markup_are_escaped_in_everything_ingest_renders(tmp_path, monkeypatch):
    from components.ingest import stage as ingest

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "data/raw" / name).mkdir(parents=True)
        for index in range(8):
            Image.fromarray(rng.integers(40, 200, (8, 8), dtype=np.uint8)).save(
                tmp_path / f"data/raw/{name}/{index}.png"
            )
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / f"data/raw/cat/{MARKUP}.png")  # blank: it fails
    (tmp_path / "params.yaml").write_text(
        "ingest: {expectations: {image_height: 8, image_width: 8, channels: 1, min_per_class: 2, "
        "max_class_share: 0.9, image_mean_min: 20.0, image_mean_max: 230.0}}\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        ingest.main()
    (tmp_path / "data/raw/dog/link.png").symlink_to(tmp_path / f"{MARKUP}.png")  # a problem naming its target
    with pytest.raises(SystemExit):
        ingest.main()
    rendered = [*(tmp_path / "reports").rglob("*.html"), *(tmp_path / "reports").rglob("*.json")]
    assert rendered and not [path for path in rendered if "<img src=x" in path.read_text()]
    validation = (tmp_path / "reports/ingest/validation.json").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in validation  # named, as text


def test_credentials_in_the_tracking_uri_never_reach_a_message_tag_or_traceback(monkeypatch, capsys):
    import mlflow

    from components.evaluate import gate as evaluate
    from pipelines import predict

    uri = f"http://alice:{SECRET}@127.0.0.1:9"  # the discard port: nothing listens
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    mlflow.set_tracking_uri(uri)
    try:
        check = evaluate.evaluate_champion("x-classifier", lambda uri: {"accuracy": 1.0})
        assert check["error"] and SECRET not in check["error"] and "alice" not in check["error"]
        gate = evaluate.decide_blessing(
            {"accuracy": 1.0, "per_class": {}}, parse_params({}).evaluate, champion_error=check["error"]
        )
        assert not gate["blessed"] and SECRET not in json.dumps(gate)
        code = predict.main(["--model", "models:/x-classifier@champion", str(ROOT / "README.md")])
        assert code == 2 and SECRET not in capsys.readouterr().err
    finally:
        mlflow.set_tracking_uri(None)
    crashed = subprocess.run(
        [sys.executable, "-c", f"import pipelines, logging; logging.warning('at {uri}'); raise RuntimeError('{uri}')"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "RuntimeError: http://***@127.0.0.1:9" in crashed.stderr and "at http://***@" in crashed.stderr
    assert SECRET not in crashed.stderr


def test_a_killed_stages_staging_folder_is_swept_and_a_live_ones_is_not(tmp_path):
    import os

    target = tmp_path / "prepared"
    dead = tmp_path / f".prepared{outputs.TEMPORARY_MARK}999999999-abc"
    alive = tmp_path / f".prepared{outputs.TEMPORARY_MARK}{os.getpid()}-def"
    dead.mkdir()
    alive.mkdir()
    with outputs.atomic_directory(target) as staging:
        (staging / "x").write_text("new")
    assert not dead.exists() and alive.exists() and (target / "x").read_text() == "new"


def test_a_failing_stage_says_how_to_get_its_previous_outputs_back(capsys):
    def failing():
        raise SystemExit(1)

    with pytest.raises(SystemExit):
        outputs.run_stage("train", failing)
    assert "`dvc checkout train` restores them from the DVC cache" in capsys.readouterr().err


def test_a_finished_stage_exits_at_once_with_everything_it_printed_and_wrote(tmp_path):
    """run_stage skips the interpreter's teardown after a main that returned (1-3 s a stage), not what it wrote."""
    import subprocess
    import sys

    code = (
        "import logging, sys; from tfpipe.outputs import run_stage, write_text\n"
        "def main():\n"
        "    print('printed', end=''); print('to stderr', file=sys.stderr, end='')\n"
        "    logging.basicConfig(filename=sys.argv[1] + '/log.txt'); logging.warning('logged')\n"
        "    write_text(sys.argv[1] + '/out.txt', 'written')\n"
        "    import atexit; atexit.register(lambda: open(sys.argv[1] + '/exit.txt', 'w').write('handled'))\n"
        "    from joblib import Parallel, delayed\n"  # a worker pool that outlives its call (evaluate's SVM folds)
        "    assert Parallel(n_jobs=2)(delayed(abs)(-value) for value in range(4)) == [0, 1, 2, 3]\n"
        "run_stage('x', main)\n"
        "print('never reached')\n"
    )
    # With the pool's workers left running, reading the output would wait for their idle timeout (300 s).
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "printed" and result.stderr == "to stderr"
    assert (tmp_path / "out.txt").read_text() == "written" and "logged" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "exit.txt").read_text() == "handled"  # exit handlers run (joblib's pool: no orphans)
