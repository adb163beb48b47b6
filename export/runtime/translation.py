"""Greedy translation from an exported seq2seq encoder and decoder step
(`export.seq2seq.export_translator`)."""

from __future__ import annotations

import numpy as np

from export.runtime.checks import ModelFileError
from export.runtime.generation import StepModel
from export.runtime.loaders import load
from export.runtime.metadata import (
    MAIN_OUTPUT,
    MAX_TRANSLATION_LENGTH,
    check_vocabulary_size,
    metadata_int,
    vocabulary_field,
)


class Translator:
    """Greedy translation from an exported seq2seq encoder and decoder step
    (`export.seq2seq.export_translator`), without TensorFlow."""

    ENCODER_TENSORS = ("encoder_outputs", "encoder_keys", "source_mask")

    def __init__(self, encoder_path, decoder_path, *, num_threads: int = 1, trusted: bool = False,
                 runtime: str | None = None):
        self.encoder = load(encoder_path, num_threads=num_threads, trusted=trusted,
                            runtime=runtime)
        self.decoder = StepModel(decoder_path, num_threads=num_threads, trusted=trusted,
                                 runtime=runtime)
        metadata = self.decoder.metadata
        if "source_vocabulary" not in metadata or "vocabulary" not in metadata:
            raise ModelFileError(
                f"{str(self.decoder.path)!r} carries no vocabularies: write the files with "
                "export.seq2seq.export_translator."
            )
        self.source = vocabulary_field(metadata, "source_vocabulary", self.decoder.path)
        self.target = vocabulary_field(metadata, "vocabulary", self.decoder.path)
        self.max_length = metadata_int(metadata, "max_length", 20, self.decoder.path,
                                       low=1, high=MAX_TRANSLATION_LENGTH)
        check_vocabulary_size(self.decoder.model, MAIN_OUTPUT, self.target, "vocabulary")
        finals = [f"final_{name}" for name in self.decoder.state_names]
        # one (batch, words) input: "inputs" (files before: "source")
        names = list(self.encoder.inputs)
        if (len(names) != 1 or len(self.encoder.inputs[names[0]][0]) != 2
                or not set(finals) <= set(self.encoder.output_names)):
            raise ModelFileError(
                f"{str(self.encoder.path)!r} is not a seq2seq encoder for this decoder (it needs "
                f"one (batch, words) input and the outputs {finals}).")
        self.source_name = names[0]
        self.source_len = self.encoder.inputs[self.source_name][0][1]  # None: any length (ONNX)
        self.attention = None  # (written words, source words) weights of the last call

    def translate(self, sentence: str, *, max_length: int | None = None) -> list[str]:
        """The target words, `<eos>` included when the model wrote it.

        Raises:
            ValueError: for a word outside the source vocabulary (naming it), or a sentence
                longer than a fixed-length (TFLite) encoder takes.
        """
        ids = [int(i) for i in self.source.encode(sentence)]
        if self.source_len is not None:
            if len(ids) > self.source_len:
                raise ValueError(
                    f"{self.encoder.path.name} takes at most {self.source_len} source words; "
                    f"{sentence!r} has {len(ids)}. Re-export with a larger source_len."
                )
            ids += [self.source.pad_id] * (self.source_len - len(ids))
        encoded = self.encoder.run_named({self.source_name: np.asarray([ids], np.int32)})
        state = [encoded[f"final_{name}"] for name in self.decoder.state_names]
        extra = {name: encoded[name] for name in self.ENCODER_TENSORS
                 if name in self.decoder.model.inputs}
        token, words, weights = self.target.bos_id, [], []
        for _ in range(max_length or self.max_length):
            probabilities, state = self.decoder.step(
                np.asarray([token], np.int32), state, extra=extra, check=False)
            token = int(probabilities[0].argmax())
            if token >= len(self.target.symbols):
                raise ModelFileError(
                    f"{str(self.decoder.path)!r} wrote id {token}, outside its vocabulary of "
                    f"{len(self.target.symbols)} symbols: the file and its vocabulary do not "
                    "belong together.")
            words.append(self.target.symbols[token])
            if "attention_weights" in self.decoder.last_results:
                weights.append(self.decoder.last_results["attention_weights"][0])
            if token == self.target.eos_id:
                break
        self.attention = np.asarray(weights) if weights else None
        return words
