//! Thread priorities: the store's single writer is preferred over the node's other work.
//!
//! Every full sync and import is bounded by the one SQLite write connection (docs/PROTOCOL.md
//! §11). On a machine with few cores its thread lost a second or more per 100 000 records
//! waiting for a core while the network, the verification threads and the reader
//! connections ran. The `coalition` binary therefore lowers its main thread to
//! [`BACKGROUND_NICE`] under `SCHED_BATCH` (no wakeup preemption of a running thread)
//! before it starts anything else, so that every other thread inherits that (the
//! runtime's workers, sqlx's reader connections, the verification pool), and starts the
//! store's write thread and its write connection from a thread that kept the priority
//! the process started with ([`spawn_unlowered`]). An unprivileged thread may lower its
//! own priority but never raise it again, so the order matters: the unlowered spawner is
//! started first, by the main thread ([`keep_spawner`]). Measured in PROTOCOL §11.
//!
//! Nothing here is needed for correctness. Where a call fails (another OS, a sandbox
//! that forbids it) the thread keeps its priority and the node runs as before.

use std::io;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

/// The nice value of the node's threads other than the store's writer: low enough that
/// the writer wins a contended core, high enough that nothing starves (weight 335 against
/// the writer's 1 024).
pub const BACKGROUND_NICE: i32 = 5;

/// Cross-platform value (0–99) that `thread-priority` maps to nice 5 under a normal
/// policy on Linux (checked by the test below).
#[cfg(target_os = "linux")]
const BACKGROUND_VALUE: u8 = 35;

type Spawn = Box<dyn FnOnce() + Send>;

/// The thread that starts unlowered threads, if [`keep_spawner`] was called.
static SPAWNER: OnceLock<Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();

/// Starts the thread that [`spawn_unlowered`] starts threads from. Call it from the
/// main thread before any thread lowers its priority (the new thread inherits the
/// caller's priority, and keeps it).
pub fn keep_spawner() {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Spawn>();
        let started = std::thread::Builder::new()
            .name("coalition-spawner".into())
            .spawn(move || {
                for spawn in rx {
                    spawn();
                }
            });
        if let Err(e) = started {
            tracing::debug!(error = %e, "no thread to start the store's writer from; it runs at the priority of its caller");
        }
        Mutex::new(tx)
    });
}

/// Lowers the calling thread to [`BACKGROUND_NICE`] under `SCHED_BATCH` (Linux; a no-op
/// elsewhere); threads it starts afterwards inherit that.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
        };
        let lowered = ThreadPriorityValue::try_from(BACKGROUND_VALUE)
            .map_err(|e| e.to_string())
            .and_then(|value| {
                set_thread_priority_and_policy(
                    thread_native_id(),
                    ThreadPriority::Crossplatform(value),
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
                )
                .map_err(|e| format!("{e:?}"))
            });
        if let Err(e) = lowered {
            tracing::debug!(error = %e, "thread priority left as it was");
        }
    }
}

/// Starts a thread named `name` running `work` at the priority the process started
/// with: from the spawner thread if [`keep_spawner`] was called, else from the caller.
pub(crate) fn spawn_unlowered(
    name: &str,
    work: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let builder = std::thread::Builder::new().name(name.to_owned());
    let Some(spawner) = SPAWNER.get() else {
        return builder.spawn(work);
    };
    let (done, started) = mpsc::sync_channel(1);
    let spawn: Spawn = Box::new(move || {
        let _ = done.send(builder.spawn(work));
    });
    let sent = spawner
        .lock()
        .map_err(|_| io::Error::other("the spawner thread's lock is poisoned"))?
        .send(spawn);
    if let Err(mpsc::SendError(spawn)) = sent {
        // The spawner thread could not be started: start the thread from here.
        spawn();
    }
    started
        .recv()
        .map_err(|_| io::Error::other("the spawner thread stopped"))?
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's nice value and scheduling policy, from /proc.
    fn nice_and_policy() -> (i32, u32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name in parentheses: nice is the 19th of the line, the
        // policy the 41st.
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        (rest[16].parse().unwrap(), rest[38].parse().unwrap())
    }

    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;

    #[test]
    fn a_lowered_thread_runs_at_nice_5_under_sched_batch_and_so_do_its_children() {
        if nice_and_policy() != (0, SCHED_OTHER) {
            return; // the tests run lowered already (`nice cargo test`): nothing to see
        }
        let (own, child) = std::thread::spawn(|| {
            lower_this_thread();
            (
                nice_and_policy(),
                std::thread::spawn(nice_and_policy).join().unwrap(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(own, (BACKGROUND_NICE, SCHED_BATCH));
        assert_eq!(child, (BACKGROUND_NICE, SCHED_BATCH));
    }

    #[test]
    fn a_thread_spawned_unlowered_from_a_lowered_one_keeps_the_start_priority() {
        if nice_and_policy() != (0, SCHED_OTHER) {
            return;
        }
        keep_spawner();
        let (lowered, unlowered) = std::thread::spawn(|| {
            lower_this_thread();
            let (tx, rx) = mpsc::channel();
            spawn_unlowered("test-unlowered", move || {
                tx.send(nice_and_policy()).unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
            (nice_and_policy(), rx.recv().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (BACKGROUND_NICE, SCHED_BATCH));
        assert_eq!(unlowered, (0, SCHED_OTHER));
    }
}
