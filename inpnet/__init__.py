"""inpnet: an MLOps pipeline for image inpainting.

Importing the package has no side effects: no logging configuration, no tracking URIs, no
directories created.
"""

__version__ = "0.1.0"
