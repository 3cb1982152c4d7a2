"""The one reader of a user's documents (ingest, the schema command and predict) and the one tokenizer outside
TensorFlow: bytes to text, text to the tokens the model's TextVectorization sees. Reads nothing itself (the callers
pass bytes or text), writes nothing.

- encoding: UTF-8 (a byte-order mark dropped), UTF-16 with its byte-order mark; anything else is read as
  Windows-1252 and counted (`decode` says which it used);
- Unicode NFC, so an accented letter is one character whichever way the file wrote it;
- markup (`<br />`, `<i>`: tags of up to 100 characters) becomes a space where the schema says so
  (ingest.text.strip_markup);
- tokens: ASCII letters lowercased, ASCII punctuation removed, split on ASCII whitespace: Keras'
  `lower_and_strip_punctuation`, so the vocabulary shipped beside a TFLite model turns a text into the ids the
  SavedModel's own vectorizer gives.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".rst", ".csv", ".tsv", ".json", ".html", ".htm", ""})
MARKUP = re.compile(r"<[^<>]{1,100}>")
# Keras' DEFAULT_STRIP_REGEX (tf_keras TextVectorization's "lower_and_strip_punctuation"): what it removes.
PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
ENCODINGS = ("utf-8", "utf-16", "cp1252")


ASCII_WHITESPACE = " \t\n\r\f\v"
WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")  # what tf.strings.split splits on (ASCII whitespace only)
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")  # tf.strings.lower's


def decode(data: bytes) -> tuple[str, str]:
    """(the text, NFC, the encoding it was read as: utf-8, utf-16 or cp1252)."""
    if data.startswith(codecs.BOM_UTF8):
        text, encoding = data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), "utf-8"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text, encoding = data.decode("utf-16", errors="replace"), "utf-16"
    else:
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = data.decode("cp1252", errors="replace"), "cp1252"
    return unicodedata.normalize("NFC", text), encoding


def clean(text: str, strip_markup: bool) -> str:
    """The document as the model reads it: markup replaced by a space (when asked), surrounding ASCII whitespace
    stripped (only what the tokenizer splits on: a no-break space stays, as TextVectorization keeps it)."""
    return (MARKUP.sub(" ", text) if strip_markup else text).strip(ASCII_WHITESPACE)


def tokens(text: str) -> list[str]:
    """Keras' lower_and_strip_punctuation (tf.strings.lower lowercases ASCII letters only: É stays É), then
    tf.strings.split's whitespace split."""
    return [token for token in WHITESPACE.split(PUNCTUATION.sub("", text.translate(ASCII_LOWER))) if token]


def looks_like_text(data: bytes) -> bool:
    """A file's first bytes read as text (no NUL byte outside UTF-16, decodable): what tells a document from an
    image or a binary file in a folder."""
    head = data[:4096]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF8)):
        return True
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as error:
        return error.start >= len(head) - 3 or _mostly_printable(head.decode("cp1252", errors="replace"))


def _mostly_printable(text: str) -> bool:
    printable = sum(character.isprintable() or character.isspace() for character in text)
    return printable >= 0.95 * max(1, len(text))
