"""Fine-tuning: a pretrained network trained further, with a new head, as a classifier.

The second flow of transfer learning, one module per step:
``store`` (every training image decoded once, its uint8 crop kept in memory
or in files, keyed by content) -> ``augment`` (random crops and flips of training batches only) ->
``strategy`` (what ``"auto"`` trains and why: head or network, the head's
layer, batch norm, the augmentation measured) ->
``probe`` (the linear probe on frozen codes that starts the new head) ->
``training`` (which layers train, batch norm, discriminative learning rates,
warmup and cosine decay, early stopping, a checkpoint per epoch) ->
``classifier`` (:class:`~skcnn.CNNClassifier`, the scikit-learn estimator
that composes them: images decoded once, the head started from the probe).
"""
