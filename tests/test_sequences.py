"""The later lectures: padding and masking, part-of-speech tagging (also bidirectional), and
seq2seq translation with and without attention, decoded from the exported files."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import CELLS, ONNX_RUNTIMES, first_fast

from keras_rnn import datasets

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("tflite", "onnx")


# -- padding and masking ------------------------------------------------------------------------

@pytest.mark.parametrize("cell", first_fast(CELLS))
def test_masked_batch_gives_each_word_its_own_output(tmp_path, cell):
    import padding

    from export.pipeline import export_and_verify

    result = padding.run(cell, verbose=False)
    assert result["lengths"] == [11, 8, 11, 4, 13]
    for row in result["rows"]:
        assert row["masked, last real step"] < 1e-6, row
        assert row["masked, last padded step"] < 1e-6, row
        if row["length"] < 13:  # without the mask the padding steps change the output
            assert row["unmasked, last padded step"] > 1e-2, row
    for _, report in export_and_verify(result["model"], tmp_path, cell, inputs=result["x"],
                                       batch_size=5):
        assert report.passed, str(report)
        assert report.cases[0] == result["x"].shape  # checked on the padded batch itself


# -- part-of-speech tagging ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pos_results():
    import pos_tagging

    return {(cell, bidirectional): pos_tagging.run(cell, bidirectional=bidirectional,
                                                   verbose=False)
            for cell in CELLS for bidirectional in (False, True)}


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_every_tag_correct(pos_results, cell, bidirectional):
    result = pos_results[cell, bidirectional]
    assert result["total"] == sum(len(tags.split()) for tags in datasets.POS_TAGS)
    assert result["predicted"] == list(datasets.POS_TAGS)


def test_tagging_loss_skips_the_padding(pos_results):
    """The loss Keras trains on is the cross-entropy of the real words only."""
    result = pos_results["gru", False]
    model, x = result["model"], result["x"]
    y = result["tags"].encode_batch(datasets.POS_TAGS, length=datasets.POS_LENGTH)
    probabilities = np.asarray(model(x))
    picked = np.take_along_axis(probabilities, y[..., None], -1)[..., 0]
    real = x != 0
    masked_mean = float(-np.log(picked[real]).mean())
    everything_mean = float(-np.log(picked).mean())
    keras_loss = model.evaluate(x, y, verbose=0)[0]
    # Absolute, not relative: the loss is about 2e-4, -log(p) of probabilities near 0.9998.
    # float32 resolves such a p only to about 6e-8, which is already 3e-4 of the loss, so a
    # relative bound of 1e-4 sits below float32 resolution. 1e-6 (about 16 float32 steps of p)
    # is 1000x smaller than what the padding changes (next line: over 1e-3).
    assert keras_loss == pytest.approx(masked_mean, abs=1e-6)
    assert abs(everything_mean - masked_mean) > 1e-3  # the padding would have changed it


@pytest.mark.parametrize("bidirectional", [False, True])
def test_taggers_export_and_verify(tmp_path, pos_results, bidirectional):
    from lecture import export_lecture_model

    from export.runtime import load
    from keras_rnn.vocab import Vocabulary

    result = pos_results["lstm", bidirectional]
    rows = export_lecture_model(result, tmp_path, "pos", tags=result["tags"].to_json())
    assert [report.passed for _, report in rows] == [True, True], [str(r) for _, r in rows]
    # a device decodes tags from the file alone
    exported = load(tmp_path / "pos.onnx")
    tags = Vocabulary.from_json(exported.metadata["tags"])
    predicted = exported.run(result["x"]).argmax(-1)
    first = tags.decode(predicted[0][:3], strip_special=False)
    assert first == datasets.POS_TAGS[0]


# -- seq2seq ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def translators():
    import seq2seq

    return {(cell, attention): seq2seq.run(cell, attention=attention, verbose=False)
            for cell in CELLS for attention in (False, True)}


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_all_four_pairs_translated_exactly(translators, cell, attention):
    result = translators[cell, attention]
    for source, target in datasets.TRANSLATION_PAIRS:
        assert result["translations"][source] == target.split() + ["<eos>"], source
    assert result["exact"] == 4


# Sentences the model never saw, made of words it knows: the exported decoders must follow
# Keras's greedy choices there too, not only on the memorised pairs.
NEW_SENTENCES = ("I feel difficult", "tensorflow is hungry", "tensorflow is very",
                 "deep learning is a framework for I")


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_exported_decoders_write_keras_words(tmp_path, translators, cell, attention):
    from export.runtime import Translator, operator_names
    from export.seq2seq import export_translator
    from keras_rnn.seq2seq import attention_weights, translate

    result = translators[cell, attention]
    model = result["model"]
    paths = [path for fmt in FORMATS for path in export_translator(model, tmp_path / f"t.{fmt}")]
    assert sorted(p.name for p in paths) == sorted(
        f"t.{part}.{fmt}" for part in ("encoder", "decoder") for fmt in FORMATS)
    for path in paths:
        if path.suffix == ".tflite":
            assert not any(n.startswith("custom:") for n in operator_names(path.read_bytes()))
    sentences = [source for source, _ in datasets.TRANSLATION_PAIRS] + list(NEW_SENTENCES)
    for fmt, runtime in [("tflite", None), *(("onnx", name) for name in ONNX_RUNTIMES)]:
        translator = Translator(tmp_path / f"t.encoder.{fmt}", tmp_path / f"t.decoder.{fmt}",
                                runtime=runtime)
        for sentence in sentences:
            expected = translate(model, sentence)
            assert translator.translate(sentence) == expected, (runtime or fmt, sentence)
            if attention:  # and it looked where Keras looked
                keras_weights = attention_weights(model, sentence, expected[:-1])
                words = keras_weights.shape[1]  # a TFLite encoder pads to 7: no weight there
                np.testing.assert_allclose(translator.attention[:, :words],
                                           keras_weights[:len(translator.attention)],
                                           atol=1e-5, err_msg=f"{runtime} {sentence!r}")
                assert not translator.attention[:, words:].any()


def test_translator_export_refusals(tmp_path, translators):
    import keras

    from export.seq2seq import export_translator
    from keras_rnn.seq2seq import translate
    from keras_rnn.structure import UnsupportedModelError

    model = translators["gru", False]["model"]
    with pytest.raises(ValueError, match="must end in .tflite or .onnx"):
        export_translator(model, tmp_path / "t.keras")
    # a seq2seq-shaped model without vocabularies (plain Embedding layers): named, not guessed
    plain = keras.models.clone_model(model, clone_function=lambda layer: (
        keras.layers.Embedding(layer.input_dim, layer.output_dim, mask_zero=True, name=layer.name)
        if "embedding" in layer.name else layer.__class__.from_config(layer.get_config())))
    with pytest.raises(UnsupportedModelError, match="carries no vocabularies"):
        export_translator(plain, tmp_path / "t.onnx")
    with pytest.raises(ValueError, match="carries no vocabularies"):
        translate(plain, "I feel hungry")
    assert not list(tmp_path.iterdir())


def test_unknown_words_are_named(tmp_path, translators):
    from export.runtime import Translator
    from export.seq2seq import export_translator
    from keras_rnn.seq2seq import translate

    result = translators["gru", True]
    with pytest.raises(ValueError, match=r"Unknown symbol 'sad'"):
        translate(result["model"], "I feel sad")
    for fmt in FORMATS:
        export_translator(result["model"], tmp_path / f"t.{fmt}")
    for fmt in FORMATS:
        translator = Translator(tmp_path / f"t.encoder.{fmt}", tmp_path / f"t.decoder.{fmt}")
        with pytest.raises(ValueError, match=r"Unknown symbol 'sad'"):
            translator.translate("I feel sad")
    tflite = Translator(tmp_path / "t.encoder.tflite", tmp_path / "t.decoder.tflite")
    with pytest.raises(ValueError, match=r"takes at most 7 source words; .* has 8"):
        tflite.translate("tensorflow is a framework for deep learning I")


def test_attention_heat_map_sets_korean_in_a_hangul_font(tmp_path, translators):
    import warnings

    import seq2seq
    from matplotlib.ft2font import FT2Font

    result = translators["gru", True]
    sentence = datasets.TRANSLATION_PAIRS[0][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font"
        path = seq2seq.heat_map(result, sentence, tmp_path / "attention.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    font = seq2seq.hangul_font()
    covered = FT2Font(str(font)).get_charmap()
    written = "".join(result["translations"][sentence])
    assert all(ord(ch) in covered for ch in written if not ch.isascii()), written


TRANSLATE_SCRIPT = """
import sys
from export.runtime import Translator
translator = Translator(sys.argv[1], sys.argv[2])
print(" ".join(translator.translate(sys.argv[3])))
print("tensorflow" in sys.modules)
"""


def test_translation_runs_without_tensorflow(tmp_path, translators):
    from export.seq2seq import export_translator

    result = translators["lstm", False]
    export_translator(result["model"], tmp_path / "t.tflite")
    sentence = datasets.TRANSLATION_PAIRS[1][0]
    completed = subprocess.run(
        [sys.executable, "-c", TRANSLATE_SCRIPT, str(tmp_path / "t.encoder.tflite"),
         str(tmp_path / "t.decoder.tflite"), sentence],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert completed.returncode == 0, completed.stderr
    text, tensorflow_loaded = completed.stdout.rstrip("\n").split("\n")
    assert tensorflow_loaded == "False"
    assert text.split() == result["translations"][sentence]


LOAD_AND_EXPORT_SCRIPT = """
import sys
import keras
import numpy as np
import keras_rnn.seq2seq  # registers VocabularyEmbedding for load_model
from export.runtime import Translator
from export.seq2seq import export_translator
from keras_rnn.seq2seq import attention_weights, translate
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[2] + "/probabilities.npy", np.asarray(model([np.load(sys.argv[2] + "/s.npy"),
        np.load(sys.argv[2] + "/d.npy")], training=False)))
words = translate(model, sys.argv[3])
np.save(sys.argv[2] + "/attention.npy", attention_weights(model, sys.argv[3], words[:-1]))
for fmt in ("tflite", "onnx"):
    translator = Translator(*export_translator(model, sys.argv[2] + "/t." + fmt))
    print(fmt, " ".join(translator.translate(sys.argv[3])))
print("keras", " ".join(words))
"""


def test_a_saved_translator_translates_and_exports_from_the_file_alone(tmp_path, translators):
    """`.keras` round trip in a fresh process with no TranslationData: identical outputs and
    attention weights, and both exports translate as the trained model does."""
    from keras_rnn.seq2seq import attention_weights, translate

    result = translators["lstm", True]
    model, data = result["model"], result["data"]
    model.save(tmp_path / "t.keras")
    np.save(tmp_path / "s.npy", data.source_ids)
    np.save(tmp_path / "d.npy", data.decoder_inputs)
    sentence = NEW_SENTENCES[0]
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_AND_EXPORT_SCRIPT, str(tmp_path / "t.keras"), str(tmp_path),
         sentence], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert completed.returncode == 0, completed.stderr
    expected = " ".join(translate(model, sentence))
    assert completed.stdout.split("\n")[:3] == [f"tflite {expected}", f"onnx {expected}",
                                                f"keras {expected}"], completed.stdout
    np.testing.assert_array_equal(  # the same weights, the same graph: bit for bit
        np.load(tmp_path / "probabilities.npy"),
        np.asarray(model([data.source_ids, data.decoder_inputs], training=False)))
    np.testing.assert_array_equal(np.load(tmp_path / "attention.npy"), attention_weights(
        model, sentence, translate(model, sentence)[:-1]))


@pytest.mark.parametrize("key, value, message", [
    ("max_length", "100000000", "'max_length' is 100000000; expected 1 to 1000"),
    ("vocabulary", '{"level": "word"}', "'vocabulary': .*needs 'symbols'"),
    ("source_vocabulary", "[]", "'source_vocabulary': .*must be an object"),
])
def test_a_translator_file_with_bad_metadata_is_refused(tmp_path, translators, key, value,
                                                        message):
    """A decoder written by someone else: bounded and validated, a ModelFileError naming the
    file and the field (an unbounded max_length would make translate() run for minutes)."""
    import onnx

    from export.runtime import ModelFileError, Translator
    from export.seq2seq import export_translator

    result = translators["gru", False]
    export_translator(result["model"], tmp_path / "t.onnx")
    decoder = tmp_path / "t.decoder.onnx"
    proto = onnx.load(decoder)
    for entry in proto.metadata_props:
        if entry.key == key:
            entry.value = value
    onnx.save(proto, decoder)
    with pytest.raises(ModelFileError, match=message) as raised:
        Translator(tmp_path / "t.encoder.onnx", decoder)
    assert "t.decoder.onnx" in str(raised.value)
