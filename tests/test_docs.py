"""The documentation cannot go stale: every command in a ```bash block of README.md and docs/ either runs here as
written (in a copy of the reproduced repository) or is classified, with the test that runs it or the reason CI
cannot; and every timing figure the docs quote is one benchmarks/RESULTS.md records."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN, COVERED, SKIP = "run", "covered", "skip"
# How CI treats each documented command, first match wins. RUN: run here as written (placeholders below);
# COVERED: the named test runs it (it must exist); SKIP: why CI cannot. A command no rule matches fails
# test_every_documented_command_is_classified: a new command in the docs must be classified here.
RULES = [
    (r"^make (repro|test)\b", COVERED, ".ci/run::make test"),
    (r"^make bench-gpu|^make install-gpu", SKIP, "needs a GPU"),
    (
        r"^make bench(-scale)?\b",
        SKIP,
        "an hour of CPU (figures, not checks): each script it runs is imported by tests/test_benchmarks.py, "
        "and each one the docs name is run there",
    ),
    (
        r"^python -m benchmarks\.(int8_ops|bench_ingest)$",
        COVERED,
        "tests/test_benchmarks.py::test_the_documented_benchmarks_run_in_a_reproduced_copy",
    ),
    (
        r"^python -m benchmarks\.bench_datasets$",
        SKIP,
        "the whole pipeline a dataset: 222 s for the smallest even with --quick on 2 cores; every name it imports is "
        "checked by tests/test_benchmarks.py::test_every_project_name_a_benchmark_imports_exists",
    ),
    (r"^python benchmarks/bench_export\.py$", RUN, ""),
    (r"^make serve", RUN, ""),
    (r"^mkdir -p ~/\.keras/models|^curl -O https://", SKIP, "downloads ImageNet weights (network)"),
    (r"^curl -s 127\.0\.0\.1:", RUN, ""),
    (
        r"^python -m pipelines\.materialize --source tfds",
        COVERED,
        "tests/test_materialize.py::test_a_tfds_dataset_downloads_and_prepares_for_real_from_a_local_server",
    ),
    (
        r"^python -m pipelines\.materialize( --source folder)? --from ~/(flowers|my_images)",
        COVERED,
        "tests/test_photos_e2e.py::test_a_messy_photo_folder_passes_first_time_and_its_model_is_promoted",
    ),
    (
        r"^python -m pipelines\.schema",
        COVERED,
        "tests/test_photos_e2e.py::test_a_messy_photo_folder_passes_first_time_and_its_model_is_promoted",
    ),
    (r"^python -m pipelines\.materialize( --source folder)?$", RUN, ""),
    (
        r"^python -m pipelines\.materialize --source file --from ~/\w+\.csv --target \w+$",
        COVERED,
        "tests/test_tables_e2e.py::test_a_messy_table_is_validated_trained_gated_and_promoted",
    ),
    (
        r"^python -m pipelines\.materialize --source folder --from ~/reviews$",
        COVERED,
        "tests/test_texts_e2e.py::test_a_messy_folder_of_documents_is_checked_trained_gated_and_promoted",
    ),
    (
        r"^python -m pipelines\.materialize --source (imdb|penguins|autompg)$",
        COVERED,
        "tests/test_texts.py::test_the_demos_materialize_offline_with_their_schema",
    ),
    (r"^python -m pipelines\.materialize && dvc repro", SKIP, "a tfds preset: downloads (network)"),
    (r"^python -m pipelines\.presets (list|show)", RUN, ""),
    (r"^python -m pipelines\.presets apply cifar10", SKIP, "a tfds preset: downloads (network)"),
    (
        r"^python -m pipelines\.presets apply folder-mobilenet_v2",
        COVERED,
        "tests/test_applications.py::test_folder_mobilenet_v2_preset_runs_end_to_end_with_weights_none",
    ),
    (
        r"^python -m pipelines\.predict --model models:/cars-regressor@champion ",
        COVERED,
        "tests/test_tables_e2e.py::test_predict_writes_one_prediction_a_row_from_every_model_form",
    ),
    (
        r"^python -m pipelines\.predict --model models:/reviews-classifier@champion ",
        COVERED,
        "tests/test_texts_e2e.py::test_predict_reads_files_in_any_encoding_and_stdin_from_every_model_form",
    ),
    (r"^python -m pipelines\.predict ", RUN, ""),
    (r"^dvc repro$", COVERED, "tests/test_pipeline_e2e.py::test_forced_rerun_without_run_cache_is_deterministic"),
    (
        r"^dvc (exp run -S export\.max_int8|exp show --only-changed$|metrics diff$)",
        COVERED,
        "tests/test_experiments.py::test_exp_show_only_changed_and_metrics_diff_fit_a_120_column_terminal",
    ),
    (r"^python -m pipelines\.store champion$", RUN, ""),
    (
        r"^python -m pipelines\.store promote$",
        COVERED,
        "tests/test_promotion.py::test_store_promote_compares_with_the_champion_now_on_the_test_split",
    ),
    (
        r"^dvc (exp run --queue|queue start|queue status|exp apply)",
        COVERED,
        "tests/test_experiments.py::test_a_sweep_keeps_the_best_model_champion_until_the_better_experiment_is_applied",
    ),
    (
        r"^dvc (exp|queue) ",
        COVERED,
        "tests/test_experiments.py::test_each_experiment_is_its_own_mlflow_run_and_dvc_exp_show_agrees",
    ),
    (
        r"^(CLUSTER=|TF_CONFIG=)",
        COVERED,
        "tests/test_scaling.py::test_two_workers_train_like_one_and_only_the_chief_writes_and_tracks",
    ),
    (
        r"^(dvc pull|dvc remote|git add \.dvc|git clone|\.venv/bin/dvc)",
        COVERED,
        "tests/test_scaling.py::test_dvc_remote_push_then_pull_in_a_fresh_clone_has_nothing_to_reproduce",
    ),
    (
        r"^(createdb|mlflow server|export MLFLOW_TRACKING_URI)",
        COVERED,
        "tests/test_scaling.py::test_pipeline_logs_runs_registry_and_aliases_to_an_mlflow_server_on_postgres",
    ),
]
# Placeholders the docs use for a user's own files, made in the copy before its commands run.
PLACEHOLDERS = {"digit.png": "a digit", "photo_of_a_digit.jpg": "a photo of a digit on paper"}


def without_comment(line: str) -> str:
    """The line without a trailing `# comment` (a # inside quotes is kept, as bash reads it)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].strip()
    return line.strip()


def commands(document: Path) -> list[tuple[str, int, list[str]]]:
    """(document, line, [command, ...]) per ```bash block: continuation lines joined, comments dropped."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(document.read_text().splitlines(), start=1):
        if line.strip().startswith("```bash"):
            current, start = [], number
        elif line.strip().startswith("```") and current is not None:
            joined = re.sub(r"\\\n\s*", " ", "\n".join(current))
            lines = [without_comment(text) for text in joined.splitlines()]
            blocks.append(
                (
                    document.relative_to(ROOT).as_posix(),
                    start,
                    [text for text in lines if text and not text.startswith("#")],
                )
            )
            current = None
        elif current is not None:
            current.append(line)
    return blocks


BLOCKS = [block for document in DOCUMENTS for block in commands(document)]


def classify(command: str) -> tuple[str, str]:
    for pattern, kind, detail in RULES:
        if re.search(pattern, command):
            return kind, detail
    raise LookupError(command)


def test_every_documented_command_is_classified_and_every_covering_test_exists():
    assert BLOCKS, "no ```bash blocks found"
    unknown = []
    for document, line, block in BLOCKS:
        for command in block:
            try:
                kind, detail = classify(command)
            except LookupError:
                unknown.append(f"{document}:{line}: {command}")
                continue
            if kind == COVERED and detail.startswith("tests/"):
                path, name = detail.split("::")
                assert f"def {name}(" in (ROOT / path).read_text(), f"{document}:{line}: {detail} does not exist"
    assert not unknown, "documented commands no rule in tests/test_docs.py classifies:\n" + "\n".join(unknown)


def inline_commands(document: Path) -> list[str]:
    """`python -m <module> ...` in the prose's code spans (a span may wrap onto the next line)."""
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
    return [" ".join(span.split()) for span in re.findall(r"`((?:\.venv/bin/)?python\s+-m\s+[^`]+)`", text)]


def test_every_command_the_prose_names_is_a_module_that_runs_and_takes_that_subcommand():
    """A command named in a sentence (not a ```bash block) cannot be run as written (it has placeholders), but its
    module must be one `python -m` runs (a main, not a library that exits 0 doing nothing) and its subcommand one
    the module takes."""
    wrong = []
    for document in DOCUMENTS:
        for command in inline_commands(document):
            words = command.split()
            module = words[words.index("-m") + 1]
            if "<" in module:
                continue  # components.<stage>: test_layout checks that each stage runs as python -m
            base = ROOT / module.replace(".", "/")
            source = next((path for path in (base / "__main__.py", base.with_suffix(".py")) if path.is_file()), None)
            if source is None or (source.name != "__main__.py" and '__name__ == "__main__"' not in source.read_text()):
                wrong.append(f"{document.name}: `{command}`: {module} is no module `python -m` runs")
                continue
            rest = words[words.index("-m") + 2 :]
            subcommand = rest[0] if rest and rest[0][0].isalpha() else ""
            for name in filter(None, subcommand.split("|")):
                if not re.search(rf"[\"']{re.escape(name)}[\"']", source.read_text()):
                    wrong.append(f"{document.name}: `{command}`: {module} takes no {name!r}")
    assert not wrong, "\n".join(wrong)


def test_every_timing_the_docs_quote_is_one_results_records():
    """Figures are measured once and quoted from benchmarks/RESULTS.md, never typed twice differently."""
    results = (ROOT / "benchmarks/RESULTS.md").read_text()
    stray = []
    for document in DOCUMENTS:
        for figure in re.findall(r"(?<![\w.])(\d[\d,]*\.?\d*) ?(µs|ms|images/s)\b", document.read_text()):
            # The number as RESULTS.md writes it (its tables give the unit once, in the header).
            if not re.search(rf"(?<![\d.,]){re.escape(figure[0])}(?![\d])", results):
                stray.append(f"{document.name}: {figure[0]} {figure[1]}")
    assert not stray, "figures not in benchmarks/RESULTS.md: " + ", ".join(stray)


def make_placeholders(repo: Path) -> None:
    """A digit (from the raw data) and a photo of a dark digit on light paper, as the predict examples name them."""
    digit = np.asarray(Image.open(next((repo / "data/raw/7").glob("*.png"))))
    Image.fromarray(digit).save(repo / "digit.png")
    paper = np.clip(230 - digit.astype(np.int32) * 0.8, 0, 255).astype(np.uint8)
    photo = np.stack([paper, paper - 5, paper - 12], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(photo).resize((112, 112)).save(repo / "photo_of_a_digit.jpg")


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def runs_here(command: str) -> bool:
    """Whether CI runs the command as written (an unclassified one fails the classification test, not collection)."""
    try:
        return classify(command)[0] == RUN
    except LookupError:
        return False


RUNNABLE = [
    pytest.param(document, line, block, id=f"{document}:{line}")
    for document, line, block in BLOCKS
    if any(runs_here(command) for command in block)
]


@pytest.mark.e2e
@pytest.mark.parametrize("document, line, block", RUNNABLE)
def test_the_commands_of_a_block_run_as_written(reproduced_copy, document, line, block):
    """Each runnable command of the block, in order, in a copy of the reproduced repository, exits 0."""
    repo = reproduced_copy
    make_placeholders(repo)
    venv = Path(sys.executable).parent
    # .venv in the copy is this one: `make` finds its tools and its stamp, and installs nothing.
    (repo / ".venv").symlink_to(venv.parent, target_is_directory=True)
    environment = {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ['PATH']}"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    background = []
    try:
        for command in block:
            if not runs_here(command):
                continue
            if command.endswith("&"):
                process = subprocess.Popen(
                    ["bash", "-c", command.removesuffix("&").strip()],
                    cwd=repo,
                    env=environment,
                    start_new_session=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                background.append(process)
                port = int(re.search(r"SERVE_PORT=(\d+)", command).group(1)) if "SERVE_PORT=" in command else 5001
                wait_for_port(port, process)
                continue
            result = subprocess.run(
                ["bash", "-c", command], cwd=repo, env=environment, capture_output=True, text=True, timeout=300
            )
            assert result.returncode == 0, (
                f"{document}:{line}: {command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
            if command.startswith("curl "):
                assert result.stdout.startswith("{") and "predictions" in result.stdout, result.stdout[:500]
            if command.startswith("python -m pipelines.predict "):
                assert result.stdout.strip(), result.stderr[-2000:]  # one line per image
    finally:
        for process in background:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
