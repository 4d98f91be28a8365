//! The store's write thread: where the async side of its large write transactions runs.
//!
//! sqlx runs each SQLite connection on a thread of its own and drives it from async code:
//! every statement of a transaction is a round trip between that thread and the task
//! that awaits it. On the node's runtime that task queues behind the network's work (a
//! full sync decodes and decrypts ~160 MB of frames on the same two workers), and the
//! write connection, the bottleneck of every sync and import, waited for it. Measured
//! in a full sync of 100 000 records on 2 cores (docs/PROTOCOL.md §11), the async side of
//! the writes used ~0.7 core-seconds that it used to take from the network's workers.
//!
//! One thread per store, with a current-thread runtime of its own, runs the jobs one
//! after another (writes are serialised by the one write connection anyway). It ends
//! when the last handle of the store is dropped. The write connection is opened from it
//! (its first job), so that sqlx's thread for that connection, like this one, keeps the
//! priority the process started with (`crate::priority`).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::pin::Pin;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A handle on the write thread; clones share it (the thread ends when the last is
/// dropped and its queue closes).
#[derive(Debug, Clone)]
pub(super) struct WriteThread {
    jobs: mpsc::UnboundedSender<Job>,
}

impl WriteThread {
    /// Starts the write thread of the store at `path` (named after it in errors).
    pub(super) fn start(path: &Path) -> Result<Self, StoreError> {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        // At the priority the process started with (`crate::priority`), as is the write
        // connection's thread, which the store starts from this one.
        crate::priority::spawn_unlowered("coalition-store-writer", move || {
            runtime.block_on(async move {
                while let Some(job) = queue.recv().await {
                    job.await;
                }
            });
        })
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(WriteThread { jobs })
    }

    /// Runs `work` on the write thread after the jobs queued before it; its output. A
    /// panic in `work` is a bug: it is raised again here, in the caller, and the thread
    /// goes on with the next job. If the caller stops waiting, `work` still runs to its
    /// end (a transaction it began commits or rolls back as it would have).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let (done, output) = oneshot::channel();
        let job: Job = Box::pin(async move {
            let _ = done.send(AssertUnwindSafe(work).catch_unwind().await);
        });
        if self.jobs.send(job).is_err() {
            unreachable!("the write thread runs as long as a store handle exists");
        }
        match output.await {
            Ok(Ok(out)) => out,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => unreachable!("the write thread finishes every job it is given"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_on_the_write_thread() {
        let thread = WriteThread::start(Path::new("test.db")).unwrap();
        let mut names = Vec::new();
        for i in 0..3 {
            let (i2, name) = thread
                .run(async move {
                    tokio::task::yield_now().await;
                    (i, std::thread::current().name().map(str::to_owned))
                })
                .await;
            assert_eq!(i2, i);
            names.push(name);
        }
        assert!(names
            .iter()
            .all(|n| n.as_deref() == Some("coalition-store-writer")));
    }

    #[tokio::test]
    async fn a_panicking_job_panics_its_caller_and_the_thread_goes_on() {
        let thread = WriteThread::start(Path::new("test.db")).unwrap();
        let t = thread.clone();
        let panicked = tokio::spawn(async move { t.run(async { panic!("bug") }).await });
        assert!(panicked.await.unwrap_err().is_panic());
        assert_eq!(thread.run(async { 7 }).await, 7);
    }
}
