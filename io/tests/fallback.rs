//! The automatic fallback: when io_uring setup fails with EPERM (a container's seccomp policy,
//! `io_uring_disabled`), `EngineChoice::Auto` runs on pread/pwrite and says so once at warn
//! level, while `EngineChoice::Uring` is a typed error. Simulated with a seccomp filter on
//! one thread (filters installed without TSYNC apply to the calling thread only).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bufpool_io::{EngineChoice, EngineKind, IoConfig, IoEngine, IoError};
use support::{AlignedBuf, PAGE, fresh_file};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Makes io_uring_setup fail with EPERM on the calling thread (and threads it creates).
fn forbid_io_uring_on_this_thread() {
    let statement = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let syscall_number_offset = 0; // offsetof(struct seccomp_data, nr)
    let mut program = [
        statement(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            syscall_number_offset,
        ),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        statement(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let filter = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `filter` points at a valid program for the call's duration.
    unsafe {
        assert_eq!(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            0,
            "no_new_privs"
        );
        let installed = libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &filter as *const _,
        );
        assert_eq!(installed, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

/// Counts warn-level events.
struct WarningCounter(Arc<AtomicUsize>);

impl Subscriber for WarningCounter {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn auto_falls_back_to_pread_pwrite_once_announced_and_forced_uring_is_a_typed_error() {
    if std::env::var(bufpool_io::ENGINE_ENV_VAR).is_ok() {
        println!(
            "note: {} is set; the fallback test needs Auto untouched",
            bufpool_io::ENGINE_ENV_VAR
        );
        return;
    }
    let warnings = Arc::new(AtomicUsize::new(0));
    let counter = WarningCounter(warnings.clone());
    std::thread::spawn(move || {
        forbid_io_uring_on_this_thread();
        tracing::subscriber::with_default(counter, || {
            for _ in 0..3 {
                let engine = IoEngine::new(IoConfig::default()).expect("auto falls back");
                assert_eq!(engine.kind(), EngineKind::Sync);
                // The fallback engine does real I/O.
                let file = fresh_file("fallback", EngineChoice::Auto);
                let data = AlignedBuf::filled(PAGE, 11);
                // SAFETY: `data` is live and exclusive for the call.
                unsafe { engine.write_at(&file, 0, data.as_ptr(), PAGE) }.expect("write");
            }
            let forced = IoEngine::new(IoConfig {
                engine: EngineChoice::Uring,
                ..IoConfig::default()
            });
            assert!(
                matches!(forced, Err(IoError::EngineUnavailable { .. })),
                "{forced:?}"
            );
        });
    })
    .join()
    .expect("fallback thread");
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        1,
        "the fallback is announced exactly once"
    );
}
