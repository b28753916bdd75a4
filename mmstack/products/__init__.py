"""The products task's own parts: the fusion embedding, proxy classifiers, duplicate finding, ONNX export."""
