"""A table's reader, schema inference, ingest checks and preprocessing (tfpipe/tables.py, pipelines/table_schema.py,
components/ingest/kinds/table*.py, models/table_preprocessing.py) on small tables of our own making."""

from __future__ import annotations

import datetime
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.ingest import stage as ingest
from pipelines import schema
from pipelines.table_schema import infer_column, propose_table
from tests.tables import messy_table, write_table
from tfpipe import kinds
from tfpipe.tables import ROW, TableFile, TableReadError, parse_dates, parse_numbers

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A repo-like folder: the repository's params.yaml and data/raw holding one messy table; the working directory."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    write_table(messy_table(), tmp_path / "data/raw/customers.csv")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def infer(target: str = "churn") -> str:
    from tfpipe.params_file import update_params_file

    update_params_file({"data": {"target": target}}, "params.yaml")
    schema.main([])
    return Path("params.yaml").read_text()


def fail_ingest(capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        ingest.main()
    assert exit_info.value.code == 1
    return capsys.readouterr().err


# --- The reader ------------------------------------------------------------------------------------------------


def test_every_format_reads_the_same_cells(tmp_path):
    frame = pd.DataFrame({"a": ["1", "2.5", ""], "b": ["x", "NA", "z"], "when": ["2024-01-02", "", "2024-03-04"]})
    csv = frame.to_csv(index=False, lineterminator="\n")
    (tmp_path / "t.csv").write_text(csv)
    (tmp_path / "t.tsv").write_text(frame.to_csv(index=False, sep="\t", lineterminator="\n"))
    (tmp_path / "semicolons.csv").write_text(frame.to_csv(index=False, sep=";", lineterminator="\n"))
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(csv.encode()))
    (tmp_path / "t.csv.utf16.csv").write_bytes(csv.encode("utf-16"))
    (tmp_path / "latin.csv").write_bytes(csv.replace("x", "é").encode("cp1252"))
    frame.replace("", None).to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    frame.replace("", None).to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.tsv", "semicolons.csv", "t.csv.gz", "t.csv.utf16.csv", "t.jsonl", "t.parquet"):
        read = TableFile.open(tmp_path / name).read()
        assert list(read.columns) == [ROW, "a", "b", "when"], name
        assert read[ROW].tolist() == [1, 2, 3]
        numbers, bad = parse_numbers(read["a"])
        assert numbers.tolist()[:2] == [1.0, 2.5] and np.isnan(numbers[2]) and not bad.any(), name
        dates, bad = parse_dates(read["when"], None)
        assert dates[0] == pd.Timestamp("2024-01-02") and pd.isna(dates[1]) and not bad.any(), name
    latin = TableFile.open(tmp_path / "latin.csv")
    assert latin.encoding == "cp1252" and "Windows-1252" in latin.describe() and latin.read()["b"][0] == "é"


def test_an_empty_file_or_one_without_rows_says_so(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(TableReadError, match="empty.csv: the file is empty"):
        TableFile.open(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    assert TableFile.open(tmp_path / "header.csv").read().columns.tolist() == [ROW, "a", "b"]
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(TableReadError, match="ragged.csv: cannot be read as CSV"):
        TableFile.open(tmp_path / "ragged.csv").read()


def test_numbers_and_dates_parse_by_pattern_and_the_rest_is_named():
    numbers, bad = parse_numbers(pd.Series([" 7 ", "1e3", "-.5", "inf", "1,000", "abc", None], dtype="str"))
    assert numbers.tolist()[:3] == [7.0, 1000.0, -0.5] and bad.tolist() == [False] * 3 + [True] * 3 + [False]
    dates, bad = parse_dates(pd.Series(["2024-02-29", "2021-02-30", "2019", "03/04/2021"], dtype="str"), None)
    assert dates[0] == pd.Timestamp("2024-02-29") and bad.tolist() == [False, True, True, True]
    dates, bad = parse_dates(pd.Series(["03/04/2021", "31/12/2020"], dtype="str"), "%d/%m/%Y")
    assert dates.tolist() == [pd.Timestamp("2021-04-03"), pd.Timestamp("2020-12-31")] and not bad.any()


def test_the_kind_is_recognized_from_data_raw(tmp_path):
    write_table(messy_table(60), tmp_path / "one/t.csv")
    (tmp_path / "images/cat").mkdir(parents=True)
    write_table(messy_table(60), tmp_path / "two/a.csv")
    write_table(messy_table(60), tmp_path / "two/b.csv")
    assert kinds.recognize(tmp_path / "one") == "table" and kinds.recognize(tmp_path / "images") == "image"
    with pytest.raises(kinds.UnknownKind, match="holds a.csv, b.csv: no kind of data tfpipe reads"):
        kinds.recognize(tmp_path / "two")


# --- Schema inference ------------------------------------------------------------------------------------------


def test_the_schema_names_each_columns_type_and_role():
    proposal, notes = propose_table(messy_table(), "churn")
    columns = proposal["ingest"]["table"]["columns"]
    assert columns["customer_id"] == {"type": "id", "role": "ignored"}
    assert columns["signup"]["type"] == "date" and columns["signup"]["format"] == "%d/%m/%Y"
    assert columns["age"]["type"] == "numeric" and columns["age"]["missing_values"] == ["unknown"]
    assert columns["income"]["type"] == "numeric" and columns["income"]["min"] == 0.0
    assert columns["plan"] == {
        "type": "categorical",
        "categories": ["basic", "enterprise", "pro"],
        "max_missing": 0.058,
    }
    assert columns["active"]["type"] == "boolean" and columns["region"]["role"] == "ignored"
    assert columns["notes"] == {"type": "text", "role": "ignored"}
    assert proposal["data"] == {"target": "churn", "task": "classification", "kind": "auto"}
    assert any("customer_id" in note and "never a feature" in note for note in notes)
    assert any("region" in note and "every row" in note for note in notes)


def test_the_target_decides_the_task_and_without_one_the_last_column_is_proposed():
    assert infer_column("y", pd.Series(["3", "4", "5", "4"] * 20), is_target=True)[0]["type"] == "categorical"
    assert infer_column("y", pd.Series(np.linspace(0, 1, 80).astype(str)), is_target=True)[0]["type"] == "numeric"
    proposal, notes = propose_table(messy_table(task="regression"), None)
    assert proposal["data"]["target"] == "spend" and proposal["data"]["task"] == "regression"
    assert any("the last column, 'spend'" in note for note in notes)


# --- Ingest ----------------------------------------------------------------------------------------------------


def test_a_messy_table_passes_first_time_with_what_ingest_did_said(project, capsys):
    infer()
    ingest.main()
    printed = capsys.readouterr().out
    summary = json.loads(Path("reports/ingest/summary.json").read_text())
    assert summary["missing_target"]["count"] == 2 and summary["duplicates"]["copies_dropped"] == 1
    assert summary["same_features"]["conflicting_rows"] == 2 and "row 240 = row 41" in summary["duplicates"]["rows"]
    assert "2 row(s) without a target dropped" in printed and "1 identical row(s) kept once" in printed
    manifest = json.loads(Path("data/prepared/manifest.json").read_text())
    assert [feature["column"] for feature in manifest["features"]] == ["signup", "age", "income", "plan", "active"]
    assert sum(split["count"] for split in manifest["splits"].values()) == 241 - 2 - 1  # rows, without a target, copies
    train = pd.read_parquet("data/prepared/train.parquet")
    assert train["signup"].str.fullmatch(r"\d{4}-\d{2}-\d{2}T00:00:00|").all()  # ISO, or empty
    assert Path("reports/ingest/data_docs/index.html").is_file()
    headline = json.loads(Path("metrics/ingest.json").read_text())
    assert headline == {"rows": summary["splits"], "classes": 2, "copies_dropped": 1, "missing_target": 2}


def broken_tables():
    """(what breaks the table, the sentence ingest says about it)."""

    def cell(column, row, value):
        def change(frame):
            frame.loc[row - 1, column] = value
            return frame

        return change

    def one_class(frame):
        frame["churn"] = frame["churn"].where(frame["churn"] == "", "yes")
        return frame

    return [
        (cell("age", 50, "forty"), "column 'age' holds 1 cell(s) that are not numbers: row 50 ('forty')"),
        (cell("plan", 60, "platinum"), "column 'plan' holds a category never seen in 1 row(s): row 60 ('platinum')"),
        (cell("signup", 70, "2021-13-45"), "column 'signup' holds 1 cell(s) that are not dates in the format"),
        (lambda frame: frame.drop(columns="income"), "missing ['income'] (in ingest.table.columns)"),
        (lambda frame: frame.assign(extra="1"), "added ['extra'] (not in ingest.table.columns)"),
        (one_class, "the target 'churn' holds one value in every row (1 distinct): nothing to learn"),
        (lambda frame: frame.assign(age="33"), "column 'age' holds one value in every row"),
        (lambda frame: frame.iloc[:0], "0 row(s) left with a target"),
    ]


@pytest.mark.parametrize("change, sentence", broken_tables(), ids=lambda value: str(value)[:30])
def test_a_broken_table_fails_with_a_sentence_and_leaves_the_prepared_data(project, capsys, change, sentence):
    infer()
    ingest.main()
    before = Path("data/prepared/manifest.json").read_text()
    write_table(change(messy_table()), project / "data/raw/customers.csv")
    error = fail_ingest(capsys)
    assert sentence in error, error
    assert "data_docs/index.html" in error and Path("data/prepared/manifest.json").read_text() == before


def test_an_empty_file_and_a_missing_schema_are_refused_by_name(project, capsys):
    error = fail_ingest(capsys)  # the repository's params: no table schema yet
    assert "customers.csv is a table, but params.yaml has no schema for it" in error and "pipelines.schema" in error
    infer()
    (project / "data/raw/customers.csv").write_bytes(b"")
    assert "customers.csv: the file is empty" in fail_ingest(capsys)


# --- Preprocessing inside the model ----------------------------------------------------------------------------


def test_the_keras_preprocessing_and_its_numpy_twin_give_the_same_features(project):
    from components.ingest.kinds.table import prepared_split
    from components.preprocess.kinds.table import analyze
    from models.table_preprocessing import build_table_preprocessor
    from tfpipe.table_encoding import encode, feed

    infer()
    ingest.main()
    manifest = json.loads(Path("data/prepared/manifest.json").read_text())
    train = pd.read_parquet("data/prepared/train.parquet")
    statistics = analyze(train, manifest)
    assert statistics["layout"]["indicators"] >= 2  # age and income had empty cells
    test = pd.read_parquet("data/prepared/test.parquet")
    test.loc[0, "plan"] = "platinum"  # out of vocabulary: its own slot
    test.loc[1, "signup"] = ""  # a missing date
    inputs = feed(test, statistics)
    keras_features = build_table_preprocessor(statistics).predict(inputs, verbose=0)
    np.testing.assert_allclose(keras_features, encode(inputs, statistics), rtol=1e-5, atol=1e-5)
    assert prepared_split  # the split writer is what ingest used


def test_date_parts_match_the_calendar():
    from tfpipe.table_encoding import date_fields

    days = [datetime.date(1899, 12, 31) + datetime.timedelta(days=step) for step in range(0, 80_000, 997)]
    valid, year, month, day, weekday, _ = date_fields(np.array([d.isoformat() for d in days], dtype=object))
    assert valid.all() and year.tolist() == [d.year for d in days] and month.tolist() == [d.month for d in days]
    assert weekday.tolist() == [d.isoweekday() % 7 for d in days] and day.tolist() == [d.day for d in days]
