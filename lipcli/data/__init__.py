"""Data sets in memory, batched on tensors, with augmentation on the device."""

from lipcli.data.types import DatasetInfo, DataSplits, ImageSet

__all__ = ["DatasetInfo", "DataSplits", "ImageSet"]
