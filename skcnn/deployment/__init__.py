"""Shipping a fitted model: one ONNX file (:mod:`skcnn.export`, needs torch) and
a predictor that reads it with numpy, Pillow and ONNX Runtime only
(:mod:`skcnn.serving`, with torch's resize of small images in numpy).
"""
