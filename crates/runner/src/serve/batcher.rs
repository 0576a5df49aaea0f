//! The bounded queue in front of the model (an embedder or a reranker) and the worker thread that packs queued
//! inputs into batches.
//!
//! A request is admitted only while fewer than `max_concurrent` are admitted and unanswered ([`Batcher::admit`]);
//! otherwise it is turned away at once. Admitted requests send their token sequences to one worker thread, which
//! runs the model on everything waiting, up to `max_batch_tokens` tokens per batch. Batches are filled round-robin,
//! one input of each waiting request in turn, so a one-text request is in the next batch however large the
//! requests before it. Activations are quantized per row, so an input's embedding does not depend on its batch.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use swap::{Embedder, PairTokens, Reranker};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::metrics::Metrics;

/// What the worker runs.
pub enum ServedModel {
    /// Pooled embeddings of single texts.
    Embedder(Box<Embedder>),
    /// Raw scores of (query, document) pairs.
    Reranker(Arc<Reranker>),
}

impl ServedModel {
    /// One row per sequence: an embedder's pooled (not yet normalised) embedding, a reranker's `[score]`.
    fn run(&self, batch: &[PairTokens]) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Embedder(e) => e.pool_token_ids(&batch.iter().map(|s| s.ids.clone()).collect::<Vec<_>>()),
            Self::Reranker(r) => Ok(r.score_tokens(batch)?.into_iter().map(|s| vec![s]).collect()),
        }
    }
}

/// The model's rows for one request's sequences, in order, or why the model failed.
type Reply = std::result::Result<Vec<Vec<f32>>, String>;

/// One request's work for the model.
struct Job {
    sequences: Vec<PairTokens>,
    reply: oneshot::Sender<Reply>,
}

/// The admission limit and the queue to the model worker.
pub struct Batcher {
    admission: Arc<Semaphore>,
    capacity: usize,
    jobs: mpsc::Sender<Job>,
}

/// A request's place in the queue; it is given back when dropped.
pub struct Place {
    _permit: OwnedSemaphorePermit,
}

impl Batcher {
    /// Moves `model` onto a new worker thread, which runs until the returned [`Batcher`] (the queue's sender) is
    /// dropped and the jobs already sent are answered; join the returned handle to wait for that.
    pub fn start(
        model: ServedModel,
        max_batch_tokens: usize,
        max_concurrent: usize,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, JoinHandle<()>)> {
        let (jobs, queue) = mpsc::channel(max_concurrent);
        let worker = std::thread::Builder::new()
            .name("model".into())
            .spawn(move || work(&model, queue, max_batch_tokens, &metrics))
            .context("cannot start the model thread")?;
        let batcher = Self { admission: Arc::new(Semaphore::new(max_concurrent)), capacity: max_concurrent, jobs };
        Ok((batcher, worker))
    }

    /// A place in the queue, or a 503 when `max_concurrent` requests are already admitted.
    pub fn admit(&self) -> std::result::Result<Place, ApiError> {
        match Arc::clone(&self.admission).try_acquire_owned() {
            Ok(permit) => Ok(Place { _permit: permit }),
            Err(_) => Err(ApiError::overloaded(self.capacity)),
        }
    }

    /// Requests admitted and not answered yet.
    pub fn depth(&self) -> usize {
        self.capacity - self.admission.available_permits()
    }

    /// The most requests admitted at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The model's rows for `sequences` (each within the model's length), in order (see [`ServedModel`]); the
    /// caller holds a [`Place`] while it waits. Dropping the future drops the request's remaining inputs.
    pub async fn run(&self, sequences: Vec<PairTokens>) -> std::result::Result<Vec<Vec<f32>>, ApiError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ApiError::internal("the model worker has stopped");
        self.jobs.send(Job { sequences, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(|e| ApiError::internal(format!("the model failed: {e}")))
    }
}

/// A queued job and the rows computed for it so far.
struct Pending {
    job: Job,
    /// Sequences handed to a batch so far (taken out of `job.sequences`).
    scheduled: usize,
    done: Vec<Vec<f32>>,
    failed: Option<String>,
}

/// The worker loop: wait for work, take everything queued, run a batch ([`fill_batch`]), answer each job once all
/// its sequences are done.
fn work(model: &ServedModel, mut queue: mpsc::Receiver<Job>, max_batch_tokens: usize, metrics: &Metrics) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match queue.blocking_recv() {
                Some(job) => pending.push_back(Pending::new(job)),
                None => return,
            }
        }
        while let Ok(job) = queue.try_recv() {
            pending.push_back(Pending::new(job));
        }
        // Clients that went away need no answer.
        pending.retain(|p| !p.job.reply.is_closed());

        let (batch, owners, tokens) = fill_batch(&mut pending, max_batch_tokens);
        if batch.is_empty() {
            continue;
        }
        metrics.record_batch(batch.len(), tokens);
        // A panic in the model answers this batch's requests with an error and leaves the server running.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| model.run(&batch)))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the model panicked")));
        match result {
            Ok(rows) => rows.into_iter().zip(&owners).for_each(|(row, &index)| pending[index].done.push(row)),
            Err(e) => owners.iter().for_each(|&index| pending[index].failed = Some(format!("{e:#}"))),
        }

        let mut waiting = VecDeque::with_capacity(pending.len());
        for mut p in pending.drain(..) {
            // A client that went away meanwhile gets nothing; the send error says so and is ignored.
            if let Some(e) = p.failed.take() {
                let _ = p.job.reply.send(Err(e));
            } else if p.done.len() == p.job.sequences.len() {
                let _ = p.job.reply.send(Ok(p.done));
            } else {
                waiting.push_back(p);
            }
        }
        pending = waiting;
    }
}

/// The next batch: up to `max_batch_tokens` tokens (at least one sequence), taken round-robin from the pending
/// jobs, one sequence of each in turn, in their order; with the index of each sequence's job and the token count.
fn fill_batch(pending: &mut VecDeque<Pending>, max_batch_tokens: usize) -> (Vec<PairTokens>, Vec<usize>, usize) {
    let (mut batch, mut owners, mut tokens) = (Vec::new(), Vec::new(), 0);
    loop {
        let mut took_any = false;
        for (index, p) in pending.iter_mut().enumerate() {
            let Some(next) = p.job.sequences.get_mut(p.scheduled) else { continue };
            if !batch.is_empty() && tokens + next.ids.len() > max_batch_tokens {
                return (batch, owners, tokens);
            }
            tokens += next.ids.len();
            batch.push(std::mem::take(next));
            owners.push(index);
            p.scheduled += 1;
            took_any = true;
        }
        if !took_any {
            return (batch, owners, tokens);
        }
    }
}

impl Pending {
    fn new(job: Job) -> Self {
        let count = job.sequences.len();
        Self { job, scheduled: 0, done: Vec::with_capacity(count), failed: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job of sequences of these lengths.
    fn pending(lengths: &[usize]) -> Pending {
        let (reply, _answer) = oneshot::channel();
        let sequences = lengths.iter().map(|&n| PairTokens { ids: vec![1; n], ..Default::default() }).collect();
        Pending::new(Job { sequences, reply })
    }

    #[test]
    fn batches_take_one_input_of_each_request_in_turn() {
        let mut queue: VecDeque<Pending> = [pending(&[4; 100]), pending(&[4]), pending(&[2, 2])].into();
        let (batch, owners, tokens) = fill_batch(&mut queue, 16);
        assert_eq!((owners, tokens, batch.len()), (vec![0, 1, 2, 0, 2], 16, 5), "the small jobs are in the first");
        assert_eq!(batch.iter().map(|s| s.ids.len()).collect::<Vec<_>>(), [4, 4, 2, 4, 2]);
        let (_, owners, tokens) = fill_batch(&mut queue, 16);
        assert_eq!((owners, tokens), (vec![0; 4], 16));
    }

    #[test]
    fn a_sequence_over_the_budget_is_a_batch_of_its_own() {
        let mut queue: VecDeque<Pending> = [pending(&[40, 3])].into();
        assert_eq!(fill_batch(&mut queue, 16).1, [0]);
        assert_eq!(fill_batch(&mut queue, 16).2, 3);
        assert!(fill_batch(&mut queue, 16).0.is_empty());
    }
}
