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


__all__ = ["vocabulary_metadata"]
