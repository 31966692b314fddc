import type { Metric } from 'prom-client';

/**
 * `concord_calls_total` and `concord_call_duration_seconds`: every entity call is counted and
 * its latency bucketed in plain arrays keyed by kind and outcome, and the two Prometheus
 * series are built from them when `/metrics` is scraped. A call costs two map lookups and a
 * few array writes; prom-client's labelled `inc`/`observe` validated and hashed the label
 * object on every call, which at 150k calls a second was a tenth of the node's CPU.
 */

interface Series {
  count: number;
  sum: number;
  /** Calls per latency bucket (not cumulative); the last slot is above the largest bound. */
  readonly buckets: Float64Array;
}

/** What prom-client's registry reads from a metric when it serves `/metrics`. */
interface ExportedValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}
interface ExportedMetric {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  aggregator: 'sum';
  values: ExportedValue[];
}

export class CallMetrics<Outcome extends string> {
  private readonly byKind = new Map<string, Map<Outcome, Series>>();

  constructor(private readonly bounds: readonly number[]) {}

  record(kind: string, outcome: Outcome, seconds: number): void {
    let byOutcome = this.byKind.get(kind);
    if (byOutcome === undefined) {
      byOutcome = new Map();
      this.byKind.set(kind, byOutcome);
    }
    let series = byOutcome.get(outcome);
    if (series === undefined) {
      series = { count: 0, sum: 0, buckets: new Float64Array(this.bounds.length + 1) };
      byOutcome.set(outcome, series);
    }
    series.count++;
    series.sum += seconds;
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    series.buckets[i]!++;
  }

  /** Calls recorded for `kind` with `outcome` (0 if none). */
  count(kind: string, outcome: Outcome): number {
    return this.byKind.get(kind)?.get(outcome)?.count ?? 0;
  }

  reset(): void {
    this.byKind.clear();
  }

  /** The counter `name` (calls by kind and outcome), as a metric prom-client's registry serves. */
  counter(name: string, help: string): Metric {
    return this.metric(name, () => ({
      name,
      help,
      type: 'counter',
      aggregator: 'sum',
      values: this.each((labels, series) => [{ value: series.count, labels }]),
    }));
  }

  /** The histogram `name` (latency by kind and outcome, in seconds), likewise. */
  histogram(name: string, help: string): Metric {
    return this.metric(name, () => ({
      name,
      help,
      type: 'histogram',
      aggregator: 'sum',
      values: this.each((labels, series) => {
        const values: ExportedValue[] = [];
        let cumulative = 0;
        this.bounds.forEach((le, i) => {
          cumulative += series.buckets[i]!;
          values.push({ value: cumulative, labels: { ...labels, le }, metricName: `${name}_bucket` });
        });
        values.push(
          { value: series.count, labels: { ...labels, le: '+Inf' }, metricName: `${name}_bucket` },
          { value: series.sum, labels, metricName: `${name}_sum` },
          { value: series.count, labels, metricName: `${name}_count` },
        );
        return values;
      }),
    }));
  }

  private each(
    values: (labels: { kind: string; outcome: Outcome }, series: Series) => ExportedValue[],
  ): ExportedValue[] {
    const out: ExportedValue[] = [];
    for (const [kind, byOutcome] of this.byKind) {
      for (const [outcome, series] of byOutcome) out.push(...values({ kind, outcome }, series));
    }
    return out;
  }

  private metric(name: string, get: () => ExportedMetric): Metric {
    const metric = {
      name,
      get: async () => get(),
      reset: () => this.reset(),
    };
    // prom-client's registry needs only these members of a metric (name, get, reset); its
    // types admit only its own classes, hence the cast.
    return metric as unknown as Metric;
  }
}
