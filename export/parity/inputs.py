"""The inputs `verify` compares on: the user's own (in the file's batches), seeded held-out ones
of the model's kind, and padding at the start, end and middle of rows.
"""

from __future__ import annotations

import numpy as np


def format_row(exported):
    """The loaded file's row of the format table (`export.formats`)."""
    from export.formats import get_format

    return get_format(exported.format)


def vocabulary_size(model) -> int:
    """The smallest Embedding's vocabulary: ids drawn below it are valid for every input."""
    from export.model.layers import all_layers

    return min((layer.input_dim for layer in all_layers(model) if hasattr(layer, "input_dim")
                and type(layer).__name__ == "Embedding"), default=10)


def consecutive(case: dict, batch: int) -> list[dict]:
    """A stateful model's inputs as consecutive calls of its fixed batch size."""
    rows = len(next(iter(case.values())))
    if rows % batch:
        raise ValueError(
            f"inputs have {rows} rows; a stateful model runs batches of exactly {batch} rows: "
            f"give a multiple of {batch} (consecutive batches, compared call after call).")
    return [{name: value[start:start + batch] for name, value in case.items()}
            for start in range(0, rows, batch)]


def given_case(specs, inputs):
    """The user's inputs as a dict by input name (an array for one input; a list in input
    order or a dict for several), checked against the model's inputs."""
    if inputs is None:
        return None
    names = [name for name, _, _ in specs]
    if isinstance(inputs, dict):
        arrays = [inputs.get(name) for name in names]
    elif len(specs) > 1:
        arrays = list(inputs) if isinstance(inputs, (list, tuple)) else []
    else:
        arrays = [inputs]
    if len(arrays) != len(specs) or any(array is None for array in arrays):
        raise ValueError(f"inputs must give every model input {names}: a list in that order "
                         "or a dict by name.")
    case = {}
    for (name, shape, _), array in zip(specs, arrays):
        array = np.asarray(array)
        if array.ndim != len(shape):
            raise ValueError(f"inputs for {name!r} have shape {array.shape}; the model takes "
                             f"rank {len(shape)} input {shape}.")
        if array.size == 0:
            raise ValueError(f"inputs for {name!r} have shape {array.shape}, with an empty "
                             "axis: give at least one row of at least one step.")
        case[name] = array
    return case


def held_out_cases(model, specs, exported, given, seed: int, *, batch=None) -> list[dict]:
    from export.model.layers import all_layers

    rng = np.random.default_rng(seed)
    layers = list(all_layers(model))
    vocabulary = vocabulary_size(model)
    masking = [layer for layer in layers if type(layer).__name__ == "Masking"]
    masked = bool(masking) or any(getattr(layer, "mask_zero", False) for layer in layers)
    padding_value = masking[0].mask_value if masking else 0
    first_shape = exported.inputs[specs[0][0]][0]
    if format_row(exported).fixed_shape:
        batches = [first_shape[0] * 2, first_shape[0] * 3]
        lengths = [None, None]  # fixed in the file
    else:
        given_len = None
        if given is not None:
            given_len = next((a.shape[1] for a in given.values() if a.ndim > 1), None)
        batches, lengths = [1, 3, 5], [1, given_len or 7, 40]
    if batch is not None:  # a stateful model: three calls each, of the state's batch
        batches = [batch * 3] * len(batches)
    cases = []
    for batch, length in zip(batches, lengths):
        case, valid = {}, None
        for name, _, dtype in specs:
            file_shape = exported.inputs[name][0]
            shape = [batch] + [length if axis == 1 and size is None else (size or 8)
                               for axis, size in enumerate(file_shape[1:], start=1)]
            if dtype == "string":
                value = _strings(layers, shape, rng)
            elif np.dtype(dtype).kind in "iu":
                value = rng.integers(1, max(vocabulary, 2), shape).astype(dtype)
            elif given is not None and is_one_hot(given[name]):
                value = np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], shape[:-1])]
            else:
                value = rng.normal(size=shape).astype(np.float32)
            if masked and len(shape) > 1 and shape[1] > 1:
                if valid is None or valid.shape != tuple(shape[:2]):
                    valid = padding_patterns(shape[0], shape[1], rng)
                value[~valid] = (_string_padding(layers) if dtype == "string"
                                 else padding_value)
            case[name] = value
        cases.append(case)
    return cases


# tokens no vocabulary holds (one empty, one beyond ASCII), drawn beside the known ones
UNSEEN_TOKENS = ("", "never-seen", "\u00e9t\u00e9-\u4e2d")


def _strings(layers, shape, rng) -> np.ndarray:
    """Tokens for a string input: the StringLookup layers' vocabularies (their mask and
    out-of-vocabulary tokens too) and tokens none of them knows."""
    known = sorted({str(token) for layer in layers if type(layer).__name__ == "StringLookup"
                    for token in layer.get_vocabulary()})
    pool = np.array(known + list(UNSEEN_TOKENS), dtype=object)
    return pool[rng.integers(0, len(pool), shape)]


def _string_padding(layers) -> str:
    """The padding token of a masked string input: the lookup's mask token (which it maps to
    id 0), else a token it has never seen (which it maps to its first out-of-vocabulary id,
    0 when it has no mask token)."""
    lookups = [layer for layer in layers if type(layer).__name__ == "StringLookup"]
    mask = next((layer.mask_token for layer in lookups if layer.mask_token is not None), None)
    return mask if mask is not None else UNSEEN_TOKENS[1]


def is_one_hot(inputs) -> bool:
    """True for one-hot steps (a single 1, else 0; all-zero padding steps allowed)."""
    if not np.isin(inputs, (0, 1)).all():
        return False
    return bool(np.isin(inputs.sum(-1), (0, 1)).all())


PADDING_PATTERNS = ("none", "end", "start", "middle")


def padding_patterns(batch: int, length: int, rng, patterns=PADDING_PATTERNS) -> np.ndarray:
    """(batch, length) booleans, False = padding: row r takes `patterns[r % len(patterns)]`,
    padding at the end (`pad_sequences(padding="post")`), at the start (its default) or a
    third of the steps masked in the middle, with random lengths."""
    valid = np.ones((batch, length), bool)
    for row in range(batch):
        cut = int(rng.integers(1, length))
        pattern = patterns[row % len(patterns)]
        if pattern == "end":
            valid[row, cut:] = False
        elif pattern == "start":
            valid[row, :cut] = False
        elif pattern == "middle":
            valid[row, rng.choice(length, size=max(1, length // 3), replace=False)] = False
    return valid
