//! Answers from a writer thread to the callers waiting for them, handed to each caller's worker
//! thread in one go. A caller awaits its answer on an actix worker; answered one by one from the
//! writer thread, every answer could wake that worker again and let it preempt the writer mid-batch.
//! Handed over as one task per worker thread, a batch of answers costs each worker one wake-up,
//! and the writer gets on with its next batch instead of waking callers in turn.

use std::thread::ThreadId;

use tokio::sync::oneshot;

/// Where a caller waits: its worker thread (any thread outside actix is answered directly).
#[derive(Clone)]
pub struct Caller {
    thread: ThreadId,
    worker: Option<actix_rt::ArbiterHandle>,
}

impl Caller {
    /// The caller on the current thread.
    pub fn here() -> Self {
        Self {
            thread: std::thread::current().id(),
            worker: actix_rt::Arbiter::try_current(),
        }
    }
}

/// An answer and where it goes.
type Answer<T> = (oneshot::Sender<T>, T);

/// A batch's answers, grouped by the thread their callers wait on.
pub struct Answers<T> {
    by_thread: Vec<(Caller, Vec<Answer<T>>)>,
}

impl<T> Default for Answers<T> {
    fn default() -> Self {
        Self {
            by_thread: Vec::new(),
        }
    }
}

impl<T: Send + 'static> Answers<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `reply` (from `caller`) with `answer` when the batch is [`deliver`](Self::deliver)ed.
    pub fn add(&mut self, caller: Caller, reply: oneshot::Sender<T>, answer: T) {
        // A handful of worker threads: a list beats a map.
        match self
            .by_thread
            .iter_mut()
            .find(|(known, _)| known.thread == caller.thread)
        {
            Some((_, answers)) => answers.push((reply, answer)),
            None => self.by_thread.push((caller, vec![(reply, answer)])),
        }
    }

    /// Hands each worker thread its answers. A worker that has stopped drops them, which its callers
    /// (gone with it) would hear as a cancellation.
    pub fn deliver(self) {
        for (caller, answers) in self.by_thread {
            let answer_all = move || {
                for (reply, answer) in answers {
                    let _ = reply.send(answer);
                }
            };
            match caller.worker {
                Some(worker) => {
                    worker.spawn_fn(answer_all);
                }
                None => answer_all(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller on a worker thread (an actix arbiter), learnt on that thread.
    fn caller_on(worker: &actix_rt::Arbiter) -> Caller {
        let (sender, receiver) = std::sync::mpsc::channel();
        worker.spawn_fn(move || sender.send(Caller::here()).unwrap());
        receiver.recv().unwrap()
    }

    /// Callers on two worker threads and one outside actix each get their own answer.
    #[test]
    fn every_caller_gets_its_own_answer() {
        let _system = actix_rt::System::new();
        let workers = [actix_rt::Arbiter::new(), actix_rt::Arbiter::new()];
        let mut callers: Vec<Caller> = workers.iter().map(caller_on).collect();
        callers.push(std::thread::spawn(Caller::here).join().unwrap());
        assert!(callers[2].worker.is_none(), "a thread outside actix");
        let mut answers = Answers::new();
        let mut waiting = Vec::new();
        for k in 0..3 {
            for (n, caller) in callers.iter().enumerate() {
                let (reply, answer) = oneshot::channel();
                answers.add(caller.clone(), reply, (n, k));
                waiting.push(((n, k), answer));
            }
        }
        assert_eq!(answers.by_thread.len(), 3, "one hand-over per thread");
        answers.deliver();
        for (expected, answer) in waiting {
            assert_eq!(answer.blocking_recv().unwrap(), expected);
        }
        for worker in workers {
            worker.stop();
            worker.join().unwrap();
        }
    }

    /// A worker that has stopped cannot answer: its callers hear that their wait was cancelled.
    #[test]
    fn a_stopped_worker_s_callers_hear_a_cancellation() {
        let _system = actix_rt::System::new();
        let worker = actix_rt::Arbiter::new();
        let caller = caller_on(&worker);
        worker.stop();
        worker.join().unwrap();
        let mut answers = Answers::new();
        let (reply, answer) = oneshot::channel();
        answers.add(caller, reply, ());
        answers.deliver();
        assert!(answer.blocking_recv().is_err());
    }
}
