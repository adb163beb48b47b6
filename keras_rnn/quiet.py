"""A quiet terminal: TensorFlow's and LiteRT's native start-up logging kept off the screen.

TensorFlow 2.21 logs through absl before absl's logging is initialised, and such messages go to
standard error whatever `TF_CPP_MIN_LOG_LEVEL` says (`cudart_stub ... Could not find cuda
drivers`, `port.cc ... oneDNN custom operations`); the TFLite converter prints its settings
from C++ and LiteRT announces its XNNPACK delegate. None of it is Python output, so
`contextlib.redirect_stderr` cannot catch it: `native_stderr_silenced` points file descriptor 2
elsewhere for the duration of a block and gives the text back on the exception if the block
fails, so nothing a user needs to see is lost.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

TF_LOG_LEVEL = "3"  # TF_CPP_MIN_LOG_LEVEL: errors reach the caller as Python exceptions


@contextlib.contextmanager
def native_stderr_silenced():
    """Runs the block with file descriptor 2 sent to a temporary file; if the block raises,
    what was written there is attached to the exception as a note."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException as error:
            sys.stderr.flush()
            captured.seek(0)
            text = captured.read().decode(errors="replace").strip()
            if text:
                error.add_note(f"native output while it ran:\n{text[-4000:]}")
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def load_tensorflow():
    """Imports TensorFlow and Keras without their start-up logging, once; sets
    `TF_CPP_MIN_LOG_LEVEL` unless the user already has. Returns the `tensorflow` module."""
    if "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
    with native_stderr_silenced():
        import keras  # noqa: F401  (Keras picks its backend and loads TensorFlow's libraries)
        import tensorflow
    return tensorflow
