"""Images in, network input out: reading files safely, JPEG's DCT scaling, content keys,
the weights' resize-crop-normalise recipe, decoding in worker threads, and the
symmetries of the square.

The public path of the reader is :mod:`skcnn.images` (the module ``images`` here).
"""
