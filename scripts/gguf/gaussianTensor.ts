/**
 * Seeded normal random tensors for the synthetic models.
 */
/** FNV-1a, so each tensor gets its own stream and its values do not depend on the writing order. */
function hashString(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** xoshiro128** seeded through splitmix32: fast, deterministic across platforms, no dependencies. */
function makeRng(seed: number): () => number {
  let z = seed >>> 0;
  const split = () => {
    z = (z + 0x9e3779b9) >>> 0;
    let t = z;
    t = Math.imul(t ^ (t >>> 16), 0x21f0aaad);
    t = Math.imul(t ^ (t >>> 15), 0x735a2d97);
    return (t ^ (t >>> 15)) >>> 0;
  };
  let a = split();
  let b = split();
  let c = split();
  let d = split();
  return () => {
    const r = Math.imul(((Math.imul(b, 5) << 7) | (Math.imul(b, 5) >>> 25)) >>> 0, 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = (d << 11) | (d >>> 21);
    return r;
  };
}

/** N(0, std) values, deterministic per (seed, name) and independent of the order tensors are written in. */
export function gaussianTensor(elements: number, std: number, seed: number, name: string): Float32Array {
  const next = makeRng(hashString(name, seed));
  const out = new Float32Array(elements);
  for (let i = 0; i < elements; i += 2) {
    // Box-Muller; the +0.5 keeps u1 strictly inside (0, 1) so log() stays finite.
    const u1 = (next() + 0.5) / 4294967296;
    const u2 = next() / 4294967296;
    const r = std * Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < elements) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}
