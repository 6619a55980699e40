//! vigil's model runtime (ONNX Runtime through `ort`): detectors, OCR and face blurring arrive with issue 4; nothing is wired yet.
