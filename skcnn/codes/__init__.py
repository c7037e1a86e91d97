"""Codes and their cache: pooling tapped activations into codes, the engine that
drives decode -> network -> pool (one backbone or several side by side), and
the HDF5 cache keyed by image content.

The public path of the cache is :mod:`skcnn.cache` (the module ``cache``
here). Nothing is imported with the folder, so reading a cache needs h5py and
numpy only.
"""
