"""Shared code for the Real-vs-AI pipeline scripts.

Importing the package defines nothing heavy: modules that only move files (``layout``, ``files``,
``archives``, ``splitting``, ``merging``) never import TensorFlow, so the data scripts start fast.
Import ``realvsai.model`` before ``keras.models.load_model`` so the project's layers are registered.
A script's first import of the package guards its start: a Ctrl-C during the imports that follow ends it with
the one interrupted line (``interrupts``).
"""

from realvsai import interrupts as _interrupts

__version__ = "0.1.0"

_interrupts.guard_start_up()
