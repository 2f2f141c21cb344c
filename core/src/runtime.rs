//! The one tokio runtime of a process that hosts the core from another
//! language (Python, C++), guarded against `fork()`.
//!
//! A forked child has none of the parent's runtime threads, so a child gets
//! a fresh runtime; the parent's is leaked, as dropping it would wait for
//! threads that do not exist. Objects created before the fork still belong
//! to the parent's runtime: bindings refuse to use them in the child (see
//! [`created_here`]). Node uses napi's own runtime instead.

use std::sync::Mutex;

use tokio::runtime::Runtime;

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// Worker threads of a hosted runtime. One: the host's own thread runs the
/// handlers, lapin has an I/O thread per connection, and the core's tasks
/// (pipeline, consumers, heartbeat) are short. A second worker only adds
/// wake-ups and thread hops per message (bench/run measures it).
pub const WORKER_THREADS: usize = 1;

/// The runtime of this process: created on first use, and again after fork.
pub fn get() -> &'static Runtime {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    match *slot {
        Some((owner, rt)) if owner == pid => rt,
        _ => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("msgflo")
                .enable_all()
                .build()
                .expect("tokio runtime");
            let rt: &'static Runtime = Box::leak(Box::new(rt));
            *slot = Some((pid, rt));
            rt
        }
    }
}

/// Whether something created in process `pid` can be used here.
pub fn created_here(pid: u32) -> bool {
    pid == std::process::id()
}

/// The message of a caught panic, for an error that replaces it.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_runtime_per_process() {
        assert!(std::ptr::eq(super::get(), super::get()));
        assert!(super::created_here(std::process::id()));
    }

    #[test]
    fn panic_messages() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(super::panic_message(&*p), "boom 1");
    }
}
