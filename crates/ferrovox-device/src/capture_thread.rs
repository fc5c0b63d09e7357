//! One long-lived thread that runs every CUDA graph capture.
//!
//! Candle keeps the host data a capture uploads (small index and parameter arrays) in a
//! thread-local cache, and the graph copies from those buffers at every replay. When the
//! thread that captured ends, its cache is freed and later replays read whatever the
//! allocator put there since: a stream's worker thread or a request's thread captures, exits,
//! and the next request's audio is wrong. Captures made on this thread keep their buffers for
//! the life of the process.

use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Worker {
    jobs: Mutex<Sender<Job>>,
    id: ThreadId,
}

fn worker() -> &'static Worker {
    static WORKER: OnceLock<Worker> = OnceLock::new();
    WORKER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("ferrovox-graph-capture".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })
            .expect("spawning the graph capture thread");
        Worker {
            jobs: Mutex::new(jobs),
            id: handle.thread().id(),
        }
    })
}

/// Runs `f` on the capture thread and returns its result (a panic in `f` resumes here),
/// blocking until it is done; on the capture thread itself, runs it in place.
pub fn run<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let worker = worker();
    if std::thread::current().id() == worker.id {
        return f();
    }
    let (done, answer) = mpsc::channel();
    let job: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = done.send(result);
    });
    // SAFETY: the job borrows from this frame; this function returns only after the job has
    // run to its end (its result received) or was dropped unrun (the send failed, or the
    // worker dropped it, which closes `done` first), so no borrow outlives the frame.
    let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
    let sent = worker
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job);
    if let Err(unsent) = sent {
        drop(unsent);
        panic!("the graph capture thread has stopped");
    }
    match answer.recv() {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("the graph capture thread dropped a capture"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_one_thread_that_outlives_their_callers() {
        let ids: Vec<ThreadId> = (0..3)
            .map(|_| std::thread::spawn(|| run(|| std::thread::current().id())))
            .map(|t| t.join().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(ids[0], std::thread::current().id());
        let borrowed = [1, 2, 3];
        assert_eq!(run(|| borrowed.iter().sum::<i32>()), 6);
        assert_eq!(run(|| run(|| 7)), 7, "a nested call runs in place");
    }

    #[test]
    fn a_panic_in_a_job_reaches_its_caller_and_the_thread_goes_on() {
        let caught = std::panic::catch_unwind(|| run(|| panic!("boom")));
        assert!(caught.is_err());
        assert_eq!(run(|| 5), 5);
    }
}
