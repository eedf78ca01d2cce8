"""The CNN (conv, max-pool, dense), built and compiled inside the strategy's scope."""

from __future__ import annotations

import tf_keras as keras

from trainer.data import IMAGE_SHAPE, NUM_CLASSES


def build_model(learning_rate: float) -> keras.Model:
    """A compiled model whose outputs are class probabilities; call inside strategy.scope()."""
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=IMAGE_SHAPE),
            keras.layers.Reshape((*IMAGE_SHAPE, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="mnist_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        # By name, not as an object: Keras 3's plain load_model then reads model.h5 too.
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
