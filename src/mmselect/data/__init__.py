"""Reading datasets: LLaVA, sharegpt, OpenAI/TRL and ms-swift JSON/JSONL, parquet and Hugging Face
datasets; stable sample keys, validation, images from local roots or fsspec URLs."""

from .images import DEFAULT_MAX_IMAGE_PIXELS, open_image
from .readers import Dataset, Rejected, read_dataset
from .records import Sample, Turn, sample_key

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "Dataset", "Rejected", "Sample", "Turn", "open_image", "read_dataset", "sample_key"]
