"""seq2seq: translate four English sentences to Korean with an encoder-decoder RNN
(T2 lab 12-5 and 12-7), with or without additive (Bahdanau) attention.

Words of both sides get sorted word vocabularies (`<pad>` = 0; the Korean one also has `<bos>`
and `<eos>`). Encoder: Embedding(32) -> GRU(32), its final state starts the decoder:
Embedding(32) -> GRU(32) -> Dense(softmax). Teacher forcing: the decoder reads
`<bos> 나는 배가 고프다` and learns to write `나는 배가 고프다 <eos>`. Adam 1e-3, 200 epochs,
full batch. Translation is greedy: write the most likely word until `<eos>`.
`--attention`: units 128, additive attention over the encoder outputs, 100 epochs, and a heat
map of the attention weights (PNG; Korean set in NanumGothic, the font the
`koreanize-matplotlib` package installs with the requirements).
`--export DIR`: the encoder and the decoder step to TFLite and ONNX, then the same four
sentences translated from those files alone (no TensorFlow), compared word for word.
`--save DIR`: each trained model as `DIR/<name>.keras`; the vocabularies travel inside it, so
`keras.saving.load_model` (after `import keras_rnn.seq2seq`) gives a model that translates,
shows its attention and exports (`export.seq2seq.export_translator`) with nothing else.

A word outside the English vocabulary is an error that names it (the vocabulary has no
`<unk>`: a translator that silently drops words would hide the problem).

Run:  python examples/seq2seq.py [--cell lstm] [--attention] [--export out/] [--save models/]
      [--plot-dir out/]
"""

import argparse
import io
from pathlib import Path

from export._files import write_atomic
from export.table import format_table
from keras_rnn import CELLS, datasets, save_model, seed_everything, train
from keras_rnn.seq2seq import attention_weights, build_seq2seq, translate, translation_data

## Setup
EMBEDDING_DIM = 32
UNITS = {False: 32, True: 128}
EPOCHS = {False: 200, True: 100}
LEARNING_RATE = 1e-3
SEED = 0
FONT_PACKAGE, FONT_FILE = "koreanize_matplotlib", "fonts/NanumGothic.ttf"


## Model and training
def run(cell: str, *, attention: bool = False, epochs: int | None = None,
        verbose: bool = True) -> dict:
    data = translation_data(datasets.TRANSLATION_PAIRS)
    seed_everything(SEED)
    model = build_seq2seq(cell, data, embedding_dim=EMBEDDING_DIM, units=UNITS[attention],
                          attention=attention)
    if verbose:
        model.summary()  # the layers and shapes the lecture shows
    real = data.decoder_targets != 0
    epochs = epochs or EPOCHS[attention]

    def report(step, loss, predictions):
        accuracy = float((predictions.argmax(-1) == data.decoder_targets)[real].mean())
        if verbose:
            print(f"{model.name:>24} epoch {step:3d}  loss {loss:.4f}  "
                  f"word accuracy (teacher forcing) {accuracy:.0%}")

    train(model, [data.source_ids, data.decoder_inputs], data.decoder_targets, epochs=epochs,
          learning_rate=LEARNING_RATE, report=report, report_every=epochs // 5)
    translations = {source: translate(model, source)
                    for source, _ in datasets.TRANSLATION_PAIRS}
    exact = sum(" ".join(translations[source]) == f"{target} <eos>"
                for source, target in datasets.TRANSLATION_PAIRS)
    if verbose:
        for source, words in translations.items():
            print(f"{model.name:>24} {source!r} -> {' '.join(words)}")
    return {"model": model, "data": data, "translations": translations, "exact": exact}


## The attention heat map
def hangul_font() -> Path:
    """NanumGothic from the `koreanize-matplotlib` package (found, not imported: importing it
    would change matplotlib's global settings)."""
    import importlib.util

    spec = importlib.util.find_spec(FONT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("The heat map needs a font with Hangul: pip install -r requirements.txt "
                         "(it installs koreanize-matplotlib, which ships NanumGothic).")
    return Path(next(iter(spec.submodule_search_locations))) / FONT_FILE


def plot_attention(weights, source_words, target_words, path) -> Path:
    """Saves the (target words, source words) weights as a heat map PNG; written in one go
    (rendered in memory, then renamed into place)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties

    font = FontProperties(fname=str(hangul_font()), size=11)
    figure, axes = plt.subplots(figsize=(1.2 * len(source_words) + 2, 0.6 * len(target_words) + 2))
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(source_words)), source_words, rotation=45, ha="right",
                    fontproperties=font)
    axes.set_yticks(range(len(target_words)), target_words, fontproperties=font)
    axes.set_xlabel("English (source)", fontproperties=font)
    axes.set_ylabel("한국어 (written)", fontproperties=font)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, buffer.getvalue())


def heat_map(result: dict, sentence: str, path) -> Path:
    """The heat map of what the attention model looked at while translating `sentence`."""
    data, words = result["data"], result["translations"][sentence]
    weights = attention_weights(result["model"], sentence, words[:-1])
    return plot_attention(weights, data.source.split(sentence), words, path)


## Decoding from the exported files
def decode_exported(result: dict, directory) -> list:
    """Exports encoder + decoder step to TFLite and ONNX, translates the lecture's sentences
    from the files alone, and returns rows (format, sentence, translation, equal to Keras)."""
    from export.runtime import Translator
    from export.seq2seq import export_translator

    name = result["model"].name
    Path(directory).mkdir(parents=True, exist_ok=True)
    rows = []
    for fmt in ("tflite", "onnx"):
        translator = Translator(*export_translator(result["model"],
                                                   Path(directory) / f"{name}.{fmt}"))
        for source, keras_words in result["translations"].items():
            words = translator.translate(source)
            rows.append((name, fmt, source, " ".join(words), words == keras_words))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=CELLS, help="one cell (default: all three)")
    parser.add_argument("--attention", action="store_true", help="additive attention + heat map")
    parser.add_argument("--export", metavar="DIR", help="export encoder and decoder step to "
                        "TFLite and ONNX in DIR and translate from the files")
    parser.add_argument("--save", metavar="DIR", help="save each trained model as DIR/NAME.keras")
    parser.add_argument("--plot-dir", default="out", help="where the attention heat maps go")
    parser.add_argument("--translate", metavar="SENTENCE", help="also translate this sentence")
    args = parser.parse_args()
    rows, exported = [], []
    for cell in [args.cell] if args.cell else CELLS:
        result = run(cell, attention=args.attention)
        if args.save:
            save_model(result["model"], args.save)
        first = datasets.TRANSLATION_PAIRS[0][0]
        plot = "-"
        if args.attention:
            plot = heat_map(result, datasets.TRANSLATION_PAIRS[2][0],
                            Path(args.plot_dir) / f"{result['model'].name}.png")
        rows.append((result["model"].name, EPOCHS[args.attention],
                     f"{result['exact']}/{len(datasets.TRANSLATION_PAIRS)}",
                     " ".join(result["translations"][first]), plot))
        if args.translate:
            try:
                print(f"{args.translate!r} -> "
                      f"{' '.join(translate(result['model'], args.translate))}")
            except ValueError as error:
                raise SystemExit(f"error: {error}") from None
        if args.export:
            exported += decode_exported(result, args.export)
    print()
    print(format_table(("model", "epochs", "exact translations", f"{first!r} ->", "heat map"),
                       rows))
    if exported:
        print("\nTranslated from the exported files alone (encoder + decoder step, no TensorFlow):")
        print(format_table(("model", "format", "English", "Korean", "same words as Keras"),
                           exported))
        if not all(row[-1] for row in exported):
            raise SystemExit(1)


if __name__ == "__main__":
    main()

# Expected output (seed 0, CPU): 4/4 exact translations for every cell, with and without
# --attention, e.g. 'I feel hungry' -> 나는 배가 고프다 <eos>; every exported translation is
# the same as Keras's, word for word.
