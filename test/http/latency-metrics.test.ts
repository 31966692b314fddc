import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { LatencyMetrics } from '../../src/latency-metrics.js';

/** The per-call counters behind concord_calls_total, concord_call_duration_seconds and the HTTP request metrics. */
describe('LatencyMetrics', () => {
  function registryWith(metrics: LatencyMetrics<'kind' | 'outcome'>): Registry {
    const registry = new Registry();
    registry.setDefaultLabels({ node: 'n1' });
    registry.registerMetric(metrics.counter('test_calls_total', 'calls'));
    registry.registerMetric(metrics.histogram('test_call_seconds', 'latency'));
    return registry;
  }

  it('serves counts and cumulative buckets in the Prometheus text format, by kind and outcome', async () => {
    const metrics = new LatencyMetrics(['kind', 'outcome'], [0.001, 0.01, 0.1]);
    for (const seconds of [0.0005, 0.001, 0.005, 0.05, 0.5]) metrics.record(['counter', 'ok'], seconds);
    metrics.record(['counter', 'timeout'], 5);
    metrics.record(['account', 'ok'], 0.002);
    expect(() => metrics.record(['account'], 0.002)).toThrow(/labels kind, outcome/);
    const text = await registryWith(metrics).metrics();
    const lines = text.split('\n');
    expect(text).toContain('# TYPE test_calls_total counter');
    expect(text).toContain('# TYPE test_call_seconds histogram');
    expect(lines).toContain('test_calls_total{kind="counter",outcome="ok",node="n1"} 5');
    expect(lines).toContain('test_calls_total{kind="counter",outcome="timeout",node="n1"} 1');
    expect(lines).toContain('test_calls_total{kind="account",outcome="ok",node="n1"} 1');
    // A value equal to a bound falls in that bound's bucket (le: less than or equal).
    expect(lines).toContain('test_call_seconds_bucket{kind="counter",outcome="ok",le="0.001",node="n1"} 2');
    expect(lines).toContain('test_call_seconds_bucket{kind="counter",outcome="ok",le="0.01",node="n1"} 3');
    expect(lines).toContain('test_call_seconds_bucket{kind="counter",outcome="ok",le="0.1",node="n1"} 4');
    expect(lines).toContain('test_call_seconds_bucket{kind="counter",outcome="ok",le="+Inf",node="n1"} 5');
    expect(lines).toContain('test_call_seconds_count{kind="counter",outcome="ok",node="n1"} 5');
    const sum = lines.find((l) => l.startsWith('test_call_seconds_sum{kind="counter",outcome="ok"'));
    expect(Number(sum?.split(' ')[1])).toBeCloseTo(0.5565, 6);
    expect(lines).toContain('test_call_seconds_bucket{kind="counter",outcome="timeout",le="0.1",node="n1"} 0');
    expect(lines).toContain('test_call_seconds_bucket{kind="counter",outcome="timeout",le="+Inf",node="n1"} 1');
    expect(metrics.count(['counter', 'ok'])).toBe(5);
  });

  it('is emptied by the registry reset, and the JSON form carries the same values', async () => {
    const metrics = new LatencyMetrics(['kind', 'outcome'], [0.001]);
    metrics.record(['counter', 'ok'], 0.0001);
    const registry = registryWith(metrics);
    const json = await registry.getMetricsAsJSON();
    const calls = json.find((m) => m.name === 'test_calls_total');
    expect(calls?.values).toEqual([{ value: 1, labels: { kind: 'counter', outcome: 'ok', node: 'n1' } }]);
    registry.resetMetrics();
    expect(metrics.count(['counter', 'ok'])).toBe(0);
    expect(await registry.metrics()).not.toContain('test_calls_total{');
  });
});
