//! Opening files: tmpfs is refused with a clear error, missing files are typed errors.

mod support;

use bufpool_io::{DirectFile, IoError, IoOp, OpenOptions};

/// True when /dev/shm exists and /proc/mounts says it is tmpfs.
fn dev_shm_is_tmpfs() -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"/dev/shm") && fields.get(2) == Some(&"tmpfs")
    })
}

#[test]
fn a_tmpfs_path_is_refused_naming_the_path_and_the_reason() {
    if !dev_shm_is_tmpfs() {
        println!("note: /dev/shm is missing or not tmpfs here; the tmpfs check is skipped");
        return;
    }
    let path = format!("/dev/shm/bufpool-io-test-{}", std::process::id());
    let options = OpenOptions {
        create: true,
        ..OpenOptions::default()
    };
    let result = DirectFile::open(&path, &options);
    let _ = std::fs::remove_file(&path);
    match result {
        Err(error @ IoError::DirectIoUnsupported { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&path),
                "message must name the path: {message}"
            );
            assert!(
                message.contains("tmpfs"),
                "message must give the reason: {message}"
            );
        }
        other => panic!("expected DirectIoUnsupported, got {other:?}"),
    }
}

#[test]
fn a_missing_file_without_create_is_a_typed_open_error() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-data/io");
    std::fs::create_dir_all(&dir).expect("test dir");
    let path = dir.join("does-not-exist.data");
    let _ = std::fs::remove_file(&path);
    let error = DirectFile::open(&path, &OpenOptions::default()).expect_err("must fail");
    assert!(
        matches!(error, IoError::Os { op: IoOp::Open, .. }),
        "{error:?}"
    );
    assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
    assert!(error.to_string().contains("does-not-exist.data"), "{error}");
}

#[test]
fn alignment_is_at_least_a_page() {
    let file = support::fresh_file("alignment", bufpool_io::EngineChoice::Sync);
    assert!(file.alignment() >= bufpool_io::DIRECT_IO_ALIGN);
    assert!(file.alignment().is_power_of_two());
}
