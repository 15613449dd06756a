"""segmend: segmentation with scarce, weak, coarse or wrong labels."""

__version__ = "0.1.0"
