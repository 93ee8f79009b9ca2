import type { ChildProcess } from 'node:child_process';

/** Resolves with the first match of `pattern` in what a child process prints on stdout; rejects if it exits first or takes too long. */
export function nextLine(child: ChildProcess, pattern: RegExp, timeoutMs = 15_000): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => finish(new Error(`app process did not print ${pattern} in time`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const match = pattern.exec(buffered);
      if (match) finish(undefined, match);
    };
    const onExit = (code: number | null) => finish(new Error(`app process exited (${code}) before printing ${pattern}`));
    function finish(err?: Error, match?: RegExpExecArray) {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(match!);
    }
    child.stdout?.on('data', onData);
    child.once('exit', onExit);
  });
}
