// Follows a background job through the one jobs endpoint until it finishes.
// A slide whose job is still queued or running after a reload is simply followed again.
import { api, type Job } from '../api';
import { isJobFinished } from './format';

export interface PollOptions {
  signal: AbortSignal;
  onUpdate: (job: Job) => void;
  intervalMs?: number;
  maxIntervalMs?: number;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = window.setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done(): void {
      window.clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

/**
 * Poll GET /api/jobs/{id}/ until the job succeeds or fails; resolves with the last job seen
 * (or null when aborted). The interval grows slowly while nothing changes, and after errors.
 */
export async function followJob(jobId: number, opts: PollOptions): Promise<Job | null> {
  const base = opts.intervalMs ?? 1000;
  const max = opts.maxIntervalMs ?? 5000;
  let interval = base;
  let failures = 0;
  let lastKey = '';
  while (!opts.signal.aborted) {
    try {
      const job = await api.job(jobId);
      if (opts.signal.aborted) return null;
      failures = 0;
      opts.onUpdate(job);
      if (isJobFinished(job)) return job;
      const key = `${job.status}:${job.progress}:${job.message}`;
      interval = key === lastKey ? Math.min(max, interval * 1.3) : base;
      lastKey = key;
    } catch (err) {
      failures += 1;
      if (failures >= 5) throw err;
      interval = Math.min(max, interval * 2);
    }
    await sleep(interval, opts.signal);
  }
  return null;
}
