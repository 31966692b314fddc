import type { Metric } from 'prom-client';

/**
 * A counter and a latency histogram of the same observations, by the same labels, for what
 * happens on every call or request (`concord_calls_total` / `concord_call_duration_seconds`,
 * `concord_http_requests_total` / `concord_http_request_duration_seconds`). Observations are
 * counted and bucketed in plain arrays under a tree of maps by label value, and the Prometheus
 * series are built from them when `/metrics` is scraped: an observation costs a map lookup per
 * label and a few array writes. prom-client's labelled `inc` and `observe` validate and hash
 * the label object every time, which at 150k calls a second was a tenth of a node's CPU.
 */

interface Series {
  readonly labels: Readonly<Record<string, string>>;
  count: number;
  sum: number;
  /** Observations per latency bucket (not cumulative); the last slot is above the largest bound. */
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

/** A tree of maps, one level per label, whose leaves are the series. */
type Level = Map<string, Level | Series>;

export class LatencyMetrics<Label extends string> {
  private root: Level = new Map();
  private series: Series[] = [];

  /** `labelNames`: the labels every observation gives values for, in this order. */
  constructor(
    private readonly labelNames: readonly Label[],
    private readonly bounds: readonly number[],
  ) {}

  /** One observation of `seconds` for the label values `values` (in the order of labelNames). */
  record(values: readonly string[], seconds: number): void {
    const series = this.seriesOf(values);
    series.count++;
    series.sum += seconds;
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    series.buckets[i]!++;
  }

  /** Observations recorded with these label values (0 if none). */
  count(values: readonly string[]): number {
    let level: Level | Series | undefined = this.root;
    for (const value of values) {
      if (!(level instanceof Map)) return 0;
      level = level.get(value);
    }
    return level === undefined || level instanceof Map ? 0 : level.count;
  }

  reset(): void {
    this.root = new Map();
    this.series = [];
  }

  /** The counter `name` (observations by label), as a metric prom-client's registry serves. */
  counter(name: string, help: string): Metric {
    return this.metric(name, () => ({
      name,
      help,
      type: 'counter',
      aggregator: 'sum',
      values: this.series.map((series) => ({ value: series.count, labels: { ...series.labels } })),
    }));
  }

  /** The histogram `name` (latency by label, in seconds), likewise. */
  histogram(name: string, help: string): Metric {
    return this.metric(name, () => {
      const values: ExportedValue[] = [];
      for (const series of this.series) {
        const labels = series.labels;
        let cumulative = 0;
        this.bounds.forEach((le, i) => {
          cumulative += series.buckets[i]!;
          values.push({ value: cumulative, labels: { ...labels, le }, metricName: `${name}_bucket` });
        });
        values.push(
          { value: series.count, labels: { ...labels, le: '+Inf' }, metricName: `${name}_bucket` },
          { value: series.sum, labels: { ...labels }, metricName: `${name}_sum` },
          { value: series.count, labels: { ...labels }, metricName: `${name}_count` },
        );
      }
      return { name, help, type: 'histogram', aggregator: 'sum', values };
    });
  }

  private seriesOf(values: readonly string[]): Series {
    if (values.length !== this.labelNames.length) {
      throw new TypeError(`expected values for the labels ${this.labelNames.join(', ')}`);
    }
    let level = this.root;
    const last = values.length - 1;
    for (let i = 0; i < last; i++) {
      let next = level.get(values[i]!) as Level | undefined;
      if (next === undefined) {
        next = new Map();
        level.set(values[i]!, next);
      }
      level = next;
    }
    let series = level.get(values[last]!) as Series | undefined;
    if (series === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((label, i) => {
        labels[label] = values[i]!;
      });
      series = { labels, count: 0, sum: 0, buckets: new Float64Array(this.bounds.length + 1) };
      level.set(values[last]!, series);
      this.series.push(series);
    }
    return series;
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
