"""The dataset pipeline: files and folders -> records -> templated text -> tokens with labels -> batches.

Modules: ``sources`` (reading record and text files), ``code`` and ``gitignore`` (a folder of
source code), ``templates`` (records to trained/masked text), ``tokenize`` (``Sample``,
windows), ``dataset`` (``load_dataset``, ``split``, ``load_training_data``), ``loader``
(``BatchLoader``, ``Batch``, ``model_inputs``) and ``stats`` (``dataset_stats``, ``preview``).
"""

from senior_intern.data.dataset import (
    CODE_HEADER,
    DataMessage,
    DatasetError,
    LoadedDataset,
    TrainingData,
    check_dataset,
    check_training_data,
    load_dataset,
    load_training_data,
    split,
)
from senior_intern.data.loader import Batch, BatchLoader, block_causal_mask, model_inputs, pack_samples
from senior_intern.data.sources import Problem
from senior_intern.data.stats import DatasetStats, LengthBin, dataset_stats, preview
from senior_intern.data.tokenize import IGNORE_INDEX, Sample

__all__ = [
    "CODE_HEADER",
    "IGNORE_INDEX",
    "Batch",
    "BatchLoader",
    "DataMessage",
    "DatasetError",
    "DatasetStats",
    "LengthBin",
    "LoadedDataset",
    "Problem",
    "Sample",
    "TrainingData",
    "block_causal_mask",
    "dataset_stats",
    "check_dataset",
    "check_training_data",
    "load_dataset",
    "load_training_data",
    "model_inputs",
    "pack_samples",
    "preview",
    "split",
]
