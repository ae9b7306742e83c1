"""Reading datasets: LLaVA JSON/JSONL and LLaMA-Factory sharegpt, stable sample keys, validation."""

from .records import Sample, Turn, sample_key
from .readers import Dataset, read_dataset

__all__ = ["Dataset", "Sample", "Turn", "read_dataset", "sample_key"]
