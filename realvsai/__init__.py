"""Shared code for the Real-vs-AI pipeline scripts.

Importing the package defines nothing heavy: modules that only move files (``layout``, ``files``,
``archives``, ``splitting``, ``merging``) never import TensorFlow, so the data scripts start fast.
Import ``realvsai.model`` before ``keras.models.load_model`` so the project's layers are registered.
"""

__version__ = "0.1.0"
