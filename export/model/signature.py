"""The exported file's signature and the traced function behind it: input and output names,
shapes and dtypes, the model traced and frozen on them, the Keras model run on named inputs,
and the checks every export path makes first (`check_exportable`).
"""

from __future__ import annotations

import numpy as np

from export.model.layers import all_layers, describe_recurrent
from export.model.state import state_layout
from export.runtime import MAIN_INPUT, MAIN_OUTPUT, state_input_name
from keras_rnn.structure import (
    UnsupportedModelError,
    model_inputs_outputs,
)

# a model with one input and one output keeps the runtime's default names
SINGLE_INPUT_NAME, SINGLE_OUTPUT_NAME = MAIN_INPUT, MAIN_OUTPUT


def check_exportable(model, *, carried_state: bool = True) -> None:
    """Refuses, before any work, what no export path writes correctly, naming every layer.
    `carried_state=False` (ONNX, where the state travels as graph inputs and outputs that
    only the built-in recurrent layers get) refuses every other stateful layer."""
    model_inputs_outputs(model)
    if not carried_state:
        other = [layer.name for layer in all_layers(model)
                 if getattr(layer, "stateful", False) and describe_recurrent(layer) is None]
        if other:
            raise UnsupportedModelError(
                f"Layers {other} are stateful=True but not SimpleRNN/LSTM/GRU (or RNN over "
                "their cells): their state cannot become the file's inputs and outputs, and "
                "the converter would freeze it into constants (silently wrong from the second "
                "call on). Export to .tflite, which keeps any layer's state between calls.")
    names = [name for name, _, _ in input_specs(model)]
    clashes = sorted(set(names) & {state_input_name(i) for i in range(len(state_layout(model)))})
    if clashes:
        raise UnsupportedModelError(
            f"Model inputs {clashes} have the names the exported file gives the stateful "
            "layers' states: rename them with keras.Input(name=...).")


def input_specs(model):
    """`(name, shape, dtype)` of each model input; a single input is named "inputs"."""
    inputs = model_inputs_outputs(model)[0]
    if len(inputs) == 1:
        names = [SINGLE_INPUT_NAME]
    else:
        names = [tensor.name for tensor in inputs]
        if len(set(names)) != len(names):
            raise UnsupportedModelError(f"Model {model.name!r} has inputs with the same name "
                                        f"{names}: name them with keras.Input(name=...).")
    return [(name, tuple(tensor.shape), str(tensor.dtype)) for name, tensor in zip(names, inputs)]


def output_names(model) -> list[str]:
    """The exported outputs' names: the model's own output names ("outputs" for one)."""
    outputs = model_inputs_outputs(model)[1]
    if len(outputs) == 1:
        return [SINGLE_OUTPUT_NAME]
    names = list(getattr(model, "output_names", None) or [t.name for t in outputs])
    if len(set(names)) != len(names):
        names = [f"output_{index}" for index in range(len(outputs))]
    return names


def as_list(outputs) -> list:
    """A model's outputs (a tensor, list or dict) as a list in `model.outputs` order."""
    if isinstance(outputs, dict):
        return list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def frozen_inference(graph, model, signature, **freeze_options):
    """`graph` (the model or its rebuilt clone) traced on `signature`, returning its outputs
    as a dict under the exported names (`output_names(model)`), with the weights and the
    tensors the layers captured (an adapted Normalization's mean) frozen into constants: a file
    with variables would need initialising on the device, and tf2onnx would make captured
    tensors extra graph inputs. `freeze_options` go to `convert_variables_to_constants_v2`."""
    return freeze(named_inference(graph, model), signature, **freeze_options)


def named_inference(graph, model):
    """`graph` (the model or its rebuilt clone) as a function of the model's inputs, in order,
    returning its outputs as a dict under the exported names (`output_names(model)`)."""
    names = output_names(model)

    def inference(*inputs):
        results = graph(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return dict(zip(names, as_list(results)))

    return inference


def freeze(function, signature, **freeze_options):
    """`function` traced on `signature` with every variable and captured tensor frozen into
    constants (see `frozen_inference`)."""
    import tensorflow as tf

    # (TensorFlow's own freezing, the one its converters use; it has no public name)
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    traced = tf.function(function, input_signature=signature, autograph=False)
    return convert_variables_to_constants_v2(traced.get_concrete_function(), **freeze_options)


def keras_outputs(model, feeds: dict) -> dict:
    """Runs the Keras model on named inputs (the exported names); returns named outputs."""
    import warnings

    names = [name for name, _, _ in input_specs(model)]
    arguments = [feeds[name] for name in names]
    with warnings.catch_warnings():
        # verify's one-step inputs make an attention softmax run over a single key, which
        # Keras flags; the comparison itself is what matters there
        warnings.filterwarnings("ignore", message="You are using a softmax over axis")
        results = model(arguments[0] if len(arguments) == 1 else arguments, training=False)
    return {name: np.asarray(value) for name, value in zip(output_names(model), as_list(results))}
