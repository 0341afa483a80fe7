/** A fixed-bucket histogram (Prometheus style: cumulative `le` buckets, sum and count). */
export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  max = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array(bounds.length).fill(0);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    if (value > this.max) this.max = value;
    for (let i = 0; i < this.bounds.length; i++) if (value <= this.bounds[i]!) this.counts[i]!++;
  }
}
