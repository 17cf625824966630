"""Build of the one compiled module (the anomaly detector's per-sample step); everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize([Extension("detector.anomaly._kernel", ["detector/anomaly/_kernel.pyx"])]))
