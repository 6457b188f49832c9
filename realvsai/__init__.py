"""Shared code for the Real-vs-AI pipeline scripts.

Importing the package defines nothing heavy: modules that only move files (``layout``, ``files``,
``archives``, ``splitting``, ``merging``) never import TensorFlow, so the data scripts start fast.
Import ``realvsai.model`` before ``keras.models.load_model`` so the project's layers are registered.
A script's first import of the package guards its start: a Ctrl-C during the imports that follow ends it with
the one interrupted line (``interrupts``).
"""

import sys as _sys

# Python 3.10's support ended in October 2026; pip resolves older Keras and JAX for it, on which the suite failed.
if _sys.version_info < (3, 11):  # noqa: UP036 (a user's older Python runs this line)
    _version = ".".join(str(part) for part in _sys.version_info[:3])
    _sys.exit(f"error: Python 3.11 or newer is needed, and this is Python {_version} (support for 3.10 ended in "
              "October 2026). Install a newer Python, make a virtual environment with it, and install "
              "requirements.txt there.")

from realvsai import interrupts as _interrupts

__version__ = "0.1.0"

_interrupts.guard_start_up()
