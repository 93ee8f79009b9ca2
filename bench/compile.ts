/**
 * The app processes run compiled JavaScript on plain `node`, as an app in production does, not through tsx: tsx's
 * loader detaches an ArrayBuffer in the main thread while it loads a CommonJS package (express, say), and that alone
 * turns off a V8 fast path for the whole process (the `ArrayBufferDetaching` protector, bench/FIXES.md §9). Under tsx
 * every app lost it at start-up, so the benchmark could not see what loses it in production.
 *
 * Each TypeScript file is transpiled on its own (`ts.transpileModule`, no type check: `npm test` does that), into
 * `bench/.compiled/` with the tree's layout kept, so that the apps' relative imports of `../../lib/` still resolve, and
 * the packages resolve from the project's `node_modules`.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const COMPILED = join(root, 'bench', '.compiled');

function transpileFile(from: string, target: string): void {
  const { outputText } = ts.transpileModule(readFileSync(from, 'utf8'), {
    fileName: from,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2023, verbatimModuleSyntax: true, sourceMap: false },
  });
  mkdirSync(target, { recursive: true });
  writeFileSync(join(target, `${basename(from, '.ts')}.js`), outputText);
}

function transpileTree(source: string, target: string): void {
  for (const entry of readdirSync(source, { withFileTypes: true })) {
    const from = join(source, entry.name);
    if (entry.isDirectory()) transpileTree(from, join(target, entry.name));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) transpileFile(from, target);
  }
}

let compiled = false;

/**
 * Compiles what runs in the app processes and the in-process case (the apps, `overhead.ts` and this checkout's
 * `lib/`), once per run; returns the compiled path of a script under `bench/` (`apps/main.ts` → its `.js`).
 */
export function compiledScript(script: string): string {
  if (!compiled) {
    transpileTree(join(root, 'bench', 'apps'), join(COMPILED, 'bench', 'apps'));
    for (const file of ['overhead.ts', 'stats.ts']) transpileFile(join(root, 'bench', file), join(COMPILED, 'bench'));
    transpileTree(join(root, 'lib'), join(COMPILED, 'lib'));
    compiled = true;
  }
  return join(COMPILED, 'bench', script.replace(/\.ts$/, '.js'));
}

/**
 * A `BENCH_LIB` copy (a path to another copy's `lib/index.ts`) compiled beside the apps; returns its `index.js`. A path
 * to JavaScript is taken as it is.
 */
export function compileLibrary(indexTs: string): string {
  if (!indexTs.endsWith('.ts')) return indexTs;
  const source = dirname(resolve(indexTs));
  const target = join(COMPILED, 'libs', createHash('sha256').update(relative(root, source)).digest('hex').slice(0, 12));
  transpileTree(source, target);
  return join(target, 'index.js');
}
