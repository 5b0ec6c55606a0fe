"""caft: complexity-aware fine-tuning (Goncharov et al., arXiv 2506.21220) as a reproducible DVC pipeline."""

__version__ = "0.1.0"
