"""Keras -> ONNX (fp32) with the toolkit's fixed interface.

Interface (exporter/contract.py): input ``image`` float32 ``[batch, 28, 28, 1]`` in [0, 1] (the trainer's
canonical input; the transfer models pad to 32x32x3 inside the graph), output ``probabilities`` float32
``[batch, 5]``. A model trained in mixed precision (``fmnist-train --precision bf16``) is converted
as its float32 twin (``float32_model``): the graph never holds a bfloat16 tensor.
"""

from __future__ import annotations

import keras
import onnx
import tensorflow as tf
import tf2onnx

from exporter.contract import BATCH_DIM, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, ContractError

DEFAULT_OPSET = 17
# tf2onnx's supported range, and what onnxruntime's quantizer (per-channel QDQ needs 13) accepts.
MIN_OPSET, MAX_OPSET = 13, 18


def keras_to_onnx(model: keras.Model, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Convert ``model`` in inference mode to ONNX with the ``image`` -> ``probabilities`` interface.

    Workaround: ``tf2onnx.convert.from_keras`` fails on Keras 3 models with
    ``KeyError: 'keras_tensor_N'`` (onnx/tensorflow-onnx issue #2448, open upstream;
    Keras 3 support in general is #2329). Converting a
    ``tf.function`` of ``model(x, training=False)`` with an explicit input signature works and
    matches Keras to about 2e-7. Keep this the only place that calls tf2onnx.
    """
    model = float32_model(model)  # a mixed-precision model would give bf16 tensors ONNX Runtime's CPU cannot run
    signature = (tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=signature)
    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    _check_float32(proto)
    return _fix_interface(proto)


def float32_model(model: keras.Model) -> keras.Model:
    """``model`` with every layer computing in float32: itself when it does, else a float32 twin.

    A model trained with ``--precision bf16`` loads with Keras' ``mixed_bfloat16`` policy in each layer. Traced
    as it is, tf2onnx (1.17) folds the weight casts into BFLOAT16 initializers and casts the image with
    ``Cast(to=FLOAT16)`` (sic), which ONNX Runtime's CPU provider refuses ("Type 'tensor(bfloat16)' of input
    parameter ... of operator (Conv) ... is invalid"). The twin is rebuilt from the same config with every policy
    float32 and given the model's weights; mixed-precision variables are float32 already, so nothing is rounded.
    """
    config = {k: v for k, v in keras.saving.serialize_keras_object(model).items() if k != "compile_config"}
    float32_config = _with_float32_policies(config)
    if float32_config == config:
        return model
    twin = keras.saving.deserialize_keras_object(float32_config)
    twin.set_weights(model.get_weights())
    return twin


def _with_float32_policies(config: object) -> object:
    """A serialized Keras object with every dtype policy in it float32."""
    if isinstance(config, dict) and config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
        return {**config, "config": {**config["config"], "name": "float32"}}
    if isinstance(config, dict):
        return {k: _with_float32_policies(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_with_float32_policies(v) for v in config]
    return config


# Element types an fp32 graph must not hold anywhere (ONNX Runtime's CPU provider runs few ops on them).
_LOW_PRECISION = {onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.FLOAT16: "float16"}


def _check_float32(proto: onnx.ModelProto) -> None:
    """Refuse an fp32 graph that holds a bfloat16 or float16 tensor, initializer or cast."""
    graph = proto.graph
    found = [f"initializer {t.name}" for t in graph.initializer if t.data_type in _LOW_PRECISION]
    found += [f"tensor {v.name}" for v in (*graph.input, *graph.output, *graph.value_info)
              if v.type.tensor_type.elem_type in _LOW_PRECISION]
    found += [f"{node.op_type} {node.name}" for node in graph.node for a in node.attribute
              if (a.name == "to" and a.i in _LOW_PRECISION) or (a.name == "value" and a.t.data_type in _LOW_PRECISION)]
    if found:
        raise ContractError(f"the fp32 ONNX graph holds low-precision tensors ({', '.join(found[:3])}"
                            f"{' ...' if len(found) > 3 else ''}); export a float32 model (float32_model)")


def _fix_interface(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Name the output ``probabilities`` and the dynamic batch dimension ``batch``."""
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, got {len(graph.input)} and {len(graph.output)}")
    old_output = graph.output[0].name
    if old_output != OUTPUT_NAME:
        for node in graph.node:
            node.output[:] = [OUTPUT_NAME if name == old_output else name for name in node.output]
        graph.output[0].name = OUTPUT_NAME
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    return proto
