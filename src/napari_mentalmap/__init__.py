"""napari-mentalmap: generative models of brain MRI in napari."""

__version__ = "0.1.0"
