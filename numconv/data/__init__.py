"""Data loading: datasets (Hugging Face hub, local files, scikit-learn's digits) -> NumPy batches.

`images` is the image pipeline (`numconv train-image`); see its docstring for the sources it reads.
"""
from numconv.data.images import (DATASETS, DEFAULT_DATASET, FALLBACK_DATASET, BatchIterator,
                                 HubUnavailable, ImageData, Split, batches, load_image_files,
                                 load_images, load_images_or_fallback, make_batch, preprocess)

__all__ = ["DATASETS", "DEFAULT_DATASET", "FALLBACK_DATASET", "BatchIterator", "HubUnavailable",
           "ImageData", "Split", "batches", "load_image_files", "load_images",
           "load_images_or_fallback", "make_batch", "preprocess"]
