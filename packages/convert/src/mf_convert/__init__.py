"""mf-convert: checkpoint conversion for mfcore (`mfcore convert`)."""
__version__ = "0.1.0"
