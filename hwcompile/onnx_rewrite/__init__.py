"""ONNX→ONNX rewrites that run before the Relax import, one module per family
(``importer_gaps``: operators the importer converts wrongly)."""
