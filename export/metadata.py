"""What travels inside an exported file so a device can decode its outputs without the
training code: the vocabulary (symbols in id order, pad/bos/eos ids) as JSON."""

from __future__ import annotations


def vocabulary_metadata(vocabulary, **extra) -> dict:
    """Metadata entries for `export_tflite(..., metadata=)` / `export_onnx(..., metadata=)`.

    Args:
        vocabulary: a `keras_rnn.Vocabulary` (or None for models without one).
        **extra: more string entries, e.g. `task="hihello"`.
    """
    entries = {key: str(value) for key, value in extra.items()}
    if vocabulary is not None:
        entries["vocabulary"] = vocabulary.to_json()
    return entries


def vocabulary_from_metadata(metadata: dict):
    """The `keras_rnn.Vocabulary` stored in exported metadata, or None."""
    from keras_rnn.vocab import Vocabulary

    text = metadata.get("vocabulary")
    return Vocabulary.from_json(text) if text else None


__all__ = ["vocabulary_metadata", "vocabulary_from_metadata"]
