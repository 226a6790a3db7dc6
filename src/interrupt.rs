//! Ctrl-C during `train`: the run's files stay as they are (checkpoints are
//! written atomically), and one line says which epoch is saved and how to
//! continue, instead of a silent exit.
//!
//! SIGINT is blocked in every thread and taken by one waiting thread, which
//! can then lock, print and exit as ordinary code, none of which a signal
//! handler may do. The line it prints sits behind the lock a checkpoint save
//! holds ([`status`]), so the process never ends between writing a
//! checkpoint and updating the line that describes it.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The exit status of a process ended by Ctrl-C (128 + SIGINT), as shells
/// report one killed by the signal.
pub const EXIT_STATUS: i32 = 130;

/// The line Ctrl-C prints; empty until the training loop sets one.
static STATUS: Mutex<String> = Mutex::new(String::new());

/// The line Ctrl-C prints, locked: Ctrl-C waits while the guard lives, so
/// hold it across a checkpoint save and set the line that describes it.
pub fn status() -> MutexGuard<'static, String> {
    STATUS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes over Ctrl-C for the rest of the process. Call it before any other
/// thread starts: a thread inherits its creator's signal mask, and SIGINT
/// must be blocked in all of them to reach only the waiting thread.
#[cfg(unix)]
pub fn install() -> std::io::Result<()> {
    // SAFETY: the sigset_t is initialised by sigemptyset before use, and the
    // calls only read it or write the calling thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new().name("ctrl-c".into()).spawn(move || {
        let mut signal = 0;
        // SAFETY: `set` is a valid signal set and `signal` a valid out-pointer.
        // sigwait returns only with a signal of the set, SIGINT.
        if unsafe { libc::sigwait(&set, &mut signal) } == 0 {
            stop();
        }
    })?;
    Ok(())
}

/// Without unix signals Ctrl-C keeps its default: the process ends at once.
#[cfg(not(unix))]
pub fn install() -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn stop() -> ! {
    use std::io::IsTerminal;
    let status = status();
    // On a terminal the cursor is still on the progress bar's line.
    let newline = if std::io::stderr().is_terminal() { "\n" } else { "" };
    let line = if status.is_empty() {
        "interrupted"
    } else {
        status.as_str()
    };
    eprintln!("{newline}{line}");
    std::process::exit(EXIT_STATUS)
}
