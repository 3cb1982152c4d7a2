"""The text kind's export. The SavedModel takes raw strings (its preprocessing strips markup and vectorizes, as at
training) and is registered as a python model that takes a DataFrame with a `text` column (or a list of strings).
A TFLite model holds no TextVectorization, so the variants are made of the model without its preprocessing: token ids
in (int32, the sequence models: an embedding, TFLite's fused LSTM, or a convolution) or a TF-IDF vector in (the
bag-of-n-grams model), and vocabulary.json ships beside them with what turns a text into those inputs
(tfpipe/text_encoding.py: the same tokens as Keras' TextVectorization). That decision keeps the full-integer
models free of TensorFlow's string ops (select TF ops would put the vectorizer in the file, but not in int8). The
pair is checked against the SavedModel on the test split: agreement of at least 99%.
Reads data/prepared and artifacts/train, writes nothing itself.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import tensorflow as tf

from components.export.examples import Examples
from components.export.prepared import Prepared
from components.export.serving import ExportCheckFailed
from components.export.table_serving import register_table_model
from models.loading import vector_model
from tfpipe import paths, tflite
from tfpipe.text_encoding import ENCODERS

VOCABULARY_FILE = "vocabulary.json"
MIN_AGREEMENT = 0.99


class TextServingModule(tf.Module):
    """`serve` (serving_default): text [N] strings -> probabilities, class ids and class names; the encoding (the
    vocabularies, what the model reads) rides along as a variable."""

    def __init__(self, model, encoding: dict):
        super().__init__(name="serving")
        self.model_variables = list(model.variables)
        # TextVectorization's vocabulary is a lookup table, a resource the SavedModel must hold: reached through the
        # model's submodules (the StringLookup inside TextVectorization), as a table's category lookups are.
        self.lookup_tables = [module.lookup_table for module in model.submodules if hasattr(module, "lookup_table")]
        self.encoding = tf.Variable(json.dumps(encoding, sort_keys=True), trainable=False, name="encoding")
        self.class_names = tf.Variable(encoding["class_names"], trainable=False, name="class_names")

        def serve(text):
            probabilities = model(text, training=False)
            class_ids = tf.argmax(probabilities, axis=-1)
            return {
                "probabilities": probabilities,
                "class_ids": class_ids,
                "class_names": tf.gather(self.class_names, class_ids),
            }

        self.serve = tf.function(serve, input_signature=[tf.TensorSpec([None], tf.string, name="text")])


def check_serving_parity(saved_model_dir, model, texts: np.ndarray, tolerance: float = 1e-4) -> float:
    serving = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    served = np.concatenate(
        [
            serving(text=tf.constant(texts[start : start + 512]))["probabilities"].numpy()
            for start in range(0, len(texts), 512)
        ]
    )
    difference = float(np.max(np.abs(served - model.predict(texts, batch_size=512, verbose=0))))
    if difference > tolerance:
        raise ExportCheckFailed(
            f"{saved_model_dir}: serving_default differs from the trained model by {difference:.2e}"
        )
    return difference


def pair_check(model, texts: np.ndarray):
    """The float32 TFLite file with vocabulary.json (as shipped) against the trained model on the test documents."""
    expected = model.predict(texts, batch_size=512, verbose=0).argmax(axis=1)

    def check(files: dict[str, bytes]) -> dict:
        if "model_float32.tflite" not in files:
            return {}
        shipped = json.loads(files[VOCABULARY_FILE])
        inputs = ENCODERS[shipped["text_input"]](list(texts), shipped)
        outputs = tflite.TFLiteClassifier(files["model_float32.tflite"]).predict(inputs, 256)
        agreement = float(np.mean(outputs.argmax(axis=1) == expected))
        if agreement < MIN_AGREEMENT:
            raise ExportCheckFailed(
                f"model_float32.tflite with {VOCABULARY_FILE} agrees with the SavedModel on {agreement:.4f} of the "
                f"test documents, below {MIN_AGREEMENT}"
            )
        return {"agreement": agreement}

    return check


def card_inputs(encoding: dict) -> tuple[str, ...]:
    what = (
        f"token ids (int32, {encoding['sequence']['length']} a document, padded with 0)"
        if encoding["text_input"] == "sequence"
        else f"a TF-IDF vector of {len(encoding['bag']['vocabulary']) + 1:,} words and word pairs"
    )
    return (
        "- Input: a document as text (the SavedModel's `serving_default` takes strings; markup "
        + ("stripped" if encoding["strip_markup"] else "kept")
        + f", lowercased, punctuation removed, a vocabulary of {len(encoding['sequence']['vocabulary']):,} tokens). "
        f"The registered model takes a DataFrame with a `text` column; the TFLite models take {what}, which "
        f"{VOCABULARY_FILE} beside them makes of a text",
        "- Output: a probability for each class, in the order of `labels.txt`",
    )


def prepare(model, description: dict, manifest: dict) -> Prepared:
    statistics = description["text"]
    text_input = description["text_input"]
    encoding = {
        **statistics,
        "kind": "text",
        "task": "classification",
        "text_input": text_input,
        "class_names": manifest["class_names"],
    }
    encode = ENCODERS[text_input]
    train = pd.read_parquet(paths.PREPARED / manifest["splits"]["train"]["file"])
    test = pd.read_parquet(paths.PREPARED / manifest["splits"]["test"]["file"])
    texts = test["text"].to_numpy(dtype=object)
    files = {
        VOCABULARY_FILE: (json.dumps(encoding, indent=2, sort_keys=True) + "\n").encode(),
        tflite.LABELS_FILE: "".join(f"{name}\n" for name in manifest["class_names"]).encode(),
    }
    module = TextServingModule(model, encoding)
    return Prepared(
        task="classification",
        deployable=vector_model(model, description["model"]),
        classifier=description["model"],
        train=Examples.from_arrays(encode(train["text"].tolist(), statistics), train["label"].to_numpy(np.int64)),
        test=(encode(list(texts), statistics), test["label"].to_numpy(np.int64)),
        files=files,
        module=module,
        check_parity=lambda saved_model: check_serving_parity(saved_model, model, texts),
        register=lambda saved_model, name, tags: register_table_model(
            saved_model, encoding, model_name=name, example=pd.DataFrame({"text": texts[:2]}), tags=tags
        ),
        check_pair=pair_check(model, texts),
        card_inputs=card_inputs(encoding),
        unit="documents",
    )
