"""Reading datasets: LLaVA, sharegpt, OpenAI/TRL and ms-swift JSON/JSONL, parquet and Hugging Face
datasets; stable sample keys, validation, images from local roots or fsspec URLs."""

from .dataset import Dataset
from .images import DEFAULT_MAX_IMAGE_PIXELS, open_image
from .readers import read_dataset
from .records import Sample, Turn, sample_key
from .rejected import RejectedRecord

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "Dataset", "RejectedRecord", "Sample", "Turn", "open_image", "read_dataset", "sample_key"]
