"""The exported file's signature and the traced function behind it: input and output names,
shapes and dtypes, the model traced and frozen on them, the Keras model run on named inputs,
and the checks every export path makes first (`check_exportable`).
"""

from __future__ import annotations

import weakref

import numpy as np

from export.model.layers import all_layers, describe_recurrent, is_graph_model, sublayers
from export.model.state import state_layout
from export.runtime import MAIN_INPUT, MAIN_OUTPUT, state_input_name
from keras_rnn.structure import (
    UnsupportedModelError,
    model_inputs_outputs,
)

# a model with one input and one output keeps the runtime's default names
SINGLE_INPUT_NAME, SINGLE_OUTPUT_NAME = MAIN_INPUT, MAIN_OUTPUT
def exportable(model):
    """`model` itself when it is functional or Sequential; for a subclassed `keras.Model`
    that has been called on data, the functional model `keras.Model(inputs, model(inputs))` on
    the inputs it was built with (built anew on each call: a cached view would hold the model
    alive). Keras's own exporters trace a subclassed model's `call` the same way
    (`keras.src.export.export_utils`). Its recurrent layers are inside the model's own Python
    `call`: the rebuild runs that call with each one's native form swapped in
    (`export.model.rebuild.SwappedCalls`).

    Keras records the shapes, not the dtypes, a subclassed model was built with: the view
    takes int32 ids when the model's first layer is an Embedding and the model's float
    dtype otherwise."""
    import keras

    if not isinstance(model, keras.Model) or is_graph_model(model):
        return model
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) != 1:
        return model  # never called: model_inputs_outputs says how to build it
    shape = next(iter(shapes.values()))
    first = model.layers[0] if model.layers else None
    dtype = "int32" if isinstance(first, keras.layers.Embedding) else model.input_dtype

    def make_input(name, input_shape):
        if not isinstance(input_shape, (tuple, list)) or not all(
                isinstance(size, (int, type(None))) for size in input_shape):
            raise UnsupportedModelError(
                f"Subclassed model {model.name!r} was built on inputs of structure {shape!r}; "
                "export takes a tensor or a dict of tensors: wrap it as keras.Model(inputs, "
                "model(inputs)) on keras.Input tensors.")
        return keras.Input(tuple(input_shape)[1:], dtype=dtype, name=name)

    if isinstance(shape, dict):
        inputs = {name: make_input(name, value) for name, value in shape.items()}
    else:
        inputs = make_input(None, shape)
    try:
        outputs = model(inputs, training=False)
    except Exception as error:  # the model's own call, on symbolic inputs
        raise UnsupportedModelError(
            f"Subclassed model {model.name!r} could not be traced on keras.Input tensors "
            f"({type(error).__name__}: {first_line(error)}): wrap it as keras.Model(inputs, "
            "model(inputs)).") from error
    return keras.Model(inputs, outputs, name=model.name)


HALF_DTYPES = ("float16", "bfloat16")


def half_precision(model) -> str | None:
    """"float16" or "bfloat16" when a layer of `model` computes in it (a `mixed_float16` /
    `mixed_bfloat16` policy or a half dtype), else None."""
    for layer in sublayers(model):
        dtype = getattr(layer, "compute_dtype", None)
        if dtype in HALF_DTYPES:
            return dtype
    return None


_FLOAT32_TWINS = weakref.WeakKeyDictionary()


def float32_twin(model):
    """`model` itself, or for a model that computes in half precision, the same model
    computing in float32: its config with every half dtype and policy made float32, its
    weights cast (exactly) to float32. The exported files compute in float32 and take float32
    inputs: the builtin TFLite kernels of the WHILE form and the converters' half-precision
    paths refuse or mistranslate float16 graphs ("'tf.MatMul' op is neither a custom op nor a
    flex op"), and on a CPU float16 arithmetic is no faster. `verify` compares such a file
    with the half-precision model itself, within a bound that follows its compute dtype
    (`export.parity.tolerances.HALF_PRECISION_TOLERANCE`)."""
    import keras

    if half_precision(model) is None:
        return model
    if model in _FLOAT32_TWINS:
        return _FLOAT32_TWINS[model]
    try:
        config = _float32_config(keras.saving.serialize_keras_object(model))
        twin = keras.saving.deserialize_keras_object(config)
        twin.set_weights([np.asarray(weight, np.float32) if np.asarray(weight).dtype.kind == "f"
                          else weight for weight in model.get_weights()])
    except Exception as error:  # a layer whose config does not rebuild it
        raise UnsupportedModelError(
            f"Model {model.name!r} computes in {half_precision(model)}; the exported files "
            "compute in float32 and its float32 copy could not be built "
            f"({type(error).__name__}: {first_line(error)}). Build the model under the "
            "float32 policy, load its weights and export that.") from error
    _FLOAT32_TWINS[model] = twin
    return twin


def _float32_config(config):
    """A serialized Keras config with each half dtype and dtype policy made float32."""
    if isinstance(config, list):
        return [_float32_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    result = {}
    for key, value in config.items():
        if key == "dtype" and isinstance(value, str) and value.replace("mixed_", "") in HALF_DTYPES:
            value = "float32"
        elif key == "dtype" and isinstance(value, dict) and "Policy" in str(value.get("class_name")):
            name = str(value.get("config", {}).get("name", ""))
            if name.replace("mixed_", "") in HALF_DTYPES:
                value = {**value, "config": {**value["config"], "name": "float32"}}
        result[key] = _float32_config(value)
    return result


def first_line(error) -> str:
    """An exception's first message line, for one-line refusals."""
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"



# Keras preprocessing layers that read strings (a model taking strings starts with one)
STRING_LAYERS = frozenset({"StringLookup", "TextVectorization", "Hashing", "HashedCrossing"})


def check_exportable(model, *, carried_state: bool = True, strings: bool = False) -> None:
    """Refuses, before any work, what no export path writes correctly, naming every layer.
    `carried_state=False` (ONNX, where the state travels as graph inputs and outputs that
    only the built-in recurrent layers get) refuses every other stateful layer; `strings=False`
    (ONNX, where tf2onnx writes no lookup table ONNX Runtime loads) refuses string inputs."""
    import keras

    model_inputs_outputs(model)
    strings_found = string_inputs(model)
    if strings_found and not strings:
        raise UnsupportedModelError(
            f"{strings_read(model, strings_found)}: .onnx files take numbers (tf2onnx writes "
            "no string lookup table ONNX Runtime loads). "
            f"Export to .tflite, which keeps a StringLookup's table in the file, or {IDS_ADVICE}")
    hidden = [inner.name for layer in all_layers(model) if isinstance(layer, keras.Model)
              for inner in sublayers(layer) if getattr(inner, "stateful", False)]
    if hidden:
        raise UnsupportedModelError(
            f"Layers {hidden} are stateful=True inside a subclassed model, whose state the "
            "converter would freeze into constants (silently wrong from the second call on): "
            "build the model with the functional API or Sequential to export its state.")
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


# What a refusal of string inputs advises (the preprocessing kept out of the file)
IDS_ADVICE = ("export the model from the preprocessing layer's ids on (keras.Model(ids_input, "
              "outputs) with the same layers after it) and ship the vocabulary in the file "
              "(metadata=vocabulary_metadata(...), or --vocabulary), so the device maps its "
              "strings to ids as the layer does.")


def string_inputs(model) -> list[str]:
    """The names of the model's string inputs."""
    return [name for name, _, dtype in input_specs(model) if dtype == "string"]


def strings_read(model, strings) -> str:
    """How a refusal of string inputs begins: the inputs `strings` and the layers that read
    them (the model's preprocessing layers)."""
    readers = [layer.name for layer in all_layers(model)
               if type(layer).__name__ in STRING_LAYERS] or ["the first layer"]
    return f"Model inputs {strings} are strings, read by {readers}"


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
