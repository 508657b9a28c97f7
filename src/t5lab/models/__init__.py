"""Hugging Face models for the T5 variants, one file each.

Importing this package imports every variant module; each module registers its config and model
classes with the transformers Auto classes at import time.
"""

from t5lab.models import decoder_only, enct5, pseudo_decoder, value_head  # noqa: F401
