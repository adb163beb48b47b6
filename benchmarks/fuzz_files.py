"""Structure-aware fuzzing of exported files: does any crafted file kill the process?

Each mutant changes one field of a real exported file (an operator's tensor index or opcode, a
tensor's buffer, shape or type, a graph input; for ONNX a node's input name, operator type or
attribute, an initializer's shape or type), is written to disk and opened with
`export.runtime.load` as any file someone else wrote, then run once on zeros. Every outcome
must be a run or a `ValueError` (`ModelFileError` included); a process death ends this script
with the signal, which is what the suite's fuzz test looks for.

    python benchmarks/fuzz_files.py m.tflite m.onnx --count 200 --seed 0

Prints a table: mutants, refused, ran, other exceptions (each listed); exits 1 on any other.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tflite_mutant(content: bytes, rng) -> tuple[bytes, str]:
    """One field of a .tflite flatbuffer changed, through LiteRT's own schema object API."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[int(rng.integers(len(model.subgraphs)))]
    tensors = len(graph.tensors)
    kind = str(rng.choice(["input", "output", "opcode", "buffer", "shape", "type", "graph_input"]))
    operator = graph.operators[int(rng.integers(len(graph.operators)))]
    if kind in ("input", "output"):
        indices = list(getattr(operator, f"{kind}s"))
        indices[int(rng.integers(len(indices)))] = int(rng.integers(-2, tensors + 3))
        setattr(operator, f"{kind}s", indices)
    elif kind == "opcode":
        operator.opcodeIndex = int(rng.integers(len(model.operatorCodes) + 2))
    else:
        tensor = graph.tensors[int(rng.integers(tensors))]
        if kind == "buffer":
            tensor.buffer = int(rng.integers(len(model.buffers) + 3))
        elif kind == "shape" and tensor.shape is not None and len(tensor.shape):
            shape = list(tensor.shape)
            shape[int(rng.integers(len(shape)))] = int(rng.choice([-1, 0, 3, 1 << 20]))
            tensor.shape = shape
        elif kind == "type":
            tensor.type = int(rng.integers(0, 18))
        else:
            inputs = list(graph.inputs)
            inputs[0] = int(rng.integers(-1, tensors + 2))
            graph.inputs = inputs
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), kind


def onnx_mutant(content: bytes, rng) -> tuple[bytes, str]:
    """One field of an .onnx protobuf changed, through the onnx package."""
    import onnx

    model = onnx.load_from_string(content)
    graph = model.graph
    kind = str(rng.choice(["input_name", "op_type", "attribute", "dims", "data_type",
                           "truncate"]))
    node = graph.node[int(rng.integers(len(graph.node)))]
    if kind == "input_name" and len(node.input):
        names = [value.name for value in graph.value_info] + [i.name for i in graph.input]
        node.input[int(rng.integers(len(node.input)))] = str(rng.choice(names + ["", "nope"]))
    elif kind == "op_type":
        node.op_type = str(rng.choice(["LSTM", "GRU", "RNN", "Gather", "Split", "Reshape",
                                       "Transpose", "MatMul"]))
    elif kind == "attribute" and len(node.attribute):
        attribute = node.attribute[int(rng.integers(len(node.attribute)))]
        attribute.i = int(rng.choice([-1, 0, 7, 1 << 31]))
        attribute.ints[:] = [int(rng.integers(-3, 9)) for _ in attribute.ints]
    elif kind in ("dims", "data_type") and len(graph.initializer):
        tensor = graph.initializer[int(rng.integers(len(graph.initializer)))]
        if kind == "dims" and len(tensor.dims):
            tensor.dims[int(rng.integers(len(tensor.dims)))] = int(rng.choice([0, 1, 1 << 40]))
        else:
            tensor.data_type = int(rng.integers(0, 17))
    else:
        data = model.SerializeToString()
        return data[: int(rng.integers(1, len(data)))], "truncate"
    return model.SerializeToString(), kind


def fuzz(paths, count: int, seed: int) -> int:
    from export.runtime import load

    rng = np.random.default_rng(seed)
    rows, others = [], []
    with tempfile.TemporaryDirectory() as folder:
        for path in paths:
            path = Path(path)
            content = path.read_bytes()
            mutate = tflite_mutant if path.suffix == ".tflite" else onnx_mutant
            refused = ran = 0
            for index in range(count):
                data, kind = mutate(content, rng)
                mutant = Path(folder) / f"mutant{index}{path.suffix}"
                mutant.write_bytes(data)
                try:
                    model = load(mutant)
                    feeds = {name: np.zeros([d or 1 for d in shape], dtype)
                             for name, (shape, dtype) in model.inputs.items()}
                    model.run_named(feeds)
                    ran += 1
                except ValueError:
                    refused += 1
                except Exception as error:  # what the runtime should never let through
                    others.append(f"{path.name} mutant {index} ({kind}): "
                                  f"{type(error).__name__}: {str(error)[:120]}")
            rows.append((path.name, count, refused, ran, count - refused - ran))
    print(f"{'file':<24}{'mutants':>9}{'refused':>9}{'ran':>6}{'other':>7}")
    for name, total, refused, ran, other in rows:
        print(f"{name:<24}{total:>9}{refused:>9}{ran:>6}{other:>7}")
    for line in others:
        print(line)
    return 1 if others else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="exported .tflite / .onnx files to mutate")
    parser.add_argument("--count", type=int, default=100, help="mutants per file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    return fuzz(args.files, args.count, args.seed)


if __name__ == "__main__":
    sys.exit(main())
