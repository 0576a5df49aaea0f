//! Counters and histograms of the server, written as Prometheus text (exposition format 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Latency bucket bounds in seconds.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Bounds for inputs per batch.
const INPUT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Bounds for tokens per batch.
const TOKEN_BUCKETS: &[f64] = &[16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0];

/// Cumulative-bucket histogram.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// `counts[i]`: observations `<= bounds[i]` and above the bound before (not cumulative yet).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// Writes `name_bucket`, `name_sum` and `name_count`; `labels` is empty or `key="value",...`.
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug)]
struct Inner {
    /// Answers by (path, status).
    responses: BTreeMap<(String, u16), u64>,
    /// Latency by path.
    latency: BTreeMap<String, Histogram>,
    batch_inputs: Histogram,
    batch_tokens: Histogram,
}

/// The server's counters; shared by the HTTP handlers and the batch worker.
#[derive(Debug)]
pub struct Metrics(Mutex<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self(Mutex::new(Inner {
            responses: BTreeMap::new(),
            latency: BTreeMap::new(),
            batch_inputs: Histogram::new(INPUT_BUCKETS),
            batch_tokens: Histogram::new(TOKEN_BUCKETS),
        }))
    }
}

impl Metrics {
    /// Records one answered request: its route (`path`), status and time from arrival to answer.
    pub fn record_request(&self, path: &str, status: u16, elapsed: Duration) {
        let mut inner = self.lock();
        *inner.responses.entry((path.to_string(), status)).or_default() += 1;
        inner
            .latency
            .entry(path.to_string())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    /// Records one model batch of `inputs` sequences holding `tokens` tokens together.
    pub fn record_batch(&self, inputs: usize, tokens: usize) {
        let mut inner = self.lock();
        inner.batch_inputs.observe(inputs as f64);
        inner.batch_tokens.observe(tokens as f64);
    }

    /// The Prometheus text: request and error counts, the queue gauges, batch sizes and the latency histogram.
    pub fn render(&self, queue_depth: usize, queue_capacity: usize) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let name = "runner_requests_total";
        header(&mut out, name, "counter", "HTTP requests answered, by route and status.");
        for ((path, status), n) in &inner.responses {
            let _ = writeln!(out, "{name}{{path=\"{path}\",status=\"{status}\"}} {n}");
        }
        let name = "runner_request_errors_total";
        header(&mut out, name, "counter", "HTTP requests answered with an error status (4xx or 5xx).");
        for ((path, status), n) in inner.responses.iter().filter(|((_, status), _)| *status >= 400) {
            let _ = writeln!(out, "{name}{{path=\"{path}\",status=\"{status}\"}} {n}");
        }
        let name = "runner_queue_depth";
        header(&mut out, name, "gauge", "Embedding requests admitted and not answered yet.");
        let _ = writeln!(out, "{name} {queue_depth}");
        let name = "runner_queue_capacity";
        header(
            &mut out,
            name,
            "gauge",
            "Embedding requests admitted at most at once (--max-concurrent); more get 503.",
        );
        let _ = writeln!(out, "{name} {queue_capacity}");
        let name = "runner_batch_inputs";
        header(&mut out, name, "histogram", "Inputs per model batch.");
        inner.batch_inputs.write(&mut out, name, "");
        let name = "runner_batch_tokens";
        header(&mut out, name, "histogram", "Tokens per model batch.");
        inner.batch_tokens.write(&mut out, name, "");
        let name = "runner_request_duration_seconds";
        header(&mut out, name, "histogram", "Time from a request's arrival to its answer, by route.");
        for (path, histogram) in &inner.latency {
            histogram.write(&mut out, name, &format!("path=\"{path}\""));
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; they are still worth reporting.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.record_request("/embed", 200, Duration::from_millis(3));
        metrics.record_request("/embed", 200, Duration::from_millis(30));
        metrics.record_request("/embed", 413, Duration::from_micros(200));
        metrics.record_batch(1, 12);
        metrics.record_batch(5, 70);
        let text = metrics.render(2, 64);
        for line in [
            "runner_requests_total{path=\"/embed\",status=\"200\"} 2",
            "runner_requests_total{path=\"/embed\",status=\"413\"} 1",
            "runner_request_errors_total{path=\"/embed\",status=\"413\"} 1",
            "runner_queue_depth 2",
            "runner_queue_capacity 64",
            "runner_batch_inputs_bucket{le=\"1\"} 1",
            "runner_batch_inputs_bucket{le=\"4\"} 1",
            "runner_batch_inputs_bucket{le=\"8\"} 2",
            "runner_batch_inputs_bucket{le=\"+Inf\"} 2",
            "runner_batch_inputs_sum 6",
            "runner_batch_tokens_count 2",
            "runner_request_duration_seconds_bucket{path=\"/embed\",le=\"0.001\"} 1",
            "runner_request_duration_seconds_bucket{path=\"/embed\",le=\"0.005\"} 2",
            "runner_request_duration_seconds_bucket{path=\"/embed\",le=\"+Inf\"} 3",
            "runner_request_duration_seconds_count{path=\"/embed\"} 3",
            "# TYPE runner_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("runner_request_errors_total{path=\"/embed\",status=\"200\"}"));
    }
}
