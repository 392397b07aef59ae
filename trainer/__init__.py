"""Train Fashion-MNIST classifiers with Keras (imports no TensorFlow at package level)."""
