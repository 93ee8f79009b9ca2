/**
 * Summarises `.cpuprofile` files written with `BENCH_CPU_PROF=1 npm run bench`: self time per package (or per
 * library file) and the hottest functions, so that a missed target can be traced to its cause.
 *
 *   node --import tsx bench/profile-summary.ts bench/profiles/library.cpuprofile[:requests] ... [--top 25]
 *
 * With `:requests` (the requests served while profiling; `BENCH_CPU_PROF=1 npm run bench` prints it), times are
 * also given in microseconds per request, which is what compares across contenders.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function owner(url: string): string {
  if (url === '') return '(native / gc / idle)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  const lib = /\/lib\/([^?]+)$/.exec(url);
  if (lib && !url.startsWith('node:')) return `lib/${lib[1]}`;
  if (url.startsWith('node:')) return 'node core';
  return url.replace(/^.*\/(bench|test)\//, '$1/');
}

const args = process.argv.slice(2);
const topIndex = args.indexOf('--top');
const top = topIndex === -1 ? 25 : Number(args[topIndex + 1]);
const files = args.filter((a, i) => !a.startsWith('--') && i !== topIndex + 1);

for (const arg of files) {
  const split = /^(.*?)(?::(\d+))?$/.exec(arg)!;
  const file = split[1]!;
  const requests = split[2] === undefined ? undefined : Number(split[2]);
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  let total = 0;
  const perOwner = new Map<string, number>();
  const perFunction = new Map<string, number>();
  for (const [id, time] of self) {
    const node = byId.get(id)!;
    const name = node.callFrame.functionName || '(anonymous)';
    if (name === '(idle)' || name === '(program)') continue;
    total += time;
    const who = name === '(garbage collector)' ? '(gc)' : owner(node.callFrame.url);
    perOwner.set(who, (perOwner.get(who) ?? 0) + time);
    const key = `${name} ${who}:${node.callFrame.lineNumber + 1}`;
    perFunction.set(key, (perFunction.get(key) ?? 0) + time);
  }
  const pct = (t: number) =>
    `${((100 * t) / total).toFixed(1).padStart(5)}%` + (requests === undefined ? '' : ` ${(t / requests).toFixed(2).padStart(7)} µs/req`);
  console.log(`\n${file}: ${(total / 1000).toFixed(0)} ms busy` + (requests === undefined ? '' : `, ${(total / requests).toFixed(1)} µs per request`));
  console.log('  self time by owner:');
  for (const [who, t] of [...perOwner].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(t)}  ${who}`);
  console.log('  hottest functions:');
  for (const [fn, t] of [...perFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(t)}  ${fn}`);
}
