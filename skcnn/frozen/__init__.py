"""The first strategy, a frozen network's codes as features: the scikit-learn
transformer (:class:`skcnn.CNNFeatureTransformer`), the layer search
(:class:`skcnn.LayerSearchCV`), the size x similarity advice
(:func:`skcnn.advise_layer`), and the transformer's extraction on a Dask
cluster (:mod:`skcnn.dask`, the module ``dask`` here). The second strategy
is :mod:`skcnn.finetuning`.
"""
