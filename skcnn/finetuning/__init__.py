"""Fine-tuning: a pretrained network trained further, with a new head, as a classifier.

The second flow of transfer learning, one module per step:
``store`` (every training image decoded once, its uint8 crop kept in memory
or in files, keyed by content) -> ``augment`` (random crops and flips of training batches only) ->
``training`` (which layers train, batch norm, discriminative learning rates,
warmup and cosine decay, early stopping, a checkpoint per epoch) ->
``classifier`` (:class:`~skcnn.CNNClassifier`, the scikit-learn estimator:
images decoded once, the head started from a linear probe on frozen codes).
"""
