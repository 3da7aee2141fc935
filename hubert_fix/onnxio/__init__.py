"""onnxio"""
