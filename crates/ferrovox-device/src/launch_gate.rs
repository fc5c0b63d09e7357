//! Keeps other threads' launches out of a CUDA graph capture.
//!
//! Candle runs every op of a device on one stream, and a capture records whatever is launched
//! into that stream, from any thread: a kernel another thread launches meanwhile would be
//! recorded into the graph (and replayed at every later step, over buffers that are gone) and
//! never run for its own caller. So a capture waits until no other thread is launching, and
//! holds new launches back until it is done.
//!
//! Threads that launch work while graphs may be captured wrap it in [`device_work`] (Candle
//! ops of a model call, a decode step, a vocoder chunk). Entering such a section is a safe
//! point: a thread already inside one steps out there while another thread captures, so a
//! capture never waits on a thread that waits for it. [`crate::GraphCache`] enters one for each
//! call and captures through [`exclusive`].

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

#[derive(Default)]
struct State {
    /// Threads inside a section (counted once however deeply nested).
    active: usize,
    /// The thread capturing, if one is.
    capturing: Option<ThreadId>,
}

struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

static GATE: Gate = Gate {
    state: Mutex::new(State {
        active: 0,
        capturing: None,
    }),
    changed: Condvar::new(),
};

thread_local! {
    /// How deeply this thread is nested in sections.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

fn lock() -> MutexGuard<'static, State> {
    GATE.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits while a thread other than this one captures.
fn wait_out_capture(mut state: MutexGuard<'static, State>) -> MutexGuard<'static, State> {
    let me = std::thread::current().id();
    while state.capturing.is_some_and(|t| t != me) {
        state = GATE.changed.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    state
}

/// A thread's section of device work; leaving it (drop) lets a waiting capture go on.
#[derive(Debug)]
#[must_use = "the section lasts as long as the guard"]
pub struct Section {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Enters a section of device work, after any capture another thread is running (a safe
/// point, even for a thread already inside a section).
pub fn enter() -> Section {
    let depth = DEPTH.with(Cell::get);
    let mut state = lock();
    let me = std::thread::current().id();
    if state.capturing.is_some_and(|t| t != me) {
        if depth > 0 {
            // Step out while the capture runs: it waits for every other section to end.
            state.active -= 1;
            GATE.changed.notify_all();
            state = wait_out_capture(state);
            state.active += 1;
        } else {
            state = wait_out_capture(state);
        }
    }
    if depth == 0 {
        state.active += 1;
    }
    drop(state);
    DEPTH.with(|d| d.set(depth + 1));
    Section {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        let depth = DEPTH.with(Cell::get) - 1;
        DEPTH.with(|d| d.set(depth));
        if depth == 0 {
            let mut state = lock();
            state.active -= 1;
            GATE.changed.notify_all();
        }
    }
}

/// Runs `f` inside a section of device work.
pub fn device_work<T>(f: impl FnOnce() -> T) -> T {
    let _section = enter();
    f()
}

/// Runs `f`, a wait on another thread (a result that thread computes), outside this thread's
/// section: a thread that waits inside one would hold back a capture the other thread needs
/// before it can finish. The section is entered again (a safe point) when `f` returns.
pub fn blocked<T>(f: impl FnOnce() -> T) -> T {
    let depth = DEPTH.with(Cell::get);
    if depth == 0 {
        return f();
    }
    {
        let mut state = lock();
        state.active -= 1;
        GATE.changed.notify_all();
    }
    DEPTH.with(|d| d.set(0));
    // Re-entered however `f` ends, so the outer section's guard still balances.
    struct Reenter(usize);
    impl Drop for Reenter {
        fn drop(&mut self) {
            let mut state = wait_out_capture(lock());
            state.active += 1;
            drop(state);
            DEPTH.with(|d| d.set(self.0));
        }
    }
    let _reenter = Reenter(depth);
    f()
}

/// One thread at a time through a part of a model, inside a section: Candle runs every
/// thread's ops on the device's one stream, so two threads calling one part interleave their
/// kernels, and a part whose consecutive kernels share a buffer (a library's workspace between
/// a product and its reduction) would read the other's. The wait for the lock happens outside
/// the caller's section ([`blocked`]), so a capture by the holder never waits on the waiters.
#[derive(Debug, Default)]
pub struct Serial(Mutex<()>);

impl Serial {
    /// Runs `f` holding the lock, inside a section.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = blocked(|| self.0.lock().unwrap_or_else(|e| e.into_inner()));
        device_work(f)
    }
}

/// Runs `f` (a capture) once no other thread is inside a section, holding every other
/// thread's new sections back until it returns.
pub fn exclusive<T>(f: impl FnOnce() -> T) -> T {
    let me = std::thread::current().id();
    let counted = DEPTH.with(Cell::get) > 0;
    let mut state = lock();
    if counted {
        state.active -= 1;
        GATE.changed.notify_all();
    }
    state = wait_out_capture(state);
    state.capturing = Some(me);
    while state.active > 0 {
        state = GATE.changed.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    drop(state);
    // Released however `f` ends, so a panicking capture does not stall every thread.
    struct Release(bool);
    impl Drop for Release {
        fn drop(&mut self) {
            let mut state = lock();
            state.capturing = None;
            if self.0 {
                state.active += 1;
            }
            GATE.changed.notify_all();
        }
    }
    let _release = Release(counted);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    /// The gate is process-wide: these tests run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn a_capture_waits_for_other_sections_and_holds_new_ones_back() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let in_work = Arc::new(AtomicBool::new(false));
        let overlapped = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(Barrier::new(2));
        let worker = {
            let (in_work, started) = (in_work.clone(), started.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    device_work(|| {
                        in_work.store(true, Ordering::SeqCst);
                        if i == 0 {
                            started.wait();
                        }
                        std::thread::sleep(Duration::from_millis(1));
                        in_work.store(false, Ordering::SeqCst);
                    });
                }
            })
        };
        started.wait();
        for _ in 0..5 {
            device_work(|| {
                exclusive(|| {
                    if in_work.load(Ordering::SeqCst) {
                        overlapped.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(3));
                    if in_work.load(Ordering::SeqCst) {
                        overlapped.fetch_add(1, Ordering::SeqCst);
                    }
                })
            });
        }
        worker.join().unwrap();
        assert_eq!(overlapped.load(Ordering::SeqCst), 0);
        assert_eq!(lock().active, 0);
    }

    #[test]
    fn nested_sections_and_captures_inside_them_do_not_deadlock() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..20 {
                        device_work(|| device_work(|| exclusive(|| device_work(|| ()))));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let state = lock();
        assert_eq!((state.active, state.capturing), (0, None));
    }

    /// A thread inside a section that waits for another thread's capture (through
    /// [`blocked`]) lets that capture run; the section holds again afterwards.
    #[test]
    fn a_blocked_wait_lets_the_awaited_capture_run() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            device_work(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                let capturer = std::thread::spawn(move || {
                    device_work(|| exclusive(|| tx.send(()).unwrap()));
                });
                blocked(|| rx.recv().unwrap());
                assert_eq!(DEPTH.with(Cell::get), 1);
                capturer.join().unwrap();
            });
            done_tx.send(()).unwrap();
        });
        done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the capture waited on a thread that waited for it");
        waiter.join().unwrap();
        let state = lock();
        assert_eq!((state.active, state.capturing), (0, None));
    }

    /// Threads inside sections queue on a [`Serial`] while its holder captures: the waiters
    /// are out of their sections, so the capture goes on, and only one thread is ever inside.
    #[test]
    fn serial_waiters_do_not_hold_back_the_holders_capture() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let part = Arc::new(Serial::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (part, inside, done_tx) = (part.clone(), inside.clone(), done_tx.clone());
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        device_work(|| {
                            part.run(|| {
                                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                                exclusive(|| std::thread::sleep(Duration::from_millis(1)));
                                inside.fetch_sub(1, Ordering::SeqCst);
                            })
                        });
                    }
                    done_tx.send(()).unwrap();
                })
            })
            .collect();
        for _ in 0..4 {
            done_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a capture waited on a thread queued for the lock");
        }
        for t in threads {
            t.join().unwrap();
        }
        let state = lock();
        assert_eq!((state.active, state.capturing), (0, None));
    }
}
