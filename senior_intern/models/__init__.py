"""Loading base models and their tokenizers: Hugging Face folders and GGUF files.

``load_base_model`` and ``load_tokenizer`` import torch and transformers when called, so importing this package stays
cheap (the GUI can ask ``metadata`` or ``find_demo_model`` without loading the engine).
"""

from senior_intern.models.demo import find_demo_model
from senior_intern.models.info import ModelInfo, ModelLoadError, format_parameter_count
from senior_intern.models.inspection import content_hash, metadata
from senior_intern.models.loader import LoadedModel, load_base_model
from senior_intern.models.tokenizer import load_tokenizer, model_folder, tokenizer_cached

__all__ = [
    "LoadedModel",
    "ModelInfo",
    "ModelLoadError",
    "content_hash",
    "find_demo_model",
    "format_parameter_count",
    "load_base_model",
    "load_tokenizer",
    "metadata",
    "model_folder",
    "tokenizer_cached",
]
