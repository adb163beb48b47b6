"""The format registry and the quantization-mode table (`export.formats`): rows in step with
the functions they name, and refusals that name what is known."""

import inspect

import pytest

from export.formats import (
    FORMATS,
    QUANTIZE_MODES,
    format_of,
    get_format,
    get_quantize_mode,
    resolve,
)
from export.runtime import ModelFileError, load


@pytest.mark.parametrize("name", FORMATS)
def test_each_row_names_functions_that_take_what_it_says(name):
    row = FORMATS[name]
    exporter, loader = resolve(row.exporter), resolve(row.loader)
    parameters = inspect.signature(exporter).parameters
    assert set(row.options) <= set(parameters), (row.options, list(parameters))
    assert loader.format == name  # a loaded file reports the row it came from
    assert {"trusted", "allow_external_data"} <= set(inspect.signature(loader).parameters)
    assert format_of(f"model{row.suffix}") is row and get_format(name) is row
    assert all(mode in QUANTIZE_MODES for mode in row.quantize)


def test_unknown_formats_suffixes_and_modes_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="Unknown export format 'tfl': expected one of "
                       "'tflite', 'onnx'"):
        get_format("tfl")
    with pytest.raises(ValueError, match=r"end it in \.tflite or \.onnx"):
        format_of("model.pb")
    with pytest.raises(ValueError, match="Unknown quantize 'int4'"):
        get_quantize_mode("int4")
    (tmp_path / "model.pb").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="Unknown model file type"):
        load(tmp_path / "model.pb")
