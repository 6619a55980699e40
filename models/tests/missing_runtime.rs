//! Without ONNX Runtime, loading fails with an error that names where it looked and how to
//! install it (its own test binary: a process loads the library at most once).

#[test]
fn a_missing_library_says_how_to_install_it() {
    let err = vigil_models::runtime::environment(Some(std::path::Path::new(
        "/nonexistent/libonnxruntime.so.1.31.1",
    )))
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/libonnxruntime.so.1.31.1"), "{err}");
    assert!(err.contains("scripts/setup-models") && err.contains("ORT_DYLIB_PATH"), "{err}");
}

#[test]
fn a_library_of_the_wrong_kind_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared object").unwrap();
    let err = vigil_models::runtime::environment(Some(&fake)).unwrap_err().to_string();
    assert!(err.contains("libonnxruntime.so") && err.contains("fix:"), "{err}");
}
