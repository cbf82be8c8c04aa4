// Writes the request bodies the benchmarks send, into the directory argv[2]:
//   chat-1k.json         non-streaming chat completion, exactly 1024 bytes
//   chat-1k-stream.json  the same with "stream": true (1024 bytes)
//   chat-1m.json         a coding agent's turn: source files pasted into the
//                        conversation, exactly 1 MiB (JSON escapes included)
//   stream-small.json    a short streaming request (for the 10k-stream test)
//   stream-sse.json      the same for the time-stamping upstream (model sse-gpt)
import { readFileSync, readdirSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const out = process.argv[2];
const root = new URL('..', import.meta.url).pathname;

function exact(make, size) {
  // make(n, pad) builds a body whose filler is n characters long, plus pad
  // spaces. Find the largest n that fits (a filler character may take more
  // than one byte once escaped or encoded, so n alone may never hit the
  // size), then pad with spaces, one byte each.
  let n = size;
  for (let i = 0; i < 50; i++) {
    const len = Buffer.byteLength(make(n, 0));
    if (len <= size && len > size - 16) return make(n, size - len);
    n += len > size ? Math.min(-1, size - len) : size - len - 8;
  }
  throw new Error('cannot hit the exact size');
}

const words = 'Please review the following function and explain what it returns when the input is empty. ' +
  'Keep the answer short and mention any edge case you notice. ';
const small = (stream) => (n, pad) => JSON.stringify({
  model: 'gpt-4o',
  messages: [
    { role: 'system', content: 'You are a careful senior engineer. Answer briefly.' },
    { role: 'user', content: words.repeat(20).slice(0, Math.max(0, n - 250)) + ' '.repeat(pad) },
  ],
  temperature: 0.2,
  max_tokens: 256,
  ...(stream ? { stream: true } : {}),
});
writeFileSync(join(out, 'chat-1k.json'), exact(small(false), 1024));
writeFileSync(join(out, 'chat-1k-stream.json'), exact(small(true), 1024));

// Real source text (quotes, backslashes, newlines -> JSON escapes).
let src = '';
const dirs = ['src', 'src/listen', 'src/core', 'src/identity', 'src/record', 'src/account', 'src/route', 'src/upstream'];
while (src.length < 1.2e6) {
  for (const d of dirs) {
    for (const f of readdirSync(join(root, d)).sort()) {
      const p = join(root, d, f);
      if (statSync(p).isFile() && /\.[ch]$/.test(f))
        src += `// ${d}/${f}\n` + readFileSync(p, 'utf8').replaceAll('[[mock', '[ [mock');
    }
  }
}
const big = (n, pad) => JSON.stringify({
  model: 'gpt-4o',
  messages: [
    { role: 'system', content: 'You are a coding agent working in the repository below.' },
    { role: 'user', content: 'Here are the files you asked for:\n' + src.slice(0, Math.max(0, n - 300)) },
    { role: 'user', content: 'Find the bug in the request parser.' + ' '.repeat(pad) },
  ],
  max_tokens: 1024,
});
writeFileSync(join(out, 'chat-1m.json'), exact(big, 1 << 20));

const tiny = (model) => JSON.stringify({
  model, stream: true, messages: [{ role: 'user', content: 'Count slowly to twenty.' }],
});
writeFileSync(join(out, 'stream-small.json'), tiny('gpt-4o'));
writeFileSync(join(out, 'stream-sse.json'), tiny('sse-gpt'));
